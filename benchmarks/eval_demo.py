"""Scores of the demo chat model on held-out pictures, through our engine and our chat (greedy).

    python -m benchmarks.eval_demo [--model chatbot/demo/weights/chat] [--scenes 200]

The model is loaded with `load_checkpoint`/`open_engine` like any checkpoint, and every answer comes from
the engine the chat uses (no training-loop forward). Scored by exact match:
- captions: `caption()` of the core, the prompt `caption` and `describe` send;
- single questions: the chat's prompt for a first question;
- follow-ups three ways: in a real `Conversation` that folds its own earlier answers (the chat as a person
  meets it); with the true earlier turns folded by `prompts/`; and with the earlier turns removed (the
  question alone), which should fall towards chance: that gap is what the folded history carries.
The "blind prior" is the best a model could do that sees neither picture nor history: the commonest answer
to each question text. Results go to benchmarks/results/eval_demo.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import RESULTS  # noqa: E402

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "chatbot" / "demo" / "weights" / "chat"
EVAL_SEED = 15  # the questions and dialogues drawn for the held-out pictures


def _percent(right: int, total: int) -> float:
    return round(100.0 * right / total, 1) if total else 0.0


class Tally:
    """Exact-match counts overall and by kind, with a few wrong answers to read."""

    def __init__(self) -> None:
        self.right: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.wrong: list[dict[str, str]] = []

    def add(self, kind: str, prompt: str, expected: str, got: str) -> None:
        self.total[kind] += 1
        if got == expected:
            self.right[kind] += 1
        elif len(self.wrong) < 12:
            self.wrong.append({"prompt": prompt, "expected": expected, "got": got})

    def report(self) -> dict[str, Any]:
        right, total = sum(self.right.values()), sum(self.total.values())
        return {"exact_percent": _percent(right, total), "count": total,
                "by_kind": {k: _percent(self.right[k], n) for k, n in sorted(self.total.items())},
                "examples_wrong": self.wrong}


def blind_prior(items: list[tuple[str, str]]) -> float:
    """Exact % of a guesser that sees neither picture nor history: for each follow-up, the commonest answer
    that the same question text got elsewhere in the set (leave-one-out: a text seen once scores 0)."""
    answers: dict[str, Counter[str]] = defaultdict(Counter)
    for question, answer in items:
        answers[question][answer] += 1
    right = 0.0
    for question, answer in items:
        others = answers[question].copy()
        others[answer] -= 1
        best = max(others.values(), default=0)
        if best > 0 and others[answer] == best:  # a tie among the commonest: a fair coin between them
            right += 1 / list(others.values()).count(best)
    return round(100.0 * right / len(items), 1) if items else 0.0


def enlarged_picture(scene: Any, enlarge: int) -> Any:
    """The held-out picture as the engine takes it; with `enlarge` > 1, blown up (nearest) as `blip2-chat demo`
    saves its pictures, so the processor's resize back to the model's size is part of what is scored."""
    from chatbot.demo.world import IMAGE_SIZE, loaded_picture

    if enlarge == 1:
        return loaded_picture(scene)
    from PIL import Image

    from chatbot.images import LoadedImage

    small = loaded_picture(scene)
    big = small.image.resize((enlarge * IMAGE_SIZE,) * 2, Image.Resampling.NEAREST)
    return LoadedImage(big, small.sha256 + f"-x{enlarge}", small.source, big.size)


def evaluate(model: str, scenes: int, singles_per_scene: int = 5, enlarge: int = 1) -> dict[str, Any]:
    from chatbot.core.captioning import caption
    from chatbot.core.conversation import Conversation
    from chatbot.demo.dialogues import make_dialogue
    from chatbot.demo.examples import chat_prompt, held_out_scenes
    from chatbot.demo.questions import sample_single
    from chatbot.demo.world import caption as true_caption
    from chatbot.engine.base import GenerationOptions
    from chatbot.engine.blip2 import open_engine

    engine = open_engine(model, device="cpu")
    options = GenerationOptions()  # greedy, 30 new tokens: the chat's defaults
    rng = random.Random(EVAL_SEED)
    tallies = {name: Tally() for name in ("captions", "single", "follow_ups_chat", "follow_ups_true_history",
                                          "follow_ups_no_history")}
    follow_up_questions: list[tuple[str, str]] = []
    started = time.perf_counter()
    for scene in held_out_scenes(scenes):
        picture = enlarged_picture(scene, enlarge)
        tallies["captions"].add("caption", "", true_caption(scene), caption(engine, picture, options))
        for _ in range(singles_per_scene):
            qa = sample_single(scene, rng)
            prompt = chat_prompt([], qa.question)
            tallies["single"].add(qa.kind, prompt, qa.answer, engine.answer(picture, prompt, options))
        if len(scene.things) < 2:
            continue
        dialogue = make_dialogue(scene, rng, rng.randint(2, 4))
        chat = Conversation.with_engine(engine, picture, options)
        for index, qa in enumerate(dialogue):
            said = "".join(chat.ask(qa.question)).strip()
            if index == 0:
                continue
            history = [(earlier.question, earlier.answer) for earlier in dialogue[:index]]
            tallies["follow_ups_chat"].add(qa.kind, chat.last_fit.text if chat.last_fit else "", qa.answer, said)
            prompt = chat_prompt(history, qa.question)
            tallies["follow_ups_true_history"].add(qa.kind, prompt, qa.answer, engine.answer(picture, prompt, options))
            alone = chat_prompt([], qa.question)
            tallies["follow_ups_no_history"].add(qa.kind, alone, qa.answer, engine.answer(picture, alone, options))
            follow_up_questions.append((qa.question, qa.answer))
    result: dict[str, Any] = {name: tally.report() for name, tally in tallies.items()}
    result["follow_ups_blind_prior_percent"] = blind_prior(follow_up_questions)
    result["held_out_scenes"] = scenes
    result["enlarged"] = enlarge
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["model"] = str(model)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score the demo chat model on held-out pictures.")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="checkpoint folder")
    parser.add_argument("--scenes", type=int, default=200, help="held-out pictures")
    parser.add_argument("--enlarge", type=int, default=1,
                        help="blow the pictures up this many times (nearest), as `blip2-chat demo` saves them")
    parser.add_argument("--out", type=Path, default=RESULTS / "eval_demo.json")
    args = parser.parse_args(argv)
    result = evaluate(args.model, args.scenes, enlarge=args.enlarge)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    folder = Path(args.model)
    if (folder / "training_log.json").exists():  # a model trained by chatbot.demo.train: its card shows the scores
        from chatbot.demo.card import SCORES_FILE, write_model_card

        (folder / SCORES_FILE).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        write_model_card(folder)
    for name in ("captions", "single", "follow_ups_chat", "follow_ups_true_history", "follow_ups_no_history"):
        part = result[name]
        print(f"{name:26} {part['exact_percent']:5.1f}% of {part['count']:4}  {part['by_kind']}")
    print(f"{'follow_ups_blind_prior':26} {result['follow_ups_blind_prior_percent']:5.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
