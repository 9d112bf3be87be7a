"""Test configuration. The environment is set before anything imports triton or transformers:
the Triton kernels run under the interpreter on CPU tensors, and nothing reaches a model hub."""

import os

os.environ["TRITON_INTERPRET"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _var in ("VKD_FAST_BACKEND", "VKD_FAST_SKIP_CEXT", "VKD_FAST_CHECK_INDICES"):
    os.environ.pop(_var, None)

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
