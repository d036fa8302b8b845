"""The sentences a conversation says about its answers, one wording for every front end.

While an answer is still coming (`still_answering`), when earlier turns stop fitting the model's context and when
they all fit again, before an answer to a question the model can hardly read, when /retry can only answer the
same, and after an answer cut off at max_new_tokens (`cut_short_text`, `cut_short_mark`). `Conversation` decides
when each is said; the front ends say them as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

from chatbot.core.key_names import action_key_label
from chatbot.core.settings import BY_NAME
from chatbot.engine.base import GenerationOptions
from chatbot.errors import QuestionError

MAX_NEW_TOKENS = int(BY_NAME["max_new_tokens"].high or 1024)  # the longest answer an option may ask for


def still_answering(waiting: str, keys: Mapping[str, str] | None = None, *, again: str = "") -> QuestionError:
    """The one refusal while an answer (or a comparison) is still coming, as every front end says it.

    `waiting` names what has to wait ("/clear", "your question", "switching the image"). `keys`: the config
    file's [keys] (`Settings.keys`), so the app's stop key named is the one in use. `again` names what to do once
    the answer has ended, for a request the refusal drops rather than keeps to send later (a /compare whose other
    image had already loaded): "then /compare again".
    """
    then = f"; then {again} again" if again else ""
    stop = action_key_label(keys, "stop")
    return QuestionError(f"An answer is still coming, so {waiting} has to wait.",
                         f"Let it finish, or stop it ({stop} in the app, Ctrl+C in the screen-reader mode){then}.")


def left_out_text(kept: int, answer_room: int = 0) -> str:
    """The sentence every front end says when earlier turns stop fitting the model's context: the prompt folds
    in only the latest `kept` turns that fit (the session still has them all). `answer_room`: the positions
    max_new_tokens sets aside for the answer, named when raising it is what pushed turns out (0: not named)."""
    if kept == 0:
        seen = "The model no longer sees the earlier turns of this chat: they do not fit its context"
    else:
        last = "the last turn" if kept == 1 else f"the last {kept} turns"
        seen = f"The model now sees only {last} of this chat: earlier ones no longer fit its context"
    cause = (f", where max_new_tokens sets aside {answer_room} positions for the answer (a lower /set max_new_tokens "
             "leaves more for the chat)") if answer_room else ""
    return f"{seen}{cause}. The session keeps every turn."


ALL_FIT_AGAIN = "The model sees every turn of this chat again: they all fit its context now."
UNREADABLE = ("The model cannot read most of this question: its vocabulary has no pieces for most of its words or "
              "letters, so the answer may mean nothing.")


def same_again_text(options: GenerationOptions) -> str:
    """The sentence /retry says when its answer can only be the one it replaces (same prompt, same model, same
    options): greedy or beam decoding (temperature 0) always picks the same tokens, and sampling with a fixed seed
    draws the same ones. "" when the answer may differ (sampling with a new seed each time)."""
    if not options.sampling:
        return ("With temperature 0 the model answers the same question the same way, so this answer will be the "
                "same: /set temperature 0.7 lets it answer differently.")
    if options.seed is not None:
        return (f"With the seed fixed ({options.seed}) sampling draws the same words again, so this answer will be "
                "the same: /set seed none lets it answer differently.")
    return ""


def cut_short_text(limit: int, *, command_line: bool = False) -> str:
    """The sentence every front end says after an answer that reached max_new_tokens (`limit`) before the model
    ended it, so that one stopped mid-sentence is not taken for the whole answer. `command_line`: name the flag
    (ask, caption) rather than /set (a chat)."""
    if limit >= MAX_NEW_TOKENS:
        return f"The answer was cut off at {limit} tokens, the most an answer may have."
    tokens = "1 token" if limit == 1 else f"{limit} tokens"
    how = more_tokens(limit, command_line)
    return f"The answer was cut off at {tokens} (max_new_tokens); {how} lets it go on longer."


def more_tokens(limit: int, command_line: bool) -> str:
    """How to give answers cut off at `limit` (below the most allowed) more room: the flag, or /set in a chat."""
    more = min(MAX_NEW_TOKENS, 2 * limit)
    return f"--max-new-tokens {more}" if command_line else f"/set max_new_tokens {more}"


def cut_short_mark(limit: int) -> str:
    """`cut_short_text` in a few words, for a mark beside the answer (the chat app's bubble)."""
    if limit >= MAX_NEW_TOKENS:
        return f"cut off at {limit} tokens"
    return f"cut off at {limit} tokens: /set max_new_tokens {min(MAX_NEW_TOKENS, 2 * limit)} for more"
