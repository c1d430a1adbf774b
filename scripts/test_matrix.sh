#!/usr/bin/env bash
# The whole test suite on a private Debian 12 dockerd, then every real-engine test again on each
# other engine kind users run: Debian 13's dockerd 26 on the classic and on the containerd image
# store, and Podman.  Each run starts its own private engines and stops them afterwards.
#   bash scripts/test_matrix.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
le="python -m pytest_madcache.localengine"
echo "=== the whole suite on debian12 ==="
$le --engine debian12 -- python -m pytest -n 2 -q -rfEs "$@"
for kind in debian13 debian13-containerd podman; do
  echo "=== real-engine tests on $kind ==="
  $le --engine "$kind" -- python -m pytest -n 2 -q -rfEs -m "engine and not own_engines" "$@"
done
