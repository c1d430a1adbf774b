"""Run a model container from an image with the docker SDK, without pytest.

A model run is a container: a command, its environment, GPUs, shared memory,
IPC mode and volumes.  The container is removed afterwards, also on Ctrl-C
or a timeout, so repeated runs leave nothing behind; only `keep_alive`
(madengine's `--keep-alive`, for debugging) leaves it running after the
model ran, and the result names it.  The result keeps
the exit code, logs, duration and the model's figure of merit, read from the
last `performance: <value> <metric>` line as madengine does.

It must not build or cache images: it runs the one it is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import shlex
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from pytest_madcache.core.run import RunOptions, RunResult, normalise_volumes, parse_performance

__all__ = ["RunOptions", "RunResult", "container_kwargs", "run_container", "parse_performance",
           "normalise_volumes", "RunError", "KEEPER", "model_command"]

ROCM_DEVICES = ("/dev/kfd", "/dev/dri")
# With keep_alive the container's own process is this shell loop (madengine keeps its containers up the
# same way and runs the model with `docker exec`); TERM ends it at once, so `docker stop` is quick.
KEEPER = ("sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done")


class RunError(RuntimeError):
    """The container could not be created or started (not: the model failed)."""


def container_kwargs(options: RunOptions) -> Dict[str, Any]:
    """Keyword arguments for `client.containers.create` (pure: testable without an engine)."""
    kwargs: Dict[str, Any] = {"environment": dict(options.env)}
    if options.command is not None:
        kwargs["command"] = options.command
    devices = list(options.devices)
    if options.gpus is not None:
        from docker.types import DeviceRequest

        if options.gpus == "all":
            req = DeviceRequest(driver="nvidia", count=-1, capabilities=[["gpu"]])
        elif isinstance(options.gpus, int):
            req = DeviceRequest(driver="nvidia", count=options.gpus, capabilities=[["gpu"]])
        else:
            req = DeviceRequest(driver="nvidia", device_ids=list(options.gpus), capabilities=[["gpu"]])
        kwargs["device_requests"] = [req]
    if options.rocm:
        devices += [f"{d}:{d}:rwm" for d in ROCM_DEVICES if not any(x.split(":")[0] == d for x in devices)]
        kwargs["group_add"] = ["video"]
    if devices:
        kwargs["devices"] = devices
    if options.shm_size is not None:
        kwargs["shm_size"] = options.shm_size
    if options.ipc_mode is not None:
        kwargs["ipc_mode"] = options.ipc_mode
    if options.volumes:
        kwargs["volumes"] = list(options.volumes)
    if options.network_mode is not None:
        kwargs["network_mode"] = options.network_mode
    return kwargs


def run_container(client: Any, image: str, options: RunOptions,
                  on_line: Optional[Callable[[str], None]] = None) -> RunResult:
    """Create, start and wait for a container; remove it (unless `options.keep_alive`).

    With `on_line`, output is streamed line by line as it comes (the caller
    decides where it goes).  A timeout kills the container (exit code 137,
    `timed_out` set).  Ctrl-C removes the container and re-raises.

    With `options.keep_alive` the container runs KEEPER (so the image needs
    `sh`) and the model's command (the image's entrypoint and command, or
    `options.command`) runs in it through `docker exec`; the container is
    left running and its id returned in `container_id`.  A timeout then
    stops waiting and leaves the model running in the container, to be
    looked at (`timed_out` set, exit code -1).  Ctrl-C and a failed start
    still remove it.
    """
    from docker.errors import DockerException

    if options.keep_alive:
        return _run_kept(client, image, options, on_line)

    try:
        container = client.containers.create(image, detach=True, **container_kwargs(options))
    except DockerException as exc:
        raise RunError(f"cannot create a container from {image}: {exc}") from None
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        with contextlib.suppress(Exception):
            container.kill()

    timer = threading.Timer(options.timeout, kill) if options.timeout else None
    start = time.monotonic()
    try:
        try:
            container.start()
        except DockerException as exc:
            raise RunError(f"cannot start a container from {image}: {exc}") from None
        if timer:
            timer.daemon = True
            timer.start()
        if on_line is not None:
            lines = _Lines(on_line)
            with contextlib.suppress(Exception):  # a broken stream still leaves wait() below
                for chunk in container.logs(stream=True, follow=True):
                    lines.feed(chunk)
            lines.end()
        status = container.wait(timeout=None)
        duration = time.monotonic() - start
        exit_code = int(status.get("StatusCode", -1))
        logs = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
    finally:
        if timer:
            timer.cancel()
        with contextlib.suppress(Exception):
            container.remove(force=True)
    performance, metric = parse_performance(logs)
    return RunResult(exit_code=exit_code, logs=logs, duration=duration, performance=performance, metric=metric,
                     timed_out=timed_out.is_set(), image=image)


class _Lines:
    """Bytes as they come, said line by line to `on_line` (nothing without one); `end()` says the
    last, unterminated line."""

    def __init__(self, on_line: Optional[Callable[[str], None]]) -> None:
        self.on_line = on_line
        self.pending = b""

    def feed(self, chunk: bytes) -> None:
        if self.on_line is None:
            return
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        for line in lines:
            self.on_line(line.decode("utf-8", "replace"))

    def end(self) -> None:
        if self.on_line is not None and self.pending:
            self.on_line(self.pending.decode("utf-8", "replace"))
            self.pending = b""


def model_command(image_config: Mapping[str, Any], command: Optional[Union[str, List[str]]]) -> List[str]:
    """What `docker run IMAGE [command]` would run: the entrypoint, then the command or the image's CMD."""
    entrypoint = list(image_config.get("Entrypoint") or [])
    if command is None:
        return entrypoint + list(image_config.get("Cmd") or [])
    return entrypoint + (shlex.split(command) if isinstance(command, str) else [str(c) for c in command])


def _run_kept(client: Any, image: str, options: RunOptions, on_line: Optional[Callable[[str], None]]) -> RunResult:
    """keep_alive: KEEPER holds the container up, the model runs in it with `docker exec`."""
    from docker.errors import DockerException

    try:
        config = client.images.get(image).attrs.get("Config") or {}
    except DockerException as exc:
        raise RunError(f"cannot inspect {image}: {exc}") from None
    command = model_command(config, options.command)
    if not command:
        raise RunError(f"{image} has no ENTRYPOINT or CMD and the run gave no command: nothing to run")
    kwargs = container_kwargs(dataclasses.replace(options, command=None))
    try:
        container = client.containers.create(image, detach=True, entrypoint=list(KEEPER), **kwargs)
    except DockerException as exc:
        raise RunError(f"cannot create a container from {image}: {exc}") from None
    kept = False
    try:
        try:
            container.start()
            exec_id = client.api.exec_create(container.id, command, stdout=True, stderr=True)["Id"]
        except DockerException as exc:
            raise RunError(f"cannot start a container from {image} to keep alive (--keep-alive holds it up "
                           f"with `sh`): {exc}") from None
        start = time.monotonic()
        logs, timed_out = _follow(client.api.exec_start(exec_id, stream=True), options.timeout, on_line)
        duration = time.monotonic() - start
        exit_code = -1 if timed_out else _exec_exit_code(client, exec_id)
        kept = True
    finally:
        if not kept:  # Ctrl-C, or it never started: leave nothing behind
            with contextlib.suppress(Exception):
                container.remove(force=True)
    performance, metric = parse_performance(logs)
    return RunResult(exit_code=exit_code, logs=logs, duration=duration, performance=performance, metric=metric,
                     timed_out=timed_out, image=image, container_id=container.id)


def _follow(stream: Any, timeout: Optional[float], on_line: Optional[Callable[[str], None]]) -> Tuple[str, bool]:
    """Read an exec's output until it ends or `timeout` passes: (the output, whether it timed out).

    A thread reads the stream; lines reach `on_line` on the calling thread, which Ctrl-C can interrupt.
    """
    chunks: "queue.Queue[Optional[bytes]]" = queue.Queue()

    def read() -> None:
        try:
            for chunk in stream:
                chunks.put(chunk)
        except Exception:  # a broken stream ends the output; the exit code still comes from the engine
            pass
        finally:
            chunks.put(None)

    threading.Thread(target=read, name="madcache-exec-output", daemon=True).start()
    deadline = time.monotonic() + timeout if timeout else None
    got: List[bytes] = []
    lines = _Lines(on_line)
    while True:
        try:
            chunk = chunks.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return b"".join(got).decode("utf-8", "replace"), True
        if chunk is None:
            break
        got.append(chunk)
        lines.feed(chunk)
    lines.end()
    return b"".join(got).decode("utf-8", "replace"), False


def _exec_exit_code(client: Any, exec_id: str) -> int:
    """The exec's exit code; the engine may record it a moment after the output ends."""
    for _ in range(100):
        info = client.api.exec_inspect(exec_id)
        if not info.get("Running") and info.get("ExitCode") is not None:
            return int(info["ExitCode"])
        time.sleep(0.05)
    return -1
