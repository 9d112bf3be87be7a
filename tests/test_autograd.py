"""``torch.compile(fullgraph=True)`` traces through the fused op (a torch.library custom op)."""

import pytest
import torch

import vkd_fast as vf
from vkd_fast.ops.reference import feature_distill_reference


@pytest.mark.parametrize("backend", ["cext", "triton"])
def test_compile_fullgraph_through_fused_op(backend):
    torch._dynamo.reset()
    proj = torch.nn.Linear(16, 24)

    def step(x, target, target_index, weight):
        feats = proj(x)
        return vf.feature_distill_loss(feats, target, target_index=target_index, weight=weight,
                                       metric="cosine", reduction="sum", backend=backend) * 0.5

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    x = torch.randn(10, 16)
    target = torch.randn(4, 24)
    ti = torch.randint(0, 4, (10,))
    w = torch.rand(10)

    loss = compiled(x, target, ti, w)
    loss.backward()
    got = [p.grad.clone() for p in proj.parameters()]
    proj.zero_grad()
    want_loss = feature_distill_reference(proj(x), target, ti, None, w, metric="cosine", reduction="sum") * 0.5
    want_loss.backward()
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
    for g, p in zip(got, proj.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_compile_inductor_cpu_backend():
    torch._dynamo.reset()
    s = torch.randn(12, 40, requires_grad=True)
    t = torch.randn(12, 40)

    def f(s, t):
        return vf.feature_distill_loss(s * 2.0, t, backend="cext", reduction="mean")

    compiled = torch.compile(f, fullgraph=True)
    loss = compiled(s, t)
    loss.backward()
    s2 = s.detach().clone().requires_grad_()
    want = feature_distill_reference(s2 * 2.0, t)
    want.backward()
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(s.grad, s2.grad)
