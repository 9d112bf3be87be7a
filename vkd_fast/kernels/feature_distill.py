"""Fused feature-distillation loss: row losses and the student gradient in one pass.

Row i compares s = S[si[i]] (or S[i]) with t = T[ti[i]] (or T[i]), D features each,
w = W[i] (or 1), c = ``grad_scale`` (1/N for reduction "mean", else 1):

    mse:        l = 1/D sum_d (s_d - t_d)^2              dl/ds = 2 (s - t) / D
    smooth_l1:  l = 1/D sum_d h(s_d - t_d),              dl/ds = clamp(s - t, -1, 1) / D
                h(x) = x^2 / 2 if |x| < 1 else |x| - 1/2
    cosine:     l = 1 - <s, t> / (ns nt),                dl/ds = -(t / (ns nt) - cos s / ns^2)
                ns = max(|s|, eps), nt = max(|t|, eps)   (no s-term where |s| <= eps)

Writes ``loss_rows[i] = w l`` (fp32) and ``grad[i] = w c dl/ds`` (the student's dtype); the caller
reduces the N row losses and autograd's backward only scales ``grad`` by grad_output, on device.
A program owns BLOCK_N rows and walks D in BLOCK_D tiles (any D); every load is cast to fp32 at
once and all accumulation is fp32. Rows whose index is out of range are never dereferenced: their
loss and gradient are NaN (the Python layer rejects such indices unless checks are disabled).
mse / smooth_l1 read s and t once; cosine needs its norms first, so it reads them twice.

The Triton interpreter truncates fp32 -> bf16 casts (round toward zero) where GPUs round to
nearest-even; ``SOFT_BF16_RTNE`` (set by the launcher under the interpreter) rounds in integer
arithmetic instead, so that CPU tests see the rounding a GPU does.
"""

import triton
import triton.language as tl

# Metric codes (vkd_fast.ops.METRIC_CODE). Globals that a @triton.jit function reads must be constexpr: a
# GPU compile refuses any other, the interpreter does not check (tests/test_kernel_compiles.py does).
MSE = tl.constexpr(0)
COSINE = tl.constexpr(1)
SMOOTH_L1 = tl.constexpr(2)


@triton.jit
def _cast_out(x, p_out, SOFT_BF16_RTNE: tl.constexpr):
    """fp32 block -> the element type of ``p_out``, rounding to nearest-even."""
    if SOFT_BF16_RTNE:
        b_bits = x.to(tl.uint32, bitcast=True)
        b_bits = b_bits + 0x7FFF + ((b_bits >> 16) & 1)
        return (b_bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(p_out.dtype.element_ty)


@triton.jit
def feature_distill_fwd_kernel(
    p_s, p_t, p_ti, p_si, p_w, p_loss, p_g,
    N, D, M, R,
    stride_s0, stride_s1, stride_t0, stride_t1, stride_g0,
    grad_scale, eps,
    METRIC: tl.constexpr, HAS_TI: tl.constexpr, HAS_SI: tl.constexpr, HAS_W: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, SOFT_BF16_RTNE: tl.constexpr,
):
    i_n = tl.program_id(0)
    o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_n = o_n < N
    if HAS_SI:
        b_rs = tl.load(p_si + o_n, mask=m_n, other=0).to(tl.int64)
    else:
        b_rs = o_n.to(tl.int64)
    if HAS_TI:
        b_rt = tl.load(p_ti + o_n, mask=m_n, other=0).to(tl.int64)
    else:
        b_rt = o_n.to(tl.int64)
    m_ok = m_n & (b_rs >= 0) & (b_rs < R) & (b_rt >= 0) & (b_rt < M)
    if HAS_W:
        b_w = tl.load(p_w + o_n, mask=m_n, other=0.0).to(tl.float32)
    else:
        b_w = tl.full([BLOCK_N], 1.0, tl.float32)
    b_c = b_w * grad_scale
    p_srow = p_s + b_rs[:, None] * stride_s0
    p_trow = p_t + b_rt[:, None] * stride_t0
    p_grow = p_g + o_n.to(tl.int64)[:, None] * stride_g0
    inv_d = 1.0 / D
    nan = float("nan")

    if METRIC == COSINE:
        b_dot = tl.zeros([BLOCK_N], tl.float32)
        b_ss = tl.zeros([BLOCK_N], tl.float32)
        b_tt = tl.zeros([BLOCK_N], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            o_d = d0 + tl.arange(0, BLOCK_D)
            m = m_ok[:, None] & (o_d < D)[None, :]
            b_s = tl.load(p_srow + o_d[None, :] * stride_s1, mask=m, other=0.0).to(tl.float32)
            b_t = tl.load(p_trow + o_d[None, :] * stride_t1, mask=m, other=0.0).to(tl.float32)
            b_dot += tl.sum(b_s * b_t, axis=1)
            b_ss += tl.sum(b_s * b_s, axis=1)
            b_tt += tl.sum(b_t * b_t, axis=1)
        b_ns_raw = tl.sqrt(b_ss)
        b_ns = tl.maximum(b_ns_raw, eps)
        b_nt = tl.maximum(tl.sqrt(b_tt), eps)
        b_inv = 1.0 / (b_ns * b_nt)
        b_cos = b_dot * b_inv
        b_gt = -b_c * b_inv
        b_gs = tl.where(b_ns_raw > eps, b_c * b_cos / (b_ns * b_ns), 0.0)
        for d0 in range(0, D, BLOCK_D):
            o_d = d0 + tl.arange(0, BLOCK_D)
            m_d = (o_d < D)[None, :]
            m = m_ok[:, None] & m_d
            b_s = tl.load(p_srow + o_d[None, :] * stride_s1, mask=m, other=0.0).to(tl.float32)
            b_t = tl.load(p_trow + o_d[None, :] * stride_t1, mask=m, other=0.0).to(tl.float32)
            b_g = b_gt[:, None] * b_t + b_gs[:, None] * b_s
            b_g = tl.where(m_ok[:, None], b_g, nan)
            tl.store(p_grow + o_d[None, :], _cast_out(b_g, p_g, SOFT_BF16_RTNE), mask=m_n[:, None] & m_d)
        b_loss = b_w * (1.0 - b_cos)
    else:
        b_acc = tl.zeros([BLOCK_N], tl.float32)
        if METRIC == MSE:
            b_gc = 2.0 * b_c * inv_d
        else:
            b_gc = b_c * inv_d
        for d0 in range(0, D, BLOCK_D):
            o_d = d0 + tl.arange(0, BLOCK_D)
            m_d = (o_d < D)[None, :]
            m = m_ok[:, None] & m_d
            b_s = tl.load(p_srow + o_d[None, :] * stride_s1, mask=m, other=0.0).to(tl.float32)
            b_t = tl.load(p_trow + o_d[None, :] * stride_t1, mask=m, other=0.0).to(tl.float32)
            b_x = b_s - b_t
            if METRIC == MSE:
                b_acc += tl.sum(b_x * b_x, axis=1)
                b_g = b_x * b_gc[:, None]
            else:
                b_ax = tl.abs(b_x)
                b_acc += tl.sum(tl.where(b_ax < 1.0, 0.5 * b_x * b_x, b_ax - 0.5), axis=1)
                b_g = tl.minimum(tl.maximum(b_x, -1.0), 1.0) * b_gc[:, None]
            b_g = tl.where(m_ok[:, None], b_g, nan)
            tl.store(p_grow + o_d[None, :], _cast_out(b_g, p_g, SOFT_BF16_RTNE), mask=m_n[:, None] & m_d)
        b_loss = b_w * (b_acc * inv_d)
    b_loss = tl.where(m_ok, b_loss, nan)
    tl.store(p_loss + o_n, b_loss, mask=m_n)


@triton.jit
def feature_distill_bwd_scale_kernel(
    p_g, p_scale, NUMEL, D, stride_scale,
    PER_ROW: tl.constexpr, BLOCK: tl.constexpr, SOFT_BF16_RTNE: tl.constexpr,
):
    """Backward: ``grad *= grad_output`` in place (``grad`` contiguous [N, D]; the scale one fp32 value, or
    one per row with reduction "none", read from device memory: no host sync). The product is taken
    in fp32 with the fp32 scale and rounded once (``Tensor.mul_`` on CUDA first rounds a 0-dim scale to a
    16-bit gradient's type). A scalar scale of exactly 1 -- ``loss.backward()`` on the loss itself, the
    common case -- leaves the buffer as it is without reading or writing it: on an H200 that multiply
    cost as long as the fused forward itself.
    """
    i_b = tl.program_id(0)
    o = i_b.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = o < NUMEL
    if PER_ROW:
        b_c = tl.load(p_scale + (o // D) * stride_scale, mask=m, other=1.0).to(tl.float32)
        b_g = tl.load(p_g + o, mask=m, other=0.0).to(tl.float32)
        tl.store(p_g + o, _cast_out(b_g * b_c, p_g, SOFT_BF16_RTNE), mask=m)
    else:
        c = tl.load(p_scale).to(tl.float32)
        if c != 1.0:
            b_g = tl.load(p_g + o, mask=m, other=0.0).to(tl.float32)
            tl.store(p_g + o, _cast_out(b_g * c, p_g, SOFT_BF16_RTNE), mask=m)
