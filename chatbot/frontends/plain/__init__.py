"""The screen-reader chat (`chat --plain`): labelled plain lines."""
