"""One-shot captions, without a conversation: the prompt a caption continues, checked once, and a caption.

The `caption` command and `describe` caption many images with one prompt, so `caption_prompt` checks it
(UTF-8, room in the model's context) once, after the model loads and before any image is answered; `caption`
then answers each image with no history.
"""

from __future__ import annotations

from chatbot.core.prompt_checks import check_text, prompt_budget
from chatbot.engine.base import Engine, GenerationOptions
from chatbot.errors import QuestionError
from chatbot.images import LoadedImage
from prompts import normalize_answer, style_for


def caption_prompt(engine: Engine, options: GenerationOptions, prefix: str = "") -> str:
    """The prompt a caption continues: `prefix` (`--prompt`), else the caption style's. Checked once, after the
    model loads and before any image is answered, by the rule a question has (`prompt_budget`): a QuestionError
    when it is not UTF-8 text or does not fit the model, an OptionError when max_new_tokens leaves no room."""
    prompt = check_text(prefix, "prompt") or style_for(engine.info.family, "caption").build([], "")
    budget = prompt_budget(engine, options)
    needed = engine.count_tokens(prompt)
    if needed > budget:
        lower = "" if engine.info.is_encoder_decoder else " (or lower --max-new-tokens)"
        raise QuestionError(
            f"The prompt is too long for this model: it needs {needed} tokens and there is room for {budget}.",
            f"Shorten --prompt{lower}.",
        )
    return prompt


def caption(engine: Engine, image: LoadedImage, options: GenerationOptions, prefix: str = "") -> str:
    """A caption for `image`: the caption style's prompt (or `prefix` for the caption to continue), no history.
    The prompt is taken as it is: check it first with `caption_prompt` (once for many images)."""
    prompt = style_for(engine.info.family, "caption").build([], "")
    return normalize_answer(engine.answer(image, prefix or prompt, options))
