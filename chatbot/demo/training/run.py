"""`python -m chatbot.demo.train`: train the demo chat model from scratch on the generated world.

Seeded and reproducible (the same seed, steps and thread count give the same weights); runs on a GPU
when one is usable, else on the CPU. Every step draws fresh pictures, so nothing is seen twice; the
held-out pictures (seeds from `examples.HELD_OUT_START`) are never drawn. The learning curve (loss and
teacher-forced answer accuracy) is written beside the weights as `training_log.json`.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from chatbot.demo.card import write_model_card
from chatbot.demo.examples import examples_for, held_out_scenes, training_stream
from chatbot.demo.training.batches import (
    answer_loss,
    chunks,
    grounding_head,
    grounding_loss,
    make_batch,
    picture_features,
    word_grounding_loss,
)
from chatbot.demo.training.model import DemoArch, build_model, build_processor
from chatbot.demo.training.runs import (
    add_run_arguments,
    arch_and_threads,
    command_line,
    finish_run,
    learning_rate,
    refuse_installed_weights,
    save_checkpoint,
    say_trained,
    start_run,
)

CHAT_WEIGHTS = Path(__file__).parents[1] / "weights" / "chat"


def _check_batch(processor: Any, arch: DemoArch, image_token_id: int, count: int) -> Any:
    """A fixed batch of held-out pictures (past the evaluation's own range) to follow the curve on."""
    scenes = held_out_scenes(count, start=2 * 10**9)
    rng = random.Random(1)
    return make_batch(processor, scenes, [examples_for(scene, rng) for scene in scenes], arch.num_query_tokens,
                      image_token_id)


def train(out_dir: Path, *, steps: int, batch_scenes: int, peak_lr: float, warmup: int, seed: int,
          arch: DemoArch, save_dtype: str = "float16", log_every: int = 50, save_every: int = 0,
          grounding_weight: float = 1.0, singles: int = 1, turns: int = 1, ground_in_words: bool = True,
          command: str = "") -> dict[str, Any]:
    """Train, save the model and its processor to `out_dir`, and return the training record.

    Args:
        out_dir: the checkpoint folder to write (save_pretrained: safetensors weights and the processor).
        steps: optimizer steps; each sees `batch_scenes` new pictures with three examples each.
        batch_scenes: pictures per step.
        peak_lr: AdamW's learning rate after warm-up (cosine decay after).
        warmup: warm-up steps (a tiny model trained from scratch stalls on colour without them).
        seed: fixes the weights' initialisation and the pictures drawn.
        arch: the model's dimensions.
        save_dtype: "float16" halves the file; the loader widens it to float32 on a CPU.
        log_every: steps between lines of the learning curve.
        save_every: also save the weights so far every this many steps into `out_dir`/step-N (0: never).
        grounding_weight: weight of the training-only grounding loss (see `batches.grounding_head`).
        command: the command line that asked for this run, for the model card.
    """
    import torch

    device = start_run(seed)
    processor = build_processor(arch)
    image_token_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    model = build_model(arch, processor.tokenizer).to(device).train()
    head = grounding_head(arch.lm_hidden).to(device)  # made even when unused: the same seed gives the same run
    optimizer = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=peak_lr, betas=(0.9, 0.98),
                                  weight_decay=0.05)
    check = _to(_check_batch(processor, arch, image_token_id, 48), device)
    rng = random.Random(seed)
    stream = chunks(training_stream(seed), batch_scenes)
    curve: list[dict[str, float]] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, peak_lr, warmup)
        scenes = next(stream)
        batch = _to(make_batch(processor, scenes, [examples_for(s, rng, singles, turns) for s in scenes],
                               arch.num_query_tokens, image_token_id), device)
        features = picture_features(model, batch)
        answering, _ = answer_loss(model, batch, features)
        grounding = (word_grounding_loss(model, features, batch.cell_words) if ground_in_words else
                     grounding_loss(head, features, batch.cells))
        loss = answering + grounding_weight * grounding
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            model.eval()
            with torch.no_grad():
                held_loss, held_right = answer_loss(model, check)
            point = {"step": step + 1, "seconds": round(time.perf_counter() - started, 1),
                     "cpu_seconds": round(time.process_time() - cpu_started, 1),
                     "train_loss": round(float(answering.detach()), 4),
                     "grounding_loss": round(float(grounding.detach()), 4),
                     "held_out_loss": round(float(held_loss), 4), "held_out_answers_right": round(held_right, 4)}
            model.train()
            curve.append(point)
            print(json.dumps(point), flush=True)
        if save_every and (step + 1) % save_every == 0 and step + 1 < steps:
            save_checkpoint(model, processor, out_dir / f"step-{step + 1}", save_dtype)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    model.eval()
    save_checkpoint(model, processor, out_dir, save_dtype)
    record = {"command": command, "steps": steps, "batch_scenes": batch_scenes, "peak_lr": peak_lr, "warmup": warmup,
              "seed": seed, "singles": singles, "turns": turns, "ground_in_words": ground_in_words,
              "grounding_weight": grounding_weight,
              "device": device, "threads": torch.get_num_threads(), "seconds": round(seconds, 1),
              "cpu_seconds": round(cpu_seconds, 1),
              "parameters": sum(p.numel() for p in model.parameters()), "save_dtype": save_dtype,
              "arch": arch.to_dict(), "curve": curve}
    return finish_run(out_dir, record, write_model_card)


def _to(batch: Any, device: str) -> Any:
    """The batch with its tensors on `device`."""
    for name in ("pixel_values", "input_ids", "attention_mask", "labels", "scene_index", "cells", "cell_words"):
        setattr(batch, name, getattr(batch, name).to(device))
    return batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the demo chat model (a small BLIP-2, OPT) on the demo world.")
    add_run_arguments(parser, out=CHAT_WEIGHTS, steps=4500, batch=24, warmup=300,
                      batch_help="pictures per step (three examples each)", arch_example='{"lm_layers": 2}')
    parser.add_argument("--save-every", type=int, default=0, help="also save the weights every N steps")
    parser.add_argument("--singles", type=int, default=1, help="single questions per picture")
    parser.add_argument("--turns", type=int, default=1, help="dialogue turns per picture (follow-ups first)")
    parser.add_argument("--ground-with-classifier", action="store_true",
                        help="ground the queries with a separate classifier head instead of the language model's "
                             "word embeddings (the comparison in the model card)")
    args = parser.parse_args(argv)
    refuse_installed_weights(parser, args.out, CHAT_WEIGHTS)
    arch = arch_and_threads(args, DemoArch())
    record = train(args.out, steps=args.steps, batch_scenes=args.batch, peak_lr=args.lr, warmup=args.warmup,
                   seed=args.seed, arch=arch, log_every=args.log_every, save_every=args.save_every,
                   grounding_weight=args.grounding, singles=args.singles, turns=args.turns,
                   ground_in_words=not args.ground_with_classifier,
                   command=command_line("chatbot.demo.train", argv))
    say_trained(record, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
