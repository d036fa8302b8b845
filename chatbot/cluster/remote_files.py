"""Files by local path or by object-storage URI (`s3://`, `gs://`, ...), read through pyarrow's filesystems.

A local path goes through `chatbot.images.load_image` exactly as on one machine. A URI's bytes are fetched
with pyarrow (which Ray Data brings) and decoded by the same function from a private temporary file, so
the checks, the pixels and the sha256 are the same; messages name the URI, not the temporary file.
(The URI path is present for clusters on object storage; the tests here run on local files.)
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Any

from chatbot.errors import ImageError, UserError
from chatbot.image_files import file_sha256, is_storage_uri
from chatbot.images import IMAGE_SUFFIXES, LoadedImage, load_image
from chatbot.untrusted import visible


def _filesystem(uri: str) -> tuple[Any, str]:
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a URI it cannot use
        raise UserError(f"Cannot open {visible(uri)}: {visible(str(error))}.",
                        "Check the URI and the storage credentials on this machine.") from None


def list_storage_images(uris: list[str], recursive: bool) -> list[str]:
    """The image files under each URI (a file named outright counts whatever its suffix), sorted, each once."""
    from pyarrow import fs

    found: list[str] = []
    for uri in uris:
        filesystem, root = _filesystem(uri)
        scheme = uri.split("://", 1)[0]
        info = filesystem.get_file_info(root)
        if info.type == fs.FileType.File:
            found.append(uri)
            continue
        if info.type != fs.FileType.Directory:
            raise UserError(f"Nothing at {visible(uri)}.", "Check the URI.")
        entries = filesystem.get_file_info(fs.FileSelector(root, recursive=recursive))
        found += sorted(f"{scheme}://{entry.path}" for entry in entries
                        if entry.type == fs.FileType.File and os.path.splitext(entry.path)[1].lower() in IMAGE_SUFFIXES
                        and not any(part.startswith(".") for part in entry.path[len(root):].split("/")))
    return list(dict.fromkeys(found))


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
        raise ImageError(f"Could not read {visible(uri)}: {visible(str(error))}.", "Check the URI.") from None
    if not data:
        raise ImageError(f"{visible(uri)} is empty (0 bytes).", "Re-upload the image and try again.")
    return data
