"""`python -m pytest_madcache.localengine`: the path the README, tox and CI use; the tool lives in
`pytest_madcache.devtools.localengine`, apart from the runtime code, which never imports it."""
from pytest_madcache.devtools.localengine import *  # noqa: F401,F403
from pytest_madcache.devtools.localengine import busybox_path, main  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
