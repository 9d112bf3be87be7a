// Fused feature-distillation loss on CPU: declarations shared by the kernel and the bindings.
#pragma once

#include <torch/extension.h>

#include <optional>
#include <tuple>

namespace vkd_fast {

// Metric and reduction codes; must match vkd_fast/ops/__init__.py (METRIC_CODE, REDUCTION_CODE).
enum Metric : int64_t { kMSE = 0, kCosine = 1, kSmoothL1 = 2 };
enum Reduction : int64_t { kMean = 0, kSum = 1, kNone = 2 };

// One pass over the rows computes the loss and d(loss)/d(student row), already multiplied by the
// row weight and by the reduction's 1/N (mean). Returns (loss, grad):
//   loss: fp32, [] for mean/sum, [N] (weighted row losses) for none;
//   grad: [N, D] in student's dtype (row i is the gradient of student row student_index[i]).
// Optional out buffers (loss_rows [N] fp32, grad [N, D]) are written in full when given.
std::tuple<torch::Tensor, torch::Tensor> feature_distill_fwd_cpu(
    const torch::Tensor& student, const torch::Tensor& target,
    const std::optional<torch::Tensor>& target_index,
    const std::optional<torch::Tensor>& student_index,
    const std::optional<torch::Tensor>& weight, int64_t metric, int64_t reduction, double eps,
    const std::optional<torch::Tensor>& grad_out);

}  // namespace vkd_fast
