"""Files by local path or by object-storage URI (`s3://`, `gs://`, ...), read through pyarrow's filesystems.

A local path goes through `chatbot.images.load_image` exactly as on one machine. A URI's bytes are fetched
with pyarrow (which Ray Data brings) and decoded by the same function from a private temporary file, so
the checks, the pixels and the sha256 are the same; messages name the URI, not the temporary file.
(The URI path is present for clusters on object storage; the tests here run on local files.)

Object storage that cannot be reached must not hang a run: Google Cloud Storage's client retries for 15
minutes by default, so its retries are capped (`STORAGE_SECONDS`), and the driver's listing runs in a daemon
thread that it waits for with a deadline for the first answer (Ctrl+C works while it waits); either ends in
one sentence.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import queue
import re
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from chatbot.errors import ImageError, UserError
from chatbot.image_files import file_sha256, is_storage_uri
from chatbot.images import IMAGE_SUFFIXES, LoadedImage, load_image
from chatbot.untrusted import visible

STORAGE_SECONDS = 20.0  # how long a storage request is retried (Google Cloud Storage's default is 15 minutes)
FIRST_ANSWER_SECONDS = 45.0  # a listing's first answer (its credentials and one request, each retried) within this
STORAGE_HINT = "Check the URI, the network and the storage credentials on this machine (it lists the files)."


def _filesystem(uri: str) -> tuple[Any, str]:
    from pyarrow import fs

    try:
        filesystem, where = fs.FileSystem.from_uri(uri)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a URI it cannot use
        raise UserError(f"Cannot open {visible(uri)}: {storage_reason(error)}.",
                        "Check the URI and the storage credentials on this machine.") from None
    if isinstance(filesystem, fs.GcsFileSystem) and "?" not in uri:  # options in the URI: kept as written
        filesystem = fs.GcsFileSystem(retry_time_limit=datetime.timedelta(seconds=STORAGE_SECONDS))
    return filesystem, where


def storage_reason(error: BaseException) -> str:
    """Why object storage failed, in words: the cloud client's messages run to a page of retry details."""
    text = str(error)
    if "OAuth2 access token" in text:
        return "no access token could be made for it (no credentials on this machine, or no network)"
    if "Could not resolve host" in text:
        return "its host could not be reached (no network, or a wrong bucket name)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = visible(lines[0] if lines else type(error).__name__)
    first = re.split(r"(?<=\.)\s", first, maxsplit=1)[0].rstrip(".")
    return first if len(first) <= 200 else first[:200].rsplit(" ", 1)[0] + " [...]"


def list_storage_images(uris: list[str], recursive: bool) -> list[str]:
    """The image files under each URI (a file named outright counts whatever its suffix), sorted, each once.

    Each URI is listed in a daemon thread; its first answer must come within `FIRST_ANSWER_SECONDS` (a bucket's
    long listing then takes as long as it takes), and Ctrl+C stops the wait at any time.
    """
    found: list[str] = []
    for uri in uris:
        found += _listed(uri, recursive, first_answer_within=FIRST_ANSWER_SECONDS)
    return list(dict.fromkeys(found))


def _listed(uri: str, recursive: bool, *, first_answer_within: float) -> list[str]:
    news: queue.Queue[tuple[str, Any]] = queue.Queue()  # ("reached", None), then ("done", list) or ("failed", error)

    def run() -> None:
        try:
            news.put(("done", _images_under(uri, recursive, reached=lambda: news.put(("reached", None)))))
        except BaseException as error:  # noqa: BLE001 - handed to the waiting thread, which says it
            news.put(("failed", error))

    threading.Thread(target=run, name="blip2-chat-storage", daemon=True).start()
    deadline: float | None = first_answer_within
    while True:
        try:
            kind, value = news.get(timeout=deadline)
        except queue.Empty:
            raise UserError(f"Could not list {visible(uri)}: no answer within {first_answer_within:g} seconds.",
                            STORAGE_HINT) from None
        if kind == "reached":
            deadline = None  # it answers: the listing itself may be long
        elif kind == "done":
            return list(value)
        elif isinstance(value, UserError):
            raise value
        elif isinstance(value, OSError):
            raise UserError(f"Could not list {visible(uri)}: {storage_reason(value)}.", STORAGE_HINT) from None
        else:
            raise value


def _images_under(uri: str, recursive: bool, reached: Callable[[], None]) -> list[str]:
    from pyarrow import fs

    filesystem, root = _filesystem(uri)
    scheme = uri.split("://", 1)[0]
    info = filesystem.get_file_info(root)
    reached()
    if info.type == fs.FileType.File:
        return [uri]
    if info.type != fs.FileType.Directory:
        raise UserError(f"Nothing at {visible(uri)}.", "Check the URI.")
    entries = filesystem.get_file_info(fs.FileSelector(root, recursive=recursive))
    return sorted(f"{scheme}://{entry.path}" for entry in entries
                  if entry.type == fs.FileType.File and os.path.splitext(entry.path)[1].lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in entry.path[len(root):].split("/")))


def load_any(path: str) -> LoadedImage:
    """`load_image` for a local path or a storage URI (ImageError when it cannot be used)."""
    if not is_storage_uri(path):
        return load_image(path)
    data = _read_storage(path)
    with tempfile.TemporaryDirectory(prefix="blip2-chat-") as folder:
        local = os.path.join(folder, "image")
        with open(local, "wb") as handle:
            handle.write(data)
        try:
            image = load_image(local)
        except ImageError as error:
            raise ImageError(error.message.replace(visible(local), visible(path)), error.hint) from None
    return LoadedImage(image.image, image.sha256, path, image.original_size)


def sha256_any(path: str) -> str:
    """The sha256 of a local file's or a stored object's bytes ("" when it cannot be read)."""
    if not is_storage_uri(path):
        return file_sha256(path)
    try:
        return hashlib.sha256(_read_storage(path)).hexdigest()
    except ImageError:
        return ""


def _read_storage(uri: str) -> bytes:
    filesystem, where = _filesystem(uri)
    try:
        with filesystem.open_input_stream(where) as stream:
            data: bytes = stream.readall()
    except OSError as error:
        raise ImageError(f"Could not read {visible(uri)}: {storage_reason(error)}.", "Check the URI.") from None
    if not data:
        raise ImageError(f"{visible(uri)} is empty (0 bytes).", "Re-upload the image and try again.")
    return data
