"""Alt text conventions for `describe`: the default prompt and decoding, and caption clean-up.

Pure Python (the CLI reads the defaults while building its parser, so nothing heavy here).

Why these defaults:
- No prompt: BLIP-2 was pre-trained to caption an image from nothing, and both families give
  their plainest, most factual sentence that way ("a brown dog lying on a wooden floor").
  Question prompts invite one-word answers; "a photo of" makes the model lead with the medium.
- Greedy decoding: deterministic (the same folder gives the same file), and batches cheaply.
- 30 new tokens (LAVIS's caption length): one short sentence, well under the ~125 characters
  screen-reader users expect of alt text.
- Repetition penalty 1.5 (the official BLIP-2 demo's default): stops greedy loops such as
  "a man and a man and a man".
"""

from __future__ import annotations

import re

DEFAULT_PROMPT = ""  # plain captioning: the model's own description
DEFAULT_MAX_NEW_TOKENS = 30
DEFAULT_REPETITION_PENALTY = 1.5

# Screen readers already announce "image" or "graphic": a lead-in saying so is noise.
_LEAD_IN = re.compile(
    r"^\s*(?:(?:there is|this is|here is|it is)\s+)?(?:an?\s+|the\s+)?"
    r"(?:image|picture|photo|photograph|pic|snapshot)\s+(?:of|showing|that shows|with)(?:\s+|$)",
    re.IGNORECASE,
)
_SPACES = re.compile(r"\s+")


def to_alt_text(caption: str) -> str:
    """A caption made into alt text: no "an image of" lead-in, one space between words, a capital, a full stop.

    Returns "" when nothing is left (the caller records that as a failure, since empty alt text
    tells a screen reader the image is decorative).
    """
    text = _SPACES.sub(" ", caption).strip()
    while (shorter := _LEAD_IN.sub("", text, count=1)) != text:
        text = shorter
    text = text.strip(" ,;:-")
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    if text[-1] not in ".!?":
        text += "."
    return text
