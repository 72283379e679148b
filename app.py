"""Start the career-coach chat: `python app.py`, then open http://127.0.0.1:7860."""

import sys

from coach.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve"]))  # `coach serve`: settings from COACH_* and .env, a bad one is one line, not a traceback
