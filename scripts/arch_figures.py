"""The package's shape in figures: modules per subpackage, import cycles, the largest module and
function, `# type: ignore` count, mypy errors and ruff findings.

    python scripts/arch_figures.py                   # print
    python scripts/arch_figures.py --record NAME     # also write bench/results/architecture-NAME.md

Imports are read with `ast` and counted at every level: module level, inside functions and under
`if TYPE_CHECKING:`, as the layer contracts count them. Importing `a.b.c` is also an edge to
`a/__init__.py` and `a/b/__init__.py`, which run first.
"""
from __future__ import annotations

import argparse
import ast
import datetime
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pytest_madcache"


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _targets(node: ast.AST, name: str, is_pkg: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = name.split(".")
        base = base if is_pkg else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    return [mod] + [f"{mod}.{alias.name}" for alias in node.names]


def edges(mods: dict[str, Path]) -> set[tuple[str, str]]:
    found = set()
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(node, name, path.name == "__init__.py"):
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:i])
                    if prefix in mods and prefix != name and not name.startswith(prefix + "."):
                        found.add((name, prefix))
    return found


def cycles(mods: dict[str, Path], graph: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected sets of more than one module (Tarjan)."""
    out: dict[str, list[str]] = {m: [] for m in mods}
    for a, b in graph:
        out[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in out[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10000)
    for m in mods:
        if m not in index:
            visit(m)
    return found


def functions(mods: dict[str, Path]) -> list[tuple[int, str]]:
    sizes = []
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                sizes.append((length, f"{name}.{node.name}"))
    return sorted(sizes, reverse=True)


def _tool(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"not run ({exc})"
    lines = (done.stdout + done.stderr).strip().splitlines()
    said = [line for line in lines if line.startswith(("Found", "Success", "All checks")) or " pairs of places" in line or line.startswith("no duplicates")]
    return said[-1] if said else f"exit {done.returncode}"


def report(root: Path) -> str:
    mods = modules(root)
    graph = edges(mods)
    found = cycles(mods, graph)
    lines_of = {m: len(p.read_text().splitlines()) for m, p in mods.items()}
    per_pkg = Counter(".".join(p.relative_to(root).parts[:-1]).replace("/", ".") or PACKAGE
                      for p in mods.values())
    ignores = sum(p.read_text().count("# type: ignore") for p in mods.values())
    funcs = functions(mods)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                            capture_output=True, text=True).stdout.strip()
    rows = [
        f"Measured at {commit} on {datetime.date.today()} by `python scripts/arch_figures.py`.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| modules | {len(mods)} |",
        f"| import edges (module, function and TYPE_CHECKING level) | {len(graph)} |",
        f"| import cycles (strongly connected sets) | {len(found)}"
        f"{': ' + '; '.join(', '.join(c) for c in found) if found else ''} |",
        f"| largest modules | {', '.join(f'{m} {n}' for m, n in sorted(lines_of.items(), key=lambda x: -x[1])[:4])} |",
        f"| modules over 450 lines | {sum(n > 450 for n in lines_of.values())} |",
        f"| largest functions | {', '.join(f'{n} {length}' for length, n in funcs[:3])} |",
        f"| functions over 60 lines | {sum(length > 60 for length, _ in funcs)} |",
        f"| `# type: ignore` | {ignores} |",
        f"| mypy | {_tool([sys.executable, '-m', 'mypy', PACKAGE])} |",
        f"| ruff | {_tool([sys.executable, '-m', 'ruff', 'check', PACKAGE])} |",
        f"| pairs of places sharing 6+ lines (`duplicates`) | {_tool(['duplicates', '--repo', PACKAGE, '--most', '1'])} |",
        "",
        "| subpackage | modules |",
        "|---|---|",
    ]
    rows += [f"| {pkg} | {n} |" for pkg, n in sorted(per_pkg.items())]
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", metavar="NAME", help="write bench/results/architecture-NAME.md")
    args = parser.parse_args()
    text = report(ROOT)
    print(text, end="")
    if args.record:
        out = ROOT / "bench" / "results" / f"architecture-{args.record}.md"
        out.write_text(f"# The package's shape ({args.record})\n\n{text}")
        print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
