"""Who an item pictures (vkd_fast.utils.items): the one definition of an item's person, the explicit
one-person-per-image helper, the refusal message, and the persons the data specs give (folders with
one subfolder per person, flat folders, .jsonl rows)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from vkd_fast.cli.specs import load_items
from vkd_fast.data import PERSON_KEYS, person_of, person_per_image, require_persons
from vkd_fast.utils.items import person_key


def _png(path, rgb=(10, 20, 30), size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


def test_person_keys_in_order_first_present_wins():
    assert PERSON_KEYS == ("identity", "name", "id")  # toy world, CLEAR, MLLMU-Bench
    assert person_of({"identity": 3, "name": "Ada", "id": "row7"}) == 3
    assert person_of({"name": "Ada", "id": "row7"}) == "Ada"
    assert person_of({"id": "row7"}) == "row7"
    assert person_of({"identity": None, "name": None, "id": "row7"}) == "row7"  # None is no person
    assert person_of({"identity": 0}) == 0  # a falsy person is a person
    assert person_of({"image": "x.png", "question": "q"}) is None
    # the key is part of who it is: identity 3 and id 3 are different people
    assert person_key({"identity": 3}) == ("identity", 3) != person_key({"id": 3})
    assert person_key({}) is None


def test_person_per_image_keeps_persons_and_keys_the_others_by_image(tmp_path):
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    items = [{"image": red, "identity": "ada"},  # has a person: kept
             {"image": red, "question": "q1"}, {"image": red.copy(), "question": "q2"},  # same pixels: one person
             {"image": Image.new("RGB", (4, 4), (0, 0, 255))},
             {"image": red, "path": str(tmp_path / "a.png")},  # a data spec's path
             {"image": str(tmp_path / "b.png")},  # a local path
             {"image": np.zeros((4, 4, 3), np.uint8)}, {"image": torch.zeros(3, 4, 4)}]
    out = person_per_image(items)
    assert out is not items and all(a is not b for a, b in zip(out, items))
    assert [set(it) for it in items][1] == {"image", "question"}  # the input is not changed
    people = [person_of(it) for it in out]
    assert people[0] == "ada"
    assert people[1] == people[2] != people[3] and people[1].startswith("image:")
    assert people[4] == str(tmp_path / "a.png") and people[5] == str(tmp_path / "b.png")
    assert people[6] != people[7] and len(set(people[1:])) == 6
    assert [person_of(it) for it in person_per_image(items)] == people  # stable
    assert person_per_image(out) == out  # nothing left to give
    with pytest.raises(ValueError, match="gives no per-image key"):
        person_per_image([{"image": object()}])
    with pytest.raises(TypeError, match="items must be dicts"):
        person_per_image(["x.png"])


def test_require_persons_one_line_message_says_how():
    require_persons("forget", [{"identity": 1}, {"name": "a"}, {"id": 0}], "x needs people")
    with pytest.raises(ValueError) as err:
        require_persons("retain", [{"identity": 1}] + [{"image": None}] * 7, "x needs people", "or use y")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("x needs people, but 7 of the 8 retain items have no person (no identity / name / id: "
                          "items 1, 2, 3, 4, 5, ...)")
    for how in ("'identity'", "FOLDER/<person>/<image>", "--person-per-image", "vkd_fast.data.person_per_image(items)"):
        assert how in msg
    assert msg.endswith("; or use y")
    with pytest.raises(ValueError, match="retain item 0's person is a list; a person must be a string or a number"):
        require_persons("retain", [{"identity": ["a"]}], "x needs people")


def test_folder_with_one_subfolder_per_person(tmp_path):
    root = tmp_path / "people"
    for person, names in (("bob", ("2.png", "1.jpg")), ("ada", ("x.png",))):
        for name in names:
            _png(root / person / name)
    (root / "bob" / "notes.txt").write_text("not an image")
    _png(root / "bob" / ".hidden.png")
    (root / ".cache").mkdir()  # hidden folders are not people
    items = load_items(str(root))
    assert [(it["identity"], it["path"]) for it in items] == [
        ("ada", str(root / "ada" / "x.png")), ("bob", str(root / "bob" / "1.jpg")), ("bob", str(root / "bob" / "2.png"))]
    assert all(set(it) == {"image", "path", "identity"} and it["image"].mode == "RGB" for it in items)
    # person_per_image leaves the folders' persons as they are
    assert load_items(str(root), person_per_image=True) == items


def test_flat_folder_names_no_person_unless_asked(tmp_path):
    root = tmp_path / "flat"
    for name in ("b.png", "a.png"):
        _png(root / name)
    (root / "empty_subfolder").mkdir()  # a subfolder without images does not make it a folder of people
    items = load_items(str(root))
    assert [it["path"] for it in items] == [str(root / "a.png"), str(root / "b.png")]
    assert all(set(it) == {"image", "path"} and person_of(it) is None for it in items)
    for asked in (load_items(str(root), person_per_image=True),
                  load_items(str(root), SimpleNamespace(person_per_image=True))):  # the CLI's --person-per-image
        assert [it["identity"] for it in asked] == [str(root / "a.png"), str(root / "b.png")]
    assert person_of(load_items(str(root), SimpleNamespace(person_per_image=False))[0]) is None


def test_folder_mixing_images_and_person_folders_is_refused(tmp_path):
    root = tmp_path / "mixed"
    _png(root / "loose.png")
    _png(root / "ada" / "1.png")
    with pytest.raises(ValueError, match=r"both images \(loose.png, ...\) and person subfolders with images \(ada/"):
        load_items(str(root))
    people = tmp_path / "people"
    _png(people / "ada" / "1.png")
    (people / "bob" / "2020").mkdir(parents=True)
    _png(people / "bob" / "2020" / "1.png")  # one level only: bob's own folder holds no image
    with pytest.raises(ValueError, match="the person folder 'bob' holds no image files"):
        load_items(str(people))
    (tmp_path / "none" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"holds no image files .* one subfolder per person"):
        load_items(str(tmp_path / "none"))


def test_jsonl_gives_persons_by_the_same_definition(tmp_path):
    _png(tmp_path / "imgs" / "a.png")
    _png(tmp_path / "imgs" / "b.png", (200, 0, 0))
    rows = [{"image": "imgs/a.png", "question": "q", "answer": "x", "identity": "ada"},
            {"image": "imgs/a.png", "name": "Ada Byron"}, {"image": "imgs/b.png", "id": 7},
            {"image": "imgs/b.png", "question": "q1"}, {"image": "imgs/b.png", "question": "q2"}]
    spec = tmp_path / "data.jsonl"
    spec.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = load_items(str(spec))
    assert [person_of(it) for it in items] == ["ada", "Ada Byron", 7, None, None]
    assert items[0]["question"] == "q" and isinstance(items[0]["image"], Image.Image)
    per = load_items(str(spec), person_per_image=True)
    assert [person_of(it) for it in per][:3] == ["ada", "Ada Byron", 7]
    assert per[3]["identity"] == per[4]["identity"] == str(tmp_path / "imgs/b.png")  # rows of one image: one person
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "imgs/a.png", "identity": {"first": "Ada"}}) + "\n")
    with pytest.raises(ValueError, match=r"line 1: the person \('identity'\) must be a string or a number, got dict"):
        load_items(str(tmp_path / "bad.jsonl"))
