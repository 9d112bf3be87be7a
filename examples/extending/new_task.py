"""A new benchmark task in one file (docs/extending.md): "person quiz", a folder of JSON-lines files
whose rows picture a person and ask a multiple-choice question about them.

    ROOT/forget.jsonl, ROOT/retain.jsonl   rows {"image": path relative to the file, "person": name,
                                           "question": ..., "options": [...], "answer": the right option}

Loaded as a plug-in, it is a task like the built-in ones:

    vkd-fast eval MODEL_DIR --plugin examples/extending/new_task.py --data person_quiz --root ROOT
    vkd-fast unlearn MODEL_DIR --plugin examples/extending/new_task.py \\
        --forget person_quiz:ROOT/forget.jsonl --retain person_quiz:ROOT/retain.jsonl --output-dir run
"""

from __future__ import annotations

import json
from pathlib import Path

from vkd_fast.tasks import Task, register_task


def read_rows(path, limit: int | None = None) -> list[dict]:
    """The rows of one file as items: the image opened, the person under ``identity`` (how vkd_fast
    tells people apart: vkd_fast.data.person_of)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (a person-quiz file of JSON lines)")
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = [k for k in ("image", "person", "question", "options", "answer") if k not in row]
        if missing:
            raise ValueError(f"{path}, line {n}: no {', '.join(missing)}")
        with Image.open(path.parent / row["image"]) as img:
            items.append({**row, "image": img.convert("RGB"), "identity": row["person"]})
        if limit and len(items) == limit:
            break
    return items


class PersonQuiz(Task):
    title = "person quiz"
    # protocols = ("likelihood",)           # the default: scored by option log-likelihood
    default_splits = ("forget", "retain")    # --forget-split / --retain-split when not given
    root_help = "a folder of forget.jsonl and retain.jsonl (rows: image, person, question, options, answer)"
    limit_help = "rows per file"
    train_spec_help = "person_quiz:FILE.jsonl (the rows of a person-quiz file)"

    def train_items(self, spec: str, args) -> list[dict]:
        """``--forget person_quiz:FILE.jsonl`` on ``vkd-fast unlearn``."""
        return read_rows(spec)

    def eval_sets(self, args) -> dict[str, list[dict]]:
        """The likelihood protocol's sets, named by metric (vkd_fast.eval.EVAL_SETS)."""
        root = Path(self.root(args))  # refuses a missing --root, naming the task
        forget, retain = self.splits(args)
        return {"forget_vqa": read_rows(root / f"{forget}.jsonl", args.limit),
                "retain_vqa": read_rows(root / f"{retain}.jsonl", args.limit)}


register_task("person_quiz", PersonQuiz)
