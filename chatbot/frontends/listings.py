"""The listings: `blip2-chat sessions` (saved chats; `--delete ID...` deletes some) and `blip2-chat models`
(the known checkpoints, the memory each precision needs, what is cached, what fits here).

`models` answers in well under a second on a machine without a GPU: torch is imported only when this machine
has a GPU whose free memory we must ask CUDA for.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len

from chatbot.core.forget import Forgotten, forget_chats
from chatbot.core.session_listing import SessionSummary
from chatbot.core.store import SessionStore
from chatbot.core.text_width import clip_end, clip_start
from chatbot.engine.precision import (
    MEMORY_LIMIT_ENV,
    Precision,
    candidates,
    estimate_memory,
    free_memory_bytes,
    gigabytes,
    is_capped,
    triton_installed,
)
from chatbot.engine.registry import KNOWN_CHECKPOINTS, KnownCheckpoint
from chatbot.engine.shape import shape_from_config
from chatbot.untrusted import json_line, visible

GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd")  # NVIDIA and ROCm drivers; without them CUDA cannot work


@dataclass(frozen=True)
class Target:
    """The device the table is for, and what `--dtype auto` means there."""

    device: str
    auto_dtype: str
    free_bytes: int


def find_target(device: str) -> Target:
    """The device `--device` names; "auto" asks torch only when a GPU driver is present."""
    if device == "cpu" or (device == "auto" and not any(os.path.exists(f) for f in GPU_DEVICE_FILES)):
        return Target("cpu", "float32", free_memory_bytes("cpu"))
    from chatbot.engine.device_and_dtype import choose_device, choose_dtype

    chosen = choose_device(device)
    auto_dtype = str(choose_dtype("auto", chosen, "opt")).removeprefix("torch.")  # OPT's: bfloat16 or float16
    return Target(chosen, auto_dtype, free_memory_bytes(chosen))


def is_cached(hub_id: str) -> bool:
    """True when the Hugging Face cache holds a copy of the checkpoint the loader would use (complete: config,
    every safetensors shard, tokenizer and processor files); the loader's own rule, so the two never disagree."""
    from chatbot.engine.checkpoint_location import cached_checkpoint  # no torch: it never imports it

    path, problem = cached_checkpoint(hub_id)
    return path is not None and problem is None


def auto_dtype_for(known: KnownCheckpoint, target: Target) -> str:
    """What `--dtype auto` gives this checkpoint here (FlanT5 takes float32 where OPT would take float16)."""
    return "float32" if known.family == "flan-t5" and target.auto_dtype == "float16" else target.auto_dtype


def table_precisions(known: KnownCheckpoint, target: Target) -> list[Precision]:
    """The columns: full widths, then 8-bit and 4-bit with the rest in this device's auto dtype."""
    compute = auto_dtype_for(known, target)
    return [Precision("none", "float32"), Precision("none", "bfloat16"),
            Precision("8bit", compute), Precision("4bit", compute)]


def model_row(known: KnownCheckpoint, target: Target) -> dict[str, Any]:
    """One checkpoint's facts for this machine (the JSON object `--json` prints)."""
    shape = shape_from_config(known.config)
    on_gpu = target.device != "cpu"
    needs = {p.label: estimate_memory(shape, p, on_gpu).total for p in table_precisions(known, target)}
    ladder = candidates(known.family, quantize="auto", dtype="auto", auto_dtype=auto_dtype_for(known, target),
                        on_gpu=on_gpu, int8_kernel=on_gpu and triton_installed())  # as the loader decides
    fits = [p.label for p in ladder if estimate_memory(shape, p, on_gpu).total <= target.free_bytes]
    if known.family == "opt" and target.device != "cpu" and "bfloat16" in fits:
        fits.insert(fits.index("bfloat16") + 1, "float16")  # same size; FlanT5 never runs in float16
    return {
        "alias": known.alias, "hub_id": known.hub_id, "family": known.family, "params_billions": known.params_billions,
        "needs_bytes": needs, "cached": is_cached(known.hub_id), "fits": fits, "auto": fits[0] if fits else None,
    }


def render_table(rows: list[dict[str, Any]], target: Target) -> str:
    """The rows as an aligned text table with a short legend."""
    where = f"{target.device}, {gigabytes(target.free_bytes)} free"
    if is_capped(target.free_bytes):
        where += f", capped by {MEMORY_LIMIT_ENV}"
    header = ["model", "params", "float32", "bf16/fp16", "8-bit", "4-bit", "cached", f"fits here ({where})"]
    lines = [header]
    for row in rows:
        needs = row["needs_bytes"]
        fits = [f"{label} (auto)" if label == row["auto"] else label for label in row["fits"]]
        lines.append([row["alias"], f"{row['params_billions']:.2f} B",
                      *(gigabytes(needs[key]) for key in ("float32", "bfloat16", "8bit", "4bit")),
                      "yes" if row["cached"] else "no", ", ".join(fits) or "none"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    text = ["  ".join([*(cell.rjust(w) if 0 < i < 6 else cell.ljust(w)
                         for i, (cell, w) in enumerate(zip(line[:-1], widths, strict=True))), line[-1]]).rstrip()
            for line in lines]
    compute = target.auto_dtype
    text += [
        "",
        "Each alias stands for Salesforce/blip2-ALIAS (opt-2.7b = Salesforce/blip2-opt-2.7b); pass either to --model.",
        "Offline, without downloading: --model demo, a small model trained here and shipped with blip2-chat (it "
        "knows pictures of coloured shapes; `blip2-chat demo` opens a chat with it). Search has its own models: "
        "see `blip2-chat index --help`.",
        "Memory: weights + KV cache for the full context + working memory, for one answer at a time. 8-bit and "
        f"4-bit keep the Q-Former, projection and LM head in {compute}. On a GPU with Triton, 8-bit is int8 "
        "weight-only (--quantize int8: as much memory as bitsandbytes' 8-bit, much faster).",
        "FlanT5 never runs in float16 (it overflows). Set BLIP2_CHAT_MAX_MEMORY (e.g. 6GB) to plan for less.",
    ]
    if any(not row["fits"] for row in rows):
        text.append("none: not even 4-bit fits in the free memory; free some memory, choose a smaller model, "
                    "or use another --device.")
    return "\n".join(text)


def run_models(device: str = "auto", as_json: bool = False) -> int:
    """Print the table (or one JSON object per checkpoint)."""
    target = find_target(device or "auto")
    rows = [model_row(known, target) for known in KNOWN_CHECKPOINTS]
    if as_json:
        for row in rows:
            print(json_line({**row, "device": target.device, "free_bytes": target.free_bytes}))
    else:
        print(render_table(rows, target))
    sys.stdout.flush()
    return 0


def _clip(text: str, width: int, from_left: bool = False) -> str:
    """`text` on one line in at most `width` terminal cells (a CJK character takes two), cut with "…" between
    characters a reader sees as one (`chatbot.core.text_width`: never inside an emoji sequence or before an accent)."""
    text = visible(" ".join(text.split()))
    return clip_start(text, width) if from_left else clip_end(text, width)


def _pad(text: str, width: int, right: bool = False) -> str:
    """`text` padded with spaces to `width` terminal cells."""
    gap = " " * max(0, width - cell_len(text))
    return gap + text if right else text + gap


NO_QUESTIONS = "(no questions)"  # a chat whose turns were all undone: listed, but --continue passes it over


def session_rows(summaries: list[SessionSummary]) -> list[str]:
    """The `sessions` table: id, updated, turns, first question, image; newest first."""
    rows = [("ID", "UPDATED", "TURNS", "FIRST QUESTION", "IMAGE")]
    for summary in summaries:
        rows.append((
            visible(summary.id), time.strftime("%Y-%m-%d %H:%M", time.localtime(summary.updated)), str(summary.turns),
            _clip(summary.first_question, 40) if summary.turns else NO_QUESTIONS,
            _clip(summary.image, 50, from_left=True),
        ))
    width = [max(cell_len(row[column]) for row in rows) for column in range(4)]  # cells: CJK text takes two each
    return [
        "  ".join((_pad(ident, width[0]), _pad(updated, width[1]), _pad(turns, width[2], right=True),
                   _pad(question, width[3]), image)).rstrip()
        for ident, updated, turns, question, image in rows
    ]


def _count(number: int, one: str, many: str) -> str:
    return f"{number:,} {one if number == 1 else many}"


def forgotten_lines(done: Forgotten) -> list[str]:
    """What `sessions --delete` says: a line per chat deleted, then what else went with them, and what stayed."""
    lines = []
    for deleted in done.deleted:
        session = deleted.session
        if session is None:
            what = "its file was damaged" if deleted.damaged_copies == 0 else \
                _count(deleted.damaged_copies, "damaged copy", "damaged copies")
            lines.append(f"Deleted chat {visible(deleted.id)} ({what}).")
            continue
        first = next((turn.question for turn in session.turns if turn.question), "")
        about = f", first question: {_clip(first, 60)}" if first else ""
        copies = (f", and {_count(deleted.damaged_copies, 'damaged copy', 'damaged copies')} set aside earlier"
                  if deleted.damaged_copies else "")
        lines.append(f"Deleted chat {visible(deleted.id)} ({_count(len(session.turns), 'turn', 'turns')}{about})"
                     f"{copies}.")
    if done.pictures_removed:
        lines.append(f"Deleted {_count(done.pictures_removed, 'picture', 'pictures')} pasted into "
                     f"{'it' if len(done.deleted) == 1 else 'them'}.")
    if done.pictures_kept:
        them = "them" if done.pictures_kept > 1 else "it"
        lines.append(f"Kept {_count(done.pictures_kept, 'pasted picture', 'pasted pictures')}: "
                     f"{done.pictures_kept_why} {them}.")
    if done.history_kept:
        lines.append("Kept its questions in the Up arrow's line history: another chat is open, or a saved "
                     "one could not be read, and it may have asked them too.")
    if done.history_lines_removed:
        lines.append(f"Removed {_count(done.history_lines_removed, 'question', 'questions')} from the Up arrow's "
                     "line history.")
    return lines


def session_record(summary: SessionSummary) -> dict[str, Any]:
    """`sessions --json`: one saved chat as a JSON object."""
    return {"id": summary.id, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(summary.updated)),
            "turns": summary.turns, "model": summary.model, "image": summary.image,
            "first_question": summary.first_question}


def run_sessions(delete: list[str] | None = None, as_json: bool = False) -> int:
    """Print the saved sessions (`as_json`: one JSON object each); damaged files are set aside and reported on
    stderr. With `delete`, delete those chats instead (exit 2 when one of them could not be: the others are
    deleted all the same)."""
    if delete is not None:
        done = forget_chats(delete)
        for line in forgotten_lines(done):
            print(line)
        for problem in done.problems:
            print(f"blip2-chat: {visible(problem)}", file=sys.stderr)
        return 2 if done.problems else 0
    store = SessionStore()
    summaries = store.summaries()
    for problem in store.problems:
        print(f"blip2-chat: {visible(problem)}", file=sys.stderr)
    if as_json:
        for summary in summaries:
            print(json_line(session_record(summary)))
        return 0
    if not summaries:
        print(f"No saved sessions yet (they are kept in {visible(store.root)}).")
        return 0
    print("\n".join(session_rows(summaries)))
    print("\nResume one with `blip2-chat --resume ID`, the latest with `blip2-chat --continue`.", file=sys.stderr)
    return 0
