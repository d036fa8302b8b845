"""The chat app's own theme: high contrast for low vision (pure black, white text, yellow focus).

The config file chooses a theme by name (`theme = "blip2-high-contrast"`); the names it accepts are
declared once in `chatbot.core.settings.THEMES`.
"""

from __future__ import annotations

from textual.theme import Theme

from chatbot.core.settings import HIGH_CONTRAST_THEME

# WCAG's enhanced contrast (AAA) asks 7:1 for text. Textual's defaults dim text to 87% and muted text to 60%
# (6.1:1 on the panel), so the text colours are set outright; muted grey is the darkest that keeps 7:1 on
# the panel (#1A1A1A, the status line and footer). tests/test_tui_finish.py measures what the screen shows.
MUTED = "#A8A8A8"  # 7.3:1 on the panel, 8.8:1 on black

HIGH_CONTRAST = Theme(
    name=HIGH_CONTRAST_THEME,
    primary="#FFFF00",  # focus, borders of the input: yellow on black, the strongest contrast after white
    secondary="#00FFFF",
    accent="#FFFF00",
    warning="#FFB000",
    error="#FF8080",  # 7.1:1 on the panel (#FF5050 was 6.5:1 even on black)
    success="#50FF50",
    foreground="#FFFFFF",
    background="#000000",
    surface="#000000",
    panel="#1A1A1A",
    dark=True,
    luminosity_spread=0.0,
    text_alpha=1.0,
    variables={
        "text": "#FFFFFF",
        "text-muted": MUTED,
        "text-disabled": MUTED,  # the input's placeholder
        "foreground-muted": MUTED,
        "foreground-disabled": MUTED,
        "block-cursor-foreground": "#000000",  # on the yellow highlight of lists (the picker, the palette)
        "block-cursor-blurred-foreground": "#FFFFFF",
        "block-cursor-blurred-background": "#333300",
        "input-selection-background": "#FFFF00",
        "input-selection-foreground": "#000000",
        "button-color-foreground": "#000000",
        "scrollbar": MUTED,  # the help's and the chat's scroll bars, on black
        "scrollbar-hover": "#FFFFFF",
        "scrollbar-active": "#FFFF00",
    },
)
