"""Start the career-coach chat: `python app.py`, then open http://127.0.0.1:7860."""

import sys

from coach.config import load_settings
from coach.ui import serve

if __name__ == "__main__":
    sys.exit(serve(load_settings()))
