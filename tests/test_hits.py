"""Hits where users expect them, without an engine: what joins the key, build args from parameters,
the session's own files left out of the context, eviction that spares a session's working set, and
the reason a miss gives."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict

import pytest

from pytest_madcache.core.key import KeyFiles, KeySpec, key_files, key_for
from pytest_madcache.core.model import ModelMarkError, excluding, resolve_build_args, select_params, spec_from_marks
from pytest_madcache.store import Entry, Limits, Session
from pytest_madcache.store.evict import choose_evictions
from pytest_madcache.core.why import explain
from tests.plugin_helpers import FAKE_HOOKS


class Mark:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _entry(n: int, created: float, last_used: float, size: int = 10, **kw: Any) -> Entry:
    config = _digest(f"config{n}")
    return Entry(id=f"run_{int(created)}_{n:08x}", key=kw.pop("key", f"k{n}"), image_name=kw.pop("image", "ci-m"),
                 image_tag="t", image_id=config, config=config, layers=[], sizes={config: size}, created=created,
                 last_used=last_used, **kw)


# -- build args from parameters ---------------------------------------------------


def test_build_args_take_values_from_parameters(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    spec = spec_from_marks([Mark("m", build_args={"PRECISION": "{precision}", "LIT": "{{x}}", "N": 3})],
                           tmp_path, "t::a")
    assert resolve_build_args(spec, {"precision": "fp16", "bs": 8}, "t::a").build_args == {
        "PRECISION": "fp16", "LIT": "{x}", "N": "3"}
    with pytest.raises(ModelMarkError, match=r"^t::a: build_args\['PRECISION'\]='\{precision\}' refers to parameter "
                                              r"'precision', which the test is not parametrized with \(it has: bs\)"):
        resolve_build_args(spec, {"bs": 8}, "t::a")
    bad = spec_from_marks([Mark("m", build_args={"X": "{0}"})], tmp_path, "t::b")
    with pytest.raises(ModelMarkError, match=r"^t::b: build_args\['X'\]='\{0\}' must refer to parameters by name"):
        resolve_build_args(bad, {"bs": 8}, "t::b")


def test_a_sweep_shares_one_image_and_a_build_arg_parameter_does_not(tmp_path: Path) -> None:
    """Without a build hook of the suite's own, only what reaches the build separates images."""
    (tmp_path / "Dockerfile").write_text("FROM scratch\nARG PRECISION\n")
    spec = spec_from_marks([Mark("m", context=".", build_args={"PRECISION": "{precision}"})], tmp_path, "t")
    keys = {}
    for bs in (1, 2, 4, 8, 16, 32):
        for precision in ("fp16", "fp32"):
            params = {"batch_size": bs, "precision": precision}
            resolved = resolve_build_args(spec, params, "t")
            key = key_for(resolved.key_spec(select_params(params, resolved, "t"), {}))
            keys[(bs, precision)] = key
    assert len({k.digest for k in keys.values()}) == 2  # one image per precision, none per batch size
    assert keys[(1, "fp16")].components["params"] == {}
    assert keys[(1, "fp32")].components["build_args"] == {"PRECISION": "fp32"}


def test_a_suite_that_builds_itself_keys_on_every_parameter(pytester: pytest.Pytester) -> None:
    """A conftest's own pytest_madcache_build_image may read any parameter: a wrong image is worse than a miss."""
    (pytester.path / "Dockerfile").write_text("FROM scratch\n")
    pytester.makeconftest(FAKE_HOOKS)
    pytester.makepyfile(test_sweep='''
import pytest

@pytest.mark.model("m", context=".")
@pytest.mark.parametrize("batch_size", [1, 2])
def test_all(model_image, batch_size):
    print("KEY", model_image.key_components["params"]["batch_size"])

@pytest.mark.model("m", context=".", ignore_params=["batch_size"])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_ignored(model_image, batch_size):
    print("IGNORED", sorted(model_image.key_components["params"]))
''')
    result = pytester.runpytest("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    assert [line.split("KEY ")[1] for line in result.outlines if "KEY " in line] == ["1", "2"]
    assert [line.split("IGNORED ")[1] for line in result.outlines if "IGNORED " in line] == ["['key_material']"] * 2


# -- the session's own files ------------------------------------------------------


def test_session_outputs_inside_the_context_leave_the_key_and_the_build(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "data.txt").write_text("data\n")
    spec = spec_from_marks([Mark("m", context=".")], tmp_path, "t")
    elsewhere = tmp_path.parent / "elsewhere.csv"
    spec = excluding(spec, [tmp_path / ".pytest_cache", tmp_path / "out" / "res*.csv", elsewhere])
    assert spec.context_excludes == (".pytest_cache", "out/res[*].csv")
    before = key_for(spec.key_spec({}, {}))
    (tmp_path / ".pytest_cache").mkdir()
    (tmp_path / ".pytest_cache" / "v").write_text("x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "res*.csv").write_text("1,2\n")
    (tmp_path / "out" / "results.csv").write_text("not the session's\n")  # a glob would have hidden it
    after = key_for(spec.key_spec({}, {}))
    assert after.components["context_sha256"] != before.components["context_sha256"]
    files = key_files(after)
    assert files is not None and sorted(files.context) == ["Dockerfile", "data.txt", "out", "out/results.csv"]


def context_dot_suite(pytester: pytest.Pytester) -> None:
    """One model whose context is the test directory; its test prints its key (KEY ...)."""
    (pytester.path / "Dockerfile").write_text("FROM scratch\n")
    pytester.makeconftest(FAKE_HOOKS)
    pytester.makepyfile(test_dot='''
import pytest

@pytest.mark.model("m", context=".")
def test_dot(model_image):
    print("KEY", model_image.key)
''')


def key_of(result: pytest.RunResult) -> str:
    result.assert_outcomes(passed=1)
    (key,) = [line.split()[1] for line in result.outlines if line.startswith("KEY ")]
    return key


def test_pytester_suite_with_context_dot_and_output_hits_the_same_key_twice(pytester: pytest.Pytester) -> None:
    """pytest's cache and --output inside the context: the second run's key is the first run's."""
    context_dot_suite(pytester)
    keys = [key_of(pytester.runpytest("-s", "--output=results.csv", "--cache-summary-json=summary.json",
                                      "--junitxml=junit.xml")) for _ in range(2)]
    assert (pytester.path / ".pytest_cache").is_dir() and (pytester.path / "results.csv").is_file()
    assert len(keys) == 2 and keys[0] == keys[1]


def test_cache_dir_after_a_space_that_moves_the_rootdir_keeps_the_key(pytester: pytest.Pytester) -> None:
    """`--cache-dir DIR` with a space and no ini file: once DIR exists (the second run) pytest's rootdir moves
    to the directory it shares with the project, and its cache with it; the .pytest_cache the first run
    left in the context stays out of the key."""
    context_dot_suite(pytester)
    elsewhere = pytester.path.parent / f"{pytester.path.name}-cache"
    first = key_of(pytester.runpytest("-s", "--cache-dir", str(elsewhere)))
    assert (pytester.path / ".pytest_cache").is_dir()
    elsewhere.mkdir()
    assert key_of(pytester.runpytest("-s", "--cache-dir", str(elsewhere))) == first


def test_pytest_cache_at_the_context_root_stays_out_even_when_pytest_ran_elsewhere(pytester: pytest.Pytester) -> None:
    """A model directory where someone once ran pytest keeps its own .pytest_cache: always left out, as
    `madcache key` leaves it out, so a later run there does not change the key of the suite above."""
    (pytester.path / "model").mkdir()
    (pytester.path / "model" / "Dockerfile").write_text("FROM scratch\n")
    pytester.makeconftest(FAKE_HOOKS)
    pytester.makepyfile(test_sub='''
import pytest

@pytest.mark.model("m", context="model")
def test_sub(model_image):
    print("KEY", model_image.key)
''')
    stray = pytester.path / "model" / ".pytest_cache" / "v" / "cache" / "lastfailed"
    stray.parent.mkdir(parents=True)
    keys = []
    for n in range(2):
        stray.write_text(f'{{"test_{n}.py::t": true}}')
        keys.append(key_of(pytester.runpytest("-s")))
    assert keys[0] == keys[1]


def test_a_baseline_and_history_that_ci_rewrites_inside_the_context_keep_the_key(pytester: pytest.Pytester) -> None:
    """CI keeps the baseline CSV and the history in the workspace (.madcache-baseline/), and the
    default branch rewrites them on every run: read by the session, never by the build."""
    context_dot_suite(pytester)
    base = pytester.path / ".madcache-baseline"
    base.mkdir()
    keys = []
    for n in range(3):
        (base / "results.csv").write_text(f"model,params,performance,metric,status\nm,{{}},{100 + n},ops,SUCCESS\n")
        (base / "history.json").write_text(f'{{"n": {n}}}')
        keys.append(key_of(pytester.runpytest("-s", "-p", "no:cacheprovider",
                                              "--perf-baseline=.madcache-baseline/results.csv",
                                              "--perf-history=.madcache-baseline/history.json")))
    assert len(keys) == 3 and len(set(keys)) == 1, keys


# -- eviction ---------------------------------------------------------------------


def test_a_running_session_never_evicts_its_own_working_set() -> None:
    """Seven models, five entries allowed: saves during the session evict only older entries."""
    old = [_entry(i, created=10 + i, last_used=10 + i) for i in range(3)]
    mine = [_entry(10 + i, created=100 + i, last_used=100 + i) for i in range(7)]
    limits = Limits(max_entries=5, max_bytes=10**9)
    chosen = choose_evictions(old + mine, limits, now=200, session=Session(since=100))
    assert {e.id for e in chosen} == {e.id for e in old}
    assert choose_evictions(mine, limits, now=200, session=Session(since=100)) == []


def test_a_finished_session_keeps_the_entries_that_hit_and_evicts_the_newest() -> None:
    hits = [_entry(i, created=10 + i, last_used=100 + i) for i in range(5)]  # hit this session
    new = [_entry(10 + i, created=150 + i, last_used=150 + i) for i in range(2)]  # built this session
    stale = [_entry(20, created=5, last_used=5)]
    chosen = choose_evictions(stale + hits + new, Limits(5, 10**9), now=200, session=Session(100, running=False))
    assert [e.id for e in chosen] == [stale[0].id, new[1].id, new[0].id]
    # plain LRU (no session, as `madcache prune` runs) evicts the least recently used
    plain = choose_evictions(stale + hits + new, Limits(5, 10**9), now=200)
    assert [e.id for e in plain] == [stale[0].id, hits[0].id, hits[1].id]


def test_a_running_session_still_evicts_expired_and_over_size_entries_of_others() -> None:
    other = _entry(1, created=1, last_used=1, size=500)
    mine = _entry(2, created=100, last_used=100, size=600)
    chosen = choose_evictions([other, mine], Limits(5, 1000, ttl=None), now=200, session=Session(since=100))
    assert chosen == [other]


# -- why a run missed ---------------------------------------------------------------


def _files(context: Dict[str, str], dockerfile=("a", "b", "c")) -> Dict[str, Any]:
    return KeyFiles(context, list(dockerfile)).to_json()


def test_a_miss_names_what_changed_against_the_nearest_entry() -> None:
    base = {"format": 1, "image": "ci-m", "params": {"precision": "fp16"}, "build_args": {"A": "1"},
            "context_sha256": "c1", "dockerfile_sha256": "d1", "bases": {"debian:12": "sha256:" + "1" * 64}}
    theirs = _entry(1, 10, 10, key_components=dict(base), run_config={"model_name": "m"})
    other_model = _entry(2, 20, 20, key_components={**base, "context_sha256": "x"}, run_config={"model_name": "n"})
    kept = {theirs.id: _files({"a.txt": "1", "b.txt": "2", "data/train.txt": "3"})}
    now = KeyFiles({"a.txt": "1", "data/train.txt": "4", "results.csv": "5"}, ["a", "B", "c", "d"])

    def why(**changes: Any) -> str:
        return explain({**base, **changes}, now, "m", "ci-m", [theirs, other_model], kept.get).line

    assert why(context_sha256="c2") == (f"Cache miss (context changed since {theirs.id}: +results.csv, -b.txt, "
                                        f"~data/train.txt; add generated files to .dockerignore)")
    assert why(dockerfile_sha256="d2") == f"Cache miss (Dockerfile changed since {theirs.id}: 2 lines)"
    assert why(params={"precision": "fp32"}) == f"Cache miss (params changed since {theirs.id}: precision fp16 -> fp32)"
    assert why(build_args={"A": "2", "B": "x"}) == f"Cache miss (build args changed since {theirs.id}: A 1 -> 2, +B=x)"
    assert why(build_args={"A": {"secret_sha256": "ab" * 32}}) == (
        f"Cache miss (build args changed since {theirs.id}: A 1 -> (secret))")
    assert why(bases={"debian:12": "sha256:" + "2" * 64}) == (
        f"Cache miss (base images changed since {theirs.id}: debian:12 sha256:111111111111… -> sha256:222222222222…)")
    assert why(params={"precision": "fp32"}, context_sha256="c2").startswith(
        f"Cache miss (context changed since {theirs.id}: +results.csv")
    reason = explain(base, now, "z", "ci-z", [theirs], kept.get)
    assert (reason.kind, reason.line) == ("new", "Cache miss (no entry of model 'z' in the cache yet)")
    assert explain({**base, "context_sha256": "c2"}, now, "m", "ci-m", [theirs], kept.get).group == "context changed"


def test_an_entry_without_its_file_list_still_names_the_component() -> None:
    base = {"image": "ci-m", "context_sha256": "c1"}
    theirs = _entry(1, 10, 10, key_components=dict(base), run_config={"model_name": "m"})
    line = explain({**base, "context_sha256": "c2"}, None, "m", "ci-m", [theirs], lambda _: None).line
    assert line == f"Cache miss (context changed since {theirs.id})"
    assert json.loads(json.dumps(KeyFiles({"a": "1"}, ["x"]).to_json())) == {"context": {"a": "1"},
                                                                              "dockerfile": ["x"],
                                                                              "dockerfile_path": None}
    assert KeyFiles.from_json({"context": {"a": 1}, "dockerfile": []}) is None


def test_xdist_workers_leave_the_controllers_outputs_out_of_the_key(pytester: pytest.Pytester) -> None:
    """--output is the controller's to write: workers, which make every key, leave it out all the same."""
    pytest.importorskip("xdist")
    ctx = pytester.mkdir("ctx")
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    pytester.makeconftest(FAKE_HOOKS)
    pytester.makepyfile(test_x='''
import pytest

@pytest.mark.model("m", context="ctx")
@pytest.mark.parametrize("n", range(4))
def test_x(model_image, n):
    with open("keys.txt", "a") as fh:
        fh.write(model_image.key + "\\n")
''')
    for _ in range(2):
        pytester.runpytest("-n", "2", "--output=ctx/results.csv", "--junitxml=ctx/junit.xml").assert_outcomes(passed=4)
    assert (ctx / "results.csv").is_file() and (ctx / "junit.xml").is_file()
    keys = (pytester.path / "keys.txt").read_text().split()  # the suite builds itself: n is in the key
    assert len(keys) == 8 and sorted(keys[:4]) == sorted(keys[4:]) and len(set(keys)) == 4


def test_the_nearest_entry_shares_the_tests_values() -> None:
    """fp16's entry (made last time) and fp32's (saved a moment ago) both differ in one component: the
    reason compares with fp16's, so an edited file shows as such."""
    base = {"image": "ci-m", "build_args": {"PRECISION": "fp16"}, "context_sha256": "c1"}
    fp16 = _entry(1, 10, 10, key_components=dict(base), run_config={"model_name": "m"})
    fp32 = _entry(2, 20, 20, key_components={**base, "build_args": {"PRECISION": "fp32"}, "context_sha256": "c2"},
                  run_config={"model_name": "m"})
    reason = explain({**base, "context_sha256": "c2"}, None, "m", "ci-m", [fp16, fp32], lambda _: None)
    assert reason.line == f"Cache miss (context changed since {fp16.id})"


def test_at_its_end_a_session_evicts_its_own_before_a_concurrent_sessions() -> None:
    mine = [_entry(i, created=100 + i, last_used=150, key=f"mine{i}") for i in range(3)]
    theirs = [_entry(10 + i, created=160 + i, last_used=160, key=f"theirs{i}") for i in range(3)]
    ended = Session(since=100, running=False, keys=frozenset(e.key for e in mine))
    chosen = choose_evictions(mine + theirs, Limits(4, 10**9), now=200, session=ended)
    assert [e.id for e in chosen] == [mine[2].id, mine[1].id]
