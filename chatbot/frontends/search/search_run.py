"""`blip2-chat search TEXT`: the indexed pictures that match, best first, one line each (or JSON Lines).

Results go to stdout (`1. /p/dog.jpg  match 0.93  similarity 0.412`); loading and searching are said on
stderr, in words. What the ranking means is decided in `chatbot.core.photo_search`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from chatbot.core.photo_search import Finder, Found, check_top, found_line
from chatbot.core.runtime import say_on_terminal
from chatbot.core.settings import Settings
from chatbot.untrusted import json_line


@dataclass(frozen=True)
class SearchRequest:
    """What `search` was asked (its flags, minus the model's)."""

    text: str
    folder: Path | None = None  # --index DIR; None: the data folder's index
    top: int = 10
    rerank: bool = True  # re-score the best ones with the image-text matching head
    json: bool = False  # one JSON object per result


def run_search(settings: Settings, request: SearchRequest) -> str | None:
    """Print the results; return the best one that can still be opened (for --chat), else None.

    `settings.model` is the retrieval checkpoint asked for with --model ("" : the index's own).

    Raises:
        UserError: no index, another model's index, a damaged index, an empty or too long query.
    """
    check_top(request.top)  # before any model loads
    finder = Finder.from_settings(settings, model=settings.model, folder=request.folder)
    found = finder.find(request.text, top=request.top, rerank=request.rerank, progress=say_on_terminal)
    for rank, item in enumerate(found, 1):
        print(json_line(item.to_dict(rank)) if request.json else found_line(rank, item), flush=True)
    if not found:
        print("No picture in the index matches that (is the folder indexed? see `blip2-chat index`).",
              file=sys.stderr)
    return best_openable(found)


def best_openable(found: list[Found]) -> str | None:
    """The first result whose file is still there."""
    return next((item.path for item in found if not item.missing), None)
