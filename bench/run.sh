#!/usr/bin/env bash
# The performance record in one command (issue targets P1-P7), on a fresh machine too:
#   bash bench/run.sh            (about 10 minutes on 2 vCPUs)
# Starts a private Docker engine when none answers, and stops it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -e ".[zstd]"
python bench/bench_key.py --json bench/results/key-cold-warm.json  # P1 cold and warm: no engine
python -m pytest_madcache.localengine -- bash -c '
  python bench/bench_store.py --data random --json /tmp/madcache-bench-random.json &&
  python bench/bench_store.py --data compressible --json /tmp/madcache-bench-compressible.json &&
  python bench/bench_plugin.py --json /tmp/madcache-bench-plugin.json'
