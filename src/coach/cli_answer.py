"""`coach ask`, `coach chat`, `coach eval`, `coach serve` (filled in with the answering pipeline)."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register the answer commands."""
