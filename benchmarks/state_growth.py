"""State growth: the cost of one poll with 10k vs 1M entries stored (it must stay flat).

    python benchmarks/state_growth.py                    # 10,000 and 1,000,000 entries
    python benchmarks/state_growth.py --sizes 10000 100000 --passes 3
    python benchmarks/state_growth.py --sizes 10000 --kept 0 1000   # a feed's own history

For each size S, in a fresh SQLite state (the real schema, created by
``SqliteStore``):

1. S entries of *other* feeds are written with direct SQL (1,000 entries per
   feed, ~200-byte summaries), plus a delivery history of S/10 alerts delivered
   to the sink (the outbox and ``alerts`` table grow with the state too);
2. a fixed small set of feeds (``--feeds``, default 50) served by
   benchmarks/server.py is polled in this process, one poll at a time (so each
   poll's CPU and wall are its own), parsing in the calling thread (no worker
   processes: all the CPU is counted): round 0 first (the baseline, not
   measured), then ``--passes`` passes over round 0 again (every poll a 304),
   then rounds 1..``--rounds`` (about half of the feeds change: a 200 and a
   parse; the rest 304), each followed by a dispatch of the round's alerts
   to a jsonl sink (``Dispatcher.run_once``, as the daemon does);
3. reports, per kind of poll, the median CPU (``getrusage`` of this process,
   all threads) and wall, and the dispatch's CPU per round.

The ratio of the 1M to the 10k figures is the point: the work of a poll touches
one feed's rows (primary key ``(feed, identity)``) and the outbox's pending rows
only, so it must not grow with the entries of other feeds.

``--kept K ...`` measures the other axis, a polled feed's own history: after the
baseline, each polled feed gets K entries that have left its body but are kept
(within ``retention``, as a busy feed's are after weeks), written with direct SQL
as a poll would have written them. A changed poll must cost the same with 1,000 of
them as with none.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import resource
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import Server, say  # noqa: E402

from feedwatch import log as logsetup  # noqa: E402
from feedwatch.config import load_config  # noqa: E402
from feedwatch.deliver import Dispatcher  # noqa: E402
from feedwatch.fetch import Fetcher  # noqa: E402
from feedwatch.poll import Poller  # noqa: E402
from feedwatch.sinks import build_sink  # noqa: E402
from feedwatch.store.sqlite import SqliteStore, _ts  # noqa: E402

PER_FEED = 1000  # filler entries per other feed


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def write_config(root: Path, port: int, feeds: int) -> Path:
    lines = [
        "[feedwatch]",
        f'state = "{root / "state.db"}"',
        "concurrency = 8",
        "per_host = 8",
        'timeout = "60s"',
        'log_level = "warning"',
        "",
        "[sinks.log]",
        'type = "jsonl"',
        f'path = "{root / "alerts.jsonl"}"',
        "",
    ]
    for i in range(feeds):
        lines += [
            "[[feeds]]",
            f'name = "f{i:05d}"',
            f'url = "http://127.0.0.1:{port}/f/{i:05d}"',
            "",
        ]
    path = root / "feedwatch.toml"
    path.write_text("\n".join(lines))
    return path


def fill(path: Path, entries: int, history: int) -> dict[str, float]:
    """Write the filler with direct SQL in the real schema (whatever its columns)."""
    import sqlite3

    SqliteStore(path).close()  # creates the schema at its current version
    t0 = time.perf_counter()
    now = _ts(datetime.now(timezone.utc))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    try:
        cols = {r[1]: r for r in conn.execute("PRAGMA table_info(entries)")}
        nfeeds = max(1, -(-entries // PER_FEED))
        with conn:
            conn.executemany(
                "INSERT INTO feeds (name, url) VALUES (?, ?)",
                [(f"other{k:05d}", f"http://example.invalid/{k}") for k in range(nfeeds)],
            )
        summary = "Lorem ipsum dolor sit amet, " * 7
        known = {
            "feed": lambda i: f"other{i // PER_FEED:05d}",
            "identity": lambda i: f"guid:urn:filler:{i}",
            "entry_id": lambda i: f"urn:filler:{i}",
            "link": lambda i: f"http://example.invalid/e/{i}",
            "title": lambda i: f"Filler entry number {i}",
            "summary": lambda i: summary,
            "content": lambda i: "",
            "published": lambda i: now - i * 1_000_000,
            "updated": lambda i: now - i * 1_000_000,
            "fingerprint": lambda i: hashlib.sha256(str(i).encode()).hexdigest(),
            "first_seen": lambda i: now,
            "last_seen": lambda i: now,
            "new_alert_id": lambda i: f"{i:032x}",
        }
        names = [n for n in cols if n in known or (cols[n][3] and cols[n][4] is None)]

        def value(n: str, i: int) -> Any:
            if n in known:
                return known[n](i)
            return 0 if "INT" in (cols[n][2] or "").upper() else ""

        sql = f"INSERT INTO entries ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        step = 50_000
        for start in range(0, entries, step):
            with conn:
                conn.executemany(
                    sql,
                    [
                        [value(n, i) for n in names]
                        for i in range(start, min(entries, start + step))
                    ],
                )
        payload = json.dumps({"kind": "new", "entry": {"title": "old", "summary": summary}})
        for start in range(0, history, step):
            rows = range(start, min(history, start + step))
            with conn:
                conn.executemany(
                    "INSERT INTO alerts (alert_id, feed, identity, kind, created_at, payload)"
                    " VALUES (?, ?, ?, 'new', ?, ?)",
                    [
                        (
                            f"h{i:031x}",
                            f"other{i % nfeeds:05d}",
                            f"guid:urn:filler:{i}",
                            now - 1_000_000 * (history - i),
                            payload,
                        )
                        for i in rows
                    ],
                )
                conn.executemany(
                    "INSERT INTO deliveries (alert_id, sink, status, delivered_at) VALUES (?, 'log', 'delivered', ?)",
                    [(f"h{i:031x}", now) for i in rows],
                )
        # no ANALYZE: a real state never gets one either
    finally:
        conn.close()
    return {"fill_s": round(time.perf_counter() - t0, 1), "bytes": path.stat().st_size}


def keep(path: Path, feeds: list[str], kept: int) -> None:
    """``kept`` entries per feed that left its body (recently seen, so not pruned), each
    row as a poll writes it (link_key and in_body, where the schema has them)."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(entries)")]
        if "link_key" in cols:
            from feedwatch.store.rows import link_key
        else:  # a tree from before schema 3

            def link_key(link: str | None) -> str:
                return ""

        now = _ts(datetime.now(timezone.utc)) or 0
        rows = []
        for feed in feeds:
            for j in range(kept):
                link = f"https://example.invalid/{feed}/kept/{j}"
                row = {
                    "feed": feed,
                    "identity": f"g:urn:kept:{feed}:{j}",
                    "entry_id": f"urn:kept:{feed}:{j}",
                    "link": link,
                    "title": f"Kept entry {j}",
                    "summary": "Lorem ipsum dolor sit amet, " * 30,
                    "content": "",
                    "published": now - j * 1_000_000,
                    "updated": None,
                    "fingerprint": hashlib.sha256(f"{feed}{j}".encode()).hexdigest(),
                    "first_seen": now - j * 1_000_000,
                    "last_seen": now,
                    "new_alert_id": f"{j:032x}",
                    "link_key": link_key(link),
                    "in_body": 0,  # they left the feed
                }
                rows.append([row[c] for c in cols])
        with conn:
            conn.executemany(
                f"INSERT INTO entries ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                rows,
            )
    finally:
        conn.close()


async def measure(
    root: Path, server: Server, passes: int, rounds: int, kept: int = 0
) -> dict[str, Any]:
    config = load_config(root / "feedwatch.toml")
    store = SqliteStore(config.state)
    samples: dict[str, list[tuple[float, float]]] = {"304": [], "changed": [], "200 unchanged": []}
    dispatch: list[tuple[float, float]] = []
    try:
        async with Fetcher(concurrency=config.concurrency, per_host=config.per_host) as fetcher:
            poller = Poller(config, store, fetcher)  # parses in this process: all CPU counted
            sinks = {name: build_sink(cfg) for name, cfg in config.sinks.items()}
            dispatcher = Dispatcher(config, store, sinks)

            async def one_pass(record: bool) -> None:
                for feed in config.feeds:
                    c0, w0 = cpu(), time.perf_counter()
                    r = await poller.poll(feed)
                    c1, w1 = cpu(), time.perf_counter()
                    if r.result == "error":
                        raise RuntimeError(f"{feed.name}: {r.error}")
                    if not record:
                        continue
                    if r.result == "not_modified":
                        kind = "304"
                    elif r.new or r.updated:
                        kind = "changed"
                    else:
                        kind = "200 unchanged"
                    samples[kind].append((c1 - c0, w1 - w0))

            async def deliver() -> None:
                c0, w0 = cpu(), time.perf_counter()
                await dispatcher.run_once()
                dispatch.append((cpu() - c0, time.perf_counter() - w0))

            server.ctl(round=0)
            await one_pass(False)  # baseline
            await deliver()
            if kept:
                keep(Path(config.state), [f.name for f in config.feeds], kept)
            for _ in range(passes):
                await one_pass(True)
            for k in range(1, rounds + 1):
                server.ctl(round=k)
                await one_pass(True)
                await deliver()
            await dispatcher.aclose()
    finally:
        store.close()

    def med(xs: list[tuple[float, float]], i: int) -> float | None:
        return round(statistics.median(x[i] for x in xs) * 1000, 3) if xs else None

    return {
        **{
            f"{kind}_{what}_ms": med(xs, i)
            for kind, xs in samples.items()
            for i, what in ((0, "cpu"), (1, "wall"))
        },
        "counts": {kind: len(xs) for kind, xs in samples.items()},
        "dispatch_cpu_ms": med(dispatch[1:], 0),
        "dispatch_wall_ms": med(dispatch[1:], 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    p.add_argument("--feeds", type=int, default=50, help="feeds polled (default 50)")
    p.add_argument("--passes", type=int, default=5, help="all-304 passes (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="changed rounds (default 3)")
    p.add_argument(
        "--kept",
        type=int,
        nargs="+",
        default=[0],
        help="entries each polled feed keeps (default 0)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work", type=Path, default=HERE / "results" / "work" / "state_growth")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    logsetup.configure(level="warning")  # a log line per poll would be measured too

    server = Server(a.feeds, a.seed, rounds=a.rounds)
    results: list[dict[str, Any]] = []
    try:
        server.ctl(round=0, latency_ms=0, reset=1)
        for size in a.sizes:
            for kept in a.kept:
                root = a.work / f"S{size}-K{kept}"
                if root.exists():  # a fresh state: the file, its WAL and its parse cache
                    shutil.rmtree(root)
                root.mkdir(parents=True)
                write_config(root, server.port, a.feeds)
                say(f"filling {size} entries ({kept} kept by each polled feed)")
                info = fill(root / "state.db", size, size // 10)
                say(f"filled in {info['fill_s']} s ({info['bytes'] / 1e6:.0f} MB); polling")
                row = {
                    "entries": size,
                    "kept": kept,
                    "history": size // 10,
                    **info,
                    **asyncio.run(measure(root, server, a.passes, a.rounds, kept)),
                }
                say(str(row))
                results.append(row)
    finally:
        server.close()

    out = a.out or HERE / "results" / f"state-growth-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"feeds": a.feeds, "passes": a.passes, "rounds": a.rounds, "results": results}, indent=1
        )
    )
    print(table(results))
    print(f"\nJSON: {out}")
    return 0


def table(results: list[dict[str, Any]]) -> str:
    base = results[0]
    head = "| entries stored | kept by each polled feed | 304 poll CPU ms | 304 wall ms | changed poll CPU ms | changed wall ms | dispatch CPU ms | × 304 CPU | × changed CPU |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]

    def ratio(r: dict[str, Any], key: str) -> str:
        a, b = r.get(key), base.get(key)
        return f"{a / b:.2f}" if a is not None and b else "–"

    for r in results:
        lines.append(
            f"| {r['entries']:,} | {r.get('kept', 0):,} | {r['304_cpu_ms']} | {r['304_wall_ms']} | {r['changed_cpu_ms']} | "
            f"{r['changed_wall_ms']} | {r['dispatch_cpu_ms']} | {ratio(r, '304_cpu_ms')} | {ratio(r, 'changed_cpu_ms')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
