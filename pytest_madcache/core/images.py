"""What an engine reports about images and builds: pure values and errors, shared by the engines
(which produce them), the store (which loads and saves through them) and the hooks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional

__all__ = ["BUILDERS", "engine_socket", "EngineError", "BuildFailed", "ImageInfo", "BuildResult", "EngineInfo"]


BUILDERS = ("auto", "buildkit", "legacy")  # what a model mark's builder= may say


def engine_socket(environ: Optional[Mapping[str, str]] = None) -> str:
    """The engine address the Docker SDK tries (docker.from_env), and where it came from."""
    host = (os.environ if environ is None else environ).get("DOCKER_HOST", "").strip()
    if host:
        return f"{host} (from DOCKER_HOST)"
    return "unix:///var/run/docker.sock (the default socket: DOCKER_HOST is not set)"


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


@dataclass(frozen=True)
class EngineInfo:
    """What kind of engine answers, and so how images get in and out of it.

    - classic Docker: loads a docker-archive; a tar may omit layers whose
      lower chain the engine has (delta by chain).
    - Docker on the containerd image store: image ids are manifest digests;
      a docker-archive that omits layers loads *nothing, silently*, while an
      OCI layout may omit blobs its content store holds (delta by blob).
    - Podman: loads a docker-archive and refuses one that omits layers.
    """

    product: str  # "docker" or "podman"
    version: str
    api_version: str
    image_store: str  # "classic", "containerd" or "podman"

    @property
    def load_layout(self) -> str:
        return "oci" if self.image_store == "containerd" else "docker-archive"

    @property
    def delta(self) -> str:
        """How a load may leave out what the engine has: "chain", "blobs" or "none"."""
        return {"classic": "chain", "containerd": "blobs"}.get(self.image_store, "none")

    @property
    def name(self) -> str:
        product = "Podman" if self.product == "podman" else "Docker"
        store = {"classic": "classic image store", "containerd": "containerd image store",
                 "podman": "containers/storage"}[self.image_store]
        return f"{product} {self.version} (API {self.api_version}, {store})"

    @property
    def strategy(self) -> str:
        delta = {"chain": "delta loads (layers whose lower chain the engine lacks)",
                 "blobs": "delta loads (blobs the content store lacks)", "none": "full loads"}[self.delta]
        return f"present images used as they are; {self.load_layout} archives; {delta}"

    @classmethod
    def from_api(cls, version: Mapping[str, Any], info: Mapping[str, Any]) -> "EngineInfo":
        components = [str(c.get("Name", "")) for c in version.get("Components") or [] if isinstance(c, dict)]
        podman = any("podman" in c.lower() for c in components)
        status = {str(k): str(v) for k, v in (info.get("DriverStatus") or []) if isinstance(k, str)}
        if podman:
            store = "podman"
        elif status.get("driver-type", "").startswith("io.containerd.snapshotter"):
            store = "containerd"
        else:
            store = "classic"
        return cls(product="podman" if podman else "docker", version=str(version.get("Version", "?")),
                   api_version=str(version.get("ApiVersion", "?")), image_store=store)

