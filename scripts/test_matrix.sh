#!/usr/bin/env bash
# The lint stage (ruff, mypy, the import-layer contracts), then the whole test suite on a private Debian 12 dockerd, inside tox's environment for the newest
# pytest (tox -e py-pytest9: the package and its test and docs extras installed from an sdist,
# pytest>=9,<10 resolved anew), the tests that use no engine under pytest 7.4 and 8 (tox's
# py-pytest74-noengine and py-pytest8-noengine), then every real-engine test again on each other
# engine kind users run: Debian 13's dockerd 26 on the classic and on the containerd image store, and Podman.  The
# main job is the README's first command, not a stage here (.ci/run runs it before this).  Each
# run starts its own private engines and stops them afterwards (tox's own wrapper takes the one
# started here).  Every stage runs even when an earlier one failed; the failed ones are named at
# the end and the exit status is 1.  Any non-zero pytest status fails its stage, 5 (no tests
# collected) included.
#   bash scripts/test_matrix.sh [pytest args...]
set -uo pipefail
cd "$(dirname "$0")/.."
le="python -m pytest_madcache.localengine"
failed=()
stage() {  # $1: name; the rest: the command
  local name="$1" status; shift
  echo "=== $name ==="
  "$@"
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "=== $name: FAILED (exit status $status$([ "$status" -eq 5 ] && echo ': no tests collected')) ===" >&2
    failed+=("$name (exit status $status)")
  fi
}
stage "lint: ruff, mypy and the import-layer contracts (tox -e lint)" python -m tox -e lint
stage "the whole suite on debian12, under tox -e py-pytest9 (the newest pytest)" \
  $le --engine debian12 -- python -m tox -e py-pytest9 -- -n 2 -q -rfEs "$@"
# The older pytest versions the docs promise (7.4 and 8), on the tests that use no engine: each
# resolves its pytest anew in its own tox environment; no engine is started.
stage "the tests that use no engine under pytest 7.4 and 8 (tox -e py-pytest74-noengine,py-pytest8-noengine)" \
  python -m tox -e py-pytest74-noengine,py-pytest8-noengine -- -n 2 -q -rfEs "$@"
for kind in debian13 debian13-containerd podman; do
  stage "real-engine tests on $kind" \
    $le --engine "$kind" -- python -m pytest -n 2 -q -rfEs -m "engine and not own_engines and not default_engine" "$@"
done
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'scripts/test_matrix.sh: failed stages:\n' >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "scripts/test_matrix.sh: every stage passed"
