"""Per-turn latency of an 8-turn chat: our engine against the naive loop, side by side.

The naive loop is what LLaVA's CLI and a plain BLIP-2 script do: every turn, run the processor
and `Blip2ForConditionalGeneration.generate` on the whole folded prompt (image encoded again,
history prefilled again). Ours encodes the image once and reuses the previous turn's KV cache.
Both run in this process on the same weights, interleaved turn by turn, with fixed-length
answers (min_new_tokens = max_new_tokens); the tokens must be identical or the run fails.

    python benchmarks/bench_turns.py --quick                 # medium synthetic models, a few minutes
    python benchmarks/bench_turns.py --arch blip2-opt-2.7b   # the real dimensions (random weights)
    python benchmarks/bench_turns.py --arch blip2-opt-2.7b --conversations 2   # per-turn medians
    python benchmarks/bench_turns.py --arch blip2-opt-2.7b --think-ahead 5     # the person takes 5 s to ask
    python benchmarks/bench_turns.py --arch blip2-opt-2.7b --turns 1 --conversations 8   # turn 1 only, 8 times
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


class WholeWordsOnly:
    """A logits processor that leaves only the allowed tokens: one masked fill a step, nothing per turn."""

    def __init__(self, allowed: Any) -> None:
        self.blocked = ~allowed  # a bool mask over the vocabulary, on the model's device

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        return scores.masked_fill(self.blocked, float("-inf"))


def answer_in_whole_words(engine: Any) -> int:
    """Let the model answer only with whole-word tokens (" cat", " red"); returns how many are allowed.

    A trained model's answers are ordinary words, which re-tokenize to the very tokens it generated,
    so the next turn's prompt shares them with the KV cache. Random weights pick byte fragments that
    re-tokenize differently, which would understate prefix reuse. Both paths get the same
    restriction (every `generate` call of this engine, ours and the naive loop's, gets the processor),
    so they stay comparable.

    The restriction must cost what a trained model's generation config costs: nothing. The language
    model's `suppress_tokens` (which runs before 2026-11-30 14:00 used) held the ~50,000 other ids of a
    real vocabulary, and `generate` deep-copies its config on every call: 30-45 ms of host time per
    turn on the 2-core CPU, on both sides, and on every token a `torch.isin` against the list
    (benchmarks/bench_generate_setup.py; tests/test_bench_turns.py checks the two restrict alike).
    """
    import torch
    from transformers import LogitsProcessorList

    tokenizer = engine.tokenizer
    vocab = engine.model.language_model.get_output_embeddings().weight.shape[0]
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    allowed = [i for i, piece in enumerate(pieces) if piece and piece[0] in "Ġ▁" and piece[1:].isalpha()
               and piece[1:].isascii() and len(piece) > 2]
    mask = torch.zeros(vocab, dtype=torch.bool, device=engine.device)
    mask[allowed] = True
    restriction = WholeWordsOnly(mask)
    plain_kwargs = engine.generate_kwargs

    def generate_kwargs(options: Any) -> dict[str, Any]:
        return {**plain_kwargs(options), "logits_processor": LogitsProcessorList([restriction])}

    engine.generate_kwargs = generate_kwargs
    return len(allowed)


def run(arch: str, turns: int, answer_tokens: int, device: str, dtype: str, out: Path,
        whole_words: bool = True, conversations: int = 1, pause: float | None = None) -> dict[str, Any]:
    from chatbot.engine.blip2 import open_engine

    checkpoint = ensure_checkpoint(arch, dtype="bfloat16" if arch.startswith("blip2-") else "float32")
    engine = open_engine(str(checkpoint), device=device, dtype=dtype)
    from chatbot.core.conversation import Conversation
    from chatbot.engine.base import GenerationOptions

    options = GenerationOptions(max_new_tokens=answer_tokens, min_new_tokens=answer_tokens)
    allowed = answer_in_whole_words(engine) if whole_words else None
    warm = Conversation.with_engine(engine, make_picture(seed=99), options)  # first calls pay one-off costs
    "".join(warm.ask(QUESTIONS[0]))
    naive_turn(engine, warm.image, warm.prepare(QUESTIONS[0]).text, options)
    words = f", whole-word tokens only ({allowed} allowed)" if allowed else ", any token"
    print(f"\n{arch} on {engine.info.device} ({engine.info.precision}, decoding with {engine.decoding}), "
          f"answers of {answer_tokens} tokens{words}")
    if pause is not None:
        print(f"thinking ahead: the person takes {pause:g} s to read each answer and type the next question")
    runs = [converse(engine, options, turns, seed=1 + n, pause=pause) for n in range(conversations)]
    rows = [median_row([run[turn] for run in runs]) for turn in range(turns)]
    identical = all(row["identical_tokens"] for row in rows)
    if conversations > 1:
        print(f"median of {conversations} conversations (each about its own picture):")
        print_header()
        for row in rows:
            print_row(row)
    summary = summarize(rows)
    print("summary:", ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    name = f"turns-{arch}-{engine.info.device.split(':')[0]}-{engine.info.precision}"
    name += ("" if pause is None else "-ahead") + ("-turn1" if turns == 1 else "")
    path = write_result(name, {
        "arch": arch, "device": engine.info.device, "precision": engine.info.precision, "turns": turns,
        "think_ahead_pause": pause, "decoding": engine.decoding,
        "answer_tokens": answer_tokens, "whole_word_answers": bool(allowed), "identical_tokens": identical,
        "conversations": conversations, "rows": rows, "summary": summary, "runs": runs,
    }, out)
    print(f"wrote {path}")
    same_turns = sum(row["identical_tokens"] for run in runs for row in run)
    if not identical:
        print(f"{same_turns} of {turns * conversations} turns token-identical in {engine.info.precision}",
              file=sys.stderr)
    # float32 must match exactly; in 16-bit a cache-continued prefill may round differently (tests/test_gpu.py)
    return {"identical": identical or engine.info.precision != "float32", "path": path}


def converse(engine: Any, options: Any, turns: int, seed: int, pause: float | None = None) -> list[dict[str, Any]]:
    """One chat of `turns` questions about a fresh picture, each turn ours and naive, interleaved.

    With `pause` (seconds the person takes before each question), our chat thinks ahead: the engine
    prepares the next prompt's opening in the background. That work is waited for right away, so
    it never overlaps a timed turn, and whatever part of it outlasts the pause is added to our next
    time to first token, as the person would have waited for it.
    """
    from chatbot.core.conversation import Conversation

    engine.forget()
    chat = Conversation.with_engine(engine, make_picture(seed=seed), options, think_ahead=pause is not None)
    ahead = engine.wait_until_prepared() if pause is not None else 0.0
    rows = []
    print_header()
    for turn in range(turns):
        question = QUESTIONS[turn % len(QUESTIONS)]
        prompt = chat.prepare(question).text  # the naive loop folds the very same history
        naive_first = (turn + seed) % 2 == 0  # alternating, across chats too: neither always meets a warmer cache
        if naive_first:
            naive = naive_turn(engine, chat.image, prompt, options)
        ours = our_turn(chat, question)
        if pause is not None:
            late = max(0.0, ahead - pause)  # the person asked before the background work was done
            ours["ttft"] += late
            ours["total"] += late
            ahead_before, ahead = ahead, engine.wait_until_prepared()
        if not naive_first:
            naive = naive_turn(engine, chat.image, prompt, options)
        row = {
            "turn": turn + 1, "prompt_tokens": ours["prompt_tokens"],
            "reused_prefix_tokens": ours["reused_prefix_tokens"],
            "ours_ttft": ours["ttft"], "naive_ttft": naive["ttft"], "ours_total": ours["total"],
            "naive_total": naive["total"], "identical_tokens": ours["tokens"] == naive["tokens"],
            "new_tokens": len(ours["tokens"]),
        }
        if pause is not None:
            row["prepared_ahead_seconds"] = ahead_before
        rows.append(row)
        print_row(row)
    return rows


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One turn over several conversations: the median of each timing, token counts of the first."""
    import statistics

    row = dict(rows[0])
    for key in ("ours_ttft", "naive_ttft", "ours_total", "naive_total", "prepared_ahead_seconds"):
        if key in row:
            row[key] = statistics.median(r[key] for r in rows)
    row["identical_tokens"] = all(r["identical_tokens"] for r in rows)
    return row


def print_header() -> None:
    print(f"{'turn':>4} {'prompt':>6} {'reused':>6} | {'TTFT ours':>9} {'naive':>7} {'x':>6} | "
          f"{'total ours':>10} {'naive':>7} {'x':>5}")


def print_row(row: dict[str, Any]) -> None:
    print(f"{row['turn']:>4} {row['prompt_tokens']:>6} {row['reused_prefix_tokens']:>6} | "
          f"{row['ours_ttft']:>9.3f} {row['naive_ttft']:>7.3f} {row['naive_ttft'] / row['ours_ttft']:>5.1f}x | "
          f"{row['ours_total']:>10.3f} {row['naive_total']:>7.3f} {row['naive_total'] / row['ours_total']:>4.1f}x"
          + (f" | ahead {row['prepared_ahead_seconds']:.3f}" if "prepared_ahead_seconds" in row else "")
          + f"{'' if row['identical_tokens'] else '  TOKENS DIFFER'}", flush=True)


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
    parser.add_argument("--conversations", type=int, default=1,
                        help="chats to run (each about its own picture); the table gives per-turn medians")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--any-token", action="store_true", help="answers may use any token (answer_in_whole_words)")
    parser.add_argument("--think-ahead", type=float, metavar="SECONDS",
                        help="our chat prepares the next prompt while the person takes SECONDS to ask")
    args = parser.parse_args()
    archs = args.arch or (["medium-opt", "medium-flan-t5"] if args.quick else ["blip2-opt-2.7b"])
    ok = True
    for arch in archs:
        result = run(arch, args.turns, args.answer_tokens, args.device, args.dtype, args.out, not args.any_token,
                     args.conversations, args.think_ahead)
        ok &= result["identical"]
    if not ok:
        print("FAILED: in float32 our tokens differ from the naive loop's", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
