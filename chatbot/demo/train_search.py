"""`python -m chatbot.demo.train_search`: train the demo retrieval model from scratch (the loop is
chatbot/demo/training/retrieval_run.py); `index --model demo` and `search` then use it."""

from chatbot.demo.training.retrieval_run import main

if __name__ == "__main__":
    raise SystemExit(main())
