"""A Docker engine for tests, examples and CI on machines that have none.

Uses DOCKER_HOST or the default socket when an engine answers there.
Otherwise (as root) installs Debian's `docker.io` and `busybox-static` when
missing and starts a private `dockerd` whose socket, data root, exec root and
pidfile all live under one temporary directory, with `--bridge=none
--iptables=false` so the host's network is left alone; it is stopped again
when the `with` block (or the wrapped command) ends.

    python -m pytest_madcache.localengine -- pytest tests
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

__all__ = ["engine_answers", "ensure_engine", "busybox_path", "EngineUnavailable", "main"]

DEBIAN_PACKAGES = ("docker.io", "busybox-static")
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


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


def _missing_packages() -> List[str]:
    missing = []
    if not shutil.which("dockerd"):
        missing.append("docker.io")
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


@contextlib.contextmanager
def private_engine(base: Optional[Path] = None, log=sys.stderr, start_timeout: float = 60.0) -> Iterator[str]:
    """Start a private dockerd under `base` (a new temp dir by default); yield its DOCKER_HOST."""
    dockerd = shutil.which("dockerd")
    if not dockerd:
        raise EngineUnavailable("dockerd is not installed (apt-get install docker.io)")
    if os.geteuid() != 0:
        raise EngineUnavailable("a private dockerd needs root here; start an engine and set DOCKER_HOST")
    owned = base is None
    # Keep the path short: unix socket paths are limited to 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="mcd-", dir="/tmp")) if base is None else Path(base)
    base.mkdir(parents=True, exist_ok=True)
    sock = base / "docker.sock"
    host = f"unix://{sock}"
    logfile = open(base / "dockerd.log", "wb")
    cmd = [
        dockerd,
        "--data-root", str(base / "data"),
        "--exec-root", str(base / "exec"),
        "-H", host,
        "--pidfile", str(base / "docker.pid"),
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
    ]
    proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    restore = _exit_on_termination()
    try:
        deadline = time.monotonic() + start_timeout
        while not engine_answers(host, timeout=1.0):
            if proc.poll() is not None:
                raise EngineUnavailable(
                    f"dockerd exited with {proc.returncode}; its log:\n{_tail(base / 'dockerd.log')}"
                )
            if time.monotonic() > deadline:
                raise EngineUnavailable(f"dockerd did not answer within {start_timeout:.0f}s:\n{_tail(base / 'dockerd.log')}")
            time.sleep(0.1)
        print(f"madcache: started a private Docker engine at {host}", file=log, flush=True)
        yield host
    finally:
        _stop(proc)
        logfile.close()
        if owned:
            _remove_tree(base)
        restore()


def _exit_on_termination():
    """Turn SIGTERM/SIGHUP into SystemExit so `finally` stops the engine.

    The engine runs in its own session (so Ctrl-C reaches the tests, not
    dockerd); without this a `timeout` or a CI cancel would leave it running.
    Returns a function that puts the previous handlers back.
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


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _remove_tree(base: Path) -> None:
    # Container mounts may still be attached after a crash; unmount them first.
    with contextlib.suppress(Exception):
        mounts = Path("/proc/mounts").read_text().splitlines()
        for line in sorted(mounts, key=len, reverse=True):
            point = line.split()[1]
            if point.startswith(str(base)):
                subprocess.run(["umount", "-l", point], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def ensure_engine(install: bool = True, log=sys.stderr) -> Iterator[str]:
    """Yield a DOCKER_HOST that answers: the existing engine, or a private one started here."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if engine_answers(host):
        if install and busybox_path(required=False) is None and os.geteuid() == 0:
            install_packages(["busybox-static"], log=log)
        yield host
        return
    if install:
        install_packages(_missing_packages(), log=log)
    with private_engine(log=log) as private_host:
        yield private_host


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m pytest_madcache.localengine [--] CMD ...`: run CMD with an engine in DOCKER_HOST."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with ensure_engine() as host:
            env = dict(os.environ, DOCKER_HOST=host)
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
