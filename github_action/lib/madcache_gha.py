#!/usr/bin/env python3
"""Helper of the madcache GitHub Action (stdlib only; runs before pytest-madcache is installed).

    madcache_gha.py keys     compute the cache keys (restore prefix, this run's save key)
    madcache_gha.py setup    after the restore: export settings, remember the cache's state
    madcache_gha.py finish   before the save: prune, compare, decide, write the job summary
    madcache_gha.py post     end of job, one-step form: before the post step of actions/cache,
                             set an unchanged cache aside so that nothing is uploaded
    madcache_gha.py report   end of job, with perf-results, also after a failure: the performance
                             table in the job summary, and the pull request comment (pr-comment)

Inputs come from MADCACHE_GHA_IN_* environment variables set by the composite steps.
Results go to $GITHUB_OUTPUT, $GITHUB_ENV and $GITHUB_STEP_SUMMARY.

With the perf-results input (the CSV the tests write with `pytest --output`), the
default branch's last results are the performance baseline: kept in a small cache
of their own next to the image cache (PATH-baseline/, keys PREFIX-baseline-OS-ARCH-),
restored before the tests and exported as MADCACHE_PERF_BASELINE, and replaced by
this run's results when a run on the default branch succeeds.  The performance
history (the default branch's last runs) is kept beside it, history.json, exported
as MADCACHE_PERF_HISTORY; runs on that branch set MADCACHE_PERF_RECORD.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

TRUE = ("1", "true", "yes", "on")
SAVE_POLICIES = ("on-success", "always", "never")
# In the cache directory: the GitHub cache key this copy of the cache is saved under.
# The all-in-one actions/cache only outputs cache-hit (exact match), not the key it
# restored by prefix; the restored marker tells it.
KEY_MARKER = "gha-cache-key"
# GitHub keeps 10 GB of caches per repository (least recently used evicted beyond it).
# Warn when the restored cache is above this share of it. MADCACHE_GHA_QUOTA_GB
# overrides the quota (GitHub Enterprise Server, a raised repository limit).
QUOTA_GB = 10.0
QUOTA_WARN_SHARE = 0.8
# Events whose caches GitHub scopes to a ref nobody else restores from (the pull
# request's merge ref): restore only, unless the save-pull-requests input is true.
PULL_REQUEST_EVENTS = ("pull_request",)


def env(name: str, default: str = "") -> str:
    value = os.environ.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def inp(name: str, default: str = "") -> str:
    return env("MADCACHE_GHA_IN_" + name.upper().replace("-", "_"), default)


def _append(var: str, lines: List[str]) -> None:
    target = os.environ.get(var)
    if not target:
        return
    with open(target, "a", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line + "\n")


def set_output(name: str, value: Any) -> None:
    _append("GITHUB_OUTPUT", [f"{name}={value}"])


def export(name: str, value: Any) -> None:
    os.environ[name] = str(value)
    _append("GITHUB_ENV", [f"{name}={value}"])


def log(message: str) -> None:
    print(f"madcache: {message}", flush=True)


def warn(message: str) -> None:
    print(f"::warning title=madcache::{message}", flush=True)


def cache_dir(path: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = Path(env("GITHUB_WORKSPACE", os.getcwd())) / p
    return p


def key_prefix() -> str:
    prefix = inp("key-prefix", env("MADCACHE_GHA_KEY_PREFIX", "madcache"))
    return f"{prefix}-{env('RUNNER_OS', 'os')}-{env('RUNNER_ARCH', 'arch')}-"


def state_file(directory: Path) -> Path:
    """Per cache directory, so that one job can use two caches."""
    tag = hashlib.sha256(str(directory).encode()).hexdigest()[:12]
    return Path(env("RUNNER_TEMP", "/tmp")) / f"madcache-gha-{tag}.json"


def summary_file(directory: Path) -> Path:
    """Where pytest-madcache writes its exact counts (MADCACHE_SUMMARY_JSON)."""
    tag = hashlib.sha256(str(directory).encode()).hexdigest()[:12]
    return Path(env("RUNNER_TEMP", "/tmp")) / f"madcache-summary-{tag}.json"


def read_summary(path: str) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(Path(path).read_text())
        return data if isinstance(data, dict) and "hits" in data and "misses" in data else None
    except (OSError, ValueError):
        return None


# -- what is in a cache directory, without pytest-madcache ---------------------

def _listdir(path: Path) -> List[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def entries(directory: Path) -> Dict[str, float]:
    """Entry id -> last used (the mtime of entries/ID/used, else of meta.json)."""
    out: Dict[str, float] = {}
    for name in _listdir(directory / "entries"):
        if not name.startswith("run_"):
            continue
        for marker in ("used", "meta.json"):
            try:
                out[name] = os.stat(directory / "entries" / name / marker).st_mtime
                break
            except OSError:
                continue
    return out


def blob_bytes(directory: Path) -> int:
    total = 0
    for name in _listdir(directory / "blobs" / "sha256"):
        try:
            total += os.stat(directory / "blobs" / "sha256" / name).st_size
        except OSError:
            pass
    return total


def fingerprint(directory: Path) -> str:
    """Changes when an entry or a blob is added or removed; not when an entry is only used."""
    h = hashlib.sha256()
    for name in _listdir(directory / "entries"):
        if name.startswith("run_"):
            h.update(b"e:" + name.encode() + b"\n")
    for name in _listdir(directory / "blobs" / "sha256"):
        h.update(b"b:" + name.encode() + b"\n")
    return h.hexdigest()


def madcache_cli() -> Optional[List[str]]:
    exe = shutil.which("madcache")
    if exe:
        return [exe]
    for python in ("python3", "python"):
        py = shutil.which(python)
        if py and subprocess.run([py, "-c", "import pytest_madcache.cli"], capture_output=True).returncode == 0:
            return [py, "-m", "pytest_madcache.cli"]
    return None


def stats(directory: Path) -> Dict[str, int]:
    cli = madcache_cli()
    if cli and directory.is_dir():
        proc = subprocess.run([*cli, "stats", "--json", "--cache-dir", str(directory)], capture_output=True, text=True)
        if proc.returncode == 0:
            try:
                data = json.loads(proc.stdout)
                return {"entries": int(data["entries"]), "bytes": int(data["total_bytes"])}
            except (ValueError, KeyError, TypeError):
                pass
    return {"entries": len(entries(directory)), "bytes": blob_bytes(directory)}


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# -- commands ------------------------------------------------------------------

def aside(directory: Path) -> Path:
    """Where the post hook sets an unchanged cache aside (so actions/cache uploads nothing)."""
    return directory.with_name(directory.name + ".unchanged")


def pull_request_restore_only() -> bool:
    return env("GITHUB_EVENT_NAME") in PULL_REQUEST_EVENTS and inp("save-pull-requests", "false").lower() not in TRUE


def quota_bytes() -> int:
    try:
        gb = float(env("MADCACHE_GHA_QUOTA_GB", str(QUOTA_GB)))
    except ValueError:
        gb = QUOTA_GB
    return int(gb * 1024**3)


def post_save_wanted() -> bool:
    """Whether the all-in-one action saves through the post step of actions/cache@v4.

    Only for save: on-success (the post step runs only when the job succeeded) and not
    read-only, and only where the caller offers it (the all-in-one action, not restore/).
    """
    if inp("post-save", "false").lower() not in TRUE:
        return False
    if inp("read-only", "false").lower() in TRUE or pull_request_restore_only():
        return False
    return inp("save", "on-success") == "on-success"


# -- the performance baseline (perf-results input) --------------------------------------

BASELINE_FILE = "results.csv"
HISTORY_FILE = "history.json"  # the performance history (pytest --perf-record), beside the baseline


def baseline_path(path: str) -> str:
    """The baseline's own cache directory, next to the image cache: PATH-baseline."""
    return path.rstrip("/") + "-baseline"


def baseline_branch() -> str:
    """The branch whose results are the baseline: the input, else the repository's default branch."""
    given = inp("baseline-branch")
    if given:
        return given
    try:
        event = json.loads(Path(env("GITHUB_EVENT_PATH")).read_text())
        return str(event["repository"]["default_branch"]) or "main"
    except (OSError, ValueError, KeyError, TypeError):
        return "main"


def on_baseline_branch() -> bool:
    """A run whose results may become the baseline: a push (not a pull request) to the baseline branch."""
    return (env("GITHUB_REF") == f"refs/heads/{baseline_branch()}"
            and env("GITHUB_EVENT_NAME") not in PULL_REQUEST_EVENTS)


def baseline_keys() -> Dict[str, str]:
    prefix = f"{inp('key-prefix', env('MADCACHE_GHA_KEY_PREFIX', 'madcache'))}-baseline-{env('RUNNER_OS', 'os')}-{env('RUNNER_ARCH', 'arch')}-"
    return {"prefix": prefix, "key": f"{prefix}{env('GITHUB_RUN_ID', str(int(time.time())))}-{env('GITHUB_RUN_ATTEMPT', '1')}"}


def update_baseline(b: Dict[str, Any]) -> bool:
    """Copy this run's results CSV into the baseline's directory, to be saved; False when there is none."""
    results, directory = Path(b["results"]), Path(b["dir"])
    if not results.is_file():
        log(f"no results at {results} (perf-results): the performance baseline is not updated")
        return False
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(results, directory / BASELINE_FILE)
    log(f"this run's results ({results.name}) are the next performance baseline")
    return True


def perf_summary(counted: Optional[Dict[str, Any]]) -> List[str]:
    """The plugin's performance table (Markdown, from its summary JSON) for the job summary."""
    perf = (counted or {}).get("perf")
    text = perf.get("markdown") if isinstance(perf, dict) else None
    return [text.rstrip(), ""] if isinstance(text, str) and text.strip() else []


def cmd_keys() -> int:
    prefix = key_prefix()
    key = f"{prefix}{env('GITHUB_RUN_ID', str(int(time.time())))}-{env('GITHUB_RUN_ATTEMPT', '1')}"
    directory = cache_dir(inp("path", ".madcache"))
    # A cache the last job set aside unchanged (a persistent workspace): take it back.
    kept = aside(directory)
    if kept.is_dir():
        if directory.exists():
            shutil.rmtree(kept, ignore_errors=True)
        else:
            kept.rename(directory)
    # A marker left in a persistent workspace must not pass for a restored one.
    try:
        (directory / KEY_MARKER).unlink()
    except OSError:
        pass
    set_output("prefix", prefix)
    set_output("key", key)
    set_output("existing", len(entries(directory)))
    set_output("post-save", "true" if post_save_wanted() else "false")
    # actions/cache versions a cache by its path patterns: pass them as the user wrote them,
    # so that a relative path matches across runners whose workspace paths differ.
    set_output("path", inp("path", ".madcache"))
    log(f"restore prefix {prefix}, save key {key}")
    if inp("perf-results"):  # the performance baseline: a small cache of its own, next to this one
        bkeys = baseline_keys()
        set_output("baseline", "true")
        set_output("baseline-path", baseline_path(inp("path", ".madcache")))
        set_output("baseline-prefix", bkeys["prefix"])
        set_output("baseline-key", bkeys["key"])
        # The one-step form saves it through the post step of actions/cache too.
        set_output("baseline-post-save", "true" if on_baseline_branch() and post_save_wanted() else "false")
    return 0


def cmd_setup() -> int:
    directory = cache_dir(inp("path", ".madcache"))
    save = inp("save", "on-success")
    if save not in SAVE_POLICIES:
        print(f"::error title=madcache::input save={save!r}: expected one of {', '.join(SAVE_POLICIES)}")
        return 2
    read_only = inp("read-only", "false").lower() in TRUE
    if read_only:
        save = "never"
    elif pull_request_restore_only() and save != "never":
        save = "never"
        log("pull_request run: restore only (its caches would be scoped to the pull request's merge ref "
            "and only take quota); set save-pull-requests: 'true' to save")
    matched = inp("matched-key")
    marker = directory / KEY_MARKER
    if not matched:
        try:
            matched = marker.read_text().strip()
        except OSError:
            matched = ""
    # A cache saved without a marker (by an older version) still counts as restored.
    restored = bool(matched) or len(entries(directory)) > int(inp("existing", "0") or 0)
    post_save = inp("post-save", "false").lower() in TRUE and save == "on-success"
    directory.mkdir(parents=True, exist_ok=True)
    if inp("key"):
        marker.write_text(inp("key") + "\n")  # what gets saved from here on carries its key
    export("MADCACHE_DIR", directory)
    export("MADCACHE_ENABLED", "1")
    for name, var in (("max-entries", "MADCACHE_MAX_ENTRIES"), ("max-size-gb", "MADCACHE_MAX_SIZE_GB"), ("ttl", "MADCACHE_TTL"),
                      ("remote-compress", "MADCACHE_REMOTE_COMPRESS")):
        value = inp(name)
        if value:
            export(var, value)
    remote = inp("remote").strip()
    if remote:
        # Registries want lower-case repository paths; github.repository keeps the owner's capitals.
        export("MADCACHE_REMOTE", remote.lower())
        log(f"remote cache {remote.lower()} (credentials: MADCACHE_REMOTE_USER/PASSWORD, or what docker login wrote)")
    export("MADCACHE_GHA_SAVE", save)
    export("MADCACHE_GHA_KEY", inp("key"))
    export("MADCACHE_GHA_KEY_PREFIX", inp("key-prefix", "madcache"))
    # The post step of actions/cache@v4 saves at the end of the job (on success): a save
    # sub-action in the same job must not upload a second copy.
    export("MADCACHE_GHA_POST_SAVE", "1" if post_save else "0")
    before = entries(directory)
    st = stats(directory)
    state = {
        "dir": str(directory),
        "path": inp("path", ".madcache"),
        "key": inp("key"),
        "matched_key": matched,
        "fingerprint": fingerprint(directory),
        "entries": before,
        "started": time.time(),
        "save": save,
        "restored": st,
        "post_save": post_save,
    }
    export("MADCACHE_GHA_STATE", state_file(directory))
    # pytest-madcache writes its exact counts there at the end of the session (the last
    # session of the job wins); a value the workflow set itself is kept.
    summary_json = os.environ.get("MADCACHE_SUMMARY_JSON", "").strip()
    if not summary_json:
        summary_json = str(summary_file(directory))
        try:
            os.unlink(summary_json)
        except OSError:
            pass
        export("MADCACHE_SUMMARY_JSON", summary_json)
    state["summary_json"] = summary_json
    if inp("perf-results"):
        bdir = cache_dir(baseline_path(inp("path", ".madcache")))
        results = cache_dir(inp("perf-results"))
        state["baseline"] = {"dir": str(bdir), "path": baseline_path(inp("path", ".madcache")), "results": str(results),
                             "key": baseline_keys()["key"], "on_branch": on_baseline_branch(),
                             "post_save": inp("baseline-post-save", "false").lower() in TRUE}
        export("MADCACHE_PERF_BASELINE", bdir / BASELINE_FILE)
        # The default branch's last runs, beside the baseline (saved with it); only that branch adds to them.
        if not os.environ.get("MADCACHE_PERF_HISTORY", "").strip():
            export("MADCACHE_PERF_HISTORY", bdir / HISTORY_FILE)
        if on_baseline_branch() and not os.environ.get("MADCACHE_PERF_RECORD", "").strip():
            export("MADCACHE_PERF_RECORD", "1")
            log(f"this run on {baseline_branch()} adds its results to the performance history ({bdir / HISTORY_FILE})")
        state["pr_comment"] = inp("pr-comment", "false").lower() in TRUE
        if (bdir / BASELINE_FILE).is_file():
            log(f"performance baseline: {bdir / BASELINE_FILE} (the last results of {baseline_branch()}), "
                f"exported as MADCACHE_PERF_BASELINE")
        else:
            log(f"no performance baseline yet (none saved from {baseline_branch()}): every run is new")
    state_file(directory).write_text(json.dumps(state))
    set_output("cache-hit", "true" if restored else "false")
    set_output("matched-key", matched)
    set_output("entries", st["entries"])
    set_output("bytes", st["bytes"])
    if restored:
        log(f"restored {st['entries']} entries ({human(st['bytes'])}) from {matched or 'a previous cache'} into {directory}")
    else:
        log(f"no cache restored; starting empty at {directory}")
    # What GitHub stores is the archive of the whole directory: count every blob on disk.
    quota, on_disk = quota_bytes(), max(st["bytes"], blob_bytes(directory))
    if on_disk > QUOTA_WARN_SHARE * quota:
        warn(f"the restored cache holds {human(on_disk)} of image layers, above {QUOTA_WARN_SHARE:.0%} of "
             f"GitHub's {human(quota)} cache quota per repository; GitHub evicts the repository's least recently "
             f"used caches beyond it: lower max-size-gb")
    if post_save:
        log(f"the cache is saved as {inp('key')} at the end of the job if it succeeds and changed (post step of actions/cache)")
    return 0


def prune(directory: Path) -> List[str]:
    """madcache prune to the limits; the ids it evicted."""
    evicted: List[str] = []
    cli = madcache_cli()
    if cli is None:
        warn("the madcache command is not installed here: the cache is saved without pruning")
        return evicted
    proc = subprocess.run([*cli, "prune", "--json", "--cache-dir", str(directory)], capture_output=True, text=True)
    if proc.returncode == 0:
        try:
            evicted = [e["id"] if isinstance(e, dict) else str(e) for e in json.loads(proc.stdout).get("evicted", [])]
        except (ValueError, AttributeError, KeyError, TypeError):
            pass
        if evicted:
            log(f"pruned {len(evicted)} entries to the limits: {', '.join(evicted)}")
    else:
        warn(f"madcache prune failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return evicted


def cmd_finish() -> int:
    given = inp("path")
    where = state_file(cache_dir(given)) if given else Path(env("MADCACHE_GHA_STATE", str(state_file(cache_dir(".madcache")))))
    try:
        state = json.loads(where.read_text())
    except (OSError, ValueError):
        state = {}
    directory = cache_dir(inp("path") or state.get("dir") or env("MADCACHE_DIR", ".madcache"))
    save = inp("save") or env("MADCACHE_GHA_SAVE") or state.get("save") or "on-success"
    if save not in SAVE_POLICIES:
        print(f"::error title=madcache::input save={save!r}: expected one of {', '.join(SAVE_POLICIES)}")
        return 2
    key = inp("key") or state.get("key") or env("MADCACHE_GHA_KEY")
    if not key:
        key = f"{key_prefix()}{env('GITHUB_RUN_ID', str(int(time.time())))}-{env('GITHUB_RUN_ATTEMPT', '1')}"
    job_status = inp("job-status", "success").lower()
    post_save = env("MADCACHE_GHA_POST_SAVE") in TRUE or (bool(state.get("post_save")) and not env("MADCACHE_GHA_POST_SAVE"))

    evicted = prune(directory) if directory.is_dir() and save != "never" else []

    before: Dict[str, float] = state.get("entries", {})
    started = float(state.get("started", 0))
    now_entries = entries(directory)
    added = sorted(set(now_entries) - set(before))
    used = sorted(i for i, t in now_entries.items() if i in before and t >= started - 1)
    st = stats(directory)
    changed = fingerprint(directory) != state.get("fingerprint")
    counted = read_summary(state.get("summary_json") or env("MADCACHE_SUMMARY_JSON"))

    if save == "never":
        reason, do_save = "saving is off (save: never, read-only, or a pull_request run without save-pull-requests)", False
    elif save == "on-success" and job_status != "success":
        reason, do_save = f"the job status is {job_status} and save is on-success", False
    elif post_save and job_status == "success":
        reason, do_save = (f"the post step of actions/cache saves it as {key} at the end of the job"
                           f" if it changed" + ("" if changed else " (unchanged so far)")), False
    elif not directory.is_dir():
        reason, do_save = f"{directory} does not exist", False
    elif not changed and state:
        reason, do_save = "the cache did not change (no entry or blob added or removed)", False
    else:
        reason, do_save = f"saving as {key}", True
    log(("save: " if do_save else "not saving: ") + reason)

    set_output("save", "true" if do_save else "false")
    set_output("key", key)
    set_output("path", inp("path") or state.get("path") or str(directory))
    set_output("entries", st["entries"])
    set_output("bytes", st["bytes"])
    set_output("evicted", " ".join(evicted))
    if counted is not None:  # exact, from pytest-madcache
        hits, misses = int(counted["hits"]), int(counted["misses"])
        count_rows = [
            ("Hits (pytest-madcache)", str(hits)),
            ("Misses (pytest-madcache)", str(misses)),
            ("Bytes loaded", f"{int(counted.get('bytes_loaded') or 0)} ({human(int(counted.get('bytes_loaded') or 0))})"),
            ("Build time saved", f"{float(counted.get('build_time_saved_seconds') or 0):.1f} s"),
        ]
    else:  # no summary file (an older plugin, or pytest did not run): from the entries' usage times
        hits, misses = len(used), len(added)
        count_rows = [
            ("Hits (restored entries used)", str(hits)),
            ("Misses (entries built and added)", str(misses)),
        ]
    set_output("hits", hits)
    set_output("misses", misses)

    rows = [
        ("Restored from", f"`{state['matched_key']}`" if state.get("matched_key") else "nothing (cold cache)"),
        *count_rows,
        ("Entries", str(st["entries"])),
        ("Bytes", f"{st['bytes']} ({human(st['bytes'])})"),
        ("Evicted", ", ".join(f"`{e}`" for e in evicted) or "none"),
        ("Saved", f"yes, as `{key}`" if do_save else f"no: {reason}"),
    ]
    lines = ["### madcache", "", "| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows] + [""]
    _append("GITHUB_STEP_SUMMARY", lines + perf_summary(counted))
    state["perf_reported"] = True

    base = state.get("baseline")
    baseline_save = False
    if base:
        if not base.get("on_branch"):
            log(f"performance baseline: not updated (only runs on {baseline_branch()} update it)")
        elif job_status != "success" or save == "never":
            log("performance baseline: not updated (the job did not succeed, or saving is off)")
        elif base.get("post_save"):
            log("performance baseline: the post step of actions/cache saves this run's results")
        else:
            baseline_save = update_baseline(base)
        set_output("baseline-path", base["path"])
        set_output("baseline-key", base["key"])
    set_output("baseline-save", "true" if baseline_save else "false")
    if state:
        state["finished"] = True
        try:
            where.write_text(json.dumps(state))
        except OSError:
            pass
    return 0


def cmd_post() -> int:
    """The one-step form's end of job, just before the post step of actions/cache@v4.

    That post step uploads whatever is at `path` under this run's new key; it cannot
    be told to skip. When the cache did not change since the restore (no entry or
    blob added or removed, pruning included), the directory is set aside (renamed
    to PATH.unchanged), so that the post step finds nothing to upload. The next run's
    keys step takes a set-aside directory back on a persistent workspace.
    """
    directory = cache_dir(inp("path", ".madcache"))
    try:
        state = json.loads(state_file(directory).read_text())
    except (OSError, ValueError):
        log("no restore state for this cache directory: leaving the upload to actions/cache")
        return 0
    if not state.get("post_save"):
        return 0
    base = state.get("baseline")
    if base and base.get("post_save") and not update_baseline(base):
        shutil.rmtree(base["dir"], ignore_errors=True)  # nothing new: the post step of actions/cache uploads nothing
    if not directory.is_dir():
        log(f"{directory} does not exist: nothing to upload")
        return 0
    evicted = [] if state.get("finished") else prune(directory)
    if fingerprint(directory) != state.get("fingerprint"):
        log(f"the cache changed: the post step of actions/cache uploads it as {state.get('key')}")
        saved = f"yes, as `{state.get('key')}` (post step of actions/cache)"
    else:
        kept = aside(directory)
        shutil.rmtree(kept, ignore_errors=True)
        directory.rename(kept)
        log("not saving: the cache did not change (no entry or blob added or removed); set aside as "
            f"{kept.name}, so the post step of actions/cache finds no path to upload")
        saved = "no: the cache did not change"
    if not state.get("finished"):
        st = stats(directory if directory.is_dir() else aside(directory))
        rows = [
            ("Restored from", f"`{state['matched_key']}`" if state.get("matched_key") else "nothing (cold cache)"),
            ("Entries", str(st["entries"])),
            ("Bytes", f"{st['bytes']} ({human(st['bytes'])})"),
            ("Evicted", ", ".join(f"`{e}`" for e in evicted) or "none"),
            ("Saved", saved),
        ]
        _append("GITHUB_STEP_SUMMARY", ["### madcache", "", "| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows] + [""]
                + perf_summary(read_summary(state.get("summary_json") or "")))
        state["perf_reported"] = True
        _write_state(directory, state)
    return 0


def _write_state(directory: Path, state: Dict[str, Any]) -> None:
    for where in (directory, aside(directory)):  # the post hook may have set the directory aside
        if where.is_dir():
            try:
                state_file(where).write_text(json.dumps(state))
            except OSError:
                pass
            return


# -- the report hook: the performance table where people read it ---------------------------------------

COMMENT_MARKER = "<!-- madcache-perf -->"


def _api(method: str, url: str, token: str, body: Optional[Dict[str, Any]] = None) -> Any:
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def pr_comment(markdown: str) -> Optional[str]:
    """One comment on the pull request holding the table, edited in place on every push; what was done."""
    if env("GITHUB_EVENT_NAME") not in PULL_REQUEST_EVENTS + ("pull_request_target",):
        log("pr-comment: not a pull request event; no comment")
        return None
    token, api, repo = inp("github-token"), env("GITHUB_API_URL"), env("GITHUB_REPOSITORY")
    try:
        number = int(json.loads(Path(env("GITHUB_EVENT_PATH")).read_text())["pull_request"]["number"])
    except (OSError, ValueError, KeyError, TypeError):
        warn("pr-comment: the event names no pull request number; no comment")
        return None
    if not (token and api and repo):
        warn("pr-comment: no github-token (or GITHUB_API_URL / GITHUB_REPOSITORY); no comment")
        return None
    import urllib.error

    body = {"body": f"{COMMENT_MARKER}\n{markdown}\n\n<sub>madcache, for {env('GITHUB_SHA', '?')[:7]}</sub>"}
    try:
        found = None
        page = 1
        while found is None:
            listed = _api("GET", f"{api}/repos/{repo}/issues/{number}/comments?per_page=100&page={page}", token)
            if not listed:
                break
            found = next((c for c in listed if str(c.get("body", "")).startswith(COMMENT_MARKER)), None)
            page += 1
        if found is not None:
            _api("PATCH", f"{api}/repos/{repo}/issues/comments/{found['id']}", token, body)
            done = f"updated comment {found['id']} on pull request #{number}"
        else:
            made = _api("POST", f"{api}/repos/{repo}/issues/{number}/comments", token, body)
            done = f"commented on pull request #{number} (comment {made.get('id') if made else '?'})"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        warn(f"pr-comment: the pull request comment was not written ({exc}); the job summary has the table "
             "(a token from a fork's pull request may only read: permissions pull-requests: write)")
        return None
    log(f"pr-comment: {done}")
    return done


def cmd_report() -> int:
    """The report hook's post step (always, after the post hook): the performance table into the job
    summary when nothing wrote it yet (a pull request, a failed job), and the pull request comment."""
    directory = cache_dir(inp("path", ".madcache"))
    state: Dict[str, Any] = {}
    for where in (directory, aside(directory)):
        try:
            state = json.loads(state_file(where).read_text())
            break
        except (OSError, ValueError):
            continue
    counted = read_summary(state.get("summary_json") or env("MADCACHE_SUMMARY_JSON"))
    table = perf_summary(counted)
    if not table:
        log("no performance table (pytest-madcache wrote none this job): nothing to report")
        return 0
    if not state.get("perf_reported"):
        _append("GITHUB_STEP_SUMMARY", table)
    if inp("pr-comment", "false").lower() in TRUE:
        pr_comment("\n".join(table))
    return 0


def main(argv: List[str]) -> int:
    commands = {"keys": cmd_keys, "setup": cmd_setup, "finish": cmd_finish, "post": cmd_post, "report": cmd_report}
    if len(argv) != 1 or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
