"""The fixtures, declared here and done in obtain.py: a suite that never asks for them never
imports what reads a model mark, computes a key or runs a container (bench P6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pytest

if TYPE_CHECKING:
    from pytest_madcache.core.run import RunResult
    from pytest_madcache.provide import ModelImage

__all__ = ["model_image", "model_run"]


@pytest.fixture
def model_image(request: pytest.FixtureRequest) -> ModelImage:
    """The Docker image of this test's model: loaded from the cache or built (and saved)."""
    from pytest_madcache.pytest_glue.obtain import obtain_image

    return obtain_image(request)


@pytest.fixture
def model_run(request: pytest.FixtureRequest, model_image: ModelImage) -> Callable[..., RunResult]:
    """A callable `model_run(command=None, env=None, timeout=None, **run_options) -> RunResult`.

    Runs a container from `model_image`; the mark's run options are the
    defaults, the call's win.  Every run becomes a row of `--output`.
    """
    from pytest_madcache.pytest_glue.obtain import model_runner

    return model_runner(request, model_image)
