"""A Docker-API engine for tests, examples and CI on machines that have none.

Without `--engine` it uses DOCKER_HOST or the default socket when an engine
answers there.  Otherwise, or with `--engine KIND`, it (as root) starts a
private engine whose sockets, data, state, pidfiles and logs all live under
one temporary directory, leaves the host's network alone, and stops it
(with everything it started) when the `with` block or the wrapped command
ends.  Kinds (ENGINE_KINDS):

  debian12             Debian 12's docker.io (dockerd 20.10); the default
  debian13             Debian 13's dockerd 26.1 and containerd 1.7, classic image store
  debian13-containerd  the same with the containerd image store (containerd-snapshotter)
  podman               Debian 12's Podman 4.3 serving the Docker API

dockerd runs with `--bridge=none --iptables=false --ip-masq=false`; Podman
runs in private mount and pid namespaces, its containers' networks in a
private network namespace (see PODMAN_INIT).
Missing Debian 12 packages (docker.io, podman, runc, busybox-static) are
installed with apt-get; the Debian 13 binaries and docker-buildx are fetched
into a per-user cache by enginepkgs.py without touching apt's setup.  The
wrapped command gets DOCKER_HOST, MADCACHE_ENGINE_KIND (when an engine was
started) and, for the Docker kinds, MADCACHE_BUILDX (the buildx binary).

    python -m pytest_madcache.localengine [--engine KIND] -- pytest tests

For tests, CI and the README's commands; the plugin never starts an engine itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

__all__ = ["engine_answers", "ensure_engine", "private_engine", "busybox_path", "buildx_path",
           "install_packages", "EngineUnavailable", "ENGINE_KINDS", "main"]

ENGINE_KINDS = ("debian12", "debian13", "debian13-containerd", "podman")
DOCKER_KINDS = ("debian12", "debian13", "debian13-containerd")
DEFAULT_KIND = "debian12"
DEBIAN_PACKAGES = ("docker.io", "busybox-static")
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
RUNC_CANDIDATES = ("/usr/sbin/runc", "/usr/bin/runc")
# Trixie's own runc needs glibc 2.38; Debian 12's runc (found through the
# private bin dir) serves its containerd instead.
TRIXIE_LINKS = ("containerd", "containerd-shim-runc-v2", "ctr")

# pid 1 of a private Podman's mount and pid namespaces.  /run and /var become
# overlays whose writes land in a tmpfs (Podman keeps locks, netns files, runc
# state, an IPAM database and a blob-info cache there whatever it is told),
# /var/tmp is the engine's own tmp dir (layer staging can be big), /dev/shm is
# private (libpod's lock segment).  The service stays in the host's network
# (pulls and pushes reach registries, loopback ones too); container networks
# are made by netavark run (through a wrapper, see _podman_launch) in a
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


class EngineUnavailable(RuntimeError):
    """No engine answers and none could be started here."""


def _socket_path(host: str) -> Optional[str]:
    if host.startswith("unix://"):
        return host[len("unix://"):]
    return None


def engine_answers(host: Optional[str] = None, timeout: float = 2.0) -> bool:
    """True when an engine answers `_ping` at `host` (default: DOCKER_HOST or the default socket)."""
    host = host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    path = _socket_path(host)
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


def _check_kind(kind: str) -> str:
    if kind not in ENGINE_KINDS:
        raise ValueError(f"unknown engine kind {kind!r}; valid kinds: {', '.join(ENGINE_KINDS)}")
    return kind


def _missing_packages(kind: str = DEFAULT_KIND) -> List[str]:
    """The Debian 12 packages `kind` needs that are not installed (trixie's come from enginepkgs)."""
    _check_kind(kind)
    missing = []
    if kind == "debian12" and not shutil.which("dockerd"):
        missing.append("docker.io")
    if kind in ("debian13", "debian13-containerd") and _debian_runc() is None:
        missing.append("runc")
    if kind == "podman" and not shutil.which("podman"):
        missing.append("podman")
    if kind == "podman" and _podman_helper("netavark") is None:
        missing.append("netavark")
    if busybox_path(required=False) is None:
        missing.append("busybox-static")
    return missing


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


def _debian_runc() -> Optional[str]:
    """A runc that runs here (Debian 12's), for trixie's containerd."""
    for candidate in (*RUNC_CANDIDATES, shutil.which("runc")):
        if candidate and os.access(candidate, os.X_OK):
            with contextlib.suppress(OSError):
                if subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
                    return candidate
    return None


def _trixie(download: bool = True, log=sys.stderr) -> Dict[str, Path]:
    from pytest_madcache.devtools.enginepkgs import PackageError, trixie_files, trixie_root

    try:
        return trixie_files(trixie_root(download=download, log=log))
    except PackageError as exc:
        raise EngineUnavailable(f"no Debian 13 engine binaries: {exc}") from None


def buildx_path(download: bool = True, log=sys.stderr) -> Optional[str]:
    """Debian 13's docker-buildx binary (fetched first when needed and `download`), or None."""
    try:
        path = _trixie(download=download, log=log)["docker-buildx"]
    except EngineUnavailable as exc:
        if download:
            print(f"madcache: no docker-buildx: {exc}", file=log, flush=True)
        return None
    return str(path) if os.access(path, os.X_OK) else None


def _dockerd_launch(kind: str, base: Path, host: str, log) -> Tuple[List[str], Dict[str, str], str]:
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
        runc = _debian_runc()
        if runc is None:
            raise EngineUnavailable("no runc that runs here for Debian 13's containerd (apt-get install runc)")
        files = _trixie(log=log)
        dockerd = str(files["dockerd"])
        bindir = base / "bin"
        bindir.mkdir(exist_ok=True)
        for name, target in [*((n, files[n]) for n in TRIXIE_LINKS), ("runc", Path(runc))]:
            link = bindir / name
            with contextlib.suppress(FileNotFoundError):
                link.unlink()  # a reused base
            link.symlink_to(target)
        # dockerd starts its own containerd from PATH; containerd finds the shim and runc there.
        env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', os.defpath)}"
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


def _podman_helper(name: str) -> Optional[str]:
    for directory in PODMAN_HELPER_DIRS:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


def _podman_launch(base: Path, host: str) -> Tuple[List[str], Dict[str, str], str]:
    """Command, environment and log name of a private `podman system service`."""
    podman = shutil.which("podman")
    if not podman:
        raise EngineUnavailable("podman is not installed (apt-get install podman)")
    netavark = _podman_helper("netavark")
    if not netavark:
        raise EngineUnavailable("netavark is not installed (apt-get install netavark)")
    unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
    if not unshare or not nsenter:
        raise EngineUnavailable("unshare and nsenter (util-linux) are missing to give Podman private namespaces")
    for sub in ("ns", "tmp", "libpod", "networks", "helpers"):
        (base / sub).mkdir(exist_ok=True)
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


@contextlib.contextmanager
def private_engine(base: Optional[Path] = None, log=sys.stderr, start_timeout: float = 60.0,
                   kind: str = DEFAULT_KIND) -> Iterator[str]:
    """Start a private engine of `kind` under `base` (a new temp dir by default); yield its DOCKER_HOST."""
    _check_kind(kind)
    if os.geteuid() != 0:
        raise EngineUnavailable(f"a private {kind} engine needs root here; start an engine and set DOCKER_HOST")
    owned = base is None
    # Keep the path short: unix socket paths are limited to 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="mcd-", dir="/tmp")) if base is None else Path(base)
    started = time.monotonic()
    proc = logfile = None
    restore = _exit_on_termination()
    try:
        base.mkdir(parents=True, exist_ok=True)
        if kind == "podman":
            host = f"unix://{base / 'podman.sock'}"
            cmd, env, name = _podman_launch(base, host)
        else:
            host = f"unix://{base / 'docker.sock'}"
            cmd, env, name = _dockerd_launch(kind, base, host, log)
        logpath = base / f"{name}.log"
        logfile = open(logpath, "wb")
        proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if kind == "podman":  # dockerd writes its own
            (base / "podman.pid").write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + start_timeout
        while not engine_answers(host, timeout=1.0):
            if proc.poll() is not None:
                raise EngineUnavailable(f"{name} ({kind}) exited with {proc.returncode}; its log:\n{_tail(logpath)}")
            if time.monotonic() > deadline:
                raise EngineUnavailable(
                    f"{name} ({kind}) did not answer within {start_timeout:.0f}s:\n{_tail(logpath)}")
            time.sleep(0.1)
        if kind == "podman":
            _share_socket_like_dockerd(Path(_socket_path(host) or ""))
        print(f"madcache: started a private {kind} engine at {host} in {time.monotonic() - started:.1f}s",
              file=log, flush=True)
        yield host
    finally:
        if proc is not None:
            if proc.poll() is None:
                _stop_containers(host)
            _stop(proc, namespaced=kind == "podman")
        if logfile is not None:
            logfile.close()
        _kill_leftovers(base)
        if owned:
            _remove_tree(base)
        restore()


def _share_socket_like_dockerd(sock: Path) -> None:
    """Podman's socket is root:root 0600; dockerd's is root:docker 0660.  Match dockerd's,
    so a non-root member of `docker` can use either (and group root grants nothing new)."""
    import grp

    with contextlib.suppress(KeyError, OSError):
        os.chown(sock, -1, grp.getgrnam("docker").gr_gid)
        os.chmod(sock, 0o660)


def _exit_on_termination():
    """Turn SIGTERM/SIGHUP into SystemExit so `finally` stops the engine.

    The engine runs in its own session (so Ctrl-C reaches the tests, not
    the engine); without this a `timeout` or a CI cancel would leave it
    running.  Returns a function that puts the previous handlers back.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            previous[sig] = signal.signal(sig, handler)

    def restore():
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _stop_containers(host: str) -> None:
    """SIGKILL-stop running containers through the API before the engine stops.

    dockerd would give each 10 s to stop on SIGTERM; Podman's service leaves
    them running, and stopping them through it lets Podman unmount them and
    remove their cgroups before the namespace goes (which only SIGKILLs them).
    """
    with contextlib.suppress(Exception):
        import docker

        client = docker.DockerClient(base_url=host, timeout=30)
        try:
            for container in client.containers.list():
                with contextlib.suppress(Exception):
                    container.stop(timeout=0)
        finally:
            client.close()


def _stop(proc: subprocess.Popen, namespaced: bool = False) -> None:
    """SIGTERM the engine and wait; SIGKILL after 30 s.

    A namespaced engine runs under `unshare --fork --kill-child`: the
    signal goes to its init (unshare's child), which stops the engine and
    exits, taking the namespace and all in it along.
    """
    if proc.poll() is not None:
        return
    targets = _children(proc.pid) if namespaced else []
    for pid in targets or [proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()  # unshare's --kill-child passes SIGKILL on to the namespace
        proc.wait()


def _children(pid: int) -> List[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]
    except (OSError, ValueError):
        return []


def _processes_mentioning(text: str) -> List[int]:
    """Pids (other than this one) whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def _kill_leftovers(base: Path) -> None:
    """SIGKILL whatever still runs from `base` (containerd shims, conmon) once the engine is gone."""
    for _ in range(3):
        pids = _processes_mentioning(str(base) + "/")
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def _remove_tree(base: Path) -> None:
    # Container mounts may still be attached after a crash; unmount them first.
    with contextlib.suppress(Exception):
        mounts = Path("/proc/mounts").read_text().splitlines()
        for line in sorted(mounts, key=len, reverse=True):
            point = line.split()[1]
            if point == str(base) or point.startswith(str(base) + "/"):
                subprocess.run(["umount", "-l", point], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def _engine(install: bool, log, kind: str, reuse: bool) -> Iterator[Tuple[str, Optional[str]]]:
    """(DOCKER_HOST, kind started here or None when an answering engine was reused)."""
    _check_kind(kind)
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if reuse and engine_answers(host):
        if install and busybox_path(required=False) is None and os.geteuid() == 0:
            install_packages(["busybox-static"], log=log)
        yield host, None
        return
    if install:
        install_packages(_missing_packages(kind), log=log)
    with private_engine(log=log, kind=kind) as private_host:
        yield private_host, kind


@contextlib.contextmanager
def ensure_engine(install: bool = True, log=sys.stderr, kind: str = DEFAULT_KIND,
                  reuse: bool = True) -> Iterator[str]:
    """Yield a DOCKER_HOST that answers: the existing engine (unless not `reuse`), or a private `kind` one."""
    with _engine(install, log, kind, reuse) as (host, _started):
        yield host


def _parse(args: List[str]) -> Tuple[Optional[str], List[str]]:
    """(--engine value or None, command) from `[--engine KIND] [--] CMD...`."""
    kind = None
    while args:
        if args[0] == "--":
            return kind, args[1:]
        if args[0] == "--engine" or args[0].startswith("--engine="):
            if "=" in args[0]:
                value, args = args[0].split("=", 1)[1], args[1:]
            elif len(args) > 1:
                value, args = args[1], args[2:]
            else:
                raise ValueError("--engine needs a value")
            if value not in ENGINE_KINDS:
                raise ValueError(f"unknown engine kind {value!r} (from --engine); "
                                 f"valid kinds: {', '.join(ENGINE_KINDS)}")
            kind = value
            continue
        break
    return kind, args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m pytest_madcache.localengine [--engine KIND] [--] CMD ...`: run CMD with an engine in DOCKER_HOST."""
    try:
        explicit, args = _parse(list(sys.argv[1:] if argv is None else argv))
    except ValueError as exc:
        print(f"madcache: {exc}", file=sys.stderr)
        return 2
    if not args or args[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with _engine(True, sys.stderr, explicit or DEFAULT_KIND, reuse=explicit is None) as (host, started):
            env = dict(os.environ, DOCKER_HOST=host)
            if started:
                env["MADCACHE_ENGINE_KIND"] = started
            if not env.get("MADCACHE_BUILDX") and started != "podman":
                # Download for an engine started here; a reused one gets it only when already fetched.
                buildx = buildx_path(download=started is not None)
                if buildx:
                    env["MADCACHE_BUILDX"] = buildx
            proc = subprocess.Popen(args, env=env)
            try:
                return proc.wait()
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGINT)
                return proc.wait()
            except SystemExit:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
                raise
    except EngineUnavailable as exc:
        print(f"madcache: no Docker engine: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
