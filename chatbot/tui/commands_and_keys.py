"""What the person asks of the chat app: a line sent from the input box, and the app's keys.

Between `ImageOpeningApp` and `ChatApp`. Enter sends the input's line: an image path opens it, a `/command` runs
in the core (`run_command`) and its `Outcome` is rendered here (`render_outcome`: notices, and what only the app
can do), anything else is a question. A character typed or a paste while the focus is elsewhere goes to the
input box. The keys' actions (the picker, Ctrl+V, Ctrl+Y, help, Ctrl+C) are here too; `ChatApp.BINDINGS`
binds them.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from textual import events, on, work
from textual.widgets import Input

from chatbot.core.clipboard_copy import copy_text
from chatbot.core.commands import Outcome, failure_text, is_command, question_text, run_command
from chatbot.images import is_url
from chatbot.tui.image_opening import ImageOpeningApp
from chatbot.tui.screens.file_picker import ImagePickerScreen
from chatbot.tui.screens.help import HelpScreen
from chatbot.tui.widgets.chat_input import (
    COMPLETION_NOTICE_SECONDS,
    ChatInput,
    image_source_in,
    typed_character,
)
from chatbot.tui.widgets.transcript import Transcript
from chatbot.untrusted import visible


class CommandsAndKeysApp(ImageOpeningApp):
    """Sends the input's lines (questions, image paths, /commands, whose outcomes it renders) and acts on keys."""

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

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "paste_image" and self.screen is not self.screen_stack[0]:
            return False  # over the picker or the help, Ctrl+V is theirs
        allowed = super().check_action(action, parameters)
        if action == "cancel_answer" and not allowed:
            return False  # nothing to stop: left out of the footer (greyed out, it took room from the help key)
        return allowed

    def action_interrupt(self) -> None:
        if self.answer is not None or self.image_coming():
            self.action_cancel_answer()
        else:
            self.action_help_quit()

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
