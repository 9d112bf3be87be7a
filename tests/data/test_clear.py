"""CLEAR loaders (vkd_fast.data.clear) on fixture parquet files: the item formats and the errors."""

import json
import random

import pyarrow as pa
import pytest
from _parquet import BLUE, CLEAR_T, CYAN, GREEN, IMAGE_T, RED, TOFU_T, YELLOW, img_cell, pixel, write

from vkd_fast.data._files import DataFormatError
from vkd_fast.data.clear import CAPTION_PROMPT, NAME_PROMPT, load_clear, load_clear_eval, load_clear_train


def test_clear_rows_and_train(clear_root):
    rows = load_clear(clear_root / "forget05")
    assert [(r["caption"], r["name"], pixel(r["image"])) for r in rows] == [
        ("A woman in a red coat.", "Ann Lee", RED), ("A woman at a desk.", "Ann Lee", BLUE),
        ("A man on a boat.", "Carl Berg", GREEN)]
    assert set(rows[0]) == {"image", "caption", "name", "id"} and rows[0]["id"] == "train-00000.parquet:0"
    items = load_clear_train(clear_root / "forget05")
    assert [(it["question"], it["answer"], pixel(it["image"]), it["name"]) for it in items] == [
        (CAPTION_PROMPT, "A woman in a red coat.", RED, "Ann Lee"), (CAPTION_PROMPT, "A woman at a desk.", BLUE, "Ann Lee"),
        (CAPTION_PROMPT, "A man on a boat.", GREEN, "Carl Berg")]
    assert CAPTION_PROMPT == "Describe the person in the image."
    assert [it["answer"] for it in load_clear_train(clear_root / "forget05", limit=2)] == ["A woman in a red coat.",
                                                                                          "A woman at a desk."]
    assert len(load_clear(clear_root / "forget05", limit=1)) == 1
    ev = load_clear_eval(clear_root / "forget05")
    assert [(c["answer"], pixel(c["image"])) for c in ev["captions"]] == [(it["answer"], pixel(it["image"])) for it in items]
    assert ev["qa"] == [] and ev["mc"] == []


def test_clear_tofu_null_image_rows(clear_root):
    path = clear_root / "forget05+tofu"
    rows = load_clear(path)
    assert [r["image"] is None for r in rows] == [False, True, False, True]
    assert (rows[1]["question"], rows[1]["answer"], rows[1]["caption"]) == ("Where was Ann Lee born?", "In Oslo.", None)
    train = load_clear_train(path)
    assert [(it["answer"], pixel(it["image"])) for it in train] == [("A woman in a red coat.", RED),
                                                                    ("A woman at a desk.", BLUE)]
    ev = load_clear_eval(path)
    assert [(q["question"], q["answer"], q["image"]) for q in ev["qa"]] == [
        ("Where was Ann Lee born?", "In Oslo.", None), ("What does Ann Lee write?", "Poems.", None)]
    assert len(ev["captions"]) == 2 and ev["mc"] == []


def test_clear_perturbed_mc(clear_root):
    path = clear_root / "forget05_perturbed"
    rows = load_clear(path)
    assert rows[0]["perturbed_names"] == ["Bo Chen", "Carl Berg", "Dana Ortiz", "ANN LEE"]
    assert rows[0]["perturbed_captions"] == ["wrong 0"]
    mc = load_clear_eval(path)["mc"]
    names = ["Ann Lee", "Bo Chen", "Carl Berg", "Dana Ortiz"]
    assert len(mc) == 4
    for i, (item, colour) in enumerate(zip(mc, [RED, GREEN, BLUE, YELLOW])):
        values = list(item["options"].values())
        assert item["question"] == NAME_PROMPT == "Who is the person in the image?"
        assert list(item["options"]) == ["A", "B", "C", "D"]  # true name + 3 distinct perturbed names
        assert sum(v.casefold() == names[i].casefold() for v in values) == 1
        assert item["options"][item["answer"]] == names[i]
        assert pixel(item["image"]) == colour
        expected = [names[i]] + [n for n in names if n != names[i]][:3]
        random.Random(i).shuffle(expected)  # seeded by the row index
        assert values == expected
    assert len({tuple(m["options"].values()) for m in mc}) == 4
    again = load_clear_eval(path)["mc"]
    assert [(m["options"], m["answer"]) for m in again] == [(m["options"], m["answer"]) for m in mc]
    assert [m["answer"] for m in load_clear_eval(path, limit=2)["mc"]] == [m["answer"] for m in mc[:2]]


def test_clear_real_faces_options(tmp_path):
    schema = pa.schema([("image", IMAGE_T), ("question", pa.string()), ("options", pa.list_(pa.string())),
                        ("answer", pa.string())])
    f = write(tmp_path / "real_faces.parquet", [
        {"image": img_cell(CYAN), "question": "Who is this?", "options": ["Ann", "Bob", "Cid"], "answer": "Bob"},
        {"image": img_cell(RED), "question": None, "options": ["Ann", "Bob"], "answer": "A"}], schema)
    mc = load_clear_eval(f)["mc"]
    assert [(m["question"], m["options"], m["answer"]) for m in mc] == [
        ("Who is this?", {"A": "Ann", "B": "Bob", "C": "Cid"}, "B"), (NAME_PROMPT, {"A": "Ann", "B": "Bob"}, "A")]
    assert pixel(mc[0]["image"]) == CYAN
    write(f, [{"image": img_cell(CYAN), "question": "Who?", "options": ["Ann", "Bob"], "answer": "Zed"}], schema)
    with pytest.raises(DataFormatError, match=r"row 0, field 'answer': 'Zed' is neither an option key"):
        load_clear_eval(f)


def test_clear_errors(tmp_path, clear_root):
    text_only = write(tmp_path / "tofu_only.parquet", [{"image": None, "caption": None, "name": None, "question": "Q?",
                                                        "answer": "A."}], TOFU_T)
    with pytest.raises(DataFormatError, match=r"tofu_only\.parquet: no image at all"):
        load_clear_train(text_only)
    assert load_clear(text_only)[0]["question"] == "Q?"

    f = write(tmp_path / "nocap" / "x.parquet", [{"image": img_cell(RED), "caption": "ok", "name": "A"},
                                                 {"image": img_cell(RED), "caption": None, "name": "A"}], CLEAR_T)
    with pytest.raises(DataFormatError) as e:
        load_clear_train(f)
    assert str(e.value).startswith(f"{f} row 1, field 'caption': an image row without a caption")

    f = write(tmp_path / "nocol" / "x.parquet", [{"image": img_cell(RED), "name": "A"}],
              pa.schema([("image", IMAGE_T), ("name", pa.string())]))
    with pytest.raises(DataFormatError, match=r"x\.parquet: missing column 'caption'.*columns present: 'image', 'name'"):
        load_clear_train(f)

    f = write(tmp_path / "badimg" / "x.parquet", [{"image": {"bytes": b"\x89PNG broken", "path": None}, "caption": "c",
                                                   "name": "A"}], CLEAR_T)
    for load in (load_clear, load_clear_train, load_clear_eval):
        with pytest.raises(DataFormatError, match=r"x\.parquet row 0, field 'image': the image could not be decoded"):
            load(f)

    schema = pa.schema([("image", IMAGE_T), ("caption", pa.string()), ("name", pa.string()),
                        ("perturbed_names", pa.string())])
    f = write(tmp_path / "pjson" / "x.parquet", [
        {"image": img_cell(RED), "caption": "c", "name": "Ann", "perturbed_names": json.dumps(["Bob", "Cid"])},
        {"image": img_cell(RED), "caption": "c", "name": "Ann", "perturbed_names": "[Bob"}], schema)
    with pytest.raises(DataFormatError, match=r"row 1, field 'perturbed_names': not valid JSON"):
        load_clear_eval(f)
    mc = load_clear_eval(f, limit=1)["mc"]
    assert sorted(mc[0]["options"].values()) == ["Ann", "Bob", "Cid"]

    with pytest.raises(FileNotFoundError, match="expected CLEAR parquet files"):
        load_clear(clear_root / "forget99")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"directory without \*\.parquet files"):
        load_clear_eval(tmp_path / "empty")
