"""How the registry client meets faults: the retry policy, the wait between tries, the signal an
upload resumes on, and a failure said in one line.

A leaf shared by registry.py (which retries requests), upload.py (which
resumes uploads) and auth.py (which reports an unreachable token service).
It sends nothing; `pause` is where every retry waits, and a thread whose
work may be stopped (a prefetch job, at the session's end) has its waits
cut short there (`stop_waits_on`).
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Optional

from pytest_madcache.remote.base import RemoteUnavailable

__all__ = ["RetryPolicy", "Dropped", "WaitStopped", "RETRY_STATUS", "short_reason", "pause", "stop_waits_on"]

_waits = threading.local()

RETRY_STATUS = (429, 500, 502, 503, 504)


class Dropped(RemoteUnavailable):
    """A request that is not retried in place (an upload body) failed in a way worth resuming."""


class WaitStopped(RemoteUnavailable):
    """A retry's wait cut short because the thread's work was stopped: not the registry's fault."""


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


@contextlib.contextmanager
def stop_waits_on(stopped: threading.Event) -> Iterator[None]:
    """While it lasts, this thread's retry waits end as soon as `stopped` is set (WaitStopped)."""
    _waits.stopped = stopped
    try:
        yield
    finally:
        _waits.stopped = None


def pause(seconds: float) -> None:
    """A retry's wait; cut short on a thread whose work was stopped (`stop_waits_on`)."""
    stopped: Optional[threading.Event] = getattr(_waits, "stopped", None)
    if stopped is None:
        time.sleep(seconds)
    elif stopped.wait(seconds) or stopped.is_set():
        raise WaitStopped("stopped while waiting to retry")
