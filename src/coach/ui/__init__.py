"""The chat page (Gradio). Importing this package switches off Gradio's analytics and hub look-ups first."""

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from coach.ui.answering import APOLOGY  # noqa: E402
from coach.ui.app import API_NAME, EXAMPLES, build_ui  # noqa: E402
from coach.ui.server import is_loopback, launch, serve  # noqa: E402

__all__ = ["API_NAME", "APOLOGY", "EXAMPLES", "build_ui", "is_loopback", "launch", "serve"]
