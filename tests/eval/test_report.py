"""Reports (vkd_fast.eval.report): Markdown, strict JSON, PNG."""

from __future__ import annotations

import json
import math

from vkd_fast.eval import (
    markdown_table,
)


def test_reports_render(tmp_path):
    from vkd_fast.eval import plot, write_json, write_markdown

    rows = [{"method": "vanilla", "forget_vqa": 1.0, "retain_qa": 1.0},
            {"method": "vkd", "forget_vqa": 0.125, "retain_qa": 1.0, "recovery_llm": math.nan, "seconds": 3.25,
             "trainable": 12345}]
    table = markdown_table(rows)
    assert table.splitlines()[0] == "| method | forget VQA | retain QA | relearn llm | time s | trainable params |"
    assert "| vkd | 12.5 | 100.0 | – | 3.2 | 12,345 |" in table
    from vkd_fast.eval.report import WALL_CLOCK, text_table

    # the wall-clock column left out where a table must reproduce (the demo's)
    assert markdown_table(rows, exclude=WALL_CLOCK).splitlines()[0] == \
        "| method | forget VQA | retain QA | relearn llm | trainable params |"
    assert "time s" not in text_table(rows, exclude=WALL_CLOCK) and "time s" in text_table(rows)
    write_json(tmp_path / "r.json", {"rows": rows})
    assert json.loads((tmp_path / "r.json").read_text())["rows"][1]["recovery_llm"] is None  # strict JSON
    write_markdown(tmp_path / "r.md", rows, "T")
    plot(tmp_path / "r.png", rows, chance=0.125)
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md", "r.png"]
