"""Run folders, checkpoints and exports (safetensors / JSON; the optimizer state through
``torch.save`` and ``torch.load(weights_only=True)``; never pickle).

A run folder holds ``run.json`` (the options that determine the trajectory), what the method keeps of
its set-up (VKD: ``teacher.vkdc``, the teacher cache, so a resumed run needs no teacher pass) and
``checkpoint-<step>/`` folders with
``trainable.safetensors`` (only the trainable tensors), ``optimizer.pt``, ``state.json`` (step,
LR schedule) and ``rng.safetensors``. Every file and folder is written under a temporary name and
renamed, so an interruption never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from ..utils.files import atomic_write

RUN_FILE = "run.json"
FORMAT = 1


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True))


def prepare_run_dir(output_dir, trajectory: dict, resume: bool) -> Path:
    """Create or check the run folder before any work is done."""
    path = Path(output_dir)
    run = path / RUN_FILE
    if run.exists():
        saved = json.loads(run.read_text()).get("trajectory", {})
        if saved != trajectory:
            diff = sorted(k for k in set(saved) | set(trajectory) if saved.get(k) != trajectory.get(k))
            raise ValueError(f"output_dir {path} holds a different run (options differ: {', '.join(diff)}); "
                             "choose another output_dir")
        if not resume:
            raise ValueError(f"output_dir {path} already holds this run; pass resume=True to continue it, "
                             "or choose another output_dir")
        return path
    if resume:
        raise ValueError(f"resume=True but output_dir {path} holds no run ({RUN_FILE} is missing)")
    if path.exists() and any(path.iterdir()):
        raise ValueError(f"output_dir {path} is not empty and holds no vkd_fast run; choose an empty or new folder")
    path.mkdir(parents=True, exist_ok=True)
    _write_json(run, {"format": FORMAT, "trajectory": trajectory})
    return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    steps = sorted((int(p.name.split("-")[1]), p) for p in Path(run_dir).glob("checkpoint-*") if p.is_dir())
    return steps[-1][1] if steps else None


def save_checkpoint(run_dir: Path, step: int, named, optimizer, scheduler, generator) -> Path:
    from safetensors.torch import save_file

    final = Path(run_dir) / f"checkpoint-{step}"
    tmp = Path(run_dir) / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({n: p.detach().contiguous() for n, p in named}, str(tmp / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    save_file({"generator": generator.get_state()}, str(tmp / "rng.safetensors"))
    _write_json(tmp / "state.json", {"format": FORMAT, "step": step, "scheduler": scheduler.state_dict()})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def load_checkpoint(ckpt: Path, named, optimizer, scheduler, generator) -> int:
    """Restores a checkpoint into the live objects and returns its step."""
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    weights = load_file(str(ckpt / "trainable.safetensors"))
    names = {n for n, _ in named}
    if set(weights) != names:
        raise ValueError(f"checkpoint {ckpt} holds other trainable tensors than this run "
                         f"(missing: {sorted(names - set(weights))[:5]}, extra: {sorted(set(weights) - names)[:5]})")
    with torch.no_grad():
        for n, p in named:
            p.copy_(weights[n])
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    state = json.loads((ckpt / "state.json").read_text())
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(load_file(str(ckpt / "rng.safetensors"))["generator"])
    return int(state["step"])


def save_delta(model: torch.nn.Module, names: list[str], path, metadata: dict | None = None) -> None:
    """The unlearning delta: only the trained tensors (safetensors), applied with :func:`load_delta`."""
    from safetensors.torch import save_file

    params = dict(model.named_parameters())
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    meta = {"vkd_fast_delta": str(FORMAT), **{k: json.dumps(v) for k, v in (metadata or {}).items()}}
    save_file({n: params[n].detach().contiguous() for n in names}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_delta(model: torch.nn.Module, path) -> list[str]:
    """Copies a delta written by :func:`save_delta` into ``model``; returns the names it set."""
    from safetensors.torch import load_file

    weights = load_file(str(path))
    params = dict(model.named_parameters())
    missing = sorted(set(weights) - set(params))
    if missing:
        raise ValueError(f"delta {path} has tensors this model lacks: {missing[:5]} (a LoRA delta needs "
                         "the same LoRA set-up: adapter.set_trainable(..., lora=...))")
    with torch.no_grad():
        for n, w in weights.items():
            if params[n].shape != w.shape:
                raise ValueError(f"delta {path}: {n} has shape {tuple(w.shape)}, the model {tuple(params[n].shape)}")
            params[n].copy_(w)
    return sorted(weights)
