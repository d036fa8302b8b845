"""Ending a chat otherwise than by its own keys: SIGTERM, SIGHUP, a terminal that went away, a reader of stdout
that left, a closed stdout; and the line history kept as it is typed, never through a link.

What was typed and answered is checked in the saved session, the terminal's settings with termios, the
moments by the answer's chunks and the files on disk (never by the clock).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatbot.core.commands import saved_sentence
from chatbot.core.conversation import Conversation
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.frontends.plain import terminal
from chatbot.frontends.plain.chat import PlainChat
from chatbot.locations import sessions_dir
from chatbot.tui.terminal_gone import DroppingOutput
from tests.plain_support import FakeStream, plain_chat
from tests.terminal_support import Screen, ended, run_in_terminal
from tests.tui_support import SIZE, pilot_test, ready, scripted_app, send, wait_until

LONG = " ".join(f"w{n}" for n in range(400))  # an answer that is still coming when the signal is sent


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BLIP2_CHAT_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def signals_caught() -> Iterator[list[int]]:
    """SIGTERM and SIGHUP sent to this process while a test runs are caught here when nothing else catches them
    (without the fix they would end the test run itself); the list says which were."""
    caught: list[int] = []
    previous = {signum: signal.signal(signum, lambda number, frame: caught.append(number))
                for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield caught
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def saved(session_id: str) -> dict[str, Any]:
    return json.loads((sessions_dir() / f"{session_id}.json").read_text(encoding="utf-8"))


def held_after(engine: ScriptedEngine, words: int) -> ScriptedEngine:
    """`engine`, whose answers after the first stop coming after `words` words until they are stopped (cancelled):
    an answer still coming whenever the test acts, however slow the machine."""
    original = engine.stream

    def stream(image, prompt, options, cancel=None):  # type: ignore[no-untyped-def]
        first = not engine.prompts
        for number, piece in enumerate(original(image, prompt, options, cancel), 1):
            yield piece
            while not first and number >= words and not (cancel is not None and cancel.cancelled):
                time.sleep(0.01)

    engine.stream = stream  # type: ignore[method-assign]
    return engine


# --- the chat app ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
@pilot_test
async def test_a_signal_mid_answer_quits_the_app_as_ctrl_q_does(signum: int, pictures, signals_caught) -> None:
    """The probe's case: one answer, a second streaming, a draft typed; SIGTERM (or SIGHUP) then keeps all three,
    the partial answer marked stopped, as Ctrl+Q does, and the exit status names the signal."""
    engine = held_after(ScriptedEngine("a red square", LONG), words=3)
    app = scripted_app(engine, pictures["red"], handle_signals=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "What is it?")
        await wait_until(pilot, lambda: app.answer is None and len(app.conversation.session.turns) == 1)
        await send(pilot, "Tell me everything?")
        await wait_until(pilot, lambda: app.answer is not None and len(app.answer.pair.answer.text.split()) >= 3,
                         what="the second answer's first words")
        await pilot.press(*"And a draft")
        os.kill(os.getpid(), signum)
        await wait_until(pilot, lambda: not app.is_running, what="the app to quit")
    assert signals_caught == []  # the app caught it
    assert app.ended_by_signal == signum
    session = saved(app.conversation.session.id)
    first, second = session["turns"]
    assert (first["question"], first["answer"], first["stopped"]) == ("What is it?", "a red square", False)
    assert second["question"] == "Tell me everything?" and second["stopped"] is True
    assert second["answer"] == "w0 w1 w2"
    assert session["draft"] == "And a draft"


@pilot_test
async def test_a_signal_before_the_first_word_keeps_the_question_and_works_over_the_help(
    pictures, signals_caught
) -> None:
    """Quitting while the answer has no word yet keeps the question (unanswered), as a question waiting for the
    model is kept; the help screen on top changes nothing."""
    gate = threading.Event()
    engine = ScriptedEngine("a red square", "never said")
    original = engine.stream

    def held(image, prompt, options, cancel=None):  # type: ignore[no-untyped-def]
        if engine.prompts:  # the second answer waits until it is stopped: no word comes
            while not (cancel is not None and cancel.cancelled) and not gate.is_set():
                gate.wait(0.01)
            return
        yield from original(image, prompt, options, cancel)

    engine.stream = held  # type: ignore[method-assign]
    app = scripted_app(engine, pictures["red"], handle_signals=True)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await send(pilot, "What is it?")
            await wait_until(pilot, lambda: app.answer is None and len(app.conversation.session.turns) == 1)
            await send(pilot, "Still there?")
            await wait_until(pilot, lambda: app.answer is not None)
            await pilot.press("f1")
            os.kill(os.getpid(), signal.SIGTERM)
            await wait_until(pilot, lambda: not app.is_running, what="the app to quit")
    finally:
        gate.set()
    assert signals_caught == []
    turns = saved(app.conversation.session.id)["turns"]
    assert [(turn["question"], turn["answer"], turn["stopped"]) for turn in turns] == [
        ("What is it?", "a red square", False), ("Still there?", "", True)]


@pilot_test
async def test_a_terminal_that_went_away_quits_the_app_as_sighup(pictures) -> None:
    """No SIGHUP came (the shell did not pass it on), but a write to the terminal failed: the app quits and
    saves as on SIGHUP; `terminal_gone` is called from the screen writer's thread."""
    app = scripted_app(ScriptedEngine("a red square"), pictures["red"], handle_signals=True)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "What is it?")
        await wait_until(pilot, lambda: app.answer is None and len(app.conversation.session.turns) == 1)
        await pilot.press(*"half typed")
        writer = threading.Thread(target=app.terminal_gone)
        writer.start()
        writer.join()
        await wait_until(pilot, lambda: not app.is_running, what="the app to quit")
    assert app.ended_by_signal == signal.SIGHUP
    session = saved(app.conversation.session.id)
    assert session["draft"] == "half typed" and [turn["answer"] for turn in session["turns"]] == ["a red square"]


def test_the_screen_writer_outlives_its_terminal() -> None:
    """A write that fails (EIO: the terminal hung up) is dropped and said once; later writes are dropped too, so
    the writer thread lives on and the app is not blocked behind a full queue."""

    class HungUp(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(5, "Input/output error")

    calls: list[str] = []
    output = DroppingOutput(HungUp(), lambda: calls.append("gone"))
    assert output.write("frame 1") == len("frame 1")
    output.flush()
    assert output.write("frame 2") == len("frame 2")
    assert calls == ["gone"] and output.gone


def _run_in_terminal(args: list[str], home: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    """`python -m chatbot ARGS` in a new pseudo-terminal as the app meets one; (process, our end, its end, kept
    open to read its settings after it has gone)."""
    return run_in_terminal(args, env={**os.environ, "TERM": "xterm-256color", "BLIP2_CHAT_HOME": str(home),
                                      "BLIP2_CHAT_GRAPHICS": "0", "COLUMNS": "100", "LINES": "30"})


def _lflags(fd: int) -> int:
    import termios

    return termios.tcgetattr(fd)[3]


def test_sigterm_gives_the_app_s_terminal_back_and_keeps_the_draft(
    checkpoints: dict[str, Path], pictures: dict[str, Path], home: Path
) -> None:
    """The real app in a pseudo-terminal: after SIGTERM the terminal is as it was (line editing, echo, Ctrl+C
    signals), off the alternate screen, the chat is saved with the line typed but not sent, exit status 143."""
    termios = pytest.importorskip("termios")
    process, ours, theirs = _run_in_terminal(
        [str(pictures["red"]), "--model", str(checkpoints["opt"]), "--max-new-tokens", "4"], home)
    screen = Screen(ours)
    with ended(process, ours, theirs):
        before = _lflags(theirs)
        screen.wait_for(lambda: b"Ready" in screen.data, "the model to load")
        os.write(ours, b"what is it?\r")
        screen.wait_for(lambda: any((home / "sessions").glob("*.json")), "the answer to be saved")
        os.write(ours, b"half typed")
        screen.wait_for(lambda: b"half typed" in screen.data, "the draft to be shown")
        process.send_signal(signal.SIGTERM)
        assert screen.drain(process) == 128 + signal.SIGTERM
        after = _lflags(theirs)
    wanted = termios.ICANON | termios.ECHO | termios.ISIG
    assert before & wanted == wanted and after & wanted == wanted
    assert screen.data.rfind(b"\x1b[?1049l") > screen.data.rfind(b"\x1b[?1049h") >= 0  # the alternate screen left
    (session,) = [json.loads(path.read_text()) for path in (home / "sessions").glob("*.json")]
    assert session["draft"] == "half typed" and [turn["question"] for turn in session["turns"]] == ["what is it?"]
    assert b"Chat saved as session " + session["id"].encode() in screen.data


# --- the screen-reader mode ----------------------------------------------------------------------------------


def signal_at(engine: ScriptedEngine, chunk: int, signum: int) -> None:
    """Send this process `signum` right after chunk number `chunk` (from 1) of the next answer."""
    original = engine.stream

    def stream(image, prompt, options, cancel=None):  # type: ignore[no-untyped-def]
        for number, piece in enumerate(original(image, prompt, options, cancel), 1):
            yield piece
            if number == chunk:
                os.kill(os.getpid(), signum)

    engine.stream = stream  # type: ignore[method-assign]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_mid_answer_keeps_the_partial_answer_in_the_plain_mode(
    signum: int, pictures, signals_caught
) -> None:
    """With a pipe on stdin: the answer coming is stopped and kept, marked stopped, as the first Ctrl+C does;
    the questions after it are not asked; the chat is saved; the exit status names the signal."""
    engine = ScriptedEngine("a red square", LONG)
    plain, out, notes = plain_chat(engine, pictures["red"], max_new_tokens=500)
    signal_at(engine, 1, signum)  # right after the first word of the first answer
    status = plain.run(iter(["What is it?", "Tell me everything?", "never asked"]))
    assert signals_caught == []
    assert status == 128 + signum
    turns = plain.conversation.session.turns
    assert [turn.question for turn in turns] == ["What is it?"]
    assert turns[0].stopped and turns[0].answer == "a"  # the signal came after its first word
    assert out.getvalue().splitlines() == ["You: What is it?", "Assistant: a (stopped)"]
    assert saved(plain.conversation.session.id)["turns"][0]["stopped"] is True
    assert notes.getvalue().splitlines()[-1] == f"{saved_sentence(plain.conversation.session.id)} Goodbye."


def test_a_signal_on_a_later_answer_keeps_every_turn_before_it(pictures, signals_caught) -> None:
    engine = ScriptedEngine("a red square", LONG)
    plain, out, _ = plain_chat(engine, pictures["red"], max_new_tokens=500)
    original = engine.stream
    answers = iter(range(10))

    def stream(image, prompt, options, cancel=None):  # type: ignore[no-untyped-def]
        second = next(answers) == 1
        for number, piece in enumerate(original(image, prompt, options, cancel), 1):
            yield piece
            if second and number == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    engine.stream = stream  # type: ignore[method-assign]
    assert plain.run(iter(["What is it?", "Tell me everything?", "never asked"])) == 143
    turns = saved(plain.conversation.session.id)["turns"]
    assert [(turn["question"], turn["answer"], turn["stopped"]) for turn in turns] == [
        ("What is it?", "a red square", False), ("Tell me everything?", "w0 w1 w2", True)]
    assert out.getvalue().splitlines()[-1] == "Assistant: w0 w1 w2 (stopped)"
    assert len(engine.prompts) == 2  # "never asked" was not


def test_a_second_signal_while_the_answer_stops_still_keeps_the_question(pictures, signals_caught) -> None:
    """A model slow to stop: the second signal ends the chat at once; the question is kept, unanswered, since no
    word of its answer came."""
    engine = ScriptedEngine("never said")

    def deaf(image, prompt, options, cancel=None):  # type: ignore[no-untyped-def]
        engine.prompts.append(prompt)
        os.kill(os.getpid(), signal.SIGHUP)  # stops the answer (it ignores that)
        os.kill(os.getpid(), signal.SIGHUP)  # ends the chat
        yield "never"

    engine.stream = deaf  # type: ignore[method-assign]
    plain, out, _ = plain_chat(engine, pictures["red"], max_new_tokens=500)
    assert plain.run(iter(["Still there?", "never asked"])) == 129
    turns = saved(plain.conversation.session.id)["turns"]
    assert [(turn["question"], turn["answer"], turn["stopped"]) for turn in turns] == [("Still there?", "", True)]
    assert out.getvalue().splitlines() == ["You: Still there?", "Assistant: (stopped before any words)"]


def test_a_signal_at_the_prompt_keeps_the_half_typed_line(
    pictures, signals_caught, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    """At the readline prompt: the line half typed becomes the session's draft and goes into the history; the
    line entered before it was in the history file before the signal came."""
    import builtins

    class Readline:
        buffer = ""
        history: list[str] = []

        def get_line_buffer(self) -> str:
            return self.buffer

        def add_history(self, line: str) -> None:
            self.history.append(line)

    readline = Readline()
    history = home / "plain-history"
    in_file_before_signal: list[str] = []
    typed = iter(["What is it?", None])

    def typing(prompt: str) -> str:
        line = next(typed)
        if line is None:
            in_file_before_signal.extend(history.read_text(encoding="utf-8").splitlines())
            readline.buffer = "and the half"
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("the signal did not end the chat")
        return line

    monkeypatch.setattr(terminal, "_readline", lambda history, prompt="": readline)
    monkeypatch.setattr(builtins, "input", typing)
    plain, _, _ = plain_chat(ScriptedEngine("a red square"), pictures["red"], max_new_tokens=500, echo=False)
    assert plain.run(terminal._readline_lines("You: ", history)) == 143
    assert in_file_before_signal == ["What is it?"]  # each line goes in as it is entered
    assert history.read_text(encoding="utf-8").splitlines() == ["What is it?", "and the half"]
    session = saved(plain.conversation.session.id)
    assert session["draft"] == "and the half" and [turn["answer"] for turn in session["turns"]] == ["a red square"]


def _waiting_in_select(thread_id: int) -> bool:
    """Whether the thread (its native id) is blocked in select() or poll() now (Linux's /proc says so)."""
    try:
        call = Path(f"/proc/self/task/{thread_id}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return False
    # select, pselect6, poll, ppoll: x86_64's numbers, then the generic ones (arm64)
    return call.isdigit() and int(call) in {23, 270, 7, 271} | {72, 73}


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc to see where a thread waits")
def test_a_signal_whose_handler_could_not_run_before_the_prompt_s_wait_still_ends_the_chat(
    pictures, signals_caught, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    """The load-dependent hang: readline waits for a key in select() and runs signal handlers only when that
    wait is interrupted. A SIGTERM whose handler could not run before (caught off the main thread here, as when
    it comes between readline's echo of the last key and its next wait) must still end the chat, saved."""
    import builtins
    import select as select_module

    class Readline:
        buffer = ""

        def get_line_buffer(self) -> str:
            return self.buffer

        def add_history(self, line: str) -> None:
            pass

    readline = Readline()
    quiet, release = os.pipe()  # nobody types: only a signal ends the wait
    main = threading.get_native_id()
    released: list[bool] = []
    typed = iter(["What is it?", None])

    def signal_off_the_main_thread() -> None:
        deadline = time.monotonic() + 60
        while not _waiting_in_select(main):  # the prompt's wait has begun: no Python code runs in it
            assert time.monotonic() < deadline, "the prompt never waited"
            threading.Event().wait(0.01)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # its handler is due, but not run, in main
        ended = threading.Event()
        deadline = time.monotonic() + 20
        while plain.ending.signum is None and time.monotonic() < deadline:
            ended.wait(0.01)
        if plain.ending.signum is None:  # never handled: let the wait end, so that the test fails, not hangs
            released.append(True)
            os.write(release, b"\n")

    def typing(prompt: str) -> str:
        line = next(typed)
        if line is not None:
            return line
        readline.buffer = "half typed"
        sender = threading.Thread(target=signal_off_the_main_thread, daemon=True)
        sender.start()
        try:
            select_module.select([quiet], [], [])  # as readline waits for a key
        finally:
            sender.join()
        raise AssertionError("the wait ended without the signal ending the chat")

    monkeypatch.setattr(terminal, "_readline", lambda history, prompt="": readline)
    monkeypatch.setattr(builtins, "input", typing)
    plain, _, _ = plain_chat(ScriptedEngine("a red square"), pictures["red"], max_new_tokens=500, echo=False)
    try:
        status = plain.run(terminal._readline_lines("You: ", home / "plain-history"))
    finally:
        os.close(quiet)
        os.close(release)
    assert released == []  # the signal ended the wait itself
    assert status == 143 and signals_caught == []
    session = saved(plain.conversation.session.id)
    assert session["draft"] == "half typed" and [turn["answer"] for turn in session["turns"]] == ["a red square"]


def test_sigterm_gives_the_plain_mode_s_terminal_back_and_keeps_every_line(
    checkpoints: dict[str, Path], pictures: dict[str, Path], home: Path
) -> None:
    """The real screen-reader mode at a pseudo-terminal, with readline: after SIGTERM at the prompt the terminal
    has line editing and echo again, the history file holds both lines, exit status 143."""
    termios = pytest.importorskip("termios")
    pytest.importorskip("readline")
    process, ours, theirs = _run_in_terminal(
        ["chat", str(pictures["red"]), "--plain", "--model", str(checkpoints["opt"]), "--max-new-tokens", "4"], home)
    screen = Screen(ours)
    with ended(process, ours, theirs):
        screen.wait_for(lambda: screen.data.count(b"You: ") >= 1, "the prompt")
        os.write(ours, b"what is it?\r")
        screen.wait_for(lambda: screen.data.count(b"You: ") >= 2, "the next prompt")
        history = (home / "plain-history").read_text(encoding="utf-8").splitlines()
        os.write(ours, b"half typed")
        screen.wait_for(lambda: b"half typed" in screen.data, "the line to be echoed")
        process.send_signal(signal.SIGTERM)
        assert screen.drain(process) == 128 + signal.SIGTERM
        after = _lflags(theirs)
    assert history == ["what is it?"]  # in the file while the chat still ran
    assert after & (termios.ICANON | termios.ECHO) == termios.ICANON | termios.ECHO
    assert (home / "plain-history").read_text(encoding="utf-8").splitlines() == ["what is it?", "half typed"]
    (session,) = [json.loads(path.read_text()) for path in (home / "sessions").glob("*.json")]
    assert session["draft"] == "half typed"


def test_the_history_is_never_written_through_a_link(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A link planted at the history's path: nothing is read from or written to where it leads, and one sentence
    says so, once."""
    readline = pytest.importorskip("readline")
    victim = tmp_path / "victim"
    victim.write_text("someone else's file\n")
    history = tmp_path / "plain-history"
    history.symlink_to(victim)
    readline.clear_history()
    try:
        readline.add_history("first")
        terminal._keep_history(readline, history, 1)
        readline.add_history("second")
        terminal._keep_history(readline, history, 1)
    finally:
        readline.clear_history()
    assert victim.read_text() == "someone else's file\n" and history.is_symlink()
    said = capsys.readouterr().err.splitlines()
    assert said == [f"blip2-chat: The Up arrow's earlier lines are not kept across chats: {history} is a symbolic "
                    "link, which blip2-chat does not follow (remove it, and the next chat makes the file)."] * 2
    # once per chat: one history object says it once however many lines come
    from chatbot.core.line_history import LineHistory

    sentences: list[str] = []
    kept = LineHistory(history, sentences.append)
    assert kept.read() == []
    kept.add(["a"])
    kept.add(["b"])
    assert len(sentences) == 1 and victim.read_text() == "someone else's file\n"


def test_the_history_file_keeps_its_last_lines_and_is_private(tmp_path: Path) -> None:
    from chatbot.core.line_history import HISTORY_LINES, LineHistory

    path = tmp_path / "plain-history"
    path.write_text("".join(f"line {n}\n" for n in range(HISTORY_LINES + 5)))
    history = LineHistory(path, lambda sentence: None)
    assert history.read() == [f"line {n}" for n in range(5, HISTORY_LINES + 5)]
    assert path.read_text().splitlines() == [f"line {n}" for n in range(5, HISTORY_LINES + 5)]
    fresh = LineHistory(tmp_path / "new" / "plain-history", lambda sentence: None)
    fresh.add(["a question"])
    assert (tmp_path / "new" / "plain-history").stat().st_mode & 0o777 == 0o600


# --- stdout that went away -------------------------------------------------------------------------------------


def test_a_reader_that_left_ends_the_chat_quietly_with_141(pictures) -> None:
    """`| head -1`: the chat stops asking the model, keeps the turns answered, says nothing about the pipe."""
    engine = ScriptedEngine("a red square", "a square", "red")
    plain, _, notes = plain_chat(engine, pictures["red"], max_new_tokens=500, out=FakeStream(fail_after=1))
    assert plain.run(iter(["What is it?", "And the shape?", "And the colour?"])) == 141
    assert len(engine.prompts) == 1  # nothing more was asked once nobody read the answers
    assert [turn["answer"] for turn in saved(plain.conversation.session.id)["turns"]] == ["a red square"]
    said = notes.getvalue()
    assert "pipe" not in said.lower() and "failed" not in said
    assert said.splitlines()[-1] == f"{saved_sentence(plain.conversation.session.id)} Goodbye."


def test_a_reader_that_left_the_real_chat_gets_141_and_no_complaint(
    checkpoints: dict[str, Path], pictures: dict[str, Path], home: Path
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "chatbot", "chat", str(pictures["red"]), "--plain", "--model", str(checkpoints["opt"]),
         "--max-new-tokens", "4"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "BLIP2_CHAT_HOME": str(home)},
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"question 1?\n")
    process.stdin.flush()
    assert process.stdout.readline() == b"You: question 1?\n"
    process.stdout.close()  # `head -1` has what it wanted and leaves
    with contextlib.suppress(BrokenPipeError):
        process.stdin.write(b"".join(f"question {n}?\n".encode() for n in range(2, 6)))
        process.stdin.close()
    assert process.stderr is not None
    err = process.stderr.read()
    process.wait(timeout=120)
    assert process.returncode == 141
    assert b"pipe" not in err.lower() and b"failed" not in err and b"Traceback" not in err
    (session,) = [json.loads(path.read_text()) for path in (home / "sessions").glob("*.json")]
    questions = [turn["question"] for turn in session["turns"]]
    assert questions in (["question 1?"], ["question 1?", "question 2?"])  # as far as it got, no further


def test_a_closed_stdout_is_one_sentence_before_the_model_loads(
    checkpoints: dict[str, Path], pictures: dict[str, Path], home: Path
) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "chatbot", "chat", str(pictures["red"]), "--plain", "--model", str(checkpoints["opt"])],
        input=b"hi?\n", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1),
        env={**os.environ, "BLIP2_CHAT_HOME": str(home)}, timeout=120,
    )
    assert ran.returncode == 2
    assert ran.stderr.decode().splitlines() == [
        "blip2-chat: Standard output is closed, so the answers have nowhere to go. Run it again with stdout open, "
        "or send it to a file (> chat.txt)."]


def test_leaving_at_once_with_stdout_closed_or_gone_is_no_traceback() -> None:
    """exit_now's flushes where stdout is None (`>&-`) or its reader left."""
    gone = "sys.stdout = open(os.devnull, 'w'); sys.stdout.write('x'); os.close(sys.stdout.fileno())"  # unflushed
    for setup in ("sys.stdout = None", gone):
        ran = subprocess.run(
            [sys.executable, "-c", f"import os, sys\n{setup}\nfrom chatbot.core.runtime import exit_now\n"
                                   "exit_now(3, loaded=True)"],
            capture_output=True, timeout=60)
        assert (ran.returncode, ran.stderr) == (3, b""), setup


# --- --json records for every question ---------------------------------------------------------------------


def test_json_writes_a_record_for_an_answer_the_model_failed(pictures, capsys: pytest.CaptureFixture[str]) -> None:
    """Every question has its record, so a script's questions and answers stay in step: a failed answer's has an
    "error" field (the sentence said on stderr) and the answer so far (null when none came, as in `ask --json`)."""
    engine = ScriptedEngine("one two three four", "never said", "a red square")
    engine.fail_next(RuntimeError("boom"), after_chunks=2)
    plain, out, notes = plain_chat(engine, pictures["red"], max_new_tokens=500, json_records=True)
    plain.run(iter(["first?", "second?"]))
    engine.fail_next(RuntimeError("bang"))
    plain.run(iter(["third?", "fourth?"]))
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(record["question"], record["answer"], record.get("error")) for record in records] == [
        ("first?", "one two", "The model failed (RuntimeError: boom). The conversation is intact; try again, or "
                              "/clear to start a fresh context."),
        ("second?", "never said", None),
        ("third?", None, "The model failed (RuntimeError: bang). The conversation is intact; try again, or /clear to "
                       "start a fresh context."),
        ("fourth?", "a red square", None),
    ]
    said = notes.getvalue().splitlines()
    assert f"blip2-chat: {records[0]['error']}" in said and f"blip2-chat: {records[2]['error']}" in said
    assert out.getvalue() == ""


def test_json_writes_a_record_for_a_question_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A README walk-through: a question refused for want of an image left no record, so a script's questions and
    records fell out of step."""
    conversation = Conversation(Settings(model="scripted"), None, SessionStore(), None, engine=ScriptedEngine("x"))
    plain = PlainChat(conversation, out=FakeStream(), notes=FakeStream(), json_records=True)
    plain.run(iter(["What is it?"]))
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records == [{"question": "What is it?", "answer": None, "image": None, "image_sha256": None,
                        "model": "scripted-opt", "error": "No image is open. Open one first with /image PATH."}]


def test_a_refused_question_s_record_names_the_open_image_as_ask_s_failure_records_do(
        pictures, capsys: pytest.CaptureFixture[str]) -> None:
    """The same fields as `ask --json`'s record of a failure (one rule, `runtime.failure_record`): the open image
    and its sha256, so a script can tell which picture the refusal was about."""
    plain, _, notes = plain_chat(ScriptedEngine("x"), pictures["red"], max_new_tokens=500, json_records=True)
    plain.run(iter(["What is \udcff?"]))  # not valid text: refused before the model
    [record] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    image = plain.conversation.image
    assert list(record) == ["image", "image_sha256", "question", "answer", "error", "model"]
    assert (record["image"], record["image_sha256"], record["answer"]) == (image.source, image.sha256, None)
    assert f"blip2-chat: {record['error']}" in notes.getvalue().splitlines()
