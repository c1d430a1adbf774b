"""Hits where users expect them, on a real engine: the suites a new user writes hit on their second
run with default settings, and every miss names what changed."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest

from tests.plugin_helpers import remove_images, tiny_context

pytestmark = pytest.mark.engine

SINCE = r"since (run_\d+_[0-9a-f]{8})"


@pytest.fixture
def base(engine, tmp_path):
    """A base image of our own (no registry here), removed afterwards with every image built on it."""
    tag = f"madcache-hits-base-{secrets.token_hex(3)}:1"
    engine.build(tiny_context(tmp_path / "base"), tag=tag, labels={"madcache.test": tag})
    yield tag
    for model in ("sweep", "why", "df", *(f"m{n}" for n in range(1, 8))):  # this module's models only: other
        remove_images(engine, f"madcache.model={model}")                   # tests' images may be in use
    remove_images(engine, f"madcache.test={tag}")


def _run(pytester: pytest.Pytester, cache: Path, *args: str) -> tuple:
    summary = pytester.path / "summary.json"
    result = pytester.runpytest_subprocess("--enable-cache", f"--cache-dir={cache}",
                                           f"--cache-summary-json={summary}", *args)
    return result, json.loads(summary.read_text())


def test_a_batch_size_sweep_with_context_dot_builds_once_and_hits(pytester, base, tmp_path) -> None:
    """The README's shape, written as a new user would: context=".", pytest's cache on, --output inside."""
    suite = pytester.mkdir("suite")  # pytester keeps its own stdout and stderr files next to the test file
    (suite / "pytest.ini").write_text("[pytest]\n")  # the suite's rootdir: .pytest_cache lands in the context
    (suite / "Dockerfile").write_text(f"FROM {base}\nCOPY . /app\n"
                                      'CMD ["sh", "-c", "echo performance: $BATCH_SIZE samples/s"]\n')
    (suite / "test_sweep.py").write_text('''
import pytest

@pytest.mark.model("sweep", context=".")
@pytest.mark.parametrize("batch_size", [1, 2, 4, 8, 16, 32])
def test_sweep(model_run, batch_size):
    assert model_run(env={"BATCH_SIZE": str(batch_size)}).performance == batch_size
''')
    cache = tmp_path / "cache"
    first, s1 = _run(pytester, cache, "suite", "--output=suite/results.csv")
    first.assert_outcomes(passed=6)
    assert (s1["misses"], s1["builds"], s1["reused"]) == (1, 1, 5)
    assert len(list((cache / "entries").iterdir())) == 1
    assert (suite / ".pytest_cache").is_dir() and (suite / "results.csv").is_file()
    second, s2 = _run(pytester, cache, "suite", "--output=suite/results.csv")
    second.assert_outcomes(passed=6)
    assert (s2["hits"], s2["misses"], s2["builds"]) == (1, 0, 0)
    assert all(row["cache_hit"] == "yes" for row in _csv(suite / "results.csv"))


def test_seven_models_with_five_entries_keep_hitting_and_say_what_to_raise(pytester, base, tmp_path) -> None:
    for n in range(1, 8):
        (pytester.path / f"m{n}").mkdir()
        (pytester.path / f"m{n}" / "Dockerfile").write_text(f"FROM {base}\nLABEL model=m{n}\n")
    pytester.makepyfile(test_seven="import pytest\n" + "".join(
        f'\n@pytest.mark.model("m{n}", context="m{n}")\ndef test_m{n}(model_image):\n    pass\n' for n in range(1, 8)))
    cache = tmp_path / "cache"
    hits = []
    # the third under -W error: the limits' warning must not end the session (pytest-benchmark, where
    # installed, warns in an xdist worker's subprocess that it is off: not ours to turn into an error)
    strict = ["-W", "error", "-W", "ignore:Benchmarks are automatically disabled"]
    for n in range(3):
        result, summary = _run(pytester, cache, "--cache-max-entries=5", *(strict if n == 2 else []))
        result.assert_outcomes(passed=7)
        hits.append(summary["hits"])
        assert len(list((cache / "entries").iterdir())) == 5
    assert hits[0] == 0 and hits[1] >= 4 and hits[2] >= hits[1]
    out = result.stdout.str()
    assert "this suite needs 7 entries, but the cache keeps 5 (option --cache-max-entries): raise " \
           "--cache-max-entries to 7" in out
    assert any("raise --cache-max-entries to 7" in w for w in summary["warnings"])
    assert "evicted in this session: 2 entries" in out


def test_each_miss_names_what_changed(pytester, engine, base, tmp_path, monkeypatch) -> None:
    """An edited context file, an edited Dockerfile, a changed build arg, a changed key param and a
    rebuilt base: each miss's line names the component and what in it changed."""
    model = pytester.path / "m"
    (model / "data").mkdir(parents=True)
    (model / "data" / "train.txt").write_text("v1\n")
    (model / "Dockerfile").write_text(f"FROM {base}\nARG PRECISION\nCOPY . /app\n")
    pytester.makepyfile(test_why='''
import os
import pytest

@pytest.mark.model("why", context="m", build_args={"PRECISION": "{precision}"}, key_params=["seed"],
                   base_key="local")
@pytest.mark.parametrize("precision", [os.environ.get("PREC", "fp16")])
@pytest.mark.parametrize("seed", [int(os.environ.get("SEED", "1"))])
def test_why(model_image, precision, seed):
    pass
''')
    cache = tmp_path / "cache"

    def miss(**env: str) -> str:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        result, summary = _run(pytester, cache)
        result.assert_outcomes(passed=1)
        assert summary["misses"] == 1
        lines = [line for line in result.outlines if line.startswith("Cache miss (")]
        assert len(lines) == 1 and summary["images"][0]["miss_reason"] == lines[0]
        return lines[0]

    assert miss() == "Cache miss (no entry of model 'why' in the cache yet)"
    (model / "data" / "train.txt").write_text("v2\n")
    assert re.fullmatch(rf"Cache miss \(context changed {SINCE}: ~data/train.txt; add generated files to "
                        r"\.dockerignore\)", miss())
    (model / "Dockerfile").write_text(f"FROM {base}\nARG PRECISION\nCOPY . /app\nENV EXTRA=1\n")
    assert re.fullmatch(rf"Cache miss \(Dockerfile changed {SINCE}: 1 line\)", miss())
    assert re.fullmatch(rf"Cache miss \(build args changed {SINCE}: PRECISION fp16 -> fp32\)", miss(PREC="fp32"))
    assert re.fullmatch(rf"Cache miss \(params changed {SINCE}: seed 1 -> 2\)", miss(SEED="2"))
    old = engine.inspect(base).id
    engine.build(tiny_context(tmp_path / "base2", ["ENV REBUILT=1"]), tag=base, labels={"madcache.test": base})
    new = engine.inspect(base).id
    line = miss()
    assert re.fullmatch(rf"Cache miss \(base images changed {SINCE}: {re.escape(base)} .+ -> .+\)", line), line
    assert old[:19] in line and new[:19] in line


@pytest.mark.parametrize("where", ["docker/model.Dockerfile", "../elsewhere/Dockerfile"])
def test_a_dockerfile_beside_or_outside_the_context_builds_without_the_sessions_files(pytester, base, tmp_path,
                                                                                       where) -> None:
    """The context packed here (and sent to BuildKit on stdin) with the Dockerfile wherever the mark puts it."""
    suite = pytester.mkdir("suite")
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "data.txt").write_text("data\n")
    dockerfile = (suite / where).resolve()
    dockerfile.parent.mkdir(parents=True, exist_ok=True)
    dockerfile.write_text(f"FROM {base}\nCOPY . /app\nCMD [\"sh\", \"-c\", \"ls -a /app; echo performance: 1 x/s\"]\n")
    (suite / "test_df.py").write_text(f'''
import pytest

@pytest.mark.model("df", context=".", dockerfile={str(dockerfile)!r})
def test_df(model_run):
    logs = model_run().logs
    assert "data.txt" in logs and "results.csv" not in logs and ".pytest_cache" not in logs, logs
''')
    if where.startswith(".."):  # a Dockerfile outside the project: the rootdir is their common parent
        (suite / "pytest.ini").unlink()
        (pytester.path / "pytest.ini").write_text("[pytest]\n")
    cache = tmp_path / "cache"
    for n in range(2):
        result, summary = _run(pytester, cache, "suite", "--output=suite/results.csv")
        result.assert_outcomes(passed=1)
        assert (summary["hits"], summary["misses"]) == ((0, 1) if n == 0 else (1, 0))


def _csv(path: Path) -> list:
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
