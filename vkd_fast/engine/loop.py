"""The unlearning loop (VKD so far): teacher cache, anchors, trainable set, AdamW steps."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..adapters import get_adapter
from ..cache import ActivationCache
from ..methods import (
    apply_mask,
    available_methods,
    fisher,
    ga_loss,
    npo_loss,
    retain_ce_term,
    retain_kl_term,
    saliency_mask,
    vkd_loss,
)
from ..ops import check_choice
from .augment import augment_forget_pixels
from .checkpoint import TEACHER_FILE, latest_checkpoint, load_checkpoint, prepare_run_dir, save_checkpoint, save_delta
from .config import UnlearnConfig
from .qa import answer_logprobs, collate_qa, encode_qa
from .teacher import build_teacher_cache, collate_inputs, misdirect_anchor, nearest_retain_keys, retain_mean_anchor


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
    def features(self, inputs: list[dict]) -> torch.Tensor:
        return self.adapter.visual_features(tap=self.tap, **collate_inputs(self.adapter, inputs))[0]


class _Forward(torch.nn.Module):
    """The student forward of a step as a module over the whole model, for DistributedDataParallel."""

    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _shard_frozen_llm(adapter, wrapper, trainable: set[str]) -> None:
    """FSDP2 over the frozen language model's decoder layers (the bulk of W): each is ``fully_shard``-ed
    and gathered only while it runs; the embeddings and final norm stay whole, since the adapters
    embed the prompt themselves. DDP is told to leave the sharded parameters alone."""
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    llm_ids = {id(p) for p in adapter.llm_layers.parameters()}
    llm_names = sorted(n for n, p in adapter.model.named_parameters() if id(p) in llm_ids)
    if set(llm_names) & trainable:
        raise ValueError("shard_llm shards the frozen language model, but this run trains part of it")
    for layer in adapter.llm_layers:
        fully_shard(layer)
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(wrapper, [f"model.{n}" for n in llm_names])


class _VKDStep:
    """One VKD step over the teacher cache (or a live teacher copy) and the forget anchors."""

    def __init__(self, model, adapter, forget, retain, config, run_dir, teacher, progress, tokenizer=None):
        self.adapter, self.config = adapter, config
        self.inputs = [adapter.preprocess([it["image"]]) for it in forget + retain]
        if config.llm_tap:
            # hidden states at image positions depend on the text before them: each image gets its prompt
            # (the item's question, else config.llm_tap_prompt), the same for teacher and student
            for inp, it in zip(self.inputs, forget + retain):
                n = adapter.num_image_tokens(**inp)[0]
                text = adapter.prompt(tokenizer, it.get("question") or config.llm_tap_prompt, n_image_tokens=n)
                ids = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids])
                inp.update(input_ids=ids, attention_mask=torch.ones_like(ids))
        nf, nr = len(forget), len(retain)
        self.f_keys, self.r_keys = list(range(nf)), list(range(nf, nf + nr))
        self.live = _LiveTeacher(model, config.tap) if teacher == "live" else None
        if run_dir is not None and (run_dir / TEACHER_FILE).exists():
            self.cache = ActivationCache.load(run_dir / TEACHER_FILE)
        else:
            self.cache = build_teacher_cache(adapter, self.inputs, self.f_keys + self.r_keys, config.tap,
                                             config.teacher_batch_size, config.cache_dtype, progress=progress)
            if run_dir is not None:
                self.cache.save(run_dir / TEACHER_FILE)
        # the cache rows a forget image is compared with: its own (repel) or its nearest retain image's
        self.f_target_keys = list(self.f_keys)
        if config.forget_target == "nearest_retain":
            near = nearest_retain_keys([self.inputs[k]["pixel_values"] for k in self.f_keys],
                                       [self.inputs[k]["pixel_values"] for k in self.r_keys])
            self.f_target_keys = [self.r_keys[j] for j in near]
        if config.forget_target == "retain_mean":
            self.anchor = retain_mean_anchor(self.cache, self.r_keys)
        elif config.forget_target == "misdirect":
            self.anchor = misdirect_anchor(self.cache, self.r_keys, max(self.cache.rows(k) for k in self.f_keys),
                                           config.misdirect_scale, config.seed)
        else:
            self.anchor = None
        if self.anchor is not None:
            too_long = [k for k in self.f_keys if self.cache.rows(k) > self.anchor.shape[0]]
            if too_long:
                raise ValueError(f"forget images {too_long[:5]} have more visual tokens than any retain image; "
                                 "retain_mean has no anchor for those positions (use forget_target='misdirect')")
        self.pending = None
        self.student = lambda **image_kwargs: adapter.visual_features(tap=config.tap, **image_kwargs)
        self.qa = (_OutputLevelStep(model, adapter, tokenizer, forget, retain, config, "vkd_terms")
                   if config.output_terms else None)

    @property
    def device(self) -> torch.device:
        return next(self.adapter.vision_tower.parameters()).device

    def _to_device(self, kwargs: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) for k, v in kwargs.items()}

    def _keys(self, plan_entry):
        fi, ri = plan_entry
        return [self.r_keys[i] for i in ri] + [self.f_target_keys[i] for i in fi]

    def __call__(self, step, plan, gen):
        fi, ri = plan[step]
        batch = [self.inputs[self.f_keys[i]] for i in fi] + [self.inputs[self.r_keys[i]] for i in ri]
        collated = collate_inputs(self.adapter, batch)
        if self.config.forget_augment > 0:  # forget targets are anchors: any view of the image may be used
            collated = augment_forget_pixels(collated, len(fi), self.config.forget_augment, gen)
        student, offsets = self.student(**self._to_device(collated))
        target_device = self.device if self.device.type == "cuda" else None
        n_forget_rows = int(offsets[len(fi)])
        if self.live is None:
            if self.pending is None:
                self.pending = self.cache.prefetch(self._keys(plan[step]), target_device)
            targets, _ = self.pending.wait()
            # the next step's teacher rows load (and, on CUDA, copy) while this one trains
            self.pending = (self.cache.prefetch(self._keys(plan[step + 1]), target_device)
                            if step + 1 < len(plan) else None)
            retain_t = targets[: targets.shape[0] - n_forget_rows]
            forget_t = targets[targets.shape[0] - n_forget_rows:]
        else:
            t_all = self.live.features([self.inputs[self.f_target_keys[i]] for i in fi]
                                       + [self.inputs[self.r_keys[i]] for i in ri])
            forget_t, retain_t = t_all[:n_forget_rows], t_all[n_forget_rows:]
        if self.anchor is not None:
            index = torch.cat([torch.arange(n) for n in offsets.diff()[: len(fi)].tolist()]
                              or [torch.zeros(0, dtype=torch.long)]).to(student.device)
            loss, terms = vkd_loss(student, n_forget_rows, retain_t, self.anchor.to(student.device), self.config,
                                   index)
        else:
            loss, terms = vkd_loss(student, n_forget_rows, retain_t, forget_t, self.config, generator=gen)
        if self.qa is not None:  # optional output-level terms: a full forward through the frozen LLM
            if self.config.lambda_npo > 0:
                f_logp, f_mask = self.qa._logp([self.qa.forget[i] for i in fi])
                npo, _ = npo_loss(f_logp, f_mask, self.qa.ref[fi], self.config.npo_beta)
                loss = loss + self.config.lambda_npo * npo
                terms["loss_npo"] = npo.detach()
            if self.config.lambda_ce > 0:
                r_logp, r_mask = self.qa._logp([self.qa.retain[i] for i in ri])
                retain_ce = -ga_loss(r_logp, r_mask)[0]
                loss = loss + self.config.lambda_ce * retain_ce
                terms["loss_ce"] = retain_ce.detach()
        return loss, terms, student.shape[0]

    def close(self) -> dict:
        self.cache.close()
        return self.cache.stats()


class _OutputLevelStep:
    """One step of an output-level baseline on forget / retain answer tokens."""

    def __init__(self, model, adapter, tokenizer, forget, retain, config, method):
        self.model, self.adapter, self.config, self.method = model, adapter, config, method
        # "vkd_terms": the optional output-level terms of VKD (NPO on forget, CE on retain answers)
        terms = method == "vkd_terms"
        need_forget = config.lambda_npo > 0 if terms else True
        need_retain = config.lambda_ce > 0 if terms else method in ("grad_diff", "kl_min", "mmunlearner")
        self.forget = encode_qa(adapter, tokenizer, forget, "forget") if need_forget else None
        self.retain = encode_qa(adapter, tokenizer, retain, "retain") if need_retain else None
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.cache = None
        self.student = lambda **inputs: model(**inputs).logits
        with torch.no_grad():  # reference quantities of the unmodified model, computed once
            if method == "npo" or (terms and need_forget):
                self.ref = torch.cat([self._logp(self.forget[i: i + 8])[0].sum(1)
                                      for i in range(0, len(self.forget), 8)])
            if method == "kl_min":
                self.cache = ActivationCache(torch.float32)
                for i, ex in enumerate(self.retain):
                    logits, mask = self._answer_logits([ex])
                    self.cache.put(i, torch.log_softmax(logits.float(), dim=-1))

    def _forward(self, examples):
        inputs, labels = collate_qa(self.adapter, examples, self.pad)
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        return self.student(**inputs), labels.to(device)

    def _logp(self, examples):
        logits, labels = self._forward(examples)
        return answer_logprobs(logits, labels)

    def _answer_logits(self, examples):
        logits, labels = self._forward(examples)
        mask = labels[:, 1:] != -100
        return logits[:, :-1][mask], mask

    def saliency(self, named, plan):
        """Forget / retain Fisher estimates over the first ``mask_batches`` planned batches -> masks."""
        k = min(self.config.mask_batches, len(plan))
        f_fns = [lambda fi=plan[s][0]: -ga_loss(*self._logp([self.forget[i] for i in fi]))[0] for s in range(k)]
        r_fns = [lambda ri=plan[s][1]: -ga_loss(*self._logp([self.retain[i] for i in ri]))[0] for s in range(k)]
        return saliency_mask(fisher(named, f_fns), fisher(named, r_fns), self.config.mask_threshold,
                             self.config.mask_ratio)

    def __call__(self, step, plan, gen):
        fi, ri = plan[step]
        parts, tokens = [], 0
        if fi:  # interleaved batches leave one side empty on alternate steps
            f_logp, f_mask = self._logp([self.forget[i] for i in fi])
            tokens += int(f_mask.sum())
            if self.method == "npo":
                parts.append(npo_loss(f_logp, f_mask, self.ref[fi], self.config.npo_beta))
            else:
                parts.append(ga_loss(f_logp, f_mask))
        if ri and self.method == "grad_diff":
            r_logp, r_mask = self._logp([self.retain[i] for i in ri])
            tokens += int(r_mask.sum())
            parts.append(retain_ce_term(r_logp, r_mask))
        elif ri and self.method == "kl_min":
            student, mask = self._answer_logits([self.retain[i] for i in ri])
            tokens += int(mask.sum())
            parts.append(retain_kl_term(student, self.cache.get(ri, device=student.device)[0]))
        loss, terms = parts[0][0], dict(parts[0][1])
        for value, t in parts[1:]:
            loss = loss + value
            terms.update(t)
        return loss, terms, tokens

    def close(self) -> dict:
        if self.cache is None:
            return {}
        self.cache.close()
        return self.cache.stats()


def unlearn(model: torch.nn.Module, forget, retain, method: str = "vkd", config: UnlearnConfig | None = None,
            *, tokenizer=None, teacher: str = "cache", resume: bool = False, eval_fn=None, eval_every: int = 0,
            stop_at: float | None = None, progress: bool = False) -> UnlearnResult:
    """Unlearn the visual knowledge of ``forget`` while keeping ``retain`` (METHOD.md sections 2-3).

    ``forget`` / ``retain``: sequences of dicts with an ``"image"`` (PIL); output-level methods
    (``ga``, ``grad_diff``, ``kl_min``, ``npo``, ``mmunlearner``) also need ``"question"`` and
    ``"answer"`` and a ``tokenizer``. The model is changed in place; VKD updates only its trainable
    visual set and never touches the language model. ``teacher="live"`` computes VKD targets with a
    frozen copy every step instead of the cache (the naive VKD; tests and benchmarks). With
    ``config.output_dir`` the run keeps its teacher cache and checkpoints there; ``resume=True``
    continues from the latest checkpoint (pass the original model) and ends with the same weights as
    an uninterrupted run. Early stopping: every ``eval_every`` steps ``eval_fn(model)`` (e.g. forget
    accuracy) is recorded and the run stops once it is ``<= stop_at``.
    """
    config = config or UnlearnConfig()
    check_choice("method", method, available_methods())
    check_choice("teacher", teacher, ("cache", "live"))
    if not isinstance(config, UnlearnConfig):
        raise TypeError(f"config must be a vkd_fast.UnlearnConfig, got {type(config).__name__}")
    if eval_every and eval_fn is None:
        raise ValueError("eval_every needs eval_fn (a callable model -> forget accuracy)")
    forget, retain = _check_items("forget", forget), _check_items("retain", retain)
    if method == "vkd" and config.llm_tap and tokenizer is None:
        raise ValueError(f"tap {config.tap!r} runs the language model on a prompt per image and needs tokenizer=...")
    qa_sides = (("forget", forget), ("retain", retain)) if method != "vkd" or config.mask else (
        (("forget", forget),) * (config.lambda_npo > 0) + (("retain", retain),) * (config.lambda_ce > 0))
    if qa_sides:
        if tokenizer is None:
            what = f"method {method!r}" if method != "vkd" else "vkd with lambda_npo / lambda_ce / mask"
            raise ValueError(f"{what} trains on answer tokens and needs tokenizer=...")
        for name, items in qa_sides:
            bare = [i for i, it in enumerate(items) if not it.get("question") or not it.get("answer")]
            if bare:
                raise ValueError(f"{name} items {bare[:5]} carry no question/answer: output-level methods train "
                                 "on answer tokens, so every item needs 'question' and 'answer'")
    adapter = get_adapter(model)  # unsupported models fail here, before any work
    adapter.parse_tap(config.tap)
    if resume and not config.output_dir:
        raise ValueError("resume=True needs config.output_dir (the run folder to continue)")
    world, rank = _world()
    if world > 1 and method == "vkd" and config.output_terms:
        raise ValueError("vkd's lambda_npo / lambda_ce terms are not supported in multi-process runs yet "
                         "(their forward would bypass DDP's gradient averaging)")
    if config.batch_size % (world * config.grad_accum):
        raise ValueError(f"batch_size={config.batch_size} must be divisible by the {world} processes x "
                         f"grad_accum={config.grad_accum} (each takes an equal share of the global batch)")
    trajectory = {**config.trajectory_dict(), "method": method, "world_size": world}
    run_dir = None
    if config.output_dir:  # rank 0 owns the run folder; the others wait for it
        if rank == 0:
            run_dir = prepare_run_dir(config.output_dir, trajectory, resume)
        _barrier(world)
        run_dir = Path(config.output_dir) if rank != 0 else run_dir
    t_start = time.perf_counter()
    torch.manual_seed(config.seed)

    if config.device is not None:
        if method == "vkd" and not config.llm_tap and not config.output_terms:
            adapter.place_visual(config.device)  # W plays no part in training: it stays off the accelerator
        else:
            model.to(config.device)
    if method == "vkd":
        # every rank computes the same teacher cache; only rank 0 keeps it in the run folder
        objective = _VKDStep(model, adapter, forget, retain, config, run_dir if rank == 0 else None, teacher,
                             progress and rank == 0, tokenizer)
        spec = config.trainable
    else:
        objective = _OutputLevelStep(model, adapter, tokenizer, forget, retain, config, method)
        spec = "all" if method == "mmunlearner" else config.baseline_trainable
    # output-level methods train through the whole model: their trainable set is not limited by a tap
    summary = adapter.set_trainable(spec, tap=config.tap if method == "vkd" else "projector", lora=config.lora)
    gen = torch.Generator().manual_seed(config.seed)
    bs = config.batch_size
    plan = [(torch.randint(0, len(forget), (bs,), generator=gen).tolist(),
             torch.randint(0, len(retain), (bs,), generator=gen).tolist()) for _ in range(config.steps)]
    # every rank draws the same global plan and takes its contiguous share; the share is split into
    # grad_accum micro-batches: optimiser step t uses entries t*grad_accum ... (t+1)*grad_accum - 1
    micro = bs // (world * config.grad_accum)
    plan = [(fi[o:o + micro], ri[o:o + micro]) for fi, ri in plan
            for o in range(rank * micro * config.grad_accum, (rank + 1) * micro * config.grad_accum, micro)]
    if config.batch_mode == "interleaved" and method in ("vkd", "grad_diff", "kl_min"):
        # alternate micro-batches: forget only, then retain only (one-sided methods have nothing to alternate)
        plan = [(fi, []) if m % 2 == 0 else ([], ri) for m, (fi, ri) in enumerate(plan)]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    mask_hooks = []
    if method == "mmunlearner" or (method == "vkd" and config.mask):
        scorer = objective if method == "mmunlearner" else _OutputLevelStep(model, adapter, tokenizer, forget, retain,
                                                                              config, "mmunlearner")
        masks = scorer.saliency(named, plan)
        for n, p in named:
            if not masks[n].any():  # nothing of this tensor is salient: it is not trained at all
                p.requires_grad_(False)
        named = [(n, p) for n, p in named if p.requires_grad]
        mask_hooks = apply_mask(named, masks)
        summary = {**summary, "names": [n for n, _ in named],
                   "masked_trainable": int(sum(masks[n].sum() for n, _ in named))}
    if world > 1:
        # DDP over the trainable parameters: the student forward goes through the wrapper so that its
        # reducer averages their gradients across ranks (frozen parameters are not synchronised)
        from torch.nn.parallel import DistributedDataParallel

        wrapper = _Forward(model, objective.student)
        if config.shard_llm:
            _shard_frozen_llm(adapter, wrapper, {n for n, _ in named})
        ddp = DistributedDataParallel(wrapper)
        objective.student = ddp
    optimizer = torch.optim.AdamW([p for _, p in named], lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))

    start = 0
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            start = load_checkpoint(ckpt, named, optimizer, scheduler, gen)

    device = next(adapter.vision_tower.parameters()).device
    # bf16 autocast on CUDA (fp32 elsewhere); the fused loss accumulates in fp32 and returns fp32
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if config.amp == "bf16" and device.type == "cuda"
           else contextlib.nullcontext())
    log = open(config.log_path, "a") if config.log_path and rank == 0 else None  # closed in the finally below
    history: list[dict] = []
    try:
        for step in range(start, config.steps):
            t0 = time.perf_counter()
            loss, n_tokens, sums = 0.0, 0, {}
            for micro in range(step * config.grad_accum, (step + 1) * config.grad_accum):
                with amp:
                    part, terms, tokens = objective(micro, plan, gen)
                (part / config.grad_accum).backward()
                loss += float(part.detach()) / config.grad_accum
                n_tokens += tokens
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v) / config.grad_accum
            terms = sums
            if step == 0:
                # LoRA's B starts at zero, so its A gets exactly zero gradient until B has moved: not dead
                dead = [n for n, p in named if (p.grad is None or not torch.any(p.grad != 0)) and ".lora_A." not in n]
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
            record = {"step": step + 1, "loss": loss, **terms,
                      "lr": scheduler.get_last_lr()[0], "step_seconds": seconds, "tokens_per_s": n_tokens / seconds,
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
            stop = False
            if eval_every and (step + 1) % eval_every == 0:
                record["eval"] = float(eval_fn(model))
                stop = stop_at is not None and record["eval"] <= stop_at
            history.append(record)
            last = stop or step + 1 == config.steps
            due = last or (config.save_every and (step + 1) % config.save_every == 0)
            if run_dir is not None and rank == 0 and due:
                save_checkpoint(run_dir, step + 1, named, optimizer, scheduler, gen)
            if log is not None and ((step + 1) % config.log_every == 0 or last):
                log.write(json.dumps(record) + "\n")
                log.flush()
            if progress and rank == 0 and ((step + 1) % config.log_every == 0 or last):
                shown = ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                                  if k not in ("step", "lr", "peak_rss_bytes"))
                print(f"step {step + 1}/{config.steps} {shown}", file=sys.stderr)
            if stop:
                break
    finally:
        if log is not None:
            log.close()
        for h in mask_hooks:
            h.remove()
        cache_stats = objective.close()
    model.requires_grad_(False)
    return UnlearnResult(model=model, method=method, config=config.to_dict(), trainable=summary, history=history,
                         wall_seconds=time.perf_counter() - t_start, teacher_cache=cache_stats, start_step=start)
