"""The Docker engine adapter: the only module that talks to the engine.

Measured on dockerd 20.10: a presence check through the SDK takes ~1 ms while
creating a client takes ~7 ms, so one Engine (one client) is reused.  Save and
load are streams of bytes so the store never needs an intermediate tar.
The SDK itself (~80 ms with requests) is imported by the methods that use
it, so a test session that never touches a model never pays for it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence


__all__ = ["Engine", "EngineError", "BuildFailed", "BuildResult", "ImageInfo"]


class EngineError(RuntimeError):
    """The engine is unreachable or refused a request."""


class BuildFailed(EngineError):
    """A build failed; `log` holds what the build printed."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.splitlines()[-lines:])


@dataclass(frozen=True)
class ImageInfo:
    id: str  # sha256:<hex>, the config digest
    diff_ids: List[str]  # sha256:<hex> per layer, lowest first
    repo_tags: List[str]
    size: int


@dataclass
class BuildResult:
    image_id: str
    duration: float
    log: str = ""


@dataclass
class Engine:
    """One reusable connection to a Docker engine (DOCKER_HOST or the default socket)."""

    client: Any = None
    _layer_index: Optional[Dict[str, Any]] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        import docker
        from docker.errors import DockerException
        if self.client is None:
            try:
                self.client = docker.from_env(timeout=600)
            except DockerException as exc:
                raise EngineError(f"cannot reach the Docker engine: {exc}") from None

    @property
    def api(self) -> Any:
        return self.client.api

    def ping(self) -> None:
        try:
            self.api.ping()
        except Exception as exc:
            raise EngineError(f"cannot reach the Docker engine: {exc}") from None

    # -- images ----------------------------------------------------------------

    def inspect(self, ref: str) -> Optional[ImageInfo]:
        from docker.errors import APIError, DockerException, ImageNotFound, NotFound
        try:
            attrs = self.api.inspect_image(ref)
        except (ImageNotFound, NotFound):
            return None
        except APIError as exc:
            if exc.status_code == 404:
                return None
            raise EngineError(f"cannot inspect image {ref!r}: {exc}") from None
        except DockerException as exc:
            raise EngineError(f"cannot reach the Docker engine: {exc}") from None
        return ImageInfo(
            id=attrs["Id"],
            diff_ids=list((attrs.get("RootFS") or {}).get("Layers") or []),
            repo_tags=list(attrs.get("RepoTags") or []),
            size=int(attrs.get("Size") or 0),
        )

    def has_image(self, image_id: str) -> bool:
        return self.inspect(image_id) is not None

    def tag(self, image_id: str, reference: str) -> None:
        from docker.errors import DockerException
        repo, tag = split_reference(reference)
        try:
            self.api.tag(image_id, repo, tag, force=True)
        except DockerException as exc:
            raise EngineError(f"cannot tag {image_id} as {reference}: {exc}") from None

    def remove(self, ref: str, force: bool = True, prune_parents: bool = False) -> None:
        """Remove an image.  Untagged parents are kept unless asked: pruning them
        races with concurrent builds that use them as build cache ("unknown
        parent image ID")."""
        from docker.errors import DockerException, ImageNotFound, NotFound
        try:
            self.api.remove_image(ref, force=force, noprune=not prune_parents)
        except (ImageNotFound, NotFound):
            pass
        except DockerException as exc:
            raise EngineError(f"cannot remove image {ref}: {exc}") from None
        self._layer_index = None

    def present_prefix(self, diff_ids: Sequence[str], hints: Iterable[str] = ()) -> int:
        """How many of `diff_ids`, from the bottom, the engine already has.

        The engine loads a tar that omits layers only when the whole lower
        chain is present, so what counts is the longest common prefix with
        any image the engine holds.  `hints` are image ids worth checking
        first (entries that share layers); the full image list is consulted
        only when the hints leave something missing.
        """
        best = 0
        for image_id in hints:
            info = self.inspect(image_id)
            if info:
                best = max(best, common_prefix(diff_ids, info.diff_ids))
                if best == len(diff_ids):
                    return best
        for layers in self._all_layer_chains():
            best = max(best, common_prefix(diff_ids, layers))
            if best == len(diff_ids):
                break
        return best

    def _all_layer_chains(self) -> Iterator[List[str]]:
        from docker.errors import DockerException
        try:
            summaries = self.api.images(all=False)
        except DockerException as exc:
            raise EngineError(f"cannot list images: {exc}") from None
        ids = [s["Id"] for s in summaries]
        cache = self._layer_index if self._layer_index is not None else {}
        for image_id in ids:
            if image_id not in cache:
                info = self.inspect(image_id)
                cache[image_id] = info.diff_ids if info else []
            yield cache[image_id]
        self._layer_index = cache

    def forget_layers(self) -> None:
        """Drop the remembered layer chains (after a load or removal)."""
        self._layer_index = None

    # -- save / load -------------------------------------------------------------

    def save(self, image_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """`docker save` as a stream of chunks."""
        from docker.errors import DockerException
        try:
            return self.api.get_image(image_id, chunk_size=chunk_size)
        except DockerException as exc:
            raise EngineError(f"cannot save image {image_id}: {exc}") from None

    def load(self, data: Iterable[bytes]) -> List[str]:
        """`docker load` from a stream of chunks; returns what the engine reported loading."""
        loaded: List[str] = []
        try:
            for message in self.api.load_image(data):
                if isinstance(message, dict):
                    if message.get("error") or message.get("errorDetail"):
                        detail = message.get("error") or message.get("errorDetail")
                        raise EngineError(f"the engine refused the load: {detail}")
                    text = message.get("stream", "")
                    if text.startswith("Loaded image"):
                        loaded.append(text.split(":", 1)[1].strip())
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"loading the image failed: {exc}") from None
        finally:
            self._layer_index = None
        return loaded

    # -- build -------------------------------------------------------------------

    def build(
        self,
        context: Path,
        dockerfile: Optional[Path] = None,
        tag: Optional[str] = None,
        build_args: Optional[Mapping[str, str]] = None,
        labels: Optional[Mapping[str, str]] = None,
        on_line: Optional[Any] = None,
        tmp_dir: Optional[Path] = None,
    ) -> BuildResult:
        """Build an image; BuildFailed carries the build log.

        docker-py packs the context into a temporary file in TMPDIR; with
        `tmp_dir` (the cache's tmp/) it goes there instead, so a read-only
        root filesystem with one writable cache volume is enough.
        """
        from docker.errors import APIError, BuildError, DockerException
        context = Path(context)
        rel_dockerfile = None
        if dockerfile is not None:
            rel_dockerfile = str(Path(dockerfile).resolve().relative_to(context.resolve())) if _inside(
                Path(dockerfile), context
            ) else str(Path(dockerfile).resolve())
        start = time.monotonic()
        lines: List[str] = []
        image_id = None
        packed = None
        try:
            source: Dict[str, Any] = {"path": str(context), "dockerfile": rel_dockerfile}
            if tmp_dir is not None:
                try:
                    packed = _pack_context(context, rel_dockerfile, Path(tmp_dir))
                except OSError:  # the cache volume is full or read-only: docker-py's TMPDIR default
                    packed = None
                if packed is not None:
                    source = {"fileobj": packed[0], "custom_context": True, "dockerfile": packed[1]}
            stream = self.api.build(
                **source,
                tag=tag,
                buildargs=dict(build_args or {}),
                labels=dict(labels or {}),
                rm=True,
                forcerm=True,
                decode=True,
            )
            for chunk in stream:
                if "stream" in chunk:
                    text = chunk["stream"]
                    lines.append(text.rstrip("\n"))
                    if on_line:
                        on_line(text.rstrip("\n"))
                if "error" in chunk or "errorDetail" in chunk:
                    err = chunk.get("error") or json.dumps(chunk.get("errorDetail"))
                    lines.append(str(err))
                    raise BuildFailed(f"docker build failed: {err}", "\n".join(lines))
                aux = chunk.get("aux")
                if isinstance(aux, dict) and "ID" in aux:
                    image_id = aux["ID"]
        except BuildFailed:
            raise
        except (APIError, BuildError, DockerException) as exc:
            raise BuildFailed(f"docker build failed: {exc}", "\n".join(lines)) from None
        finally:
            if packed is not None:
                packed[0].close()
        if image_id is None and tag:
            info = self.inspect(tag)
            image_id = info.id if info else None
        if image_id is None:
            raise BuildFailed("docker build finished without an image id", "\n".join(lines))
        self._layer_index = None
        return BuildResult(image_id=image_id, duration=time.monotonic() - start, log="\n".join(lines))


def _pack_context(context: Path, dockerfile: Optional[str], tmp_dir: Path) -> Any:
    """The build context as docker-py would send it (`.dockerignore` honoured, a
    Dockerfile outside the context added), in an unnamed temp file in `tmp_dir`."""
    import tempfile

    from docker.api.build import process_dockerfile
    from docker.utils import tar

    from .key import read_dockerignore

    exclude = read_dockerignore(context)
    processed = process_dockerfile(dockerfile, str(context))
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fh = tempfile.TemporaryFile(dir=str(tmp_dir), prefix="build-context-")
    return tar(str(context), exclude=exclude, dockerfile=processed, fileobj=fh), processed[0]


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def split_reference(reference: str) -> tuple:
    """`repo[:tag]` -> (repo, tag); a registry port is not a tag."""
    name, _, tag = reference.rpartition(":")
    if name and "/" not in tag:
        return name, tag
    return reference, "latest"
