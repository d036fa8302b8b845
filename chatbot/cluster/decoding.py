"""The pipeline's first stage, run as Ray tasks across the cluster: read, hash and decode each file.

A batch of paths becomes columns: the sha256, the error sentence (or ""), and the decoded RGB pixels with
their size, which the model actors turn back into exactly the picture `load_image` made on the worker.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from chatbot.cluster.remote_files import load_any, sha256_any
from chatbot.errors import ImageError
from chatbot.images import LoadedImage

Batch = dict[str, Any]  # Ray Data's "numpy" batch: column name -> array


def decode_batch(batch: Batch) -> Batch:
    """Read and decode every path of the batch; an unreadable one gets its error sentence and no pixels."""
    paths = [str(path) for path in batch["path"]]
    columns: dict[str, list[Any]] = {name: [] for name in ("sha256", "error", "pixels", "width", "height",
                                                           "original_width", "original_height")}
    for path in paths:
        try:
            image = load_any(path)
        except ImageError as error:
            values: tuple[Any, ...] = (sha256_any(path), str(error), b"", 0, 0, 0, 0)
        else:
            rgb = image.image.convert("RGB")
            values = (image.sha256, "", rgb.tobytes(), rgb.width, rgb.height, *image.original_size)
        for name, value in zip(columns, values, strict=True):
            columns[name].append(value)
    out: Batch = {"path": np.array(paths, dtype=object)}
    for name, column in columns.items():
        out[name] = np.array(column, dtype=object if name in ("sha256", "error", "pixels") else np.int64)
    return out


def pictures_of(batch: Batch) -> tuple[list[int], list[LoadedImage]]:
    """The rows of a decoded batch that have a picture (their positions), rebuilt as `LoadedImage`s."""
    rows = [i for i, error in enumerate(batch["error"]) if not error]
    images = [LoadedImage(Image.frombytes("RGB", (int(batch["width"][i]), int(batch["height"][i])),
                                          bytes(batch["pixels"][i])),
                          str(batch["sha256"][i]), str(batch["path"][i]),
                          (int(batch["original_width"][i]), int(batch["original_height"][i])))
              for i in rows]
    return rows, images
