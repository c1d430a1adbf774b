"""Write the MLP's float32 checkpoint (one .npy per tensor and config.yaml) from a fixed seed.

It stands for the trained weights a real image downloads or copies in: 210 MB of tensors.
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
    (args.out / "config.yaml").write_text(yaml.safe_dump({"arch": "mlp", "sizes": list(model.SIZES),
                                                          "seed": args.seed, "dtype": "float32"}))
    print(f"checkpoint: {total / 2**20:.0f} MB of float32 tensors in {args.out} in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
