"""Where does per-token time go on a GPU? Times variants of one 32-token greedy decode.

A diagnostic, not a benchmark: builds a real-dimension synthetic OPT model in memory (no save),
then times plain `language_model.generate` alone and with each piece our engine adds.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Read before torch is imported and the model built, so --help answers at once.
_parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
_parser.add_argument("arch", nargs="?", default="blip2-opt-2.7b", help="a synthetic architecture")
_parser.add_argument("dtype", nargs="?", default="bfloat16", help="a torch dtype name")
_args = _parser.parse_args()

import torch  # noqa: E402
from transformers import (  # noqa: E402
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipImageProcessorPil,
    DynamicCache,
    StoppingCriteriaList,
)

from benchmarks.common import make_picture, synchronize  # noqa: E402
from chatbot.engine.base import CancelToken, GenerationOptions, GenerationStats  # noqa: E402
from chatbot.engine.blip2 import Blip2Engine  # noqa: E402
from chatbot.engine.checkpoint_location import ResolvedModel  # noqa: E402
from chatbot.engine.loader import LoadedCheckpoint  # noqa: E402
from chatbot.engine.streaming import StopWhenCancelled, TokenQueue  # noqa: E402
from chatbot.engine.synthetic import ARCHITECTURES, _configs, _train_opt_tokenizer  # noqa: E402

arch_name = _args.arch
dtype = getattr(torch, _args.dtype)
arch = ARCHITECTURES[arch_name]
tok = _train_opt_tokenizer(arch.vocab_size)
images = BlipImageProcessorPil(size={"height": arch.image_size, "width": arch.image_size})
proc = Blip2Processor(image_processor=images, tokenizer=tok, num_query_tokens=arch.num_query_tokens)
config = _configs(arch, tok.convert_tokens_to_ids("<image>"), tok)
torch.set_default_dtype(dtype)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
with torch.device(DEVICE):
    model = Blip2ForConditionalGeneration(config).eval()
torch.set_default_dtype(torch.float32)
device_name = "cuda:0" if DEVICE == "cuda" else "cpu"
resolved = ResolvedModel("diag", Path("."), None, "directory")
loaded = LoadedCheckpoint(model, proc, resolved, "opt", device_name, str(dtype).removeprefix("torch."), 0.0)
engine = Blip2Engine(loaded)
image = make_picture(seed=3)
prompt = "Question: What is in the picture? Answer: two circles. Question: Which is bigger? Answer:"
N = 32
options = GenerationOptions(max_new_tokens=N, min_new_tokens=N)
kw = engine.generate_kwargs(options)
lm = model.language_model
with torch.inference_mode():
    inputs = engine.language_inputs(image, engine.input_ids(prompt))


def plain(**extra):
    with torch.inference_mode():
        lm.generate(**inputs, **kw, **extra)


def in_thread(fn):
    def run():
        worker = threading.Thread(target=fn)
        worker.start()
        worker.join()
    return run


def ours(reuse=True):
    def run():
        engine.forget()
        engine.reuse_prefix = reuse
        for _ in engine.stream(image, prompt, options):
            pass
    return run


def naive():
    batch = proc(images=image.image, text=prompt, return_tensors="pt").to(DEVICE)
    batch["pixel_values"] = batch["pixel_values"].to(dtype)
    model.generate(**batch, **kw)


variants = {
    "plain generate": plain,
    "plain, no_grad instead of inference_mode": lambda: torch.no_grad()(lambda: lm.generate(**inputs, **kw))(),
    "plain in a thread": in_thread(plain),
    "plain + our streamer": lambda: plain(streamer=TokenQueue(GenerationStats())),
    "plain + our stopping criteria": lambda: plain(
        stopping_criteria=StoppingCriteriaList([StopWhenCancelled(CancelToken())])),
    "plain + DynamicCache(config)": lambda: plain(**{engine.cache_argument: DynamicCache(config=lm.config)}),
    "engine.stream (reuse on)": ours(True),
    "engine.stream (reuse off)": ours(False),
    "Blip2 generate (naive, incl. vision)": naive,
}
where = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu"
print(f"{arch_name} {dtype} on {where}; ms per token over {N} tokens (best of 3)")
for name, fn in variants.items():
    fn()  # warm-up
    best = float("inf")
    for _ in range(3):
        synchronize()
        started = time.perf_counter()
        fn()
        synchronize()
        best = min(best, time.perf_counter() - started)
    print(f"{name:>40}: {best / N * 1000:7.2f} ms/token", flush=True)
