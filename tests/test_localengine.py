"""The private engines used by tests, the README and CI.

Each kind starts, answers, builds and runs, and never outlives its owner.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_madcache.devtools import enginepkgs
from pytest_madcache.devtools.localengine import (
    DOCKER_KINDS,
    ENGINE_KINDS,
    EngineUnavailable,
    _missing_packages,
    buildx_path,
    engine_answers,
    install_packages,
    main,
    private_engine,
)
from tests.needs import in_ci, unavailable
from tests.images import write_context

# The owner of a private engine, as a user runs it in a terminal.  Ctrl-C reaches a foreground
# program whose SIGINT has its default action; a suite started in the background by a script
# (`cmd &` in a non-interactive shell, as some CI runners do) hands its children SIGINT ignored,
# and Python then never raises KeyboardInterrupt.  So the owner puts the terminal's action back.
SCRIPT = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from pytest_madcache.devtools.localengine import private_engine
with private_engine(kind=sys.argv[1]) as host:
    print(host, flush=True)
    time.sleep(300)
"""


def _unavailable(message: str) -> None:
    """A kind that cannot be started fails under CI=true and is skipped elsewhere."""
    unavailable(message)


def _ready(kind: str) -> None:
    """Install (and fetch) what `kind` needs, or fail/skip saying why."""
    if os.geteuid() != 0:
        _unavailable(f"a private {kind} engine needs root")
    try:
        install_packages(_missing_packages(kind))
        if kind not in ("debian12", "podman"):
            enginepkgs.trixie_root()
    except (EngineUnavailable, enginepkgs.PackageError) as exc:
        _unavailable(f"cannot prepare a {kind} engine: {exc}")


def _assert_gone(base: Path) -> None:
    deadline = time.monotonic() + 10
    while base.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not base.exists(), "the engine's temp dir is removed"
    leftover = subprocess.run(["pgrep", "-af", str(base)], capture_output=True, text=True).stdout.splitlines()
    assert leftover == [], f"processes still running for {base}: {leftover}"
    mounts = [line for line in Path("/proc/mounts").read_text().splitlines() if str(base) in line]
    assert mounts == [], f"mounts left under {base}: {mounts}"


def test_engine_answers_is_false_for_a_dead_socket(tmp_path):
    assert engine_answers(f"unix://{tmp_path}/nothing.sock") is False


def test_an_unknown_kind_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"'debian11'.*debian12, debian13, debian13-containerd, podman"):
        with private_engine(kind="debian11"):
            pass


def test_main_names_an_unknown_engine_and_where_it_came_from(capsys):
    assert main(["--engine", "docker99", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert "'docker99'" in err and "--engine" in err
    assert all(kind in err for kind in ENGINE_KINDS)
    assert main(["--engine"]) == 2


def test_the_debian_mirror_is_the_first_uris_of_debian_sources(tmp_path, monkeypatch):
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\n# URIs: http://commented.invalid/x\nURIs: http://mirror.invalid/debian "
                       "http://second.invalid/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://third.invalid/d\n")
    monkeypatch.setattr(enginepkgs, "SOURCES", sources)
    assert enginepkgs.debian_mirror() == "http://mirror.invalid/debian"
    monkeypatch.setattr(enginepkgs, "SOURCES", tmp_path / "missing.sources")
    legacy = tmp_path / "sources.list"
    legacy.write_text("# deb http://no.invalid x main\n"
                      "deb [arch=amd64 signed-by=/k.gpg] http://old.invalid/debian bookworm main\n")
    monkeypatch.setattr(enginepkgs, "LEGACY_SOURCES", legacy)
    assert enginepkgs.debian_mirror() == "http://old.invalid/debian"
    legacy.write_text("")
    with pytest.raises(enginepkgs.PackageError, match="no Debian mirror"):
        enginepkgs.debian_mirror()


def test_fetched_engines_live_where_madcache_engines_dir_says(tmp_path, monkeypatch):
    monkeypatch.setenv("MADCACHE_ENGINES_DIR", str(tmp_path / "engines"))
    assert enginepkgs.engines_dir() == tmp_path / "engines"
    with pytest.raises(enginepkgs.PackageError, match="not in .*downloading was not allowed"):
        enginepkgs.trixie_root(download=False)
    assert buildx_path(download=False) is None
    assert not (tmp_path / "engines").exists(), "nothing is created without a download"


EXPECTED = {
    "debian12": "dockerd 20.10",
    "debian13": "dockerd 26.1, classic image store",
    "debian13-containerd": "dockerd 26.1, containerd image store",
    "podman": "Podman",
}


def _check_identity(kind: str, client) -> None:
    info, version = client.info(), client.version()
    driver_status = [list(pair) for pair in info.get("DriverStatus") or []]
    components = [c.get("Name", "") for c in version.get("Components") or []]
    described = f"{EXPECTED[kind]} expected; ServerVersion {info.get('ServerVersion')}, " \
                f"DriverStatus {driver_status}, components {components}"
    snapshotter = ["driver-type", "io.containerd.snapshotter.v1"]
    if kind == "debian12":
        assert info["ServerVersion"].startswith("20.10."), described
    elif kind == "debian13":
        assert info["ServerVersion"].startswith("26.1."), described
        assert snapshotter not in driver_status, described
    elif kind == "debian13-containerd":
        assert info["ServerVersion"].startswith("26.1."), described
        assert snapshotter in driver_status, described
    else:
        assert any("Podman" in name for name in components), described
    if kind.startswith("debian13"):  # trixie's containerd with Debian 12's runc (trixie's needs glibc 2.38)
        containerd = next(c for c in version["Components"] if c["Name"] == "containerd")
        assert containerd["Version"].startswith("1.7."), f"containerd {containerd['Version']} is not trixie's 1.7"
        runc = next(c for c in version["Components"] if c["Name"] == "runc")
        ours = subprocess.run(["/usr/sbin/runc", "--version"], capture_output=True, text=True).stdout
        assert runc["Version"] in ours, f"runc {runc['Version']} is not /usr/sbin/runc: {ours}"


def _buildkit_build(host: str, context: Path, tmp_path: Path) -> str:
    """A BuildKit build (with a cache mount) through the standalone docker-buildx binary."""
    buildx = buildx_path()
    assert buildx, "buildx_path() found no docker-buildx"
    (context / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "RUN --mount=type=cache,target=/cache echo buildkit > /cache/x && cp /cache/x /built\n")
    iidfile = tmp_path / "iid"
    env = dict(os.environ, DOCKER_HOST=host, DOCKER_CONFIG=str(tmp_path / "docker-config"))
    proc = subprocess.run([buildx, "build", "--load", "--network", "none", "--iidfile", str(iidfile),
                           "--tag", "madcache-buildkit:test", str(context)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return iidfile.read_text().strip()


@pytest.mark.engine
@pytest.mark.own_engines  # starts engines of its own: run once, not once per engine kind
@pytest.mark.parametrize("kind", ENGINE_KINDS)
def test_each_kind_starts_builds_runs_and_leaves_nothing(kind, tmp_path, registry):
    import docker

    _ready(kind)
    stack = contextlib.ExitStack()
    started = time.monotonic()
    try:
        host = stack.enter_context(private_engine(kind=kind))
    except EngineUnavailable as exc:
        _unavailable(f"cannot start a {kind} engine: {exc}")
    base = Path(host[len("unix://"):]).parent
    with stack:
        seconds = time.monotonic() - started
        assert engine_answers(host), f"{kind} engine at {host} answered once and then not"
        assert len(host) - len("unix://") < 108, "unix socket paths are limited to 107 bytes"
        # every kind's socket is root:docker 0660, as dockerd makes its own; without a `docker` group
        # there is nothing to compare with: CI must have one (Debian's docker.io creates it)
        try:
            docker_gid = grp.getgrnam("docker").gr_gid
        except KeyError:
            docker_gid = None
            if in_ci():
                pytest.fail("no `docker` group on this machine: the socket's owner and mode (root:docker 0660) "
                            "cannot be checked", pytrace=False)
        if docker_gid is not None:
            sock = os.stat(host[len("unix://"):])
            assert (sock.st_gid, sock.st_mode & 0o777) == (docker_gid, 0o660)
        client = docker.DockerClient(base_url=host, timeout=300)
        try:
            _check_identity(kind, client)
            context = write_context(tmp_path / "context", {"hello.txt": f"hello from {kind}\n".encode()})
            image, _ = client.images.build(path=str(context), tag=f"madcache-kind-{kind}:test", rm=True)
            out = client.containers.run(image.id, ["cat", "/data/hello.txt"], remove=True)
            assert out.decode() == f"hello from {kind}\n"
            # The engine reaches a plain-HTTP registry on the host's loopback (Podman's service too:
            # only its containers' network is private).
            repository = f"{registry}/kinds/{kind}"
            image.tag(repository, "test")
            client.images.push(repository, tag="test")
            client.images.remove(f"{repository}:test")
            assert client.images.pull(repository, tag="test").id == image.id
            if kind in DOCKER_KINDS:
                image_id = _buildkit_build(host, context, tmp_path)
                out = client.containers.run(image_id, ["cat", "/built"], remove=True)
                assert out.decode() == "buildkit\n"
            # A container still running when the engine stops must not outlive it.
            client.containers.run(image.id, ["sleep", "300"], detach=True)
        finally:
            client.close()
        print(f"{kind}: first answer after {seconds:.1f}s")
    _assert_gone(base)


@pytest.mark.engine
@pytest.mark.own_engines  # starts engines of its own: run once, not once per engine kind
@pytest.mark.parametrize("kind", ["debian13", "debian13-containerd"])
def test_debian13_kinds_start_on_a_machine_without_debian12s_docker_proxy(kind, monkeypatch):
    """dockerd 26 refuses to start without docker-proxy on PATH; a fresh machine gets Debian 12's
    /usr/sbin/docker-proxy only once the debian12 kind installs docker.io, so a Debian 13 kind
    started first must bring its own."""
    _ready(kind)
    path = [d for d in os.environ.get("PATH", os.defpath).split(os.pathsep)
            if d and not (Path(d) / "docker-proxy").exists()]
    monkeypatch.setenv("PATH", os.pathsep.join(path))
    with private_engine(kind=kind) as host:
        assert engine_answers(host), f"the {kind} engine at {host} does not answer"


def _parametrized_signals():
    yield from ((signal.SIGTERM, kind) for kind in ENGINE_KINDS)
    yield from ((signal.SIGINT, kind) for kind in ("debian12", "podman"))


@pytest.mark.engine
@pytest.mark.own_engines  # starts engines of its own: run once, not once per engine kind
@pytest.mark.parametrize("sig,kind", list(_parametrized_signals()))
def test_private_engine_stops_when_its_owner_is_terminated(sig, kind):
    """A `timeout` or CI cancel (SIGTERM) or Ctrl-C must not leave an engine behind."""
    _ready(kind)
    with subprocess.Popen([sys.executable, "-c", SCRIPT, kind], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        host = proc.stdout.readline().strip()
        if not host.startswith("unix://"):
            proc.wait(timeout=60)
            _unavailable(f"cannot start a {kind} engine: {proc.stderr.read()[-2000:]}")
        base = Path(host[len("unix://"):]).parent
        assert engine_answers(host)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    _assert_gone(base)
    assert not engine_answers(host)


@pytest.mark.engine
@pytest.mark.own_engines  # starts engines of its own: run once, not once per engine kind
def test_main_with_engine_starts_that_kind_and_says_so(docker_host, tmp_path, monkeypatch):
    """--engine starts a private engine even when DOCKER_HOST answers, and the command learns its kind."""
    _ready("debian12")
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    monkeypatch.delenv("MADCACHE_BUILDX", raising=False)
    out = tmp_path / "env.json"
    dump = ("import json, os, sys; json.dump({k: os.environ.get(k) for k in "
            "('DOCKER_HOST', 'MADCACHE_ENGINE_KIND', 'MADCACHE_BUILDX')}, open(sys.argv[1], 'w'))")
    for kind in ("debian12", "podman"):
        if kind == "podman":
            _ready("podman")
        assert main(["--engine", kind, "--", sys.executable, "-c", dump, str(out)]) == 0
        seen = json.loads(out.read_text())
        assert seen["DOCKER_HOST"] != docker_host and re.match(r"unix:///tmp/mcd-", seen["DOCKER_HOST"])
        assert seen["MADCACHE_ENGINE_KIND"] == kind
        if kind == "podman":
            assert seen["MADCACHE_BUILDX"] is None, "Podman builds with its own builder"
        else:
            assert seen["MADCACHE_BUILDX"] and os.access(seen["MADCACHE_BUILDX"], os.X_OK), seen
        assert not Path(seen["DOCKER_HOST"][len("unix://"):]).parent.exists()
