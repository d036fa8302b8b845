"""The Textual chat app (`blip2-chat IMAGE`). Imports no torch: the model loads inside a worker.

Start it with `chatbot.tui.app.create_app(settings, ...)` (tests) or `run_tui` (the CLI).
"""
