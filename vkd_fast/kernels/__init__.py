"""Triton kernels of vkd_fast (only ``@triton.jit`` code here).

Importing this package imports triton. Set ``TRITON_INTERPRET=1`` *before* importing it to run the
kernels on CPU tensors (tests only).

This folder lived at the repository's top level (installed as ``vkd_fast.kernels`` through a
package-dir mapping) until 2026-12-04. There it shadowed the PyPI package ``kernels`` (Hugging Face's
kernel hub, which transformers probes and, from 5.25, requires) whenever the repository root was on
``sys.path``: on a GPU image with transformers 5.17 and no hub package, ``python -c "import peft"`` from
the root failed inside transformers' availability check. Inside the package nothing shadows it.
"""
