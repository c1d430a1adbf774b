"""The pytest plugin without an engine: options, ini keys, marks, hooks, errors, summary, CSV, xdist.

Builds and runs are replaced through the plugin's own hooks (tests/plugin_helpers.FAKE_HOOKS),
which at the same time shows that users' implementations win over the plugin's trylast ones.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pytest_madcache.core.model import ModelMarkError, select_params, spec_from_marks
from pytest_madcache.core.run import RunOptions, normalise_volumes, parse_performance
from pytest_madcache.engines.runner import container_kwargs, model_command
from pytest_madcache.core.settings import SettingsError, parse_additional_context
from tests.plugin_helpers import FAKE_HOOKS, read_csv

USAGE_ERROR = 4


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A suite dir with a Dockerfile and the fake build/run hooks."""
    pytester.makeconftest(FAKE_HOOKS)
    (pytester.path / "Dockerfile").write_text("FROM scratch\n")
    return pytester


# -- options, ini keys, precedence, usage errors -------------------------------------


def test_help_lists_the_madcache_group_and_ini_keys(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    out = result.stdout.str()
    assert "Docker image cache for model tests (pytest-madcache)" in out
    for flag in ("--enable-cache", "--cache-dir=DIR", "--cache-max-entries=N", "--cache-max-size-gb=GB",
                 "--cache-ttl=TTL", "--force-rebuild", "--from-cache=ID", "--additional-context=DICT",
                 "--live-output", "--keep-alive", "--output=FILE.csv"):
        assert flag in out, flag
    for ini in ("madcache_enabled", "madcache_dir", "madcache_max_entries", "madcache_max_size_gb", "madcache_ttl",
                "madcache_additional_context", "madcache_live_output", "madcache_keep_alive", "madcache_output"):
        assert ini in out, ini


def test_entry_point_loads_in_a_subprocess(suite: pytest.Pytester) -> None:
    """No -p: the pytest11 entry point alone brings the plugin in."""
    suite.makepyfile("""
        import pytest

        @pytest.mark.model("sub")
        def test_run(model_run):
            assert model_run().performance == 12.5
    """)
    result = suite.runpytest_subprocess("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["madcache: cache disabled (--enable-cache to use it)", "*= madcache =*",
                                 "cache disabled (use --enable-cache): 1 builds in 0.2 s"])


def test_precedence_flag_over_environment_over_ini(pytester: pytest.Pytester, monkeypatch) -> None:
    pytester.makeini("[pytest]\nmadcache_max_entries = 2\nmadcache_ttl = 7d\nmadcache_enabled = yes\n")
    pytester.makepyfile("def test_nothing():\n    assert True\n")
    monkeypatch.setenv("MADCACHE_MAX_ENTRIES", "3")
    monkeypatch.setenv("MADCACHE_TTL", "48h")
    monkeypatch.delenv("MADCACHE_ENABLED", raising=False)
    monkeypatch.delenv("MADENGINE_CACHE_ENABLED", raising=False)
    result = pytester.runpytest("--cache-max-entries", "7", "--cache-dir", str(pytester.path / "c"))
    result.assert_outcomes(passed=1)
    header = result.stdout.str()
    assert "madcache: cache enabled (ini key madcache_enabled in" in header
    assert "max_entries=7 (option --cache-max-entries)" in header
    assert "ttl=2d (environment variable MADCACHE_TTL)" in header
    assert f"dir={pytester.path / 'c'} (option --cache-dir)" in header


@pytest.mark.parametrize(
    "how, value, expected",
    [
        ("env", "zero", "invalid value 'zero' for max entries from environment variable MADCACHE_MAX_ENTRIES"),
        ("flag", "soon", "invalid value 'soon' for ttl from option --cache-ttl"),
        ("ini", "-1", "invalid value '-1' for max size gb from ini key madcache_max_size_gb in {ini}: "),
        ("ctx", "{'guest_os': ", "invalid value \"{'guest_os': \" for --additional-context from option "
                                 "--additional-context"),
        ("ctxini", "[1, 2]", "invalid value '[1, 2]' for --additional-context from ini key "
                             "madcache_additional_context in {ini}: expected a dict"),
        ("liveenv", "sometimes", "invalid value 'sometimes' for --live-output from environment variable "
                                 "MADCACHE_LIVE_OUTPUT"),
        ("outputenv", ".", "invalid value '.' for --output from environment variable MADCACHE_OUTPUT: "),
        ("keepenv", "later", "invalid value 'later' for --keep-alive from environment variable MADCACHE_KEEP_ALIVE: "),
        ("keepini", "always", "invalid value 'always' for --keep-alive from ini key madcache_keep_alive in {ini}: "),
    ],
)
def test_bad_values_are_usage_errors_naming_value_and_source(pytester: pytest.Pytester, monkeypatch, how, value,
                                                             expected) -> None:
    pytester.makepyfile("def test_nothing():\n    assert True\n")
    args = []
    if how == "env":
        monkeypatch.setenv("MADCACHE_MAX_ENTRIES", value)
    elif how == "flag":
        args = ["--cache-ttl", value]
    elif how == "ini":
        pytester.makeini(f"[pytest]\nmadcache_max_size_gb = {value}\n")
    elif how == "ctx":
        args = ["--additional-context", value]
    elif how == "liveenv":
        monkeypatch.setenv("MADCACHE_LIVE_OUTPUT", value)
    elif how == "outputenv":
        monkeypatch.setenv("MADCACHE_OUTPUT", value)
    elif how == "keepenv":
        monkeypatch.setenv("MADCACHE_KEEP_ALIVE", value)
    elif how == "keepini":
        pytester.makeini(f"[pytest]\nmadcache_keep_alive = {value}\n")
    else:
        pytester.makeini(f"[pytest]\nmadcache_additional_context = {value}\n")
    result = pytester.runpytest(*args)
    assert result.ret == USAGE_ERROR
    assert expected.replace("{ini}", str(pytester.path / "tox.ini")) in result.stderr.str()


def test_unknown_from_cache_id_is_a_usage_error_listing_entries(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing():\n    assert True\n")
    result = pytester.runpytest("--from-cache", "run_0_deadbeef", "--cache-dir", str(pytester.path / "empty"))
    assert result.ret == USAGE_ERROR
    err = result.stderr.str()
    assert "Cache entry 'run_0_deadbeef' not found" in err
    assert "Tip: Use 'madcache list' to see all available cache entries" in err


def test_additional_context_parsing() -> None:
    assert parse_additional_context("{'guest_os': 'UBUNTU', 'n': 2}", "x") == {"guest_os": "UBUNTU", "n": 2}
    assert parse_additional_context('{"ok": true, "none": null}', "x") == {"ok": True, "none": None}
    assert parse_additional_context("  ", "x") == {}
    with pytest.raises(SettingsError, match=r"^invalid value \"'text'\" for --additional-context from environment: "
                                            "expected a dict, got str$"):
        parse_additional_context("'text'", "environment")
    with pytest.raises(SettingsError, match=r"^invalid value '\{1: 2\}' for --additional-context from here: "
                                            "keys must be strings, not 1$"):
        parse_additional_context("{1: 2}", "here")
    with pytest.raises(SettingsError, match=r"^invalid value \"__import__\('os'\).system\('true'\)\" for "
                                            "--additional-context from here: expected a dict"):
        parse_additional_context("__import__('os').system('true')", "here")  # never evaluated, only reported


# -- marks -----------------------------------------------------------------------------


def test_model_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.model(name, dockerfile=None, context=None, image=None, *"])


def test_unknown_mark_keyword_is_an_error_naming_the_test(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_bad="""
        import pytest

        @pytest.mark.model("m", colour="red")
        def test_a():
            assert True

        @pytest.mark.model("m")
        def test_b(model_image):
            assert model_image.tag.startswith("ci-m:")
    """)
    result = suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*test_bad.py::test_a: @pytest.mark.model got unknown keyword argument(s) colour*"])
    out = result.stdout.str()
    assert "During handling of the above exception" not in out
    # Once in the error's report (the short summary line repeats it in full where CI=true)
    report = "\n".join(line for line in out.splitlines() if not line.startswith("ERROR "))
    assert report.count("test_bad.py::test_a: @pytest.mark.model got unknown keyword argument(s) colour; known:") == 1


def test_marks_on_module_class_and_function_merge_closest_first(suite: pytest.Pytester) -> None:
    sub = suite.mkdir("sub")
    (sub / "ctx").mkdir()
    (sub / "ctx" / "Dockerfile").write_text("FROM scratch\n")
    (sub / "test_levels.py").write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.model('bert', context='ctx', command='run-all', tags=['bert', 'nlp'], shm_size='1g')\n"
        "\n"
        "@pytest.mark.model(command=['python', 'train.py'])\n"
        "class TestBert:\n"
        "    @pytest.mark.model(timeout=30)\n"
        "    def test_levels(self, model_image):\n"
        "        spec = model_image.model\n"
        "        assert spec.name == 'bert' and spec.tags == ('bert', 'nlp')\n"
        "        assert spec.run.command == ['python', 'train.py'] and spec.run.timeout == 30.0\n"
        "        assert spec.run.shm_size == '1g'\n"
        "        assert spec.context == __import__('pathlib').Path(__file__).parent / 'ctx'\n"
        "        assert model_image.tag.startswith('ci-bert:')\n"
        "\n"
        "@pytest.mark.model('other', context='ctx')\n"
        "def test_other_model_inherits_nothing(model_image):\n"
        "    assert model_image.model.tags == ('other',) and model_image.model.run.command is None\n"
    )
    # run from another directory: paths are relative to the test file, not the cwd
    result = suite.runpytest(str(sub / "test_levels.py"), "-p", "no:cacheprovider", "--rootdir", str(suite.path))
    result.assert_outcomes(passed=2)


def test_spec_errors_name_the_test(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")

    class Mark:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    with pytest.raises(ModelMarkError, match=r"^t::x: give key_params or ignore_params, not both"):
        spec_from_marks([Mark("m", key_params=[], ignore_params=[])], tmp_path, "t::x")
    with pytest.raises(ModelMarkError, match=r"^t::x: Dockerfile .*nope.* of model 'm' does not exist"):
        spec_from_marks([Mark("m", context=".", dockerfile="nope.Dockerfile")], tmp_path, "t::x")
    with pytest.raises(ModelMarkError, match=r"^t::x: build context .*nope.* of model 'm' is not a directory"):
        spec_from_marks([Mark("m", dockerfile="nope/Dockerfile")], tmp_path, "t::x")
    with pytest.raises(ModelMarkError, match=r"^t::x: nodes=0 must be"):
        spec_from_marks([Mark("m", nodes=0)], tmp_path, "t::x")
    with pytest.raises(ModelMarkError, match=r"^t::x: .*needs a model name"):
        spec_from_marks([Mark(command="x")], tmp_path, "t::x")
    spec = spec_from_marks([Mark("My Model!", image="reg:5000/team/img:v1")], tmp_path, "t::x")
    assert (spec.image, spec.image_tag) == ("reg:5000/team/img", "v1")
    assert spec_from_marks([Mark("My Model!")], tmp_path, "t::x").image == "ci-my_model"
    assert select_params({"bs": 1, "lr": 2}, spec_from_marks([Mark("m", key_params=["lr"])], tmp_path, "t"),
                         "t") == {"lr": 2}
    # a parameter joins the key only where the build can see it: key_params, or a conftest's own build
    assert select_params({"bs": 1, "lr": 2}, spec_from_marks([Mark("m")], tmp_path, "t"), "t") == {}
    assert select_params({"bs": 1, "lr": 2}, spec_from_marks([Mark("m", ignore_params=["bs"])], tmp_path, "t"),
                         "t") == {}
    assert select_params({"bs": 1, "lr": 2}, spec_from_marks([Mark("m", ignore_params=["bs"])], tmp_path, "t"),
                         "t", custom_build=True) == {"lr": 2}
    assert select_params({"bs": 1, "lr": 2}, spec_from_marks([Mark("m")], tmp_path, "t"), "t",
                         custom_build=True) == {"bs": 1, "lr": 2}
    with pytest.raises(ModelMarkError, match=r"^t: key_params names zz, which the test is not parametrized with"):
        select_params({"bs": 1}, spec_from_marks([Mark("m", key_params=["zz"])], tmp_path, "t"), "t")


def test_key_params_let_a_sweep_share_one_image(suite: pytest.Pytester) -> None:
    suite.makepyfile("""
        import pytest
        KEYS = {}

        @pytest.mark.model("sweep", ignore_params=["batch_size"])
        @pytest.mark.parametrize("precision", ["fp16", "fp32"])
        @pytest.mark.parametrize("batch_size", [1, 8, 64])
        def test_sweep(model_image, batch_size, precision):
            KEYS[(batch_size, precision)] = model_image.key
            assert model_image.key_components["params"] == {
                "precision": precision, "key_material": {"base_image_digest": "sha256:feed"}}
            assert model_image.params == {"batch_size": batch_size, "precision": precision}

        def test_keys():
            assert len(KEYS) == 6
            assert len({KEYS[(b, "fp16")] for b in (1, 8, 64)}) == 1
            assert KEYS[(1, "fp16")] != KEYS[(1, "fp32")]
    """)
    result = suite.runpytest("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["cache disabled (use --enable-cache): 2 builds in 0.5 s"])


def test_additional_context_joins_the_key_and_acts_like_madengine(suite: pytest.Pytester) -> None:
    suite.makepyfile("""
        import pytest

        @pytest.mark.model("ctx", build_args={"A": "mark"}, env={"E": "mark"})
        def test_ctx(model_image, model_run, request):
            ctx = request.config.getoption("madcache_additional_context")
            assert model_image.key_components["additional_context"]["guest_os"] == "UBUNTU"
            assert model_image.model.build_args == {"A": "context", "B": "2"}
            assert model_image.model.run.env == {"E": "mark", "F": "ctx"}
    """)
    ctx = "{'guest_os': 'UBUNTU', 'docker_build_arg': {'A': 'context', 'B': 2}, 'docker_env_vars': {'E': 'x', 'F': 'ctx'}}"
    suite.runpytest("-p", "no:cacheprovider", "--additional-context", ctx).assert_outcomes(passed=1)


# -- runs, summary, CSV ------------------------------------------------------------------


def test_runs_become_csv_rows_and_failures_are_never_good(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_runs="""
        import pytest

        @pytest.mark.model("bench", tags=["bench", "nightly"])
        @pytest.mark.parametrize("bs", [2, 4])
        def test_good(model_run, bs):
            result = model_run(env={"PERF": str(bs * 10)})
            assert (result.performance, result.metric, result.ok) == (bs * 10.0, "samples/s", True)
            assert result.cache_hit is False

        @pytest.mark.model("bench")
        def test_exit_code(model_run):
            result = model_run(env={"EXIT": "3"})
            assert result.status == "FAILURE"

        @pytest.mark.model("bench")
        def test_assertion_after_good_run(model_run):
            model_run()
            assert False, "the model ran but its numbers are wrong"

        @pytest.mark.model("bench")
        def test_unknown_run_option(model_run):
            with pytest.raises(TypeError, match=r"^model_run\\(\\) got unknown keyword argument\\(s\\) colour; "):
                model_run(colour="red")
            with pytest.raises(ValueError, match=r"^test_runs.py::test_unknown_run_option: model_run\\(\\): "
                                                 r"timeout=-1 must be"):
                model_run(timeout=-1)
    """)
    result = suite.runpytest("-p", "no:cacheprovider", "--output", "out/results.csv")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["model runs: 4 (2 SUCCESS, 2 FAILURE)", "results written to *results.csv (4 rows)"])
    rows = read_csv(suite.path / "out" / "results.csv")
    by_id = {r["nodeid"]: r for r in rows}
    good = by_id["test_runs.py::test_good[2]"]
    assert good["model"] == "bench" and good["tags"] == "bench,nightly" and good["args"] == "bs=2"
    assert (good["performance"], good["metric"], good["status"]) == ("20", "samples/s", "SUCCESS")
    assert good["docker_sha"] == "sha256:" + "ab" * 32 and good["build_duration"] == "0.25"
    assert good["cache_hit"] == ""  # cache disabled: neither hit nor miss
    assert by_id["test_runs.py::test_exit_code"]["status"] == "FAILURE"
    assert by_id["test_runs.py::test_assertion_after_good_run"]["status"] == "FAILURE"
    assert list(rows[0])[:9] == ["model", "tags", "args", "docker_file", "docker_image", "docker_sha",
                                 "performance", "metric", "status"]


def test_live_output_streams_build_and_run_lines(suite: pytest.Pytester) -> None:
    suite.makepyfile("""
        import pytest

        @pytest.mark.model("live")
        def test_live(model_run):
            assert model_run().ok
    """)
    result = suite.runpytest("-p", "no:cacheprovider", "--live-output")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["fake build step for live", "warm-up", "performance: 12.5 samples/s"])
    quiet = suite.runpytest("-p", "no:cacheprovider")
    assert "warm-up" not in quiet.stdout.str()


@pytest.mark.parametrize("how", ["flag", "env", "ini", "off"])
def test_keep_alive_names_the_container_and_how_to_enter_and_remove_it(suite: pytest.Pytester, monkeypatch,
                                                                     how) -> None:
    suite.makepyfile("""
        import pytest

        @pytest.mark.model("kept")
        def test_kept(model_run, request):
            kept = request.config.getoption("madcache_keep_alive") or request.config.getini("madcache_keep_alive")
            import os
            kept = kept or os.environ.get("MADCACHE_KEEP_ALIVE")
            assert model_run().container_id == ("f00d" * 16 if kept else None)
    """)
    monkeypatch.delenv("MADCACHE_KEEP_ALIVE", raising=False)
    args = ["-p", "no:cacheprovider", "--cache-summary-json", "summary.json"]
    if how == "flag":
        args.append("--keep-alive")
    elif how == "env":
        monkeypatch.setenv("MADCACHE_KEEP_ALIVE", "yes")
    elif how == "ini":
        suite.makeini("[pytest]\nmadcache_keep_alive = true\n")
    result = suite.runpytest(*args)
    result.assert_outcomes(passed=1)
    summary = json.loads((suite.path / "summary.json").read_text())
    if how == "off":
        assert "kept running" not in result.stdout.str() and summary["kept_containers"] == []
        return
    result.stdout.fnmatch_lines([
        "Container f00df00df00d kept running (--keep-alive); enter it with: docker exec -it f00df00df00d sh",
        "*= madcache =*",
        "containers kept running (--keep-alive): 1",
        "  f00df00df00d  test_keep_alive_names_*.py::test_kept (*)",
        "enter one with: docker exec -it ID sh; remove them with: docker rm -f f00df00df00d",
    ])
    assert summary["kept_containers"] == ["f00d" * 16]


def test_keep_alive_under_xdist_lists_every_workers_containers(suite: pytest.Pytester) -> None:
    suite.makepyfile("""
        import pytest

        @pytest.mark.model("kept")
        @pytest.mark.parametrize("i", range(3))
        def test_kept(model_run, i):
            assert model_run(env={"KEPT_ID": str(i) * 64}).container_id == str(i) * 64
    """)
    result = suite.runpytest("-n", "2", "-p", "no:cacheprovider", "--keep-alive")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*[[]gw?[]] Container 222222222222 kept running (--keep-alive); *"])
    result.stdout.fnmatch_lines([  # in test order, whichever worker ran which
        "containers kept running (--keep-alive): 3",
        "  000000000000  *::test_kept[[]0[]] (*)", "  111111111111  *::test_kept[[]1[]] (*)",
        "  222222222222  *::test_kept[[]2[]] (*)",
        "enter one with: docker exec -it ID sh; remove them with: docker rm -f 000000000000 111111111111 222222222222",
    ])


def test_xdist_workers_get_the_controllers_settings_and_the_summary_is_aggregated(suite: pytest.Pytester) -> None:
    suite.makepyfile("""
        import pytest
        from pytest_madcache.plugin import STATE

        @pytest.mark.model("dist", ignore_params=["i"])  # one key for all six (a custom build hook keys on params)
        @pytest.mark.parametrize("i", range(6))
        def test_dist(model_run, request, i):
            wire = request.config.workerinput["madcache"]
            assert wire["settings"]["max_entries"] == 9
            assert wire["settings"]["sources"]["max_entries"] == "option --cache-max-entries"
            assert request.config.stash[STATE].settings.max_entries == 9
            assert model_run(env={"PERF": str(i)}).ok
    """)
    result = suite.runpytest("-n", "2", "-p", "no:cacheprovider", "--cache-max-entries", "9",
                             "--output", "dist.csv")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["model runs: 6 (6 SUCCESS, 0 FAILURE)", "results written to *dist.csv (6 rows)"])
    rows = read_csv(suite.path / "dist.csv")
    assert sorted(float(r["performance"]) for r in rows) == [0, 1, 2, 3, 4, 5]
    # one build per worker process at most (images are remembered per process): six tests of one
    # key on two workers build once or twice, each worker at most once
    out = result.stdout.str()
    builds = re.findall(r"\[(gw\d+)\] Building Docker image\.\.\.", out)
    assert out.count("Building Docker image...") == len(builds) >= 1, out
    assert len(builds) == len(set(builds)) <= 2, builds
    assert f"cache disabled (use --enable-cache): {len(builds)} builds in " in out


# -- runner, pure -----------------------------------------------------------------------------


def test_container_options_translate_to_the_docker_sdk(tmp_path: Path) -> None:
    kw = container_kwargs(RunOptions(command=["python", "x.py"], env={"A": "1"}, gpus="all", shm_size="8g",
                                     ipc_mode="host", volumes=normalise_volumes({"./data": "/data"}, tmp_path)))
    req = kw["device_requests"][0]
    assert (req["Driver"], req["Count"], req["Capabilities"]) == ("nvidia", -1, [["gpu"]])
    assert kw["shm_size"] == "8g" and kw["ipc_mode"] == "host" and kw["environment"] == {"A": "1"}
    assert kw["volumes"] == [f"{tmp_path / 'data'}:/data:rw"]
    rocm = container_kwargs(RunOptions(rocm=True, devices=["/dev/dri:/dev/dri:rw"]))
    assert rocm["devices"] == ["/dev/dri:/dev/dri:rw", "/dev/kfd:/dev/kfd:rwm"]
    assert rocm["group_add"] == ["video"] and "device_requests" not in rocm
    assert container_kwargs(RunOptions(gpus=2))["device_requests"][0]["Count"] == 2
    assert normalise_volumes(["named:/cache:ro", "/abs:/x"], tmp_path) == ["named:/cache:ro", "/abs:/x:rw"]
    with pytest.raises(ValueError, match="must be absolute"):
        normalise_volumes({"data": "relative"}, tmp_path)


def test_keep_alive_runs_what_docker_run_would_run() -> None:
    """--keep-alive execs the model in a kept container: the image's entrypoint, then the run's command or CMD."""
    config = {"Entrypoint": ["/entry.sh"], "Cmd": ["serve", "--port", "1"]}
    assert model_command(config, None) == ["/entry.sh", "serve", "--port", "1"]
    assert model_command(config, "python 'my script.py'") == ["/entry.sh", "python", "my script.py"]
    assert model_command({"Entrypoint": None, "Cmd": ["sh"]}, ["echo", 3]) == ["echo", "3"]
    assert model_command({}, None) == []
    assert "keep_alive" not in container_kwargs(RunOptions(keep_alive=True))


def test_performance_is_the_last_matching_line() -> None:
    assert parse_performance("performance: 1 a/s\nnoise\n  performance: 2.5e2 tokens/s  \n") == (250.0, "tokens/s")
    assert parse_performance("performance: fast\nno number here") == (None, None)


# -- image service, with a fake store ------------------------------------------------------------


def test_image_service_messages_and_a_save_that_cannot_be_written(tmp_path: Path) -> None:
    """Outcome.warning (cache unwritable at save time): said, warned once, the built image is used."""
    from pytest_madcache.core.key import KeySpec, key_for
    from pytest_madcache.provide import ImageService
    from pytest_madcache.provide import Outcome
    from pytest_madcache.store import Entry, LoadResult

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")

    class Mark:
        args, kwargs = ("m",), {}

    spec = spec_from_marks([Mark()], tmp_path, "t")
    entry = Entry(id="run_1_deadbeef", key="k", image_name="ci-m", image_tag="t", image_id="sha256:" + "cd" * 32,
                  config="sha256:" + "cd" * 32, layers=[], sizes={}, build_duration=42.0)

    class FakeStore:
        log = None
        evicted: list = []
        dir = None

        def entries(self):
            return []

        def entry_files(self, entry_id):
            return None

        def __init__(self) -> None:
            self.outcomes = [Outcome(None, "sha256:" + "ef" * 32, hit=False, build_duration=1.5,
                                     warning="cannot write to the cache directory /c: the disk is full"),
                             Outcome(entry, entry.image_id, hit=True, load=LoadResult("full", 2048, 1, 0.5),
                                     build_duration=42.0)]

        def get_or_build(self, key, build, **kwargs):
            outcome = self.outcomes.pop(0)
            if not outcome.hit:
                build()
            return outcome

    class FakeEngine:
        def inspect(self, ref):
            return None

        def describe(self):
            return "a fake engine"

    said, warned = [], []

    class Listening:  # a Reporter
        say, warn = staticmethod(said.append), staticmethod(warned.append)

    service = ImageService(enabled=True, store_factory=lambda engine, log: FakeStore(), reporter=Listening(),
                           decide=lambda store, key, build, **kw: store.get_or_build(key, build, **kw))
    service._engine = FakeEngine()
    key1 = key_for(KeySpec(image="ci-m", params={"n": 1}))
    key2 = key_for(KeySpec(image="ci-m", params={"n": 2}))
    image, event = service.obtain(spec, key1, "ci-m:aaa", {}, {}, lambda: "sha256:" + "ef" * 32)
    assert image.image_id == "sha256:" + "ef" * 32 and not image.cache_hit and image.cache_id is None
    assert said[0] == "Cache miss. Will build Docker image and save to cache."
    assert "Docker image not saved to cache: cannot write to the cache directory /c: the disk is full" in said
    assert warned == ["cannot write to the cache directory /c: the disk is full; tests go on without the cache"]
    assert event.cached and event.built and not event.hit
    said.clear()
    image, event = service.obtain(spec, key2, "ci-m:bbb", {}, {}, lambda: pytest.fail("a hit must not build"))
    assert image.cache_hit and image.cache_id == "run_1_deadbeef" and image.load == "full"
    assert said[0] == "Cache hit! Loading Docker image from cache: run_1_deadbeef"
    assert said[1].startswith("Docker image loaded from cache successfully: run_1_deadbeef (all layers: 1 layers")
    assert event.entry_build_seconds == 42.0 and event.bytes_loaded == 2048
    assert service.remembered(key2) is image


# What only a test that uses a model needs: reading its mark, its key, its image, its run, the
# comparison with a baseline.  A suite without models imports none of it (bench P6).
MODEL_ONLY_MODULES = ("docker", "pytest_madcache.core.model", "pytest_madcache.core.key",
                      "pytest_madcache.pytest_glue.obtain", "pytest_madcache.engines.runner",
                      "pytest_madcache.perf.compare", "pytest_madcache.provide", "pytest_madcache.store")


def test_a_suite_without_models_never_imports_the_docker_sdk(pytester: pytest.Pytester, tmp_path) -> None:
    """--enable-cache costs a model-less suite nothing it does not use: no engine line, no SDK import
    (~200 ms here), none of the modules that read a model mark, make a key or compare performance."""
    pytester.makeconftest(f'''
import sys

def pytest_unconfigure(config):
    print("imported:", sorted(m for m in {MODEL_ONLY_MODULES!r} if m in sys.modules))
''')
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--enable-cache", "--cache-dir",
                                           str(tmp_path / "c"), "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["imported: []"])
    assert "madcache engine:" not in result.stdout.str()
