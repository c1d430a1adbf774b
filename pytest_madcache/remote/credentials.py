"""Registry credentials, found the way Docker finds them.

In order: `MADCACHE_REMOTE_USER` / `MADCACHE_REMOTE_PASSWORD`; else the
Docker client config (`$DOCKER_CONFIG/config.json`, default
`~/.docker/config.json`): a `credHelpers` entry for the registry, else the
`credsStore` helper (both run as `docker-credential-NAME get`), else the
registry's `auths` entry (`auth`, `identitytoken`, `registrytoken`).  So
whatever `docker login` (or a CI login step) wrote is used as it is.

This module only reads: it never writes credentials anywhere, never puts
them in a message, an exception or a repr, and never hands them to
anything but the caller (the registry client sends them to the registry or
to the token service the registry names).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

__all__ = ["Credentials", "CredentialsError", "find_credentials", "docker_config_dir", "hint"]

HELPER_TIMEOUT = 60.0
_NOT_FOUND = re.compile(r"credentials not found|not found in (native )?keychain|no credentials", re.I)


class CredentialsError(RuntimeError):
    """The Docker config or a credential helper could not be read; the message names which (never a secret)."""


@dataclass(frozen=True)
class Credentials:
    """What to authenticate with, and where it came from (`source`, for messages).

    `identity_token` is an OAuth2 refresh token (`docker login` stores one for
    registries whose token service issues them); `registry_token` is a bearer
    token sent as it is.  The secrets never show in repr or str.
    """

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)
    source: str = ""

    def __str__(self) -> str:
        return f"credentials for {self.username or '(token)'} from {self.source}"

    @property
    def secrets(self) -> tuple:
        """Every secret value held (to scrub from text that goes out)."""
        return tuple(s for s in (self.password, self.identity_token, self.registry_token) if s)


def docker_config_dir(env: Mapping[str, str]) -> Path:
    """`$DOCKER_CONFIG`, else `~/.docker` (HOME from `env`), as the Docker CLI has it."""
    given = env.get("DOCKER_CONFIG", "").strip()
    if given:
        return Path(os.path.expanduser(given))
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".docker"


def _hostname(server: str) -> str:
    """A config key as the Docker CLI compares it: scheme and path dropped."""
    text = server.strip()
    for prefix in ("http://", "https://"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text.split("/", 1)[0]


def find_credentials(host: str, env: Mapping[str, str] = os.environ) -> Optional[Credentials]:
    """Credentials for registry `host` (`name[:port]`), or None when none are configured."""
    user = env.get("MADCACHE_REMOTE_USER", "")
    password = env.get("MADCACHE_REMOTE_PASSWORD", "")
    if user or password:
        return Credentials(user, password, source="MADCACHE_REMOTE_USER/MADCACHE_REMOTE_PASSWORD")
    path = docker_config_dir(env) / "config.json"
    config = _read_config(path)
    if config is None:
        return None
    helpers = config.get("credHelpers") or {}
    if not isinstance(helpers, dict):
        raise CredentialsError(f"{path}: credHelpers is not an object")
    helper = helpers.get(host) or next((v for k, v in helpers.items() if _hostname(k) == host), None)
    if helper:
        return _from_helper(str(helper), host, env, f"credHelpers in {path}")
    store = config.get("credsStore")
    if store:
        return _from_helper(str(store), host, env, f"credsStore in {path}")
    return _from_auths(config.get("auths") or {}, host, path)


def _read_config(path: Path) -> Optional[Mapping[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsError(f"cannot read the Docker config {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        # The position only: the text may hold secrets.
        raise CredentialsError(f"the Docker config {path} is not valid JSON (line {getattr(exc, 'lineno', '?')})") \
            from None
    if not isinstance(data, dict):
        raise CredentialsError(f"the Docker config {path} is not a JSON object")
    return data


def _from_auths(auths: Any, host: str, path: Path) -> Optional[Credentials]:
    if not isinstance(auths, dict):
        raise CredentialsError(f"{path}: auths is not an object")
    entry = auths.get(host)
    if entry is None:
        entry = next((v for k, v in auths.items() if _hostname(k) == host), None)
    if not isinstance(entry, dict):
        return None
    source = f"auths in {path}"
    username = password = ""
    raw = entry.get("auth") or ""
    if raw:
        try:
            decoded = base64.b64decode(str(raw), validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise CredentialsError(f"{path}: the auth value for {host} is not base64 of user:password") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise CredentialsError(f"{path}: the auth value for {host} is not base64 of user:password")
    identity = str(entry.get("identitytoken") or "")
    registry_token = str(entry.get("registrytoken") or "")
    if not (username or password or identity or registry_token):
        return None  # an empty entry: `docker login` with a credsStore leaves these
    return Credentials(username, password, identity, registry_token, source)


def _from_helper(name: str, host: str, env: Mapping[str, str], where: str) -> Optional[Credentials]:
    program = f"docker-credential-{name}"
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if not found:
        raise CredentialsError(f"the credential helper {program} ({where}) is not on PATH")
    try:
        proc = subprocess.run([found, "get"], input=host.encode(), capture_output=True, timeout=HELPER_TIMEOUT,
                              env=dict(env))
    except subprocess.TimeoutExpired:
        raise CredentialsError(f"{program} get did not answer within {HELPER_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise CredentialsError(f"cannot run {program}: {exc.strerror or exc}") from None
    said = (proc.stdout or b"").decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        if _NOT_FOUND.search(said) or _NOT_FOUND.search(proc.stderr.decode("utf-8", "replace")):
            return None
        # Its first line of error, which helpers write for people (never the secret, which goes to stdout on success).
        why = (proc.stderr.decode("utf-8", "replace").strip() or said).splitlines()[:1]
        raise CredentialsError(f"{program} get failed with exit code {proc.returncode}"
                               + (f": {why[0][:200]}" if why else ""))
    try:
        data = json.loads(said)
        username, secret = str(data.get("Username") or ""), str(data.get("Secret") or "")
    except (ValueError, AttributeError):
        raise CredentialsError(f"{program} get did not print the JSON credential helpers print") from None
    if not secret:
        return None
    source = f"{program} ({where})"
    if username == "<token>":  # the helper protocol's mark of an identity token
        return Credentials("", "", identity_token=secret, source=source)
    return Credentials(username, secret, source=source)


def hint(host: str) -> str:
    """What to do when a registry wants credentials and none were found."""
    return (f"run `docker login {host}` (madcache reads the Docker config: $DOCKER_CONFIG/config.json, "
            f"default ~/.docker/config.json, with its credHelpers and credsStore) or set "
            f"MADCACHE_REMOTE_USER and MADCACHE_REMOTE_PASSWORD")
