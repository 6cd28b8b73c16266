"""The outbox read a page at a time (bounded memory) behaves as if read at once.

A cold start queues one delivery per entry (175k at 5,000 feeds): the dispatcher
reads each sink's queue ``page`` deliveries at a time. Oldest first, batches that
span pages, give-up (also of deliveries behind one that stopped the sink),
permanent failures, a removed sink and digests must come out exactly as with the
whole queue in one page. And `check` prints its alerts in the feeds' order while
holding only their rendered lines (spooled to a temporary file when large).
"""

from __future__ import annotations

import asyncio
import io
import json
import random
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from feedwatch.cli import _AlertLines
from feedwatch.deliver import Dispatcher, DispatchReport
from feedwatch.model import Alert, Config, SinkConfig
from feedwatch.sinks.base import SendResult
from feedwatch.store.base import Delivery, Store
from feedwatch.store.sqlite import SqliteStore
from feedwatch.testing import T0, FakeClock, RecordingSink
from tests.pg import pg_cluster, pg_url
from tests.receivers import make_payload

__all__ = ["pg_cluster", "pg_url"]  # fixtures, imported for pytest

DAY = 86400.0


class Scripted(RecordingSink):
    """Outcome chosen by the first alert id of each batch (default: success)."""

    def __init__(self, name: str, outcomes: dict[str, SendResult], max_batch: int) -> None:
        super().__init__(name=name, supports_digest=False, max_batch=max_batch)
        self.outcomes = outcomes

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        self.batches.append(list(deliveries))
        return self.outcomes.get(deliveries[0].alert_id, SendResult.success())


def put(store: Store, clock: FakeClock, aid: str, *sinks: str) -> None:
    alert = Alert(
        id=aid,
        kind="new",
        feed="f",
        payload=make_payload(kind="new", alert_id=aid, title=f"title {aid}"),
        sinks=sinks,
        identity=f"urn:{aid}",
    )
    assert store.queue_notices([alert], now=clock()) == [aid]


def failed_once(store: SqliteStore, sink: str, aid: str, clock: FakeClock) -> None:
    store.mark_retry(
        sink, [aid], clock(), error="HTTP 503", next_attempt=clock() + timedelta(seconds=10)
    )


def scenario(tmp: Path, page: int, force: bool) -> dict[str, Any]:
    """Every outcome of one dispatch round over a queue built to cross page edges."""
    store = SqliteStore(tmp / f"state-{page}-{force}.db")
    clock = FakeClock(T0)
    try:
        # old: o1 never tried (gets a try), o2 failed once (given up); x1 fails again and
        # stops hook2, x2 behind it is still given up; g1 for a removed sink is given up
        for aid, sinks in (("o1", ("hook",)), ("o2", ("hook",)), ("x1", ("hook2",))):
            put(store, clock, aid, *sinks)
        put(store, clock, "x2", "hook2")
        failed_once(store, "hook", "o2", clock)
        failed_once(store, "hook2", "x2", clock)
        put(store, clock, "g1", "gone")
        clock.advance(4 * DAY)
        for aid in ("f1", "f2", "f3", "f4", "f5", "p1", "f6", "t1", "f7", "f8"):
            put(store, clock, aid, "hook", "log")
        put(store, clock, "x3", "hook2")
        put(store, clock, "g2", "gone")
        for i in range(4):
            put(store, clock, f"d{i}", "digest")
            clock.advance(1)
        clock.advance(120)
        hook = Scripted(
            "hook",
            {"p1": SendResult.dead("HTTP 400"), "t1": SendResult.transient("HTTP 503")},
            max_batch=2,
        )
        hook2 = Scripted("hook2", {"x1": SendResult.transient("HTTP 502")}, max_batch=1)
        log = RecordingSink(name="log", supports_digest=False, max_batch=3)
        digest = RecordingSink(name="digest")
        sinks = {"hook": hook, "hook2": hook2, "log": log, "digest": digest}
        cfg = Config(
            path=None,
            state=str(tmp / "x.db"),
            feeds=(),
            rules={},
            sinks={
                name: SinkConfig(
                    name=name, type="webhook", digest=60.0 if name == "digest" else 0.0
                )
                for name in sinks
            },
            give_up_after=3 * DAY,
        )
        d = Dispatcher(cfg, store, sinks, clock=clock, rng=random.Random(1), page=page)
        report: DispatchReport = asyncio.run(d.run_once(force=force))
        statuses = {
            (dl.alert_id, dl.sink): (dl.status, dl.attempts)
            for rec in store.alerts_for("f", limit=1000)
            for dl in rec.deliveries
        }
        return {
            "batches": {n: [[x.alert_id for x in b] for b in s.batches] for n, s in sinks.items()},
            "report": (report.delivered, report.retried, report.dead, report.waiting),
            "failures": sorted(report.failures),
            "statuses": statuses,
        }
    finally:
        store.close()


@pytest.mark.parametrize("force", [False, True])
def test_paged_dispatch_equals_one_page(tmp_path: Path, force: bool) -> None:
    whole = scenario(tmp_path, 10_000, force)
    assert whole["batches"] == {
        "hook": [["o1", "f1"], ["f2", "f3"], ["f4", "f5"], ["p1", "f6"], ["t1", "f7"]],
        "hook2": [["x1"]],
        "log": [["f1", "f2", "f3"], ["f4", "f5", "p1"], ["f6", "t1", "f7"], ["f8"]],
        "digest": [["d0", "d1", "d2", "d3"]],
    }
    st = whole["statuses"]
    assert st[("o2", "hook")][0] == "dead" and st[("x2", "hook2")][0] == "dead"
    assert st[("g1", "gone")][0] == "dead" and st[("g2", "gone")] == ("pending", 0)
    assert st[("p1", "hook")][0] == st[("f6", "hook")][0] == "dead"
    assert st[("t1", "hook")] == ("pending", 1) and st[("f8", "hook")] == ("pending", 0)
    assert st[("x3", "hook2")] == ("pending", 0)
    # delivered: hook 6 (o1 f1..f5), log 10, digest 4; retried t1 f7 x1; dead o2 x2 g1 p1 f6;
    # held: g2 (its sink is gone), f8 and x3 (each behind its sink's retry)
    assert whole["report"] == (20, 3, 5, 3)
    for page in (1, 2, 3):
        assert scenario(tmp_path, page, force) == whole, page


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return SqliteStore(tmp_path / "state.db")
    from feedwatch.store.postgres import PostgresStore

    return PostgresStore(request.getfixturevalue("pg_url"))  # skips where impossible


def test_pending_pages_match_pending_and_skip_settled(any_store: Store) -> None:
    store = any_store
    clock = FakeClock(T0)
    try:
        ids = [f"a{i:02d}" for i in range(11)]
        for i, aid in enumerate(ids):
            put(store, clock, aid, "s", "t")
            if i % 3 == 0:
                clock.advance(1)  # ties on created_at: insertion order breaks them
        store.mark_delivered("s", ["a04"], clock())
        pages = list(store.pending_pages("s", page=4))
        assert [len(p) for p in pages] == [4, 4, 2]
        assert [d for p in pages for d in p] == store.pending(sink="s")
        assert store.pending_sinks() == ["s", "t"]
        store.mark_retry("t", ids, clock(), error="x", next_attempt=clock() + timedelta(hours=1))
        for due in (None, T0 - timedelta(seconds=1), clock(), clock() + timedelta(hours=2)):
            assert store.pending_sinks(due_at=due) == sorted(
                {d.sink for d in store.pending(due_at=due)}
            )
        assert store.pending_sinks(due_at=clock()) == ["s"]

        it = store.pending_pages("s", page=4)
        first = next(it)
        store.mark_delivered("s", ["a06", "a07"], clock())  # settled meanwhile (elsewhere)
        rest = [d.alert_id for p in it for d in p]
        assert [d.alert_id for d in first] == ["a00", "a01", "a02", "a03"]
        assert rest == ["a05", "a08", "a09", "a10"]
    finally:
        store.close()


class _A:
    def __init__(self, aid: str, title: str) -> None:
        self.id, self.kind, self.feed, self.sinks = aid, "new", "f", ("log",)
        self.payload = {"kind": "new", "entry": {"title": title}}


def test_check_line_of_an_untitled_entry_says_untitled() -> None:
    """`new f:  -> log`, where the email and the chat messages say "(untitled)"."""
    lines = _AlertLines(json_lines=False, dry_run=False)
    notice = _A("n1", "")
    notice.payload = {"kind": "stale", "entry": None, "message": "feed 'f' looks stale"}
    lines.add(0, [_A("a1", ""), _A("a2", "   "), notice])
    out = io.StringIO()
    lines.write_to(out)
    assert out.getvalue().splitlines() == [
        "alert a1 new f: (untitled) -> log",
        "alert a2 new f: (untitled) -> log",
        "alert n1 new f: feed 'f' looks stale -> log",
    ]


@pytest.mark.parametrize("json_lines", [False, True])
def test_check_lines_come_out_in_feed_order_from_the_spool(
    monkeypatch: pytest.MonkeyPatch, json_lines: bool
) -> None:
    monkeypatch.setattr(_AlertLines, "SPOOL_MAX", 10)  # on disk at once
    lines = _AlertLines(json_lines=json_lines, dry_run=False)
    alerts = {i: [_A(f"{i}-{k}", f"tïtle — {i}/{k}") for k in range(i % 3 + 1)] for i in range(7)}
    for i in (3, 0, 6, 1, 5, 2, 4):  # polls end in any order
        lines.add(i, alerts[i])
    out = io.StringIO()
    lines.write_to(out)
    printed = out.getvalue().splitlines()
    flat = [a for i in range(7) for a in alerts[i]]
    assert lines.count == len(flat) == len(printed)
    if json_lines:
        assert [json.loads(x) for x in printed] == [a.payload for a in flat]
    else:
        assert printed == [
            f"alert {a.id} new f: {a.payload['entry']['title']} -> log" for a in flat
        ]
