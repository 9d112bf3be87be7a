"""``export_unlearned``: a complete checkpoint folder from a base checkpoint and the unlearned tensors,
without the language model in memory.

Every base shard that holds no changed tensor is copied byte for byte (hard-linked with ``link=True``
when on the same filesystem); a shard that holds one is rewritten tensor by tensor -- unchanged
tensors copied as bytes, changed ones (cast to the base's dtype) written new -- so memory is one copy
buffer and the unlearned tensors, never a shard. The index and every other file of the base folder
(config, generation config, tokenizer, processor) are copied. All of it is written into a temporary
folder beside ``out_dir``, flushed to disk, and renamed into place: an interruption leaves no
``out_dir`` (the next export of the same ``out_dir`` removes what a killed one left).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch

from ..utils.files import remove_stale
from .names import folder_family, match_names
from .safetensors_io import DTYPES, CheckpointError, checkpoint_files, read_header, read_tensors, write_safetensors

_TMP_MARK = ".vkd-export-"


def _unlearned_tensors(model_or_delta) -> tuple[dict[str, torch.Tensor], bool]:
    """``({model parameter name: tensor}, whether unchanged ones may be among them)``."""
    if isinstance(model_or_delta, torch.nn.Module):
        return {n: p.detach() for n, p in model_or_delta.named_parameters() if not p.is_meta}, True
    if isinstance(model_or_delta, dict):
        return dict(model_or_delta), False
    path = Path(model_or_delta)
    if not path.is_file() or path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: expected a delta .safetensors file (UnlearnResult.save_delta), a model or "
                              "a dict of tensors")
    header, _ = read_header(path)
    return read_tensors(path, [n for n in header if n != "__metadata__"]), False


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def export_unlearned(base_dir, model_or_delta, out_dir, *, link: bool = False, overwrite: bool = False) -> dict:
    """Write ``base_dir`` with the unlearned tensors of ``model_or_delta`` (a model -- e.g. from
    :func:`load_visual_model` -- a delta file from ``UnlearnResult.save_delta``, or ``{name: tensor}``)
    into ``out_dir``. Returns ``{"changed": [...], "rewritten": [...], "copied": [...], "linked": [...],
    "bytes_written": int, "seconds": float}``. ``out_dir`` must not exist unless ``overwrite``."""
    t0 = time.perf_counter()
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    files, weight_map = checkpoint_files(base_dir)
    if out_dir.resolve() == base_dir.resolve():
        raise CheckpointError("out_dir is the base folder: export into a new folder")
    if out_dir.exists() and not overwrite:
        raise CheckpointError(f"out_dir {out_dir} exists; choose a new folder or pass overwrite=True")
    tensors, compare = _unlearned_tensors(model_or_delta)
    lora = sorted(n for n in tensors if ".lora_A." in n or ".lora_B." in n)
    if lora:
        raise CheckpointError(f"the unlearned tensors hold LoRA adapter weights ({lora[0]}, ...): a LoRA run cannot "
                              "be exported into the base checkpoint yet; keep its delta (UnlearnResult.save_delta) "
                              "or merge the adapters into the weights first")
    to_ckpt = match_names(list(tensors), weight_map, f"base checkpoint {base_dir}", folder_family(base_dir))
    headers = {f: read_header(base_dir / f) for f in files}
    changed: dict[str, torch.Tensor] = {}
    for file in files:
        names = [n for n in tensors if weight_map[to_ckpt[n]] == file]
        base = read_tensors(base_dir / file, [to_ckpt[n] for n in names]) if compare and names else {}
        header = headers[file][0]
        for n in names:
            entry = header[to_ckpt[n]]
            t = tensors[n]
            if list(t.shape) != list(entry["shape"]):
                raise CheckpointError(f"{n}: shape {tuple(t.shape)} does not match the base's {to_ckpt[n]} "
                                      f"{tuple(entry['shape'])}")
            t = t.to("cpu", DTYPES[entry["dtype"]])
            if compare and torch.equal(t, base[to_ckpt[n]]):
                continue
            changed[to_ckpt[n]] = t
    # a temporary folder beside out_dir; what a killed export of the same out_dir left is removed
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out_dir.name}{_TMP_MARK}"
    remove_stale(out_dir.parent, prefix)
    tmp = out_dir.parent / f"{prefix}{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    report = {"changed": sorted(changed), "rewritten": [], "copied": [], "linked": [], "bytes_written": 0}
    try:
        for file in files:
            header, start = headers[file]
            names = [n for n in header if n != "__metadata__"]
            src, dst = base_dir / file, tmp / file
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not any(n in changed for n in names):
                if link:
                    try:
                        os.link(src, dst)
                        report["linked"].append(file)
                        continue
                    except OSError:
                        pass  # another filesystem: copy
                shutil.copyfile(src, dst)
                with open(dst, "rb+") as f:
                    os.fsync(f.fileno())
                report["copied"].append(file)
                report["bytes_written"] += dst.stat().st_size
                continue
            order = sorted(names, key=lambda n: header[n]["data_offsets"][0])
            entries = [(n, changed[n] if n in changed else (src, start, header[n])) for n in order]
            report["bytes_written"] += write_safetensors(dst, entries, header.get("__metadata__"))
            report["rewritten"].append(file)
        for item in base_dir.iterdir():  # config, generation config, tokenizer, processor, the index
            if item.is_file() and item.suffix != ".safetensors" and not (tmp / item.name).exists():
                shutil.copyfile(item, tmp / item.name)
        _fsync_dir(tmp)
        if out_dir.exists():  # overwrite: the old folder goes only once the new one is complete
            trash = out_dir.parent / f"{prefix}{os.getpid()}-old"
            os.replace(out_dir, trash)
            os.replace(tmp, out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
        _fsync_dir(out_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report["seconds"] = time.perf_counter() - t0
    return report
