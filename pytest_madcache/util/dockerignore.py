"""What of a build context the engine receives: `.dockerignore` read and matched the way the Docker SDK
does before it sends a context.  The key hashes exactly this list and the engines pack exactly this
list, so both ask here.

The matcher is the SDK's own (`docker.utils.build.exclude_paths`, a pure function of the directory
tree and the patterns): the one SDK import outside the engines, allowed by name in the layer
contracts.  It is imported when first used: the SDK costs ~80 ms to import.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

__all__ = ["read_dockerignore", "included_paths"]


def read_dockerignore(context: Union[str, Path]) -> List[str]:
    """The patterns of the context's `.dockerignore` (none when it has none)."""
    path = Path(context) / ".dockerignore"
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [p for p in (line.strip() for line in lines) if p and not p.startswith("#")]


def included_paths(context: Union[str, Path], patterns: Sequence[str], dockerfile: Optional[str]) -> List[str]:
    """The context's paths (relative, sorted) that `patterns` leave in; the Dockerfile always stays."""
    from docker.utils.build import exclude_paths

    return sorted(exclude_paths(str(context), list(patterns), dockerfile=dockerfile))
