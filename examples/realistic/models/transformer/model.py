"""A stack of pre-norm transformer encoder blocks in numpy: shape, seeded initialisation, forward pass."""

from __future__ import annotations

from typing import Dict, Iterator, Tuple

import numpy as np
from einops import rearrange
from scipy.special import erf, softmax

D_MODEL, HEADS, D_FF, BLOCKS = 1024, 16, 4096, 4  # 50 M parameters, 201 MB in float32
SEQ_LEN = 32


def shapes() -> Iterator[Tuple[str, Tuple[int, ...]]]:
    for b in range(BLOCKS):
        p = f"block{b}."
        yield p + "ln1.gain", (D_MODEL,)
        yield p + "attn.qkv", (D_MODEL, 3 * D_MODEL)
        yield p + "attn.out", (D_MODEL, D_MODEL)
        yield p + "ln2.gain", (D_MODEL,)
        yield p + "mlp.up", (D_MODEL, D_FF)
        yield p + "mlp.down", (D_FF, D_MODEL)


def init(seed: int) -> Iterator[Tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    for name, shape in shapes():
        if name.endswith("gain"):
            yield name, np.ones(shape, dtype=np.float32)
        else:
            yield name, rng.standard_normal(shape, dtype=np.float32) * np.float32(1 / np.sqrt(shape[0]))


def _layer_norm(x: np.ndarray, gain: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * gain


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def forward(params: Dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Hidden states for `x` of shape (batch, SEQ_LEN, D_MODEL)."""
    for b in range(BLOCKS):
        p = f"block{b}."
        qkv = _layer_norm(x, params[p + "ln1.gain"]) @ params[p + "attn.qkv"]
        q, k, v = rearrange(qkv, "b s (three h d) -> three b h s d", three=3, h=HEADS)
        attn = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]), axis=-1)
        x = x + rearrange(attn @ v, "b h s d -> b s (h d)") @ params[p + "attn.out"]
        x = x + _gelu(_layer_norm(x, params[p + "ln2.gain"]) @ params[p + "mlp.up"]) @ params[p + "mlp.down"]
    return x


def inputs(seed: int, batch: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, SEQ_LEN, D_MODEL), dtype=np.float32)
