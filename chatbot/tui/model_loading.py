"""Loading the model in the chat app: at start and for `/model NAME`, in a thread, with its progress on the status line.

Between `FindingApp` and `ImageOpeningApp`. The app opens at once; the model loads in a daemon thread
(`workers.DaemonCall`, so quitting never waits for it) and the worker only posts messages
(`chatbot.tui.messages`): its progress, the engine, or why it could not be loaded. Questions asked meanwhile
wait in line (`AnsweringApp.pending`) until it is ready. Nothing here imports torch: the default
`load_engine` imports the engine inside the loading worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from textual import work
from textual.css.query import NoMatches
from textual.worker import get_current_worker

from chatbot.core.commands import MODEL_HINT, goes_on_with
from chatbot.core.conversation import release_engine
from chatbot.core.runtime import check_chat_model_name, open_engine_for
from chatbot.core.settings import Settings
from chatbot.engine.base import Engine
from chatbot.errors import UserError, model_error_text
from chatbot.tui import messages as msg
from chatbot.tui.finding import FindingApp
from chatbot.tui.widgets.status_bar import StatusBar, memory_text
from chatbot.tui.workers import DaemonCall

EngineFactory = Callable[[Settings, Callable[[str], None]], Engine]


def load_engine(settings: Settings, progress: Callable[[str], None]) -> Engine:
    """The real model (imports torch, so only ever called inside the loading worker)."""
    return open_engine_for(settings, progress=progress)


class ModelLoadingApp(FindingApp):
    """Loads the model in the background (`engine_factory`), at start and for `/model`, and shows how it goes."""

    engine_factory: EngineFactory  # set by ChatApp
    memory_probe: Callable[[], int]  # set by ChatApp: bytes of memory in use, for the status line
    _model_progress = ""  # what the model's loading said last (shown beside an image opening)
    _loader: DaemonCall[Engine] | None = None
    _switching = False  # /model is loading another model

    def loading_in_background(self) -> bool:
        """True while a model load is still running in its daemon thread (the CLI exits without waiting)."""
        return self._loader is not None and self._loader.thread.is_alive()

    def loading_activity(self) -> str | None:
        """What the model's loading said last (or that it is loading) while it loads; None once it is loaded or
        failed. Shown beside an image that opens meanwhile."""
        if self.conversation.engine is not None or self.model_error:
            return None
        return self._model_progress or f"loading model {self.conversation.settings.model}…"

    def _refresh_memory(self) -> None:
        """The memory line, every 2 seconds; nothing once the screen is going away (the timer may fire then)."""
        bar = self._status_bar()
        if bar is not None:
            bar.set_memory(memory_text(self.conversation.engine, self.memory_probe))

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
            self.notice(f"{error} {goes_on_with(self.conversation)}", "error")
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
            if self.image_coming():
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
            self.notice(goes_on_with(self.conversation))
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
