"""Keys as people read them (`ctrl+o,f2` is "Ctrl+O or F2"), and the keys an action of the chat app has with the
config file's [keys] applied: so a sentence that names a key names the one in use, not the default."""

from __future__ import annotations

from collections.abc import Mapping

from chatbot.core.settings import KEY_ACTIONS

_NAMES = {"pageup": "PageUp", "pagedown": "PageDown", "escape": "Esc"}  # as the status line says them


def key_label(keys: str, joined: str = " or ") -> str:
    """`ctrl+o,f2` as people write it: Ctrl+O or F2 (`joined` between them; PageUp, PageDown as written)."""
    return joined.join("+".join(_NAMES.get(part, part.upper() if len(part) == 1 else part.capitalize())
                                for part in key.split("+")) for key in keys.split(","))


def action_keys(keymap: Mapping[str, str] | None, action: str) -> str:
    """The keys of `action` (a KEY_ACTIONS id) in Textual's names, with `keymap` (the config file's [keys]) applied."""
    return (keymap or {}).get(action, KEY_ACTIONS[action][0])


def action_key_label(keymap: Mapping[str, str] | None, action: str) -> str:
    """The first key of `action` as people read it ("Esc"; "F2" when [keys] says `stop = "f2,escape"`)."""
    return key_label(action_keys(keymap, action).split(",")[0])
