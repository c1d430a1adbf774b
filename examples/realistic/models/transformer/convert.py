"""Convert the float32 checkpoint into the float16 serving format and check it.

The weights are cast to float16 and written as one safetensors file; a calibration set
(seeded sequences) runs through the float32 and the float16 model to check that the
hidden states agree within tolerance before the image is kept.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import yaml
from safetensors.numpy import save_file
from tqdm import tqdm

import model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--calibration-sequences", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    started = time.monotonic()
    config = yaml.safe_load((args.checkpoint / "config.yaml").read_text())
    fp32 = {p.stem: np.load(p) for p in sorted(args.checkpoint.glob("*.npy"))}
    fp16 = {name: tensor.astype(np.float16) for name, tensor in fp32.items()}
    served = {name: tensor.astype(np.float32) for name, tensor in fp16.items()}  # what infer.py computes with
    worst = 0.0
    steps = range(0, args.calibration_sequences, args.batch)
    for i, start in enumerate(tqdm(steps, desc="checking", mininterval=5, ascii=True)):
        x = model.inputs(config["seed"] + 1 + i, min(args.batch, args.calibration_sequences - start))
        ref, out = model.forward(fp32, x), model.forward(served, x)
        worst = max(worst, float(np.abs(ref - out).max() / np.abs(ref).max()))
    if worst > 0.01:
        raise SystemExit(f"the float16 model is off by {worst:.4f} (relative) on the calibration set")
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(fp16, str(args.out / "model.safetensors"), metadata={"format": "float16"})
    (args.out / "config.yaml").write_text(yaml.safe_dump({**config, "dtype": "float16", "worst_error": worst}))
    size = (args.out / "model.safetensors").stat().st_size
    print(f"converted: {size / 2**20:.0f} MB float16; worst relative error {worst:.5f} "
          f"over {args.calibration_sequences} calibration sequences in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
