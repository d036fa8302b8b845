"""The chat app: image preview, streamed transcript, input, status line; the model loads in the background.

`create_app` builds it for the CLI and for the tests alike (as posting does), with an injectable
engine factory so tests run it on a `ScriptedEngine` or a synthetic checkpoint. Nothing here
imports torch: the default factory imports the engine inside the loading worker.

Threads: model loading, image loading and answering run in thread workers that only post
messages (`chatbot.tui.messages`); widgets change when the app handles them. The answering half
lives in `chatbot.tui.answering` (the base class), `/compare`'s streaming in `chatbot.tui.comparing`,
`/find` in `chatbot.tui.finding`.

Over 300 lines, on purpose: the app's start-up, its workers and the handlers of the messages they
post are one life cycle (load the model, open images, render command outcomes), read in order.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.message import Message
from textual.widgets import Footer, Input, Static
from textual.worker import get_current_worker

from chatbot.core.clipboard_copy import copy_text
from chatbot.core.commands import (
    MODEL_HINT,
    NO_IMAGE_YET,
    Outcome,
    compare_with,
    failure_text,
    is_command,
    load_chosen_image,
    question_text,
    run_command,
    saved_sentence,
    switch_image,
    typed_line,
)
from chatbot.core.conversation import Conversation, release_engine
from chatbot.core.line_history import HISTORY_LINES
from chatbot.core.photo_search import Finder
from chatbot.core.resume import reopen_image
from chatbot.core.runtime import check_chat_model_name, exit_now, open_engine_for, say
from chatbot.core.session import ImageRef, Session
from chatbot.core.settings import APP_KEYS, KEY_ACTIONS, Settings
from chatbot.core.store import SessionStore
from chatbot.engine.base import Engine
from chatbot.errors import UserError, model_error_text
from chatbot.images import LoadedImage, is_url
from chatbot.tui import messages as msg
from chatbot.tui.finding import FindingApp
from chatbot.tui.palette import SlashCommandProvider
from chatbot.tui.screens.file_picker import ImagePickerScreen
from chatbot.tui.screens.help import HelpScreen
from chatbot.tui.terminal_gone import driver_class_for
from chatbot.tui.themes import HIGH_CONTRAST
from chatbot.tui.widgets.chat_input import (
    COMPLETION_NOTICE_SECONDS,
    ChatInput,
    image_source_in,
    typed_character,
)
from chatbot.tui.widgets.image_preview import ImagePreview, prepare_terminal_graphics
from chatbot.tui.widgets.status_bar import StatusBar, memory_text, process_memory_bytes
from chatbot.tui.widgets.transcript import Transcript, image_label
from chatbot.tui.workers import DaemonCall
from chatbot.untrusted import visible

EngineFactory = Callable[[Settings, Callable[[str], None]], Engine]


def load_engine(settings: Settings, progress: Callable[[str], None]) -> Engine:
    """The real model (imports torch, so only ever called inside the loading worker)."""
    return open_engine_for(settings, progress=progress)


class ChatApp(FindingApp, inherit_bindings=False):
    """Chat about an image; see README "Chat app" for the keys and commands."""

    CSS_PATH = "chat.tcss"
    TITLE = "blip2-chat"
    COMMAND_PALETTE_BINDING = APP_KEYS["command_palette"][0]  # declared in core, where the config refuses it
    COMMANDS = {SlashCommandProvider}  # ours only: Textual's own (Keys, Theme, a second Quit...) left out
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (72, "-wide")]
    BINDINGS = [
        # ids are the config file's [keys] names (chatbot.core.settings.KEY_ACTIONS), with the same defaults. The
        # footer shows them in this order (Textual's own two are not inherited: ours replace them, and they came
        # first), so help comes first, where a narrow window never cuts it off; Stop answer only while it can stop.
        Binding(KEY_ACTIONS["help"][0], "help", "Help", id="help"),
        Binding(KEY_ACTIONS["quit"][0], "quit", "Quit", priority=True, id="quit"),
        Binding(KEY_ACTIONS["stop"][0], "cancel_answer", "Stop answer", id="stop"),
        Binding(KEY_ACTIONS["open_image"][0], "open_image", "Open image", id="open_image"),
        Binding(KEY_ACTIONS["copy_answer"][0], "copy_answer", "Copy answer", id="copy_answer"),
        # Ctrl+V pastes an image (/paste). The input box binds it too (to paste the app's own copied text),
        # so this one comes first; a terminal's text paste arrives as a Paste event, not as this key.
        Binding(KEY_ACTIONS["paste"][0], "paste_image", "Paste image", show=False, priority=True, id="paste"),
        # Ctrl+C stops an answer, as in the screen-reader mode and a shell; otherwise Textual's reminder of
        # how to quit. (With text selected in the input box, the box takes it: copy.)
        Binding(APP_KEYS["interrupt"][0], "interrupt", show=False),
    ]

    def __init__(
        self, conversation: Conversation, engine_factory: EngineFactory, *, renderer: str = "auto",
        memory_probe: Callable[[], int] = process_memory_bytes, problems: Iterable[str] = (),
        finder: Finder | None = None, handle_signals: bool = False, news: Iterable[str] = (),
    ) -> None:
        super().__init__(conversation)
        self.finder = finder
        self.handle_signals = handle_signals  # SIGTERM and SIGHUP quit as Ctrl+Q does (the CLI's app; see on_mount)
        self.engine_factory = engine_factory
        self.renderer = renderer
        self.memory_probe = memory_probe
        self.startup_problems = list(problems)
        self.startup_news = list(news)  # information to show at start (which model a resumed chat goes on with)
        self._deferred_image: LoadedImage | None = None  # chosen while an answer streamed
        self._opening: str | None = None  # the image being opened (loaded or downloaded) now
        self._model_progress = ""  # what the model's loading said last (shown beside an image opening)
        self._loader: DaemonCall[Engine] | None = None
        self._switching = False  # /model is loading another model

    # -- layout and start-up -----------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="sidebar"):
                yield ImagePreview(self.renderer, id="preview")
            with Vertical(id="chat"):
                yield Static("", id="image-line", markup=False)  # the image's name where the sidebar is hidden
                yield Transcript(id="transcript")
                yield ChatInput(id="input")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        if self.handle_signals:  # first: a signal from now on saves the chat and gives the terminal back
            self.quit_on_signals()
        settings = self.conversation.settings
        self.register_theme(HIGH_CONTRAST)
        self.theme = settings.theme
        # every key given, the unchanged ones too: Textual moves a binding it re-keys after the others, and so
        # re-keying them all keeps BINDINGS' order in the footer (help first) whatever the config file changed
        self.set_keymap({**{action: default for action, (default, _) in KEY_ACTIONS.items()}, **settings.keys})
        self.sub_title = f"session {visible(self.conversation.session.id)}"
        session = self.conversation.session
        self.query_one(Transcript).show_session(session)  # its newest turns (a long chat's others are saved)
        # a resumed chat's questions are Up's earlier lines, as they were typed (made visible: from a file); its
        # newest HISTORY_LINES, as many as the history file keeps
        self.query_one(ChatInput).remember_all(typed_line(turn.question) for turn in session.turns[-HISTORY_LINES:])
        if session.draft:  # typed but not sent when the chat was left: back in the input (made visible)
            self.prefill_input(session.draft)
            session.draft = ""
        for news in self.startup_news:
            self.notice(news, "info")
        for problem in self.startup_problems:
            self.notice(problem, "warning")
        image, ref = self.conversation.image, self.conversation.session.image
        self._name_image()
        if image is not None:
            self._show_image(image)
        elif ref is not None:
            self._opening = ref.source
            self._reopen_image(ref.source, ref.sha256)
        else:  # `blip2-chat chat` without an image: choose one
            self.notice(f"{NO_IMAGE_YET} Choose one here (Esc closes the picker; Ctrl+O opens it again).")
            self.call_after_refresh(self.action_open_image)
        self._set_ready_activity()  # loading the model (and opening the resumed chat's image)
        self._refresh_memory()
        self.set_interval(2.0, self._refresh_memory)
        self.query_one(ChatInput).focus()
        self._load_model()
        self._scan_store()

    def get_driver_class(self) -> type:
        """Textual's own driver, which outlives its terminal (a hang-up): see `chatbot.tui.terminal_gone`."""
        return driver_class_for(super().get_driver_class())

    def _refresh_memory(self) -> None:
        self.query_one(StatusBar).set_memory(memory_text(self.conversation.engine, self.memory_probe))

    def loading_in_background(self) -> bool:
        """True while a model load is still running in its daemon thread (the CLI exits without waiting)."""
        return self._loader is not None and self._loader.thread.is_alive()

    # -- workers (threads: they only post messages) -------------------------------------------

    def switch_model(self, name: str) -> bool:
        """/model NAME: check the name (a wrong one keeps the loaded model), then let go of the loaded model (two
        may not fit a GPU) and load this one as at the start, in the background; questions asked meanwhile wait
        for it, as while the first model loads. The chat goes on with every turn. False when refused (the line
        typed then stays in the input, as for any refused command)."""
        if self.conversation.engine is None and not self.model_error:
            self.notice(f"The model {self.conversation.settings.model} is still loading; /model again once it is "
                        "ready.", "warning")
            return False
        try:
            check_chat_model_name(name)
        except UserError as error:
            self.notice(f"{error} The chat goes on with {self.conversation.session.model}.", "error")
            return False
        old = self.conversation.detach()
        self._switching = True
        self.conversation.settings = replace(self.conversation.settings, model=name)
        self.model_error = None
        self._model_progress = ""
        self._set_ready_activity()
        self._load_model(old)
        return True

    @work(thread=True, exclusive=True, group="model", exit_on_error=False)
    def _load_model(self, old: Engine | None = None) -> None:
        worker = get_current_worker()
        settings = self.conversation.settings
        release_engine(old)  # first: the new one may not fit beside it

        def progress(text: str) -> None:
            self.post_message(msg.ModelProgress(text))

        self._loader = DaemonCall(lambda: self.engine_factory(settings, progress), "blip2-chat-load")
        try:
            engine = self._loader.wait(lambda: worker.is_cancelled)
        except Exception as error:  # noqa: BLE001 - every load failure becomes one notice
            self.post_message(msg.ModelFailed(model_error_text(error)))
            return
        if engine is not None:
            self.post_message(msg.ModelReady(engine))

    @work(thread=True, exclusive=True, group="image", exit_on_error=False)
    def _load_image(self, source: str) -> None:
        worker = get_current_worker()  # Esc and quitting cancel it; a download stops within a read
        try:
            image = load_chosen_image(source, cancel=lambda: worker.is_cancelled)
        except UserError as error:  # every failure (never leave "Opening…" spinning)
            if not worker.is_cancelled:
                self.post_message(msg.ImageFailed(str(error)))
            return
        if not worker.is_cancelled:
            self.post_message(msg.ImageReady(image))

    @work(thread=True, exclusive=True, group="image", exit_on_error=False)
    def _reopen_image(self, source: str, sha256: str) -> None:
        worker = get_current_worker()
        image, problem = reopen_image(ImageRef(source, sha256), cancel=lambda: worker.is_cancelled,
                                      from_elsewhere=self.conversation.session.from_elsewhere)
        if worker.is_cancelled:
            return
        self.post_message(msg.ImageReady(image, resumed=True) if image else msg.ImageFailed(problem or ""))

    @work(thread=True, group="store", exit_on_error=False)
    def _scan_store(self) -> None:
        store = self.conversation.store
        if store is None:
            return
        with contextlib.suppress(OSError, UserError):
            store.summaries()  # sets damaged files aside
        if store.problems:
            self.post_message(msg.StoreProblems(list(store.problems)))

    # -- model and images -----------------------------------------------------------------------

    def _status_bar(self) -> StatusBar | None:
        """The status bar, or None when the screen is going away (Ctrl+Q, or the app closed otherwise while
        the model loads: a message that arrives then must change nothing, and must not fail)."""
        if self.quitting:
            return None
        try:
            return self.query_one(StatusBar)
        except NoMatches:
            return None

    def on_model_progress(self, message: msg.ModelProgress) -> None:
        self._model_progress = message.text.rstrip(". ")
        if (status := self._status_bar()) is not None:
            if self._opening is not None:
                self._set_ready_activity()  # beside the image opening
            else:
                status.set_activity(self._model_progress, busy=True)

    def on_model_ready(self, message: msg.ModelReady) -> None:
        if (status := self._status_bar()) is None:  # the screen is going away: change nothing on it
            return
        self.conversation.attach(message.engine)
        self._model_progress = ""
        status.set_engine(message.engine)
        self._set_ready_activity()  # Ready, or still opening an image
        if self._switching:  # /model: say it, as the screen-reader mode does
            self._switching = False
            self.notice(f"The chat goes on with {message.engine.info.model_id}.")
        if room := self.conversation.room_problem():  # options that leave this model no room: said now
            self.notice(room, "warning")
        self._refresh_memory()
        self._answer_next_pending()

    def on_model_failed(self, message: msg.ModelFailed) -> None:
        if self._status_bar() is None:  # the screen is going away: change nothing on it
            return
        self.model_error = message.text
        self.conversation.load_failed(message.text)  # the core's sentences then say there is no model, not "loading"
        self._switching = False
        self._model_progress = ""
        self._set_ready_activity()  # No model, or still opening an image
        self.notice(f"The model could not be loaded: {message.text} {MODEL_HINT}", "error")
        for waiting in self.pending:
            waiting.bubble.mark("not answered", "-failed")
        self.pending.clear()

    def open_image(self, source: str) -> bool:
        """Switch to the image at `source` (path or URL); loads in a worker, a bad file is one notice.
        False when refused (an answer is coming)."""
        if self.refused_while_streaming("switching the image"):
            return False
        self._start_opening(source)
        self._load_image(source)
        return True

    def compare_image(self, source: str) -> bool:
        """/compare PATH (or its picker): load the other image in a worker, then `compare_with` it.
        False when refused (an answer is coming)."""
        if self.refused_while_streaming("/compare"):
            return False
        self._start_opening(source)
        self._load_compared(source)
        return True

    def _start_opening(self, source: str) -> None:
        self._opening = source
        self._set_ready_activity()
        self.refresh_bindings()

    def _set_ready_activity(self) -> None:
        """While an image opens (and nothing streams) the status line says so, with the key that stops it, until
        the opening ends; beside the model's loading when that goes on too."""
        if self._opening is None or self.streaming():
            super()._set_ready_activity()
            return
        text = f"Opening {image_label(self._opening)}… ({self.stop_key()} stops)"
        if self.conversation.engine is None and not self.model_error:
            text += f"; {self._model_progress or f'loading model {self.conversation.settings.model}…'}"
        self.query_one(StatusBar).set_activity(text, busy=True)

    @dataclass
    class ComparedImageLoaded(Message):
        """The image to compare with was loaded (`image`), or not (`problem` says why)."""

        image: LoadedImage | None
        problem: str = ""

    @work(thread=True, exclusive=True, group="image", exit_on_error=False)
    def _load_compared(self, source: str) -> None:
        worker = get_current_worker()  # Esc and quitting cancel it, as they cancel opening an image
        try:
            image = load_chosen_image(source, cancel=lambda: worker.is_cancelled)
        except UserError as error:  # every failure (never leave "Opening…" spinning)
            loaded = self.ComparedImageLoaded(None, str(error))
        else:
            loaded = self.ComparedImageLoaded(image)
        if not worker.is_cancelled:
            self.post_message(loaded)

    def on_chat_app_compared_image_loaded(self, message: ComparedImageLoaded) -> None:
        if self.quitting:  # the screen is going away: change nothing on it
            return
        self._opened()
        self._set_ready_activity()
        if message.image is None:
            self.notice(message.problem, "error")
            self.image_not_opened_for_questions()
        else:
            self.render_outcome(compare_with(self.conversation, message.image))
            self.image_opened_for_questions()  # after a comparison of the last question, which streams first

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_answer" and self._opening is not None:
            return True  # Esc also stops an image that is still opening (a slow download)
        if action == "paste_image" and self.screen is not self.screen_stack[0]:
            return False  # over the picker or the help, Ctrl+V is theirs
        allowed = super().check_action(action, parameters)
        if action == "cancel_answer" and not allowed:
            return False  # nothing to stop: left out of the footer (greyed out, it took room from the help key)
        return allowed

    async def on_event(self, event: events.Event) -> None:
        """A character typed or a paste (a dropped file) while the focus is elsewhere (Tab moved it to the chat)
        goes to the input box, which handles it as its own (a dropped image path opens the image).

        The focus moves as the key arrives, before Textual hands the key on, so this key and every key after
        it (the rest of a burst, Enter included) reach the box in the order they came. Moved later, when a
        key has bubbled back from the chat, the keys of a burst already on their way there were lost."""
        typed = isinstance(event, events.Key) and typed_character(event) is not None
        if (typed or isinstance(event, events.Paste)) and not event.is_forwarded \
                and self.screen_stack and self.screen is self.screen_stack[0]:  # not over the picker, the help
            field = self.screen.query_one_optional("#input", ChatInput)  # by id: every key, no walk of the chat
            if field is not None and self.focused is not field:
                self.screen.set_focus(field)  # now, not after the keys already waiting (focus() defers it)
        await super().on_event(event)

    def action_interrupt(self) -> None:
        if self.answer is not None or self._opening is not None:
            self.action_cancel_answer()
        else:
            self.action_help_quit()

    def action_cancel_answer(self) -> None:
        if not self.streaming() and self._opening is not None:
            source, self._opening = self._opening, None
            self.workers.cancel_group(self, "image")
            self.refresh_bindings()
            self._set_ready_activity()
            self.notice(f"Stopped opening {image_label(source)}.")
            self.image_not_opened_for_questions(stopped=True)  # the user's own doing: information
            return
        super().action_cancel_answer()

    def on_image_ready(self, message: msg.ImageReady) -> None:
        if self.quitting:  # the screen is going away: change nothing on it
            return
        self._opened()
        if self.streaming():  # never under an answer: applied when it ends (the questions sent meanwhile wait for it)
            self._deferred_image = message.image
            return
        self._apply_image(message.image, message.resumed)

    def image_coming(self) -> bool:
        return self._opening is not None

    def _opened(self) -> None:
        self._opening = None
        self.refresh_bindings()

    def _show_image(self, image: LoadedImage) -> None:
        self.query_one(ImagePreview).show(image)
        self._name_image()

    def _name_image(self) -> None:
        """The line above the chat (shown when the window is too narrow for the sidebar) says what the preview
        shows: the image's name and size, or why there is none."""
        self.query_one("#image-line", Static).update(self.query_one(ImagePreview).summary)

    def _apply_image(self, image: LoadedImage, resumed: bool) -> None:
        self._show_image(image)
        if resumed:
            self.conversation.set_image(image)
        else:
            self.render_outcome(switch_image(self.conversation, image))
        self._set_ready_activity()
        self.image_opened_for_questions()  # the questions sent while it opened are asked about it now

    def after_answer(self) -> None:
        super().after_answer()  # a comparison /compare armed for this answer starts now
        if self.comparing is None:
            self.after_comparison()

    def after_comparison(self) -> None:
        if self._deferred_image is not None:  # chosen while the answer streamed
            image, self._deferred_image = self._deferred_image, None
            self._apply_image(image, resumed=False)

    def on_image_failed(self, message: msg.ImageFailed) -> None:
        if self.quitting:  # the screen is going away: change nothing on it
            return
        self._opened()
        self._set_ready_activity()
        if self.query_one(ImagePreview).source is None:
            self.query_one(ImagePreview).show_problem(message.text)
            self._name_image()
        self.notice(message.text, "error")
        self.image_not_opened_for_questions()

    def on_store_problems(self, message: msg.StoreProblems) -> None:
        if self.quitting:  # the screen is going away: change nothing on it
            return
        for problem in message.problems:
            self.notice(problem, "warning")

    @on(ChatInput.ImageDropped)
    def _image_dropped(self, message: ChatInput.ImageDropped) -> None:
        if not self.open_image(message.source):  # refused for now: the path waits in the input for Enter
            self.prefill_input(message.source)

    # -- the input box ---------------------------------------------------------------------------

    @on(Input.Submitted, "#input")
    def _submitted(self, event: Input.Submitted) -> None:
        line = event.value.strip()
        if not line:
            return
        field = self.query_one(ChatInput)
        field.remember(line)
        self.query_one(Transcript).anchor()  # scrolled up (PageUp) or not: what this line brings is shown, below
        source = image_source_in(line)
        if source is not None:
            done = self.open_image(source)
        elif is_command(line):
            done = self.run_slash(line)
        else:
            done = self.ask(question_text(line))  # `//x` asks `/x`
        if done:
            field.value = ""
        else:  # kept to fix, selected: typing replaces it (no "/undo/undo"), an arrow key keeps it to edit
            field.select_all()

    def run_slash(self, line: str) -> bool:
        """Run a /command; False (and one notice) when it failed, so the input keeps the line to fix."""
        try:
            return self.render_outcome(run_command(self.conversation, line, can_pick=True))
        except Exception as error:  # noqa: BLE001 - a bug in one command must not close the chat
            self.notice(failure_text(line, error), "error")
            return False

    def render_outcome(self, outcome: Outcome) -> bool:
        """Show what a command did and do what only the app can; returns whether the command was carried out."""
        if outcome.turns_changed:
            self.query_one(Transcript).undo_last(self.conversation.session)
        for notice in outcome.notices:
            self.notice(notice.text, notice.kind)
        if outcome.open_image is not None:
            self.open_image(outcome.open_image)
        if outcome.compare_image is not None:
            self.compare_image(outcome.compare_image)
        if outcome.retry is not None:
            self.stream_retry(outcome.retry)
        if outcome.comparison is not None:
            self.stream_comparison(outcome.comparison)
        if outcome.find is not None:
            self.find_pictures(outcome.find)
        if outcome.load_model is not None and not self.switch_model(outcome.load_model):
            return False
        if outcome.effect == "help":
            self.action_help()
        elif outcome.effect in ("pick_image", "pick_compare"):
            self.action_open_image(compare=outcome.effect == "pick_compare")
        elif outcome.effect == "quit":
            self.run_worker(self.action_quit(), group="quit")
        self.sub_title = f"session {visible(self.conversation.session.id)}"  # a save may have forked it
        return outcome.ok

    def prefill_input(self, text: str) -> None:
        """Put `text` in the input for the user to finish (palette entries that need an argument, a draft, a
        dropped path that has to wait). A line typed there is not lost: it becomes Up's newest line (in memory:
        never sent, it stays out of the history file), and a notice says so. Refusing the palette's entry
        instead would leave the user to clear the line by hand and choose it again."""
        field = self.query_one(ChatInput)
        if visible(text) != field.value and field.set_aside():
            self.notify("Up brings back what you had typed.", timeout=COMPLETION_NOTICE_SECONDS, markup=False)
        field.put(text)  # made visible: a draft comes from a session file, a path from a file name
        field.focus()

    # -- actions (keys and palette) ------------------------------------------------------------

    def action_open_image(self, compare: bool = False) -> None:
        """The image picker; the chosen image is opened (or, with `compare`, compared with the open one)."""
        current = self.conversation.image
        start = Path(current.source).parent if current and not is_url(current.source) else Path.cwd()

        def chosen(path: Path | None) -> None:
            if path is None:
                return
            if not (self.compare_image if compare else self.open_image)(str(path)):  # refused: kept to send later
                self.prefill_input(f"/compare {shlex.quote(str(path))}" if compare else str(path))

        self.push_screen(ImagePickerScreen(start, self.renderer, compare=compare), chosen)

    def action_paste_image(self) -> None:
        """Ctrl+V: /paste, the image on the system clipboard (reading it takes at most a few seconds)."""
        self.run_slash("/paste")

    def action_copy_answer(self) -> None:
        text = self.query_one(Transcript).last_answer(self.conversation.session)
        if not text:
            self.notify("There is no answer to copy yet.", severity="warning")
            return
        self.copy_to_clipboard(text)  # through the terminal (OSC 52): works over SSH, where it is allowed
        self._copy_with_a_tool(text)

    @work(thread=True, group="copy", exit_on_error=False)
    def _copy_with_a_tool(self, text: str) -> None:
        tool = copy_text(text)
        self.call_from_thread(self.notify, "Copied the last answer to the clipboard." if tool else (
            "Asked the terminal to copy the last answer (OSC 52). If it is not on your clipboard, install "
            "wl-clipboard or xclip, or let the terminal copy (tmux: set -g set-clipboard on)."), markup=False)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.conversation.settings.keys))

    def farewell(self) -> str | None:
        """What is said once the app has closed: where the chat was saved; None when nothing was asked."""
        conversation = self.conversation
        if not conversation.session.turns:
            return None
        if not conversation.saved:
            return "blip2-chat: The chat could not be saved (the app said why); its answers are lost."
        return saved_sentence(conversation.session.id)


def create_app(
    settings: Settings, *, image: LoadedImage | None = None, session: Session | None = None,
    store: SessionStore | None = None, engine_factory: EngineFactory | None = None, renderer: str = "auto",
    memory_probe: Callable[[], int] = process_memory_bytes, problems: Iterable[str] = (),
    finder: Finder | None = None, handle_signals: bool = False, news: Iterable[str] = (),
) -> ChatApp:
    """The chat app for the CLI and the tests.

    Args:
        settings: model, device, precision and decoding options.
        image: the image to talk about (a resumed session's own image is reopened when None).
        session: a saved session to go on with; a new one when None.
        store: where sessions are saved (default: the user's data directory).
        engine_factory: `(settings, progress) -> Engine`; the real model when None.
        renderer: image preview: "auto" (best the terminal has), "halfcell" or "none".
        memory_probe: bytes of memory in use, for the status line (tests pass a constant).
        problems: warnings to show at start (e.g. damaged session files the CLI set aside).
        news: information to show at start (which model a resumed chat goes on with, options given that win).
        finder: /find's search (default: the index in the data folder, with the chat's device and precision).
        handle_signals: SIGTERM and SIGHUP quit as Ctrl+Q does (the CLI's app; a test's only when it asks).
    """
    conversation = Conversation(settings, session, store or SessionStore(), image, think_ahead=True)
    return ChatApp(conversation, engine_factory or load_engine, renderer=renderer, memory_probe=memory_probe,
                   problems=problems, finder=finder or Finder.from_settings(settings), handle_signals=handle_signals,
                   news=news)


def run_tui(
    settings: Settings, *, image: LoadedImage | None = None, session: Session | None = None,
    problems: Iterable[str] = (), news: Iterable[str] = (),
) -> int:
    """Run the chat app in this terminal until the user quits (or SIGTERM or SIGHUP ends it, as Ctrl+Q does: the
    exit status is then 128 + the signal's number, 143 or 129, as when a signal ends a program)."""
    renderer = prepare_terminal_graphics()  # before Textual owns the terminal
    app = create_app(settings, image=image, session=session, problems=problems, news=news, renderer=renderer,
                     handle_signals=True)
    app.run()
    code = app.return_code or 0
    if (line := app.farewell()) is not None:
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP): the chat is saved all the same
            say(line)  # after the app has closed, where the terminal shows it
        if not app.conversation.saved:
            code = code or 2  # as the screen-reader mode: a chat that could not be saved is not a success
    if app.ended_by_signal is not None:
        code = 128 + app.ended_by_signal
    # Everything is saved by now. Quit while the model loads: do not wait for the load. After it
    # loaded: skip the interpreter's tear-down of torch, which keeps a closed app around for seconds.
    return exit_now(code, loaded=app.loading_in_background() or "torch" in sys.modules)
