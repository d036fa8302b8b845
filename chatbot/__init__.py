"""blip2-chat: a terminal chatbot that talks about images, built on BLIP-2."""

__version__ = "0.1.0"
