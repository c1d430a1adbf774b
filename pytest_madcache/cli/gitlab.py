"""`madcache perf note REPORT.md`: a performance report as the merge request's note on GitLab.

One note per merge request, found again by a marker and edited in place, so a branch pushed ten
times shows one current table, not ten.  It needs a token that may write notes (a project or
personal access token with the `api` scope) in MADCACHE_GITLAB_TOKEN: the job's CI_JOB_TOKEN may
not.  Without a token, outside a merge request pipeline, or when the API refuses, it says so and
the report stays the job's artifact (the `.madcache-perf` template keeps it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional

from pytest_madcache.cli.common import Out

__all__ = ["MARKER", "post_note"]

MARKER = "<!-- madcache-perf -->"
TOKEN = "MADCACHE_GITLAB_TOKEN"


def _find(session: Any, notes_url: str) -> Optional[int]:
    """The id of the note posted before (its body starts with the marker)."""
    page: Optional[str] = "1"
    while page:
        resp = session.get(notes_url, params={"per_page": 100, "page": page, "sort": "asc"}, timeout=30)
        resp.raise_for_status()
        for note in resp.json():
            if str(note.get("body", "")).startswith(MARKER):
                return int(note["id"])
        page = resp.headers.get("X-Next-Page") or None
    return None


def post_note(report: str, out: Out, env: Mapping[str, str] = os.environ) -> int:
    path = Path(report)
    try:
        text = path.read_text()
    except OSError as exc:
        out(f"madcache: no performance note: cannot read {report}: {exc}")
        return 1
    iid, project, api = env.get("CI_MERGE_REQUEST_IID", ""), env.get("CI_PROJECT_ID", ""), env.get("CI_API_V4_URL", "")
    if not (iid and project and api):
        out("madcache: no performance note: not a merge request pipeline (CI_MERGE_REQUEST_IID, CI_PROJECT_ID and "
            f"CI_API_V4_URL are not all set); {report} is the job's artifact")
        return 0
    token = env.get(TOKEN, "").strip()
    if not token:
        out(f"madcache: no performance note: {TOKEN} is not set (a token with the api scope); {report} is the "
            "job's artifact")
        return 0
    import requests

    notes = f"{api.rstrip('/')}/projects/{project}/merge_requests/{iid}/notes"
    body = {"body": f"{MARKER}\n{text}"}
    with requests.Session() as session:
        session.headers["PRIVATE-TOKEN"] = token
        try:
            note = _find(session, notes)
            if note is None:
                resp = session.post(notes, json=body, timeout=30)
            else:
                resp = session.put(f"{notes}/{note}", json=body, timeout=30)
            resp.raise_for_status()
        except requests.RequestException as exc:
            out(f"madcache: the performance note was not posted to merge request !{iid}: {exc}; {report} is the "
                "job's artifact")
            return 1
    out(f"madcache: performance note {'updated' if note is not None else 'posted'} on merge request !{iid} "
        f"(note {resp.json().get('id', note)})")
    return 0
