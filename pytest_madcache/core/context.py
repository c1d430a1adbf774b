"""madengine's `--additional-context` and the literal values written on a command line: Python
literals, read with `ast.literal_eval` (never `eval`)."""

from __future__ import annotations

import ast
import json
from typing import Any, Dict, Mapping

__all__ = ["literal", "parse_context"]


def literal(text: str) -> Any:
    """The Python literal `text` spells (`2`, `'fp16'`, `[1, 2]`, `{'a': 1}`); ValueError when it is none."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(f"{text!r} is not a Python literal") from None


def parse_context(text: Any) -> Dict[str, Any]:
    """madengine's `--additional-context`: a Python dict literal, JSON accepted too.

    Parsed with `ast.literal_eval` (never `eval`), so `"{'guest_os': 'UBUNTU'}"`
    and `'{"guest_os": "UBUNTU"}'` mean the same; JSON's true/false/null are
    understood.  Empty text is an empty context.  Raises ValueError saying
    what was expected (the option table adds the value and its source).
    """
    if isinstance(text, Mapping):
        return dict(text)
    raw = "" if text is None else str(text)
    if not raw.strip():
        return {}
    value: Any
    try:
        value = literal(raw.strip())
    except ValueError:
        try:
            value = json.loads(raw)
        except ValueError:
            raise ValueError("expected a dict such as \"{'guest_os': 'UBUNTU'}\" (Python literal or JSON)") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a dict, got {type(value).__name__}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise ValueError(f"keys must be strings, not {bad[0]!r}")
    return value
