"""``ActivationCache``: teacher features in host memory, served per step.

VKD computes the frozen teacher's visual features once and serves them from host memory, so no
teacher model sits on the accelerator. The cache holds, per integer key (an image), a
``[rows, D]`` matrix (rows may differ per key: dynamic-resolution models give different numbers of
visual tokens), in one dtype.

Storage is a slab arena: large 64-byte aligned slabs (pinned on CUDA machines, through torch's host
allocator), entries bump-allocated inside them. Beyond ``capacity_bytes`` new slabs are
memory-mapped files in ``spill_dir``. ``get`` gathers the rows of any keys (any order, repeats
allowed) into one contiguous buffer and, for a CUDA device, copies it over from a pinned,
double-buffered staging buffer on a side stream, ordered before the caller's stream. ``prefetch``
does the same in a background thread. ``save``/``load`` use a versioned, checksummed file format
(see :func:`ActivationCache.save`).

Two stores implement the arena: the C++ ``vkd_fast._C.CacheStore`` (copies without the GIL, over
ATen's thread pool) and a pure-torch fallback with the same behaviour. Validation happens once, in the facade.

Modules: ``activation_cache`` (the facade and its validation), ``store`` (the pure-torch store),
``staging`` (CUDA staging and prefetch handles), ``fileformat`` (save / load).
"""

from .activation_cache import BACKENDS, ActivationCache
from .fileformat import FORMAT_VERSION, CacheFormatError
from .staging import PrefetchHandle

__all__ = ["BACKENDS", "FORMAT_VERSION", "ActivationCache", "CacheFormatError", "PrefetchHandle"]
