"""Base images: every `FROM` of a Dockerfile, and what each base resolves to for the key.

`parse_froms` reads a Dockerfile the way the builder does (the `# escape=` parser directive,
line continuations, comment lines, `ARG`s before the first `FROM` with the build args
overriding their defaults, `$VAR` / `${VAR}` / `${VAR:-word}` / `${VAR:+word}` in `FROM`,
`--platform=`, `FROM image AS name`), and tells apart a base image from an earlier stage and
from `scratch`.  `BaseResolver` turns each base into the value that joins the key, by the
`base_key` mode:

- `tag`: nothing joins the key (the reference as written is already in the Dockerfile's bytes);
- `local`: the image id the engine holds; else the registry digest; else the tag;
- `registry`: the digest the registry serves (the engine's distribution endpoint, or the
  registry itself where the engine lacks that endpoint, as Podman does); else the tag, with
  one warning.

It must not build, pull or cache images, nor import pytest: it reads a Dockerfile and asks
an engine (a `BaseEngine`) or a registry questions.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

__all__ = ["BASE_KEY_MODES", "VIA", "FromLine", "Base", "DockerfileError", "key_bases", "resolve_bases",
           "parse_froms", "parse_bases", "ResolvedBase", "BaseEngine",
           "BaseResolver", "DistributionUnsupported", "parse_base_key"]

#: How base images join the key; see docs/cache.md ("Base images in the key").
BASE_KEY_MODES = ("tag", "local", "registry")

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_base_key(text: str) -> str:
    """`tag`, `local` or `registry` (case-insensitive); raises ValueError saying what was expected."""
    low = str(text).strip().lower()
    if low not in BASE_KEY_MODES:
        raise ValueError(f"expected one of {', '.join(BASE_KEY_MODES)}")
    return low


@dataclass(frozen=True)
class FromLine:
    """One `FROM` instruction after substitution.

    `kind` is "base" (an image the build pulls or finds), "stage" (an earlier stage of the
    same Dockerfile) or "scratch" (no image at all).  `stage` is the name this `FROM` gives
    its stage (`AS name`), else its index as text.  `line` is the 1-based line it starts on.
    """

    reference: str
    platform: Optional[str]
    stage: str
    kind: str
    line: int
    written: str


@dataclass(frozen=True)
class Base:
    """A base image: the reference after substitution, its `--platform` (or None) and the stage it starts."""

    reference: str
    platform: Optional[str]
    stage: str


class DockerfileError(ValueError):
    """A `FROM` the builder would refuse too (no image, an unterminated `${`)."""


# -- parsing -------------------------------------------------------------------------


def _directives(lines: Sequence[str]) -> Tuple[str, int]:
    """The escape character the parser directives at the very top set, and how many lines they take."""
    escape, start = "\\", 0
    for i, raw in enumerate(lines):
        match = _DIRECTIVE.match(raw.strip()) if raw.strip().startswith("#") else None
        if not match:
            break
        if match.group(1).lower() == "escape" and match.group(2) in ("\\", "`"):
            escape = match.group(2)
        start = i + 1
    return escape, start


def _heredocs(instruction: str) -> List[Tuple[str, bool]]:
    """The here-documents a RUN, COPY or ADD opens (`<<EOF`, `<<-"EOF"`): (delimiter, tabs stripped)."""
    if instruction.partition(" ")[0].upper() not in ("RUN", "COPY", "ADD"):
        return []
    return [(m.group(3), m.group(1) == "-") for m in _HEREDOC.finditer(instruction)]


def _logical_lines(text: str) -> List[Tuple[int, str]]:
    """(first line number, instruction text): directives read, comments dropped, continuations joined,
    here-document bodies skipped (their lines are a script's or a file's, not instructions)."""
    lines = text.splitlines()
    escape, start = _directives(lines)
    out: List[Tuple[int, str]] = []
    current: Optional[List[str]] = None
    first = 0
    bodies: List[Tuple[str, bool]] = []  # here-documents still open, in order
    for number, raw in enumerate(lines[start:], start + 1):
        if bodies:
            delimiter, tabs = bodies[0]
            if (raw.lstrip("\t") if tabs else raw) == delimiter:
                bodies.pop(0)
            continue
        stripped = raw.strip()
        if stripped.startswith("#"):
            continue  # a comment line, also in the middle of a continued instruction
        if current is None:
            if not stripped:
                continue
            current, first = [], number
        body = raw.rstrip()
        if body.endswith(escape):
            current.append(body[:-1])
            continue
        current.append(body)
        instruction = " ".join(part.strip() for part in current if part.strip())
        out.append((first, instruction))
        bodies = _heredocs(instruction)
        current = None
    if current:
        out.append((first, " ".join(part.strip() for part in current if part.strip())))
    return out


def _substitute(word: str, values: Mapping[str, str], escape: str = "\\") -> str:
    """The builder's variable expansion in one word: $V, ${V}, ${V:-x}, ${V:+x} (and ${V-x}, ${V+x})."""
    out: List[str] = []
    i, n = 0, len(word)
    while i < n:
        ch = word[i]
        if ch == escape and i + 1 < n and word[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        if i + 1 < n and word[i + 1] == "{":
            end = _closing_brace(word, i + 2)
            if end < 0:
                raise DockerfileError(f"unterminated ${{ in {word!r}")
            inner = word[i + 2:end]
            match = _NAME.match(inner)
            if not match:
                raise DockerfileError(f"bad substitution ${{{inner}}} in {word!r}")
            name, rest = match.group(0), inner[match.end():]
            value = values.get(name)
            if not rest:
                out.append(value or "")
            elif rest.startswith((":-", ":+", "-", "+")):
                colon = rest.startswith(":")
                op, alt = rest[1 if colon else 0], rest[2 if colon else 1:]
                is_set = bool(value) if colon else value is not None
                if op == "-":
                    out.append((value or "") if is_set else _substitute(alt, values, escape))
                else:
                    out.append(_substitute(alt, values, escape) if is_set else "")
            else:
                raise DockerfileError(f"unsupported substitution ${{{inner}}} in {word!r}")
            i = end + 1
            continue
        match = _NAME.match(word, i + 1)
        if match:
            out.append(values.get(match.group(0)) or "")
            i = match.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _closing_brace(word: str, start: int) -> int:
    depth = 1
    for j in range(start, len(word)):
        if word[j] == "{":
            depth += 1
        elif word[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return -1


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _arg_pairs(rest: str) -> List[Tuple[str, Optional[str]]]:
    """`ARG a b=1 c="x y"` -> [(a, None), (b, 1), (c, "x y")]."""
    pairs: List[Tuple[str, Optional[str]]] = []
    for token in re.findall(r"""(?:[^\s"']+|"[^"]*"|'[^']*')+""", rest):
        name, eq, value = token.partition("=")
        pairs.append((name, _unquote(value) if eq else None))
    return pairs


def parse_froms(text: str, build_args: Optional[Mapping[str, str]] = None) -> List[FromLine]:
    """Every `FROM` of a Dockerfile's text, substituted with the global `ARG`s (build args win)."""
    build_args = dict(build_args or {})
    escape = _directives(text.splitlines())[0]
    global_args: Dict[str, str] = {}
    stages: List[str] = []
    froms: List[FromLine] = []
    for number, instruction in _logical_lines(text):
        verb, _, rest = instruction.partition(" ")
        verb = verb.upper()
        if verb == "ARG" and not froms:
            for name, default in _arg_pairs(rest):
                if name in build_args:
                    global_args[name] = build_args[name]
                elif default is not None:
                    global_args[name] = _substitute(default, global_args, escape)
            continue
        if verb != "FROM":
            continue
        words = rest.split()
        platform: Optional[str] = None
        while words and words[0].startswith("--"):
            flag = words.pop(0)
            if flag.lower().startswith("--platform="):
                platform = _substitute(flag.split("=", 1)[1], global_args, escape) or None
        if not words:
            raise DockerfileError(f"line {number}: FROM without an image")
        written = words[0]
        reference = _substitute(written, global_args, escape)
        if not reference:
            raise DockerfileError(f"line {number}: FROM {written} names no image once substituted "
                                  "(an ARG without a value?)")
        alias = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
        stage = (alias or str(len(froms))).lower()
        if reference.lower() in stages:
            kind = "stage"
        elif reference.lower() == "scratch":
            kind = "scratch"
        else:
            kind = "base"
        froms.append(FromLine(reference=reference, platform=platform, stage=stage, kind=kind, line=number,
                              written=written))
        stages.append(stage)
    return froms


def parse_bases(dockerfile: Path, build_args: Optional[Mapping[str, str]] = None) -> List[Base]:
    """The base images of a Dockerfile (not stages, not scratch), in order, each reference once
    per platform."""
    text = Path(dockerfile).read_text(encoding="utf-8", errors="replace")
    seen = set()
    out: List[Base] = []
    for f in parse_froms(text, build_args):
        if f.kind == "base" and (f.reference, f.platform) not in seen:
            seen.add((f.reference, f.platform))
            out.append(Base(reference=f.reference, platform=f.platform, stage=f.stage))
    return out


# -- references ------------------------------------------------------------------------





# -- resolving ------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedBase:
    """What a base reference joined the key as: `value` found by `via`.

    `via` is "id" (the engine's image id), "digest" (the registry's manifest digest, asked
    through the engine), "digest-direct" (asked of the registry itself) or "tag" (the
    reference as written: nothing better was found).
    """

    reference: str
    value: str
    via: str
    seconds: float = 0.0

    @property
    def component(self) -> str:
        """What joins the key: the kind of value and the value (the path taken is shown, not hashed)."""
        return {"id": f"id:{self.value}", "tag": "tag"}.get(self.via, f"digest:{self.value}")


#: How each path is said to people (`madcache key`, `madcache info`, the session's messages).
VIA = {"id": "the engine's image id", "digest": "the registry's digest, asked through the engine",
       "digest-direct": "the registry's digest, asked of the registry directly", "tag": "the tag as written"}


class DistributionUnsupported(RuntimeError):
    """The engine has no `GET /distribution/{name}/json` (Podman 4 and 5)."""


class BaseEngine(Protocol):
    """What resolving asks of an engine."""

    def image_id(self, reference: str) -> Optional[str]:
        """The id of the image the engine holds under `reference`, or None."""

    def distribution_digest(self, reference: str) -> Optional[str]:
        """The registry's digest for `reference` through the engine (no pull), or None when the
        registry cannot tell; raises DistributionUnsupported when the engine lacks the endpoint."""


class BaseResolver:
    """Resolves a model's bases for the key, in one mode; registry answers are kept for its life
    (one resolver per pytest session, or per `madcache key`), so each base is asked once.

    `engine` may be None (no engine reachable): `local` then falls back like a missing image.
    `warn` is called once per reference whose registry cannot be reached in `registry` mode.
    `direct` asks a registry itself where the engine cannot (Podman); the remote layer provides it
    (`remote.registry.registry_digest`); without it such a base is keyed by its tag.
    """

    def __init__(self, engine: Optional[BaseEngine], engine_name: str = "",
                 warn: Optional[Callable[[str], None]] = None,
                 direct: Optional[Callable[[str], Optional[str]]] = None) -> None:
        self.engine = engine
        self.engine_name = engine_name
        self.warn = warn or (lambda text: None)
        self.direct = direct
        self._warned: set = set()
        self._answers: Dict[str, Tuple[Optional[str], str]] = {}

    def resolve(self, bases: Sequence[Base], mode: str) -> List[ResolvedBase]:
        if mode == "tag":
            return []
        return [self.resolve_one(b.reference, mode) for b in bases]

    def resolve_one(self, reference: str, mode: str) -> ResolvedBase:
        start = time.perf_counter()
        if mode == "local" and self.engine is not None:
            image_id = self.engine.image_id(reference)
            if image_id:
                return ResolvedBase(reference, image_id, "id", time.perf_counter() - start)
        digest, via = self._registry(reference)
        if digest:
            return ResolvedBase(reference, digest, via, time.perf_counter() - start)
        if mode == "registry" and reference not in self._warned:
            self._warned.add(reference)
            self.warn(f"base image {reference}: the registry could not be asked for its digest; "
                      "the key uses the tag as written (a rebuilt base under the same tag is not noticed)")
        return ResolvedBase(reference, reference, "tag", time.perf_counter() - start)

    def _registry(self, reference: str) -> Tuple[Optional[str], str]:
        if reference in self._answers:
            return self._answers[reference]
        answer: Tuple[Optional[str], str] = (None, "digest")
        try:
            if self.engine is None:
                raise DistributionUnsupported("no engine")
            answer = (self.engine.distribution_digest(reference), "digest")
        except DistributionUnsupported:
            answer = (self.direct(reference) if self.direct else None, "digest-direct")
        self._answers[reference] = answer
        return answer


def resolve_bases(dockerfile: Path, build_args: Mapping[str, str], mode: str,
                  resolver: Optional[BaseResolver]) -> Tuple[List[Base], List[ResolvedBase]]:
    """The one place bases are resolved for a key: parse, then resolve unless the mode is `tag`."""
    bases = parse_bases(dockerfile, build_args)
    if mode == "tag" or resolver is None:
        return bases, []
    return bases, resolver.resolve(bases, mode)


def key_bases(resolved: Sequence[ResolvedBase]) -> Dict[str, str]:
    """What joins the key (KeySpec.bases): reference -> "id:..." / "digest:..." / "tag"."""
    return {r.reference: r.component for r in resolved}
