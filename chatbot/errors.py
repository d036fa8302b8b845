"""User-facing errors: each says what is wrong in one sentence and what to do next.

Front ends catch `UserError` and show `str(error)`; the CLI exits with status 2 and
never prints a traceback for these.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix. `message` says what is wrong, `hint` what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class ImageError(UserError):
    """The image cannot be read, fetched or used."""


class ModelNotFoundError(UserError):
    """The model is neither a local directory, in the local cache, nor reachable on the hub."""


class NotACheckpointError(UserError):
    """A local directory exists but does not hold a BLIP-2 checkpoint."""


class QuestionError(UserError):
    """The question is empty or cannot fit the model's context."""


class OptionError(UserError):
    """A generation option or flag has a value the model cannot use."""


class QuantizationUnavailableError(UserError):
    """8-bit or 4-bit loading was asked for but bitsandbytes cannot provide it here."""


class OutOfMemoryError(UserError):
    """The device ran out of memory while loading or answering."""


class QueryError(UserError):
    """The search text is empty, or longer than the retrieval model's text encoder reads."""


class PhotoIndexError(UserError):
    """The search index is missing, was made by another checkpoint, or is damaged (and was set aside)."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of the error's text (at most `limit` characters), or "" when it has no words."""
    text = str(error)
    return text.splitlines()[0][:limit] if text.strip() else ""


def described(error: BaseException) -> str:
    """`TypeError: its first line`, or the type's name alone: an unforeseen failure, named in a sentence."""
    detail = first_line(error)
    return f"{type(error).__name__}{': ' + detail if detail else ''}"


def model_error_text(error: BaseException, *, chat: bool = True) -> str:
    """One sentence for a failure while answering or loading, with what to do next; every front end says it
    so. `chat`: in a chat, whose conversation is intact (not a one-shot `ask`)."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, MemoryError):
        if not chat:
            return "Ran out of memory. Try a lower --max-new-tokens, or a smaller model."
        return ("Ran out of memory. The conversation is intact: try /clear, a lower max_new_tokens "
                "(/set max_new_tokens 20), or a smaller model.")
    failed = f"The model failed ({described(error)})."
    return f"{failed} The conversation is intact; try again, or /clear to start a fresh context." if chat else failed
