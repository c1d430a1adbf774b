"""A private dockerd: Debian 12's (installed with apt-get), or Debian 13's fetched binaries.

Debian 13 (trixie) brings dockerd 26.1 and containerd 1.7; enginepkgs.py
fetches them (and docker-buildx) into a per-user cache without touching
apt's setup.  Trixie's own runc needs glibc 2.38, so Debian 12's runc serves
its containerd, through a private bin dir put first on PATH.  This module
says how to start the daemon (command, environment, config file under the
engine's base directory); localengine.py starts and stops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from pytest_madcache.devtools.host import EngineUnavailable

__all__ = ["dockerd_launch", "debian_runc", "buildx_path", "trixie"]

RUNC_CANDIDATES = ("/usr/sbin/runc", "/usr/bin/runc")
# Trixie's own runc needs glibc 2.38; Debian 12's runc (found through the
# private bin dir) serves its containerd instead.
# dockerd 26 will not start without docker-proxy on PATH (its userland proxy is on by default), and
# Debian 12's /usr/sbin one is there only once docker.io is installed: a fresh machine has none.
TRIXIE_LINKS = ("containerd", "containerd-shim-runc-v2", "ctr", "docker-proxy")


def debian_runc() -> Optional[str]:
    """A runc that runs here (Debian 12's), for trixie's containerd."""
    for candidate in (*RUNC_CANDIDATES, shutil.which("runc")):
        if candidate and os.access(candidate, os.X_OK):
            with contextlib.suppress(OSError):
                if subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
                    return candidate
    return None


def trixie(download: bool = True, log=sys.stderr) -> Dict[str, Path]:
    from pytest_madcache.devtools.enginepkgs import PackageError, trixie_files, trixie_root

    try:
        return trixie_files(trixie_root(download=download, log=log))
    except PackageError as exc:
        raise EngineUnavailable(f"no Debian 13 engine binaries: {exc}") from None


def buildx_path(download: bool = True, log=sys.stderr) -> Optional[str]:
    """Debian 13's docker-buildx binary (fetched first when needed and `download`), or None."""
    try:
        path = trixie(download=download, log=log)["docker-buildx"]
    except EngineUnavailable as exc:
        if download:
            print(f"madcache: no docker-buildx: {exc}", file=log, flush=True)
        return None
    return str(path) if os.access(path, os.X_OK) else None


def dockerd_launch(kind: str, base: Path, host: str, log) -> Tuple[List[str], Dict[str, str], str]:
    """Command, environment and log name of a private dockerd of `kind`."""
    env = dict(os.environ)
    config: Dict[str, object] = {}
    if kind == "debian12":
        dockerd = shutil.which("dockerd")
        if not dockerd:
            raise EngineUnavailable("dockerd is not installed (apt-get install docker.io)")
        # dockerd 20.10 writes its identity key to /etc/docker unless told otherwise.
        config["deprecated-key-path"] = str(base / "key.json")
    else:
        dockerd = _trixie_bin(base, env, log)
        if kind == "debian13-containerd":
            config["features"] = {"containerd-snapshotter": True}
    (base / "daemon.json").write_text(json.dumps(config) + "\n")
    cmd = [
        dockerd,
        "--config-file", str(base / "daemon.json"),
        "--data-root", str(base / "data"),
        "--exec-root", str(base / "exec"),
        "-H", host,
        "--pidfile", str(base / "docker.pid"),
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
    ]
    return cmd, env, "dockerd"


def _trixie_bin(base: Path, env: Dict[str, str], log) -> str:
    """Debian 13's dockerd, with its containerd, shim, ctr and a runc that runs here linked into
    `base`/bin, which `env`'s PATH now starts with."""
    runc = debian_runc()
    if runc is None:
        raise EngineUnavailable("no runc that runs here for Debian 13's containerd (apt-get install runc)")
    files = trixie(log=log)
    bindir = base / "bin"
    bindir.mkdir(exist_ok=True)
    for name, target in [*((n, files[n]) for n in TRIXIE_LINKS), ("runc", Path(runc))]:
        link = bindir / name
        with contextlib.suppress(FileNotFoundError):
            link.unlink()  # a reused base
        link.symlink_to(target)
    # dockerd starts its own containerd from PATH; containerd finds the shim and runc there.
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', os.defpath)}"
    return str(files["dockerd"])
