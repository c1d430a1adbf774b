"""Serve the int8 MLP: load it, run batches of BATCH_SIZE, print madengine's performance line."""

from __future__ import annotations

import os
import time

import numpy as np
from safetensors.numpy import load_file

import model


def main() -> None:
    batch = int(os.environ.get("BATCH_SIZE", "1"))
    seconds = float(os.environ.get("SECONDS_PER_RUN", "0.5"))
    tensors = load_file("/model/serving/model.safetensors")
    params = {}
    for name, _, _ in model.layers():
        params[f"{name}.weight"] = tensors[f"{name}.weight.int8"].astype(np.float32) * tensors[f"{name}.weight.scale"]
        params[f"{name}.bias"] = tensors[f"{name}.bias"]
    x = model.inputs(7, batch)
    logits = model.forward(params, x)  # warm-up
    assert logits.shape == (batch, model.SIZES[-1]) and np.isfinite(logits).all()
    done, start = 0, time.perf_counter()
    while True:
        model.forward(params, x)
        done += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    print(f"mlp int8: batch {batch}, {done} samples in {elapsed:.3f} s, top-1 of the first: {int(logits[0].argmax())}")
    print(f"performance: {done / elapsed:.1f} samples_per_second")


if __name__ == "__main__":
    main()
