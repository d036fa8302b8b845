"""The job flags of `describe` and `index`, checked where they enter (the request), before a file is read.

`--batch-size`: one rule (`chatbot.core.runtime.check_batch_size`, 1 to 1024). It was copied word for word in
both front ends, with no upper bound: `--batch-size 100000` ran until the batch of decoded pictures ran out of
memory, with the model loaded. `--workers` and `--gpus-per-worker` (`ClusterOptions.check`, chatbot/cluster)
were checked only once Ray was connecting: after the files were listed and hashed, and after a line saying
"Describing on Ray (a local instance, 5000 workers)."
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import chatbot.frontends.search.index_run
from chatbot.cli import main
from chatbot.core.runtime import MAX_BATCH_SIZE, check_batch_size
from chatbot.errors import OptionError
from chatbot.frontends.describe.run import DescribeRequest
from chatbot.frontends.search.index_run import IndexRequest
from tests.conftest import make_image
from tests.test_describe import describe_here, use_scripted_engine
from tests.test_photo_index import CHECKPOINT, pixel_embed

LIMIT = 1024  # the documented range is 1 to 1024


def test_the_limit_is_the_documented_one() -> None:
    assert MAX_BATCH_SIZE == LIMIT


@settings(max_examples=200, deadline=None, database=None)
@given(size=st.integers(min_value=-(2**70), max_value=2**70))
@example(size=0)
@example(size=1)
@example(size=LIMIT)
@example(size=LIMIT + 1)
@example(size=-1)
def test_one_rule_for_both_requests(size: int) -> None:
    allowed = 1 <= size <= LIMIT
    for make in (lambda: check_batch_size(size), lambda: DescribeRequest(paths=("a.png",), batch_size=size),
                 lambda: IndexRequest(paths=("a.png",), batch_size=size)):
        if allowed:
            make()
        else:
            with pytest.raises(OptionError) as refused:
                make()
            assert str(refused.value).startswith(f"--batch-size must be at least 1 and at most {LIMIT} (got {size}).")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return make_image(tmp_path / "red.png", (200, 30, 30))


def index_without_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """`index` embeds with a fixed function of the pixels (so a run that is let through ends well)."""

    class Embedder:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def __call__(self, images: list[Any]) -> Any:
            return pixel_embed(images)

    monkeypatch.setattr(chatbot.frontends.search.index_run, "LazyEmbedder", Embedder)
    monkeypatch.setattr(chatbot.frontends.search.index_run, "choose_index_model", lambda *args, **kwargs: CHECKPOINT)


@pytest.mark.parametrize("size", ["0", "-3", str(LIMIT + 1), "100000"])
@pytest.mark.parametrize("command", ["describe", "index"])
def test_the_commands_refuse_a_batch_size_out_of_range(image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], command: str,
                                                       size: str) -> None:
    use_scripted_engine(monkeypatch, "a red square")
    index_without_a_model(monkeypatch)
    out = tmp_path / "alt.jsonl"
    if command == "describe":
        code = describe_here(image, "--out", out, "--batch-size", size)
    else:
        code = main(["index", str(image), "--index", str(tmp_path / "index"), "--batch-size", size])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--batch-size must be at least 1 and at most {LIMIT} (got {size})." in err
    assert not out.exists() and not (tmp_path / "index").exists()  # refused before anything was written


@pytest.mark.parametrize("command", ["describe", "index"])
def test_the_largest_batch_size_is_taken(image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         command: str) -> None:
    use_scripted_engine(monkeypatch, "a red square")
    index_without_a_model(monkeypatch)
    if command == "describe":
        assert describe_here(image, "--out", tmp_path / "alt.jsonl", "--batch-size", str(LIMIT)) == 0
    else:
        assert main(["index", str(image), "--index", str(tmp_path / "index"), "--batch-size", str(LIMIT)]) == 0


@pytest.mark.parametrize(("flags", "refusal"), [
    (["--workers", "5000"], "--workers must be from 1 to 1024 (got 5000)."),
    (["--gpus-per-worker", "nan"], "--gpus-per-worker must be from 0 to 16 (got nan)."),
])
@pytest.mark.parametrize("command", ["describe", "index"])
def test_cluster_flags_are_refused_before_anything_is_said_or_read(
    image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    command: str, flags: list[str], refusal: str,
) -> None:
    import chatbot.core.photo_index.files
    import chatbot.frontends.describe.run

    def never(*args: object, **kwargs: object) -> object:
        raise AssertionError("a folder was listed before the flags were checked")

    monkeypatch.setattr(chatbot.frontends.describe.run, "find_images", never)
    monkeypatch.setattr(chatbot.core.photo_index.files, "find_image_files", never)
    extra = ["--index", str(tmp_path / "index")] if command == "index" else []
    assert main([command, str(image), *extra, "--ray", *flags, "--model", "demo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"blip2-chat: {refusal}") and err.count("\n") == 1, err  # the one sentence, alone
    assert not (tmp_path / "index").exists()
