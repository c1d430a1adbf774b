"""What the plugin and `madcache key` ask of the engine by default: bases resolved through it (and
the registry itself where it cannot ask, as Podman), and the build a model mark describes."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Optional

from pytest_madcache.core.bases import BaseResolver
from pytest_madcache.core.images import BuildResult
from pytest_madcache.core.model import ModelSpec
from pytest_madcache.engines.docker import Engine
from pytest_madcache.remote.registry import registry_digest

__all__ = ["base_resolver", "build_with_engine"]


def base_resolver(engine: Optional[Engine], warn: Callable[[str], None]) -> BaseResolver:
    """How the plugin and `madcache key` resolve bases: through `engine` (None: no engine answers),
    and the registry itself where the engine cannot ask it (Podman)."""
    return BaseResolver(engine, engine_name=str(engine.host() or "") if engine is not None else "", warn=warn,
                        direct=registry_digest)


def build_with_engine(engine: Engine, spec: ModelSpec, tag: str, build_args: Mapping[str, str],
                      labels: Mapping[str, str], on_line: Optional[Callable[[str], None]],
                      tmp_dir: Optional[Path] = None) -> BuildResult:
    """The default build: the mark's builder (BuildKit where buildx is found) with the spec's context
    and Dockerfile (less what the session wrote into it); build args named in `secrets=` go to
    BuildKit as secret mounts, not build args."""
    secrets = {name: value for name, value in build_args.items() if name in spec.secrets}
    plain = {name: value for name, value in build_args.items() if name not in secrets}
    return engine.build(spec.context, dockerfile=spec.dockerfile, tag=tag, build_args=plain, labels=labels,
                        on_line=on_line, tmp_dir=tmp_dir, builder=spec.builder, secrets=secrets,
                        exclude=spec.context_excludes)
