"""A damaged config.json is one sentence naming the file and the bad key, never a ZeroDivisionError or
TypeError from the memory plan's arithmetic. Only config.json is read here: every load stops at the memory
check (the cap is one byte), before any weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chatbot.engine.checkpoint_files import read_family
from chatbot.engine.loader import load_checkpoint
from chatbot.engine.precision import MEMORY_LIMIT_ENV
from chatbot.errors import NotACheckpointError, OutOfMemoryError, UserError

WHOLE = "a whole number from 1 to 2147483647"


@pytest.fixture(scope="module")
def folders(checkpoints: dict[str, Path], retrieval_checkpoint: Path,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A copy of each kind of checkpoint whose config.json the tests rewrite."""
    root = tmp_path_factory.mktemp("damaged-configs")
    sources = {"opt": checkpoints["opt"], "flan-t5": checkpoints["flan-t5"], "retrieval": retrieval_checkpoint}
    return {name: Path(shutil.copytree(source, root / name)) for name, source in sources.items()}


def with_change(folder: Path, source: Path, changes: list[tuple[tuple[str, ...], Any]]) -> None:
    """Write `source`'s config.json to `folder` with each (key path, value) set."""
    config = json.loads((source / "config.json").read_text())
    for path, value in changes:
        place = config
        for key in path[:-1]:
            place = place[key] if isinstance(place.get(key), dict) else place.setdefault(key, {})
            if not isinstance(place, dict):
                break
        else:
            place[path[-1]] = value
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("change, message", [
    ((("vision_config", "patch_size"), 0), f"bad value for vision_config.patch_size (0). It should be {WHOLE}"),
    ((("text_config", "hidden_size"), "64"), f'bad value for text_config.hidden_size ("64"). It should be {WHOLE}'),
    ((("text_config",), "opt"), 'bad value for text_config ("opt"). It should be a group of settings in braces'),
    ((("vision_config", "patch_size"), 64), "bad value for vision_config.patch_size (64). It should be at most "
                                            "vision_config.image_size (32)"),
    ((("num_query_tokens",), True), f"bad value for num_query_tokens (true). It should be {WHOLE}"),
    ((("architectures",), 5), 'bad value for architectures (5). It should be a list of class names such as '
                              '["Blip2ForConditionalGeneration"]'),
    ((("qformer_config",), [1]), "bad value for qformer_config ([1]). It should be a group of settings in braces"),
])
def test_a_bad_value_is_named_with_its_key(folders, checkpoints, change, message) -> None:
    with_change(folders["opt"], checkpoints["opt"], [change])
    with pytest.raises(NotACheckpointError) as error:
        load_checkpoint(str(folders["opt"]), device="cpu")
    assert str(error.value) == (f"The config.json in {folders['opt'].resolve()} has a {message}: fix the file, or get "
                                "the checkpoint again.")


def test_a_retrieval_config_is_checked_too(folders, retrieval_checkpoint) -> None:
    with_change(folders["retrieval"], retrieval_checkpoint, [(("qformer_config", "use_qformer_text_input"), "yes")])
    with pytest.raises(NotACheckpointError) as error:
        load_checkpoint(str(folders["retrieval"]), device="cpu", kind="retrieval")
    assert error.value.message == (f"The config.json in {folders['retrieval'].resolve()} has a bad value for "
                                   'qformer_config.use_qformer_text_input ("yes").')
    assert error.value.hint == "It should be true or false: fix the file, or get the checkpoint again."


def test_read_family_says_so_too(folders, checkpoints) -> None:
    with_change(folders["flan-t5"], checkpoints["flan-t5"], [(("text_config", "model_type"), 5)])
    with pytest.raises(NotACheckpointError, match=r"has a bad value for text_config\.model_type \(5\)\. It should "
                                                  r'be a model type such as "opt" or "t5"'):
        read_family(folders["flan-t5"])


# --- any damage: only the project's own errors ----------------------------------------------------

SECTIONS = ("vision_config", "qformer_config", "text_config")


def key_paths(config: dict[str, Any]) -> list[tuple[str, ...]]:
    """Every key of the config, nested ones as (section, key), and the sections themselves."""
    return sorted([(key,) for key in config] + [(section, key) for section in SECTIONS
                                                 for key in config.get(section) or {}])


ODD_VALUES = st.one_of(
    st.integers(min_value=-3, max_value=3), st.integers(min_value=2**31 - 2, max_value=2**64), st.none(),
    st.booleans(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
    st.sampled_from(["64", "opt", "t5", "gated-gelu", "blip-2", "Blip2ForImageTextRetrieval"]),
    st.lists(st.integers(min_value=0, max_value=3), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                                                 max_size=2),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), family=st.sampled_from(["opt", "flan-t5", "retrieval"]))
@example(data=None, family="opt")  # the three damages reported: each must be a NotACheckpointError
def test_any_damaged_config_is_only_ever_a_user_error(folders, checkpoints, retrieval_checkpoint, monkeypatch,
                                                      data: st.DataObject | None, family: str) -> None:
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1")  # every load that gets past the config stops at the memory check
    source = retrieval_checkpoint if family == "retrieval" else checkpoints[family]
    if data is None:
        damages = [[(("vision_config", "patch_size"), 0)], [(("text_config", "hidden_size"), "64")],
                   [(("text_config",), "opt")]]
    else:
        paths = key_paths(json.loads((source / "config.json").read_text()))
        damages = [data.draw(st.lists(st.tuples(st.sampled_from(paths), ODD_VALUES), min_size=1, max_size=3))]
    for changes in damages:
        with_change(folders[family], source, changes)
        with pytest.raises(UserError) as error:
            load_checkpoint(str(folders[family]), device="cpu", kind="retrieval" if family == "retrieval" else "chat")
        assert isinstance(error.value, (NotACheckpointError, OutOfMemoryError)), (changes, error.value)
        if isinstance(error.value, NotACheckpointError):  # about the config, the model type or the kind
            folder = folders[family].resolve()
            assert error.value.message.startswith((f"The config.json in {folder} has a bad value for ",
                                                   f"The folder {folder} ", f"{folder} is a BLIP-2 ",
                                                   f"The retrieval checkpoint {folder} has no Q-Former text")), \
                error.value.message
