#!/usr/bin/env bash
# The main job: run the realistic example suite (examples/realistic: two numpy models on a
# Python base image) twice with --enable-cache and a fresh cache directory.  The first run
# misses (builds the images, saves them to the cache); the second run hits and loads them
# from the cache.  Between the runs the example images are removed from the engine, as on a
# fresh CI runner, so the second run really loads from the cache instead of finding the
# images still there.  The base image and the wheels are prepared first (what a user's
# machine pulls from a registry and PyPI): that is timed apart, not part of the comparison.
#
# Usage: bash examples/main_job.sh [--record] [--where] [SUITE_DIR]
#   SUITE_DIR  default examples/realistic; examples/ is the tiny suite
# The whole output is also written to a record outside the repository:
# ${XDG_CACHE_HOME:-~/.cache}/pytest-madcache/main-job.txt when SUITE_DIR is the default, so a
# user's run never changes a tracked file.  Maintainers refresh the committed record (the one the
# README and docs/plugin.md quote) with --record, which writes bench/results/main-job.txt.
# MADCACHE_MAIN_JOB_RECORD=FILE writes the record to FILE instead, =- not at all.
# --where prints the path the record would be written to ("-": none) and exits.
#
# Needs a Docker engine in DOCKER_HOST (or the default socket).  On a machine
# without one:   python -m pytest_madcache.localengine -- bash examples/main_job.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
committed_record="$(dirname "$here")/bench/results/main-job.txt"  # tracked: refreshed only on request
refresh=0 where=0 suite_arg=""
for arg in "$@"; do
    case "$arg" in
        --record) refresh=1 ;;
        --where) where=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "main_job.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
        *) [ -z "$suite_arg" ] || { echo "main_job.sh: one SUITE_DIR only" >&2; exit 2; }; suite_arg="$arg" ;;
    esac
done
suite="$(cd "${suite_arg:-$here/realistic}" && pwd)"
python="${PYTHON:-python}"
shown="${suite#"$(dirname "$here")/"}"  # the suite as the repository names it
record="${MADCACHE_MAIN_JOB_RECORD:-}"
if [ "$refresh" = 1 ]; then
    if [ -n "$record" ]; then
        echo "main_job.sh: --record writes $committed_record; unset MADCACHE_MAIN_JOB_RECORD" >&2; exit 2
    fi
    record="$committed_record"
elif [ -z "$record" ] && [ "$suite" = "$here/realistic" ]; then
    record="${XDG_CACHE_HOME:-$HOME/.cache}/pytest-madcache/main-job.txt"
fi
if [ "$where" = 1 ]; then echo "${record:--}"; exit 0; fi

forget_example_images() {
    "$python" - <<'PY'
import docker
client = docker.from_env()
for image in client.images.list(filters={"label": "org.madcache.example"}):
    client.images.remove(image.id, force=True)
PY
}

seconds_since() { "$python" -c "import sys; print(f'{$EPOCHREALTIME - float(sys.argv[1]):.1f}')" "$1"; }

run_suite() {  # $1: run number; prints nothing but pytest's output, sets $elapsed
    local n="$1" start
    forget_example_images
    echo
    echo "=== run $n: pytest $shown --enable-cache --cache-dir=\$TMP/cache ==="
    start=$EPOCHREALTIME
    set +e  # pytest's output as it goes, without the --durations lines (read below from the log)
    "$python" -m pytest "$suite" -p no:cacheprovider -q --durations=0 --durations-min=0 \
        --enable-cache --cache-dir="$cache" --output="$work/results-$n.csv" 2>&1 | tee "$work/run-$n.log" \
        | grep --line-buffered -v -E '^[0-9.]+s (call|teardown|setup) |^=+ slowest durations|^\(.* durations < '
    local status=${PIPESTATUS[0]}
    set -e
    elapsed=$(seconds_since "$start")
    if [ "$status" -ne 0 ]; then
        echo "run $n failed (pytest exit status $status)" >&2
        exit "$status"
    fi
}

main_job() {
    work="$(mktemp -d "${TMPDIR:-/tmp}/madcache-main-job.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    cache="$work/cache"

    echo "=== main job: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs (load average $(cut -d' ' -f1-3 /proc/loadavg) at the start), suite $shown ==="
    # the commit measured (tests/test_bench_results.py reads this line)
    echo "measured: commit $(git -C "$here/.." rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$here/.." status --porcelain --untracked-files=no -- pytest_madcache examples 2>/dev/null | grep -q . && echo ' (with uncommitted changes)')"
    "$python" - <<'PY'
import platform, docker
v = docker.from_env().version()
print(f"engine: {v.get('Platform', {}).get('Name') or 'Docker'} {v.get('Version')} "
      f"(API {v.get('ApiVersion')}), kernel {platform.release()}")
PY
    if [ -f "$suite/prepare.py" ]; then
        echo
        echo "=== prepare: base image and wheels (what a registry and PyPI give; not part of the comparison) ==="
        start=$EPOCHREALTIME
        "$python" "$suite/prepare.py"
        echo "prepared in $(seconds_since "$start") s"
    fi

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
    # Image acquisition: the setup time of the tests (the model_image fixture: key, then build +
    # save on a miss, load on a hit), from pytest's --durations.
    "$python" - "$first" "$second" "$work/run-1.log" "$work/run-2.log" <<'PY'
import re, sys
first, second = float(sys.argv[1]), float(sys.argv[2])
def setup_seconds(path):
    return sum(float(m.group(1)) for m in re.finditer(r"^([\d.]+)s setup ", open(path).read(), re.M))
built, loaded = setup_seconds(sys.argv[3]), setup_seconds(sys.argv[4])
if built <= 0 or loaded <= 0:  # no --durations setup lines: a ratio over nothing would read as any speed-up
    sys.exit(f"main job: no test setup time in pytest's --durations output of run {1 if built <= 0 else 2}")
print(f"image acquisition (test setup): run 1 build + save {built:.1f} s, run 2 load {loaded:.1f} s "
      f"({built / loaded:.1f}x)")
print(f"run 1 (cache miss: build + save): {first:.1f} s")
print(f"run 2 (cache hit: load from cache): {second:.1f} s")
print(f"the second run was {first / second:.1f}x faster ({first - second:.1f} s saved, "
      f"{100 * (first - second) / first:.0f}% less wall time)")
PY
    forget_example_images
}

if [ -n "$record" ] && [ "$record" != "-" ]; then
    mkdir -p "$(dirname "$record")"
    set +e
    # Paths under the repository are written relative to it: the record reads the same from any clone.
    (main_job) 2>&1 | sed -u "s|$(dirname "$here")/||g" | tee "$record.tmp"
    status=${PIPESTATUS[0]}
    set -e
    if [ "$status" -eq 0 ]; then  # only a complete record
        mv -f "$record.tmp" "$record"
        echo "record: $record" >&2
    else
        rm -f "$record.tmp"
    fi
    exit "$status"
fi
main_job
