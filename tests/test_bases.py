"""Base images: which `FROM` lines name a base, and what each base joins the key as.

Parsing follows the builder: parser directives, continuations, comments, global `ARG`s
(build args override their defaults), substitution, `--platform=`, stages, `scratch`.
Resolving is shown with a scripted engine; tests/test_bases_engine.py uses real ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import pytest

from pytest_madcache.core.bases import (Base, BaseResolver, DistributionUnsupported, DockerfileError,
                                   key_bases, parse_bases, parse_froms, split_image_reference)
from pytest_madcache.core.key import KeySpec, key_for


def refs(text: str, **build_args: str) -> List[str]:
    return [f.reference for f in parse_froms(text, build_args) if f.kind == "base"]


def test_single_from_is_one_base():
    (only,) = parse_froms("FROM python:3.11-slim\nRUN true\n")
    assert (only.reference, only.platform, only.stage, only.kind, only.line) == ("python:3.11-slim", None, "0",
                                                                               "base", 1)


def test_multi_stage_bases_stage_references_and_scratch():
    text = """
FROM registry.example.com/ml/rocm-base:6.2 AS build
RUN make
FROM build AS test
FROM scratch
COPY --from=build /out /
from Python:3.11 as Runtime
FROM runtime
"""
    froms = parse_froms(text)
    assert [(f.reference, f.kind, f.stage) for f in froms] == [
        ("registry.example.com/ml/rocm-base:6.2", "base", "build"),
        ("build", "stage", "test"),
        ("scratch", "scratch", "2"),
        ("Python:3.11", "base", "runtime"),
        ("runtime", "stage", "4"),
    ]


def test_arg_before_from_uses_its_default_and_the_build_args_override_it():
    text = "ARG BASE=busybox\nARG TAG=1.36\nFROM ${BASE}:$TAG\n"
    assert refs(text) == ["busybox:1.36"]
    assert refs(text, TAG="1.37") == ["busybox:1.37"]
    assert refs(text, BASE="registry.example.com/tools") == ["registry.example.com/tools:1.36"]


def test_a_build_arg_without_a_global_arg_does_not_reach_from():
    # The builder only substitutes ARGs declared before the first FROM.
    assert refs("FROM img:${TAG:-stable}\n", TAG="nightly") == ["img:stable"]


def test_args_after_the_first_from_do_not_reach_later_froms():
    assert refs("FROM a\nARG T=x\nFROM b:${T:-y}\n") == ["a", "b:y"]


def test_default_and_alternative_forms():
    text = "ARG SET=yes\nARG EMPTY=\nFROM img:${MISSING:-d1}-${EMPTY:-d2}-${SET:+alt}-${MISSING:+never}x\n"
    assert refs(text) == ["img:d1-d2-alt-x"]


def test_a_global_arg_default_may_use_an_earlier_one():
    assert refs("ARG V=3.11\nARG IMG=python:${V}\nFROM $IMG\n") == ["python:3.11"]


def test_platform_flag_is_read_and_substituted():
    text = "ARG P=linux/arm64\nFROM --platform=$P base:1 AS a\nFROM --platform=linux/amd64 base:1\n"
    froms = parse_froms(text)
    assert [(f.reference, f.platform) for f in froms] == [("base:1", "linux/arm64"), ("base:1", "linux/amd64")]


def test_continuations_and_comments_inside_an_instruction():
    text = "FROM \\\n# a comment in the middle\n  busybox:1 \\\n  AS tools\n"
    (only,) = parse_froms(text)
    assert (only.reference, only.stage, only.line) == ("busybox:1", "tools", 1)


def test_escape_directive_switches_the_continuation_character():
    text = "# escape=`\nFROM windows-base:1 `\n  AS w\nFROM c:\\\\path-not-a-continuation\n"
    assert [f.reference for f in parse_froms(text)] == ["windows-base:1", "c:\\\\path-not-a-continuation"]


def test_escape_directive_is_ignored_after_the_first_instruction():
    text = "FROM a \\\n AS x\n# escape=`\nFROM b\n"
    assert [f.reference for f in parse_froms(text)] == ["a", "b"]


def test_a_from_that_substitutes_to_nothing_is_an_error():
    with pytest.raises(DockerfileError, match="names no image"):
        parse_froms("ARG BASE\nFROM $BASE\n")


def test_parse_bases_keeps_each_base_once(tmp_path: Path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM b:1 AS one\nFROM b:1 AS two\nFROM one\nFROM scratch\n")
    assert parse_bases(dockerfile) == [Base(reference="b:1", platform=None, stage="one")]


@pytest.mark.parametrize("reference, parts", [
    ("busybox", (None, "busybox", "latest")),
    ("library/busybox:1.36", (None, "library/busybox", "1.36")),
    ("127.0.0.1:5000/ml/base:6.2", ("127.0.0.1:5000", "ml/base", "6.2")),
    ("localhost/base", ("localhost", "base", "latest")),
    ("registry.example.com/base@sha256:ab", ("registry.example.com", "base", "sha256:ab")),
])
def test_split_image_reference(reference, parts):
    assert split_image_reference(reference) == parts


# -- resolving ------------------------------------------------------------------------


class ScriptedEngine:
    """Answers as an engine would, and counts the questions."""

    def __init__(self, ids: Dict[str, str], digests: Dict[str, Optional[str]], distribution: bool = True) -> None:
        self.ids, self.digests, self.distribution = ids, digests, distribution
        self.asked: List[str] = []

    def image_id(self, reference: str) -> Optional[str]:
        self.asked.append(f"id {reference}")
        return self.ids.get(reference)

    def distribution_digest(self, reference: str) -> Optional[str]:
        self.asked.append(f"distribution {reference}")
        if not self.distribution:
            raise DistributionUnsupported("no endpoint")
        return self.digests.get(reference)


B = [Base("a:1", None, "0"), Base("b:2", None, "1")]


def test_tag_mode_asks_nothing_and_adds_nothing():
    engine = ScriptedEngine({"a:1": "sha256:1"}, {})
    assert BaseResolver(engine).resolve(B, "tag") == [] and engine.asked == []


def test_local_mode_takes_the_id_else_the_registry_digest_else_the_tag():
    engine = ScriptedEngine({"a:1": "sha256:aaa"}, {"b:2": None})
    resolved = BaseResolver(engine, direct=lambda ref: None).resolve(B, "local")
    assert [(r.value, r.via) for r in resolved] == [("sha256:aaa", "id"), ("b:2", "tag")]
    assert key_bases(resolved) == {"a:1": "id:sha256:aaa", "b:2": "tag"}
    engine = ScriptedEngine({}, {"a:1": "sha256:d"})
    (first,) = BaseResolver(engine).resolve(B[:1], "local")
    assert (first.value, first.via) == ("sha256:d", "digest")


def test_registry_mode_asks_the_engine_once_per_session():
    engine = ScriptedEngine({}, {"a:1": "sha256:d1", "b:2": "sha256:d2"})
    resolver = BaseResolver(engine, engine_name="e")  # one per pytest session
    first = resolver.resolve(B, "registry")
    again = resolver.resolve(B, "registry")
    assert [r.component for r in first] == [r.component for r in again] == ["digest:sha256:d1", "digest:sha256:d2"]
    assert engine.asked == ["distribution a:1", "distribution b:2"]


def test_registry_mode_asks_the_registry_itself_where_the_engine_lacks_the_endpoint():
    engine = ScriptedEngine({}, {}, distribution=False)
    asked: List[str] = []
    resolver = BaseResolver(engine, direct=lambda ref: asked.append(ref) or "sha256:direct")
    (only,) = resolver.resolve(B[:1], "registry")
    assert (only.via, only.component, asked) == ("digest-direct", "digest:sha256:direct", ["a:1"])


def test_an_unreachable_registry_warns_once_and_keys_on_the_tag():
    warnings: List[str] = []
    resolver = BaseResolver(ScriptedEngine({}, {}), warn=warnings.append)
    resolver.resolve(B[:1], "registry")
    (only,) = resolver.resolve(B[:1], "registry")
    assert only.via == "tag" and len(warnings) == 1 and "a:1" in warnings[0]


def test_bases_change_the_key_only_when_given(tmp_path: Path):
    (tmp_path / "Dockerfile").write_text("FROM a:1\n")
    plain = KeySpec(image="m", dockerfile=tmp_path / "Dockerfile", context=tmp_path)
    old = key_for(plain)
    assert "bases" not in old.components
    tagged = key_for(KeySpec(image="m", dockerfile=tmp_path / "Dockerfile", context=tmp_path, bases={}))
    assert tagged.digest == old.digest
    one = key_for(KeySpec(image="m", dockerfile=tmp_path / "Dockerfile", context=tmp_path,
                          bases={"a:1": "id:sha256:1"}))
    two = key_for(KeySpec(image="m", dockerfile=tmp_path / "Dockerfile", context=tmp_path,
                          bases={"a:1": "id:sha256:2"}))
    assert len({old.digest, one.digest, two.digest}) == 3
    assert one.diff(two.components) == ["bases"]


# -- the setting and the mark ------------------------------------------------------------


def test_base_key_setting_precedence_and_errors():
    from pytest_madcache.core.settings import SettingsError, resolve

    assert resolve({}, {}, {}).base_key == "tag"
    ini = {"madcache_base_key": "local"}
    assert resolve({}, {}, ini).base_key == "local"
    assert resolve({}, {"MADCACHE_BASE_KEY": "Registry"}, ini).base_key == "registry"
    assert resolve({"base_key": "tag"}, {"MADCACHE_BASE_KEY": "registry"}, ini).sources["base_key"] == \
        "option --cache-base-key"
    with pytest.raises(SettingsError, match=r"invalid value 'digest' for base key from environment variable "
                                            r"MADCACHE_BASE_KEY: expected one of tag, local, registry"):
        resolve({}, {"MADCACHE_BASE_KEY": "digest"}, {})


class Mark:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def test_the_mark_keyword_wins_and_a_bad_one_names_the_test(tmp_path: Path):
    from pytest_madcache.core.model import ModelMarkError, spec_from_marks

    (tmp_path / "Dockerfile").write_text("FROM a:1\n")
    spec = spec_from_marks([Mark("m", base_key="local")], tmp_path, "t.py::test_x")
    assert spec.base_key == "local"
    assert spec_from_marks([Mark("m")], tmp_path, "t.py::test_x").base_key is None
    with pytest.raises(ModelMarkError, match=r"t.py::test_x: invalid value 'latest' for base_key from the model "
                                             r"mark: expected one of tag, local, registry"):
        spec_from_marks([Mark("m", base_key="latest")], tmp_path, "t.py::test_x")


# -- what the command shows ------------------------------------------------------------------


def test_madcache_key_lists_the_bases_as_written_in_tag_mode(tmp_path: Path):
    import io

    from pytest_madcache.cli import main

    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("ARG V=1\nFROM busybox:$V AS a\nFROM a\nFROM scratch\n")
    out = io.StringIO()
    assert main(["key", "--cache-dir", str(tmp_path / "c"), "--image", "m", "--context", str(tmp_path / "ctx"),
                 "--build-arg", "V=2"], env={}, stdout=out) == 0
    assert "Base Images (base_key=tag):\n  busybox:2 -> busybox:2 (the tag as written)\n" in out.getvalue()
    assert '"bases"' not in out.getvalue()


def test_a_miss_explained_by_a_base_names_it_with_both_values():
    from pytest_madcache.cli import _explain

    mine = {"bases": {"a:1": "id:sha256:new", "b:2": "tag"}}
    theirs = {"bases": {"a:1": "id:sha256:old", "b:2": "tag"}}
    assert _explain("bases", mine, theirs) == "bases: a:1 (id:sha256:old -> id:sha256:new)"
    assert _explain("dockerfile_sha256", mine, theirs) == "dockerfile_sha256"


def test_a_bad_flag_value_is_a_usage_error_naming_it(pytester):
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--cache-base-key", "newest")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid value 'newest' for base key from option --cache-base-key: "
                                 "expected one of tag, local, registry*"])
