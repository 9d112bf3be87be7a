"""The embedding attack (docs/method.md §4.4): how much of a forget person does the language model W
still hold, whatever the vision side does?

For each forget image the attacker replaces the visual tokens W reads -- the projector's output --
by free vectors, starting from the model's own, and optimises them (Adam, full batch) so that W
answers that image's *taught* questions (the relearning attack's split: e.g. job and city); then it
asks the image's *held-out* questions (hobby, pet) with those vectors. No weight changes. The
recovery is the relearning attack's: (held-out accuracy after - after unlearning) / (before
unlearning - after unlearning).

A method that keeps W (VKD) leaves this attack exactly what it was on the model before unlearning
(the same W), which is the point of running it: it measures the memory a vision-side method cannot
reach -- the floor under every V+P-only method, of which the oracle is one instance. A lock inside W
is judged by how far it lowers it.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from ..adapters import get_adapter
from ..utils.text import answer_ce, answer_logprobs, collate_qa, encode_qa, pad_id
from ..utils.validate import check_positive_int
from .metrics import multiple_choice, recovery
from .relearn import RelearnConfig, split_attack


def _answer(item: dict) -> str:
    options = item["options"]
    return options[item["answer"]] if isinstance(options, dict) else item["answer"]


class _Replace:
    """A forward hook on the projector's last module: its output becomes ``vectors`` (one image's
    tokens), repeated for every copy of that image in the batch."""

    def __init__(self, module: torch.nn.Module, vectors: torch.Tensor):
        self.vectors = vectors
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, inputs, out):
        v = self.vectors
        if out.shape[1:] != v.shape[1:] or out.shape[0] % v.shape[0]:
            raise RuntimeError(f"embedding attack: the projector's output {tuple(out.shape)} is not copies of one "
                               f"image's tokens {tuple(v.shape)} (a batch must hold one image)")
        return v.to(out.dtype).repeat(out.shape[0] // v.shape[0], *[1] * (v.dim() - 1))

    def remove(self) -> None:
        self.handle.remove()


def _own_tokens(model, adapter, module, example) -> torch.Tensor:
    """The projector's output for one example's image (a forward with a capturing hook)."""
    seen = []
    handle = module.register_forward_hook(lambda m, i, out: seen.append(out.detach().clone()))
    try:
        inputs, _ = collate_qa(adapter, [example], 0)
        device = next(model.parameters()).device
        with torch.no_grad():
            model(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()})
    finally:
        handle.remove()
    return seen[0]


def embedding_attack(model, tokenizer, forget_vqa: list[dict], config: RelearnConfig | None = None, *,
                     acc_before: float, steps: int = 50, lr: float = 0.05, batch_size: int = 64) -> dict:
    """Run the attack on ``model`` (left unchanged). ``forget_vqa``: image multiple-choice items of the
    forget people, split as the relearning attack splits them (``config``, default: teach job and
    city, test the rest); ``acc_before``: the model before unlearning on the held-out items
    (:func:`vkd_fast.eval.relearn.held_out_accuracy`). Returns ``{"acc_after_unlearn",
    "acc_after_attack", "acc_taught" (the taught questions with the learned tokens: did the attack
    reach its own objective), "recovery", "images", "steps", "lr", "config"}``."""
    check_positive_int("steps", steps)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    config = config or RelearnConfig()
    adapter = get_adapter(model)
    adapter.require_language_model("the embedding attack")
    module = adapter.projector_modules[-1]
    attack, held = split_attack(forget_vqa, config)
    by_image: dict[int, dict[str, list]] = defaultdict(lambda: {"attack": [], "held": []})
    for it in attack:
        by_image[id(it["image"])]["attack"].append(it)
    for it in held:
        by_image[id(it["image"])]["held"].append(it)
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    device = next(model.parameters()).device
    correct = total = taught_correct = taught_total = 0
    try:
        model.eval()
        model.requires_grad_(False)
        after_unlearn = multiple_choice(model, adapter, tokenizer, held, batch_size=batch_size)["accuracy"]
        for group in by_image.values():
            if not group["held"]:
                continue
            taught = [{"image": it["image"], "question": it["question"], "answer": _answer(it)}
                      for it in group["attack"]]
            replace = None
            try:
                if taught:
                    examples = encode_qa(adapter, tokenizer, taught, "attack items")
                    vectors = torch.nn.Parameter(_own_tokens(model, adapter, module, examples[0]).float())
                    replace = _Replace(module, vectors)
                    opt = torch.optim.Adam([vectors], lr=lr)
                    inputs, labels = collate_qa(adapter, examples, pad_id(tokenizer))
                    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
                    labels = labels.to(device)
                    with torch.enable_grad():
                        for _ in range(steps):
                            opt.zero_grad(set_to_none=True)
                            answer_ce(*answer_logprobs(model(**inputs).logits, labels)).backward()
                            opt.step()
                # nothing taught about this image: its own tokens stand
                result = multiple_choice(model, adapter, tokenizer, group["held"], batch_size=batch_size)
                if group["attack"]:
                    got = multiple_choice(model, adapter, tokenizer, group["attack"], batch_size=batch_size)
                    taught_correct += round(got["accuracy"] * got["n"])
                    taught_total += got["n"]
            finally:  # the projector is the model's own again, whatever happened
                if replace is not None:
                    replace.remove()
            correct += round(result["accuracy"] * result["n"])
            total += result["n"]
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)
    after = correct / total
    return {"acc_before": acc_before, "acc_after_unlearn": after_unlearn, "acc_after_attack": after,
            "acc_taught": taught_correct / taught_total if taught_total else float("nan"),
            "recovery": recovery(acc_before, after_unlearn, after), "images": len(by_image), "steps": steps, "lr": lr,
            "config": config.to_dict()}


__all__ = ["embedding_attack"]
