"""Leaving at once when everything is saved, instead of waiting for the interpreter's tear-down.

With a model loaded, Python's exit frees gigabytes of tensors one by one and waits for the model
thread's background work (thinking ahead): seconds on a CPU with nothing left to do for the person.
"""

from __future__ import annotations

import os
import sys


def exit_now(code: int, *, loaded: bool | None = None) -> int:
    """End the process with `code` now if a model is (or is being) loaded; else return `code`.

    Call it only once every file is written and closed. `loaded` overrides the check for torch.
    """
    if not (loaded if loaded is not None else "torch" in sys.modules):
        return code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
