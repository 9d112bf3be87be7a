"""Wall time and peak memory of a block (vkd_fast.utils.memory)."""

import torch

from vkd_fast.utils import measure


def test_measure_sees_the_memory_a_block_touches():
    with measure() as m:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB touched
        block += 1
    assert m["seconds"] > 0 and m["memory_kind"] in ("host_rss", "host_maxrss_process")
    if m["memory_kind"] == "host_rss":
        assert m["peak_extra_bytes"] >= 60 * 2**20
    del block
