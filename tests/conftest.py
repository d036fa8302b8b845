"""Shared fixtures: synthetic checkpoints built once per test session, never the network."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

# Tests never reach the hub: the loader must find everything locally or say so. An empty
# Hugging Face cache of our own (set before huggingface_hub is imported, which reads it once)
# keeps the user's downloaded models out of the tests; subprocesses inherit it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="blip2-chat-hf-home-")
os.environ["HF_HUB_CACHE"] = os.path.join(os.environ["HF_HOME"], "hub")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
# Sessions, chat history and the config file live in a home of the tests' own: a run never writes to
# the user's, and the user's config.toml (say `plain = true`) never changes what a test sees.
os.environ["BLIP2_CHAT_HOME"] = tempfile.mkdtemp(prefix="blip2-chat-home-")
atexit.register(shutil.rmtree, os.environ["BLIP2_CHAT_HOME"], ignore_errors=True)
# The platform's config folder too: a config.toml the user keeps there would make every command say that it is
# not read (BLIP2_CHAT_HOME is set), a line the tests' stderr would not expect.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="blip2-chat-xdg-")
atexit.register(shutil.rmtree, os.environ["XDG_CONFIG_HOME"], ignore_errors=True)

# Ctrl+C must mean KeyboardInterrupt here and in the programs the tests start. A shell that runs the
# tests as a background job (`nohup pytest &`) sets SIGINT to "ignore", which Python keeps and every
# child inherits; the Ctrl+C tests would then test the shell, not us.
signal.signal(signal.SIGINT, signal.default_int_handler)

FAMILIES = ("opt", "flan-t5")


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random-weight BLIP-2 checkpoints of both families, saved like downloaded ones."""
    from chatbot.engine.synthetic import build_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    return {family: build_checkpoint(f"tiny-{family}", root / f"tiny-{family}") for family in FAMILIES}


@pytest.fixture(scope="session")
def retrieval_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight retrieval checkpoint (`Blip2ForImageTextRetrieval`, 8 queries), saved like a download."""
    from chatbot.engine.synthetic import build_checkpoint

    return build_checkpoint("tiny-itm", tmp_path_factory.mktemp("retrieval") / "tiny-itm")


@pytest.fixture(scope="session")
def engines(checkpoints: dict[str, Path]) -> dict[str, object]:
    """One loaded engine per family, shared by the tests that only read from it."""
    from chatbot.engine.blip2 import open_engine

    return {family: open_engine(str(path), device="cpu") for family, path in checkpoints.items()}


def put_in_hub_cache(folder: Path, hub_id: str, cache: Path | None = None) -> Path:
    """Lay a checkpoint out exactly as huggingface_hub caches a download; returns the repo folder, for the
    test to remove. `cache`: the cache folder (default: the one huggingface_hub reads in this process;
    subprocesses read $HF_HUB_CACHE, set above, which a plugin importing huggingface_hub earlier can leave
    different)."""
    if cache is None:
        from huggingface_hub import constants

        cache = Path(constants.HF_HUB_CACHE)
    repo = cache / f"models--{hub_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return repo


def make_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Path:
    """A small picture with a coloured square, different enough per colour to change answers."""
    image = Image.new("RGB", size, (240, 240, 240))
    image.paste(colour, (8, 8, size[0] - 8, size[1] - 8))
    image.save(path)
    return path


@pytest.fixture(scope="session")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pictures")
    return {
        "red": make_image(root / "red.png", (200, 30, 30)),
        "green": make_image(root / "green.jpg", (20, 180, 40)),
    }


@pytest.fixture(scope="session")
def early_end_checkpoints(
    checkpoints: dict[str, Path], engines: dict[str, object], pictures: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, int]]:
    """Each tiny checkpoint again, with its end-of-sequence token set to the 4th token it answers with
    (to "Question: What is in the picture? Answer:" about the red picture), and that token.

    Random weights rarely pick their end token; naming one the model does pick makes answers end on it,
    so the options that only act at the end (min_new_tokens, length_penalty) can be seen to act.
    """
    import json
    import shutil

    from chatbot.engine.base import GenerationOptions
    from chatbot.images import load_image
    from tests.test_engine import reference_tokens

    red = load_image(pictures["red"])
    root = tmp_path_factory.mktemp("early-end")
    out = {}
    for family, path in checkpoints.items():
        answer = reference_tokens(engines[family], red, "Question: What is in the picture? Answer:",  # type: ignore
                                  GenerationOptions(12))
        end = next(token for index, token in enumerate(answer) if index >= 3 and token not in answer[:index])
        copy = Path(shutil.copytree(path, root / family))
        config = json.loads((copy / "config.json").read_text())
        config["text_config"]["eos_token_id"] = end
        (copy / "config.json").write_text(json.dumps(config))
        generation = json.loads((copy / "generation_config.json").read_text())
        generation["eos_token_id"] = end
        (copy / "generation_config.json").write_text(json.dumps(generation))
        out[family] = (copy, end)
    return out


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder for the test (where `/export` without a path writes)."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Sessions, the line history and the config under `tmp_path/home`; `tmp_path` is the working directory
    (where exports land). The chat app's test files use it for every test: `pytest.mark.usefixtures("home")`."""
    from chatbot.locations import HOME_ENV

    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def pillow_loads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every image Pillow decodes from now on (`ImageFile.load` calls): empty when a file was refused
    from its header alone."""
    from PIL import ImageFile

    loads: list[object] = []
    real_load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        loads.append(self)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return loads


# --- a picture on a local server that arrives when the test says (slow downloads in the app) -----------------


@dataclass
class GatedPicture:
    """A picture at `url` that arrives when the test calls `release()` (or `fail()`: a 404)."""

    url: str
    gate: threading.Event = field(default_factory=threading.Event)
    missing: bool = False

    def release(self) -> None:
        self.gate.set()

    def fail(self) -> None:
        self.missing = True
        self.gate.set()


@pytest.fixture
def gated(pictures: dict[str, Path]) -> Iterator[GatedPicture]:
    body = pictures["green"].read_bytes()
    holder: list[GatedPicture] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            picture = holder[0]
            picture.gate.wait(60)
            try:
                if picture.missing:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the app stopped the opening, or quit
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(GatedPicture(f"http://127.0.0.1:{httpd.server_address[1]}/ok.jpg"))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield holder[0]
    holder[0].gate.set()
    httpd.shutdown()
    httpd.server_close()
