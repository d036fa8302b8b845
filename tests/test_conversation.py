"""The conversation core without a screen: saving, options, export, the scripted engine, failed answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot.core.commands import Notice, run_command
from chatbot.core.conversation import Conversation
from chatbot.core.resume import options_for
from chatbot.core.session import Session
from chatbot.core.settings import Settings
from chatbot.core.store import SessionStore
from chatbot.engine.base import CancelToken, GenerationOptions, GenerationStats
from chatbot.engine.scripted import DEFAULT_ANSWER, ScriptedEngine
from chatbot.errors import OptionError, OutOfMemoryError, QuestionError
from chatbot.images import load_image
from chatbot.tui.widgets.status_bar import human_bytes, memory_text, process_memory_bytes


@pytest.fixture
def conversation(tmp_path: Path, pictures) -> Conversation:
    return Conversation(Settings(model="scripted-opt"), Session(model="scripted-opt"), SessionStore(tmp_path),
                        load_image(pictures["red"]))  # no engine yet: as the app opens


@pytest.mark.parametrize("new, first, total, rate", [
    (11, 0.5, 1.5, 10.0),  # streamed: the 10 tokens after the first, in the second after it
    (3, 0.6, 0.6, 5.0),  # beam search: the answer came whole, 3 tokens in 0.6 s
    (1, 0.2, 0.2, 5.0), (0, 0.0, 0.0, 0.0), (0, 0.3, 0.3, 0.0),
])
def test_tokens_per_second_of_streamed_and_whole_answers(new, first, total, rate) -> None:
    stats = GenerationStats(new_tokens=new, seconds_to_first_token=first, seconds_total=total)
    assert stats.tokens_per_second == pytest.approx(rate)


def test_scripted_engine_streams_words_and_reports_fixed_stats(pictures) -> None:
    engine = ScriptedEngine("one two three", speed=10.0)
    image = load_image(pictures["red"])
    assert list(engine.stream(image, "Question: hi Answer:", GenerationOptions())) == ["one", " two", " three"]
    stats = engine.last_stats
    assert (stats.new_tokens, stats.prompt_tokens, stats.tokens_per_second) == (3, 3 + 2 + 32, pytest.approx(10.0))
    assert engine.answer(image, "again", GenerationOptions()) == DEFAULT_ANSWER  # the queue ran out
    engine.enqueue("a b c d e")
    assert engine.answer(image, "p", GenerationOptions(max_new_tokens=2)) == "a b"  # one word per token
    assert engine.prompts == ["Question: hi Answer:", "again", "p"] and engine.count_tokens("a b") == 4
    assert engine.info.family == "opt" and engine.info.context_tokens == 2048 and engine.info.image_tokens == 32


def test_scripted_engine_cancel_and_failures(pictures) -> None:
    engine = ScriptedEngine("one two three four", "kept")
    image = load_image(pictures["red"])
    cancel = CancelToken()
    chunks = []
    for chunk in engine.stream(image, "p", GenerationOptions(), cancel):
        chunks.append(chunk)
        cancel.cancel()
    assert chunks == ["one"] and engine.last_stats.cancelled
    engine.fail_next(OutOfMemoryError("Out of memory.", "Try less."))
    with pytest.raises(OutOfMemoryError):
        engine.answer(image, "p", GenerationOptions())
    assert engine.answer(image, "p", GenerationOptions()) == "kept"  # an early failure leaves the queue alone


def test_chat_records_no_turn_for_a_failed_answer_and_a_stopped_one_for_a_broken_stream(pictures) -> None:
    engine = ScriptedEngine("half of it")
    chat = Conversation.with_engine(engine, load_image(pictures["red"]))
    engine.fail_next(OutOfMemoryError("Out of memory.", "Try less."))
    with pytest.raises(OutOfMemoryError):
        list(chat.ask("Too big?"))
    assert chat.session.turns == []
    engine.fail_next(RuntimeError("boom"), after_chunks=2)
    with pytest.raises(RuntimeError):
        list(chat.ask("Breaks?"))
    assert [(t.answer, t.stopped) for t in chat.session.turns] == [("half of", True)]


def test_set_refuses_an_answer_length_that_leaves_no_room_for_a_question(conversation) -> None:
    """Known once the model is: /set max_new_tokens may not take the positions a question needs (128
    positions, 8 for the image: at most 128 - 8 - 16 = 104); before the model loads the question says it."""
    from dataclasses import replace

    from chatbot.core.prompt_checks import MIN_PROMPT_TOKENS

    assert MIN_PROMPT_TOKENS == 16
    assert run_command(conversation, "/set max_new_tokens 400").ok  # no model yet: nothing to check against
    engine = ScriptedEngine("fine")
    engine.info = replace(engine.info, context_tokens=128, image_tokens=8)
    conversation.attach(engine)
    with pytest.raises(OptionError, match="max_new_tokens=400 leaves no room for a question"):
        conversation.prepare("What is it?")
    outcome = run_command(conversation, "/set max_new_tokens 105")
    assert not outcome.ok and [n.text for n in outcome.notices] == [
        "max_new_tokens=105 leaves no room for a question in this model's 128 positions. Use at most 104 "
        "(/set max_new_tokens N in a chat, --max-new-tokens N on the command line)."]
    assert conversation.options.max_new_tokens == 400  # unchanged by the refused value
    assert run_command(conversation, "/set max_new_tokens 104").ok
    assert conversation.prepare("What is it?").text.endswith("Question: What is it? Answer:")


def test_a_question_is_checked_before_the_model_is_there(conversation) -> None:
    assert conversation.check_question("  What is it?  ") == "What is it?"
    with pytest.raises(QuestionError, match="The question is empty"):
        conversation.check_question("   ")
    conversation.image = None
    with pytest.raises(QuestionError, match="No image is open"):
        conversation.check_question("What is it?")
    assert conversation.check_question("What is it?", image_coming=True) == "What is it?"


def test_resumed_options_and_bad_ones() -> None:
    fallback = GenerationOptions()
    session = Session(model="m", options={"max_new_tokens": 12, "temperature": 0.5, "unknown": 1})
    assert options_for(session, fallback) == GenerationOptions(max_new_tokens=12, temperature=0.5)
    assert options_for(Session(model="m", options={"top_p": 7}), fallback) == fallback  # invalid: ignored
    hostile = {"seed": 2**64, "temperature": float("nan"), "num_beams": 1000, "max_new_tokens": 100000,
               "top_p": "0.5", "repetition_penalty": True, "min_new_tokens": 50}
    assert options_for(Session(model="m", options=hostile), fallback) == fallback  # each checked as it enters
    assert options_for(Session(model="m", options={"seed": 7, "top_p": 2}), fallback) == GenerationOptions(seed=7)


def test_saves_only_what_changed_and_never_an_empty_session(conversation, tmp_path) -> None:
    assert conversation.save() is None and conversation.save(force=True) is None  # nothing said yet: no file
    refused = run_command(conversation, "/save")
    assert not refused.ok and refused.notices == [Notice(
        "There is nothing to save yet. Ask a question first; every answer is saved.", "error")]
    assert not list(tmp_path.glob("*.json"))
    conversation.attach(ScriptedEngine("an answer"))
    list(conversation.ask("Hi?"))
    path = conversation.save()
    assert path is not None and path.exists() and conversation.saved
    assert conversation.save() is None  # unchanged: not rewritten
    assert run_command(conversation, "/set max_new_tokens 7").notices == [Notice("max_new_tokens is now 7.")]
    assert conversation.save() is None  # /set saved it already
    assert SessionStore(tmp_path).load(conversation.session.id).options["max_new_tokens"] == 7
    assert conversation.save(force=True) == path


def test_export_paths(conversation, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    session_id = conversation.session.id

    def exported(line: str) -> list[Notice]:
        outcome = run_command(conversation, line)
        assert outcome.ok, outcome
        return outcome.notices

    assert exported("/export md") == [Notice(f"Exported the chat to {tmp_path / f'blip2-chat-{session_id}.md'}.")]
    (tmp_path / "out").mkdir()
    assert exported("/export JSON out") == [
        Notice(f"Exported the chat to {tmp_path / 'out' / f'blip2-chat-{session_id}.json'}.")]
    assert exported("/export json 'my chat.json'") == [Notice(f"Exported the chat to {tmp_path / 'my chat.json'}.")]
    assert exported("/export md my chat with spaces.md") == [
        Notice(f"Exported the chat to {tmp_path / 'my chat with spaces.md'}.")]  # its suffix last: one name
    assert not (tmp_path / "chat.md extra words").exists()
    for line, words in [("/export", "/export needs more"), ("/export txt", "md, html or json, not 'txt'"),
                        ("/export md chat.md extra words", "/export: 'extra words' comes after the file name chat.md. "
                                                           "Quote a file name that has spaces"),
                        ("/export json a.JSON b", "'b' comes after the file name a.JSON")]:
        outcome = run_command(conversation, line)
        assert not outcome.ok and words in outcome.notices[0].text and outcome.notices[0].kind == "error"


def test_memory_readings() -> None:
    assert process_memory_bytes() > 1_000_000
    assert [human_bytes(n) for n in (512, 2000, 5 * 10**6, 3 * 10**9)] == ["512 B", "2 KB", "5.0 MB", "3.0 GB"]
    assert human_bytes(15_600_000_000) == "15.6 GB"  # decimal, as the precision planner says it (gigabytes())
    engine = ScriptedEngine()
    assert memory_text(engine, lambda: 10**9) == "RAM 1.0 GB"
    engine.memory_bytes = 2 * 10**9  # an engine on a GPU fills the hook
    assert memory_text(engine, lambda: 10**9) == "RAM 1.0 GB · GPU 2.0 GB"


def test_only_terminals_that_can_draw_images_are_probed() -> None:
    from chatbot.tui.widgets.image_preview import terminal_may_draw_images

    assert terminal_may_draw_images({"TERM": "xterm-kitty"})
    assert terminal_may_draw_images({"TERM": "xterm-256color", "TERM_PROGRAM": "WezTerm"})
    assert not terminal_may_draw_images({"TERM": "xterm-256color"})  # half blocks, no questions asked
    assert not terminal_may_draw_images({"TERM": "xterm-kitty", "TMUX": "/tmp/tmux-0/default,1,0"})
    assert not terminal_may_draw_images({"TERM": "screen-256color"})
    assert terminal_may_draw_images({"TERM": "screen", "BLIP2_CHAT_GRAPHICS": "1"})
    assert not terminal_may_draw_images({"TERM": "xterm-kitty", "BLIP2_CHAT_GRAPHICS": "0"})


def test_undoing_every_turn_of_a_saved_chat_leaves_no_stale_turn_on_disk(conversation, tmp_path) -> None:
    conversation.attach(ScriptedEngine("an answer"))
    list(conversation.ask("Hi?"))
    assert conversation.save() is not None
    assert run_command(conversation, "/undo").ok
    assert SessionStore(tmp_path).load(conversation.session.id).turns == []  # the file says what the chat has


def test_turns_left_out_are_said_when_it_begins_and_when_what_the_model_sees_changes(pictures) -> None:
    """A long chat says once that earlier turns no longer fit, and again only when the model sees fewer turns than
    it was last told, not on every turn; once when they all fit again (a lower max_new_tokens), nothing after a
    /clear (a fresh context)."""
    from dataclasses import replace

    engine = ScriptedEngine(*["a b c d e f"] * 12)
    engine.info = replace(engine.info, context_tokens=engine.info.image_tokens + 40 + 30)
    chat = Conversation.with_engine(engine, load_image(pictures["red"]), GenerationOptions(max_new_tokens=30))
    said, kept, dropped = [], [], []
    for number in range(8):
        "".join(chat.ask(f"question {number}?"))
        said.append(chat.left_out)
        assert chat.last_fit is not None
        dropped.append(chat.last_fit.dropped_turns)
        kept.append(number - chat.last_fit.dropped_turns)  # the earlier turns in the prompt
    first = next(number for number, count in enumerate(dropped) if count)  # where folding began
    assert first > 1 and len(set(kept[first:])) == 1  # from there the model sees the same number of turns
    turns = "the last turn" if kept[first] == 1 else f"the last {kept[first]} turns"
    assert said == [""] * first + [f"The model now sees only {turns} of this chat: earlier ones no longer fit its "
                                   "context. The session keeps every turn."] + [""] * (7 - first)
    chat.with_options(max_new_tokens=45)  # above the default: less room, and the answer's share is named
    "".join(chat.ask("and now?"))
    assert chat.left_out.endswith("where max_new_tokens sets aside 45 positions for the answer (a lower /set "
                                  "max_new_tokens leaves more for the chat). The session keeps every turn.")
    chat.clear()
    "".join(chat.ask("fresh?"))
    assert chat.left_out == ""
