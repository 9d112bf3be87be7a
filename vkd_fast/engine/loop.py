"""The unlearning loop (VKD so far): teacher cache, anchors, trainable set, AdamW steps."""

from __future__ import annotations

import copy
import json
import math
import resource
import sys
import time
from dataclasses import dataclass, field

import torch

from ..adapters import get_adapter
from ..cache import ActivationCache
from ..methods import available_methods, vkd_loss
from ..ops import check_choice
from .checkpoint import TEACHER_FILE, latest_checkpoint, load_checkpoint, prepare_run_dir, save_checkpoint, save_delta
from .config import UnlearnConfig
from .teacher import build_teacher_cache, misdirect_anchor, retain_mean_anchor


@dataclass
class UnlearnResult:
    """What :func:`unlearn` returns besides the (in-place) unlearned model."""

    model: torch.nn.Module
    method: str
    config: dict
    trainable: dict
    history: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0
    teacher_cache: dict = field(default_factory=dict)
    start_step: int = 0

    def save_delta(self, path) -> None:
        """Write only the trained tensors (safetensors); ``vkd_fast.engine.load_delta`` applies them."""
        save_delta(self.model, self.trainable["names"], path, metadata={"method": self.method, "config": self.config})

    def save_pretrained(self, directory) -> None:
        """Write the whole unlearned model with transformers' ``save_pretrained`` (loads back with
        ``from_pretrained``). A LoRA run has adapter layers inside the model: export its delta instead."""
        if self.trainable.get("lora"):
            raise NotImplementedError("save_pretrained of a LoRA run is not supported yet: use save_delta")
        self.model.save_pretrained(directory)


def _check_items(name: str, items) -> list:
    try:
        items = list(items)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of items (dicts with an 'image'), "
                        f"got {type(items).__name__}") from None
    if not items:
        raise ValueError(f"{name} is empty: unlearning needs at least one {name} image")
    for i, it in enumerate(items):
        if not isinstance(it, dict) or "image" not in it:
            raise ValueError(f"{name}[{i}] must be a dict with an 'image' (a PIL image), got {type(it).__name__}"
                             + (f" with keys {sorted(it)}" if isinstance(it, dict) else ""))
    return items


def _lr_lambda(config: UnlearnConfig):
    def f(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        span = max(1, config.steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


class _LiveTeacher:
    """A frozen copy of the model computing targets every step: the naive VKD (tests, benchmarks)."""

    def __init__(self, model, tap):
        self.adapter = get_adapter(copy.deepcopy(model).eval().requires_grad_(False))
        self.tap = tap

    @torch.no_grad()
    def features(self, image_inputs: list[dict]) -> torch.Tensor:
        return self.adapter.visual_features(tap=self.tap, **self.adapter.collate(image_inputs))[0]


def unlearn(model: torch.nn.Module, forget, retain, method: str = "vkd", config: UnlearnConfig | None = None,
            *, teacher: str = "cache", resume: bool = False, progress: bool = False) -> UnlearnResult:
    """Unlearn the visual knowledge of ``forget`` while keeping ``retain`` (METHOD.md section 2).

    ``forget`` / ``retain``: sequences of dicts with an ``"image"`` (PIL). The model is changed in
    place: only the trainable set of ``config`` is updated; the language model is never touched.
    ``teacher="live"`` computes targets with a frozen copy every step instead of the cache (the
    naive VKD; for tests and benchmarks). With ``config.output_dir`` the run keeps its teacher cache
    and checkpoints there; ``resume=True`` continues from the latest checkpoint (pass the original,
    un-unlearned model) and ends with the same weights as an uninterrupted run. Returns an
    :class:`UnlearnResult`.
    """
    config = config or UnlearnConfig()
    check_choice("method", method, available_methods())
    check_choice("teacher", teacher, ("cache", "live"))
    if not isinstance(config, UnlearnConfig):
        raise TypeError(f"config must be a vkd_fast.UnlearnConfig, got {type(config).__name__}")
    forget, retain = _check_items("forget", forget), _check_items("retain", retain)
    adapter = get_adapter(model)  # unsupported models fail here, before any work
    adapter.parse_tap(config.tap)
    if resume and not config.output_dir:
        raise ValueError("resume=True needs config.output_dir (the run folder to continue)")
    run_dir = prepare_run_dir(config.output_dir, config.trajectory_dict(), resume) if config.output_dir else None
    t_start = time.perf_counter()
    torch.manual_seed(config.seed)

    inputs = [adapter.preprocess([it["image"]]) for it in forget + retain]
    nf, nr = len(forget), len(retain)
    f_keys, r_keys = list(range(nf)), list(range(nf, nf + nr))
    live = _LiveTeacher(model, config.tap) if teacher == "live" else None
    if run_dir is not None and (run_dir / TEACHER_FILE).exists():
        cache = ActivationCache.load(run_dir / TEACHER_FILE)
    else:
        cache = build_teacher_cache(adapter, inputs, f_keys + r_keys, config.tap, config.teacher_batch_size,
                                    config.cache_dtype, progress=progress)
        if run_dir is not None:
            cache.save(run_dir / TEACHER_FILE)
    if config.forget_target == "retain_mean":
        anchor = retain_mean_anchor(cache, r_keys)
    elif config.forget_target == "misdirect":
        anchor = misdirect_anchor(cache, r_keys, max(cache.rows(k) for k in f_keys), config.misdirect_scale,
                                  config.seed)
    else:
        anchor = None
    if anchor is not None:
        too_long = [k for k in f_keys if cache.rows(k) > anchor.shape[0]]
        if too_long:
            raise ValueError(f"forget images {too_long[:5]} have more visual tokens than any retain image; "
                             "retain_mean has no anchor for those positions (use forget_target='misdirect')")

    summary = adapter.set_trainable(config.trainable, tap=config.tap, lora=config.lora)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for _, p in named], lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    gen = torch.Generator().manual_seed(config.seed)
    bs = config.batch_size
    plan = [(torch.randint(0, nf, (bs,), generator=gen).tolist(), torch.randint(0, nr, (bs,), generator=gen).tolist())
            for _ in range(config.steps)]

    start = 0
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            start = load_checkpoint(ckpt, named, optimizer, scheduler, gen)

    def target_keys(step):
        fi, ri = plan[step]
        return ([r_keys[i] for i in ri], [f_keys[i] for i in fi])

    log = open(config.log_path, "a") if config.log_path else None  # closed in the finally below
    history: list[dict] = []
    pending = cache.prefetch(target_keys(start)[0] + target_keys(start)[1]) if live is None and start < config.steps \
        else None
    try:
        for step in range(start, config.steps):
            t0 = time.perf_counter()
            fi, ri = plan[step]
            batch = [inputs[f_keys[i]] for i in fi] + [inputs[r_keys[i]] for i in ri]
            student, offsets = adapter.visual_features(tap=config.tap, **adapter.collate(batch))
            n_forget_rows = int(offsets[len(fi)])
            if live is None:
                targets, _ = pending.wait()
                if step + 1 < config.steps:  # the next step's teacher rows load while this one trains
                    pending = cache.prefetch(target_keys(step + 1)[0] + target_keys(step + 1)[1])
                retain_t = targets[: targets.shape[0] - n_forget_rows]
                forget_own = targets[targets.shape[0] - n_forget_rows:]
            else:
                t_all = live.features(batch)
                forget_own, retain_t = t_all[:n_forget_rows], t_all[n_forget_rows:]
            if anchor is not None:
                lengths = offsets.diff()[: len(fi)].tolist()
                index = torch.cat([torch.arange(n) for n in lengths])
                loss, terms = vkd_loss(student, n_forget_rows, retain_t, anchor, config, index)
            else:
                loss, terms = vkd_loss(student, n_forget_rows, retain_t, forget_own, config, generator=gen)
            loss.backward()
            if step == 0:
                dead = [n for n, p in named if p.grad is None or not torch.any(p.grad != 0)]
                if dead:
                    raise RuntimeError(f"{len(dead)} trainable tensors got no gradient in the first step, so they "
                                       f"would never change: {', '.join(dead[:10])}"
                                       + (" ..." if len(dead) > 10 else ""))
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for _, p in named], config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - t0
            record = {"step": step + 1, "loss": float(loss.detach()), **{k: float(v) for k, v in terms.items()},
                      "lr": scheduler.get_last_lr()[0], "tokens_per_s": student.shape[0] / seconds,
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
            history.append(record)
            last = step + 1 == config.steps
            if run_dir is not None and (last or (config.save_every and (step + 1) % config.save_every == 0)):
                save_checkpoint(run_dir, step + 1, named, optimizer, scheduler, gen)
            if log is not None and ((step + 1) % config.log_every == 0 or step + 1 == config.steps):
                log.write(json.dumps(record) + "\n")
                log.flush()
            if progress and ((step + 1) % config.log_every == 0 or step + 1 == config.steps):
                print(f"step {step + 1}/{config.steps} loss {record['loss']:.4f} "
                      f"(retain {record['loss_retain']:.4f}, forget {record['loss_forget']:.4f})",
                      file=sys.stderr)
    finally:
        if log is not None:
            log.close()
        cache.close()
    model.requires_grad_(False)
    return UnlearnResult(model=model, method=method, config=config.to_dict(), trainable=summary, history=history,
                         wall_seconds=time.perf_counter() - t_start, teacher_cache=cache.stats(), start_step=start)
