"""Build script: only the C++ extension lives here; metadata is in pyproject.toml.

The extension ``vkd_fast._C`` (csrc/) is a plain C++ torch extension (no nvcc needed), built with
-O3, OpenMP and no debug info whenever torch is importable at build time. Set VKD_FAST_SKIP_CEXT=1
to skip it; without it the package falls back to a JIT build at first use (vkd_fast/_ext.py) and,
failing that, to the pure-torch reference.
"""

import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def _cext():
    if os.environ.get("VKD_FAST_SKIP_CEXT", "0") == "1":
        print("vkd_fast: VKD_FAST_SKIP_CEXT=1, not building the C++ extension", file=sys.stderr)
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print(
            "vkd_fast: torch is not importable at build time, so the C++ extension is not prebuilt; "
            "it will be JIT-built at first use (install torch first and use --no-build-isolation "
            "to prebuild it)",
            file=sys.stderr,
        )
        return [], {}
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))
    import torch

    # torch >= 2.14's headers require C++20; older ones build with C++17 (vkd_fast._ext.cxx_standard: the same rule)
    major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    flags = ["-O3", "-g0", "-fopenmp", "-std=c++20" if (major, minor) >= (2, 14) else "-std=c++17"]
    ext = CppExtension(
        "vkd_fast._C",
        sources,
        extra_compile_args={"cxx": flags},
        extra_link_args=["-fopenmp", "-s"],
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _cext()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
