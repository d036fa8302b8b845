"""`python -m chatbot.demo.train_search`: train the demo retrieval model from scratch on the generated world.

Seeded and reproducible (the same seed, steps and thread count give the same weights); runs on a GPU
when one is usable, else on the CPU. Every step draws fresh pictures (never the held-out seeds); the
loss is BLIP-2's first-stage pair, contrastive (ITC) and matching (ITM) with hard negatives, plus the
training-only grounding read-out that lets a Q-Former this small learn to see in minutes. The learning
curve, with caption recall on a fixed held-out gallery, goes beside the weights as `training_log.json`.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from chatbot.demo.examples import HELD_OUT_START, held_out_scenes, training_stream
from chatbot.demo.search_card import write_search_card
from chatbot.demo.training.batches import chunks, grounding_head, grounding_loss
from chatbot.demo.training.retrieval_model import SearchArch, build_model, build_processor
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
from chatbot.demo.training.search_batches import (
    contrastive_loss,
    image_embeddings,
    make_batch,
    match_logits,
    matching_loss,
    query_states,
    similarities,
    text_embeddings,
    vision_states,
)
from chatbot.demo.world import Scene, caption, render

SEARCH_WEIGHTS = Path(__file__).parents[1] / "weights" / "search"
GAUGE_START = HELD_OUT_START + 2 * 10**6  # the curve's gallery: held out, apart from the benchmark's pictures
RERANK = 10  # candidates the ITM head re-scores, as `search` does by default


def gallery_recall(model: Any, processor: Any, scenes: list[Scene], rerank: int = RERANK) -> dict[str, float]:
    """Caption -> picture recall@1 over `scenes` by ITC, and after ITM re-ranks the top `rerank` (a gauge
    on the training model's own parts; `benchmarks/eval_demo_search.py` measures through the engine). A
    hit is a top picture with the query's caption (two pictures can share one)."""
    import torch

    captions = [caption(scene) for scene in scenes]
    with torch.no_grad():
        pixels = processor.image_processor([render(s) for s in scenes], return_tensors="pt")["pixel_values"]
        device = model.query_tokens.device
        vision = vision_states(model, pixels.to(device))
        images = image_embeddings(model, query_states(model, vision))
        tokens = processor.tokenizer(captions, padding=True, return_tensors="pt").to(device)
        sim = similarities(images, text_embeddings(model, tokens["input_ids"], tokens["attention_mask"]))  # [B, T]
        itc_right = itm_right = 0
        for text, wanted in enumerate(captions):
            top = torch.topk(sim[:, text], rerank).indices
            itc_right += captions[int(top[0])] == wanted
            ids = tokens["input_ids"][text : text + 1].expand(rerank, -1)
            mask = tokens["attention_mask"][text : text + 1].expand(rerank, -1)
            match = torch.softmax(match_logits(model, vision[top], ids, mask), dim=-1)[:, 1]
            itm_right += captions[int(top[int(match.argmax())])] == wanted
    return {"itc_recall_at_1": round(itc_right / len(scenes), 4), "itm_recall_at_1": round(itm_right / len(scenes), 4)}


def train(out_dir: Path, *, steps: int, batch_scenes: int, peak_lr: float, warmup: int, seed: int, arch: SearchArch,
          save_dtype: str = "float16", log_every: int = 50, gauge_pictures: int = 200, grounding_weight: float = 1.0,
          temperature: float = 0.07, command: str = "") -> dict[str, Any]:
    """Train, save the model and its processor to `out_dir`, and return the training record.

    Args:
        out_dir: the checkpoint folder to write (save_pretrained: safetensors weights and the processor).
        steps: optimizer steps; each sees `batch_scenes` new pictures, two texts each.
        batch_scenes: pictures per step (the contrastive loss's in-batch negatives).
        peak_lr: AdamW's learning rate after warm-up (cosine decay to a tenth after).
        warmup: warm-up steps.
        seed: fixes the initialisation, the pictures, the texts and the sampled negatives.
        arch: the model's dimensions.
        save_dtype: "float16" halves the file; the loader widens it to float32 on a CPU.
        log_every: steps between points of the learning curve.
        gauge_pictures: the held-out gallery the curve's recall is measured on.
        grounding_weight: weight of the training-only grounding loss (`batches.grounding_head`).
        temperature: the contrastive loss's starting temperature (learned, as in BLIP-2; not saved).
        command: the command line that asked for this run, for the model card.
    """
    import torch

    device = start_run(seed)
    processor = build_processor(arch)
    model = build_model(arch, processor.tokenizer).to(device).train()
    head = grounding_head(arch.qformer_hidden).to(device)
    temp = torch.nn.Parameter(torch.tensor(temperature, device=device))
    weights = list(model.parameters())
    groups: list[dict[str, Any]] = [{"params": [*weights, *head.parameters()]},
                                    {"params": [temp], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=peak_lr, betas=(0.9, 0.98), weight_decay=0.05)
    # ITM's own Adam over the same weights: its gradients at the shared Q-Former are 50-100 times smaller than
    # ITC's and grounding's, so in one Adam its direction hardly moved (measured: the head sat at the class
    # prior for 300 steps from scratch, and weighting ITM 5, 10 or 50 times did not move it in 100 more);
    # two Adams scale each loss's step by its own gradients.
    matching_optimizer = torch.optim.AdamW(weights, lr=peak_lr, betas=(0.9, 0.98), weight_decay=0.0)
    gauge = held_out_scenes(gauge_pictures, start=GAUGE_START)
    rng = random.Random(seed)
    stream = chunks(training_stream(seed), batch_scenes)
    curve: list[dict[str, float]] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    for step in range(steps):
        for group in (*optimizer.param_groups, *matching_optimizer.param_groups):
            group["lr"] = learning_rate(step, steps, peak_lr, warmup)
        batch = make_batch(processor, next(stream), rng).to(device)
        vision = vision_states(model, batch.pixel_values)
        queries = query_states(model, vision)
        own = batch.own_texts
        texts = text_embeddings(model, batch.input_ids[:own], batch.attention_mask[:own])
        sim = similarities(image_embeddings(model, queries), texts)
        tau = temp.clamp(0.01, 0.5)
        itc = contrastive_loss(sim, batch, tau)
        itm, itm_right = matching_loss(model, vision, sim.detach(), batch, tau.detach())
        grounding = grounding_loss(head, queries, batch.cells)
        _two_steps(optimizer, itc + grounding_weight * grounding, matching_optimizer, itm, weights)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            model.eval()
            point: dict[str, float] = {
                "step": step + 1, "seconds": round(time.perf_counter() - started, 1),
                "cpu_seconds": round(time.process_time() - cpu_started, 1),
                "itc_loss": round(float(itc.detach()), 4), "itm_loss": round(float(itm.detach()), 4),
                "itm_pairs_right": round(itm_right, 4), "grounding_loss": round(float(grounding.detach()), 4),
                "temperature": round(float(tau.detach()), 4), **gallery_recall(model, processor, gauge)}
            model.train()
            curve.append(point)
            print(json.dumps(point), flush=True)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    model.eval()
    save_checkpoint(model, processor, out_dir, save_dtype)
    record = {"command": command, "steps": steps, "batch_scenes": batch_scenes, "peak_lr": peak_lr, "warmup": warmup,
              "seed": seed, "grounding_weight": grounding_weight, "start_temperature": temperature,
              "device": device, "threads": torch.get_num_threads(), "seconds": round(seconds, 1),
              "cpu_seconds": round(cpu_seconds, 1), "gauge_pictures": gauge_pictures, "gauge_start": GAUGE_START,
              "parameters": sum(p.numel() for p in model.parameters()), "save_dtype": save_dtype,
              "arch": arch.to_dict(), "curve": curve}
    return finish_run(out_dir, record, write_search_card)


def _two_steps(optimizer: Any, loss: Any, matching_optimizer: Any, matching: Any, weights: list[Any]) -> None:
    """`optimizer` steps on `loss`'s gradients, then `matching_optimizer` on `matching`'s (both taken before
    either step), each clipped to norm 1 over the model's `weights`."""
    import torch

    matching_grads = torch.autograd.grad(matching, weights, retain_graph=True, allow_unused=True)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(weights, 1.0)
    optimizer.step()
    for weight, grad in zip(weights, matching_grads, strict=True):
        weight.grad = grad
    torch.nn.utils.clip_grad_norm_(weights, 1.0)
    matching_optimizer.step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train the demo retrieval model (a small Blip2ForImageTextRetrieval) on the demo world.")
    add_run_arguments(parser, out=SEARCH_WEIGHTS, steps=1200, batch=32, warmup=100,
                      batch_help="pictures per step (two texts each)", arch_example='{"qformer_layers": 3}')
    args = parser.parse_args(argv)
    refuse_installed_weights(parser, args.out, SEARCH_WEIGHTS)
    arch = arch_and_threads(args, SearchArch())
    record = train(args.out, steps=args.steps, batch_scenes=args.batch, peak_lr=args.lr, warmup=args.warmup,
                   seed=args.seed, arch=arch, log_every=args.log_every, grounding_weight=args.grounding,
                   command=command_line("chatbot.demo.train_search", argv))
    say_trained(record, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
