"""Prepare the realistic example suite: its Python base image and its wheels.

Run once before the suite (`python examples/realistic/prepare.py`); the suite's
conftest runs it too and then finds everything in place.  It stands for what a
user's machine already has: a Python base image pulled from a registry and a
PyPI mirror.  With no registry to pull from, the base is made from Debian's
packages:

- `mmdebstrap` (installed with apt when missing) bootstraps Debian 12 with
  python3, python3-pip, python3-numpy and OpenBLAS from the Debian mirror that
  this machine's apt configuration names; the tarball is kept under
  `~/.cache/pytest-madcache/examples/` so the next engine imports it in seconds;
- the tarball is imported into the engine (`docker import` through the API) as
  `BASE_IMAGE`, once per engine;
- each model's pinned `requirements.txt` is fetched as wheels for that base's
  Python with `pip download` (pip's configured index) into the model's build
  context (`wheels/`, ignored by git), where the build installs them with
  `pip install --no-index`: the build itself needs no network.

It must not build model images nor touch the madcache cache.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"

BASE_IMAGE = "madcache-examples/debian12-python:3.11"
BASE_LABEL = "org.madcache.example-base"
SUITE = "bookworm"
PYTHON_VERSION = "3.11"  # Debian 12's python3
PACKAGES = ("python3", "python3-pip", "python3-numpy", "libopenblas0-pthread", "ca-certificates")
# Documentation, man pages and translations stay out of the image, as in slim Python images.
DPKG_OPTIONS = ("path-exclude=/usr/share/doc/*", "path-exclude=/usr/share/man/*",
                "path-exclude=/usr/share/locale/*", "path-exclude=/usr/share/info/*")
IMPORT_CHANGES = ("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  "ENV PIP_BREAK_SYSTEM_PACKAGES=1", 'CMD ["python3"]')
CODENAMES = {"buster", "bullseye", "bookworm", "trixie", "forky", "sid", "stable", "testing", "unstable"}


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "pytest-madcache" / "examples"


def recipe_digest() -> str:
    """What the base tarball is made of; a change makes a new tarball and a new import."""
    text = "\n".join([SUITE, "variant=apt", *PACKAGES, *DPKG_OPTIONS, *IMPORT_CHANGES])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def base_tarball() -> Path:
    return cache_dir() / f"debian12-python-{recipe_digest()}.tar"


# -- the Debian mirror, from apt's configuration -------------------------------------------------

def _deb822_entries(text: str) -> Iterator[Tuple[List[str], List[str], List[str]]]:
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.split()
        if fields.get("enabled", ["yes"])[0].lower() == "no":
            continue
        yield fields.get("types", []), fields.get("uris", []), fields.get("suites", [])


def _one_line_entries(text: str) -> Iterator[Tuple[List[str], List[str], List[str]]]:
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 3 and words[0] in ("deb", "deb-src"):
            if words[1].startswith("["):  # options: deb [signed-by=...] URI suite ...
                while words and not words[0].endswith("]"):
                    words.pop(0)
                words = ["deb"] + words[1:]
            if len(words) >= 3:
                yield [words[0]], [words[1]], [words[2]]


def debian_mirror(etc: Path = Path("/etc/apt")) -> str:
    """The first Debian archive that apt's sources name (not its security archive).

    MADCACHE_EXAMPLES_DEBIAN_MIRROR overrides it.
    """
    override = os.environ.get("MADCACHE_EXAMPLES_DEBIAN_MIRROR")
    if override:
        return override
    files = sorted((etc / "sources.list.d").glob("*.sources")) + sorted((etc / "sources.list.d").glob("*.list"))
    files.append(etc / "sources.list")
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        entries = _deb822_entries(text) if path.suffix == ".sources" else _one_line_entries(text)
        for types, uris, suites in entries:
            debian = any(suite.split("-")[0] in CODENAMES for suite in suites)
            security = any(suite.endswith("-security") for suite in suites)
            if "deb" in types and uris and debian and not security:
                return uris[0]
    raise RuntimeError(f"no Debian archive in apt's sources under {etc}; "
                       "set MADCACHE_EXAMPLES_DEBIAN_MIRROR to a Debian mirror's URL")


# -- the base image --------------------------------------------------------------------------------

def install_mmdebstrap(log=sys.stderr) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError("mmdebstrap is missing and cannot be installed here (needs root and apt-get): "
                           "install it with apt-get install mmdebstrap")
    print("installing mmdebstrap with apt-get", file=log, flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "mmdebstrap"]):
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}")


def make_base_tarball(log=sys.stderr) -> Path:
    """The base root filesystem as a tarball, made once per machine and kept in cache_dir()."""
    target = base_tarball()
    if target.is_file():
        return target
    if shutil.which("mmdebstrap") is None:
        install_mmdebstrap(log)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp.tar")
    cmd = ["mmdebstrap", "--quiet", "--variant=apt", "--format=tar", "--include=" + ",".join(PACKAGES),
           *(f"--dpkgopt={o}" for o in DPKG_OPTIONS), SUITE, str(tmp), debian_mirror()]
    print(f"bootstrapping Debian 12 with {', '.join(PACKAGES)} (mmdebstrap, once per machine)",
          file=log, flush=True)
    try:
        subprocess.run(cmd, check=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def ensure_base_image(client=None, log=sys.stderr) -> str:
    """BASE_IMAGE in the engine, imported from the tarball when missing or made by another recipe."""
    import docker

    client = client or docker.from_env(timeout=600)
    wanted = recipe_digest()
    try:
        image = client.images.get(BASE_IMAGE)
        if (image.labels or {}).get(BASE_LABEL) == wanted:
            return image.id
    except docker.errors.ImageNotFound:
        pass
    tarball = make_base_tarball(log)
    repository, tag = BASE_IMAGE.rsplit(":", 1)
    print(f"importing {tarball.name} into the engine as {BASE_IMAGE}", file=log, flush=True)
    client.api.import_image_from_file(str(tarball), repository=repository, tag=tag,
                                      changes=[*IMPORT_CHANGES, f"LABEL {BASE_LABEL}={wanted}"])
    try:
        return client.images.get(BASE_IMAGE).id
    except docker.errors.ImageNotFound:  # Podman 4's import ignores the tag: the image came in as :latest
        imported = client.images.list(filters={"label": f"{BASE_LABEL}={wanted}"})
        if not imported:
            raise
        imported[0].tag(repository, tag)
        return client.images.get(BASE_IMAGE).id


# -- wheels ---------------------------------------------------------------------------------------

def _platforms() -> List[str]:
    machine = platform.machine()
    return [f"manylinux_2_{minor}_{machine}" for minor in (36, 35, 34, 31, 28, 27, 24, 17)] + \
        [f"manylinux2014_{machine}", "any"]


def ensure_wheels(model: Path, log=sys.stderr) -> Path:
    """The wheels of `model`/requirements.txt for the base's Python, in `model`/wheels."""
    requirements = model / "requirements.txt"
    wheels = model / "wheels"
    stamp = wheels / "requirements.sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return wheels
    print(f"fetching the wheels of {model.name} with pip download", file=log, flush=True)
    abi = "cp" + PYTHON_VERSION.replace(".", "")
    with tempfile.TemporaryDirectory(dir=model, prefix=".wheels.") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", abi, "--abi", "abi3",
               "--abi", "none", *(a for p in _platforms() for a in ("--platform", p)),
               "--dest", tmp, "--requirement", str(requirements)]
        subprocess.run(cmd, check=True)
        Path(tmp, stamp.name).write_text(digest + "\n")
        if wheels.exists():
            shutil.rmtree(wheels)
        os.replace(tmp, wheels)
        os.makedirs(tmp)  # TemporaryDirectory removes it
    return wheels


def models() -> List[Path]:
    return sorted(p for p in MODELS.iterdir() if (p / "Dockerfile").is_file())


def prepare(client=None, log=sys.stderr) -> None:
    for model in models():
        ensure_wheels(model, log)
    ensure_base_image(client, log)


def main() -> int:
    start = time.monotonic()
    prepare()
    print(f"realistic examples prepared in {time.monotonic() - start:.1f} s "
          f"(base image {BASE_IMAGE}, wheels of {', '.join(m.name for m in models())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
