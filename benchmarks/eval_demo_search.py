"""Scores of the demo retrieval model on held-out pictures, through the engine `search` uses.

    python -m benchmarks.eval_demo_search [--model chatbot/demo/weights/search] [--gallery 500]

The model is loaded with `open_retrieval_engine` like any retrieval checkpoint, and every score comes from
`RetrievalEngine` (no training-loop forward): a gallery of held-out pictures (seeds from
HELD_OUT_START + 10^6, apart from `benchmarks/eval_demo.py`'s and the training curve's) is embedded once,
each query is ranked by ITC (exact MaxSim, as the index does), and the best `--rerank` are re-scored by the
ITM head, as `search` does by default.

- Captions: every gallery picture's caption is a query. A hit is a picture whose caption equals the query:
  two gallery pictures can share a caption (a caption does not say which row two shapes share, nor which
  cell of three is empty), so some queries are ambiguous; their count is reported, and any of their
  pictures counts.
- Short queries ("a red circle", "three shapes", drawn like the training ones from gallery pictures): the
  share of the top results the text is true of (`chatbot.demo.search_queries.Query.holds`).

Results go to benchmarks/results/eval_demo_search.json, and beside the weights for the model card.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import RESULTS  # noqa: E402

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "chatbot" / "demo" / "weights" / "search"
GALLERY_OFFSET = 10**6  # the gallery's first seed is HELD_OUT_START + this (eval_demo.py uses the first few hundred)
SHORT_SEED = 15  # draws the short queries


def _percent(right: float, total: int) -> float:
    return round(100.0 * right / total, 1) if total else 0.0


def ranked(engine: Any, pictures: Sequence[Any], scores: Any, text: str, rerank: int) -> tuple[list[int], list[int]]:
    """The gallery's order for one query by ITC, and with its best `rerank` re-ordered by the ITM head."""
    import numpy as np

    by_similarity = [int(i) for i in np.argsort(-scores, kind="stable")]
    top = by_similarity[:rerank]
    match = engine.match_probabilities([pictures[i] for i in top], text)
    by_match = [top[i] for i in np.argsort(-match, kind="stable")] + by_similarity[rerank:]
    return by_similarity, by_match


def score_queries(engine: Any, pictures: Sequence[Any], image_embeds: Any, texts: Sequence[str],
                  is_hit: Callable[[int, int], bool], rerank: int) -> dict[str, dict[str, float]]:
    """Hits at 1 and the share of hits in the top 5, by ITC alone and after ITM, over `texts`."""
    from chatbot.engine.retrieval import itc_scores

    text_embeds = engine.text_embeddings(list(texts))
    scores = itc_scores(image_embeds, text_embeds)  # [pictures, texts]
    out: dict[str, dict[str, float]] = {name: {"at_1": 0, "any_5": 0, "share_5": 0.0} for name in ("itc", "itm")}
    for query, text in enumerate(texts):
        orders = ranked(engine, pictures, scores[:, query], text, rerank)
        for name, order in zip(("itc", "itm"), orders, strict=True):
            hits = [is_hit(query, picture) for picture in order[:5]]
            out[name]["at_1"] += hits[0]
            out[name]["any_5"] += any(hits)
            out[name]["share_5"] += sum(hits) / 5
    return {name: {"hit_at_1": _percent(c["at_1"], len(texts)), "any_in_5": _percent(c["any_5"], len(texts)),
                   "share_of_5": _percent(c["share_5"], len(texts))} for name, c in out.items()}


def evaluate(model: str, gallery: int, short: int, rerank: int) -> dict[str, Any]:
    from chatbot.demo.examples import HELD_OUT_START, held_out_scenes
    from chatbot.demo.search_queries import short_query
    from chatbot.demo.world import caption, loaded_picture
    from chatbot.engine.retrieval import open_retrieval_engine

    started = time.perf_counter()
    engine = open_retrieval_engine(model, device="cpu")
    first = HELD_OUT_START + GALLERY_OFFSET
    scenes = held_out_scenes(gallery, start=first)
    pictures = [loaded_picture(scene) for scene in scenes]
    image_embeds = engine.image_embeddings(pictures)
    captions = [caption(scene) for scene in scenes]
    shared = Counter(captions)
    by_caption = score_queries(engine, pictures, image_embeds, captions,
                               lambda query, picture: captions[picture] == captions[query], rerank)
    rng = random.Random(SHORT_SEED)
    queries = [short_query(scenes[rng.randrange(gallery)], rng) for _ in range(short)]
    by_short = score_queries(engine, pictures, image_embeds, [q.text for q in queries],
                             lambda query, picture: queries[query].holds(scenes[picture]), rerank)
    return {
        "model": str(model), "gallery": gallery, "first_seed": first, "rerank": rerank,
        "captions": {
            "queries": gallery, "distinct_captions": len(shared),
            "ambiguous_queries": sum(1 for text in captions if shared[text] > 1),
            "itc": {"recall_at_1": by_caption["itc"]["hit_at_1"], "recall_at_5": by_caption["itc"]["any_in_5"]},
            "itm": {"recall_at_1": by_caption["itm"]["hit_at_1"], "recall_at_5": by_caption["itm"]["any_in_5"]},
        },
        "short_queries": {
            "queries": short, "distinct_texts": len({q.text for q in queries}),
            "itc": {"precision_at_1": by_short["itc"]["hit_at_1"], "precision_at_5": by_short["itc"]["share_of_5"]},
            "itm": {"precision_at_1": by_short["itm"]["hit_at_1"], "precision_at_5": by_short["itm"]["share_of_5"]},
        },
        "vision_calls": engine.vision_calls, "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score the demo retrieval model on held-out pictures.")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="retrieval checkpoint folder")
    parser.add_argument("--gallery", type=int, default=500, help="held-out pictures to search among")
    parser.add_argument("--short", type=int, default=200, help="short queries")
    parser.add_argument("--rerank", type=int, default=10, help="candidates the ITM head re-scores")
    parser.add_argument("--out", type=Path, default=RESULTS / "eval_demo_search.json")
    args = parser.parse_args(argv)
    result = evaluate(args.model, args.gallery, args.short, args.rerank)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    folder = Path(args.model)
    if (folder / "training_log.json").exists():  # a model trained by train_search: its card shows the scores
        from chatbot.demo.card import SCORES_FILE
        from chatbot.demo.search_card import write_search_card

        (folder / SCORES_FILE).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        write_search_card(folder)
    captions, short = result["captions"], result["short_queries"]
    print(f"captions: {captions['queries']} queries, {captions['ambiguous_queries']} ambiguous (their caption is "
          f"shared by another gallery picture; any of those pictures counts as a hit)")
    for name in ("itc", "itm"):
        print(f"  {name}: recall@1 {captions[name]['recall_at_1']}%  recall@5 {captions[name]['recall_at_5']}%")
    print(f"short queries: {short['queries']} ({short['distinct_texts']} distinct)")
    for name in ("itc", "itm"):
        print(f"  {name}: precision@1 {short[name]['precision_at_1']}%  precision@5 {short[name]['precision_at_5']}%")
    print(f"{result['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
