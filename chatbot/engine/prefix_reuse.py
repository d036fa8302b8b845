"""Which KV cache a turn continues: the conversation's, cut to the prefix the new prompt shares with it (OPT).

The bookkeeping (which image, which tokens, how many of them held) is cache.py's ConversationCache;
here is what the engine does with it: make an empty KV cache (the static one rewound when static
decoding is set up, else transformers' `DynamicCache`), cut one back, and decide per turn which
cache, if any, `generate` continues. FlanT5 reuses nothing: its encoder sees the whole input anyway.
"""

from __future__ import annotations

from typing import Any

from transformers import DynamicCache

from chatbot.engine.base import GenerationOptions
from chatbot.engine.cache import ConversationCache
from chatbot.engine.loader import LoadedCheckpoint
from chatbot.engine.model_io import ModelIO
from chatbot.engine.static import StaticDecoding
from chatbot.images import LoadedImage


class PrefixReuse(ModelIO):
    """A loaded checkpoint that keeps the conversation's KV cache and hands each turn the part it can reuse."""

    def __init__(self, loaded: LoadedCheckpoint, image_cache_size: int = 8, reuse_prefix: bool = True) -> None:
        super().__init__(loaded, image_cache_size)
        self.reuse_prefix = reuse_prefix and not self.is_encoder_decoder  # T5's encoder sees all input anyway
        self.prefix = ConversationCache(self.fresh_cache, self.rewind_cache)
        self.static: StaticDecoding | None = None  # set up by the engine where static decoding runs
        self.decoding = "generate"  # how answers are decoded, in words (status lines and benchmarks show it)

    def fresh_cache(self) -> Any:
        """An empty KV cache: the static one rewound, else a new DynamicCache."""
        if self.static is not None:
            return self.static.rewind(0)  # type: ignore[attr-defined]
        return DynamicCache(config=self.model.language_model.config)

    def rewind_cache(self, cache: Any, covered: int, keep: int) -> Any:
        """`cache` (holding `covered` positions) cut to its first `keep`."""
        if self.static is not None:
            return self.static.rewind(keep)  # type: ignore[attr-defined]
        cache.crop(keep - covered)  # crop takes minus the number of tokens to drop
        return cache

    def uses_static(self, ids: list[int], options: GenerationOptions) -> bool:
        """Greedy and sampled answers that fit the static cache decode through it; beam search never."""
        return self.static is not None and options.num_beams == 1 and self.static.fits(len(ids), options.max_new_tokens)

    def turn_cache(self, image: LoadedImage, ids: list[int], options: GenerationOptions,
                   static: bool) -> tuple[Any, int]:
        """The KV cache this turn continues, and how many of its prompt tokens it already holds (OPT).

        (None, 0) where `generate` must make its own: beam search keeps a cache per beam, and a turn
        too long for the static cache goes the plain way. `static`: this turn decodes through the
        static cache (`uses_static`, decided once per turn by the caller).
        """
        if options.num_beams > 1 or (self.static is not None and not static):
            self.prefix.forget()
            return None, 0
        if not self.reuse_prefix:
            self.prefix.forget()
            return self.fresh_cache(), 0
        return self.prefix.take(image.sha256, ids, limit=len(ids) - 1)  # one token left to prefill gives the logits
