"""pytest-madcache: a pytest plugin and CLI that cache the Docker images model test suites build.

The package layout is described on the docs' Architecture page; nothing runs on import.
"""
