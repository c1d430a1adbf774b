"""The `model` mark's keywords and its help line.

Apart from model.py so that registering the mark costs pytest nothing: a suite whose tests use no
model never imports what reads one (the key, the image references, the run options).
"""

from __future__ import annotations

from pytest_madcache.core.perfspec import PERF_KWARGS

__all__ = ["BUILD_KWARGS", "RUN_KWARGS", "MARK_KWARGS", "MARK_HELP"]

BUILD_KWARGS = ("dockerfile", "context", "image", "tags", "build_args", "nodes", "secrets",
                "key_params", "ignore_params", "builder", "base_key")
RUN_KWARGS = ("command", "env", "timeout", "gpus", "rocm", "devices", "shm_size", "ipc_mode", "volumes",
              "network_mode")
MARK_KWARGS = ("name",) + BUILD_KWARGS + RUN_KWARGS + PERF_KWARGS

MARK_HELP = (
    "model(name, dockerfile=None, context=None, image=None, tags=None, build_args=None, nodes=1, "
    "command=None, env=None, timeout=None, gpus=None, rocm=False, devices=None, shm_size=None, "
    "ipc_mode=None, volumes=None, network_mode=None, key_params=None, ignore_params=None, secrets=None, "
    "builder='auto', base_key=None, perf_direction=None, perf_repeats=1, perf_warmup=0, perf_threshold=None): "
    "the Docker image a model test builds (or loads from the madcache cache), how its container runs, "
    "and how its performance is compared with a baseline"
)
