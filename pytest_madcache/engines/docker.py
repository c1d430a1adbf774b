"""The engine adapter: the only module that talks to a Docker-API engine.

Docker (classic or containerd image store) and Podman's Docker API service
differ in what they save and what they load; `Engine.info` finds out once
which one this is (`EngineInfo`), and the store picks its load archive and
delta strategy from that.  Measured on dockerd 20.10: a presence check
through the SDK takes ~1 ms while creating a client takes ~7 ms, so one
Engine (one client) is reused.  Save and load are streams of bytes so the
store never needs an intermediate tar.  Builds go through the SDK's classic
builder or, where a buildx binary is found, BuildKit (`buildkit.py`).  The
SDK itself is imported by the methods that use it, so a test session that
never touches a model never pays for it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

from pytest_madcache.core.images import (
    BUILDERS,
    BuildFailed,
    BuildResult,
    EngineError,
    EngineInfo,
    ImageInfo,
    engine_socket,
)
from pytest_madcache.engines.classic import classic_build
from pytest_madcache.engines.context import BuildRequest
from pytest_madcache.util.refs import short_names, split_reference

__all__ = ["Engine", "EngineError", "BuildFailed", "BuildResult", "ImageInfo", "EngineInfo", "BUILDERS"]


@dataclass
class Engine:
    """One reusable connection to a Docker engine (DOCKER_HOST or the default socket)."""

    client: Any = None
    _layer_index: Optional[Dict[str, Any]] = field(default=None, repr=False)
    _info: Optional[EngineInfo] = field(default=None, repr=False)
    _description: Optional[str] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        import docker
        from docker.errors import DockerException
        if self.client is None:
            try:
                self.client = docker.from_env(timeout=600)
            except DockerException as exc:
                raise EngineError(self.unreachable(exc)) from None

    @property
    def api(self) -> Any:
        return self.client.api

    @classmethod
    def open(cls) -> "Engine":
        """The engine DOCKER_HOST (or the default socket) reaches, answering; EngineError when none does."""
        engine = cls()
        engine.ping()
        return engine

    def ping(self) -> None:
        try:
            self.api.ping()
        except Exception as exc:
            raise EngineError(self.unreachable(exc)) from None

    @staticmethod
    def unreachable(exc: BaseException) -> str:
        """One line for a failed connect or ping: the address tried, where it came from, and the
        operating system's reason, instead of the SDK's nested `Error while fetching server API
        version: ('Connection aborted.', FileNotFoundError(2, ...))`."""
        seen, todo, reason = set(), [exc], ""
        while todo and not reason:  # the first OSError in the chain (causes, contexts, args)
            err = todo.pop(0)
            if id(err) in seen:
                continue
            seen.add(id(err))
            if isinstance(err, FileNotFoundError):
                reason = "no such socket"
            elif isinstance(err, ConnectionRefusedError):
                reason = "connection refused: nothing listens there"
            elif isinstance(err, PermissionError):
                reason = "permission denied (not root, nor in the socket's group)"
            elif isinstance(err, OSError) and err.strerror:
                reason = err.strerror[:1].lower() + err.strerror[1:]
            todo += [e for e in (err.__cause__, err.__context__, *err.args) if isinstance(e, BaseException)]
        if not reason:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return f"no Docker engine answers at {engine_socket()}: {reason}"

    @property
    def info(self) -> EngineInfo:
        """The engine's kind and image store, asked once (two API calls, ~10 ms)."""
        if self._info is None:
            try:
                self._info = EngineInfo.from_api(self.api.version(), self.api.info())
            except Exception as exc:
                raise EngineError(f"cannot reach the Docker engine: {exc}") from None
        return self._info

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
            repo_tags=short_names(attrs.get("RepoTags") or []),
            size=int(attrs.get("Size") or 0),
        )

    def image_id(self, reference: str) -> Optional[str]:
        """The id of the image held under `reference` (bases.BaseEngine), or None."""
        info = self.inspect(reference)
        return info.id if info is not None else None

    def distribution_digest(self, reference: str) -> Optional[str]:
        """The registry's manifest digest for `reference`, asked through the engine (its credentials and
        mirrors; nothing is pulled).  None when the registry cannot tell; raises
        bases.DistributionUnsupported where the engine lacks the endpoint (Podman)."""
        from docker.errors import APIError, DockerException

        from pytest_madcache.core.bases import DistributionUnsupported
        if self.info.product == "podman":  # Podman 4 and 5 answer 404 for the whole route
            raise DistributionUnsupported(f"{self.info.name} has no distribution endpoint")
        try:
            data = self.api.inspect_distribution(reference)
        except (APIError, DockerException):
            return None
        digest = (data.get("Descriptor") or {}).get("digest")
        return str(digest) if digest else None

    def has_image(self, image_id: str) -> bool:
        return self.inspect(image_id) is not None

    def find(self, ids: Iterable[str]) -> Optional[ImageInfo]:
        """The first of `ids` the engine has.  One image goes by different ids on
        different engines (the config digest; a manifest digest on the
        containerd store), so the caller offers every id it may have."""
        for image_id in dict.fromkeys(ids):
            info = self.inspect(image_id)
            if info is not None:
                return info
        return None

    def metadata_text(self, image_id: str) -> str:
        """Everything the engine records about an image besides its files: its
        inspect data and its history (build args used by RUN steps end up there)."""
        from docker.errors import DockerException
        try:
            return json.dumps([self.api.inspect_image(image_id), self.api.history(image_id)])
        except DockerException as exc:
            raise EngineError(f"cannot inspect image {image_id}: {exc}") from None

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

    def build(self, context: Path, dockerfile: Optional[Path] = None, tag: Optional[str] = None,
              build_args: Optional[Mapping[str, str]] = None, labels: Optional[Mapping[str, str]] = None,
              on_line: Optional[Callable[[str], None]] = None, tmp_dir: Optional[Path] = None,
              builder: str = "auto", secrets: Optional[Mapping[str, str]] = None,
              exclude: Sequence[str] = ()) -> BuildResult:
        """Build an image; BuildFailed carries the build log.  The arguments are a `BuildRequest`'s."""
        return self.build_request(BuildRequest(
            Path(context), Path(dockerfile) if dockerfile is not None else None, tag, dict(build_args or {}),
            dict(labels or {}), on_line, Path(tmp_dir) if tmp_dir is not None else None, builder,
            dict(secrets or {}), tuple(exclude)))

    def build_request(self, request: BuildRequest) -> BuildResult:
        """`request.builder`: "buildkit" (buildx, see buildkit.py), "legacy" (the SDK's classic builder,
        classic.py; Podman's own builder on Podman) or "auto" (BuildKit on Docker when a buildx binary
        is found, else legacy)."""
        buildx = self._buildx_for(request.builder, request.dockerfile_path)
        if buildx is not None:
            result = self._buildkit(buildx, request)
        else:
            result = classic_build(self.api, request, self.inspect)
        self._layer_index = None
        return result

    def describe(self) -> str:
        """One line for people: which engine, how it builds, how images get into it."""
        if self._description is None:
            buildx = self._buildx_for("auto")
            builds = (f"BuildKit ({buildx})" if buildx is not None
                      else "Podman's builder" if self.info.product == "podman" else "the classic builder")
            self._description = f"{self.info.name}; builds: {builds}; loads: {self.info.strategy}"
        return self._description

    def _buildx_for(self, builder: str = "auto", dockerfile: Optional[Path] = None) -> Optional[str]:
        """The buildx binary a requested builder builds with, None for the legacy builder
        (Podman's own on Podman), or EngineError saying why BuildKit cannot be had.  For a build
        (`dockerfile` given) that would go to the classic builder, a Dockerfile it refuses (a `RUN
        --mount`, a heredoc...: buildkit_check) is BuildFailed here, in one line, before the engine is
        sent anything."""
        from pytest_madcache.engines.buildkit import buildx_binary
        from pytest_madcache.engines.buildkit_check import buildx_missing, classic_refuses, refusal

        if builder not in BUILDERS:
            raise EngineError(f"unknown builder {builder!r}: use {', '.join(BUILDERS)}")
        binary = None if builder == "legacy" else buildx_binary()
        if binary is not None or builder == "buildkit":
            podman = self.info.product == "podman"
            if builder == "buildkit" and (podman or binary is None):
                why = ("Podman builds with its own builder: use builder='legacy' (it supports RUN --mount)" if podman
                       else buildx_missing())
                raise EngineError(f"builder='buildkit' cannot be used: {why}")
            return None if podman else binary
        if dockerfile is not None:  # the classic builder: no buildx found, or builder='legacy'
            need = classic_refuses(Path(dockerfile), lambda: self.info)
            if need is not None:
                raise BuildFailed(refusal(need, builder, buildx_binary() if builder == "legacy" else None),
                                  need.where())
        return None

    def host(self) -> Optional[str]:
        """The engine's address as DOCKER_HOST would give it, for tools that talk to it themselves."""
        adapter = None
        with contextlib.suppress(Exception):
            adapter = self.api.get_adapter("http+docker://")
        path = getattr(adapter, "socket_path", None)
        if path:
            return f"unix://{path}"
        base = str(getattr(self.api, "base_url", "") or "")
        if base.startswith(("http://", "https://")):
            return "tcp://" + base.split("://", 1)[1]
        return os.environ.get("DOCKER_HOST")

    def _buildkit(self, binary: str, request: BuildRequest) -> BuildResult:
        from pytest_madcache.engines.buildkit import buildx_build

        # An engine started without a bridge network (--bridge=none) cannot give
        # BuildKit's RUN steps one; the classic builder falls back by itself.
        network = None
        with contextlib.suppress(Exception):
            if not self.api.networks(names=["bridge"]):
                network = "none"
        return buildx_build(binary, self.host(), request, network)


def common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
