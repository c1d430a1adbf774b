"""Dockerfiles that only BuildKit builds, and what to say when no buildx binary is there to build them.

docker-py drives only the classic builder.  Given a Dockerfile that needs BuildKit (a `RUN --mount`,
a heredoc, `COPY --chmod`...) it fails with the engine's words: `the --mount option requires BuildKit`
on a good day, `dockerfile parse error line 5: unknown instruction: ECHO` on another (the body of a
heredoc read as instructions).  Engine.build asks here first, before the engine is sent anything,
and fails with one line naming the Dockerfile line, that docker-buildx was not found, where it was
looked for and how to get it.

What the classic builder refuses, measured with docker-py against dockerd 20.10.24 (Debian 12) and
26.1.5 (Debian 13): on both, `RUN --mount/--network/--security`, `COPY/ADD --chmod` and a heredoc in
COPY/ADD; on 20.10 only, a heredoc in RUN, `COPY/ADD --link`, `ADD --checksum/--keep-git-dir` (26.1
accepts them; 23.0, the release after 20.10, brought BuildKit's Dockerfile parser to the classic
builder).  Only these clear cases are judged; anything else is left to the builder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional

from pytest_madcache.engines import buildkit

__all__ = ["BuildKitNeed", "needs_buildkit", "dockerfile_needs_buildkit", "classic_refuses", "buildx_searched",
           "buildx_missing", "GET_BUILDX", "refusal"]


def _plugin_dirs() -> List[str]:
    """buildkit.buildx_binary's plugin directories, in its order."""
    config = os.environ.get("DOCKER_CONFIG")
    dirs = [os.path.join(config, "cli-plugins")] if config else []
    return dirs + [os.path.expanduser(d) for d in buildkit.PLUGIN_DIRS]


def buildx_searched() -> str:
    """Where buildx_binary looked, in its order, for a message saying it found none."""
    explicit = os.environ.get("MADCACHE_BUILDX", "").strip()
    if explicit:
        return f"MADCACHE_BUILDX={explicit} is not an executable file"
    return "MADCACHE_BUILDX is not set; looked on PATH and in " + ", ".join(_plugin_dirs())


#: How to get BuildKit's client; the same words wherever a missing buildx is reported.
GET_BUILDX = ("install your distribution's docker-buildx package (docker-buildx-plugin with Docker's own "
              "packages), or set MADCACHE_BUILDX=/path/to/docker-buildx")


def buildx_missing() -> str:
    """`docker-buildx was not found (where it was looked for): how to get it`."""
    return f"docker-buildx was not found ({buildx_searched()}): {GET_BUILDX}"


# -- Dockerfiles that only BuildKit builds ----------------------------------------------------------------

@dataclass(frozen=True)
class BuildKitNeed:
    """The first instruction of a Dockerfile that the classic builder refuses."""

    path: str  # the Dockerfile, as given
    line: int  # 1-based, where the instruction starts
    instruction: str  # its first line, shortened
    feature: str  # e.g. "RUN --mount", "a heredoc (<<EOF)"

    def where(self) -> str:
        return f"{self.path} line {self.line} ({self.instruction})"


# Refused by the classic builder on every engine measured (dockerd 20.10 and 26.1): the flag names per
# instruction, and heredocs in COPY and ADD.
_ALWAYS_FLAGS = {"RUN": ("mount", "network", "security"), "COPY": ("chmod",), "ADD": ("chmod",)}
# Refused by dockerd 20.10's classic builder, accepted by 26.1's (BuildKit's Dockerfile parser came into
# the classic builder with 23.0, the release after 20.10): checked only on engines older than 23.
_OLD_ENGINE_FLAGS = {"COPY": ("link",), "ADD": ("link", "checksum", "keep-git-dir")}
_HEREDOC = re.compile(r"(?:^|\s)<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2(?=\s|$)")
_ESCAPE = re.compile(r"^#\s*escape\s*=\s*(\S)\s*$", re.IGNORECASE)


def _old_engine(version: Optional[str]) -> bool:
    match = re.match(r"\s*(\d+)\.", version or "")
    return match is not None and int(match.group(1)) < 23


def needs_buildkit(text: str, engine_version: Optional[str] = None, path: str = "Dockerfile") -> Optional[BuildKitNeed]:
    """The first instruction that needs BuildKit, or None: `RUN --mount/--network/--security`, `COPY/ADD
    --chmod`, a heredoc in COPY/ADD; on a Docker engine older than 23 (`engine_version`, e.g. "20.10.24")
    also a heredoc in RUN, `COPY/ADD --link`, `ADD --checksum/--keep-git-dir`.  Clear cases only: anything
    else is left to the builder to judge."""
    lines = text.splitlines()
    escape = "\\"
    for raw in lines:  # parser directives come first; only `escape` matters here
        match = _ESCAPE.match(raw.strip())
        if match:
            escape = match.group(1)
            break
        if not raw.strip().startswith("#"):
            break
    old = _old_engine(engine_version)
    i = 0
    while i < len(lines):
        start, first = i, lines[i]
        stripped = first.strip()
        i += 1
        if not stripped or stripped.startswith("#"):
            continue
        logical = first.rstrip()
        while logical.endswith(escape) and i < len(lines):  # continuation lines; comments inside are dropped
            logical = logical[: -len(escape)]
            nxt = lines[i]
            i += 1
            if nxt.strip().startswith("#"):
                logical += escape
                continue
            logical += " " + nxt.rstrip()
        words = logical.split()
        keyword = words[0].upper()
        flags = []
        for word in words[1:]:
            if not word.startswith("--"):
                break
            flags.append(word[2:].split("=", 1)[0].lower())
        heredocs = _HEREDOC.findall(logical) if keyword in ("RUN", "COPY", "ADD") else []
        shown = stripped if len(stripped) <= 60 else stripped[:57] + "..."
        need = None
        for flag in flags:
            if flag in _ALWAYS_FLAGS.get(keyword, ()) or (old and flag in _OLD_ENGINE_FLAGS.get(keyword, ())):
                need = f"{keyword} --{flag}"
                break
        if need is None and heredocs and (keyword != "RUN" or old):
            need = f"a heredoc (<<{heredocs[0][2]})"
        if need is not None:
            return BuildKitNeed(path, start + 1, shown, need)
        for dash, _quote, word in heredocs:  # skip the bodies: they are not instructions
            while i < len(lines) and (lines[i].lstrip("\t") if dash else lines[i]) != word:
                i += 1
            i += 1
    return None


def dockerfile_needs_buildkit(path: Path, engine_version: Optional[str] = None) -> Optional[BuildKitNeed]:
    """needs_buildkit for a Dockerfile on disk; None when it cannot be read (the builder will say why)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    return needs_buildkit(text, engine_version, str(path))


def classic_refuses(path: Path, engine_info: Callable[[], Any]) -> Optional[BuildKitNeed]:
    """What in the Dockerfile at `path` this engine's classic builder would refuse, or None.
    `engine_info()` (an EngineInfo: product, version) is asked only when the Dockerfile has any of
    the features at all; Podman builds with its own builder, which has them."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None  # the builder will say why
    if needs_buildkit(text, "0", str(path)) is None:
        return None
    info = engine_info()
    if info.product == "podman":
        return None
    return needs_buildkit(text, info.version, str(path))


def refusal(need: BuildKitNeed, builder: str, binary: Optional[str]) -> str:
    """The one line for a build the classic builder would refuse: `need` found, and either no buildx
    binary (`binary` None) or the model asked for builder='legacy'."""
    said = f"{need.where()} needs BuildKit ({need.feature})"
    if builder == "legacy":
        found = f"docker-buildx is at {binary}" if binary else buildx_missing()
        return (f"{said}, but the model asks for builder='legacy' (the classic builder refuses it): drop "
                f"builder='legacy' so that BuildKit builds it; {found}")
    return f"{said}, but {buildx_missing()}"
