"""Shared file reading of the loaders (vkd_fast.data._files): pyarrow and PIL imported lazily, a
missing pyarrow named with the extra to install."""

import subprocess
import sys

import pytest

from vkd_fast.data.clear import load_clear
from vkd_fast.data.mllmu import load_mllmu_train


@pytest.mark.slow
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
