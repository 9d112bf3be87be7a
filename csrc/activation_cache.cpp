// The activation cache's host store (see activation_cache.h).
#include "activation_cache.h"

#include "host_pool.h"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <mutex>

namespace vkd_fast {

namespace {
constexpr int64_t kAlign = 64;
constexpr int64_t kChunk = int64_t(1) << 20;
inline int64_t round_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }
}  // namespace

void parallel_copy(const std::vector<std::tuple<uint8_t*, const uint8_t*, int64_t>>& jobs) {
  // chunk list: (job, begin, end)
  std::vector<std::tuple<int64_t, int64_t, int64_t>> chunks;
  for (int64_t j = 0; j < static_cast<int64_t>(jobs.size()); ++j) {
    const int64_t n = std::get<2>(jobs[j]);
    for (int64_t b = 0; b < n; b += kChunk) chunks.emplace_back(j, b, std::min(n, b + kChunk));
  }
  if (chunks.empty()) return;
  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) {
      const auto& [j, b, e] = chunks[c];
      std::memcpy(std::get<0>(jobs[j]) + b, std::get<1>(jobs[j]) + b, e - b);
    }
  });
}

CacheStore::CacheStore(at::ScalarType dtype, int64_t capacity_bytes, std::string spill_dir,
                       bool pinned, int64_t slab_bytes)
    : dtype_(dtype),
      elt_(static_cast<int64_t>(c10::elementSize(dtype))),
      capacity_(capacity_bytes),
      spill_dir_(std::move(spill_dir)),
      pinned_(pinned),
      slab_bytes_(slab_bytes) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf,
              "CacheStore: dtype must be float32, bfloat16 or float16, got ", dtype);
  TORCH_CHECK(slab_bytes > 0, "CacheStore: slab_bytes must be positive, got ", slab_bytes);
}

uint8_t* CacheStore::entry_ptr(const Entry& e) const {
  return slabs_[e.slab].data.data_ptr<uint8_t>() + e.offset;
}

int64_t CacheStore::new_slab(int64_t min_bytes) {
  Slab s;
  const bool limited = capacity_ >= 0;
  const int64_t room = limited ? capacity_ - mem_bytes_ : INT64_MAX;
  if (room >= min_bytes) {
    const int64_t size = std::min(room, std::max(min_bytes, slab_bytes_));
    s.data = at::empty({size}, at::TensorOptions().dtype(at::kByte).pinned_memory(pinned_));
    s.kind = 0;
    mem_bytes_ += size;
  } else {
    TORCH_CHECK(!spill_dir_.empty(), "ActivationCache: storing ", min_bytes,
                " more bytes needs more than capacity_bytes=", capacity_, " (", mem_bytes_,
                " bytes of memory slabs in use, ", room,
                " free); pass spill_dir=... to spill to disk, or a larger capacity_bytes");
    const int64_t size = std::max(min_bytes, slab_bytes_);
    const std::string path = spill_dir_ + "/vkd_fast-cache-" + std::to_string(::getpid()) + "-" +
                             std::to_string(reinterpret_cast<uintptr_t>(this)) + "-" +
                             std::to_string(spill_files_++) + ".slab";
    s.data = at::from_file(path, /*shared=*/true, size, at::TensorOptions().dtype(at::kByte));
    ::unlink(path.c_str());  // the mapping keeps the data; no file is left behind
    s.kind = 1;
    spill_bytes_ += size;
  }
  slabs_.push_back(std::move(s));
  return static_cast<int64_t>(slabs_.size()) - 1;
}

CacheStore::Entry CacheStore::reserve(int64_t nbytes, int64_t rows) {
  const int64_t need = round_up(std::max<int64_t>(nbytes, 1), kAlign);
  for (int32_t* cur : {&cur_mem_, &cur_spill_}) {
    if (*cur >= 0) {
      Slab& s = slabs_[*cur];
      if (s.data.numel() - s.used >= need) {
        Entry e{*cur, s.used, rows};
        s.used += need;
        return e;
      }
    }
  }
  const int64_t idx = new_slab(need);
  Slab& s = slabs_[idx];
  (s.kind == 0 ? cur_mem_ : cur_spill_) = static_cast<int32_t>(idx);
  Entry e{static_cast<int32_t>(idx), 0, rows};
  s.used = need;
  return e;
}

void CacheStore::put_batch(const std::vector<int64_t>& keys, const std::vector<at::Tensor>& tensors) {
  TORCH_CHECK(keys.size() == tensors.size(), "put_batch: ", keys.size(), " keys but ",
              tensors.size(), " tensors");
  std::unique_lock<std::shared_mutex> lock(mu_);
  const int64_t dim = dim_ >= 0 ? dim_ : (tensors.empty() ? -1 : tensors[0].size(1));
  for (const auto& t : tensors) {
    TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.dim() == 2 &&
                    t.scalar_type() == dtype_ && t.size(1) == dim && t.size(0) > 0,
                "put_batch: every tensor must be a non-empty contiguous CPU [rows, ", dim, "] ",
                dtype_, " tensor");
  }
  // Plan everything first; commit only when all reservations succeeded.
  const auto saved_slabs = slabs_.size();
  const auto saved_cur_mem = cur_mem_, saved_cur_spill = cur_spill_;
  const auto saved_mem = mem_bytes_, saved_spill = spill_bytes_;
  std::vector<int64_t> saved_used;
  for (const auto& s : slabs_) saved_used.push_back(s.used);
  std::vector<Entry> planned;
  std::vector<std::tuple<uint8_t*, const uint8_t*, int64_t>> jobs;
  try {
    for (size_t i = 0; i < keys.size(); ++i) {
      const int64_t rows = tensors[i].size(0);
      auto it = entries_.find(keys[i]);
      Entry e;
      if (it != entries_.end()) {
        TORCH_CHECK(it->second.rows == rows, "ActivationCache: key ", keys[i], " holds ",
                    it->second.rows, " rows; it can be overwritten only with the same number, got ",
                    rows);
        e = it->second;
      } else {
        e = reserve(rows * dim * elt_, rows);
      }
      planned.push_back(e);
    }
  } catch (...) {
    slabs_.resize(saved_slabs);
    for (size_t i = 0; i < saved_used.size(); ++i) slabs_[i].used = saved_used[i];
    cur_mem_ = saved_cur_mem;
    cur_spill_ = saved_cur_spill;
    mem_bytes_ = saved_mem;
    spill_bytes_ = saved_spill;
    throw;
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    const int64_t nbytes = planned[i].rows * dim * elt_;
    jobs.emplace_back(entry_ptr(planned[i]), static_cast<const uint8_t*>(tensors[i].data_ptr()),
                      nbytes);
    if (entries_.emplace(keys[i], planned[i]).second) entry_bytes_ += nbytes;
  }
  dim_ = dim;
  parallel_copy(jobs);
}

std::tuple<at::Tensor, at::Tensor> CacheStore::gather(const std::vector<int64_t>& keys,
                                                      const std::optional<at::Tensor>& out) {
  const auto t0 = std::chrono::steady_clock::now();
  std::shared_lock<std::shared_mutex> lock(mu_);
  const int64_t dim = std::max<int64_t>(dim_, 0);
  auto offsets = at::empty({static_cast<int64_t>(keys.size()) + 1}, at::kLong);
  int64_t* off = offsets.data_ptr<int64_t>();
  std::vector<const Entry*> found;
  found.reserve(keys.size());
  off[0] = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    auto it = entries_.find(keys[i]);
    if (it == entries_.end()) throw pybind11::key_error("ActivationCache has no key " + std::to_string(keys[i]));
    found.push_back(&it->second);
    off[i + 1] = off[i] + it->second.rows;
  }
  const int64_t total = off[keys.size()];
  at::Tensor packed;
  if (out.has_value()) {
    TORCH_CHECK(out->is_contiguous() && out->scalar_type() == dtype_ && out->numel() >= total * dim,
                "gather: out must be a contiguous ", dtype_, " buffer of at least ", total * dim,
                " elements");
    packed = out->view({-1}).narrow(0, 0, total * dim).view({total, dim});
  } else {
    packed = pooled_empty({total, dim}, dtype_);
  }
  std::vector<std::tuple<uint8_t*, const uint8_t*, int64_t>> jobs;
  jobs.reserve(found.size());
  uint8_t* dst = static_cast<uint8_t*>(packed.data_ptr());
  const int64_t row_bytes = dim * elt_;
  for (size_t i = 0; i < found.size(); ++i) {
    jobs.emplace_back(dst + off[i] * row_bytes, entry_ptr(*found[i]), found[i]->rows * row_bytes);
  }
  parallel_copy(jobs);
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::steady_clock::now() - t0).count();
  gathers_ += 1;
  gathered_bytes_ += total * row_bytes;
  gather_ns_ += ns;
  return {packed, offsets};
}

void CacheStore::adopt(const at::Tensor& slab, const std::vector<int64_t>& keys,
                       const std::vector<int64_t>& byte_offsets, const std::vector<int64_t>& rows,
                       int64_t dim) {
  TORCH_CHECK(slab.scalar_type() == at::kByte && slab.is_contiguous() && slab.device().is_cpu(),
              "adopt: slab must be a contiguous CPU uint8 tensor");
  TORCH_CHECK(keys.size() == byte_offsets.size() && keys.size() == rows.size(),
              "adopt: keys, byte_offsets and rows differ in length");
  std::unique_lock<std::shared_mutex> lock(mu_);
  TORCH_CHECK(dim_ < 0 || dim_ == dim, "adopt: D=", dim, " but the cache holds D=", dim_);
  for (size_t i = 0; i < keys.size(); ++i) {
    TORCH_CHECK(!entries_.count(keys[i]), "adopt: key ", keys[i], " is already in the cache");
    TORCH_CHECK(byte_offsets[i] >= 0 && byte_offsets[i] % elt_ == 0 && rows[i] > 0 &&
                    byte_offsets[i] + rows[i] * dim * elt_ <= slab.numel(),
                "adopt: entry ", keys[i], " lies outside the slab");
  }
  Slab s;
  s.data = slab;
  s.used = slab.numel();
  s.kind = 2;
  slabs_.push_back(std::move(s));
  mapped_bytes_ += slab.numel();
  const int32_t idx = static_cast<int32_t>(slabs_.size()) - 1;
  for (size_t i = 0; i < keys.size(); ++i) {
    entries_.emplace(keys[i], Entry{idx, byte_offsets[i], rows[i]});
    entry_bytes_ += rows[i] * dim * elt_;
  }
  dim_ = dim;
}

at::Tensor CacheStore::view(int64_t key) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) throw pybind11::key_error("ActivationCache has no key " + std::to_string(key));
  const Entry& e = it->second;
  return slabs_[e.slab].data.narrow(0, e.offset, e.rows * dim_ * elt_).view(dtype_).view({e.rows, dim_});
}

bool CacheStore::contains(int64_t key) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return entries_.count(key) > 0;
}

int64_t CacheStore::rows(int64_t key) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) throw pybind11::key_error("ActivationCache has no key " + std::to_string(key));
  return it->second.rows;
}

std::vector<int64_t> CacheStore::keys() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<int64_t> out;
  out.reserve(entries_.size());
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

int64_t CacheStore::dim() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return dim_;
}

std::vector<int64_t> CacheStore::stats() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return {static_cast<int64_t>(entries_.size()), entry_bytes_, mem_bytes_, spill_bytes_,
          mapped_bytes_, gathers_.load(), gathered_bytes_.load(), gather_ns_.load()};
}

}  // namespace vkd_fast
