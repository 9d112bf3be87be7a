"""The relearning attack (docs/method.md §4): fine-tune an unlearned model on image questions about
part of the forget knowledge, then measure forget VQA accuracy on the *other* forget questions.

Two modes, both always reported: ``llm`` (the attacker trains the language model and its head) and
``visual`` (the attacker trains the vision encoder and projector). The attack split is either by
attribute (train on some attributes' questions, test on the others') or a fraction rho of the forget
(person, attribute) pairs (train on rho of the pairs, test on the rest). Relearning, not learning: no
(person, attribute) pair is both trained on and tested -- every image question of a pair goes to
the same side. Recovery =
(acc after relearning - acc after unlearning) / (acc before unlearning - acc after unlearning).

One attack seed is too noisy to judge a method (the gold model's visual recovery moved across a large
part of the scale with the attack's seed alone; measured: docs/robustness.md), so :func:`attack_grid`
runs a grid of attacks (splits, learning rates, step counts, both modes) over several seeds and
reports each cell's mean and spread and the worst case per mode.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import torch

from ..adapters import get_adapter
from ..utils.items import person_of, question_kind, require_persons
from ..utils.loop import train_steps
from ..utils.options import check_types
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
    fraction: float = 0.25  # split="fraction": share of the forget (person, attribute) pairs trained on
    steps: int = 40
    lr: float = 1e-3
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self)
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


def pair_key(item: dict) -> tuple:
    """The (person, attribute) pair an image question asks about: the person by
    :func:`vkd_fast.data.person_of` (``identity``, ``name`` or ``id``), and ``attribute`` or else the
    question text."""
    return person_of(item), question_kind(item)


def split_attack(items: list[dict], config: RelearnConfig) -> tuple[list[dict], list[dict]]:
    """Forget VQA items -> (attack items the attacker trains on, held-out items it is tested on)."""
    items = list(items)
    if config.split == "attributes":
        missing = [it for it in items if "attribute" not in it]
        if missing:
            raise ValueError("split='attributes' needs items with an 'attribute' field; use split='fraction'")
        attack = [it for it in items if it["attribute"] in config.attributes]
        held = [it for it in items if it["attribute"] not in config.attributes]
    else:  # a share of the (person, attribute) pairs, each with all its image questions
        require_persons("forget VQA", items, "split='fraction' holds out (person, question) pairs, so it needs to know "
                        "who every image pictures", "or use split='attributes'")
        pairs = sorted({pair_key(it) for it in items}, key=repr)
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(config.seed)).tolist()
        chosen = {pairs[i] for i in order[: max(1, round(config.fraction * len(pairs)))]}
        attack = [it for it in items if pair_key(it) in chosen]
        held = [it for it in items if pair_key(it) not in chosen]
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
    get_adapter(model).require_language_model("the relearning attack")
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

    def batch_loss() -> torch.Tensor:  # answer cross-entropy of a random batch of attack questions
        rows = torch.randint(len(examples), (config.batch_size,), generator=gen).tolist()
        inputs, labels = collate_qa(adapter, [examples[r] for r in rows], pad)
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        return answer_ce(*answer_logprobs(attacked(**inputs).logits, labels.to(device)))

    attacked.train()
    train_steps(batch_loss, opt, config.steps)
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


def parse_split(spec: str) -> dict:
    """``"attributes:job,city"`` / ``"fraction:0.25"`` -> RelearnConfig fields."""
    kind, _, arg = str(spec).partition(":")
    try:
        if kind == "attributes" and arg:
            return {"split": "attributes", "attributes": tuple(a.strip() for a in arg.split(",") if a.strip())}
        if kind == "fraction" and arg:
            return {"split": "fraction", "fraction": float(arg)}
    except ValueError:
        pass
    raise ValueError(f"split {spec!r} must be 'attributes:<a>,<b>,...' or 'fraction:<share in (0, 1)>'")


@dataclass(frozen=True)
class AttackGrid:
    """A grid of relearning attacks, each cell run with every seed. The defaults are the study's
    grid: two attribute partitions (each pair of attributes taught, the other two tested) and a
    pair-fraction split, a gentle and a strong learning rate, a short and a long attack."""

    splits: tuple[str, ...] = ("attributes:job,city", "attributes:hobby,pet", "fraction:0.5")
    lrs: tuple[float, ...] = (1e-4, 1e-3)
    steps: tuple[int, ...] = (40, 200)
    modes: tuple[str, ...] = ("llm", "visual")
    seeds: tuple[int, ...] = (0, 1, 2)
    batch_size: int = 8

    def __post_init__(self) -> None:
        for name in ("splits", "lrs", "steps", "modes", "seeds"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        for config in self.configs():  # every cell valid
            config.__post_init__()

    def configs(self) -> list[RelearnConfig]:
        """One RelearnConfig per (split, lr, steps) cell (seed 0; :func:`attack_grid` sets the seed)."""
        return [RelearnConfig(modes=tuple(self.modes), steps=st, lr=lr, batch_size=self.batch_size, **parse_split(sp))
                for sp in self.splits for lr in self.lrs for st in self.steps]

    @classmethod
    def default_attack(cls, seeds=(0, 1, 2)) -> AttackGrid:
        """The default attack (teach job + city, test hobby + pet; 40 steps at lr 1e-3), over seeds."""
        return cls(splits=("attributes:job,city",), lrs=(1e-3,), steps=(40,), seeds=tuple(seeds))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _split_name(config: RelearnConfig) -> str:
    return (f"attributes:{','.join(config.attributes)}" if config.split == "attributes"
            else f"fraction:{config.fraction:g}")


def attack_grid(model, tokenizer, forget_vqa: list[dict], grid: AttackGrid | None = None, *, before,
                batch_size: int = 64, before_cache: dict | None = None, progress=None) -> dict:
    """Every cell of ``grid`` with every seed, both modes. ``before``: the model before unlearning (its
    held-out accuracy per split is computed once, and kept in ``before_cache`` when given, so that
    several models attacked with one cache share it). Returns ``cells`` (per split, lr, steps and mode:
    the recovery of each seed, their mean and standard deviation) and ``worst`` (per mode, the cell
    with the highest mean recovery). ``progress``: called with a short text after each attack."""
    grid = grid or AttackGrid()
    cache = before_cache if before_cache is not None else {}
    cells = []
    for config in grid.configs():
        per_mode = {m: [] for m in grid.modes}
        for seed in grid.seeds:
            cfg = dataclasses.replace(config, seed=seed)
            _, held = split_attack(forget_vqa, cfg)
            key = (id(forget_vqa), tuple(id(it) for it in held))
            if key not in cache:
                cache[key] = multiple_choice(before, get_adapter(before), tokenizer, held,
                                             batch_size=batch_size)["accuracy"]
            res = relearning_attack(model, tokenizer, forget_vqa, cfg, acc_before=cache[key], batch_size=batch_size)
            for mode, r in res["modes"].items():
                per_mode[mode].append(r["recovery"])
            if progress is not None:
                progress(f"{_split_name(cfg)} lr {cfg.lr:g} {cfg.steps} steps seed {seed}")
        for mode, values in per_mode.items():
            t = torch.tensor(values, dtype=torch.float64)
            cells.append({"split": _split_name(config), "lr": config.lr, "steps": config.steps, "mode": mode,
                          "recoveries": values, "recovery": float(t.mean()),
                          "recovery_std": float(t.std()) if len(values) > 1 else 0.0})
    worst = {}
    for mode in grid.modes:
        finite = [c for c in cells if c["mode"] == mode and not math.isnan(c["recovery"])]
        worst[mode] = max(finite, key=lambda c: c["recovery"]) if finite else None
    return {"grid": grid.to_dict(), "cells": cells, "worst": worst}
