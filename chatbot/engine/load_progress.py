"""How far `from_pretrained` has got through the weights, in percent, for front ends to say in words.

transformers walks the checkpoint's tensors in one loop wrapped in its own `tqdm` (desc
"Loading weights"); `transformers.utils.logging.set_tqdm_hook` lets us wrap that loop instead
of drawing a bar. Versions without the hook simply report nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

LOOP_NAME = "Loading weights"


class _PercentCounter:
    """Stands in for transformers' tqdm around its weight loop: iterates, and reports each `step` percent."""

    def __init__(self, iterable: Iterable[Any], report: Callable[[int], None], step: int) -> None:
        self.iterable = iterable
        self.report = report
        self.step = step
        self.total = len(iterable) if isinstance(iterable, Sized) else 0

    def __iter__(self) -> Iterator[Any]:
        said = 0
        for done, item in enumerate(self.iterable, start=1):
            yield item
            if self.total:
                reached = 100 * done // self.total // self.step * self.step
                if reached > said:
                    said = reached
                    self.report(reached)

    def __enter__(self) -> _PercentCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None  # update(), close(), set_postfix() ...: nothing to draw


@contextlib.contextmanager
def weight_loading_percent(report: Callable[[int], None], step: int = 20) -> Iterator[None]:
    """While inside, `report(percent)` is called at each `step` percent of the weights loaded (20, 40, ... 100)."""
    from transformers.utils import logging

    set_hook = getattr(logging, "set_tqdm_hook", None)
    if set_hook is None:
        yield
        return

    def hook(factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs.get("desc") == LOOP_NAME and args:
            return _PercentCounter(args[0], report, step)
        return factory(*args, **kwargs)

    previous = set_hook(hook)
    try:
        yield
    finally:
        set_hook(previous)
