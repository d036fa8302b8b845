"""`blip2-chat demo` and `--model demo`: offline, through the same loader and chat as any checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from chatbot.demo.world import IMAGE_SIZE, make_scene, render
from chatbot.locations import demo_model_dir

pytestmark = pytest.mark.skipif(not (demo_model_dir() / "model.safetensors").exists(), reason="no demo weights")


def blip2_chat(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BLIP2_CHAT_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "chatbot", *args], input=stdin, capture_output=True, text=True,
                          encoding="utf-8", env=env, timeout=300, check=False)


def test_demo_opens_a_chat_on_a_generated_picture_offline(tmp_path: Path) -> None:
    chat = blip2_chat(tmp_path, "demo", "--picture", "5", "--plain",
                      stdin="How many shapes are there?\nWhat colour is the circle?\n")
    assert chat.returncode == 0, chat.stderr
    picture = tmp_path / "demo" / "shapes-5.png"
    drawn = render(make_scene(5), IMAGE_SIZE).resize((4 * IMAGE_SIZE,) * 2, Image.Resampling.NEAREST)
    assert Image.open(picture).convert("RGB").tobytes() == drawn.tobytes()
    assert "It knows nothing else" in chat.stderr and "Loading model demo" in chat.stderr
    lines = chat.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["You", "Assistant", "You", "Assistant"]
    # the first answer is what `ask` with the same model gives about the same picture (a fresh context)
    ask = blip2_chat(tmp_path, "ask", str(picture), "How many shapes are there?", "--model", "demo")
    assert ask.returncode == 0, ask.stderr
    assert lines[1] == f"Assistant: {ask.stdout.strip()}"


def test_a_bad_picture_number_is_one_sentence(tmp_path: Path) -> None:
    run = blip2_chat(tmp_path, "demo", "--picture", "-3", "--plain")
    assert run.returncode == 2 and "--picture must be between 0 and" in run.stderr and "Traceback" not in run.stderr
