"""What restricting the answers' tokens costs a `generate` call: a long `suppress_tokens` list against a processor.

bench_turns.py restricts answers to whole-word tokens (random weights would otherwise answer in byte
fragments that do not re-tokenize to themselves). Earlier runs did it through the language model's
`generate_config.suppress_tokens`, a list of every other id: about 50,000 at OPT-2.7B's vocabulary.
`generate` deep-copies its config on every call and builds a tensor of that list, and on every token
`SuppressTokensLogitsProcessor` runs a `torch.isin` against it. This times one `generate` call of the
language model three ways, interleaved round by round on the same inputs: no restriction (what a trained
model's config costs), the long `suppress_tokens` list, and bench_turns' `WholeWordsOnly` processor
(a precomputed mask, one masked fill a token). The model is small on purpose, so that the call's own
host work, not the model's arithmetic, is what the times show.

    python benchmarks/bench_generate_setup.py                       # tiny OPT, a 50,000-id list
    python benchmarks/bench_generate_setup.py --arch medium-opt --tokens 16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import RESULTS, ensure_checkpoint, synchronize, write_result  # noqa: E402

OPT_27B_SUPPRESSED = 50_000  # about how many ids the whole-word restriction suppressed at OPT-2.7B's vocabulary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny-opt")
    parser.add_argument("--suppressed", type=int, default=OPT_27B_SUPPRESSED,
                        help="length of the suppress_tokens list (ids past the model's vocabulary suppress nothing, "
                             "but cost the same to copy)")
    parser.add_argument("--tokens", type=int, default=1, help="new tokens per call (1: the first token only)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch
    from transformers import LogitsProcessorList

    from benchmarks.bench_turns import WholeWordsOnly
    from chatbot.engine.blip2 import open_engine

    engine = open_engine(str(ensure_checkpoint(args.arch)), static_decoding=False)
    model = engine.model.language_model
    vocab = model.get_output_embeddings().weight.shape[0]
    allowed = torch.zeros(vocab, dtype=torch.bool, device=engine.device)
    allowed[::2] = True  # which tokens does not matter here, only what the restriction costs
    suppressed = [i for i in range(args.suppressed + vocab // 2) if i >= vocab or not allowed[i]][:args.suppressed]
    input_ids = torch.tensor([engine.input_ids("Question: What is in the picture? Answer:")], device=engine.device)
    plain = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens, "do_sample": False}

    def call(kind: str) -> float:
        model.generation_config.suppress_tokens = suppressed if kind == "suppress_tokens" else None
        extra = {"logits_processor": LogitsProcessorList([WholeWordsOnly(allowed)])} if kind == "processor" else {}
        synchronize()
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(input_ids=input_ids, **plain, **extra)
        synchronize()
        return time.perf_counter() - started

    kinds = ("none", "suppress_tokens", "processor")
    for kind in kinds:  # first calls pay one-off costs
        call(kind)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.rounds):
        for kind in kinds:
            times[kind].append(call(kind))
    model.generation_config.suppress_tokens = None
    medians = {kind: statistics.median(values) * 1e3 for kind, values in times.items()}
    print(f"{args.arch} on {engine.info.device}: one generate call of {args.tokens} new token(s), "
          f"median of {args.rounds} interleaved rounds")
    for kind in kinds:
        note = f" ({args.suppressed} ids)" if kind == "suppress_tokens" else ""
        print(f"  {kind + note:<32} {medians[kind]:8.2f} ms   (+{medians[kind] - medians['none']:.2f} ms)")
    path = write_result(f"generate-setup-{args.arch}-{engine.info.device.split(':')[0]}-{args.tokens}-tokens", {
        "arch": args.arch, "device": engine.info.device, "tokens": args.tokens, "rounds": args.rounds,
        "suppressed_ids": args.suppressed, "median_ms": medians,
        "times_ms": {kind: [round(t * 1e3, 3) for t in values] for kind, values in times.items()},
    }, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
