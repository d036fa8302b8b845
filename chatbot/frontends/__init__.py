"""Front ends other than the chat app: one-shot commands, listings, the screen-reader chat, describe."""
