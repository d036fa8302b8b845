"""`index` and `search` in tests: coloured pictures, an index of them, and the reference the results are checked
against (`Blip2ForImageTextRetrieval.forward` over every picture, loaded separately)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from chatbot.cli import main
from chatbot.images import load_image
from tests.conftest import make_image

COLOURS = {"red": (200, 30, 30), "green": (20, 180, 40), "blue": (30, 30, 200), "yellow": (240, 200, 0),
           "black": (10, 10, 10), "white": (250, 250, 250)}
QUERY = "a red square on a grey ground"
TOLERANCE = 2e-3  # float16 storage of unit vectors: a similarity is off by at most ~5e-4 per number


def draw_colours(root: Path) -> Path:
    """`root` (a folder that exists) with one picture per colour of COLOURS, `red.png` ..., each its own size."""
    for index, (name, colour) in enumerate(COLOURS.items()):
        make_image(root / f"{name}.png", colour, (64 + 8 * index, 48))
    return root


def pictures_in(photos: Path) -> list[str]:
    """The paths of the COLOURS pictures in `photos`, sorted."""
    return sorted(str(photos / f"{name}.png") for name in COLOURS)


def build_index(photos: Path, checkpoint: Path, folder: Path) -> Path:
    """`blip2-chat index PHOTOS --model CHECKPOINT --index FOLDER`, which must succeed; the index folder."""
    assert main(["index", str(photos), "--model", str(checkpoint), "--index", str(folder)]) == 0
    return folder


def forward_scores(checkpoint: Path, paths: list[str], text: str) -> tuple[np.ndarray, np.ndarray]:
    """(ITC, ITM probability) of each picture with `text`, from the model's own forward."""
    import torch
    from transformers import Blip2ForImageTextRetrieval, Blip2Processor

    processor = Blip2Processor.from_pretrained(checkpoint)
    model = Blip2ForImageTextRetrieval.from_pretrained(checkpoint).eval()
    images = [load_image(path).image for path in paths]
    inputs = processor(images=images, text=[text] * len(paths), padding=True, return_tensors="pt")
    with torch.no_grad():
        itc = model(**inputs, use_image_text_matching_head=False).logits_per_image[:, 0]  # type: ignore[operator]
        itm = model(**inputs, use_image_text_matching_head=True).logits_per_image  # type: ignore[operator]
    return itc.numpy(), torch.softmax(itm.float(), dim=1)[:, 1].numpy()


def search_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    """The records of `blip2-chat search ARGS --json`, which must succeed (what was captured before is dropped)."""
    capsys.readouterr()
    assert main(["search", *args, "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def assert_ranked_like(paths: list[str], reference: dict[str, float]) -> None:
    """`paths` is in the reference's order, except pictures whose reference scores are closer than TOLERANCE."""
    for better, worse in zip(paths, paths[1:], strict=False):
        assert reference[better] >= reference[worse] - TOLERANCE, (better, worse, reference)


def index_files(folder: Path) -> dict[str, str]:
    """What the index folder holds (sub-folders included), by relative path: the database's rows (its file's
    bytes change when SQLite folds its journal in), every other file's sha256; SQLite's journals left out."""
    held = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if not path.is_file() or name.endswith(("-wal", "-shm")):
            continue
        if path.name == "index.sqlite":
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                held[name] = "\n".join(db.iterdump())
        else:
            held[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return held
