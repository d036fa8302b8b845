"""What both demo trainers (`run.py`, the chat model; `retrieval_run.py`, the search model) share: their
common flags, the start of a run (seeds, device), the learning-rate schedule, saving a checkpoint, and the
end of a run (the training log and the model card beside the weights)."""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from chatbot.demo.card import SCORES_FILE

Arch = TypeVar("Arch")


def add_run_arguments(parser: argparse.ArgumentParser, *, out: Path, steps: int, batch: int, batch_help: str,
                      warmup: int, arch_example: str) -> None:
    """The flags every demo trainer takes, with this trainer's defaults."""
    parser.add_argument("--out", type=Path, default=out, help="checkpoint folder to write")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch", type=int, default=batch, help=batch_help)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--grounding", type=float, default=1.0, help="weight of the training-only grounding loss")
    parser.add_argument("--arch", default="", help=f"changed dimensions as JSON, e.g. '{arch_example}'")


def refuse_installed_weights(parser: argparse.ArgumentParser, out: Path, shipped: Path,
                             checkout: Path | None = None) -> None:
    """Training into the shipped weights' folder retrains the demo for everyone who uses this copy of the
    package: in a source checkout (`checkout` holds pyproject.toml) that is how the shipped weights are made, but
    in an installed package it would silently replace the model `--model demo` loads. There, --out is needed."""
    checkout = checkout or Path(__file__).resolve().parents[3]  # chatbot/demo/training/ -> the project's root
    if out.resolve() == shipped.resolve() and not (checkout / "pyproject.toml").is_file():
        parser.error(f"--out is needed: without it the run would replace the installed demo model in {shipped} "
                     "(e.g. --out ./my-demo, then --model ./my-demo)")


def arch_and_threads(args: argparse.Namespace, default: Arch) -> Arch:
    """The dimensions --arch asks for (over `default`), after setting torch's threads to --threads (if given)."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return replace(default, **json.loads(args.arch)) if args.arch else default  # type: ignore[type-var]


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that asked for this run, for the model card."""
    return " ".join([f"python -m {module}", *(sys.argv[1:] if argv is None else argv)])


def start_run(seed: int) -> str:
    """Quiet transformers, seed Python's and torch's generators, and return the device to train on (a GPU
    when one is usable)."""
    import torch

    from chatbot.engine.loader import quiet_transformers

    quiet_transformers()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    random.seed(seed)
    torch.manual_seed(seed)
    return device


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak`, then a cosine down to a tenth of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(model: Any, processor: Any, folder: Path, dtype: str) -> None:
    """The weights in `dtype` (a copy: training goes on in float32) and the processor, as a checkpoint folder."""
    import copy

    import torch

    folder.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(model).to("cpu", getattr(torch, dtype)).save_pretrained(folder)
    processor.save_pretrained(folder)
    for path in folder.iterdir():  # package data: readable by everyone (safetensors writes its file 0600)
        if path.is_file():
            path.chmod(0o644)


def finish_run(out_dir: Path, record: dict[str, Any], write_card: Callable[[Path], Path]) -> dict[str, Any]:
    """Write the run's `record` beside the weights as training_log.json, drop the held-out scores of earlier
    weights, and (re)write the model card; return `record`."""
    (out_dir / "training_log.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    (out_dir / SCORES_FILE).unlink(missing_ok=True)  # scores of earlier weights no longer hold
    write_card(out_dir)
    return record


def say_trained(record: dict[str, Any], out_dir: Path) -> None:
    """The line a trainer ends with: what it trained, how long it took, where it saved it."""
    print(f"trained {record['parameters']:,} parameters in {record['seconds']:.0f} s on {record['device']}; "
          f"saved to {out_dir}")
