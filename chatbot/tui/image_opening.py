"""Opening an image in the chat app (`/image`, the picker, a dropped path, a resumed chat's) and loading one to compare.

Between `ModelLoadingApp` and `CommandsAndKeysApp`. An image loads (or downloads) in a thread worker that only posts
messages; while it opens, the status line says so with the key that stops it, and questions sent meanwhile wait
to be asked about it. An image chosen while an answer streams is applied when the answer (and the comparison
`/compare` armed for it) ends. What a new image means for the chat (`switch_image`, `compare_with`) is decided
in `chatbot.core.commands`; this shows it.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import work
from textual.message import Message
from textual.widgets import Static
from textual.worker import get_current_worker

from chatbot.core.commands import Outcome, compare_with, load_chosen_image, switch_image
from chatbot.core.resume import reopen_image
from chatbot.core.session import ImageRef
from chatbot.errors import UserError
from chatbot.images import LoadedImage
from chatbot.tui import messages as msg
from chatbot.tui.model_loading import ModelLoadingApp
from chatbot.tui.widgets.image_preview import ImagePreview
from chatbot.tui.widgets.status_bar import StatusBar
from chatbot.tui.widgets.transcript import image_label


class ImageOpeningApp(ModelLoadingApp):
    """Opens images in a worker (`open_image`, `compare_image`), shows them in the preview, and lets Esc stop one."""

    _deferred_image: LoadedImage | None = None  # chosen while an answer streamed
    _opening: str | None = None  # the image being opened (loaded or downloaded) now

    @dataclass
    class ComparedImageLoaded(Message):
        """The image to compare with was loaded (`image`), or not (`problem` says why)."""

        image: LoadedImage | None
        problem: str = ""

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

    def image_coming(self) -> bool:
        return self._opening is not None

    def reopen_session_image(self, ref: ImageRef) -> None:
        """A resumed chat's image, opened again at start (from the file it was saved with, checked by its sha256)."""
        self._opening = ref.source
        self._reopen_image(ref.source, ref.sha256)

    def render_outcome(self, outcome: Outcome) -> bool:  # ChatApp's: shows what switching or comparing did
        raise NotImplementedError

    # -- workers (threads: they only post messages) -------------------------------------------

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
        image, problem = reopen_image(ImageRef(source, sha256), f"/image PATH or {self.open_key()}",
                                      cancel=lambda: worker.is_cancelled,
                                      from_elsewhere=self.conversation.session.from_elsewhere)
        if worker.is_cancelled:
            return
        self.post_message(msg.ImageReady(image, resumed=True) if image else msg.ImageFailed(problem or ""))

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

    # -- while it opens ----------------------------------------------------------------------------

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
        if (loading := self.loading_activity()) is not None:
            text += f"; {loading}"
        self.query_one(StatusBar).set_activity(text, busy=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_answer" and self._opening is not None:
            return True  # Esc also stops an image that is still opening (a slow download)
        return super().check_action(action, parameters)

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

    def _opened(self) -> None:
        self._opening = None
        self.refresh_bindings()

    # -- opened (or not) ---------------------------------------------------------------------------

    def on_image_ready(self, message: msg.ImageReady) -> None:
        if self.quitting:  # the screen is going away: change nothing on it
            return
        self._opened()
        if self.streaming():  # never under an answer: applied when it ends (the questions sent meanwhile wait for it)
            self._deferred_image = message.image
            return
        self._apply_image(message.image, message.resumed)

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

    def on_image_opening_app_compared_image_loaded(self, message: ComparedImageLoaded) -> None:
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
