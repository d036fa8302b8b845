"""FlanT5's static decoding: self-attention and cross-attention caches, the encoder output padded to 512."""

from __future__ import annotations

from typing import Any

import torch
from transformers import EncoderDecoderCache, StaticCache
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutput

from chatbot.engine.static.base import StaticDecoding

T5_ANSWER_POSITIONS = 512  # decoder positions the static cache holds: answers up to 511 tokens


class EncoderDecoderDecoding(StaticDecoding):
    """FlanT5: static self-attention and cross-attention caches; the encoder output padded to 512 positions."""

    def __init__(self, language_model: Any, dtype: torch.dtype, device: torch.device, encoder_positions: int) -> None:
        super().__init__(language_model, dtype, device, T5_ANSWER_POSITIONS)
        config = language_model.decoder.config
        self.encoder_positions = encoder_positions
        caches = []
        for length in (self.max_positions, encoder_positions):
            cache = StaticCache(config=config, max_cache_len=length)
            cache.early_initialization(1, config.num_heads, config.d_kv, dtype, device)
            caches.append(cache)
        self.cache = EncoderDecoderCache(*caches)
        self.encoded = torch.zeros((1, encoder_positions, config.d_model), dtype=dtype, device=device)
        self.encoder_mask = torch.zeros((1, encoder_positions), dtype=torch.long, device=device)
        # The cross-attention mask in the form the decoder uses it, built on the host once per prompt: its
        # library function reads the mask's values (a sync), which a graph cannot hold.
        self.cross_mask = self._cross_mask().clone()

    def _cross_mask(self) -> torch.Tensor:
        """The decoder's cross-attention mask for `encoder_mask`, as transformers builds it (None: nothing masked)."""
        return create_bidirectional_mask(config=self.model.decoder.config, inputs_embeds=self.encoded[:, :1],
                                         attention_mask=self.encoder_mask, encoder_hidden_states=self.encoded)

    def _forward(self) -> Any:
        return self.model(decoder_input_ids=self.token, encoder_outputs=(self.encoded,), attention_mask=self.cross_mask,
                          cache=self.cache, use_cache=True)

    def reset(self) -> None:
        self.cache.reset()  # zeroes the position counters and marks the cross-attention cache stale
        self.length = 0

    def _prepare_capture(self) -> None:
        self.reset()
        self.load_encoder_output(torch.zeros_like(self.encoded[:, :1]))
        self.token.fill_(int(self.model.config.decoder_start_token_id or 0))
        self._eager_step()  # the first step fills the cross-attention cache, which later steps read

    def fits(self, prompt_tokens: int, max_new_tokens: int) -> bool:
        return prompt_tokens <= self.encoder_positions and max_new_tokens < self.max_positions

    def load_encoder_output(self, hidden: torch.Tensor) -> None:
        """Copy one prompt's encoder output into the padded buffer and mask the padding out."""
        length = hidden.shape[1]
        self.encoded.zero_()
        self.encoded[:, :length] = hidden
        self.encoder_mask.zero_()
        self.encoder_mask[:, :length] = 1
        mask = self._cross_mask()
        if mask is None:  # nothing padded (a 512-token prompt): every position takes part
            self.cross_mask.copy_(torch.ones_like(self.cross_mask) if self.cross_mask.dtype == torch.bool
                                  else torch.zeros_like(self.cross_mask))
        else:
            self.cross_mask.copy_(mask)

    def generate_arguments(self, inputs: dict[str, Any], cache_argument: str) -> dict[str, Any]:
        """Run the encoder on `inputs` and return what `generate` then needs to decode through this object."""
        hidden = self.model.get_encoder()(**inputs, return_dict=True).last_hidden_state
        self.reset()
        self.load_encoder_output(hidden)
        return {
            "encoder_outputs": BaseModelOutput(last_hidden_state=self.encoded), "attention_mask": self.encoder_mask,
            cache_argument: self.cache, "custom_generate": self.decode,
        }
