"""docs/extending.md's worked example of a new benchmark task (examples/extending/new_task.py): one
file registers it, and the evaluation runner, the CLI's eval and unlearn commands use it through the
registry without knowing its name."""

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import _tiny_models as T
import pytest
from PIL import Image

from vkd_fast.eval import evaluate
from vkd_fast.tasks import TASKS, available_tasks, get_task
from vkd_fast.utils.plugins import load_plugin

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "extending" / "new_task.py"
COLOURS = {"ann": (200, 30, 30), "bob": (30, 200, 30), "cy": (30, 30, 200), "dee": (200, 200, 30)}


@pytest.fixture
def example():
    module = load_plugin(str(EXAMPLE))
    yield module
    TASKS.remove("person_quiz")


def quiz_folder(root: Path) -> Path:
    (root / "img").mkdir(parents=True)
    for split, people in (("forget", ("ann", "bob")), ("retain", ("cy", "dee"))):
        rows = []
        for p in people:
            for k in range(2):
                Image.new("RGB", (32, 32), tuple(c // (k + 1) for c in COLOURS[p])).save(root / "img" / f"{p}{k}.png")
                rows.append({"image": f"img/{p}{k}.png", "person": p, "question": "What is the job of this person?",
                             "options": ["baker", "pilot", "nurse"], "answer": "pilot" if p in ("ann", "cy") else "nurse"})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_the_task_registers_and_reads_its_folder(example, tmp_path):
    root = quiz_folder(tmp_path / "quiz")
    assert available_tasks()[-1] == "person_quiz" and available_tasks()[:3] == ["toy", "mllmu", "clear"]
    task = get_task("person_quiz")
    sets = task.eval_sets(Namespace(root=str(root), forget_split=None, retain_split=None, limit=None))
    assert {k: len(v) for k, v in sets.items()} == {"forget_vqa": 4, "retain_vqa": 4}
    assert [it["identity"] for it in sets["forget_vqa"]] == ["ann", "ann", "bob", "bob"]
    assert len(task.eval_sets(Namespace(root=str(root), forget_split="retain", retain_split=None, limit=1))
               ["forget_vqa"]) == 1
    with pytest.raises(ValueError, match="--data person_quiz needs --root"):
        task.eval_sets(Namespace(root=None, forget_split=None, retain_split=None, limit=None))
    assert [it["person"] for it in task.train_items(str(root / "retain.jsonl"), None)] == ["cy", "cy", "dee", "dee"]


@pytest.mark.slow
def test_the_cli_evaluates_and_unlearns_with_the_plugin_task(example, tmp_path):
    root = quiz_folder(tmp_path / "quiz")
    model_dir = T.saved_tiny_llava(tmp_path / "model")
    exe = str(Path(sys.executable).with_name("vkd-fast"))
    out = subprocess.run([exe, "eval", str(model_dir), "--plugin", str(EXAMPLE), "--data", "person_quiz", "--root",
                          str(root), "--output", str(tmp_path / "e.json")],
                         capture_output=True, text=True, env=T.cli_env(), timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "e.json").read_text())["metrics"]
    # the same figures as the runner called directly on the task's sets (independent of the CLI)
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype="float32")
    sets = get_task("person_quiz").eval_sets(Namespace(root=str(root), forget_split=None, retain_split=None,
                                                       limit=None))
    want = evaluate(model, AutoTokenizer.from_pretrained(model_dir), sets)
    assert metrics["n"] == {"forget_vqa": 4, "retain_vqa": 4}
    for key in ("forget_vqa", "retain_vqa", "collapse_share"):
        assert metrics[key] == pytest.approx(want[key]), key
    help_text = " ".join(subprocess.run([exe, "eval", "--plugin", str(EXAMPLE), "--help"], capture_output=True,
                                        text=True, env=T.cli_env(), timeout=300, check=False).stdout.split())
    assert "person_quiz (person quiz)" in help_text and "--data person_quiz: a folder of forget.jsonl" in help_text

    run = tmp_path / "run"
    out = subprocess.run([exe, "unlearn", str(model_dir), "--plugin", str(EXAMPLE), "--forget",
                          f"person_quiz:{root / 'forget.jsonl'}", "--retain", f"person_quiz:{root / 'retain.jsonl'}",
                          "--output-dir", str(run), "--save", "none", "steps=2", "batch_size=2"],
                         capture_output=True, text=True, env=T.cli_env(), timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    result = json.loads((run / "result.json").read_text())
    assert result["method"] == "vkd" and result["steps_run"] == 2
