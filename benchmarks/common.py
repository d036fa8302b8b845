"""What the benchmarks share: synthetic checkpoints built once, a test picture, result files.

Benchmarks are not tests: they time things, write JSON to benchmarks/results/, and print tables.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"  # synthetic checkpoints (gitignored; real dimensions take GBs)
RESULTS = ROOT / "results"


def ensure_checkpoint(arch: str, cache: Path = CACHE, dtype: str = "float32") -> Path:
    """A synthetic checkpoint of `arch`, built on first use and reused; a lock keeps two builders apart."""
    from chatbot.engine.synthetic import build_checkpoint

    cache.mkdir(parents=True, exist_ok=True)
    folder = cache / f"{arch}-{dtype}"
    with open(cache / f".{arch}-{dtype}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".complete").exists():
            print(f"building synthetic {arch} ({dtype}) into {folder} ...", flush=True)
            started = time.perf_counter()
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
            build_checkpoint(arch, folder, save_dtype=dtype, build_device=device)
            (folder / ".complete").write_text(f"{time.perf_counter() - started:.1f} s\n")
    return folder


def make_picture(seed: int = 0, size: tuple[int, int] = (640, 480)) -> Any:
    """A LoadedImage of a generated picture (shapes and a gradient), different per seed."""
    import hashlib
    import io
    import random

    from PIL import Image, ImageDraw

    from chatbot.images import LoadedImage

    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))  # type: ignore[arg-type]
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        draw.ellipse((x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 200)),
                     fill=tuple(rng.randrange(256) for _ in range(3)))  # type: ignore[arg-type]
    data = io.BytesIO()
    image.save(data, "PNG")
    return LoadedImage(image, hashlib.sha256(data.getvalue()).hexdigest(), f"<generated picture {seed}>", size)


def machine() -> dict[str, Any]:
    """What ran the benchmark, recorded beside every result."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    import transformers

    info["transformers"] = transformers.__version__
    return info


def write_result(name: str, payload: dict[str, Any], out: Path = RESULTS) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    payload = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=1))
    return path


def synchronize() -> None:
    """Wait for queued GPU work so wall-clock timings are honest."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
