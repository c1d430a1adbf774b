"""The `model` mark: parsed and validated into a ModelSpec, independent of pytest.

`@pytest.mark.model("bert", dockerfile="docker/bert.Dockerfile", ...)` may sit
on a module (`pytestmark`), a class or a function; the closest mark wins per
keyword, so a module can name the model and a test can change its command.
Paths are relative to the directory of the test file, so a suite can be run
from anywhere and still hash the same files.

It must not build, run or cache anything: marks in, plain values out.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from pytest_madcache.core.images import BUILDERS
from pytest_madcache.core.key import KeySpec, exclude_patterns
from pytest_madcache.core.marks import MARK_KWARGS
from pytest_madcache.core.perfspec import PerfSpec, perf_spec
from pytest_madcache.core.run import RunOptions, normalise_volumes
from pytest_madcache.util.refs import ImageRef

__all__ = ["ModelSpec", "ModelMarkError", "MARK_KWARGS", "spec_from_marks", "select_params", "resolve_build_args",
           "default_image_name"]


class ModelMarkError(ValueError):
    """A `model` mark we cannot use; the message names the test."""


@dataclass(frozen=True)
class ModelSpec:
    """What to build and how to run it, with paths made absolute."""

    name: str
    context: Path
    dockerfile: Path
    image: str
    image_tag: Optional[str] = None  # None: derived from the cache key
    tags: Tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    nodes: int = 1
    secrets: Tuple[str, ...] = ()
    key_params: Optional[Tuple[str, ...]] = None
    ignore_params: Tuple[str, ...] = ()
    run: RunOptions = field(default_factory=RunOptions)
    builder: str = "auto"  # "buildkit", "legacy" or "auto"; not part of the key: the image is the same
    base_key: Optional[str] = None  # "tag", "local" or "registry" from the mark; None: the setting decides
    perf: PerfSpec = field(default_factory=PerfSpec)  # repeats, direction, threshold; not part of the key
    #: `.dockerignore` patterns for what the session writes into the context (see `excluding`)
    context_excludes: Tuple[str, ...] = ()

    @property
    def secret_values(self) -> Dict[str, str]:
        """The build args named in `secrets=`, with their values: never to be stored."""
        return {name: self.build_args[name] for name in self.secrets if name in self.build_args}

    def with_build_args(self, extra: Mapping[str, str]) -> "ModelSpec":
        return replace(self, build_args={**dict(self.build_args), **dict(extra)})

    def key_spec(self, params: Mapping[str, Any], additional_context: Mapping[str, Any],
                 material: Optional[Mapping[str, Any]] = None, bases: Optional[Mapping[str, str]] = None) -> KeySpec:
        """What this model's key is made of, for the test's selected `params` (see key.key_for)."""
        return KeySpec(image=self.image, model_tags=self.tags, additional_context=additional_context,
                       params=params, build_args=self.build_args, nodes=self.nodes, dockerfile=self.dockerfile,
                       context=self.context, secrets=self.secrets, key_material=dict(material or {}),
                       bases=dict(bases or {}), context_excludes=self.context_excludes)


_IMAGE_CHARS = re.compile(r"[^a-z0-9._-]+")



def default_image_name(name: str) -> str:
    """madengine names images `ci-<model>`; Docker wants lower case and few symbols."""
    cleaned = _IMAGE_CHARS.sub("_", name.lower()).strip("._-") or "model"
    return f"ci-{cleaned}"


def _strings(value: Any, what: str, where: str) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ModelMarkError(f"{where}: {what}={value!r} must be a string or a list of strings")


def _str_dict(value: Any, what: str, where: str) -> Dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ModelMarkError(f"{where}: {what}={value!r} must be a dict")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or isinstance(v, (dict, list, tuple, set)):
            raise ModelMarkError(f"{where}: {what} entry {k!r}: {v!r} must map a string to a plain value")
        out[k] = str(v)
    return out


def merge_marks(marks: Iterable[Any], where: str) -> Dict[str, Any]:
    """Combine `model` marks, closest first: each keyword from the closest mark that gives it."""
    merged: Dict[str, Any] = {}
    for mark in marks:  # closest first
        named = mark.args[0] if mark.args else mark.kwargs.get("name")
        if named is not None and merged.get("name") is not None and named != merged["name"]:
            break  # a farther mark describes another model: it gives nothing to this one
        args = tuple(mark.args)
        if len(args) > 1:
            raise ModelMarkError(f"{where}: @pytest.mark.model takes one positional argument (the model name), "
                                 f"got {len(args)}: {args!r}")
        kwargs = dict(mark.kwargs)
        if args:
            if "name" in kwargs:
                raise ModelMarkError(f"{where}: @pytest.mark.model got the name twice ({args[0]!r} and name=)")
            kwargs["name"] = args[0]
        unknown = sorted(set(kwargs) - set(MARK_KWARGS))
        if unknown:
            raise ModelMarkError(
                f"{where}: @pytest.mark.model got unknown keyword argument(s) {', '.join(unknown)}; "
                f"known: {', '.join(MARK_KWARGS[1:])}"
            )
        for k, v in kwargs.items():
            merged.setdefault(k, v)
    return merged


def spec_from_marks(marks: Sequence[Any], test_dir: Path, where: str, root: Optional[Path] = None) -> ModelSpec:
    """Build a ModelSpec from an item's `model` marks (closest first).

    `where` (the test's node id) starts every error message, so a user can
    tell which test carries the bad mark.  With `root` (the pytest rootdir:
    "the project"), a build context or Dockerfile outside it is an error: a
    mark must not send files from elsewhere on the machine to the engine.
    """
    if not marks:
        raise ModelMarkError(f"{where}: uses a madcache fixture but has no @pytest.mark.model(...)")
    kw = merge_marks(marks, where)
    name = kw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ModelMarkError(f"{where}: @pytest.mark.model needs a model name (a non-empty string), got {name!r}")
    context, dockerfile = _build_files(kw, name, test_dir, where, root)
    image, image_tag = _image(kw, name, where)
    nodes = kw.get("nodes", 1)
    if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
        raise ModelMarkError(f"{where}: nodes={nodes!r} must be a whole number >= 1")
    key_params = kw.get("key_params")
    ignore_params = kw.get("ignore_params")
    if key_params is not None and ignore_params is not None:
        raise ModelMarkError(f"{where}: give key_params or ignore_params, not both")
    builder, base_key = _builder(kw, where)
    try:
        perf = perf_spec(kw)
    except ValueError as exc:
        raise ModelMarkError(f"{where}: {exc}") from None
    return ModelSpec(
        name=name,
        context=context,
        dockerfile=dockerfile,
        image=image,
        image_tag=image_tag,
        tags=_strings(kw.get("tags"), "tags", where) or (name,),
        build_args=_str_dict(kw.get("build_args"), "build_args", where),
        nodes=nodes,
        secrets=_strings(kw.get("secrets"), "secrets", where),
        key_params=None if key_params is None else _strings(key_params, "key_params", where),
        ignore_params=_strings(ignore_params, "ignore_params", where),
        run=run_options(kw, test_dir, where),
        builder=builder,
        base_key=base_key,
        perf=perf,
    )


def _build_files(kw: Mapping[str, Any], name: str, test_dir: Path, where: str,
                 root: Optional[Path]) -> Tuple[Path, Path]:
    """The mark's build context and Dockerfile, absolute, checked to exist (and to lie in `root`)."""

    def path(value: Any, what: str) -> Optional[Path]:
        if value is None:
            return None
        if not isinstance(value, (str, Path)):
            raise ModelMarkError(f"{where}: {what}={value!r} must be a path")
        p = Path(value).expanduser()
        return (p if p.is_absolute() else test_dir / p).resolve()

    context = path(kw.get("context"), "context")
    dockerfile = path(kw.get("dockerfile"), "dockerfile")
    if context is None:
        context = dockerfile.parent if dockerfile is not None else test_dir.resolve()
    if dockerfile is None:
        dockerfile = context / "Dockerfile"
    if not context.is_dir():
        raise ModelMarkError(f"{where}: build context {str(context)!r} of model {name!r} is not a directory")
    if not dockerfile.is_file():
        raise ModelMarkError(f"{where}: Dockerfile {str(dockerfile)!r} of model {name!r} does not exist")
    if root is not None:
        top = Path(root).resolve()
        for what, p in (("build context", context), ("Dockerfile", dockerfile)):
            if p != top and top not in p.parents:
                raise ModelMarkError(f"{where}: {what} {str(p)!r} of model {name!r} is outside the project "
                                     f"(the pytest rootdir {str(top)!r})")
    return context, dockerfile


def _image(kw: Mapping[str, Any], name: str, where: str) -> Tuple[str, Optional[str]]:
    """The image name the mark gives (or the model's default) and its tag, if it names one."""
    image = kw.get("image") or default_image_name(name)
    if not isinstance(image, str):
        raise ModelMarkError(f"{where}: image={image!r} must be a string")
    ref = ImageRef.parse(image)
    return ref.repository, ref.tag


def _builder(kw: Mapping[str, Any], where: str) -> Tuple[str, Optional[str]]:
    """The mark's builder and base_key (None: the session's)."""
    builder = kw.get("builder", "auto")
    if builder not in BUILDERS:
        raise ModelMarkError(f"{where}: builder={builder!r} must be one of {', '.join(repr(b) for b in BUILDERS)}")
    base_key = kw.get("base_key")
    if base_key is not None:
        from pytest_madcache.core.bases import parse_base_key

        try:
            base_key = parse_base_key(base_key) if isinstance(base_key, str) else parse_base_key(repr(base_key))
        except ValueError as exc:
            raise ModelMarkError(
                f"{where}: invalid value {base_key!r} for base_key from the model mark: {exc}") from None
    return builder, base_key


def run_options(kw: Mapping[str, Any], base_dir: Path, where: str,
                defaults: Optional[RunOptions] = None) -> RunOptions:
    """RunOptions from mark or call keywords; unset keywords keep `defaults`."""
    opts = defaults or RunOptions()
    changes: Dict[str, Any] = {}
    if kw.get("command") is not None:
        cmd = kw["command"]
        if not isinstance(cmd, str) and not (isinstance(cmd, (list, tuple)) and all(isinstance(c, str) for c in cmd)):
            raise ModelMarkError(f"{where}: command={cmd!r} must be a string or a list of strings")
        changes["command"] = cmd if isinstance(cmd, str) else list(cmd)
    if kw.get("env") is not None:
        changes["env"] = {**dict(opts.env), **_str_dict(kw["env"], "env", where)}
    if kw.get("timeout") is not None:
        t = kw["timeout"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0:
            raise ModelMarkError(f"{where}: timeout={t!r} must be a number of seconds > 0")
        changes["timeout"] = float(t)
    if kw.get("gpus") is not None:
        g = kw["gpus"]
        if not (g == "all" or (isinstance(g, int) and not isinstance(g, bool) and g >= 1)
                or (isinstance(g, (list, tuple)) and all(isinstance(x, (str, int)) for x in g))):
            raise ModelMarkError(f"{where}: gpus={g!r} must be 'all', a count >= 1 or a list of device ids")
        changes["gpus"] = g if not isinstance(g, (list, tuple)) else [str(x) for x in g]
    if kw.get("rocm") is not None:
        if not isinstance(kw["rocm"], bool):
            raise ModelMarkError(f"{where}: rocm={kw['rocm']!r} must be True or False")
        changes["rocm"] = kw["rocm"]
    if kw.get("devices") is not None:
        changes["devices"] = list(_strings(kw["devices"], "devices", where))
    if kw.get("shm_size") is not None:
        s = kw["shm_size"]
        if isinstance(s, bool) or not isinstance(s, (str, int)):
            raise ModelMarkError(f"{where}: shm_size={s!r} must be bytes or a size such as '8g'")
        changes["shm_size"] = s
    for simple in ("ipc_mode", "network_mode"):
        if kw.get(simple) is not None:
            if not isinstance(kw[simple], str):
                raise ModelMarkError(f"{where}: {simple}={kw[simple]!r} must be a string")
            changes[simple] = kw[simple]
    if kw.get("volumes") is not None:
        try:
            changes["volumes"] = normalise_volumes(kw["volumes"], base_dir)
        except ValueError as exc:
            raise ModelMarkError(f"{where}: volumes: {exc}") from None
    return replace(opts, **changes) if changes else opts


def select_params(params: Mapping[str, Any], spec: ModelSpec, where: str,
                  custom_build: bool = False) -> Dict[str, Any]:
    """The test parameters that join the key: those the build can see.

    The image is made from the Dockerfile, the context, the build args (a parameter a build arg
    refers to is already in the key through the resolved value) and the hooks' key material, so
    by default no parameter joins: a batch-size sweep shares one image.  `key_params` names the
    ones that do.  A conftest's own `pytest_madcache_build_image` (`custom_build`) may read any
    parameter, so there every parameter joins but `ignore_params`: a miss costs less than a wrong image.
    """
    if spec.key_params is not None:
        missing = [p for p in spec.key_params if p not in params]
        if missing:
            raise ModelMarkError(f"{where}: key_params names {', '.join(missing)}, which the test is not "
                                 f"parametrized with (it has: {', '.join(sorted(params)) or 'none'})")
        return {k: params[k] for k in spec.key_params}
    if not custom_build:
        return {}
    return {k: v for k, v in params.items() if k not in spec.ignore_params}


_FORMATTER = string.Formatter()


def resolve_build_args(spec: ModelSpec, params: Mapping[str, Any], where: str) -> ModelSpec:
    """The spec with `{param}` references in its build args replaced by the test's values.

    `build_args={"PRECISION": "{precision}"}` builds each precision's image with its own value
    (and so its own key); `{{` and `}}` stand for literal braces.  A reference to a parameter the
    test does not have is an error naming the test, the build arg and the parameter.
    """
    if not any("{" in v or "}" in v for v in spec.build_args.values()):
        return spec
    resolved: Dict[str, str] = {}
    for name, value in spec.build_args.items():
        try:
            fields = [f for _, f, _, _ in _FORMATTER.parse(value) if f is not None]
        except ValueError as exc:
            raise ModelMarkError(f"{where}: build_args[{name!r}]={value!r}: {exc} (write {{{{ and }}}} for "
                                 "literal braces)") from None
        for f in fields:
            top = re.split(r"[.\[]", f, maxsplit=1)[0]
            if not top or top.isdigit():
                raise ModelMarkError(f"{where}: build_args[{name!r}]={value!r} must refer to parameters by name, "
                                     f"as {{precision}}")
            if top not in params:
                raise ModelMarkError(f"{where}: build_args[{name!r}]={value!r} refers to parameter {top!r}, which "
                                     "the test is not parametrized with "
                                     f"(it has: {', '.join(sorted(params)) or 'none'})")
        try:
            resolved[name] = _FORMATTER.vformat(value, (), dict(params))
        except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
            raise ModelMarkError(f"{where}: build_args[{name!r}]={value!r} cannot be filled from the test's "
                                 f"parameters: {exc!r}") from None
    return replace(spec, build_args=resolved)


def excluding(spec: ModelSpec, outputs: Sequence[Path]) -> ModelSpec:
    """The spec with the session's own files (outputs.session_outputs) that lie inside its build
    context left out of it, as `.dockerignore` patterns (the Dockerfile itself is always sent)."""
    patterns = exclude_patterns(spec.context, outputs, spec.dockerfile)
    return replace(spec, context_excludes=patterns) if patterns else spec


def run_config(spec: ModelSpec, params: Mapping[str, Any], additional_context: Mapping[str, Any]) -> Dict[str, Any]:
    """What an entry records about the run: secrets and environment values left out."""
    return {
        "model_name": spec.name,
        "dockerfile": str(spec.dockerfile),
        "context": str(spec.context),
        "image": spec.image,
        "tags": list(spec.tags),
        "build_args": {k: ("***" if k in spec.secrets else v) for k, v in spec.build_args.items()},
        "nodes": spec.nodes,
        "params": {k: _plain(v) for k, v in params.items()},
        "additional_context": {k: ("***" if k in spec.secrets else _plain(v)) for k, v in additional_context.items()},
        "command": spec.run.command,
        "env_names": sorted(spec.run.env),
    }


def _plain(value: Any) -> Union[str, int, float, bool, None, List[Any], Dict[str, Any]]:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)
