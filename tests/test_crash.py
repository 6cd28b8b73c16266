"""Crash consistency: `feedwatch run` killed with SIGKILL at random moments, again and again.

A feed server whose feeds change all the time (new entries, edited entries; it keeps
its own record of every version it published), a webhook receiver that fails a random
~30% of requests (503, or the connection dropped before an answer), and the daemon,
SIGKILLed at a random moment 0.1-3 s after each start and restarted at once. Then the
receiver heals, the feeds stop changing, the daemon runs once more and a `check`
retries whatever still waits for its backoff. Then the invariants of SPEC section 6:

- every change that matched was delivered at least once: each matching entry's `new`
  alert, and an alert carrying its final version;
- every delivered alert is one the feeds justified: a version the server published, of
  a matching entry, recorded in the state file, `new` only for the entry's first alert;
- no alert was delivered again after being marked delivered: the receiver may see an
  id twice only when a kill fell between the send and the mark (the receiver's 200 came
  before the state's `delivered_at`); those are counted and reported;
- the state file passes `PRAGMA integrity_check`.

Rounds: ``FEEDWATCH_CRASH_ROUNDS`` (default 12, about 30 s). The full run:
``FEEDWATCH_CRASH_ROUNDS=40 python -m pytest tests/test_crash.py -s``.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.feedserver import FeedServer
from tests.test_hostile import DaemonProc, fw, wait_for

ROUNDS = int(os.environ.get("FEEDWATCH_CRASH_ROUNDS", "12"))
SEED = int(os.environ.get("FEEDWATCH_CRASH_SEED", str(random.randrange(1 << 30))))
FEEDS = ("f0", "f1")
FAIL_RATE = 0.30

pytestmark = pytest.mark.timeout(60 + 12 * ROUNDS)

BASE = datetime(2024, 11, 22, 10, 0, tzinfo=timezone.utc)


# --------------------------------------------------------------------------
# The changing feeds, with the server's own record of what it published
# --------------------------------------------------------------------------


@dataclass
class Version:
    guid: str
    version: int
    title: str
    updated: datetime
    matching: bool


@dataclass
class ChangingFeeds:
    server: FeedServer
    rng: random.Random
    entries: dict[str, dict[str, Version]] = field(default_factory=dict)
    published: list[Version] = field(default_factory=list)  # every version ever served
    changes: int = 0
    _n: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        for feed in FEEDS:
            self.entries[feed] = {}
            for _ in range(3):
                self._new(feed)
            self._publish(feed)

    def _new(self, feed: str) -> None:
        self._n += 1
        guid = f"{feed}-{self._n}"
        matching = self.rng.random() < 0.7
        self._put(feed, guid, 1, matching)

    def _put(self, feed: str, guid: str, version: int, matching: bool) -> None:
        word = "Alert" if matching else "Quiet"
        v = Version(
            guid=guid,
            version=version,
            title=f"{word} {guid} rev {version}",
            updated=BASE + timedelta(minutes=self._n, seconds=version),
            matching=matching,
        )
        self.entries[feed][guid] = v
        self.published.append(v)

    def _publish(self, feed: str) -> None:
        items = "".join(
            f'<item><guid isPermaLink="false">{v.guid}</guid><title>{escape(v.title)}</title>'
            f"<link>https://example.org/{v.guid}</link>"
            f"<pubDate>{format_datetime(BASE, usegmt=True)}</pubDate>"
            f"<atom:updated>{v.updated:%Y-%m-%dT%H:%M:%SZ}</atom:updated></item>"
            for v in reversed(list(self.entries[feed].values()))
        )
        self.server.set(
            f"/{feed}.xml",
            '<?xml version="1.0" encoding="utf-8"?>'
            '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"><channel>'
            f"<title>{feed}</title><link>https://example.org/</link>{items}</channel></rss>",
        )

    def change(self) -> None:
        with self._lock:
            feed = self.rng.choice(FEEDS)
            current = self.entries[feed]
            if self.rng.random() < 0.55 or not current:
                self._new(feed)
            else:
                v = current[self.rng.choice(list(current))]
                self._put(feed, v.guid, v.version + 1, v.matching)
            self._publish(feed)
            self.changes += 1

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.rng.uniform(0.05, 0.35)):
                self.change()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def final(self) -> dict[str, Version]:
        return {g: v for feed in FEEDS for g, v in self.entries[feed].items()}


# --------------------------------------------------------------------------
# The flaky webhook receiver
# --------------------------------------------------------------------------


@dataclass
class Hit:
    at: float  # wall clock (time.time()), when the request was answered or dropped
    sink: str
    alert_id: str
    outcome: str  # "ok" | "503" | "dropped"
    body: dict[str, Any]


class FlakyReceiver:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.fail_rate = FAIL_RATE
        self.healed_at = float("inf")
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length))
                with receiver.lock:
                    roll = receiver.rng.random()
                    fail = roll < receiver.fail_rate
                    outcome = "ok" if not fail else ("dropped" if roll < 0.05 else "503")
                    receiver.hits.append(
                        Hit(
                            time.time(),
                            self.path.strip("/"),
                            self.headers["X-Feedwatch-Delivery"],
                            outcome,
                            body,
                        )
                    )
                if outcome == "dropped":
                    self.close_connection = True
                    return
                status = 200 if outcome == "ok" else 503
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def ok_hits(self) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.outcome == "ok"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------

SINKS = ("hook_a", "hook_b", "hook_c")


@dataclass
class Outcome:
    tmp: Path
    feeds: ChangingFeeds
    receiver: FlakyReceiver
    kills: list[tuple[str, float, bool]]  # (daemon|check, seconds after start, was it killed)
    started_before_kill: int
    seconds: float

    def marked_at(self) -> dict[tuple[str, str], float]:
        """(sink, alert id) -> wall time of its first `alert.delivered` log line (any run)."""
        first: dict[tuple[str, str], float] = {}
        for path in sorted(self.tmp.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if isinstance(e, dict) and e.get("event") == "alert.delivered":
                    at = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
                    key = (e["sink"], e["alert"])
                    first[key] = min(at, first.get(key, at))
        return first


def killed_check(cfg: Path, tmp: Path, after: float) -> bool:
    """`feedwatch check`, SIGKILLed ``after`` seconds in unless it finished; True if killed."""
    log = (tmp / f"check-{time.monotonic_ns()}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedwatch", "-c", str(cfg), "check"],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        proc.wait(timeout=after)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True
    finally:
        log.close()


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    tmp = tmp_path_factory.mktemp("crash")
    rng = random.Random(SEED)
    receiver = FlakyReceiver(random.Random(rng.random()))
    started = time.monotonic()
    with FeedServer() as srv:
        feeds = ChangingFeeds(srv, random.Random(rng.random()))
        blocks = "".join(
            f'\n[[feeds]]\nname = "{f}"\nurl = "{srv.url(f"/{f}.xml")}"\nkeywords = ["alert"]\n'
            for f in FEEDS
        )
        sinks = "".join(
            f'\n[sinks.{name}]\ntype = "webhook"\nurl = "{receiver.url}/{name}"\ntimeout = "5s"\n'
            for name in SINKS
        )
        cfg = tmp / "feedwatch.toml"
        cfg.write_text(
            f"""
[feedwatch]
state = "{tmp}/state.db"
log_format = "json"
interval = "1s"
jitter = "0s"
first_poll = "alert"
shutdown_timeout = "3s"
{sinks}
{blocks}
"""
        )
        feeds.start()
        kills: list[tuple[str, float, bool]] = []
        started_before_kill = 0
        try:
            for n in range(ROUNDS):
                d = DaemonProc(cfg, log_dir=tmp)
                at = rng.uniform(0.1, 3.0)
                time.sleep(at)
                assert d.proc.poll() is None, d.text()[-3000:]
                started_before_kill += d.has("daemon.started")
                d.kill()
                kills.append(("daemon", at, True))
                if n % 2:
                    # A failed delivery waits >= 30 s for its retry (and, oldest first,
                    # holds its sink): a `check` retries now, so deliveries keep flowing
                    # and the kills keep landing among them. Killed at random too.
                    at = rng.uniform(0.3, 2.5)
                    kills.append(("check", at, killed_check(cfg, tmp, at)))
            # heal: the feeds stop changing, the receiver answers 200
            feeds.stop()
            receiver.fail_rate = 0.0
            receiver.healed_at = time.time()
            final = feeds.final()
            d = DaemonProc(cfg, log_dir=tmp)
            try:
                wait_for(
                    lambda: all(
                        any(
                            e.get("event") == "feed.polled" and e.get("feed") == f
                            for e in d.events()
                        )
                        for f in FEEDS
                    ),
                    timeout=20,
                    what="each feed polled after the last change",
                )
                time.sleep(1.5)
                assert d.stop() == 0
            finally:
                d.kill()
            # retries still waiting for their backoff: `check` is an explicit request
            r = fw(cfg, "check")
            (tmp / "check-final.log").write_text(r.stderr)
            assert r.returncode == 0, r.stderr[-3000:]
            assert feeds.final() == final
        finally:
            feeds.stop()
            receiver.close()
        yield Outcome(tmp, feeds, receiver, kills, started_before_kill, time.monotonic() - started)


def _db(tmp: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{tmp / 'state.db'}?mode=ro", uri=True)


def _rev(h: Hit) -> int:
    return int(h.body["entry"]["title"].rsplit(" ", 1)[1])


def test_crash_invariants(crashed: Outcome, record_property: Any) -> None:
    o = crashed
    ok = o.receiver.ok_hits()
    first_ok: dict[tuple[str, str], Hit] = {}
    for h in ok:
        first_ok.setdefault((h.sink, h.alert_id), h)

    with _db(o.tmp) as db:
        recorded = {r[0]: r[1] for r in db.execute("SELECT alert_id, kind FROM alerts")}
        marked = {
            (r[1], r[0]): r[2]
            for r in db.execute(
                "SELECT alert_id, sink, delivered_at FROM deliveries WHERE status = 'delivered'"
            )
        }
        not_delivered = db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE status != 'delivered'"
        ).fetchone()[0]
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    assert integrity == "ok"
    assert not_delivered == 0
    assert set(first_ok) == set(marked)

    published = {(v.guid, v.title): v for v in o.feeds.published}
    matching = {v.guid for v in o.feeds.published if v.matching}
    for sink in SINKS:
        delivered = [h for (s, _), h in first_ok.items() if s == sink]
        # every change that matched was delivered at least once
        news = {h.body["entry"]["id"] for h in delivered if h.body["kind"] == "new"}
        assert news == matching, f"{sink}: a matching entry never got its `new` alert"
        titles = {(h.body["entry"]["id"], h.body["entry"]["title"]) for h in delivered}
        for guid, v in o.feeds.final().items():
            if v.matching:
                assert (guid, v.title) in titles, (
                    f"{sink}: the last version of {guid} never alerted"
                )
        # every delivered alert is one the feeds justified
        by_guid: dict[str, list[Hit]] = {}
        for h in delivered:
            e = h.body["entry"]
            v = published.get((e["id"], e["title"]))
            assert v is not None, f"alert for a version never published: {e}"
            assert v.matching, f"a non-matching entry alerted: {e}"
            assert e["updated"] == f"{v.updated:%Y-%m-%dT%H:%M:%SZ}"
            assert recorded.get(h.alert_id) == h.body["kind"]
            by_guid.setdefault(e["id"], []).append(h)
        for guid, hits in by_guid.items():
            hits.sort(key=_rev)
            kinds = [h.body["kind"] for h in hits]
            assert kinds[0] == "new" and "new" not in kinds[1:], (guid, kinds)
            revs = [_rev(h) for h in hits]
            assert len(revs) == len(set(revs)), (guid, revs)  # one alert per version
            detected = [h.body["detected_at"] for h in hits]
            assert detected == sorted(detected), (guid, detected)  # in publishing order
    # the same alert, the same id, whatever the sink
    ids = {sink: {h.alert_id for (s, _), h in first_ok.items() if s == sink} for sink in SINKS}
    assert ids[SINKS[0]] == ids[SINKS[1]] == ids[SINKS[2]]

    # no alert delivered again once marked delivered: the state's delivered_at (to the
    # second) and the `alert.delivered` log line (to the microsecond, written right after
    # the mark) both come before every 200 the receiver gave for that (sink, id)
    second = 1_000_000
    after_mark = [
        h
        for h in ok
        if int(h.at * second) >= marked[(h.sink, h.alert_id)] // second * second + second
    ]
    logged = o.marked_at()
    after_log = [h for h in ok if h.at > logged.get((h.sink, h.alert_id), float("inf"))]
    assert after_mark == [] and after_log == [], "re-sent after being marked delivered"
    resent = len(ok) - len(first_ok)

    failures = sum(1 for h in o.receiver.hits if h.outcome != "ok")
    flaky = [h for h in o.receiver.hits if h.at < o.receiver.healed_at]
    summary = {
        "daemon_kills": sum(1 for k in o.kills if k[0] == "daemon"),
        "daemon_kills_after_started": o.started_before_kill,
        "check_runs": sum(1 for k in o.kills if k[0] == "check"),
        "check_kills": sum(1 for k in o.kills if k[0] == "check" and k[2]),
        "feed_changes": o.feeds.changes,
        "versions_published": len(o.feeds.published),
        "alerts": len(recorded),
        "deliveries": len(first_ok),
        "receiver_requests": len(o.receiver.hits),
        "receiver_requests_while_flaky": len(flaky),
        "receiver_failures": failures,
        "duplicates_kill_between_send_and_mark": resent,
        "resent_after_mark": len(after_mark) + len(after_log),
        "seconds": round(o.seconds, 1),
        "seed": SEED,
    }
    for k, v in summary.items():
        record_property(k, v)
    print("\ncrash run:", json.dumps(summary))
    assert summary["daemon_kills"] == ROUNDS and failures > 0
