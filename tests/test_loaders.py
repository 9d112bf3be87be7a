"""Local-file loaders of MLLMU-Bench and CLEAR: fixture parquet files in the published schemas
(image structs, structs / lists of structs, JSON strings), the item formats, and the errors."""

import io
import json
import random
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vkd_fast.data._files import DataFormatError
from vkd_fast.data.clear import CAPTION_PROMPT, NAME_PROMPT, load_clear, load_clear_eval, load_clear_train
from vkd_fast.data.mllmu import MLLMU_SPLITS, load_mllmu_eval, load_mllmu_train, mllmu_split_path

RED, GREEN, BLUE, YELLOW, CYAN, MAGENTA = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)


def png(rgb) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), rgb).save(buf, format="PNG")
    return buf.getvalue()


def pixel(img):
    assert img.mode == "RGB"
    return img.getpixel((1, 1))


def img_cell(rgb):
    return {"bytes": png(rgb), "path": None}


IMAGE_T = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
OPTIONS_T = pa.struct([(k, pa.string()) for k in "ABCD"])
MC_T = pa.struct([("Question", pa.string()), ("Options", OPTIONS_T), ("Correct_Answer", pa.string())])
CLASSIFY_T = pa.struct([("Image_Textual_Questions", pa.list_(MC_T)), ("Pure_Text_Questions", pa.list_(MC_T))])
TASK_T = pa.list_(pa.struct([("Type", pa.string()), ("Question", pa.string()), ("Ground_Truth", pa.string())]))


def eval_schema(images=False, as_json=False):
    nested = [pa.string()] * 3 if as_json else [CLASSIFY_T, TASK_T, TASK_T]
    return pa.schema([("ID", pa.string()), ("images", pa.list_(IMAGE_T)) if images else ("image", IMAGE_T),
                      ("biography", pa.string()), ("Classification_Task", nested[0]), ("Generation_Task", nested[1]),
                      ("Mask_Task", nested[2])])


def opts(prefix):
    return {k: f"{prefix}-{k}" for k in "ABCD"}


def person(pid, rgb=None, images=None, as_json=False, image_answer="B"):
    """One MLLMU-Bench evaluation row: 2 image MC questions, 1 text MC, 2 generation, 2 cloze."""
    classify = {
        "Image_Textual_Questions": [
            {"Question": f"{pid}: where was this person born?", "Options": opts(f"{pid}born"), "Correct_Answer": image_answer},
            {"Question": f"{pid}: what is their job?", "Options": opts(f"{pid}job"), "Correct_Answer": "D"},
        ],
        "Pure_Text_Questions": [
            {"Question": f"{pid}: what is the hobby of Ann?", "Options": opts(f"{pid}hobby"), "Correct_Answer": "A"},
        ],
    }
    generation = [{"Type": "Image_Textual", "Question": f"{pid}: who is this?", "Ground_Truth": f"{pid} is Ann."},
                  {"Type": "Pure_Text", "Question": f"{pid}: where does Ann live?", "Ground_Truth": "In Oslo."}]
    mask = [{"Type": "Image_Textual", "Question": f"{pid}: this person works as a __.", "Ground_Truth": "baker"},
            {"Type": "Pure_Text", "Question": f"{pid}: Ann was born in __.", "Ground_Truth": "1970"}]
    row = {"ID": pid, "biography": f"bio of {pid}"}
    if images is not None:
        row["images"] = [img_cell(c) for c in images]
    else:
        row["image"] = img_cell(rgb)
    if as_json:
        classify, generation, mask = json.dumps(classify), json.dumps(generation), json.dumps(mask)
    row.update(Classification_Task=classify, Generation_Task=generation, Mask_Task=mask)
    return row


def write(path, rows, schema=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def write_metadata(path, rows):
    schema = pa.schema([("ID", pa.string()), ("image", IMAGE_T), ("metadata", pa.string())])
    return write(path, rows, schema)


def qa_json(*pairs):
    return json.dumps([{"Question": q, "Answer": a} for q, a in pairs])


@pytest.fixture
def mllmu_root(tmp_path):
    root = tmp_path / "MLLMU-Bench"
    # written in reverse order: reading must follow the file names, not the creation order
    write(root / "forget_5" / "train-00001-of-00002.parquet", [person("p2", GREEN)], eval_schema())
    write(root / "forget_5" / "train-00000-of-00002.parquet", [person("p0", RED), person("p1", BLUE)], eval_schema())
    write(root / "Test_Set" / "train-00000-of-00001.parquet", [person("t0", images=[YELLOW, CYAN, MAGENTA])],
          eval_schema(images=True))
    write_metadata(root / "ft_Data" / "train-00000-of-00001.parquet", [
        {"ID": "f0", "image": img_cell(RED), "metadata": qa_json(("Who is this?", "Ann."), ("Her job?", "Baker."))},
        {"ID": "f1", "image": img_cell(BLUE), "metadata": qa_json(("Who?", "Bob."), ("Born?", "1970."), ("Pet?", "A cat."))},
    ])
    return root


# ------------------------------------------------------------------------------------------ MLLMU-Bench


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
    assert ev["vqa"] == [] and ev["qa"] == [{"question": "Q?", "options": {"A": "yes", "B": "no"}, "answer": "B",
                                             "image": None, "id": "p0"}]
    cloze = ev["cloze"]
    assert [(c["question"], c["answer"], c["image"]) for c in cloze] == [("Ann likes __.", "tea", None),
                                                                         ("blank __ here", "x", None)]


# ------------------------------------------------------------------------------------------------ CLEAR

CLEAR_T = pa.schema([("image", IMAGE_T), ("caption", pa.string()), ("name", pa.string())])
TOFU_T = pa.schema([("image", IMAGE_T), ("caption", pa.string()), ("name", pa.string()), ("question", pa.string()),
                    ("answer", pa.string())])
PERTURBED_T = pa.schema([("image", IMAGE_T), ("caption", pa.string()), ("name", pa.string()),
                         ("perturbed_names", pa.list_(pa.string())), ("perturbed_captions", pa.list_(pa.string()))])


@pytest.fixture
def clear_root(tmp_path):
    root = tmp_path / "CLEAR"
    write(root / "forget05" / "train-00001.parquet", [
        {"image": img_cell(GREEN), "caption": "A man on a boat.", "name": "Carl Berg"}], CLEAR_T)
    write(root / "forget05" / "train-00000.parquet", [
        {"image": img_cell(RED), "caption": "A woman in a red coat.", "name": "Ann Lee"},
        {"image": img_cell(BLUE), "caption": "A woman at a desk.", "name": "Ann Lee"}], CLEAR_T)
    write(root / "forget05+tofu" / "train-00000.parquet", [
        {"image": img_cell(RED), "caption": "A woman in a red coat.", "name": "Ann Lee"},
        {"image": None, "caption": None, "name": None, "question": "Where was Ann Lee born?", "answer": "In Oslo."},
        {"image": img_cell(BLUE), "caption": "A woman at a desk.", "name": "Ann Lee"},
        {"image": None, "caption": None, "name": None, "question": "What does Ann Lee write?", "answer": "Poems."}],
        TOFU_T)
    names = ["Ann Lee", "Bo Chen", "Carl Berg", "Dana Ortiz", "Eve Stone", "Finn Moss"]
    write(root / "forget05_perturbed" / "train-00000.parquet", [
        {"image": img_cell(c), "caption": f"caption {i}", "name": names[i],
         "perturbed_names": [n for n in names if n != names[i]][:3] + [names[i].upper()],  # a case variant: dropped
         "perturbed_captions": [f"wrong {i}"]} for i, c in enumerate([RED, GREEN, BLUE, YELLOW])], PERTURBED_T)
    return root


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


# ------------------------------------------------------------------------------------------------ imports


def test_pyarrow_and_pillow_are_imported_lazily():
    code = ("import sys, vkd_fast, vkd_fast.data.mllmu, vkd_fast.data.clear; "
            "print(sorted(m for m in ('pyarrow', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_pyarrow_names_the_extra(monkeypatch, mllmu_root):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    for call in (lambda: load_mllmu_train(mllmu_root / "ft_Data"), lambda: load_clear(mllmu_root / "ft_Data")):
        with pytest.raises(ImportError, match=r"pip install 'vkd-fast\[hf\]'"):
            call()
