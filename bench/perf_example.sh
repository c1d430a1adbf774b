#!/usr/bin/env bash
# The worked example of docs/perf-tracking.md (the example suite against a baseline, a deliberate
# regression, the table, the CSV and the plot), measured again and written into the page:
#   bash bench/perf_example.sh      (a few minutes on 2 vCPUs)
# Starts a private Docker engine when none answers, and stops it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -e ".[plot]"
python -m pytest_madcache.localengine -- python bench/perf_example.py "$@"
