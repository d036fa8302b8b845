"""`blip2-chat demo`: a freshly generated picture of the demo world, saved where a resumed chat finds it.

The demo model knows only this world (one to four coloured shapes on a 2x2 grid), so the chat opens
on one of its pictures and says so, with questions it can answer.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import stat
import tempfile
from pathlib import Path

from PIL import Image

from chatbot.demo.world import IMAGE_SIZE, make_scene, render
from chatbot.errors import UserError
from chatbot.images import quiet_decoding
from chatbot.untrusted import visible

INTRODUCTION = (
    "This is the demo model: a small BLIP-2 trained here on pictures of one to four coloured shapes "
    "(circles, squares, triangles) on a 2x2 grid. It knows nothing else, and it still gets about one question "
    "in five wrong (its model card has the scores). It learned chats of up to four questions: after that its "
    "answers drift, and /clear starts afresh. Try: What is at the top left? What size is it? Then a follow-up "
    "such as: And the square?"
)


def outside_its_world(count: int = 1, of: int = 1) -> str:
    """What the demo model says of itself when `count` of the `of` pictures it is asked about are not of its world."""
    which = "this picture is not one of them" if of == 1 else \
        f"{count} of these {of} pictures {'is' if count == 1 else 'are'} not of them"
    return (f"The demo model knows only pictures of one to four coloured shapes on a 2x2 grid, and {which}, so what "
            "it answers there means nothing. `blip2-chat demo` opens a picture of its world; --model names a real "
            "checkpoint.")


SHOWN_SIZE = 4 * IMAGE_SIZE  # the saved picture's side: drawn at the model's size, enlarged for people
# A saved picture is a small PNG (a few kilobytes); one far larger than this is not ours, and is not read.
_MAX_SAVED_BYTES = 4 * 1024 * 1024


def draw_picture(seed: int) -> Image.Image:
    """The demo world's picture for `seed`: drawn at the size the model saw in training, enlarged (nearest)
    only so people can see it."""
    return render(make_scene(seed), IMAGE_SIZE).resize((SHOWN_SIZE,) * 2, Image.Resampling.NEAREST)


def of_its_world(picture: Image.Image) -> bool:
    """Whether `picture` looks drawn by the demo world: the model's size, or that size enlarged as `draw_picture`
    enlarges it (every block of 4x4 pixels one colour). A real photo never is; the demo's own pictures always are."""
    import numpy as np

    if picture.size == (IMAGE_SIZE, IMAGE_SIZE):
        return True
    if picture.size != (SHOWN_SIZE, SHOWN_SIZE):
        return False
    step = SHOWN_SIZE // IMAGE_SIZE
    pixels = np.asarray(picture.convert("RGB"))
    small = pixels[::step, ::step]
    return bool((np.repeat(np.repeat(small, step, axis=0), step, axis=1) == pixels).all())


def demo_picture(folder: Path, seed: int | None = None) -> Path:
    """Draw the demo world's picture for `seed` (a new one when None) as `folder/shapes-SEED.png`.

    A picture saved before is kept when it still shows exactly that picture (so a resumed chat finds the
    same file); one that is empty, damaged or different (a save cut short, a file changed since) is drawn
    again. The file is written whole or not at all: into a temporary file in `folder`, then renamed.
    UserError, in one sentence, when the folder or the file cannot be made or written.
    """
    seed = random.randrange(10**6, 10**7) if seed is None else seed
    shown = visible(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where the folder should be
        raise UserError(
            f"{shown} is a file, not a folder, so the demo cannot save its picture there.",
            "Move or delete that file, or set BLIP2_CHAT_HOME to another folder.",
        ) from None
    except NotADirectoryError:  # a file where a folder above it should be (the data folder itself, say)
        above = next((visible(part) for part in folder.parents if part.is_file()), shown)
        raise UserError(
            f"{above} is a file, not a folder, so the demo cannot save its picture in {shown}.",
            "Move or delete that file, or set BLIP2_CHAT_HOME to another folder.",
        ) from None
    except OSError as error:
        raise _cannot_save(shown, error) from None
    path = folder / f"shapes-{seed}.png"
    picture = draw_picture(seed)
    if _shows(path, picture):
        return path
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    try:
        _write_whole(path, buffer.getvalue())
    except IsADirectoryError:
        raise UserError(
            f"{visible(path)} is a folder, so the demo cannot save its picture there.",
            "Move or delete that folder, or ask for another picture with --picture.",
        ) from None
    except OSError as error:
        raise _cannot_save(shown, error) from None
    return path


def _shows(path: Path, picture: Image.Image) -> bool:
    """Whether `path` is a regular file that decodes to exactly `picture`'s pixels."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_SAVED_BYTES:
            return False
        data = path.read_bytes()
        with quiet_decoding(tiff=False), Image.open(io.BytesIO(data)) as saved:
            if saved.size != picture.size:  # checked before decoding a byte of pixels
                return False
            return saved.convert("RGB").tobytes() == picture.tobytes()
    except Exception:  # noqa: BLE001 - missing, unreadable, empty, not a PNG, damaged: all mean draw it again
        return False


def _write_whole(path: Path, data: bytes) -> None:
    """`data` as the file `path`, all of it or (on an error, Ctrl+C, a full disk) the file as it was."""
    if path.is_dir():  # os.replace cannot put a file there; say so before writing anything
        raise IsADirectoryError(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it 0600; a picture is no secret
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _cannot_save(shown: str, error: OSError) -> UserError:
    """The folder or the picture could not be made: permission, a full disk, a read-only file system..."""
    reason = " ".join((error.strerror or type(error).__name__).split())
    return UserError(
        f"The demo could not save its picture in {shown}: {visible(reason)}.",
        "Free some space or fix the folder's permissions, or set BLIP2_CHAT_HOME to another folder.",
    )
