"""The kill -9 campaign itself, without an engine: its crash points (scripts/store_writes.py) intercept
every kind of write the store's source makes, and the docs quote its recorded result
(bench/render_faults.py renders the table of bench/results/fault-campaign.json).

The campaign's trials run on a real engine: tests/test_hardening_faults.py (a short run),
and the recorded 300-trial run in bench/results/fault-campaign.json.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "bench" / "results" / "fault-campaign.json"


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _campaign_module():
    return _module("fault_campaign", ROOT / "scripts" / "fault_campaign.py")


def _writes_module():
    return _module("store_writes", ROOT / "scripts" / "store_writes.py")


#: One call of each kind of write, run with the crash points installed (k=0: they only count).
PROBE = r'''
import json, os, shutil, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import store_writes

d = Path(sys.argv[2])
counter, reached = [0], set()
store_writes.install_crash_points(0, counter, reached)
counts = {}

def probe(kind, action):
    before = counter[0]
    action()
    counts[kind] = counter[0] - before

probe("mkdir", lambda: (d / "a").mkdir())
probe("makedirs", lambda: os.makedirs(d / "b" / "c"))
probe("open", lambda: open(d / "f", "wb").close())
probe("write_bytes", lambda: (d / "g").write_bytes(b"x"))
probe("write_text", lambda: (d / "h").write_text("x"))
probe("touch", lambda: (d / "t").touch())
probe("os.open", lambda: os.close(os.open(d / "o", os.O_CREAT | os.O_WRONLY)))
probe("utime", lambda: os.utime(d / "f"))
probe("chmod", lambda: os.chmod(d / "f", 0o600))
probe("fsync", lambda: (lambda fd: (os.fsync(fd), os.close(fd)))(os.open(d / "f", os.O_RDONLY)))
probe("rename", lambda: os.rename(d / "f", d / "f2"))
probe("replace", lambda: os.replace(d / "f2", d / "f3"))
probe("unlink", lambda: os.unlink(d / "f3"))
probe("rmdir", lambda: os.rmdir(d / "a"))
probe("rmtree", lambda: shutil.rmtree(d / "b"))
probe("truncate", lambda: os.truncate(d / "g", 0))
probe("link", lambda: os.link(d / "g", d / "g2"))
probe("symlink", lambda: os.symlink(d / "g", d / "g3"))
probe("read (no write)", lambda: (d / "g").read_bytes())
print(json.dumps(counts))
'''


def test_crash_points_intercept_every_kind_of_write_the_store_makes(tmp_path: Path) -> None:
    sw = _writes_module()
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "scripts"), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    counts = json.loads(out)
    assert counts.pop("read (no write)") == 0
    assert all(n >= 1 for n in counts.values()), counts
    kinds = {s.kind for s in sw.store_write_sites()}
    assert {"write_bytes", "touch", "open", "rmtree", "rename", "replace", "fsync"} <= kinds  # the source is read
    assert kinds <= set(counts), f"the store writes with {kinds - set(counts)}, which no probe here covers"


def test_the_store_write_sites_are_found_in_its_source(tmp_path: Path) -> None:
    sw = _writes_module()
    (tmp_path / "mod.py").write_text(
        "import os, shutil\n"
        "def f(p, items, text):\n"
        "    p.write_bytes(b'')\n"          # 3
        "    open(p, 'rb')\n"               # 4: a read
        "    open(p, mode='a')\n"           # 5
        "    items.remove(1)\n"             # 6: a list
        "    text.replace('a', 'b')\n"      # 7: a str
        "    os.replace(p, p)\n"            # 8
        "    self.index.touch(p)\n"         # 9: the store's own method, not a file call
        "    shutil.rmtree(p)\n"            # 10
        "    os.close(os.open(p, os.O_RDONLY))\n"  # 11: a read
        "    os.open(p, os.O_CREAT | os.O_WRONLY)\n"  # 12
    )
    found = [(s.line, s.function, s.kind) for s in sw.store_write_sites(tmp_path)]
    assert found == [(3, "f", "write_bytes"), (5, "f", "open"), (8, "f", "replace"), (10, "f", "rmtree"),
                     (12, "f", "os.open")]


def test_the_docs_quote_the_recorded_campaign() -> None:
    """docs/cache.md and bench/results/fault-campaign.md hold the table of the recorded run, which had
    300 trials, no failure, and a crash point at every write of the store but its documented exceptions."""
    fc = _campaign_module()
    render = _module("render_faults", ROOT / "bench" / "render_faults.py")
    data = json.loads(RECORD.read_text())
    table = render.table_lines(data)
    docs = (ROOT / "docs" / "cache.md").read_text()
    assert "<!-- fault-campaign:start -->\n" + "\n".join(table) + "\n<!-- fault-campaign:end -->" in docs
    assert "\n".join(table) in RECORD.with_suffix(".md").read_text()
    ops = data["operations"].values()
    assert sum(c["trials"] for c in ops) == 300 and data["command"].endswith("--trials 300")
    assert set(data["operations"]) == set(fc.OPS)
    assert sum(c[k] for c in ops for k in fc.FAILURE_FIELDS) == 0
    assert data["write_sites"]["unreached"] == []
    assert data["write_sites"]["reached"] + len(fc.UNREACHED_BY_DESIGN) == data["write_sites"]["total"]
