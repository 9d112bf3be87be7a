"""The relearning attack (METHOD.md section 4): fine-tune an unlearned model on image questions about
part of the forget knowledge, then measure forget VQA accuracy on the *other* forget questions.

Two modes, both always reported: ``llm`` (the attacker trains the language model and its head) and
``visual`` (the attacker trains the vision encoder and projector). The attack split is either by
attribute (train on some attributes' questions, test on the others') or a fraction rho of the forget
VQA pairs (train on rho, test on the rest). Recovery =
(acc after relearning - acc after unlearning) / (acc before unlearning - acc after unlearning).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch

from ..adapters import get_adapter
from ..utils.text import answer_ce, answer_logprobs, collate_qa, encode_qa, pad_id
from ..utils.validate import check_positive_int
from .metrics import multiple_choice, recovery

MODES = {"llm": "language_model", "visual": "vision+projector"}


@dataclass(frozen=True)
class RelearnConfig:
    """How the attacker fine-tunes (defaults: a strong but short attack on the toy world)."""

    modes: tuple[str, ...] = ("llm", "visual")
    split: str = "attributes"  # "attributes" or "fraction"
    attributes: tuple[str, ...] = ("job", "city")  # split="attributes": what the attacker trains on
    fraction: float = 0.25  # split="fraction": share of the forget VQA pairs the attacker trains on
    steps: int = 40
    lr: float = 1e-3
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"modes must be a non-empty subset of {tuple(MODES)}, got {self.modes!r}")
        if self.split not in ("attributes", "fraction"):
            raise ValueError(f"split must be 'attributes' or 'fraction', got {self.split!r}")
        if not 0 < self.fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {self.fraction!r}")
        for name in ("steps", "batch_size"):
            check_positive_int(name, getattr(self, name))
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def split_attack(items: list[dict], config: RelearnConfig) -> tuple[list[dict], list[dict]]:
    """Forget VQA items -> (attack items the attacker trains on, held-out items it is tested on)."""
    items = list(items)
    if config.split == "attributes":
        missing = [it for it in items if "attribute" not in it]
        if missing:
            raise ValueError("split='attributes' needs items with an 'attribute' field; use split='fraction'")
        attack = [it for it in items if it["attribute"] in config.attributes]
        held = [it for it in items if it["attribute"] not in config.attributes]
    else:
        order = torch.randperm(len(items), generator=torch.Generator().manual_seed(config.seed)).tolist()
        k = max(1, round(config.fraction * len(items)))
        attack, held = [items[i] for i in order[:k]], [items[i] for i in order[k:]]
    if not attack or not held:
        raise ValueError(f"the attack split leaves {len(attack)} attack and {len(held)} held-out items; "
                         "both must be non-empty (check attributes / fraction)")
    return attack, held


def relearn(model, tokenizer, attack_items: list[dict], mode: str, config: RelearnConfig) -> torch.nn.Module:
    """A copy of ``model`` fine-tuned by the attacker (answer cross-entropy on ``attack_items``, image
    questions with ``image``, ``question`` and the correct ``answer`` text) with the ``mode``'s
    trainable set. ``model`` itself is not changed."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {tuple(MODES)}, got {mode!r}")
    attacked = copy.deepcopy(model)
    adapter = get_adapter(attacked)
    adapter.set_trainable(MODES[mode])
    train = [{"image": it["image"], "question": it["question"],
              "answer": it["options"][it["answer"]] if isinstance(it["options"], dict) else it["answer"]}
             for it in attack_items]
    examples = encode_qa(adapter, tokenizer, train, "attack_items")
    pad = pad_id(tokenizer)
    params = [p for p in attacked.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(config.seed)
    device = next(attacked.parameters()).device
    attacked.train()
    for _ in range(config.steps):
        rows = torch.randint(len(examples), (config.batch_size,), generator=gen).tolist()
        inputs, labels = collate_qa(adapter, [examples[r] for r in rows], pad)
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        loss = answer_ce(*answer_logprobs(attacked(**inputs).logits, labels.to(device)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    attacked.eval()
    attacked.requires_grad_(False)
    return attacked


def relearning_attack(model, tokenizer, forget_vqa: list[dict], config: RelearnConfig | None = None, *,
                      acc_before: float, batch_size: int = 64) -> dict:
    """Run the attack in every configured mode. ``acc_before``: the model before unlearning, on the
    same held-out items (from :func:`held_out_accuracy`). Returns per mode the held-out accuracy
    after unlearning and after relearning, and the recovery."""
    config = config or RelearnConfig()
    attack, held = split_attack(forget_vqa, config)
    adapter = get_adapter(model)
    after_unlearn = multiple_choice(model, adapter, tokenizer, held, batch_size=batch_size)["accuracy"]
    out = {"config": config.to_dict(), "n_attack": len(attack), "n_held_out": len(held), "acc_before": acc_before,
           "acc_after_unlearn": after_unlearn, "modes": {}}
    for mode in config.modes:
        attacked = relearn(model, tokenizer, attack, mode, config)
        acc = multiple_choice(attacked, get_adapter(attacked), tokenizer, held, batch_size=batch_size)["accuracy"]
        out["modes"][mode] = {"acc_after_relearn": acc, "recovery": recovery(acc_before, after_unlearn, acc)}
        del attacked
    return out


def held_out_accuracy(model, tokenizer, forget_vqa: list[dict], config: RelearnConfig | None = None,
                      batch_size: int = 64) -> float:
    """Accuracy of ``model`` (typically the model before unlearning) on the attack's held-out items."""
    _, held = split_attack(forget_vqa, config or RelearnConfig())
    return multiple_choice(model, get_adapter(model), tokenizer, held, batch_size=batch_size)["accuracy"]
