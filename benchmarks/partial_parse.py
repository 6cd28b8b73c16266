"""Parsing only the changed items: CPU per changed feed, round 0 -> round 1, in one process.

    python benchmarks/partial_parse.py [--n 200] [--seed 1] [--repeats 3] [--items 20 50]

Prints one JSON object (milliseconds of CPU per changed feed, best of ``repeats``):

- ``full``: ``parse_body`` on each changed body (what feedwatch did before);
- ``incremental``: ``feedwatch.partial.parse_incremental`` with the cache that round 0
  left (what a poll does now);
- ``floor_feedparser``: ``feedparser.parse`` (default options) on a document holding
  only the channel and the new or edited items (``floors.py --what changed-items``);
- ``floor_parse_body``: ``parse_body`` on that same document;
- ``poll_full`` / ``poll_incremental``: a whole poll of each changed feed without the
  fetch (parse, diff, alerts, the SQLite commit; the fetcher serves bodies from
  memory), with an injected ``parse_body`` (which turns the cache off) and without;
- ``cache_bytes_per_entry`` against ``body_bytes_per_entry``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import synth

XML = {"content-type": "application/xml"}


def _best(fn: Callable[[], Any], repeats: int, count: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return round(best * 1000 / count, 3)


def _poll_cpu(states: list[list[synth.Feed]], changed: list[int], incremental: bool) -> float:
    import structlog

    from feedwatch.model import Config, FeedConfig, FeedSettings, Fetched, Jitter, SinkConfig
    from feedwatch.parse import parse_body
    from feedwatch.poll import Poller
    from feedwatch.store import open_store
    from feedwatch.testing import T0, FakeClock

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))
    bodies = [{f.path(): synth.render(f) for f in s} for s in states]

    class MemoryFetcher:
        round = 0

        async def fetch(self, req: Any) -> Fetched:
            path = "/" + req.url.split("/", 3)[3]
            return Fetched(status=200, url=req.url, body=bodies[self.round][path], headers=XML)

        async def fetch_held(self, req: Any) -> tuple[Fetched, Callable[[], None]]:
            return await self.fetch(req), lambda: None

    def injected(body: bytes, headers: Any, **kw: Any) -> Any:
        return parse_body(body, headers, **kw)

    with tempfile.TemporaryDirectory() as d:
        settings = FeedSettings(interval=60, jitter=Jitter(), first_poll="alert")
        feeds = tuple(
            FeedConfig(name=f"f{f.index}", url=f"http://127.0.0.1:9{f.path()}", settings=settings)
            for f in states[0]
        )
        sink = SinkConfig(name="s", type="jsonl", options={"path": os.path.join(d, "a.jsonl")})
        config = Config(
            path=None,
            state=os.path.join(d, "state.db"),
            feeds=feeds,
            rules={},
            sinks={"s": sink},
        )
        store = open_store(config.state)
        assert store is not None
        fetcher = MemoryFetcher()
        clock = FakeClock(T0)
        kw: dict[str, Any] = {} if incremental else {"parse": injected}
        poller = Poller(config, store, fetcher, clock=clock, **kw)  # type: ignore[arg-type]

        async def run(which: Any) -> None:
            for i in which:
                report = await poller.poll(feeds[i])
                assert report.result != "error", report.error  # a figure of failed polls is none

        asyncio.run(run(range(len(feeds))))
        fetcher.round = 1
        clock.advance(hours=1)
        t0 = time.process_time()
        asyncio.run(run(changed))
        cpu = time.process_time() - t0
        store.close()
    return round(cpu * 1000 / len(changed), 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--items",
        type=int,
        nargs=2,
        default=(20, 50),
        metavar=("LEAST", "MOST"),
        help="entries a feed carries (the benchmark's 20 50)",
    )
    a = p.parse_args()

    import feedparser

    from feedwatch.parse import parse_body
    from feedwatch.partial import parse_incremental

    states, records = synth.rounds(a.n, a.seed, 1, tuple(a.items))
    rec = records[1]
    assert rec is not None
    changed = sorted(rec.changed_feeds)
    old = {i: synth.render(states[0][i]) for i in changed}
    new = {i: synth.render(states[1][i]) for i in changed}
    url = {i: f"http://127.0.0.1:9/f/{i:05d}" for i in changed}
    caches = {
        i: parse_incremental(old[i], XML, url=url[i], max_entries=5000, cache=None)[1]
        for i in changed
    }
    links = {link for _, link in rec.new + rec.edited}
    only = {}
    for i in changed:
        f = states[1][i]
        only[i] = synth.render(replace(f, entries=[e for e in f.entries if f.link(e) in links]))
    for i in changed:  # the claim being measured: the same result
        got, _ = parse_incremental(new[i], XML, url=url[i], max_entries=5000, cache=caches[i])
        assert got == parse_body(new[i], XML, url=url[i], max_entries=5000), i
    k = len(changed)
    out: dict[str, Any] = {"n": a.n, "items": list(a.items), "changed_feeds": k}
    out["full"] = _best(
        lambda: [parse_body(new[i], XML, url=url[i]) for i in changed], a.repeats, k
    )
    out["incremental"] = _best(
        lambda: [
            parse_incremental(new[i], XML, url=url[i], max_entries=5000, cache=caches[i])
            for i in changed
        ],
        a.repeats,
        k,
    )
    out["floor_feedparser"] = _best(
        lambda: [feedparser.parse(io.BytesIO(only[i])) for i in changed], a.repeats, k
    )
    out["floor_parse_body"] = _best(
        lambda: [parse_body(only[i], XML, url=url[i]) for i in changed], a.repeats, k
    )
    out["incremental_over_floor"] = round(out["incremental"] / out["floor_feedparser"], 2)
    out["poll_full"] = _poll_cpu(states, changed, incremental=False)
    out["poll_incremental"] = _poll_cpu(states, changed, incremental=True)
    entries = sum(len(states[0][i].entries) for i in changed)
    out["cache_bytes_per_entry"] = round(sum(len(caches[i] or b"") for i in changed) / entries)
    out["body_bytes_per_entry"] = round(sum(len(old[i]) for i in changed) / entries)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
