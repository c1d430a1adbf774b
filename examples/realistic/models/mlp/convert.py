"""Convert the float32 checkpoint into the int8 serving format, calibrated and checked.

Post-training quantization: each weight matrix becomes int8 with one scale per output
channel; a calibration set (seeded inputs) runs through both the float32 and the int8
model to record each layer's activation range and to check that the int8 model agrees
with the float32 one.  The result is one safetensors file, what infer.py loads.
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


def quantize(weight: np.ndarray):
    scale = np.abs(weight).max(axis=0) / 127.0
    scale[scale == 0] = 1.0
    return np.clip(np.rint(weight / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--calibration-samples", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    started = time.monotonic()
    config = yaml.safe_load((args.checkpoint / "config.yaml").read_text())
    fp32 = {p.stem: np.load(p) for p in sorted(args.checkpoint.glob("*.npy"))}
    tensors, deq = {}, {}
    for name, _, _ in model.layers():
        q, scale = quantize(fp32[f"{name}.weight"])
        tensors[f"{name}.weight.int8"], tensors[f"{name}.weight.scale"] = q, scale
        tensors[f"{name}.bias"] = fp32[f"{name}.bias"]
        deq[f"{name}.weight"], deq[f"{name}.bias"] = q.astype(np.float32) * scale, fp32[f"{name}.bias"]

    agree, worst = 0, 0.0
    ranges = {name: 0.0 for name, _, _ in model.layers()}
    steps = range(0, args.calibration_samples, args.batch)
    for i, start in enumerate(tqdm(steps, desc="calibrating", mininterval=5, ascii=True)):
        x = model.inputs(config["seed"] + 1 + i, min(args.batch, args.calibration_samples - start))
        h = x
        for name, _, _ in model.layers():  # activation ranges of the int8 model, layer by layer
            ranges[name] = max(ranges[name], float(np.abs(h).max()))
            h = np.maximum(h @ deq[f"{name}.weight"] + deq[f"{name}.bias"], 0)
        ref, out = model.forward(fp32, x), model.forward(deq, x)
        agree += int((ref.argmax(1) == out.argmax(1)).sum())
        worst = max(worst, float(np.abs(ref - out).max() / np.abs(ref).max()))
    top1 = agree / args.calibration_samples
    if top1 < 0.9:
        raise SystemExit(f"int8 model agrees with float32 on {top1:.1%} of the calibration set only")
    for name, value in ranges.items():
        tensors[f"{name}.input_absmax"] = np.array([value], dtype=np.float32)

    args.out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out / "model.safetensors"), metadata={"format": "int8-per-channel"})
    (args.out / "config.yaml").write_text(yaml.safe_dump({**config, "dtype": "int8", "top1_agreement": top1}))
    size = (args.out / "model.safetensors").stat().st_size
    print(f"converted: {size / 2**20:.0f} MB int8; top-1 agreement {top1:.2%}, worst relative error {worst:.3f} "
          f"over {args.calibration_samples} calibration samples in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
