"""The conversation core: one conversation object, its commands, settings, sessions; no torch, no widgets."""
