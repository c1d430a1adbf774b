"""What a test needs from the machine: under CI=true its absence fails the test with the reason,
elsewhere it skips with it (CI must never pass by skipping what it was meant to prove)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(message: str) -> NoReturn:
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
