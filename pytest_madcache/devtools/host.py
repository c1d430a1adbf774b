"""What this machine has for a test engine: whether one answers, busybox, and apt-get for the rest.

Shared by the engine launchers (dockerd.py, podman.py) and localengine.py,
which starts them.  It starts no engine; installing packages needs root.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from typing import Optional, Sequence

__all__ = ["EngineUnavailable", "engine_answers", "install_packages", "busybox_path", "socket_path"]

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


class EngineUnavailable(RuntimeError):
    """No engine answers and none could be started here."""


def socket_path(host: str) -> Optional[str]:
    if host.startswith("unix://"):
        return host[len("unix://"):]
    return None


def engine_answers(host: Optional[str] = None, timeout: float = 2.0) -> bool:
    """True when an engine answers `_ping` at `host` (default: DOCKER_HOST or the default socket)."""
    host = host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    path = socket_path(host)
    if path is None:
        try:
            import docker

            docker.DockerClient(base_url=host, timeout=timeout).ping()
            return True
        except Exception:
            return False
    if not os.path.exists(path):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(64)
        return b" 200 " in reply
    except OSError:
        return False


def install_packages(packages: Sequence[str], log=sys.stderr) -> None:
    """apt-get install `packages` (root only); raise EngineUnavailable with the reason."""
    if not packages:
        return
    if os.geteuid() != 0:
        raise EngineUnavailable(
            f"no Docker engine answers and {', '.join(packages)} cannot be installed without root; "
            "start an engine and set DOCKER_HOST"
        )
    if not shutil.which("apt-get"):
        raise EngineUnavailable(f"no Docker engine answers and apt-get is missing to install {', '.join(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"madcache: installing {' '.join(packages)} with apt-get", file=log, flush=True)
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise EngineUnavailable(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}")


def busybox_path(required: bool = True) -> Optional[str]:
    """A statically linked busybox, to copy into `FROM scratch` test images."""
    for candidate in BUSYBOX_CANDIDATES:
        if os.path.isfile(candidate):
            try:
                out = subprocess.run(["file", candidate], capture_output=True, text=True).stdout
            except FileNotFoundError:
                out = ""
            if "dynamically linked" not in out:
                return candidate
    if required:
        raise EngineUnavailable("busybox-static is not installed (apt-get install busybox-static)")
    return None
