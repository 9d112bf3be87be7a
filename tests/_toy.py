"""The reduced toy world the tests use (the models are built once per session: the `toy` fixture in
conftest.py) and the path of the `vkd-fast` command."""

import sys
from pathlib import Path

from vkd_fast.data import ToyModelConfig, ToyWorldConfig

EXE = str(Path(sys.executable).with_name("vkd-fast"))
# a reduced world: 12 people, 3 of them forgotten as in the default world (with 2, forget accuracy is a
# count of 8 person x attribute coincidences: an 8-person world measured 0.40 for VKD), default images
SMALL_WORLD = ToyWorldConfig(n_identities=12, forget_fraction=0.25)
SMALL_MODEL = ToyModelConfig(check_every=100)
