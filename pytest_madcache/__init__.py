"""pytest-madcache: a pytest plugin and CLI that cache the Docker images model test suites build.

The public API, for suites, hook implementations and scripts, is imported from here:

    from pytest_madcache import RunResult, RunOptions, BuildResult, BuildFailed, ModelImage, Store, get_or_build

Each name loads its module when first asked for (PEP 562), so importing the package, or a suite
without models, never imports the Docker SDK.  The layout is on the docs' Architecture page.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, List

#: Public name -> the module that defines it.
_PUBLIC = {
    "RunOptions": "pytest_madcache.core.run",
    "RunResult": "pytest_madcache.core.run",
    "parse_performance": "pytest_madcache.core.run",
    "BuildResult": "pytest_madcache.core.images",
    "BuildFailed": "pytest_madcache.core.images",
    "EngineError": "pytest_madcache.core.images",
    "ModelSpec": "pytest_madcache.core.model",
    "CacheKey": "pytest_madcache.core.key",
    "KeySpec": "pytest_madcache.core.key",
    "key_for": "pytest_madcache.core.key",
    "Settings": "pytest_madcache.core.settings",
    "Store": "pytest_madcache.store",
    "Entry": "pytest_madcache.store",
    "StoreError": "pytest_madcache.store",
    "ModelImage": "pytest_madcache.provide",
    "ImageError": "pytest_madcache.provide",
    "get_or_build": "pytest_madcache.provide",
    "Engine": "pytest_madcache.engines.docker",
    "open_remote": "pytest_madcache.remote",
}

__all__ = ["BuildFailed", "BuildResult", "CacheKey", "Engine", "EngineError", "Entry", "ImageError",
           "KeySpec", "ModelImage", "ModelSpec", "RunOptions", "RunResult", "Settings", "Store",
           "StoreError", "get_or_build", "key_for", "open_remote", "parse_performance"]

if TYPE_CHECKING:
    from pytest_madcache.core.images import BuildFailed, BuildResult, EngineError
    from pytest_madcache.core.key import CacheKey, KeySpec, key_for
    from pytest_madcache.core.model import ModelSpec
    from pytest_madcache.core.run import RunOptions, RunResult, parse_performance
    from pytest_madcache.core.settings import Settings
    from pytest_madcache.engines.docker import Engine
    from pytest_madcache.provide import ImageError, ModelImage, get_or_build
    from pytest_madcache.remote import open_remote
    from pytest_madcache.store import Entry, Store, StoreError


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_madcache' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # asked once
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_PUBLIC))
