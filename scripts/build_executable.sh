#!/usr/bin/env bash
# Build `madcache` into one self-contained executable (PyInstaller) that lists,
# shows, prunes and loads cache entries on a machine without Python.
#   bash scripts/build_executable.sh [DIST_DIR]     -> DIST_DIR/madcache (default: dist/)
set -euo pipefail
cd "$(dirname "$0")/.."
dist="${1:-dist}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Install only what is missing: PyInstaller, and this checkout when `import pytest_madcache` does not
# already give it (a test run from another worktree with PYTHONPATH set must not repoint the
# environment's editable install).
python -c 'import PyInstaller' 2>/dev/null || python -m pip install -q "pyinstaller>=6"
python -c 'import os, sys, pytest_madcache as m; sys.exit(os.path.dirname(os.path.dirname(os.path.realpath(m.__file__))) != os.path.realpath("."))' 2>/dev/null \
  || python -m pip install -q -e .
python -m PyInstaller --onefile --name madcache --clean --noconfirm \
  --distpath "$dist" --workpath "$work/build" --specpath "$work" \
  --exclude-module pytest --exclude-module _pytest --exclude-module pluggy \
  pytest_madcache/__main__.py
echo "built $dist/madcache"
