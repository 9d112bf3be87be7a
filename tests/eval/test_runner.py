"""The evaluation runner (vkd_fast.eval.runner) and the tasks' evaluation sets: MLLMU-Bench's sets and the answer-collapse share."""

from __future__ import annotations

import pytest
from _parquet import BLUE, CYAN, GREEN, RED, YELLOW, eval_schema, person, pixel, write

from vkd_fast.eval import collapse_share, mllmu_eval_sets


def test_mllmu_eval_sets(tmp_path):
    root = tmp_path / "MLLMU-Bench"
    write(root / "forget_5" / "a.parquet", [person("p0", RED), person("p1", BLUE)], eval_schema())
    write(root / "retain_95" / "a.parquet", [person("r0", GREEN)], eval_schema())
    # Test_Set holds every person's unseen images: only the forget people's count as forget VQA
    write(root / "Test_Set" / "a.parquet", [person("p1", images=[YELLOW, CYAN]), person("r0", images=[RED])],
          eval_schema(images=True))
    sets = mllmu_eval_sets(root)
    assert sorted(sets) == ["forget_qa", "forget_vqa", "forget_vqa_unseen", "retain_qa", "retain_vqa"]
    assert [it["id"] for it in sets["forget_vqa"]] == ["p0", "p0", "p1", "p1"]
    assert [(it["id"], pixel(it["image"])) for it in sets["forget_vqa_unseen"]] == [
        ("p1", YELLOW), ("p1", CYAN), ("p1", YELLOW), ("p1", CYAN)]
    assert [it["id"] for it in sets["retain_vqa"]] == ["r0", "r0"] and len(sets["retain_qa"]) == 1
    write(root / "Retain_Set" / "a.parquet", [person("w0", GREEN)], eval_schema())
    sets = mllmu_eval_sets(root, limit=1)
    assert [it["id"] for it in sets["real_world_vqa"]] == ["w0", "w0"] and len(sets["forget_qa"]) == 1
    with pytest.raises(ValueError, match="forget_7"):
        mllmu_eval_sets(root, forget_split="forget_7")


def test_collapse_share_weighs_each_attribute_by_its_size():
    items = [{"attribute": "job", "question": "q"}] * 4 + [{"attribute": "pet", "question": "q"}] * 2
    # job: 3 of 4 the same; pet: 1 of 2 -> (0.75 * 4 + 0.5 * 2) / 6
    assert collapse_share(items, ["a", "a", "a", "b", "x", "y"]) == pytest.approx(4 / 6)
