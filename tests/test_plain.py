"""The screen-reader mode (`chat --plain`): labelled lines, states in words, every command, Ctrl+C.

The whole chat runs as a subprocess with piped stdin, as a screen-reader user's terminal or a
script would run it; the commands and Ctrl+C are also driven in-process on the scripted engine,
where a slow answer can be stopped half-way.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from chatbot.core.conversation import Conversation
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.base import GenerationOptions
from chatbot.engine.scripted import ScriptedEngine
from chatbot.frontends.plain.chat import PlainChat
from chatbot.frontends.plain.terminal import plain_mode_forced
from chatbot.images import load_image
from tests.plain_support import FakeStream, plain_chat
from tests.terminal_support import Screen, ended, run_in_terminal
from tests.test_cli import Runs, run_together

ESCAPE = re.compile(r"[\x1b\x07\x08]|\x9b")  # ESC (CSI, OSC, colours, cursor moves), bell, backspace


def run_chat(*args: object, stdin: str, home: Path, plain: bool = True) -> subprocess.CompletedProcess[str]:
    """`blip2-chat chat ARGS [--plain]` with piped stdin and its own BLIP2_CHAT_HOME."""
    env = {**os.environ, "BLIP2_CHAT_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "chatbot", "chat", *map(str, args), *(["--plain"] if plain else [])],
        input=stdin, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120, env=env,
    )


def saved_sessions(home: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted((home / "sessions").glob("*.json"))]


# --- the whole chat, as a subprocess -------------------------------------------------------------


@pytest.fixture(scope="module")
def conversation(checkpoints: dict[str, Path], pictures: dict[str, Path],
                 tmp_path_factory: pytest.TempPathFactory) -> tuple[Runs, dict[str, Path]]:
    """Three turns, /undo, a bad command, /image and a fourth turn; with --plain and chosen automatically."""
    lines = ["what is in the picture?", "what colour is it?", "is it big?", "/undo", "/foo",
             f"/image {pictures['green']}", "and now?"]
    homes = {name: tmp_path_factory.mktemp(f"home-{name}") for name in ("plain", "auto")}
    chat = (pictures["red"], "--model", checkpoints["opt"], "--max-new-tokens", "8")
    runs = run_together({
        "plain": partial(run_chat, *chat, stdin="\n".join(lines) + "\n", home=homes["plain"]),
        "auto": partial(run_chat, *chat, stdin="\n".join(lines) + "\n", home=homes["auto"], plain=False),
    })
    return runs, homes


def test_plain_chat_labels_every_line(conversation: tuple[Runs, dict[str, Path]], pictures: dict[str, Path]) -> None:
    result = conversation[0]["plain"]
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    questions = ["what is in the picture?", "what colour is it?", "is it big?", "and now?"]
    commands = ["/undo", "/foo", f"/image {pictures['green']}"]  # piped: echoed too, so stdout reads as the chat
    assert [line for line in lines if line.startswith("You: ")] == [f"You: {q}" for q in [*questions[:3], *commands,
                                                                                          questions[3]]]
    assert len(lines) == 11, result.stdout  # You / Assistant four times, and the three commands: nothing else
    for at, line in enumerate(lines):
        if line.startswith("You: ") and not line.startswith("You: /"):
            assistant = lines[at + 1]
            assert assistant.startswith("Assistant: ") and assistant.removeprefix("Assistant: ").strip()


def test_plain_chat_says_states_and_command_results_in_words(
    conversation: tuple[Runs, dict[str, Path]], pictures: dict[str, Path]
) -> None:
    notes = conversation[0]["plain"].stderr.splitlines()
    assert [line for line in notes if line.startswith("Loading model: ")] == [
        "Loading model: 25 percent", "Loading model: 50 percent", "Loading model: 75 percent"]
    assert notes.index("Loading model: 75 percent") < notes.index("Model ready.")
    assert notes.count("Answering.") == 4
    assert notes.count("Answer ready.") == 4  # stdout is a pipe here, not the screen
    assert "Removed the last question and its answer: is it big?" in notes
    (unknown,) = [line for line in notes if "/foo" in line]
    assert unknown.startswith("blip2-chat: Unknown command /foo.")
    assert any(line.startswith(f"Now talking about {pictures['green']}.") for line in notes)
    assert notes[-1].startswith("Chat saved as session ") and notes[-1].endswith("Goodbye.")


def test_plain_chat_output_has_no_escape_sequences(conversation: tuple[Runs, dict[str, Path]]) -> None:
    for result in conversation[0].values():
        assert not ESCAPE.search(result.stdout + result.stderr), repr(result.stdout + result.stderr)
        assert "Traceback" not in result.stderr


def test_plain_chat_saves_the_session(conversation: tuple[Runs, dict[str, Path]], pictures: dict[str, Path]) -> None:
    (session,) = saved_sessions(conversation[1]["plain"])
    turns = session["turns"]
    assert [turn["question"] for turn in turns] == ["what is in the picture?", "what colour is it?", "and now?"]
    assert [turn["image"]["source"] for turn in turns] == [str(pictures["red"])] * 2 + [str(pictures["green"])]
    answers = [line.removeprefix("Assistant: ") for line in conversation[0]["plain"].stdout.splitlines()
               if line.startswith("Assistant: ")]
    assert [turn["answer"] for turn in turns] == [answers[0], answers[1], answers[3]]


def test_piped_chat_chooses_the_plain_mode_by_itself(conversation: tuple[Runs, dict[str, Path]]) -> None:
    runs = conversation[0]
    assert runs["auto"].returncode == 0, runs["auto"].stderr
    assert runs["auto"].stdout == runs["plain"].stdout


def test_ctrl_c_at_the_prompt_ends_the_chat_cleanly(
    checkpoints: dict[str, Path], pictures: dict[str, Path], tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "chatbot", "chat", str(pictures["red"]), "--plain", "--model", str(checkpoints["opt"]),
         "--max-new-tokens", "4"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        env={**os.environ, "BLIP2_CHAT_HOME": str(tmp_path)},
    )
    notes: queue.Queue[str] = queue.Queue()

    def read_notes() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            notes.put(line)

    reader = threading.Thread(target=read_notes, daemon=True)
    reader.start()
    try:
        assert process.stdin is not None
        process.stdin.write("what is it?\n")
        process.stdin.flush()
        deadline = time.monotonic() + 120
        while notes.get(timeout=max(0.1, deadline - time.monotonic())).strip() != "Answer ready.":
            pass
        process.send_signal(signal.SIGINT)  # waiting at the prompt, the pipe still open
        process.wait(timeout=30)  # not communicate(): it would race the reader thread for stderr
        assert process.stdout is not None
        stdout = process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=5)
    said = []
    while not notes.empty():
        said.append(notes.get().strip())
    assert process.returncode == 0
    assert stdout.startswith("You: what is it?\nAssistant: ")
    assert said[-1].endswith("Goodbye.") and "Traceback" not in "\n".join(said)
    (session,) = saved_sessions(tmp_path)
    assert [turn["question"] for turn in session["turns"]] == ["what is it?"]


# --- when the plain mode is chosen ---------------------------------------------------------------


@pytest.mark.parametrize(("stdin_tty", "stdout_tty", "term", "config", "forced"), [
    (False, True, "xterm-256color", False, True),  # questions piped in
    (True, False, "xterm-256color", False, True),  # transcript piped out
    (True, True, "dumb", False, True),  # a terminal that cannot move the cursor
    (True, True, "xterm-256color", True, True),  # the config file says plain = true
    (True, True, "xterm-256color", False, False),  # a real terminal: the chat app
])
def test_plain_mode_is_forced_when_the_app_cannot_work(stdin_tty, stdout_tty, term, config, forced) -> None:
    chosen = plain_mode_forced(FakeStream(stdin_tty), FakeStream(stdout_tty), {"TERM": term}, lambda: config)
    assert chosen is forced


def test_a_closed_stdin_counts_as_not_a_terminal() -> None:
    closed = FakeStream(True)
    closed.close()
    assert plain_mode_forced(closed, FakeStream(True), {"TERM": "xterm"}, lambda: False)


# --- every command and Ctrl+C, in-process on the scripted engine ----------------------------------


def test_every_command_does_what_it_says(tmp_path: Path, pictures: dict[str, Path], monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # /export without a path writes to the current folder
    engine = ScriptedEngine("a red square", "on a grey ground", "a red box", "a green square")
    plain, out, notes = plain_chat(engine, pictures["red"], tmp_path / "sessions")
    script = ["what is it?", "/set", "/set temperature 0.7", "/set colour blue", "where?", "/retry", "/undo",
              "/undo", "/undo", "/clear", "/image", f"/image {pictures['green']}", "//slash question?", "/save",
              "/export md", f"/export json {tmp_path / 'chat.json'}", "/export pdf", "/help", "/quit", "never asked"]
    assert plain.run(script) == 0
    assert out.getvalue().splitlines() == [
        "You: what is it?", "Assistant: a red square", "You: /set", "You: /set temperature 0.7",
        "You: /set colour blue", "You: where?", "Assistant: on a grey ground", "You: /retry", "Assistant: a red box",
        "You: /undo", "You: /undo", "You: /undo", "You: /clear", "You: /image", f"You: /image {pictures['green']}",
        "You: //slash question?", "Assistant: a green square", "You: /save", "You: /export md",
        f"You: /export json {tmp_path / 'chat.json'}", "You: /export pdf", "You: /help", "You: /quit",
    ]
    said = notes.getvalue()
    assert "Options: max_new_tokens=50" in said and "temperature is now 0.7." in said
    assert "/set does not know 'colour'" in said
    assert "Answering again: where?" in said
    assert "Removed the last question and its answer: where?" in said
    assert "Removed the last question and its answer: what is it?" in said
    assert "blip2-chat: There is nothing to undo." in said
    assert "Conversation cleared" in said and "blip2-chat: /image needs a path or a URL." in said
    assert f"Now talking about {pictures['green']}." in said
    assert "blip2-chat: /export needs a format, md, html or json, not 'pdf'." in said
    for command in ("/image PATH", "/clear", "/retry", "/undo", "/save", "/export", "/set", "/help", "/quit"):
        assert command in said
    assert "never asked" not in out.getvalue() and len(engine.prompts) == 4
    session = plain.conversation.session
    assert [turn.question for turn in session.turns] == ["/slash question?"]
    assert session.options["temperature"] == 0.7
    saved = json.loads((tmp_path / "sessions" / f"{session.id}.json").read_text(encoding="utf-8"))
    assert [turn["question"] for turn in saved["turns"]] == ["/slash question?"]
    assert (tmp_path / f"blip2-chat-{session.id}.md").read_text(encoding="utf-8").count("**You:**") == 1
    assert json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))["id"] == session.id
    assert not ESCAPE.search(out.getvalue() + said)


def test_a_question_that_does_not_fit_is_said_and_the_chat_goes_on(tmp_path: Path, pictures: dict[str, Path]) -> None:
    engine = ScriptedEngine("first", "second", "third")
    engine.info = replace(engine.info, context_tokens=engine.info.image_tokens + 30 + 20)  # 30 prompt tokens
    plain, out, notes = plain_chat(engine, pictures["red"], tmp_path / "sessions")
    plain.conversation.options = GenerationOptions(max_new_tokens=20)
    plain.run(["   ", "one two three four five six seven eight nine ten eleven twelve?",
               "and thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty?", "and more?",
               "why " * 80])
    said = notes.getvalue()
    assert [line for line in said.splitlines() if line.startswith("The model")] == [
        "The model now sees only the last turn of this chat: earlier ones no longer fit its context. The session "
        "keeps every turn."]
    assert "blip2-chat: The question is too long for this model" in said
    # the empty line printed nothing; the too-long question is in the transcript, unanswered, as commands are
    assert out.getvalue().splitlines()[6:] == [f"You: {('why ' * 80).strip()}"]


def test_the_left_out_sentence_follows_the_question_it_is_about(tmp_path: Path, pictures: dict[str, Path]) -> None:
    """Read in order (`2>&1 > chat.txt`, a screen reader), the sentence comes after the You: line it concerns."""
    engine = ScriptedEngine("first", "second")
    engine.info = replace(engine.info, context_tokens=engine.info.image_tokens + 16 + 20)
    both = FakeStream(False)
    conversation = Conversation(Settings(model="scripted", options=GenerationOptions(max_new_tokens=20)), None,
                                SessionStore(tmp_path / "sessions"), load_image(pictures["red"]), engine=engine)
    PlainChat(conversation, out=both, notes=both, echo=True).run(["one two three four five six seven eight nine?",
                                                                   "four five six?"])
    lines = both.getvalue().splitlines()
    at = lines.index("You: four five six?")
    assert lines[at + 1].startswith("The model no longer sees the earlier turns of this chat")
    assert lines[at + 2] == "Answering."


def test_a_model_failure_is_one_sentence_and_the_chat_goes_on(tmp_path: Path, pictures: dict[str, Path]) -> None:
    """A model that fails mid-answer (sampling on NaN logits, say) ends that answer, not the chat: what came
    is shown as stopped and saved, the error is one sentence, the next question is answered."""
    engine = ScriptedEngine("a red square on grey", "still here")
    engine.fail_next(RuntimeError("probability tensor contains either inf, nan or element < 0\nmore"), after_chunks=2)
    plain, out, notes = plain_chat(engine, pictures["red"], tmp_path / "sessions")
    assert plain.run(["what is it?", "and now?"]) == 0
    assert out.getvalue().splitlines() == ["You: what is it?", "Assistant: a red (stopped)", "You: and now?",
                                           "Assistant: still here"]
    said = notes.getvalue().splitlines()
    assert ("blip2-chat: The model failed (RuntimeError: probability tensor contains either inf, nan or element < 0)."
            " The conversation is intact; try again, or /clear to start a fresh context.") in said
    assert [(turn.answer, turn.stopped) for turn in plain.conversation.session.turns] == [
        ("a red", True), ("still here", False)]
    assert plain.conversation.saved


def test_a_command_that_fails_unexpectedly_is_one_sentence_and_the_chat_goes_on(
        tmp_path: Path, pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in one command (here /save raising what no rule foresaw) is one sentence, as in the app; the
    chat goes on, and what came before and after is answered and saved."""
    from chatbot.core import commands

    def broken(conversation: Conversation, argument: str, can_pick: bool) -> None:
        raise ValueError("invalid literal for int() with base 10: '\xb2'")

    monkeypatch.setitem(commands._HANDLERS, "save", broken)
    plain, out, notes = plain_chat(ScriptedEngine("a red square", "still red"), pictures["red"], tmp_path / "sessions")
    assert plain.run(["what is it?", "/save", "and now?"]) == 0
    assert out.getvalue().splitlines() == ["You: what is it?", "Assistant: a red square", "You: /save",
                                           "You: and now?", "Assistant: still red"]
    said = notes.getvalue().splitlines()
    assert ("blip2-chat: /save failed (ValueError: invalid literal for int() with base 10: '\xb2'). "
            "The chat is intact.") in said
    assert "Traceback" not in notes.getvalue()
    saved = json.loads((tmp_path / "sessions" / f"{plain.conversation.session.id}.json").read_text(encoding="utf-8"))
    assert [turn["question"] for turn in saved["turns"]] == ["what is it?", "and now?"]


def test_an_answer_without_words_is_said_to_be_none(tmp_path: Path, pictures: dict[str, Path]) -> None:
    """A screen reader hears "(no answer)", not a bare label."""
    plain, out, _ = plain_chat(ScriptedEngine("", "a square"), pictures["red"], tmp_path / "sessions")
    plain.run(["<script>alert(1)</script>", "what is it?"])
    assert out.getvalue().splitlines() == ["You: <script>alert(1)</script>", "Assistant: (no answer)",
                                           "You: what is it?", "Assistant: a square"]


def test_a_chat_that_could_not_be_saved_says_so_and_exits_2(tmp_path: Path, pictures: dict[str, Path]) -> None:
    engine = ScriptedEngine("a red square")
    (tmp_path / "sessions").write_text("")  # a file where the sessions folder should be: no save can work
    plain, out, notes = plain_chat(engine, pictures["red"], tmp_path / "sessions")
    assert plain.run(["what is it?"]) == 2
    assert out.getvalue().splitlines() == ["You: what is it?", "Assistant: a red square"]
    assert notes.getvalue().splitlines()[-1] == ("blip2-chat: The chat could not be saved (see above); its answers "
                                                 "are only in this output. Goodbye.")


def interrupt_at(engine: ScriptedEngine, *chunks: int) -> None:
    """Send this process SIGINT (what Ctrl+C does) right after the answer's chunk number N (from 1) for each N in
    `chunks`: the moment is the answer's, not the clock's, so a busy machine cannot move it."""
    original = engine.stream

    def stream(image, prompt, options, cancel=None):  # type: ignore[no-untyped-def]
        for number, piece in enumerate(original(image, prompt, options, cancel), 1):
            yield piece
            if number in chunks:
                os.kill(os.getpid(), signal.SIGINT)

    engine.stream = stream  # type: ignore[method-assign]


def test_ctrl_c_stops_the_answer_and_keeps_what_came(tmp_path: Path, pictures: dict[str, Path]) -> None:
    engine = ScriptedEngine(" ".join(f"w{n}" for n in range(200)), "next answer", delay=0.01)
    plain, out, notes = plain_chat(engine, pictures["red"], tmp_path / "sessions")
    interrupt_at(engine, 10)
    assert plain.run(["tell me everything", "and then?"]) == 0  # the chat went on after the stop
    you, stopped, again, answer = out.getvalue().splitlines()
    assert stopped.startswith("Assistant: w0 w1") and stopped.endswith(" (stopped)")
    assert "w199" not in stopped
    assert (again, answer) == ("You: and then?", "Assistant: next answer")
    assert "Answer stopped. The partial answer is kept." in notes.getvalue()
    first = plain.conversation.session.turns[0]
    assert first.stopped and first.answer == stopped.removeprefix("Assistant: ").removesuffix(" (stopped)")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl+C means "quit" again


def test_on_a_terminal_the_stopped_answer_starts_its_own_line(tmp_path: Path, pictures: dict[str, Path]) -> None:
    """The terminal echoes ^C where the cursor is; the answer's label must not follow it on that line (a
    screen reader said "caret C Assistant")."""
    engine = ScriptedEngine(" ".join(f"w{n}" for n in range(200)), delay=0.01)
    plain, _, _ = plain_chat(engine, pictures["red"], tmp_path / "sessions")
    plain.out = terminal = FakeStream(True)
    interrupt_at(engine, 10)
    plain.run(["tell me everything"])
    lines = terminal.getvalue().splitlines()
    assert lines[:2] == ["You: tell me everything", ""] and lines[2].startswith("Assistant: w0")


def test_a_second_ctrl_c_during_an_answer_ends_the_chat(tmp_path: Path, pictures: dict[str, Path]) -> None:
    engine = ScriptedEngine(" ".join(f"w{n}" for n in range(400)), delay=0.02)
    plain, out, notes = plain_chat(engine, pictures["red"], tmp_path / "sessions")
    original = engine.stream

    def ignores_first_cancel(image, prompt, options, cancel=None):  # a model slow to stop
        yield from original(image, prompt, options, None)

    engine.stream = ignores_first_cancel  # type: ignore[method-assign]
    interrupt_at(engine, 10, 20)
    assert plain.run(["tell me everything", "never asked"]) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "You: tell me everything" and lines[1].endswith("(stopped)") and len(lines) == 2
    assert notes.getvalue().rstrip().endswith("Goodbye.")
    saved = json.loads((tmp_path / "sessions" / f"{plain.conversation.session.id}.json").read_text(encoding="utf-8"))
    assert saved["turns"][0]["stopped"] is True


# --- a real terminal ------------------------------------------------------------------------------


def test_in_a_dumb_terminal_the_plain_mode_has_arrow_key_history(
    checkpoints: dict[str, Path], pictures: dict[str, Path], tmp_path: Path
) -> None:
    """A pseudo-terminal with TERM=dumb (as Emacs shells and some screen-reader setups have): plain mode
    is chosen without --plain, the up arrow brings back the last question, Ctrl+D ends the chat."""
    pytest.importorskip("pty")
    process, ours, theirs = run_in_terminal(
        ["chat", str(pictures["red"]), "--model", str(checkpoints["opt"]), "--max-new-tokens", "4"],
        env={**os.environ, "TERM": "dumb", "BLIP2_CHAT_HOME": str(tmp_path)},
    )
    os.close(theirs)  # reading ends when the child closes the terminal
    screen = Screen(ours)
    with ended(process, ours):
        screen.wait_for_text(b"You: ", 1)
        os.write(ours, b"what is it?\r")
        screen.wait_for_text(b"You: ", 2)
        os.write(ours, b"\x1b[A\r")  # the up arrow, then Enter: the same question again
        screen.wait_for_text(b"You: ", 3)
        os.write(ours, b"\x04")  # Ctrl+D
        screen.wait_for_text(b"Goodbye.", 1)
        assert process.wait(timeout=30) == 0
    text = screen.data.decode("utf-8", errors="replace").replace("\r\n", "\n")
    assert text.count("You: what is it?\n") == 2 and text.count("\nAssistant: ") == 2
    assert "Model ready." in text
    assert not ESCAPE.search(text), repr(text)
    assert (tmp_path / "plain-history").read_text(encoding="utf-8").splitlines()[-1] == "what is it?"


def test_the_config_file_can_ask_for_the_plain_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chatbot.core.config_file import read_config
    from chatbot.errors import OptionError
    from chatbot.locations import HOME_ENV

    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    monkeypatch.setenv("TERM", "xterm-256color")
    terminal = (FakeStream(True), FakeStream(True))
    assert not plain_mode_forced(*terminal)  # no config file: the chat app
    (tmp_path / "config.toml").write_text("plain = true\n", encoding="utf-8")
    assert plain_mode_forced(*terminal)
    (tmp_path / "config.toml").write_text("plain = false\n", encoding="utf-8")
    assert not plain_mode_forced(*terminal)
    (tmp_path / "config.toml").write_text('plain = "yes"\n', encoding="utf-8")
    with pytest.raises(OptionError, match="plain must be true or false"):
        read_config()


def test_plain_mode_resumes_the_last_chat_and_says_so(
    checkpoints: dict[str, Path], pictures: dict[str, Path], tmp_path: Path
) -> None:
    model = ("--model", str(checkpoints["opt"]), "--max-new-tokens", "4")
    first = run_chat(pictures["red"], *model, stdin="what is it?\n", home=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = run_chat("--continue", *model, stdin="and the colour?\n", home=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed session " in resumed.stderr and "1 turn. Last question: what is it?" in resumed.stderr
    assert resumed.stdout.startswith("You: and the colour?\nAssistant: ")
    (session,) = saved_sessions(tmp_path)  # the same session went on
    assert [turn["question"] for turn in session["turns"]] == ["what is it?", "and the colour?"]


def test_plain_mode_resume_says_when_the_image_moved(
    checkpoints: dict[str, Path], pictures: dict[str, Path], tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(pictures["red"].read_bytes())
    model = ("--model", str(checkpoints["opt"]), "--max-new-tokens", "4")
    assert run_chat(photo, *model, stdin="what is it?\n", home=tmp_path).returncode == 0
    photo.unlink()
    resumed = run_chat("--continue", *model, stdin=f"still there?\n/image {pictures['green']}\nand now?\n",
                       home=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "moved or deleted; open it again with /image PATH." in resumed.stderr
    assert "No image is open" in resumed.stderr  # the question before /image is refused, not lost silently
    assert resumed.stdout.count("Assistant: ") == 1


def test_hostile_bytes_on_stdin_are_asked_shown_and_never_emitted(
    checkpoints: dict[str, Path], pictures: dict[str, Path], tmp_path: Path
) -> None:
    """Bytes that are not UTF-8 and escape sequences in piped questions: a question with bytes that are not UTF-8 is
    refused in one sentence (as `ask` refuses it), the others are asked, every `You:` echo shows the escapes as
    text, and nothing raw reaches either stream."""
    env = {**os.environ, "BLIP2_CHAT_HOME": str(tmp_path)}
    questions = b"what\xff is it?\n\x1b]0;PWNED\x07 and the \x1b[2J title?\nlast one?\n"
    result = subprocess.run(
        [sys.executable, "-m", "chatbot", "chat", str(pictures["red"]), "--plain", "--model", str(checkpoints["opt"]),
         "--max-new-tokens", "3"], input=questions, capture_output=True, timeout=120, env=env,
    )
    stdout, stderr = result.stdout.decode("utf-8"), result.stderr.decode("utf-8")
    assert result.returncode == 0 and "Traceback" not in stderr, stderr
    you = [line for line in stdout.splitlines() if line.startswith("You: ")]
    assert you == ["You: what\\xff is it?", "You: \\x1b]0;PWNED\\x07 and the \\x1b[2J title?", "You: last one?"]
    assert stderr.count("blip2-chat: The question is not valid UTF-8 text.") == 1
    assert not ESCAPE.search(stdout + stderr)
    (session,) = saved_sessions(tmp_path)  # what was asked is stored as it came (the session is data)
    assert [turn["question"] for turn in session["turns"]][0] == "\x1b]0;PWNED\x07 and the \x1b[2J title?"


def test_continue_goes_on_with_the_model_the_chat_was_made_with(
    checkpoints: dict[str, Path], pictures: dict[str, Path], tmp_path: Path
) -> None:
    first = run_chat(pictures["red"], "--model", checkpoints["flan-t5"], "--max-new-tokens", "3",
                     stdin="what is it?\n", home=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = run_chat("--continue", "--max-new-tokens", "3", stdin="and now?\n", home=tmp_path)  # no --model
    assert resumed.returncode == 0, resumed.stderr
    assert (f"Going on with {checkpoints['flan-t5']}, the model this chat was made with (choose another with "
            "--model).") in resumed.stderr.splitlines()
    (session,) = saved_sessions(tmp_path)
    assert session["model"] == str(checkpoints["flan-t5"]) and len(session["turns"]) == 2


def test_a_chat_file_from_elsewhere_does_not_choose_an_unknown_model(
    checkpoints: dict[str, Path], pictures: dict[str, Path], tmp_path: Path
) -> None:
    """An exported chat names the model it was made with; from a file, an unknown one (a folder, any hub
    repository) is not loaded on its word: the chat goes on with the configured model and says so."""
    first = run_chat(pictures["red"], "--model", checkpoints["opt"], "--max-new-tokens", "3",
                     stdin="what is it?\n", home=tmp_path)
    assert first.returncode == 0, first.stderr
    (session,) = saved_sessions(tmp_path)
    shared = tmp_path / "shared.json"
    outside = tmp_path / "someone else's model"
    shared.write_text(json.dumps({**session, "model": str(outside)}), encoding="utf-8")
    env = {**os.environ, "BLIP2_CHAT_HOME": str(tmp_path), "BLIP2_CHAT_MODEL": str(checkpoints["opt"])}
    resumed = subprocess.run(
        [sys.executable, "-m", "chatbot", "chat", "--resume", str(shared), "--plain", "--max-new-tokens", "3"],
        input="and now?\n", capture_output=True, text=True, timeout=120, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert (f"This chat was made with {outside}, which is not a model blip2-chat knows; going on with "
            f"{checkpoints['opt']} (to use that one, pass --model with it).") in resumed.stderr.splitlines()
    assert "Going on with" not in resumed.stderr


def test_a_draft_left_in_the_app_is_said_once_when_the_chat_goes_on_here(
    checkpoints: dict[str, Path], pictures: dict[str, Path], tmp_path: Path
) -> None:
    """The app keeps a half-typed question in the session; this mode has no input box to put it back in, so
    it says it (made visible: it comes from a file), and the session no longer holds it."""
    first = run_chat(pictures["red"], "--model", checkpoints["opt"], "--max-new-tokens", "3",
                     stdin="what is it?\n", home=tmp_path)
    assert first.returncode == 0, first.stderr
    (session,) = saved_sessions(tmp_path)
    path = tmp_path / "sessions" / f"{session['id']}.json"
    path.write_text(json.dumps({**session, "draft": "And the \x1b[2J colour?"}), encoding="utf-8")
    resumed = run_chat("--continue", "--max-new-tokens", "3", stdin="", home=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "Typed last time and not sent: And the \\x1b[2J colour?" in resumed.stderr.splitlines()
    assert "draft" not in json.loads(path.read_text(encoding="utf-8"))


def test_a_chat_file_from_elsewhere_does_not_make_it_fetch_its_web_picture(
    checkpoints: dict[str, Path], pictures: dict[str, Path], tmp_path: Path
) -> None:
    """A chat file naming a web picture was a tracking pixel: opening the file downloaded it. The server
    here listens, and is never asked; the sentence says how to fetch it on purpose."""
    import socket

    first = run_chat(pictures["red"], "--model", checkpoints["opt"], "--max-new-tokens", "3",
                     stdin="what is it?\n", home=tmp_path)
    assert first.returncode == 0, first.stderr
    (session,) = saved_sessions(tmp_path)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"http://127.0.0.1:{server.getsockname()[1]}/pixel.png"
        shared = tmp_path / "shared.json"
        shared.write_text(json.dumps({**session, "id": "20240101-000000-abcdef",
                                      "image": {"source": url, "sha256": "0" * 64}}), encoding="utf-8")
        env = {**os.environ, "BLIP2_CHAT_HOME": str(tmp_path)}
        resumed = subprocess.run(
            [sys.executable, "-m", "chatbot", "chat", "--resume", str(shared), "--plain", "--model",
             str(checkpoints["opt"])], input="", capture_output=True, text=True, timeout=120, env=env)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody came
    assert resumed.returncode == 0, resumed.stderr
    assert (f"This chat came from a file, and its picture is on the web ({url}); it was not downloaded, since a "
            f"download tells that server this chat was opened. If you trust it, open it with /image {url}."
            ) in resumed.stderr.splitlines()


@pytest.mark.parametrize(("value", "forced"), [("1", True), ("yes", True), ("0", False), ("", False)])
def test_accessible_in_the_environment_chooses_the_screen_reader_mode(value: str, forced: bool) -> None:
    environ = {"TERM": "xterm-256color", "ACCESSIBLE": value}
    assert plain_mode_forced(FakeStream(True), FakeStream(True), environ, lambda: False) is forced


class FakeReadline:
    """The parts of the readline module the prompt loop uses: what is typed so far, and the history."""

    def __init__(self) -> None:
        self.buffer = ""
        self.history: list[str] = []

    def get_line_buffer(self) -> str:
        return self.buffer

    def add_history(self, line: str) -> None:
        self.history.append(line)

    def get_current_history_length(self) -> int:
        return len(self.history)


def test_ctrl_c_on_a_half_typed_line_clears_it_and_up_brings_it_back(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As in a shell, Ctrl+C at a half-typed prompt clears the line instead of ending the chat (the text goes
    to the history, so the up arrow brings it back); twice on an empty line it ends the chat."""
    import builtins

    from chatbot.frontends.plain import terminal

    readline = FakeReadline()
    keys = iter([("half a question", KeyboardInterrupt), ("", "what is it?"), ("", KeyboardInterrupt),
                 ("", "and the colour?"), ("", KeyboardInterrupt), ("", KeyboardInterrupt)])

    def typed(prompt: str) -> str:
        readline.buffer, result = next(keys)
        if result is KeyboardInterrupt:
            raise KeyboardInterrupt
        return str(result)

    monkeypatch.setattr(terminal, "_readline", lambda history_file, prompt="": readline)
    monkeypatch.setattr(builtins, "input", typed)
    lines = terminal._readline_lines("You: ", None)
    assert next(lines) == "what is it?"  # the half-typed line was cleared, not the chat ended
    assert readline.history == ["half a question"]  # Up brings it back
    assert terminal.CLEARED_LINE in capsys.readouterr().err
    # one Ctrl+C on an empty line (meant for an answer that had just ended) only says how to leave: a line typed
    # then goes on; two in a row end the chat
    assert next(lines) == "and the colour?"
    assert capsys.readouterr().err.splitlines() == [terminal.LEAVE_HINT]
    with pytest.raises(KeyboardInterrupt):
        next(lines)
    assert capsys.readouterr().err.splitlines() == [terminal.LEAVE_HINT]


def test_an_answer_cut_off_by_max_new_tokens_is_said_to_be(tmp_path: Path, pictures: dict[str, Path]) -> None:
    engine = ScriptedEngine("one two three four five", "six")
    plain, out, notes = plain_chat(engine, pictures["red"], tmp_path / "sessions")
    plain.conversation.options = GenerationOptions(max_new_tokens=3)
    assert plain.run(["what is it?", "and now?"]) == 0
    said = notes.getvalue().splitlines()
    assert said.count("The answer was cut off at 3 tokens (max_new_tokens); /set max_new_tokens 6 lets it go on "
                      "longer.") == 1  # the first answer only: the second ended by itself
    assert said.index("Answer ready.") < said.index("The answer was cut off at 3 tokens (max_new_tokens); /set "
                                                    "max_new_tokens 6 lets it go on longer.")
    assert out.getvalue().splitlines()[:2] == ["You: what is it?", "Assistant: one two three"]
