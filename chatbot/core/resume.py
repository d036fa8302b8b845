"""Going on with a saved chat: which session (--continue, --resume ID or FILE), its options, its image.

Shared by the chat app and the screen-reader mode; no Textual, no torch.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from chatbot.core.session import ImageRef, Session, SessionError, new_session_id, valid_session_id
from chatbot.core.session_files import SessionFileUnreadable, not_a_regular_file, read_session_file, shown
from chatbot.core.settings import (
    BY_NAME,
    GENERATION_KEYS,
    Settings,
    checked_saved_options,
    saved_options,
    shown_value,
)
from chatbot.core.store import SessionForked, SessionStore
from chatbot.engine.base import GenerationOptions
from chatbot.errors import ImageError
from chatbot.images import LoadedImage, is_url, load_image, public_url
from chatbot.untrusted import visible

_RESUME_TAKES = "--resume takes a saved session's id or an exported .json file."


def options_for(session: Session, fallback: GenerationOptions) -> GenerationOptions:
    """The decoding options a resumed session was using (its `/set` changes) over `fallback`; a saved
    value that is not allowed (a damaged or hand-edited file) keeps the fallback's."""
    return saved_options(session.options, fallback)


def given_options_win(session: Session, settings: Settings) -> str | None:
    """Let the decoding options given as flags (`--max-new-tokens 2` with `--continue`) win over the resumed
    chat's saved ones: they are written into `session.options`, so the chat goes on with them (and saves them
    with its next change: a look at the chat changes nothing).
    Returns the sentence that names each one that differs from the chat's (None: none did). Options from the
    config file or the defaults do not: the chat keeps its own (its `/set` changes)."""
    kept = checked_saved_options(session.options)[0]  # what the chat would go on with (a refused value: none)
    changed = []
    for key in GENERATION_KEYS:
        if settings.source_of(key) != BY_NAME[key].flag:
            continue
        given = getattr(settings.options, key)
        if key in kept and kept[key] != given:
            changed.append(f"{key} {shown_value(settings.options, key)} (the chat had "
                           f"{'none' if kept[key] is None else kept[key]})")
        session.options[key] = given
    if not changed:
        return None
    return f"The options given win over this chat's own: {', '.join(changed)}."


def reopen_image(
    ref: ImageRef, how_to_open: str = "/image PATH", cancel: Callable[[], bool] | None = None, *,
    from_elsewhere: bool = False,
) -> tuple[LoadedImage | None, str | None]:
    """Load a saved session's image again: (image, None), or (None, why it cannot be shown).

    `how_to_open` names the way this front end opens another image, for the message; `cancel` stops a
    download when it returns True (the app is closing). With `from_elsewhere` (a chat file from outside,
    `Session.from_elsewhere`) a web picture is not downloaded: the fetch would tell the file's author that,
    and from where, it was opened. The person fetches it with /image URL when they trust it.
    """
    if from_elsewhere and is_url(ref.source):
        shown_url = visible(public_url(ref.source))  # a login in it is never shown
        return None, (f"This chat came from a file, and its picture is on the web ({shown_url}); it was not "
                      "downloaded, since a download tells that server this chat was opened. If you trust it, "
                      f"open it with /image {shown_url}.")
    try:
        image = load_image(ref.source, cancel=cancel)
    except ImageError as error:
        return None, (f"The image of this chat could not be opened again: {error.message} "
                      f"It may have been moved or deleted; open it again with {how_to_open}.")
    if image.sha256 != ref.sha256:
        return None, (f"{visible(ref.source)} has changed since this chat was saved (its contents differ), so it "
                      f"was not reopened. Open an image with {how_to_open} to go on.")
    return image, None


def session_to_resume(store: SessionStore, continue_last: bool, resume: str | None) -> Session:
    """The latest session, the one with id `resume`, or an exported JSON file named by `resume`.

    An id that is not a session id is refused (no path is made of it), and so is a path to anything
    but a regular file (never opened: a named pipe would block). The session is claimed for this process
    (`SessionStore.claim`): when another blip2-chat has it open, this one goes on in a copy under a new
    id, and `store.problems` holds the sentence that says so (as it holds damaged files set aside and an
    import's new id), for the front end to show. An imported chat with turns is saved into the store at
    once, so `--resume ID` finds it afterwards, whether or not a turn is added, and so is the copy made of
    a saved chat this version does not fully understand (`SessionStore.load`), or of one open in another
    blip2-chat (the chat says it goes on as that copy, and ends saying it was saved as it).
    """
    imported = False
    try:
        if continue_last:
            found = store.latest()
            if found is None:
                raise SessionError("There is no saved session to continue.", "Start one with blip2-chat IMAGE.")
            session = found
        else:
            assert resume is not None
            path = Path(resume).expanduser()
            if path.suffix == ".json" and not is_import(store, resume):  # a saved session named by its path
                session = store.load(path.stem)
            elif path.suffix == ".json" and os.path.lexists(path):
                session = imported_session(store, path)
                imported = True
            elif path.suffix == ".json":
                raise SessionError(f"There is no file {shown(path, 400)}.",
                                   "Check the path; `blip2-chat sessions` lists the saved sessions.")
            elif not valid_session_id(resume):
                mode = _mode_of(path)
                if mode is not None and not stat.S_ISREG(mode):
                    raise not_a_regular_file(shown(path, 400), mode, _RESUME_TAKES)
                raise SessionError(f"'{shown(resume, 400)}' is neither a saved session's id (they look like "
                                   "20250101-120000-abcdef) nor an exported .json file.",
                                   "List the sessions with `blip2-chat sessions`.")
            else:
                session = store.load(resume)
    except SessionError as error:
        if store.problems:  # say where a damaged file went
            raise SessionError(error.message, " ".join([error.hint, *store.problems]).strip()) from None
        raise
    opened_as = session.id
    try:
        note = store.claim(session)
    except SessionError as error:  # no lock can be made there: saving will say what is wrong
        note = str(error)
    if note:
        store.problems.append(note)
    forked = session.id != opened_as  # open in another blip2-chat: this one goes on in a copy, which is saved now
    if (imported or session.not_understood or forked) and session.turns:
        _save_copy(store, session, "imported chat" if imported else "copy")
    return session


def _save_copy(store: SessionStore, session: Session, what: str) -> None:
    """Write an imported chat, or the copy of one this version does not fully understand, into the store now:
    the user opened it to go on with it, and the chat says it is saved (as its file would be, had it been
    made here). A problem is noted in `store.problems`."""
    try:
        store.save(session)
    except SessionForked as forked:  # a file took its id meanwhile: saved as a copy
        store.problems.append(forked.message)
    except SessionError as error:
        store.problems.append(f"The {what} could not be saved in the sessions folder: {error}")


def model_to_go_on_with(session: Session, model: str, *, model_given: bool) -> tuple[str, str | None]:
    """The model a resumed chat goes on with, and the sentence that says so (None: nothing to say).

    `model` is the one chosen by --model, the config file or the default (`model_given`: by --model, which
    always wins). Otherwise the chat's own model, unless it came from a file of someone else's and is no
    model blip2-chat knows (`Session.untrusted_model`): a chat file never chooses a folder or a repository.
    """
    if model_given:
        return model, None
    if session.untrusted_model:
        return model, (f"This chat was made with {shown(session.untrusted_model, 200)}, which is not a model "
                       f"blip2-chat knows; going on with {shown(model, 200)} (to use that one, pass --model with it).")
    if session.model and session.model != model:
        return session.model, (f"Going on with {shown(session.model, 200)}, the model this chat was made with "
                               "(choose another with --model).")
    return model, None


def going_on(session: Session, settings: Settings, *, model_given: bool) -> tuple[Settings, list[str], list[str]]:
    """A resumed chat's settings (its model, and the options given that win over its own) and what to say first:
    news, shown as information (which model it goes on with, which options given win), and warnings (a model its
    file named that is not loaded). The plain mode says both alike; the app colours them."""
    model, note = model_to_go_on_with(session, settings.model, model_given=model_given)
    settings = replace(settings, model=model)
    news: list[str] = []
    warnings: list[str] = []
    if note:
        (warnings if session.untrusted_model and not model_given else news).append(note)
    given = given_options_win(session, settings)  # --max-new-tokens and the like win over the chat's own
    news += [given] if given else []
    return settings, news, warnings


def known_model(name: str) -> bool:
    """A checkpoint blip2-chat lists (hub id or alias) or its demo model: safe to load on a chat file's word.
    Any other name (a folder, any hub repository) from a file of someone else's is never loaded, nor saved."""
    from chatbot.engine.registry import find_checkpoint
    from chatbot.locations import is_demo_model

    return is_demo_model(name) or find_checkpoint(name) is not None


def is_import(store: SessionStore, resume: str | None) -> bool:
    """Whether --resume names a chat file from outside the store (an export, maybe someone else's): it is
    copied in as an import, and what it says is not trusted as one's own saved chat is. A session file of
    the store itself, named by its path, is loaded as its id would be."""
    if resume is None:
        return False
    path = Path(resume).expanduser()
    if path.suffix != ".json":
        return False
    try:
        return not (valid_session_id(path.stem) and path.parent.resolve() == store.root.resolve())
    except (OSError, RuntimeError, ValueError):
        return True


def _mode_of(path: Path) -> int | None:
    """The file type and mode of what is at `path` (a link followed), or None when nothing is there."""
    try:
        return os.stat(path).st_mode
    except (OSError, ValueError):
        return None


def _exports_recorded(store: SessionStore, session_id: str) -> bool:
    """Whether a chat of this id has a record of its exports here (`core.export_log`): an id in use, even when its
    session file is gone, so that no chat file from elsewhere takes over what that chat's /export may replace."""
    place = store.export_log_path(session_id)
    return place is not None and os.path.lexists(place)


def imported_session(store: SessionStore, path: Path) -> Session:
    """A session from an exported JSON file (at most `MAX_SESSION_BYTES`, checked before it is parsed; only
    a regular file is opened).

    It gets a new id when the store has its id (the saved original is never overwritten, nor a record of its
    exports taken over) and when its id
    is not a session id (no path is ever made of one); `store.problems` says so in the second case. A model
    that is not `known_model` is moved to `untrusted_model`, to be named, never saved: the copy in the store
    never chooses what is loaded, whatever happens before the chat's own model is set. What the file holds
    that this version does not know is left out of the copy, and said.
    """
    try:
        session, _ = read_session_file(path, str(path))
    except SessionFileUnreadable as error:
        if error.cause != "not regular":
            raise
        raise SessionFileUnreadable(error.message, _RESUME_TAKES, error.why, error.cause) from None
    if not valid_session_id(session.id):
        old = session.id
        session.id = new_session_id()
        store.problems.append(f"The chat in {shown(path, 400)} had an id that cannot name a session file "
                              f"('{shown(old)}'), so it goes on as session {session.id}.")
    elif os.path.lexists(store.path_for(session.id)) or _exports_recorded(store, session.id):
        old = session.id
        session.id = new_session_id()
        store.problems.append(f"The chat in {shown(path, 400)} is saved here already as session {old}, which is "
                              f"left as it was: this copy goes on as session {session.id}.")
    session.from_elsewhere = True
    if not known_model(session.model):
        session.untrusted_model, session.model = session.model, ""
    if session.not_understood:
        store.problems.append(f"The chat in {shown(path, 400)} holds what this blip2-chat does not know "
                              f"({session.not_understood}); the copy goes on without it, and the file itself is "
                              "kept as it is.")
    return session
