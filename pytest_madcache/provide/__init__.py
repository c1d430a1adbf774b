"""The one place that decides how a test gets its image: `service.ImageService` (a session's images:
key, bases, the cache, the remote, what a miss was about), `decide.get_or_build` (hit, remote, wait,
build and save, for one key) and `limits.end_session`.  Everything the pytest glue and the CLI ask of
it is named here."""

from pytest_madcache.provide.decide import Outcome, build_output, get_or_build, run_build
from pytest_madcache.provide.engineops import base_resolver, build_with_engine
from pytest_madcache.provide.limits import SessionEnd, end_session
from pytest_madcache.provide.service import (
    ImageError,
    ImageService,
    ModelImage,
    Reporter,
)

__all__ = ["ModelImage", "ImageService", "ImageError", "Reporter", "Outcome", "SessionEnd", "end_session",
           "get_or_build", "run_build", "build_output", "build_with_engine", "base_resolver"]
