"""A byte progress line for long saves and loads: on a terminal only.

It must not decide anything: callers say when to draw.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TB"  # pragma: no cover


class Progress:
    """`label  120.00 MB / 300.00 MB  150.2 MB/s`, redrawn at most 10 times a second.

    Quiet unless the stream is a terminal, so logs and CI output stay clean.
    """

    def __init__(self, label: str, total: Optional[int] = None, stream: Optional[TextIO] = None,
                 enabled: Optional[bool] = None) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last >= 0.1:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.start, 1e-6)
        total = f" / {human_bytes(self.total)}" if self.total else ""
        self.stream.write(f"\r{self.label}  {human_bytes(self.done)}{total}  {human_bytes(rate)}/s   ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
