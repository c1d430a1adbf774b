#!/usr/bin/env bash
# Per-engine performance (P1-P5) and the stored-form study, in one command:
#   bash bench/engines.sh        (about 10 minutes on 2 vCPUs)
# Starts a private engine of each kind (Debian 12 dockerd 20.10, Debian 13 dockerd 26 on the
# classic and the containerd image store, Podman 4.3), runs bench/bench_engines.py on each,
# then bench/bench_layer_form.py on a containerd-store and a classic engine side by side,
# and writes bench/results/*.json and bench/ENGINES.md from them.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -e ".[zstd]"
le="python -m pytest_madcache.localengine"
for kind in debian12 debian13 debian13-containerd podman; do
  $le --engine "$kind" -- python bench/bench_engines.py --json "bench/results/engines-$kind.json"
done
$le --engine debian13-containerd -- bash -c '
  MADCACHE_CTR_HOST=$DOCKER_HOST python -m pytest_madcache.localengine --engine debian13 -- bash -c \
    "python bench/bench_layer_form.py --containerd-host \$MADCACHE_CTR_HOST --classic-host \$DOCKER_HOST --json bench/results/layer-form.json"'
python bench/render_engines.py > bench/ENGINES.md
cat bench/ENGINES.md
