"""Two example "models" whose containers do real, measurable work with busybox.

`hashbench` is swept over batch sizes; `ignore_params=["batch_size"]` keeps
the batch size out of the cache key, so the whole sweep shares one image.
"""

import pytest

pytestmark = pytest.mark.model("hashbench", context="models/hashbench", tags=["hashbench", "bench"],
                               ignore_params=["batch_size"], timeout=300)


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_hashbench(model_run, model_image, batch_size):
    result = model_run(env={"BATCH_SIZE": str(batch_size)})
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
