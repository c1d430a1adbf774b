"""What reading and writing an image archive share: the error both raise, the media types and
the descriptor a manifest names a blob by.

The reader (archive.py) and the writer (loadarchive.py) both import this leaf,
so neither imports the other (archive.py re-exports the writer's names).  Names
only: it reads and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

from pytest_madcache.util.refs import DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST

__all__ = ["ArchiveError", "Descriptor", "OCI_INDEX", "OCI_MANIFEST", "DOCKER_LIST", "OCI_CONFIG", "OCI_LAYER"]

DOCKER_LIST = DOCKER_MANIFEST_LIST


class ArchiveError(RuntimeError):
    """The archive is not a readable image archive, or does not hold what it claims."""


@dataclass(frozen=True)
class Descriptor:
    """How a manifest names a blob: what an engine's content store keys it by."""

    media_type: str
    digest: str
    size: int

    def to_json(self) -> Dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
