"""BuildKit builds through the `docker-buildx` binary, for what the SDK's classic builder cannot do.

docker-py drives only the classic builder, which refuses `RUN --mount`
(cache and secret mounts), heredocs and `COPY --link`.  BuildKit has them,
and its secret mounts are the one way a build can use a token without the
token ending up in the image's history.  buildx runs standalone (no docker
CLI needed) against the engine's socket; `--load` puts the result into the
engine and `--iidfile` says its id, so the rest of the plugin sees the same
BuildResult as from the classic builder.  This module only builds; it never
saves, loads or decides anything about the cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Dict, List, Optional, Tuple

from pytest_madcache.core.images import BuildFailed, BuildResult
from pytest_madcache.engines.context import BuildRequest

__all__ = ["buildx_binary", "buildx_build", "PLUGIN_DIRS"]

# Where the docker CLI looks for its plugins (and where packages put buildx).
PLUGIN_DIRS = (
    "~/.docker/cli-plugins",
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)


def buildx_binary() -> Optional[str]:
    """The buildx binary: $MADCACHE_BUILDX, `docker-buildx` on PATH, or the CLI's plugin dirs."""
    explicit = os.environ.get("MADCACHE_BUILDX", "").strip()
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("docker-buildx")
    if found:
        return found
    config = os.environ.get("DOCKER_CONFIG")
    dirs = ([os.path.join(config, "cli-plugins")] if config else []) + [os.path.expanduser(d) for d in PLUGIN_DIRS]
    for directory in dirs:
        path = os.path.join(directory, "docker-buildx")
        if os.access(path, os.X_OK):
            return path
    return None


def _workdir(state_dir: Optional[Path]) -> Path:
    """A temp dir for one build: in the cache's tmp/ when given, else (full or read-only) in TMPDIR."""
    if state_dir is not None:
        try:
            return Path(tempfile.mkdtemp(prefix="buildx-", dir=str(state_dir)))
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix="madcache-buildx-"))


def buildx_build(binary: str, host: Optional[str], request: BuildRequest,
                 network: Optional[str]) -> BuildResult:
    """Run `buildx build --load`; return the BuildResult or raise BuildFailed.

    Secrets go in as `--secret id=NAME,env=VAR` with the value only in the child's environment:
    never on a command line, never in a build arg.  When files are left out of the context
    (`request.exclude`), the context is packed here and sent on stdin (BuildKit would read
    `.dockerignore` itself and send what the session wrote).
    """
    state_dir = Path(request.tmp_dir) if request.tmp_dir is not None else None
    packed = request.packed(state_dir) if request.exclude else None
    try:
        return _run(binary, host, request, network, state_dir, packed)
    finally:
        if packed is not None:
            packed[0].close()


def _command(binary: str, request: BuildRequest, network: Optional[str], iidfile: Path,
             packed: Optional[Tuple[BinaryIO, str]]) -> Tuple[List[str], Dict[str, str]]:
    """The buildx command line and the secrets' environment variables."""
    cmd: List[str] = [binary, "build", "--load", "--progress", "plain", "--iidfile", str(iidfile)]
    if request.tag:
        cmd += ["--tag", request.tag]
    if packed is not None:
        cmd += ["--file", packed[1]]
    elif request.dockerfile is not None:
        cmd += ["--file", str(request.dockerfile)]
    if network:
        cmd += ["--network", network]
    for name, value in request.build_args.items():
        cmd += ["--build-arg", f"{name}={value}"]
    for name, value in request.labels.items():
        cmd += ["--label", f"{name}={value}"]
    secret_env: Dict[str, str] = {}
    for i, (name, value) in enumerate(request.secrets.items()):
        var = f"MADCACHE_SECRET_{i}"
        secret_env[var] = value
        cmd += ["--secret", f"id={name},env={var}"]
    cmd.append("-" if packed is not None else str(request.context))
    return cmd, secret_env


def _run(binary: str, host: Optional[str], request: BuildRequest, network: Optional[str],
         state_dir: Optional[Path], packed: Optional[Tuple[BinaryIO, str]]) -> BuildResult:
    workdir = _workdir(state_dir)
    iidfile = workdir / "iid"
    cmd, secret_env = _command(binary, request, network, iidfile, packed)
    env = {**os.environ, **secret_env}
    if host:
        env["DOCKER_HOST"] = host
    if "BUILDX_CONFIG" not in os.environ:
        # buildx keeps a little state per run; in the build's own temp dir it writes
        # nothing outside the cache (a read-only home is enough) and leaves nothing behind.
        env["BUILDX_CONFIG"] = str(workdir / "config")
    lines: List[str] = []
    start = time.monotonic()
    try:
        if packed is not None:
            packed[0].seek(0)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", stdin=packed[0] if packed is not None else None)
    except OSError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise BuildFailed(f"docker build failed: cannot run {binary}: {exc}", "") from None
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            if request.on_line:
                request.on_line(line)
        code = proc.wait()
        image_id = iidfile.read_text().strip() if iidfile.is_file() else ""
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()  # else a ResourceWarning per build, an error under -W error
        shutil.rmtree(workdir, ignore_errors=True)
    if code != 0 or not image_id:
        reason = next((ln.split("ERROR:", 1)[1].strip() for ln in reversed(lines) if "ERROR:" in ln), None)
        raise BuildFailed(f"docker build failed: {reason or f'buildx exited with {code}'}", "\n".join(lines))
    return BuildResult(image_id=image_id, duration=time.monotonic() - start, log="\n".join(lines))
