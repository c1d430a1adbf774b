#!/usr/bin/env bash
# The whole test suite on a private Debian 12 dockerd, inside tox's environment for the newest
# pytest (tox -e py-pytest9: the package and its test and docs extras installed from an sdist,
# pytest>=9,<10 resolved anew), then every real-engine test again on each other engine kind users
# run: Debian 13's dockerd 26 on the classic and on the containerd image store, and Podman; the
# main job (examples/main_job.sh: the realistic suite, about 2-4 minutes) runs once, on debian12.  Each
# run starts its own private engines and stops them afterwards (tox's own wrapper takes the one
# started here).
#   bash scripts/test_matrix.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
le="python -m pytest_madcache.localengine"
echo "=== the whole suite on debian12, under tox -e py-pytest9 (the newest pytest) ==="
$le --engine debian12 -- python -m tox -e py-pytest9 -- -n 2 -q -rfEs "$@"
echo "=== the main job (the realistic example suite, a miss then a hit) on debian12 ==="
MADCACHE_MAIN_JOB_RECORD=- $le --engine debian12 -- bash examples/main_job.sh  # the record is the README command's
for kind in debian13 debian13-containerd podman; do
  echo "=== real-engine tests on $kind ==="
  $le --engine "$kind" -- python -m pytest -n 2 -q -rfEs -m "engine and not own_engines and not default_engine" "$@"
done
