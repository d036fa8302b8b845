"""Sessions in the chat app: autosave, resume (as `--continue` and `--resume` find them), export, damage.

Also the `sessions` command and the `blip2-chat IMAGE` shorthand, run as a user runs them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.cli import build_parser, first_positional, with_default_command
from chatbot.core.resume import imported_session, session_to_resume
from chatbot.core.session import ImageRef, Session, Turn
from chatbot.core.session_files import session_from_json
from chatbot.core.store import SessionStore
from chatbot.engine.scripted import ScriptedEngine
from chatbot.errors import UserError
from chatbot.locations import sessions_dir
from chatbot.tui.widgets.chat_input import ChatInput, image_path_in
from tests.conftest import make_image
from tests.tui_support import (
    SIZE,
    ask,
    errors,
    notices,
    pairs,
    pilot_test,
    preview_source,
    ready,
    scripted_app,
    send,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("home")


@pilot_test
async def test_autosave_then_continue_shows_the_chat_and_its_image(pictures) -> None:
    app = scripted_app(ScriptedEngine("a red square", "red"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What is it?")
        await ask(pilot, "Which colour?")
        session_id = app.conversation.session.id

    session = session_to_resume(SessionStore(), continue_last=True, resume=None)  # what --continue opens
    assert session.id == session_id and len(session.turns) == 2
    engine = ScriptedEngine("still red")
    app = scripted_app(engine, session=session)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await wait_until(pilot, lambda: preview_source(app) == str(pictures["red"]), what="the image to reopen")
        assert pairs(app) == [("What is it?", "a red square"), ("Which colour?", "red")]
        assert f"Resumed session {session_id} (2 turns)." in notices(app)
        await pilot.press("up", "up")  # the resumed chat's questions are Up's earlier lines
        assert app.query_one(ChatInput).value == "What is it?"
        await pilot.press("down", "down")
        await ask(pilot, "Sure?")
        assert engine.prompts[-1].startswith("Question: What is it? Answer: a red square.")  # the context goes on
    assert len(SessionStore().load(session_id).turns) == 3


@pilot_test
async def test_a_question_typed_but_not_sent_is_there_again_after_quit_and_continue(pictures) -> None:
    app = scripted_app(ScriptedEngine("a red square"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What is it?")
        await pilot.press(*"And the half-typed")
        await pilot.press("ctrl+q")
    session_id = app.conversation.session.id
    saved = json.loads((sessions_dir() / f"{session_id}.json").read_text())
    assert saved["draft"] == "And the half-typed" and len(saved["turns"]) == 1

    app = scripted_app(ScriptedEngine("still red"), session=session_to_resume(SessionStore(), True, None))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.query_one(ChatInput).value == "And the half-typed"
        await pilot.press(*" question?", "enter")
        await wait_until(pilot, lambda: pairs(app)[-1] == ("And the half-typed question?", "still red"))
    saved = json.loads((sessions_dir() / f"{session_id}.json").read_text())
    assert "draft" not in saved and saved["turns"][-1]["question"] == "And the half-typed question?"


@pilot_test
async def test_resumed_chat_whose_image_moved_or_changed_says_so(pictures, tmp_path) -> None:
    photo = make_image(tmp_path / "photo.png", (10, 20, 200))
    app = scripted_app(ScriptedEngine("blue"), photo)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "Colour?")
    photo.unlink()
    app = scripted_app(ScriptedEngine("green now"), session=session_to_resume(SessionStore(), True, None))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await wait_until(pilot, lambda: errors(app), what="a notice about the image")
        assert errors(app) == [f"The image of this chat could not be opened again: No file at {photo}. It may have "
                               "been moved or deleted; open it again with /image PATH or Ctrl+O."]
        assert pairs(app) == [("Colour?", "blue")] and preview_source(app) is None  # the transcript stays
        await send(pilot, "And now?")
        assert errors(app)[-1] == "No image is open. Open one first with /image PATH."
        await send(pilot, f"/image {pictures['green']}")
        await wait_until(pilot, lambda: preview_source(app) == str(pictures["green"]))
        await ask(pilot, "And now?")
        assert pairs(app)[-1] == ("And now?", "green now")

    make_image(photo, (200, 200, 10))  # same path, other picture
    session = SessionStore().latest()
    assert session is not None
    session.image = ImageRef(str(photo), session.turns[0].image.sha256)  # type: ignore[union-attr]
    app = scripted_app(ScriptedEngine(), session=session)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: errors(app))
        assert errors(app)[0].startswith(f"{photo} has changed since this chat was saved")


@pilot_test
async def test_export_markdown_and_json_round_trip(pictures, tmp_path) -> None:
    app = scripted_app(ScriptedEngine("a red square", "yes"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await ask(pilot, "What is it?")
        await ask(pilot, "Is it red?")
        await send(pilot, "/export md")
        session = app.conversation.session
        markdown = (tmp_path / f"blip2-chat-{session.id}.md").read_text()
        assert notices(app)[-1] == (f"Exported the chat to {tmp_path / f'blip2-chat-{session.id}.md'}, with a copy "
                                    f"of its picture in {tmp_path / f'blip2-chat-{session.id}_files'}.")
        assert str(pictures["red"]) in markdown and session.turns[0].image.sha256 in markdown  # type: ignore[union-attr]
        assert "**You:** Is it red?" in markdown and "**Assistant:** yes" in markdown
        (tmp_path / "out").mkdir()  # /export never makes a folder it was not asked to
        await send(pilot, f"/export json {tmp_path / 'out' / 'chat.json'}")
        exported = (tmp_path / "out" / "chat.json").read_text()
        assert session_from_json(exported, "export") == session
        await send(pilot, "/export pdf")
        assert errors(app) == ["/export needs a format, md, html or json, not 'pdf'. e.g. /export md, or "
                               "/export json ~/chat.json."]
    copy = imported_session(SessionStore(), tmp_path / "out" / "chat.json")  # what --resume chat.json opens
    assert copy.turns == session.turns and copy.id != session.id  # a copy: the saved original is never overwritten


@pilot_test
async def test_a_damaged_session_file_is_set_aside_and_the_app_starts(pictures) -> None:
    sessions_dir().mkdir(parents=True)
    (sessions_dir() / "broken.json").write_text('{"model": "x", "turns": [')
    app = scripted_app(ScriptedEngine("fine"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await wait_until(pilot, lambda: any("damaged" in n for n in notices(app)))
        assert [n for n in notices(app) if "damaged" in n][0].startswith(
            "The damaged session file broken.json was moved aside to broken.")
        await ask(pilot, "Still working?")
        assert pairs(app) == [("Still working?", "fine")]
    assert list(sessions_dir().glob("broken.*.corrupt")) and not (sessions_dir() / "broken.json").exists()


@pilot_test
async def test_opening_and_quitting_leaves_no_empty_session(pictures) -> None:
    app = scripted_app(ScriptedEngine(), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+q")
    assert not sessions_dir().exists() or not list(sessions_dir().glob("*.json"))


def test_resume_errors_name_the_fix(tmp_path) -> None:
    store = SessionStore()
    with pytest.raises(UserError, match="no saved session to continue"):
        session_to_resume(store, continue_last=True, resume=None)
    sessions_dir().mkdir(parents=True)
    (sessions_dir() / "bad.json").write_text("{")
    with pytest.raises(UserError, match=r"not a readable blip2-chat session.*moved aside to bad\."):
        session_to_resume(store, continue_last=False, resume="bad")


def test_pasted_paths_are_recognised(pictures, tmp_path) -> None:
    spaced = tmp_path / "my photo.png"
    shutil.copy(pictures["red"], spaced)
    for text in (str(spaced), f"'{spaced}'", f'"{spaced}"', str(spaced).replace(" ", "\\ "), spaced.as_uri(),
                 f"  {spaced}  "):
        assert image_path_in(text) == spaced, text
    for text in ("what is in my photo.png?", str(tmp_path / "missing.png"), str(tmp_path), "", "a\nb"):
        assert image_path_in(text) is None, text


@pytest.mark.parametrize("argv, meant", [
    (["photo.jpg", "--model", "x"], ["chat", "photo.jpg", "--model", "x"]),
    (["--continue"], ["chat", "--continue"]),
    (["--model", "m", "--resume=abc"], ["chat", "--model", "m", "--resume=abc"]),
    (["ask", "a.jpg", "q"], ["ask", "a.jpg", "q"]),
    (["--help"], ["--help"]),
    ([], []),
    (["--model", "m", "ask", "--resume"], ["--model", "m", "ask", "--resume"]),
    # a flag's value spelled like a command is still the flag's value (`--model demo`, `--resume search`)
    (["photo.jpg", "--model", "demo"], ["chat", "photo.jpg", "--model", "demo"]),
    (["--model", "demo", "photo.jpg"], ["chat", "--model", "demo", "photo.jpg"]),
    (["--continue", "--model", "demo"], ["chat", "--continue", "--model", "demo"]),
    (["--resume", "search", "--model", "demo"], ["chat", "--resume", "search", "--model", "demo"]),
    (["--mod", "demo", "--continue"], ["chat", "--mod", "demo", "--continue"]),  # an abbreviated flag
    (["--plain", "photo.jpg"], ["chat", "--plain", "photo.jpg"]),  # a flag without a value
    (["--model=demo", "describe"], ["--model=demo", "describe"]),
])
def test_image_or_resume_flags_mean_the_chat_command(argv: list[str], meant: list[str]) -> None:
    assert _with_default_command(argv, build_parser()) == meant


def _with_default_command(argv: list[str], parser) -> list[str]:
    return with_default_command(argv, parser, first_positional(argv, parser))


def test_the_chat_shorthand_with_a_model_named_like_a_command_parses() -> None:
    parser = build_parser()
    args = parser.parse_args(_with_default_command(["photo.jpg", "--model", "demo"], parser))
    assert (args.command, args.image, args.model) == ("chat", "photo.jpg", "demo")
    args = parser.parse_args(_with_default_command(["--continue", "--model", "demo"], parser))
    assert (args.command, args.continue_last, args.model) == ("chat", True, "demo")
    args = build_parser().parse_args(["chat", "--resume", "abc", "--model", "m"])
    assert (args.image, args.resume, args.continue_last, args.model) == (None, "abc", False, "m")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chatbot", *args], capture_output=True, text=True, timeout=120,
                          env=os.environ.copy(), stdin=subprocess.DEVNULL)


def test_sessions_command_lists_and_reports_damaged_files() -> None:
    empty = run_cli("sessions")
    assert empty.returncode == 0 and empty.stdout.startswith("No saved sessions yet")
    store = SessionStore()
    red = ImageRef("/photos/red.png", "ab" * 32)
    older = Session(model="m", id="20240101-090000-aaaaaa", turns=[Turn("What is it?", "a cat", red)], image=red)
    newer = Session(model="m", id="20240102-090000-bbbbbb", image=red,
                    turns=[Turn("Where is this?", "a beach", red), Turn("When?", "noon", red)])
    for session in (older, newer):
        os.utime(store.save(session), (1_700_000_000 + len(session.turns), 1_700_000_000 + len(session.turns)))
    (store.root / "torn.json").write_text("{")
    result = run_cli("sessions")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "UPDATED", "TURNS", "FIRST", "QUESTION", "IMAGE"]
    assert lines[1].startswith("20240102-090000-bbbbbb") and "  2  Where is this?" in lines[1]
    assert lines[1].endswith("/photos/red.png") and lines[2].startswith("20240101-090000-aaaaaa")
    assert "torn.json was moved aside" in result.stderr


def test_shorthand_with_a_missing_image_fails_fast() -> None:
    result = run_cli("missing.png")
    assert result.returncode == 2 and result.stderr.startswith("blip2-chat: No file at ")
    resumed = run_cli("--continue")  # nothing saved yet (screen-reader mode resumes too: tests/test_plain.py)
    assert resumed.returncode == 2 and "no saved session to continue" in resumed.stderr


def test_shorthand_without_a_terminal_falls_back_to_line_mode(checkpoints, pictures) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatbot", str(pictures["red"]), "--model", str(checkpoints["opt"]), "--json"],
        input="What is it?\n", capture_output=True, text=True, timeout=180, env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["question"] == "What is it?"


@pytest.mark.parametrize("argv, meant", [
    (["askk", "photo.jpg", "Hi"], "ask"), (["serach", "a cat"], "search"), (["Caption", "a.png"], "caption"),
    (["descibe", "folder"], "describe"),
    (["photo.jpg"], None), (["ask", "a.jpg", "q"], None), (["--model", "demo", "x"], None), ([], None),
    (["https://example.com/cat"], None), (["zebra"], None),
])
def test_a_mistyped_command_is_named(argv: list[str], meant: str | None) -> None:
    from chatbot.cli import mistyped_command

    parser = build_parser()
    assert mistyped_command(first_positional(argv, parser), parser) == meant


def test_a_mistyped_command_or_flag_gets_a_suggestion(capsys: pytest.CaptureFixture[str], tmp_path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from chatbot.cli import main, mistyped_command

    assert main(["askk", str(tmp_path / "photo.jpg"), "Hi"]) == 2
    assert capsys.readouterr().err == ("blip2-chat: there is no command or file 'askk'. Did you mean ask? "
                                       "See blip2-chat --help.\n")
    with pytest.raises(SystemExit) as stop:
        main(["ask", str(tmp_path / "photo.jpg"), "Hi", "--modle", "demo"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "blip2-chat: error: unrecognized arguments: --modle demo (did you mean --model?)")
    with pytest.raises(SystemExit):  # a real flag of other commands is not "mistyped": say whose it is
        main(["ask", str(tmp_path / "photo.jpg"), "Hi", "--prompt", "a photo of"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "blip2-chat: error: unrecognized arguments: --prompt a photo of (--prompt goes with caption or describe, "
        "not with this command)")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "askk").write_bytes(b"")  # a file of that name: the chat's image, not a mistyped command
    assert mistyped_command("askk", build_parser()) is None


def test_each_command_says_which_model_its_model_flag_means() -> None:
    from chatbot.cli import _subcommands

    commands = _subcommands(build_parser())
    helps = {name: " ".join(commands[name].format_help().split()) for name in ("ask", "demo", "index", "search")}
    assert "(default: Salesforce/blip2-opt-2.7b)" in helps["ask"]
    assert "(default: demo, the model trained here)" in helps["demo"]
    for name in ("index", "search"):
        assert "the retrieval checkpoint" in helps[name] and "blip2-opt-2.7b" not in helps[name]
        assert "(default: the one the index was made with; for a new index Salesforce/blip2-itm-vit-g)" in helps[name]


def test_only_a_chat_file_from_outside_the_store_is_an_import(tmp_path) -> None:
    """What --resume names decides how far the chat is trusted (its model): an export from anywhere is an
    import; one's own saved session, by id or by its path in the sessions folder, is not."""
    from chatbot.core.resume import is_import

    store = SessionStore(tmp_path / "sessions")
    store.root.mkdir()
    assert is_import(store, str(tmp_path / "shared.json"))
    assert is_import(store, str(store.root / "not an id.json"))
    assert not is_import(store, str(store.root / "20250101-120000-abcdef.json"))
    assert not is_import(store, "20250101-120000-abcdef") and not is_import(store, None)


def test_after_ctrl_c_the_program_leaves_with_a_second_one_ignored() -> None:
    """The program (not main called in-process) that stopped on Ctrl+C ignores another while it exits, so
    library clean-up at exit is never broken by it (an `index` run printed a traceback)."""
    script = ("import signal, sys\n"
              "import chatbot.cli as cli\n"
              "def stopped(given):\n    raise KeyboardInterrupt\n"
              "cli._run = lambda args, *rest: stopped(args)\n"
              "status = cli.main(['caption', 'x.png'])\n"  # in-process: the handler is left alone
              "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, 'in-process'\n"
              "sys.argv = ['blip2-chat', 'caption', 'x.png']\n"
              "status = cli.main()\n"
              "assert status == 130 and signal.getsignal(signal.SIGINT) is signal.SIG_IGN\n"
              "signal.raise_signal(signal.SIGINT)\n"  # ignored: no KeyboardInterrupt
              "print('left', status)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "left 130\n" and "Traceback" not in result.stderr
