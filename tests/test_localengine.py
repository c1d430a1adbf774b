"""The private engine used by tests, the README and CI: it starts, answers, and never outlives its owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_madcache.localengine import engine_answers

SCRIPT = """
import sys, time
from pytest_madcache.localengine import private_engine
with private_engine() as host:
    print(host, flush=True)
    time.sleep(300)
"""


def test_engine_answers_is_false_for_a_dead_socket(tmp_path):
    assert engine_answers(f"unix://{tmp_path}/nothing.sock") is False


@pytest.mark.usefixtures("docker_host")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_private_engine_stops_when_its_owner_is_terminated(sig):
    """A `timeout` or CI cancel (SIGTERM) or Ctrl-C must not leave a dockerd behind."""
    if os.geteuid() != 0:
        pytest.skip("a private dockerd needs root")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    host = proc.stdout.readline().strip()
    assert host.startswith("unix://"), proc.stderr.read()
    base = Path(host[len("unix://"):]).parent
    assert engine_answers(host)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 10
    while base.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not base.exists(), "the engine's temp dir is removed"
    assert not engine_answers(host)
    leftover = subprocess.run(["pgrep", "-f", str(base)], capture_output=True, text=True).stdout.split()
    assert leftover == [], f"processes still running for {base}: {leftover}"
