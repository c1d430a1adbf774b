"""Remote caches: the far cache behind the local directory, as backends behind one small interface
(`base.RemoteBackend`), chosen by the form of the `--cache-remote` value, the way pytest-benchmark picks
its storage from a URL:

* `REGISTRY/REPOSITORY` (`https://...`, `http://...`): an OCI registry (`oci.RemoteCache`);
* `file:///path` or an absolute path: another cache directory (`directory.DirectoryRemote`).

Backends are imported when opened: a session without a remote never imports an HTTP client.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Optional

from pytest_madcache.util.refs import directory_of

if TYPE_CHECKING:
    from pytest_madcache.core.settings import Settings
    from pytest_madcache.remote.base import RemoteBackend

__all__ = ["open_remote"]


def open_remote(text: str, log: Optional[Callable[[str], None]] = None,
                env: Mapping[str, str] = os.environ, settings: Optional["Settings"] = None) -> "RemoteBackend":
    """The backend the setting names (see the module docstring).  With `settings`, a registry
    remote takes its layer compression from them and keeps its journal in the cache directory."""
    directory = directory_of(text)
    if directory is not None:
        from pytest_madcache.remote.directory import DirectoryRemote

        return DirectoryRemote(Path(directory), log)
    from pytest_madcache.remote.oci import RemoteCache

    if settings is not None:
        return RemoteCache.from_settings(settings, log=log, env=env)
    return RemoteCache.from_setting(text, log=log, env=env)
