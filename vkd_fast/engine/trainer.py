"""The trainer: runs any registered unlearning method (it knows no method names).

It owns the batch plan, micro-batches and gradient accumulation, multi-process runs (DDP, FSDP2 of
the frozen LLM), bf16 autocast on CUDA, the optimiser and schedule, saliency-mask gating, the
first-step check that every trainable tensor gets a gradient, run folders with checkpoints and
exact resume, logging and early stopping. The method (vkd_fast.methods) owns everything else.

Step losses stay on the device: on an accelerator they are read back to the host (one
synchronisation) only every ``log_every`` steps, before a checkpoint and at the end; on the CPU,
where a read costs nothing, after every step. Each read checks them: a non-finite loss, term or
gradient norm stops the run (:class:`NonFiniteLossError`) before anything of that step is saved.
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import sys
import time
from pathlib import Path

import torch

from ..adapters import get_adapter
from ..methods import create_method
from ..methods.base import check_items
from ..methods.saliency import apply_mask
from ..utils.devices import describe_device, resolve_device
from ..utils.files import check_output_file
from ..utils.memory import available_bytes
from .config import UnlearnConfig
from .distributed import barrier, world, wrap_student
from .fingerprint import run_fingerprint
from .plan import batch_plan, cosine_schedule, step_generator
from .result import UnlearnResult
from .run_folder import latest_checkpoint, latest_good_checkpoint, load_checkpoint, prepare_run_dir, save_checkpoint


def _floats(tensors: list[torch.Tensor]) -> list[float]:
    """Scalar tensors -> floats with one host read per device."""
    out: list[float | None] = [None] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for idx in by_device.values():
        values = torch.stack([tensors[i].detach().float().reshape(()) for i in idx]).tolist()
        for i, v in zip(idx, values):
            out[i] = v
    return out


class _History:
    """Per-step records whose losses are still device tensors until :meth:`flush`."""

    def __init__(self, grad_accum: int):
        self.grad_accum = grad_accum
        self.done: list[dict] = []
        self.pending: list[tuple[dict, list[torch.Tensor], list[dict]]] = []

    def add(self, record: dict, parts: list[torch.Tensor], terms: list[dict], grad_norm=None) -> None:
        if grad_norm is not None:
            terms = [*terms, {"grad_norm": grad_norm * self.grad_accum}]  # summed / grad_accum below: the norm
        self.pending.append((record, parts, terms))

    def flush(self) -> list[dict]:
        """Materialise the pending records (in order); returns them."""
        tensors = [t for _, parts, terms in self.pending for t in parts + [v for d in terms for v in d.values()]]
        values = iter(_floats(tensors))
        flushed = []
        for record, parts, terms in self.pending:
            loss, sums = 0.0, {}
            for _ in parts:
                loss += next(values) / self.grad_accum
            for d in terms:
                for k in d:
                    sums[k] = sums.get(k, 0.0) + next(values) / self.grad_accum
            record.update(loss=loss, **sums)
            flushed.append(record)
            if not all(math.isfinite(v) for k, v in record.items() if k == "loss" or k in sums):
                self.done += flushed
                self.pending = []
                raise NonFiniteLossError(record)
        self.done += flushed
        self.pending = []
        return flushed


class NonFiniteLossError(RuntimeError):
    """A step's loss, one of its terms or the gradient norm is NaN or infinite: the run stops there."""

    def __init__(self, record: dict, checkpoint=None):
        self.record, self.checkpoint = record, checkpoint
        where = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written"
        super().__init__(f"step {record['step']}: the loss is not finite ({_shown(record)}); the run stopped and "
                         f"nothing from this step on is saved ({where}); lower lr, or check the loss weights and the "
                         "data")


def _shown(record: dict) -> str:
    order = ["loss"] + [k for k in record if k not in ("step", "loss", "lr", "peak_rss_bytes", "step_seconds",
                                                       "tokens_per_s", "eval")]
    order += [k for k in ("eval", "step_seconds", "tokens_per_s") if k in record]
    return ", ".join(f"{k} {record[k]:.4g}" for k in order)


def _check_batch_fits(method, config: UnlearnConfig, world_size: int) -> None:
    """Refuse, before the first step, a micro-batch whose activations cannot fit where it trains: the
    method measures a forward of one forget + one retain image, the trainer scales it."""
    from ..methods import Batch

    per_pair = method.activation_bytes(Batch([0], [0]))
    if not per_pair:
        return
    micro = config.batch_size // (world_size * config.grad_accum)
    estimate = per_pair * micro
    device = next(p.device for p in method.parameters()) if method.parameters() else torch.device("cpu")
    available = available_bytes(device)
    if available is not None and estimate > available:
        gib = 2**30
        raise ValueError(f"batch_size={config.batch_size}: a micro-batch of {micro} forget + {micro} retain images "
                         f"needs about {estimate / gib:.1f} GiB of activations ({per_pair / 2**20:.1f} MiB per pair, "
                         f"measured), more than the {available / gib:.1f} GiB available on {device}; lower "
                         "batch_size or raise grad_accum")


def unlearn(model: torch.nn.Module, forget, retain, method="vkd", config: UnlearnConfig | None = None, *,
            options=None, tokenizer=None, resume: bool = False, eval_fn=None, eval_every: int = 0,
            stop_at: float | None = None, progress: bool = False) -> UnlearnResult:
    """Unlearn the visual knowledge of ``forget`` while keeping ``retain`` (docs/method.md §2-3).

    ``method``: a registered name (``vf.available_methods()``) with ``options`` (its ``Options``
    object or a mapping; None = its defaults), or a method object. ``config``: the trainer's
    :class:`UnlearnConfig`. ``forget`` / ``retain``: sequences of dicts with an ``"image"`` (PIL);
    output-level methods also need ``"question"`` and ``"answer"`` and a ``tokenizer``. The model
    is changed in place. With ``config.output_dir`` the run keeps its cached set-up and checkpoints
    there; ``resume=True`` continues from the latest checkpoint (pass the original model) and ends
    with the same weights as an uninterrupted run. Early stopping: every ``eval_every`` steps
    ``eval_fn(model)`` (e.g. forget accuracy) is recorded and the run stops once it is ``<= stop_at``.
    """
    config = config or UnlearnConfig()
    if not isinstance(config, UnlearnConfig):
        raise TypeError(f"config must be a vkd_fast.UnlearnConfig, got {type(config).__name__}")
    method = create_method(method, options)
    config = config.for_method(method)
    if eval_every and eval_fn is None:
        raise ValueError("eval_every needs eval_fn (a callable model -> forget accuracy)")
    forget, retain = check_items("forget", forget), check_items("retain", retain)
    world_size, rank = world()
    method.check(forget, retain, tokenizer, world_size)
    adapter = get_adapter(model)  # unsupported models fail here, before any work
    if method.needs_language_model:
        adapter.require_language_model(f"method {method.name!r} with these options")
    spec, tap, lora = method.trainable_set()
    adapter.parse_tap(tap)
    device = resolve_device(config.device)  # "auto": the accelerator when one is visible, else the CPU
    if config.log_path is not None:
        check_output_file("log_path", config.log_path)
    if resume and not config.output_dir:
        raise ValueError("resume=True needs config.output_dir (the run folder to continue)")
    if config.batch_size % (world_size * config.grad_accum):
        raise ValueError(f"batch_size={config.batch_size} must be divisible by the {world_size} processes x "
                         f"grad_accum={config.grad_accum} (each takes an equal share of the global batch)")
    trajectory = {**config.trajectory_dict(), "method": method.name,
                  **{f"{method.name}.{k}": v for k, v in method.options_dict().items()}, "world_size": world_size}
    run_dir = None
    if config.output_dir:  # rank 0 owns the run folder; the others wait for it
        if rank == 0:
            fingerprint = run_fingerprint(model, adapter, forget, retain)
            run_dir = prepare_run_dir(config.output_dir, trajectory, resume, fingerprint)
        barrier(world_size)
        run_dir = Path(config.output_dir) if rank != 0 else run_dir
    t_start = time.perf_counter()
    torch.manual_seed(config.seed)

    # every rank does the same set-up; only rank 0 keeps what it caches in the run folder
    if progress and rank == 0:
        where = "where the model is" if device is None else describe_device(device)
        print(f"vkd_fast: training {method.name} on {where}", file=sys.stderr, flush=True)
    summary = method.prepare(model, forget, retain, tokenizer=tokenizer, device=device,
                             run_dir=run_dir if rank == 0 else None, progress=progress and rank == 0,
                             world_size=world_size, seed=config.seed)
    if config.trained_dtype is not None:  # e.g. bf16 frozen parts, fp32 master weights where the model learns
        trained_dtype = getattr(torch, config.trained_dtype)
        for p in model.parameters():
            if p.requires_grad and p.is_floating_point() and p.dtype != trained_dtype:
                p.data = p.data.to(trained_dtype)
    _check_batch_fits(method, config, world_size)
    gen = step_generator(config.seed)  # the steps' own draws; the plan has its stream from the seed
    plan = batch_plan(len(forget), len(retain), config.steps, config.batch_size,
                      torch.Generator().manual_seed(config.seed), world_size=world_size,
                      rank=rank, grad_accum=config.grad_accum,
                      interleave=config.batch_mode == "interleaved" and method.two_sided)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    masks = method.saliency_masks(named, plan)
    mask_hooks = []
    if masks is not None:
        for n, p in named:
            if not masks[n].any():  # nothing of this tensor is salient: it is not trained at all
                p.requires_grad_(False)
        named = [(n, p) for n, p in named if p.requires_grad]
        mask_hooks = apply_mask(named, masks)
        summary = {**summary, "names": [n for n, _ in named],
                   "masked_trainable": int(sum(masks[n].sum() for n, _ in named))}
    if world_size > 1:
        wrap_student(method, model, adapter, {n for n, _ in named}, config.shard_llm)
    optimizer = torch.optim.AdamW([p for _, p in named], lr=config.lr, weight_decay=config.weight_decay)
    scheduler = cosine_schedule(optimizer, config.steps, config.warmup_steps, config.min_lr_ratio)

    start = 0
    if resume:
        found = latest_good_checkpoint(run_dir)  # verified once, then loaded
        if found is not None:
            start = load_checkpoint(found[0], named, optimizer, scheduler, {"generator": gen}, state=found[1])

    device = next(adapter.vision_tower.parameters()).device
    # bf16 autocast on CUDA (fp32 elsewhere); the fused loss accumulates in fp32 and returns fp32
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if config.amp == "bf16" and device.type == "cuda"
           else contextlib.nullcontext())
    if config.log_path and rank == 0:
        Path(config.log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(config.log_path, "a") if config.log_path and rank == 0 else None  # closed in the finally below
    history = _History(config.grad_accum)
    to_log: list[dict] = []
    try:
        for step in range(start, config.steps):
            t0 = time.perf_counter()
            parts, terms, n_tokens = [], [], 0
            for micro in range(step * config.grad_accum, (step + 1) * config.grad_accum):
                upcoming = plan[micro + 1] if micro + 1 < len(plan) else None
                with amp:
                    part, part_terms = method.step(plan[micro], upcoming=upcoming, generator=gen)
                (part / config.grad_accum).backward()
                parts.append(part.detach())
                terms.append(part_terms)
                n_tokens += method.tokens(plan[micro])
            if step == 0:
                # LoRA's B starts at zero, so its A gets exactly zero gradient until B has moved: not dead
                dead = [n for n, p in named if (p.grad is None or not torch.any(p.grad != 0)) and ".lora_A." not in n]
                if dead:
                    raise RuntimeError(f"{len(dead)} trainable tensors got no gradient in the first step, so they "
                                       f"would never change: {', '.join(dead[:10])}"
                                       + (" ..." if len(dead) > 10 else ""))
            norm = None
            if config.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_([p for _, p in named], config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - t0
            record = {"step": step + 1, "lr": scheduler.get_last_lr()[0], "step_seconds": seconds,
                      "tokens_per_s": n_tokens / seconds,
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
            stop = False
            if eval_every and (step + 1) % eval_every == 0:
                record["eval"] = float(eval_fn(model))
                stop = stop_at is not None and record["eval"] <= stop_at
            history.add(record, parts, terms, norm)
            last = stop or step + 1 == config.steps
            due = last or (config.save_every and (step + 1) % config.save_every == 0)
            log_now = (step + 1) % config.log_every == 0 or last
            # the losses are read back (and checked: a non-finite step stops the run before anything of it
            # is saved) at every step on the CPU, where a read costs nothing, and on an accelerator only
            # when logging or saving
            if device.type == "cpu" or due or log_now:
                try:
                    to_log += history.flush()
                except NonFiniteLossError as exc:
                    good = latest_checkpoint(run_dir) if run_dir is not None else None
                    raise NonFiniteLossError(exc.record, good) from None
            if run_dir is not None and rank == 0 and due:
                save_checkpoint(run_dir, step + 1, named, optimizer, scheduler, {"generator": gen}, finished=last)
            if log_now:
                for r in to_log:
                    if log is not None and (r["step"] % config.log_every == 0 or r is record):
                        log.write(json.dumps(r) + "\n")
                to_log = []
                if log is not None:
                    log.flush()
                if progress and rank == 0:
                    print(f"step {step + 1}/{config.steps} {_shown(record)}", file=sys.stderr)
            if stop:
                break
    finally:
        with contextlib.suppress(NonFiniteLossError):
            history.flush()
        if log is not None:
            log.close()
        for h in mask_hooks:
            h.remove()
        method_stats = method.close()
    model.requires_grad_(False)
    return UnlearnResult(model=model, method=method.name, config=config.to_dict(), options=method.options_dict(),
                         trainable=summary, history=history.done, wall_seconds=time.perf_counter() - t_start,
                         method_stats=method_stats, start_step=start)
