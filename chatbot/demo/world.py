"""The demo world: pictures of one to four simple shapes on a 2x2 grid, and their canonical captions.

Everything follows from a seed: `make_scene(seed)` chooses the shapes, `render(scene)` draws them (with
a varied background, jitter and noise), `caption(scene)` words them. The grid keeps every question about
position exact: each cell holds at most one shape, "left of" means beside it in the same row and
"above" in the same column.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from chatbot.images import LoadedImage

IMAGE_SIZE = 64  # pixels a side; the model's image_size
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40), "green": (40, 165, 60), "blue": (45, 80, 220), "yellow": (235, 205, 35),
    "purple": (145, 55, 185),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")  # the cells in reading order
NUMBERS = ("zero", "one", "two", "three", "four")
# Pale and mid backgrounds, none close to a shape colour.
BACKGROUNDS = ((236, 236, 232), (226, 214, 192), (204, 214, 230), (212, 228, 208), (150, 150, 150),
               (240, 222, 226))
_EXTENT = {"small": 0.42, "large": 0.78}  # share of a cell's side a shape spans


@dataclass(frozen=True)
class Thing:
    """One shape in a picture."""

    shape: str  # one of SHAPES
    colour: str  # one of COLOURS
    size: str  # one of SIZES
    cell: int  # 0..3, index into POSITIONS
    offset: tuple[int, int] = (0, 0)  # jitter in pixels from the cell's centre (drawing only)

    @property
    def row(self) -> int:
        return self.cell // 2

    @property
    def column(self) -> int:
        return self.cell % 2

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]

    @property
    def name(self) -> str:
        """How answers name it: "red circle"."""
        return f"{self.colour} {self.shape}"

    @property
    def phrase(self) -> str:
        """How captions name it: "a small red circle"."""
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A picture's content: its shapes in reading order, its background, and the seed of its noise."""

    things: tuple[Thing, ...]
    background: tuple[int, int, int]
    seed: int

    def at(self, cell: int) -> Thing | None:
        """The shape in `cell`, or None when it is empty."""
        return next((t for t in self.things if t.cell == cell), None)


def make_scene(seed: int) -> Scene:
    """The scene for `seed`: 1-4 shapes in distinct cells, each shape, colour and size drawn uniformly."""
    rng = random.Random(seed)
    count = rng.randint(1, 4)
    cells = sorted(rng.sample(range(4), count))
    jitter = IMAGE_SIZE // 16
    things = tuple(
        Thing(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(SIZES), cell,
              (rng.randint(-jitter, jitter), rng.randint(-jitter, jitter)))
        for cell in cells
    )
    base = rng.choice(BACKGROUNDS)
    background = tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in base)
    return Scene(things, (background[0], background[1], background[2]), seed)


def render(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw `scene` as an RGB picture `size` pixels a side: a shaded background, the shapes, noise."""
    import numpy as np

    rng = np.random.default_rng(scene.seed)
    ramp = np.linspace(-10, 10, size)[None, :, None] * rng.choice([-1.0, 1.0])  # a gentle left-right shade
    base = np.asarray(scene.background, dtype=np.float64)[None, None, :] + ramp
    picture = Image.fromarray(np.clip(np.broadcast_to(base, (size, size, 3)), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    cell = size / 2
    scale = size / IMAGE_SIZE
    for thing in scene.things:
        centre_x = (thing.column + 0.5) * cell + thing.offset[0] * scale
        centre_y = (thing.row + 0.5) * cell + thing.offset[1] * scale
        half = _EXTENT[thing.size] * cell / 2
        tint = np.clip(np.asarray(COLOURS[thing.colour]) + rng.integers(-15, 16, 3), 0, 255)
        fill = (int(tint[0]), int(tint[1]), int(tint[2]))
        box = (centre_x - half, centre_y - half, centre_x + half, centre_y + half)
        if thing.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif thing.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(centre_x, centre_y - half), (centre_x - half, centre_y + half),
                          (centre_x + half, centre_y + half)], fill=fill)
    noisy = np.asarray(picture, dtype=np.float64) + rng.normal(0.0, 6.0, (size, size, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def caption(scene: Scene) -> str:
    """The canonical caption: the shapes in reading order, two of them with the relation between them.

    One shape: "a small red circle at the top left". Two in a row: "A left of B"; in a column: "A above B";
    on a diagonal: "A and B". Three or four: "A and B and C" (no commas: answers are plain words).
    """
    things = scene.things
    if len(things) == 1:
        return f"{things[0].phrase} at the {things[0].position}"
    if len(things) == 2:
        first, second = things
        link = "left of" if first.row == second.row else "above" if first.column == second.column else "and"
        return f"{first.phrase} {link} {second.phrase}"
    return " and ".join(t.phrase for t in things)


def loaded_picture(scene: Scene, size: int = IMAGE_SIZE) -> LoadedImage:
    """`scene` drawn and wrapped as the engine takes images: hashed by its PNG bytes, named by its seed."""
    import hashlib
    import io

    picture = render(scene, size)
    data = io.BytesIO()
    picture.save(data, "PNG")
    return LoadedImage(picture, hashlib.sha256(data.getvalue()).hexdigest(), f"<demo picture {scene.seed}>",
                       picture.size)
