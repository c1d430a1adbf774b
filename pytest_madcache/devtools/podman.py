"""A private Podman serving the Docker API, in its own mount, pid and network namespaces.

`podman system service` runs under `unshare` with PODMAN_INIT as pid 1, its
configuration (containers.conf, storage.conf, registries.conf) and a netavark
wrapper written under the engine's base directory, so it touches neither the
host's Podman setup nor its network.  This module says how to start it;
localengine.py starts and stops it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from pytest_madcache.devtools.host import EngineUnavailable

__all__ = ["PODMAN_INIT", "podman_launch", "podman_helper", "share_socket_like_dockerd"]

# pid 1 of a private Podman's mount and pid namespaces.  /run and /var become
# overlays whose writes land in a tmpfs (Podman keeps locks, netns files, runc
# state, an IPAM database and a blob-info cache there whatever it is told),
# /var/tmp is the engine's own tmp dir (layer staging can be big), /dev/shm is
# private (libpod's lock segment).  The service stays in the host's network
# (pulls and pushes reach registries, loopback ones too); container networks
# are made by netavark run (through a wrapper, see podman_launch) in a
# network namespace kept at $base/ns/net, so their bridge and firewall rules
# never touch the host's.  When this shell exits the kernel kills conmon and
# every container, and the mounts and that network go with the namespace.
PODMAN_INIT = r"""set -e
base=$1; shift
mount -t tmpfs -o mode=0700 mcd-ns "$base/ns"
for d in run var; do
    mkdir -p "$base/ns/$d/up" "$base/ns/$d/work"
    mount -t overlay "mcd-$d" -o "lowerdir=/$d,upperdir=$base/ns/$d/up,workdir=$base/ns/$d/work" "/$d"
done
mount --bind "$base/tmp" /var/tmp
mount -t tmpfs -o mode=1777 mcd-shm /dev/shm
touch "$base/ns/net"
unshare --net="$base/ns/net" true
nsenter --net="$base/ns/net" ip link set lo up 2>/dev/null || true
set +e
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT HUP
wait "$child"; status=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done
exit "$status"
"""
# Where Podman looks for netavark, conmon and friends (containers.conf's default).
PODMAN_HELPER_DIRS = ("/usr/local/libexec/podman", "/usr/local/lib/podman", "/usr/libexec/podman", "/usr/lib/podman")


def podman_helper(name: str) -> Optional[str]:
    for directory in PODMAN_HELPER_DIRS:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


def podman_launch(base: Path, host: str) -> Tuple[List[str], Dict[str, str], str]:
    """Command, environment and log name of a private `podman system service`."""
    podman = shutil.which("podman")
    if not podman:
        raise EngineUnavailable("podman is not installed (apt-get install podman)")
    netavark = podman_helper("netavark")
    if not netavark:
        raise EngineUnavailable("netavark is not installed (apt-get install netavark)")
    unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
    if not unshare or not nsenter:
        raise EngineUnavailable("unshare and nsenter (util-linux) are missing to give Podman private namespaces")
    for sub in ("ns", "tmp", "libpod", "networks", "helpers"):
        (base / sub).mkdir(exist_ok=True)
    _write_config(base, netavark, nsenter)
    (base / "init.sh").write_text(PODMAN_INIT)
    env = dict(
        os.environ,
        CONTAINERS_CONF=str(base / "containers.conf"),
        CONTAINERS_STORAGE_CONF=str(base / "storage.conf"),
        CONTAINERS_REGISTRIES_CONF=str(base / "registries.conf"),
        TMPDIR=str(base / "tmp"),
    )
    cmd = [
        unshare, "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private",
        "/bin/sh", str(base / "init.sh"), str(base),
        podman, "--root", str(base / "root"), "--runroot", str(base / "runroot"),
        "system", "service", "--time=0", host,
    ]
    return cmd, env, "podman"


def _write_config(base: Path, netavark: str, nsenter: str) -> None:
    """The netavark wrapper and Podman's three configuration files, under `base`."""
    # Podman takes netavark from the first helper dir that has one: ours runs
    # it in the private network namespace init.sh keeps at ns/net.
    wrapper = base / "helpers" / "netavark"
    wrapper.write_text(f'#!/bin/sh\nexec {nsenter} --net="{base / "ns" / "net"}" {netavark} "$@"\n')
    wrapper.chmod(0o755)
    helper_dirs = ", ".join(f'"{d}"' for d in (str(base / "helpers"), *PODMAN_HELPER_DIRS))
    # This machine's hard open-files limit may be below Podman's default
    # ulimit for containers ("error setting rlimit type 7"): inherit instead.
    (base / "containers.conf").write_text(
        "[containers]\ndefault_ulimits = []\n\n"
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f"helper_binaries_dir = [{helper_dirs}]\n"
        f'events_logfile_path = "{base / "events.log"}"\n'
        f'tmp_dir = "{base / "libpod"}"\n'
        f'image_copy_tmp_dir = "{base / "tmp"}"\n'
        f'volume_path = "{base / "root" / "volumes"}"\n\n'
        "[network]\n"
        'network_backend = "netavark"\n'
        f'network_config_dir = "{base / "networks"}"\n'
    )
    (base / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{base / "root"}"\nrunroot = "{base / "runroot"}"\n'
    )
    # Docker treats loopback registries as plain HTTP; so does this Podman.
    (base / "registries.conf").write_text(
        'unqualified-search-registries = []\nshort-name-mode = "permissive"\n\n'
        + "".join(f'[[registry]]\nlocation = "{h}"\ninsecure = true\n\n' for h in ("localhost", "127.0.0.1"))
    )


def share_socket_like_dockerd(sock: Path) -> None:
    """Podman's socket is root:root 0600; dockerd's is root:docker 0660.  Match dockerd's,
    so a non-root member of `docker` can use either (and group root grants nothing new)."""
    import grp

    with contextlib.suppress(KeyError, OSError):
        os.chown(sock, -1, grp.getgrnam("docker").gr_gid)
        os.chmod(sock, 0o660)
