"""Floors: the least any feed tool could spend on the same work, measured in a child process.

    python benchmarks/floors.py fetch --port P --n N --concurrency C --mode plain|conditional
                                      [--client httpx|aiohttp|fetcher] [--etag-round K]
    python benchmarks/floors.py parse --n N --seed S --what all|changed|changed-items
                                      [--round K] [--workers W]
    python benchmarks/floors.py startup

Each prints one JSON object: ``wall`` and ``cpu`` (seconds) of the measured part
only (imports and rendering the bodies are outside it), plus counts.

- fetch: GET every feed once, ``C`` at a time, on one keep-alive client. ``plain``
  sends no validators (a cold poll); ``conditional`` sends the ETags of round
  ``--etag-round`` (so the current round answers 304 for every unchanged feed).
  ``httpx`` uses an AsyncClient with the pool limits feedwatch's Fetcher used before
  it moved to aiohttp (feedwatch/transport.py); ``aiohttp`` (a feedwatch dependency
  since then) is the comparison the issue asks for; ``fetcher`` is feedwatch's own
  ``Fetcher`` (semaphores, timeouts, redirect guard, body limits) on the same requests.
- parse: ``feedparser.parse`` on bodies from memory. ``all`` = every body of round
  K; ``changed`` = the full round-K bodies of the feeds that changed in round K;
  ``changed-items`` = for those feeds, a document holding only the channel and the
  new or edited items (what parsing only the changed items would cost).
  ``--workers 2`` spreads the bodies over a process pool.
- startup: interpreter start plus importing everything ``feedwatch check`` imports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth
from tools import own_env


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def _etags(n: int, seed: int, k: int) -> dict[str, str]:
    states, _ = synth.rounds(n, seed, k)
    return {f.path(): synth.etag(synth.render(f)) for f in states[k]}


async def _fetch_httpx(
    urls: list[tuple[str, dict[str, str]]], c: int, shards: int = 1
) -> dict[str, int]:
    """``shards`` > 1: that many clients, each with c / shards connections, request i
    going to client i % shards (the pool's bookkeeping is quadratic in its size)."""
    import httpx

    per = max(1, c // shards)
    limits = httpx.Limits(max_connections=per, max_keepalive_connections=per, keepalive_expiry=60.0)
    sem = asyncio.Semaphore(c)
    counts: dict[str, int] = {}
    clients = [httpx.AsyncClient(limits=limits, timeout=60.0) for _ in range(shards)]

    async def one(i: int, url: str, headers: dict[str, str]) -> None:
        async with sem:
            r = await clients[i % shards].get(url, headers=headers)
            _ = r.content
            counts[str(r.status_code)] = counts.get(str(r.status_code), 0) + 1

    try:
        await asyncio.gather(*(one(i, u, h) for i, (u, h) in enumerate(urls)))
    finally:
        for client in clients:
            await client.aclose()
    return counts


async def _fetch_fetcher(
    urls: list[tuple[str, dict[str, str]]], c: int, shards: int = 1
) -> dict[str, int]:
    from feedwatch.fetch import Fetcher
    from feedwatch.model import FetchRequest

    counts: dict[str, int] = {}
    async with Fetcher(concurrency=c, per_host=c) as f:
        reqs = [FetchRequest(u, etag=h.get("If-None-Match"), timeout=60.0) for u, h in urls]
        for out in await asyncio.gather(*(f.fetch(r) for r in reqs)):
            status = str(getattr(out, "status", None))
            counts[status] = counts.get(status, 0) + 1
    return counts


async def _fetch_aiohttp(
    urls: list[tuple[str, dict[str, str]]], c: int, shards: int = 1
) -> dict[str, int]:
    import aiohttp

    sem = asyncio.Semaphore(c)
    counts: dict[str, int] = {}
    conn = aiohttp.TCPConnector(limit=c, limit_per_host=c)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def one(url: str, headers: dict[str, str]) -> None:
            async with sem, session.get(url, headers=headers) as r:
                await r.read()
                counts[str(r.status)] = counts.get(str(r.status), 0) + 1

        await asyncio.gather(*(one(u, h) for u, h in urls))
    return counts


def cmd_fetch(a: argparse.Namespace) -> dict[str, object]:
    etags = _etags(a.n, a.seed, a.etag_round) if a.mode == "conditional" else {}
    urls = []
    for i in range(a.n):
        path = f"/f/{i:05d}"
        headers = {"If-None-Match": etags[path]} if path in etags else {}
        urls.append((f"http://127.0.0.1:{a.port}{path}", headers))
    if a.client == "httpx":
        import httpx  # noqa: F401 - imported before the clock starts

        fn = _fetch_httpx
    elif a.client == "fetcher":
        import feedwatch.fetch  # noqa: F401
        from feedwatch import log

        log.configure(level="warning")  # as `feedwatch check` runs (no per-request lines)
        fn = _fetch_fetcher
    else:
        import aiohttp  # noqa: F401

        fn = _fetch_aiohttp
    cpu0, t0 = _cpu(), time.perf_counter()
    counts = asyncio.run(fn(urls, a.concurrency, a.shards))
    return {
        "wall": time.perf_counter() - t0,
        "cpu": _cpu() - cpu0,
        "statuses": counts,
        "client": a.client,
        "concurrency": a.concurrency,
        "shards": a.shards,
    }


def _parse_chunk(bodies: list[bytes]) -> int:
    import feedparser

    entries = 0
    for b in bodies:
        entries += len(feedparser.parse(b).entries)
    return entries


def cmd_parse(a: argparse.Namespace) -> dict[str, object]:
    states, records = synth.rounds(a.n, a.seed, a.round)
    feeds = states[a.round]
    if a.what == "all":
        bodies = [synth.render(f) for f in feeds]
    else:
        rec = records[a.round]
        assert rec is not None, "changed needs --round >= 1"
        changed = set(rec.changed_feeds)
        if a.what == "changed":
            bodies = [synth.render(feeds[i]) for i in sorted(changed)]
        else:
            links = {link for _, link in rec.new + rec.edited}
            bodies = []
            for i in sorted(changed):
                f = feeds[i]
                only = [e for e in f.entries if f.link(e) in links]
                bodies.append(synth.render(replace(f, entries=only)))
    import feedparser  # noqa: F401

    cpu0, t0 = _cpu(), time.perf_counter()
    if a.workers <= 1:
        entries = _parse_chunk(bodies)
    else:
        from concurrent.futures import ProcessPoolExecutor

        chunks = [bodies[i :: a.workers * 4] for i in range(a.workers * 4)]
        with ProcessPoolExecutor(a.workers) as pool:
            entries = sum(pool.map(_parse_chunk, chunks))
    return {
        "wall": time.perf_counter() - t0,
        "cpu": _cpu() - cpu0,
        "bodies": len(bodies),
        "bytes": sum(len(b) for b in bodies),
        "entries": entries,
        "workers": a.workers,
    }


# What the main process of `feedwatch check` imports. The parsing stack (feedparser,
# feedwatch.parse) is its body workers' alone since they import it after their fork, so
# it is not here: the workers' imports count in a round's CPU, as they should.
IMPORTS = (
    "import feedwatch.cli, feedwatch.deliver, feedwatch.fetch, feedwatch.poll, "
    "feedwatch.bodyworkers, feedwatch.parsepool, feedwatch.sinks, feedwatch.store.sqlite, "
    "feedwatch.store.lock, httpx"
)


def startup_sample(code: str = IMPORTS, python: str | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of one interpreter (``python``, else this one) that runs
    ``code`` and exits. Another interpreter gets no PYTHONPATH: its own install."""
    python = python or sys.executable
    t0 = time.perf_counter()
    p = subprocess.Popen([python, "-c", code], env=own_env(python))
    _, _, ru = os.wait4(p.pid, 0)
    return time.perf_counter() - t0, ru.ru_utime + ru.ru_stime


def cmd_startup(a: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, c in (("python", "pass"), ("feedwatch_imports", IMPORTS)):
        best = min((startup_sample(c) for _ in range(3)), key=lambda x: x[0])
        out[name] = {"wall": best[0], "cpu": best[1]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--n", type=int, required=True)
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--concurrency", type=int, default=32)
    f.add_argument("--mode", choices=["plain", "conditional"], default="plain")
    f.add_argument("--etag-round", type=int, default=0)
    f.add_argument("--client", choices=["httpx", "aiohttp", "fetcher"], default="httpx")
    f.add_argument("--shards", type=int, default=1, help="httpx: clients sharing the load")
    q = sub.add_parser("parse")
    q.add_argument("--n", type=int, required=True)
    q.add_argument("--seed", type=int, default=1)
    q.add_argument("--round", type=int, default=0)
    q.add_argument("--what", choices=["all", "changed", "changed-items"], default="all")
    q.add_argument("--workers", type=int, default=1)
    sub.add_parser("startup")
    a = p.parse_args()
    result = {"fetch": cmd_fetch, "parse": cmd_parse, "startup": cmd_startup}[a.cmd](a)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
