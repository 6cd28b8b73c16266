"""A real webhook receiver on 127.0.0.1 for the sink tests.

It records every request (method, path, headers, exact body bytes, the status it
answered) and answers from a script that a test may change at any time: status,
Retry-After, a delay before answering, a redirect Location, a body. ``max_body``
refuses a larger body with 413, as nginx does past its ``client_max_body_size``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from feedwatch.store.base import Delivery


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"ok"
    retry_after: str | None = None
    delay: float = 0.0
    location: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    reason: str | None = None  # the status line's reason phrase (None: the standard one)


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int = 200  # what the receiver answered


@dataclass
class Receiver:
    host: str = "127.0.0.1"
    port: int = 0
    answer: Answer = field(default_factory=Answer)
    max_body: int | None = None  # a longer body is answered 413 Payload Too Large
    requests: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def script(self, **changes: Any) -> None:
        """Change how later requests are answered (fields of ``Answer``)."""
        with self._lock:
            self.answer = replace(Answer(), **changes)

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received()
            if len(got) >= count:
                return got
            time.sleep(0.01)
        raise AssertionError(f"receiver got {len(self.received())} requests, wanted {count}")

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver._lock:
                    answer = receiver.answer
                    if receiver.max_body is not None and len(body) > receiver.max_body:
                        answer = Answer(status=413, body=b"<html>413 Request Entity Too Large")
                    receiver.requests.append(
                        Received(
                            self.command,
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            answer.status,
                        )
                    )
                if answer.delay and receiver._stopping.wait(answer.delay):
                    return
                self.send_response(answer.status, answer.reason)
                if answer.retry_after is not None:
                    self.send_header("Retry-After", answer.retry_after)
                if answer.location is not None:
                    self.send_header("Location", answer.location)
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_POST = _handle
            do_GET = _handle
            do_PUT = _handle

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)


@pytest.fixture
def webhook_receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


# --------------------------------------------------------------------------
# Alert builders for the sink tests
# --------------------------------------------------------------------------


def make_payload(
    *,
    kind: str = "new",
    title: str = "NATO and Ukraine to Discuss Russia's Hypersonic Missile Strike",
    link: str | None = "https://www.example.org/2024/11/22/nato-ukraine",
    summary: str = "Officials met in Brussels.",
    changes: dict[str, dict[str, str | None]] | None = None,
    message: str | None = None,
    feed: str = "moscow-times",
    alert_id: str = "3c1f0a9e5b7d4c2e8f6a1b3c5d7e9f01",
) -> dict[str, Any]:
    """A SPEC section 5 payload; a notice (flood/stale/recovered) when ``message`` is given."""
    notice = kind in ("flood", "stale", "recovered")
    entry = None
    if not notice:
        entry = {
            "id": link,
            "title": title,
            "link": link,
            "author": "The Moscow Times",
            "published": "2024-11-22T10:40:17Z",
            "updated": "2024-11-22T15:56:45Z",
            "summary": summary,
            "content": summary,
            "tags": ["Ukraine war"],
            "enclosures": [],
        }
    return {
        "version": 1,
        "id": alert_id,
        "kind": kind,
        "detected_at": "2024-11-22T15:57:03Z",
        "feed": {
            "name": feed,
            "url": "https://www.example.org/rss",
            "title": "The Moscow Times",
            "tags": ["news"],
        },
        "entry": entry,
        "changes": {} if notice else dict(changes or {}),
        "matched": [] if notice else [{"rule": "missiles", "terms": ["hypersonic"]}],
        "message": message,
    }


def make_delivery(payload: dict[str, Any], sink: str = "hook") -> Delivery:
    return Delivery(
        alert_id=payload["id"],
        sink=sink,
        feed=payload["feed"]["name"],
        kind=payload["kind"],
        payload=payload,
        thread_id=None,
        created_at=datetime(2024, 11, 22, 15, 57, 3, tzinfo=timezone.utc),
    )


UPDATE_CHANGES: dict[str, dict[str, str | None]] = {
    "updated": {"old": "2024-11-22T10:40:17Z", "new": "2024-11-22T15:56:45Z"},
    "summary": {"old": "Officials will meet.", "new": "Officials met in Brussels."},
}
