"""A registry killed at random points never leaves a half entry, and the next run completes.

A few trials of the campaign that bench/fault_campaign.py runs at length
(its results: bench/results/remote-faults.json), the last one with fetches streamed into a real
engine's load.
"""

from __future__ import annotations

import pytest

from tests.fault_campaign import run_campaign


def test_random_kills_leave_no_half_entry_and_the_next_run_completes(registry, tmp_path):
    # `registry` only makes sure docker-registry is installed; every trial starts its own.
    result = run_campaign(4, seed=1414, work=tmp_path)
    summary = result["summary"]
    assert summary["trials"] == 4 and summary["killed_mid_transfer"] >= 2
    assert summary["remote_half_entries"] == 0
    assert summary["local_half_entries"] == 0
    assert summary["next_run_completed"] == 4


@pytest.mark.engine
def test_a_registry_killed_while_an_entry_streams_into_the_engine_leaves_no_image_and_no_half_entry(
        engine, registry, tmp_path):
    result = run_campaign(0, seed=1414, work=tmp_path, engine=engine, stream_trials=3)
    summary = result["summary"]
    assert summary["stream_trials"] == 3 and summary["killed_mid_transfer"] >= 1
    assert summary["local_half_entries"] == 0 and summary["temp_files_left"] == 0
    assert summary["engine_images_without_entry"] == 0
    assert summary["next_run_completed"] == 3  # the entry in the store and its image in the engine
