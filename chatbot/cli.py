"""The `blip2-chat` command: parse flags, build settings, hand over to a front end.

Imports no torch at module level: `blip2-chat --help` must stay instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from chatbot import __version__
from chatbot.config import Settings, settings_from_args
from chatbot.errors import UserError

EPILOG = """examples:
  blip2-chat ask photo.jpg "What is the man holding?"
  blip2-chat caption holiday/*.jpg
  blip2-chat chat photo.jpg --plain < questions.txt
  blip2-chat ask https://example.org/cat.png "What colour is the cat?" --json

The model defaults to $BLIP2_CHAT_MODEL, else Salesforce/blip2-opt-2.7b. It is loaded from a
local folder, the Hugging Face cache, or downloaded once (set HF_HUB_OFFLINE=1 to never download).
"""


def _model_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    group = flags.add_argument_group("model and decoding")
    group.add_argument("--model", help="hub id (Salesforce/blip2-opt-2.7b), alias (opt-2.7b) or checkpoint folder")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    group.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default: auto)")
    group.add_argument("--max-new-tokens", type=int, default=None, help="longest answer in tokens (default: 30)")
    group.add_argument("--num-beams", type=int, default=None, help="beam search width; 1 = greedy (default: 1)")
    group.add_argument("--temperature", type=float, default=None, help="> 0 samples with this temperature")
    group.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (default: 0.9)")
    group.add_argument("--repetition-penalty", type=float, default=None, help="> 1 discourages repeats")
    group.add_argument("--seed", type=int, default=None, help="fix the random seed so sampling repeats")
    group.add_argument("--json", action="store_true", help="print one JSON object per answer, with timings")
    return flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blip2-chat", description="Chat about images in the terminal with BLIP-2.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"blip2-chat {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    flags = _model_flags()
    ask = commands.add_parser("ask", parents=[flags], help="answer one question about an image")
    ask.add_argument("image", help="image file or http(s) URL")
    ask.add_argument("question", help="the question, in quotes")
    cap = commands.add_parser("caption", parents=[flags], help="caption one or more images")
    cap.add_argument("images", nargs="+", help="image files or URLs")
    cap.add_argument("--prompt", default="", help="text the caption continues, e.g. 'a photo of'")
    chat = commands.add_parser("chat", parents=[flags], help="a conversation about an image (line mode)")
    chat.add_argument("image", help="image file or URL to talk about")
    chat.add_argument("--plain", action="store_true", help="line-based mode: one question per line on stdin")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        settings = settings_from_args(args)
        return _run(args, settings)
    except UserError as error:
        print(f"blip2-chat: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no complaint when Python flushes at exit
        return 141


def _run(args: argparse.Namespace, settings: Settings) -> int:
    # Front ends are imported here, not at the top: each may pull in the model stack.
    if args.command == "ask":
        from chatbot.oneshot import run_ask

        return run_ask(settings, args.image, args.question)
    if args.command == "caption":
        from chatbot.oneshot import run_caption

        return run_caption(settings, args.images, args.prompt)
    from chatbot.plain import run_plain_chat

    return run_plain_chat(settings, args.image)


if __name__ == "__main__":
    sys.exit(main())
