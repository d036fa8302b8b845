"""The two caches the engine keeps between turns: image embeddings, and the conversation's KV cache.

`ImageEmbeddingCache` holds each recent image's projected query embeddings, so an image is encoded
once however many questions it gets. `ConversationCache` holds the last turn's KV cache and hands it
to the next turn cut to the token prefix the two share. Only bookkeeping lives here (no torch
import): which KV cache a turn uses, and how one is made or cut, is chatbot/engine/prefix_reuse.py's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
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


# -- the conversation's KV cache ----------------------------------------------------------------
#
# A follow-up's prompt starts with everything the previous turn saw and said, so its prefill only
# needs the tokens after the longest common prefix (OPT). The cache is either transformers'
# `DynamicCache` (cropped to the prefix) or the engine's static cache (rewound to it);
# `ConversationCache` keeps the bookkeeping the same for both: which image it belongs to, which
# tokens, and how many of them the cache holds.


@dataclass
class HeldCache:
    """A KV cache and what it holds: valid only for the image it was computed with."""

    image_sha256: str
    token_ids: list[int]  # prompt + generated
    cache: Any
    covered: int  # how many of `token_ids` the cache holds (the last generated token may not be fed yet)


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class ConversationCache:
    """Holds the last turn's KV cache and hands it to the next turn cut to the prefix they share.

    Args:
        fresh: makes an empty cache (a new `DynamicCache`, or the static cache rewound to nothing).
        rewind: `rewind(cache, covered, keep)` cuts a cache holding `covered` positions to its first `keep`.
    """

    def __init__(self, fresh: Callable[[], Any], rewind: Callable[[Any, int, int], Any]) -> None:
        self._fresh = fresh
        self._rewind = rewind
        self._held: HeldCache | None = None

    def take(self, image_sha256: str, ids: list[int], limit: int) -> tuple[Any, int]:
        """The held cache cut to what it shares with `ids` (at most `limit` positions), else a fresh one.

        The cache is handed over: until `hold` is called again nothing is held, so a turn that fails
        halfway never leaves a half-written cache behind for the next.
        """
        held, self._held = self._held, None
        if held is not None and held.image_sha256 == image_sha256:
            keep = min(common_prefix(held.token_ids[:held.covered], ids), limit)
            if keep > 0:
                return self._rewind(held.cache, held.covered, keep), keep
        return self._fresh(), 0

    def hold(self, image_sha256: str, token_ids: list[int], cache: Any, covered: int) -> None:
        self._held = HeldCache(image_sha256, list(token_ids), cache, covered)

    def forget(self) -> None:
        self._held = None

    @property
    def held(self) -> HeldCache | None:
        return self._held
