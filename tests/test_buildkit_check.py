"""A Dockerfile that needs BuildKit where no docker-buildx is found: one line naming the Dockerfile
line, that docker-buildx was not found, where it was looked for and how to get it, instead of the
classic builder's error.

The unit tests need no engine: the Engine's client refuses every use, and what the engine is
(product, version) is given, as the store would have asked it.  The last test builds on a real
Debian 12 engine (dockerd 20.10, classic builder only) with buildx hidden.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from pytest_madcache.engines import buildkit
from pytest_madcache.engines.buildkit_check import needs_buildkit
from pytest_madcache.engines.docker import BuildFailed, Engine, EngineError, EngineInfo
from tests.plugin_helpers import remove_images, tiny_context

DOCKER_20 = EngineInfo("docker", "20.10.24+dfsg1", "1.41", "classic")
DOCKER_26 = EngineInfo("docker", "26.1.5+dfsg1", "1.45", "classic")
PODMAN = EngineInfo("podman", "4.3.1", "1.41", "podman")
HEAD = "FROM scratch\nCOPY busybox /bin/busybox\n"


# -- which instructions need BuildKit -----------------------------------------------------------

@pytest.mark.parametrize("text,line,feature", [
    ("RUN --mount=type=cache,target=/x true", 3, "RUN --mount"),
    ("run --mount=type=secret,id=t cat /run/secrets/t", 3, "RUN --mount"),
    ("RUN --network=none true", 3, "RUN --network"),
    ("RUN --security=insecure true", 3, "RUN --security"),
    ("COPY --chmod=755 busybox /b", 3, "COPY --chmod"),
    ("ARG M=755\nCOPY --chown=0:0 --chmod=$M busybox /b", 4, "COPY --chmod"),
    ("ADD --chmod=644 busybox /b", 3, "ADD --chmod"),
    ("COPY <<EOF /a.txt\nhi\nEOF", 3, "a heredoc (<<EOF)"),
    ("RUN echo a && \\\n    # a comment inside\n    echo b\nRUN \\\n  --mount=type=cache,target=/x true", 6,
     "RUN --mount"),
])
def test_needs_buildkit_on_every_engine(text, line, feature) -> None:
    for version in (None, DOCKER_20.version, DOCKER_26.version):
        need = needs_buildkit(HEAD + text + "\n", version, "ctx/Dockerfile")
        assert need is not None and (need.line, need.feature) == (line, feature), (version, need)
        assert need.where().startswith(f"ctx/Dockerfile line {line} (")


@pytest.mark.parametrize("text,feature", [
    ("RUN <<EOF\necho hi\nEOF", "a heredoc (<<EOF)"),
    ("RUN cat <<-'END' > /f\n\thi\n\tEND", "a heredoc (<<END)"),
    ("COPY --link busybox /b", "COPY --link"),
    ("ADD --link busybox /b", "ADD --link"),
    ("ADD --checksum=sha256:00 busybox /b", "ADD --checksum"),
    ("ADD --keep-git-dir=true busybox /b", "ADD --keep-git-dir"),
])
def test_needs_buildkit_on_engines_older_than_23(text, feature) -> None:
    """dockerd 20.10's classic builder refuses these; 26.1's accepts them (both measured)."""
    need = needs_buildkit(HEAD + text + "\n", DOCKER_20.version)
    assert need is not None and need.feature == feature and need.line == 3
    assert needs_buildkit(HEAD + text + "\n", DOCKER_26.version) is None
    assert needs_buildkit(HEAD + text + "\n", None) is None


@pytest.mark.parametrize("text", [
    'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
    "RUN echo $((1 << 2)) && cat <<<word",
    "COPY --chown=0:0 busybox /b",
    "# RUN --mount=type=cache,target=/x true",
    "ENV X=--mount\nLABEL a=--link",
    "RUN echo --mount=type=cache",  # a word of the command, not a flag of RUN
    # a heredoc's body is not read as instructions (on 26.1 the RUN heredoc itself is fine)
    "RUN <<EOF\nRUN --mount=type=cache,target=/x true\nEOF",
])
def test_what_the_classic_builder_builds_is_left_alone(text) -> None:
    assert needs_buildkit(HEAD + text + "\n", DOCKER_26.version) is None


def test_the_escape_directive_is_followed() -> None:
    text = "# escape=`\nFROM scratch\nRUN echo a `\n  && echo b\nRUN `\n  --mount=type=cache,target=/x true\n"
    need = needs_buildkit(text)
    assert need is not None and need.line == 5 and need.feature == "RUN --mount"


# -- Engine.build: the one line, before the engine is sent anything ---------------------------------

class Reached(Exception):
    """The build got past the check and used the engine."""


class _NoAPI:
    def __getattr__(self, name):
        raise Reached(name)


class NoEngine:
    """A client that refuses every use: what the check does happens without an engine."""

    api = _NoAPI()


@pytest.fixture
def no_buildx(monkeypatch, tmp_path) -> Path:
    """No buildx anywhere buildx_binary looks; returns the plugin dir it looks in."""
    monkeypatch.delenv("MADCACHE_BUILDX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setattr(buildkit, "PLUGIN_DIRS", (str(tmp_path / "plugins"),))
    assert buildkit.buildx_binary() is None
    return tmp_path / "plugins"


def engine(info) -> Engine:
    return Engine(client=NoEngine(), _info=info)


def context(tmp_path: Path, extra: str) -> Path:
    directory = tmp_path / "ctx"
    directory.mkdir(exist_ok=True)
    (directory / "Dockerfile").write_text(HEAD + extra + "\n")
    return directory


def test_run_mount_without_buildx_fails_with_one_line(no_buildx, tmp_path) -> None:
    ctx = context(tmp_path, "RUN --mount=type=cache,target=/x true")
    with pytest.raises(BuildFailed) as caught:
        engine(DOCKER_20).build(ctx, tag="x:1")
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        f"{ctx / 'Dockerfile'} line 3 (RUN --mount=type=cache,target=/x true) needs BuildKit (RUN --mount), "
        f"but docker-buildx was not found (MADCACHE_BUILDX is not set; looked on PATH and in "
        f"{tmp_path / 'docker-config' / 'cli-plugins'}, {no_buildx}): install your distribution's docker-buildx "
        "package (docker-buildx-plugin with Docker's own packages), or set MADCACHE_BUILDX=/path/to/docker-buildx")
    assert caught.value.log == f"{ctx / 'Dockerfile'} line 3 (RUN --mount=type=cache,target=/x true)"


def test_a_dockerfile_elsewhere_is_the_one_read(no_buildx, tmp_path) -> None:
    ctx = context(tmp_path, "RUN true")
    other = tmp_path / "build.Dockerfile"
    other.write_text(HEAD + "COPY <<EOF /a\nhi\nEOF\n")
    with pytest.raises(BuildFailed, match=r"build\.Dockerfile line 3 \(COPY <<EOF /a\) needs BuildKit \(a heredoc"):
        engine(DOCKER_26).build(ctx, dockerfile=other)


def test_a_madcache_buildx_that_is_not_executable_is_named(no_buildx, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MADCACHE_BUILDX", str(tmp_path / "nowhere" / "docker-buildx"))
    ctx = context(tmp_path, "COPY --chmod=755 busybox /b")
    with pytest.raises(BuildFailed) as caught:
        engine(DOCKER_26).build(ctx)
    assert (f"needs BuildKit (COPY --chmod), but docker-buildx was not found (MADCACHE_BUILDX="
            f"{tmp_path / 'nowhere' / 'docker-buildx'} is not an executable file): install") in str(caught.value)


def test_builder_legacy_says_so(no_buildx, tmp_path) -> None:
    binary = no_buildx / "docker-buildx"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\nexit 1\n")
    binary.chmod(0o755)
    ctx = context(tmp_path, "RUN --mount=type=cache,target=/x true")
    with pytest.raises(BuildFailed) as caught:
        engine(DOCKER_26).build(ctx, builder="legacy")
    assert ("needs BuildKit (RUN --mount), but the model asks for builder='legacy' (the classic builder refuses "
            f"it): drop builder='legacy' so that BuildKit builds it; docker-buildx is at {binary}") in str(caught.value)


def test_builder_buildkit_without_buildx_says_where_it_looked(no_buildx, tmp_path) -> None:
    ctx = context(tmp_path, "RUN true")
    with pytest.raises(EngineError) as caught:
        engine(DOCKER_26).build(ctx, builder="buildkit")
    assert not isinstance(caught.value, BuildFailed)
    assert str(caught.value).startswith("builder='buildkit' cannot be used: docker-buildx was not found "
                                        "(MADCACHE_BUILDX is not set; looked on PATH and in ")


@pytest.mark.parametrize("info,extra", [
    (PODMAN, "RUN --mount=type=cache,target=/x true"),  # Podman's own builder has it
    (DOCKER_26, "RUN <<EOF\ntrue\nEOF"),  # 26.1's classic builder takes a RUN heredoc
    (DOCKER_26, "COPY --link busybox /b"),
])
def test_what_this_engine_builds_goes_to_it(no_buildx, tmp_path, info, extra) -> None:
    with pytest.raises(Reached):
        engine(info).build(context(tmp_path, extra))


def test_a_plain_dockerfile_does_not_ask_the_engine_what_it_is(no_buildx, tmp_path) -> None:
    """No feature in the Dockerfile: the engine's kind is not asked (no `version`/`info` call)."""
    with pytest.raises(Reached) as caught:
        Engine(client=NoEngine()).build(context(tmp_path, "RUN true"))
    assert str(caught.value) == "build"


# -- on a real engine ----------------------------------------------------------------------------

MODEL_TEST = """
import pytest

@pytest.mark.model("{name}", context="ctx")
def test_model(model_image):
    pass
"""


@pytest.mark.engine
def test_a_model_needing_buildkit_fails_with_the_line_on_debian12(pytester, engine, no_buildx, monkeypatch) -> None:
    """dockerd 20.10 (the Debian 12 kind) with buildx hidden: the model test fails with the one
    line, and nothing of the classic builder's `the --mount option requires BuildKit`."""
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    assert buildkit.buildx_binary() is None, "buildx is still found"
    name = f"bkneed{secrets.token_hex(3)}"
    tiny_context(pytester.path / "ctx", ["RUN --mount=type=cache,target=/x true"])
    pytester.makepyfile(MODEL_TEST.format(name=name))
    try:
        result = pytester.runpytest("-p", "no:cacheprovider", f"--cache-dir={pytester.path / 'cache'}",
                                    "--enable-cache")
    finally:
        remove_images(engine, f"madcache.model={name}")
    if engine.info.product != "docker":  # Podman builds RUN --mount with its own builder: never refused
        result.assert_outcomes(passed=1)
        assert "needs BuildKit" not in result.stdout.str()
        return
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    dockerfile = pytester.path / "ctx" / "Dockerfile"
    result.stdout.fnmatch_lines([
        f"*the Docker build of model '{name}' failed: {dockerfile} line 4 (RUN --mount=type=cache,target=/x true) "
        "needs BuildKit (RUN --mount), but docker-buildx was not found (MADCACHE_BUILDX is not set; looked on "
        "PATH and in *): install your distribution's docker-buildx package (docker-buildx-plugin with Docker's "
        "own packages), or set MADCACHE_BUILDX=/path/to/docker-buildx"])
    assert "requires BuildKit" not in out
