"""Make sure the base image and the wheels are in place before any image key is computed.

`prepare.py` does the work; run it first (the main job does, and times it apart) so that
the suite's own time holds only what the cache changes: building or loading the models.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import prepare  # noqa: E402


def pytest_configure(config) -> None:
    prepare.prepare()
