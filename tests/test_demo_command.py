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
    assert "knows only pictures" not in chat.stderr + ask.stderr  # its own world: no caveat


def test_the_demo_model_says_when_a_picture_is_not_of_its_world(tmp_path: Path) -> None:
    from chatbot.demo.start import draw_picture, of_its_world, outside_its_world

    photo = Path(__file__).parent.parent / "examples" / "photo.jpg"
    assert of_its_world(draw_picture(3)) and of_its_world(render(make_scene(3), IMAGE_SIZE))
    assert not of_its_world(Image.open(photo)) and not of_its_world(draw_picture(3).rotate(1))
    picture = tmp_path / "shapes.png"
    draw_picture(3).save(picture)
    ask = blip2_chat(tmp_path, "ask", str(photo), str(picture), "What is at the top left?", "--model", "demo")
    assert ask.returncode == 0, ask.stderr
    assert outside_its_world(1, 2) in ask.stderr.splitlines()
    assert outside_its_world(1, 2).startswith("The demo model knows only pictures of one to four coloured shapes on "
                                              "a 2x2 grid, and 1 of these 2 pictures is not of them")
    chat = blip2_chat(tmp_path, "chat", str(photo), "--plain", "--model", "demo", stdin="What is it?\n")
    assert chat.returncode == 0, chat.stderr
    assert outside_its_world() in chat.stderr.splitlines()


def test_a_bad_picture_number_is_one_sentence(tmp_path: Path) -> None:
    run = blip2_chat(tmp_path, "demo", "--picture", "-3", "--plain")
    assert run.returncode == 2 and "--picture must be between 0 and" in run.stderr and "Traceback" not in run.stderr


def test_an_answer_cut_off_by_max_new_tokens_is_said_to_be(tmp_path: Path) -> None:
    import json

    from chatbot.core.answer_wording import cut_short_text
    from chatbot.demo.start import draw_picture

    picture = tmp_path / "shapes.png"
    draw_picture(3).save(picture)
    short = blip2_chat(tmp_path, "caption", str(picture), "--model", "demo", "--max-new-tokens", "1")
    assert short.returncode == 0, short.stderr
    assert short.stderr.splitlines()[-1] == cut_short_text(1, command_line=True)
    assert cut_short_text(1, command_line=True) == ("The answer was cut off at 1 token (max_new_tokens); "
                                                   "--max-new-tokens 2 lets it go on longer.")
    whole = blip2_chat(tmp_path, "caption", str(picture), "--model", "demo", "--json")
    assert whole.returncode == 0 and json.loads(whole.stdout)["cut_short"] is False  # it ended its caption itself
    assert "cut off" not in whole.stderr


def test_a_chat_without_an_image_starts_and_the_first_image_comes_with_image(tmp_path: Path) -> None:
    from chatbot.core.commands import NO_IMAGE_YET
    from chatbot.demo.start import draw_picture

    picture = tmp_path / "shapes.png"
    draw_picture(3).save(picture)
    chat = blip2_chat(tmp_path, "chat", "--plain", "--model", "demo",
                      stdin=f"What is it?\n/image {picture}\nWhat is at the top left?\n")
    assert chat.returncode == 0, chat.stderr
    said = chat.stderr.splitlines()
    assert NO_IMAGE_YET in said and "blip2-chat: No image is open. Open one first with /image PATH." in said
    lines = chat.stdout.splitlines()
    assert lines[:3] == ["You: What is it?", f"You: /image {picture}", "You: What is at the top left?"]  # all shown
    assert lines[3].startswith("Assistant: ") and lines[3][11:].strip()
