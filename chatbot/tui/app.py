"""The chat app: image preview, streamed transcript, input, status line; the model loads in the background.

`create_app` builds it for the CLI and for the tests alike (as posting does), with an injectable
engine factory so tests run it on a `ScriptedEngine` or a synthetic checkpoint. Nothing here
imports torch: the default factory imports the engine inside the loading worker.

Threads: model loading, image loading and answering run in thread workers that only post
messages (`chatbot.tui.messages`); widgets change when the app handles them. `ChatApp` is the layout,
the keys and the start-up; its base classes, in one line, hold the rest: the answering half in
`chatbot.tui.answering`, `/compare`'s streaming in `chatbot.tui.comparing`, `/find` in `chatbot.tui.finding`,
loading the model in `chatbot.tui.model_loading`, opening images in `chatbot.tui.image_opening`, and what a
line sent or a key does (rendering command outcomes) in `chatbot.tui.commands_and_keys`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Static

from chatbot.core.commands import NO_IMAGE_YET, saved_sentence, typed_line
from chatbot.core.conversation import Conversation
from chatbot.core.line_history import HISTORY_LINES
from chatbot.core.photo_search import Finder
from chatbot.core.runtime import exit_now, say
from chatbot.core.session import Session
from chatbot.core.settings import APP_KEYS, KEY_ACTIONS, Settings
from chatbot.core.store import SessionStore
from chatbot.errors import UserError
from chatbot.images import LoadedImage
from chatbot.tui import messages as msg
from chatbot.tui.commands_and_keys import CommandsAndKeysApp
from chatbot.tui.model_loading import EngineFactory, load_engine
from chatbot.tui.palette import SlashCommandProvider
from chatbot.tui.terminal_gone import driver_class_for
from chatbot.tui.themes import HIGH_CONTRAST
from chatbot.tui.widgets.chat_input import ChatInput
from chatbot.tui.widgets.image_preview import ImagePreview, prepare_terminal_graphics
from chatbot.tui.widgets.status_bar import StatusBar, process_memory_bytes
from chatbot.tui.widgets.transcript import Transcript
from chatbot.untrusted import visible


class ChatApp(CommandsAndKeysApp, inherit_bindings=False):
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

    # -- layout and start-up -----------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="sidebar"):
                yield ImagePreview(self.renderer, id="preview",
                                   empty_text=f"No image yet.\nType /image PATH or press {self.open_key()}.")
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
            self.reopen_session_image(ref)
        else:  # `blip2-chat chat` without an image: choose one
            self.notice(f"{NO_IMAGE_YET} Choose one here (Esc closes the picker; {self.open_key()} opens it again).")
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

    @work(thread=True, group="store", exit_on_error=False)
    def _scan_store(self) -> None:
        store = self.conversation.store
        if store is None:
            return
        with contextlib.suppress(OSError, UserError):
            store.summaries()  # sets damaged files aside
        if store.problems:
            self.post_message(msg.StoreProblems(list(store.problems)))

    def on_store_problems(self, message: msg.StoreProblems) -> None:
        if self.quitting:  # the screen is going away: change nothing on it
            return
        for problem in message.problems:
            self.notice(problem, "warning")

    def farewell(self) -> str | None:
        """What is said once the app has closed: where the chat was saved; None when nothing was asked."""
        conversation = self.conversation
        if not conversation.session.turns:
            return None
        if not conversation.saved:
            return "blip2-chat: The chat could not be saved (the app said why); its answers are lost."
        return saved_sentence(conversation.session.id, conversation.store)  # --continue, or --resume ID


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
