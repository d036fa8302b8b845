"""Paste an image: read it from the system clipboard with the platform's clipboard tool, keep it as a file.

Python has no clipboard of its own, so the bytes come from a tool, chosen by what is on PATH:
- Linux and other Unix: `wl-paste` (wl-clipboard, Wayland), then `xclip` (X11), then `powershell.exe`
  (under WSL, the Windows clipboard);
- macOS: `pngpaste`, then `osascript` (always there);
- Windows: `powershell`, then `pwsh`.
A tool that cannot reach a clipboard (wl-paste outside Wayland, xclip without a display) gives way to
the next one; one that reads the clipboard and finds no image ends the search. Each runs with no
input, for at most `TIMEOUT_S` seconds, and its output is refused over `MAX_BYTES`.

The image is kept as `data_dir()/pasted/<sha256><suffix>` (the suffix of its real format): checked
first with `load_image`'s rules, so nothing unreadable is kept, and written atomically; the same
image pasted twice is one file. A front end then opens that path like any other image, and a saved
session names it, so a resumed chat finds its picture again. No Textual, no torch.

Just over 300 lines: one tool per platform, each with its own way of saying "no image"; read together.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import mimetypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from chatbot.errors import ImageError
from chatbot.image_download import one_line
from chatbot.images import load_image
from chatbot.locations import pasted_dir
from chatbot.untrusted import visible

TIMEOUT_S = 5.0  # per run of a clipboard tool
MAX_BYTES = 50 * 1024 * 1024  # the largest image taken from the clipboard
OTHER_WAYS = "Or save the image to a file and type /image PATH."
NO_IMAGE_HINT = "Copy an image first, or type /image PATH."

_INSTALL = {
    "unix": "Pasting an image needs a clipboard tool: install wl-clipboard (Wayland) or xclip (X11).",
    "mac": "Pasting an image needs a clipboard tool: install pngpaste (brew install pngpaste).",
    "windows": "Pasting an image needs PowerShell (powershell or pwsh on PATH).",
}
_TEXT_TYPES = frozenset({"UTF8_STRING", "STRING", "TEXT", "COMPOUND_TEXT"})
# The format's own suffix, from the bytes' signature; then from the type the tool named.
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF87a", ".gif"), (b"GIF89a", ".gif"),
               (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"), (b"BM", ".bmp"), (b"\x00\x00\x01\x00", ".ico"))
_TYPE_SUFFIXES = {"image/jpeg": ".jpg", "image/tiff": ".tif", "image/x-bmp": ".bmp", "image/x-icon": ".ico",
                  "image/vnd.microsoft.icon": ".ico"}
_OSASCRIPT = (  # the clipboard as PNG, else as TIFF, else what it holds instead
    "try", "return the clipboard as «class PNGf»", "on error", "try", "return the clipboard as «class TIFF»",
    "on error", "try", "set copied to the clipboard as text", "if copied is \"\" then return \"nothing\"",
    "return \"text\"", "on error", "return \"nothing\"", "end try", "end try", "end try",
)
_OSASCRIPT_DATA = re.compile(r"«data (PNGf|TIFF)([0-9A-Fa-f]*)»")
_POWERSHELL = """$ErrorActionPreference = 'Stop'
Add-Type -AssemblyName System.Windows.Forms
Add-Type -AssemblyName System.Drawing
if ([System.Windows.Forms.Clipboard]::ContainsImage()) {
  $stream = New-Object System.IO.MemoryStream
  [System.Windows.Forms.Clipboard]::GetImage().Save($stream, [System.Drawing.Imaging.ImageFormat]::Png)
  [Console]::Out.Write('image:' + [Convert]::ToBase64String($stream.ToArray()))
} elseif ([System.Windows.Forms.Clipboard]::ContainsText()) { [Console]::Out.Write('text') }
else { [Console]::Out.Write('nothing') }
"""


class _NoImage(Exception):
    """The clipboard was read and holds no image; `holds`: "text", "nothing", or "" (something else)."""

    def __init__(self, holds: str = "") -> None:
        super().__init__(holds)
        self.holds = holds


class _ToolFailed(Exception):
    """This tool could not read the clipboard (no display, an error, too slow): the next one may."""


def paste_image(*, platform: str | None = None) -> Path:
    """Save the image on the system clipboard under `pasted_dir()` and return its path.

    `platform`: a `sys.platform` value, to choose the tools (tests pass another one).

    Raises:
        ImageError: one sentence for each way it can fail: no clipboard tool (what to install),
            a clipboard without an image, a tool that fails or is too slow, an image too large or
            unreadable, a folder that cannot be written.
    """
    family = _family(platform or sys.platform)
    tools = [(name, path, read) for name, read in _TOOLS[family] if (path := shutil.which(name))]
    if not tools:
        raise ImageError(_INSTALL[family], OTHER_WAYS)
    failures: list[str] = []
    for name, path, read in tools:
        try:
            data, kind = read(name, path)
        except _ToolFailed as failed:
            failures.append(str(failed))
            continue
        except _NoImage as none:
            what = {"text": " (it holds text)", "nothing": " (it is empty)"}.get(none.holds, "")
            raise ImageError(f"The clipboard holds no image{what}.", NO_IMAGE_HINT) from None
        return save_pasted(data, kind)
    raise ImageError(f"The clipboard could not be read: {'; '.join(failures)}.",
                     f"Copy the image again. {OTHER_WAYS}")


def save_pasted(data: bytes, kind: str = "image/png", folder: Path | None = None) -> Path:
    """Keep `data` (an image of type `kind`, as the tool said) as `folder/<sha256><suffix>`; the path.

    The bytes are checked with `load_image`'s rules before they are kept (its sentence, naming "the
    clipboard's image/png data", is the error), then moved into place whole. An image already kept
    is not written again.
    """
    folder = folder if folder is not None else pasted_dir()
    suffix = _suffix(data, kind)
    target = folder / f"{hashlib.sha256(data).hexdigest()}{suffix}"
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)  # pasted screenshots may be private
        handle, temporary = tempfile.mkstemp(prefix=".pasting-", suffix=suffix, dir=folder)
    except OSError as error:
        raise _unsaved(folder, error) from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        try:
            load_image(temporary)
        except ImageError as error:
            named = error.message.replace(visible(os.path.abspath(temporary)), f"The clipboard's {visible(kind)} data")
            raise ImageError(named, error.hint) from None
        os.replace(temporary, target)
    except OSError as error:
        raise _unsaved(folder, error) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)  # gone already once it was moved into place
    return target


# -- the tools -------------------------------------------------------------------------------------


def _wl_paste(name: str, path: str) -> tuple[bytes, str]:
    """wl-clipboard: list the types offered, then ask for PNG, or the first other image type."""
    listed = _run(name, [path, "--list-types"])
    if listed.returncode != 0:
        said = _said(listed)
        if any(words in said.lower() for words in ("nothing is copied", "no selection", "no suitable type")):
            raise _NoImage("nothing")
        raise _ToolFailed(f"{name} said {said}")
    kind = _image_type(listed.stdout)
    return _image(name, [path, "--no-newline", "--type", kind]), kind


def _xclip(name: str, path: str) -> tuple[bytes, str]:
    """xclip: the clipboard selection's TARGETS, then the PNG (or other image) target."""
    listed = _run(name, [path, "-selection", "clipboard", "-t", "TARGETS", "-o"])
    if listed.returncode != 0:
        said = _said(listed)
        if "not available" in said.lower():  # "target TARGETS not available": nothing owns the clipboard
            raise _NoImage("nothing")
        raise _ToolFailed(f"{name} said {said}")
    kind = _image_type(listed.stdout)
    return _image(name, [path, "-selection", "clipboard", "-t", kind, "-o"]), kind


def _pngpaste(name: str, path: str) -> tuple[bytes, str]:
    """pngpaste (macOS, Homebrew): the clipboard's image as PNG on its output; it fails without one."""
    done = _run(name, [path, "-"])
    if done.returncode != 0:
        said = _said(done)
        if "no " in said.lower() and "clipboard" in said.lower():  # "No PNG data found on the clipboard!"
            raise _NoImage()
        raise _ToolFailed(f"{name} said {said}")
    if not done.stdout:
        raise _NoImage()
    return done.stdout, "image/png"


def _osascript(name: str, path: str) -> tuple[bytes, str]:
    """AppleScript: the clipboard as «class PNGf» (else TIFF), printed as «data PNGf89504E47…»."""
    arguments = [path]
    for line in _OSASCRIPT:
        arguments += ["-e", line]
    done = _run(name, arguments, limit=2 * MAX_BYTES + 64)  # hexadecimal: two characters a byte
    if done.returncode != 0:
        raise _ToolFailed(f"{name} said {_said(done)}")
    text = done.stdout.decode("utf-8", errors="replace").strip()
    if text in ("text", "nothing"):
        raise _NoImage(text)
    found = _OSASCRIPT_DATA.fullmatch(text)
    if found is None or not found.group(2):
        raise _ToolFailed(f"{name} printed something other than an image")
    return bytes.fromhex(found.group(2)), "image/png" if found.group(1) == "PNGf" else "image/tiff"


def _powershell(name: str, path: str) -> tuple[bytes, str]:
    """Windows (and WSL): .NET's clipboard image saved as PNG, printed in base64 after "image:"."""
    script = base64.b64encode(_POWERSHELL.encode("utf-16-le")).decode("ascii")
    done = _run(name, [path, "-NoProfile", "-NonInteractive", "-Sta", "-EncodedCommand", script],
                limit=MAX_BYTES * 4 // 3 + 64)
    if done.returncode != 0:
        raise _ToolFailed(f"{name} said {_said(done)}")
    text = done.stdout.decode("ascii", errors="replace").strip()
    if text in ("text", "nothing"):
        raise _NoImage(text)
    if not text.startswith("image:"):
        raise _ToolFailed(f"{name} printed something other than an image")
    try:
        return base64.b64decode(text[len("image:"):], validate=True), "image/png"
    except ValueError:
        raise _ToolFailed(f"{name} printed something other than an image") from None


Reader = Callable[[str, str], tuple[bytes, str]]  # (tool name, its path) -> (image bytes, their type)
_TOOLS: dict[str, tuple[tuple[str, Reader], ...]] = {
    "unix": (("wl-paste", _wl_paste), ("xclip", _xclip), ("powershell.exe", _powershell)),
    "mac": (("pngpaste", _pngpaste), ("osascript", _osascript)),
    "windows": (("powershell", _powershell), ("pwsh", _powershell)),
}


# -- helpers ---------------------------------------------------------------------------------------


def _family(platform: str) -> str:
    if platform == "darwin":
        return "mac"
    return "windows" if platform.startswith(("win", "cygwin")) else "unix"


def _run(name: str, arguments: list[str], limit: int | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a clipboard tool with no input and a time limit; refuse output over `limit` bytes (MAX_BYTES)."""
    try:
        done = subprocess.run(arguments, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        raise _ToolFailed(f"{name} did not answer within {TIMEOUT_S:g} seconds") from None
    except OSError as error:
        raise _ToolFailed(f"{name} could not be started ({one_line(error.strerror or str(error))})") from None
    if len(done.stdout) > (MAX_BYTES if limit is None else limit):
        raise ImageError(f"The image on the clipboard is over {MAX_BYTES // (1024 * 1024)} MB.",
                         "Save it to a file, make it smaller, and type /image PATH.")
    return done


def _image(name: str, arguments: list[str]) -> bytes:
    """The bytes a tool prints for one image type; an error or nothing at all is a failure."""
    done = _run(name, arguments)
    if done.returncode != 0:
        raise _ToolFailed(f"{name} said {_said(done)}")
    if not done.stdout:
        raise _ToolFailed(f"{name} gave no data for the image")
    return done.stdout


def _image_type(listing: bytes) -> str:
    """PNG when offered, else the first other raster image type; `_NoImage` saying what it holds instead."""
    types = [line.strip() for line in listing.decode("utf-8", errors="replace").splitlines() if line.strip()]
    images = [kind for kind in types if kind.lower().startswith("image/") and "svg" not in kind.lower()]
    if "image/png" in images:
        return "image/png"
    if images:
        return images[0]
    if any(kind.lower().startswith("text/") or kind in _TEXT_TYPES for kind in types):
        raise _NoImage("text")
    offered = [kind for kind in types if kind not in ("TARGETS", "TIMESTAMP", "MULTIPLE", "SAVE_TARGETS")]
    raise _NoImage("" if offered else "nothing")


def _unsaved(folder: Path, error: OSError) -> ImageError:
    detail = one_line(error.strerror or str(error))
    return ImageError(f"Could not save the pasted image in {visible(folder)}: {detail}.",
                      f"Check that the folder can be written. {OTHER_WAYS}")


def _said(done: subprocess.CompletedProcess[bytes]) -> str:
    """What a failed tool wrote, as a short quoted line (or its exit status when it wrote nothing)."""
    text = one_line(done.stderr.decode("utf-8", errors="replace")).strip()
    if not text:
        return f"nothing and exited with status {done.returncode}"
    return f'"{text[:200]}"'


def _suffix(data: bytes, kind: str) -> str:
    for signature, suffix in _SIGNATURES:
        if data.startswith(signature):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    kind = kind.lower().split(";")[0].strip()
    return _TYPE_SUFFIXES.get(kind) or mimetypes.guess_extension(kind) or ".png"
