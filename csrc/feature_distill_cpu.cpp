// Fused feature-distillation loss on CPU: loss and student gradient in one pass over the rows.
//
// Row i compares s = student[student_index[i]] (or student[i]) with t = target[target_index[i]]
// (or target[i]); both have D features, w = weight[i] (or 1), c = 1/N for reduction "mean" else 1.
//   mse:       l = (1/D) sum_d (s_d - t_d)^2                 dl/ds = 2 (s - t) / D
//   smooth_l1: l = (1/D) sum_d h(s_d - t_d), h(x) = x^2/2 if |x| < 1 else |x| - 1/2
//                                                             dl/ds = clamp(s - t, -1, 1) / D
//   cosine:    l = 1 - <s,t> / (ns nt), ns = max(|s|, eps), nt = max(|t|, eps)
//                                                             dl/ds = -(t / (ns nt) - cos s / ns^2)
//              (the s / ns^2 term is absent where |s| <= eps, since ns is then constant).
// Output: row losses w l (fp32), reduced in double in row order (deterministic), and
// grad[i] = w c dl/ds in the student's dtype; autograd's backward only scales it by grad_output.
// Rows are split over ATen's OpenMP pool; the inner loops over D are `omp simd` with fp32
// accumulation, and nothing is allocated beyond the gradient buffer (reused across steps from
// host_pool.h, so a training step does not pay page faults for it) and N row losses.
#include "feature_distill.h"
#include "host_pool.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

namespace vkd_fast {
namespace {

// Element access in fp32. bf16 goes through its bits: the widening is a shift and the narrowing a
// branch-free round-to-nearest-even (NaN kept quiet), so the `omp simd` loops vectorise; c10's
// BFloat16 conversions branch per element and do not.
template <typename T>
struct Elem {
  using raw = T;
  static inline float load(raw v) { return static_cast<float>(v); }
  static inline raw store(float f) { return static_cast<raw>(f); }
};

template <>
struct Elem<c10::BFloat16> {
  using raw = uint16_t;
  static inline float load(raw v) {
    const uint32_t u = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
  static inline raw store(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return f != f ? static_cast<raw>(0x7FC0) : static_cast<raw>(u >> 16);
  }
};

template <typename scalar_t, int64_t METRIC>
void fd_rows(const scalar_t* S_, int64_t s_rs, const scalar_t* T_, int64_t t_rs, const int64_t* ti,
             const int64_t* si, const float* w, float* loss_rows, scalar_t* G_, int64_t N, int64_t D,
             float row_scale, float eps) {
  using E = Elem<scalar_t>;
  using raw = typename E::raw;
  static_assert(sizeof(raw) == sizeof(scalar_t), "element views must have the element's size");
  const raw* S = reinterpret_cast<const raw*>(S_);
  const raw* T = reinterpret_cast<const raw*>(T_);
  raw* G = reinterpret_cast<raw*>(G_);
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1));
  const float inv_d = 1.0f / static_cast<float>(D);
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const raw* __restrict__ s = S + (si ? si[i] : i) * s_rs;
      const raw* __restrict__ t = T + (ti ? ti[i] : i) * t_rs;
      raw* __restrict__ g = G + i * D;
      const float wi = w ? w[i] : 1.0f;
      const float c = wi * row_scale;
      if constexpr (METRIC == kMSE) {
        const float gs = 2.0f * c * inv_d;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t d = 0; d < D; ++d) {
          const float diff = E::load(s[d]) - E::load(t[d]);
          acc += diff * diff;
          g[d] = E::store(diff * gs);
        }
        loss_rows[i] = wi * (acc * inv_d);
      } else if constexpr (METRIC == kSmoothL1) {
        const float gs = c * inv_d;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t d = 0; d < D; ++d) {
          const float diff = E::load(s[d]) - E::load(t[d]);
          const float ad = std::fabs(diff);
          acc += ad < 1.0f ? 0.5f * diff * diff : ad - 0.5f;
          g[d] = E::store(std::min(1.0f, std::max(-1.0f, diff)) * gs);
        }
        loss_rows[i] = wi * (acc * inv_d);
      } else {  // cosine: a reduction pass, then the gradient pass (rows stay in cache)
        float dot = 0.0f, ss = 0.0f, tt = 0.0f;
#pragma omp simd reduction(+ : dot, ss, tt)
        for (int64_t d = 0; d < D; ++d) {
          const float a = E::load(s[d]);
          const float b = E::load(t[d]);
          dot += a * b;
          ss += a * a;
          tt += b * b;
        }
        const float ns_raw = std::sqrt(ss);
        const float ns = std::max(ns_raw, eps);
        const float nt = std::max(std::sqrt(tt), eps);
        const float inv_nn = 1.0f / (ns * nt);
        const float cosv = dot * inv_nn;
        const float gt = -c * inv_nn;                                     // coefficient of t
        const float gsv = ns_raw > eps ? c * cosv / (ns * ns) : 0.0f;     // coefficient of s
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) {
          g[d] = E::store(gt * E::load(t[d]) + gsv * E::load(s[d]));
        }
        loss_rows[i] = wi * (1.0f - cosv);
      }
    }
  });
}

torch::Tensor as_index(const std::optional<torch::Tensor>& idx, const char* name, int64_t n,
                       int64_t limit) {
  if (!idx.has_value()) return torch::Tensor();
  const auto& x = *idx;
  TORCH_CHECK(x.device().is_cpu(), name, " must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.scalar_type() == torch::kLong || x.scalar_type() == torch::kInt, name,
              " must be an int64 or int32 tensor, got ", x.scalar_type());
  TORCH_CHECK(x.dim() == 1 && x.size(0) == n, name, " must have shape [", n, "], got ",
              x.sizes());
  auto y = x.to(torch::kLong).contiguous();
  const int64_t* p = y.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(p[i] >= 0 && p[i] < limit, name, "[", i, "] = ", p[i], " is out of range [0, ",
                limit, ")");
  }
  return y;
}

}  // namespace

std::tuple<torch::Tensor, torch::Tensor> feature_distill_fwd_cpu(
    const torch::Tensor& student_in, const torch::Tensor& target_in,
    const std::optional<torch::Tensor>& target_index,
    const std::optional<torch::Tensor>& student_index,
    const std::optional<torch::Tensor>& weight, int64_t metric, int64_t reduction, double eps,
    const std::optional<torch::Tensor>& grad_out) {
  TORCH_CHECK(student_in.device().is_cpu() && target_in.device().is_cpu(),
              "feature_distill_fwd (cpu): student and target must be CPU tensors, got ",
              student_in.device(), " and ", target_in.device());
  TORCH_CHECK(student_in.dim() == 2 && target_in.dim() == 2,
              "feature_distill_fwd (cpu): student and target must be 2-D, got ", student_in.sizes(),
              " and ", target_in.sizes());
  TORCH_CHECK(student_in.scalar_type() == target_in.scalar_type(),
              "feature_distill_fwd (cpu): student and target dtypes differ: ",
              student_in.scalar_type(), " vs ", target_in.scalar_type());
  TORCH_CHECK(student_in.size(1) == target_in.size(1),
              "feature_distill_fwd (cpu): feature sizes differ: student D=", student_in.size(1),
              ", target D=", target_in.size(1));
  TORCH_CHECK(metric >= kMSE && metric <= kSmoothL1, "feature_distill_fwd (cpu): bad metric code ",
              metric);
  TORCH_CHECK(reduction >= kMean && reduction <= kNone,
              "feature_distill_fwd (cpu): bad reduction code ", reduction);
  // Rows may have any stride; features must be unit-stride for the vector loops.
  const auto student = student_in.stride(1) == 1 ? student_in : student_in.contiguous();
  const auto target = target_in.stride(1) == 1 ? target_in : target_in.contiguous();
  const int64_t D = student.size(1);
  const int64_t N = student_index.has_value() ? student_index->size(0)
                                              : (target_index.has_value() ? target_index->size(0)
                                                                          : student.size(0));
  if (!student_index.has_value()) {
    TORCH_CHECK(student.size(0) == N, "feature_distill_fwd (cpu): student has ", student.size(0),
                " rows but the index selects ", N);
  }
  if (!target_index.has_value()) {
    TORCH_CHECK(target.size(0) == N, "feature_distill_fwd (cpu): target has ", target.size(0),
                " rows, expected N=", N, " (or pass target_index)");
  }
  const auto ti = as_index(target_index, "target_index", N, target.size(0));
  const auto si = as_index(student_index, "student_index", N, student.size(0));
  torch::Tensor w;
  if (weight.has_value()) {
    TORCH_CHECK(weight->dim() == 1 && weight->size(0) == N,
                "feature_distill_fwd (cpu): weight must have shape [", N, "], got ",
                weight->sizes());
    w = weight->to(torch::kFloat).contiguous();
  }
  torch::Tensor grad;
  if (grad_out.has_value()) {
    grad = *grad_out;
    TORCH_CHECK(grad.sizes() == torch::IntArrayRef({N, D}) && grad.is_contiguous() &&
                    grad.scalar_type() == student.scalar_type(),
                "feature_distill_fwd (cpu): grad_out must be a contiguous [", N, ", ", D, "] ",
                student.scalar_type(), " tensor");
  } else {
    grad = pooled_empty({N, D}, student.scalar_type());
  }
  auto loss_rows = torch::empty({N}, student.options().dtype(torch::kFloat));
  const float row_scale = (reduction == kMean && N > 0) ? 1.0f / static_cast<float>(N) : 1.0f;

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, student.scalar_type(), "feature_distill_fwd_cpu", [&] {
        const scalar_t* S = student.data_ptr<scalar_t>();
        const scalar_t* T = target.data_ptr<scalar_t>();
        const int64_t* tip = ti.defined() ? ti.data_ptr<int64_t>() : nullptr;
        const int64_t* sip = si.defined() ? si.data_ptr<int64_t>() : nullptr;
        const float* wp = w.defined() ? w.data_ptr<float>() : nullptr;
        float* lp = loss_rows.data_ptr<float>();
        scalar_t* G = grad.data_ptr<scalar_t>();
        const float e = static_cast<float>(eps);
        switch (metric) {
          case kMSE:
            fd_rows<scalar_t, kMSE>(S, student.stride(0), T, target.stride(0), tip, sip, wp, lp, G,
                                    N, D, row_scale, e);
            break;
          case kCosine:
            fd_rows<scalar_t, kCosine>(S, student.stride(0), T, target.stride(0), tip, sip, wp, lp,
                                       G, N, D, row_scale, e);
            break;
          default:
            fd_rows<scalar_t, kSmoothL1>(S, student.stride(0), T, target.stride(0), tip, sip, wp,
                                         lp, G, N, D, row_scale, e);
        }
      });

  if (reduction == kNone) return {loss_rows, grad};
  const float* lp = loss_rows.data_ptr<float>();
  double total = 0.0;
  for (int64_t i = 0; i < N; ++i) total += lp[i];
  if (reduction == kMean) total = N > 0 ? total / static_cast<double>(N) : std::nan("");
  return {torch::scalar_tensor(total, student.options().dtype(torch::kFloat)), grad};
}

}  // namespace vkd_fast
