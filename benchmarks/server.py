"""The benchmark's feed server: an asyncio HTTP/1.1 server in its own process.

    python benchmarks/server.py --n 1000 --seed 1 [--rounds 1] [--port 0]

prints ``PORT`` on stdout once every round is rendered, then serves until stdin
closes (or SIGTERM). Every response is pre-rendered (body, gzip body, ETag,
Last-Modified), so serving costs a dict look-up and a write: the server is not
the bottleneck at hundreds of concurrent keep-alive connections, and it reports
its own CPU time so that can be checked.

Paths:
    GET /f/NNNNN            feed NNNNN of the current round (If-None-Match,
                            If-Modified-Since -> 304; gzip when accepted)
    GET /_ctl?round=K&latency_ms=L&reset=1
                            sets the round / the per-request latency, resets the
                            counters; answers the counters as JSON (see ``stats``)
    GET /_ctl/record?round=K
                            the server's record of what changed in round K
                            (new and edited entries as [feed, link] pairs)

The latency is applied to every feed request (200 and 304 alike) before the
response is written, without blocking anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth


@dataclass(frozen=True)
class Prepared:
    body: bytes
    gz: bytes
    etag: str
    last_modified: str
    changed_at: int
    ctype: bytes


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class State:
    def __init__(self, n: int, seed: int, upto: int) -> None:
        states, records = synth.rounds(n, seed, upto)
        self.records = records
        self.tables: list[dict[str, Prepared]] = []
        for feeds in states:
            table: dict[str, Prepared] = {}
            for f in feeds:
                body = synth.render(f)
                table[f.path()] = Prepared(
                    body=body,
                    gz=gzip.compress(body, compresslevel=1, mtime=0),
                    etag=synth.etag(body),
                    last_modified=synth.http_date(f.changed_at),
                    changed_at=f.changed_at,
                    ctype=b"application/rss+xml" if f.kind == "rss" else b"application/atom+xml",
                )
            self.tables.append(table)
        self.round = 0
        self.latency = 0.0
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.ok = 0
        self.not_modified = 0
        self.other = 0
        self.in_flight = 0
        self.peak = 0
        self.bytes_out = 0
        self.connections = 0
        self.peak_connections = 0
        self.open_connections = getattr(self, "open_connections", 0)
        self.paths: set[str] = set()
        self.t0 = time.monotonic()
        self.cpu0 = _cpu()

    def stats(self) -> dict[str, object]:
        return {
            "round": self.round,
            "latency_ms": round(self.latency * 1000, 3),
            "requests": self.requests,
            "ok": self.ok,
            "not_modified": self.not_modified,
            "other": self.other,
            "distinct_paths": len(self.paths),
            "peak_in_flight": self.peak,
            "connections_opened": self.connections,
            "peak_connections": self.peak_connections,
            "bytes_out": self.bytes_out,
            "wall": round(time.monotonic() - self.t0, 4),
            "cpu": round(_cpu() - self.cpu0, 4),
        }


def _http_date_to_epoch(value: str) -> int | None:
    from email.utils import parsedate_to_datetime

    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class Conn(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.ready_at = 0.0  # responses leave in request order
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        s = self.state
        s.connections += 1
        s.open_connections += 1
        s.peak_connections = max(s.peak_connections, s.open_connections)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.open_connections -= 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while not self.closing:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536 and self.transport is not None:
                    self.transport.close()
                return
            head = self.buf[:end].decode("latin-1")
            self.buf = self.buf[end + 4 :]
            self.handle(head)

    def handle(self, head: str) -> None:
        lines = head.split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            self.respond(b"400 Bad Request", [], b"bad request\n", close=True)
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        conn_hdr = headers.get("connection", "").lower()
        close = conn_hdr == "close" or (version == "HTTP/1.0" and conn_hdr != "keep-alive")
        if target.startswith("/_ctl"):
            self.control(target, close)
            return
        s = self.state
        s.requests += 1
        s.in_flight += 1
        s.peak = max(s.peak, s.in_flight)
        path = urlsplit(target).path
        s.paths.add(path)
        prep = s.tables[s.round].get(path)
        if prep is None or method not in ("GET", "HEAD"):
            s.other += 1
            self.later(b"404 Not Found", [], b"not found\n", close, feed=True)
            return
        common = [
            ("ETag", prep.etag),
            ("Last-Modified", prep.last_modified),
            ("Date", synth.http_date(int(time.time()))),
        ]
        inm = headers.get("if-none-match")
        ims = headers.get("if-modified-since")
        not_modified = False
        if inm is not None:
            not_modified = prep.etag in [t.strip().removeprefix("W/") for t in inm.split(",")]
        elif ims is not None:
            t = _http_date_to_epoch(ims)
            not_modified = t is not None and prep.changed_at <= t
        if not_modified:
            s.not_modified += 1
            self.later(b"304 Not Modified", common, b"", close, feed=True, no_body=True)
            return
        s.ok += 1
        body = prep.body
        extra = [
            ("Content-Type", prep.ctype.decode() + "; charset=utf-8"),
            ("Vary", "Accept-Encoding"),
        ]
        if "gzip" in headers.get("accept-encoding", ""):
            body = prep.gz
            extra.append(("Content-Encoding", "gzip"))
        if method == "HEAD":
            body = b""
        self.later(b"200 OK", common + extra, body, close, feed=True)

    def control(self, target: str, close: bool) -> None:
        s = self.state
        u = urlsplit(target)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        if u.path == "/_ctl/record":
            k = int(q.get("round", s.round))
            rec = s.records[k] if 0 <= k < len(s.records) else None
            out: object = (
                None
                if rec is None
                else {
                    "round": rec.round,
                    "new": rec.new,
                    "edited": rec.edited,
                    "changed_feeds": rec.changed_feeds,
                }
            )
        else:
            if "round" in q:
                k = int(q["round"])
                if not 0 <= k < len(s.tables):
                    self.respond(b"400 Bad Request", [], b"no such round\n", close=True)
                    return
                s.round = k
            if "latency_ms" in q:
                s.latency = float(q["latency_ms"]) / 1000.0
            out = s.stats()
            if q.get("reset"):
                s.reset()
        body = json.dumps(out).encode()
        self.respond(b"200 OK", [("Content-Type", "application/json")], body, close)

    def later(
        self,
        status: bytes,
        headers: list[tuple[str, str]],
        body: bytes,
        close: bool,
        *,
        feed: bool = False,
        no_body: bool = False,
    ) -> None:
        s = self.state
        loop = asyncio.get_running_loop()
        if s.latency <= 0 and self.ready_at <= loop.time():
            self._send(status, headers, body, close, feed, no_body)
            return
        self.ready_at = max(self.ready_at, loop.time() + s.latency)
        loop.call_at(self.ready_at, self._send, status, headers, body, close, feed, no_body)

    def _send(
        self,
        status: bytes,
        headers: list[tuple[str, str]],
        body: bytes,
        close: bool,
        feed: bool,
        no_body: bool,
    ) -> None:
        if feed:
            self.state.in_flight -= 1
        self.respond(status, headers, body, close, no_body=no_body)

    def respond(
        self,
        status: bytes,
        headers: list[tuple[str, str]],
        body: bytes,
        close: bool,
        *,
        no_body: bool = False,
    ) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        head = [b"HTTP/1.1 ", status, b"\r\nServer: feedwatch-bench\r\n"]
        for k, v in headers:
            head.append(f"{k}: {v}\r\n".encode("latin-1"))
        if not no_body:
            head.append(b"Content-Length: %d\r\n" % len(body))
        if close:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        data = b"".join(head) + body
        self.state.bytes_out += len(data)
        t.write(data)
        if close:
            self.closing = True
            t.close()


async def serve(args: argparse.Namespace) -> None:
    state = State(args.n, args.seed, args.rounds)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Conn(state), "127.0.0.1", args.port, backlog=4096, reuse_address=True
    )
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_signal_handler(signal.SIGINT, done.set)

    def stdin_readable() -> None:  # stdin closing (the harness died) stops the server too
        if not os.read(sys.stdin.fileno(), 65536):
            loop.remove_reader(sys.stdin.fileno())
            done.set()

    loop.add_reader(sys.stdin.fileno(), stdin_readable)
    async with server:
        await done.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, required=True, help="number of feeds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="render rounds 0..ROUNDS")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    try:
        import resource as _r

        soft, hard = _r.getrlimit(_r.RLIMIT_NOFILE)
        _r.setrlimit(_r.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
