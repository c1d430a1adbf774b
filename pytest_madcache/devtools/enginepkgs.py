"""Engine binaries Debian 12 does not ship, fetched into a private per-user cache.

Debian 13 (trixie) has docker.io 26.1, containerd 1.7 and docker-buildx
0.13.  `trixie_root()` downloads those three packages from the Debian mirror
the machine already uses (the first `URIs:` of its debian.sources) with a
private sources list, package lists and archive dir, and unpacks them with
`dpkg -x`: the system's apt setup and installed packages are left alone.
The result lives in `engines_dir()/trixie` (`$MADCACHE_ENGINES_DIR`, else
`~/.cache/pytest-madcache/engines`), is built under a file lock so parallel
test workers download once, and is reused once its `complete` marker exists.

It must not install anything system-wide: the packages are unpacked under its own directory only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

__all__ = ["PackageError", "engines_dir", "debian_mirror", "trixie_root", "TRIXIE_PACKAGES"]

TRIXIE_PACKAGES = ("docker.io", "containerd", "docker-buildx")
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
LEGACY_SOURCES = Path("/etc/apt/sources.list")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
MARKER = "complete"
# Paths inside the unpacked tree that must exist for it to count as complete.
TRIXIE_FILES = {
    "dockerd": "usr/sbin/dockerd",
    "docker-proxy": "usr/sbin/docker-proxy",
    "containerd": "usr/bin/containerd",
    "containerd-shim-runc-v2": "usr/bin/containerd-shim-runc-v2",
    "ctr": "usr/bin/ctr",
    "docker-buildx": "usr/libexec/docker/cli-plugins/docker-buildx",
}


class PackageError(RuntimeError):
    """The packages could not be fetched or unpacked here (the message says why)."""


def engines_dir() -> Path:
    """Where fetched engines are kept: $MADCACHE_ENGINES_DIR, else the user's cache dir."""
    explicit = os.environ.get("MADCACHE_ENGINES_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "pytest-madcache" / "engines"


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses: the first `URIs:` of debian.sources."""
    try:
        for line in SOURCES.read_text().splitlines():
            if line.strip().lower().startswith("uris:"):
                uris = line.split(":", 1)[1].split()
                if uris:
                    return uris[0]
    except OSError:
        pass
    try:  # the one-line format of older installs: deb [options] URI suite components
        for line in LEGACY_SOURCES.read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if words[:1] == ["deb"]:
                words = words[1:]
                if words and words[0].startswith("["):
                    while words and not words[0].endswith("]"):
                        words.pop(0)
                    words = words[1:]
                if words:
                    return words[0]
    except OSError:
        pass
    raise PackageError(f"no Debian mirror found in {SOURCES} (first URIs: value) or {LEGACY_SOURCES}")


def trixie_files(root: Path) -> Dict[str, Path]:
    """The binaries of an unpacked trixie tree by name."""
    return {name: root / rel for name, rel in TRIXIE_FILES.items()}


def trixie_root(download: bool = True, log=sys.stderr) -> Path:
    """The unpacked Debian 13 docker.io, containerd and docker-buildx (fetched first when needed).

    Raises PackageError when they are not there and cannot be fetched (or
    `download` is false).
    """
    home = engines_dir() / "trixie"
    root = home / "root"
    if _complete(home):
        return root
    if not download:
        raise PackageError(f"the Debian 13 engine packages are not in {home} (and downloading was not allowed)")
    from filelock import FileLock, Timeout

    try:
        home.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PackageError(f"cannot create {home.parent}: {exc}") from None
    lock = FileLock(str(home.parent / "trixie.lock"))
    try:
        with lock.acquire(timeout=1800):
            if not _complete(home):  # another process may have finished meanwhile
                _fetch(home, log)
    except Timeout:
        raise PackageError(f"waited 30 minutes for another process fetching into {home}") from None
    return root


def _complete(home: Path) -> bool:
    return (home / MARKER).is_file() and all(p.is_file() for p in trixie_files(home / "root").values())


def _fetch(home: Path, log) -> None:
    for tool in ("apt-get", "dpkg"):
        if not shutil.which(tool):
            raise PackageError(f"{tool} is missing: the Debian 13 engine packages need apt-get and dpkg")
    if not KEYRING.is_file():
        raise PackageError(f"{KEYRING} is missing (apt-get install debian-archive-keyring)")
    mirror = debian_mirror()
    archives = home / "archives"
    for sub in ("lists/partial", "archives/partial", "cache"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    sources = home / "sources.list"
    sources.write_text(f"deb [signed-by={KEYRING}] {mirror} trixie main\n")
    options = [
        "-o", f"Dir::Etc::sourcelist={sources}",
        "-o", "Dir::Etc::sourceparts=-",
        "-o", f"Dir::State::Lists={home / 'lists'}",
        "-o", f"Dir::Cache={home / 'cache'}",  # keeps apt's package cache files out of /var/cache/apt
        "-o", f"Dir::Cache::archives={archives}",
        "-o", "Acquire::Languages=none",
        "-o", "APT::Sandbox::User=root",  # the _apt user cannot enter a private cache dir
    ]
    print(f"madcache: fetching Debian 13 {', '.join(TRIXIE_PACKAGES)} from {mirror} into {home}", file=log, flush=True)
    _run(["apt-get", *options, "-qq", "update"], cwd=home)
    for old in archives.glob("*.deb"):
        old.unlink()
    _run(["apt-get", *options, "-qq", "download", *(f"{p}/trixie" for p in TRIXIE_PACKAGES)], cwd=archives)
    root = home / "root"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    versions: List[str] = []
    for package in TRIXIE_PACKAGES:
        debs = sorted(archives.glob(f"{package}_*.deb"))
        if not debs:
            raise PackageError(f"apt-get download left no {package} package in {archives}")
        _run(["dpkg", "-x", str(debs[-1]), str(root)], cwd=home)
        versions.append(debs[-1].name)
    missing = [str(p) for p in trixie_files(root).values() if not p.is_file()]
    if missing:
        raise PackageError(f"the unpacked Debian 13 packages lack {', '.join(missing)}")
    # The packages and lists served their purpose: keep only the unpacked tree.
    shutil.rmtree(archives, ignore_errors=True)
    shutil.rmtree(home / "lists", ignore_errors=True)
    shutil.rmtree(home / "cache", ignore_errors=True)
    (home / MARKER).write_text(json.dumps({"mirror": mirror, "packages": versions}, indent=1) + "\n")


def _run(cmd: List[str], cwd: Optional[Path] = None) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        shown = " ".join(a for a in cmd if not a.startswith("-o") and "::" not in a)
        raise PackageError(f"{shown} failed ({proc.returncode}):\n{proc.stdout[-2000:]}")
