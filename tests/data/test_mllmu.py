"""MLLMU-Bench loaders (vkd_fast.data.mllmu) on fixture parquet files: the item formats and the errors."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _parquet import (
    BLUE,
    CYAN,
    GREEN,
    IMAGE_T,
    MAGENTA,
    RED,
    YELLOW,
    eval_schema,
    img_cell,
    opts,
    person,
    pixel,
    png,
    qa_json,
    write,
    write_metadata,
)

from vkd_fast.data._files import DataFormatError
from vkd_fast.data.mllmu import MLLMU_SPLITS, load_mllmu_eval, load_mllmu_train, mllmu_split_path


def test_mllmu_eval_items(mllmu_root):
    ev = load_mllmu_eval(mllmu_root / "forget_5")
    assert set(ev) == {"vqa", "qa", "generation", "cloze"}
    assert [it["id"] for it in ev["vqa"]] == ["p0", "p0", "p1", "p1", "p2", "p2"]  # file-name order
    first = ev["vqa"][0]
    assert first["question"] == "p0: where was this person born?"
    assert first["options"] == {"A": "p0born-A", "B": "p0born-B", "C": "p0born-C", "D": "p0born-D"}
    assert first["answer"] == "B" and ev["vqa"][1]["answer"] == "D"
    assert [pixel(it["image"]) for it in ev["vqa"]] == [RED, RED, BLUE, BLUE, GREEN, GREEN]
    assert "image_index" not in first
    assert [it["question"] for it in ev["qa"]] == [f"p{i}: what is the hobby of Ann?" for i in range(3)]
    assert all(it["image"] is None and it["answer"] == "A" and it["options"]["C"].endswith("hobby-C") for it in ev["qa"])
    gen = ev["generation"]
    assert [(g["type"], g["question"], g["answer"]) for g in gen[:2]] == [
        ("Image_Textual", "p0: who is this?", "p0 is Ann."), ("Pure_Text", "p0: where does Ann live?", "In Oslo.")]
    assert pixel(gen[0]["image"]) == RED and gen[1]["image"] is None and gen[0]["id"] == "p0"
    cloze = ev["cloze"]
    assert [(c["question"], c["answer"]) for c in cloze[:2]] == [("p0: this person works as a __.", "baker"),
                                                                ("p0: Ann was born in __.", "1970")]
    assert pixel(cloze[0]["image"]) == RED and cloze[1]["image"] is None
    assert len(gen) == len(cloze) == 6


def test_mllmu_eval_single_file_and_limit(mllmu_root):
    one = load_mllmu_eval(mllmu_root / "forget_5" / "train-00001-of-00002.parquet")
    assert [it["id"] for it in one["vqa"]] == ["p2", "p2"] and pixel(one["vqa"][0]["image"]) == GREEN
    lim = load_mllmu_eval(mllmu_root / "forget_5", limit=1)  # rows (people)
    assert [it["id"] for it in lim["vqa"]] == ["p0", "p0"] and len(lim["qa"]) == 1
    assert [it["id"] for it in load_mllmu_eval(mllmu_root / "forget_5", limit=3)["qa"]] == ["p0", "p1", "p2"]
    assert load_mllmu_eval(mllmu_root / "forget_5", limit=0) == {"vqa": [], "qa": [], "generation": [], "cloze": []}
    with pytest.raises(ValueError, match="limit"):
        load_mllmu_eval(mllmu_root / "forget_5", limit=-1)


def test_mllmu_eval_json_string_columns(tmp_path, mllmu_root):
    f = write(tmp_path / "json" / "a.parquet", [person("p0", RED, as_json=True), person("p1", BLUE, as_json=True)],
              eval_schema(as_json=True))
    assert pq.read_schema(f).field("Classification_Task").type == pa.string()
    got = load_mllmu_eval(f)
    want = load_mllmu_eval(mllmu_root / "forget_5" / "train-00000-of-00002.parquet")

    def strip(ev):
        return {k: [{n: v for n, v in it.items() if n != "image"} for it in items] for k, items in ev.items()}

    assert strip(got) == strip(want) and len(got["vqa"]) == 4
    assert [pixel(it["image"]) for it in got["vqa"]] == [RED, RED, BLUE, BLUE]


def test_mllmu_test_set_one_item_per_image(mllmu_root):
    ev = load_mllmu_eval(mllmu_split_path(mllmu_root, "Test_Set"))
    assert len(ev["vqa"]) == 2 * 3  # 2 image questions x 3 images
    assert [(it["question"][:16], it["image_index"], pixel(it["image"])) for it in ev["vqa"][:3]] == [
        ("t0: where was th", 0, YELLOW), ("t0: where was th", 1, CYAN), ("t0: where was th", 2, MAGENTA)]
    assert all(it["answer"] == "B" for it in ev["vqa"][:3])
    assert len(ev["qa"]) == 1 and ev["qa"][0]["image"] is None
    image_gen = [g for g in ev["generation"] if g["type"] == "Image_Textual"]
    assert [g["image_index"] for g in image_gen] == [0, 1, 2]
    assert [g["image"] for g in ev["generation"] if g["type"] == "Pure_Text"] == [None]
    assert len(ev["cloze"]) == 3 + 1


def test_mllmu_train_items_and_limit(mllmu_root):
    items = load_mllmu_train(mllmu_split_path(mllmu_root, "ft_Data"))
    assert [(it["id"], it["question"], it["answer"]) for it in items] == [
        ("f0", "Who is this?", "Ann."), ("f0", "Her job?", "Baker."), ("f1", "Who?", "Bob."), ("f1", "Born?", "1970."),
        ("f1", "Pet?", "A cat.")]
    assert [pixel(it["image"]) for it in items] == [RED, RED, BLUE, BLUE, BLUE]
    assert set(items[0]) == {"image", "question", "answer", "id"}
    assert [it["answer"] for it in load_mllmu_train(mllmu_root / "ft_Data", limit=3)] == ["Ann.", "Baker.", "Bob."]
    assert load_mllmu_train(mllmu_root / "ft_Data", limit=0) == []


def test_mllmu_train_without_id_and_image_forms(tmp_path):
    """Ids fall back to file:row; image cells may be raw bytes or a path relative to the parquet file."""
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "g.png").write_bytes(png(GREEN))
    write(tmp_path / "a.parquet", [{"image": {"bytes": None, "path": "imgs/g.png"}, "metadata": qa_json(("Q", "A"))}],
          pa.schema([("image", IMAGE_T), ("metadata", pa.string())]))
    write(tmp_path / "b.parquet", [{"image": png(YELLOW), "metadata": qa_json(("Q2", "A2"))}],
          pa.schema([("image", pa.binary()), ("metadata", pa.string())]))
    items = load_mllmu_train(tmp_path)
    assert [(it["id"], pixel(it["image"])) for it in items] == [("a.parquet:0", GREEN), ("b.parquet:0", YELLOW)]


def test_mllmu_split_path(mllmu_root):
    assert mllmu_split_path(mllmu_root, "forget_5") == mllmu_root / "forget_5"
    assert mllmu_split_path(mllmu_root, "test_set") == mllmu_root / "Test_Set"
    with pytest.raises(ValueError, match="forget_7.*valid splits: forget_5, forget_10.*ft_Data"):
        mllmu_split_path(mllmu_root, "forget_7")
    with pytest.raises(FileNotFoundError, match="retain_95"):
        mllmu_split_path(mllmu_root, "retain_95")
    with pytest.raises(FileNotFoundError, match="MLLMU-Bench root"):
        mllmu_split_path(mllmu_root / "nope", "forget_5")
    assert len(MLLMU_SPLITS) == 10


def test_mllmu_train_from_eval_split_is_refused(mllmu_root):
    with pytest.raises(DataFormatError) as e:
        load_mllmu_train(mllmu_root / "forget_5")
    msg = str(e.value)
    assert str(mllmu_root / "forget_5" / "train-00000-of-00002.parquet") in msg
    assert "no 'metadata' column" in msg and "evaluation split" in msg and "ft_Data" in msg


def test_mllmu_errors(tmp_path):
    bad_q = person("p0", RED)
    bad_q["Classification_Task"]["Image_Textual_Questions"].append(
        {"Question": "third?", "Options": opts("x"), "Correct_Answer": "E"})
    f = write(tmp_path / "answer" / "x.parquet", [person("ok", RED), bad_q], eval_schema())
    with pytest.raises(DataFormatError) as e:
        load_mllmu_eval(f)
    assert str(e.value).startswith(f"{f} row 1, field 'Classification_Task.Image_Textual_Questions[2].Correct_Answer'")
    assert "'E' is not one of the Options keys ['A', 'B', 'C', 'D']" in str(e.value)

    f = write(tmp_path / "img" / "x.parquet", [person("ok", RED), dict(person("p1", RED), image={"bytes": b"not a png"})],
              eval_schema())
    with pytest.raises(DataFormatError, match=r"x\.parquet row 1, field 'image': the image could not be decoded \("
                                              r"UnidentifiedImageError") as e:
        load_mllmu_eval(f)
    assert str(f) in str(e.value)

    f = write_metadata(tmp_path / "meta" / "x.parquet", [
        {"ID": "a", "image": img_cell(RED), "metadata": qa_json(("Q", "A"))},
        {"ID": "b", "image": img_cell(RED), "metadata": "[{'Question': 'Q'"}])
    with pytest.raises(DataFormatError) as e:
        load_mllmu_train(f)
    assert str(e.value).startswith(f"{f} row 1, field 'metadata': not valid JSON (Expecting")

    f = write_metadata(tmp_path / "meta2" / "x.parquet",
                       [{"ID": "a", "image": img_cell(RED), "metadata": json.dumps([{"Question": "Q"}])}])
    with pytest.raises(DataFormatError, match=r"row 0, field 'metadata\[0\]\.Answer': expected a non-empty string"):
        load_mllmu_train(f)

    f = write(tmp_path / "cols" / "x.parquet", [{"ID": "a", "image": img_cell(RED), "biography": "b"}],
              pa.schema([("ID", pa.string()), ("image", IMAGE_T), ("biography", pa.string())]))
    with pytest.raises(DataFormatError) as e:
        load_mllmu_eval(f)
    assert str(e.value).startswith(f"{f}: missing column 'Classification_Task'")
    assert "columns present: 'ID', 'image', 'biography'" in str(e.value)
    with pytest.raises(DataFormatError, match="missing column 'metadata'.*columns present: 'ID', 'image'"):
        load_mllmu_train(f)

    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist \(expected MLLMU-Bench evaluation"):
        load_mllmu_eval(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("no data")
    with pytest.raises(FileNotFoundError, match=r"empty is a directory without \*\.parquet files"):
        load_mllmu_train(tmp_path / "empty")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataFormatError, match="junk.parquet: not a readable parquet file"):
        load_mllmu_eval(tmp_path / "junk.parquet")


def test_mllmu_cloze_tolerant_keys(tmp_path):
    row = person("p0", RED, as_json=True)
    row["Mask_Task"] = json.dumps([{"type": "Pure_Text", "masked_text": "Ann likes __.", "answer": "tea"},
                                   {"Type": "Pure_Text", "Question": "no blank here", "Ground_Truth": "x"}])
    f = write(tmp_path / "x.parquet", [row], eval_schema(as_json=True))
    with pytest.raises(DataFormatError, match=r"row 0, field 'Mask_Task\[1\]': no question text with a '__' blank"):
        load_mllmu_eval(f)
    row["Mask_Task"] = row["Mask_Task"].replace("no blank here", "blank __ here")
    row["Classification_Task"] = json.dumps({"image_textual_questions": [], "pure_text_questions": [
        {"question": "Q?", "options": ["yes", "no"], "correct_answer": "b"}]})
    write(f, [row], eval_schema(as_json=True))
    ev = load_mllmu_eval(f)
    lower = f"{f} row 0, field 'Classification_Task.Pure_Text_Questions[0].Correct_Answer': 'b' is lower-case"
    assert ev["vqa"] == [] and ev["qa"] == [{"question": "Q?", "options": {"A": "yes", "B": "no"}, "answer": "B",
                                             "image": None, "id": "p0", "index": 0, "row": 0,
                                             "quirks": [lower]}]  # read normalised; the benchmark protocol refuses it
    cloze = ev["cloze"]
    assert [c["index"] for c in cloze] == [0, 1]  # the position in Mask_Task (the benchmark's demonstration skip key)
    assert [(c["question"], c["answer"], c["image"]) for c in cloze] == [("Ann likes __.", "tea", None),
                                                                         ("blank __ here", "x", None)]
