"""Multi-process runs (an initialised ``torch.distributed`` process group): each rank takes an equal
share of every global batch, DDP averages the trainable gradients, and optionally FSDP2 shards the
frozen language model."""

from __future__ import annotations

import torch


def world() -> tuple[int, int]:
    """(world size, rank); (1, 0) outside a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def barrier(world_size: int) -> None:
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()


class _Forward(torch.nn.Module):
    """The method's student forward as a module over the whole model, for DistributedDataParallel."""

    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


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


def wrap_student(method, model, adapter, trainable: set[str], shard_llm: bool) -> None:
    """Route the method's student forward through DDP (its reducer averages the trainable gradients
    across ranks; frozen parameters are not synchronised)."""
    from torch.nn.parallel import DistributedDataParallel

    wrapper = _Forward(model, method.student)
    if shard_llm:
        _shard_frozen_llm(adapter, wrapper, trainable)
    method.student = DistributedDataParallel(wrapper)
