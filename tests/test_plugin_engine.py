"""The pytest plugin on a real engine: the example suite (miss, hit, present, --from-cache,
--force-rebuild, xdist), failed builds, run options and an unwritable cache."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest

from pytest_madcache.store import Store
from tests.plugin_helpers import FAKE_HOOKS, read_csv, remove_images, tiny_context

pytestmark = pytest.mark.engine

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_LABEL = "org.madcache.example"
MISS = "Cache miss. Will build Docker image and save to cache."
SAVED = re.compile(r"Docker image saved to cache: (run_\d+_[0-9a-f]{8})")
HIT = re.compile(r"Cache hit! Loading Docker image from cache: (run_\d+_[0-9a-f]{8})")
PRESENT = "Docker image already present in the engine; nothing loaded: run_"


@pytest.fixture
def example_images(engine):
    """No example image in the engine before or after: like a fresh CI runner."""
    remove_images(engine, EXAMPLE_LABEL)
    yield
    remove_images(engine, EXAMPLE_LABEL)


@pytest.fixture
def tiny_model(engine, pytester: pytest.Pytester):
    """A unique model name whose images are removed afterwards."""
    name = f"tiny{secrets.token_hex(3)}"
    yield name
    remove_images(engine, f"madcache.model={name}")


def run_examples(pytester: pytest.Pytester, cache: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest(str(EXAMPLES), "-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(cache),
                              *args)


def test_example_suite_misses_then_hits(pytester, engine, example_images, tmp_path) -> None:
    cache = tmp_path / "cache"
    first = run_examples(pytester, cache, "--output", str(tmp_path / "first.csv"))
    first.assert_outcomes(passed=4)
    out = first.stdout.str()
    assert out.count(MISS) == 2  # two models; the batch-size sweep shares one image
    saved = SAVED.findall(out)
    assert len(saved) == 2
    first.stdout.fnmatch_lines(["cache hits: 0 (0 already in the engine), misses: 2, reused in this session: 2"])
    assert {r["cache_hit"] for r in read_csv(tmp_path / "first.csv")} == {"no"}

    remove_images(engine, EXAMPLE_LABEL)  # a fresh runner: the engine has nothing
    second = run_examples(pytester, cache, "--output", str(tmp_path / "second.csv"))
    second.assert_outcomes(passed=4)
    out = second.stdout.str()
    assert MISS not in out and "Building Docker image" not in out
    assert sorted(HIT.findall(out)) == sorted(saved)
    assert "Docker image loaded from cache successfully: run_" in out
    second.stdout.fnmatch_lines(["cache hits: 2 (0 already in the engine), misses: 0, reused in this session: 2",
                                 "bytes loaded: * MB in * s; build time: 0.0 s (0 builds)",
                                 "build time saved: * s (recorded build durations of the hits; * s net of loading)"])
    rows = read_csv(tmp_path / "second.csv")
    assert len(rows) == 4
    assert all(r["status"] == "SUCCESS" and r["cache_hit"] == "yes" and r["metric"] == "MB/s" for r in rows)
    assert all(float(r["performance"]) > 0 for r in rows)
    hash_ids = {r["cache_id"] for r in rows if r["model"] == "hashbench"}
    assert len(hash_ids) == 1  # three batch sizes, one image

    third = run_examples(pytester, cache, "-k", "gzipbench")  # the engine still has the images
    third.assert_outcomes(passed=1, deselected=3)
    assert PRESENT in third.stdout.str()

    entry_id = hash_ids.pop()
    from_cache = pytester.runpytest(str(EXAMPLES), "-p", "no:cacheprovider", "--cache-dir", str(cache),
                                    "--from-cache", entry_id)
    from_cache.assert_outcomes(passed=3, deselected=1)  # only the model recorded in the entry
    from_cache.stdout.fnmatch_lines([f"Running from cache: {entry_id}",
                                     "Docker image 'ci-hashbench:*' already exists locally",
                                     "Using cached tags: hashbench, bench"])

    rebuilt = run_examples(pytester, cache, "-k", "gzipbench", "--force-rebuild")
    rebuilt.assert_outcomes(passed=1, deselected=3)
    new_id = SAVED.findall(rebuilt.stdout.str())
    assert len(new_id) == 1 and new_id[0] not in saved
    ids = {e.id for e in Store(cache).entries()}
    assert new_id[0] in ids and len(ids) == 2  # the old gzipbench entry was replaced


def test_example_suite_under_xdist_builds_each_key_once(pytester, example_images, tmp_path) -> None:
    cache = tmp_path / "cache"
    result = run_examples(pytester, cache, "-n", "2", "--output", str(tmp_path / "dist.csv"))
    result.assert_outcomes(passed=4)
    out = result.stdout.str()
    assert len(SAVED.findall(out)) == 2, out  # one build per key across both workers
    assert out.count(MISS) == 2
    assert re.search(r"\[gw[01]\] Docker image saved to cache: run_", out)  # relayed by the controller
    result.stdout.fnmatch_lines(["cache hits: *, misses: 2*", "model runs: 4 (4 SUCCESS, 0 FAILURE)"])
    assert len(read_csv(tmp_path / "dist.csv")) == 4
    assert len(Store(cache).entries()) == 2


def test_example_sweep_against_its_baseline_fails_a_deliberate_regression(pytester, example_images, tmp_path,
                                                                          monkeypatch) -> None:
    """Performance tracking, the whole loop on a real engine: the example suite writes the baseline;
    the same suite with a deliberate regression (HASHBENCH_SLOWDOWN=300: each hashbench run does 4x
    the work it counts, three quarters less throughput) fails its three hashbench tests against it
    with --perf-fail-threshold 10.  gzipbench, unchanged, passes unless noise lowered it by more.
    (With 50% more work, a third less throughput expected, a CI run on Podman measured -9.9%.)"""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HASHBENCH_ROUNDS", "3")  # more work per run: finer figures
    monkeypatch.delenv("HASHBENCH_SLOWDOWN", raising=False)
    run_examples(pytester, cache, "--output", str(tmp_path / "main.csv")).assert_outcomes(passed=4)

    monkeypatch.setenv("HASHBENCH_SLOWDOWN", "300")
    slow = run_examples(pytester, cache, "--perf-baseline", str(tmp_path / "main.csv"), "--perf-fail-threshold", "10",
                        "--output", str(tmp_path / "mr.csv"), "--perf-report", str(tmp_path / "perf.md"))
    rows = read_csv(tmp_path / "mr.csv")
    hashed = [r for r in rows if r["model"] == "hashbench"]
    assert len(hashed) == 3, rows
    for r in hashed:
        assert float(r["relative_change"]) < -15, r  # -75% expected; a busy machine moves it further
        assert (r["perf_status"], r["status"], r["direction"]) == ("REGRESSED", "FAILURE", "higher"), r
    [gzip] = [r for r in rows if r["model"] == "gzipbench"]
    gzip_regressed = float(gzip["relative_change"]) < -10  # higher is better: a gain never fails
    assert (gzip["perf_status"] == "REGRESSED") == gzip_regressed, gzip
    slow.assert_outcomes(failed=3 + gzip_regressed, passed=int(not gzip_regressed))
    slow.stdout.fnmatch_lines(["*performance regression: hashbench [[]batch_size=1[]]: * MB/s against a baseline of *, "
                               "-*% (higher is better), beyond the threshold of 10%",
                               "*= madcache performance =*",
                               "4 runs against baseline *main.csv (option --perf-baseline); fail threshold 10% *",
                               "hashbench (higher is better)",
                               "  batch_size  performance  metric  baseline  change  status",
                               "  1 * MB/s * -*%  REGRESSED",
                               "  4 * MB/s * -*%  REGRESSED",
                               "  16 * MB/s * -*%  REGRESSED",
                               "performance report written to *perf.md"])
    assert "Building Docker image" not in slow.stdout.str()  # the images were there: the regression is in the run
    assert (tmp_path / "perf.md").read_text().count("**REGRESSED**") == 3 + gzip_regressed


def test_failed_build_is_a_test_error_with_the_log_tail(pytester, tiny_model, tmp_path) -> None:
    tiny_context(pytester.path / "ctx", ['RUN ["/bin/busybox", "sh", "-c", "echo boom-marker-42; exit 7"]'])
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.model("{tiny_model}", context="ctx")
        def test_model(model_image):
            assert False, "never reached"
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(tmp_path / "c"))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*the Docker build of model '{tiny_model}' failed*",
                                 "--- last lines of the build log ---", "*boom-marker-42*"])
    assert Store(tmp_path / "c").entries() == []  # nothing cached from a failed build


def test_run_options_env_volumes_timeout_and_live_output(pytester, tiny_model, tmp_path) -> None:
    tiny_context(pytester.path / "ctx", ['CMD ["sh", "-c", "echo from-cmd; echo performance: 3 it/s"]'])
    (pytester.path / "data").mkdir()
    (pytester.path / "data" / "in.txt").write_text("hello-volume\n")
    pytester.makepyfile(f"""
        import pytest

        pytestmark = pytest.mark.model("{tiny_model}", context="ctx", volumes={{"./data": "/data"}},
                                       env={{"FROM_MARK": "m"}}, shm_size="64m", ipc_mode="private")

        def test_default_command(model_run):
            result = model_run()
            assert (result.exit_code, result.performance, result.metric) == (0, 3.0, "it/s")

        def test_env_and_volume(model_run):
            result = model_run(["sh", "-c", "cat /data/in.txt; echo $FROM_MARK$FROM_CALL; "
                                "df -k /dev/shm | tail -1; echo out > /data/out.txt"], env={{"FROM_CALL": "c"}})
            assert result.ok, result.logs
            assert "hello-volume" in result.logs and "mc" in result.logs
            assert " 65536 " in result.logs  # shm_size=64m
            assert open("data/out.txt").read() == "out\\n"

        def test_failure_and_timeout(model_run):
            assert model_run("sh -c 'exit 5'").exit_code == 5
            slow = model_run(["sleep", "30"], timeout=1)
            assert slow.timed_out and not slow.ok and slow.status == "FAILURE" and slow.duration < 15
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "--live-output")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["from-cmd", "performance: 3 it/s"])  # streamed by --live-output
    result.stdout.fnmatch_lines(["model runs: 4 (2 SUCCESS, 2 FAILURE)"])


def test_containers_are_removed_also_on_keyboard_interrupt(engine, tmp_path) -> None:
    from pytest_madcache.engines.runner import RunOptions, run_container

    ctx = tiny_context(tmp_path / "ctx")
    tag = f"madcache-kbd-{secrets.token_hex(3)}:latest"
    image = engine.build(ctx, tag=tag).image_id
    before = {c.id for c in engine.client.containers.list(all=True)}

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    try:
        for keep_alive in (False, True):  # --keep-alive keeps what ran, not what was interrupted
            with pytest.raises(KeyboardInterrupt):
                run_container(engine.client, image, RunOptions(command=["sh", "-c", "echo go; sleep 30"],
                                                               keep_alive=keep_alive), interrupt)
            assert {c.id for c in engine.client.containers.list(all=True)} == before
    finally:
        engine.remove(tag)


def test_keep_alive_leaves_the_containers_running_after_the_session(pytester, engine, tiny_model) -> None:
    """--keep-alive: the model runs in a container that stays up (madengine's debugging aid); the test says
    how to enter it, the summary lists every kept container and how to remove them."""
    tiny_context(pytester.path / "ctx", ['CMD ["sh", "-c", "echo ran > /ran; echo performance: 2 it/s"]'])
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.model("{tiny_model}", context="ctx", env={{"FROM_MARK": "m"}})
        def test_kept(model_run):
            first = model_run()
            assert (first.exit_code, first.performance, first.metric) == (0, 2.0, "it/s"), first.logs
            failed = model_run(["sh", "-c", "echo mark=$FROM_MARK; exit 3"])
            assert failed.exit_code == 3 and "mark=m" in failed.logs and failed.status == "FAILURE"
            slow = model_run(["sleep", "30"], timeout=1)
            assert slow.timed_out and slow.exit_code == -1 and slow.duration < 15
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "--keep-alive")
    out = result.stdout.str()
    ids = re.findall(r"Container ([0-9a-f]{12}) kept running \(--keep-alive\); enter it with: docker exec -it \1 sh",
                     out)
    try:
        result.assert_outcomes(passed=1)
        assert len(set(ids)) == 3
        result.stdout.fnmatch_lines(["containers kept running (--keep-alive): 3",
                                     f"  {ids[0]}  test_keep_alive_*.py::test_kept (*{tiny_model}:*)",
                                     f"enter one with: docker exec -it ID sh; remove them with: docker rm -f "
                                     f"{' '.join(ids)}"])
        containers = [engine.client.containers.get(cid) for cid in ids]  # the session is over
        assert [c.status for c in containers] == ["running"] * 3
        assert containers[0].exec_run(["cat", "/ran"]).output == b"ran\n"  # the run's own container
        assert b"sleep 30" in containers[2].exec_run(["ps"]).output  # a timed-out model is left to look at
    finally:
        for cid in ids:
            engine.client.containers.get(cid).remove(force=True)
    assert not [c for c in engine.client.containers.list(all=True) if c.id[:12] in ids]


def test_unwritable_cache_warns_once_and_tests_go_on(pytester, docker_host, tmp_path) -> None:
    pytester.makeconftest(FAKE_HOOKS)
    (pytester.path / "Dockerfile").write_text("FROM scratch\n")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.model("a")
        def test_a(model_run):
            assert model_run().ok

        @pytest.mark.model("b")
        def test_b(model_image):
            assert model_image.cache_hit is False and model_image.cache_id is None
    """)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = pytester.runpytest("-p", "no:cacheprovider", "--enable-cache", "--cache-dir", str(blocker / "cache"))
    result.assert_outcomes(passed=2, warnings=1)
    out = result.stdout.str()
    assert out.count("MadcacheWarning: madcache: cannot write to the cache directory") == 1
    result.stdout.fnmatch_lines(["warning: madcache: cannot write to the cache directory*; tests go on without "
                                 "the cache"])
