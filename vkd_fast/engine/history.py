"""A run's per-step records: the step losses stay device tensors until they are read back (one host
read per device, only when the trainer asks), and each read checks them -- a non-finite loss, term
or gradient norm raises :class:`NonFiniteLossError`."""

from __future__ import annotations

import math

import torch


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


class StepHistory:
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
        super().__init__(f"step {record['step']}: the loss is not finite ({shown(record)}); the run stopped and "
                         f"nothing from this step on is saved ({where}); lower lr, or check the loss weights and the "
                         "data")


def shown(record: dict) -> str:
    """A step record as one line: the loss and its terms first, then eval and speed."""
    order = ["loss"] + [k for k in record if k not in ("step", "loss", "lr", "peak_rss_bytes", "step_seconds",
                                                       "tokens_per_s", "eval")]
    order += [k for k in ("eval", "step_seconds", "tokens_per_s") if k in record]
    return ", ".join(f"{k} {record[k]:.4g}" for k in order)
