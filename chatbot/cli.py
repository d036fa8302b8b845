"""The `blip2-chat` command: parse flags, build settings, hand over to a front end.

Imports no torch at module level: `blip2-chat --help` must stay instant.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import signal
import sys
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from chatbot import __version__
from chatbot.core.settings import BY_NAME, OPTIONS, Option, Settings, settings_from
from chatbot.errors import UserError
from chatbot.output_encoding import escape_what_the_output_cannot_hold
from chatbot.untrusted import visible

EPILOG = """examples:
  blip2-chat demo                         try it offline: a small model trained here, on a generated picture
  blip2-chat photo.jpg                    open the chat app on a picture (same as: blip2-chat chat photo.jpg)
  blip2-chat --continue                   go on with the last chat; `blip2-chat sessions` lists them all
  blip2-chat ask photo.jpg "What is the man holding?"
  blip2-chat caption holiday/*.jpg
  blip2-chat chat photo.jpg --plain < questions.txt
  blip2-chat ask https://example.org/cat.png "What colour is the cat?" --json
  blip2-chat index ~/Pictures -r           build or update the search index of a photo collection
  blip2-chat search "a dog on a beach"     the pictures that show it, best first (--chat opens the best)

The model defaults to $BLIP2_CHAT_MODEL, else Salesforce/blip2-opt-2.7b. It is loaded from a
local folder, the Hugging Face cache, or downloaded once (set HF_HUB_OFFLINE=1 to never download).
"""


def _model_flags(model_default: str | None = None, model_help: str | None = None, *,
                 names: Collection[str] | None = None, helps: Mapping[str, str] | None = None,
                 defaults: Mapping[str, Any] | None = None, title: str = "model and decoding",
                 json: bool = True) -> _Parser:
    """The model and decoding flags, one per option of the settings schema that has a flag.

    `model_default`: what --help says the model defaults to, where a command has its own (demo); `model_help`:
    what the model is, where it is another kind (a retrieval checkpoint for index and search). `names`: only
    these options' flags (index and search take no decoding flags: a flag a command ignores is refused, not
    offered); `helps`: another help for some of them; `defaults`: the command's own defaults, shown instead of
    the schema's (describe's); `json`: with --json (one JSON object per answer).
    """
    flags = _Parser(add_help=False)
    group = flags.add_argument_group(title)
    for option in OPTIONS:
        if "flag" in option.where and (names is None or option.name in names):
            shown = model_default if option.name == "model" and model_default else (defaults or {}).get(
                option.name, option.default)
            default = "" if shown is None else f" (default: {shown})"
            what = model_help if option.name == "model" and model_help else (helps or {}).get(option.name, option.help)
            group.add_argument(option.flag, dest=option.name, default=None, metavar=_metavar(option),
                               help=f"{what}{default}")
    if json:
        group.add_argument("--json", action="store_true", help="print one JSON object per answer, with timings")
    return flags


def _metavar(option: Option) -> str:
    return "{" + ",".join(option.choices) + "}" if option.choices else option.name.upper()


class _Parser(argparse.ArgumentParser):
    """argparse, with a suggestion for a mistyped flag (`--modle` -> `--model`)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            options = {option for parser in (self, *_subcommands(self).values()) for action in parser._actions
                       for option in action.option_strings if option.startswith("--")}
            for word in (word for word in message[len(prefix):].split() if word.startswith("--")):
                flag = word.split("=")[0]
                owners = [name for name, command in _subcommands(self).items()
                          if any(flag in action.option_strings for action in command._actions)]
                if owners:  # a real flag, of other commands (`sessions --json`): say whose, not "did you mean"
                    message += f" ({flag} goes with {_words(owners)}, not with this command)"
                    break
                close = difflib.get_close_matches(flag, sorted(options), n=1, cutoff=0.7)
                if close:
                    message += f" (did you mean {close[0]}?)"
                    break
        super().error(message)


def _words(names: list[str]) -> str:
    """'ask', 'ask or caption', 'ask, caption or describe'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="blip2-chat", description="Chat about images in the terminal with BLIP-2.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"blip2-chat {__version__}")
    _resume_flags(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    flags = _model_flags()
    ask = commands.add_parser("ask", parents=[flags], help="answer one question about an image (or several)")
    ask.add_argument("images", nargs="+", metavar="image",
                     help="image file or http(s) URL; with several, the question is answered for each")
    ask.add_argument("question", help="the question, in quotes")
    cap = commands.add_parser("caption", parents=[flags], help="caption one or more images")
    cap.add_argument("images", nargs="+", help="image files or URLs")
    cap.add_argument("--prompt", default="", help="text the caption continues, e.g. 'a photo of'")
    chat = commands.add_parser("chat", parents=[flags], help="a conversation about an image (the chat app)")
    chat.add_argument("image", nargs="?", help="image file or URL to talk about")
    chat.add_argument("--plain", action="store_true",
                      help="screen-reader mode: labelled plain lines, no redraws (also chosen when stdin or stdout "
                           "is not a terminal, TERM=dumb, or the config file says plain = true)")
    _resume_flags(chat)
    _describe_parser(commands)
    _search_parsers(commands)
    demo = commands.add_parser("demo", parents=[_model_flags(model_default="demo, the model trained here")],
                               help="try the chat offline: a small model trained here, on a generated picture")
    demo.add_argument("--plain", action="store_true", help="the screen-reader mode instead of the app")
    demo.add_argument("--picture", type=int, default=None, metavar="N",
                      help="which generated picture (default: a new one each time)")
    sessions = commands.add_parser("sessions", help="list saved chats (resume one with --resume ID), or delete some")
    sessions.add_argument("--delete", nargs="+", metavar="ID", default=None,
                          help="delete these chats: their files, the pictures pasted into them that no other chat "
                               "uses, and their questions in the Up arrow's line history (the app's and the "
                               "screen-reader mode's)")
    sessions.add_argument("--json", action="store_true", help="one JSON object per saved chat")
    models = commands.add_parser("models", help="known checkpoints: memory per precision, cached, what fits here")
    models.add_argument("--device", default=None, metavar=_metavar(BY_NAME["device"]),
                        help=f"whose free memory to compare with: {BY_NAME['device'].text_rule} (default: the "
                             "config file's device, else auto)")
    models.add_argument("--json", action="store_true", help="one JSON object per checkpoint")
    return parser


def _describe_parser(commands: argparse._SubParsersAction) -> None:
    from chatbot.frontends.describe import alt_text  # pure and tiny: the defaults shown in --help

    class NoJson(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
            parser.error("describe writes JSON Lines already (--format jsonl, the default), so it has no --json; "
                         "--json is for the other commands (ask, caption, chat, demo, index, search, sessions, "
                         "models).")

    # The model flags without their --json (one JSON object per answer, with timings: nothing describe
    # writes). "resolve" lets the hidden flag below replace it, so it is neither offered nor ignored.
    describe = commands.add_parser(
        "describe", parents=[_model_flags(defaults=_command_defaults("describe"))],
        help="alt text for image files and folders (JSON Lines, CSV or Markdown)",
        description="Write alt text for every image in PATHS, one row per image, appended as soon as it is ready.",
        conflict_handler="resolve",
    )
    describe.add_argument("--json", nargs=0, action=NoJson, default=False, help=argparse.SUPPRESS)
    describe.add_argument("paths", nargs="+", metavar="PATH", help="image files and folders")
    describe.add_argument("--recursive", "-r", action="store_true", help="also look inside sub-folders")
    describe.add_argument("--format", choices=("jsonl", "csv", "md", "parquet"), default=None,
                          help="output format (default: from the --out suffix, else jsonl; parquet needs --out "
                               "and the cluster extra)")
    describe.add_argument("--out", "-o", type=Path, default=None, help="file to append rows to (default: stdout)")
    describe.add_argument("--prompt", default=alt_text.DEFAULT_PROMPT,
                          help="text the description continues (default: none, the model's plain caption)")
    describe.add_argument("--batch-size", type=int, default=8, help="images per model call (default: 8)")
    describe.add_argument("--resume", action="store_true", help="skip images already in --out (same path and sha256)")
    _cluster_flags(describe)


def _cluster_flags(parser: argparse.ArgumentParser) -> None:
    """`--ray [ADDRESS]`, `--workers`, `--gpus-per-worker` (describe and index; docs/scale-out.md)."""
    group = parser.add_argument_group("scale-out (needs: pip install 'blip2-chat[cluster]')")
    group.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                       help="run as a Ray Data pipeline: on a local Ray instance, or on the cluster at ADDRESS "
                            "(e.g. auto on the head node, or head:6379); the same rows as without it")
    group.add_argument("--workers", type=int, default=1, help="with --ray: model copies working at once (default: 1)")
    group.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="F",
                       help="with --ray: GPUs each worker holds (default: 0, the CPU; 1 for one GPU each, "
                            "0.5 for two workers per GPU)")


SEARCH_MODEL_DEFAULT = "the one the index was made with; for a new index Salesforce/blip2-itm-vit-g"
SEARCH_MODEL_HELP = "the retrieval checkpoint: hub id (Salesforce/blip2-itm-vit-g), alias (itm-vit-g), folder, or demo"
# index and search open a retrieval checkpoint: its device and precision, no decoding (nothing is generated)
SEARCH_FLAGS = ("model", "device", "dtype", "quantize")
SEARCH_FLAG_HELPS = {
    "dtype": "the retrieval model's number format (auto: float32 on CPU, bfloat16 on GPUs that have it)",
    "quantize": "int8 (weight-only), 8bit or 4bit (bitsandbytes), none, or auto: the best precision that fits",
}


def _search_model_flags() -> _Parser:
    """index's and search's model flags: the retrieval checkpoint, where and how it runs; no decoding flags."""
    return _model_flags(SEARCH_MODEL_DEFAULT, SEARCH_MODEL_HELP, names=SEARCH_FLAGS, helps=SEARCH_FLAG_HELPS,
                        title="retrieval model", json=False)


def _search_parsers(commands: argparse._SubParsersAction) -> None:
    """`index` and `search`: the retrieval model's flags (--model names a retrieval checkpoint here)."""
    index = commands.add_parser(
        "index", parents=[_search_model_flags()],
        help="build or update the search index of image files and folders",
        description="Add the images in PATHS to the search index (only new and changed files are read), "
                    "and let files deleted from those folders leave it. --model names a retrieval checkpoint "
                    "(default: the one the index was made with, else Salesforce/blip2-itm-vit-g).",
    )
    index.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    index.add_argument("paths", nargs="+", metavar="PATH", help="image files and folders")
    index.add_argument("--forget", action="store_true",
                       help="remove from the index every picture recorded at or under each PATH (a folder gone "
                            "for good; PATH need not exist): no file is touched, no model loaded")
    index.add_argument("--recursive", "-r", action="store_true", help="also look inside sub-folders")
    index.add_argument("--index", type=Path, default=None, metavar="DIR",
                       help="the index folder (default: 'index' in the data folder)")
    index.add_argument("--rebuild", action="store_true",
                       help="start the index afresh (e.g. with another --model); the old one is set aside")
    index.add_argument("--batch-size", type=int, default=None, help="images per model call (default: 8)")
    _cluster_flags(index)
    search = commands.add_parser(
        "search", parents=[_search_model_flags()],
        help="find indexed pictures by what they show",
        description="Rank the indexed pictures by how well they match TEXT: the retrieval head's similarity, "
                    "then its image-text matching head re-scores the best ones (unless --no-rerank).",
    )
    search.add_argument("--json", action="store_true", help="one JSON object per result")
    search.add_argument("text", nargs="+", help="what the picture shows (quotes optional: the words are joined)")
    search.add_argument("--index", type=Path, default=None, metavar="DIR",
                        help="the index folder (default: 'index' in the data folder)")
    search.add_argument("--top", type=int, default=10, help="how many results (default: 10)")
    search.add_argument("--no-rerank", action="store_true",
                        help="rank by similarity alone (faster: no image is read again)")
    search.add_argument("--chat", action="store_true", help="open the chat app on the best result")


def _resume_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--continue", dest="continue_last", action="store_true",
                        help="open the chat app on the last saved session")
    parser.add_argument("--resume", metavar="ID", help="open the chat app on a saved session (or an exported .json)")


def first_positional(args: Sequence[str], parser: argparse.ArgumentParser) -> str | None:
    """The first argument that is neither a flag nor a flag's value: a command's name, or an image for the chat.

    A flag's value is not positional, though it may be spelled like a command (`--model demo`, `--resume search`).
    """
    chat = _subcommands(parser)["chat"]
    actions = [*parser._actions, *chat._actions]
    valued = {option for action in actions if action.option_strings and action.nargs != 0
              for option in action.option_strings}
    known = {option for action in actions for option in action.option_strings}
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            return args[index + 1] if index + 1 < len(args) else None
        if arg.startswith("-") and arg != "-":
            takes_value = arg in valued or (arg not in known and any(option.startswith(arg) for option in valued))
            index += 2 if takes_value and "=" not in arg else 1  # argparse also takes unambiguous prefixes
            continue
        return arg
    return None


def with_default_command(argv: Sequence[str], parser: argparse.ArgumentParser,
                         first: str | None) -> list[str]:
    """`blip2-chat IMAGE ...` and `blip2-chat --continue|--resume ...` mean `blip2-chat chat ...`.

    What decides is the first positional argument (`first_positional(argv, parser)`): a command name there
    is that command; anything else (an image) means the chat.
    """
    args = list(argv)
    if first is not None and first in _subcommands(parser) or args[:1] in (["-h"], ["--help"], ["--version"]):
        return args
    resuming = any(arg in ("--continue", "--resume") or arg.startswith("--resume=") for arg in args)
    return ["chat", *args] if resuming or first is not None else args


def mistyped_command(first: str | None, parser: argparse.ArgumentParser) -> str | None:
    """The command a first positional argument was probably meant to be (`askk` -> `ask`), when it is no file."""
    commands = _subcommands(parser)
    if first is None or first in commands or os.path.exists(first) or "://" in first or "." in first:
        return None
    close = difflib.get_close_matches(first.lower(), list(commands), n=1, cutoff=0.75)
    return close[0] if close else None


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's commands by name ({} for a command's own parser)."""
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


# Torch's CPU compute threads (OpenMP) spin while they wait for each other. With the app's own threads, or any
# other program, on the same cores, the spinning threads take the core from the one doing the work: with one
# core busy elsewhere the chat app decoded at 26 tok/s, and with waiting threads that sleep at 423; on a quiet
# machine it made no measurable difference at the medium checkpoint's size (docs/benchmarks.md, "Streaming in
# the chat app"). Read once, when torch loads: set before any command imports it. A value the user set wins.
OMP_WAIT = ("OMP_WAIT_POLICY", "PASSIVE")


# The commands whose output is stdout: what would be lost with it closed (`>&-`), and the file to send it to
# instead. Refused before anything is read, loaded, drawn or done, in one sentence. (index writes there only with
# --json, describe only without --out.)
STDOUT_OUTPUT = {"ask": ("the answer has", "answer.txt"), "caption": ("the answer has", "answer.txt"),
                 "models": ("the table of models has", "out.txt"), "sessions": ("the list of chats has", "out.txt"),
                 "search": ("the list of results has", "out.txt"), "index": ("the summary has", "out.txt"),
                 "describe": ("the alt text has", "alt.jsonl"), "chat": ("the answers have", "chat.txt"),
                 "demo": ("the answers have", "chat.txt")}


def check_stdout_open(args: argparse.Namespace) -> None:
    """UserError when stdout is closed and this command's output goes there: a script would think it worked."""
    what, file = STDOUT_OUTPUT.get(args.command or "", ("", ""))
    if not what or (args.command == "index" and not args.json) or (args.command == "describe" and args.out):
        return
    if args.command == "sessions" and args.delete is not None:
        what = "the report of what is deleted has"
    if sys.stdout is None or getattr(sys.stdout, "closed", False):
        raise UserError(f"Standard output is closed, so {what} nowhere to go.",
                        f"Run it again with stdout open, or send it to a file (> {file}).")


def main(argv: Sequence[str] | None = None) -> int:
    """The blip2-chat command; `argv` None: the program's own arguments (the console script)."""
    os.environ.setdefault(*OMP_WAIT)
    escape_what_the_output_cannot_hold()
    status = _main(sys.argv[1:] if argv is None else list(argv))
    if argv is None and status == 130 and threading.current_thread() is threading.main_thread():
        # the program leaves after Ctrl+C: a second one must not break its exit (libraries clean up at
        # exit, and Python printed the KeyboardInterrupt it raised there as a traceback)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return status


def _main(given: list[str]) -> int:
    parser = build_parser()
    first = first_positional(given, parser)
    meant = mistyped_command(first, parser)
    if meant is not None:
        print(f"blip2-chat: there is no command or file '{visible(first or '')}'. Did you mean {meant}? "
              "See blip2-chat --help.", file=sys.stderr)
        return 2
    args = parser.parse_args(with_default_command(given, parser, first))
    if args.command is None:
        parser.print_help()
        return 0
    try:
        check_stdout_open(args)
        notes = _config_notes(args.command)
        if args.command in ("models", "sessions"):
            from chatbot.frontends.listings import run_models, run_sessions

            if args.command == "sessions":
                return run_sessions(delete=args.delete, as_json=args.json)
            return run_models(settings_for(args).device, args.json)  # --device, else the config file's
        return _run(args, settings_for(args), notes)
    except UserError as error:
        print(f"blip2-chat: {visible(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        from chatbot.core.runtime import let_go_of_stdout

        let_go_of_stdout()  # no complaint when Python flushes at exit
        return 141
    except OSError as error:  # what no command foresaw: a full disk under `> file`, an I/O error on the output
        where = visible(error.filename) if error.filename else "the output"
        print(f"blip2-chat: {visible(error.strerror or error)} ({where}).", file=sys.stderr)
        from chatbot.core.runtime import let_go_of_stdout

        with contextlib.suppress(OSError):  # no second complaint when Python flushes stdout at exit
            let_go_of_stdout()
        return 2


def settings_for(args: argparse.Namespace) -> Settings:
    """Settings from the parsed flags over the config file, over the command's own defaults (see
    chatbot.core.settings for the order). Any command's flags will do: `models` gets its --device so."""
    from chatbot.core.config_file import read_config

    return settings_from(vars(args), read_config(), command_defaults=_command_defaults(args.command),
                         json=bool(getattr(args, "json", False)))


def _command_defaults(command: str | None) -> dict[str, Any]:
    """A command's own defaults, under the config file's: describe's alt text wants longer answers without repeats."""
    if command != "describe":
        return {}
    from chatbot.frontends.describe import alt_text  # pure and tiny

    return {"max_new_tokens": alt_text.DEFAULT_MAX_NEW_TOKENS,
            "repetition_penalty": alt_text.DEFAULT_REPETITION_PENALTY}


def _config_notes(command: str) -> list[str]:
    """The config file that is not read (`unread_config_note`), said once: kept for a chat to show first (the app
    in its transcript, the plain mode on stderr), else said on stderr now."""
    from chatbot.core.config_file import unread_config_note

    note = unread_config_note()
    if note is None:
        return []
    if command in ("chat", "demo"):
        return [note]
    from chatbot.core.runtime import say

    say(f"blip2-chat: {note}")
    return []


def _run(args: argparse.Namespace, settings: Settings, notes: list[str]) -> int:
    if getattr(args, "ray", None) is None and (getattr(args, "workers", 1) != 1 or getattr(args, "gpus_per_worker", 0)):
        raise UserError("--workers and --gpus-per-worker go with --ray (a run on one machine has one model).",
                        "Add --ray to run on a local Ray instance or a cluster, or leave them out.")
    # Front ends are imported here, not at the top: each may pull in the model stack.
    if args.command == "ask":
        from chatbot.frontends.oneshot import run_ask

        return run_ask(settings, args.images, args.question)
    if args.command == "caption":
        from chatbot.frontends.oneshot import run_caption

        return run_caption(settings, args.images, args.prompt)
    if args.command == "describe":
        from chatbot.frontends.describe.run import DescribeRequest, run_describe

        return run_describe(settings, DescribeRequest(
            paths=tuple(args.paths), recursive=args.recursive, fmt=args.format, out=args.out, prompt=args.prompt,
            batch_size=args.batch_size, resume=bool(args.resume), ray=args.ray, workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
        ))
    if args.command in ("index", "search"):
        return _run_search_command(args, settings)
    if args.command == "demo":
        return _run_demo(args, settings, notes)
    return run_chat_command(settings, args.image, plain=args.plain, continue_last=args.continue_last,
                            resume=args.resume, model_given=args.model is not None, notes=notes)


def _run_demo(args: argparse.Namespace, settings: Settings, notes: list[str]) -> int:
    """`demo`: the shipped demo model (unless --model names another) on a new picture of its world."""
    from chatbot.demo.start import INTRODUCTION, demo_picture
    from chatbot.locations import DEMO_MODEL, data_dir

    if args.picture is not None and not 0 <= args.picture < 2**31:
        raise UserError(f"--picture must be between 0 and {2**31 - 1} (got {args.picture}).", "Try --picture 7.")
    picture = demo_picture(data_dir() / "demo", args.picture)
    chosen = settings if args.model is not None else replace(settings, model=DEMO_MODEL)
    return run_chat_command(chosen, str(picture), plain=args.plain, notes=[*notes, INTRODUCTION])


def _run_search_command(args: argparse.Namespace, settings: Settings) -> int:
    """`index` and `search`. Their --model is a retrieval checkpoint, so the chat's default model is not
    theirs: without --model the index decides (see chatbot.core.photo_search.choose_index_model)."""
    retrieval = replace(settings, model=settings.model if args.model else "")  # a folder given: made absolute
    if args.command == "index" and args.forget:
        from chatbot.frontends.search.index_run import ForgetRequest, refuse_with_forget, run_forget

        refuse_with_forget(_given_besides_forget(args))
        return run_forget(ForgetRequest(paths=tuple(args.paths), folder=args.index, json=args.json))
    if args.command == "index":
        from chatbot.frontends.search.index_run import IndexRequest, run_index

        batch_size = 8 if args.batch_size is None else args.batch_size
        return run_index(retrieval, IndexRequest(paths=tuple(args.paths), recursive=args.recursive, folder=args.index,
                                                 rebuild=args.rebuild, batch_size=batch_size, json=args.json,
                                                 ray=args.ray, workers=args.workers,
                                                 gpus_per_worker=args.gpus_per_worker))
    from chatbot.frontends.search.search_run import SearchRequest, run_search

    request = SearchRequest(text=" ".join(args.text), folder=args.index, top=args.top, rerank=not args.no_rerank,
                            json=args.json)
    best = run_search(retrieval, request)  # prints the results; the best one that still exists, if any
    if not args.chat:
        return 0
    if best is None:
        raise UserError("None of the results can be opened in the chat.",
                        "Search for something else, or run `blip2-chat index` again over your folders.")
    # --model named the retrieval checkpoint (without it, the index's own did); the chat's is the configured
    # one, except that the demo's search model opens the demo's chat model (so the offline demo goes from
    # search to chat), whether --model named it or the index did
    from chatbot.core.photo_search import index_model
    from chatbot.locations import DEMO_MODEL, is_demo_model

    searched_with = args.model or index_model(args.index) or ""
    chat_model = DEMO_MODEL if is_demo_model(searched_with) else None
    chat_settings = settings_for(argparse.Namespace(**{**vars(args), "model": chat_model, "command": "chat"}))
    return run_chat_command(chat_settings, best)


def _given_besides_forget(args: argparse.Namespace) -> list[str]:
    """The flags given to `index --forget` that only indexing uses (reading files, the model, Ray)."""
    given = {"--rebuild": args.rebuild, "-r": args.recursive, "--batch-size": args.batch_size is not None,
             "--ray": args.ray is not None, "--workers": args.workers != 1,
             "--gpus-per-worker": bool(args.gpus_per_worker)}
    given |= {BY_NAME[name].flag: getattr(args, name) is not None for name in SEARCH_FLAGS}
    return [flag for flag, there in given.items() if there]


def run_chat_command(
    settings: Settings, image_source: str | None, *, plain: bool = False, continue_last: bool = False,
    resume: str | None = None, model_given: bool = False, notes: Sequence[str] = (),
) -> int:
    """Open a chat on `image_source`, or go on with a saved session (--continue, --resume ID|FILE), in the
    chat app, or in the screen-reader mode when asked or when the app cannot work here.

    A resumed chat goes on with the model it was made with, unless `--model` chose one (`model_given`), and
    with its own decoding options, except those given as flags, which win (`given_options_win` says which).
    `notes`: sentences to show first (the app shows them in the transcript, the plain mode on stderr).
    """
    from chatbot.core.resume import going_on, session_to_resume
    from chatbot.core.session import Session
    from chatbot.core.store import SessionStore
    from chatbot.frontends.plain.terminal import plain_mode_forced
    from chatbot.images import LoadedImage, load_image

    resuming = continue_last or resume is not None
    if continue_last and resume is not None:
        raise UserError("Give either --continue or --resume ID, not both.",
                        "--continue goes on with the last chat; --resume ID with the one you name.")
    if resuming and image_source:
        raise UserError("Give either an image or --continue/--resume, not both.",
                        "A resumed chat reopens its own image; switch later with /image PATH.")
    store = SessionStore()
    session: Session | None = None
    news: list[str] = []  # information, said first
    notes = list(notes)  # warnings, said first
    if resuming:
        session = session_to_resume(store, continue_last, resume)
        settings, news, warnings = going_on(session, settings, model_given=model_given)
        notes += warnings
    if not resuming and image_source:
        notes += _outside_the_demo_world(settings.model, image_source)
    if plain or plain_mode_forced():  # not a terminal, TERM=dumb, or `plain = true` in the config
        from chatbot.frontends.plain.chat import run_plain_chat

        return run_plain_chat(settings, image_source or "", session=session,
                              notes=[*notes, *news, *store.problems])
    image: LoadedImage | None = None
    if not resuming and image_source:  # without one the app opens its picker
        image = load_image(image_source)  # a bad path fails here, before any window opens
    from chatbot.tui.app import run_tui

    return run_tui(settings, image=image, session=session, problems=[*notes, *store.problems], news=news)


def _outside_the_demo_world(model: str, image_source: str) -> list[str]:
    """The demo model's one caveat, when it is asked about a picture not of its world (a photo)."""
    from chatbot.locations import is_demo_model

    if not is_demo_model(model):
        return []
    from chatbot.demo.start import of_its_world, outside_its_world
    from chatbot.images import load_image

    try:
        picture = load_image(image_source).image
    except UserError:
        return []  # the chat itself says what is wrong with it
    return [] if of_its_world(picture) else [outside_its_world()]


if __name__ == "__main__":
    sys.exit(main())
