"""Packaging: the lean import, the installed layout, the CLI doctor and the JIT build fallback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vkd_fast as vf

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          timeout=600, check=False)


@pytest.mark.slow
def test_import_is_lean():
    code = (
        "import sys, torch, vkd_fast\n"
        "heavy = [m for m in ('triton', 'transformers', 'vkd_fast._C', 'vkd_fast.kernels', 'peft') if m in sys.modules]\n"
        "print(heavy, torch.cuda.is_initialized())\n"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] False"


@pytest.mark.slow
def test_import_works_without_triton_transformers_or_extension():
    # make every one of them unimportable and check the package still computes the loss
    code = (
        "import sys\n"
        "for m in ('triton', 'transformers'): sys.modules[m] = None\n"
        "import torch, vkd_fast as vf\n"
        "s = torch.randn(4, 3, requires_grad=True)\n"
        "vf.feature_distill_loss(s, torch.zeros(4, 3)).backward()\n"
        "from vkd_fast import _backend, _ext\n"
        "print(_ext.HAS_CEXT, _backend.resolve('auto', torch.device('cpu'), torch.float32), float(s.grad.abs().sum()) > 0)\n"
    )
    out = _python(code, VKD_FAST_SKIP_CEXT="1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False reference True"


def test_kernels_are_a_subpackage():
    import vkd_fast.kernels

    assert vkd_fast.kernels.__name__ == "vkd_fast.kernels"
    assert Path(vkd_fast.kernels.__file__).resolve().parent == ROOT / "vkd_fast" / "kernels"


def test_no_top_level_package_beside_vkd_fast():
    # a top-level package folder is importable under its own name whenever the repository root is on
    # sys.path (`python -c` from the root): `kernels/` once shadowed the hub package transformers imports
    packages = sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))
    assert packages == ["vkd_fast"], packages


def _python_at(cwd, code: str, *path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTHONPATH")}
    if path:
        env["PYTHONPATH"] = os.pathsep.join(map(str, path))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=600, check=False)


@pytest.mark.slow
def test_transformers_imports_from_the_repository_root():
    # `python -c` from the root puts the root first on sys.path; transformers checks for (5.25: requires) the
    # hub package `kernels` at import time
    out = _python_at(ROOT, "import vkd_fast, transformers.models.llava.modeling_llava, sys\n"
                           "k = sys.modules.get('kernels')\n"
                           "print('ok', None if k is None else k.__file__)")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok")
    found = out.stdout.split()[-1]
    assert found == "None" or "site-packages" in Path(found).parts  # the hub package, or none


@pytest.mark.slow
def test_the_root_does_not_shadow_a_missing_hub_package():
    # the H200 image (transformers 5.17, no hub package) failed here: transformers' availability check found
    # the repository's kernels/ folder and imported it. Without any site-packages, nothing named kernels is found.
    code = ("import sys, importlib.util\n"
            "sys.path[:] = [p for p in sys.path if 'site-packages' not in p]\n"
            "print(importlib.util.find_spec('kernels'))\n")
    out = _python_at(ROOT, code, ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["None"]


def test_every_subpackage_is_listed_for_installation():
    # pyproject lists the packages by hand (csrc/ is mapped): a new subpackage that is
    # not listed works from the source tree but is missing from a wheel
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "vkd_fast").rglob("__init__.py")}
    assert found <= listed, f"not in pyproject's packages: {sorted(found - listed)}"


def test_version_has_one_source():
    from importlib.metadata import version

    assert vf.__version__ == version("vkd-fast")


@pytest.mark.slow
def test_doctor_reports_environment():
    out = subprocess.run([sys.executable, "-m", "vkd_fast.cli", "doctor", "--json"], capture_output=True,
                         text=True, timeout=600, check=True)
    report = json.loads(out.stdout)
    assert report["torch"] == torch.__version__
    assert report["cuda_available"] is False and report["cuda_devices"] == []
    assert report["cext"]["status"] == "prebuilt"
    assert report["loss_backends"]["auto@cpu"] == "cext"
    assert report["loss_backends"]["cext@cpu"] == "ok"
    assert report["triton_interpreter"] is True  # conftest turned it on, the child inherits it
    assert report["loss_backends"]["triton@cpu"] == "ok"
    assert report["cache_backends"] == {"cext": "ok", "torch": "ok", "pinned_memory": "off (no CUDA device)"}


@pytest.mark.slow
def test_the_command_waits_passively_unless_a_policy_was_chosen():
    """OpenMP reads OMP_WAIT_POLICY once, when torch loads: the vkd-fast command sets PASSIVE first
    (no spinning on shared machines); a policy in the environment is kept; `import vkd_fast` alone
    changes nothing."""
    exe = str(Path(sys.executable).with_name("vkd-fast"))
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for env, expected in ((base, "PASSIVE"), (dict(base, OMP_WAIT_POLICY="ACTIVE"), "ACTIVE")):
        out = subprocess.run([exe, "doctor", "--json"], capture_output=True, text=True, env=env, timeout=600, check=True)
        assert json.loads(out.stdout)["omp_wait_policy"] == expected
    out = subprocess.run([sys.executable, "-c", "import os, vkd_fast; print(os.environ.get('OMP_WAIT_POLICY'))"],
                         capture_output=True, text=True, env=base, timeout=600, check=True)
    assert out.stdout.strip() == "None"


@pytest.mark.slow
def test_doctor_human_output_and_disabled_extension():
    exe = Path(sys.executable).with_name("vkd-fast")
    env = dict(os.environ, VKD_FAST_SKIP_CEXT="1", TRITON_INTERPRET="0")
    out = subprocess.run([str(exe), "doctor"], capture_output=True, text=True, env=env, timeout=600, check=True)
    assert "C++ extension          unavailable (disabled by VKD_FAST_SKIP_CEXT=1)" in out.stdout
    assert "auto@cpu             reference" in out.stdout
    assert "triton interpreter     off" in out.stdout
    assert "needs CUDA tensors" in out.stdout
    assert "cext                 unavailable: disabled by VKD_FAST_SKIP_CEXT=1" in out.stdout


@pytest.mark.slow
def test_jit_build_fallback_builds_a_working_extension(tmp_path):
    # the path taken where no prebuilt vkd_fast._C exists: build from the sources, cache, reuse
    code = (
        "import torch\n"
        "from vkd_fast import _ext\n"
        "m = _ext._jit_build()\n"
        "s, t = torch.randn(7, 33), torch.randn(7, 33)\n"
        "loss, grad = m.feature_distill_fwd(s, t, None, None, None, 0, 1, 1e-8)\n"
        "ref = ((s - t) ** 2).mean(1).sum()\n"
        "print(m.__file__, float((loss - ref).abs()) < 1e-5, torch.allclose(grad, 2 * (s - t) / 33))\n"
    )
    out = _python(code, VKD_FAST_EXT_DIR=str(tmp_path))
    assert out.returncode == 0, out.stderr
    path, ok_loss, ok_grad = out.stdout.split()
    assert path.startswith(str(tmp_path)) and ok_loss == "True" and ok_grad == "True"
    assert "building it once" in out.stderr
    again = _python(code, VKD_FAST_EXT_DIR=str(tmp_path))  # cached: no second build message
    assert again.returncode == 0 and "building it once" not in again.stderr


def test_the_cxx_standard_follows_torch():
    from vkd_fast import _ext

    assert _ext.cxx_standard("2.13.0+cpu") == "-std=c++17"  # what the pinned torch has always been built with
    assert _ext.cxx_standard("2.14.1") == _ext.cxx_standard("3.0.0") == "-std=c++20"  # C++20 headers
    setup = (ROOT / "setup.py").read_text()  # setup.py's copy of the rule (it cannot import the package)
    assert '"-std=c++20" if (major, minor) >= (2, 14) else "-std=c++17"' in setup
