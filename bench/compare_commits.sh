#!/usr/bin/env bash
# The store benchmark on two commits, one after the other on the same machine, to tell a code change
# from machine noise (a refactoring must keep the ratios):
#   bash bench/compare_commits.sh OLD_COMMIT [NEW_COMMIT (default HEAD)] [bench_store.py args...]
# Writes bench/results/compare-OLD-NEW.txt (both runs' tables).
set -euo pipefail
cd "$(dirname "$0")/.."
old=$(git rev-parse --short "$1"); new=$(git rev-parse --short "${2:-HEAD}"); shift $(( $# > 1 ? 2 : 1 ))
args=("$@"); [ ${#args[@]} -eq 0 ] && args=(--data random --repeat 3)
out="bench/results/compare-$old-$new.txt"
work=$(mktemp -d); trap 'git worktree remove --force "$work/old" 2>/dev/null; git worktree remove --force "$work/new" 2>/dev/null; rm -rf "$work"' EXIT
: > "$out"
for side in old new; do
  rev=${!side}
  git worktree add -q --detach "$work/$side" "$rev"
  echo "== $side: commit $rev ($(git log -1 --format=%s "$rev" | cut -c1-80))" >> "$out"
  (cd "$work/$side" && PYTHONPATH="$work/$side" python -m pytest_madcache.localengine --engine debian12 -- \
     python bench/bench_store.py "${args[@]}" 2>/dev/null) | sed -n '/^pytest-madcache store benchmark/,$p' >> "$out"
done
echo "wrote $out"
