"""Plug-ins (vkd_fast.utils.plugins): a .py file or a dotted module imported for what it registers."""

import sys

import pytest

from vkd_fast.utils.plugins import load_plugin


def test_a_file_plugin_is_a_real_module_and_errors_name_the_plugin(tmp_path):
    good = tmp_path / "my_plugin.py"
    good.write_text("from __future__ import annotations\nfrom dataclasses import dataclass\n\n"
                    "@dataclass(frozen=True)\nclass Opts:\n    x: int = 1\n\nVALUE = Opts().x + 1\n")
    module = load_plugin(str(good))  # a dataclass needs its module in sys.modules while it is defined
    assert module.VALUE == 2 and sys.modules["vkd_fast_plugin_my_plugin"] is module
    assert load_plugin("json").dumps([1]) == "[1]"
    with pytest.raises(ValueError, match="plug-in .*missing.py: no such file"):
        load_plugin(str(tmp_path / "missing.py"))
    with pytest.raises(ValueError, match="plug-in no_such_module_xyz: No module named"):
        load_plugin("no_such_module_xyz")
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_xyz\n")
    with pytest.raises(ValueError, match="plug-in .*broken.py: No module named 'no_such_module_xyz'"):
        load_plugin(str(broken))
    assert "vkd_fast_plugin_broken" not in sys.modules  # nothing half-imported is left behind
