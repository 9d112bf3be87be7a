"""Loads the C++ extension ``vkd_fast._C``: prebuilt if installed, else a cached JIT build.

Loading is lazy (first use of a C++ backed op, or ``load()``), so ``import vkd_fast`` never builds
anything. After a load attempt:

* ``HAS_CEXT``   -- bool, whether the extension is usable;
* ``CEXT_ERROR`` -- why not (``None`` when it loaded);
* ``CEXT_SOURCE`` -- ``"prebuilt"``, ``"jit"`` or ``None``.

Environment: ``VKD_FAST_SKIP_CEXT=1`` disables the extension altogether; ``VKD_FAST_NO_JIT=1``
disables only the JIT fallback; ``VKD_FAST_EXT_DIR`` sets the JIT build cache
(default ``~/.cache/vkd_fast/ext``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

log = logging.getLogger("vkd_fast")

_lock = threading.Lock()
_state: dict = {"loaded": False, "module": None, "error": None, "source": None}


def _sources() -> list[Path]:
    here = Path(__file__).resolve().parent
    for folder in (here / "csrc", here.parent / "csrc"):  # installed copy, then a source checkout
        files = sorted(folder.glob("*.cpp"))
        if files:
            return files + sorted(folder.glob("*.h"))
    return []


def _jit_build() -> ModuleType:
    import torch  # the extension links against libtorch, which must be loaded first
    from torch.utils.cpp_extension import load

    files = _sources()
    if not files:
        raise RuntimeError("the C++ sources (csrc/*.cpp) are not part of this installation")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    digest.update(torch.__version__.encode())
    tag = digest.hexdigest()[:16]
    root = Path(os.environ.get("VKD_FAST_EXT_DIR", Path.home() / ".cache" / "vkd_fast" / "ext"))
    build_dir = root / tag
    build_dir.mkdir(parents=True, exist_ok=True)
    if not any(build_dir.glob("*.so")):
        print(
            f"vkd_fast: the C++ extension is not prebuilt; building it once into {build_dir} "
            "(about a minute; set VKD_FAST_SKIP_CEXT=1 to use the pure-torch path instead)",
            file=sys.stderr,
        )
    cpp = [str(f) for f in files if f.suffix == ".cpp"]
    return load(
        name=f"vkd_fast_C_{tag}",
        sources=cpp,
        build_directory=str(build_dir),
        extra_cflags=["-O3", "-g0", "-fopenmp", cxx_standard(torch.__version__)],
        extra_ldflags=["-fopenmp"],
        verbose=False,
    )


def cxx_standard(torch_version: str) -> str:
    """The C++ standard flag for building against ``torch_version``: torch >= 2.14's headers require
    C++20 (found by ``make test-latest`` on 2026-12-04: torch 2.14.1 with -std=c++17 does not compile);
    older ones build with C++17, as they always did here. setup.py keeps a copy (it cannot import the
    package)."""
    major, minor = (int(x) for x in torch_version.split("+")[0].split(".")[:2])
    return "-std=c++20" if (major, minor) >= (2, 14) else "-std=c++17"


def load() -> ModuleType | None:
    """Return the extension module, loading it on first call; ``None`` if it is unavailable."""
    if _state["loaded"]:
        return _state["module"]
    with _lock:
        if _state["loaded"]:
            return _state["module"]
        module, error, source = None, None, None
        if os.environ.get("VKD_FAST_SKIP_CEXT", "0") == "1":
            error = "disabled by VKD_FAST_SKIP_CEXT=1"
        else:
            import torch  # noqa: F401  (must precede loading the extension)

            try:
                from vkd_fast import _C as module  # type: ignore[attr-defined]

                source = "prebuilt"
            except ImportError as exc:
                prebuilt_error = f"no prebuilt vkd_fast._C ({exc})"
                if os.environ.get("VKD_FAST_NO_JIT", "0") == "1":
                    error = prebuilt_error + "; JIT build disabled by VKD_FAST_NO_JIT=1"
                else:
                    try:
                        module = _jit_build()
                        source = "jit"
                    except Exception as jit_exc:  # compiler missing, headers missing, ...
                        error = f"{prebuilt_error}; JIT build failed: {type(jit_exc).__name__}: {jit_exc}"
                        log.debug("vkd_fast C++ extension unavailable: %s", error)
        _state.update(loaded=True, module=module, error=error, source=source)
        return module


def __getattr__(name: str):
    if name == "HAS_CEXT":
        return load() is not None
    if name == "CEXT_ERROR":
        load()
        return _state["error"]
    if name == "CEXT_SOURCE":
        load()
        return _state["source"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
