"""Performance baselines carried by the CI integrations, tested without a pipeline runner or an engine.

GitHub: the action's helper (github_action/lib/madcache_gha.py) run as its composite steps run it:
with the perf-results input it exports MADCACHE_PERF_BASELINE (the default branch's last results,
restored next to the image cache), writes the plugin's performance table into the job summary, and on
a successful default-branch run copies this run's results in to be saved as the next baseline.
GitLab: the `.madcache-perf` job of both templates (caches and variables), and its after_script run
with bash as a runner would.  Under act, tests/test_ci_github.py runs the one-step form end to end
(madcache-perf.yml); the GitLab job is not run under gitlab-ci-local.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.ci import tooling as t
from tests.test_ci_github import _helper

TEMPLATES = t.ROOT / "gitlab_templates"
DEFAULT_PUSH = {"GITHUB_REF": "refs/heads/main", "GITHUB_EVENT_NAME": "push"}


def _event(tmp_path: Path, default_branch: str) -> dict:
    path = tmp_path / "event.json"
    path.write_text(json.dumps({"repository": {"default_branch": default_branch}}))
    return {"GITHUB_EVENT_PATH": str(path)}


# -- GitHub: the action's helper ---------------------------------------------------------------------


@pytest.mark.parametrize("inputs, extra, baseline, post_save", [
    ({}, DEFAULT_PUSH, "false", "false"),  # no perf-results: off
    ({"perf-results": "results.csv"}, DEFAULT_PUSH, "true", "true"),  # the default branch saves its results
    ({"perf-results": "results.csv"}, {**DEFAULT_PUSH, "GITHUB_REF": "refs/heads/feature"}, "true", "false"),
    ({"perf-results": "results.csv"}, {**DEFAULT_PUSH, "GITHUB_EVENT_NAME": "pull_request"}, "true", "false"),
    ({"perf-results": "results.csv", "save": "always"}, DEFAULT_PUSH, "true", "false"),  # the save step saves it
    ({"perf-results": "results.csv", "baseline-branch": "release"},
     {**DEFAULT_PUSH, "GITHUB_REF": "refs/heads/release"}, "true", "true"),
])
def test_keys_say_whether_the_baseline_is_restored_and_saved(tmp_path, inputs, extra, baseline, post_save) -> None:
    proc, out, _, _ = _helper(tmp_path, "keys", {"path": ".mc", "key-prefix": "mc", "post-save": "true", **inputs},
                              {**_event(tmp_path, "main"), **extra})
    assert proc.returncode == 0, proc.stdout
    if baseline == "false":
        assert not any(name.startswith("baseline") for name in out), out  # off: the outputs are as they were
        return
    assert (out["baseline"], out["baseline-post-save"]) == (baseline, post_save), proc.stdout
    assert out["baseline-path"] == ".mc-baseline"  # next to the image cache, a cache of its own
    assert out["baseline-prefix"] == "mc-baseline-Linux-X64-" and out["baseline-key"] == "mc-baseline-Linux-X64-77-2"


def test_the_default_branch_is_read_from_the_event(tmp_path) -> None:
    inputs = {"path": ".mc", "post-save": "true", "perf-results": "r.csv"}
    trunk = {**_event(tmp_path, "trunk"), "GITHUB_REF": "refs/heads/trunk", "GITHUB_EVENT_NAME": "push"}
    assert _helper(tmp_path, "keys", inputs, trunk)[1]["baseline-post-save"] == "true"
    main = {**trunk, "GITHUB_REF": "refs/heads/main"}
    assert _helper(tmp_path, "keys", inputs, main)[1]["baseline-post-save"] == "false"


def test_setup_exports_the_baseline_whether_or_not_one_was_restored(tmp_path) -> None:
    inputs = {"path": ".mc", "key": "mc-Linux-X64-77-2", "save": "always", "perf-results": "out/results.csv"}
    proc, _, exported, _ = _helper(tmp_path, "setup", inputs, DEFAULT_PUSH)
    baseline = tmp_path / "ws" / ".mc-baseline" / "results.csv"
    assert exported["MADCACHE_PERF_BASELINE"] == str(baseline)
    assert "no performance baseline yet (none saved from main): every run is new" in proc.stdout
    baseline.parent.mkdir(parents=True)
    baseline.write_text("model,params,performance,metric,status\n")
    proc, _, _, _ = _helper(tmp_path, "setup", inputs, DEFAULT_PUSH)
    assert f"performance baseline: {baseline} (the last results of main)" in proc.stdout
    proc, _, exported, _ = _helper(tmp_path, "setup", {**inputs, "perf-results": ""}, DEFAULT_PUSH)
    assert "MADCACHE_PERF_BASELINE" not in exported


def test_the_save_step_keeps_a_successful_default_branch_runs_results(tmp_path) -> None:
    inputs = {"path": ".mc", "key-prefix": "mc", "key": "mc-Linux-X64-77-2", "save": "always",
              "perf-results": "out/results.csv"}
    _, _, exported, _ = _helper(tmp_path, "setup", inputs, DEFAULT_PUSH)
    state = {**exported, **DEFAULT_PUSH}
    results = tmp_path / "ws" / "out" / "results.csv"
    kept = tmp_path / "ws" / ".mc-baseline" / "results.csv"

    proc, out, _, _ = _helper(tmp_path, "finish", {"job-status": "success"}, state)
    assert out["baseline-save"] == "false" and "no results at" in proc.stdout, proc.stdout  # pytest wrote none

    results.parent.mkdir(parents=True)
    results.write_text("model,params,performance,metric,status\nm,{},1,x/s,SUCCESS\n")
    proc, out, _, _ = _helper(tmp_path, "finish", {"job-status": "failure"}, state)
    assert out["baseline-save"] == "false" and "the job did not succeed" in proc.stdout
    assert not kept.exists()

    proc, out, _, _ = _helper(tmp_path, "finish", {"job-status": "success"}, state)
    assert (out["baseline-save"], out["baseline-path"], out["baseline-key"]) == (
        "true", ".mc-baseline", "mc-baseline-Linux-X64-77-2"), proc.stdout
    assert kept.read_text() == results.read_text()

    _, _, exported, _ = _helper(tmp_path, "setup", inputs, {**DEFAULT_PUSH, "GITHUB_REF": "refs/heads/feature"})
    proc, out, _, _ = _helper(tmp_path, "finish", {"job-status": "success"}, {**exported, "GITHUB_REF": "refs/heads/feature"})
    assert out["baseline-save"] == "false" and "only runs on main update it" in proc.stdout


def test_the_one_step_forms_post_hook_copies_the_results_before_the_upload(tmp_path) -> None:
    cache = tmp_path / "ws" / ".mc"
    (cache / "entries" / "run_1_ab").mkdir(parents=True)
    (cache / "entries" / "run_1_ab" / "meta.json").write_text("{}")
    inputs = {"path": ".mc", "key": "mc-Linux-X64-77-2", "post-save": "true", "existing": "0",
              "perf-results": "results.csv", "baseline-post-save": "true"}
    _, _, exported, _ = _helper(tmp_path, "setup", inputs, DEFAULT_PUSH)
    kept = tmp_path / "ws" / ".mc-baseline" / "results.csv"
    kept.parent.mkdir()
    kept.write_text("the old baseline\n")
    proc, _, _, _ = _helper(tmp_path, "post", {"path": ".mc"}, exported)  # no results: nothing to upload
    assert "the performance baseline is not updated" in proc.stdout and not kept.parent.exists(), proc.stdout

    (tmp_path / "ws" / "results.csv").write_text("new results\n")
    _, _, exported, _ = _helper(tmp_path, "setup", inputs, DEFAULT_PUSH)
    proc, _, _, _ = _helper(tmp_path, "post", {"path": ".mc"}, exported)
    assert kept.read_text() == "new results\n" and "are the next performance baseline" in proc.stdout


def test_the_job_summary_carries_the_plugins_performance_table(tmp_path, pytester, monkeypatch) -> None:
    """The exported settings drive the plugin; the table it writes into its summary JSON reaches the job summary."""
    inputs = {"path": ".mc", "key": "mc-Linux-X64-77-2", "save": "always", "perf-results": "results.csv"}
    _, _, exported, _ = _helper(tmp_path, "setup", inputs, DEFAULT_PUSH)
    baseline = Path(exported["MADCACHE_PERF_BASELINE"])
    baseline.parent.mkdir(parents=True)
    baseline.write_text('model,params,performance,metric,status,nodeid\n'
                        'bench,{},200,samples/s,SUCCESS,test_one.py::test_bench\n')
    pytester.makeconftest("""
        import pytest
        from pytest_madcache.engines.docker import BuildResult
        from pytest_madcache.engines.runner import RunResult

        @pytest.hookimpl
        def pytest_madcache_build_image(config, model, tag, build_args, labels, on_line):
            return BuildResult(image_id="sha256:" + "ab" * 32, duration=0.1)

        @pytest.hookimpl
        def pytest_madcache_run_model(config, image, options, on_line):
            return RunResult(exit_code=0, logs="performance: 150 samples/s", duration=0.01)
    """)
    (pytester.path / "Dockerfile").write_text("FROM scratch\n")
    pytester.makepyfile(test_one="""
        import pytest

        @pytest.mark.model("bench")
        def test_bench(model_run):
            model_run()
    """)
    for name in ("MADCACHE_PERF_BASELINE", "MADCACHE_SUMMARY_JSON", "MADCACHE_DIR"):
        monkeypatch.setenv(name, exported[name])
    monkeypatch.delenv("MADCACHE_ENABLED", raising=False)  # no engine here: the cache stays off
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    proc, _, _, summary = _helper(tmp_path, "finish", {"job-status": "success"}, {**exported, **DEFAULT_PUSH})
    assert proc.returncode == 0, proc.stdout
    assert "### Performance" in summary and "-25.0%" in summary, summary
    assert summary.index("### madcache") < summary.index("### Performance")
    assert "| (no parameters) | 150.0 | samples/s | 200.0 | -25.0% | worse |" in summary


# -- GitLab: the .madcache-perf job ------------------------------------------------------------------


def _component_jobs() -> dict:
    head, body = (TEMPLATES / "templates" / "madcache" / "template.yml").read_text().split("\n---\n", 1)
    spec = yaml.safe_load(head)["spec"]["inputs"]
    filled = re.sub(r"\$\[\[\s*inputs\.([\w-]+)\s*\]\]", lambda m: str(spec[m.group(1)]["default"]), body)
    return yaml.safe_load(filled)


@pytest.mark.parametrize("form", ["include", "component"])
def test_the_perf_job_restores_the_default_branchs_baseline_and_uploads_its_own(form) -> None:
    if form == "include":
        doc = yaml.safe_load((TEMPLATES / "madcache.yml").read_text())
        job, base = doc[".madcache-perf"], doc[".madcache"]
        prefix, path = "$MADCACHE_CACHE_KEY_PREFIX", "$MADCACHE_CACHE_PATH"
    else:
        doc = _component_jobs()
        job, base = doc[".madcache-perf"], doc[".madcache"]
        prefix, path = "madcache", ".madcache"
    images, pulled, pushed = job["cache"]
    assert images == base["cache"][0]  # the image cache as the plain job has it
    assert (pulled["key"], pulled["paths"], pulled["policy"]) == (
        f"{prefix}-baseline-$CI_DEFAULT_BRANCH", [f"{path}-baseline/"], "pull")
    assert (pushed["key"], pushed["paths"], pushed["policy"], pushed["when"]) == (
        f"{prefix}-baseline-$CI_COMMIT_REF_SLUG", [f"{path}-baseline-next/"], "push", "on_success")
    assert job["variables"]["MADCACHE_PERF_BASELINE"] == f"$CI_PROJECT_DIR/{path}-baseline/results.csv"
    assert job["variables"]["MADCACHE_PERF_RESULTS"] == "results.csv"
    assert job["after_script"][:2] == base["after_script"][:2]  # the registry step and the prune first, before the upload


@pytest.mark.parametrize("form", ["include", "component"])
@pytest.mark.parametrize("branch, status, results, kept, says", [
    ("main", "success", True, True, "results.csv is the next performance baseline of main"),
    ("feature", "success", True, False, "not updated (only main updates it)"),
    ("main", "failed", True, False, "not updated (the job status is failed)"),
    ("main", "success", False, False, "no results at results.csv"),
])
def test_the_perf_jobs_after_script_fills_the_next_baseline(tmp_path, form, branch, status, results, kept, says) -> None:
    if form == "include":
        script = yaml.safe_load((TEMPLATES / "madcache.yml").read_text())[".madcache-perf"]["after_script"][-1]
    else:
        script = _component_jobs()[".madcache-perf"]["after_script"][-1]
    if results:
        (tmp_path / "results.csv").write_text("model,params,performance,metric,status\n")
    env = {"PATH": "/usr/bin:/bin", "CI_COMMIT_BRANCH": branch, "CI_DEFAULT_BRANCH": "main", "CI_JOB_STATUS": status,
           "MADCACHE_PERF_RESULTS": "results.csv", "MADCACHE_CACHE_PATH": ".madcache"}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert says in proc.stdout
    assert (tmp_path / ".madcache-baseline-next" / "results.csv").is_file() == kept
