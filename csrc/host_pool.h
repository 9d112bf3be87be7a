// Reusable host buffers for large kernel outputs (the fused loss's gradient buffer).
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <tuple>

namespace vkd_fast {

// An uninitialised contiguous CPU tensor. Buffers of at least kPoolMinBytes come from a pool of
// 64-byte aligned blocks (transparent huge pages requested) that are kept, up to a byte limit,
// when their tensor dies and handed out again for a request of about the same size. A fresh
// multi-megabyte buffer costs one page fault per 4 KiB page, zeroed by the OS -- on a training
// step that reuses the same shapes that is more work than the kernel that fills it.
// VKD_FAST_CPU_POOL=0 disables the pool; VKD_FAST_CPU_POOL_MB caps the bytes kept (default 1024).
torch::Tensor pooled_empty(at::IntArrayRef sizes, at::ScalarType dtype);

// (bytes kept free in the pool, blocks kept, bytes handed out and still alive, reuse hits, misses)
std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t> pool_stats();

// Returns every free block to the OS.
void pool_trim();

constexpr int64_t kPoolMinBytes = int64_t(1) << 20;

}  // namespace vkd_fast
