"""Two CPU processes over gloo give the result of one process with the same global batch."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared helpers, also in spawned workers
import _tiny_models as T  # noqa: E402
from _items import CFG, FORGET, RETAIN, qa  # noqa: E402

GLOBAL_BATCH = 4


def _run(method, world, rank, init_file, out_file, extra=None):
    import torch.distributed as dist

    import vkd_fast as vf

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", world_size=world, rank=rank)
    try:
        extra = dict(extra or {})
        options = {"tap": extra.pop("tap")} if "tap" in extra else None
        cfg = vf.UnlearnConfig(**{**CFG, "batch_size": GLOBAL_BATCH, "steps": 6, **extra})
        if method == "vkd":
            tok = T.tiny_tokenizer() if options else None
            result = vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=cfg, options=options, tokenizer=tok)
        else:
            result = vf.unlearn(T.tiny_llava(), qa(FORGET, "baker"), qa(RETAIN, "pilot"), method=method, config=cfg,
                                tokenizer=T.tiny_tokenizer())
        if cfg.shard_llm and world > 1:  # the frozen decoder layers really are sharded over the ranks
            from torch.distributed.tensor import DTensor

            layer_params = list(result.model.model.language_model.layers.parameters())
            assert layer_params and all(isinstance(p, DTensor) for p in layer_params)
            assert sum(p.to_local().numel() for p in layer_params) < sum(p.numel() for p in layer_params)
        if rank == 0:
            from safetensors.torch import save_file

            names = result.trainable["names"]
            params = dict(result.model.named_parameters())
            save_file({n: params[n].detach().contiguous() for n in names}, out_file)
        if world > 1:
            # leave together: a rank tearing gloo down while its peer still worked aborted (SIGABRT, "terminate
            # called without an active exception") in 2 of 4 fresh-clone full-suite runs on 2026-12-04
            from datetime import timedelta

            dist.monitored_barrier(timeout=timedelta(seconds=300))
    finally:
        if world > 1:
            dist.destroy_process_group()


def _worker(rank, method, world, init_file, out_file, extra=None, extra_two=None):
    _run(method, world, rank, init_file, out_file, {**(extra or {}), **(extra_two or {})})


def _compare(method, tmp_path, extra=None, extra_two=None):
    from safetensors.torch import load_file

    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    _run(method, 1, 0, None, str(one), extra)
    mp.spawn(_worker, args=(method, 2, str(tmp_path / "init"), str(two), extra, extra_two), nprocs=2, join=True)
    a, b = load_file(str(one)), load_file(str(two))
    assert a.keys() == b.keys() and a
    init = dict(T.tiny_llava().named_parameters())
    moved = max((a[n] - init[n].detach()).abs().max().item() for n in a)
    assert moved > 1e-3  # the run really trained (lr 3e-3, 6 Adam steps)
    # reduction order differs (DDP averages per-rank gradients), and Adam normalises tiny gradients:
    # agreement to 1e-5 is ~300x finer than one step's update
    for n in a:
        if n.endswith("k_proj.bias"):
            # softmax is invariant to a key bias: its true gradient is 0 and AdamW turns the rounding noise
            # of either reduction order into full +-lr steps (as in the gradient-accumulation test); measured
            # 1.09e-5 here on an AMD EPYC, for the code before the plug-in redesign too
            continue
        torch.testing.assert_close(b[n], a[n], rtol=1e-4, atol=1e-5, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.slow
def test_two_processes_equal_one_vkd(tmp_path):
    _compare("vkd", tmp_path)


@pytest.mark.slow
def test_two_processes_with_a_sharded_frozen_llm_equal_one(tmp_path):
    # llm:2 runs the frozen LLM's first two layers; with shard_llm they are FSDP2-sharded over the ranks
    _compare("vkd", tmp_path, extra={"tap": "llm:2"}, extra_two={"shard_llm": True})


@pytest.mark.slow
def test_two_processes_equal_one_grad_diff(tmp_path):
    _compare("grad_diff", tmp_path)


@pytest.mark.slow
def test_batch_must_split_evenly(tmp_path):
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    mp.spawn(_odd_worker, args=(str(tmp_path / "init2"),), nprocs=2, join=True)


def _odd_worker(rank, init_file):
    import pytest
    import torch.distributed as dist

    import vkd_fast as vf

    dist.init_process_group("gloo", init_method=f"file://{init_file}", world_size=2, rank=rank)
    try:
        with pytest.raises(ValueError, match="batch_size=3 must be divisible by the 2 processes x grad_accum=1"):
            vf.unlearn(T.tiny_llava(), FORGET, RETAIN, config=vf.UnlearnConfig(**{**CFG, "batch_size": 3}))
    finally:
        dist.destroy_process_group()
