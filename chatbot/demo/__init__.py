"""A small generated world of shapes, and a BLIP-2 trained here on it: an offline demo that really answers.

`world.py` draws the pictures and words the captions; `questions.py` asks single questions about them;
`dialogues.py` builds conversations whose follow-ups need the earlier turns; `examples.py` folds all
of them into prompts with our own `prompts/` package, exactly as the chat does. None of these import
torch. `training/` (torch) builds and trains the chat model (`python -m chatbot.demo.train`) and the
retrieval model for search (`python -m chatbot.demo.train_search`, texts from `search_queries.py`); their
weights live in `weights/chat` and `weights/search`, both named by `--model demo`.
"""
