"""One question about two images (`/compare PATH`): the open image's answer beside another image's.

BLIP-2 takes one image per prompt, so the other image gets a prompt of its own. That prompt holds the
question alone, with none of the chat's earlier turns folded in: those answers describe the open image,
and folding them in front of a different picture would tell the model things about it that are not so
(the BLIP-2 demo resets its history when the image changes, for the same reason). The other image's
answer is therefore exactly what `blip2-chat ask OTHER "question"` says.

The other image's answer is recorded on the turn it compares (`Turn.compared`, saved and exported with
it); the chat stays on the open image, its context and its prefix cache untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath

from chatbot.core.answer_wording import still_answering
from chatbot.core.conversation import Conversation
from chatbot.core.session import MAX_COMPARED, ComparedAnswer, ImageRef, Turn
from chatbot.core.session_files import shown
from chatbot.engine.base import CancelToken
from chatbot.errors import QuestionError
from chatbot.images import LoadedImage, is_url


@dataclass(frozen=True)
class Comparison:
    """A question answered about two images: the open one's answer (recorded) and the other's (streaming).

    `chunks` is the other image's answer; it is recorded on the compared turn when the stream ends (also
    when stopped, if any words came). `cancel` stops it.
    """

    question: str
    labels: tuple[str, str]  # the open image's name, the other's: file names, or paths where those are alike
    first_answer: str  # what the open image's turn recorded
    first_stopped: bool
    image: LoadedImage  # the other image
    chunks: Iterator[str]
    cancel: CancelToken


def image_labels(first: str, second: str) -> tuple[str, str]:
    """Short names that tell two images apart: their file names, with as many parent folders as it takes
    when the names are alike (web addresses as given; one path twice: its file name). Text from outside:
    front ends make it visible."""
    ours, theirs = _parts(first), _parts(second)
    for depth in range(1, max(len(ours), len(theirs)) + 1):
        names = _tail(ours, depth) or first, _tail(theirs, depth) or second
        if names[0] != names[1]:
            return names
    return _tail(ours, 1) or first, _tail(theirs, 1) or second  # one image: its name


def _tail(parts: tuple[str, ...], depth: int) -> str:
    return PurePath(*parts[-depth:]).as_posix() if parts else ""


def _parts(source: str) -> tuple[str, ...]:
    return () if is_url(source) else PurePath(source).parts


def check_other_image(conversation: Conversation, image: LoadedImage) -> None:
    """QuestionError unless `image` can be compared with the open one: an image is open and this is another."""
    opened = conversation.image
    if opened is None:
        raise QuestionError("No image is open, so there is nothing to compare with.",
                            "Open one first with /image PATH, then /compare OTHER.")
    if image.sha256 == opened.sha256:
        raise QuestionError(f"{shown(image_labels(opened.source, image.source)[1])} is the picture already open "
                            "(the same content).", "Compare it with a different image.")


def compare_last(conversation: Conversation, image: LoadedImage, cancel: CancelToken | None = None) -> Comparison:
    """The last question asked about the open image, asked about `image` too, in a context of its own.

    Every check happens here, before anything streams; while it streams, `conversation.answering` is True.
    """
    if conversation.answering:  # as `commands.compare_with` refuses it: the loaded image is dropped
        raise still_answering("/compare", conversation.settings.keys, again="/compare")
    check_other_image(conversation, image)
    question = conversation.last_question()
    if question is None:
        raise QuestionError("There is no question to compare yet.", "Ask one first, or /compare PATH before it.")
    conversation.require_engine()
    turn = conversation.session.turns[-1]
    opened = conversation.image
    assert opened is not None  # check_other_image
    prompt = conversation.style.build([], question)  # the question alone: it fit with history, so it fits
    cancel = cancel or CancelToken()
    conversation.answering = True
    chunks = _recorded(conversation, turn, image, prompt, cancel)
    return Comparison(question, image_labels(opened.source, image.source), turn.answer, turn.stopped, image,
                      chunks, cancel)


def due_comparison(conversation: Conversation, cancel: CancelToken | None = None) -> Comparison | None:
    """The comparison `/compare` armed, once the answer it waited for is recorded; None when none is due.

    Front ends call it when an answer ends. A question that cannot be compared raises QuestionError.
    """
    image, conversation.compare_due = conversation.compare_due, None
    return compare_last(conversation, image, cancel) if image is not None else None


def arm(conversation: Conversation, image: LoadedImage) -> None:
    """Answer the next question about `image` too."""
    check_other_image(conversation, image)
    conversation.compare_next = image


def disarm(conversation: Conversation) -> LoadedImage | None:
    """Forget an armed comparison; the image it was with, if there was one."""
    image, conversation.compare_next = conversation.compare_next, None
    return image


def _recorded(
    conversation: Conversation, turn: Turn, image: LoadedImage, prompt: str, cancel: CancelToken,
) -> Iterator[str]:
    """The other picture's answer, kept on `turn` by the chat's own rule for an answer's end."""
    def keep(answer: str, stopped: bool) -> None:
        record(turn, ComparedAnswer(ImageRef(image.source, image.sha256), answer, stopped=stopped))

    return conversation.stream_recorded(image, prompt, cancel, keep)


def record(turn: Turn, answer: ComparedAnswer) -> None:
    """Keep `answer` on `turn`, replacing one about the same picture; the oldest go past MAX_COMPARED."""
    kept = [old for old in turn.compared if old.image.sha256 != answer.image.sha256]
    turn.compared = [*kept, answer][-MAX_COMPARED:]
