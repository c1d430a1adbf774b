"""The house in layers: what the tree promises (docs/architecture.md) holds in the code.

The layer rules themselves are import-linter contracts (pyproject.toml, `tox -e lint`); these tests
hold what a contract cannot say: no import cycle at all, the public API, and a wheel that carries
every subpackage.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _figures():
    spec = importlib.util.spec_from_file_location("arch_figures", ROOT / "scripts" / "arch_figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_module_imports_itself_back_counting_function_level_and_type_checking_imports() -> None:
    figures = _figures()
    mods = figures.modules(ROOT)
    graph = figures.edges(mods)
    assert len(mods) > 50 and len(graph) > 200  # the whole package was read
    assert figures.cycles(mods, graph) == []


def test_the_cycle_finder_sees_a_cycle_made_inside_a_function(tmp_path: Path) -> None:
    pkg = tmp_path / "pytest_madcache"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from pytest_madcache.core import b\n")
    (pkg / "core" / "b.py").write_text("def later():\n    from pytest_madcache.core.a import x\n")
    figures = _figures()
    mods = figures.modules(tmp_path)
    assert figures.cycles(mods, figures.edges(mods)) == [["pytest_madcache.core.a", "pytest_madcache.core.b"]]


def test_every_subpackage_says_what_it_holds() -> None:
    subpackages = sorted(p.parent.name for p in (ROOT / "pytest_madcache").glob("*/__init__.py"))
    assert {"core", "devtools", "engines", "perf", "pytest_glue", "remote", "store", "util"} <= set(subpackages)
    layers = (ROOT / "docs" / "architecture.md").read_text()
    for name in subpackages:
        assert f"`{name}/`" in layers, f"docs/architecture.md does not describe pytest_madcache/{name}/"


def test_the_public_api_loads_lazily_without_the_docker_sdk() -> None:
    code = ("import sys, pytest_madcache as m\n"
            "assert 'docker' not in sys.modules and 'pytest_madcache.provide' not in sys.modules\n"
            "from pytest_madcache import RunResult, RunOptions, BuildResult, BuildFailed\n"
            "assert 'docker' not in sys.modules, 'values must not import the SDK'\n"
            "from pytest_madcache import ModelImage, Store, get_or_build\n"
            "assert RunResult.__module__ == 'pytest_madcache.core.run'\n"
            "assert set(m.__all__) == set(m._PUBLIC) and set(m.__all__) <= set(dir(m))\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_an_unknown_public_name_is_an_attribute_error() -> None:
    import pytest_madcache

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        pytest_madcache.Nope  # noqa: B018


def test_the_wheel_carries_every_subpackage(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ and egg-info there
    shutil.copytree(ROOT / "pytest_madcache", src / "pytest_madcache",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "-w", str(tmp_path), str(src)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("pytest_madcache-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for init in sorted((ROOT / "pytest_madcache").rglob("__init__.py")):  # every subpackage
        rel = init.relative_to(ROOT).as_posix()
        assert rel in names, f"{rel} is missing from the wheel"
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pytest_madcache").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
