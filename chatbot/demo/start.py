"""`blip2-chat demo`: a freshly generated picture of the demo world, saved where a resumed chat finds it.

The demo model knows only this world (one to four coloured shapes on a 2x2 grid), so the chat opens
on one of its pictures and says so, with questions it can answer.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from chatbot.demo.world import IMAGE_SIZE, make_scene, render

INTRODUCTION = (
    "This is the demo model: a small BLIP-2 trained here on pictures of one to four coloured shapes "
    "(circles, squares, triangles) on a 2x2 grid. It knows nothing else, and it still gets about one question "
    "in five wrong (chatbot/demo/weights/chat/MODEL_CARD.md has its scores). Try: What is at the top left? "
    "What size is it? Then a follow-up such as: And the square?"
)


def demo_picture(folder: Path, seed: int | None = None) -> Path:
    """Draw the demo world's picture for `seed` (a new one when None) as `folder/shapes-SEED.png`."""
    seed = random.randrange(10**6, 10**7) if seed is None else seed
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"shapes-{seed}.png"
    if not path.exists():
        # drawn at the size the model saw in training, enlarged (nearest) only so people can see it
        render(make_scene(seed), IMAGE_SIZE).resize((4 * IMAGE_SIZE,) * 2, Image.Resampling.NEAREST).save(path)
    return path
