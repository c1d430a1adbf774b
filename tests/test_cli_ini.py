"""`madcache` finds pytest's config file as pytest does, and stops quietly when its reader goes away.

No Docker engine is needed: DOCKER_HOST points at a socket that does not exist,
so the `Engine:` part of `madcache stats` answers "none answers" at once.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_madcache import cli
from pytest_madcache.cli import app as climain
from pytest_madcache.core.settings import SettingsError
from pytest_madcache.core.inifile import read_ini_file
from pytest_madcache.store import Store

ROOT = Path(__file__).resolve().parents[1]

# (file name, its text with madcache_max_entries = 7)
FORMATS = [
    # pytest 9 reads pytest.toml and [tool.pytest] with native TOML types, and our keys must be strings there
    ("pytest.toml", "[pytest]\naddopts = ['-q']\nmadcache_max_entries = \"7\"\n"),
    (".pytest.toml", "[pytest]\nmadcache_max_entries = \"7\"\n"),
    ("pytest.ini", "[pytest]\naddopts = -q\nmadcache_max_entries = 7\n"),
    (".pytest.ini", "[pytest]\nmadcache_max_entries = 7\n"),
    ("pyproject.toml", "[project]\nname = 'x'\n\n[tool.pytest.ini_options]\nmadcache_max_entries = 7\n"),
    ("pyproject.toml", "[project]\nname = 'x'\n\n[tool.pytest]\naddopts = ['-q']\nmadcache_max_entries = \"7\"\n"),
    ("tox.ini", "[tox]\nenvlist = py\n\n[pytest]\nmadcache_max_entries = 7\n"),
    ("setup.cfg", "[metadata]\nname = x\n\n[tool:pytest]\nmadcache_max_entries = 7\n"),
]
FORMAT_IDS = ["pytest.toml", ".pytest.toml", "pytest.ini", ".pytest.ini", "pyproject-ini_options",
              "pyproject-tool.pytest", "tox.ini", "setup.cfg"]


@pytest.fixture
def no_engine(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")
    for var in ("MADCACHE_MAX_ENTRIES", "MADCACHE_DIR", "MADENGINE_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)


def _pytest_9_only(path: Path) -> bool:
    """A config file pytest 7.4 and 8 do not read: pytest.toml, .pytest.toml, pyproject's [tool.pytest]."""
    return path.name in ("pytest.toml", ".pytest.toml") or (
        path.name == "pyproject.toml" and "[tool.pytest]" in path.read_text())


def assert_pytest_agrees(directory: Path, expected: Path) -> None:
    """The installed pytest picks the same file (its internal locate_config, tests only).  madcache
    follows pytest 9; under pytest 7.4 and 8, which know neither pytest.toml nor [tool.pytest], the
    installed pytest must not read such a file's settings (it picks another file, or that one
    without keys), and agrees on every other."""
    import inspect

    from _pytest.config.findpaths import locate_config

    if len(inspect.signature(locate_config).parameters) == 1:  # pytest 7.4: locate_config(args)
        found = locate_config([directory])
    else:
        found = locate_config(directory, [directory])
    if pytest.version_tuple < (9,) and _pytest_9_only(expected):
        assert found[1] != expected or not found[2], (pytest.__version__, found[:2])
    elif pytest.version_tuple < (8, 1) and expected.name == "pyproject.toml" and "[tool.pytest" not in expected.read_text():
        assert found[1] is None, (pytest.__version__, found[:2])  # a keyless pyproject is pytest 8.1's fallback
    else:
        assert found[1] == expected, (pytest.__version__, found[:2])


def stats(cwd: Path, cache: Path, monkeypatch) -> tuple:
    monkeypatch.chdir(cwd)
    out = io.StringIO()
    code = cli.main(["stats", "--json", "--cache-dir", str(cache)], env={"HOME": "/nonexistent"}, stdout=out)
    return code, json.loads(out.getvalue()) if out.getvalue() else None


@pytest.mark.parametrize("name, text", FORMATS, ids=FORMAT_IDS)
def test_each_format_is_found_from_a_subdirectory(name, text, tmp_path, monkeypatch, no_engine):
    project = tmp_path / "project"
    sub = project / "src" / "pkg"
    sub.mkdir(parents=True)
    (project / name).write_text(text)
    code, data = stats(sub, tmp_path / "c", monkeypatch)
    assert code == 0
    assert data["max_entries"] == 7
    assert data["engine"].startswith("none answers")
    assert read_ini_file(sub)[1] == str(project / name)
    assert_pytest_agrees(sub, project / name)


@pytest.mark.parametrize(
    "files, winner",
    [
        # pytest 9's per-directory order: pytest.toml, .pytest.toml, pytest.ini, .pytest.ini,
        # pyproject.toml, tox.ini, setup.cfg
        ({"pytest.ini": "[pytest]\nmadcache_max_entries = 3\n",
          "pytest.toml": "[pytest]\nmadcache_max_entries = '7'\n"}, "pytest.toml"),
        ({".pytest.toml": "[pytest]\nmadcache_max_entries = 3\n",
          "pytest.toml": "[pytest]\nmadcache_max_entries = '7'\n"}, "pytest.toml"),
        ({".pytest.ini": "[pytest]\nmadcache_max_entries = 3\n",
          ".pytest.toml": "[pytest]\nmadcache_max_entries = '7'\n"}, ".pytest.toml"),
        ({"pyproject.toml": "[tool.pytest.ini_options]\nmadcache_max_entries = 3\n",
          "pytest.ini": "[pytest]\nmadcache_max_entries = 7\n"}, "pytest.ini"),
        ({"tox.ini": "[pytest]\nmadcache_max_entries = 3\n",
          "pyproject.toml": "[tool.pytest]\nmadcache_max_entries = '7'\n"}, "pyproject.toml"),
        # a pytest.ini without [pytest] still wins, with no keys (pytest takes it as the config file)
        ({"pytest.ini": "[other]\nx = 1\n", "tox.ini": "[pytest]\nmadcache_max_entries = 3\n"}, "pytest.ini"),
        # tox.ini without [pytest] is passed over for setup.cfg's [tool:pytest]
        ({"tox.ini": "[tox]\nenvlist = py\n", "setup.cfg": "[tool:pytest]\nmadcache_max_entries = 7\n"}, "setup.cfg"),
    ],
    ids=["pytest.toml-over-pytest.ini", "pytest.toml-over-.pytest.toml", ".pytest.toml-over-.pytest.ini", "pytest.ini-over-pyproject", "pyproject-over-tox.ini",
         "sectionless-pytest.ini-wins", "tox.ini-without-section-skipped"],
)
def test_the_file_pytest_picks_wins(files, winner, tmp_path, monkeypatch, no_engine):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    code, data = stats(tmp_path, tmp_path / "c", monkeypatch)
    assert code == 0
    assert data["max_entries"] == (5 if winner == "pytest.ini" and "[other]" in files[winner] else 7)
    assert read_ini_file(tmp_path)[1] == str(tmp_path / winner)
    assert_pytest_agrees(tmp_path, tmp_path / winner)


def test_pyproject_without_a_pytest_table_is_skipped_for_a_parent_pytest_ini(tmp_path, monkeypatch, no_engine):
    (tmp_path / "pytest.ini").write_text("[pytest]\nmadcache_max_entries = 7\n")
    inner = tmp_path / "inner"
    (inner / "deeper").mkdir(parents=True)
    (inner / "pyproject.toml").write_text("[project]\nname = 'x'\n\n[tool.black]\nline-length = 100\n")
    code, data = stats(inner / "deeper", tmp_path / "c", monkeypatch)
    assert code == 0 and data["max_entries"] == 7
    assert read_ini_file(inner / "deeper")[1] == str(tmp_path / "pytest.ini")
    assert_pytest_agrees(inner / "deeper", tmp_path / "pytest.ini")


def test_only_a_pyproject_without_pytest_table_is_the_config_file_without_keys(tmp_path):
    """As pytest reports `configfile: pyproject.toml` when nothing else qualifies."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert read_ini_file(tmp_path) == ({}, str(tmp_path / "pyproject.toml"))
    assert_pytest_agrees(tmp_path, tmp_path / "pyproject.toml")


@pytest.mark.parametrize("name, text", [
    ("pytest.toml", "[pytest]\nmadcache_max_entries = 'many'\n"),
    ("setup.cfg", "[tool:pytest]\nmadcache_max_entries = many\n"),
    ("pyproject.toml", "[tool.pytest]\nmadcache_max_entries = 'many'\n"),
], ids=["pytest.toml", "setup.cfg", "pyproject-tool.pytest"])
def test_a_bad_value_names_value_file_and_key(name, text, tmp_path, monkeypatch, capsys, no_engine):
    (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit) as exc:
        stats(tmp_path, tmp_path / "c", monkeypatch)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid value 'many' for max entries" in err
    assert f"ini key madcache_max_entries in {tmp_path / name}" in err


@pytest.mark.parametrize("name, text, words", [
    ("pyproject.toml", "[tool.pytest]\naddopts = ['-q']\n\n[tool.pytest.ini_options]\nmadcache_max_entries = 7\n",
     "both [tool.pytest] and [tool.pytest.ini_options]"),
    ("setup.cfg", "[pytest]\nmadcache_max_entries = 7\n", "[tool:pytest]"),
    ("pytest.toml", "[pytest\nmadcache_max_entries = 7\n", "cannot read"),
])
def test_files_pytest_refuses_are_errors_naming_the_file(name, text, words, tmp_path):
    (tmp_path / name).write_text(text)
    with pytest.raises(SettingsError) as exc:
        read_ini_file(tmp_path)
    assert str(tmp_path / name) in str(exc.value) and words in str(exc.value)


@pytest.mark.parametrize("name, text, value, table, fix", [
    ("pytest.toml", "[pytest]\nmadcache_max_entries = 7\n", "7 for ini key madcache_max_entries", "[pytest]",
     'madcache_max_entries = "7"'),
    (".pytest.toml", "[pytest]\nmadcache_shared = true\n", "True for ini key madcache_shared", "[pytest]",
     'madcache_shared = "true"'),
    ("pyproject.toml", "[tool.pytest]\nmadcache_max_size_gb = 0.5\n", "0.5 for ini key madcache_max_size_gb",
     "[tool.pytest]", 'madcache_max_size_gb = "0.5"'),
])
def test_native_toml_values_pytest_refuses_are_refused(name, text, value, table, fix, tmp_path, monkeypatch, capsys,
                                                       no_engine):
    """pytest 9 stops with "expects a string" on these (our keys are string ini options): so does madcache."""
    (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit) as exc:
        stats(tmp_path, tmp_path / "c", monkeypatch)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"invalid value {value} in {tmp_path / name}: pytest reads {table} with native TOML types" in err
    assert f"write {fix}" in err


def test_ini_options_keeps_accepting_native_values(tmp_path, monkeypatch, no_engine):
    """[tool.pytest.ini_options] is ini mode: pytest turns scalars into strings, so 7 is fine there."""
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\nmadcache_max_entries = 7\n")
    assert stats(tmp_path, tmp_path / "c", monkeypatch)[1]["max_entries"] == 7


def test_ini_keys_are_case_sensitive_as_in_pytest(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\nMADCACHE_MAX_ENTRIES = 7\nmadcache_ttl = 1d\n")
    assert read_ini_file(tmp_path)[0] == {"madcache_ttl": "1d"}


# -- a reader that goes away ------------------------------------------------------


def fake_cache(directory: Path, n: int) -> Path:
    """A cache of `n` entries sharing one config blob, written without an engine."""
    store = Store(directory)
    blob = b"config"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    (store.blob_dir / digest[7:]).write_bytes(blob)
    for i in range(n):
        entry_id = f"run_{1700000000 + i}_{i:08x}"
        (store.entry_dir / entry_id).mkdir()
        meta = {"id": entry_id, "key": f"{i:064x}", "image_name": f"ci-model-{i}", "image_tag": "latest",
                "image_id": digest, "config": digest, "layers": [], "sizes": {digest: len(blob)},
                "repo_tags": [f"ci-model-{i}:latest"], "model_tags": ["resnet", "bert"], "created": 1.0 + i}
        (store.entry_dir / entry_id / "meta.json").write_text(json.dumps(meta))
    return directory


def test_list_into_a_closed_pipe_exits_quietly(tmp_path):
    """`madcache list | head -1`: no traceback, no "Exception ignored", exit 141 as if killed by SIGPIPE."""
    cache = fake_cache(tmp_path / "c", 600)  # about 450 KB of listing, far more than a pipe holds
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": "/nonexistent"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pytest_madcache.cli import main; sys.exit(main())",
         "list", "--cache-dir", str(cache)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
    )
    try:
        first = proc.stdout.readline()
        proc.stdout.close()  # the reader goes away while the writer still has most of the listing
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert first == b"600 cache entries:\n"
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    assert code == climain.EXIT_BROKEN_PIPE == 141


class _ClosedPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_broken_output_stream_returns_141_in_process(tmp_path, no_engine, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["list", "--cache-dir", str(fake_cache(tmp_path / "c", 2))], env={}, stdout=_ClosedPipe())
    assert code == 141


def test_a_broken_pipe_elsewhere_is_not_taken_for_the_reader(tmp_path, monkeypatch, no_engine):
    """A BrokenPipeError from, say, an engine's socket is a real error, not a reader gone away."""
    def broken(*args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setitem(climain.COMMANDS, "list", broken)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BrokenPipeError):
        cli.main(["list", "--cache-dir", str(tmp_path / "c")], env={}, stdout=io.StringIO())
