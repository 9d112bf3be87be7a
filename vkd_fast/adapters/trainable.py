"""Trainable sets (docs/method.md §2): which parameters of a model an unlearning run updates.

Specs: ``projector``, ``projector+vision_last:K`` (the K ViT blocks ending at the feature block),
``vision+projector`` (patch embedding, the ViT stem and every block up to the feature block),
``language_model`` (W and its output head) and ``all``. Blocks after the feature block never
influence the output and are never trainable; with a ``vision:i`` tap, blocks after i and the
projector are excluded. Optional LoRA (peft) on the set's Linear layers.
"""

from __future__ import annotations

import re

from torch import nn

_TRAINABLE_RE = re.compile(r"^(projector|vision\+projector|projector\+vision_last:(\d+)|language_model|all)$")
TRAINABLE_FORMS = "'projector', 'projector+vision_last:<K>', 'vision+projector', 'language_model' or 'all'"


def check_trainable(spec) -> str:
    """The spec, stripped, if it follows the grammar; a ValueError naming the forms otherwise."""
    m = _TRAINABLE_RE.match(spec.strip()) if isinstance(spec, str) else None
    if not m:
        raise ValueError(f"trainable must be {TRAINABLE_FORMS}, got {spec!r}")
    if m.group(2) is not None and int(m.group(2)) < 1:
        raise ValueError(f"trainable {spec!r}: K must be >= 1")
    return spec.strip()


def param_names(adapter, owners: list) -> set[str]:
    """Names of the model's parameters held by ``owners`` (modules, or parameters themselves)."""
    ids = {id(p) for m in owners for p in (m.parameters() if isinstance(m, nn.Module) else [m])}
    return {n for n, p in adapter.model.named_parameters() if id(p) in ids}


def trainable_names(adapter, spec: str, tap: str = "projector") -> list[str]:
    """Parameter names of the trainable set ``spec`` that can influence ``tap`` (sorted)."""
    spec = check_trainable(spec)
    m = _TRAINABLE_RE.match(spec)
    if spec == "all":  # output-level baselines (e.g. mmunlearner) update V, P and W
        return sorted(n for n, _ in adapter.model.named_parameters())
    if spec == "language_model":  # W with its output head: what output-level baselines update
        return sorted(param_names(adapter, [adapter.language_model, adapter.model.get_output_embeddings()]))
    t = adapter.parse_tap(tap)
    # a vision:i tap reads block i directly (even past the model's feature layer) and never the projector
    last = t.index if t.kind == "vision" else adapter.feature_block
    use_projector = t.kind != "vision"
    owners: list[nn.Module] = list(adapter.projector_modules) if use_projector else []
    if spec == "vision+projector":
        owners += adapter.vision_param_owners(last)
    elif m.group(2) is not None:
        k = int(m.group(2))
        first = max(0, adapter.feature_block - k + 1)
        owners += [adapter.vision_blocks[b] for b in range(first, adapter.feature_block + 1) if b <= last]
    names = sorted(param_names(adapter, owners))
    if not names:
        raise ValueError(f"trainable set {spec!r} has no parameter that influences tap {tap!r} "
                         "(a vision:i tap never sees the projector)")
    return names


def set_trainable(adapter, spec: str = "vision+projector", tap: str = "projector", lora: dict | None = None) -> dict:
    """Freeze everything, then unfreeze the trainable set ``spec`` (restricted to what influences
    ``tap``). With ``lora`` (peft ``LoraConfig`` keyword arguments, e.g. ``{"r": 8, "lora_alpha": 16}``)
    LoRA adapters are injected into the Linear layers of that set and only they train.

    Returns a summary: ``trainable`` / ``total`` parameter counts, ``share`` and ``names``.
    """
    names = adapter.trainable_names(spec, tap)  # a family may extend the set (LLaVA-NeXT: image_newline)
    for p in adapter.model.parameters():
        p.requires_grad_(False)
    if lora is not None:
        names = _inject_lora(adapter, names, lora)
    params = dict(adapter.model.named_parameters())
    for n in names:
        params[n].requires_grad_(True)
    trainable = sum(params[n].numel() for n in names)
    total = sum(p.numel() for p in adapter.model.parameters())
    return {"trainable": trainable, "total": total, "share": trainable / total, "names": names,
            "spec": spec, "tap": tap, "lora": lora is not None}


def _inject_lora(adapter, names: list[str], lora: dict) -> list[str]:
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as exc:  # pragma: no cover - peft is in the dev/hf extras
        raise RuntimeError("LoRA needs peft: pip install 'vkd-fast[hf]'") from exc
    wanted = {n.rsplit(".", 1)[0] for n in names}
    targets = sorted(
        name for name, mod in adapter.model.named_modules() if isinstance(mod, nn.Linear) and name in wanted
    )
    if not targets:
        raise ValueError("lora: the trainable set has no nn.Linear layer to adapt")
    cfg = LoraConfig(target_modules=targets, **lora)
    inject_adapter_in_model(cfg, adapter.model)
    return sorted(n for n, _ in adapter.model.named_parameters() if "lora_" in n)
