"""The classic builder: the Docker SDK's `build` (and Podman's own builder behind its Docker API).

It reads the build's output stream line by line (to the log and, live, to `on_line`) and takes the
image id from the stream's `aux` record, or from the tag when an engine sends none.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

from pytest_madcache.core.images import BuildFailed, BuildResult, ImageInfo
from pytest_madcache.engines.context import BuildRequest

__all__ = ["classic_build"]


def classic_build(api: Any, request: BuildRequest, inspect: Callable[[str], Optional[ImageInfo]]) -> BuildResult:
    """Build with the SDK's low-level client `api`; `inspect(tag)` finds the image when the stream
    named none.  Secrets go in as build args (the legacy builder has no secret mounts)."""
    from docker.errors import APIError, BuildError, DockerException

    start = time.monotonic()
    lines: List[str] = []
    packed = None
    try:
        source: Dict[str, Any] = {"path": str(request.context), "dockerfile": request.dockerfile_name}
        if request.tmp_dir is not None or request.exclude:
            packed = request.packed(request.tmp_dir)
            source = {"fileobj": packed[0], "custom_context": True, "dockerfile": packed[1]}
        stream = api.build(**source, tag=request.tag, buildargs={**request.build_args, **request.secrets},
                           labels=dict(request.labels), rm=True, forcerm=True, decode=True)
        image_id = _read_stream(stream, lines, request.on_line)
    except BuildFailed:
        raise
    except (APIError, BuildError, DockerException) as exc:
        raise BuildFailed(f"docker build failed: {exc}", "\n".join(lines)) from None
    finally:
        if packed is not None:
            packed[0].close()
    if image_id is None and request.tag:
        info = inspect(request.tag)
        image_id = info.id if info else None
    if image_id is None:
        raise BuildFailed("docker build finished without an image id", "\n".join(lines))
    return BuildResult(image_id=image_id, duration=time.monotonic() - start, log="\n".join(lines))


def _read_stream(stream: Iterable[Dict[str, Any]], lines: List[str],
                 on_line: Optional[Callable[[str], None]]) -> Optional[str]:
    """The image id the build's JSON stream names; its text goes to `lines` and `on_line`."""
    image_id = None
    for chunk in stream:
        if "stream" in chunk:
            text = chunk["stream"].rstrip("\n")
            lines.append(text)
            if on_line:
                on_line(text)
        if "error" in chunk or "errorDetail" in chunk:
            err = chunk.get("error") or json.dumps(chunk.get("errorDetail"))
            lines.append(str(err))
            raise BuildFailed(f"docker build failed: {err}", "\n".join(lines))
        aux = chunk.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            image_id = aux["ID"]
    return image_id
