"""A training run's folder: its record, checkpoints and exact resume, and trained-tensor deltas;
safetensors and JSON only (nothing is pickled). Model checkpoint *files* (a model's safetensors
shards, visual-only loading, export) are another matter: :mod:`vkd_fast.checkpoints`.

A run folder holds ``run.json`` (the options that determine the trajectory and the fingerprints of
the starting model and the data), what the method keeps of its set-up (VKD: ``teacher.vkdc``, the
teacher cache, so a resumed run needs no teacher pass) and ``checkpoint-<step>/`` folders with
``trainable.safetensors`` (only the trainable tensors), ``optimizer.safetensors`` (the optimizer's
tensors; its other state and param groups in ``state.json``), ``rng.safetensors`` and
``state.json`` (step, LR schedule, and the SHA-256 of every other file of the checkpoint, verified
on resume). Every file and folder is written under a temporary name and renamed, so an
interruption never leaves a half-written checkpoint; a damaged one is reported and the previous
good one is used.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import torch

from ..utils.files import atomic_write, sha256_file

RUN_FILE = "run.json"
FORMAT = 1  # of run.json and deltas
CHECKPOINT_FORMAT = 2  # 1: a pickled optimizer.pt, no checksums
_FILES = ("trainable.safetensors", "optimizer.safetensors", "rng.safetensors")


class CheckpointDamaged(ValueError):
    """A checkpoint folder that is incomplete or whose files do not match their recorded checksums."""


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True))


class RunFinished(ValueError):
    """``resume`` of a run that already ended (its last checkpoint is its final step): nothing to do."""


def prepare_run_dir(output_dir, trajectory: dict, resume: bool, fingerprint: dict | None = None) -> Path:
    """Create or check the run folder before any work is done: a resumed run must have the same
    trajectory options, start from the same model and see the same data (``fingerprint``)."""
    from .fingerprint import differences

    path = Path(output_dir)
    run = path / RUN_FILE
    if path.exists() and not path.is_dir():
        raise ValueError(f"output_dir {path} is a file; choose a folder")
    if run.exists():
        try:
            recorded = json.loads(run.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"output_dir {path}: {RUN_FILE} is damaged ({exc}); choose another output_dir") from None
        saved = recorded.get("trajectory", {})
        if saved != trajectory:
            diff = sorted(k for k in set(saved) | set(trajectory) if saved.get(k) != trajectory.get(k))
            raise ValueError(f"output_dir {path} holds a different run (options differ: {', '.join(diff)}); "
                             "choose another output_dir")
        if not resume:
            raise ValueError(f"output_dir {path} already holds this run; pass resume=True to continue it, "
                             "or choose another output_dir")
        differ = differences(recorded.get("fingerprint") or {}, fingerprint) if fingerprint else []
        if differ:
            raise ValueError(f"output_dir {path}: resume refused: {' and '.join(differ)} differ from what the run "
                             "started with (pass the original model and the same forget / retain data)")
        found = latest_good_checkpoint(path, warn=False)  # the trainer reports damaged ones when it resumes
        if found and found[1].get("finished"):
            raise RunFinished(f"output_dir {path}: the run already finished at step {found[1]['step']} "
                              f"({found[0].name}); nothing to do")
        return path
    if resume:
        raise ValueError(f"resume=True but output_dir {path} holds no run ({RUN_FILE} is missing)")
    if path.exists() and any(path.iterdir()):
        raise ValueError(f"output_dir {path} is not empty and holds no vkd_fast run; choose an empty or new folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"output_dir {path} cannot be created ({exc.strerror})") from None
    _write_json(run, {"format": FORMAT, "trajectory": trajectory, "fingerprint": fingerprint})
    return path


def checkpoint_dirs(run_dir) -> list[tuple[int, Path]]:
    """``(step, folder)`` of the ``checkpoint-<step>`` folders, newest first (stray names ignored)."""
    out = []
    for p in Path(run_dir).glob("checkpoint-*"):
        tail = p.name[len("checkpoint-"):]
        if p.is_dir() and tail.isdigit():
            out.append((int(tail), p))
    return sorted(out, reverse=True)


def verify_checkpoint(ckpt) -> dict:
    """The checkpoint's ``state.json`` once every file matches its checksum; else
    :class:`CheckpointDamaged` saying what is wrong. A checkpoint of an older vkd_fast (pickled
    optimizer state) is a ``ValueError`` of its own: it cannot be resumed."""
    ckpt = Path(ckpt)
    if (ckpt / "optimizer.pt").exists():
        raise ValueError(f"{ckpt} was written by an older vkd_fast (a pickled optimizer state, optimizer.pt), which "
                         "this version never loads: start a new run in another output_dir")
    try:
        state = json.loads((ckpt / "state.json").read_text())
    except FileNotFoundError:
        raise CheckpointDamaged(f"{ckpt}: incomplete (no state.json)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointDamaged(f"{ckpt}: state.json is damaged ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT \
            or not isinstance(state.get("files"), dict):
        raise CheckpointDamaged(f"{ckpt}: state.json is not a vkd_fast checkpoint state of format {CHECKPOINT_FORMAT}")
    for name in _FILES:
        if not (ckpt / name).is_file():
            raise CheckpointDamaged(f"{ckpt}: incomplete ({name} is missing)")
        if sha256_file(ckpt / name) != state["files"].get(name):
            raise CheckpointDamaged(f"{ckpt}: {name} does not match its checksum (the file was changed or damaged)")
    return state


def latest_good_checkpoint(run_dir, report=None, warn: bool = True) -> tuple[Path, dict] | None:
    """``(folder, verified state)`` of the newest checkpoint that verifies; damaged or incomplete ones
    are reported (a warning unless ``warn=False``, and ``report(message)`` if given) and skipped."""
    for _step, path in checkpoint_dirs(run_dir):
        try:
            return path, verify_checkpoint(path)
        except CheckpointDamaged as exc:
            message = f"skipping {exc}; using the previous checkpoint"
            if warn:
                warnings.warn(message, stacklevel=2)
            if report is not None:
                report(message)
    return None


def latest_checkpoint(run_dir, report=None) -> Path | None:
    """The newest checkpoint that verifies (see :func:`latest_good_checkpoint`)."""
    found = latest_good_checkpoint(run_dir, report)
    return found[0] if found else None


def _optimizer_parts(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state dict as safetensors tensors + JSON (tensors keyed ``state.<param>.<key>``)."""
    sd = optimizer.state_dict()
    tensors, state = {}, {}
    for idx, entry in sd["state"].items():
        state[str(idx)] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value.detach().contiguous()
                state[str(idx)][key] = None  # in the safetensors file
            else:
                state[str(idx)][key] = value
    return tensors, {"state": state, "param_groups": sd["param_groups"]}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {}
    for idx, entry in meta["state"].items():
        state[int(idx)] = {k: tensors[f"state.{idx}.{k}"] if v is None else v for k, v in entry.items()}
    groups = [{**g, **({"betas": tuple(g["betas"])} if isinstance(g.get("betas"), list) else {})}
              for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(run_dir: Path, step: int, named, optimizer, scheduler, generators: dict,
                    finished: bool = False) -> Path:
    """Write ``checkpoint-<step>`` (``generators``: name -> ``torch.Generator``; ``finished``: the
    run's last step, so a resume has nothing left to do)."""
    from safetensors.torch import save_file

    final = Path(run_dir) / f"checkpoint-{step}"
    tmp = Path(run_dir) / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({n: p.detach().contiguous() for n, p in named}, str(tmp / "trainable.safetensors"))
    opt_tensors, opt_meta = _optimizer_parts(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    save_file({k: g.get_state() for k, g in generators.items()}, str(tmp / "rng.safetensors"))
    files = {name: sha256_file(tmp / name) for name in _FILES}
    _write_json(tmp / "state.json", {"format": CHECKPOINT_FORMAT, "step": step, "scheduler": scheduler.state_dict(),
                                     "optimizer": opt_meta, "files": files, "finished": finished})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def load_checkpoint(ckpt: Path, named, optimizer, scheduler, generators: dict, state: dict | None = None) -> int:
    """Restores a checkpoint into the live objects and returns its step; ``state``: what
    :func:`verify_checkpoint` returned for it (verified here when not given)."""
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    state = state if state is not None else verify_checkpoint(ckpt)
    weights = load_file(str(ckpt / "trainable.safetensors"))
    names = {n for n, _ in named}
    if set(weights) != names:
        raise ValueError(f"checkpoint {ckpt} holds other trainable tensors than this run "
                         f"(missing: {sorted(names - set(weights))[:5]}, extra: {sorted(set(weights) - names)[:5]})")
    with torch.no_grad():
        for n, p in named:
            p.copy_(weights[n])
    optimizer.load_state_dict(_optimizer_state(load_file(str(ckpt / "optimizer.safetensors")), state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    rng = load_file(str(ckpt / "rng.safetensors"))
    for k, g in generators.items():
        g.set_state(rng[k])
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
