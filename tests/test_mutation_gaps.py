"""Behaviours a mutation probe found no test holding: each test here fails on one mutant of the code it names.

Every value is checked against a reference of its own (the file on disk, the option's documented bounds, an
independent parser or renderer, Unicode's own tables, bytes counted by the server), never against the code
under test.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import math
import re
import socket
import threading
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from chatbot.core.answer_wording import cut_short_mark, cut_short_text
from chatbot.core.captioning import caption_prompt
from chatbot.core.commands import run_command
from chatbot.core.conversation import Conversation
from chatbot.core.photo_search import Found, result_to_open
from chatbot.core.session import ComparedAnswer, ImageRef, Session, SessionError, Turn
from chatbot.core.session_files import session_from_json, session_json
from chatbot.core.settings import BY_NAME, Settings, apply_setting, settings_from
from chatbot.core.store import SessionStore
from chatbot.engine.base import GenerationOptions
from chatbot.engine.scripted import ScriptedEngine
from chatbot.errors import OptionError, QuestionError, UserError
from chatbot.images import load_image
from chatbot.untrusted import has_controls, json_line, visible
from tests.config_support import NEEDS_TOML
from tests.conftest import make_image

# --- the conversation: answers with no words, /undo after /clear (chatbot/core/conversation.py) --------------


def saved_turns(path: Path) -> list[tuple[str, str]]:
    """The (question, answer) pairs of a session file, read as plain JSON."""
    return [(turn["question"], turn["answer"]) for turn in json.loads(path.read_text(encoding="utf-8"))["turns"]]


def test_a_finished_answer_with_no_words_is_saved_and_resumed(tmp_path: Path, pictures) -> None:
    """A model that ends its answer before any word still answered: the turn is kept (with answer ""), saved, and
    a resumed chat has it, in the session and in what the next prompt folds in."""
    red = load_image(pictures["red"])
    chat = Conversation(Settings(model="scripted-opt"), Session(model="scripted-opt"), SessionStore(tmp_path), red,
                        engine=ScriptedEngine("", "a square"))
    assert list(chat.ask("What is written on it?")) == []  # nothing streamed ...
    assert "".join(chat.ask("What shape is it?")) == "a square"
    path = chat.save()
    assert path is not None
    expected = [("What is written on it?", ""), ("What shape is it?", "a square")]
    assert saved_turns(path) == expected  # ... and yet the turn is in the file
    resumed_store = SessionStore(tmp_path)
    loaded = resumed_store.load(chat.session.id)
    assert [(t.question, t.answer, t.stopped) for t in loaded.turns] == [(q, a, False) for q, a in expected]
    assert resumed_store.problems == []
    engine = ScriptedEngine("red")
    resumed = Conversation(Settings(model="scripted-opt"), loaded, resumed_store, red, engine=engine)
    assert resumed.history() == expected
    list(resumed.ask("And its colour?"))
    assert "What is written on it?" in engine.prompts[-1] and "What shape is it?" in engine.prompts[-1]


def test_undo_after_clear_leaves_no_stale_context_and_retry_works(pictures) -> None:
    """ask, /clear, /undo (the only turn goes), ask again: that question is the context, and /retry answers it."""
    engine = ScriptedEngine("first answer", "second answer", "second again", "third answer")
    chat = Conversation.with_engine(engine, load_image(pictures["red"]))
    list(chat.ask("First?"))
    assert run_command(chat, "/clear").ok
    assert run_command(chat, "/undo").ok
    assert chat.session.turns == []
    list(chat.ask("And now?"))
    assert chat.history() == [("And now?", "second answer")]
    outcome = run_command(chat, "/retry")
    assert outcome.ok and outcome.retry is not None, outcome.notices
    assert outcome.retry.question == "And now?"
    assert "".join(outcome.retry.chunks) == "second again"
    assert [(t.question, t.answer) for t in chat.session.turns] == [("And now?", "second again")]
    assert chat.history() == [("And now?", "second again")]
    list(chat.ask("Why?"))
    assert "And now?" in engine.prompts[-1] and "First?" not in engine.prompts[-1]


# --- a session whose context starts after its last turn (chatbot/core/session.py) --------------------------


def test_a_session_saved_right_after_clear_loads_with_no_note(tmp_path: Path, pictures) -> None:
    chat = Conversation(Settings(model="scripted-opt"), Session(model="scripted-opt"), SessionStore(tmp_path),
                        load_image(pictures["red"]), engine=ScriptedEngine("a", "b"))
    list(chat.ask("One?"))
    list(chat.ask("Two?"))
    assert run_command(chat, "/clear").ok  # saves
    path = SessionStore(tmp_path).path_for(chat.session.id)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["context_start"] == len(data["turns"]) == 2  # what /clear saves: after the last turn
    text = path.read_text(encoding="utf-8")
    parsed = session_from_json(text, "the file")
    assert parsed.context_start == 2 and parsed.load_notes == []
    store = SessionStore(tmp_path)
    loaded = store.load(chat.session.id)
    assert loaded.context_start == 2 and store.problems == []
    assert Conversation(Settings(model="scripted-opt"), loaded, store).history() == []


# --- suggestions and bounds of the settings (chatbot/core/conversation.py, chatbot/core/settings.py) ---------

ANSWER_LIMIT = 1024  # the most tokens an answer may have (README: /set max_new_tokens takes 1 to 1024)


@pytest.mark.parametrize("limit", [1, 30, 511, 512, 513, 600, 1000, 1023])
def test_the_longer_answer_suggested_after_a_cut_is_one_set_accepts(limit: int) -> None:
    for sentence in (cut_short_text(limit), cut_short_mark(limit)):
        (suggested,) = map(int, re.findall(r"/set max_new_tokens (\d+)", sentence))
        assert limit < suggested <= ANSWER_LIMIT, sentence
        options, _ = apply_setting(GenerationOptions(), f"max_new_tokens {suggested}")  # /set's own check
        assert options.max_new_tokens == suggested
    (flag,) = map(int, re.findall(r"--max-new-tokens (\d+)", cut_short_text(limit, command_line=True)))
    assert limit < flag <= ANSWER_LIMIT
    assert settings_from({"max_new_tokens": str(flag)}, {}).options.max_new_tokens == flag  # the flag's check
    assert cut_short_text(600) == ("The answer was cut off at 600 tokens (max_new_tokens); /set max_new_tokens 1024 "
                                   "lets it go on longer.")


TOP_P_ZERO = "top_p must be a number above 0 and at most 1"
SMALLEST_POSITIVE = math.nextafter(0.0, 1.0)  # 5e-324


@NEEDS_TOML
@pytest.mark.parametrize("zero", ["0", "0.0", "-0", "0e5", ".0"])
def test_top_p_zero_is_refused_everywhere_and_the_smallest_positive_accepted(
        zero: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chatbot.cli import build_parser, settings_for
    from chatbot.core.config_file import read_config
    from chatbot.locations import HOME_ENV

    monkeypatch.setenv(HOME_ENV, str(tmp_path))

    def flag(value: str) -> Settings:
        return settings_for(build_parser().parse_args(["ask", "photo.jpg", "hi?", "--top-p", value]))

    with pytest.raises(OptionError) as refused:
        flag(zero)
    assert refused.value.message == f"--top-p must be a number above 0 and at most 1 (got {zero})."
    config = tmp_path / "config.toml"
    config.write_text(f"top_p = {zero if zero != '.0' else '0.0'}\n", encoding="utf-8")
    with pytest.raises(OptionError, match=TOP_P_ZERO):
        read_config(config)
    with pytest.raises(OptionError, match=TOP_P_ZERO):
        apply_setting(GenerationOptions(), f"top_p {zero}")
    chat = Conversation(Settings(model="scripted-opt"))
    outcome = run_command(chat, f"/set top_p {zero}")
    assert not outcome.ok and TOP_P_ZERO in outcome.notices[0].text
    assert chat.options.top_p == GenerationOptions().top_p

    smallest = repr(SMALLEST_POSITIVE)
    config.unlink()
    assert flag(smallest).options.top_p == SMALLEST_POSITIVE
    config.write_text(f"top_p = {smallest}\n", encoding="utf-8")
    assert read_config(config)["top_p"] == SMALLEST_POSITIVE
    assert apply_setting(GenerationOptions(), f"top_p {smallest}")[0].top_p == SMALLEST_POSITIVE
    assert run_command(chat, f"/set top_p {smallest}").ok and chat.options.top_p == SMALLEST_POSITIVE


@pytest.mark.parametrize(("device", "ok"), [
    ("cuda:0", True), ("cuda:12", True), ("cuda:123", True), ("cuda:1234", False), ("cuda:", False),
    ("cuda:12345", False),
])
def test_a_cuda_device_number_has_one_to_three_digits(device: str, ok: bool) -> None:
    if ok:
        assert settings_from({"device": device}, {}).device == device
        assert BY_NAME["device"].check(device, "device") == device  # the config file's check
        return
    with pytest.raises(OptionError) as refused:
        settings_from({"device": device}, {})
    assert refused.value.message == f"--device must be auto, cpu, cuda or cuda:N (got '{device}')."
    with pytest.raises(OptionError, match="device must be auto, cpu, cuda or cuda:N"):
        BY_NAME["device"].check(device, "device")


# --- /open N (chatbot/core/photo_search.py) ----------------------------------------------------------------


def three_results(folder: Path) -> list[Found]:
    """Three search results whose files are as they were indexed (size, mtime and sha256 from the files)."""
    found = []
    for n, colour in enumerate([(200, 30, 30), (20, 180, 40), (30, 30, 200)], 1):
        path = make_image(folder / f"result {n}.png", colour)
        info = path.stat()
        indexed = (info.st_size, info.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        found.append(Found(str(path), 0.5 - n / 10, indexed=indexed))
    return found


def test_open_takes_the_last_result_number_and_refuses_one_more(tmp_path: Path) -> None:
    chat = Conversation(Settings(model="scripted-opt"))
    chat.found = three_results(tmp_path)
    outcome = run_command(chat, "/open 3")
    assert outcome.ok and outcome.open_image == str(tmp_path / "result 3.png")
    assert run_command(chat, "/open 1").open_image == str(tmp_path / "result 1.png")
    refused = run_command(chat, "/open 4")
    assert not refused.ok and refused.notices[0].text == (
        "/open takes a result's number, 1 to 3 (got 4). e.g. /open 1 for the best match.")
    assert not run_command(chat, "/open 0").ok


def test_open_of_a_result_deleted_after_the_search_says_it_is_gone(tmp_path: Path) -> None:
    found = three_results(tmp_path)
    assert all(not item.missing for item in found)  # the list said each was as indexed
    Path(found[1].path).unlink()
    chat = Conversation(Settings(model="scripted-opt"))
    chat.found = found
    refused = run_command(chat, "/open 2")
    assert not refused.ok and refused.open_image is None
    assert refused.notices[0].text == (
        f"Result 2 is gone since it was indexed ({tmp_path / 'result 2.png'}). Open another, or run "
        "`blip2-chat index` again so the index forgets it.")
    with pytest.raises(UserError, match=r"^Result 2 is gone since it was indexed"):
        result_to_open(found, "2")
    assert result_to_open(found, "3") == found[2].path  # the others still open


# --- a big index: --top above the approximate stage's candidates (chatbot/core/photo_index/store.py) -------


def test_a_large_top_on_an_approximate_index_gives_that_many_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above EXACT_LIMIT pictures the first stage hands on at least 4 * top candidates: --top 300 (three times
    CANDIDATES) on 1,200 pictures gives 300 results, each once, and (nearly) the best 300 by exact MaxSim; with
    only `top` candidates the exact re-scoring could not reorder them, and a third or more would be worse ones."""
    from chatbot.core.photo_index import store as store_module
    from tests.test_photo_index import FLOAT16_SLACK, brute_force, clustered, fill

    monkeypatch.setattr(store_module, "EXACT_LIMIT", 100)
    vectors, queries = clustered(1200, seed=11)
    store = fill(tmp_path / "index", vectors)
    store.refresh_approximate()
    assert (tmp_path / "index" / "centres.npy").exists()  # the approximate stage is in use
    top = 3 * store_module.CANDIDATES
    for query in queries[:4]:
        hits = store.search(query, top)
        paths = [hit.path for hit in hits]
        assert len(paths) == top and len(set(paths)) == top
        scores = brute_force(vectors, query)
        best = np.sort(scores)[::-1][:top]
        found = np.sort([scores[int(path.removeprefix("/p/").removesuffix(".png"))] for path in paths])[::-1]
        worse = int(np.sum(np.abs(found - best) >= FLOAT16_SLACK))  # places where a better picture was missed
        assert worse <= top // 100, worse


# --- Markdown cells of describe's table (chatbot/frontends/describe/row_lines.py) --------------------------


def md_row(*texts: str) -> str:
    from chatbot.frontends.describe.output import Row, render

    return render(Row(*texts), "md")


def read_back(row: str) -> list[str]:
    from chatbot.frontends.describe.row_lines import HEADERS, parse_records

    records, bad = parse_records(row, "md", first_line=3)
    assert bad == [] and len(records) == 1, (row, bad)
    assert HEADERS["md"].count("\n") == 2
    return records[0]


def rendered_cells(row: str) -> list[str]:
    """What a GFM renderer (markdown-it, tables and strikethrough on) shows in the row's cells, as text, and
    whether it made any of it struck through."""
    markdown_it = pytest.importorskip("markdown_it")
    from chatbot.frontends.describe.row_lines import HEADERS

    page = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(HEADERS["md"] + row)
    assert "<s>" not in page and "<del>" not in page, page
    return [html.unescape(cell) for cell in re.findall(r"<td>(.*?)</td>", page, re.DOTALL)]


@pytest.mark.parametrize("alt", ["A sign saying ~~closed~~ open.", "~tilde~ at both ends~", "Costs ~5 to ~10."])
def test_a_tilde_in_a_markdown_cell_is_never_strikethrough(alt: str) -> None:
    row = md_row("/p/a~~b~~.png", alt)
    assert rendered_cells(row)[:2] == ["/p/a~~b~~.png", alt]  # shown as written, nothing struck through
    assert re.search(r"(?<!\\)~", row) is None  # every ~ escaped
    assert read_back(row)[:2] == ["/p/a~~b~~.png", alt]


SPACED = ["two  spaces", "three   spaces", " leading", "trailing ", "  both  ", "a \u00a0b", "x  \u3000  y"]


@pytest.mark.parametrize("alt", SPACED)
def test_doubled_spaces_in_a_markdown_cell_are_protected_and_read_back(alt: str) -> None:
    """A table folds a run of spaces and drops them at a cell's ends: only single spaces between words are
    written as they are, every other space as an escape, and the reader gives the text back exactly."""
    row = md_row(f"/p/{alt}.png", alt)
    cells = re.split(r"(?<!\\)\|", row.rstrip("\n"))[1:-1]
    for cell in cells[:2]:
        inside = cell[1:-1]  # the writer's own padding: one space each side
        assert "  " not in inside and not inside.startswith(" ") and not inside.endswith(" "), repr(cell)
    assert read_back(row)[:2] == [f"/p/{alt}.png", alt]


@pytest.mark.parametrize("space", ["\u00a0", "\u3000", "\u2003", "\u202f", "\u1680", "\u205f", "\u2007"])
def test_unicode_spaces_in_a_markdown_cell_are_written_as_escapes(space: str) -> None:
    assert space.isspace() and unicodedata.category(space) == "Zs"
    alt = f"a{space}b {space}c{space}"
    row = md_row(f"/p/{space}.png", alt)
    assert all(ch in " \n" or not ch.isspace() for ch in row), repr(row)  # no raw Unicode space left
    assert f"\\u{ord(space):04x}" in row
    assert read_back(row)[:2] == [f"/p/{space}.png", alt]


# --- describe --resume of a CSV whose cells were guarded against formulas (chatbot/frontends/describe) ------


FORMULA_LIKE = ["=1+1 on a blackboard.", "-5 degrees on a thermometer.", "@home written on a door.",
                "'Tis a cat on a mat.", "+44 on a sign."]


def test_resume_of_a_csv_reads_guarded_cells_back_without_the_guard(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A CSV cell that starts like a formula (or with ') is written after a ' that spreadsheets hide; --resume
    drops it again, so a copy of a picture described before gets the alt text itself, not "'=1+1 ...", and
    its row is written exactly as the first one's."""
    import chatbot.core.runtime
    from chatbot.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    out = tmp_path / "alt.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "alt_text", "error", "sha256"])
    for n, alt in enumerate(FORMULA_LIKE):
        picture = make_image(folder / f"a{n}.png", (40 * n, 200 - 30 * n, 90))
        writer.writerow([str(picture), "'" + alt, "", hashlib.sha256(picture.read_bytes()).hexdigest()])
    out.write_text(buffer.getvalue(), encoding="utf-8")
    for n in range(len(FORMULA_LIKE)):
        (folder / f"b{n}.png").write_bytes((folder / f"a{n}.png").read_bytes())  # the same bytes: no model asked
    engine = ScriptedEngine()
    monkeypatch.setattr(chatbot.core.runtime, "open_engine_for", lambda settings, progress=None: engine)
    assert main(["describe", str(folder), "--out", str(out), "--resume"]) == 0
    capsys.readouterr()
    assert engine.prompts == []
    rows = {row["path"]: row for row in csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"), newline=""))}
    assert len(rows) == 2 * len(FORMULA_LIKE)
    for n, alt in enumerate(FORMULA_LIKE):
        copy = rows[str(folder / f"b{n}.png")]
        assert copy["alt_text"] == "'" + alt  # one guard, as the original's: read back as `alt` itself
        assert copy == {**rows[str(folder / f"a{n}.png")], "path": str(folder / f"b{n}.png")}


# --- the caption prompt's budget (chatbot/core/conversation.py) --------------------------------------------


def test_a_caption_prompt_one_token_over_the_budget_is_refused_and_one_at_it_accepted(pictures) -> None:
    engine = ScriptedEngine()
    info = engine.info
    options = GenerationOptions(max_new_tokens=1000)
    budget = info.context_tokens - info.image_tokens - options.max_new_tokens  # OPT: prompt and answer share
    assert budget == 1016
    words = budget - 2  # the scripted tokenizer: one token a word, plus two

    def prompt(n: int) -> str:
        return " ".join(["word"] * n)

    assert engine.count_tokens(prompt(words)) == budget
    assert caption_prompt(engine, options, prompt(words)) == prompt(words)
    with pytest.raises(QuestionError) as refused:
        caption_prompt(engine, options, prompt(words + 1))
    assert str(refused.value) == (f"The prompt is too long for this model: it needs {budget + 1} tokens and there "
                                  f"is room for {budget}. Shorten --prompt (or lower --max-new-tokens).")


# --- bidi isolates are shown, never emitted (chatbot/untrusted.py) ----------------------------------------

ISOLATES = [ch for ch in map(chr, range(0x2000, 0x2100)) if unicodedata.bidirectional(ch) in ("LRI", "RLI", "FSI",
                                                                                               "PDI")]


def test_every_bidi_isolate_is_shown_as_an_escape() -> None:
    assert [f"U+{ord(ch):04X}" for ch in ISOLATES] == ["U+2066", "U+2067", "U+2068", "U+2069"]  # Unicode's list
    for ch in ISOLATES:
        text = f"cat{ch}.png"
        assert visible(text) == f"cat\\u{ord(ch):04x}.png"
        assert has_controls(ch)
        line = json_line({"path": text})
        assert ch not in line and json.loads(line) == {"path": text}


# --- limits of a session file (chatbot/core/session.py) ----------------------------------------------------


def session_data(compared: int = 0, options: int = 0) -> dict:
    red, other = ImageRef("/p/red.png", "a" * 64), ImageRef("/p/other.png", "b" * 64)
    turn = Turn("What is it?", "red", red, compared=[ComparedAnswer(other, f"answer {n}") for n in range(compared)])
    session = Session(model="scripted-opt", turns=[turn], image=red,
                      options={f"option_{n}": n for n in range(options)})
    return json.loads(session_json(session))


def test_a_turn_may_hold_32_comparisons_and_not_33() -> None:
    from chatbot.core.session import MAX_COMPARED

    assert MAX_COMPARED == 32
    loaded = session_from_json(json.dumps(session_data(compared=32)), "the file")
    assert [c.answer for c in loaded.turns[0].compared] == [f"answer {n}" for n in range(32)]
    with pytest.raises(SessionError, match=r"turns\[0\]\.compared has more than 32 entries"):
        Session.from_dict({k: v for k, v in session_data(compared=33).items() if k != "format"})


def test_a_session_may_hold_100_options_and_101_are_dropped_with_a_note() -> None:
    from chatbot.core.session import MAX_OPTIONS

    assert MAX_OPTIONS == 100
    kept = session_from_json(json.dumps(session_data(options=100)), "the file")
    assert kept.options == {f"option_{n}": n for n in range(100)} and kept.load_notes == []
    dropped = session_from_json(json.dumps(session_data(options=101)), "the file")
    assert dropped.options == {}
    assert dropped.load_notes == ["The saved options have more than 100 entries, so the defaults are used."]


# --- a download whose Content-Length is over the cap (chatbot/image_download.py) ---------------------------


def test_a_download_announced_over_the_cap_is_refused_before_its_body_is_read() -> None:
    """The server says Content-Length: 20 MB + 1 and then sends the body as fast as it is taken: the download is
    refused on the header, so far fewer bytes than the cap leave the server (a reader would take them all)."""
    from chatbot.image_download import MAX_DOWNLOAD_BYTES

    listener = socket.create_server(("127.0.0.1", 0))
    sent = [0]

    def serve() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
                connection.recv(65536)
                connection.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: "
                                   f"{MAX_DOWNLOAD_BYTES + 1}\r\n\r\n".encode())
                chunk = b"\0" * 65536
                try:
                    while sent[0] <= MAX_DOWNLOAD_BYTES:
                        part = chunk[:MAX_DOWNLOAD_BYTES + 1 - sent[0]]
                        connection.sendall(part)
                        sent[0] += len(part)
                except OSError:  # the client closed the connection: nothing more is taken
                    pass

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/big.png"
    with pytest.raises(UserError) as refused:
        load_image(url)
    assert str(refused.value) == (f"{url} is larger than 20 MB. Download it yourself, shrink it if needed, and pass "
                                  "the local file.")
    server.join(timeout=60)
    assert not server.is_alive()
    assert sent[0] < MAX_DOWNLOAD_BYTES // 2, sent[0]
