"""Two realistic "models" whose containers run real inference with numpy.

Each image is a Python base with pip-installed dependencies, a checkpoint of 200 MB or more
and a conversion made at build time (see models/*/Dockerfile).  The batch size is a run
option, not a build input: no build arg refers to it, so it is not part of the key and a
sweep shares one image.
"""

import pytest


@pytest.mark.model("mlp", context="models/mlp", tags=["mlp", "int8"], timeout=600)
@pytest.mark.parametrize("batch_size", [1, 16, 64])
def test_mlp_inference(model_run, model_image, batch_size):
    result = model_run(env={"BATCH_SIZE": str(batch_size)})
    assert result.ok, result.logs
    assert result.metric == "samples_per_second"
    assert result.performance > 0
    print(f"mlp batch {batch_size}: {result.performance} samples/s (cache hit: {model_image.cache_hit})")


@pytest.mark.model("transformer", context="models/transformer", tags=["transformer", "fp16"], timeout=600)
@pytest.mark.parametrize("batch_size", [1, 4])
def test_transformer_inference(model_run, model_image, batch_size):
    result = model_run(env={"BATCH_SIZE": str(batch_size)})
    assert result.ok, result.logs
    assert result.metric == "samples_per_second"
    assert result.performance > 0
    print(f"transformer batch {batch_size}: {result.performance} samples/s (cache hit: {model_image.cache_hit})")
