"""`python -m chatbot` runs the blip2-chat command."""

import sys

from chatbot.cli import main

sys.exit(main())
