"""What a user probe of blip2-chat in scripts found, each now fixed:

1. `ask --json` and `caption --json` printed records only for the images answered: which image failed (could
   not be read, or the model failed on it) was only on stderr. Now every image given has its record, in the
   order given, a failed one with `answer` null and `error` (the sentence said on stderr);
2. a closed stdout (`>&-`) crashed `models` (AttributeError) and `sessions`, `search` and `index --json` said
   they worked while their output went nowhere: now refused with one sentence, exit 2, before anything is done;
3. an output encoding that cannot hold a character (PYTHONIOENCODING=latin-1, an ASCII locale) crashed with
   UnicodeEncodeError: now such a character is written as JSON's escape;
4. a checkpoint folder given relative (`--model ./folder`) was saved relative, so `--continue` from another
   folder failed: it is recorded as its absolute path;
5. flags given with `--continue` were ignored in favour of the chat's saved options: now they win, said in a line;
6. `index --json` printed no summary after Ctrl+C: now it prints what the finished batches did, `cancelled`;
7. the README did not list `models --json` and its fields.

Front ends run in-process on a ScriptedEngine where what is tested is theirs; what needs the program's own
streams (a closed stdout, the encoding Python chose at start) runs as a subprocess that loads no model.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from chatbot.cli import main
from chatbot.core.photo_index.store import IndexStore
from chatbot.core.resume import given_options_win, options_for
from chatbot.core.session import ImageRef, Session, Turn
from chatbot.core.settings import Settings, model_as_recorded, settings_from
from chatbot.engine import retrieval
from chatbot.engine.base import GenerationOptions
from chatbot.engine.scripted import ScriptedEngine
from chatbot.frontends import oneshot
from tests.conftest import make_image
from tests.test_cli import PREFIX

README = Path(__file__).resolve().parent.parent / "README.md"
NOT_AN_IMAGE = b"just some text, not a picture\n"


def scripted(monkeypatch: pytest.MonkeyPatch, *answers: str) -> ScriptedEngine:
    """The one-shot commands answer with a ScriptedEngine; it names the model the settings name, as the real
    engine does (`info.model_id` is what the user asked for)."""
    engine = ScriptedEngine(*answers)

    def open_engine_for(settings: Settings) -> ScriptedEngine:
        engine.info = replace(engine.info, model_id=settings.model)
        return engine

    monkeypatch.setattr(oneshot, "open_engine_for", open_engine_for)
    return engine


def records(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def said(err: str) -> list[str]:
    """The sentences on stderr, without the program's name."""
    return [line.removeprefix(PREFIX) for line in err.splitlines()]


# --- 1. --json: one record per image given, a failed one's too ------------------------------------------------


@pytest.fixture
def folder_of_four(pictures: dict[str, Path], work: Path) -> list[str]:
    """a.png b.jpg (pictures), bad.jpg (text), missing.jpg (nothing there), named relative to the current folder."""
    (work / "a.png").write_bytes(pictures["red"].read_bytes())
    (work / "b.jpg").write_bytes(pictures["green"].read_bytes())
    (work / "bad.jpg").write_bytes(NOT_AN_IMAGE)
    return ["a.png", "bad.jpg", "missing.jpg", "b.jpg"]


def test_ask_json_gives_every_image_its_record_in_the_order_given(
        folder_of_four: list[str], work: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    scripted(monkeypatch, "a red square", "a green square")
    assert main(["ask", *folder_of_four, "What is it?", "--json", "--model", "scripted"]) == 2
    captured = capsys.readouterr()
    rows = records(captured.out)
    assert [row["image"] for row in rows] == [str(work / name) for name in folder_of_four]  # absolute, in order
    assert [row["answer"] for row in rows] == ["a red square", None, None, "a green square"]
    assert [row["question"] for row in rows] == ["What is it?"] * 4
    assert [row["model"] for row in rows] == ["scripted"] * 4
    bad, missing = rows[1], rows[2]
    assert bad["image_sha256"] is None and missing["image_sha256"] is None
    assert [bad["error"], missing["error"]] == said(captured.err)  # the very sentences said on stderr
    assert "error" not in rows[0] and "error" not in rows[3]


def test_json_records_say_a_model_failure_and_exit_1(
        pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    red, green = str(pictures["red"]), str(pictures["green"])
    engine = scripted(monkeypatch, "a green square")
    engine.fail_next(RuntimeError("probability tensor contains either `inf`, `nan` or element < 0"))
    assert main(["ask", red, green, "What is it?", "--json", "--model", "scripted"]) == 1
    captured = capsys.readouterr()
    first, second = records(captured.out)
    (sentence,) = said(captured.err)
    assert sentence == f"{red}: {first['error']}"  # stderr names the image; the record has it in `image`
    assert first["error"] == ("The model failed (RuntimeError: probability tensor contains either `inf`, `nan` "
                              "or element < 0).")
    assert first["answer"] is None and first["image"] == red
    assert first["image_sha256"] == hashlib.sha256(pictures["red"].read_bytes()).hexdigest()  # read, then failed
    assert second["answer"] == "a green square" and second["image"] == green

    engine.enqueue("a red square")
    engine.fail_next(MemoryError(), after_chunks=0)
    assert main(["caption", red, green, "--json", "--model", "scripted"]) == 1
    captured = capsys.readouterr()
    rows = records(captured.out)
    assert [row["image"] for row in rows] == [red, green]
    assert rows[0]["answer"] is None and rows[0]["error"] == said(captured.err)[0].removeprefix(f"{red}: ")
    assert rows[1]["answer"] == "a red square" and "question" not in rows[0]


def test_an_unreadable_image_and_a_model_failure_together_exit_2(
        folder_of_four: list[str], work: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """What the user can fix (a bad file) wins over the model's failure: exit status 2, as README says."""
    engine = scripted(monkeypatch, "a green square")
    engine.fail_next(RuntimeError("boom"))
    assert main(["caption", "a.png", "bad.jpg", "b.jpg", "--json", "--model", "scripted"]) == 2
    rows = records(capsys.readouterr().out)
    assert [(row["image"], row["answer"]) for row in rows] == [
        (str(work / "a.png"), None), (str(work / "bad.jpg"), None), (str(work / "b.jpg"), "a green square")]
    assert rows[0]["error"] == "The model failed (RuntimeError: boom)."
    assert rows[1]["error"].startswith(f"{work / 'bad.jpg'} is not an image")


@pytest.mark.parametrize("names", [["bad.jpg"], ["bad.jpg", "missing.jpg"]])
def test_when_no_image_can_be_read_json_still_names_each(
        names: list[str], folder_of_four: list[str], work: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def never(settings: Settings) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(oneshot, "open_engine_for", never)
    assert main(["ask", *names, "What is it?", "--json", "--model", "scripted"]) == 2
    captured = capsys.readouterr()
    rows = records(captured.out)
    assert [row["image"] for row in rows] == [str(work / name) for name in names]
    assert [row["error"] for row in rows] == said(captured.err)[:len(names)]
    assert all(row["answer"] is None and row["model"] == "scripted" for row in rows)


# --- 2. a closed stdout: refused before anything is done ---------------------------------------------------


def run_with_closed_stdout(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`blip2-chat ARGS >&-`."""
    return subprocess.run(
        [sys.executable, "-m", "chatbot", *map(str, args)], stdout=None, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace", timeout=120,
        env=env or os.environ.copy(), preexec_fn=lambda: os.close(1),
    )


def closed(what: str) -> str:
    return (f"{PREFIX}Standard output is closed, so {what} has nowhere to go. Run it again with stdout open, or "
            "send it to a file (> out.txt).")


def test_every_command_that_writes_to_stdout_refuses_a_closed_one(tmp_path: Path, pictures: dict[str, Path]) -> None:
    home = tmp_path / "home"
    sessions = home / "sessions"
    sessions.mkdir(parents=True)
    chat_id = "20250101-120000-abcdef"
    chat = sessions / f"{chat_id}.json"
    chat.write_text(json.dumps(Session(model="demo", id=chat_id).to_dict()), encoding="utf-8")
    env = {**os.environ, "BLIP2_CHAT_HOME": str(home)}
    index = tmp_path / "index"
    cases = {
        ("models",): "the table of models",
        ("models", "--json"): "the table of models",
        ("sessions",): "the list of chats",
        ("sessions", "--json"): "the list of chats",
        ("sessions", "--delete", chat_id): "the report of what is deleted",
        ("search", "red", "--json"): "the list of results",
        ("search", "red"): "the list of results",
        ("index", pictures["red"].parent, "--json", "--index", index): "the summary",
    }
    for args, what in cases.items():
        result = run_with_closed_stdout(*args, env=env)
        assert (result.returncode, result.stderr.splitlines()) == (2, [closed(what)]), args
    assert not index.exists()  # nothing was indexed
    assert chat.exists()  # nothing was deleted
    # index without --json writes nothing to stdout: not refused for it (here: nothing to index, its own sentence)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_with_closed_stdout("index", empty, "--index", index, env=env)
    assert result.returncode == 2 and "Standard output is closed" not in result.stderr, result.stderr


def test_describe_and_the_chats_refuse_a_closed_stdout_before_anything_is_done(tmp_path: Path,
                                                                               pictures: dict[str, Path]) -> None:
    """A README walk-through: `describe IMAGE >&-` loaded the model, then died with an AttributeError; `demo --plain
    >&-` drew and saved a new demo picture before it refused."""
    home = tmp_path / "home"
    env = {**os.environ, "BLIP2_CHAT_HOME": str(home)}
    said = "Standard output is closed, so"
    for args, what, file in [(("describe", pictures["red"], "--model", "demo"), "the alt text has", "alt.jsonl"),
                             (("demo", "--plain"), "the answers have", "chat.txt"),
                             (("chat", pictures["red"], "--plain", "--model", "demo"), "the answers have", "chat.txt")]:
        result = run_with_closed_stdout(*args, env=env)
        assert (result.returncode, result.stderr.splitlines()) == (
            2, [f"{PREFIX}{said} {what} nowhere to go. Run it again with stdout open, or send it to a file (> {file})."]
        ), args
    assert not (home / "demo").exists()  # no picture drawn
    out = tmp_path / "alt.jsonl"  # describe with --out writes no row to stdout: it goes on
    result = run_with_closed_stdout("describe", pictures["red"], "--model", "demo", "--out", out, env=env)
    assert result.returncode == 0 and said not in result.stderr and len(out.read_text().splitlines()) == 1


# --- 3. characters the output's encoding cannot hold -------------------------------------------------------


QUESTION = "Is it caf\u00e9 \u4e2d \U0001F600?"  # Latin-1 holds é, not 中 or the emoji


def json_escaped(text: str) -> str:
    """What JSON's own escaping makes of `text` (ensure_ascii): the independent reference for the escapes."""
    return json.dumps(text, ensure_ascii=True)[1:-1]


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
def test_an_output_encoding_that_cannot_hold_a_character_gets_escapes(
        encoding: str, pictures: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    red = str(pictures["red"])
    scripted(monkeypatch, "a red \u4e2d square \U0001F600", "a red \u4e2d square \U0001F600")
    for json_flag in ([], ["--json"]):
        raw = io.BytesIO()
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding=encoding))
        assert main(["ask", red, QUESTION, "--model", "scripted", *json_flag]) == 0
        sys.stdout.flush()
        text = raw.getvalue().decode(encoding)  # what a program reading this encoding gets
        if json_flag:
            (row,) = records(text)
            assert row["question"] == QUESTION and row["answer"] == "a red \u4e2d square \U0001F600"
        else:
            kept = "".join(ch if ch.encode(encoding, "ignore") else json_escaped(ch) for ch in "a red \u4e2d square "
                           "\U0001F600")
            assert text == kept + "\n"


def test_the_program_s_own_streams_in_ascii_get_escapes(tmp_path: Path) -> None:
    """The encoding Python chose at start (PYTHONIOENCODING=ascii, as under LC_ALL=C): `sessions` lists a chat
    whose first question and image name are not ASCII; stdout crashed with UnicodeEncodeError."""
    home = tmp_path / "home"
    (home / "sessions").mkdir(parents=True)
    image = ImageRef(str(tmp_path / "\u4e2d.png"), "0" * 64)
    chat = Session(model="demo", id="20250101-120000-abcdef", image=image,
                   turns=[Turn(QUESTION, "a square", image)])
    (home / "sessions" / f"{chat.id}.json").write_text(json.dumps(chat.to_dict()), encoding="utf-8")
    env = {**os.environ, "BLIP2_CHAT_HOME": str(home), "PYTHONIOENCODING": "ascii"}
    outputs = {}
    for args in (["sessions", "--json"], ["sessions"]):
        result = subprocess.run([sys.executable, "-m", "chatbot", *args], capture_output=True,
                                stdin=subprocess.DEVNULL, timeout=120, env=env)
        stderr = result.stderr.decode("ascii")  # nothing but ASCII came out
        assert result.returncode == 0 and "Traceback" not in stderr, stderr
        outputs[args[-1]] = result.stdout.decode("ascii")
    (row,) = records(outputs["--json"])
    assert row["first_question"] == QUESTION and row["image"] == image.source
    assert json_escaped(QUESTION) in outputs["sessions"]
    assert outputs["sessions"].splitlines()[1].endswith(f"/{json_escaped(chr(0x4E2D))}.png")  # clipped from the left


# --- 4. a checkpoint folder is recorded as its absolute path ----------------------------------------------


def test_a_model_folder_is_recorded_absolute_and_a_name_as_given(work: Path) -> None:
    (work / "models" / "tiny").mkdir(parents=True)
    (work / "opt-2.7b").mkdir()  # a folder that has an alias's name: the loader loads the folder, so it is one
    for given in ("./models/tiny", "models/tiny", "models/tiny/", "./models/../models/tiny"):
        assert settings_from({"model": given}, {}).model == str(work / "models" / "tiny")
        assert settings_from({}, {"model": given}).model == str(work / "models" / "tiny")  # the config file's
        assert settings_from({}, {}, environ={"BLIP2_CHAT_MODEL": given}).model == str(work / "models" / "tiny")
    assert model_as_recorded("opt-2.7b") == str(work / "opt-2.7b")
    for name in ("Salesforce/blip2-opt-2.7b", "flan-t5-xl", "demo", "./not-there", "~/not-there-either"):
        assert settings_from({"model": name}, {}).model == name


@pytest.fixture(scope="module")
def resumed_elsewhere(checkpoints: dict[str, Path], pictures: dict[str, Path],
                      tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A chat made with `--model ./NAME` next to the checkpoint, then `--continue` with flags from another
    folder: `/set` lists the options it goes on with, then one question."""
    home = tmp_path_factory.mktemp("home")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    env = {**os.environ, "BLIP2_CHAT_HOME": str(home)}
    folder = checkpoints["opt"]

    def chat(*args: object, stdin: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "chatbot", "chat", *map(str, args), "--plain"], input=stdin,
                              capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120,
                              env=env, cwd=cwd)

    first = chat(pictures["red"], "--model", f"./{folder.name}", "--max-new-tokens", "5", "--temperature", "0.3",
                 stdin="what is it?\n", cwd=folder.parent)
    (path,) = (home / "sessions").glob("*.json")
    made = json.loads(path.read_text(encoding="utf-8"))
    later = chat("--continue", "--max-new-tokens", "2", "--temperature", "0.5", "--seed", "7",
                 stdin="/set\nand now?\n", cwd=elsewhere)
    return {"first": first, "made": made, "later": later, "saved": json.loads(path.read_text(encoding="utf-8")),
            "folder": folder}


def test_continue_from_another_folder_finds_the_model_folder(resumed_elsewhere: dict[str, Any]) -> None:
    assert resumed_elsewhere["first"].returncode == 0, resumed_elsewhere["first"].stderr
    assert resumed_elsewhere["made"]["model"] == str(resumed_elsewhere["folder"])
    later = resumed_elsewhere["later"]
    assert later.returncode == 0 and "No checkpoint folder" not in later.stderr, later.stderr
    assert later.stdout.count("Assistant: ") == 1


# --- 5. flags given with --continue win over the chat's saved options --------------------------------------


def test_flags_given_with_continue_win_and_are_said(resumed_elsewhere: dict[str, Any]) -> None:
    later = resumed_elsewhere["later"]
    lines = later.stderr.splitlines()
    assert ("The options given win over this chat's own: max_new_tokens 2 (the chat had 5), temperature 0.5 "
            "(the chat had 0.3), seed 7 (the chat had none).") in lines, later.stderr
    assert ("Options: max_new_tokens=2, num_beams=1, temperature=0.5, top_p=0.9, repetition_penalty=1.0, seed=7. "
            "Change one with /set KEY VALUE.") in lines
    assert resumed_elsewhere["saved"]["options"] == {**resumed_elsewhere["made"]["options"], "max_new_tokens": 2,
                                                    "temperature": 0.5, "seed": 7}


def test_only_flags_win_not_the_config_file_and_not_an_equal_value() -> None:
    saved = {"max_new_tokens": 30, "temperature": 0.0, "top_p": 0.5, "seed": None}
    session = Session(model="m", options=dict(saved))
    settings = settings_from({"max_new_tokens": "2", "top_p": "0.5"}, {"temperature": 0.7, "num_beams": 3})
    assert given_options_win(session, settings) == ("The options given win over this chat's own: max_new_tokens 2 "
                                                    "(the chat had 30).")
    # the chat's own temperature and top_p stay; num_beams, which it never saved, is the config file's
    assert options_for(session, settings.options) == GenerationOptions(max_new_tokens=2, temperature=0.0, top_p=0.5,
                                                                        num_beams=3)
    untouched = Session(model="m", options=dict(saved))
    assert given_options_win(untouched, settings_from({}, {"max_new_tokens": 50})) is None
    assert untouched.options == saved


# --- 6. index --json after Ctrl+C: what the finished batches did -------------------------------------------


def test_index_json_prints_the_summary_of_the_finished_batches_after_ctrl_c(
        tmp_path: Path, retrieval_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for number in range(3):
        make_image(photos / f"old-{number}.png", (40 * number, 90, 200))
    folder = tmp_path / "index"
    assert main(["index", str(photos), "--index", str(folder), "--model", str(retrieval_checkpoint)]) == 0
    for number in range(5):
        make_image(photos / f"new-{number}.png", (200, 40 * number, 60))
    (photos / "new-copy.png").write_bytes((photos / "old-0.png").read_bytes())  # known content: reused
    embedded: list[int] = []
    real = retrieval.RetrievalEngine.image_embeddings

    def stopped_in_the_third_batch(self: retrieval.RetrievalEngine, images: list[Any]) -> Any:
        if len(embedded) == 2:
            raise KeyboardInterrupt
        embedded.append(len(images))
        return real(self, images)

    monkeypatch.setattr(retrieval.RetrievalEngine, "image_embeddings", stopped_in_the_third_batch)
    capsys.readouterr()
    assert main(["index", str(photos), "--index", str(folder), "--batch-size", "2", "--json"]) == 130
    (row,) = records(capsys.readouterr().out)
    store = IndexStore.open_existing(folder)
    held = store.count()
    store.close()
    # reference: what the model embedded before Ctrl+C, and what the index holds now
    assert row["cancelled"] is True
    assert row["unchanged"] == 3 and row["removed"] == 0 and row["failed"] == []
    assert row["added"] + row["updated"] == sum(embedded) and row["updated"] == 0
    assert row["pictures"] == held == 3 + row["added"] + row["reused"]
    assert row["index"] == str(folder) and row["model"] == str(retrieval_checkpoint)
    assert row["seconds"] >= 0


# --- 7. the README lists models --json and its fields ------------------------------------------------------


def test_the_readme_lists_models_json_with_its_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json", "--device", "cpu"]) == 0
    fields = set().union(*(row.keys() for row in records(capsys.readouterr().out)))
    text = README.read_text(encoding="utf-8")
    entry = re.search(r"^blip2-chat models --json +(.*?)(?=^blip2-chat )", text, re.MULTILINE | re.DOTALL)
    assert entry is not None, "README's command list has no `models --json`"
    named = set(re.findall(r"[a-z_0-9]+", entry.group(1)))
    assert fields <= named, fields - named
