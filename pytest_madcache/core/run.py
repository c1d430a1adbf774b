"""What a model run is asked and what it gives back: pure values shared by the engines (which run
the container), perf tracking (which reads the result) and hook implementers."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["RunOptions", "RunResult", "parse_performance", "normalise_volumes"]


_PERF_RE = re.compile(r"^\s*performance:\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s+(\S.*?)\s*$")


@dataclass(frozen=True)
class RunOptions:
    """How to run a model's container; unset values are left to the engine."""

    command: Optional[Union[str, List[str]]] = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: Optional[float] = None
    gpus: Optional[Union[str, int, List[str]]] = None  # NVIDIA: "all", a count, or device ids
    rocm: bool = False  # AMD: /dev/kfd and /dev/dri, group video
    devices: Sequence[str] = ()
    shm_size: Optional[Union[str, int]] = None
    ipc_mode: Optional[str] = None
    volumes: Sequence[str] = ()  # "host:container[:mode]", host paths absolute
    network_mode: Optional[str] = None
    keep_alive: bool = False  # leave the container running after the model ran (see run_container)


@dataclass
class RunResult:
    """What one model run produced."""

    exit_code: int
    logs: str
    duration: float
    performance: Optional[float] = None
    metric: Optional[str] = None
    timed_out: bool = False
    cache_hit: Optional[bool] = None
    image: Optional[str] = None
    container_id: Optional[str] = None  # the container left running (keep_alive); None: it was removed
    samples: Tuple[float, ...] = ()  # with the mark's perf_repeats: each measured run (performance is their median)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def status(self) -> str:
        """madengine's status words."""
        return "SUCCESS" if self.ok else "FAILURE"


def parse_performance(logs: str) -> Tuple[Optional[float], Optional[str]]:
    """The value and metric of the last `performance: <value> <metric>` line."""
    for line in reversed(logs.splitlines()):
        match = _PERF_RE.match(line)
        if match:
            return float(match.group(1)), match.group(2)
    return None, None


def normalise_volumes(volumes: Any, base_dir: Path) -> List[str]:
    """`{"host": "/container"}`, `{"host": {"bind": ..., "mode": ...}}` or `["host:/c[:ro]"]`
    -> `["/abs/host:/c:mode"]`; relative host paths are taken from `base_dir`."""
    items: List[Tuple[str, str, str]] = []
    if isinstance(volumes, Mapping):
        for host, target in volumes.items():
            if isinstance(target, Mapping):
                bind, mode = target.get("bind"), target.get("mode", "rw")
            else:
                bind, mode = target, "rw"
            if not isinstance(bind, str):
                raise ValueError(f"{host!r}: the container path must be a string, got {bind!r}")
            items.append((str(host), bind, str(mode)))
    elif isinstance(volumes, (list, tuple)):
        for spec in volumes:
            if not isinstance(spec, str) or spec.count(":") not in (1, 2):
                raise ValueError(f"{spec!r} must look like 'host:container' or 'host:container:ro'")
            parts = spec.split(":")
            items.append((parts[0], parts[1], parts[2] if len(parts) == 3 else "rw"))
    else:
        raise ValueError(f"{volumes!r} must be a dict or a list of 'host:container[:mode]'")
    out = []
    for host, bind, mode in items:
        if not bind.startswith("/"):
            raise ValueError(f"container path {bind!r} must be absolute")
        if mode not in ("rw", "ro") and not set(mode.split(",")) <= {"rw", "ro", "z", "Z", "shared", "slave",
                                                                        "private", "rshared", "rslave", "rprivate"}:
            raise ValueError(f"mode {mode!r} of {host!r} is not a volume mode")
        is_named = not (host.startswith((".", "/", "~")) or os.sep in host)
        if not is_named:
            p = Path(host).expanduser()
            host = str((p if p.is_absolute() else base_dir / p).resolve())
        out.append(f"{host}:{bind}:{mode}")
    return out
