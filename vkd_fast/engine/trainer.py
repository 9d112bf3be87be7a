"""The trainer: runs any registered unlearning method (it knows no method names).

It owns the batch plan, micro-batches and gradient accumulation, multi-process runs (DDP, FSDP2 of
the frozen LLM), bf16 autocast on CUDA, the optimiser and schedule, saliency-mask gating, the
first-step check that every trainable tensor gets a gradient, run folders with checkpoints and
exact resume, logging and early stopping. The method (vkd_fast.methods) owns everything else.

A run is four phases, each a method of :class:`Trainer`, which :func:`unlearn` calls in order:

* :meth:`Trainer.prepare` -- every check of the arguments (before any work), the device, the run
  folder with the fingerprints of the starting model and the data, the seed;
* :meth:`Trainer.build` -- the method's set-up (VKD: its teacher cache), the trained dtype, the
  micro-batch memory check, the batch plan, saliency masks, the DDP wrap, the optimiser and
  schedule, and on ``resume`` the latest good checkpoint;
* :meth:`Trainer.train` -- the steps, logging, checkpoints and early stopping; the method is
  closed at the end, also when a step fails;
* :meth:`Trainer.finish` -- the :class:`UnlearnResult`.

Step losses stay on the device: on an accelerator they are read back to the host (one
synchronisation) only every ``log_every`` steps, before a checkpoint and at the end; on the CPU,
where a read costs nothing, after every step. Each read checks them: a non-finite loss, term or
gradient norm stops the run (:class:`NonFiniteLossError`) before anything of that step is saved.
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import time
from pathlib import Path

import torch

from ..adapters import get_adapter
from ..methods import create_method
from ..methods.inputs import check_items
from ..methods.saliency import apply_mask
from ..utils.devices import describe_device, resolve_device
from ..utils.files import check_output_file
from ..utils.memory import available_bytes
from .config import UnlearnConfig
from .distributed import barrier, world, wrap_student
from .fingerprint import run_fingerprint
from .history import NonFiniteLossError, StepHistory, shown
from .plan import batch_plan, cosine_schedule, step_generator
from .result import UnlearnResult
from .run_folder import latest_checkpoint, latest_good_checkpoint, load_checkpoint, prepare_run_dir, save_checkpoint

_PHASES = ("prepare", "build", "train", "finish")


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


class Trainer:
    """One unlearning run, driven phase by phase (the arguments are :func:`unlearn`'s)::

        trainer = Trainer(model, forget, retain, method="vkd", config=UnlearnConfig(steps=50))
        trainer.prepare()   # checks, device, run folder, seed
        trainer.build()     # method set-up, plan, masks, optimiser, resume
        trainer.train()     # the steps
        result = trainer.finish()

    gives the same model, bit for bit, as ``unlearn(model, forget, retain, ...)`` (which is
    ``Trainer(...).run()``). Each phase runs once, after the one before it. Between phases the run's
    parts can be read: after :meth:`prepare` ``config`` (the method's defaults applied), ``method``,
    ``adapter``, ``world_size``, ``rank``, ``run_dir``; after :meth:`build` also ``trainable`` (the
    method's summary of what trains), ``plan``, ``named`` (the trained parameters), ``optimizer``,
    ``scheduler`` and ``start_step`` (> 0 when resumed); after :meth:`train` ``history`` and
    ``method_stats`` (what the method reported when it closed). Changing them changes the run.
    """

    def __init__(self, model: torch.nn.Module, forget, retain, method="vkd", config: UnlearnConfig | None = None, *,
                 options=None, tokenizer=None, resume: bool = False, eval_fn=None, eval_every: int = 0,
                 stop_at: float | None = None, progress: bool = False):
        self.model, self.forget, self.retain = model, forget, retain
        self.method, self.config, self.options, self.tokenizer = method, config, options, tokenizer
        self.resume, self.eval_fn, self.eval_every, self.stop_at = resume, eval_fn, eval_every, stop_at
        self.progress = progress
        self._done: list[str] = []

    def run(self) -> UnlearnResult:
        """All four phases in order."""
        self.prepare()
        self.build()
        self.train()
        return self.finish()

    def _enter(self, phase: str) -> None:
        i = _PHASES.index(phase)
        if self._done != list(_PHASES[:i]):
            if phase in self._done:
                raise RuntimeError(f"Trainer.{phase}() ran already: a Trainer runs once (make a new one)")
            raise RuntimeError(f"Trainer.{phase}() needs {_PHASES[len(self._done)]}() first "
                               f"(the phases run in the order {', '.join(_PHASES)})")

    # ------------------------------------------------------------------ prepare
    def prepare(self) -> None:
        """Check every argument before any work, then create or check the run folder (rank 0; the
        others wait for it) and seed the global generator."""
        self._enter("prepare")
        config = self.config or UnlearnConfig()
        if not isinstance(config, UnlearnConfig):
            raise TypeError(f"config must be a vkd_fast.UnlearnConfig, got {type(config).__name__}")
        method = create_method(self.method, self.options)
        config = config.for_method(method)
        if self.eval_every and self.eval_fn is None:
            raise ValueError("eval_every needs eval_fn (a callable model -> forget accuracy)")
        forget, retain = check_items("forget", self.forget), check_items("retain", self.retain)
        world_size, rank = world()
        method.check(forget, retain, self.tokenizer, world_size)
        adapter = get_adapter(self.model)  # unsupported models fail here, before any work
        if method.needs_language_model:
            adapter.require_language_model(f"method {method.name!r} with these options")
        spec, tap, lora = method.trainable_set()
        adapter.parse_tap(tap)
        device = resolve_device(config.device)  # "auto": the accelerator when one is visible, else the CPU
        if config.log_path is not None:
            check_output_file("log_path", config.log_path)
        if self.resume and not config.output_dir:
            raise ValueError("resume=True needs config.output_dir (the run folder to continue)")
        if config.batch_size % (world_size * config.grad_accum):
            raise ValueError(f"batch_size={config.batch_size} must be divisible by the {world_size} processes x "
                             f"grad_accum={config.grad_accum} (each takes an equal share of the global batch)")
        trajectory = {**config.trajectory_dict(), "method": method.name,
                      **{f"{method.name}.{k}": v for k, v in method.options_dict().items()},
                      "world_size": world_size}
        run_dir = None
        if config.output_dir:  # rank 0 owns the run folder; the others wait for it
            if rank == 0:
                fingerprint = run_fingerprint(self.model, adapter, forget, retain)
                run_dir = prepare_run_dir(config.output_dir, trajectory, self.resume, fingerprint)
            barrier(world_size)
            run_dir = Path(config.output_dir) if rank != 0 else run_dir
        self.config, self.method, self.adapter, self.forget, self.retain = config, method, adapter, forget, retain
        self.world_size, self.rank, self.device, self.run_dir = world_size, rank, device, run_dir
        self._t_start = time.perf_counter()
        torch.manual_seed(config.seed)
        self._done.append("prepare")

    # ------------------------------------------------------------------ build
    def build(self) -> None:
        """Everything the steps need: the method's set-up (every rank does the same; only rank 0 keeps
        what it caches in the run folder), the plan, masks, optimiser and schedule, and on resume the
        state of the latest good checkpoint."""
        self._enter("build")
        config, method, model, rank = self.config, self.method, self.model, self.rank
        if self.progress and rank == 0:
            where = "where the model is" if self.device is None else describe_device(self.device)
            print(f"vkd_fast: training {method.name} on {where}", file=sys.stderr, flush=True)
        summary = method.prepare(model, self.forget, self.retain, tokenizer=self.tokenizer, device=self.device,
                                 run_dir=self.run_dir if rank == 0 else None, progress=self.progress and rank == 0,
                                 world_size=self.world_size, seed=config.seed)
        if config.trained_dtype is not None:  # e.g. bf16 frozen parts, fp32 master weights where the model learns
            trained_dtype = getattr(torch, config.trained_dtype)
            for p in model.parameters():
                if p.requires_grad and p.is_floating_point() and p.dtype != trained_dtype:
                    p.data = p.data.to(trained_dtype)
        _check_batch_fits(method, config, self.world_size)
        self.generator = step_generator(config.seed)  # the steps' own draws; the plan has its stream from the seed
        self.plan = batch_plan(len(self.forget), len(self.retain), config.steps, config.batch_size,
                               torch.Generator().manual_seed(config.seed), world_size=self.world_size,
                               rank=rank, grad_accum=config.grad_accum,
                               interleave=config.batch_mode == "interleaved" and method.two_sided)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        masks = method.saliency_masks(named, self.plan)
        self._mask_hooks = []
        if masks is not None:
            for n, p in named:
                if not masks[n].any():  # nothing of this tensor is salient: it is not trained at all
                    p.requires_grad_(False)
            named = [(n, p) for n, p in named if p.requires_grad]
            self._mask_hooks = apply_mask(named, masks)
            summary = {**summary, "names": [n for n, _ in named],
                       "masked_trainable": int(sum(masks[n].sum() for n, _ in named))}
        if self.world_size > 1:
            wrap_student(method, model, self.adapter, {n for n, _ in named}, config.shard_llm)
        self.named, self.trainable = named, summary
        self.optimizer = torch.optim.AdamW([p for _, p in named], lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = cosine_schedule(self.optimizer, config.steps, config.warmup_steps, config.min_lr_ratio)
        self.start_step = 0
        if self.resume:
            found = latest_good_checkpoint(self.run_dir)  # verified once, then loaded
            if found is not None:
                self.start_step = load_checkpoint(found[0], named, self.optimizer, self.scheduler,
                                                  {"generator": self.generator}, state=found[1])
        self.train_device = next(self.adapter.vision_tower.parameters()).device
        self._done.append("build")

    # ------------------------------------------------------------------ train
    def train(self) -> None:
        """The steps from ``start_step`` to ``config.steps`` (or the early stop), with logging and
        checkpoints; then the mask hooks are removed and the method closed (also on an error)."""
        self._enter("train")
        config = self.config
        if config.log_path and self.rank == 0:
            Path(config.log_path).parent.mkdir(parents=True, exist_ok=True)
        log = open(config.log_path, "a") if config.log_path and self.rank == 0 else None  # closed in the finally
        self.history = StepHistory(config.grad_accum)
        try:
            self._steps(log)
            self.method.after_steps()
        finally:
            with contextlib.suppress(NonFiniteLossError):
                self.history.flush()
            if log is not None:
                log.close()
            for h in self._mask_hooks:
                h.remove()
            self.method_stats = self.method.close()
        self._done.append("train")

    def _steps(self, log) -> None:
        config, history, gen = self.config, self.history, self.generator
        # bf16 autocast on CUDA (fp32 elsewhere); the fused loss accumulates in fp32 and returns fp32
        amp = (torch.autocast("cuda", dtype=torch.bfloat16)
               if config.amp == "bf16" and self.train_device.type == "cuda" else contextlib.nullcontext())
        to_log: list[dict] = []
        for step in range(self.start_step, config.steps):
            t0 = time.perf_counter()
            parts, terms, n_tokens = self._accumulate(step, amp)
            if step == 0:
                self._check_every_tensor_learns()
            norm = None
            if config.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_([p for _, p in self.named], config.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - t0
            record = {"step": step + 1, "lr": self.scheduler.get_last_lr()[0], "step_seconds": seconds,
                      "tokens_per_s": n_tokens / seconds,
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
            stop = False
            if self.eval_every and (step + 1) % self.eval_every == 0:
                record["eval"] = float(self.eval_fn(self.model))
                stop = self.stop_at is not None and record["eval"] <= self.stop_at
            history.add(record, parts, terms, norm)
            last = stop or step + 1 == config.steps
            due = last or (config.save_every and (step + 1) % config.save_every == 0)
            log_now = (step + 1) % config.log_every == 0 or last
            # the losses are read back (and checked: a non-finite step stops the run before anything of it
            # is saved) at every step on the CPU, where a read costs nothing, and on an accelerator only
            # when logging or saving
            if self.train_device.type == "cpu" or due or log_now:
                try:
                    to_log += history.flush()
                except NonFiniteLossError as exc:
                    good = latest_checkpoint(self.run_dir) if self.run_dir is not None else None
                    raise NonFiniteLossError(exc.record, good) from None
            if self.run_dir is not None and self.rank == 0 and due:
                save_checkpoint(self.run_dir, step + 1, self.named, self.optimizer, self.scheduler,
                                {"generator": gen}, finished=last)
            if log_now:
                for r in to_log:
                    if log is not None and (r["step"] % config.log_every == 0 or r is record):
                        log.write(json.dumps(r) + "\n")
                to_log = []
                if log is not None:
                    log.flush()
                if self.progress and self.rank == 0:
                    print(f"step {step + 1}/{config.steps} {shown(record)}", file=sys.stderr)
            if stop:
                break

    def _accumulate(self, step: int, amp) -> tuple[list[torch.Tensor], list[dict], int]:
        """The step's micro-batches, forward and backward: (their losses, their terms, tokens seen)."""
        config, plan = self.config, self.plan
        parts, terms, n_tokens = [], [], 0
        for micro in range(step * config.grad_accum, (step + 1) * config.grad_accum):
            upcoming = plan[micro + 1] if micro + 1 < len(plan) else None
            with amp:
                part, part_terms = self.method.step(plan[micro], upcoming=upcoming, generator=self.generator)
            (part / config.grad_accum).backward()
            parts.append(part.detach())
            terms.append(part_terms)
            n_tokens += self.method.tokens(plan[micro])
        return parts, terms, n_tokens

    def _check_every_tensor_learns(self) -> None:
        """After the first backward: a trainable tensor without gradient would never change."""
        # LoRA's B starts at zero, so its A gets exactly zero gradient until B has moved: not dead
        dead = [n for n, p in self.named
                if (p.grad is None or not torch.any(p.grad != 0)) and ".lora_A." not in n]
        if dead:
            raise RuntimeError(f"{len(dead)} trainable tensors got no gradient in the first step, so they "
                               f"would never change: {', '.join(dead[:10])}" + (" ..." if len(dead) > 10 else ""))

    # ------------------------------------------------------------------ finish
    def finish(self) -> UnlearnResult:
        """Freeze the model again and return the run's :class:`UnlearnResult`."""
        self._enter("finish")
        self.model.requires_grad_(False)
        self._done.append("finish")
        return UnlearnResult(model=self.model, method=self.method.name, config=self.config.to_dict(),
                             options=self.method.options_dict(), trainable=self.trainable,
                             history=self.history.done, wall_seconds=time.perf_counter() - self._t_start,
                             method_stats=self.method_stats, start_step=self.start_step)


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
    The phases one by one: :class:`Trainer`.
    """
    return Trainer(model, forget, retain, method, config, options=options, tokenizer=tokenizer, resume=resume,
                   eval_fn=eval_fn, eval_every=eval_every, stop_at=stop_at, progress=progress).run()
