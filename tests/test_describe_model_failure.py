"""What a user probe of `describe` found: a model that failed while answering ended the run with a traceback (the
chat, `ask` and `caption` said one sentence); and rows came out of input order (an unreadable image's row was
written at once, before the rows of the batch before it).

Now a failed batch is tried one image at a time: a picture that defeats the model gets an error row and the run
goes on; a model that fails on every image before any answer stops the run in one sentence, exit 1, with no row
written for them, so --resume tries them again. The answerers here are the front end's counterpart, not a model:
they fail on purpose where the test says.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from chatbot.engine.base import GenerationOptions
from chatbot.engine.scripted import ScriptedEngine
from chatbot.frontends.describe.output import Row
from chatbot.frontends.describe.run import ModelFailedError, describe
from chatbot.images import LoadedImage, load_image
from tests.conftest import make_image
from tests.test_describe import SUMMARY, describe_here

OPTIONS = GenerationOptions()


class FailsOn(ScriptedEngine):
    """Answers "colour of NAME" for each image, and raises RuntimeError for any batch holding a `bad` one ("*": all)."""

    def __init__(self, *bad: str) -> None:
        super().__init__()
        self.bad = set(bad)  # file names
        self.batches: list[list[str]] = []

    def answer_batch(self, images: Sequence[LoadedImage], prompt: str | Sequence[str],
                     options: GenerationOptions) -> list[str]:
        names = [Path(image.source).name for image in images]
        self.batches.append(names)
        if self.bad & set(names) or "*" in self.bad:
            raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
        return [f"colour of {name}" for name in names]


@pytest.fixture
def pictures(tmp_path: Path) -> list[str]:
    """a.png, bad.png, b.png (three pictures of different colours), and c.txt, which is no picture."""
    paths = [make_image(tmp_path / name, colour) for name, colour in
             (("a.png", (200, 30, 30)), ("bad.png", (30, 200, 30)), ("b.png", (30, 30, 200)))]
    (tmp_path / "c.txt").write_text("no picture")
    return [str(path) for path in paths]


def run(answerer: FailsOn, paths: list[str], batch_size: int = 8) -> tuple[list[Row], object]:
    rows: list[Row] = []
    summary = describe(answerer, paths, rows.append, options=OPTIONS, batch_size=batch_size, load=load_image)
    return rows, summary


def test_a_picture_that_defeats_the_model_gets_an_error_row_and_the_rest_go_on(pictures: list[str]) -> None:
    answerer = FailsOn("bad.png")
    rows, summary = run(answerer, pictures)
    assert answerer.batches == [["a.png", "bad.png", "b.png"], ["a.png"], ["bad.png"], ["b.png"]]
    assert [(Path(row.path).name, row.alt_text, row.error) for row in rows] == [
        ("a.png", "Colour of a.png.", ""),
        ("bad.png", "", "The model failed (RuntimeError: probability tensor contains either `inf`, `nan` or "
                        "element < 0)."),
        ("b.png", "Colour of b.png.", ""),
    ]
    assert (summary.described, summary.failed) == (2, 1)  # type: ignore[attr-defined]


def test_a_model_that_fails_on_every_picture_stops_the_run_before_writing_their_rows(pictures: list[str]) -> None:
    rows: list[Row] = []
    with pytest.raises(ModelFailedError, match=r"^The model failed \(RuntimeError: probability tensor"):
        describe(FailsOn("*"), pictures, rows.append, options=OPTIONS, batch_size=8, load=load_image)
    assert rows == []  # none written: --resume tries them again


def test_after_an_answer_a_failing_batch_is_written_as_error_rows(pictures: list[str]) -> None:
    answerer = FailsOn("bad.png", "b.png")
    rows, summary = run(answerer, pictures, batch_size=1)
    assert [(Path(row.path).name, bool(row.error)) for row in rows] == [("a.png", False), ("bad.png", True),
                                                                         ("b.png", True)]


def test_rows_come_in_the_order_of_the_images(pictures: list[str], tmp_path: Path) -> None:
    unreadable = str(tmp_path / "c.txt")
    order = [pictures[0], unreadable, pictures[2], pictures[0] + "-missing"]
    rows, _ = run(FailsOn(), order)
    assert [row.path for row in rows] == order  # the unreadable ones waited for the batch before them


def test_the_command_says_the_model_failed_in_one_sentence_and_resume_goes_on(
    pictures: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    import chatbot.core.runtime

    out = tmp_path / "alt.jsonl"
    monkeypatch.setattr(chatbot.core.runtime, "open_engine_for", lambda settings, progress=None: FailsOn("*"))
    assert describe_here(*pictures, "--out", out) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("blip2-chat: The model failed (RuntimeError: probability tensor")
    assert not out.exists()  # nothing was written: no empty file left behind either
    monkeypatch.setattr(chatbot.core.runtime, "open_engine_for", lambda settings, progress=None: FailsOn())
    assert describe_here(*pictures, "--out", out, "--resume") == 0
    assert SUMMARY.match(capsys.readouterr().err.splitlines()[-1]).groups() == ("3", "0", "0")  # type: ignore[union-attr]
    assert [json.loads(line)["alt_text"] for line in out.read_text(encoding="utf-8").splitlines()] == [
        "Colour of a.png.", "Colour of bad.png.", "Colour of b.png."]


def test_the_end_names_the_images_not_described_and_the_pictures_outside_the_demo_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """A blind user's probe: the summary only counted failures (the reasons were in the file), and the demo model
    gave confident alt text for a photo it cannot know, where `caption` and the chat warn."""
    import chatbot.core.runtime
    from chatbot.demo.start import draw_picture, outside_its_world

    folder = tmp_path / "mixed"
    folder.mkdir()
    draw_picture(3).save(folder / "a-shapes.png")  # of the demo's world
    make_image(folder / "b-photo.png", (200, 30, 30))  # not
    (folder / "c-notes.png").write_text("no picture")
    monkeypatch.setattr(chatbot.core.runtime, "open_engine_for", lambda settings, progress=None: FailsOn())
    assert describe_here(folder, "--model", "demo", "--out", tmp_path / "alt.jsonl") == 0
    said = capsys.readouterr().err.splitlines()
    assert said[-3].startswith(f"Not described: {folder / 'c-notes.png'} ")
    assert said[-2] == outside_its_world(1, 2)
    assert SUMMARY.match(said[-1]).groups() == ("2", "0", "1")  # type: ignore[union-attr]


def test_alt_text_cut_off_at_max_new_tokens_is_said(checkpoints: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A blind user's probe: `--max-new-tokens 4` gave "A small purple circle." for a picture of three shapes, and
    nothing said it was cut off. The tiny random model does not end an answer within 2 tokens: every one is cut."""
    from tests.test_describe import describe_here as run

    folder = tmp_path / "three"
    folder.mkdir()
    for name, colour in (("a.png", (200, 30, 30)), ("b.png", (30, 200, 30)), ("c.png", (30, 30, 200))):
        make_image(folder / name, colour)
    out = tmp_path / "alt.jsonl"
    assert run(folder, "--model", checkpoints["opt"], "--max-new-tokens", "2", "--out", out) == 0
    said = capsys.readouterr().err.splitlines()
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    cut = sum(1 for row in rows if row["alt_text"])
    assert cut == 3 and said[-2] == ("3 alt texts were cut off at 2 tokens, perhaps mid-sentence. --max-new-tokens 4 "
                                     "(and another --out) gives them room.")
