"""Per-turn latency of an 8-turn chat: our engine against the naive loop, side by side.

The naive loop is what LLaVA's CLI and a plain BLIP-2 script do: every turn, run the processor
and `Blip2ForConditionalGeneration.generate` on the whole folded prompt (image encoded again,
history prefilled again). Ours encodes the image once and reuses the previous turn's KV cache.
Both run in this process on the same weights, interleaved turn by turn, with fixed-length
answers (min_new_tokens = max_new_tokens); the tokens must be identical or the run fails.

    python benchmarks/bench_turns.py --quick                 # medium synthetic models, a few minutes
    python benchmarks/bench_turns.py --arch blip2-opt-2.7b   # the real dimensions (random weights)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import RESULTS, ensure_checkpoint, make_picture, synchronize, write_result  # noqa: E402

QUESTIONS = [
    "What is in the picture?", "What colour is the largest shape?", "How many circles are there?",
    "Is there anything in the top left corner?", "What is the background colour?", "Which shape is the smallest?",
    "Are any of the shapes touching?", "Describe the picture in one sentence.",
]


class FirstTokenClock:
    """A streamer for the naive path that only notes when the first new token arrives."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2 and self.first is None:  # call 1 is the prompt
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def naive_turn(engine: Any, image: Any, prompt: str, options: Any) -> dict[str, Any]:
    import torch

    started = time.perf_counter()
    inputs = engine.processor(images=image.image, text=prompt, return_tensors="pt")
    inputs = {k: v.to(engine.device) for k, v in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(engine.dtype)
    clock = FirstTokenClock()
    with torch.inference_mode():
        out = engine.model.generate(**inputs, **engine.generate_kwargs(options), streamer=clock)
    synchronize()
    total = time.perf_counter() - started
    sequence = out[0].tolist()
    tokens = sequence[1:] if engine.is_encoder_decoder else sequence[inputs["input_ids"].shape[1]:]
    return {"ttft": (clock.first or time.perf_counter()) - started, "total": total, "tokens": tokens}


def our_turn(chat: Any, question: str) -> dict[str, Any]:
    started = time.perf_counter()
    "".join(chat.ask(question))
    synchronize()
    total = time.perf_counter() - started
    stats = chat.engine.last_stats
    overhead = total - stats.seconds_total  # prompt folding and tokenizing, outside the engine's clock
    return {
        "ttft": stats.seconds_to_first_token + overhead, "total": total, "tokens": stats.token_ids,
        "prompt_tokens": stats.prompt_tokens, "reused_prefix_tokens": stats.reused_prefix_tokens,
        "image_encoded": stats.image_encoded,
    }


def answer_in_whole_words(engine: Any) -> int:
    """Let the model answer only with whole-word tokens (" cat", " red"); returns how many are allowed.

    A trained model's answers are ordinary words, which re-tokenize to the very tokens it generated,
    so the next turn's prompt shares them with the KV cache. Random weights pick byte fragments that
    re-tokenize differently, which would understate prefix reuse. Both paths get the same
    restriction (it sits in the language model's generation config), so they stay comparable.
    """
    tokenizer = engine.tokenizer
    vocab = engine.model.language_model.get_output_embeddings().weight.shape[0]
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    allowed = {i for i, piece in enumerate(pieces) if piece and piece[0] in "Ġ▁" and piece[1:].isalpha()
               and piece[1:].isascii() and len(piece) > 2}
    engine.model.language_model.generation_config.suppress_tokens = [i for i in range(vocab) if i not in allowed]
    return len(allowed)


def run(arch: str, turns: int, answer_tokens: int, device: str, dtype: str, out: Path,
        whole_words: bool = True) -> dict[str, Any]:
    from chatbot.chat import Chat
    from chatbot.engine.base import GenerationOptions
    from chatbot.engine.blip2 import open_engine

    checkpoint = ensure_checkpoint(arch, dtype="bfloat16" if arch.startswith("blip2-") else "float32")
    engine = open_engine(str(checkpoint), device=device, dtype=dtype)
    options = GenerationOptions(max_new_tokens=answer_tokens, min_new_tokens=answer_tokens)
    allowed = answer_in_whole_words(engine) if whole_words else None
    warm = Chat(engine, make_picture(seed=99), options)  # first calls pay one-off costs: keep them out
    "".join(warm.ask(QUESTIONS[0]))
    naive_turn(engine, warm.image, warm.prepare(QUESTIONS[0]).text, options)
    engine.forget()

    chat = Chat(engine, make_picture(seed=1), options)
    rows, identical = [], True
    words = f", whole-word tokens only ({allowed} allowed)" if allowed else ", any token"
    print(f"\n{arch} on {engine.info.device} ({engine.info.precision}), answers of {answer_tokens} tokens{words}")
    print(f"{'turn':>4} {'prompt':>6} {'reused':>6} | {'TTFT ours':>9} {'naive':>7} {'x':>6} | "
          f"{'total ours':>10} {'naive':>7} {'x':>5}")
    for turn in range(turns):
        question = QUESTIONS[turn % len(QUESTIONS)]
        prompt = chat.prepare(question).text  # the naive loop folds the very same history
        if turn % 2:  # alternate who goes first, so neither always meets a warmer cache
            naive = naive_turn(engine, chat.image, prompt, options)
            ours = our_turn(chat, question)
        else:
            ours = our_turn(chat, question)
            naive = naive_turn(engine, chat.image, prompt, options)
        same = ours["tokens"] == naive["tokens"]
        identical &= same
        row = {
            "turn": turn + 1, "prompt_tokens": ours["prompt_tokens"],
            "reused_prefix_tokens": ours["reused_prefix_tokens"],
            "ours_ttft": ours["ttft"], "naive_ttft": naive["ttft"], "ours_total": ours["total"],
            "naive_total": naive["total"], "identical_tokens": same, "new_tokens": len(ours["tokens"]),
        }
        rows.append(row)
        print(f"{turn + 1:>4} {row['prompt_tokens']:>6} {row['reused_prefix_tokens']:>6} | "
              f"{ours['ttft']:>9.3f} {naive['ttft']:>7.3f} {naive['ttft'] / ours['ttft']:>5.1f}x | "
              f"{ours['total']:>10.3f} {naive['total']:>7.3f} {naive['total'] / ours['total']:>4.1f}x"
              f"{'' if same else '  TOKENS DIFFER'}", flush=True)
    summary = summarize(rows)
    print("summary:", ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    name = f"turns-{arch}-{engine.info.device.split(':')[0]}-{engine.info.precision}"
    path = write_result(name, {
        "arch": arch, "device": engine.info.device, "precision": engine.info.precision, "turns": turns,
        "answer_tokens": answer_tokens, "whole_word_answers": bool(allowed), "identical_tokens": identical,
        "rows": rows, "summary": summary,
    }, out)
    print(f"wrote {path}")
    same_turns = sum(row["identical_tokens"] for row in rows)
    if not identical:
        print(f"{same_turns} of {turns} turns token-identical in {engine.info.precision}", file=sys.stderr)
    # float32 must match exactly; in 16-bit a cache-continued prefill may round differently (tests/test_gpu.py)
    return {"identical": identical or engine.info.precision != "float32", "path": path}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures the targets are stated in."""
    at = {row["turn"]: row for row in rows}
    summary: dict[str, Any] = {
        "ttft_speedup_turn_6": at[6]["naive_ttft"] / at[6]["ours_ttft"] if 6 in at else None,
        "never_slower_total": all(r["ours_total"] <= r["naive_total"] for r in rows),
        "worst_total_ratio_ours_over_naive": max(r["ours_total"] / r["naive_total"] for r in rows),
    }
    if 8 in at and 2 in at:
        summary["ours_ttft_turn8_over_turn2"] = at[8]["ours_ttft"] / at[2]["ours_ttft"]
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", action="append", help="synthetic architecture (repeatable)")
    parser.add_argument("--quick", action="store_true", help="medium-opt and medium-flan-t5: a few minutes on 2 cores")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--answer-tokens", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--any-token", action="store_true", help="answers may use any token (answer_in_whole_words)")
    args = parser.parse_args()
    archs = args.arch or (["medium-opt", "medium-flan-t5"] if args.quick else ["blip2-opt-2.7b"])
    ok = True
    for arch in archs:
        result = run(arch, args.turns, args.answer_tokens, args.device, args.dtype, args.out, not args.any_token)
        ok &= result["identical"]
    if not ok:
        print("FAILED: in float32 our tokens differ from the naive loop's", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
