"""The toy world (docs/method.md §6): a synthetic, seeded world of people with attributes and
portraits, small enough to run the whole unlearning pipeline offline in minutes on a CPU.

* ``n_identities`` people, each with a two-word name and four attributes (job, city, hobby, pet)
  drawn from vocabularies of eight values;
* a visual signature per person (background colour, shape, shape colour, pattern), unique in the
  world, rendered into ``image_size`` x ``image_size`` RGB portraits with nuisance variation (shift,
  scale, brightness, pixel noise): ``n_train_images`` per person for training and unlearning and
  ``n_unseen_images`` more that no training or unlearning run ever sees;
* per attribute one image question ("What is the job of the person in the image?") and one
  text-only question ("What is the job of <name>?"); the options are the attribute's eight values,
  so chance is 1/8;
* the forget split: ``forget_fraction`` of the people (at least 2), chosen by the seed.

Everything is a pure function of :class:`ToyWorldConfig`; building the same config twice gives
byte-identical images and the same questions.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..utils.options import check_types
from ..utils.validate import check_positive_int

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "job": ("doctor", "teacher", "pilot", "farmer", "baker", "lawyer", "painter", "sailor"),
    "city": ("paris", "tokyo", "lima", "oslo", "cairo", "delhi", "sydney", "boston"),
    "hobby": ("chess", "tennis", "piano", "hiking", "cooking", "fishing", "dancing", "reading"),
    "pet": ("dog", "cat", "parrot", "rabbit", "turtle", "hamster", "goldfish", "pony"),
}
IMAGE_QUESTION = "What is the {attribute} of the person in the image ?"
TEXT_QUESTION = "What is the {attribute} of {name} ?"

_PALETTE = ((230, 57, 70), (42, 157, 143), (38, 70, 83), (233, 196, 106), (244, 162, 97), (131, 56, 236),
            (58, 134, 255), (255, 190, 11), (6, 214, 160), (17, 138, 178))
_SHAPES = ("disc", "square", "triangle", "cross", "ring", "diamond")
_PATTERNS = ("plain", "stripes", "dots")
_SYLLABLES = ("ka", "lo", "mi", "ra", "ve", "su", "no", "ti", "da", "re", "zo", "ba", "ne", "fu", "li", "ga")


@dataclass(frozen=True)
class ToyWorldConfig:
    """What a toy world is made of; the seed determines everything else."""

    seed: int = 0
    n_identities: int = 24
    forget_fraction: float = 0.1
    image_size: int = 32
    n_train_images: int = 6
    n_unseen_images: int = 2
    noise_std: float = 10.0  # pixel noise, in 0..255 units
    max_shift: int = 3  # pixels, each direction
    brightness: float = 0.15  # +- relative

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("n_identities", "image_size", "n_train_images", "n_unseen_images"):
            check_positive_int(name, getattr(self, name))
        if self.n_identities < 4:
            raise ValueError(f"n_identities must be >= 4 (2 forget + 2 retain people), got {self.n_identities}")
        limit = len(_PALETTE) * len(_SHAPES) * (len(_PALETTE) - 1) * len(_PATTERNS)
        if self.n_identities > limit:
            raise ValueError(f"n_identities must be <= {limit} (distinct visual signatures), got {self.n_identities}")
        if self.n_unseen_images < 2:
            raise ValueError(f"n_unseen_images must be >= 2 (docs/method.md §6), got {self.n_unseen_images}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if not 0 < self.forget_fraction < 1:
            raise ValueError(f"forget_fraction must be in (0, 1), got {self.forget_fraction!r}")
        if self.n_forget > self.n_identities - 2:
            raise ValueError(f"forget_fraction={self.forget_fraction} forgets {self.n_forget} of "
                             f"{self.n_identities} people: at least 2 must be retained")
        for name in ("noise_std", "max_shift", "brightness"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    @property
    def n_forget(self) -> int:
        return max(2, math.ceil(self.forget_fraction * self.n_identities - 1e-9))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Identity:
    index: int
    name: str
    attributes: dict
    signature: dict


class ToyWorld:
    """A built toy world: identities, images and question items.

    Item formats: training items for :func:`vkd_fast.unlearn` are ``{"image", "question", "answer",
    "identity", "attribute"}``; multiple-choice items (``vkd_fast.eval.multiple_choice``) are
    ``{"question", "options", "answer", "image" (None for text-only), "identity", "attribute"}``.
    """

    def __init__(self, config: ToyWorldConfig | None = None):
        self.config = config or ToyWorldConfig()
        if not isinstance(self.config, ToyWorldConfig):
            raise TypeError(f"config must be a ToyWorldConfig, got {type(self.config).__name__}")
        rng = np.random.default_rng([self.config.seed, 0])
        k = self.config.n_identities
        names = self._names(rng, k)
        combos = [(bg, shape, fg, pat) for bg in range(len(_PALETTE)) for shape in range(len(_SHAPES))
                  for fg in range(len(_PALETTE)) if fg != bg for pat in range(len(_PATTERNS))]
        picks = rng.choice(len(combos), size=k, replace=False)
        self.identities: list[Identity] = []
        for i in range(k):
            attrs = {a: values[int(rng.integers(len(values)))] for a, values in ATTRIBUTES.items()}
            bg, shape, fg, pat = combos[int(picks[i])]
            sig = {"background": bg, "shape": _SHAPES[shape], "colour": fg, "pattern": _PATTERNS[pat]}
            self.identities.append(Identity(i, names[i], attrs, sig))
        order = rng.permutation(k)
        self.forget_ids = sorted(int(i) for i in order[: self.config.n_forget])
        self.retain_ids = sorted(int(i) for i in order[self.config.n_forget:])

    @staticmethod
    def _names(rng, k: int) -> list[str]:
        names: list[str] = []
        seen: set[str] = set()
        while len(names) < k:
            first = "".join(rng.choice(_SYLLABLES, size=2)).capitalize()
            last = "".join(rng.choice(_SYLLABLES, size=3)).capitalize()
            if first not in seen and last not in seen:  # every name word belongs to one person only
                seen.update((first, last))
                names.append(f"{first} {last}")
        return names

    # ------------------------------------------------------------------ images
    def render(self, identity: int, variant: int) -> np.ndarray:
        """Portrait ``variant`` of a person as uint8 [H, W, 3]. Variants ``0 .. n_train_images-1`` are
        the training images, the next ``n_unseen_images`` the unseen ones."""
        return self._render(self.identities[identity].signature, [self.config.seed, 1, identity, variant])

    def _render(self, sig: dict, key: list[int]) -> np.ndarray:
        cfg = self.config
        rng = np.random.default_rng(key)
        s = cfg.image_size
        bg = np.array(_PALETTE[sig["background"]], dtype=np.float64)
        fg = np.array(_PALETTE[sig["colour"]], dtype=np.float64)
        img = np.broadcast_to(bg, (s, s, 3)).copy()
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
        cy = s / 2 + rng.integers(-cfg.max_shift, cfg.max_shift + 1)
        cx = s / 2 + rng.integers(-cfg.max_shift, cfg.max_shift + 1)
        r = s * rng.uniform(0.28, 0.36)
        dy, dx = yy - cy, xx - cx
        shape = sig["shape"]
        if shape == "disc":
            inside = dy**2 + dx**2 <= r**2
        elif shape == "square":
            inside = (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
        elif shape == "triangle":
            inside = (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
        elif shape == "cross":
            inside = ((np.abs(dy) <= r * 0.3) & (np.abs(dx) <= r)) | ((np.abs(dx) <= r * 0.3) & (np.abs(dy) <= r))
        elif shape == "ring":
            d2 = dy**2 + dx**2
            inside = (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
        else:  # diamond
            inside = np.abs(dy) + np.abs(dx) <= r * 1.1
        pattern = sig["pattern"]
        if pattern == "stripes":
            inside &= ((yy.astype(int) // 2) % 2) == 0
        elif pattern == "dots":
            inside &= ~(((yy.astype(int) % 4) == 0) & ((xx.astype(int) % 4) == 0))
        img[inside] = fg
        img *= 1 + rng.uniform(-cfg.brightness, cfg.brightness)
        img += rng.normal(0, cfg.noise_std, size=img.shape)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def image(self, identity: int, variant: int):
        """Portrait as a PIL RGB image."""
        from PIL import Image

        return Image.fromarray(self.render(identity, variant), mode="RGB")

    # ------------------------------------------------------------------ strangers
    def strangers(self, n: int, seed: int = 0) -> list[Identity]:
        """``n`` people this world does not have -- visual signatures none of its people wears, facts
        drawn like theirs -- for audits that need images of people a model never saw (membership
        inference). Seeded: the same ``(n, seed)`` gives the same strangers."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        used = {(p.signature["background"], p.signature["shape"], p.signature["colour"], p.signature["pattern"])
                for p in self.identities}
        free = [(bg, shape, fg, pat) for bg in range(len(_PALETTE)) for shape in _SHAPES
                for fg in range(len(_PALETTE)) if fg != bg for pat in _PATTERNS if (bg, shape, fg, pat) not in used]
        if n > len(free):
            raise ValueError(f"n must be <= {len(free)} (the visual signatures this world leaves free), got {n}")
        rng = np.random.default_rng([self.config.seed, 2, seed])
        picks = rng.choice(len(free), size=n, replace=False)
        out = []
        for j in range(n):
            attrs = {a: values[int(rng.integers(len(values)))] for a, values in ATTRIBUTES.items()}
            bg, shape, fg, pat = free[int(picks[j])]
            out.append(Identity(-1 - j, f"stranger {j}", attrs,
                                {"background": bg, "shape": shape, "colour": fg, "pattern": pat}))
        return out

    def stranger_items(self, n: int, seed: int = 0, images: str = "train") -> list[dict]:
        """Image multiple-choice items of :meth:`strangers` (one per stranger x image x attribute, the
        format of :meth:`image_items`; ``identity`` is ``"stranger <j>"``), their portraits drawn like
        this world's (``images``: the training or the unseen variants' count and noise)."""
        from PIL import Image

        out = []
        for j, person in enumerate(self.strangers(n, seed)):
            for v in self._variants(images):
                image = Image.fromarray(self._render(person.signature, [self.config.seed, 2, seed, j, v]), mode="RGB")
                for a in ATTRIBUTES:
                    out.append({"question": IMAGE_QUESTION.format(attribute=a), "options": list(ATTRIBUTES[a]),
                                "answer": person.attributes[a], "image": image, "identity": person.name,
                                "attribute": a, "variant": v})
        return out

    def _variants(self, split: str) -> range:
        n = self.config.n_train_images
        if split == "train":
            return range(n)
        if split == "unseen":
            return range(n, n + self.config.n_unseen_images)
        raise ValueError(f"images must be 'train' or 'unseen', got {split!r}")

    # ------------------------------------------------------------------ items
    def _check_ids(self, ids) -> list[int]:
        ids = list(ids)
        bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < len(self.identities)]
        if bad:
            raise ValueError(f"identities must be ints in [0, {len(self.identities)}), got {bad}")
        return ids

    def image_items(self, ids, images: str = "train", attributes=None, variants=None) -> list[dict]:
        """Image multiple-choice items: one per person x image x attribute."""
        attributes = list(ATTRIBUTES) if attributes is None else list(attributes)
        out = []
        for i in self._check_ids(ids):
            for v in self._variants(images) if variants is None else variants:
                image = self.image(i, v)
                for a in attributes:
                    out.append({"question": IMAGE_QUESTION.format(attribute=a), "options": list(ATTRIBUTES[a]),
                                "answer": self.identities[i].attributes[a], "image": image, "identity": i,
                                "attribute": a, "variant": v})
        return out

    def text_items(self, ids, attributes=None) -> list[dict]:
        """Text-only multiple-choice items: one per person x attribute."""
        attributes = list(ATTRIBUTES) if attributes is None else list(attributes)
        return [{"question": TEXT_QUESTION.format(attribute=a, name=self.identities[i].name),
                 "options": list(ATTRIBUTES[a]), "answer": self.identities[i].attributes[a], "image": None,
                 "identity": i, "attribute": a}
                for i in self._check_ids(ids) for a in attributes]

    def unlearn_items(self, ids, attributes=None) -> list[dict]:
        """Training images with a question and answer each (the ``forget`` / ``retain`` arguments of
        :func:`vkd_fast.unlearn`); one item per training image, cycling through the attributes. Each
        also carries ``name_question``: the same question asked by the person's name (what
        ``vkd_robust``'s name term asks next to a retain person's image; other methods ignore it)."""
        attributes = list(ATTRIBUTES) if attributes is None else list(attributes)
        out = []
        for i in self._check_ids(ids):
            for v in self._variants("train"):
                a = attributes[v % len(attributes)]
                out.append({"image": self.image(i, v), "question": IMAGE_QUESTION.format(attribute=a),
                            "answer": self.identities[i].attributes[a], "identity": i, "attribute": a,
                            "name_question": TEXT_QUESTION.format(attribute=a, name=self.identities[i].name)})
        return out

    @cached_property
    def words(self) -> list[str]:
        """Every word the world's questions and answers use (the tokenizer's vocabulary)."""
        texts = [IMAGE_QUESTION.format(attribute=a) for a in ATTRIBUTES]
        texts += [TEXT_QUESTION.format(attribute=a, name=p.name) for p in self.identities for a in ATTRIBUTES]
        texts += [v for values in ATTRIBUTES.values() for v in values]
        return sorted({w for t in texts for w in t.split()})

    def describe(self) -> dict:
        """The world as JSON-able data (reports)."""
        return {"config": self.config.to_dict(), "forget": self.forget_ids, "retain": self.retain_ids,
                "identities": [{"name": p.name, **p.attributes, "signature": p.signature} for p in self.identities]}
