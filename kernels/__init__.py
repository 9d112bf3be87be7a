"""Triton kernels of vkd_fast (installed as ``vkd_fast.kernels``; only ``@triton.jit`` code here).

Importing this package imports triton. Set ``TRITON_INTERPRET=1`` *before* importing it to run the
kernels on CPU tensors (tests only).

The name clash with the PyPI package ``kernels`` (Hugging Face's kernel hub, which transformers >= 5.25
requires and imports): this folder sits at the repository's top level, so whenever the repository
root is on ``sys.path`` (``python -c`` or a script run from the root, ``python -m pytest``) a plain
``import kernels`` finds this file first. Imported under that top-level name, this module hands the
import over to the real distribution -- the first ``kernels`` on ``sys.path`` outside this repository
-- and replaces itself in ``sys.modules`` with it, so ``from kernels import CUDAProperties`` works as
if this folder were not there. When no such distribution is installed, ``import kernels`` raises
``ModuleNotFoundError`` as it would without this folder. Under its installed name ``vkd_fast.kernels``
nothing of this happens.
"""

if __name__ == "kernels":  # imported as the top-level package: this is not the module that was asked for
    import os as _os
    import sys as _sys
    from importlib.machinery import PathFinder as _PathFinder
    from importlib.util import module_from_spec as _module_from_spec

    _repo = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))

    def _outside_repo(entry: str) -> bool:
        try:
            return _os.path.realpath(entry or _os.getcwd()) != _os.path.realpath(_repo)
        except (OSError, ValueError):
            return True

    _spec = _PathFinder.find_spec("kernels", [p for p in _sys.path if isinstance(p, str) and _outside_repo(p)])
    if _spec is None or _spec.loader is None:
        del _sys.modules["kernels"]
        raise ModuleNotFoundError("No module named 'kernels' (the repository's kernels/ folder is vkd_fast.kernels, "
                                  "not the PyPI package of that name)", name="kernels")
    _module = _module_from_spec(_spec)
    _sys.modules["kernels"] = _module  # the import statement returns what sys.modules holds after this file ran
    try:
        _spec.loader.exec_module(_module)
    except BaseException:
        _sys.modules.pop("kernels", None)
        raise
