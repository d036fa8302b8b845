"""Messages the chat app's background workers post to it (thread-safe; widgets are touched only on receipt).

Model loading, image loading and answering run in thread workers; they never call widgets,
they post one of these and the app updates the screen when it handles them.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from chatbot.engine.base import Engine, GenerationStats
from chatbot.images import LoadedImage


@dataclass
class ModelProgress(Message):
    """A step of model loading worth showing ("Loading ... on cuda")."""

    text: str


@dataclass
class ModelReady(Message):
    """The engine is loaded; queued questions can be answered."""

    engine: Engine


@dataclass
class ModelFailed(Message):
    """The model could not be loaded; `text` says why and what to do."""

    text: str


@dataclass
class ImageReady(Message):
    """An image was loaded (from `/image`, the picker, a pasted path, or a resumed session)."""

    image: LoadedImage
    resumed: bool = False  # reopened from a saved session, not newly chosen


@dataclass
class ImageFailed(Message):
    """An image could not be loaded or is not the one a session was about."""

    text: str


@dataclass
class AnswerStarted(Message):
    """The first chunk is coming; `dropped_turns` earlier turns did not fit the prompt."""

    answer_id: int
    dropped_turns: int


@dataclass
class AnswerChunk(Message):
    """More text of the answer in progress waits in its buffer (one message for all the tokens that came
    before the app took them, not one per token)."""

    answer_id: int


@dataclass
class AnswerFinished(Message):
    """The answer ended, completely or because the user stopped it."""

    answer_id: int
    stopped: bool
    stats: GenerationStats


@dataclass
class AnswerFailed(Message):
    """The model raised while answering; `text` is the one notice to show."""

    answer_id: int
    text: str


@dataclass
class StoreProblems(Message):
    """Damaged session files were set aside while looking through the saved sessions."""

    problems: list[str]
