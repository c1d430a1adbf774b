"""Write the transformer's float32 checkpoint (one .npy per tensor and config.yaml) from a fixed seed.

It stands for the trained weights a real image downloads or copies in: 201 MB of tensors.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import yaml

import model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, tensor in model.init(args.seed):
        np.save(args.out / f"{name}.npy", tensor)
        total += tensor.nbytes
    config = {"arch": "transformer-encoder", "d_model": model.D_MODEL, "heads": model.HEADS, "d_ff": model.D_FF,
              "blocks": model.BLOCKS, "seed": args.seed, "dtype": "float32"}
    (args.out / "config.yaml").write_text(yaml.safe_dump(config))
    print(f"checkpoint: {total / 2**20:.0f} MB of float32 tensors in {args.out} in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
