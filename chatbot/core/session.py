"""The conversation as data: turns, the image each was about, the options used. No I/O.

`Session.from_dict` is the one way back from saved data, and it trusts nothing: every field's type
and range is checked (strings are strings, numbers are finite numbers and never booleans, counts are
in range, texts have a bounded length) and anything else raises `SessionError`, never a KeyError,
TypeError or RecursionError, so a damaged or hostile file can be set aside and reported.

Only what a chat means nothing without (its model, id, creation time, turns and their texts and images)
rejects the whole file. A saved option that is not a plain value is dropped (the default is used) and a
`context_start` that is not a turn index is reset (to 0 when below or not a whole number, to the number of
turns when above, so no turn from before a /clear is folded back in); each is said in one sentence in
`Session.load_notes`, which is never saved and which the store reports (`SessionStore.problems`).

Session ids name files, so they follow one pattern (`valid_session_id`): the ids the app makes,
`YYYYMMDD-HHMMSS-xxxxxx`, are in it, and nothing in it can climb out of a folder (no `/`, `\\`, `.`).
"""

from __future__ import annotations

import copy
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from chatbot.errors import UserError
from chatbot.untrusted import visible

SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # the whole id (fullmatch)
MAX_TEXT_CHARS = 100_000  # one question or answer; the app's own (at most 1024 tokens) stay far below
MAX_SOURCE_CHARS = 32_768  # an image's path or URL
MAX_NAME_CHARS = 4_096  # the model (a hub id or a checkpoint folder), an id as read, a hash
MAX_COMPARED = 32  # other images one turn's question was also asked about (/compare)
MAX_OPTIONS = 100  # saved options, each a short key and a plain value
MAX_OPTION_TEXT = 1_000
MAX_OPTION_INT = 2**63  # |int| below this (seeds go up to 2**63 - 1)
LATEST_TIME = 32_503_680_000.0  # 3000-01-01: `created` is seconds since 1970, from 0 to this


class SessionError(UserError):
    """A session cannot be found, read or written."""


def valid_session_id(value: object) -> bool:
    """True for a string that may name a session file: 1 to 64 letters, digits, `-` and `_`, a letter or a
    digit first (so never `.`, `..`, a path, or a hidden file)."""
    return isinstance(value, str) and SESSION_ID_PATTERN.fullmatch(value) is not None


def new_session_id() -> str:
    """A fresh id: `YYYYMMDD-HHMMSS-` and 6 random hex digits."""
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]

EMPTY_ANSWER = "(no answer)"  # how every front end and export shows a finished answer that has no words
CONTEXT_CLEARED = "Context cleared: later questions start fresh."  # where a transcript shows a /clear


@dataclass(frozen=True)
class ImageRef:
    """Which image a turn was about: where it came from and its content hash."""

    source: str  # absolute path or URL
    sha256: str


@dataclass(frozen=True)
class ComparedAnswer:
    """The turn's question asked about another image too (/compare), alone: no earlier turns folded in."""

    image: ImageRef
    answer: str
    stopped: bool = False  # the user stopped it while it streamed; the partial answer is kept


@dataclass
class Turn:
    """One question and its answer, as stored (answer normalised, never re-generated on load)."""

    question: str
    answer: str
    image: ImageRef | None
    stopped: bool = False  # the user cancelled while it streamed; the partial answer is kept
    created: float = field(default_factory=time.time)
    compared: list[ComparedAnswer] = field(default_factory=list)  # the same question about other images
    # the model saw none of the turns before this one (asked after /clear or another picture); never on the first
    fresh: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The turn as plain data, in its fields' order; no `compared` key when it was never compared, no `fresh`
        key when it was not asked afresh (files as before both)."""
        data: dict[str, Any] = {"question": self.question, "answer": self.answer, "image": image_dict(self.image),
                                "stopped": self.stopped, "created": self.created}
        if self.compared:
            data["compared"] = [{"image": image_dict(other.image), "answer": other.answer, "stopped": other.stopped}
                                for other in self.compared]
        if self.fresh:
            data["fresh"] = True
        return data


def image_dict(image: ImageRef | None) -> dict[str, str] | None:
    """`image` as plain data (None stays None)."""
    return None if image is None else {"source": image.source, "sha256": image.sha256}


@dataclass
class Session:
    """A whole chat: what the user asked, what the model said, about which images."""

    model: str
    id: str = field(default_factory=new_session_id)
    created: float = field(default_factory=time.time)
    turns: list[Turn] = field(default_factory=list)
    image: ImageRef | None = None  # the image the next question is about
    context_start: int = 0  # turns before this index are not folded into the prompt (/clear, image switch)
    options: dict[str, Any] = field(default_factory=dict)
    draft: str = ""  # a question typed but not sent when the chat was left; the resumed app puts it back
    # what `from_dict` had to mend (a bad option dropped, context_start reset), one sentence each; never saved
    load_notes: list[str] = field(default_factory=list, compare=False, repr=False)
    # what of the data it was read from this version does not know (a newer format, fields it has no use
    # for), in a few words: the file it came from is never rewritten by this version. Never saved.
    not_understood: str = field(default="", compare=False, repr=False)
    # the model a chat file from elsewhere named that is no model blip2-chat knows: `model` is "" instead (so
    # the copy never chooses a folder or repository to load); kept only to be named. Never saved.
    untrusted_model: str = field(default="", compare=False, repr=False)
    # read from a chat file from elsewhere (--resume FILE.json): its web picture is not fetched on its word,
    # since a fetch tells the sender's server this address (a tracking pixel). Never saved.
    from_elsewhere: bool = field(default=False, compare=False, repr=False)

    def add_turn(self, question: str, answer: str, *, stopped: bool) -> Turn:
        """Record a turn about the open image, `fresh` when the context began anew since the last one."""
        turn = Turn(question=question, answer=answer, image=self.image, stopped=stopped,
                    fresh=0 < len(self.turns) == self.context_start)
        self.turns.append(turn)
        return turn

    def cleared_before(self, index: int) -> bool:
        """Whether /clear came before turn `index` (of the same picture as the turn before it: a change of picture
        is shown as such, and starts afresh too). A chat saved before turns kept `fresh` knows its last one only."""
        turns = self.turns
        fresh = 0 < index < len(turns) and (turns[index].fresh or index == self.context_start)
        return fresh and turns[index].image == turns[index - 1].image

    def image_sources(self) -> set[str]:
        """Every image (path or URL) this chat is about: the open one, each turn's, each comparison's."""
        images = [self.image, *(turn.image for turn in self.turns)]
        images += [compared.image for turn in self.turns for compared in turn.compared]
        return {image.source for image in images if image is not None}

    def to_dict(self) -> dict[str, Any]:
        """The session as plain data; a turn never compared has no `compared` key (files as before /compare).

        Built field by field (no `dataclasses.asdict`, which deep-copies every turn), in the fields' order."""
        data: dict[str, Any] = {
            "model": self.model, "id": self.id, "created": self.created,
            "turns": [turn.to_dict() for turn in self.turns], "image": image_dict(self.image),
            "context_start": self.context_start, "options": copy.deepcopy(self.options),
        }
        if self.draft:  # files as before drafts were kept have none
            data["draft"] = self.draft
        return data

    @classmethod
    def from_dict(cls, data: object) -> Session:
        """The session `data` (parsed JSON) describes; SessionError, saying which field is wrong, otherwise.

        Unknown keys (a newer version may add some) are not kept, but named in `not_understood`, so the
        file they came from is never rewritten without them (see `chatbot.core.store`); `id` is only checked
        to be text here: whether it may name a file is the store's rule (`valid_session_id`). A bad option or
        context_start is mended, not refused, and said in `load_notes` (see the module docstring).
        """
        try:
            return _session(data)
        except SessionError:
            raise
        except Exception as error:  # the promise is SessionError and nothing else
            raise SessionError(f"The session data is not usable ({type(error).__name__}).") from None


def _fail(where: str, what: str) -> SessionError:
    return SessionError(f"{where} {what}")


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, "is not an object")
    return value


def _text(value: object, where: str, limit: int, *, file_name: bool = False) -> str:
    """`value` if it is text of at most `limit` characters, valid Unicode. A `file_name` (an image's source) may
    also hold the lone surrogates U+DC80..U+DCFF: the bytes of a name that is not UTF-8, as `os.fsdecode` gives
    them, which the session file keeps as `\\udcXX` escapes and `os.fsencode` turns back into those bytes."""
    if not isinstance(value, str):
        raise _fail(where, "is not text")
    if len(value) > limit:
        raise _fail(where, f"is longer than {limit} characters")
    try:
        data = value.encode("utf-8", "surrogateescape" if file_name else "strict")
    except UnicodeEncodeError:  # a lone surrogate: it could never be written back as UTF-8
        raise _fail(where, "holds a character that is not valid Unicode") from None
    # a name's bytes in one spelling: escapes that stand for valid UTF-8 (`\udcc3\udca9`) are that text (`é`),
    # so one file is never two names in a chat (as `os.fsdecode` of its bytes would give it)
    return data.decode("utf-8", "surrogateescape") if file_name else value


def _time(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, "is not a number")
    if not (0 <= value <= LATEST_TIME):  # NaN fails this too; huge ints are compared, never converted
        raise _fail(where, f"is not a time between 0 and {LATEST_TIME:.0f}")
    return float(value)


_SESSION_KEYS = frozenset({"format", "model", "id", "created", "turns", "image", "context_start", "options",
                           "draft"})
_TURN_KEYS = frozenset({"question", "answer", "image", "stopped", "created", "compared", "fresh"})
_COMPARED_KEYS = frozenset({"image", "answer", "stopped"})
_IMAGE_KEYS = frozenset({"source", "sha256"})
MAX_UNKNOWN_NAMED = 3  # unknown fields named in `Session.not_understood`; the rest are counted


def _note_unknown(data: dict[str, Any], known: frozenset[str], place: str, unknown: dict[str, None]) -> None:
    """Add the keys of `data` this version does not know to `unknown`, as `place.key` (one entry per
    place and key, whichever turn it was in)."""
    for key in data:
        if key not in known:
            unknown[f"{place}{key}" if isinstance(key, str) else f"{place}?"] = None


def _unknown_words(unknown: dict[str, None]) -> str:
    """'fields this blip2-chat does not know: 'mood', 'turns.rating'' (the first few, the rest counted)."""
    names = [f"'{visible(name if len(name) <= 40 else name[:40] + '…')}'" for name in list(unknown)[:MAX_UNKNOWN_NAMED]]
    more = len(unknown) - len(names)
    return (f"field{'s' if len(unknown) > 1 else ''} this blip2-chat does not know: {', '.join(names)}"
            + (f" and {more} more" if more else ""))


def _image(value: object, where: str, unknown: dict[str, None], place: str) -> ImageRef | None:
    if value is None or value == {}:
        return None
    data = _object(value, where)
    _note_unknown(data, _IMAGE_KEYS, f"{place}.", unknown)
    if "source" not in data or "sha256" not in data:
        raise _fail(where, "needs a source and a sha256")
    return ImageRef(_text(data["source"], f"{where}.source", MAX_SOURCE_CHARS, file_name=True),
                    _text(data["sha256"], f"{where}.sha256", MAX_NAME_CHARS))


def _turn(value: object, where: str, unknown: dict[str, None]) -> Turn:
    data = _object(value, where)
    _note_unknown(data, _TURN_KEYS, "turns.", unknown)
    for key in ("question", "answer"):
        if key not in data:
            raise _fail(where, f"has no {key}")
    stopped = data.get("stopped", False)
    if not isinstance(stopped, bool):
        raise _fail(f"{where}.stopped", "is not true or false")
    turn = Turn(question=_text(data["question"], f"{where}.question", MAX_TEXT_CHARS),
                answer=_text(data["answer"], f"{where}.answer", MAX_TEXT_CHARS),
                image=_image(data.get("image"), f"{where}.image", unknown, "turns.image"), stopped=stopped)
    if "created" in data:
        turn.created = _time(data["created"], f"{where}.created")
    if "compared" in data:
        turn.compared = _compared(data["compared"], f"{where}.compared", unknown)
    fresh = data.get("fresh", False)
    if not isinstance(fresh, bool):
        raise _fail(f"{where}.fresh", "is not true or false")
    turn.fresh = fresh
    return turn


def _compared(value: object, where: str, unknown: dict[str, None]) -> list[ComparedAnswer]:
    if not isinstance(value, list):
        raise _fail(where, "is not a list")
    if len(value) > MAX_COMPARED:
        raise _fail(where, f"has more than {MAX_COMPARED} entries")
    answers = []
    for index, item in enumerate(value):
        data, at = _object(item, f"{where}[{index}]"), f"{where}[{index}]"
        _note_unknown(data, _COMPARED_KEYS, "turns.compared.", unknown)
        if "answer" not in data:
            raise _fail(at, "has no answer")
        image = _image(data.get("image"), f"{at}.image", unknown, "turns.compared.image")
        if image is None:
            raise _fail(at, "has no image")
        stopped = data.get("stopped", False)
        if not isinstance(stopped, bool):
            raise _fail(f"{at}.stopped", "is not true or false")
        answers.append(ComparedAnswer(image, _text(data["answer"], f"{at}.answer", MAX_TEXT_CHARS), stopped))
    return answers


def _option(value: object, where: str) -> object:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -MAX_OPTION_INT < value < MAX_OPTION_INT:
            raise _fail(where, "is out of range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(where, "is not a finite number")
        return value
    if isinstance(value, str):
        return _text(value, where, MAX_OPTION_TEXT)
    raise _fail(where, "is not a plain value (text, a number, true, false or null)")


def _options(value: object, notes: list[str]) -> dict[str, Any]:
    """The saved options that are plain values; each one that is not is dropped and said in `notes`."""
    if not isinstance(value, dict):
        notes.append("The saved options are not a table of names and values, so the defaults are used.")
        return {}
    if len(value) > MAX_OPTIONS:
        notes.append(f"The saved options have more than {MAX_OPTIONS} entries, so the defaults are used.")
        return {}
    options: dict[str, Any] = {}
    for key, item in value.items():
        try:
            name = _text(key, "an option's name", 100)
        except SessionError:
            notes.append("A saved option's name is not usable text, so that option was dropped.")
            continue
        try:
            options[name] = _option(item, f"The saved option {visible(name)!r}")
        except SessionError as error:
            notes.append(f"{error.message}, so its default is used.")
    return options


def _context_start(value: object, turns: int, notes: list[str]) -> int:
    """The saved context_start if it is a turn index (0 .. `turns`), else the nearest one, said in `notes`."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= turns:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:  # NaN too
        start = 0  # not a whole number, or below the first turn
    else:
        start = turns if value > turns else math.floor(value)
    shown = repr(value) if isinstance(value, (bool, int, float)) and len(repr(value)) <= 40 else "a bad value"
    notes.append(f"The saved context start ({visible(shown)}) is not a turn of this chat (0 to {turns}), so it "
                 f"was set to {start}.")
    return start


def _session(value: object) -> Session:
    data = _object(value, "The session")
    unknown: dict[str, None] = {}
    _note_unknown(data, _SESSION_KEYS, "", unknown)
    for key in ("model", "id", "created"):
        if key not in data:
            raise _fail("The session", f"has no {key}")
    turns_data = data.get("turns", [])
    if not isinstance(turns_data, list):
        raise _fail("turns", "is not a list")
    turns = [_turn(item, f"turns[{index}]", unknown) for index, item in enumerate(turns_data)]
    notes: list[str] = []
    session = Session(
        model=_text(data["model"], "model", MAX_NAME_CHARS), id=_text(data["id"], "id", MAX_NAME_CHARS),
        created=_time(data["created"], "created"), turns=turns,
        image=_image(data.get("image"), "image", unknown, "image"),
        context_start=_context_start(data.get("context_start", 0), len(turns), notes),
        options=_options(data.get("options", {}), notes),
        draft=_text(data.get("draft", ""), "draft", MAX_TEXT_CHARS),
    )
    session.load_notes = notes
    session.not_understood = _unknown_words(unknown) if unknown else ""
    return session
