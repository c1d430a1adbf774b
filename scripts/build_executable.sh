#!/usr/bin/env bash
# Build `madcache` into one self-contained executable (PyInstaller) that lists,
# shows, prunes and loads cache entries on a machine without Python.
#   bash scripts/build_executable.sh [DIST_DIR]     -> DIST_DIR/madcache (default: dist/)
set -euo pipefail
cd "$(dirname "$0")/.."
dist="${1:-dist}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m pip install -q "pyinstaller>=6" -e .
python -m PyInstaller --onefile --name madcache --clean --noconfirm \
  --distpath "$dist" --workpath "$work/build" --specpath "$work" \
  --exclude-module pytest --exclude-module _pytest --exclude-module pluggy \
  pytest_madcache/__main__.py
echo "built $dist/madcache"
