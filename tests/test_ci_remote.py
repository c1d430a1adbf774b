"""The CI wrappers turn the registry remote on: the GitLab templates with one variable (the project's
registry, the job's token), the GitHub Action with its `remote` input.  No engine, no CI runner: the
templates' scripts run in bash with a stand-in `madcache` that records how it was called."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.test_ci_github import _helper

ROOT = Path(__file__).resolve().parents[1]
FAKE = """#!/bin/sh
echo "madcache $* remote=${MADCACHE_REMOTE:-} user=${MADCACHE_REMOTE_USER:-} password=${MADCACHE_REMOTE_PASSWORD:-}" >> "$CALLS"
"""


def _job(which: str, registry: str) -> dict:
    if which == "include":
        doc = yaml.safe_load((ROOT / "gitlab_templates" / "madcache.yml").read_text())
        job = dict(doc[".madcache"])
        variables = dict(doc[".madcache-settings"]["variables"])
    else:
        text = (ROOT / "gitlab_templates" / "templates" / "madcache" / "template.yml").read_text()
        body = text.split("\n---\n", 1)[1]
        for name, value in {"job-prefix": "madcache", "cache-dir": ".madcache", "max-size-gb": "20",
                            "max-entries": "5", "ttl": "7d", "key-prefix": "madcache", "policy": "pull-push",
                            "when": "on_success", "registry": registry}.items():
            body = body.replace(f"$[[ inputs.{name} ]]", value)
        job = yaml.safe_load(body)[".madcache"]
        variables = dict(job["variables"])
    variables["MADCACHE_USE_REGISTRY"] = registry if which == "include" else variables["MADCACHE_USE_REGISTRY"]
    return {"before": "\n".join(job["before_script"]), "after": "\n".join(job["after_script"]),
            "variables": variables}


def _run(script: str, env: dict) -> str:
    proc = subprocess.run(["bash", "-euc", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("which", ["include", "component"])
def test_gitlab_one_variable_shares_through_the_project_registry(tmp_path, which):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "madcache").write_text(FAKE)
    (tmp_path / "bin" / "madcache").chmod(0o755)
    calls = tmp_path / "calls"
    gitlab = {"CI_REGISTRY_IMAGE": "127.0.0.1:5000/group/project", "CI_JOB_TOKEN": "job-token-123",
              "CALLS": str(calls), "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}

    job = _job(which, "true")
    env = dict(gitlab, MADCACHE_USE_REGISTRY=job["variables"]["MADCACHE_USE_REGISTRY"])
    assert "madcache: remote cache 127.0.0.1:5000/group/project/madcache" in _run(job["before"], env)
    _run(job["after"], env)  # after_script runs in a shell of its own: it sets the same again
    assert calls.read_text().splitlines() == [
        "madcache prune remote=127.0.0.1:5000/group/project/madcache user=gitlab-ci-token password=job-token-123",
        "madcache push remote=127.0.0.1:5000/group/project/madcache user=gitlab-ci-token password=job-token-123",
        "madcache stats remote=127.0.0.1:5000/group/project/madcache user=gitlab-ci-token password=job-token-123",
    ]

    calls.unlink()
    job = _job(which, "false")
    env = dict(gitlab, MADCACHE_USE_REGISTRY=job["variables"]["MADCACHE_USE_REGISTRY"])
    assert "remote cache" not in _run(job["before"], env)
    _run(job["after"], env)
    assert calls.read_text().splitlines() == ["madcache prune remote= user= password=",
                                              "madcache stats remote= user= password="], "off by default"


def test_github_action_exports_the_remote(tmp_path):
    inputs = {"path": ".mc", "key-prefix": "mc", "key": "mc-Linux-X64-77-2", "save": "on-success",
              "remote": "127.0.0.1:5000/Org/Repo/madcache", "remote-compress": "zstd"}
    proc, _, exported, _ = _helper(tmp_path, "setup", inputs)
    assert proc.returncode == 0, proc.stdout
    assert exported["MADCACHE_REMOTE"] == "127.0.0.1:5000/org/repo/madcache", "lower-cased for the registry"
    assert exported["MADCACHE_REMOTE_COMPRESS"] == "zstd"
    proc, _, exported, _ = _helper(tmp_path, "setup", {"path": ".mc", "key": "k", "save": "on-success"})
    assert "MADCACHE_REMOTE" not in exported
