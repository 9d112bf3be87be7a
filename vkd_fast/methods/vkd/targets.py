"""Forget targets (docs/method.md §2): what a forget image's visual tokens are pulled towards.

A policy is a small class; VKD asks it, per step, which teacher rows to gather for the forget rows
(:meth:`ForgetTarget.keys`) or gives them a fixed table (``anchor``, placed on the device once),
and how per-row distances become the forget term. Registered policies:

* ``retain_mean`` -- A_t = mean over retain images of T(x)_t, per token position (an anchor);
* ``nearest_retain`` -- the teacher features of the retain image nearest in pixel space;
* ``random_retain`` -- a retain image drawn per forget image;
* ``retain_person`` (the default) -- the images of retain people standing in for each forget person.

The research targets ``misdirect`` and ``repel`` live in :mod:`vkd_fast.experimental` (method
``vkd_experimental``; docs/robustness.md). Add one with :func:`register_forget_target` (a subclass
of :class:`ForgetTarget`); a target that needs options of its own names their class in
:attr:`ForgetTarget.options_class`.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ...cache import ActivationCache
from ...utils.items import person_key, require_persons
from ...utils.registry import Registry


class ForgetTarget:
    """Base policy: the forget rows' targets are gathered teacher rows (:meth:`keys`), the forget
    term is the mean distance over forget rows."""

    name: ClassVar[str] = ""
    #: the targets are the forget image's own teacher features (so its pixels must not be augmented)
    uses_own_features: ClassVar[bool] = False
    #: True: rows are weighted 1/n and summed (the mean distance); False: per-row distances, see term()
    mean_rows: ClassVar[bool] = True
    #: whether :meth:`perturb` changes the forget rows
    perturbs: ClassVar[bool] = False
    #: the options class (a subclass of VKDOptions) whose fields the target reads, None: VKDOptions';
    #: ``VKDOptions`` refuses the target with options of another class (:meth:`check_options`)
    options_class: ClassVar[type | None] = None
    #: where the target is offered, for that error (e.g. "vkd_fast.experimental (method vkd_experimental)")
    offered_by: ClassVar[str] = ""

    @classmethod
    def check_options(cls, options) -> None:
        """Raise ``ValueError`` when ``options`` (a VKDOptions) lack the fields this target reads."""
        if cls.options_class is not None and not isinstance(options, cls.options_class):
            where = cls.offered_by or cls.options_class.__name__
            raise ValueError(f"forget_target {cls.name!r} lives in {where}: it reads options that "
                             f"{type(options).__name__} does not have; run that method")

    @classmethod
    def check(cls, forget: list[dict], retain: list[dict]) -> None:
        """Raise ``ValueError`` for items this policy cannot use; called by ``VKD.check``, before any
        work (the model untouched)."""

    def __init__(self, vkd):
        """``vkd``: the VKD method being set up (its ``cache``, ``f_keys``, ``r_keys``, ``inputs``,
        ``options`` and ``seed``)."""
        self.anchor: torch.Tensor | None = None

    def keys(self, forget_indices: list[int]) -> list[int]:
        """Cache keys whose rows are the targets of these forget images, in order (anchors: none)."""
        return []

    def anchor_rows(self, n_rows: int) -> torch.Tensor:
        """Anchor policies: the anchor rows an image's ``n_rows`` tokens are compared with."""
        return torch.arange(n_rows)

    def perturb(self, forget_rows: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The forget rows as the loss sees them (used when ``perturbs``)."""
        return forget_rows

    def term(self, row_losses: torch.Tensor) -> torch.Tensor:
        """The forget term from the forget rows' (weighted) losses."""
        return row_losses.sum()


class AnchorTarget(ForgetTarget):
    """A fixed ``[T, D]`` anchor table; token t of every forget image is compared with row t."""

    def __init__(self, vkd):
        super().__init__(vkd)
        self.anchor = self.make_anchor(vkd)
        too_long = [k for k in vkd.f_keys if vkd.cache.rows(k) > self.anchor.shape[0]]
        if too_long:
            raise ValueError(f"forget images {too_long[:5]} have more visual tokens than any retain image; "
                             f"{self.name} has no anchor for those positions")

    def make_anchor(self, vkd) -> torch.Tensor:
        raise NotImplementedError


class RetainMean(AnchorTarget):
    def make_anchor(self, vkd):
        return retain_mean_anchor(vkd.cache, vkd.r_keys)


class NearestRetain(ForgetTarget):
    def __init__(self, vkd):
        super().__init__(vkd)
        near = nearest_retain_keys([vkd.inputs[k]["pixel_values"] for k in vkd.f_keys],
                                   [vkd.inputs[k]["pixel_values"] for k in vkd.r_keys])
        self.target_keys = [vkd.r_keys[j] for j in near]

    def keys(self, forget_indices):
        return [self.target_keys[i] for i in forget_indices]


class RandomRetain(ForgetTarget):
    """Each forget image is pulled to the teacher features of a retain image drawn at random (seeded;
    among retain images of the same processed shape): a draw from the retain feature distribution,
    different for the images of one person, so no single identity takes the forget person's place."""

    def __init__(self, vkd):
        super().__init__(vkd)
        g = torch.Generator().manual_seed(vkd.seed)
        shape = lambda k: tuple(vkd.inputs[k]["pixel_values"].shape)  # noqa: E731
        by_shape: dict[tuple, list[int]] = {}
        for k in vkd.r_keys:
            by_shape.setdefault(shape(k), []).append(k)
        self.target_keys = []
        for i, k in enumerate(vkd.f_keys):
            pool = by_shape.get(shape(k))
            if not pool:
                raise ValueError(f"forget image {i}: no retain image has its processed shape {shape(k)}, which "
                                 "random_retain needs (use forget_target='retain_mean')")
            self.target_keys.append(pool[int(torch.randint(len(pool), (1,), generator=g))])

    def keys(self, forget_indices):
        return [self.target_keys[i] for i in forget_indices]


class RetainPerson(ForgetTarget):
    """Every forget person is given ``target_people`` retain people (drawn at random, seeded; different
    forget people get different retain people while there are enough), and each of the forget person's
    images is pulled to the teacher features of an image of one of them (the images take turns among
    the stand-ins and cycle through each one's images, same processed shape preferred). Consistent per
    person, so it carries over to unseen images, and spread over several people, so answers do not
    collapse.

    People are told apart by :func:`vkd_fast.data.person_of` (the items' ``identity``, ``name`` or
    ``id``), and both sides need them (:meth:`check` refuses an item without one, before any work):
    the forget side so that all images of one person go to the same stand-ins (one image per person
    would pull each image to a different person: ``random_retain``, silently), the retain side
    because a stand-in is a person -- its images take turns, and ``match_agreement`` compares the
    answers people give over several questions (one image per person would make each stand-in a
    single picture with a single answer). Data that names no one can count each image as its own
    person explicitly with :func:`vkd_fast.data.person_per_image` (CLI: ``--person-per-image``).

    ``match_agreement`` (the default): the stand-ins answer the forget people's questions, so the
    forget accuracy after unlearning is how often their answers happen to equal the forget people's.
    One draw of a few people leaves that to luck (on the toy worlds: far below chance on one world, far
    above on another -- both fingerprints; measured: docs/robustness.md). When forget and retain items
    share questions, up to :data:`MATCH_DRAWS` seeded draws are compared and the first whose
    stand-ins agree with the forget people (on the questions both answered) nearest to how often a
    retain person drawn at random agrees on average is kept: the answers then agree with the truth as
    often as those of a model that never knew the person. See :func:`agreement_draw`."""

    #: what needs the persons, the start of :meth:`check`'s message
    NEEDS = ("vkd's forget_target='retain_person' (the default) pulls the images of each forget person to "
             "the images of retain people, so it needs to know who every forget and retain image pictures")

    @classmethod
    def check(cls, forget, retain):
        other = "or choose a forget_target that needs no persons (e.g. 'retain_mean' or 'random_retain')"
        require_persons("forget", forget, cls.NEEDS, other)
        require_persons("retain", retain, cls.NEEDS, other)

    def __init__(self, vkd):
        super().__init__(vkd)
        forget, retain = vkd.items
        self.check(forget, retain)  # set up without VKD.check (a method driven by hand)
        f_people = [person_key(it) for it in forget]
        r_people = [person_key(it) for it in retain]
        g = torch.Generator().manual_seed(vkd.seed)
        candidates = sorted(set(r_people), key=repr)
        f_sorted = sorted(set(f_people), key=repr)
        per = vkd.options.target_people
        draws = MATCH_DRAWS if vkd.options.match_agreement else 1
        orders = [[candidates[j] for j in torch.randperm(len(candidates), generator=g).tolist()] for _ in range(draws)]
        assign = lambda order: {p: [order[(n * per + j) % len(order)] for j in range(per)]  # noqa: E731
                                for n, p in enumerate(f_sorted)}
        weights = {p: f_people.count(p) for p in f_sorted}
        f_facts, r_facts = _facts(forget, f_people), _facts(retain, r_people)
        pick = agreement_draw([assign(o) for o in orders], f_facts, r_facts, weights) if draws > 1 else 0
        order, assigned = orders[pick], assign(orders[pick])
        #: the stand-ins' expected and achieved agreement with the forget people (None: no shared questions)
        self.agreement = agreement_of(assigned, f_facts, r_facts, weights)
        images = {p: [vkd.r_keys[j] for j, q in enumerate(r_people) if q == p] for p in candidates}
        rows = vkd.cache.rows
        seen: dict = {}
        self.target_keys = []
        for i, k in enumerate(vkd.f_keys):
            n = seen[f_people[i]] = seen.get(f_people[i], -1) + 1
            people = assigned[f_people[i]]
            first = people[n % len(people)]  # the person's images take turns among its stand-ins
            # a stand-in needs an image with as many visual tokens (dynamic-resolution families): the
            # next person in the drawn order that has one stands in otherwise
            start = order.index(first)
            for person in order[start:] + order[:start]:
                same = [r for r in images[person] if rows(r) == rows(k)]
                if same:
                    break
            else:
                raise ValueError(f"forget image {i}: no retain image has its {rows(k)} visual tokens, which "
                                 "retain_person needs (use forget_target='retain_mean')")
            self.target_keys.append(same[(n // len(people)) % len(same)])

    def keys(self, forget_indices):
        return [self.target_keys[i] for i in forget_indices]


#: how many seeded stand-in draws ``retain_person`` compares when ``match_agreement`` is on
MATCH_DRAWS = 256


def _facts(items: list[dict], people: list) -> dict:
    """Each person's answers: ``{person: {question: answer}}`` from the items that have both (answers
    compared case- and space-insensitively)."""
    out: dict = {}
    for it, p in zip(items, people):
        q, a = it.get("question"), it.get("answer")
        if isinstance(q, str) and isinstance(a, str):
            out.setdefault(p, {})[" ".join(q.split())] = " ".join(a.lower().split())
    return out


def _agree(f: dict, r: dict) -> float | None:
    """Share of the questions both people answered on which they answer the same (None: none shared)."""
    shared = [q for q in f if q in r]
    return sum(f[q] == r[q] for q in shared) / len(shared) if shared else None


def _agreements(f_facts: dict, r_facts: dict, weights: dict) -> dict:
    """``{forget person: ({retain person: agreement}, expected)}`` for the forget people who share a
    question with some retain person: each retain person's :func:`_agree` (pairs sharing none left
    out) and their mean. Independent of any assignment, so computed once per set of draws."""
    out = {}
    for p in weights:
        row = {r: a for r, facts in r_facts.items() if (a := _agree(f_facts.get(p, {}), facts)) is not None}
        if row:
            out[p] = (row, sum(row.values()) / len(row))
    return out


def _agreement(assigned: dict, table: dict, weights: dict) -> dict | None:
    expected = achieved = total = 0.0
    for p, (row, base) in table.items():
        w = weights[p]
        mine = [row.get(s, base) for s in assigned[p]]  # a stand-in sharing no question counts as the mean
        expected += w * base
        achieved += w * sum(mine) / len(mine)
        total += w
    return {"expected": expected / total, "achieved": achieved / total} if total else None


def agreement_of(assigned: dict, f_facts: dict, r_facts: dict, weights: dict) -> dict | None:
    """``{"expected", "achieved"}``: how often a retain person drawn at random agrees with the forget
    people on the questions both answered (the mean over retain people, per forget person), and how
    often the assigned stand-ins do; both weighted by the forget people's image counts. None when no
    forget person shares a question with any retain person."""
    return _agreement(assigned, _agreements(f_facts, r_facts, weights), weights)


def standin_collapse(assigned: dict, r_facts: dict, weights: dict) -> float:
    """How concentrated the stand-ins' answers are: per question, the (image-weighted) share of the
    forget images whose stand-in gives the most frequent answer, averaged over questions -- the answer
    collapse the forget images would show if each answered exactly as its stand-in."""
    per_q: dict = {}
    for p, w in weights.items():
        for s in assigned[p]:
            for q, a in r_facts.get(s, {}).items():
                counts = per_q.setdefault(q, {})
                counts[a] = counts.get(a, 0.0) + w / len(assigned[p])
    shares = [max(c.values()) / sum(c.values()) for c in per_q.values()]
    return sum(shares) / len(shares) if shares else 0.0


def agreement_draw(assignments: list[dict], f_facts: dict, r_facts: dict, weights: dict) -> int:
    """Index of the assignment whose achieved agreement (:func:`agreement_of`) is nearest the expected
    one; among those equally near, the one whose stand-ins answer most differently from one another
    (lowest :func:`standin_collapse`: one stand-in answer shared by several forget people would make
    their answers collapse), then the first. 0 when the people share no questions."""
    table = _agreements(f_facts, r_facts, weights)
    if not table:
        return 0
    best, best_key = 0, None
    for i, assigned in enumerate(assignments):
        a = _agreement(assigned, table, weights)
        key = (round(abs(a["achieved"] - a["expected"]), 9), round(standin_collapse(assigned, r_facts, weights), 9))
        if best_key is None or key < best_key:
            best, best_key = i, key
    return best


def _accept_target(name: str, cls: type[ForgetTarget]) -> None:
    cls.name = name


_TARGETS: Registry[ForgetTarget] = Registry("forget_target", ForgetTarget, sort=False, on_register=_accept_target,
                                            public="vkd_fast.methods.vkd.ForgetTarget")


def register_forget_target(name: str, cls: type[ForgetTarget]) -> None:
    """Make ``cls`` available as ``VKDOptions(forget_target=name)``."""
    _TARGETS.register(name, cls)


def unregister_forget_target(name: str) -> None:
    """Take ``name`` out of the registry (nothing happens when it is not registered)."""
    _TARGETS.remove(name)


def forget_targets() -> list[str]:
    """Names of the registered forget targets (registration order)."""
    return _TARGETS.names()


def get_forget_target(name: str) -> type[ForgetTarget]:
    return _TARGETS.get(name)


for _name, _cls in (("retain_mean", RetainMean), ("nearest_retain", NearestRetain), ("random_retain", RandomRetain),
                    ("retain_person", RetainPerson)):
    register_forget_target(_name, _cls)

#: forget targets that moved out of VKD's product path, and where they are now (VKDOptions' error
#: names the place when one is asked for while that package is not imported)
MOVED_TARGETS = {"misdirect": "vkd_fast.experimental (method vkd_experimental)",
                 "repel": "vkd_fast.experimental (method vkd_experimental)"}


def entry_rows(cache: ActivationCache, keys: list[int], chunk: int = 16):
    """Each key's rows, gathered ``chunk`` keys at a time: set-up work over the whole retain set
    never holds more than one chunk of features besides its result."""
    for start in range(0, len(keys), chunk):
        packed, offsets = cache.get(keys[start: start + chunk])
        bounds = offsets.tolist()
        for a, b in zip(bounds, bounds[1:]):
            yield packed[a:b]


def retain_mean_anchor(cache: ActivationCache, retain_keys: list[int]) -> torch.Tensor:
    """A_t = mean over retain images of T(x)_t, per token position t: ``[max tokens, D]`` (fp32).
    With variable token counts a position averages the retain images that have it."""
    lengths = [cache.rows(k) for k in retain_keys]
    total = torch.zeros(max(lengths), cache.dim, dtype=torch.float64)
    count = torch.zeros(max(lengths), 1, dtype=torch.float64)
    for rows in entry_rows(cache, retain_keys):
        total[: rows.shape[0]] += rows.double()
        count[: rows.shape[0]] += 1
    return (total / count).float()


def nearest_retain_keys(forget_pixels: list[torch.Tensor], retain_pixels: list[torch.Tensor]) -> list[int]:
    """For each forget image, the index of the retain image nearest to it *in pixel space* (sum of
    squared differences of the processed pixels) among retain images of the same shape: the person a
    model that never saw the forget person would take them for by appearance alone. Pixel space, not
    the teacher's features: the teacher's feature space is arranged by what it knows about people, so
    its nearest neighbour is the retain person who shares the most attributes (on the toy world, most
    of them; measured: docs/robustness.md), which would hand the forgotten answers back."""
    by_shape: dict[tuple, list[int]] = {}
    for j, p in enumerate(retain_pixels):
        by_shape.setdefault(tuple(p.shape), []).append(j)
    stacks = {shape: torch.stack([retain_pixels[j].double().reshape(-1) for j in idx])
              for shape, idx in by_shape.items()}
    out = []
    for i, p in enumerate(forget_pixels):
        idx = by_shape.get(tuple(p.shape))
        if idx is None:
            raise ValueError(f"forget image {i}: no retain image has its processed shape {tuple(p.shape)}, which "
                             "nearest_retain needs (use forget_target='retain_mean')")
        d = (stacks[tuple(p.shape)] - p.double().reshape(1, -1)).pow(2).sum(1)
        out.append(idx[int(d.argmin())])
    return out
