"""The GitLab templates, proven end to end with gitlab-ci-local, and linted.

gitlab-ci-local 4.62.0 (npm; later versions fail on Node 20 here) runs the
example pipelines of tests/ci/gitlab/ with the shell executor and
--shell-isolation, so `cache:` is restored and uploaded between pipelines.
Each pipeline runs twice on a fresh build directory with the example images
removed from the engine: the first misses and uploads, the second restores
the cache and hits. Both forms: the `include:`d file with `extends: .madcache`
and the CI/CD component with `inputs:`.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.ci import tooling as t


TEMPLATES = t.ROOT / "gitlab_templates"
PIPELINES = t.CI_DIR / "gitlab"
REMOTE = "git@gitlab.example.com:madcache/models.git"


@pytest.fixture(scope="session")
def gl_docker_host():
    """The pipelines get a private dockerd of their own (see tooling.own_engine)."""
    with t.own_engine() as host:
        yield host


@pytest.fixture(scope="session")
def gitlab_ci_local() -> str:
    t.apt_tool("rsync", "rsync")
    home = t.npm_install("gitlab-ci-local", {"gitlab-ci-local": t.GITLAB_CI_LOCAL_VERSION})
    exe = home / "node_modules" / ".bin" / "gitlab-ci-local"
    if not exe.exists():
        t.unavailable(f"gitlab-ci-local is not in {exe}")
    proc = t.run([str(exe), "--version"], timeout=60)
    if proc.returncode != 0 or t.GITLAB_CI_LOCAL_VERSION not in proc.stdout:
        t.unavailable(f"gitlab-ci-local --version: {proc.stdout[-2000:]}")
    return str(exe)


def make_project(base: Path, form: str, token: str) -> Path:
    """A git project with the template copied in as the pipeline includes it."""
    ws = base / f"{form}-{token}"
    (ws / "ci").mkdir(parents=True)
    shutil.copy(TEMPLATES / "madcache.yml", ws / "ci" / "madcache.yml")
    shutil.copytree(TEMPLATES / "templates", ws / "templates")
    t.copy_examples(ws, token)
    (ws / ".gitignore").write_text(".madcache/\n.imagecache/\n.gitlab-ci-local/\n")
    sha = t.git_snapshot(ws, remote=REMOTE)
    # The component is this project's own at this commit (how GitLab tests a component in place).
    text = (PIPELINES / f"{form}.gitlab-ci.yml").read_text().replace("__SHA__", sha)
    (ws / ".gitlab-ci.yml").write_text(text)
    return ws


def pipeline(exe: str, ws: Path, docker_host: str, tag: str, extra=()):
    # A fresh build directory, as on a new runner: only GitLab's cache survives.
    shutil.rmtree(ws / ".gitlab-ci-local" / "builds", ignore_errors=True)
    start = time.monotonic()
    proc = t.run([exe, "--shell-isolation", "--variable", f"DOCKER_HOST={docker_host}", *extra], cwd=ws, timeout=900)
    seconds = time.monotonic() - start
    log = t.strip_ansi(proc.stdout)
    (ws.parent / f"{ws.name}-{tag}.log").write_text(log)
    return proc.returncode, log, seconds


def run_twice(exe: str, ws: Path, docker_host: str, token: str, cache_key: str, cache_dir: str):
    t.forget_images(token, docker_host)
    code, first, s1 = pipeline(exe, ws, docker_host, "run1")
    assert code == 0, first[-6000:]
    assert "Cache miss. Will build Docker image and save to cache." in first
    assert "Docker image saved to cache: run_" in first
    assert "Cache hit!" not in first
    assert f"cache created in '.gitlab-ci-local/cache/{cache_key}'" in first, first[-3000:]
    assert (ws / ".gitlab-ci-local" / "cache" / cache_key / cache_dir / "index.json").is_file()

    t.forget_images(token, docker_host)
    code, second, s2 = pipeline(exe, ws, docker_host, "run2")
    assert code == 0, second[-6000:]
    assert f"imported cache '{cache_key}'" in second, second[-3000:]
    assert len(t.lines_with(second, "Cache hit! Loading Docker image from cache: run_")) == 2, second[-6000:]
    assert "Cache miss" not in second
    assert re.search(r"cache hits: 2 .*misses: 0", second), second[-3000:]
    return first, second, s1, s2


@pytest.mark.engine
@pytest.mark.own_engines  # runs gitlab-ci-local on engines of its own: once, not per engine kind
def test_included_template_misses_then_hits(gitlab_ci_local, gl_docker_host, tmp_path):
    token = t.new_token()
    ws = make_project(tmp_path, "include", token)
    try:
        first, second, s1, s2 = run_twice(gitlab_ci_local, ws, gl_docker_host, token, "madcache-main", ".madcache")
        assert f"MADCACHE_DIR={ws}/.gitlab-ci-local/builds/model-tests/.madcache" in first
        assert "Total Entries: 2 / 10" in first  # the template's prune/stats ran with the job's limits
        print(f"\nGitLab include pipeline: run 1 (miss, upload) {s1:.1f} s, run 2 (restore, hit) {s2:.1f} s")
    finally:
        t.forget_images(token, gl_docker_host)


@pytest.mark.engine
@pytest.mark.own_engines  # runs gitlab-ci-local on engines of its own: once, not per engine kind
def test_component_with_inputs_misses_then_hits(gitlab_ci_local, gl_docker_host, tmp_path):
    token = t.new_token()
    ws = make_project(tmp_path, "component", token)
    try:
        first, second, s1, s2 = run_twice(gitlab_ci_local, ws, gl_docker_host, token, "images-main", ".imagecache")
        # The inputs reached the job: cache dir, limits, TTL, key prefix.
        assert "MADCACHE_MAX_ENTRIES=10 MADCACHE_TTL=2d" in first
        assert "/.imagecache" in first
        assert "max size 5.00 GB, TTL 2d" in first
        print(f"\nGitLab component pipeline: run 1 (miss, upload) {s1:.1f} s, run 2 (restore, hit) {s2:.1f} s")
    finally:
        t.forget_images(token, gl_docker_host)


@pytest.mark.engine
@pytest.mark.own_engines  # runs gitlab-ci-local on engines of its own: once, not per engine kind
def test_shared_cache_key_variable(gitlab_ci_local, gl_docker_host, tmp_path):
    """MADCACHE_CACHE_KEY (here a project-level variable) replaces the per-ref key in both forms."""
    token = t.new_token()
    try:
        for form in ("include", "component"):
            ws = make_project(tmp_path, form, token)
            code, log, _ = pipeline(gitlab_ci_local, ws, gl_docker_host, "shared",
                                    ["--variable", "MADCACHE_CACHE_KEY=models-shared"])
            assert code == 0, log[-6000:]
            assert "cache created in '.gitlab-ci-local/cache/models-shared'" in log, log[-3000:]
            assert not any(p.name != "models-shared" for p in (ws / ".gitlab-ci-local" / "cache").iterdir())
    finally:
        t.forget_images(token, gl_docker_host)


def test_templates_say_protected_branches_do_not_share():
    for text in ((TEMPLATES / "madcache.yml").read_text(), (TEMPLATES / "templates" / "madcache" / "template.yml").read_text()):
        head = " ".join(line.lstrip("# ").strip() for line in text[:1500].splitlines()).lower()  # at the top
        assert "never gets the default branch's cache" in head and "fallback_keys" in head
        assert "use separate caches for protected branches" in head
        assert "settings > ci/cd > general pipelines" in head and "madcache_cache_key" in head
    doc = (t.ROOT / "docs" / "gitlab.md").read_text()
    assert "Use separate caches for protected branches" in doc and "MADCACHE_CACHE_KEY" in doc


def _component_parts():
    head, body = (TEMPLATES / "templates" / "madcache" / "template.yml").read_text().split("\n---\n", 1)
    return head, body


def test_templates_match_the_gitlab_ci_schema(tmp_path):
    checker = t.pip_tool("check-jsonschema", "check-jsonschema")
    head, body = _component_parts()
    raw = tmp_path / "component-body.yml"
    raw.write_text(body)
    # Also with the inputs' defaults interpolated, as GitLab does before it parses the jobs.
    spec = yaml.safe_load(head)["spec"]["inputs"]
    filled = re.sub(r"\$\[\[\s*inputs\.([\w-]+)\s*\]\]", lambda m: str(spec[m.group(1)]["default"]), body)
    interpolated = tmp_path / "component-defaults.yml"
    interpolated.write_text(filled)
    files = [TEMPLATES / "madcache.yml", raw, interpolated]
    proc = t.run([checker, "--builtin-schema", "vendor.gitlab-ci", *map(str, files)], timeout=120)
    assert proc.returncode == 0, proc.stdout


def test_component_spec_declares_the_inputs():
    head, body = _component_parts()
    inputs = yaml.safe_load(head)["spec"]["inputs"]
    assert {"cache-dir", "max-size-gb", "max-entries", "ttl", "key-prefix", "policy", "when"} <= set(inputs)
    assert inputs["when"]["options"] == ["on_success", "on_failure", "always"]
    used = set(re.findall(r"\$\[\[\s*inputs\.([\w-]+)\s*\]\]", body))
    assert used == set(inputs), f"declared but unused or used but undeclared: {used ^ set(inputs)}"


def test_included_template_shape():
    doc = yaml.safe_load((TEMPLATES / "madcache.yml").read_text())
    job = doc[".madcache"]
    (cache,) = job["cache"]
    assert cache["key"] == "$MADCACHE_CACHE_KEY"
    assert cache["fallback_keys"] == ["$MADCACHE_CACHE_KEY_PREFIX-$CI_DEFAULT_BRANCH"]
    assert cache["paths"] == ["$MADCACHE_CACHE_PATH/"]
    assert any("madcache prune" in line for line in job["after_script"])
    assert doc[".madcache-always"]["cache"][0]["when"] == "always"
    assert doc[".madcache-pull"]["variables"]["MADCACHE_CACHE_POLICY"] == "pull"
    settings = doc[".madcache-settings"]["variables"]
    assert settings["MADCACHE_CACHE_KEY"] == "$MADCACHE_CACHE_KEY_PREFIX-$CI_COMMIT_REF_SLUG"
    assert settings["MADCACHE_DIR"] == "$CI_PROJECT_DIR/$MADCACHE_CACHE_PATH"
    assert not settings["MADCACHE_CACHE_PATH"].startswith("/"), "GitLab caches only paths inside the project"
