"""Exports: a chat as Markdown (a readable transcript naming each image) or as JSON (which imports back).

`/export` never creates a folder and never replaces a file it did not write itself (`ExportLog`).
Markdown holds text from outside (questions, answers, file names), so it is escaped: Markdown's
own characters lose their meaning and control characters are shown, never written raw.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from chatbot.core.session import Session
from chatbot.core.session_files import Stamp, file_stamp, session_json, shown, write_atomic, write_new
from chatbot.errors import UserError
from chatbot.untrusted import visible

# Characters that mean something anywhere in a line (our text never starts one: it follows a label, and
# line breaks are shown as \n), so the transcript's raw Markdown stays readable.
_MARKDOWN = re.compile(r"([\\`*_\[\]<>|~&])")


def markdown_text(text: str) -> str:
    """`text` as literal Markdown: its special characters escaped, control characters shown."""
    return _MARKDOWN.sub(r"\\\1", visible(text))


def markdown_code(text: str) -> str:
    """`text` inside a code span, whatever backticks it holds (CommonMark: a longer fence)."""
    text = visible(text)
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if text.startswith("`") or text.endswith("`") else f"{fence}{text}{fence}"




def export_markdown(session: Session) -> str:
    """A readable transcript that names each image by path and sha256."""
    lines = [f"# blip2-chat session {markdown_text(session.id)}", "", f"Model: {markdown_code(session.model)}", ""]
    current = None
    for turn in session.turns:
        if turn.image and turn.image != current:
            current = turn.image
            source, sha256 = markdown_code(turn.image.source), markdown_code(turn.image.sha256)
            lines += [f"## Image: {source}", "", f"sha256: {sha256}", ""]
            if not turn.image.source.startswith(("http://", "https://")):
                lines += [f"![image]({Path(turn.image.source).as_uri()})", ""]
        answer = markdown_text(turn.answer) + (" *(stopped)*" if turn.stopped else "")
        lines += [f"**You:** {markdown_text(turn.question)}", "", f"**Assistant:** {answer}", ""]
    return "\n".join(lines)


def _free_name(path: Path) -> str:
    for number in range(2, 10_000):
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        if not os.path.lexists(candidate):
            return candidate.name
    return f"{path.stem}-new{path.suffix}"


def _exists_error(path: Path) -> UserError:
    return UserError(f"There is already a file {shown(path, 400)}, and /export only replaces its own earlier export.",
                     f"Choose another name, e.g. {shown(_free_name(path), 200)}.")


def export_session(session: Session, fmt: str, path: Path, *, overwrite: bool = False) -> Path:
    """Write the session as Markdown (`md`) or JSON (`json`, which imports back) to `path`.

    The folder must exist (none is created); an existing file is refused unless `overwrite`.
    """
    if fmt not in ("md", "json"):
        raise UserError(f"Unknown export format '{shown(fmt)}'.", "Use /export md or /export json.")
    if not path.parent.is_dir():
        raise UserError(f"The folder {shown(path.parent, 400)} does not exist.",
                        "Create it first or choose another path.")
    if not overwrite and os.path.lexists(path):
        raise _exists_error(path)
    text = export_markdown(session) if fmt == "md" else session_json(session)
    try:
        if overwrite:
            write_atomic(path, text)
        else:
            write_new(path, text)
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError as error:
        raise UserError(f"Could not write {shown(path, 400)}: {error.strerror or error}.",
                        "Choose another path.") from None
    return path


class ExportLog:
    """The files one conversation exported, so `/export` may update its own earlier export and nothing else."""

    def __init__(self) -> None:
        self.written: dict[Path, Stamp] = {}  # resolved path -> the file as this conversation left it

    def ours(self, path: Path) -> bool:
        """True when `path` holds this conversation's export, unchanged since it was written."""
        try:
            status = os.stat(path, follow_symlinks=False)
        except OSError:
            return False
        return self.written.get(path) == file_stamp(status)

    def remember(self, path: Path) -> None:
        """`path` was just written by this conversation's export."""
        try:
            self.written[path] = file_stamp(os.stat(path, follow_symlinks=False))
        except OSError:
            self.written.pop(path, None)
