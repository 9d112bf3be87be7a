"""``vkd_robust``: VKD, then a second lock inside the language model that text never sees (issue 26).

VKD trains only V and P (lock 1); an attacker who fine-tunes V + P again runs an embedding attack on
the frozen W, which still maps the forget people's identities to their facts. After VKD's steps this
method installs an image-gated low-rank adapter on W (:mod:`vkd_fast.adapters.gated_lock`: active
only from a sequence's first image token on, so a prompt without an image computes exactly W) and
trains it against a persistent pool of simulated V + P attackers:

* the pool: ``attackers`` copies of V + P, the first started from VKD's, the last from the model's
  own before unlearning (the vanilla's); each takes ``attacker_steps`` fine-tuning steps on the
  forget people's image questions (answer cross-entropy through W and the lock, on a random half of
  the question kinds it draws at each reset) between two of the lock's steps, and goes back to its
  start every ``attacker_reset`` of its own steps;
* the lock's step, with the lock the only thing that trains: retain image questions answered as W
  alone answers them (KL over every answer token), through VKD's V + P and through the attacker's
  (so the lock cannot pass by breaking whenever V + P moves); forget image questions answered like
  someone else's -- the first answer token's distribution that W alone, with the vanilla V + P,
  gives for the same question about other people's images -- through VKD's, the attacker's and the
  vanilla V + P. Whose images, ``lock_forget_target``: ``"prior"``, retain images drawn per
  question (the mean over ``prior_images`` of them: a hedged answer); ``"stand_in"``, the image of
  the retain person VKD's ``retain_person`` target put in the forget person's place (a confident
  answer, the same person for all of a forget person's images: what lock 1 already answers);
* with ``llm_attackers`` > 0, llm attackers join the pool: each fine-tunes W and the lock (the
  ``llm`` relearning mode's trainable set, VKD's V + P) on forget facts, keeping its change to them
  between its turns, and in the lock's turn under it the forget term is taken at the weights it
  reached -- that gradient then updates the lock itself (a first-order step, as in meta-learned
  tamper resistance); W is put back bit for bit after every such turn. Memory: one W-size copy of W
  plus one per llm attacker.

The result is the VKD model with the lock installed (:func:`vkd_fast.adapters.find_gated_lock`
finds it; a run folder keeps it in ``gated_lock/``). Saved apart: the model's own checkpoint is
VKD's V + P and the untouched W (``lock.remove()`` first), the lock a small adapter folder
(``GatedLock.save`` / ``load_gated_lock``). Threat model: an attacker who drops the lock has VKD's
model back; an attacker who fine-tunes W (the ``llm`` relearning mode) trains the lock with it.

Limits (measured figures: docs/robustness.md): the forget target covers the first answer token;
name questions asked with an image present are not trained to stay as W answers them; single
process only (the attackers' forwards would bypass DDP).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..adapters.gated_lock import DEFAULT_TARGETS, install_gated_lock
from ..utils.items import question_kind
from ..utils.options import option
from ..utils.text import answer_ce, answer_logprobs, collate_qa, encode_qa, pad_id
from ..utils.validate import check_positive_int
from .inputs import check_qa
from .vkd import VKD, VKDOptions

LOCK_FOLDER = "gated_lock"
#: the lock's forget targets (:class:`_LockFields`'s ``lock_forget_target``)
LOCK_FORGET_TARGETS = ("prior", "stand_in")


@dataclass(frozen=True)
class _LockFields:
    lock_steps: int = option(300, "steps of the lock's training after VKD's steps")
    lock_rank: int = option(8, "rank of the lock's adapters on the linears of lock_targets")
    lock_alpha: float = option(16.0, "the lock's scale alpha (the update is alpha / rank * B A x)")
    lock_targets: str = option(",".join(DEFAULT_TARGETS),
                               "comma-separated names of the linears of W's layers the lock wraps (e.g. add "
                               "gate_proj,up_proj,down_proj for the MLPs)")
    lock_lr: float = option(1e-3, "the lock's learning rate (AdamW)")
    lock_batch: int = option(8, "questions per side in one of the lock's steps")
    attackers: int = option(3, "simulated V + P attackers in the pool (the first starts from VKD's V + P, the last "
                               "from the vanilla's)")
    llm_attackers: int = option(0, "simulated llm attackers added to the pool: each fine-tunes W and the lock "
                                   "(VKD's V + P), and the lock's forget term is also taken at the weights it "
                                   "reaches (first order: that gradient updates the lock itself); memory: a copy "
                                   "of W, plus one per llm attacker")
    attacker_steps: int = option(4, "fine-tuning steps an attacker takes between two of the lock's steps")
    attacker_lr: float = option(1e-3, "the attackers' learning rate (AdamW, answer cross-entropy)")
    attacker_reset: int = option(40, "an attacker goes back to its start after this many of its own steps")
    lock_forget_target: str = option("stand_in", "what the lock answers a forget image's question with: 'stand_in' "
                                                  "(the answer about the retain person VKD's forget_target "
                                                  "'retain_person' put in the forget person's place) or 'prior' (the "
                                                  "mean answer over prior_images retain images: a hedged answer, "
                                                  "which membership inference tells from a stranger's; measured: "
                                                  "docs/robustness.md)")
    prior_images: int = option(4, "retain images whose answers, averaged, are a forget question's target answer "
                                  "(lock_forget_target 'prior')")
    lambda_lock_retain: float = option(4.0, "weight of the lock's retain term (answers as W alone gives them; 1.0 "
                                             "cost the retain images far more accuracy than 4.0; measured: "
                                             "docs/robustness.md)")
    lambda_lock_forget: float = option(1.0, "weight of the lock's forget term (answers as lock_forget_target says)")
    lambda_lock_names: float = option(0.0, "weight of the lock's name term: items' 'name_question' (the question "
                                            "asked by the person's name) asked next to a retain person's image "
                                            "answered as W alone answers them; off when no item has one")


@dataclass(frozen=True)
class VKDRobustOptions(VKDOptions, _LockFields):
    """VKD's options, then the lock's (:class:`_LockFields`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("lock_steps", "lock_rank", "lock_batch", "attackers", "attacker_steps", "attacker_reset",
                     "prior_images"):
            check_positive_int(name, getattr(self, name))
        for name in ("lock_alpha", "lock_lr", "attacker_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("llm_attackers", "lambda_lock_retain", "lambda_lock_forget", "lambda_lock_names"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.lock_forget_target not in LOCK_FORGET_TARGETS:
            raise ValueError(f"lock_forget_target must be one of {LOCK_FORGET_TARGETS}, "
                             f"got {self.lock_forget_target!r}")
        if self.lock_forget_target == "stand_in" and self.forget_target != "retain_person":
            raise ValueError("lock_forget_target 'stand_in' (the default) asks the forget questions about VKD's "
                             f"stand-ins, which forget_target 'retain_person' draws; with forget_target "
                             f"{self.forget_target!r} set lock_forget_target='prior'")
        names = self.lock_target_names
        if not names or len(set(names)) != len(names) or not all(n.isidentifier() for n in names):
            raise ValueError(f"lock_targets must be comma-separated distinct module names, got {self.lock_targets!r}")

    @property
    def lock_target_names(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.lock_targets.split(",") if n.strip())


class VKDRobust(VKD):
    """VKD + the image-gated lock trained against simulated V + P attackers; options: :class:`VKDRobustOptions`."""

    Options = VKDRobustOptions

    @property
    def needs_tokenizer(self) -> bool:
        return True

    @property
    def needs_language_model(self) -> bool:
        return True

    def check(self, forget, retain, tokenizer=None, world_size: int = 1) -> None:
        if tokenizer is None:
            raise ValueError("vkd_robust trains its lock on answers and needs tokenizer=...")
        if world_size > 1:
            raise ValueError("vkd_robust runs in one process only (its simulated attackers' forwards would bypass "
                             "DDP's gradient averaging)")
        check_qa("forget", forget)
        check_qa("retain", retain)
        for name, items in (("forget", forget), ("retain", retain)):
            bad = [i for i, it in enumerate(items) if "name_question" in it
                   and not (isinstance(it["name_question"], str) and it["name_question"].strip())]
            if bad:
                raise ValueError(f"{name} items {bad[:5]}: 'name_question' must be a non-empty string (the item's "
                                 "question asked by the person's name), or left out")
        super().check(forget, retain, tokenizer, world_size)

    def setup(self, ctx) -> None:
        super().setup(ctx)
        names = self.adapter.visual_param_names()
        # V + P before any step: the vanilla's, where one attacker of the pool starts (kept in host memory
        # while VKD trains, so the accelerator holds no second V + P)
        self._vanilla_vp = {n: p.detach().to("cpu", copy=True) for n, p in ctx.model.named_parameters() if n in names}
        self._run_dir = ctx.run_dir
        self.lock, self.lock_stats = None, {}

    def after_steps(self) -> None:
        forget, retain = self.items
        stand_ins = None
        if self.options.lock_forget_target == "stand_in":  # VKD's stand-in image for each forget item
            retain_of = {k: j for j, k in enumerate(self.r_keys)}  # teacher-cache key -> retain item
            stand_ins = [retain[retain_of[k]]["image"] for k in self.target.target_keys]
        self.lock, self.lock_stats = train_gated_lock(self.model, self.adapter, self.tokenizer, forget, retain,
                                                      self._vanilla_vp, self.options, seed=self.seed,
                                                      stand_ins=stand_ins)
        if self._run_dir is not None:
            self.lock.save(self._run_dir / LOCK_FOLDER)

    def close(self) -> dict:
        return {**super().close(), "lock": self.lock_stats}


def _first_answer_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B, V] logits that predict each row's first answer token."""
    first = (labels != -100).int().argmax(dim=1)  # every row has an answer (encode_qa checks)
    return logits[torch.arange(logits.shape[0], device=logits.device), first - 1].float()


def _qa_logits(model, adapter, examples: list[dict], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of one right-padded batch of encoded QA ``examples`` on ``device``."""
    inputs, labels = collate_qa(adapter, examples, pad)
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    return model(**inputs).logits, labels.to(device)


@torch.no_grad()
def answer_targets(model, adapter, tokenizer, items: list[dict], images: list[list]) -> torch.Tensor:
    """[len(items), vocab]: per item, the distribution of its first answer token when ``model`` is asked
    the item's question about each image of ``images[i]`` (the distributions averaged over them): the
    lock's forget targets, computed with W alone and the vanilla V + P."""
    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    out = []
    for it, imgs in zip(items, images, strict=True):
        asked = [{"image": im, "question": it["question"], "answer": it["answer"]} for im in imgs]
        logits, labels = _qa_logits(model, adapter, encode_qa(adapter, tokenizer, asked, "targets"), pad, device)
        out.append(torch.softmax(_first_answer_logits(logits, labels), -1).mean(0))
    return torch.stack(out)


def train_gated_lock(model, adapter, tokenizer, forget: list[dict], retain: list[dict], vanilla_vp: dict,
                     o: VKDRobustOptions, *, seed: int = 0, stand_ins: list | None = None):
    """Install the gated lock on ``model`` (VKD's V + P in place) and train it (module docstring).
    ``vanilla_vp``: V + P's tensors before unlearning, by parameter name. ``stand_ins``: one image per
    forget item whose answer (W alone, the vanilla V + P, the item's question) is that item's forget
    target; None: the mean answer over ``o.prior_images`` retain images drawn per item. Returns (lock,
    statistics); V + P are VKD's again afterwards and nothing but the lock has changed."""
    if stand_ins is not None and len(stand_ins) != len(forget):
        raise ValueError(f"stand_ins must give one image per forget item ({len(forget)}), got {len(stand_ins)}")
    t0 = time.perf_counter()
    named = dict(model.named_parameters())
    names = sorted(vanilla_vp)
    vp = [named[n] for n in names]
    vkd_state = [p.detach().clone() for p in vp]
    vanilla_state = [vanilla_vp[n].to(p.device) for n, p in zip(names, vp)]
    was_training, grads = model.training, {n: p.requires_grad for n, p in named.items()}
    model.requires_grad_(False)
    model.eval()
    device = vp[0].device
    lock = install_gated_lock(model, rank=o.lock_rank, alpha=o.lock_alpha, targets=o.lock_target_names)
    lock_params = lock.parameters()
    for p in lock_params:
        p.requires_grad_(False)
    pad = pad_id(tokenizer)
    f_ex = encode_qa(adapter, tokenizer, forget, "forget")
    r_ex = encode_qa(adapter, tokenizer, retain, "retain")
    gen = torch.Generator().manual_seed(seed)

    def put_back(params, tensors) -> None:
        with torch.no_grad():
            for p, t in zip(params, tensors):
                p.copy_(t)

    def load(state) -> None:  # V + P's tensors
        put_back(vp, state)

    def forward(examples, rows):
        return _qa_logits(model, adapter, [examples[r] for r in rows], pad, device)

    def draw(n_items: int, k: int, among=None) -> list[int]:
        pool = list(range(n_items)) if among is None else among
        return [pool[i] for i in torch.randint(len(pool), (k,), generator=gen).tolist()]

    # the target answer of every forget question: W alone, the vanilla V + P, the question asked about
    # the item's stand-in image, or about prior_images retain people's images (averaged)
    images = [[stand_ins[i]] if stand_ins is not None
              else [retain[r]["image"] for r in draw(len(retain), o.prior_images)] for i in range(len(forget))]
    load(vanilla_state)
    with lock.disabled():
        prior = answer_targets(model, adapter, tokenizer, forget, images)
    # the name questions (items' "name_question"), each asked next to a retain person's image drawn for
    # it, and a retain person's also next to their own: the lock keeps W's answers to them
    # (lambda_lock_names 0: no draws, the lock as before the term existed)
    asked_f, asked_r = ([[it for it in items if it.get("name_question")] for items in (forget, retain)]
                        if o.lambda_lock_names > 0 else ([], []))
    named = [{"image": retain[draw(len(retain), 1)[0]]["image"], "question": it["name_question"],
              "answer": it["answer"]} for it in asked_f + asked_r]
    named += [{"image": it["image"], "question": it["name_question"], "answer": it["answer"]} for it in asked_r]
    n_ex = encode_qa(adapter, tokenizer, named, "name questions") if named else []

    kinds = sorted({question_kind(it) for it in forget}, key=str)
    by_kind = {k: [i for i, it in enumerate(forget) if question_kind(it) == k] for k in kinds}

    def fresh(start):  # start: V + P's tensors (a V + P attacker), or None (an llm attacker: W's change 0)
        chosen = torch.randperm(len(kinds), generator=gen)[: max(1, len(kinds) // 2)].tolist()
        return {"start": start, "state": None if start is None else [t.clone() for t in start], "age": 0,
                "rows": sorted(r for c in chosen for r in by_kind[kinds[c]])}

    starts = [vkd_state] * max(1, o.attackers - 1) + [vanilla_state] * (o.attackers > 1) + [None] * o.llm_attackers
    pool = [fresh(s) for s in starts]
    # an llm attacker's state is its change to W's parameters and the lock's (W + its head, in
    # trainable_names' order), applied on top of W and of the lock as it is at that moment
    llm_named = dict(model.named_parameters())
    llm_params = [llm_named[n] for n in adapter.trainable_names("language_model")] if o.llm_attackers else []
    lock_ids = {id(p) for p in lock_params}
    w_params = [p for p in llm_params if id(p) not in lock_ids]
    w_saved = [p.detach().clone() for p in w_params]  # W itself, put back bit for bit after every shift

    def shift(delta) -> list[torch.Tensor]:
        """W and the lock moved by an llm attacker's change; returns the lock's tensors before it."""
        before = [p.detach().clone() for p in lock_params]
        if delta is not None:
            with torch.no_grad():
                for p, d in zip(llm_params, delta):
                    p.add_(d)
        return before

    def unshift(lock_before) -> None:
        put_back(w_params, w_saved)
        put_back(lock_params, lock_before)

    # the terms that keep answers as W alone gives them: (name, encoded examples, weight)
    kept = [("retain", r_ex, o.lambda_lock_retain), ("names", n_ex, o.lambda_lock_names)]
    optimizer = torch.optim.AdamW(lock_params, lr=o.lock_lr, weight_decay=0.0)
    history = []
    try:
        for step in range(o.lock_steps):
            attacker = pool[step % len(pool)]
            llm_attacker = attacker["start"] is None
            # the attacker's turn: V + P (or W and the lock) train on forget facts
            load(vkd_state if llm_attacker else attacker["state"])
            lock_before = shift(attacker["state"]) if llm_attacker else None
            trained = llm_params if llm_attacker else vp
            for p in trained:
                p.requires_grad_(True)
            attack_opt = torch.optim.AdamW(trained, lr=o.attacker_lr, weight_decay=0.0)
            for _ in range(o.attacker_steps):
                logits, labels = forward(f_ex, draw(len(f_ex), o.lock_batch, attacker["rows"]))
                attack_opt.zero_grad(set_to_none=True)
                answer_ce(*answer_logprobs(logits, labels)).backward()
                attack_opt.step()
            for p in trained:
                p.requires_grad_(False)
                p.grad = None
            if llm_attacker:  # its change from W and from the lock it started this turn from
                base = {id(p): t for p, t in zip(w_params + lock_params, w_saved + lock_before)}
                attacker["state"] = [p.detach() - base[id(p)] for p in llm_params]
                unshift(lock_before)
            else:
                attacker["state"] = [p.detach().clone() for p in vp]
            attacker["age"] += o.attacker_steps
            if attacker["age"] >= o.attacker_reset:
                pool[step % len(pool)] = fresh(attacker["start"])
            # the lock's turn
            for p in lock_params:
                p.requires_grad_(True)
            optimizer.zero_grad(set_to_none=True)
            # detached terms, read once training is over (no host sync)
            logged = {"retain": [], "names": [], "forget": []}
            under = attacker["state"] if not llm_attacker else vkd_state
            for which, state in (("vkd", vkd_state), ("attacker", under), ("vanilla", vanilla_state)):
                load(state)
                # under an llm attacker's weights only the forget term, its gradient taken there
                # and applied to the lock itself (first order); W and the lock are put back after
                shifted = shift(attacker["state"]) if llm_attacker and which == "attacker" else None
                for term, examples, weight in kept if which != "vanilla" and shifted is None else ():
                    if not examples or weight <= 0:
                        continue
                    rows = draw(len(examples), o.lock_batch)
                    with torch.no_grad(), lock.disabled():
                        ref, labels = forward(examples, rows)
                    cur, _ = forward(examples, rows)
                    mask = labels[:, 1:] != -100
                    ref_logp = torch.log_softmax(ref[:, :-1].float(), -1)[mask]
                    cur_logp = torch.log_softmax(cur[:, :-1].float(), -1)[mask]
                    kl = torch.sum(ref_logp.exp() * (ref_logp - cur_logp), -1).mean()
                    (weight * kl / 2).backward()
                    logged[term].append(kl.detach())
                if o.lambda_lock_forget > 0:
                    rows = draw(len(f_ex), o.lock_batch)
                    cur, labels = forward(f_ex, rows)
                    logp = torch.log_softmax(_first_answer_logits(cur, labels), -1)
                    target = prior[rows]
                    kl = torch.sum(target * (torch.log(target.clamp_min(1e-12)) - logp), -1).mean()
                    (o.lambda_lock_forget * kl / 3).backward()
                    logged["forget"].append(kl.detach())
                if shifted is not None:
                    unshift(shifted)
            optimizer.step()
            for p in lock_params:
                p.requires_grad_(False)
            history.append(logged)
    finally:
        load(vkd_state)
        put_back(w_params, w_saved)  # W itself, whatever an llm attacker's turn was doing
        for n, p in model.named_parameters():
            p.grad = None
            p.requires_grad_(grads.get(n, False))
        model.train(was_training)
    # each step's logged terms as they were summed: the retain KLs / 2, the forget KLs / 3
    history = [{"retain": sum((float(t) / 2 for t in h["retain"]), 0.0),
                "names": sum((float(t) / 2 for t in h["names"]), 0.0),
                "forget": sum((float(t) / 3 for t in h["forget"]), 0.0)} for h in history]
    tail = history[-max(1, len(history) // 10):]
    stats = {"steps": len(history), "seconds": time.perf_counter() - t0,
             "parameters": sum(p.numel() for p in lock_params), "name_questions": len(n_ex),
             "first": history[0] if history else None,
             "last_tenth": {k: sum(h[k] for h in tail) / len(tail) for k in ("retain", "names", "forget")}
             if history else None}
    return lock, stats


__all__ = ["LOCK_FOLDER", "LOCK_FORGET_TARGETS", "answer_targets", "VKDRobust", "VKDRobustOptions", "train_gated_lock"]
