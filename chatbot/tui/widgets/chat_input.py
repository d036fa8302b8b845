"""The input box: questions and /commands; a pasted or dropped image path (or web address) switches the image.

Terminals "drop" a file by pasting its path, often quoted or with escaped spaces, sometimes as a
file:// URI; `image_path_in` undoes all three. A pasted http(s) address opens as `/image URL` does
(`image_source_in`). Up and Down recall earlier lines, as in a shell, also those of earlier chats: each line sent
with Enter goes into the line history file the screen-reader mode keeps (`chatbot.core.line_history`: private to
the user, never through a link, its last lines only), and the box reads it when it is mounted. As in readline (with
`revert-all-at-newline`), browsing never loses a line: the one being typed when Up was first pressed comes back when
Down passes the newest line, an earlier line edited and left keeps its edit until a line is sent, and sending puts
every recalled line back as it was. Text the app puts in the box over a typed line (`set_aside`) becomes Up's newest
line, in memory only: it was never sent, so it stays out of the history file.
Text from outside (a resumed chat's draft and questions, a paste) enters the box made visible
(`chatbot.untrusted.visible`): Input draws its value as it is, so a control character in it would reach
the terminal.
Tab completes a /command's name and the path after `/image` (the rule is `core.completion`); on any
other line Tab moves the focus, as everywhere in the app (and typing anywhere brings it back, see the app).
The chat scrolls from here too (PageUp, PageDown), so reading back never needs the focus to leave the box.
Coming back to the box (Tab, a typed key, a click) finds its text as it was, the cursor at its end and nothing
selected: a selection left from before (a refused line, kept selected so that the next line replaces it) was not
on screen while the focus was away, so a key typed on coming back must add to the text, not replace it.

Keys are applied in the order they came, however fast: Textual's Input inserts a typed character as soon
as the key reaches it, but runs its bindings (Backspace, the arrows, Ctrl+U, Enter) only after the key
has bubbled up to the app and back, so in a burst (a paste of keystrokes, a laggy link) characters typed
after a Backspace were inserted before it ran. Here the box's own bindings run the moment their key arrives.

What a key types is `typed_character`: a printable character, or one of the joiners that scripts and emoji
need (Persian's zero-width non-joiner in می‌خواهم, the zero-width joiner of 👨‍👩‍👧). Python counts those as
unprintable, so Textual's Input dropped them when typed, though a paste kept them.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from textual import events
from textual.actions import SkipAction
from textual.binding import Binding
from textual.containers import ScrollableContainer
from textual.message import Message
from textual.widgets import Input
from textual.widgets.input import Selection

from chatbot.core.commands import is_command
from chatbot.core.completion import completion, listing
from chatbot.core.line_history import HISTORY_LINES, LineHistory
from chatbot.core.settings import APP_KEYS
from chatbot.images import IMAGE_SUFFIXES, is_url
from chatbot.locations import line_history_file
from chatbot.untrusted import has_controls, visible

COMPLETION_NOTICE_SECONDS = 4.0
# Format characters typed as text: zero-width non-joiner and joiner. (Variation selectors are printable
# already.) Nothing else invisible is taken from the keyboard: no controls, no bidirectional overrides.
TYPED_JOINERS = frozenset("\u200c\u200d")


def typed_character(event: events.Key) -> str | None:
    """The character `event` types into the box (a printable one or a joiner); None for any other key."""
    character = event.character
    if character is None or not (event.is_printable or character in TYPED_JOINERS):
        return None
    return character


def image_path_in(text: str) -> Path | None:
    """The image file `text` names when it is nothing but a path (quoted, escaped or file://), else None."""
    text = text.strip()
    if not text or "\n" in text:
        return None
    if text.startswith("file://"):
        return _image_file(unquote(urlparse(text).path))
    literal = _image_file(text)  # some terminals paste a path with spaces as it is
    if literal is not None:
        return literal
    try:
        words = shlex.split(text)  # 'My Photo.jpg', "a b.png", My\ Photo.jpg
    except ValueError:
        return None
    return _image_file(words[0]) if len(words) == 1 else None


def image_source_in(text: str) -> str | None:
    """What `text` opens as the image when it is nothing but an image's address: an http(s) link, as
    `/image URL` takes it (whether it is a picture shows when it loads), or an image file's path
    (`image_path_in`); else None."""
    text = text.strip()
    if is_url(text) and len(text.split()) == 1:
        return text
    path = image_path_in(text)
    return str(path) if path is not None else None


def _image_file(candidate: str) -> Path | None:
    path = Path(candidate).expanduser()
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    try:
        return path.resolve() if path.is_file() else None
    except OSError:
        return None


class ChatInput(Input):
    """Enter sends; a pasted image path becomes an image switch instead of text."""

    BINDINGS = [
        # the keys the config file may not take for an action (chatbot.core.settings.APP_KEYS: declared once there)
        Binding(APP_KEYS["earlier_line"][0], "recall(-1)", "Previous line", show=False),
        Binding(APP_KEYS["later_line"][0], "recall(1)", "Next line", show=False),
        Binding(APP_KEYS["complete"][0], "complete", "Complete", show=False),
        Binding(APP_KEYS["page_up"][0], "page_chat(-1)", "Scroll the chat up", show=False),
        Binding(APP_KEYS["page_down"][0], "page_chat(1)", "Scroll the chat down", show=False),
    ]
    CHAT = "#transcript"  # the chat that PageUp and PageDown scroll (a sibling: found on the screen by its id)

    @dataclass
    class ImageDropped(Message):
        """An image file's path or an http(s) link was pasted (or dropped) into the empty input."""

        source: str

    def __init__(self, *, id: str | None = None) -> None:
        # coming back to the box (Tab, a click) leaves the text as it was: selected, the next key would replace it
        super().__init__(placeholder="Ask about the image, or type /help", id=id, select_on_focus=False)
        self.history: list[str] = []
        self._recall_index = 0  # the line shown: an index into `history`, or len(history) for the line being typed
        self._edits: dict[int, str] = {}  # recall index -> the text left there while browsing (readline's undo)
        self._offered: tuple[str, ...] = ()  # the lines the last Tab listed; another Tab steps through them
        self._offered_at = -1
        self._left = ""  # the value the last Tab left (typing anything else ends the stepping)
        self._stored: LineHistory | None = None  # the line history file, once mounted

    def on_mount(self) -> None:
        """Earlier chats' lines become Up's oldest ones (before any this chat remembered already)."""
        self._stored = LineHistory(line_history_file(), self._history_not_kept)
        earlier, now = self._stored.read(), self.history
        self.history = []
        self.remember_all([*earlier, *now])

    def _history_not_kept(self, sentence: str) -> None:
        self.app.notify(visible(sentence.removeprefix("blip2-chat: ")), severity="warning", markup=False)

    def remember(self, line: str) -> None:
        """Keep a line for Up/Down recall, once: a line said again moves to the end. A resumed chat's saved
        questions and the history file come from files, so every line is kept made visible."""
        line = visible(line)
        if line:
            if line in self.history:
                self.history.remove(line)
            self.history.append(line)
            del self.history[:-HISTORY_LINES]  # the newest, as the history file keeps them
        self._stop_browsing()

    def remember_all(self, lines: Iterable[str]) -> None:
        """`remember` each of `lines` in turn, in one pass (a long chat resumed gives a thousand at once: one by one,
        each looked for the line among all kept before it)."""
        kept: dict[str, None] = dict.fromkeys(self.history)
        for line in map(visible, lines):
            if line:
                kept.pop(line, None)  # said again: moves to the end
                kept[line] = None
        self.history = list(kept)[-HISTORY_LINES:]
        self._stop_browsing()

    def _stop_browsing(self) -> None:
        """Up starts again from the line being typed; recalled lines are as they were (edits left there dropped)."""
        self._recall_index = len(self.history)
        self._edits = {}

    async def action_submit(self) -> None:
        """Enter: the line goes into the history file now (a chat ended any way keeps it), then is sent."""
        line = self.value.strip()
        if line and self._stored is not None:
            self._stored.add([line])
        await super().action_submit()

    def action_page_chat(self, pages: int) -> None:
        """PageUp, PageDown: scroll the chat a page, the focus staying here."""
        chat = self.screen.query_one_optional(self.CHAT, ScrollableContainer)  # by id: no walk through the chat
        if chat is not None:
            if pages < 0:
                chat.scroll_page_up()
            else:
                chat.scroll_page_down()

    def _on_focus(self, event: events.Focus) -> None:
        if not event.from_app_focus:  # moved here within the app (not the terminal window coming back)
            self.selection = Selection.cursor(len(self.value))

    def put(self, text: str) -> None:
        """Make `text` the value, made visible (a saved draft, a question given back), the cursor at its end; it is
        the line being typed now (Up starts again from it)."""
        self.value = visible(text)
        self.cursor_position = len(self.value)
        self._stop_browsing()

    def set_aside(self) -> bool:
        """Keep what was typed and not sent (the line in the box, and the line set aside by browsing with Up) as
        Up's newest lines, in memory only, before the app puts other text in the box; True when there was any."""
        self._edits[self._recall_index] = self.value
        typed = [text for index, text in sorted(self._edits.items(), key=lambda item: item[0] == self._recall_index)
                 if text.strip() and (index >= len(self.history) or text != self.history[index])]
        for text in typed:
            self.remember(text.strip())
        self._stop_browsing()
        return bool(typed)

    def action_recall(self, step: int) -> None:
        """Up, Down: an earlier or later line. What is left on a line comes back when browsing returns to it (the
        line being typed, below the newest, included), until a line is sent."""
        index = max(0, min(len(self.history), self._recall_index + step))
        if index == self._recall_index:
            return  # at either end: nothing changes (Down on the line being typed keeps it)
        self._edits[self._recall_index] = self.value
        self._recall_index = index
        if index in self._edits:
            self.value = self._edits[index]
        else:
            self.value = self.history[index] if index < len(self.history) else ""
        self.cursor_position = len(self.value)

    def action_complete(self) -> None:
        """Tab: complete a /command line (see `core.completion`); any other line leaves Tab to move the focus."""
        if not is_command(self.value):
            raise SkipAction()
        if self._offered and self.value == self._left:  # Tab again: the next candidate, round and round
            self._offered_at = (self._offered_at + 1) % len(self._offered)
            self._show(self._offered[self._offered_at])
            return
        result = completion(self.value)
        self._offered, self._offered_at = (), -1
        if not result.candidates:
            self.app.bell()
            self._left = self.value
            return
        self._show(result.line)
        if not result.unique:
            self._offered = tuple(candidate.line for candidate in result.candidates)
            self.app.notify(visible(listing(result.candidates)), title=f"{len(result.candidates)} matches",
                            timeout=COMPLETION_NOTICE_SECONDS, markup=False)

    def _show(self, line: str) -> None:
        self.value = line
        self.cursor_position = len(line)
        self._left = line

    async def _on_key(self, event: events.Key) -> None:
        if event.is_printable:
            return  # Input's own handler inserts it
        joiner = typed_character(event)
        if joiner is not None:  # Input's handler would drop it: inserted here, as Input inserts the others
            event.prevent_default()
            event.stop()
            if self.selection.is_empty:
                self.insert_text_at_cursor(joiner)
            else:
                self.replace(joiner, *self.selection)
            return
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            if await self.app.run_action(binding.action, self):
                event.prevent_default()  # handled: neither Input's handler nor the app's binding check sees it
                event.stop()
                return

    def _on_paste(self, event: events.Paste) -> None:
        # Textual calls every class's handler in turn: returning leaves the paste to Input's own.
        source = image_source_in(event.text) if not self.value.strip() else None
        if source is not None:
            event.prevent_default()
            event.stop()
            self.post_message(self.ImageDropped(source))
            return
        lines = [line.strip() for line in event.text.splitlines() if line.strip()]
        if len(lines) < 2 and not has_controls("".join(lines)):
            return
        # Input keeps only a paste's first line (and draws control characters raw): here the lines become
        # one, made visible, and a notice says when lines were joined
        event.prevent_default()
        event.stop()
        joined = visible(" ".join(lines))
        if self.selection.is_empty:
            self.insert_text_at_cursor(joined)
        else:
            self.replace(joined, *self.selection)
        if len(lines) > 1:
            self.app.notify(f"The {len(lines)} pasted lines were joined into one, with spaces.",
                            timeout=COMPLETION_NOTICE_SECONDS, markup=False)
