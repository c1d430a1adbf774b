#!/usr/bin/env bash
# The worked example of docs/perf-tracking.md (the example suite against a baseline, a deliberate
# regression, the table, the CSV and the plot), measured again and written into a copy of the page
# outside the repository (~/.cache/pytest-madcache/perf-example/; a run changes no tracked file):
#   bash bench/perf_example.sh            (a few minutes on 2 vCPUs)
#   bash bench/perf_example.sh --record   (maintainers: into docs/perf-tracking.md and its plot)
# Starts a private Docker engine when none answers, and stops it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -e ".[plot]"
python -m pytest_madcache.localengine -- python bench/perf_example.py "$@"
