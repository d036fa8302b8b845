"""The slash commands, for every chat front end: names, help, argument rules, and what each one does.

`run_command(conversation, line)` carries a command out on a `Conversation` and returns an
`Outcome`: the notices to show (each with its kind), whether the turns on screen changed, and
what only the front end can do (load an image it names, stream a retried answer or a comparison,
show the help, open the image picker, quit). The chat app renders an outcome as widgets, the screen-reader mode
as labelled lines; neither decides anything a command means.
"""

from __future__ import annotations

import difflib
import os
import shlex
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from chatbot.core.answer_wording import still_answering
from chatbot.core.clipboard import paste_image
from chatbot.core.comparison import Comparison, arm, compare_last, disarm, image_labels
from chatbot.core.conversation import Conversation
from chatbot.core.export import write_failure
from chatbot.core.photo_search import Found, result_to_open
from chatbot.core.session_files import MAX_SESSION_BYTES
from chatbot.core.settings import BY_NAME, apply_setting, describe_options, shown_value
from chatbot.core.store import NEARLY_FULL, SessionForked, SessionStore, SessionTooLong
from chatbot.engine.base import CancelToken
from chatbot.errors import ImageError, UserError, described, first_line
from chatbot.images import LoadedImage, load_image
from chatbot.untrusted import visible

NoticeKind = Literal["info", "warning", "error"]
Effect = Literal["quit", "help", "pick_image", "pick_compare"]


@dataclass(frozen=True)
class CommandSpec:
    name: str
    usage: str
    summary: str
    argument: Literal["none", "optional", "required"] = "none"
    busy_ok: bool = True  # may run while an answer streams (False: it changes the turns, so it waits)


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("image", "/image PATH", "switch to another image (starts a fresh context)", "optional",
                busy_ok=False),
    CommandSpec("compare", "/compare PATH", "ask the last question (or the next) about another image too, "
                "answers side by side; /compare off cancels", "optional", busy_ok=False),
    CommandSpec("find", "/find TEXT", "search the indexed pictures (blip2-chat index) for what they show",
                "required"),
    CommandSpec("open", "/open N", "open result N of the last /find in the chat", "required", busy_ok=False),
    CommandSpec("paste", "/paste", "open the image copied to the clipboard (the app's paste key does too)",
                busy_ok=False),
    CommandSpec("clear", "/clear", "forget the conversation so far (it stays in the saved session)", busy_ok=False),
    CommandSpec("retry", "/retry", "answer the last question again", busy_ok=False),
    CommandSpec("undo", "/undo", "drop the last question and answer", busy_ok=False),
    CommandSpec("save", "/save", "save the session now (it is also saved after every answer)"),
    CommandSpec("export", "/export md|html|json [PATH] [--embed]",
                "write the chat as Markdown with its pictures (--embed: inside it), one HTML page, or JSON",
                "required"),
    CommandSpec("set", "/set KEY VALUE", "change a decoding option; /set alone lists them", "optional"),
    CommandSpec("model", "/model NAME", "load another chat model (a hub id, an alias, a folder or demo); the chat "
                "goes on with it; /model alone names the one loaded", "optional", busy_ok=False),
    CommandSpec("help", "/help", "list the commands"),
    CommandSpec("quit", "/quit", "leave (the chat is saved)"),
)
ALIASES = {"exit": "quit", "q": "quit", "?": "help"}
SPECS = {spec.name: spec for spec in COMMANDS}
QUESTION_ESCAPE = "To ask a question that starts with a slash, begin it with two slashes."


def saved_sentence(session_id: str, store: SessionStore | None = None) -> str:
    """What every front end says as a chat ends saved: where it went, and how to go on with it
    (`going_on_command`)."""
    return f"Chat saved as session {session_id}; {going_on_command(session_id, store)} goes on with it."


def going_on_command(session_id: str, store: SessionStore | None = None) -> str:
    """The command that opens chat `session_id` again: `blip2-chat --continue` while it is the chat that opens
    (`SessionStore.opened_by_continue`; also with no store to ask), else `blip2-chat --resume ID`: another chat
    was saved since, or this one is a copy of a chat saved later (two terminals), and --continue opens that."""
    if store is None or store.opened_by_continue(session_id):
        return "blip2-chat --continue"
    return f"blip2-chat --resume {session_id}"


@dataclass(frozen=True)
class Notice:
    """One sentence for the person: what happened, or what went wrong and what to do."""

    text: str
    kind: NoticeKind = "info"


@dataclass(frozen=True)
class Retry:
    """/retry: the front end streams `chunks` as the new answer to `question`; `cancel` stops it."""

    question: str
    chunks: Iterator[str]
    cancel: CancelToken


@dataclass
class Outcome:
    """What a command did, for a front end to render."""

    notices: list[Notice] = field(default_factory=list)
    ok: bool = True  # False: the command was refused (the app keeps the typed line to fix)
    turns_changed: bool = False  # the last turn was removed (/undo): redraw what shows turns
    open_image: str | None = None  # /image PATH: load this (path or URL), then `switch_image`
    compare_image: str | None = None  # /compare PATH: load this (path or URL), then `compare_with`
    retry: Retry | None = None
    comparison: Comparison | None = None  # stream the other image's answer beside the open one's
    find: str | None = None  # /find TEXT: search the index (slow: the front end does it off its input loop)
    load_model: str | None = None  # /model NAME: the front end checks it, lets go of the model, loads this one
    effect: Effect | None = None

    @classmethod
    def refused(cls, error: UserError) -> Outcome:
        return cls([Notice(str(error), "error")], ok=False)


@dataclass(frozen=True)
class Command:
    name: str  # one of COMMANDS' names
    argument: str  # the rest of the line, stripped


def is_command(line: str) -> bool:
    """True for `/name ...`; `//...` is a question that starts with a slash."""
    text = line.strip()
    return text.startswith("/") and not text.startswith("//")


def question_text(line: str) -> str:
    """The question a typed line asks: `//x` asks `/x`."""
    text = line.strip()
    return text[1:] if text.startswith("//") else text


def typed_line(question: str) -> str:
    """The line that asks `question` (the inverse of `question_text`): one that starts with a slash is typed
    with two, so a question given back to the input (or recalled) asks it again instead of running a command."""
    return f"/{question}" if question.startswith("/") else question


def failure_text(line: str, error: Exception) -> str:
    """One sentence for what no rule foresaw (a bug) while carrying out a typed line; the front end goes on,
    nothing typed or saved is lost. Front ends make it visible: the error's text comes from anywhere."""
    what = line.split()[0] if is_command(line) else "Answering the question"
    return f"{what} failed ({described(error)}). The chat is intact."


def load_chosen_image(source: str, cancel: Callable[[], bool] | None = None) -> LoadedImage:
    """The image `/image`, `/compare`, `/open`, `/paste`, the picker or a pasted path or URL names, loaded (see
    `chatbot.images.load_image`). Every failure is an ImageError, one sentence, also one that `load_image` does
    not foresee (a name holding a NUL byte), so front ends catch UserError alone and say the same thing."""
    try:
        return load_image(source, cancel=cancel)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - an unforeseen failure is still one sentence, never a crash
        detail = first_line(error) or type(error).__name__
        raise ImageError(f"Could not open {visible(source)}: {visible(detail)}.") from error


def parse_command(line: str) -> Command:
    """The Command a `/name ...` line names.

    Raises:
        UserError: an unknown command (the message suggests the nearest known one), or one whose
            argument is missing or not wanted.
    """
    word, _, rest = line.strip()[1:].partition(" ")
    name = ALIASES.get(word.lower(), word.lower())
    if name not in SPECS:
        near = difflib.get_close_matches(name, list(SPECS), n=1)
        hint = f"Did you mean /{near[0]}? " if near else ""
        raise UserError(f"Unknown command /{word}.", f"{hint}Type /help for the list.")
    spec, argument = SPECS[name], rest.strip()
    if spec.argument == "required" and not argument:
        raise UserError(f"/{name} needs more: {spec.usage}.", f"e.g. {_EXAMPLES.get(name, spec.usage)}.")
    if spec.argument == "none" and argument:
        raise UserError(f"/{name} takes nothing after it.", f"Type just /{name}.")
    return Command(name, argument)


_EXAMPLES = {"find": "/find a dog on a beach", "open": "/open 2",
             "export": "/export md, /export html ~/chats/, or /export md chat.md --embed",
             "set": "/set temperature 0.7"}


def help_lines() -> list[str]:
    """The commands, one per line, usage then summary, as /help shows them."""
    width = max(len(spec.usage) for spec in COMMANDS)
    return [f"{spec.usage.ljust(width)}  {spec.summary}" for spec in COMMANDS]


def run_command(conversation: Conversation, line: str, *, can_pick: bool = False) -> Outcome:
    """Carry out the `/command` in `line` on `conversation`; every problem is a refused Outcome.

    `can_pick`: the front end has an image picker, so `/image` without a path opens it.
    """
    try:
        command = parse_command(line)
        spec = SPECS[command.name]
        if conversation.answering and not spec.busy_ok:
            raise still_answering(f"/{command.name}", conversation.settings.keys)
        return _HANDLERS[command.name](conversation, command.argument, can_pick)
    except UserError as error:
        return Outcome.refused(error)


def switch_image(conversation: Conversation, image: LoadedImage) -> Outcome:
    """After /image (or the picker, or a dropped file) loaded `image`: talk about it from now on, save."""
    armed = conversation.compare_next
    fresh = conversation.set_image(image) and bool(conversation.session.turns)
    extra = " The conversation starts fresh; earlier turns stay in the saved session." if fresh else ""
    if armed is not None and conversation.compare_next is None:
        extra += f" The comparison with {image_labels(image.source, armed.source)[1]} is cancelled."
    return after_saving(conversation, Outcome([Notice(f"Now talking about {image.source}.{extra}")]))


def compare_with(conversation: Conversation, image: LoadedImage) -> Outcome:
    """After /compare (or its picker) loaded `image`: answer the last question about it now, or, when this
    context has none yet, the next one. The chat stays on the open image."""
    if conversation.answering:  # the other image is loaded, and dropped: the refusal says to /compare again
        return Outcome.refused(still_answering("/compare", conversation.settings.keys, again="/compare"))
    try:
        if conversation.last_question() is not None:
            return Outcome(comparison=compare_last(conversation, image))
        arm(conversation, image)
    except UserError as error:
        return Outcome.refused(error)
    assert conversation.image is not None  # arm checked it
    first, second = image_labels(conversation.image.source, image.source)
    return Outcome([Notice(f"The next question will be answered about {first} and about {second}, side by side. "
                           "/compare off cancels.")])


def found_outcome(conversation: Conversation, found: Sequence[Found]) -> Outcome:
    """After a /find search: keep its results for /open N, and say what to do with them (front ends list
    the results themselves, each as `photo_search.found_line`)."""
    conversation.found = list(found)
    if not found:
        return Outcome([Notice("No picture in the index matches that. Add folders with `blip2-chat index PATH`.")])
    openable = [rank for rank, item in enumerate(found, 1) if not item.missing]
    if not openable:
        return Outcome([Notice("None of the results can be opened: their files are gone or changed since they were "
                               "indexed. Run `blip2-chat index` again over your folders.", "warning")])
    return Outcome([Notice(f"Open one with /open N (e.g. /open {openable[0]}).")])


def after_saving(conversation: Conversation, outcome: Outcome | None = None, *, force: bool = False) -> Outcome:
    """`outcome` (a new one when None) after saving the session, as every front end says it: a save that
    went on in a copy (another blip2-chat has the chat) is a warning, a failed save an error; the chat
    goes on either way."""
    outcome = outcome or Outcome()
    try:
        conversation.save(force=force)
    except SessionForked as forked:  # saved, as a copy: say so, it is not a failure
        _SAVE_FAILED.pop(conversation, None)
        outcome.notices.append(Notice(str(forked), "warning"))
    except SessionTooLong as error:  # every change from now on is lost when the chat ends: each one is said
        again = _SAVE_FAILED.get(conversation) == str(error) and not force
        outcome.notices.append(Notice(NOT_SAVED_EITHER if again else str(error), "error"))
        _SAVE_FAILED[conversation] = str(error)
    except UserError as error:
        # the same failure again (the sessions folder is a file: every save fails alike) is said once, until a
        # save works or fails otherwise; /save, asked for, always says it
        if force or _SAVE_FAILED.get(conversation) != str(error):
            outcome.notices.append(Notice(str(error), "error"))
        _SAVE_FAILED[conversation] = str(error)
    else:
        _SAVE_FAILED.pop(conversation, None)
        store = conversation.store
        if store is not None and store.last_saved_bytes > NEARLY_FULL * MAX_SESSION_BYTES \
                and conversation not in _NEARLY_FULL_SAID:
            _NEARLY_FULL_SAID.add(conversation)
            outcome.notices.append(Notice(
                f"This chat's file holds {store.last_saved_bytes / 1e6:.1f} of the {MAX_SESSION_BYTES / 1e6:.0f} MB a "
                "chat may have: soon its answers will not be saved. Start a new chat to go on (/export md keeps "
                "this one in a file).", "warning"))
    return outcome


NOT_SAVED_EITHER = ("This change was not saved either: the chat is too long to save. /export md keeps all of it in "
                    "a file; start a new chat to go on saving.")
_NEARLY_FULL_SAID: weakref.WeakSet[Conversation] = weakref.WeakSet()


_SAVE_FAILED: weakref.WeakKeyDictionary[Conversation, str] = weakref.WeakKeyDictionary()  # the last failure said


def _image(conversation: Conversation, argument: str, can_pick: bool) -> Outcome:
    if not argument:
        if can_pick:
            return Outcome(effect="pick_image")
        raise UserError("/image needs a path or a URL.", "e.g. /image cat.jpg.")
    return Outcome(open_image=_unquoted(argument))


def _compare(conversation: Conversation, argument: str, can_pick: bool) -> Outcome:
    if argument.lower() == "off" or (not argument and conversation.compare_next is not None):
        armed = disarm(conversation)
        return Outcome([Notice("The comparison is cancelled: the next question is about the open image only."
                               if armed else "No comparison was waiting.")])
    if conversation.image is None:
        raise UserError("No image is open, so there is nothing to compare with.",
                        "Open one first with /image PATH, then /compare OTHER.")
    if not argument:
        if can_pick:
            return Outcome(effect="pick_compare")
        raise UserError("/compare needs the path or URL of another image.", "e.g. /compare other.jpg.")
    return Outcome(compare_image=_unquoted(argument))


def _find(conversation: Conversation, argument: str, can_pick: bool) -> Outcome:
    return Outcome(find=_unquoted(argument))


def _open(conversation: Conversation, argument: str, can_pick: bool) -> Outcome:
    return Outcome(open_image=result_to_open(conversation.found, argument))


def _paste(conversation: Conversation, argument: str, can_pick: bool) -> Outcome:
    path = paste_image()  # runs the clipboard tool (5 s at most); ImageError: one sentence
    return Outcome([Notice(f"Pasted an image from the clipboard (saved as {path}).")], open_image=str(path))


def _clear(conversation: Conversation, argument: str, can_pick: bool) -> Outcome:
    conversation.clear()
    return after_saving(conversation, Outcome([Notice(
        "Conversation cleared: the next question starts fresh. Earlier turns stay in the saved session.")]))


def _retry(conversation: Conversation, argument: str, can_pick: bool) -> Outcome:
    cancel = CancelToken()
    chunks = conversation.retry(cancel)  # QuestionError when there is nothing (or no way) to answer again
    same = [Notice(conversation.same_again)] if conversation.same_again else []  # greedy, or a fixed seed
    return Outcome(same, retry=Retry(conversation.question, chunks, cancel))


def _undo(conversation: Conversation, argument: str, can_pick: bool) -> Outcome:
    session = conversation.session
    before_fresh_start = len(session.turns) - 1 < session.context_start  # /clear or another picture came after it
    turn = conversation.undo()
    if turn is None:
        raise UserError("There is nothing to undo.", "Ask a question first.")
    where = ""
    if before_fresh_start:  # /retry no longer reaches it: say that /undo did, so nothing is removed unseen
        about = ""
        if turn.image is not None and session.image is not None and turn.image.sha256 != session.image.sha256:
            about = f", about {image_labels(turn.image.source, session.image.source)[0]}"
        where = f" (asked before the chat started afresh{about})"
    return after_saving(conversation, Outcome([Notice(f"Removed the last question and its answer{where}: "
                                                      f"{turn.question}")], turns_changed=True), force=True)


def _save(conversation: Conversation, argument: str, can_pick: bool) -> Outcome:
    if not conversation.session.turns:
        raise UserError("There is nothing to save yet.", "Ask a question first; every answer is saved.")
    try:
        path = conversation.save(force=True)
    except SessionForked as forked:
        return Outcome([Notice(str(forked), "warning")])
    return Outcome([Notice(f"Session saved to {path}.")])


def _export(conversation: Conversation, argument: str, can_pick: bool) -> Outcome:
    # the format, then an optional path (quotes allowed), then an optional --embed (also taken before the path)
    fmt, _, where = argument.strip().partition(" ")
    words, embed = where.split(), False
    while words and "--embed" in (words[0], words[-1]):
        where, embed = where.strip(), True
        where = where[len("--embed"):] if words[0] == "--embed" else where[:-len("--embed")]
        words = where.split()
    flag = next((word for word in words[:1] + words[-1:] if word.startswith("--")), None)
    if flag is not None:
        raise UserError(f"/export does not know {flag[:40]}.", "Its one option is --embed, after md: "
                        "/export md [PATH] --embed (quote a file name that starts with --).")
    # `/export md chat.md extra words`: a name ending in the format's suffix and then more words is a slip, not
    # one file called "chat.md extra words" (a name with spaces is quoted, or has its suffix last)
    named = next((i for i, word in enumerate(words[:-1]) if word.lower().endswith(f".{fmt.lower()}")), None)
    if named is not None and where.strip()[:1] not in ("'", '"'):
        rest = " ".join(words[named + 1:])
        raise UserError(f"/export: '{rest[:60]}' comes after the file name {words[named][:60]}.",
                        "Quote a file name that has spaces: /export md \"my chat.md\".")
    given = _unquoted(where)
    try:
        result = conversation.export(fmt, given, embed=embed)
    except OSError as error:  # checking the path it names (a name too long, a loop of links): said in words
        path = Path(os.fsdecode(error.filename)) if isinstance(error.filename, (str, bytes)) else Path(given)
        raise write_failure(error, path.expanduser(), fmt.lower().lstrip(".") or "md") from None
    problem = result.problem()
    notices = [Notice(result.notice())] + ([Notice(problem, "warning")] if problem else [])
    if conversation.answering:  # exported as it stands: the answer on its way is recorded only once it ends
        notices.append(Notice(EXPORT_WHILE_ANSWERING, "warning"))
    return Outcome(notices)


# /export while an answer is coming writes the chat as recorded, and says what it lacks (not refused: the export
# is asked for now, may be wanted before a long answer ends, and changes nothing in the chat)
EXPORT_WHILE_ANSWERING = ("The question being answered now and its answer are not in the export: /export again once "
                          "the answer is done to include them.")


def _set(conversation: Conversation, argument: str, can_pick: bool) -> Outcome:
    if not argument:
        return Outcome([Notice(f"Options: {describe_options(conversation.options)}. "
                               "Change one with /set KEY VALUE.")])
    options, key = apply_setting(conversation.options, argument)
    conversation.set_options(options)
    return after_saving(conversation, Outcome([Notice(f"{key} is now {shown_value(options, key)}.")]))


def _help(conversation: Conversation, argument: str, can_pick: bool) -> Outcome:
    return Outcome(effect="help")


def _quit(conversation: Conversation, argument: str, can_pick: bool) -> Outcome:
    return Outcome(effect="quit")


def _unquoted(text: str) -> str:
    """A path as typed: surrounding quotes removed (`/image "my photo.jpg"`), else the text as it is."""
    text = text.strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        try:
            parts = shlex.split(text)
        except ValueError:
            return text
        return parts[0] if len(parts) == 1 else text
    return text


def _model(conversation: Conversation, argument: str, can_pick: bool) -> Outcome:
    engine = conversation.engine
    if not argument:
        if engine is not None:
            now = f"The chat model is {engine.info.model_id} ({engine.info.device}, {engine.info.precision})."
        elif conversation.model_error:  # the last load failed: nothing is loading
            now = f"No chat model is loaded: {conversation.model_error}"
        else:
            now = f"No chat model is loaded yet ({conversation.settings.model} is loading)."
        return Outcome([Notice(f"{now} {MODEL_HINT}")])
    name = BY_NAME["model"].parse(_unquoted(argument), "/model")
    try:
        check_model_switch(conversation, name)
    except UserError as error:
        raise UserError(str(error), goes_on_with(conversation)) from None
    return Outcome(load_model=name)


def goes_on_with(conversation: Conversation) -> str:
    """What a refused /model NAME leaves: the loaded model, or (after a failed load) none, and how to load one."""
    if conversation.engine is None and conversation.model_error:
        return "No model is loaded now: /model NAME loads one."
    return f"The chat goes on with {conversation.session.model}."


def check_model_switch(conversation: Conversation, name: str) -> None:
    """What can be told of /model NAME without loading it, so that a model that cannot load is refused before the
    loaded one is let go of: a name that finds nothing (`check_chat_model_name`), and the chat's precision settings
    the checkpoint's family refuses (FlanT5 in float16) where the family is known at once: a registry name, or a
    folder's config.json. Other hub ids are known only once fetched; the loader refuses those.

    Raises:
        UserError: one sentence, the loader's own.
    """
    from chatbot.core.runtime import check_chat_model_name
    from chatbot.engine.checkpoint_files import read_family
    from chatbot.engine.checkpoint_location import find_locally
    from chatbot.engine.precision import candidates
    from chatbot.engine.registry import find_checkpoint

    check_chat_model_name(name)
    found = find_locally(name)
    if isinstance(found, str):
        known = find_checkpoint(found)
        family = known.family if known is not None else None
    else:
        try:
            family = read_family(found.path)
        except UserError:  # a damaged config.json: the loader says it, in its own words
            family = None
    if family is not None:
        settings = conversation.settings  # `auto` never means float16 for FlanT5 (loader.choose_dtype)
        candidates(family, quantize=settings.quantize, dtype=settings.dtype, auto_dtype="float32", on_gpu=False,
                   dtype_from=settings.sources.get("dtype"))


NO_IMAGE_YET = "No image is open yet: /image PATH opens one (a file or an http(s) address), /paste the clipboard's."


MODEL_HINT = ("/model NAME loads another: a hub id, an alias (`blip2-chat models` lists them), a checkpoint folder, "
              "or demo.")


_HANDLERS = {"image": _image, "compare": _compare, "find": _find, "open": _open, "paste": _paste,
             "clear": _clear, "retry": _retry, "undo": _undo,
             "save": _save, "export": _export, "set": _set, "model": _model, "help": _help, "quit": _quit}
