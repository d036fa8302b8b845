"""Bounded caches the engine keeps between turns (no torch import here)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class ImageEmbeddingCache:
    """Projected query embeddings per image, keyed by the image's sha256, least recently used first out.

    The vision encoder is most of BLIP-2's compute for short answers; a chat asks many
    questions about one image, so each distinct image is encoded once.
    """

    def __init__(self, capacity: int = 8) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: OrderedDict[str, Any] = OrderedDict()

    def get(self, key: str) -> Any | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
