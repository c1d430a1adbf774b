"""Bad input: every bad value is an error naming the value and where it came from, exits non-zero,
and leaves the cache exactly as it was (the tree is hashed before and after)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_madcache.store import Store
from tests.plugin_helpers import FAKE_HOOKS

ROOT = Path(__file__).resolve().parents[1]


def tree_hash(directory: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        h.update(f"{path.relative_to(directory)}|{st.st_mode:o}|{st.st_size}|{st.st_mtime_ns}|".encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A cache with one (fake) entry in it."""
    import json

    d = tmp_path / "cache"
    store = Store(d)
    blob = b"config"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    (store.blob_dir / digest[7:]).write_bytes(blob)
    entry_id = "run_1700000000_0123abcd"
    (store.entry_dir / entry_id).mkdir()
    meta = {"id": entry_id, "key": "ab" * 32, "image_name": "ci-x", "image_tag": "t", "image_id": digest,
            "config": digest, "layers": [], "sizes": {digest: len(blob)}, "repo_tags": ["ci-x:t"], "created": 1.0}
    (store.entry_dir / entry_id / "meta.json").write_text(json.dumps(meta))
    (store.entry_dir / entry_id / "used").touch()
    assert [e.id for e in Store(d).entries()] == [entry_id]
    return d


CLI_CASES = [
    # argv, env, words the message must contain
    (["prune", "--max-entries", "-1"], {}, ["'-1'", "option --max-entries"]),
    (["prune", "--max-entries", "many"], {}, ["'many'", "option --max-entries"]),
    (["list", "--cache-max-size-gb", "-5"], {}, ["'-5'", "option --cache-max-size-gb"]),
    (["list", "--cache-max-size-gb", "lots"], {}, ["'lots'", "option --cache-max-size-gb"]),
    (["prune", "--ttl", "5y"], {}, ["'5y'", "option --ttl", "units s, m, h, d, w"]),
    (["list", "--cache-ttl", "forever"], {}, ["'forever'", "option --cache-ttl"]),
    (["info", "run_1_doesnotexist"], {}, ["Cache entry 'run_1_doesnotexist' not found", "madcache list"]),
    (["evict", "run_1_doesnotexist"], {}, ["Cache entry 'run_1_doesnotexist' not found"]),
    (["list"], {"MADCACHE_MAX_ENTRIES": "abc"}, ["'abc'", "environment variable MADCACHE_MAX_ENTRIES"]),
    (["list"], {"MADCACHE_MAX_SIZE_GB": "0"}, ["'0'", "environment variable MADCACHE_MAX_SIZE_GB"]),
    (["list"], {"MADCACHE_TTL": "3 fortnights"}, ["'3 fortnights'", "environment variable MADCACHE_TTL"]),
    (["list"], {"MADCACHE_ENABLED": "maybe"}, ["'maybe'", "environment variable MADCACHE_ENABLED"]),
    (["list"], {"MADCACHE_SHARED": "perhaps"}, ["'perhaps'", "environment variable MADCACHE_SHARED"]),
    (["list"], {"MADENGINE_CACHE_MAX_SIZE_GB": "x"}, ["'x'", "environment variable MADENGINE_CACHE_MAX_SIZE_GB"]),
    (["key", "--image", "x", "--additional-context", "{'a':"], {},
     ["invalid value \"{'a':\" for --additional-context from option --additional-context"]),
]


@pytest.mark.parametrize("argv,env,words", CLI_CASES, ids=[" ".join(c[0]) + " " + " ".join(c[1]) for c in CLI_CASES])
def test_cli_bad_input(cache: Path, tmp_path: Path, argv, env, words) -> None:
    before = tree_hash(cache)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MADCACHE_", "MADENGINE_"))}
    full_env.update(env, MADCACHE_DIR=str(cache))
    proc = subprocess.run([sys.executable, "-m", "pytest_madcache", *argv], env=full_env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=60)
    message = proc.stderr + proc.stdout
    assert proc.returncode != 0, message
    for word in words:
        assert word in message, message
    assert "Traceback" not in message
    assert tree_hash(cache) == before


PLUGIN_CASES = [
    (["--additional-context", "{'guest_os': "], {}, ["{'guest_os': ", "option --additional-context"]),
    (["--additional-context", "[1, 2]"], {}, ["'[1, 2]'", "from option --additional-context: expected a dict"]),
    (["--additional-context", "{1: 'x'}"], {},
     ["\"{1: 'x'}\"", "from option --additional-context: keys must be strings"]),
    ([], {"MADCACHE_ADDITIONAL_CONTEXT": "[]"}, ["'[]'", "environment variable MADCACHE_ADDITIONAL_CONTEXT"]),
    ([], {"MADCACHE_KEEP_ALIVE": "later"}, ["'later'", "for --keep-alive from environment variable "
                                                     "MADCACHE_KEEP_ALIVE"]),
    (["--cache-max-entries", "-3"], {}, ["'-3'", "option --cache-max-entries"]),
    (["--cache-max-entries", "ten"], {}, ["'ten'", "option --cache-max-entries"]),
    (["--cache-max-size-gb", "nan"], {}, ["'nan'", "option --cache-max-size-gb"]),
    (["--cache-ttl", "10y"], {}, ["'10y'", "option --cache-ttl"]),
    (["--from-cache", "run_1_nothere"], {}, ["Cache entry 'run_1_nothere' not found", "run_1700000000_0123abcd"]),
    ([], {"MADCACHE_TTL": "2 days"}, ["'2 days'", "environment variable MADCACHE_TTL"]),
    ([], {"MADCACHE_MAX_ENTRIES": "-1"}, ["'-1'", "environment variable MADCACHE_MAX_ENTRIES"]),
    ([], {"MADCACHE_ENABLED": "sure"}, ["'sure'", "environment variable MADCACHE_ENABLED"]),
]


@pytest.mark.parametrize("args,env,words", PLUGIN_CASES, ids=[" ".join(c[0]) + " ".join(c[1]) for c in PLUGIN_CASES])
def test_plugin_bad_options(pytester: pytest.Pytester, cache: Path, monkeypatch, args, env, words) -> None:
    pytester.makeconftest(FAKE_HOOKS)
    (pytester.path / "Dockerfile").write_text("FROM scratch\n")
    pytester.makepyfile("import pytest\n\n@pytest.mark.model('m')\ndef test_m(model_image):\n    pass\n")
    for k in list(os.environ):
        if k.startswith(("MADCACHE_", "MADENGINE_")):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    before = tree_hash(cache)
    # A flag wins over the environment (the lower-precedence value is then not read): leave it out here.
    enable = [] if "MADCACHE_ENABLED" in env else ["--enable-cache"]
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *enable, f"--cache-dir={cache}", *args)
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    for word in words:
        assert word in out, out
    assert tree_hash(cache) == before


def test_plugin_bad_ini_value_names_the_file(pytester: pytest.Pytester, cache: Path) -> None:
    pytester.makeini("[pytest]\nmadcache_ttl = 3 parsecs\n")
    before = tree_hash(cache)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--enable-cache", f"--cache-dir={cache}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (f"invalid value '3 parsecs' for ttl from ini key madcache_ttl in {pytester.path / 'tox.ini'}: "
            in result.stderr.str())
    assert tree_hash(cache) == before


MARK_CASES = {
    # the mark's keyword as written, the message after "test_marks.py::test_bad: " (the value in it)
    "nodes_wrong_type": ('nodes="two"', "nodes='two' must be a whole number >= 1"),
    "tags_wrong_type": ("tags=[1, 2]", "tags=[1, 2] must be a string or a list of strings"),
    "build_args_wrong_type": ('build_args=["A=1"]', "build_args=['A=1'] must be a dict"),
    "timeout_negative": ("timeout=-1", "timeout=-1 must be a number of seconds > 0"),
    "unknown_keyword": ("dockerfil='Dockerfile'", "@pytest.mark.model got unknown keyword argument(s) dockerfil"),
    "missing_dockerfile": ('dockerfile="Dockerfile.missing"',
                           "Dockerfile '{project}/Dockerfile.missing' of model 'm' does not exist"),
    "missing_context": ('context="nope"', "build context '{project}/nope' of model 'm' is not a directory"),
    "context_outside_project": ('context="{outside}"', "build context '{outside}' of model 'm' is outside the "
                                                       "project (the pytest rootdir '{project}')"),
    "dockerfile_outside_project": ('dockerfile="{outside}/Dockerfile"',
                                   "build context '{outside}' of model 'm' is outside the project"),
    "name_missing": ("", "@pytest.mark.model needs a model name (a non-empty string), got None"),
}


@pytest.mark.parametrize("case", list(MARK_CASES))
def test_bad_mark_arguments_error_naming_the_test(pytester: pytest.Pytester, cache: Path, tmp_path: Path, case) -> None:
    pytester.makeconftest(FAKE_HOOKS)
    (pytester.path / "Dockerfile").write_text("FROM scratch\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "Dockerfile").write_text("FROM scratch\n")
    kwargs, expected = MARK_CASES[case]
    kwargs = kwargs.replace("{outside}", str(outside))
    expected = expected.replace("{outside}", str(outside)).replace("{project}", str(pytester.path))
    name = "" if case == "name_missing" else "'m'" + (", " if kwargs else "")
    pytester.makepyfile(test_marks=f"""
        import pytest

        @pytest.mark.model({name}{kwargs})
        def test_bad(model_image):
            pass
    """)
    pytester.makeini("[pytest]\n")  # rootdir = the test project
    before = tree_hash(cache)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--enable-cache", f"--cache-dir={cache}")
    out = result.stdout.str()
    assert result.ret != 0
    assert f"test_marks.py::test_bad: {expected}" in out, out
    assert tree_hash(cache) == before


def test_a_toml_number_for_an_ini_key_is_a_usage_error_naming_key_and_file(pytester: pytest.Pytester) -> None:
    """pytest 9 reads pytest.toml with TOML types and refuses a number for a string key with a bare
    TypeError; the plugin turns it into a usage error that says how to write it.  pytest 7.4 and 8
    do not read pytest.toml at all: there the run goes on, and nothing mentions the key."""
    pytester.makefile(".toml", pytest="[pytest]\nmadcache_max_entries = 7\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    if pytest.version_tuple < (9,):
        assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
        result.assert_outcomes(passed=1)
        assert "madcache_max_entries" not in result.stdout.str() + result.stderr.str()
        return
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "INTERNALERROR" not in err + result.stdout.str()
    assert f"invalid value for ini key madcache_max_entries in {pytester.path / 'pytest.toml'}: " in err
    assert "got int: 7" in err  # the value, as pytest reports it
    assert 'write madcache_max_entries = "..." (quoted)' in err
