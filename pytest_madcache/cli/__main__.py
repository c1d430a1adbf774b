"""`python -m pytest_madcache.cli` (what the GitHub Action runs when the package is installed)."""

import sys

from pytest_madcache.cli.app import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
