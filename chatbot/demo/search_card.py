"""The demo retrieval model's card (MODEL_CARD.md beside its weights): data, command, time, curve, scores.

Written from `training_log.json` (by `train_search`) and the held-out scores (by
`benchmarks/eval_demo_search.py`), so the card never states a figure that no run produced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chatbot.demo.card import curve_points, read_run, write_card

TARGET_RECALL = 90.0  # caption -> picture recall@1 (after re-ranking) the project aims for


def write_search_card(folder: Path) -> Path:
    """(Re)write `folder`/MODEL_CARD.md from the training log and, when present, the held-out scores."""
    record, scores = read_run(folder)
    return write_card(folder, [*_about(record), *_curve(record), *_scores(scores)])


def _about(record: dict[str, Any]) -> list[str]:
    arch = record["arch"]
    command = record.get("command") or "python -m chatbot.demo.train_search"
    return [
        "# blip2-chat demo retrieval model",
        "",
        "A `Blip2ForImageTextRetrieval` (BLIP-2's image-text matching model, the kind `blip2-chat index` and",
        "`search` use), trained from scratch in this repository on the generated world of",
        "`chatbot/demo/world.py`. **It knows only that world**: one to four circles, squares and triangles (red,",
        "green, blue, yellow, purple; small or large) in the cells of a 2x2 grid. Other pictures and other",
        "words get scores that mean nothing. `--model demo` names it for `index` and `search` (and the demo chat",
        "model for the chat).",
        "",
        "## Model",
        "",
        f"- {record['parameters']:,} parameters, stored in {record['save_dtype']} (safetensors); the loader widens "
        "them to float32 on a CPU.",
        f"- Vision: ViT, {arch['image_size']} px, patch {arch['patch_size']}, hidden {arch['vision_hidden']}, "
        f"{arch['vision_layers']} layers. Q-Former: hidden {arch['qformer_hidden']}, {arch['qformer_layers']} layers, "
        f"{arch['num_query_tokens']} queries, text input with {arch['qformer_positions']} positions; projections to "
        f"{arch['image_text_dim']}; the 2-way matching (ITM) head.",
        "- Tokenizer: word-level (`tokenizers` WordLevel, lower-cased) over the world's words, BERT's form:",
        "  `[CLS] words [SEP]`, `[PAD]` 0, `[UNK]` for any other word.",
        "",
        "## Data",
        "",
        "Every step draws new pictures (scene seeds below 10^9; held-out pictures start at 10^9). Each picture",
        "brings two texts that are true of it: its caption (\"a small red circle left of a large blue square\")",
        "and a short query of the kind a person types (\"a red circle\", \"two shapes\", \"a blue shape at the top",
        "left\", \"a red circle left of a square\"). A text true of another picture in the batch (two pictures",
        "can share a short text, or a caption) is never used as a negative for it.",
        "",
        "## Training",
        "",
        f"    {command}",
        "",
        f"{record['seconds']:.0f} s wall ({record.get('cpu_seconds', 0):.0f} s of CPU time) on {record['device']} with "
        f"{record['threads']} thread(s): {record['steps']} steps of {record['batch_scenes']} pictures, AdamW (peak "
        f"learning rate {record['peak_lr']}, {record['warmup']} warm-up steps, then cosine decay), gradient clipping "
        f"at 1, seed {record['seed']}. Three losses:",
        "",
        "- ITC: symmetric contrastive loss over the batch, each picture's best query against each text (the",
        f"  similarity search ranks by), with a learned temperature (from {record.get('start_temperature', 0.07)}; "
        "training only).",
        "- ITM: the matching head on four pairs per picture: the picture with one of its texts (a match); that",
        "  text with a picture it is false of drawn at random (an easy negative) and another drawn by ITC",
        "  similarity (BLIP-2's hard negative); and the picture with its text changed in one word so that it is",
        "  false (another colour, shape, size, number, place or link), or, where no such change exists, a text",
        "  false of it drawn by ITC similarity.",
        f"- Grounding (weight {record.get('grounding_weight', 0)}): a linear read-out, used only in training and not "
        "saved, of grid cell i's",
        "  shape, colour and size from query i's output, which makes a Q-Former this small learn to see in a few",
        "  hundred steps.",
        "",
        "ITC and grounding share one AdamW; ITM has its own over the same weights, with the same schedule: its",
        "gradients at the shared Q-Former are 50-100 times smaller than the others', and in one optimizer the",
        "head sat at the class prior (always \"no match\") through the first 300 steps, and weighting ITM 5 to",
        "50 times did not move it in 100 more. The Q-Former's self-attention starts at N(0, 0.08)",
        "(`start_for_matching`), its cross-attention, query tokens and the ViT's positions as the chat model's",
        "do (`start_for_training`).",
        "",
    ]


def _curve(record: dict[str, Any]) -> list[str]:
    lines = ["## Learning curve", "",
             f"Caption -> picture recall@1 over a fixed gallery of {record.get('gauge_pictures', '?')} held-out "
             "pictures, measured on the",
             "training model's own parts (a gauge; the scores below run through the engine search uses):", "",
             "| step | CPU s | ITC loss | ITM loss | grounding loss | recall@1 ITC | recall@1 after ITM |",
             "|---|---|---|---|---|---|---|"]
    for p in curve_points(record["curve"]):
        lines.append(f"| {p['step']} | {p['cpu_seconds']} | {p['itc_loss']} | {p['itm_loss']} | {p['grounding_loss']} "
                     f"| {100 * p['itc_recall_at_1']:.1f}% | {100 * p['itm_recall_at_1']:.1f}% |")
    return [*lines, ""]


def _scores(scores: dict[str, Any] | None) -> list[str]:
    if scores is None:
        return ["## Scores", "", "Not measured yet: run `python -m benchmarks.eval_demo_search`."]
    captions, short = scores["captions"], scores["short_queries"]
    lines = [
        "## Scores on held-out pictures", "",
        f"`python -m benchmarks.eval_demo_search --gallery {scores['gallery']}`: through `open_retrieval_engine` "
        f"(the engine `search` uses), a gallery of {scores['gallery']} pictures (seeds from {scores['first_seed']}) "
        "ranked by ITC, then the best",
        f"{scores['rerank']} re-ranked by the ITM head, as `search` does.", "",
        f"Every picture's caption as the query ({captions['queries']} queries). A hit is a picture with that caption: "
        f"{captions['ambiguous_queries']} queries",
        "have more than one picture with their caption in the gallery (a caption does not say which row or",
        "diagonal two shapes are in, nor which cell of three is empty), and any of them counts.", "",
        "| ranking | recall@1 | recall@5 | target recall@1 |", "|---|---|---|---|",
        f"| ITC alone | {captions['itc']['recall_at_1']}% | {captions['itc']['recall_at_5']}% | |",
        f"| ITC, then ITM re-ranks the top {scores['rerank']} | {captions['itm']['recall_at_1']}% | "
        f"{captions['itm']['recall_at_5']}% | {TARGET_RECALL:.0f}% |", "",
        f"Short queries ({short['queries']}, drawn like the training ones from gallery pictures: \"a red circle\", "
        "\"three shapes\", ...): the share of",
        "the top results the text is true of.", "",
        "| ranking | precision@1 | precision@5 |", "|---|---|---|",
        f"| ITC alone | {short['itc']['precision_at_1']}% | {short['itc']['precision_at_5']}% |",
        f"| ITC, then ITM | {short['itm']['precision_at_1']}% | {short['itm']['precision_at_5']}% |",
    ]
    if captions["itm"]["recall_at_1"] < TARGET_RECALL:
        lines += ["", f"Recall@1 is below the {TARGET_RECALL:.0f}% target."]
    return lines
