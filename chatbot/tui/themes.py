"""The chat app's own theme: high contrast for low vision (pure black, white text, yellow focus).

The config file chooses a theme by name (`theme = "blip2-high-contrast"`); the names it accepts are
declared once in `chatbot.core.settings.THEMES`.
"""

from __future__ import annotations

from textual.theme import Theme

from chatbot.core.settings import HIGH_CONTRAST_THEME

HIGH_CONTRAST = Theme(
    name=HIGH_CONTRAST_THEME,
    primary="#FFFF00",  # focus, borders of the input: yellow on black, the strongest contrast after white
    secondary="#00FFFF",
    accent="#FFFF00",
    warning="#FFB000",
    error="#FF5050",
    success="#50FF50",
    foreground="#FFFFFF",
    background="#000000",
    surface="#000000",
    panel="#1A1A1A",
    dark=True,
    luminosity_spread=0.0,
    text_alpha=1.0,
)
