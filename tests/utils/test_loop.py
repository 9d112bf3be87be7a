"""The plain training loop (vkd_fast.utils.loop) shared by the toy build and the relearning attack:
the same weights, bit for bit, as the loop written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from vkd_fast.utils.loop import train_steps

X, Y = torch.randn(64, 5, generator=torch.Generator().manual_seed(1)), torch.randint(3, (64,))


def _setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / 10))))
    gen = torch.Generator().manual_seed(7)

    def loss_fn():
        rows = torch.randint(len(X), (8,), generator=gen)
        return torch.nn.functional.cross_entropy(model(X[rows]), Y[rows])

    return model, opt, sched, loss_fn


@pytest.mark.parametrize("with_scheduler", [True, False])
def test_train_steps_is_the_hand_written_loop(with_scheduler):
    model, opt, sched, loss_fn = _setup()
    for _ in range(2):  # in two calls, as the toy build does between its accuracy checks
        for _ in range(6):
            loss = loss_fn()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if with_scheduler:
                sched.step()
    expected, expected_loss = [p.detach().clone() for p in model.parameters()], loss.detach()

    model, opt, sched, loss_fn = _setup()
    calls = []
    for _ in range(2):
        got_loss = train_steps(loss_fn, opt, 6, scheduler=sched if with_scheduler else None,
                               after_step=lambda: calls.append(1))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), expected))
    assert torch.equal(got_loss, expected_loss) and not got_loss.requires_grad
    assert len(calls) == 12 and sched.last_epoch == (12 if with_scheduler else 0)
    assert not torch.equal(expected[0], _setup()[0][0].weight)  # the weights did move


@pytest.mark.parametrize("steps", [0, -1, 2.0, True])
def test_train_steps_needs_a_positive_int(steps):
    model, opt, _, loss_fn = _setup()
    with pytest.raises(ValueError, match="steps must be a positive int"):
        train_steps(loss_fn, opt, steps)
