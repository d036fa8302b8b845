"""The checks a prompt passes before a model is asked: text a tokenizer takes, and room in the model's context.

One rule for a chat's questions (`Conversation`) and a caption's prompt (`captioning.caption_prompt`); both need
no more than the engine's facts, so each check says what is wrong before anything is answered.
"""

from __future__ import annotations

from chatbot.engine.base import Engine, GenerationOptions
from chatbot.errors import OptionError, QuestionError

MIN_PROMPT_TOKENS = 16  # the fewest prompt tokens a model must have room for: a short question and its frame


def check_text(text: str, what: str = "question") -> str:
    """`text` (a question or a prompt, as it came from the command line or a file), or a QuestionError when
    it is not valid UTF-8 text: an argument typed in another encoding arrives with its bytes as lone
    surrogates, which no tokenizer takes. Needs no model, so the commands say it before one loads."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise QuestionError(f"The {what} is not valid UTF-8 text.",
                            "Type it again in UTF-8 (check your terminal's character encoding).") from None
    return text


def prompt_budget(engine: Engine, options: GenerationOptions) -> int:
    """Prompt tokens the model has room for, image tokens and (for OPT) the answer set aside; OptionError
    when that leaves under MIN_PROMPT_TOKENS."""
    info = engine.info
    room = info.context_tokens - info.image_tokens
    if not info.is_encoder_decoder:  # OPT's positions hold the prompt and the answer
        room -= options.max_new_tokens
    if room < MIN_PROMPT_TOKENS:
        raise OptionError(
            f"max_new_tokens={options.max_new_tokens} leaves no room for a question in this model's "
            f"{info.context_tokens} positions.",
            f"Use at most {info.context_tokens - info.image_tokens - MIN_PROMPT_TOKENS} (/set max_new_tokens N in a "
            "chat, --max-new-tokens N on the command line).",
        )
    return room
