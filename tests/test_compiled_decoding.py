"""A decode step compiled with TorchInductor (BLIP2_CHAT_COMPILE=1) gives `generate`'s very tokens.

On a GPU the compiled step is what the CUDA graphs capture (tests/test_gpu.py checks that); here it
runs eagerly on the CPU, through Inductor's C++ code, in float32, against plain `generate`.
The compiling is paid once, while the engine is set up: the turns never compile again.
Compiling a step of PyTorch's own operations needs a C++ compiler on a CPU; without one the tests skip.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from chatbot.core.conversation import Conversation
from chatbot.engine.base import GenerationOptions
from chatbot.engine.blip2 import Blip2Engine, open_engine
from chatbot.engine.cpu_kernels import ENV_SWITCH as ONEDNN_ENV
from chatbot.engine.static import COMPILE_ENV, compile_wanted
from chatbot.images import LoadedImage, load_image
from tests.conftest import FAMILIES
from tests.test_engine import QUESTIONS, converse_and_compare
from tests.test_static_decoding import DECODING_OPTIONS

HAS_COMPILER = bool(shutil.which("c++") or shutil.which("g++"))  # Inductor's CPU code is C++


@pytest.fixture(scope="module")
def compiled_engines(checkpoints: dict[str, Path]) -> dict[str, Blip2Engine]:
    if not HAS_COMPILER:
        pytest.skip("Inductor needs a C++ compiler on a CPU")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ONEDNN_ENV, "0")  # oneDNN's packed layers are opaque to Inductor; GPUs have none
        return {family: open_engine(str(path), device="cpu", static_decoding=True, compile_step=True)
                for family, path in checkpoints.items()}


@pytest.fixture
def red(pictures: dict[str, Path]) -> LoadedImage:
    return load_image(pictures["red"])


def compiled_graphs() -> int:
    """Graphs Dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@pytest.mark.parametrize("value, wanted", [("1", True), ("yes", True), ("0", False), ("off", False), ("", False),
                                           (" OFF ", False), (None, False)])
def test_compiling_is_asked_for_with_its_environment_variable(monkeypatch, value, wanted) -> None:
    if value is None:
        monkeypatch.delenv(COMPILE_ENV, raising=False)
    else:
        monkeypatch.setenv(COMPILE_ENV, value)
    assert compile_wanted() is wanted


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", DECODING_OPTIONS)
def test_four_turns_of_a_compiled_step_match_generate(compiled_engines, red, family, name) -> None:
    engine = compiled_engines[family]
    assert engine.decoding == "static cache, compiled" and engine.static is not None and engine.static.compiled
    engine.forget()
    before = compiled_graphs()
    chat = Conversation.with_engine(engine, red, DECODING_OPTIONS[name])
    converse_and_compare(chat, QUESTIONS)
    assert compiled_graphs() == before  # compiled while the engine was set up, never during a turn


def test_a_long_compiled_conversation_crosses_attention_windows_and_still_matches(compiled_engines, red) -> None:
    """A compiled step attends over two windows, 512 and 2048 positions: two compiles, not four."""
    engine = compiled_engines["opt"]
    assert engine.static.windows == (512, 2048)
    engine.forget()
    before = compiled_graphs()
    chat = Conversation.with_engine(engine, red, GenerationOptions(max_new_tokens=12))
    long_question = " ".join(["What is the colour of the small red car next to the tree?"] * 9)
    for _ in range(4):
        converse_and_compare(chat, [long_question])
    assert engine.last_stats.prompt_tokens > 512  # steps in the 512- and 2048-position windows
    assert compiled_graphs() == before  # each window's step was compiled at set-up


@pytest.mark.parametrize("family", FAMILIES)
def test_a_step_that_cannot_be_compiled_is_set_up_uncompiled_and_says_why(checkpoints, red, family,
                                                                          monkeypatch) -> None:
    def no_compiler(function, **options):  # what compiling raises on a machine without a compiler
        def compiled(*args, **kwargs):
            raise RuntimeError("Compiler: c++ is not found\nmore lines of detail")
        return compiled

    monkeypatch.setattr(torch, "compile", no_compiler)
    monkeypatch.setenv(COMPILE_ENV, "1")
    said: list[str] = []
    engine = open_engine(str(checkpoints[family]), device="cpu", static_decoding=True, progress=said.append)
    assert said.index("Compiling the decode step (once per process)") < said.index(
        "Could not compile the decode step (RuntimeError: Compiler: c++ is not found); it runs uncompiled "
        "(set BLIP2_CHAT_COMPILE=0 to skip trying)")
    assert engine.decoding == "static cache; not compiled (RuntimeError: Compiler: c++ is not found)"
    assert engine.static is not None and not engine.static.compiled
    windows = engine.static.windows
    assert windows == ((256, 512, 1024, 2048) if family == "opt" else (512,))  # the uncompiled step's windows
    with pytest.raises(RuntimeError, match="c.. is not found"):
        engine.static.compile()  # a failed compile leaves the step as it was
    assert engine.static.windows == windows and not engine.static.compiled
    chat = Conversation.with_engine(engine, red, DECODING_OPTIONS["greedy"])
    converse_and_compare(chat, QUESTIONS[:2])


def test_compiling_is_off_unless_asked(checkpoints, monkeypatch) -> None:
    monkeypatch.delenv(COMPILE_ENV, raising=False)
    engine = open_engine(str(checkpoints["opt"]), device="cpu", static_decoding=True)
    assert engine.decoding == "static cache" and not engine.static.compiled  # type: ignore[union-attr]
