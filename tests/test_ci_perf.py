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
from tests.ci.fake_api import TOKEN, fake_api
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
        from pytest_madcache.core.images import BuildResult
        from pytest_madcache.core.run import RunResult

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
    # Uploaded from the directory it was restored to: what a job restores is where the baseline is read
    assert (pushed["key"], pushed["paths"], pushed["policy"], pushed["when"]) == (
        f"{prefix}-baseline-$CI_COMMIT_REF_SLUG", [f"{path}-baseline/"], "push", "on_success")
    assert job["variables"]["MADCACHE_PERF_BASELINE"] == f"$CI_PROJECT_DIR/{path}-baseline/results.csv"
    assert job["variables"]["MADCACHE_PERF_HISTORY"] == f"$CI_PROJECT_DIR/{path}-baseline/history.json"
    assert job["before_script"][0] == base["before_script"][0]  # the remote's settings, as the plain job has them
    assert job["artifacts"] == {"when": "always", "paths": ["$MADCACHE_PERF_REPORT"]}
    assert job["variables"]["MADCACHE_PERF_RESULTS"] == "results.csv"
    assert job["after_script"][:2] == base["after_script"][:2]  # the registry step and the prune first, before the upload


@pytest.mark.parametrize("form", ["include", "component"])
@pytest.mark.parametrize("branch, status, results, kept, says", [
    ("main", "success", True, True, "results.csv is the next performance baseline of main"),
    ("feature", "success", True, False, "not updated (only main updates it)"),  # and main's copy is not re-uploaded
    ("main", "failed", True, False, "not updated (the job status is failed)"),
    ("main", "success", False, False, "no results at results.csv"),
])
def test_the_perf_jobs_after_script_fills_the_next_baseline(tmp_path, form, branch, status, results, kept, says) -> None:
    if form == "include":
        script = yaml.safe_load((TEMPLATES / "madcache.yml").read_text())[".madcache-perf"]["after_script"][-2]
    else:
        script = _component_jobs()[".madcache-perf"]["after_script"][-2]
    restored = tmp_path / ".madcache-baseline"
    restored.mkdir()
    (restored / "results.csv").write_text("the default branch's\n")
    (restored / "history.json").write_text("{}")  # the plugin added this run to it (main) or left it (feature)
    if results:
        (tmp_path / "results.csv").write_text("model,params,performance,metric,status\n")
    env = {"PATH": "/usr/bin:/bin", "CI_COMMIT_BRANCH": branch, "CI_DEFAULT_BRANCH": "main", "CI_JOB_STATUS": status,
           "MADCACHE_PERF_RESULTS": "results.csv", "MADCACHE_CACHE_PATH": ".madcache"}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert says in proc.stdout
    baseline = restored / "results.csv"
    if kept:
        assert baseline.read_text() == "model,params,performance,metric,status\n"
        assert (restored / "history.json").is_file()  # uploaded with it
    elif branch == "feature":
        assert not restored.exists()  # nothing of a feature branch's is uploaded
    else:
        assert baseline.read_text() == "the default branch's\n"


@pytest.mark.parametrize("form", ["include", "component"])
@pytest.mark.parametrize("branch, record", [("main", "1"), ("feature", "")])
def test_the_perf_job_records_the_history_on_the_default_branch_only(form, branch, record) -> None:
    job = (yaml.safe_load((TEMPLATES / "madcache.yml").read_text()) if form == "include"
           else _component_jobs())[".madcache-perf"]
    script = "\n".join(job["before_script"]) + '\necho "record=${MADCACHE_PERF_RECORD:-}"'
    env = {"PATH": "/usr/bin:/bin", "CI_COMMIT_BRANCH": branch, "CI_DEFAULT_BRANCH": "main"}
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"record={record}\n" in proc.stdout
    assert ("adds its results to the performance history" in proc.stdout) == bool(record)


# -- the performance history, the pull request comment and the merge request note -------------------


def test_setup_keeps_the_history_beside_the_baseline_and_records_on_the_default_branch_only(tmp_path) -> None:
    inputs = {"path": ".mc", "key": "mc-Linux-X64-77-2", "perf-results": "results.csv"}
    proc, _, exported, _ = _helper(tmp_path, "setup", inputs, DEFAULT_PUSH)
    assert exported["MADCACHE_PERF_HISTORY"] == str(tmp_path / "ws" / ".mc-baseline" / "history.json")
    assert exported["MADCACHE_PERF_RECORD"] == "1"
    assert "adds its results to the performance history" in proc.stdout
    pull = {**DEFAULT_PUSH, "GITHUB_EVENT_NAME": "pull_request", "GITHUB_REF": "refs/pull/7/merge"}
    _, _, exported, _ = _helper(tmp_path, "setup", inputs, pull)
    assert "MADCACHE_PERF_HISTORY" in exported and "MADCACHE_PERF_RECORD" not in exported


def _pull_request_report(tmp_path: Path, api_url: str, token: str, markdown: str):
    summary_json = tmp_path / "summary.json"
    summary_json.write_text(json.dumps({"hits": 1, "misses": 0, "perf": {"markdown": markdown}}))
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7}, "repository": {"default_branch": "main"}}))
    env = {"GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": str(event), "GITHUB_API_URL": api_url,
           "GITHUB_REPOSITORY": "org/models", "GITHUB_SHA": "abcdef1234567", "MADCACHE_SUMMARY_JSON": str(summary_json)}
    return _helper(tmp_path, "report", {"path": ".mc", "pr-comment": "true", "github-token": token}, env)


def test_a_pull_request_gets_one_comment_with_the_table_edited_in_place(tmp_path) -> None:
    with fake_api() as api:
        proc, _, _, summary = _pull_request_report(tmp_path, api.url, TOKEN, "### Performance\n\n| first push |")
        assert proc.returncode == 0, proc.stdout
        assert "pr-comment: commented on pull request #7" in proc.stdout, proc.stdout
        assert "| first push |" in summary  # no earlier step wrote the table: the report hook does
        proc, _, _, _ = _pull_request_report(tmp_path, api.url, TOKEN, "### Performance\n\n| second push |")
        assert "pr-comment: updated comment 101 on pull request #7" in proc.stdout, proc.stdout
    ours = [c for c in api.comments if c["body"].startswith("<!-- madcache-perf -->")]
    assert len(api.comments) == 2 and len(ours) == 1  # the unrelated comment, and one of ours
    assert "| second push |" in ours[0]["body"] and "| first push |" not in ours[0]["body"]
    assert [m for m, _, _ in api.requests] == ["GET", "GET", "POST", "GET", "PATCH"]  # pages until found, or empty


def test_a_token_that_may_not_comment_is_a_warning_and_the_job_summary_keeps_the_table(tmp_path) -> None:
    with fake_api() as api:
        proc, _, _, summary = _pull_request_report(tmp_path, api.url, "read-only", "### Performance\n\n| t |")
    assert proc.returncode == 0
    assert "::warning title=madcache::pr-comment: the pull request comment was not written (HTTP Error 401" in \
        proc.stdout, proc.stdout
    assert "| t |" in summary and len(api.comments) == 1


def _note(tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    import os
    import sys

    (tmp_path / "perf.md").write_text("### Performance\n\n| bs=16 | -12.0% [-15.1, -8.8] | REGRESSED |\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CI_", "MADCACHE_"))}
    return subprocess.run([sys.executable, "-m", "pytest_madcache.cli", "perf", "note", "perf.md"], cwd=tmp_path,
                          env={**base, **env}, capture_output=True, text=True, timeout=60)


def test_a_merge_request_gets_one_note_with_the_table_edited_in_place(tmp_path) -> None:
    with fake_api() as api:
        env = {"CI_API_V4_URL": f"{api.url}/api/v4", "CI_PROJECT_ID": "42", "CI_MERGE_REQUEST_IID": "7",
               "MADCACHE_GITLAB_TOKEN": TOKEN}
        first, second = _note(tmp_path, env), _note(tmp_path, env)
    assert first.returncode == 0 and "performance note posted on merge request !7" in first.stdout, first
    assert second.returncode == 0 and "performance note updated on merge request !7 (note 101)" in second.stdout
    ours = [c for c in api.comments if c["body"].startswith("<!-- madcache-perf -->")]
    assert len(ours) == 1 and "| bs=16 | -12.0% [-15.1, -8.8] | REGRESSED |" in ours[0]["body"]
    assert {(m, token) for m, _, token in api.requests} == {("GET", TOKEN), ("POST", TOKEN), ("PUT", TOKEN)}


@pytest.mark.parametrize("env, says", [
    ({"CI_API_V4_URL": "http://127.0.0.1:9/api/v4", "CI_PROJECT_ID": "42", "CI_MERGE_REQUEST_IID": "7"},
     "MADCACHE_GITLAB_TOKEN is not set (a token with the api scope); perf.md is the job's artifact"),
    ({"CI_API_V4_URL": "http://127.0.0.1:9/api/v4", "CI_PROJECT_ID": "42", "MADCACHE_GITLAB_TOKEN": "t"},
     "not a merge request pipeline"),
])
def test_without_a_token_or_a_merge_request_the_report_stays_an_artifact(tmp_path, env, says) -> None:
    proc = _note(tmp_path, env)
    assert proc.returncode == 0 and says in proc.stdout, proc
