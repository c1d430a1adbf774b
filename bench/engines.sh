#!/usr/bin/env bash
# Per-engine performance (P1-P5) and the stored-form study, in one command:
#   bash bench/engines.sh [DIR]        (about 10 minutes on 2 vCPUs)
# Starts a private engine of each kind (Debian 12 dockerd 20.10, Debian 13 dockerd 26 on the
# classic and the containerd image store, Podman 4.3), runs bench/bench_engines.py on each,
# then bench/bench_layer_form.py on a containerd-store and a classic engine side by side.
# Without DIR it writes bench/results/engines-*.json and layer-form.json, then bench/ENGINES.md
# and the tables in docs/ from them; with DIR (bench/run.sh passes its own) the JSON goes there
# and the table is printed only.  Each file records the commit it measured.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench/results}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
# Install only what is missing (a run from another worktree with PYTHONPATH set must not repoint
# the environment's editable install).
python -c 'import zstandard, os, sys, pytest_madcache as m; sys.exit(os.path.dirname(os.path.dirname(os.path.realpath(m.__file__))) != os.path.realpath("."))' 2>/dev/null \
  || pip install -q -e ".[zstd]"
le="python -m pytest_madcache.localengine"
for kind in debian12 debian13 debian13-containerd podman; do
  $le --engine "$kind" -- python bench/bench_engines.py --json "$out/engines-$kind.json"
done
OUT="$out" $le --engine debian13-containerd -- bash -c '
  MADCACHE_CTR_HOST=$DOCKER_HOST python -m pytest_madcache.localengine --engine debian13 -- bash -c \
    "python bench/bench_layer_form.py --containerd-host \$MADCACHE_CTR_HOST --classic-host \$DOCKER_HOST --json \$OUT/layer-form.json"'
if [ "$out" = "$(pwd)/bench/results" ]; then
  python bench/render_engines.py > bench/ENGINES.md
  cat bench/ENGINES.md
else
  python bench/render_engines.py --results "$out"
fi
