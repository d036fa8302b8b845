"""Building and training the demo chat model: the only part of chatbot/demo/ that imports torch and transformers.

`model.py` is the model's shape, tokenizer and processor; `batches.py` turns examples into tensors and the
answer-only loss; `run.py` is the seeded training loop (`python -m chatbot.demo.train`).
"""
