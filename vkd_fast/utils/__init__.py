"""Base helpers every layer may import (nothing here imports another part of vkd_fast):

* :mod:`.validate` -- argument checks with messages that name the argument;
* :mod:`.options` -- documented, typed option dataclasses (trainer and method options), built from
  mappings (YAML, ``key=value``) with conversion by the field's type;
* :mod:`.files` -- atomic file writes;
* :mod:`.memory` -- wall time and peak memory of a block of code;
* :mod:`.text` -- prompt + answer encoding, padding and answer log-probabilities;
* :mod:`.items` -- who an item pictures (its person) and the item's fields;
* :mod:`.registry` -- the one registry shape (methods, forget targets, adapters, tasks, protocols);
* :mod:`.loop` -- the plain training loop shared by the toy build and the relearning attack;
* :mod:`.devices` -- device resolution ("auto" -> the accelerator when one is visible).
"""

from .files import atomic_write
from .memory import measure
from .validate import check_choice, check_positive_int

__all__ = ["atomic_write", "check_choice", "check_positive_int", "measure"]
