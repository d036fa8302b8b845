"""The retrieval engine against `Blip2ForImageTextRetrieval.forward`, on a tiny synthetic checkpoint.

The reference is the model's own forward, loaded separately and fed by the checkpoint's processor: ITC
scores (`use_image_text_matching_head=False`, its `logits_per_image`) and ITM probabilities (`=True`,
softmax[:, 1]) must equal what the engine computes from its separate image and text halves.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from chatbot.engine.loader import LoadedCheckpoint, load_checkpoint
from chatbot.engine.precision import choose_precision
from chatbot.engine.registry import (
    DEFAULT_SEARCH_MODEL,
    KNOWN_CHECKPOINTS,
    KNOWN_RETRIEVAL_CHECKPOINTS,
    find_checkpoint,
    find_retrieval_checkpoint,
    resolve_alias,
)
from chatbot.engine.retrieval import RetrievalEngine, itc_scores, open_retrieval_engine
from chatbot.engine.shape import read_shape, shape_from_config
from chatbot.errors import NotACheckpointError, QueryError
from chatbot.images import LoadedImage, load_image
from tests.conftest import make_image, put_in_hub_cache

TEXTS = ["a dog on the beach", "two cats sit on a bench", "a red car is parked by the street", "the sky"]
COLOURS = [(200, 30, 30), (20, 180, 40), (30, 30, 200), (240, 200, 0)]
ATOL = 1e-5


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[LoadedImage]:
    root = tmp_path_factory.mktemp("retrieval-pictures")
    sizes = [(64, 48), (48, 64), (80, 80), (40, 30)]
    return [load_image(make_image(root / f"{index}.png", colour, size))
            for index, (colour, size) in enumerate(zip(COLOURS, sizes, strict=True))]


@pytest.fixture(scope="module")
def image_token_checkpoint(retrieval_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint laid out the other way the hub's may be: the processor puts one `<image>` token
    per query before the text and the config names it, so `forward` cuts them off again."""
    copy = Path(shutil.copytree(retrieval_checkpoint, tmp_path_factory.mktemp("image-tokens") / "tiny-itm"))
    config = json.loads((copy / "config.json").read_text())
    processor = json.loads((copy / "processor_config.json").read_text())
    vocab = json.loads((copy / "tokenizer.json").read_text())["added_tokens"]
    config["image_token_index"] = next(token["id"] for token in vocab if token["content"] == "<image>")
    processor["num_query_tokens"] = config["num_query_tokens"]
    (copy / "config.json").write_text(json.dumps(config))
    (copy / "processor_config.json").write_text(json.dumps(processor))
    return copy


@pytest.fixture(scope="module", params=["plain", "image-tokens"])
def layout(request: pytest.FixtureRequest, retrieval_checkpoint: Path, image_token_checkpoint: Path) -> Path:
    return retrieval_checkpoint if request.param == "plain" else image_token_checkpoint


@pytest.fixture(scope="module")
def loaded(retrieval_checkpoint: Path) -> LoadedCheckpoint:
    return load_checkpoint(str(retrieval_checkpoint), device="cpu", kind="retrieval")


@pytest.fixture(scope="module")
def engine(loaded: LoadedCheckpoint) -> RetrievalEngine:
    return RetrievalEngine(loaded)


def reference_itc(folder: Path, images: list[LoadedImage], texts: list[str], model: object = None) -> torch.Tensor:
    """`logits_per_image` [B, T] of the model's forward without the ITM head, fed by its processor."""
    from transformers import Blip2ForImageTextRetrieval, Blip2Processor

    processor = Blip2Processor.from_pretrained(folder)
    model = model or Blip2ForImageTextRetrieval.from_pretrained(folder).eval()
    inputs = processor(images=[image.image for image in images], text=texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs, use_image_text_matching_head=False).logits_per_image  # type: ignore[operator]


def reference_itm(folder: Path, images: list[LoadedImage], text: str, model: object = None) -> torch.Tensor:
    """softmax(logits)[:, 1] of the forward with the ITM head, each image paired with `text`."""
    from transformers import Blip2ForImageTextRetrieval, Blip2Processor

    processor = Blip2Processor.from_pretrained(folder)
    model = model or Blip2ForImageTextRetrieval.from_pretrained(folder).eval()
    inputs = processor(images=[image.image for image in images], text=[text] * len(images), padding=True,
                       return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs, use_image_text_matching_head=True).logits_per_image  # type: ignore[operator]
    return torch.softmax(logits.float(), dim=1)[:, 1]


def test_itc_scores_equal_the_forward(layout: Path, images: list[LoadedImage]) -> None:
    engine = open_retrieval_engine(str(layout), device="cpu")
    image_embeds = engine.image_embeddings(images)
    text_embeds = engine.text_embeddings(TEXTS)
    assert image_embeds.dtype == np.float32 and text_embeds.dtype == np.float32
    assert image_embeds.shape == (len(images), engine.query_tokens, engine.embedding_dim) == (4, 8, 256)
    assert text_embeds.shape == (len(TEXTS), 256)
    np.testing.assert_allclose(np.linalg.norm(image_embeds, axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(text_embeds, axis=-1), 1.0, atol=1e-6)
    scores = engine.itc_scores(image_embeds, text_embeds)
    expected = reference_itc(layout, images, TEXTS).numpy()
    assert scores.shape == expected.shape == (4, 4)
    np.testing.assert_allclose(scores, expected, atol=ATOL, rtol=0)
    assert np.ptp(expected, axis=0).min() > 1e-3 and np.ptp(expected, axis=1).min() > 1e-3  # scores that differ


def test_itm_probabilities_equal_the_forward(layout: Path, images: list[LoadedImage]) -> None:
    engine = open_retrieval_engine(str(layout), device="cpu")
    seen = []
    for text in TEXTS:
        probabilities = engine.match_probabilities(images, text)
        expected = reference_itm(layout, images, text).numpy()
        assert probabilities.dtype == np.float32 and probabilities.shape == (len(images),)
        np.testing.assert_allclose(probabilities, expected, atol=ATOL, rtol=0)
        seen.append(expected)
    assert np.ptp(np.stack(seen), axis=0).min() > 1e-3 and np.ptp(np.stack(seen), axis=1).min() > 1e-3


def test_batches_and_single_images_agree(loaded: LoadedCheckpoint, engine: RetrievalEngine, images) -> None:
    whole = engine.image_embeddings(images)
    one_by_one = np.concatenate([engine.image_embeddings([image]) for image in images])
    np.testing.assert_allclose(one_by_one, whole, atol=ATOL, rtol=0)
    in_threes = RetrievalEngine(loaded, batch_size=3)  # 4 images: a batch of 3 and a batch of 1
    np.testing.assert_allclose(in_threes.image_embeddings(images), whole, atol=ATOL, rtol=0)
    np.testing.assert_allclose(in_threes.match_probabilities(images, TEXTS[0]),
                               engine.match_probabilities(images, TEXTS[0]), atol=ATOL, rtol=0)
    np.testing.assert_allclose(engine.text_embeddings(TEXTS[1:2])[0], engine.text_embeddings(TEXTS)[1], atol=ATOL)
    assert engine.image_embeddings([]).shape == (0, 8, 256) and engine.text_embeddings([]).shape == (0, 256)


def test_itc_scores_is_the_best_query_similarity() -> None:
    rng = np.random.default_rng(0)
    image_embeds = rng.standard_normal((5, 8, 16)).astype(np.float32)
    text_embeds = rng.standard_normal((3, 16)).astype(np.float32)
    expected = [[max(float(query @ text) for query in image) for text in text_embeds] for image in image_embeds]
    np.testing.assert_allclose(itc_scores(image_embeds, text_embeds), expected, rtol=1e-6)


def test_vision_calls_count_the_images(engine: RetrievalEngine, images: list[LoadedImage]) -> None:
    before = engine.vision_calls
    engine.image_embeddings(images[:3])
    assert engine.vision_calls == before + 3
    engine.text_embeddings(TEXTS)
    assert engine.vision_calls == before + 3  # text needs no image
    engine.match_probabilities(images[:2], TEXTS[0])
    assert engine.vision_calls == before + 5
    with pytest.raises(QueryError):
        engine.match_probabilities(images, " ")
    assert engine.vision_calls == before + 5  # refused before any image is encoded


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_an_empty_query_is_refused(engine: RetrievalEngine, text: str) -> None:
    with pytest.raises(QueryError, match=r"^The search text is empty\. Describe what the picture shows"):
        engine.text_embeddings([TEXTS[0], text])


def test_a_query_longer_than_the_text_encoder_reads(engine: RetrievalEngine) -> None:
    assert engine.max_text_tokens == 64  # the tiny checkpoint's Q-Former positions
    longest = "a " * 62  # [CLS], 62 tokens of "a", [SEP]
    assert engine.check_query(longest) == 64
    assert engine.text_embeddings([longest]).shape == (1, 256)
    message = r"^The search text is 65 tokens long, but the model reads at most 64 tokens \(about 48 words\)\. Shorten"
    with pytest.raises(QueryError, match=message):
        engine.text_embeddings([longest + "a"])
    with pytest.raises(QueryError, match=message):
        engine.match_probabilities([], longest + "a")


def test_loads_by_alias_from_the_cache_and_by_folder(retrieval_checkpoint: Path) -> None:
    repo = put_in_hub_cache(retrieval_checkpoint, "Salesforce/blip2-itm-vit-g")
    try:
        engine = open_retrieval_engine("itm-vit-g", device="cpu")
        assert engine.checkpoint_id == "Salesforce/blip2-itm-vit-g" == DEFAULT_SEARCH_MODEL
    finally:
        shutil.rmtree(repo)
    local = open_retrieval_engine(str(retrieval_checkpoint), device="cpu")
    assert local.checkpoint_id == str(retrieval_checkpoint.resolve())
    assert (local.image_size, local.query_tokens, local.embedding_dim, local.precision) == (32, 8, 256, "float32")


def test_chat_and_retrieval_checkpoints_refuse_each_others_job(checkpoints, retrieval_checkpoint: Path) -> None:
    with pytest.raises(NotACheckpointError, match=r"is a BLIP-2 chat checkpoint, .* Salesforce/blip2-itm-vit-g"):
        open_retrieval_engine(str(checkpoints["opt"]), device="cpu")
    with pytest.raises(NotACheckpointError, match=r"^Salesforce/blip2-opt-2.7b is a BLIP-2 chat checkpoint"):
        open_retrieval_engine("opt-2.7b", device="cpu")  # refused by name: offline, nothing to find
    with pytest.raises(NotACheckpointError, match=r"is a BLIP-2 retrieval checkpoint .* not chat\. Use it with"):
        load_checkpoint(str(retrieval_checkpoint), device="cpu")
    with pytest.raises(NotACheckpointError, match=r"^Salesforce/blip2-itm-vit-g-coco is a BLIP-2 retrieval"):
        load_checkpoint("itm-vit-g-coco", device="cpu")


def test_a_retrieval_checkpoint_without_its_text_path_is_refused(retrieval_checkpoint: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(retrieval_checkpoint, tmp_path / "no-text"))
    config = json.loads((copy / "config.json").read_text())
    config["qformer_config"]["use_qformer_text_input"] = False
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(NotACheckpointError, match=r"has no Q-Former text input .* cannot read a query\. Set it to"):
        open_retrieval_engine(str(copy), device="cpu")


def test_registry_keeps_retrieval_apart() -> None:
    assert resolve_alias("itm-vit-g") == "Salesforce/blip2-itm-vit-g"
    assert resolve_alias("ITM-VIT-G-COCO") == "Salesforce/blip2-itm-vit-g-coco"
    assert find_checkpoint("itm-vit-g") is None and find_retrieval_checkpoint("opt-2.7b") is None
    assert [k.image_size for k in KNOWN_RETRIEVAL_CHECKPOINTS] == [224, 364]
    assert not {k.hub_id for k in KNOWN_CHECKPOINTS} & {k.hub_id for k in KNOWN_RETRIEVAL_CHECKPOINTS}


def test_shape_of_a_retrieval_checkpoint(retrieval_checkpoint: Path) -> None:
    """Counts exact against the model transformers builds, for the tiny one and the hub's (meta device)."""
    from transformers import Blip2Config, Blip2ForImageTextRetrieval

    configs = [json.loads((retrieval_checkpoint / "config.json").read_text()),
               *[known.config for known in KNOWN_RETRIEVAL_CHECKPOINTS]]
    for config in configs:
        with torch.device("meta"):
            model = Blip2ForImageTextRetrieval(Blip2Config.from_dict(config))
        shape = shape_from_config(config)
        linear = {n: m.weight.numel() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        assert shape.family == "retrieval"
        assert shape.params == sum(p.numel() for p in model.parameters())
        assert shape.quantizable == sum(v for n, v in linear.items() if n.startswith("vision_model"))
        assert shape.kept == sum(linear[n] for n in ("vision_projection", "text_projection", "itm_head"))
        assert shape.qformer == sum(p.numel() for p in model.qformer.parameters()) + model.query_tokens.numel()
    hub = shape_from_config(KNOWN_RETRIEVAL_CHECKPOINTS[0].config)
    assert round(hub.params / 1e9, 2) == KNOWN_RETRIEVAL_CHECKPOINTS[0].params_billions
    choice = choose_precision(read_shape(retrieval_checkpoint), device="cpu", free_bytes=8 * 10**9)
    assert choice.precision.label == "float32"


QUANTIZED_CLASS = {"8bit": "Linear8bitLt", "4bit": "Linear4bit", "int8": "Int8Linear"}
WORDS = {"8bit": "8-bit", "4bit": "4-bit", "int8": "int8 weight-only"}


@pytest.mark.parametrize("bits", ["8bit", "4bit", "int8"])
def test_quantized_loading_goes_the_same_way(retrieval_checkpoint: Path, images, bits: str) -> None:
    if bits != "int8":
        pytest.importorskip("bitsandbytes")
    engine = open_retrieval_engine(str(retrieval_checkpoint), device="cpu", quantize=bits)
    assert engine.precision == bits and engine.precision_reason.startswith(f"Using {WORDS[bits]}, as asked")
    model = engine.model
    assert type(model.get_submodule("vision_model.encoder.layers.0.mlp.fc1")).__name__ == QUANTIZED_CLASS[bits]
    for name in ("qformer.encoder.layer.0.attention.attention.query", "vision_projection", "text_projection",
                 "itm_head"):
        assert type(model.get_submodule(name)).__name__ == "Linear", name
    # The engine's halves give what this quantized model's own forward gives.
    scores = engine.itc_scores(engine.image_embeddings(images), engine.text_embeddings(TEXTS))
    np.testing.assert_allclose(scores, reference_itc(retrieval_checkpoint, images, TEXTS, model).numpy(), atol=ATOL)
    np.testing.assert_allclose(engine.match_probabilities(images, TEXTS[2]),
                               reference_itm(retrieval_checkpoint, images, TEXTS[2], model).numpy(), atol=ATOL)
