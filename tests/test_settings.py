"""Settings: one resolver, flag > environment > ini/pyproject > default, and errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_madcache.core.settings import (
    SettingsError,
    default_cache_dir,
    format_ttl,
    parse_ttl,
    read_ini_file,
    resolve,
)


def test_defaults_when_nothing_is_given(tmp_path: Path) -> None:
    """With no flag, variable or ini key every option has its documented default."""
    s = resolve(env={"HOME": str(tmp_path)})
    assert (s.enabled, s.max_entries, s.max_size_gb, s.ttl) == (False, 5, 100.0, None)
    assert s.max_size_bytes == 100 * 1024**3
    assert all(s.source(name) == "default" for name in ("enabled", "dir", "max_entries", "max_size_gb", "ttl"))


def test_default_dir_follows_xdg(tmp_path: Path) -> None:
    """The default directory is $XDG_CACHE_HOME/madcache, else ~/.cache/madcache."""
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "madcache"
    assert default_cache_dir({}) == Path("~/.cache/madcache").expanduser()
    # A relative XDG_CACHE_HOME is invalid per the spec and ignored.
    assert default_cache_dir({"XDG_CACHE_HOME": "relative"}) == Path("~/.cache/madcache").expanduser()
    assert resolve(env={"XDG_CACHE_HOME": str(tmp_path)}).dir == tmp_path / "madcache"


def test_precedence_flag_over_env_over_ini_over_default() -> None:
    """Each level overrides the ones below it, and the source is recorded."""
    ini = {"madcache_max_entries": "3", "madcache_ttl": "7d", "madcache_max_size_gb": "2"}
    env = {"MADCACHE_MAX_ENTRIES": "4", "MADCACHE_TTL": "48h"}
    flags = {"max_entries": "9"}

    s = resolve(flags=flags, env=env, ini=ini, ini_source="pytest.ini")
    assert s.max_entries == 9 and s.source("max_entries") == "option --cache-max-entries"
    assert s.ttl == 48 * 3600 and s.source("ttl") == "environment variable MADCACHE_TTL"
    assert s.max_size_gb == 2.0 and s.source("max_size_gb") == "ini key madcache_max_size_gb in pytest.ini"
    assert s.enabled is False and s.source("enabled") == "default"

    assert resolve(env=env, ini=ini).max_entries == 4
    assert resolve(env={}, ini=ini).max_entries == 3
    assert resolve(env={}).max_entries == 5


def test_flags_accept_argparse_dest_names() -> None:
    """Flags may be given by option name or by argparse dest (`madcache_<name>`); None means not given."""
    assert resolve(flags={"madcache_max_entries": "7"}, env={}).max_entries == 7
    assert resolve(flags={"max_entries": None}, env={"MADCACHE_MAX_ENTRIES": "6"}).max_entries == 6


def test_enable_switch_and_bool_values() -> None:
    """The switch and the bool variables accept 1/0, true/false, yes/no, on/off in any case."""
    assert resolve(flags={"enabled": "1"}, env={"MADCACHE_ENABLED": "0"}).enabled is True
    for text in ("1", "true", "YES", "On"):
        assert resolve(env={"MADCACHE_ENABLED": text}).enabled is True
    for text in ("0", "false", "No", "off"):
        assert resolve(env={"MADCACHE_ENABLED": text}).enabled is False
    assert resolve(env={}, ini={"madcache_enabled": True}).enabled is True


def test_madengine_variables_are_honoured(tmp_path: Path) -> None:
    """madengine's MADENGINE_CACHE_* variables work; ours win when both are set."""
    env = {
        "MADENGINE_CACHE_DIR": str(tmp_path / "me"),
        "MADENGINE_CACHE_ENABLED": "true",
        "MADENGINE_CACHE_MAX_SIZE_GB": "1.5",
    }
    s = resolve(env=env)
    assert s.dir == tmp_path / "me" and s.source("dir") == "environment variable MADENGINE_CACHE_DIR"
    assert s.enabled is True
    assert s.max_size_gb == 1.5 and s.max_size_bytes == int(1.5 * 1024**3)

    both = dict(env, MADCACHE_DIR=str(tmp_path / "ours"), MADCACHE_MAX_SIZE_GB="3")
    s = resolve(env=both)
    assert s.dir == tmp_path / "ours" and s.source("dir") == "environment variable MADCACHE_DIR"
    assert s.max_size_gb == 3.0


def test_dir_expands_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`~` in a directory value is expanded."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve(env={"MADCACHE_DIR": "~/c"}).dir == tmp_path / "c"


@pytest.mark.parametrize(
    "text, seconds",
    [("30m", 1800), ("48h", 172800), ("7d", 604800), ("2w", 1209600), ("90s", 90), ("1.5h", 5400),
     (" 7D ", 604800), ("off", None), ("OFF", None), ("none", None), ("0", None), ("", None)],
)
def test_parse_ttl(text: str, seconds) -> None:
    """TTLs take s/m/h/d/w units; off/none/0 disable expiry."""
    assert parse_ttl(text) == seconds


def test_format_ttl_round_trips() -> None:
    """format_ttl prints the largest whole unit, and parse_ttl reads it back."""
    for text in ("30m", "48h", "7d", "2w", "90s", "1.5h", "off"):
        assert parse_ttl(format_ttl(parse_ttl(text))) == parse_ttl(text)
    assert (format_ttl(parse_ttl("48h")), format_ttl(parse_ttl("7d")), format_ttl(parse_ttl("30m"))) == ("2d", "1w", "30m")
    assert format_ttl(3600) == "1h"


@pytest.mark.parametrize(
    "env, value, source",
    [
        ({"MADCACHE_MAX_ENTRIES": "lots"}, "'lots'", "environment variable MADCACHE_MAX_ENTRIES"),
        ({"MADCACHE_MAX_ENTRIES": "-2"}, "'-2'", "environment variable MADCACHE_MAX_ENTRIES"),
        ({"MADCACHE_MAX_ENTRIES": "0"}, "'0'", "environment variable MADCACHE_MAX_ENTRIES"),
        ({"MADCACHE_MAX_SIZE_GB": "-1"}, "'-1'", "environment variable MADCACHE_MAX_SIZE_GB"),
        ({"MADCACHE_MAX_SIZE_GB": "nan"}, "'nan'", "environment variable MADCACHE_MAX_SIZE_GB"),
        ({"MADENGINE_CACHE_MAX_SIZE_GB": "big"}, "'big'", "environment variable MADENGINE_CACHE_MAX_SIZE_GB"),
        ({"MADCACHE_TTL": "3y"}, "'3y'", "environment variable MADCACHE_TTL"),
        ({"MADCACHE_TTL": "-5m"}, "'-5m'", "environment variable MADCACHE_TTL"),
        ({"MADCACHE_ENABLED": "maybe"}, "'maybe'", "environment variable MADCACHE_ENABLED"),
        ({"MADENGINE_CACHE_ENABLED": "si"}, "'si'", "environment variable MADENGINE_CACHE_ENABLED"),
    ],
)
def test_bad_env_value_names_value_and_source(env, value, source) -> None:
    """A bad environment value fails with a SettingsError naming the value and the variable."""
    with pytest.raises(SettingsError) as info:
        resolve(env=env)
    assert value in str(info.value)
    assert source in str(info.value)


def test_bad_flag_and_ini_values_name_their_source() -> None:
    """Flags and ini keys are named too, including the ini file."""
    with pytest.raises(SettingsError, match=r"'x'.*option --cache-max-entries"):
        resolve(flags={"max_entries": "x"}, env={})
    with pytest.raises(SettingsError, match=r"'soon'.*ini key madcache_ttl in /p/pyproject.toml"):
        resolve(env={}, ini={"madcache_ttl": "soon"}, ini_source="/p/pyproject.toml")


def test_a_bad_lower_level_is_ignored_when_a_higher_one_wins() -> None:
    """Only the value actually used is parsed: a bad ini value under a good flag does not fail."""
    s = resolve(flags={"ttl": "30m"}, env={}, ini={"madcache_ttl": "garbage"})
    assert s.ttl == 1800


def test_read_ini_file_pytest_ini(tmp_path: Path) -> None:
    """pytest.ini's [pytest] section is found from a subdirectory, and only madcache_* keys are read."""
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\naddopts = -q\nmadcache_max_entries = 3\nmadcache_ttl = 7d\n"
    )
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    values, source = read_ini_file(sub)
    assert values == {"madcache_max_entries": "3", "madcache_ttl": "7d"}
    assert source == str(tmp_path / "pytest.ini")
    s = resolve(env={}, ini=values, ini_source=source)
    assert (s.max_entries, s.ttl) == (3, 7 * 86400)
    assert s.source("ttl") == f"ini key madcache_ttl in {tmp_path / 'pytest.ini'}"


def test_read_ini_file_pyproject(tmp_path: Path) -> None:
    """pyproject.toml's [tool.pytest.ini_options] is read with TOML types."""
    (tmp_path / "pyproject.toml").write_text(
        "[project]\nname = 'x'\n\n[tool.pytest.ini_options]\nmadcache_max_size_gb = 0.5\n"
        "madcache_enabled = true\nmarkers = ['a']\n"
    )
    values, source = read_ini_file(tmp_path)
    assert values == {"madcache_max_size_gb": 0.5, "madcache_enabled": True}
    assert source == str(tmp_path / "pyproject.toml")
    s = resolve(env={}, ini=values, ini_source=source)
    assert s.max_size_gb == 0.5 and s.enabled is True


def test_read_ini_file_nearest_wins_and_pyproject_without_section_is_skipped(tmp_path: Path) -> None:
    """The nearest file with a pytest section wins; a pyproject.toml without one is passed over."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nmadcache_max_entries = 2\n")
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    values, source = read_ini_file(inner)
    assert values == {"madcache_max_entries": "2"} and source == str(tmp_path / "pytest.ini")

    (inner / "pytest.ini").write_text("[pytest]\nmadcache_max_entries = 8\n")
    assert read_ini_file(inner)[0] == {"madcache_max_entries": "8"}


def test_read_ini_file_bad_toml_names_the_file(tmp_path: Path) -> None:
    """A pyproject.toml that is not TOML fails with a SettingsError naming the file."""
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options\nmadcache_ttl = \n")
    with pytest.raises(SettingsError, match="pyproject.toml"):
        read_ini_file(tmp_path)


def test_empty_environment_values_count_as_unset():
    """CI templates pass empty inputs through `env:`; an empty value must not be an error."""
    settings = resolve({}, {"MADCACHE_MAX_ENTRIES": "", "MADCACHE_TTL": " ", "MADCACHE_DIR": "",
                            "MADENGINE_CACHE_DIR": "/from/madengine"}, {"madcache_max_entries": "7"})
    assert settings.max_entries == 7 and settings.source("max_entries").startswith("ini key")
    assert settings.ttl is None
    assert str(settings.dir) == "/from/madengine"
