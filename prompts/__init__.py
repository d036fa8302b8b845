"""Prompt building for BLIP-2 chat and captioning (standard library only: no torch)."""

from prompts.base import (
    PromptStyle,
    PromptTooLong,
    fold_answer,
    get_style,
    normalize_answer,
    normalize_question,
    register,
    spaced_stream,
    style_for,
    style_names,
)
from prompts.budget import FittedPrompt, fit_prompt
from prompts.styles import Caption, FlanT5Chat, OptChat

__all__ = [
    "Caption",
    "FittedPrompt",
    "FlanT5Chat",
    "OptChat",
    "PromptStyle",
    "PromptTooLong",
    "fit_prompt",
    "fold_answer",
    "get_style",
    "normalize_answer",
    "spaced_stream",
    "normalize_question",
    "register",
    "style_for",
    "style_names",
]
