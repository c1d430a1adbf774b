"""An HTTP proxy in front of a registry that answers 429/5xx, drops connections mid-body, and
records every request (method, path, Range headers, timing), for the retry and resume tests."""

from __future__ import annotations

import http.client
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Optional

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Fault:
    """What to do to the next `times` requests whose method and path match.

    action: "status" (answer `status`, with Retry-After when given),
    "cut_response" (forward, then drop the connection after `after` body bytes),
    "cut_request" (read `after` bytes of the request body, then drop the connection).
    """

    method: str
    path: str  # a regular expression searched in the path
    action: str
    status: int = 503
    after: int = 0
    retry_after: Optional[str] = None
    times: int = 1


@dataclass
class Record:
    method: str
    path: str
    status: int
    headers: dict
    start: float
    end: float = 0.0
    fault: Optional[str] = None


@dataclass
class FaultProxy:
    upstream: str  # host:port of a plain-HTTP registry
    faults: List[Fault] = field(default_factory=list)
    records: List[Record] = field(default_factory=list)
    delay: float = 0.0  # seconds added to every blob upload and download (a slow link, to see overlap)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any  # noqa: N815

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # connections we cut on purpose

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def _take(self, method: str, path: str) -> Optional[Fault]:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and re.search(fault.path, path):
                    fault.times -= 1
                    return fault
        return None

    def requests(self, method: str, path: str = "") -> List[Record]:
        return [r for r in self.records if r.method == method and re.search(path, r.path)]

    def max_concurrency(self, method: str, path: str = "") -> int:
        spans = [(r.start, r.end) for r in self.requests(method, path) if r.end]
        return max((sum(1 for s, e in spans if s <= start < e) for start, _ in spans), default=0)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        method, path = h.command, h.path
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP}
        record = Record(method, path, 0, {k.lower(): v for k, v in h.headers.items()}, time.monotonic())
        with self._lock:
            self.records.append(record)
        fault = self._take(method, path)
        length = int(h.headers.get("Content-Length") or 0)
        if fault is not None and fault.action == "cut_request":
            h.rfile.read(min(fault.after, length))
            record.fault, record.end = "cut_request", time.monotonic()
            h.close_connection = True
            h.connection.close()
            return
        body = h.rfile.read(length) if length else b""
        if self.delay and (method in ("PUT", "PATCH") or (method == "GET" and "/blobs/sha256:" in path)):
            time.sleep(self.delay)
        if fault is not None and fault.action == "status":
            h.send_response(fault.status)
            if fault.retry_after:
                h.send_header("Retry-After", fault.retry_after)
            h.send_header("Content-Length", "0")
            h.end_headers()
            record.status, record.fault, record.end = fault.status, "status", time.monotonic()
            return
        conn = http.client.HTTPConnection(self.upstream, timeout=120)
        try:
            conn.request(method, path, body=body if (body or method in ("PUT", "PATCH", "POST")) else None,
                         headers=headers)
            resp = conn.getresponse()
            record.status = resp.status
            h.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP:
                    h.send_header(k, v)
            h.end_headers()
            if method == "HEAD":
                return
            sent = 0
            limit = fault.after if fault is not None and fault.action == "cut_response" else None
            while True:
                chunk = resp.read(64 * 1024)
                if not chunk:
                    break
                if limit is not None and sent + len(chunk) >= limit:
                    h.wfile.write(chunk[: max(0, limit - sent)])
                    h.wfile.flush()
                    record.fault = "cut_response"
                    h.close_connection = True
                    h.connection.close()
                    return
                h.wfile.write(chunk)
                sent += len(chunk)
        except (ConnectionError, OSError):
            h.close_connection = True
        finally:
            record.end = time.monotonic()
            conn.close()
