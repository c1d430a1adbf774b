"""What reading and writing an image archive share: the error both raise and the media types.

The reader (archive.py) and the writer (loadarchive.py) both import this leaf,
so neither imports the other (archive.py re-exports the writer's names).  Names
only: it reads and writes nothing.
"""

from __future__ import annotations

from pytest_madcache.util.refs import DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST

__all__ = ["ArchiveError", "OCI_INDEX", "OCI_MANIFEST", "DOCKER_LIST", "OCI_CONFIG", "OCI_LAYER"]

DOCKER_LIST = DOCKER_MANIFEST_LIST


class ArchiveError(RuntimeError):
    """The archive is not a readable image archive, or does not hold what it claims."""
