"""Line mode: one question per line on stdin, one answer per line on stdout, the chat remembered.

A later step grows this into the full screen-reader mode; it already keeps to plain lines
(no cursor movement, no colour) so it works in pipes and with screen readers.
"""

from __future__ import annotations

import sys

from chatbot.chat import Chat
from chatbot.config import Settings
from chatbot.errors import UserError
from chatbot.images import load_image
from chatbot.oneshot import answer_record, open_engine_for, print_json, stream_to_stdout

HELP = "Commands: /image PATH (switch image), /clear (forget the conversation), /undo, /help, /quit."


def run_plain_chat(settings: Settings, image_source: str) -> int:
    image = load_image(image_source)
    engine = open_engine_for(settings)
    chat = Chat(engine, image, settings.options)
    for raw in sys.stdin:
        line = raw.strip()
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not _command(chat, line):
                    break
                continue
            chat.prepare(line)
            if settings.json:
                answer = "".join(chat.ask(line)).strip()
                print_json(answer_record(engine, chat.image or image, chat.session.turns[-1].question, answer))
            else:
                stream_to_stdout(chat.ask(line))
        except UserError as error:
            print(f"blip2-chat: {error}", file=sys.stderr, flush=True)
    return 0


def _command(chat: Chat, line: str) -> bool:
    """Run a slash command; False means quit."""
    name, _, argument = line.partition(" ")
    if name in ("/quit", "/exit"):
        return False
    if name == "/image":
        if not argument.strip():
            raise UserError("/image needs a path.", "Type /image followed by the image file, e.g. /image cat.jpg.")
        chat.set_image(load_image(argument.strip()))
        print(f"Now talking about {chat.image.source if chat.image else argument}.", file=sys.stderr, flush=True)
    elif name == "/clear":
        chat.clear()
    elif name == "/undo":
        chat.undo()
    elif name == "/help":
        print(HELP, file=sys.stderr, flush=True)
    else:
        raise UserError(f"Unknown command {name}.", HELP)
    return True
