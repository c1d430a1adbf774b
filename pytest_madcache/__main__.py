"""`python -m pytest_madcache` is the `madcache` command (and the standalone executable's entry)."""

import sys

from pytest_madcache.cli import main

if __name__ == "__main__":
    sys.exit(main())
