"""Every slash command in the command palette (Ctrl+P), so nothing has to be remembered.

Commands that need an argument either open what supplies it (/image opens the picker) or put
the command into the input box to be finished (/set); /export offers both formats directly.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from chatbot.commands import COMMANDS

if TYPE_CHECKING:
    from chatbot.tui.app import ChatApp

Entry = tuple[str, str, Callable[[], object]]  # what the palette shows, its help line, what it does


def palette_entries(app: ChatApp) -> list[Entry]:
    """One entry per slash command (two for /export), in the order /help lists them."""
    entries: list[Entry] = []
    for spec in COMMANDS:
        if spec.name == "image":
            entries.append(("/image", "choose an image in the file browser (or type /image PATH)",
                            app.action_open_image))
        elif spec.name == "export":
            for fmt, what in (("md", "Markdown"), ("json", "JSON (imports back)")):
                entries.append((f"/export {fmt}", f"write the chat as {what} to ./blip2-chat-<id>.{fmt}",
                                partial(app.run_slash, f"/export {fmt}")))
        elif spec.name == "set":
            entries.append(("/set", spec.summary, partial(app.prefill_input, "/set ")))
        else:
            entries.append((f"/{spec.name}", spec.summary, partial(app.run_slash, f"/{spec.name}")))
    return entries


class SlashCommandProvider(Provider):
    """Offers the slash commands; fuzzy-matched on their names."""

    def _entries(self) -> list[Entry]:
        return palette_entries(cast("ChatApp", self.app))

    async def discover(self) -> Hits:
        for name, help_text, action in self._entries():
            yield DiscoveryHit(name, action, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, action in self._entries():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), action, help=help_text)
