"""Model adapters: one file per MLLM family, behind :class:`VisualAdapter`.

``get_adapter(model)`` picks the adapter by ``model.config.model_type``; ``register_adapter(AdapterClass)``
adds a family under the names in its ``model_types`` (what a family's file must define: the checklist in
:class:`VisualAdapter`'s docstring). transformers is not imported here: adapters only use the model's modules.
``adapter.preprocess`` uses the image processor config of the folder the model was loaded from
(``preprocessor_config.json`` / ``processor_config.json``, PIL-based class), as the checkpoint was
trained; class defaults only for a model without one, with a warning (see ``base.py``).
"""

from .base import VisualAdapter, chat_prompt
from .gated_lock import GatedLock, find_gated_lock, install_gated_lock, load_gated_lock
from .hooks import count_calls, run_until
from .llava import LlavaAdapter
from .llava_next import LlavaNextAdapter
from .qwen2_5_vl import Qwen2_5_VLAdapter
from .qwen2_vl import Qwen2VLAdapter
from .registry import adapter_class, get_adapter, register_adapter, supported_model_types
from .taps import Tap, TapSpec, parse_tap, resolve_tap
from .trainable import check_trainable

for _family in (LlavaAdapter, LlavaNextAdapter, Qwen2VLAdapter, Qwen2_5_VLAdapter):
    register_adapter(_family)  # under each of its model_types
del _family

__all__ = [
    "GatedLock", "LlavaAdapter", "LlavaNextAdapter", "Qwen2VLAdapter", "Qwen2_5_VLAdapter", "Tap", "TapSpec",
    "VisualAdapter", "adapter_class", "chat_prompt", "check_trainable", "count_calls", "find_gated_lock",
    "get_adapter", "install_gated_lock", "load_gated_lock", "parse_tap", "register_adapter", "resolve_tap",
    "run_until", "supported_model_types",
]
