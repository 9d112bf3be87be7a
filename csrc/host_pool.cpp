// Pool of large, reusable host buffers (see host_pool.h for why it exists).
#include "host_pool.h"

#include <sys/mman.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

namespace vkd_fast {
namespace {

constexpr size_t kAlign = 64;
constexpr size_t kHugePage = size_t(2) << 20;

struct Pool {
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;  // capacity -> block
  std::map<void*, size_t> capacity;         // every live or free block -> its capacity
  size_t free_bytes = 0;
  size_t live_bytes = 0;
  int64_t hits = 0;
  int64_t misses = 0;
  bool enabled = true;
  size_t limit = size_t(1024) << 20;

  Pool() {
    if (const char* e = std::getenv("VKD_FAST_CPU_POOL")) enabled = std::string(e) != "0";
    if (const char* e = std::getenv("VKD_FAST_CPU_POOL_MB")) {
      try {
        limit = static_cast<size_t>(std::stoll(e)) << 20;
      } catch (...) {
        TORCH_CHECK(false, "VKD_FAST_CPU_POOL_MB must be a whole number of MiB, got '", e, "'");
      }
    }
  }

  void* take(size_t nbytes) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = free_blocks.lower_bound(nbytes);
    if (it != free_blocks.end() && it->first <= nbytes + nbytes / 2) {  // best fit, <= 50% slack
      void* p = it->second;
      free_bytes -= it->first;
      live_bytes += it->first;
      free_blocks.erase(it);
      ++hits;
      return p;
    }
    ++misses;
    // Exact size (64-byte multiple): rounding up to whole huge pages would cost up to 2 MiB of
    // resident memory per buffer. Big blocks are 2 MiB aligned so THP can back their whole pages.
    const size_t cap = (nbytes + kAlign - 1) / kAlign * kAlign;
    const size_t align = cap >= kHugePage ? kHugePage : kAlign;
    void* p = nullptr;
    TORCH_CHECK(posix_memalign(&p, align, cap) == 0 && p != nullptr,
                "vkd_fast: out of host memory allocating ", cap, " bytes");
#ifdef MADV_HUGEPAGE
    if (cap >= kHugePage) madvise(p, cap / kHugePage * kHugePage, MADV_HUGEPAGE);  // advisory
#endif
    capacity[p] = cap;
    live_bytes += cap;
    return p;
  }

  void give_back(void* p) {
    std::lock_guard<std::mutex> lock(mu);
    const size_t cap = capacity.at(p);
    live_bytes -= cap;
    if (free_bytes + cap <= limit) {
      free_blocks.emplace(cap, p);
      free_bytes += cap;
    } else {
      capacity.erase(p);
      std::free(p);
    }
  }

  void trim() {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& kv : free_blocks) {
      capacity.erase(kv.second);
      std::free(kv.second);
    }
    free_blocks.clear();
    free_bytes = 0;
  }
};

// Leaked on purpose: tensors may die after static destructors have run.
Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

torch::Tensor pooled_empty(at::IntArrayRef sizes, at::ScalarType dtype) {
  const auto options = torch::TensorOptions().dtype(dtype).device(torch::kCPU);
  int64_t numel = 1;
  for (auto s : sizes) numel *= s;
  const int64_t nbytes = numel * static_cast<int64_t>(c10::elementSize(dtype));
  Pool& p = pool();
  if (!p.enabled || nbytes < kPoolMinBytes) return torch::empty(sizes, options);
  void* data = p.take(static_cast<size_t>(nbytes));
  return torch::from_blob(data, sizes, [](void* ptr) { pool().give_back(ptr); }, options);
}

std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t> pool_stats() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  return {static_cast<int64_t>(p.free_bytes), static_cast<int64_t>(p.free_blocks.size()),
          static_cast<int64_t>(p.live_bytes), p.hits, p.misses};
}

void pool_trim() { pool().trim(); }

}  // namespace vkd_fast
