"""`/find TEXT` in the chat app: search the photo index in a thread, then show the results to choose from.

Between `ComparingApp` and `ModelLoadingApp`. The index and its retrieval model open on the first search (a
status line says so) and stay open for the next. A chosen result is opened like `/image PATH`, so the
chat's rules for a new image apply. What a search means (which model, the ranking, what is missing) is
decided in `chatbot.core.photo_search`; `/open N` works here too (the core keeps the last results).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from textual import work
from textual.message import Message

from chatbot.core.commands import found_outcome
from chatbot.core.photo_search import Finder, Found
from chatbot.errors import UserError
from chatbot.tui.comparing import ComparingApp
from chatbot.tui.screens.find_results import FindResultsScreen
from chatbot.tui.widgets.status_bar import StatusBar
from chatbot.untrusted import visible


class FindingApp(ComparingApp):
    """Runs `/find` searches (`Outcome.find`) and opens the chosen result."""

    finder: Finder | None = None  # set by ChatApp; None: searching is not available
    renderer: str = "auto"

    @dataclass
    class SearchDone(Message):
        query: str
        found: Sequence[Found] = ()
        problem: str = ""

    @dataclass
    class SearchProgress(Message):
        text: str

    def find_pictures(self, text: str) -> None:
        if self.finder is None:
            self.notice("Searching is not available here.", "error")
            return
        self.query_one(StatusBar).set_activity(f"Searching for “{visible(text)}”…", busy=True)
        self._search(self.finder, text)

    @work(thread=True, exclusive=True, group="find", exit_on_error=False)
    def _search(self, finder: Finder, text: str) -> None:
        try:
            def progress(line: str) -> None:
                self.post_message(self.SearchProgress(line))

            found = finder.find(text, progress=progress)
        except UserError as error:
            self.post_message(self.SearchDone(text, problem=str(error)))
        except Exception as error:  # noqa: BLE001 - a failed search must not close the chat
            self.post_message(self.SearchDone(text, problem=f"The search failed ({type(error).__name__}: {error})."))
        else:
            self.post_message(self.SearchDone(text, found))

    def on_finding_app_search_progress(self, message: SearchProgress) -> None:
        self.query_one(StatusBar).set_activity(visible(message.text), busy=True)

    def on_finding_app_search_done(self, message: SearchDone) -> None:
        if self.quitting:
            return
        self._set_ready_activity()
        if message.problem:
            self.notice(message.problem, "error")
            return
        outcome = found_outcome(self.conversation, message.found)
        for notice in outcome.notices:
            self.notice(notice.text, notice.kind)
        if message.found:
            def chosen(path: str | None) -> None:
                if path is not None:
                    self.open_image(path)

            self.push_screen(FindResultsScreen(message.query, message.found, self.renderer), chosen)

    def open_image(self, source: str) -> bool:  # ImageOpeningApp's: the chat's rules for a new image
        raise NotImplementedError
