"""The robustness study's variants file (vkd_fast/configs/robustness_study.yaml, read by
benchmarks/robustness_study.py): every variant builds, the research ones run vkd_experimental, and
the settings every non-default variant was measured with are written out."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import robustness_study as R  # noqa: E402

import vkd_fast as vf  # noqa: E402


def test_every_shipped_variant_builds_its_method_and_options():
    variants = R.load_variants()
    names = list(variants)
    assert names[0] == "v0" and variants["default"] == {}
    # after the default: the vkd_robust rows (VKD's default steps, then the lock; a row may change the seed alone)
    robust = names[names.index("default") + 1:]
    assert robust and all(variants[n]["method"] == "vkd_robust" and set(variants[n].get("config", {})) <= {"seed"}
                          for n in robust)
    research = {"lambda_meta", "shrink_perturb", "misdirect_scale", "repel_margin", "repel_noise", "perturb_scale"}
    for name, spec in variants.items():
        method = vf.methods.create_method(spec.get("method", "vkd"), spec.get("options", {}))
        vf.UnlearnConfig(**spec.get("config", {})).for_method(method)
        uses_research = bool(research & set(spec.get("options", {})))
        assert (spec.get("method") == "vkd_experimental") == uses_research, name
        if name != "default" and name not in robust:  # the settings of its time, written out
            assert spec["config"]["steps"] == (600 if name == "retain_person+shrink_perturb" else 300), name
            assert "forget_augment" in spec["options"], name


@pytest.mark.parametrize("text, error", [
    ("variants:\n  a: {optionz: {}}\n", r"v.yaml: variants.a: unknown key\(s\) optionz"),
    ("variants:\n  a: {method: nope}\n", r"v.yaml: variants.a: method must be one of"),
    ("variants:\n  a: {options: {lambda_meta: 1.0}}\n", r"v.yaml: variants.a: unknown options option\(s\) lambda_meta"),
    ("variants:\n  a: {config: {stepz: 3}}\n", r"v.yaml: variants.a: unknown config option\(s\) stepz"),
    ("variant:\n  a: {}\n", r"v.yaml: expected one key, variants"),
])
def test_a_bad_variants_file_is_refused_naming_the_file_and_variant(tmp_path, text, error):
    (tmp_path / "v.yaml").write_text(text)
    with pytest.raises(ValueError, match=error):
        R.load_variants(str(tmp_path / "v.yaml"))
