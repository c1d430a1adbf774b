#!/usr/bin/env bash
# The main job: run the example model suite twice with --enable-cache and a
# fresh cache directory.  The first run misses (builds the images, saves them
# to the cache); the second run hits and loads them from the cache.  Between
# the runs the example images are removed from the engine, as on a fresh CI
# runner, so the second run really loads from the cache instead of finding
# the images still there.
#
# Needs a Docker engine in DOCKER_HOST (or the default socket).  On a machine
# without one:   python -m pytest_madcache.localengine -- bash examples/main_job.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/madcache-main-job.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cache="$work/cache"
python="${PYTHON:-python}"

forget_example_images() {
    "$python" - <<'PY'
import docker
client = docker.from_env()
for image in client.images.list(filters={"label": "org.madcache.example"}):
    client.images.remove(image.id, force=True)
PY
}

run_suite() {  # $1: run number; prints nothing but pytest's output, sets $elapsed
    local n="$1" start end
    forget_example_images
    echo
    echo "=== run $n: pytest examples --enable-cache --cache-dir $cache ==="
    start=$EPOCHREALTIME
    "$python" -m pytest "$here" -p no:cacheprovider -q \
        --enable-cache --cache-dir "$cache" --output "$work/results-$n.csv" 2>&1 | tee "$work/run-$n.log"
    local status=${PIPESTATUS[0]}
    end=$EPOCHREALTIME
    if [ "$status" -ne 0 ]; then
        echo "run $n failed (pytest exit status $status)" >&2
        exit "$status"
    fi
    elapsed=$("$python" -c "print(f'{$end - $start:.1f}')")
}

run_suite 1; first=$elapsed
grep -q "Cache miss. Will build Docker image and save to cache." "$work/run-1.log" \
    || { echo "expected a cache miss in run 1" >&2; exit 1; }
run_suite 2; second=$elapsed
grep -q "Cache hit! Loading Docker image from cache: run_" "$work/run-2.log" \
    || { echo "expected a cache hit in run 2" >&2; exit 1; }
if grep -q "Cache miss" "$work/run-2.log"; then
    echo "run 2 missed the cache" >&2; exit 1
fi

echo
echo "=== main job summary ==="
echo "results of run 2:"; cat "$work/results-2.csv"
echo
"$python" - "$first" "$second" <<'PY'
import sys
first, second = float(sys.argv[1]), float(sys.argv[2])
print(f"run 1 (cache miss: build + save): {first:.1f} s")
print(f"run 2 (cache hit: load from cache): {second:.1f} s")
print(f"the second run was {first / second:.1f}x faster ({first - second:.1f} s saved, "
      f"{100 * (first - second) / first:.0f}% less wall time)")
PY
forget_example_images
