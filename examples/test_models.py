"""Two example "models" whose containers do real, measurable work with busybox.

`hashbench` is swept over batch sizes; the batch size reaches no build arg,
so it is not part of the cache key and the whole sweep shares one image.

Knobs for the performance-tracking walk-through (docs/perf-tracking.md), all
off by default so the main job stays quick: HASHBENCH_ROUNDS=N hashes the
weights N times per run (more work, finer figures); HASHBENCH_REPEATS=N runs
the container once to warm up, then N times, and records the median and the
spread; HASHBENCH_SLOWDOWN=25 adds 25% more work that is not counted (20% less
throughput): the deliberate regression.
"""

import os

import pytest

REPEATS = int(os.environ.get("HASHBENCH_REPEATS", "1"))

pytestmark = pytest.mark.model("hashbench", context="models/hashbench", tags=["hashbench", "bench"],
                               timeout=300,
                               perf_repeats=REPEATS, perf_warmup=1 if REPEATS > 1 else 0)


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_hashbench(model_run, model_image, batch_size):
    result = model_run(env={"BATCH_SIZE": str(batch_size), "ROUNDS": os.environ.get("HASHBENCH_ROUNDS", "1"),
                            "SLOWDOWN": os.environ.get("HASHBENCH_SLOWDOWN", "0")})
    assert result.exit_code == 0, result.logs
    assert result.metric == "MB/s"
    assert result.performance > 0
    print(f"hashbench batch {batch_size} MB: {result.performance} {result.metric} (cache hit: {model_image.cache_hit})")


@pytest.mark.model("gzipbench", context="models/gzipbench", env={"LEVEL": "1"})
def test_gzipbench(model_run):
    result = model_run()
    assert result.ok, result.logs
    assert result.metric == "MB/s"
    assert result.performance > 0
