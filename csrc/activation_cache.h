// Host-memory store of the activation cache (vkd_fast/cache/activation_cache.py wraps it; validation happens there).
#pragma once

#include <torch/extension.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <shared_mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace vkd_fast {

// Entries of a variable number of rows x D features, one dtype, keyed by int64, stored in a slab
// arena: large uint8 slabs (64-byte aligned; pinned when asked, through torch's host allocator),
// entries bump-allocated inside them at 64-byte boundaries. Slabs beyond `capacity_bytes` of memory
// are memory-mapped files in `spill_dir` (unlinked at once, so nothing is left behind). Slabs of a
// loaded file can be adopted as they are (read-only mappings). Thread-safe: puts are exclusive,
// gathers shared. All copies run without the GIL, split over ATen's thread pool.
class CacheStore {
 public:
  CacheStore(at::ScalarType dtype, int64_t capacity_bytes, std::string spill_dir, bool pinned,
             int64_t slab_bytes);

  // Copies tensors[i] ([rows_i, D], CPU, this dtype, contiguous) in under keys[i]. A key already
  // present is overwritten in place when its row count is the same; otherwise the call fails.
  // All-or-nothing: a failed call leaves the store as it was.
  void put_batch(const std::vector<int64_t>& keys, const std::vector<at::Tensor>& tensors);

  // Rows of keys (any order, repeats allowed) packed into `out` (a contiguous buffer of this dtype
  // with at least total_rows * D elements) or a new buffer; returns ([total_rows, D], offsets[k+1]).
  std::tuple<at::Tensor, at::Tensor> gather(const std::vector<int64_t>& keys,
                                            const std::optional<at::Tensor>& out);

  // Registers entries that live in `slab` (uint8) at the given byte offsets (a loaded file).
  void adopt(const at::Tensor& slab, const std::vector<int64_t>& keys,
             const std::vector<int64_t>& byte_offsets, const std::vector<int64_t>& rows, int64_t dim);

  at::Tensor view(int64_t key) const;  // zero-copy [rows, D] view of an entry
  bool contains(int64_t key) const;
  int64_t rows(int64_t key) const;
  std::vector<int64_t> keys() const;
  int64_t dim() const;
  // entries, entry bytes, memory slab bytes, spill slab bytes, mapped bytes, gathers,
  // gathered bytes, gather nanoseconds
  std::vector<int64_t> stats() const;

 private:
  struct Entry {
    int32_t slab;
    int64_t offset;  // bytes into the slab
    int64_t rows;
  };
  struct Slab {
    at::Tensor data;  // uint8
    int64_t used = 0;
    int kind = 0;     // 0 memory, 1 spill, 2 adopted
  };

  uint8_t* entry_ptr(const Entry& e) const;
  Entry reserve(int64_t nbytes, int64_t rows);  // caller holds the exclusive lock
  int64_t new_slab(int64_t min_bytes);          // returns the slab index; may spill or throw

  at::ScalarType dtype_;
  int64_t elt_;
  int64_t capacity_;
  std::string spill_dir_;
  bool pinned_;
  int64_t slab_bytes_;
  int64_t dim_ = -1;
  std::vector<Slab> slabs_;
  int32_t cur_mem_ = -1, cur_spill_ = -1;
  int64_t mem_bytes_ = 0, spill_bytes_ = 0, mapped_bytes_ = 0, entry_bytes_ = 0;
  int64_t spill_files_ = 0;
  std::unordered_map<int64_t, Entry> entries_;
  mutable std::shared_mutex mu_;
  std::atomic<int64_t> gathers_{0}, gathered_bytes_{0}, gather_ns_{0};
};

// Copies (dst, src, bytes) jobs in parallel, splitting large ones into 1 MiB chunks.
void parallel_copy(const std::vector<std::tuple<uint8_t*, const uint8_t*, int64_t>>& jobs);

}  // namespace vkd_fast
