"""Every slash command in the command palette (Ctrl+P), so nothing has to be remembered.

Commands that need an argument either open what supplies it (/image alone opens the picker) or
put the command into the input box to be finished (/set, and every command the table declares an
argument "required" for: /find, /open); /export offers each format directly. Names, help and which
commands need an argument come from `chatbot.core.commands.COMMANDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from chatbot.core.commands import COMMANDS
from chatbot.core.conversation import EXPORT_FORMATS


class CommandRunner(Protocol):
    """What the palette needs of the app (the app imports this module, so not the app itself)."""

    def run_slash(self, line: str) -> bool: ...

    def prefill_input(self, text: str) -> None: ...


Entry = tuple[str, str, Callable[[], object]]  # what the palette shows, its help line, what it does

# /export's one help line covers its three formats; the palette has an entry for each, each said on its own
EXPORT_HELP = {
    "md": "write the chat as Markdown in this folder, its pictures copied beside it",
    "html": "write the chat as one self-contained HTML page in this folder",
    "json": "write the chat as JSON in this folder (blip2-chat --resume FILE.json opens it again)",
}


def palette_entries(app: CommandRunner) -> list[Entry]:
    """One entry per slash command (one per format for /export), in the order /help lists them."""
    entries: list[Entry] = []
    for spec in COMMANDS:
        if spec.name == "export":
            for fmt in EXPORT_FORMATS:
                entries.append((f"/export {fmt}", EXPORT_HELP.get(fmt, spec.summary),
                                partial(app.run_slash, f"/export {fmt}")))
        elif spec.argument == "required" or spec.name == "set":
            # alone it would be refused ("/find needs more"): into the input box to be finished (/set alone
            # lists the options; from the palette one is changed)
            entries.append((f"/{spec.name}", spec.summary, partial(app.prefill_input, f"/{spec.name} ")))
        else:  # /image alone opens the picker
            entries.append((f"/{spec.name}", spec.summary, partial(app.run_slash, f"/{spec.name}")))
    return entries


class SlashCommandProvider(Provider):
    """Offers the slash commands; fuzzy-matched on their names."""

    def _entries(self) -> list[Entry]:
        return palette_entries(cast(CommandRunner, self.app))

    async def discover(self) -> Hits:
        for name, help_text, action in self._entries():
            yield DiscoveryHit(name, action, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, action in self._entries():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), action, help=help_text)
