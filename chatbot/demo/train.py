"""`python -m chatbot.demo.train`: train the demo chat model from scratch (the loop is chatbot/demo/training/run.py)."""

from chatbot.demo.training.run import main

if __name__ == "__main__":
    raise SystemExit(main())
