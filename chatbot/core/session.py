"""The conversation as data: turns, the image each was about, the options used. No I/O."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageRef:
    """Which image a turn was about: where it came from and its content hash."""

    source: str  # absolute path or URL
    sha256: str


@dataclass
class Turn:
    """One question and its answer, as stored (answer normalised, never re-generated on load)."""

    question: str
    answer: str
    image: ImageRef | None
    stopped: bool = False  # the user cancelled while it streamed; the partial answer is kept
    created: float = field(default_factory=time.time)


@dataclass
class Session:
    """A whole chat: what the user asked, what the model said, about which images."""

    model: str
    id: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6])
    created: float = field(default_factory=time.time)
    turns: list[Turn] = field(default_factory=list)
    image: ImageRef | None = None  # the image the next question is about
    context_start: int = 0  # turns before this index are not folded into the prompt (/clear, image switch)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Session:
        def ref(value: dict[str, Any] | None) -> ImageRef | None:
            return ImageRef(**value) if value else None

        turns = [Turn(**{**t, "image": ref(t.get("image"))}) for t in data.get("turns", [])]
        return cls(
            model=data["model"], id=data["id"], created=data["created"], turns=turns,
            image=ref(data.get("image")), options=dict(data.get("options", {})),
            context_start=int(data.get("context_start", 0)),
        )
