"""Screens pushed over the chat: the image picker with a live preview, and help."""
