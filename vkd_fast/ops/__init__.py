"""Implementations of the ops: ``reference`` (pure torch, the spec and the oracle) and the
launchers of the fast paths (``cext_launch``: the C++ extension, ``triton_launch``: the Triton kernels).

Nothing here validates user input (that happens once, in :mod:`vkd_fast.functional`) and nothing
here imports triton at import time.
"""

METRICS = ("mse", "cosine", "smooth_l1")
REDUCTIONS = ("mean", "sum", "none")
# Integer codes shared with csrc/feature_distill.h and kernels/feature_distill.py.
METRIC_CODE = {name: i for i, name in enumerate(METRICS)}
REDUCTION_CODE = {name: i for i, name in enumerate(REDUCTIONS)}
# Norm floor of the cosine metric: cos = <s,t> / (max(|s|, EPS) max(|t|, EPS)).
COSINE_EPS = 1e-8

