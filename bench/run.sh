#!/usr/bin/env bash
# The performance record in one command, on a fresh machine too (root; well over an hour on 2 vCPUs):
#   bash bench/run.sh
# 1. P1 cold and warm: the key of an unchanged context, and P6: what the plugin costs 2,000 tests
#    that use no model (no engine);
# 2. the store against the raw engine and the seed design on Debian 12's dockerd, per data shape
#    (random, compressible, many small files): P1, P2, P3, P4, P5;
# 3. the realistic example models on every engine kind (Debian 12 dockerd 20.10, Debian 13
#    dockerd 26 on the classic and the containerd image store, Podman 4.3): P3, P4, P5 and P7;
# 4. the remote: a second machine's first run through a registry (bench_remote.py), and its fault
#    campaign (bench/fault_campaign.py);
# 5. every engine kind's P1-P5 and the stored-form study (bench/engines.sh), base resolution costs
#    (bench_bases.py on Debian 12's dockerd and Podman), the file list's cost (bench_files.py), the
#    store's kill -9 campaign (scripts/fault_campaign.py), the new-user suites (bench/new_user.py),
#    the A/B gate's trials (bench/bench_ab.py) and the main job (examples/main_job.sh);
# then prints the goals table (bench/summary.py).  Every results file records the commit it
# measured; tests/test_bench_results.py fails on one older than the code it measures.
# Each engine is a private one started for its step and stopped after it.
# The results go outside the repository, to ~/.cache/pytest-madcache/bench-results/ (under
# $XDG_CACHE_HOME when set; it starts as a copy of the committed bench/results/): a run changes no
# tracked file.  Maintainers refresh the committed record, bench/results/ and the table in
# docs/performance.md, with --record (or MADCACHE_BENCH_RECORD=1):
#   bash bench/run.sh --record
#   MADCACHE_BENCH_SKIP="remote store" bash bench/run.sh   leaves steps out (their committed results stay)
#   MADCACHE_BENCH_KINDS="podman" bash bench/run.sh         the realistic step on these engine kinds only
#   MADCACHE_BENCH_SHAPES="smallfiles" bash bench/run.sh    the store step on these data shapes only
# A step that fails is named at the end (exit status 1); the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
# Install only what is missing (a run from another worktree with PYTHONPATH set must not repoint
# the environment's editable install).
# Asked from / so that the checkout itself is not on the path: the bench scripts run from bench/.
repo="$(pwd -P)"
(cd / && python -c 'import zstandard, os, sys, pytest_madcache as m; sys.exit(os.path.dirname(os.path.dirname(os.path.realpath(m.__file__))) != sys.argv[1])' "$repo") 2>/dev/null \
  || pip install -q -e ".[zstd]" || exit 1
le="python -m pytest_madcache.localengine"
record="${MADCACHE_BENCH_RECORD:-0}"
for arg in "$@"; do
  case "$arg" in
    --record) record=1 ;;
    *) echo "bench/run.sh: unknown argument $arg (--record refreshes the committed results)" >&2; exit 2 ;;
  esac
done
if [ "$record" = 1 ]; then
  out=bench/results
else
  out="${XDG_CACHE_HOME:-$HOME/.cache}/pytest-madcache/bench-results"
  rm -rf "$out" && mkdir -p "$out" && cp -p bench/results/* "$out"/ || exit 1
  echo "bench/run.sh: results go to $out (bash bench/run.sh --record refreshes the committed ones)"
fi
skip=" ${MADCACHE_BENCH_SKIP:-} "
kinds="${MADCACHE_BENCH_KINDS:-debian12 debian13 debian13-containerd podman}"
shapes="${MADCACHE_BENCH_SHAPES:-random compressible smallfiles}"
failed=()
step() { [[ "$skip" != *" $1 "* ]]; }

if step key; then
  python bench/bench_key.py --json "$out/key-cold-warm.json" || failed+=(key)
fi
if step plugin; then
  python bench/bench_plugin.py --repeat 11 --json "$out/plugin.json" || failed+=(plugin)
fi
if step store; then
  for shape in $shapes; do
    $le --engine debian12 -- python bench/bench_store.py --data "$shape" --json "$out/store-$shape.json" \
      | tee "$out/store-$shape.txt.tmp" && mv "$out/store-$shape.txt.tmp" "$out/store-$shape.txt" \
      || failed+=("store $shape")
  done
fi
if step realistic; then
  for kind in $kinds; do
    $le --engine "$kind" -- python bench/bench_realistic.py --json "$out/realistic-$kind.json" \
      || failed+=("realistic $kind")
  done
fi
if step remote; then
  $le --engine debian12 -- python bench/bench_remote.py --json "$out/remote.json" || failed+=(remote)
  PYTHONPATH=. $le --engine debian12 -- python bench/fault_campaign.py --out "$out/remote-faults.json" \
    || failed+=("remote faults")
fi
if step engines; then
  bash bench/engines.sh "$out" || failed+=(engines)
fi
if step bases; then
  for kind in debian12 podman; do
    $le --engine "$kind" -- python bench/bench_bases.py --json "$out/bases-$kind.json" || failed+=("bases $kind")
  done
fi
if step files; then
  python bench/bench_files.py --out "$out" || failed+=(files)
fi
if step faults; then  # the store's kill -9 campaign: recorded only with --record (it writes bench/results itself)
  $le -- python scripts/fault_campaign.py --trials 300 $([ "$record" = 1 ] && echo --record) || failed+=(faults)
fi
if step newuser; then  # without --record it writes to ~/.cache/pytest-madcache/bench-results
  $le -- python bench/new_user.py --label after $([ "$record" = 1 ] && echo --record) || failed+=(newuser)
fi
if step history; then  # what the performance history adds to the cache directory and the remote, in bytes
  python bench/bench_history.py $([ "$record" = 1 ] && echo --record) || failed+=(history)
fi
if step ab; then  # the A/B gate against the one-row comparison, 20 trials per condition
  $le -- python bench/bench_ab.py --json "$out/ab-trials.json" || failed+=(ab)
fi
if step mainjob; then
  MADCACHE_MAIN_JOB_RECORD="$out/main-job.txt" $le -- bash examples/main_job.sh || failed+=(mainjob)
fi
echo
if [ "$record" = 1 ]; then
  python bench/summary.py --write-docs || failed+=(summary)
  python bench/render_quoted.py || failed+=("quoted figures")
else
  python bench/summary.py --results "$out" || failed+=(summary)
fi
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'bench/run.sh: these steps failed: %s\n' "${failed[*]}" >&2
  exit 1
fi
