"""Load time, peak memory, time to first token and decode speed for each precision, on this machine.

Each precision runs in its own process, one after the other, so peak memory is that precision's
alone. A precision the loader's memory check refuses is recorded as skipped, with its sentence.
Synthetic checkpoints (random weights, the real dimensions) are built once into benchmarks/.cache/.

    python benchmarks/bench_precision.py --arch blip2-opt-2.7b --out benchmarks/results   # real dimensions
    python benchmarks/bench_precision.py --quick                   # medium-opt + medium-flan-t5, minutes

`8bit-t0` is a study variant, not an option: bitsandbytes 8-bit with its outlier threshold at 0 (no
outlier columns split off; every product int8). Where the bfloat16 row ran first, every other row
also gets its logits' error against bfloat16's and how often their top-1 tokens agree (teacher-forced
over a fixed prompt, as bench_unquantized_modules.py does).

Results: benchmarks/results/precision-<device>-<arch>.json, and the "## Precision" section of
docs/benchmarks.md is rebuilt from every such file present (so CPU and GPU tables sit side by side).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import RESULTS, ensure_checkpoint, make_picture, synchronize, write_result  # noqa: E402
from benchmarks.precision_report import update_docs  # noqa: E402

QUESTIONS = ["What is in the picture?", "What colour is the largest shape?"]
GPU_PRECISIONS = ["bfloat16", "float32", "float16", "int8", "8bit", "8bit-t0", "4bit"]
CPU_PRECISIONS = ["float32", "bfloat16", "8bit", "4bit"]  # float16 matmuls are slow on CPUs and save nothing


QUALITY_PROMPT = ("Question: what is in the picture? Answer: a cat sits on the table. Question: what colour is it? "
                  "Answer: it is black and white.")


def measure(checkpoint: Path, precision: str, device: str, new_tokens: int, logits_dir: Path | None) -> dict[str, Any]:
    """In a fresh process: load in `precision`, answer two questions, report times and memory."""
    import torch

    from chatbot.core.conversation import Conversation
    from chatbot.engine.base import GenerationOptions
    from chatbot.engine.blip2 import Blip2Engine
    from chatbot.engine.loader import load_checkpoint
    from chatbot.errors import UserError

    if precision == "8bit-t0":  # the study variant: bitsandbytes 8-bit without outlier columns
        import chatbot.engine.loader as loader_module

        default_config = loader_module.bitsandbytes_config

        def without_outliers(*args: Any) -> Any:
            config = default_config(*args)
            config.llm_int8_threshold = 0.0
            return config

        loader_module.bitsandbytes_config = without_outliers  # type: ignore[assignment]
    quantize, dtype = ((precision.split("-")[0], "auto") if precision.endswith(("bit", "t0")) or precision == "int8"
                       else ("none", precision))
    baseline_rss = _anonymous_rss()  # Python and torch, before transformers and the model
    anonymous = PeakAnonymousMemory()
    anonymous.start()
    notes: list[str] = []
    started = time.perf_counter()
    try:
        loaded = load_checkpoint(str(checkpoint), device=device, dtype=dtype, quantize=quantize, progress=notes.append)
    except UserError as error:  # the memory check said no, or bitsandbytes cannot run here
        return {"precision": precision, "skipped": str(error)}
    synchronize()
    load_seconds = time.perf_counter() - started
    engine = Blip2Engine(loaded)  # on a GPU this captures the decode step as a CUDA graph (not counted as loading)
    if engine.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    options = GenerationOptions(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    chat = Conversation.with_engine(engine, make_picture(seed=1), options)
    turns = []
    for question in QUESTIONS:  # turn 1 encodes the image; turn 2 is a follow-up on the cached image
        turn_started = time.perf_counter()
        "".join(chat.ask(question))
        synchronize()
        stats = engine.last_stats
        overhead = time.perf_counter() - turn_started - stats.seconds_total
        turns.append({"ttft": stats.seconds_to_first_token + overhead, "tokens_per_second": stats.tokens_per_second,
                      "new_tokens": stats.new_tokens, "image_encoded": stats.image_encoded})
    from chatbot.engine.precision import Precision, estimate_memory
    from chatbot.engine.shape import read_shape

    compute = str(engine.dtype).removeprefix("torch.")
    estimate = estimate_memory(read_shape(checkpoint), Precision(quantize, compute), engine.device.type == "cuda")
    result = {
        "estimate_bytes": estimate.total, "estimate_weights_bytes": estimate.weights, "decoding": engine.decoding,
        "precision": precision, "compute_dtype": str(engine.dtype).removeprefix("torch."),
        "device": loaded.device, "reason": loaded.precision_reason, "load_seconds": load_seconds,
        "footprint_bytes": int(engine.model.get_memory_footprint()), "new_tokens": new_tokens,
        "ttft_new_image": turns[0]["ttft"], "ttft_follow_up": turns[1]["ttft"],
        "tokens_per_second": turns[1]["tokens_per_second"], "turns": turns,
    }
    if engine.device.type == "cuda":
        result["peak_bytes"] = int(torch.cuda.max_memory_allocated(engine.device))
        result["peak_kind"] = "torch.cuda.max_memory_allocated (after loading: weights + answering)"
    else:
        result["peak_bytes"] = anonymous.stop()
        result["peak_rss_bytes"] = _peak_rss()
        result["baseline_rss_bytes"] = baseline_rss
        result["peak_kind"] = ("peak anonymous RSS of the process: Python, torch and the model, loading included; "
                               "not the checkpoint's file pages, which the kernel can drop")
    if logits_dir is not None:
        result.update(_quality(engine, precision, logits_dir))
    return result


def _quality(engine: Any, precision: str, logits_dir: Path) -> dict[str, Any]:
    """Teacher-forced logits over QUALITY_PROMPT, saved; compared with bfloat16's where that row ran first."""
    import torch

    inputs = engine.processor(images=make_picture(seed=3).image, text=QUALITY_PROMPT, return_tensors="pt")
    inputs = {key: value.to(engine.device) for key, value in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(engine.dtype)
    if engine.is_encoder_decoder:
        inputs["decoder_input_ids"] = inputs["input_ids"][:, -12:]
    with torch.inference_mode():
        logits = engine.model(**inputs).logits.float().cpu()
    torch.save(logits, logits_dir / f"{precision}.pt")
    reference = logits_dir / "bfloat16.pt"
    if precision == "bfloat16" or not reference.exists():
        return {}
    expected = torch.load(reference)
    return {"logit_error_vs_bfloat16": float((logits - expected).norm() / expected.norm()),
            "top1_vs_bfloat16": float((logits.argmax(-1) == expected.argmax(-1)).float().mean())}


def _peak_rss() -> int:
    """VmHWM: this process's peak RSS (ru_maxrss would start from the parent's peak after fork)."""
    return _status_bytes("VmHWM:")


class PeakAnonymousMemory(threading.Thread):
    """Samples RssAnon every few ms: memory the process really holds, unlike RSS, which also counts the
    memory-mapped checkpoint's file pages (page cache the kernel can reclaim)."""

    def __init__(self, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self._done = interval, 0, threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, _anonymous_rss())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak, _anonymous_rss())


def _anonymous_rss() -> int:
    return _status_bytes("RssAnon:")


def _status_bytes(field: str) -> int:
    """A kB field of /proc/self/status in bytes (0 where there is no /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024 if field == "VmHWM:" else 0


def run_arch(arch: str, precisions: list[str] | None, device: str, new_tokens: int, out: Path,
             timeout: float) -> Path:
    """Every precision of one architecture, each in a child process; writes the JSON result."""
    import tempfile

    target = _resolve_device(device)
    logits_dir = Path(tempfile.mkdtemp(prefix="precision-logits-"))
    checkpoint = _build(arch, target)
    from chatbot.engine.synthetic import ARCHITECTURES

    wanted = precisions or (GPU_PRECISIONS if target.startswith("cuda") else CPU_PRECISIONS)
    if ARCHITECTURES[arch].family == "flan-t5":
        wanted = [p for p in wanted if p != "float16"]  # FlanT5 overflows in float16; the loader refuses it
    rows: list[dict[str, Any]] = []
    path = out
    for precision in wanted:
        print(f"{arch} {precision} on {target} ...", flush=True)
        row = _child(checkpoint, precision, target, new_tokens, timeout, logits_dir)
        rows.append(row)
        print("   ", _summary(row), flush=True)
        # written after every precision, so a run cut short keeps what it measured
        path = write_result(f"precision-{target.split(':')[0]}-{arch}", {"arch": arch, "device": target, "rows": rows},
                            out)
    return path


def _build(arch: str, device: str) -> Path:
    """The synthetic checkpoint (real dimensions saved in bfloat16); on a GPU its random weights are drawn there."""
    dtype = "bfloat16" if arch.startswith("blip2-") else "float32"
    if device.startswith("cuda"):
        import torch

        try:
            with torch.device(device):  # minutes of random-number drawing on a CPU, seconds on a GPU
                return ensure_checkpoint(arch, dtype=dtype)
        except Exception as error:  # noqa: BLE001 - fall back to the CPU build, which always works
            print(f"building on {device} failed ({error}); building on the CPU", flush=True)
    return ensure_checkpoint(arch, dtype=dtype)


def _child(checkpoint: Path, precision: str, device: str, new_tokens: int, timeout: float,
           logits_dir: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", str(checkpoint), "--precision", precision, "--device", device,
               "--new-tokens", str(new_tokens), "--logits-dir", str(logits_dir)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"precision": precision, "skipped": f"did not finish within {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"precision": precision, "skipped": f"failed: {tail}"}
    return dict(json.loads(lines[-1]))


def _resolve_device(device: str) -> str:
    from chatbot.engine.device_and_dtype import choose_device

    return choose_device(device)


def _summary(row: dict[str, Any]) -> str:
    if "skipped" in row:
        return f"skipped: {row['skipped']}"
    quality = (f", logits vs bfloat16: error {row['logit_error_vs_bfloat16']:.4f}, top-1 {row['top1_vs_bfloat16']:.2f}"
               if "logit_error_vs_bfloat16" in row else "")
    return (f"load {row['load_seconds']:.1f} s, peak {row['peak_bytes'] / 1e9:.2f} GB, footprint "
            f"{row['footprint_bytes'] / 1e9:.2f} GB, TTFT {row['ttft_new_image']:.2f} s (new image) / "
            f"{row['ttft_follow_up']:.2f} s, {row['tokens_per_second']:.2f} tok/s ({row['decoding']}){quality}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", action="append", help="synthetic architecture (repeatable; default blip2-opt-2.7b)")
    parser.add_argument("--quick", action="store_true", help="medium-opt and medium-flan-t5 (labelled as such)")
    parser.add_argument("--precision", action="append",
                        help="float32, bfloat16, float16, int8, 8bit, 8bit-t0, 4bit (repeatable)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--new-tokens", type=int, default=8, help="answer length, fixed (min = max)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one precision may take")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--docs", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # internal: one precision, JSON on stdout
    parser.add_argument("--logits-dir", type=Path, help=argparse.SUPPRESS)  # internal: where children leave logits
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.precision[0], args.device, args.new_tokens, args.logits_dir)),
              flush=True)
        return 0
    archs = args.arch or (["medium-opt", "medium-flan-t5"] if args.quick else ["blip2-opt-2.7b"])
    for arch in archs:
        print(f"wrote {run_arch(arch, args.precision, args.device, args.new_tokens, args.out, args.timeout)}")
    print(f"updated {update_docs(args.out, args.docs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
