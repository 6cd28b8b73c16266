"""Several `feedwatch run` instances on one PostgreSQL state: throughput, double polls,
failover.

    python benchmarks/multi_instance.py                     # 5,000 feeds, 1/2/3 instances + failover
    python benchmarks/multi_instance.py --feeds 500 --warmup 20 --measure 20   # quick

What it does, on this machine only (127.0.0.1):

- starts a throwaway PostgreSQL cluster (tests/pg.py; or ``--pg-url``) and a feed
  server in its own process (asyncio, static RSS with ETag, so after the baseline a
  poll is a conditional GET answered 304 after ``--latency`` ms); the server notes
  every request's time, feed and the polling instance (its User-Agent);
- primes the state (one instance polls every feed once: the baselines), then
  for 1, 2 and 3 instances on that state: starts them (``interval``, ``jitter = 0``,
  ``concurrency = per_host = 16``), lets the start-up spread pass (``--warmup``), then
  counts the polls of ``--measure`` seconds: polls per second (the demand is
  feeds / interval: instances that keep up poll at that rate), each instance's share
  and CPU time, polls more than 2 s late, and **feeds polled twice in one
  interval** (two polls closer than interval - 1 s, the clock being to the second;
  must be 0);
- failover: 3 instances at ``--failover-interval`` (a load two can carry), then
  ``kill -9`` of one mid-run; reports the polls in
  flight at the kill and how long until another instance polled each of those feeds
  (bounded by the lease, ``LEASE_SECONDS``), the largest gap of any feed across the
  kill, and double polls.

Writes ``benchmarks/results/multi-instance-<time>.json`` and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))


# ---------------------------------------------------------------------------
# The feed server (run as: multi_instance.py --serve N --latency MS)
# ---------------------------------------------------------------------------


def _rss(i: int) -> bytes:
    items = "".join(
        f"<item><title>Feed {i} story {k}</title><link>https://example.org/{i}/{k}</link>"
        f"<guid>https://example.org/{i}/{k}</guid>"
        f"<pubDate>Mon, 0{1 + k % 9} Nov 2026 10:00:00 GMT</pubDate>"
        f"<description>Story {k} of feed {i}, with a little text to parse.</description></item>"
        for k in range(10)
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>Feed {i}</title>'
        f"<link>https://example.org/{i}</link>{items}</channel></rss>"
    ).encode()


class _Conn(asyncio.Protocol):
    def __init__(self, srv: _Server) -> None:
        self.srv = srv
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.handle(head.decode("latin-1"))

    def handle(self, head: str) -> None:
        lines = head.split("\r\n")
        _method, target, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        srv = self.srv
        if target.startswith("/_ctl/"):
            if target == "/_ctl/reset":
                srv.hits.clear()
                self.send(b"200 OK", b"ok")
            elif target.startswith("/_ctl/last?ua="):
                ua = target.split("=", 1)[1]
                last = max((t for t, _i, u in reversed(srv.hits[-2000:]) if u == ua), default=0.0)
                self.send(b"200 OK", repr(last).encode())
            elif target == "/_ctl/distinct":
                self.send(b"200 OK", str(len({i for _t, i, _ua in srv.hits})).encode())
            elif target.startswith("/_ctl/dump"):
                Path(srv.dump).write_text(json.dumps(srv.hits))
                self.send(b"200 OK", str(len(srv.hits)).encode())
            return
        try:
            i = int(target.rsplit("/", 1)[-1])
            body, etag = srv.bodies[i]
        except (ValueError, IndexError):
            self.send(b"404 Not Found", b"no")
            return
        srv.hits.append((time.time(), i, headers.get("user-agent", "")))
        if headers.get("if-none-match") == etag:
            status, payload = b"304 Not Modified", b""
        else:
            status, payload = b"200 OK", body
        extra = f"ETag: {etag}\r\nContent-Type: application/rss+xml\r\n".encode()
        asyncio.get_running_loop().call_later(
            srv.latency, self.send, status, payload, extra, status.startswith(b"304")
        )

    def send(self, status: bytes, body: bytes, extra: bytes = b"", no_body: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        length = b"" if no_body else b"Content-Length: %d\r\n" % len(body)
        self.transport.write(b"HTTP/1.1 " + status + b"\r\n" + extra + length + b"\r\n" + body)


class _Server:
    def __init__(self, n: int, latency: float, dump: str) -> None:
        self.bodies = []
        for i in range(n):
            body = _rss(i)
            self.bodies.append((body, f'"{hash(body) & 0xFFFFFFFF:x}"'))
        self.latency = latency
        self.dump = dump
        self.hits: list[tuple[float, int, str]] = []


async def _serve(n: int, latency: float, dump: str) -> None:
    srv = _Server(n, latency, dump)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Conn(srv), "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.buffer.read1(65536) or done.set())
    async with server:
        await done.wait()


# ---------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------


def _ctl(port: int, what: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_ctl/{what}", timeout=30) as r:
        return r.read().decode()


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _config(work: Path, i: int, state: str, port: int, n: int, interval: float) -> Path:
    cfg = work / f"instance{i}.toml"
    feeds = "".join(
        f'[[feeds]]\nname = "f{k:05d}"\nurl = "http://127.0.0.1:{port}/f/{k}"\n'
        f"allow_private = true\n"
        for k in range(n)
    )
    cfg.write_text(
        f"""[feedwatch]
state = "{state}"
interval = "{interval:g}s"
jitter = "0s"
timeout = "20s"
concurrency = 16
per_host = 16
user_agent = "bench/i{i}"
log_format = "json"
log_level = "warning"
shutdown_timeout = "10s"

[sinks.log]
type = "jsonl"
path = "{work}/alerts-{i}.jsonl"

{feeds}"""
    )
    return cfg


def _start(work: Path, k: int, url: str, port: int, n: int, interval: float) -> list[Any]:
    procs = []
    for i in range(k):
        cfg = _config(work, i, url, port, n, interval)
        err = (work / f"instance{i}.log").open("a")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "feedwatch", "-c", str(cfg), "run"],
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=work,
            )
        )
    return procs


def _stop(procs: list[Any]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _hits(port: int, dump: Path) -> list[tuple[float, int, str]]:
    _ctl(port, "dump")
    return [tuple(h) for h in json.loads(dump.read_text())]  # type: ignore[misc]


def _by_feed(hits: list[tuple[float, int, str]]) -> dict[int, list[tuple[float, str]]]:
    out: dict[int, list[tuple[float, str]]] = {}
    for t, i, ua in sorted(hits):
        out.setdefault(i, []).append((t, ua))
    return out


def _analyse(hits: list[tuple[float, int, str]], interval: float, seconds: float) -> dict[str, Any]:
    feeds = _by_feed(hits)
    doubles = 0
    late = 0
    gaps_all: list[float] = []
    for polls in feeds.values():
        gaps = [b[0] - a[0] for a, b in zip(polls, polls[1:], strict=False)]
        gaps_all += gaps
        if any(g < interval - 1.0 for g in gaps):
            doubles += 1
        late += sum(1 for g in gaps if g > interval + 2.0)
    share: dict[str, int] = {}
    for _t, _i, ua in hits:
        share[ua] = share.get(ua, 0) + 1
    gaps_all.sort()
    return {
        "polls": len(hits),
        "polls_per_s": round(len(hits) / seconds, 1),
        "feeds_polled": len(feeds),
        "feeds_polled_twice_in_one_interval": doubles,
        "polls_more_than_2s_late": late,
        "gap_min_s": round(gaps_all[0], 3) if gaps_all else None,
        "gap_median_s": round(gaps_all[len(gaps_all) // 2], 3) if gaps_all else None,
        "gap_max_s": round(gaps_all[-1], 3) if gaps_all else None,
        "share": dict(sorted(share.items())),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--feeds", type=int, default=5000)
    p.add_argument("--interval", type=float, default=20.0, help="poll interval (s)")
    p.add_argument("--latency", type=float, default=100.0, help="server latency per request (ms)")
    p.add_argument("--warmup", type=float, default=90.0, help="seconds before measuring")
    p.add_argument("--measure", type=float, default=60.0, help="seconds measured")
    p.add_argument("--instances", default="1,2,3")
    p.add_argument("--no-failover", action="store_true")
    p.add_argument(
        "--sqlite", action="store_true", help="also one instance on an SQLite file, for comparison"
    )
    p.add_argument(
        "--failover-interval",
        type=float,
        default=60.0,
        help="poll interval of the failover run (s): a load the survivors can carry, so that"
        " what is measured is the takeover, not a backlog",
    )
    p.add_argument("--pg-url", help="a database to create a schema in (default: a throwaway)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dump", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(_serve(args.feeds, args.latency / 1000, args.dump))
        return 0

    from feedwatch.store.base import LEASE_SECONDS
    from tests.pg import PgCluster

    work = Path(tempfile.mkdtemp(prefix="feedwatch-multi-"))
    dump = work / "hits.json"
    cluster = PgCluster(args.pg_url) if args.pg_url else PgCluster.start()
    url = cluster.new_schema("bench")
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--feeds", str(args.feeds),
         "--latency", str(args.latency), "--dump", str(dump)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    port = int(server.stdout.readline())
    report: dict[str, Any] = {
        "feeds": args.feeds,
        "interval_s": args.interval,
        "demand_polls_per_s": round(args.feeds / args.interval, 1),
        "latency_ms": args.latency,
        "warmup_s": args.warmup,
        "measure_s": args.measure,
        "lease_s": LEASE_SECONDS,
        "cpus": os.cpu_count(),
        "runs": [],
    }
    try:
        # prime: every feed baselined once (first polls parse and store every entry);
        # what is measured is the steady state, conditional GETs answered 304
        started = time.monotonic()
        procs = _start(work, 1, url, port, args.feeds, args.interval)
        while int(_ctl(port, "distinct")) < args.feeds:
            time.sleep(1)
        report["prime_s"] = round(time.monotonic() - started, 1)
        _stop(procs)
        print(json.dumps({"primed_in_s": report["prime_s"]}), flush=True)
        if args.sqlite:
            db = str(work / "state.db")
            _ctl(port, "reset")
            procs = _start(work, 1, db, port, args.feeds, args.interval)
            while int(_ctl(port, "distinct")) < args.feeds:
                time.sleep(1)
            _stop(procs)
            procs = _start(work, 1, db, port, args.feeds, args.interval)
            time.sleep(args.warmup)
            _ctl(port, "reset")
            cpu0 = [_cpu(pr.pid) for pr in procs]
            time.sleep(args.measure)
            cpu = [round(_cpu(pr.pid) - c, 1) for pr, c in zip(procs, cpu0, strict=True)]
            hits = _hits(port, dump)
            _stop(procs)
            run = {
                "instances": 1,
                "state": "sqlite",
                **_analyse(hits, args.interval, args.measure),
                "cpu_s": cpu,
            }
            report["runs"].append(run)
            print(json.dumps(run), flush=True)
        for k in [int(x) for x in args.instances.split(",") if x.strip()]:
            procs = _start(work, k, url, port, args.feeds, args.interval)
            time.sleep(args.warmup)
            _ctl(port, "reset")
            cpu0 = [_cpu(pr.pid) for pr in procs]
            time.sleep(args.measure)
            cpu = [round(_cpu(pr.pid) - c, 1) for pr, c in zip(procs, cpu0, strict=True)]
            hits = _hits(port, dump)
            _stop(procs)
            run = {
                "instances": k,
                "state": "postgresql",
                **_analyse(hits, args.interval, args.measure),
                "cpu_s": cpu,
            }
            report["runs"].append(run)
            print(json.dumps(run), flush=True)
        if not args.no_failover:
            interval = args.failover_interval
            procs = _start(work, 3, url, port, args.feeds, interval)
            time.sleep(args.warmup)
            _ctl(port, "reset")
            time.sleep(args.measure / 2)
            victim = "bench/i0"
            # kill it while it has polls in flight: right after it sent a request
            deadline = time.time() + 30
            while (
                time.time() < deadline
                and time.time() - float(_ctl(port, f"last?ua={victim}")) > 0.03
            ):
                time.sleep(0.005)
            killed_at = time.time()
            procs[0].kill()
            procs[0].wait()
            time.sleep(max(args.measure / 2, LEASE_SECONDS + interval + 5))
            hits = _hits(port, dump)
            _stop(procs[1:])
            feeds = _by_feed(hits)
            in_flight = []  # feeds the victim was polling when it died
            takeover = []
            spanning = []
            for i, polls in feeds.items():
                before = [(t, ua) for t, ua in polls if t <= killed_at]
                after = [t for t, ua in polls if t > killed_at]
                if before and after:
                    spanning.append(after[0] - before[-1][0])
                if (
                    before
                    and before[-1][1] == victim
                    and killed_at - before[-1][0] < (args.latency / 1000 + 0.05)
                ):  # its request was still waiting for the answer: the poll died with it
                    in_flight.append(i)
                    takeover.append(round(after[0] - killed_at, 2) if after else None)
            after_kill = [h for h in hits if h[0] > killed_at + 0.05 and h[2] == victim]
            # a poll that died with the instance was never recorded: polling the feed again
            # is the takeover, not a double poll
            lost = {(i, max(t for t, _ in feeds[i] if t <= killed_at)) for i in in_flight}
            kept = [h for h in hits if (h[1], h[0]) not in lost]
            doubles_excl = _analyse(kept, interval, 1.0)["feeds_polled_twice_in_one_interval"]
            fail = {
                "instances": 3,
                "interval_s": interval,
                "killed": victim,
                **_analyse(hits, interval, time.time() - killed_at + args.measure / 2),
                "feeds_polled_twice_not_counting_takeovers": doubles_excl,
                "victim_polls_after_kill": len(after_kill),
                "feeds_in_flight_at_kill": len(in_flight),
                "takeover_s_max": max((t for t in takeover if t is not None), default=None),
                "takeover_never": sum(1 for t in takeover if t is None),
                "max_gap_across_kill_s": round(max(spanning), 2) if spanning else None,
                "feeds_gap_across_kill_over_interval_plus_2s": sum(
                    1 for g in spanning if g > interval + 2
                ),
            }
            report["failover"] = fail
            print(json.dumps(fail), flush=True)
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(timeout=30)
        cluster.drop_schema(url)
        if not args.pg_url:
            cluster.stop()
    out = HERE / "results" / f"multi-instance-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
