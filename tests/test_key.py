"""Cache keys: stable for the same inputs, sensitive to every byte the build sees, blind to the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_madcache.core.key import KeyError_, KeySpec, key_for, context_digest
from pytest_madcache.core.model import ModelSpec, run_config


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    """A small build context: Dockerfile, a model file, a script, an ignored log dir."""
    c = tmp_path / "ctx"
    (c / "src").mkdir(parents=True)
    (c / "logs").mkdir()
    (c / "Dockerfile").write_text("FROM scratch\nCOPY src /src\n")
    (c / "src" / "model.py").write_text("print('model')\n")
    (c / "src" / "run.sh").write_text("#!/bin/sh\necho run\n")
    (c / "logs" / "build.log").write_text("old log\n")
    (c / "notes.tmp").write_text("scratch\n")
    (c / ".dockerignore").write_text("# comment\nlogs\n*.tmp\n")
    return c


def key_of(ctx: Path, **kw) -> str:
    return key_for(KeySpec(image="ci-model", context=ctx, **kw)).digest


def test_same_inputs_same_key(ctx: Path) -> None:
    """Computing the key twice gives the same sha256 hex digest."""
    a, b = key_of(ctx), key_of(ctx)
    assert a == b and len(a) == 64 and int(a, 16) >= 0


def test_key_is_stable_across_processes(ctx: Path) -> None:
    """Another interpreter (another hash seed) computes the same key: nothing depends on set/dict order."""
    spec = dict(params={"b": 2, "a": {"y": [1, 2], "x": None}}, model_tags=["z", "a"], build_args={"V": "1"})
    code = (
        "import sys; from pathlib import Path; from pytest_madcache.core.key import KeySpec, key_for;"
        f"print(key_for(KeySpec(image='ci-model', context=Path(sys.argv[1]), **{spec!r})).digest)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(ctx)], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONHASHSEED="12345"))
    assert out.stdout.strip() == key_of(ctx, **spec)


def test_context_digest_is_the_entry_lines_hashed_in_order(ctx: Path) -> None:
    """Keys already in caches were made of one canonical JSON line per entry the engine receives;
    however the digest is computed, it stays that (a change would make every cache miss once)."""
    import hashlib
    import stat

    (ctx / "src" / "link").symlink_to("model.py")
    (ctx / "src" / "run.sh").chmod(0o755)
    odd = ['we"ird\\name.txt', "tab\there.txt", "ünïcode €.txt"]  # escaped by JSON, or not
    for name in odd:
        (ctx / "src" / name).write_text(name)
    (ctx / "src" / "quoted-link").symlink_to('we"ird\\name.txt')
    expected = hashlib.sha256()
    entries = ["Dockerfile", "src", "src/link", "src/model.py", "src/run.sh", ".dockerignore", "src/quoted-link",
               *(f"src/{name}" for name in odd)]
    for rel in sorted(entries):
        full = ctx / rel
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            kind, content = "l", os.readlink(full)
        elif stat.S_ISDIR(st.st_mode):
            kind, content = "d", ""
        else:
            kind, content = "f", hashlib.sha256(full.read_bytes()).hexdigest()
        line = [rel, kind, oct(stat.S_IMODE(st.st_mode)), content]
        expected.update(json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
    for _ in range(2):  # the second time from the process's memory of the context
        assert context_digest(ctx) == (expected.hexdigest(), len(entries))


def test_dict_and_tag_ordering_does_not_matter(ctx: Path) -> None:
    """Params, build args, additional context and model tags are canonical: their order is irrelevant."""
    one = key_of(ctx, params={"a": 1, "b": {"c": 2, "d": 3}}, build_args={"X": "1", "Y": "2"},
                 additional_context={"p": 1, "q": 2}, model_tags=["fast", "gpu"])
    two = key_of(ctx, params={"b": {"d": 3, "c": 2}, "a": 1}, build_args={"Y": "2", "X": "1"},
                 additional_context={"q": 2, "p": 1}, model_tags=["gpu", "fast"])
    assert one == two


def test_every_component_counts(ctx: Path) -> None:
    """Image name, tags, params, build args, context, node count each change the key."""
    base = key_of(ctx)
    variants = [
        key_for(KeySpec(image="other", context=ctx)).digest,
        key_of(ctx, model_tags=["gpu"]),
        key_of(ctx, params={"batch": 8}),
        key_of(ctx, build_args={"BASE": "x"}),
        key_of(ctx, additional_context={"gpu_vendor": "AMD"}),
        key_of(ctx, nodes=2),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_changed_dockerfile_byte_changes_key(ctx: Path) -> None:
    """One changed byte in the Dockerfile gives a new key (madengine keyed on the path and served stale images)."""
    before = key_for(KeySpec(image="ci-model", context=ctx))
    df = ctx / "Dockerfile"
    df.write_bytes(df.read_bytes().replace(b"/src", b"/srd"))
    after = key_for(KeySpec(image="ci-model", context=ctx))
    assert after.digest != before.digest
    # The Dockerfile is hashed on its own and as part of the context the engine receives.
    assert after.diff(before.components) == ["context_sha256", "dockerfile_sha256"]


def test_changed_context_byte_changes_key_even_with_the_old_mtime(ctx: Path) -> None:
    """A same-size edit of a context file changes the key even if its mtime is put back."""
    f = ctx / "src" / "model.py"
    before = key_for(KeySpec(image="ci-model", context=ctx))
    st = f.stat()
    f.write_text("print('mode!')\n")
    assert f.stat().st_size == st.st_size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = key_for(KeySpec(image="ci-model", context=ctx))
    assert after.digest != before.digest
    assert after.diff(before.components) == ["context_sha256"]


def test_added_and_removed_files_change_key(ctx: Path) -> None:
    """A new file in the context, or a deleted one, changes the key."""
    before = key_of(ctx)
    (ctx / "src" / "extra.py").write_text("x = 1\n")
    added = key_of(ctx)
    (ctx / "src" / "extra.py").unlink()
    (ctx / "src" / "run.sh").unlink()
    removed = key_of(ctx)
    assert len({before, added, removed}) == 3


def test_touching_mtimes_does_not_change_key(ctx: Path) -> None:
    """Touching every file (new mtimes, same bytes) keeps the key: a fresh checkout still hits."""
    before = key_of(ctx)
    for path in ctx.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    assert key_of(ctx) == before


def test_editing_an_ignored_file_does_not_change_key(ctx: Path) -> None:
    """Files `.dockerignore` excludes never reach the engine, so editing them keeps the key."""
    before = key_of(ctx)
    (ctx / "logs" / "build.log").write_text("a completely different log\n")
    (ctx / "logs" / "new.log").write_text("more\n")
    (ctx / "notes.tmp").write_text("other scratch\n")
    assert key_of(ctx) == before
    (ctx / ".dockerignore").write_text("logs\n")  # *.tmp now reaches the engine
    assert key_of(ctx) != before


def test_mode_change_changes_key(ctx: Path) -> None:
    """chmod +x changes what the image contains, so it changes the key."""
    before = key_of(ctx)
    script = ctx / "src" / "run.sh"
    script.chmod(script.stat().st_mode | 0o111)
    assert key_of(ctx) != before


def test_symlink_target_changes_key(ctx: Path) -> None:
    """A symlink is hashed by its target."""
    link = ctx / "src" / "current"
    link.symlink_to("model.py")
    before = key_of(ctx)
    link.unlink()
    link.symlink_to("run.sh")
    assert key_of(ctx) != before


def test_dockerfile_outside_context_is_hashed(ctx: Path, tmp_path: Path) -> None:
    """A Dockerfile given separately (outside the context) is hashed by content too."""
    df = tmp_path / "ci.Dockerfile"
    df.write_text("FROM scratch\n")
    before = key_for(KeySpec(image="m", context=ctx, dockerfile=df))
    df.write_text("FROM scratch\nCOPY src /src\n")
    after = key_for(KeySpec(image="m", context=ctx, dockerfile=df))
    assert after.diff(before.components) == ["dockerfile_sha256"]


def test_context_digest_counts_only_what_the_engine_receives(ctx: Path) -> None:
    """The context digest covers Dockerfile, .dockerignore and src/, not the ignored files."""
    _, count = context_digest(ctx, "Dockerfile")
    # Dockerfile, .dockerignore, src, src/model.py, src/run.sh
    assert count == 5


def test_secret_build_arg_is_hashed_never_stored(ctx: Path) -> None:
    """A secret build arg changes the key with its value, but its plaintext never appears in the components."""
    secret = "hunter2-s3cr3t-token"
    spec = dict(build_args={"HF_TOKEN": secret, "VERSION": "1.2"}, secrets={"HF_TOKEN"})
    key = key_for(KeySpec(image="m", context=ctx, **spec))
    other = key_for(KeySpec(image="m", context=ctx, build_args={"HF_TOKEN": "other", "VERSION": "1.2"},
                                secrets={"HF_TOKEN"}))
    dump = json.dumps(key.components)
    assert secret not in dump
    assert key.digest != other.digest
    assert set(key.components["build_args"]["HF_TOKEN"]) == {"secret_sha256"}
    assert key.components["build_args"]["VERSION"] == "1.2"  # non-secret args stay readable
    assert key.digest == key_for(KeySpec(image="m", context=ctx, **spec)).digest
    # What an entry records about the run (model.run_config) shows the secret as *** only.
    recorded = run_config(replace(_spec(ctx), build_args=spec["build_args"], secrets=("HF_TOKEN",)), {}, {})
    assert recorded["build_args"] == {"HF_TOKEN": "***", "VERSION": "1.2"}


def test_secret_context_entry_is_hashed_never_stored(ctx: Path) -> None:
    """A secret additional-context entry (even a structured one) is a hash only."""
    secret = {"user": "ci", "password": "p@ssw0rd-very-secret"}
    key = key_for(KeySpec(image="m", additional_context={"registry_auth": secret, "gpu": "AMD"},
                              secrets=["registry_auth"]))
    other = key_for(KeySpec(image="m", additional_context={"registry_auth": dict(secret, password="x"),
                                                               "gpu": "AMD"}, secrets=["registry_auth"]))
    dump = json.dumps(key.components)
    assert "p@ssw0rd-very-secret" not in dump
    assert key.digest != other.digest
    assert key.components["additional_context"]["gpu"] == "AMD"
    recorded = run_config(replace(_spec(ctx), secrets=("registry_auth",)), {}, {"registry_auth": secret, "gpu": "AMD"})
    assert recorded["additional_context"] == {"registry_auth": "***", "gpu": "AMD"}


def test_secret_hash_is_not_a_plain_sha256(ctx: Path) -> None:
    """The secret's hash is domain-separated: it is not the bare sha256 of the value (no lookup-table match)."""
    import hashlib

    key = key_for(KeySpec(image="m", build_args={"T": "abc"}, secrets={"T"}))
    digest = key.components["build_args"]["T"]["secret_sha256"]
    assert digest not in (hashlib.sha256(b"abc").hexdigest(), hashlib.sha256(b'"abc"').hexdigest())


@pytest.mark.parametrize(
    "spec, where",
    [
        (dict(params={"model": {"opts": object()}}), "parameters['model']['opts']"),
        (dict(params={"weights": b"\x00\x01"}), "parameters['weights']"),
        (dict(params={"shape": [1, 2, {3, 4}, complex(1, 2)]}), "parameters['shape'][3]"),
        (dict(build_args={"ARG": b"bytes"}), "build args['ARG']"),
        (dict(additional_context={"ctx": {(1, 2): "tuple key"}}), "additional context['ctx']"),
    ],
)
def test_unsupported_values_raise_naming_where(spec, where) -> None:
    """A value that has no canonical JSON form raises KeyError_ saying where it is."""
    with pytest.raises(KeyError_) as info:
        key_for(KeySpec(image="m", **spec))
    assert where in str(info.value)


def test_bad_specs_raise(tmp_path: Path) -> None:
    """A missing Dockerfile, a context that is not a directory, bad nodes or image name raise KeyError_."""
    with pytest.raises(KeyError_, match="does not exist"):
        key_for(KeySpec(image="m", context=tmp_path))  # no Dockerfile in it
    with pytest.raises(KeyError_, match="not a directory"):
        (tmp_path / "f").write_text("x")
        key_for(KeySpec(image="m", dockerfile=tmp_path / "f", context=tmp_path / "f"))
    with pytest.raises(KeyError_, match="nodes"):
        key_for(KeySpec(image="m", nodes=0))
    with pytest.raises(KeyError_, match="image name"):
        key_for(KeySpec(image=""))


def test_supported_exotic_values_are_canonical() -> None:
    """Tuples equal lists, sets are sorted, paths are strings: equal meaning, equal key."""
    a = key_for(KeySpec(image="m", params={"t": (1, 2), "s": {"b", "a"}, "p": Path("/x")}))
    b = key_for(KeySpec(image="m", params={"t": [1, 2], "s": ["a", "b"], "p": "/x"}))
    assert a.digest == b.digest


def _spec(ctx: Path) -> ModelSpec:
    return ModelSpec(name="m", context=ctx, dockerfile=ctx / "Dockerfile", image="ci-m")
