"""The realistic example suite's preparation: where the Debian mirror comes from, and what git keeps out.

The suite itself (builds of a minute per model) runs in the main job, `examples/main_job.sh`.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REALISTIC = ROOT / "examples" / "realistic"
RECORD = ROOT / "bench" / "results" / "main-job.txt"  # the committed record


@pytest.fixture(scope="module")
def prepare():
    spec = importlib.util.spec_from_file_location("realistic_prepare", REALISTIC / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def apt_dir(tmp_path: Path, sources: str = "", one_line: str = "") -> Path:
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    if sources:
        (etc / "sources.list.d" / "debian.sources").write_text(sources)
    if one_line:
        (etc / "sources.list").write_text(one_line)
    return etc


def test_the_mirror_is_the_first_debian_archive_of_apt_sources(prepare, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MADCACHE_EXAMPLES_DEBIAN_MIRROR", raising=False)
    etc = apt_dir(tmp_path, sources=(
        "Types: deb\nURIs: http://security.example.invalid/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"),
        one_line="deb http://other.example.invalid/debian bookworm main\n")
    assert prepare.debian_mirror(etc) == "http://mirror.example.invalid/debian"


def test_a_one_line_sources_list_and_other_vendors_archives(prepare, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MADCACHE_EXAMPLES_DEBIAN_MIRROR", raising=False)
    etc = apt_dir(tmp_path, sources="Types: deb\nURIs: https://node.example.invalid/node_20.x\nSuites: nodistro\n",
                  one_line="# deb http://old.example.invalid/debian buster main\n"
                           "deb [signed-by=/usr/share/keyrings/k.gpg] http://mirror.example.invalid/debian trixie main\n")
    assert prepare.debian_mirror(etc) == "http://mirror.example.invalid/debian"


def test_the_environment_overrides_and_no_archive_is_a_clear_error(prepare, tmp_path, monkeypatch) -> None:
    etc = apt_dir(tmp_path)
    monkeypatch.setenv("MADCACHE_EXAMPLES_DEBIAN_MIRROR", "http://local.example.invalid/debian")
    assert prepare.debian_mirror(etc) == "http://local.example.invalid/debian"
    monkeypatch.delenv("MADCACHE_EXAMPLES_DEBIAN_MIRROR")
    with pytest.raises(RuntimeError, match="no Debian archive in apt's sources .*MADCACHE_EXAMPLES_DEBIAN_MIRROR"):
        prepare.debian_mirror(etc)


def test_the_base_tarball_is_named_by_its_recipe(prepare, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = prepare.base_tarball()
    assert first.parent == tmp_path / "pytest-madcache" / "examples"
    monkeypatch.setattr(prepare, "PACKAGES", prepare.PACKAGES + ("python3-scipy",))
    assert prepare.base_tarball() != first  # another recipe: another tarball, another import


def test_git_keeps_the_generated_wheels_out(prepare) -> None:
    paths = [f"examples/realistic/models/{m.name}/wheels/some-1.0-py3-none-any.whl" for m in prepare.models()]
    assert len(paths) == 2
    proc = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert proc.stdout.split() == paths


def main_job_record(*args: str, **env: str) -> str:
    """Where examples/main_job.sh would write its record (--where answers without an engine)."""
    environ = {k: v for k, v in os.environ.items() if k != "MADCACHE_MAIN_JOB_RECORD"}
    proc = subprocess.run(["bash", str(ROOT / "examples" / "main_job.sh"), "--where", *args],
                          cwd=ROOT, env={**environ, **env}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_users_main_job_writes_no_tracked_file(tmp_path) -> None:
    """The README's first command keeps its record outside the repository; only a maintainer's
    --record (or MADCACHE_MAIN_JOB_RECORD) refreshes the committed one that the docs quote."""
    assert main_job_record(XDG_CACHE_HOME=str(tmp_path)) == str(tmp_path / "pytest-madcache" / "main-job.txt")
    default = Path(main_job_record())
    assert ROOT not in default.parents, f"the main job's record {default} is inside the repository"
    assert main_job_record("--record") == str(RECORD)
    assert main_job_record(MADCACHE_MAIN_JOB_RECORD="-") == "-"
    assert main_job_record(str(ROOT / "examples")) == "-"  # the tiny suite: no record unless asked
    proc = subprocess.run(["git", "ls-files", "--error-unmatch", str(RECORD)], cwd=ROOT, capture_output=True)
    assert proc.returncode == 0, "bench/results/main-job.txt is the committed record"


def test_the_docs_quote_the_main_job_record() -> None:
    """README and docs/plugin.md show the committed record's summary lines as the main job printed them
    (refreshed only by `bash examples/main_job.sh --record`, never by a user's run)."""
    record = RECORD.read_text()
    summary = [line for line in record.splitlines()
               if line.startswith(("image acquisition (test setup):", "run 1 (cache miss", "run 2 (cache hit",
                                   "the second run was"))]
    assert len(summary) == 4
    builds = [line.split(": ")[1] for line in record.splitlines() if line.startswith("Build Duration: ")]
    assert len(builds) == 2
    for doc in ("README.md", "docs/plugin.md"):
        text = (ROOT / doc).read_text()
        for line in summary:
            assert line in text, f"{doc} does not show the record's line {line!r}"
        for seconds in builds:
            assert seconds.replace(" seconds", " s") in text, f"{doc} does not give the cold build of {seconds}"
