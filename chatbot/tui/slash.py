"""Slash commands in the chat app: parsed by the shared `chatbot.commands`, carried out on the app.

Plain mode and the app read commands the same way (same names, aliases, `/set` keys and
errors); only what a command does to the screen lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from chatbot.commands import parse_command
from chatbot.errors import UserError
from chatbot.tui.screens.help import HelpScreen
from chatbot.tui.widgets.transcript import Transcript

if TYPE_CHECKING:
    from chatbot.tui.app import ChatApp


def run_slash_command(app: ChatApp, line: str) -> None:
    """Carry out `line` (starting with /); every problem is a UserError the app shows as one notice."""
    command = parse_command(line)
    if command is None:
        raise UserError(f"{line} is not a command.", "Type /help for the list.")
    handler = HANDLERS.get(command.name)
    if handler is None:  # a command plain mode knows but the app does not (yet)
        raise UserError(f"/{command.name} is not available in the chat app.", "Type /help for the list.")
    handler(app, command.argument)


def _not_while_answering(app: ChatApp, what: str) -> None:
    if app.answer is not None:
        raise UserError(f"An answer is still coming, so {what} has to wait.", "Press Esc to stop the answer first.")


def _image(app: ChatApp, argument: str) -> None:
    if not argument:
        app.action_open_image()  # no path: choose one in the picker
        return
    _not_while_answering(app, "/image")
    app.open_image(argument.strip().strip("'\""))


def _clear(app: ChatApp, argument: str) -> None:
    _not_while_answering(app, "/clear")
    app.conversation.clear()
    app.notice("Context cleared: the next question starts fresh (earlier turns stay in the saved session).")
    app.conversation.save()


def _retry(app: ChatApp, argument: str) -> None:
    app.retry()


def _undo(app: ChatApp, argument: str) -> None:
    _not_while_answering(app, "/undo")
    if not app.conversation.undo():
        raise UserError("There is nothing to undo.", "Ask a question first.")
    transcript = app.query_one(Transcript)
    if transcript.pairs:
        transcript.remove_pair(transcript.pairs[-1])
    app.notice("Dropped the last question and answer.")
    app.conversation.save(force=True)


def _save(app: ChatApp, argument: str) -> None:
    path = app.conversation.save(force=True)
    app.notice(f"Saved to {path}.")


def _export(app: ChatApp, argument: str) -> None:
    path = app.conversation.export(argument)
    app.notice(f"Exported to {path}.")


def _set(app: ChatApp, argument: str) -> None:
    everything = app.conversation.apply_setting(argument)
    if not argument.strip():
        app.notice(f"Options: {everything}. Change one with /set KEY VALUE.")
        return
    key = argument.split()[0].replace("-", "_").lower()
    app.notice(f"{key} is now {getattr(app.conversation.options, key)}.")
    app.conversation.save()


def _help(app: ChatApp, argument: str) -> None:
    app.push_screen(HelpScreen())


def _quit(app: ChatApp, argument: str) -> None:
    app.run_worker(app.action_quit(), group="quit")


HANDLERS: dict[str, Callable[[ChatApp, str], None]] = {
    "image": _image, "clear": _clear, "retry": _retry, "undo": _undo, "save": _save, "export": _export,
    "set": _set, "help": _help, "quit": _quit,
}
