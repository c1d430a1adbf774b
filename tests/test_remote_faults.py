"""A registry killed at random points never leaves a half entry, and the next run completes.

A few trials of the campaign that bench/fault_campaign.py runs at length
(its results: bench/results/remote-faults.json).
"""

from __future__ import annotations

from tests.fault_campaign import run_campaign


def test_random_kills_leave_no_half_entry_and_the_next_run_completes(registry, tmp_path):
    # `registry` only makes sure docker-registry is installed; every trial starts its own.
    result = run_campaign(4, seed=1414, work=tmp_path)
    summary = result["summary"]
    assert summary["trials"] == 4 and summary["killed_mid_transfer"] >= 2
    assert summary["remote_half_entries"] == 0
    assert summary["local_half_entries"] == 0
    assert summary["next_run_completed"] == 4
