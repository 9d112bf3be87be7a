"""The item, typed: :class:`Item` names every field an item may carry and what reads it; who an item
pictures (:func:`person_of`) and what kind of question it asks (:func:`question_kind`) are defined
here once, for every part of vkd_fast that groups items (VKD's ``retain_person`` target, the
identity probe, the relearning attack's splits, the answer-collapse share, the simulated attack).
Items stay plain dicts -- what users pass, what the loaders return -- and these are their accessors.

An item is a dict with an ``"image"``; its person is the value of the first of :data:`PERSON_KEYS`
it carries (not None): ``identity`` (the toy world, data specs), ``name`` (CLEAR) or ``id``
(MLLMU-Bench). An item with none of them has no person -- a method that groups by person refuses
such data (:func:`require_persons`) instead of guessing; :func:`person_per_image` counts each image as
a person of its own, explicitly. Light: no import beyond the standard library at module level.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Hashable
from typing import Any, TypedDict


class Item(TypedDict, total=False):
    """One item (a dict): only ``image`` is needed by VKD; the rest as the reader needs.

    * ``image``: a PIL image (None / absent: a text-only question, evaluation only);
    * ``question`` / ``answer``: the question about the image and its answer (output-level methods,
      :func:`vkd_fast.utils.text.encode_prompt`, the evaluation's free-form sets);
    * ``options``: multiple-choice options, a list or a ``{"A": text, ...}`` mapping, ``answer`` then
      being the correct option's text or key (the likelihood protocol);
    * ``identity`` / ``name`` / ``id``: the person pictured (:data:`PERSON_KEYS`, :func:`person_of`);
    * ``attribute``: what the question asks about (the toy world: job, city, ...; :func:`question_kind`);
    * ``quirks``: what a loader normalised in the row (MLLMU-Bench), for protocols that refuse such rows;
    * other keys are kept and ignored.
    """

    image: Any
    question: str
    answer: str
    options: list[str] | dict[str, str]
    identity: Hashable
    name: Hashable
    id: Hashable
    attribute: str
    quirks: list[str]


def question_kind(item: dict) -> Hashable:
    """What an item's question asks: its ``attribute`` when it has one (the toy world), else the
    question text itself (items of one kind share it)."""
    return item.get("attribute", item["question"])

#: the keys that name an item's person, first present (not None) wins: ``identity`` (the toy world,
#: folders with one subfolder per person, ``.jsonl`` specs), ``name`` (CLEAR), ``id`` (MLLMU-Bench)
PERSON_KEYS = ("identity", "name", "id")

#: how to give items a person; the end of :func:`require_persons`' message
HOW_TO_GIVE_PERSONS = ("give each item an 'identity' (a .jsonl's \"identity\" key, or a folder with one subfolder per "
                       "person: FOLDER/<person>/<image>), or count each image as its own person explicitly: "
                       "--person-per-image on the command line, vkd_fast.data.person_per_image(items) in Python")


def person_key(item: dict) -> tuple[str, Hashable] | None:
    """``(key, value)`` of the first of :data:`PERSON_KEYS` the item carries (value not None), or None:
    :func:`person_of` with the key that named it. VKD's ``retain_person`` tells people apart by it (so
    an ``identity`` 3 and an ``id`` 3 are different people there); the identity probe and the
    relearning split compare :func:`person_of`'s values."""
    for key in PERSON_KEYS:
        value = item.get(key)
        if value is not None:
            return key, value
    return None


def person_of(item: dict) -> Hashable | None:
    """The person an item pictures: the value of its first :data:`PERSON_KEYS` entry that is not
    None (``identity``, else ``name``, else ``id``), or None when it has none."""
    found = person_key(item)
    return None if found is None else found[1]


def _unhashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return True
    return False


def require_persons(name: str, items: list[dict], why: str, alternative: str = "") -> None:
    """Raise a one-line ``ValueError`` unless every item of ``items`` (the ``name`` side: "forget",
    "retain", ...) has a person (:func:`person_of`) that can be compared (hashable). ``why``: what
    needs them, the start of the message (e.g. "vkd's forget_target='retain_person' pulls each forget
    person to retain people's images"); ``alternative``: a way around them, the message's end."""
    missing = [i for i, it in enumerate(items) if person_of(it) is None]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise ValueError(f"{why}, but {len(missing)} of the {len(items)} {name} items have no person (no "
                         f"{' / '.join(PERSON_KEYS)}: items {shown}); {HOW_TO_GIVE_PERSONS}"
                         + (f"; {alternative}" if alternative else ""))
    bad = [(i, type(person_of(it)).__name__) for i, it in enumerate(items) if _unhashable(person_of(it))]
    if bad:
        raise ValueError(f"{why}, but {name} item {bad[0][0]}'s person is a {bad[0][1]}; a person must be a string "
                         "or a number")


def _image_key(item: dict) -> str:
    """A stable key of the item's image: its ``path`` (data specs' folders), else the image itself when
    it is a local path, else a digest of its pixels (the same picture gives the same key in every run)."""
    if isinstance(item.get("path"), (str, os.PathLike)):
        return os.fspath(item["path"])
    image = item.get("image")
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    digest = hashlib.sha1()
    if hasattr(image, "tobytes") and hasattr(image, "size") and hasattr(image, "mode"):  # a PIL image
        digest.update(f"{image.mode} {image.size}".encode())
        digest.update(image.tobytes())
    elif hasattr(image, "detach"):  # a torch tensor
        t = image.detach().cpu().contiguous()
        digest.update(f"{t.dtype} {tuple(t.shape)}".encode())
        digest.update((t.float() if t.is_floating_point() else t).numpy().tobytes())
    elif hasattr(image, "tobytes") and hasattr(image, "shape"):  # a numpy array
        digest.update(f"{image.dtype} {tuple(image.shape)}".encode())
        digest.update(image.tobytes())
    else:
        raise ValueError(f"person_per_image: an item's image is a {type(image).__name__}, which gives no per-image "
                         "key; pass PIL images, arrays or local paths, or give the item an 'identity'")
    return "image:" + digest.hexdigest()[:16]


def person_per_image(items) -> list[dict]:
    """Items with every image counted as a person of its own, explicitly: new dicts, those with a
    person (:func:`person_of`) unchanged, the others with ``"identity"`` set to a stable per-image key
    (the item's ``path``, else the image's local path, else ``"image:<digest of its pixels>"``). Items
    that share an image (several questions about one picture) share the person. Use it for data that
    names no people when a method groups images by person (VKD's default ``retain_person`` target)."""
    out = []
    for it in items:
        if not isinstance(it, dict):
            raise TypeError(f"person_per_image: items must be dicts, got {type(it).__name__}")
        out.append(dict(it) if person_of(it) is not None else {**it, "identity": _image_key(it)})
    return out
