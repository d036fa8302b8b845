"""The conversation on screen: one bubble per question and answer, and one-line notices between them.

The transcript mirrors `Session.turns` pair by pair (`pairs`), so `/undo` and `/retry` can act on
the last bubbles and a finished answer can be re-synced from the turn that was actually recorded.
The bubbles and notices are in `chatbot.tui.widgets.bubbles`; a turn's question asked about other images too
(`/compare`) shows below its answer as a `ComparisonView` (`chatbot.tui.widgets.comparison_view`).

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
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Static

from chatbot.core.comparison import image_labels
from chatbot.core.session import CONTEXT_CLEARED, EMPTY_ANSWER, Session, Turn
from chatbot.images import is_url, public_url
from chatbot.tui.widgets.bubbles import EarlierTurns, MessageBubble, Notice
from chatbot.tui.widgets.comparison_view import ComparisonView

SHOWN_TURNS = 150  # the newest turns of a chat shown (a resumed one, or one grown long in the app)
TRIM_STEP = 50  # a chat grown to SHOWN_TURNS + TRIM_STEP turns on screen lets this many of its oldest go at once


@dataclass
class BubblePair:
    """One turn on screen: its question's bubble, its answer's, and the comparisons shown below them."""

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
        pair.answer.show_answer(turn.answer, turn.stopped)
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
            elif session.cleared_before(index):
                widgets.append(Notice(CONTEXT_CLEARED))
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


def image_label(source: str) -> str:
    """A file's name (URLs as given): short enough for a notice or a caption."""
    return public_url(source) if is_url(source) else PurePath(source).name
