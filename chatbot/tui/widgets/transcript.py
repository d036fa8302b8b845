"""The conversation on screen: one bubble per question and answer, and one-line notices between them.

The transcript mirrors `Session.turns` pair by pair (`pairs`), so `/undo` and `/retry` can act on
the last bubbles and a finished answer can be re-synced from the turn that was actually recorded.
A turn's question asked about other images too (`/compare`) shows below its answer as a
`ComparisonView`: the open image's answer beside the other image's, each headed by its image's name.

A long chat shows its newest `SHOWN_TURNS` turns only (`hidden` counts the turns before them), with one line at the
top saying how many are saved and not shown, and that `/export md` or `/export html` writes them all: every bubble
is a widget that each layout pass and each mount walks, so a resumed chat of thousands of turns took minutes to open
(mounted one by one: each mount walked the bubbles already there) and made every question slower. What is shown is
mounted in one batch; a chat that grows to `SHOWN_TURNS + TRIM_STEP` turns in the app lets its oldest bubbles go, and
`/undo` past the first turn shown brings earlier ones back. `pairs` mirrors the shown turns, `Session.turns[hidden:]`.

Tab from a question brings the focus here, to read back with the keys (the arrows, PageUp/PageDown, Home/End);
a bar down the chat's left edge shows it has the focus. Nothing typed here is lost: a character or a paste goes on
in the input box (the app moves it there), and Enter or Esc go back to the input (Esc also still stops an answer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath

from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Static

from chatbot.core.comparison import image_labels
from chatbot.core.session import EMPTY_ANSWER, ComparedAnswer, Session, Turn
from chatbot.images import is_url, public_url
from chatbot.tui.workers import RepaintPace, StreamBuffer
from chatbot.untrusted import visible

PENDING_TEXT = "…"  # shown in an answer bubble until its first chunk arrives
# A streaming answer is laid out again, whole, each time it grows: at most this often, so that
# repainting never takes the interpreter from the model's thread for long (the tokens in between are
# shown together at the next repaint).
REPAINTS_PER_SECOND = 10
SHOWN_TURNS = 150  # the newest turns of a chat shown (a resumed one, or one grown long in the app)
TRIM_STEP = 50  # a chat grown to SHOWN_TURNS + TRIM_STEP turns on screen lets this many of its oldest go at once


class MessageBubble(Static):
    """One question or answer, with its role as the border title; answers grow chunk by chunk."""

    def __init__(self, text: str, role: str, label: str) -> None:
        super().__init__(visible(text) or PENDING_TEXT, markup=False, classes=f"bubble {role}")
        self.role = role
        self.text = text
        self.border_title = Content(visible(label))  # a file name may hold "[": never read as markup
        self.set_class(not text and role == "answer", "-pending")
        self._pace = RepaintPace(REPAINTS_PER_SECOND)
        self._repaint: Timer | None = None

    def append(self, chunk: str) -> None:
        """Add streamed text (plain text: model output is never read as markup)."""
        self.set_text(self.text + chunk)

    def show_streamed(self, buffer: StreamBuffer) -> None:
        """More streamed text waits in `buffer`: show it now, or at the next repaint the pace allows."""
        if self._repaint is not None:  # a repaint is due already: it shows this too
            return
        delay = self._pace.wait()
        if delay > 0:
            self._repaint = self.set_timer(delay, lambda: self._repaint_due(buffer), name="repaint")
        else:
            self.flush(buffer)

    def _repaint_due(self, buffer: StreamBuffer) -> None:
        self._repaint = None  # this timer has fired: nothing to stop
        self.flush(buffer)

    def flush(self, buffer: StreamBuffer) -> None:
        """Show all that `buffer` holds now (when the stream ends, before the recorded text replaces it)."""
        self.stop_streaming()
        text = buffer.take()
        if text:
            self.append(text)
            self._pace.painted()

    def stop_streaming(self) -> None:
        """Drop the repaint still due, if any (the stream ended; what it would show is shown otherwise)."""
        if self._repaint is not None:
            self._repaint.stop()
            self._repaint = None

    def set_text(self, text: str) -> None:
        self.text = text
        self.remove_class("-pending")
        self.update(visible(text) or PENDING_TEXT)

    def mark(self, subtitle: str, css_class: str = "") -> None:
        """A small note under the bubble ("stopped", "12.5 tok/s"); `css_class` colours it."""
        self.border_subtitle = subtitle
        for name in ("-stopped", "-waiting", "-failed"):
            self.set_class(name == css_class, name)


class Notice(Static):
    """A one-line notice in the transcript: image switches, left-out turns, errors."""

    ICONS = {"info": "ℹ", "warning": "⚠", "error": "✖"}

    def __init__(self, text: str, kind: str = "info") -> None:
        super().__init__(f"{self.ICONS.get(kind, 'ℹ')} {visible(text)}", markup=False, classes=f"notice -{kind}")
        self.text = text
        self.kind = kind


class EarlierTurns(Notice):
    """The first line of a long chat: how many earlier turns are saved but not shown, and how to read them."""

    def __init__(self, count: int) -> None:
        super().__init__(earlier_turns_text(count))
        self.count = count

    def set_count(self, count: int) -> None:
        self.count = count
        self.text = earlier_turns_text(count)
        self.update(f"{self.ICONS['info']} {self.text}")


def earlier_turns_text(count: int) -> str:
    turns = "turn is" if count == 1 else "turns are"
    return (f"{count} earlier {turns} saved but not shown here; /export md or /export html writes the whole chat "
            "to read.")


class ComparisonView(Horizontal):
    """One turn's question about two images: the open image's answer (left) beside another image's (right).

    The app streams the right column by posting `Chunk`s to the view; `Finished` then goes up to the app.
    """

    class Chunk(Message, bubble=False):
        """More of the other image's answer waits in `buffer` (posted by the app's worker)."""

        def __init__(self, buffer: StreamBuffer) -> None:
            super().__init__()
            self.buffer = buffer

    class Finished(Message):
        """The other image's answer ended (or failed: `error` is the notice to show)."""

        def __init__(self, view: ComparisonView, error: str | None = None) -> None:
            super().__init__()
            self.view = view
            self.error = error

    def __init__(self, labels: tuple[str, str], sha256: str) -> None:
        super().__init__(classes="comparison")
        self.labels = labels  # as given (text from outside); the bubbles show them made visible
        self.sha256 = sha256  # the other image's: which `Turn.compared` entry this view shows
        self.first = MessageBubble("", "answer", labels[0])
        self.second = MessageBubble("", "answer", labels[1])

    def compose(self) -> ComposeResult:
        yield self.first
        yield self.second

    def on_comparison_view_chunk(self, message: Chunk) -> None:
        self.second.show_streamed(message.buffer)

    def show(self, turn: Turn, compared: ComparedAnswer | None) -> None:
        """Both answers as the turn recorded them (`compared` None: the right one is still to come)."""
        _show_answer(self.first, turn.answer, turn.stopped)
        if compared is None:
            self.second.set_text("")
            self.second.mark("")
            self.second.add_class("-pending")
        else:
            _show_answer(self.second, compared.answer, compared.stopped)


@dataclass
class BubblePair:
    question: MessageBubble
    answer: MessageBubble
    comparisons: list[ComparisonView] = field(default_factory=list)  # below the answer, oldest first


class Transcript(VerticalScroll):
    """Scrolls with the conversation; stays at the bottom while an answer streams unless the user scrolls up."""

    DEFAULT_CSS = """
    Transcript:focus {
        outline-left: thick $accent;
        background-tint: $foreground 4%;
    }
    """
    BINDINGS = [
        Binding("enter", "back_to_input", "Back to the input", show=False),
        Binding("escape", "back_to_input(True)", "Back to the input", show=False),
    ]
    INPUT = "#input"  # where Enter and Esc take the focus back to (a sibling: found on the screen by its id)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.pairs: list[BubblePair] = []
        self.assistant_label = "BLIP-2"
        self.hidden = 0  # the chat's turns before the first shown (Session.turns[:hidden]): saved, not on screen
        self._earlier: EarlierTurns | None = None  # the line that says so (the first child while hidden > 0)

    def on_mount(self) -> None:
        self.anchor()

    def action_back_to_input(self, key_goes_on: bool = False) -> None:
        """Enter, Esc: the focus goes back to the input box, its text as it was. `key_goes_on`: the key then does
        what it does anywhere in the app too (Esc stops an answer that is coming)."""
        box = self.screen.query_one_optional(self.INPUT)  # by id: a query of all would walk every bubble
        if box is not None:
            box.focus()
        if key_goes_on:
            raise SkipAction()

    def add_question(self, text: str) -> MessageBubble:
        bubble = MessageBubble(text, "question", "You")
        self.mount(bubble)
        return bubble

    def add_answer(self, question: MessageBubble, text: str = "") -> MessageBubble:
        """The answer bubble for `question`, empty (pending) until chunks arrive; both become the last pair."""
        bubble = MessageBubble(text, "answer", self.assistant_label)
        self.mount(bubble, after=question)
        self.pairs.append(BubblePair(question, bubble))
        return bubble

    def add_notice(self, text: str, kind: str = "info", before: Static | None = None) -> Notice:
        notice = Notice(text, kind)
        self.mount(notice, before=before)
        return notice

    def remove_pair(self, pair: BubblePair) -> None:
        if pair in self.pairs:
            self.pairs.remove(pair)
        pair.question.remove()
        pair.answer.remove()
        for view in pair.comparisons:
            view.remove()

    def undo_last(self, session: Session) -> None:
        """/undo removed the session's last turn: its bubbles go. Undoing the first turn shown brings the newest of
        the earlier ones (`SHOWN_TURNS`) on screen, so that the last turn of the chat is always shown."""
        if self.pairs:
            self.remove_pair(self.pairs[-1])
        elif self.hidden:
            self.hidden -= 1
        if not self.pairs and self.hidden:
            self.show_earlier(session)
        self._say_hidden()

    def last_answer(self, session: Session | None = None) -> str:
        """The latest answer with words in it (Ctrl+Y copies it): a last turn the model said nothing to, or that was
        stopped before a word, leaves the one before it to copy, also one of `session`'s turns not shown. "" when
        no answer has words."""
        for pair in reversed(self.pairs):
            if pair.answer.text.strip():
                return pair.answer.text
        turns = session.turns if session is not None else []
        for index in range(min(self.hidden, len(turns)) - 1, -1, -1):
            if turns[index].answer.strip():
                return turns[index].answer
        return ""

    def show_turn(self, turn: Turn, pair: BubblePair | None = None) -> BubblePair:
        """Show a recorded turn, in new bubbles or (after streaming) in `pair`'s, exactly as stored."""
        if pair is None:
            pair, widgets = self._new_pair(turn)
            self.mount(*widgets)
            self.pairs.append(pair)
            return pair
        pair.question.set_text(turn.question)
        pair.answer.set_text(turn.answer)
        if not turn.answer:  # the model said nothing (or was stopped before a word): say so, not "…"
            pair.answer.update(EMPTY_ANSWER)
            pair.answer.add_class("-pending")
        if turn.stopped:
            pair.answer.mark("stopped", "-stopped")
        recorded = {compared.image.sha256: compared for compared in turn.compared}
        for view in [view for view in pair.comparisons if view.sha256 not in recorded]:  # a stream that gave nothing
            pair.comparisons.remove(view)
            view.remove()
        for compared in turn.compared:
            self.comparison(pair, turn, compared.image.source, compared.image.sha256).show(turn, compared)
        return pair

    def _new_pair(self, turn: Turn) -> tuple[BubblePair, list[Widget]]:
        """New bubbles showing `turn` as stored (not mounted yet: the caller mounts them, many at once)."""
        pair = BubblePair(MessageBubble(turn.question, "question", "You"),
                          MessageBubble(turn.answer, "answer", self.assistant_label))
        _show_answer(pair.answer, turn.answer, turn.stopped)
        for compared in turn.compared:
            view = ComparisonView(image_labels(turn.image.source if turn.image else "", compared.image.source),
                                  compared.image.sha256)
            view.show(turn, compared)
            pair.comparisons.append(view)
        return pair, [pair.question, pair.answer, *pair.comparisons]

    def comparison(self, pair: BubblePair, turn: Turn, source: str, sha256: str) -> ComparisonView:
        """The view below `pair` comparing its turn with the image `source` (a new one at the end if none yet)."""
        for view in pair.comparisons:
            if view.sha256 == sha256:
                return view
        view = ComparisonView(image_labels(turn.image.source if turn.image else "", source), sha256)
        self.mount(view, after=pair.comparisons[-1] if pair.comparisons else pair.answer)
        pair.comparisons.append(view)
        return view

    def show_session(self, session: Session) -> None:
        """Show a resumed session's newest `SHOWN_TURNS` turns (with the line saying how many earlier ones are not
        shown), with a notice wherever the image changed or /clear cut the context; all mounted at once."""
        count = len(session.turns)
        self.hidden = max(0, count - SHOWN_TURNS)
        widgets, self.pairs = self._turns_shown(session, self.hidden, count)
        if count:
            widgets.append(Notice(f"Resumed session {session.id} ({count} turn{'' if count == 1 else 's'})."))
        if self.hidden:
            self._earlier = EarlierTurns(self.hidden)
            widgets.insert(0, self._earlier)
        if widgets:
            self.mount(*widgets)

    def show_earlier(self, session: Session) -> None:
        """Bring the newest `SHOWN_TURNS` of the turns not shown on screen (or all, when fewer) above those shown."""
        start = max(0, self.hidden - SHOWN_TURNS)
        widgets, pairs = self._turns_shown(session, start, self.hidden)
        self.pairs[:0] = pairs
        self.hidden = start
        if widgets and self._earlier is not None:
            self.mount(*widgets, after=self._earlier)
        elif widgets:
            self.mount(*widgets)
        self._say_hidden()

    def _turns_shown(self, session: Session, start: int, stop: int) -> tuple[list[Widget], list[BubblePair]]:
        """The widgets showing turns start..stop-1, with their notices (the image of the first, image switches,
        /clear), and their pairs."""
        widgets: list[Widget] = []
        pairs: list[BubblePair] = []
        current = None
        for index in range(start, stop):
            turn = session.turns[index]
            if turn.image is not None and turn.image != current:
                current = turn.image
                widgets.append(Notice(f"Image: {image_label(turn.image.source)}"))
            elif index == session.context_start and index:
                widgets.append(Notice("Context cleared: later questions start fresh."))
            pair, shown = self._new_pair(turn)
            widgets += shown
            pairs.append(pair)
        return widgets, pairs

    def keep_bounded(self) -> None:
        """A chat grown long in the app (`SHOWN_TURNS + TRIM_STEP` turns shown) lets its oldest `TRIM_STEP` turns'
        bubbles go, with the notices before them, in one batch; the line at the top counts them."""
        if len(self.pairs) < SHOWN_TURNS + TRIM_STEP:
            return
        dropped, self.pairs = self.pairs[:TRIM_STEP], self.pairs[TRIM_STEP:]
        going: set[Widget] = {widget for pair in dropped for widget in (pair.question, pair.answer, *pair.comparisons)}
        last = dropped[-1].comparisons[-1] if dropped[-1].comparisons else dropped[-1].answer
        removed: list[Widget] = []
        for child in self.children:
            if child in going or (isinstance(child, Notice) and child is not self._earlier):
                removed.append(child)
            if child is last:
                break
        self.remove_children(removed)
        self.hidden += len(dropped)
        self._say_hidden()

    def _say_hidden(self) -> None:
        """The line at the top counts the turns not shown (and goes when there are none)."""
        if self.hidden and self._earlier is None:
            self._earlier = EarlierTurns(self.hidden)
            if self.children:
                self.mount(self._earlier, before=0)
            else:
                self.mount(self._earlier)
        elif self._earlier is not None and not self.hidden:
            self._earlier.remove()
            self._earlier = None
        elif self._earlier is not None and self._earlier.count != self.hidden:
            self._earlier.set_count(self.hidden)


def _show_answer(bubble: MessageBubble, answer: str, stopped: bool) -> None:
    bubble.set_text(answer)
    if not answer:
        bubble.update(EMPTY_ANSWER)
        bubble.add_class("-pending")
    bubble.mark("stopped" if stopped else "", "-stopped" if stopped else "")


def image_label(source: str) -> str:
    """A file's name (URLs as given): short enough for a notice or a caption."""
    return public_url(source) if is_url(source) else PurePath(source).name
