"""How the registry client meets faults: the retry policy, the signal an upload resumes on, and a
failure said in one line.

A leaf shared by registry.py (which retries requests), upload.py (which
resumes uploads) and auth.py (which reports an unreachable token service).
Values and one exception only: it sends nothing and sleeps nowhere.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Optional

from pytest_madcache.remote.base import RemoteUnavailable

__all__ = ["RetryPolicy", "Dropped", "RETRY_STATUS", "short_reason"]

RETRY_STATUS = (429, 500, 502, 503, 504)


class Dropped(RemoteUnavailable):
    """A request that is not retried in place (an upload body) failed in a way worth resuming."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently transient failures are retried: `attempts` tries in all,
    waits of `base` * 2**n seconds (full jitter) capped at `cap`."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 8.0

    def wait(self, attempt: int, retry_after: Optional[str] = None) -> float:
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), 4 * self.cap)
            except ValueError:
                pass
        return random.uniform(0.5, 1.0) * min(self.cap, self.base * (2 ** attempt))


def short_reason(exc: BaseException) -> str:
    """The gist of a connection or TLS failure (its errno or SSL reason), not the whole repr chain."""
    text = str(exc)
    match = re.search(r"\[(?:Errno [^\]]+|SSL: [^\]]+)\] [^'\")]+", text)
    return match.group(0) if match else text[:200]
