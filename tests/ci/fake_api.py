"""A stand-in for the comment APIs of GitHub and GitLab (only the calls our CI integrations make),
on 127.0.0.1: list, create and edit one pull request's comments / one merge request's notes,
checking the token.  Tests read `requests` (method, path, token) and `comments` back."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Tuple
from contextlib import contextmanager

TOKEN = "test-token"


class FakeApi:
    def __init__(self) -> None:
        self.comments: List[Dict[str, Any]] = [{"id": 1, "body": "an unrelated comment"}]
        self.requests: List[Tuple[str, str, str]] = []
        self.url = ""

    def handle(self, method: str, path: str, auth: str, body: Any) -> Tuple[int, Any]:
        self.requests.append((method, path, auth))
        if TOKEN not in auth:
            return 401, {"message": "Bad credentials"}
        listing = re.fullmatch(r"/(?:api/v4/projects/\d+/merge_requests/\d+/notes|repos/[^/]+/[^/]+/issues/\d+/comments)"
                               r"(?:\?.*)?", path)
        if method == "GET" and listing:
            found = re.search(r"[?&]page=(\d+)", path)
            page = int(found.group(1)) if found else 1
            return 200, self.comments if page == 1 else []
        if method == "POST" and listing:
            comment = {"id": len(self.comments) + 100, "body": body["body"]}
            self.comments.append(comment)
            return 201, comment
        edit = re.fullmatch(r"/(?:api/v4/projects/\d+/merge_requests/\d+/notes|repos/[^/]+/[^/]+/issues/comments)/(\d+)",
                            path)
        if method in ("PUT", "PATCH") and edit:
            for comment in self.comments:
                if comment["id"] == int(edit.group(1)):
                    comment["body"] = body["body"]
                    return 200, comment
        return 404, {"message": "Not Found"}


@contextmanager
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            auth = self.headers.get("Authorization", "") + self.headers.get("PRIVATE-TOKEN", "")
            code, out = api.handle(self.command, self.path, auth, body)
            data = json.dumps(out).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
