"""The chat app's widgets, one per screen area: transcript, image preview, input, status line."""
