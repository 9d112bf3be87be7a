"""Fixture parquet files in the published MLLMU-Bench and CLEAR schemas (image structs, structs / lists
of structs, JSON strings), written by the tests."""

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

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


CLEAR_T = pa.schema([("image", IMAGE_T), ("caption", pa.string()), ("name", pa.string())])


TOFU_T = pa.schema([("image", IMAGE_T), ("caption", pa.string()), ("name", pa.string()), ("question", pa.string()),
                    ("answer", pa.string())])


PERTURBED_T = pa.schema([("image", IMAGE_T), ("caption", pa.string()), ("name", pa.string()),
                         ("perturbed_names", pa.list_(pa.string())), ("perturbed_captions", pa.list_(pa.string()))])


CLEAR_PERTURBED_EVAL_T = pa.schema([("image", IMAGE_T), ("caption", pa.string()), ("name", pa.string()),
                                    ("paraphrased_caption", pa.string()), ("perturbed_captions", pa.list_(pa.string())),
                                    ("perturbed_names", pa.list_(pa.string()))])


REAL_FACES_T = pa.schema([("image", IMAGE_T), ("answer", pa.string()), ("options", pa.list_(pa.string()))])


REAL_WORLD_T = pa.schema([("image", IMAGE_T), ("question", pa.string()), ("answer", pa.string()),
                          ("options", pa.list_(pa.string()))])


def clear_person(rgb, k):
    """A row of a CLEAR ``*_perturbed`` configuration (person ``k``)."""
    return {"image": img_cell(rgb), "caption": f"Person {k} wears a red coat.", "name": f"Name {k}",
            "paraphrased_caption": f"A red coat on person {k}.",
            "perturbed_captions": [f"Person {k} wears a blue hat.", f"Person {k} rides a bike."],
            "perturbed_names": [f"Other {k}", f"Wrong {k}"]}


def write_clear_benchmark(root, forget_rgbs, retain_rgbs):
    """A local CLEAR copy: forget10_perturbed/, retain_perturbed/, real_faces/, real_world/."""
    write(root / "forget10_perturbed" / "train-00000.parquet",
          [clear_person(c, k) for k, c in enumerate(forget_rgbs)], CLEAR_PERTURBED_EVAL_T)
    write(root / "retain_perturbed" / "train-00000.parquet",
          [clear_person(c, 10 + k) for k, c in enumerate(retain_rgbs)], CLEAR_PERTURBED_EVAL_T)
    write(root / "real_faces" / "train-00000.parquet",
          [{"image": img_cell(RED), "answer": "Ada Byron", "options": ["Ada Byron", "Alan Turing"]},
           {"image": img_cell(BLUE), "answer": "Alan Turing", "options": ["Grace Hopper", "Alan Turing"]}], REAL_FACES_T)
    write(root / "real_world" / "train-00000.parquet",
          [{"image": img_cell(GREEN), "question": "What colour is the field?", "answer": "Green",
            "options": ["Red", "Blue"]}], REAL_WORLD_T)
    return root
