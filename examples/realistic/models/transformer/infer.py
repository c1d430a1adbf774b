"""Serve the float16 transformer: load it, run batches of BATCH_SIZE sequences, print madengine's performance line."""

from __future__ import annotations

import os
import time

import numpy as np
from safetensors.numpy import load_file

import model


def main() -> None:
    batch = int(os.environ.get("BATCH_SIZE", "1"))
    seconds = float(os.environ.get("SECONDS_PER_RUN", "0.5"))
    params = {name: tensor.astype(np.float32) for name, tensor in load_file("/model/serving/model.safetensors").items()}
    x = model.inputs(7, batch)
    hidden = model.forward(params, x)  # warm-up
    assert hidden.shape == x.shape and np.isfinite(hidden).all()
    done, start = 0, time.perf_counter()
    while True:
        model.forward(params, x)
        done += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    print(f"transformer fp16: batch {batch} x {model.SEQ_LEN} tokens, {done} samples in {elapsed:.3f} s")
    print(f"performance: {done / elapsed:.1f} samples_per_second")


if __name__ == "__main__":
    main()
