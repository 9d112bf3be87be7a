"""The recipe's inputs at tiny size (tests/cli/test_recipe.py and benchmarks/gpu_check.py): a tiny LLaVA
saved as a hub checkpoint folder and MLLMU-Bench-format folders. Needs pyarrow and pillow only (no
pytest: the GPU check imports it)."""

from __future__ import annotations

from pathlib import Path

import _tiny_models as T
from _parquet import BLUE, CYAN, GREEN, RED, YELLOW, eval_schema, img_cell, person, qa_json, write, write_metadata

RECIPE_SIZES = {"UNLEARN_ARGS": "steps=3 batch_size=2", "EVAL_ARGS": "--limit 2"}  # the only changes: sizes


def hub_folder(folder: Path) -> Path:
    """A tiny LLaVA saved as a hub checkpoint folder: config + weights, tokenizer files, the image
    processor's preprocessor_config.json."""
    from transformers import CLIPImageProcessor

    T.saved_tiny_llava(folder)
    cls = getattr(__import__("transformers"), "CLIPImageProcessorPil", CLIPImageProcessor)
    cls(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def mllmu_fixture(root: Path) -> tuple[Path, Path]:
    """MLLMU-Bench's evaluation copy and its baseline training split (rows with metadata)."""
    bench = root / "MLLMU-Bench"
    forget = [person("p0", RED), person("p1", GREEN)]
    retain = [person("r0", BLUE), person("r1", YELLOW)]
    write(bench / "forget_5" / "train-00000-of-00001.parquet", forget, eval_schema())
    write(bench / "retain_95" / "train-00000-of-00001.parquet", retain, eval_schema())
    write(bench / "Full_Set" / "train-00000-of-00001.parquet", forget + retain, eval_schema())
    write(bench / "Test_Set" / "train-00000-of-00001.parquet",
          [person("p0", images=[CYAN]), person("p1", images=[RED])], eval_schema(images=True))
    write(bench / "Retain_Set" / "train-00000-of-00001.parquet", [person("c0", YELLOW)], eval_schema())
    train = root / "baseline_train_split"
    for split, people in (("forget_5", (("p0", RED), ("p1", GREEN))), ("retain_95", (("r0", BLUE), ("r1", YELLOW)))):
        write_metadata(train / split / "train-00000-of-00001.parquet",
                       [{"ID": pid, "image": img_cell(rgb), "metadata": qa_json((f"What is the job of {pid}?", "baker"))}
                        for pid, rgb in people])
    return bench, train
