"""A scripted HTTP/1.1 feed server on 127.0.0.1 for tests and benchmarks.

Real sockets, real keep-alive, real conditional GET: the fetcher, the poller and the
daemon are tested against this instead of a mock. One thread per connection
(``ThreadingHTTPServer``) holds hundreds of concurrent connections; everything the
tests script (body, status, delay, trickle, gzip, a reset mid-body) is per path.

    with FeedServer() as srv:
        srv.set("/feed", RSS)
        srv.url("/feed")          # http://127.0.0.1:PORT/feed
        srv.count("/feed")        # requests seen for that path
"""

from __future__ import annotations

import gzip as gzip_module
import hashlib
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

NO_BODY_STATUSES = frozenset({204, 304})


@dataclass
class _Route:
    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = "application/xml"
    etag: str | None = None
    last_modified: str | None = None
    delay: float = 0.0
    trickle: float | None = None
    encoded: bytes | None = None  # the gzip-compressed body, when gzip=True
    reset_mid_body: bool = False
    trailing: bytes = b""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for "connection refused")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, owner: FeedServer) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.reset: set[socket.socket] = set()  # to be closed with RST, not FIN
        self.conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), which can stall on a machine without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.conn_lock:
            self.connections.discard(request)
            reset = request in self.reset
            self.reset.discard(request)
        if reset:
            self.close_request(request)  # SO_LINGER 0: close() sends RST
        else:
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-response is what several tests do on purpose


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection is dropped after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.owner._handle(self, head=False)

    def do_HEAD(self) -> None:
        self.server.owner._handle(self, head=True)


class FeedServer:
    """A real HTTP/1.1 server serving scripted responses; see the module docstring."""

    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}
        self._lock = threading.Lock()
        self._requests: list[tuple[str, str, dict[str, str]]] = []
        self._arrivals: list[tuple[str, float]] = []  # (path, wall-clock time)
        self._in_flight = 0
        self._in_flight_max = 0
        self._closing = threading.Event()
        self._server = _Server(self)
        self.port: int = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"feedserver-{self.port}",
            daemon=True,
        )
        self._thread.start()

    # -- scripting ---------------------------------------------------------

    def url(self, path: str = "/") -> str:
        if not path.startswith("/"):
            path = "/" + path
        return f"http://127.0.0.1:{self.port}{path}"

    def set(
        self,
        path: str,
        body: bytes | str,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        content_type: str | None = "application/xml",
        etag: bool | str = True,
        last_modified: str | None = None,
        delay: float = 0,
        trickle: float | None = None,
        gzip: bool = False,
        reset_mid_body: bool = False,
        trailing: bytes = b"",
    ) -> None:
        """Serve ``body`` at ``path`` (replacing what was there).

        ``etag``: a strong ETag from the body's hash (a string: that ETag, whatever the
        body, as a server that sets it before rendering), and 304 on a matching
        If-None-Match (or, without one, an If-Modified-Since not older than
        ``last_modified``). ``delay``: seconds before the response starts.
        ``trickle``: seconds between body bytes. ``gzip``: sent gzip-encoded whatever
        the client accepts. ``reset_mid_body``: half the body, then a TCP reset.
        ``trailing``: bytes sent on the connection 10 ms after the response (a 304 with
        a body, more bytes than Content-Length): what the next request on a kept-alive
        connection reads first.
        """
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        route = _Route(
            body=data,
            status=status,
            headers=dict(headers or {}),
            content_type=content_type,
            etag=etag if isinstance(etag, str) else _hash_etag(data) if etag else None,
            last_modified=last_modified,
            delay=delay,
            trickle=trickle,
            encoded=gzip_module.compress(data, compresslevel=6, mtime=0) if gzip else None,
            reset_mid_body=reset_mid_body,
            trailing=trailing,
        )
        with self._lock:
            self._routes[path] = route

    def redirect(self, path: str, to: str, status: int = 301) -> None:
        """Answer ``path`` with a redirect to ``to`` (absolute or relative, sent as is)."""
        route = _Route(body=b"", status=status, headers={"Location": to}, content_type=None)
        with self._lock:
            self._routes[path] = route

    def remove(self, path: str) -> None:
        """Forget ``path``: it answers 404 from now on."""
        with self._lock:
            self._routes.pop(path, None)

    # -- observing ---------------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, str, dict[str, str]]]:
        """A snapshot of every request so far: (method, path, lower-cased headers)."""
        with self._lock:
            return list(self._requests)

    def count(self, path: str) -> int:
        """How many requests asked for ``path`` (with or without its query string)."""
        with self._lock:
            return sum(1 for _, p, _ in self._requests if p == path or p.split("?", 1)[0] == path)

    def arrivals(self, path: str) -> list[float]:
        """When each request for ``path`` (without its query string) came, wall-clock
        ``time.time()`` as the daemon's schedule is."""
        with self._lock:
            return [t for p, t in self._arrivals if p.split("?", 1)[0] == path]

    @property
    def open_connections(self) -> int:
        """Connections a client holds open now (kept alive between requests)."""
        with self._server.conn_lock:
            return len(self._server.connections)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self._arrivals.clear()
            self._in_flight_max = self._in_flight

    @property
    def in_flight_max(self) -> int:
        """The most requests seen at once (from request received until its response was sent)."""
        with self._lock:
            return self._in_flight_max

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        with self._server.conn_lock:
            conns = list(self._server.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FeedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- serving -----------------------------------------------------------

    def _handle(self, h: _Handler, *, head: bool) -> None:
        headers = {k.lower(): v for k, v in h.headers.items()}
        path = h.path
        with self._lock:
            self._requests.append((h.command, path, headers))
            self._arrivals.append((path, time.time()))
            self._in_flight += 1
            self._in_flight_max = max(self._in_flight_max, self._in_flight)
            route = self._routes.get(path) or self._routes.get(urlsplit(path).path)
        done = False

        def finish() -> None:
            # Counted out just before the last bytes go, so a client that starts its next
            # request as soon as it has this response never sees an inflated peak.
            nonlocal done
            if not done:
                done = True
                with self._lock:
                    self._in_flight -= 1

        try:
            self._respond(h, route, headers, head, finish)
        except OSError:
            h.close_connection = True  # the client went away
        finally:
            finish()

    def _respond(
        self,
        h: _Handler,
        route: _Route | None,
        req_headers: dict[str, str],
        head: bool,
        finish: Any,
    ) -> None:
        if route is None:
            route = _Route(body=b"not found\n", status=404, content_type="text/plain")
        if route.delay and self._closing.wait(route.delay):
            h.close_connection = True
            return

        status = route.status
        body = route.encoded if route.encoded is not None else route.body
        out: dict[str, str] = {"Date": formatdate(usegmt=True), "Server": "feedserver"}
        if route.content_type:
            out["Content-Type"] = route.content_type
        if route.encoded is not None:
            out["Content-Encoding"] = "gzip"
        if route.etag and 200 <= status < 300:
            out["ETag"] = route.etag
        if route.last_modified:
            out["Last-Modified"] = route.last_modified
        if status == 200 and _not_modified(route, req_headers):
            status, body = 304, b""
            out.pop("Content-Type", None)
            out.pop("Content-Encoding", None)
        for k, v in route.headers.items():
            for existing in [e for e in out if e.lower() == k.lower()]:
                del out[existing]
            out[k] = v
        if status not in NO_BODY_STATUSES:
            out["Content-Length"] = str(len(body))
        else:
            body = b""
        phrase = _phrase(status)
        head_bytes = f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1") + b"".join(
            f"{k}: {v}\r\n".encode("latin-1") for k, v in out.items()
        )
        head_bytes += b"\r\n"
        if head:
            body = b""

        if route.reset_mid_body and body:
            h.wfile.write(head_bytes + body[: max(1, len(body) // 2)])
            # Give the client time to read what was sent, then abort with RST, not FIN.
            self._closing.wait(0.1)
            finish()
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with h.server.conn_lock:
                h.server.reset.add(h.connection)
            h.close_connection = True
            return
        if route.trickle is not None and body:
            h.wfile.write(head_bytes)
            for i in range(len(body)):
                if i == len(body) - 1:
                    finish()
                h.wfile.write(body[i : i + 1])
                if i < len(body) - 1 and self._closing.wait(route.trickle):
                    h.close_connection = True
                    return
            return
        finish()
        h.wfile.write(head_bytes + body)
        if route.trailing and not self._closing.wait(0.01):
            h.wfile.write(route.trailing)


def _hash_etag(data: bytes) -> str:
    return f'"{hashlib.sha256(data).hexdigest()[:24]}"'


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _not_modified(route: _Route, req: dict[str, str]) -> bool:
    inm = req.get("if-none-match")
    if inm is not None:
        if not route.etag:
            return False
        tags = [t.strip() for t in inm.split(",")]
        return "*" in tags or route.etag in tags or f"W/{route.etag}" in tags
    ims = req.get("if-modified-since")
    if ims and route.last_modified:
        try:
            return parsedate_to_datetime(route.last_modified) <= parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
    return False


@pytest.fixture(name="feed_server")
def feed_server_fixture() -> Iterator[FeedServer]:
    """The ``feed_server`` fixture: a started FeedServer, closed after the test.

    Import ``feed_server_fixture`` into a test module (``# noqa: F401``) and ask for
    ``feed_server``: importing the name ``feed_server`` itself works too, but ruff then
    flags every test parameter of that name as a redefinition (F811).
    """
    with FeedServer() as server:
        yield server


feed_server = feed_server_fixture
