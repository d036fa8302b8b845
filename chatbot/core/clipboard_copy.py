"""Copy text to the system clipboard with the platform's tool (the chat app's Ctrl+Y).

The app also sends the text to the terminal (OSC 52), which works over SSH but only where the terminal
(and tmux, with `set-clipboard on`) allows it, and nothing tells whether it did. A clipboard tool
says whether it worked: `wl-copy` (Wayland), then `xclip`, then `xsel` (X11) on Linux and other Unix;
`pbcopy` on macOS. A tool that cannot reach a clipboard (wl-copy outside Wayland, xclip without a
display) gives way to the next. No Textual, no torch.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

from chatbot.core.clipboard import TIMEOUT_S

COPY_TOOLS = {
    "unix": (("wl-copy",), ("xclip", "-selection", "clipboard"), ("xsel", "--clipboard", "--input")),
    "mac": (("pbcopy",),),
}


def copy_text(text: str, platform: str | None = None) -> str | None:
    """Put `text` on the system clipboard; the name of the tool that did, or None when none could."""
    platform = platform or sys.platform
    windows = platform.startswith(("win", "cygwin"))  # its terminals take the terminal's way (OSC 52)
    for command in () if windows else COPY_TOOLS["mac" if platform == "darwin" else "unix"]:
        found = shutil.which(command[0])
        if found is None:
            continue
        try:
            done = subprocess.run([found, *command[1:]], input=text.encode("utf-8"), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return command[0]
    return None
