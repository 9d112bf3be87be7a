"""Data: the built-in toy world (docs/method.md §6) and its cached models, MLLMU-Bench and CLEAR
loaders for local files, the question-answer collator, and who an item pictures (:func:`person_of`,
:data:`PERSON_KEYS`, :func:`person_per_image`). Heavy dependencies (pyarrow, transformers,
tokenizers) are imported only when used."""

from ..utils.items import PERSON_KEYS, person_of, person_per_image, require_persons
from ._files import DataFormatError
from .clear import load_clear, load_clear_eval, load_clear_train
from .collate import QACollator
from .mllmu import MLLMU_SPLITS, load_mllmu_eval, load_mllmu_train, mllmu_split_path
from .toy import ATTRIBUTES, ToyWorld, ToyWorldConfig
from .toy_model import ToyModelConfig, ToyModels, load_toy_models

__all__ = [
    "ATTRIBUTES", "DataFormatError", "MLLMU_SPLITS", "PERSON_KEYS", "QACollator", "ToyModelConfig", "ToyModels",
    "ToyWorld", "ToyWorldConfig", "load_clear", "load_clear_eval", "load_clear_train", "load_mllmu_eval",
    "load_mllmu_train", "load_toy_models", "mllmu_split_path", "person_of", "person_per_image", "require_persons",
]
