"""The batch plan and schedule (vkd_fast.engine.plan), and a method object driven from other training
loops -- a plain PyTorch loop and a Hugging Face ``Trainer`` subclass -- ending with exactly the
weights of ``vf.unlearn`` for the same plan and seed."""

from __future__ import annotations

import math

import _tiny_models as T
import pytest
import torch
from _items import FORGET, RETAIN

import vkd_fast as vf
from vkd_fast.engine import batch_plan, cosine_schedule, lr_factor, step_generator
from vkd_fast.methods import Batch

STEPS, BATCH, LR, SEED = 6, 2, 3e-3, 4
OPTIONS = {"forget_augment": 0.5}  # the step draws from the run's generator too


def test_plan_shares_and_interleaving():
    g = torch.Generator().manual_seed(0)
    plan = batch_plan(4, 10, steps=3, batch_size=4, generator=g)
    assert len(plan) == 3 and all(len(b.forget) == 4 and len(b.retain) == 4 for b in plan)
    assert all(0 <= i < 4 for b in plan for i in b.forget) and all(0 <= i < 10 for b in plan for i in b.retain)
    ranks = [batch_plan(4, 10, 3, 4, torch.Generator().manual_seed(0), world_size=2, rank=r, grad_accum=2)
             for r in range(2)]
    # every rank draws the same global plan and takes its contiguous share, in grad_accum micro-batches
    for step, whole in enumerate(plan):
        micro = [ranks[r][2 * step + m] for r in range(2) for m in range(2)]
        assert sum((b.forget for b in micro), []) == whole.forget and all(len(b.forget) == 1 for b in micro)
        # each forget entry's global place in the run: the same on every rank and micro-batch split
        assert sum((b.slots for b in micro), ()) == whole.slots == tuple(range(4 * step, 4 * step + 4))
    inter = batch_plan(4, 10, 3, 4, torch.Generator().manual_seed(0), interleave=True)
    assert list(inter) == [Batch(plan[0].forget, [], (0, 1, 2, 3)), Batch([], plan[1].retain),
                           Batch(plan[2].forget, [], (8, 9, 10, 11))]


def test_the_plan_is_lazy_and_equals_drawing_every_step_up_front():
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    plan = batch_plan(5, 7, steps=50, batch_size=4, generator=g, grad_accum=2)
    assert torch.equal(g.get_state(), state)  # the generator passed in is not advanced
    ref = torch.Generator().manual_seed(3)  # the eager plan: both sides of every step, in step order
    eager = []
    for _ in range(50):
        fi = torch.randint(0, 5, (4,), generator=ref).tolist()
        ri = torch.randint(0, 7, (4,), generator=ref).tolist()
        first = 4 * (len(eager) // 2)
        eager += [Batch(fi[:2], ri[:2], (first, first + 1)), Batch(fi[2:], ri[2:], (first + 2, first + 3))]
    assert list(plan) == eager and plan[-1] == eager[-1] and plan[3:6] == eager[3:6]
    assert plan[7] == eager[7] and plan[90] == eager[90] and plan[1] == eager[1]  # backwards: redrawn
    assert len(plan._held) <= 2  # memory does not grow with steps
    huge = batch_plan(5, 7, steps=10**12, batch_size=4, generator=torch.Generator().manual_seed(3))
    assert len(huge) == 10**12 and huge[0] == Batch(eager[0].forget + eager[1].forget, eager[0].retain + eager[1].retain,
                                                  (0, 1, 2, 3))
    for bad, message in ((dict(steps=0), "steps must be a positive int"), (dict(batch_size=3, grad_accum=2), "divisible"),
                         (dict(generator=0), "generator must be a torch.Generator")):
        kwargs = {"n_forget": 5, "n_retain": 7, "steps": 5, "batch_size": 4, "generator": torch.Generator(), **bad}
        with pytest.raises((ValueError, TypeError), match=message):
            batch_plan(**kwargs)


def test_schedule_warms_up_then_decays_to_the_floor():
    f = lr_factor(10, warmup_steps=2, min_lr_ratio=0.1)
    assert [f(0), f(1)] == [0.5, 1.0] and f(2) == pytest.approx(1.0) and f(10) == pytest.approx(0.1)
    assert f(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def _reference():
    model = T.tiny_llava()
    vf.unlearn(model, FORGET, RETAIN, options=OPTIONS,
               config=vf.UnlearnConfig(steps=STEPS, batch_size=BATCH, lr=LR, seed=SEED))
    return model


def _prepared():
    """A method object set up on a fresh model as vf.unlearn does: seed, set-up, the plan from the seed, the
    steps' own draws from step_generator(seed)."""
    model = T.tiny_llava()
    torch.manual_seed(SEED)
    method = vf.methods.VKD(OPTIONS)
    method.prepare(model, FORGET, RETAIN, seed=SEED)
    gen = step_generator(SEED)
    plan = batch_plan(len(FORGET), len(RETAIN), STEPS, BATCH, torch.Generator().manual_seed(SEED))
    opt = torch.optim.AdamW(method.parameters(), lr=LR, weight_decay=0.0)
    return model, method, gen, plan, opt, cosine_schedule(opt, STEPS)


def _same_weights(a, b):
    pa = dict(a.named_parameters())
    for n, p in b.named_parameters():
        assert torch.equal(p, pa[n]), n


def test_a_plain_pytorch_loop_gives_the_weights_of_unlearn():
    model, method, gen, plan, opt, sched = _prepared()
    for i, batch in enumerate(plan):
        loss, terms = method.step(batch, upcoming=plan[i + 1] if i + 1 < len(plan) else None, generator=gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(method.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    method.close()
    _same_weights(_reference(), model)


def test_a_hugging_face_trainer_subclass_gives_the_weights_of_unlearn(tmp_path):
    from transformers import Trainer, TrainingArguments

    model, method, gen, plan, opt, sched = _prepared()

    class Plan(torch.utils.data.IterableDataset):  # in order (no sampler); index tensors, as Trainer expects
        def __iter__(self):
            return iter({"forget": torch.tensor(b.forget), "retain": torch.tensor(b.retain),
                         "slots": torch.tensor(b.slots)} for b in plan)

    class UnlearningTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            batch = Batch(inputs["forget"].tolist(), inputs["retain"].tolist(), tuple(inputs["slots"].tolist()))
            loss, _terms = method.step(batch, generator=gen)
            return loss

    args = TrainingArguments(output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=1,
                             learning_rate=LR, max_grad_norm=1.0, report_to=[], save_strategy="no",
                             logging_strategy="no", remove_unused_columns=False, use_cpu=True, disable_tqdm=True,
                             dataloader_num_workers=0)
    trainer = UnlearningTrainer(model=model, args=args, train_dataset=Plan(), optimizers=(opt, sched),
                                data_collator=lambda rows: rows[0])
    trainer.train()
    method.close()
    _same_weights(_reference(), model)
