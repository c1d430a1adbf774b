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
# (This docstring is the command's help.)  This module starts, waits for and stops an engine; how
# to launch each kind is dockerd.py's and podman.py's, what the host has (and apt-get) host.py's.

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from pytest_madcache.devtools.dockerd import buildx_path, debian_runc, dockerd_launch
from pytest_madcache.devtools.host import (
    EngineUnavailable,
    busybox_path,
    engine_answers,
    install_packages,
    socket_path,
)
from pytest_madcache.devtools.podman import podman_helper, podman_launch, share_socket_like_dockerd

__all__ = ["engine_answers", "ensure_engine", "private_engine", "busybox_path", "buildx_path",
           "install_packages", "EngineUnavailable", "ENGINE_KINDS", "DOCKER_KINDS", "DEFAULT_KIND", "main"]

ENGINE_KINDS = ("debian12", "debian13", "debian13-containerd", "podman")
DOCKER_KINDS = ("debian12", "debian13", "debian13-containerd")
DEFAULT_KIND = "debian12"


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
    if kind in ("debian13", "debian13-containerd") and debian_runc() is None:
        missing.append("runc")
    if kind == "podman" and not shutil.which("podman"):
        missing.append("podman")
    if kind == "podman" and podman_helper("netavark") is None:
        missing.append("netavark")
    if busybox_path(required=False) is None:
        missing.append("busybox-static")
    return missing


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
            cmd, env, name = podman_launch(base, host)
        else:
            host = f"unix://{base / 'docker.sock'}"
            cmd, env, name = dockerd_launch(kind, base, host, log)
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
            share_socket_like_dockerd(Path(socket_path(host) or ""))
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
