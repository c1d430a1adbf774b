"""Helpers for the plugin tests: fake build/run hooks, tiny model contexts, image cleanup."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Dict, List, Sequence

from pytest_madcache.devtools.localengine import busybox_path

#: A conftest that replaces the build and the run (no engine needed) and adds key material.
FAKE_HOOKS = '''
import pytest
from pytest_madcache.engines.docker import BuildResult
from pytest_madcache.engines.runner import RunResult

BUILDS = []

@pytest.hookimpl
def pytest_madcache_build_image(config, model, tag, build_args, labels, on_line):
    BUILDS.append(tag)
    if on_line:
        on_line("fake build step for " + model.name)
    return BuildResult(image_id="sha256:" + "ab" * 32, duration=0.25)

@pytest.hookimpl
def pytest_madcache_run_model(config, image, options, on_line):
    env = dict(options.env)
    logs = "warm-up\\nperformance: 1 ignored/s\\nperformance: %s samples/s\\n" % env.get("PERF", "12.5")
    if on_line:
        for line in logs.splitlines():
            on_line(line)
    kept = env.get("KEPT_ID", "f00d" * 16) if options.keep_alive else None  # as if --keep-alive kept it
    return RunResult(exit_code=int(env.get("EXIT", "0")), logs=logs, duration=0.01, container_id=kept)

def pytest_madcache_key_material(item, model):
    return {"base_image_digest": "sha256:feed"}
'''


def tiny_context(directory: Path, extra_lines: Sequence[str] = (), files: Dict[str, str] = None) -> Path:
    """A model build context: busybox FROM scratch plus a few lines."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox_path(), directory / "busybox")
    (directory / "busybox").chmod(0o755)
    for name, text in (files or {}).items():
        (directory / name).write_text(text)
    lines = ["FROM scratch", "COPY busybox /bin/busybox", 'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
             *extra_lines]
    (directory / "Dockerfile").write_text("\n".join(lines) + "\n")
    return directory


def read_csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def remove_images(engine, label: str) -> None:
    """Remove every image carrying `label` (`key` or `key=value`)."""
    for image in engine.client.images.list(filters={"label": label}):
        try:
            engine.client.images.remove(image.id, force=True)  # parents too: like a fresh runner
        except Exception:
            pass
