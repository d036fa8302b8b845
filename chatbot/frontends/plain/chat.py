"""The screen-reader mode (`chat --plain`): a whole chat as labelled plain lines, states said in words.

What it prints, and where:
- stdout holds the conversation only: "You: ..." and "Assistant: ..." lines (`> chat.txt` keeps a
  clean transcript). "You:" lines are echoed when the typed line is not already on the screen
  (input from a pipe or a file, or stdout redirected): every line, commands too ("You: /image
  b.png", "You: /retry", "You: /undo"), and a question that starts with a slash as it is typed
  ("You: //etc"), so stdout alone reads as the whole chat.
- stderr holds everything else, as whole sentences: states ("Loading model: 50 percent", "Model
  ready.", "Answering.", "2 earlier turns were left out of the prompt ..."), what a command did,
  and errors ("blip2-chat: ..."). A screen reader reads both streams, in order. Whatever goes wrong
  with a line (a bug included) is one sentence, and the chat goes on.
- An answer is printed whole, as one line, when it is complete: a screen reader then reads it
  once instead of word by word as it streams. When stdout is not the screen, "Answer ready." says so.
- A comparison (`/compare PATH`) is two labelled lines on stdout, the open image's answer then the
  other's: "red.jpg: ..." and "green.jpg: ..." (file names, or paths where those are alike).
- No cursor movement, no spinner, no box drawing, no colour, no escape codes.

Keys: the up and down arrows bring back earlier lines (readline, in a terminal). Ctrl+C while an
answer is being made stops it (the partial answer is kept, marked "(stopped)"); Ctrl+C again, or
on an empty prompt, or Ctrl+D, ends the chat; on a half-typed line it clears the line. /help says
the keys only when the input is a terminal. Ctrl+C while the model loads ends the program with one
sentence (exit status 130). The session is saved after every change, like the app's.

Ending otherwise: SIGTERM or SIGHUP ends the chat as Ctrl+D does (an answer in progress is stopped and
kept, as by Ctrl+C; a question stopped before its first word is kept unanswered), saved, exit status 143 or
129. A reader of stdout that left (`| head`) ends it at once, saved, exit status 141, with nothing said
about the pipe; stdout that cannot be written otherwise (a full disk) is one sentence, saved, exit status 2.
With --json an answer the model failed on is a record too, with an "error" field (the sentence said on
stderr) and the answer so far.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TextIO

from chatbot.core.answer_wording import cut_short_text
from chatbot.core.commands import (
    NO_IMAGE_YET,
    QUESTION_ESCAPE,
    Notice,
    Outcome,
    after_saving,
    compare_with,
    failure_text,
    found_outcome,
    goes_on_with,
    going_on_command,
    help_lines,
    is_command,
    load_chosen_image,
    question_text,
    run_command,
    saved_sentence,
    switch_image,
    typed_line,
)
from chatbot.core.comparison import Comparison, due_comparison
from chatbot.core.conversation import Conversation, release_engine
from chatbot.core.photo_search import Finder, found_line
from chatbot.core.resume import reopen_image
from chatbot.core.runtime import (
    answer_record,
    exit_now,
    failure_record,
    let_go_of_stdout,
    open_engine_for,
    print_json,
)
from chatbot.core.session import EMPTY_ANSWER, Session
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.base import CancelToken, Engine
from chatbot.errors import UserError, model_error_text
from chatbot.frontends.plain.terminal import (
    ChatEnded,
    Ending,
    ctrl_c_stops,
    is_terminal,
    read_lines,
    signals_end_the_chat,
)
from chatbot.images import load_image
from chatbot.locations import line_history_file
from chatbot.untrusted import visible
from prompts import normalize_answer

PROMPT = "You: "
KEYS_HELP = ("Keys: up and down arrows bring back earlier lines; Tab completes a command's name and the image "
             "file or folder after /image or /compare (another Tab says the matches); Ctrl+C stops an answer, "
             "clears a half-typed line, and twice on an empty line ends the chat; Ctrl+D ends the chat.")
# typed at a terminal without line editing (stdout is not the screen, so lines are read without readline)
KEYS_HELP_WITHOUT_LINE_EDITING = ("Keys: Ctrl+C stops an answer, and at the prompt ends the chat; Ctrl+D on an "
                                  "empty line ends the chat.")
LOAD_PERCENT_STEP = 25  # "Loading model: 25 percent", 50, 75: a few lines, not one per fifth
LOADING_STOPPED = "Stopped while the model was loading; nothing was saved."
READER_LEFT = 141  # the exit status when the reader of stdout left (`| head`), as a program killed by SIGPIPE


class OutputLost(BaseException):
    """stdout could not be written (`error`): the reader left, a full disk, a terminal that is gone. It ends the
    chat (what is not printed is lost to the reader, so nothing more is asked); not an Exception, so that no
    "a command failed" handler takes it for one line's failure."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


def keys_help(stdin: object, stdout: object) -> str:
    """What /help says about keys: nothing when the lines do not come from a terminal (a pipe, a file)."""
    if not is_terminal(stdin):
        return ""
    return KEYS_HELP if is_terminal(stdout) else KEYS_HELP_WITHOUT_LINE_EDITING


class PlainChat:
    """One screen-reader chat: reads lines, runs questions and commands, writes labelled lines."""

    def __init__(
        self, conversation: Conversation, *, out: TextIO, notes: TextIO, echo: bool = True,
        json_records: bool = False, finder: Finder | None = None, keys: str = "",
        open_model: Callable[[Settings], Engine] | None = None,
    ) -> None:
        self.conversation = conversation
        # /model NAME: how a model is loaded here (tests give another); by default as at the start, said in words
        self.open_model = open_model or (lambda settings: open_engine_saying(settings, self.say))
        self.finder = finder  # /find: the photo index and its model, opened on the first search
        self.out = out  # the conversation
        self.notes = notes  # states, command results, errors
        self.echo = echo  # print "You: ..." ourselves for every line: the typed line is not on the screen
        self.keys = keys  # what /help says about keys; "" when the lines do not come from a keyboard
        self.json_records = json_records  # one JSON object per answer instead of "Assistant:" lines
        self.answer_ready_note = not is_terminal(out)  # the answer line is not on the screen either
        self.ending = Ending()  # SIGTERM or SIGHUP: set while run() is in force (signals_end_the_chat)

    def say(self, sentence: str) -> None:
        """One sentence on the notes stream; text from outside in it is shown, never emitted raw. Where that
        stream is gone (a closed terminal, a reader that left) there is nobody to tell: it is dropped."""
        try:
            print(visible(sentence), file=self.notes, flush=True)
        except (OSError, ValueError):
            pass

    def line(self, text: str) -> None:
        """One line of the conversation (`You: ...`, `Assistant: ...`) on stdout; OutputLost when it cannot be."""
        self.write(lambda: print(visible(text), file=self.out, flush=True))

    def write(self, writing: Callable[[], None]) -> None:
        """Run `writing` (a write to stdout); its failure (OSError) becomes OutputLost, which ends the chat."""
        try:
            writing()
        except OSError as error:
            raise OutputLost(error) from None

    def run(self, lines: Iterable[str]) -> int:
        """Answer every line until /quit, end of input, Ctrl+C at the prompt, SIGTERM or SIGHUP, or stdout lost;
        save. Exit status 0; 128 + the signal's number after SIGTERM or SIGHUP; 141 when the reader of stdout
        left; 2 when the chat could not be saved, or stdout could not be written otherwise."""
        status = 0
        with signals_end_the_chat() as self.ending:
            try:
                for raw in lines:
                    line = raw.strip()
                    if line and not self.handle(line):
                        break
                    if self.ending.signum is not None:  # it stopped the answer to this line: the chat ends now
                        break
            except KeyboardInterrupt:
                self.say("")  # ^C leaves the cursor after the prompt
            except ChatEnded as ended:
                if ended.draft.strip():  # typed at the prompt, not sent: "Typed last time and not sent" next time
                    self.conversation.session.draft = ended.draft.strip()
                if is_terminal(self.notes):
                    self.say("")  # the prompt's line ends before the farewell
            except OutputLost as lost:
                status = self.output_lost(lost.error)
            self.ending.leaving = True  # a second signal does not cut the saving short
            status = self.ending.status or status
            return self.farewell(status)

    def farewell(self, status: int) -> int:
        """Save, and say where the chat went; the exit status (2 when it could not be saved, else `status`)."""
        self.save()
        conversation = self.conversation
        if conversation.store is not None and conversation.session.turns and not conversation.saved:
            self.say("blip2-chat: The chat could not be saved (see above); its answers are only in this output. "
                     "Goodbye.")
            return 2
        self.say(f"{saved_sentence(conversation.session.id, conversation.store)} Goodbye." if conversation.saved
                 else "Goodbye.")
        return status

    def output_lost(self, error: OSError) -> int:
        """stdout failed: quietly 141 when its reader left (`| head`), else one sentence and 2. stdout is pointed
        at /dev/null, so that nothing complains of what is left in its buffer when Python leaves."""
        if self.out is sys.stdout:  # the program's own (a test's stream is left alone)
            with contextlib.suppress(OSError):
                let_go_of_stdout()
        if isinstance(error, BrokenPipeError):
            return READER_LEFT
        going_on = going_on_command(self.conversation.session.id, self.conversation.store)
        self.say(f"blip2-chat: The answers could not be written to the output ({visible(error.strerror or error)}), "
                 f"so the chat ends here; what was answered is saved, and {going_on} goes on with it.")
        return 2

    def handle(self, line: str) -> bool:
        """One typed line: a question or a /command. False means the chat should end.

        Whatever goes wrong is one sentence and the chat goes on: a UserError says what to do, anything
        else (a bug: no rule foresaw it) says what failed, as the app's does; the session is as it was.
        """
        try:
            if not is_command(line):
                self.ask(question_text(line))
                return True
            self.echo_line(line)  # a transcript says every command, so what follows it makes sense
            # bytes that were not UTF-8 (see read_lines) stay in a command: a file name may hold them (`/image` of a
            # Latin-1 name opens it, as the command line does); each command refuses them where text is needed
            return self.render(run_command(self.conversation, line))
        except UserError as error:
            self.say(f"blip2-chat: {error}")
        except Exception as error:  # noqa: BLE001 - the last resort: a bug in one command must not end the chat
            self.say(f"blip2-chat: {failure_text(line, error)}")
        return True

    def render(self, outcome: Outcome) -> bool:
        """Say what a command did, and do what only this front end can; False when the chat should end."""
        for notice in outcome.notices:
            self.notice(notice)
        if outcome.open_image is not None:
            try:
                image = load_chosen_image(outcome.open_image)
            except UserError as error:
                self.say(f"blip2-chat: {error}")
            else:
                self.render(switch_image(self.conversation, image))
        if outcome.compare_image is not None:
            try:
                other = load_chosen_image(outcome.compare_image)
            except UserError as error:
                self.say(f"blip2-chat: {error}")
            else:
                self.render(compare_with(self.conversation, other))
        if outcome.comparison is not None:
            self.compare(outcome.comparison)
        if outcome.find is not None:
            self.find(outcome.find)
        if outcome.load_model is not None:
            self.load_model(outcome.load_model)
        if outcome.retry is not None:
            self.say(f"Answering again: {outcome.retry.question}")
            self.answer(outcome.retry.question, outcome.retry.chunks, outcome.retry.cancel)
        if outcome.effect == "help":
            self.say("Type a question about the image and press Enter. Commands:")
            for line in help_lines():
                self.say(line)
            self.say(QUESTION_ESCAPE)
            if self.keys:
                self.say(self.keys)
        return outcome.effect != "quit"

    def load_model(self, name: str) -> None:
        """/model NAME, once the core checked what it could without loading (`check_model_switch`: a wrong name or a
        refused precision keeps the model loaded): let go of the loaded model (both may not fit) and load this one
        as at the start; the chat goes on with it, every turn kept. A load that fails leaves no model, as the
        conversation then says to every question (`Conversation.require_engine`)."""
        conversation = self.conversation
        release_engine(conversation.detach())
        conversation.settings = replace(conversation.settings, model=name)  # what /model alone names, as the app's
        try:
            engine = self.open_model(conversation.settings)
        except Exception as error:  # noqa: BLE001 - every load failure is one sentence, the chat goes on
            conversation.load_failed(model_error_text(error, chat=False))
            self.say(f"blip2-chat: {conversation.model_error} {goes_on_with(conversation)}")
            return
        conversation.attach(engine)
        self.say(goes_on_with(conversation))
        if room := conversation.room_problem():  # a max_new_tokens /set for the other model: said now, not later
            self.say(f"blip2-chat: {room}")

    def find(self, text: str) -> None:
        """/find TEXT: the results as numbered lines on stdout, what to do next on the notes stream."""
        if self.finder is None:
            self.say("blip2-chat: Searching is not available here.")
            return
        self.say(f"Searching the index for: {text}")
        try:
            found = self.finder.find(text, progress=self.say)
        except UserError as error:
            self.say(f"blip2-chat: {error}")
            return
        except KeyboardInterrupt:
            self.say("Search stopped.")
            return
        for rank, item in enumerate(found, 1):
            self.line(found_line(rank, item))
        self.render(found_outcome(self.conversation, found))

    def notice(self, notice: Notice) -> None:
        self.say(f"blip2-chat: {notice.text}" if notice.kind == "error" else notice.text)  # warnings: plain sentences

    # -- answering ----------------------------------------------------------------------------

    def ask(self, question: str) -> None:
        cancel = CancelToken()
        try:
            stream = self.conversation.ask(question, cancel)  # a refused question (too long, no image) fails here
        except UserError as refused:
            self.echo_line(typed_line(question.strip()))  # a transcript shows the line its refusal is about
            if self.json_records:  # and a script gets a record for every question, this one's saying why
                image = self.conversation.image
                record = failure_record(image.source if image is not None else None, image, question.strip(),
                                        str(refused), self.conversation.session.model)
                self.write(lambda: print_json(record))
            raise
        # echoed as typed: "You: /x" for the question `//x` would read as a command
        self.answer(self.conversation.question, stream, cancel, typed=typed_line(self.conversation.question))

    def echo_line(self, typed: str) -> None:
        """`You: <the line typed>` on stdout, where the terminal has not shown it (not with --json)."""
        if self.echo and not self.json_records:
            self.line(f"{PROMPT}{typed}")

    def answer(self, question: str, stream: Iterator[str], cancel: CancelToken, typed: str | None = None) -> None:
        """Collect an answer while Ctrl+C may stop it, then print it whole and save the session.

        `typed`: the line that asked it, echoed first; None for /retry (its own line was echoed)."""
        if typed is not None:
            self.echo_line(typed)
        for note in self.conversation.notes_before_answer():  # after the question: a transcript read in order says so
            self.say(note)
        self.say("Answering.")
        parts: list[str] = []
        turns_before = len(self.conversation.session.turns)
        try:
            with ctrl_c_stops(cancel):
                for chunk in stream:
                    parts.append(chunk)
        except (KeyboardInterrupt, ChatEnded):  # Ctrl+C twice, or a signal: show what came, then end the chat
            cancel.cancel()  # the model stops too
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # the partial answer is recorded now, marked stopped
            self.keep_unanswered(question, typed, turns_before)
            with contextlib.suppress(OutputLost):  # the chat is ending already
                self.show_answer(question, parts, stopped=True)
            raise
        except Exception as error:  # noqa: BLE001 - the model failed: what came is kept, the chat goes on
            sentence = model_error_text(error)
            if parts or self.json_records:  # a script reading records gets one for every question
                self.show_answer(question, parts, stopped=True, error=sentence)
            self.say(f"blip2-chat: {sentence}")
            self.save()
            return
        if self.ending.signum is not None:  # SIGTERM or SIGHUP stopped it: the chat ends, the question kept
            self.keep_unanswered(question, typed, turns_before)
        if cancel.cancelled and is_terminal(self.out):  # the terminal echoed ^C where the label would begin
            self.write(lambda: print(file=self.out, flush=True))
        self.show_answer(question, parts, stopped=cancel.cancelled)
        if cancel.cancelled:
            self.say("Answer stopped." + (" The partial answer is kept." if "".join(parts).strip() else ""))
        elif self.answer_ready_note:
            self.say("Answer ready.")
        engine = self.conversation.engine
        if not cancel.cancelled and engine is not None and engine.last_stats.cut_short:
            self.say(cut_short_text(self.conversation.options.max_new_tokens))
        self.save()
        try:
            comparison = due_comparison(self.conversation)  # /compare armed before this question
        except UserError as error:
            self.say(f"blip2-chat: {error}")
        else:
            if comparison is not None:
                self.compare(comparison)

    def keep_unanswered(self, question: str, typed: str | None, turns_before: int) -> None:
        """The chat ends with this question asked (`typed` not None; a /retry keeps its old turn) and nothing of
        its answer recorded (stopped before a word): keep it in the session, unanswered, as the app does."""
        if typed is not None and len(self.conversation.session.turns) == turns_before:
            self.conversation.keep_unanswered(question)

    def compare(self, comparison: Comparison) -> None:
        """The other image's answer collected while Ctrl+C may stop it, then both answers as labelled lines."""
        self.say(f"Answering about {comparison.labels[1]}.")
        parts: list[str] = []
        try:
            with ctrl_c_stops(comparison.cancel):
                for chunk in comparison.chunks:
                    parts.append(chunk)
        except (KeyboardInterrupt, ChatEnded):  # Ctrl+C twice, or a signal: show what came, then end the chat
            comparison.cancel.cancel()
            with contextlib.suppress(OutputLost):  # the chat is ending already
                self.show_comparison(comparison, parts, stopped=True)
            raise
        except Exception as error:  # noqa: BLE001 - the model failed: what came is kept, the chat goes on
            failure = model_error_text(error)
            self.say(f"blip2-chat: {failure}")
        else:
            failure = ""
        stopped = comparison.cancel.cancelled
        self.show_comparison(comparison, parts, stopped, error=failure)
        if stopped:
            self.say("Answer stopped." + (" The partial answer is kept." if "".join(parts).strip() else ""))
        elif self.answer_ready_note:
            self.say("Answer ready.")
        self.save()

    def show_answer(self, question: str, parts: list[str], stopped: bool, error: str = "") -> None:
        """The answer as one line (or, with --json, one record; `error`: the sentence said for a model that failed,
        in the record's "error" field)."""
        text = normalize_answer("".join(parts))  # as the core records it
        if self.json_records:
            engine, image = self.conversation.engine, self.conversation.image
            if engine is not None and image is not None:
                self.print_record(answer_record(engine, image, question, text), error)
        elif stopped:
            self.line(f"Assistant: {text} (stopped)" if text else "Assistant: (stopped before any words)")
        else:
            self.line(f"Assistant: {text or EMPTY_ANSWER}")

    def show_comparison(self, comparison: Comparison, parts: list[str], stopped: bool, error: str = "") -> None:
        """`first.jpg: answer` and `second.jpg: answer` (or the other image's JSON record)."""
        text = normalize_answer("".join(parts))  # as the core records it
        engine = self.conversation.engine
        if self.json_records:
            if engine is not None:
                self.print_record(answer_record(engine, comparison.image, comparison.question, text), error)
            return
        first, second = comparison.labels
        stopped_first = " (stopped)" if comparison.first_stopped else ""
        self.line(f"{first}: {comparison.first_answer or EMPTY_ANSWER}{stopped_first}")
        if stopped:
            self.line(f"{second}: {text} (stopped)" if text else f"{second}: (stopped before any words)")
        else:
            self.line(f"{second}: {text or EMPTY_ANSWER}")

    def print_record(self, record: dict[str, object], error: str = "") -> None:
        """One --json record on stdout. `error`, when given, goes in its "error" field, and its "answer" is what came
        before the failure, or null when nothing did (as `ask --json` says an image it failed on)."""
        if error:
            record["answer"] = record["answer"] or None
            record["error"] = error
        self.write(lambda: print_json(record))

    def save(self) -> None:
        """Save the session if it changed; a failure is said and the chat goes on."""
        for notice in after_saving(self.conversation).notices:
            self.notice(notice)


def open_engine_saying(settings: Settings, say: Callable[[str], None]) -> Engine:
    """Load the model, saying each step and the share of weights loaded in words: at 25, 50 and 75 percent
    (at 100 the next line says it is ready)."""
    from chatbot.engine.load_progress import weight_loading_percent

    def loaded(percent: int) -> None:
        if percent < 100:
            say(f"Loading model: {percent} percent")

    with weight_loading_percent(loaded, step=LOAD_PERCENT_STEP):
        engine = open_engine_for(settings, progress=say)
    say("Model ready.")
    return engine


def run_plain_chat(
    settings: Settings, image_source: str, session: Session | None = None, notes: Sequence[str] = (),
) -> int:
    """The screen-reader chat about `image_source` (or going on with `session`), reading stdin to the end.

    `notes`: sentences to say first (e.g. which model a resumed chat goes on with).
    """
    def say(sentence: str) -> None:
        print(visible(sentence), file=sys.stderr, flush=True)

    for note in notes:
        say(note)

    image, problem = None, None
    if session is None and not image_source:  # `blip2-chat chat`: the first image comes with /image or /paste
        problem = NO_IMAGE_YET
    elif session is None:
        image = load_image(image_source)  # a bad path fails before the slow model load
    elif session.image is not None:
        image, problem = reopen_image(session.image, from_elsewhere=session.from_elsewhere)
    try:
        engine = open_engine_saying(settings, say)
    except KeyboardInterrupt:  # nothing is open yet; a resumed chat is on disk as it was
        if is_terminal(sys.stderr):
            print(file=sys.stderr)  # the terminal echoed ^C where the sentence would begin
        say(LOADING_STOPPED if session is None else
            f"Stopped while the model was loading; session {session.id} is saved as it was.")
        return 130
    # a person at a keyboard gives the engine time to prepare the next prompt; piped questions do not
    conversation = Conversation(settings, session, SessionStore(), image, engine=engine,
                                think_ahead=is_terminal(sys.stdin))
    if room := conversation.room_problem():  # the options leave this model no room for a question: said before any
        say(f"blip2-chat: {room}")
    typed_on_screen = is_terminal(sys.stdin) and is_terminal(sys.stdout)
    plain = PlainChat(conversation, out=sys.stdout, notes=sys.stderr, echo=not typed_on_screen,
                      json_records=settings.json, finder=Finder.from_settings(settings),
                      keys=keys_help(sys.stdin, sys.stdout))
    if session is not None:
        last = session.turns[-1] if session.turns else None
        count = len(session.turns)
        plain.say(f"Resumed session {session.id}, {count} turn{'' if count == 1 else 's'}."
                  + (f" Last question: {last.question} Answer: {last.answer}" if last else ""))
        if session.draft:  # typed in the app and not sent: said once (this mode has no input to put it in)
            plain.say(f"Typed last time and not sent: {session.draft}")
            session.draft = ""
    if problem:
        plain.say(problem)
    elif image is not None:
        plain.say(f"Talking about {image.source}. Type a question, or /help for the commands.")
    lines = read_lines(PROMPT, history_file=line_history_file())
    try:
        code = plain.run(lines)  # saves the chat
    finally:
        lines.close()  # writes the readline history
    return exit_now(code)  # all is saved: no waiting for torch's tear-down or for thinking ahead
