"""The `madcache` command (`pytest_madcache.cli:main`, `python -m pytest_madcache.cli`): the
parser and dispatch in `app.py`, the commands on entries in `entries.py`, `madcache key` in
`keys.py`, what they share in `common.py`."""

from pytest_madcache.cli.app import build_parser, main

__all__ = ["main", "build_parser"]
