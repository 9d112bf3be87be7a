"""Fixture folders of MLLMU-Bench and CLEAR for the data tests."""

import pytest
from _parquet import (
    BLUE,
    CLEAR_T,
    CYAN,
    GREEN,
    MAGENTA,
    PERTURBED_T,
    RED,
    TOFU_T,
    YELLOW,
    eval_schema,
    img_cell,
    person,
    qa_json,
    write,
    write_metadata,
)


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
