"""Checkpoints without the language model in memory: ``load_visual_model`` (read only the vision tower
and projector of a local safetensors checkpoint) and ``export_unlearned`` (write a complete checkpoint
folder by rewriting only the shards that hold changed tensors), over a streaming safetensors reader /
writer (safetensors_io.py) and checkpoint-to-model name matching (names.py)."""

from .export import export_unlearned
from .safetensors_io import CheckpointError, checkpoint_files, read_header, read_tensors, write_safetensors
from .visual_only import is_visual_only, load_visual_model

__all__ = ["CheckpointError", "checkpoint_files", "export_unlearned", "is_visual_only", "load_visual_model",
           "read_header", "read_tensors", "write_safetensors"]
