"""The documentation site builds cleanly, as CI publishes it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_builds_strict(tmp_path):
    assert shutil.which("mkdocs") or subprocess.run([sys.executable, "-m", "mkdocs", "--version"]).returncode == 0
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def readme_commands() -> list:
    """The README's two commands, in the order a newcomer runs them (its ```bash blocks)."""
    readme = (ROOT / "README.md").read_text()
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", readme, re.S)]


def test_readme_states_both_commands():
    first, second = readme_commands()
    assert "examples/main_job.sh" in first and "scripts/test_matrix.sh" in second


def test_ci_runs_the_readme_commands_in_order_and_checks_the_tree():
    """.ci/run is the newcomer's order: command 1, command 2, each word for word, then a clean tree."""
    ci = (ROOT / ".ci" / "run").read_text()
    first, second = readme_commands()
    assert first in ci and second in ci, ".ci/run runs the README's commands as the README gives them"
    assert ci.index(first) < ci.index(second)
    assert "git status --porcelain" in ci and "export CI=true" in ci
    matrix = (ROOT / "scripts" / "test_matrix.sh").read_text()
    assert "main_job.sh" not in matrix.split("set -uo pipefail", 1)[1], "the main job runs once: README command 1"


def test_the_matrix_runs_every_stage_and_fails_on_any(tmp_path):
    """scripts/test_matrix.sh goes on after a failed stage, names the failed ones, exits 1; pytest's 5
    (no tests) is a failure.  Run with a fake python that answers each stage with a status."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    (bin_dir / "python").write_text(
        "#!/bin/sh\n"
        f"echo \"$*\" >> {log}\n"
        'case "$*" in *tox*) exit 1 ;; *debian13-containerd*) exit 5 ;; esac\nexit 0\n')
    (bin_dir / "python").chmod(0o755)
    script = tmp_path / "scripts" / "test_matrix.sh"  # a copy: it cds to its parent's parent
    script.parent.mkdir()
    script.write_text((ROOT / "scripts" / "test_matrix.sh").read_text())
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 6 and "tox -e lint" in calls[0] and "podman" in calls[-1], calls  # every stage ran
    assert "(tox -e lint) (exit status 1)" in proc.stderr
    assert "tox -e py-pytest9 (the newest pytest) (exit status 1)" in proc.stderr
    # the older pytest versions, on the tests that use no engine, started with no engine
    assert "-m tox -e py-pytest74-noengine,py-pytest8-noengine" in calls[2] and "localengine" not in calls[2], calls
    assert "pytest 7.4 and 8 (tox -e py-pytest74-noengine,py-pytest8-noengine) (exit status 1)" in proc.stderr
    assert "real-engine tests on debian13-containerd (exit status 5)" in proc.stderr
    assert "no tests collected" in proc.stderr
    assert "real-engine tests on podman (exit" not in proc.stderr and "debian13 (exit" not in proc.stderr
