"""The screen-reader mode (`chat --plain`): a whole chat as labelled plain lines, states said in words.

What it prints, and where:
- stdout holds the conversation only: "You: ..." and "Assistant: ..." lines (`> chat.txt` keeps a
  clean transcript). "You:" lines are echoed when the typed line is not already on the screen
  (input from a pipe or a file, or stdout redirected).
- stderr holds everything else, as whole sentences: states ("Loading model: 40 percent", "Model
  ready.", "Answering.", "Earlier turns were left out to fit the model."), what a command did,
  and errors ("blip2-chat: ..."). A screen reader reads both streams, in order.
- An answer is printed whole, as one line, when it is complete: a screen reader then reads it
  once instead of word by word as it streams. When stdout is not the screen, "Answer ready." says so.
- No cursor movement, no spinner, no box drawing, no colour, no escape codes.

Keys: the up and down arrows bring back earlier lines (readline, in a terminal). Ctrl+C while an
answer is being made stops it (the partial answer is kept, marked "(stopped)"); Ctrl+C again, or
at the prompt, or Ctrl+D, ends the chat. The session is saved after every change, like the app's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TextIO

from chatbot.chat import Chat
from chatbot.commands import apply_setting, describe_options, help_lines, parse_command
from chatbot.config import Settings
from chatbot.engine.base import CancelToken, Engine
from chatbot.errors import UserError
from chatbot.images import load_image
from chatbot.locations import data_dir, exports_dir
from chatbot.plain_io import ctrl_c_stops, is_terminal, read_lines
from chatbot.quick_exit import exit_now
from chatbot.resume import options_for, reopen_image
from chatbot.session import Session
from chatbot.store import SessionStore, export_session
from prompts import normalize_question

PROMPT = "You: "
KEYS_HELP = ("Keys: up and down arrows bring back earlier lines; Ctrl+C stops an answer, "
             "and at the prompt ends the chat; Ctrl+D ends the chat.")


class PlainChat:
    """One screen-reader chat: reads lines, runs questions and commands, writes labelled lines."""

    def __init__(
        self, chat: Chat, store: SessionStore, *, out: TextIO, notes: TextIO, echo: bool = True,
        json_records: bool = False,
    ) -> None:
        self.chat = chat
        self.store = store
        self.out = out  # the conversation
        self.notes = notes  # states, command results, errors
        self.echo = echo  # print "You: ..." ourselves: the typed line is not on the screen
        self.json_records = json_records  # one JSON object per answer instead of "Assistant:" lines
        self.answer_ready_note = not is_terminal(out)  # the answer line is not on the screen either

    def say(self, sentence: str) -> None:
        print(sentence, file=self.notes, flush=True)

    def run(self, lines: Iterable[str]) -> int:
        """Answer every line until /quit, end of input, or Ctrl+C at the prompt; save; exit status 0."""
        try:
            for raw in lines:
                line = raw.strip()
                if line and not self.handle(line):
                    break
        except KeyboardInterrupt:
            self.say("")  # ^C leaves the cursor after the prompt
        saved = self.save(quietly=True)
        self.say(f"Chat saved as session {self.chat.session.id}. Goodbye." if saved else "Goodbye.")
        return 0

    def handle(self, line: str) -> bool:
        """One typed line: a question or a /command. False means the chat should end."""
        try:
            command = parse_command(line)
            if command is None:
                self.ask(line[1:] if line.startswith("//") else line)  # // starts a question with a slash
                return True
            if command.name == "quit":
                return False
            getattr(self, f"command_{command.name}")(command.argument)
        except UserError as error:
            self.say(f"blip2-chat: {error}")
        return True

    # -- answering ----------------------------------------------------------------------------

    def ask(self, question: str) -> None:
        fitted = self.chat.prepare(question)  # an empty or too-long question fails here, before "You:"
        question = normalize_question(question)
        if self.echo and not self.json_records:
            print(f"You: {question}", file=self.out, flush=True)
        if fitted.dropped_turns:
            turns = "turn was" if fitted.dropped_turns == 1 else "turns were"
            self.say(f"Earlier turns were left out to fit the model ({fitted.dropped_turns} {turns} left out).")
        cancel = CancelToken()
        self.answer(question, self.chat.ask(question, cancel), cancel)

    def answer(self, question: str, stream: Iterator[str], cancel: CancelToken) -> None:
        """Collect an answer while Ctrl+C may stop it, then print it whole and save the session."""
        self.say("Answering.")
        parts: list[str] = []
        try:
            with ctrl_c_stops(cancel):
                for chunk in stream:
                    parts.append(chunk)
        except KeyboardInterrupt:  # Ctrl+C twice: show what came, then end the chat
            self.show_answer(question, parts, stopped=True)
            raise
        self.show_answer(question, parts, stopped=cancel.cancelled)
        if cancel.cancelled:
            self.say("Answer stopped." + (" The partial answer is kept." if "".join(parts).strip() else ""))
        elif self.answer_ready_note:
            self.say("Answer ready.")
        self.save(quietly=True)

    def show_answer(self, question: str, parts: list[str], stopped: bool) -> None:
        text = " ".join("".join(parts).split())
        if self.json_records:
            from chatbot.oneshot import answer_record, print_json

            if self.chat.image is not None:
                print_json(answer_record(self.chat.engine, self.chat.image, question, text))
        elif stopped:
            line = f"Assistant: {text} (stopped)" if text else "Assistant: (stopped before any words)"
            print(line, file=self.out, flush=True)
        else:
            print(f"Assistant: {text}", file=self.out, flush=True)

    # -- commands (one method per name in chatbot.commands.COMMANDS) ----------------------------

    def command_image(self, argument: str) -> None:
        if not argument:
            raise UserError("/image needs a path.", "Type /image followed by the image file, e.g. /image cat.jpg.")
        self.chat.set_image(load_image(argument))
        self.save(quietly=True)
        self.say(f"Now talking about {self.chat.image.source if self.chat.image else argument}. "
                 "The conversation starts fresh.")

    def command_clear(self, argument: str) -> None:
        self.chat.clear()
        self.save(quietly=True)
        self.say("Conversation cleared; the next question starts fresh. Earlier turns stay in the saved session.")

    def command_retry(self, argument: str) -> None:
        cancel = CancelToken()
        stream = self.chat.retry(cancel)  # QuestionError when there is nothing to answer again
        question = self.chat.session.turns[-1].question
        self.say(f"Answering again: {question}")
        self.answer(question, stream, cancel)

    def command_undo(self, argument: str) -> None:
        turn = self.chat.undo()
        if turn is None:
            self.say("Nothing to undo.")
            return
        self.save(quietly=True)
        self.say(f"Removed the last question and its answer: {turn.question}")

    def command_save(self, argument: str) -> None:
        self.say(f"Session saved to {self.save()}.")

    def command_export(self, argument: str) -> None:
        fmt, _, where = argument.partition(" ")
        fmt = fmt.lower() or "md"
        path = Path(where.strip()).expanduser() if where.strip() else \
            exports_dir() / f"blip2-chat-{self.chat.session.id}.{fmt}"
        self.say(f"Exported the chat to {export_session(self.chat.session, fmt, path)}.")

    def command_set(self, argument: str) -> None:
        if argument:
            self.chat.options = apply_setting(self.chat.options, argument)
            self.save(quietly=True)
            self.say(f"Set. Options now: {describe_options(self.chat.options)}.")
        else:
            self.say(f"Options: {describe_options(self.chat.options)}.")

    def command_help(self, argument: str) -> None:
        self.say("Type a question about the image and press Enter. Commands:")
        for line in help_lines():
            self.say(line)
        self.say("To ask a question that starts with a slash, begin it with two slashes.")
        self.say(KEYS_HELP)

    # -- saving ---------------------------------------------------------------------------------

    def save(self, quietly: bool = False) -> Path | None:
        """Save the session (done after every change). A failure never ends the chat: `quietly` says it
        and goes on (None), otherwise it is raised for the command that asked to save."""
        self.chat.session.options = self.chat.options.to_dict()
        try:
            return self.store.save(self.chat.session)
        except UserError as error:
            if not quietly:
                raise
            self.say(f"blip2-chat: {error}")
            return None


def open_engine_saying(settings: Settings, say: Callable[[str], None]) -> Engine:
    """Load the model, saying each step and the share of weights loaded in words."""
    from chatbot.engine.load_progress import weight_loading_percent
    from chatbot.oneshot import open_engine_for

    with weight_loading_percent(lambda percent: say(f"Loading model: {percent} percent")):
        engine = open_engine_for(settings, progress=say)
    say("Model ready.")
    return engine


def run_plain_chat(settings: Settings, image_source: str, session: Session | None = None) -> int:
    """The screen-reader chat about `image_source` (or going on with `session`), reading stdin to the end."""
    notes = sys.stderr

    def say(sentence: str) -> None:
        print(sentence, file=notes, flush=True)

    image, problem = None, None
    if session is None:
        image = load_image(image_source)  # a bad path fails before the slow model load
    elif session.image is not None:
        image, problem = reopen_image(session.image, how_to_open="/image PATH")
    engine = open_engine_saying(settings, say)
    options = options_for(session, settings.options) if session else settings.options
    # a person at a keyboard gives the engine time to prepare the next prompt; piped questions do not
    chat = Chat(engine, image, options, session=session, think_ahead=is_terminal(sys.stdin))
    typed_on_screen = is_terminal(sys.stdin) and is_terminal(sys.stdout)
    plain = PlainChat(chat, SessionStore(), out=sys.stdout, notes=notes, echo=not typed_on_screen,
                      json_records=settings.json)
    if session is not None:
        last = session.turns[-1] if session.turns else None
        plain.say(f"Resumed session {session.id}, {len(session.turns)} turns."
                  + (f" Last question: {last.question} Answer: {last.answer}" if last else ""))
    if problem:
        plain.say(problem)
    elif image is not None:
        plain.say(f"Talking about {image.source}. Type a question, or /help for the commands.")
    lines = read_lines(PROMPT, history_file=data_dir() / "plain-history")
    try:
        code = plain.run(lines)  # saves the chat
    finally:
        lines.close()  # writes the readline history
    return exit_now(code)  # all is saved: no waiting for torch's tear-down or for thinking ahead
