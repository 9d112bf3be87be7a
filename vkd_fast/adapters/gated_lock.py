"""An image-gated low-rank adapter on the language model (issue 26's "second lock"): an edit of W that
text never sees.

Each chosen ``nn.Linear`` of W's layers becomes ``y = W x`` at positions before a sequence's first
image token and ``y = W x + s * B A x`` from it onward (rank ``r``, ``s = alpha / r``, ``B`` starts at
zero). A prompt without an image therefore computes exactly W: its positions take the untouched
path (``torch.where`` picks W's own output, bit for bit), whatever the lock holds -- text-only logits
stay bit-identical, in mixed batches, with left padding and in cached generation (a sequence that
had an image keeps the gate open for the tokens generated after it; a new sequence starts closed).

The gate is computed from ``input_ids`` by a forward pre-hook on the whole model (the language model
itself sees only embeddings) and cleared after that forward: position t of row b is open when an
image token occurs in row b at or before t; a call that does not go through the model's own forward
(e.g. the language model run directly, as an ``llm:j`` feature tap does) sees W alone. Gradient
checkpointing is refused (its recomputation would run with the gate closed). A model with the lock
installed is saved with :meth:`GatedLock.save` (the lock) and, after :meth:`GatedLock.remove`, the
model's own ``save_pretrained``; its ``state_dict`` with the lock in place is not a checkpoint of
the family. The where-select needs no host synchronisation; the
pre-hook asks the KV cache its length (a shape, no device read) to tell a continued generation from
a new one.

Threat model: a white-box attacker who drops the lock gets the model without it back -- the lock is
an extra module, saved apart (:meth:`GatedLock.save`), not folded into the checkpoint.

Trained by the ``vkd_robust`` method (vkd_fast/methods/vkd_robust.py), which finds it on its model
with :func:`find_gated_lock`.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import torch
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class _GateState:
    """The current batch's gate ``[B, L]`` (bool) and, across cached generation calls, which rows have
    seen an image token."""

    def __init__(self, image_token_id: int):
        self.image_token_id = image_token_id
        self.gate: torch.Tensor | None = None
        self.seen: torch.Tensor | None = None
        self.enabled = True  # False inside GatedLock.disabled(): W alone everywhere

    def update(self, input_ids: torch.Tensor | None, continuing: bool) -> None:
        if input_ids is None:  # embeddings given directly: no token ids to read, the gate stays closed
            self.gate, self.seen = None, None
            return
        hits = (input_ids == self.image_token_id).cumsum(-1) > 0
        if continuing and self.seen is not None and self.seen.shape[0] == hits.shape[0]:
            hits = hits | self.seen[:, None]
        self.gate = hits
        self.seen = hits[:, -1].clone()


class GatedLoRALinear(nn.Module):
    """``base(x)``, plus ``scale * B(A(x))`` where the shared gate is open (see the module docstring)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, state: _GateState):
        super().__init__()
        self.base, self.state, self.scale = base, state, alpha / rank
        self.lock_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=torch.float32, device=base.weight.device))
        self.lock_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=torch.float32, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lock_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        gate = self.state.gate
        # no open position known, or the lock disabled: W itself
        if gate is None or not self.state.enabled or x.dim() != 3 or gate.shape != x.shape[:2]:
            return y
        delta = (x.to(self.lock_A.dtype) @ self.lock_A.t() @ self.lock_B.t()) * self.scale
        return torch.where(gate[..., None], y + delta.to(y.dtype), y)


def _put(model, name: str, module: nn.Module) -> None:
    """Set the submodule called ``name`` (dotted) of ``model`` to ``module``."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, module)


class GatedLock:
    """The lock installed on a model (:func:`install_gated_lock`): its parameters, removal, saving."""

    def __init__(self, model, modules: dict[str, GatedLoRALinear], state: _GateState, config: dict,
                 hook_objects: tuple):
        self.model, self.modules, self.state, self.config = model, modules, state, config
        self._hook_objects = hook_objects  # (the pre-hook, the hook): registered here, again after lifted()
        self._hooks: list = []
        self._attach()

    def _attach(self) -> None:
        """The wrapped linears in W's place and the gate's hooks registered."""
        for name, m in self.modules.items():
            _put(self.model, name, m)
        opener, closer = self._hook_objects
        self._hooks = [self.model.register_forward_pre_hook(opener, with_kwargs=True),
                       self.model.register_forward_hook(closer, always_call=True)]

    def _detach(self) -> None:
        """W's own linears back and no hooks: the model as it was before the lock."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        for name, m in self.modules.items():
            _put(self.model, name, m.base)

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules.values() for p in (m.lock_A, m.lock_B)]

    @contextlib.contextmanager
    def disabled(self):
        """Within the block the model computes W alone at every position (the lock stays installed):
        the reference the lock's training distils towards."""
        before, self.state.enabled = self.state.enabled, False
        try:
            yield self
        finally:
            self.state.enabled = before

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, m in self.modules.items():
            out[f"{name}.lock_A"], out[f"{name}.lock_B"] = m.lock_A.detach().cpu(), m.lock_B.detach().cpu()
        return out

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        want = set(self.state_dict())
        if set(tensors) != want:
            missing, extra = sorted(want - set(tensors)), sorted(set(tensors) - want)
            raise ValueError(f"lock tensors do not match this model's lock: missing {missing[:3]}, unexpected "
                             f"{extra[:3]}")
        with torch.no_grad():
            for name, m in self.modules.items():
                m.lock_A.copy_(tensors[f"{name}.lock_A"])
                m.lock_B.copy_(tensors[f"{name}.lock_B"])

    def save(self, folder) -> Path:
        """``folder/lock.safetensors`` + ``folder/lock.json`` (rank, alpha, targets, the wrapped module
        names), written to temporary names and renamed."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".lock.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp))
        tmp.replace(folder / "lock.safetensors")
        meta = folder / ".lock.json.tmp"
        meta.write_text(json.dumps({**self.config, "modules": sorted(self.modules)}, indent=1))
        meta.replace(folder / "lock.json")
        return folder

    @contextlib.contextmanager
    def lifted(self):
        """Within the block the model holds no trace of the lock -- its own linears, no hooks -- so that
        it saves as a checkpoint of its family (``save_pretrained``, the export); the lock is back after."""
        self._detach()
        try:
            yield self.model
        finally:
            self._attach()

    def remove(self) -> None:
        """Take the lock out: the wrapped linears go back, the hook goes (the drop-lock attack)."""
        self._detach()
        self.modules = {}


def _checkpointing(model) -> bool:
    """Whether gradient checkpointing is on (transformers 5 calls it ``is_activation_checkpointing`` and
    warns on the older ``is_gradient_checkpointing``, which 4.x has alone)."""
    for attr in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), attr):
            return bool(getattr(model, attr))
    return False


class _OpenGate:
    """The forward pre-hook: the gate of this call from its ``input_ids``. An object holding the state
    (not a closure), so that ``copy.deepcopy`` of a locked model (the relearning attack's copy) copies
    hooks and state together: the copy is locked too."""

    def __init__(self, state: _GateState):
        self.state = state
        self.lock: GatedLock | None = None  # set by install_gated_lock (find_gated_lock reads it)

    def __call__(self, module, args, kwargs):
        if module.training and _checkpointing(module):
            raise RuntimeError("the gated lock does not work with gradient checkpointing (the recomputed forward "
                               "would run with the gate closed): turn it off (transformers 5: "
                               "model.activation_checkpointing_disable(); 4.x: model.gradient_checkpointing_disable())")
        self.state.update(kwargs.get("input_ids", args[0] if args else None), _continuing(kwargs))


class _CloseGate:
    """The forward hook (also after a forward that raised): a later call that bypasses the model's
    forward sees W alone."""

    def __init__(self, state: _GateState):
        self.state = state

    def __call__(self, module, args, output):
        self.state.gate = None


def _continuing(kwargs: dict) -> bool:
    """Whether this forward continues a cached generation (its cache already holds tokens): the cache
    object (``cache`` in transformers 5, ``past_key_values`` in 4.x) knows its length; else
    ``cache_position``."""
    for key in ("cache", "past_key_values"):
        cache = kwargs.get(key)
        if cache is not None and hasattr(cache, "get_seq_length"):
            return cache.get_seq_length() > 0
    position = kwargs.get("cache_position")
    return position is not None and int(position.reshape(-1)[0]) > 0


def install_gated_lock(model, rank: int = 8, alpha: float = 16.0, targets=DEFAULT_TARGETS,
                       layers: list[int] | None = None) -> GatedLock:
    """Wrap the ``targets`` linears of W's layers (``layers``: indices, default all) of ``model`` (a
    model vkd_fast has an adapter for) in :class:`GatedLoRALinear`; returns the :class:`GatedLock`.
    The lock's tensors are float32 and trainable; nothing else changes."""
    from . import get_adapter

    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be an int >= 1, got {rank!r}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    adapter = get_adapter(model)
    adapter.require_language_model("the gated lock")
    if find_gated_lock(model) is not None:
        raise ValueError("this model already has a gated lock installed (find_gated_lock); remove() it first")
    state = _GateState(adapter.image_token_id)
    blocks = adapter.llm_layers
    chosen = range(len(blocks)) if layers is None else layers
    bad = [i for i in chosen if not (isinstance(i, int) and 0 <= i < len(blocks))]
    if bad:
        raise ValueError(f"layers must be indices of the language model's {len(blocks)} layers, got {bad}")
    prefix = {id(m): n for n, m in model.named_modules()}
    modules: dict[str, GatedLoRALinear] = {}
    for i in chosen:
        for name, sub in list(blocks[i].named_modules()):
            if isinstance(sub, nn.Linear) and name.rpartition(".")[2] in targets:
                modules[f"{prefix[id(blocks[i])]}.{name}"] = GatedLoRALinear(sub, rank, alpha, state)
    if not modules:
        raise ValueError(f"no linear named one of {tuple(targets)} in the chosen layers")

    opener = _OpenGate(state)
    config = {"rank": rank, "alpha": alpha, "targets": list(targets), "layers": list(chosen),
              "model_type": getattr(model.config, "model_type", None), "image_token_id": state.image_token_id}
    lock = GatedLock(model, modules, state, config, (opener, _CloseGate(state)))
    opener.lock = lock
    return lock


def find_gated_lock(model) -> GatedLock | None:
    """The lock installed on ``model`` (by :func:`install_gated_lock` or :func:`load_gated_lock`), or None;
    a deep copy of a locked model finds its own copy of the lock."""
    for hook in model._forward_pre_hooks.values():
        if isinstance(hook, _OpenGate) and hook.lock is not None:
            return hook.lock
    return None


def load_gated_lock(model, folder) -> GatedLock:
    """Install a lock saved by :meth:`GatedLock.save` on ``model`` (same family and shapes)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        config = json.loads((folder / "lock.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder}: no readable lock.json ({exc})") from None
    lock = install_gated_lock(model, config["rank"], config["alpha"], tuple(config["targets"]), config["layers"])
    lock.load_state_dict(load_file(str(folder / "lock.safetensors")))
    return lock


__all__ = ["DEFAULT_TARGETS", "GatedLoRALinear", "GatedLock", "find_gated_lock", "install_gated_lock",
           "load_gated_lock"]
