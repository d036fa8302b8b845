"""Tab completion: the one rule (`core.completion`) on a real folder, then through the app's input box
and the screen-reader mode's readline completer."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from chatbot.core import completion as completion_module
from chatbot.core.commands import COMMANDS, _unquoted, parse_command
from chatbot.core.completion import (
    PATH_COMMANDS,
    Candidate,
    completable,
    complete_line,
    completion,
    listing,
)
from chatbot.engine.scripted import ScriptedEngine
from chatbot.frontends.plain import terminal
from chatbot.locations import HOME_ENV
from chatbot.tui.widgets.chat_input import ChatInput
from tests.tui_support import SIZE, input_value, pilot_test, ready, scripted_app


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """red.png, reds.jpg, "my photo.jpg", notes.txt, .hidden.png, and the folders redfolder/ and "my dir"/."""
    root = tmp_path / "pics"
    root.mkdir()
    for name in ("red.png", "reds.jpg", "my photo.jpg", "notes.txt", ".hidden.png", "Upper.JPEG"):
        (root / name).write_bytes(b"not really an image")
    (root / "redfolder").mkdir()
    (root / "my dir").mkdir()
    (root / "redfolder" / "inside.gif").write_bytes(b"")
    return root


def parsed_path(line: str) -> str:
    """The path the command parser reads from a completed `/image ...` line."""
    return _unquoted(parse_command(line).argument)


# The rule, pure.

def test_image_is_the_path_command_read_from_the_table() -> None:
    assert PATH_COMMANDS == {"image", "compare"}


def test_one_match_completes_and_a_folder_ends_with_a_slash(folder: Path) -> None:
    assert complete_line("/image reds", folder) == ["/image reds.jpg"]
    assert complete_line("/image redf", folder) == ["/image redfolder/"]
    assert complete_line(f"/image {folder}/redfolder/i", folder) == [f"/image {folder}/redfolder/inside.gif"]
    assert completion("/image reds", folder).line == "/image reds.jpg"


def test_several_matches_give_their_common_beginning(folder: Path) -> None:
    result = completion("/image re", folder)
    assert [c.line for c in result.candidates] == ["/image red.png", "/image redfolder/", "/image reds.jpg"]
    assert [c.label for c in result.candidates] == ["red.png", "redfolder/", "reds.jpg"]
    assert result.line == "/image red" and not result.unique


def test_only_folders_and_image_files_and_hidden_ones_only_after_a_dot(folder: Path) -> None:
    labels = [c.label for c in completion("/image ", folder).candidates]
    assert labels == ["my dir/", "my photo.jpg", "red.png", "redfolder/", "reds.jpg", "Upper.JPEG"]
    assert "notes.txt" not in labels and ".hidden.png" not in labels  # not an image; hidden
    assert complete_line("/image no", folder) == []
    assert complete_line("/image .h", folder) == ["/image .hidden.png"]
    assert complete_line("/image U", folder) == ["/image Upper.JPEG"]  # suffixes in any case


def test_names_with_spaces_are_quoted_so_the_parser_reads_them_back(folder: Path) -> None:
    assert complete_line("/image my p", folder) == ['/image "my photo.jpg"']
    assert complete_line('/image "my p', folder) == ['/image "my photo.jpg"']  # an opened quote
    assert complete_line('/image "my p"', folder) == ['/image "my photo.jpg"']  # a closed one
    assert complete_line("/image 'my p", folder) == ['/image "my photo.jpg"']
    assert complete_line("/image my d", folder) == ['/image "my dir/']  # a folder's quote stays open
    assert parsed_path('/image "my photo.jpg"') == "my photo.jpg"
    # Once one candidate needs quotes all have them, so what they share still holds what was typed.
    assert completion("/image m", folder).line == '/image "my '


def test_quotes_and_backslashes_in_names_survive_the_round_trip(tmp_path: Path) -> None:
    names = ['a "quoted" one.png', "back\\slash.png", "'single'.png", "it's.png"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    lines = complete_line("/image ", tmp_path)
    assert sorted(parsed_path(line) for line in lines) == sorted(names)


def test_every_completed_path_is_what_the_parser_opens(folder: Path) -> None:
    for line in complete_line(f"/image {folder}/", folder):
        if not line.endswith("/"):
            assert Path(parsed_path(line)).is_file(), line


def test_tilde_is_expanded_to_look_but_kept_in_the_line(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(folder))
    assert complete_line("/image ~/red", Path("/")) == ["/image ~/red.png", "/image ~/redfolder/", "/image ~/reds.jpg"]
    assert complete_line("/image ~/redfolder/", Path("/")) == ["/image ~/redfolder/inside.gif"]
    assert complete_line("/image ~", Path("/")) == ["/image ~/"]


def test_a_folder_that_cannot_be_listed_offers_nothing(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    assert complete_line("/image /no/such/folder/x", folder) == []
    assert complete_line(f"/image {folder}/red.png/x", folder) == []  # a file, not a folder
    monkeypatch.setattr(completion_module.os, "scandir", refuse)
    assert complete_line("/image re", folder) == []
    assert completion("/image re", folder).line == "/image re"


def test_names_with_control_characters_are_never_offered(tmp_path: Path) -> None:
    (tmp_path / "evil\x1b]0;title\x07.png").write_bytes(b"")
    (tmp_path / "fine.png").write_bytes(b"")
    assert complete_line("/image ", tmp_path) == ["/image fine.png"]


def test_command_names_complete(folder: Path) -> None:
    assert complete_line("/im") == ["/image "]  # takes a path: a space follows
    assert complete_line("/IM") == ["/image "]
    assert complete_line("/cl") == ["/clear"]  # takes nothing
    assert complete_line("/s") == ["/save", "/set "]
    assert completion("/s").line == "/s"
    assert len(complete_line("/")) == len(COMMANDS)  # every command
    assert complete_line("/nothing") == []


def test_lines_that_are_not_completable(folder: Path) -> None:
    for line in ("red", "what is red", "//image re", "/set temp", "/export md re", " /image re", "/clear x"):
        assert not completable(line), line
        assert complete_line(line, folder) == [], line
        assert completion(line, folder).line == line
    assert completable("/image re") and completable("/im")


def test_listing_names_sixteen_then_counts_the_rest_and_says_how_to_narrow() -> None:
    candidates = [Candidate(f"/image f{i}.png", f"f{i}.png") for i in range(19)]
    assert listing(candidates[:2]) == "f0.png, f1.png"
    assert listing(candidates).endswith("f15.png, and 3 more: type more of the name to narrow them")


def test_every_command_is_named_when_listed() -> None:
    # a blind user's probe: "/" Tab Tab said "... /save, and 2 more", and /set and /undo were never heard
    from chatbot.core.commands import COMMANDS

    assert "more" not in listing(completion("/", Path(".")).candidates)
    assert len(COMMANDS) <= 16


def test_names_are_listed_as_a_person_counts(tmp_path: Path) -> None:
    for number in (1, 2, 10, 11, 20):
        (tmp_path / f"Copy{number}.png").write_bytes(b"x")
    assert [candidate.label for candidate in completion("/image C", tmp_path).candidates] == [
        "Copy1.png", "Copy2.png", "Copy10.png", "Copy11.png", "Copy20.png"]


# The app's input box.

@pilot_test
async def test_tab_in_the_app_completes_lists_and_steps_through(pictures, folder, monkeypatch) -> None:
    monkeypatch.setenv(HOME_ENV, str(folder.parent / "home"))
    app = scripted_app(ScriptedEngine("an answer"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        field = app.query_one(ChatInput)
        field.focus()
        field.value = f"/image {folder}/reds"
        await pilot.press("tab")
        assert input_value(app) == f"/image {folder}/reds.jpg" and field.cursor_position == len(field.value)

        field.value = f"/image {folder}/re"
        await pilot.press("tab")
        assert input_value(app) == f"/image {folder}/red"
        shown = [notification.message for notification in app._notifications]
        assert any("red.png, redfolder/, reds.jpg" in message for message in shown), shown
        await pilot.press("tab")  # Tab again: each candidate in turn
        assert input_value(app) == f"/image {folder}/red.png"
        await pilot.press("tab")
        assert input_value(app) == f"/image {folder}/redfolder/"

        field.value = "/im"
        await pilot.press("tab")
        assert input_value(app) == "/image " and app.focused is field

        field.value = f"/image {folder}/nothing"
        await pilot.press("tab")  # nothing matches: the line stays, and so does the focus
        assert input_value(app) == f"/image {folder}/nothing" and app.focused is field


@pilot_test
async def test_tab_on_a_question_still_moves_the_focus(pictures) -> None:
    app = scripted_app(ScriptedEngine("an answer"), pictures["red"])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        field = app.query_one(ChatInput)
        field.focus()
        field.value = "what is red"
        await pilot.press("tab")
        assert app.focused is not field and input_value(app) == "what is red"


# The screen-reader mode's readline completer.

def readline_lines(line: str) -> list[str]:
    found, state = [], 0
    while (candidate := terminal.readline_completer(line, state)) is not None:
        found.append(candidate)
        state += 1
    return found


def test_the_readline_completer_offers_the_same_lines(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder)
    for line in ("/image re", "/image my", '/image "my p', "/im", "/", "/image no", "a question", "/set t"):
        assert readline_lines(line) == complete_line(line, folder), line
    assert readline_lines("/image reds") == ["/image reds.jpg"]


def test_readline_is_set_to_complete_the_whole_line(monkeypatch: pytest.MonkeyPatch) -> None:
    readline = pytest.importorskip("readline")
    bound: list[str] = []
    monkeypatch.setattr(readline, "parse_and_bind", bound.append)
    monkeypatch.setattr(readline, "set_completion_display_matches_hook", lambda hook: None)
    previous = (readline.get_completer(), readline.get_completer_delims())
    try:
        assert terminal._readline(None, "You: ") is readline
        assert readline.get_completer() is terminal.readline_completer
        assert readline.get_completer_delims() == ""  # a path with spaces is one word
        assert "tab: complete" in bound or "bind ^I rl_complete" in bound
    finally:
        readline.set_completer(previous[0])
        readline.set_completer_delims(previous[1])


def test_the_readline_match_list_is_one_plain_line(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder)
    readline_lines("/image re")
    out = io.StringIO()
    terminal.readline_list_matches("You: ", "/image red", out)
    assert out.getvalue() == "\n3 matches: red.png, redfolder/, reds.jpg\nYou: /image red"
    assert "\x1b" not in out.getvalue()


def test_a_failing_completion_is_no_match_for_readline(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(line: str) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(completion_module, "completion", broken)
    assert terminal.readline_completer("/image x", 0) is None
