"""Test configuration. The environment is set before anything imports triton or transformers:
the Triton kernels run under the interpreter on CPU tensors, and nothing reaches a model hub.
The test tree mirrors the package; the shared helpers (_tiny_models, _items, _cases, _parquet,
_toy) live in this folder, which is put on the import path for every subfolder."""

import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _var in ("VKD_FAST_BACKEND", "VKD_FAST_SKIP_CEXT", "VKD_FAST_CHECK_INDICES", "VKD_FAST_PLUGINS"):
    os.environ.pop(_var, None)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    """(models, cache folder) of the reduced toy world, built once per test session."""
    from _toy import SMALL_MODEL, SMALL_WORLD

    from vkd_fast.data import load_toy_models

    cache = tmp_path_factory.mktemp("toycache")
    return load_toy_models(SMALL_WORLD, SMALL_MODEL, cache_dir=cache), cache
