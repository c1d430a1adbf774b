"""Fault campaign: kill the registry at random points of pushes and fetches, record what is left.

    PYTHONPATH=. python -m pytest_madcache.localengine -- python bench/fault_campaign.py \
        [--trials 60] [--stream-trials 20] [--seed 14] [--out bench/results/remote-faults.json]

Entries are crafted layers in real stores; the registry is Debian's
docker-registry (installed when missing, as the tests do).  The push and
fetch trials need no engine; the stream trials load each fetch into the
engine DOCKER_HOST reaches while its blobs arrive (--stream-trials 0 to
leave them out).  See tests/fault_campaign.py for what one trial does and
checks.  Exits 1 when a trial left a half entry (remote or local), a temp
file, or an image without its entry, or its next run did not complete.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchlib import stamp  # noqa: E402
from tests.fault_campaign import run_campaign  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--stream-trials", type=int, default=20,
                        help="fetches streamed into the engine's load, after the others (default 20)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "remote-faults.json")
    args = parser.parse_args()
    if not shutil.which("docker-registry"):
        from pytest_madcache.devtools.localengine import install_packages

        install_packages(["docker-registry"])
    engine = None
    if args.stream_trials:
        from pytest_madcache.engines.docker import Engine

        engine = Engine.open()
    t0 = time.time()

    def show(trial) -> None:
        print(f"trial {trial.n:3d} {trial.phase:5s} kill by {trial.kill:5s} at {trial.kill_at:>12}: "
              f"first run {trial.first_run:9s} half entry remote={trial.remote_half_entry} "
              f"local={trial.local_half_entry} temp files={trial.temp_files_left} "
              f"image without entry={trial.engine_image_without_entry}; "
              f"next run completed={trial.next_run_completed} ({trial.seconds} s)",
              flush=True)

    result = run_campaign(args.trials, args.seed, progress=show, engine=engine, stream_trials=args.stream_trials)
    result["measured"] = stamp()
    result["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0))
    result["machine"] = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    result["command"] = ("PYTHONPATH=. python -m pytest_madcache.localengine -- python bench/fault_campaign.py "
                         + " ".join(sys.argv[1:]))
    if engine is not None:
        result["engine"] = engine.describe()
    result["seconds"] = round(time.time() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    s = result["summary"]
    print(json.dumps(s, indent=1))
    print(f"written to {args.out}")
    bad = (s["remote_half_entries"] or s["local_half_entries"] or s["temp_files_left"]
           or s["engine_images_without_entry"] or s["next_run_completed"] != s["trials"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
