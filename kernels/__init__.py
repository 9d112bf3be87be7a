"""Triton kernels of vkd_fast (installed as ``vkd_fast.kernels``; only ``@triton.jit`` code here).

Importing this package imports triton. Set ``TRITON_INTERPRET=1`` *before* importing it to run the
kernels on CPU tensors (tests only).
"""
