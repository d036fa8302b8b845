"""What a compaction gave back is said in one sentence (chatbot.core.photo_index.build.freed_words), after an
indexing run's counts and after `index --forget` alike. They said it two ways ("Gave back 41 MB of disk space."
after a run); the sentence with its subject is kept."""

from __future__ import annotations

from pathlib import Path

from chatbot.core.photo_index.build import IndexSummary, freed_words
from chatbot.core.photo_index.forget import Forgotten, ForgottenPath
from chatbot.frontends.search.index_run import forgotten_words


def test_a_run_and_a_forget_say_the_same_sentence() -> None:
    sentence = "The index gave back 41 MB of disk space."
    assert freed_words(41_000_000) == sentence
    assert IndexSummary(added=1, freed_bytes=41_000_000).sentence().endswith(f"s. {sentence}")
    done = Forgotten(Path("/idx"), "m", [ForgottenPath("/p", 3)], 3, 3, 0, 9, freed_bytes=41_000_000)
    assert forgotten_words(done).endswith(f"not touched. {sentence}")


def test_nothing_given_back_is_not_said() -> None:
    assert "gave back" not in IndexSummary(added=1).sentence()
    done = Forgotten(Path("/idx"), "m", [ForgottenPath("/p", 3)], 3, 3, 0, 9)
    assert "gave back" not in forgotten_words(done)
