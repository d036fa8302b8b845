"""Settings: what every front end needs to open a model and decode, checked once."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from chatbot.config_file import read_config
from chatbot.engine.base import GenerationOptions
from chatbot.engine.registry import DEFAULT_MODEL
from chatbot.errors import OptionError

MODEL_ENV = "BLIP2_CHAT_MODEL"


@dataclass(frozen=True)
class Settings:
    """The choices a run is made with."""

    model: str  # hub id, alias or checkpoint folder
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    dtype: str = "auto"  # auto, float32, bfloat16, float16
    options: GenerationOptions = field(default_factory=GenerationOptions)
    json: bool = False  # one JSON object per answer instead of text
    quantize: str = "auto"  # auto (the best precision that fits), none, 8bit, 4bit


def check_options(options: GenerationOptions, as_flags: bool = True) -> GenerationOptions:
    """Refuse values the model cannot use, naming the range that works (as --flags or as /set keys)."""

    def name(key: str) -> str:
        return "--" + key.replace("_", "-") if as_flags else key

    if options.max_new_tokens < 1:
        raise OptionError(f"{name('max_new_tokens')} must be at least 1 (got {options.max_new_tokens}).", "Try 30.")
    if options.num_beams < 1:
        raise OptionError(f"{name('num_beams')} must be at least 1 (got {options.num_beams}).",
                          "Use 1 for greedy or 3-5 for beam search.")
    if options.temperature < 0:
        raise OptionError(f"{name('temperature')} cannot be negative (got {options.temperature}).",
                          "Use 0 to decode deterministically, or e.g. 0.7 to sample.")
    if not 0 < options.top_p <= 1:
        raise OptionError(f"{name('top_p')} must be in (0, 1] (got {options.top_p}).", "Try 0.9.")
    if options.repetition_penalty <= 0:
        raise OptionError(f"{name('repetition_penalty')} must be positive (got {options.repetition_penalty}).",
                          "Use 1.0 (off) or 1.5.")
    return options


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from parsed flags, then $BLIP2_CHAT_MODEL, then the config file, then the defaults."""
    file = read_config()
    defaults = GenerationOptions()
    values = {
        "max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams, "temperature": args.temperature,
        "top_p": args.top_p, "repetition_penalty": args.repetition_penalty, "seed": args.seed,
    }
    options = GenerationOptions(**{
        name: next((v for v in (value, file.get(name)) if v is not None), getattr(defaults, name))
        for name, value in values.items()
    })
    model = args.model or os.environ.get(MODEL_ENV) or file.get("model") or DEFAULT_MODEL

    def choice(key: str) -> str:
        return str(getattr(args, key, None) or file.get(key) or "auto")

    return Settings(model=model, device=choice("device"), dtype=choice("dtype"), quantize=choice("quantize"),
                    options=check_options(options), json=args.json)
