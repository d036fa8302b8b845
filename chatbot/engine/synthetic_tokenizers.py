"""Tokenizers for the synthetic checkpoints, trained here with `tokenizers` (nothing downloaded).

One trainer per family, each laid out like the real checkpoint's tokenizer: OPT's byte-level BPE,
FlanT5's SentencePiece-like Unigram, and the BERT WordPiece that the retrieval checkpoints' Q-Former
reads. All train on the same deterministic English-like corpus, so the same call gives the same
vocabulary in every process.
"""

from __future__ import annotations

import random

# Words for the tokenizer's training corpus: enough to give a compact vocabulary of
# the phrases a chat about images uses ("Question:", "Answer:", colours, objects).
_WORDS = {
    "subject": "a cat|two dogs|a man|a woman|the child|three birds|a red car|an old boat|a small house"
    "|the tree|a bicycle|a plate of food|a group of people|a horse|the train|a laptop",
    "verb": "sits on|stands near|is next to|runs across|looks at|is parked by|lies under|holds|flies over"
    "|is in front of|is behind|plays with",
    "object": "the table|a bench|the beach|a snowy field|the street|a wooden fence|the window|the water"
    "|a green lawn|the sky|a busy road|a kitchen counter|the mountains",
    "colour": "red|blue|green|yellow|white|black|brown|grey|orange|purple|pink",
    "question": "what is in the picture|how many people are there|what colour is the car|where is this"
    "|what is the man doing|is it raining|what time of day is it|what animal is this"
    "|describe the image|what is on the table|why is the dog running|who is holding the umbrella",
}


def training_corpus(lines: int = 4000, seed: int = 0, vocab_size: int = 1000) -> list[str]:
    """Deterministic English-like sentences and Q/A lines to train the tokenizer on.

    Large vocabularies (the real checkpoints' 50k / 32k) need more distinct text than a few
    hundred words give, so pseudo-words are added until the trainer can reach the size asked for.
    """
    rng = random.Random(seed)
    out = _english_lines(rng, lines)
    if vocab_size > 4000:
        letters = "abcdefghijklmnopqrstuvwxyz"
        words = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 10))) for _ in range(vocab_size + 10000)]
        out += [" ".join(rng.choice(words) for _ in range(12)) for _ in range(vocab_size // 2)]
    return out


def _english_lines(rng: random.Random, lines: int) -> list[str]:
    pick = {k: v.split("|") for k, v in _WORDS.items()}
    out = []
    for _ in range(lines):
        sentence = f"{rng.choice(pick['subject'])} {rng.choice(pick['verb'])} {rng.choice(pick['object'])}"
        out.append(f"Question: {rng.choice(pick['question'])}? Answer: {sentence}.")
        out.append(f"a photo of {sentence}, the {rng.choice(pick['colour'])} one. {rng.randint(0, 100)}\n")
    return out


def train_opt_tokenizer(vocab_size: int):  # type: ignore[no-untyped-def]
    """Byte-level BPE like OPT's GPT-2 tokenizer: BOS `</s>` first, newline as a token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>"]  # OPT's ids 0..3
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        show_progress=False,
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(training_corpus(vocab_size=vocab_size), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def train_t5_tokenizer(vocab_size: int):  # type: ignore[no-untyped-def]
    """Unigram with a metaspace like T5's SentencePiece: `</s>` appended, pad 0, eos 1, unk 2.

    The pieces come from BPE training over the metaspace-split corpus, then score by how early BPE
    learned them. tokenizers' own Unigram trainer gives a different vocabulary in every process (its
    ties fall as a hash map iterates), which made the tiny FlanT5, and every test that reads its
    answers, differ from run to run; BPE training is deterministic.
    """
    import math

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    learner.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.BpeTrainer(show_progress=False, vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=[chr(c) for c in range(32, 127)])  # every ASCII character
    learner.train_from_iterator(training_corpus(vocab_size=vocab_size), trainer)
    pieces = sorted(learner.get_vocab().items(), key=lambda item: item[1])  # by id: specials, alphabet, merges
    tok = Tokenizer(models.Unigram([(piece, 0.0 if piece in specials else -math.log(1 + index))
                                    for piece, index in pieces], unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def train_bert_tokenizer(vocab_size: int, max_tokens: int = 512):  # type: ignore[no-untyped-def]
    """WordPiece like bert-base-uncased (the retrieval Q-Former's): lower case, `[CLS] text [SEP]`,
    `[PAD]` 0, and the `[DEC]` BOS token the hub conversion adds. `max_tokens` is its model_max_length.

    The vocabulary is counted, not trained: every printable ASCII character alone and as a `##`
    continuation, then the corpus's commonest words whole (ties alphabetical). tokenizers' WordPiece
    trainer gives a different vocabulary in every process, as its Unigram trainer does.
    """
    import re
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    characters = [chr(c) for c in range(33, 127)]
    base = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters, *(f"##{c}" for c in characters)]
    lines = training_corpus(vocab_size=vocab_size)
    counts = Counter(word for line in lines for word in re.findall(r"\w+|[^\w\s]", line.lower()))
    words = [word for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if word not in base]
    vocab = {piece: index for index, piece in enumerate(base + words[: max(0, vocab_size - len(base))])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
        mask_token="[MASK]", model_max_length=max_tokens,
    )
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer
