"""One rule for an answer's spacing (`prompts.normalize_answer`): `ask` streams it spaced as the chat records it
and `--json` holds it so, where `ask` once printed a model's doubled and trailing spaces that the chat did not
(`re?oun 41  kitchenss 8  fence 22 ` against `re?oun 41 kitchenss 8 fence 22`)."""

from __future__ import annotations

import json
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from chatbot.core.conversation import Conversation
from chatbot.core.settings import Settings
from chatbot.engine.scripted import ScriptedEngine
from chatbot.frontends import oneshot
from chatbot.images import load_image
from prompts import normalize_answer, spaced_stream

RAGGED = ["  re?oun", " 41 ", " ", "kitchenss\n8\t", "  fence 22", " \n"]  # a model's chunks, spaces and all


class Ragged(ScriptedEngine):
    """Streams RAGGED as its chunks, whatever it is asked."""

    def stream(self, image, prompt, options, cancel=None) -> Iterator[str]:  # type: ignore[no-untyped-def,override]
        yield from super().stream(image, prompt, options, cancel)  # records the prompt and the stats
        yield from RAGGED


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from(list("ab \t\n\u3000\x1c\x85\u2028.")), max_size=30), st.data())
def test_a_spaced_stream_joins_to_the_stored_answer_however_it_was_cut(text: str, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    chunks = [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert "".join(spaced_stream(chunks)) == " ".join(text.split())


def test_ask_prints_and_records_the_answer_as_the_chat_records_it(pictures, capsys, monkeypatch) -> None:
    stored = " ".join("".join(RAGGED).split())
    conversation = Conversation.with_engine(Ragged(""), load_image(pictures["red"]))
    list(conversation.ask("What is it?"))
    assert conversation.session.turns[-1].answer == stored == "re?oun 41 kitchenss 8 fence 22"

    monkeypatch.setattr(oneshot, "open_engine_for", lambda settings: Ragged(""))
    assert oneshot.run_ask(Settings(model="scripted"), str(pictures["red"]), "What is it?") == 0
    assert capsys.readouterr().out == stored + "\n"
    assert oneshot.run_ask(Settings(model="scripted", json=True), str(pictures["red"]), "What is it?") == 0
    assert json.loads(capsys.readouterr().out)["answer"] == stored == normalize_answer("".join(RAGGED))
