"""Several `feedwatch run` instances on one PostgreSQL state, as real subprocesses.

Against the loopback feed server (every request time-stamped, with the polling
instance's User-Agent) and a webhook receiver (every delivery time-stamped):

- every feed is polled by one instance per interval: no two requests for a feed
  closer than the interval (less the clock's one-second resolution), whichever
  instances made them;
- an instance killed with SIGKILL while it polls a feed: the feed's lease expires and
  another instance polls it within LEASE_SECONDS (the stated bound); its other feeds
  go on at their pace;
- every alert reaches the webhook, and none after it was marked delivered;
- `migrate-state` copies an SQLite state into PostgreSQL: `check` against it alerts
  nothing new and the pending delivery is still pending (and then delivered, same id).

Skipped, with the reason, where PostgreSQL cannot be run (see tests/pg.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from feedwatch.testing import entry, rss
from tests.feedserver import FeedServer, free_port
from tests.helpers import run_feedwatch, wait_for
from tests.pg import PgCluster, Unavailable, pg_cluster, pg_url

__all__ = ["pg_cluster", "pg_url"]  # fixtures, imported for pytest

pytestmark = pytest.mark.timeout(120)

INTERVAL = 2.0
# feedwatch's clock is to the second (alert times are), and a next poll is "now +
# interval" on that clock: a feed's polls are at least INTERVAL - 1 s apart even with
# one instance. Two instances polling in one slot would be milliseconds apart.
MIN_GAP = INTERVAL - 1.0 - 0.05
# The lease of a killed instance, shortened from feedwatch's 20 s (store.base) so that
# the takeover is not most of the suite's wait; renewed as often, relative to it.
LEASE_SECONDS = 6.0
SHORT_LEASE = (
    "import feedwatch.daemon as d, feedwatch.deliver as v\n"
    f"d.LEASE_SECONDS = v.LEASE_SECONDS = {LEASE_SECONDS}\n"
    "d.LEASE_RENEW = v.LEASE_RENEW = 1.5"
)


class StampedFeedServer(FeedServer):
    """The test feed server, noting when each request arrived and from which instance."""

    def __init__(self) -> None:
        self.hits: list[tuple[float, str, str]] = []  # (time, path, user agent)
        self._hits_lock = threading.Lock()
        super().__init__()

    def _handle(self, h: Any, *, head: bool) -> None:
        with self._hits_lock:
            self.hits.append((time.time(), h.path, h.headers.get("User-Agent", "")))
        super()._handle(h, head=head)

    def polls(self, path: str) -> list[tuple[float, str]]:
        with self._hits_lock:
            return [(t, ua) for t, p, ua in self.hits if p == path]


class StampedReceiver:
    """A webhook receiver noting when each delivery (by X-Feedwatch-Delivery) arrived."""

    def __init__(self, delay: float = 0.0) -> None:
        self.got: list[tuple[float, str, dict[str, Any]]] = []
        self.arrived = 0  # requests come in, answered or not (each after ``delay`` s)
        lock = self.lock = threading.Lock()
        got = self.got
        me = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    me.arrived += 1
                time.sleep(delay)
                with lock:
                    got.append(
                        (time.time(), self.headers["X-Feedwatch-Delivery"], json.loads(body))
                    )
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # (a slow answer: the sender may have gone)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def ids(self) -> list[str]:
        with self.lock:
            return [i for _, i, _ in self.got]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Instance:
    def __init__(self, cfg: Path, log: Path, *, setup: str = "") -> None:
        """``setup``: Python run in the process before feedwatch (a shorter upkeep period)."""
        self.cfg = cfg
        self.log = log
        self._out = log.open("w")
        start = ["-c", f"{setup}\nimport sys\nfrom feedwatch.cli import main\nsys.exit(main())"]
        self.proc = subprocess.Popen(
            [sys.executable, *(start if setup else ["-m", "feedwatch"]), "-c", str(cfg), "run"],
            stdout=subprocess.DEVNULL,
            stderr=self._out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        finally:
            self._out.close()


def write_config(tmp: Path, name: str, state: str, srv: FeedServer, feeds: list[str],
                 hook: str, agent: str = "feedwatch-test", *, shutdown: str = "5s",
                 extra: str = "") -> Path:  # fmt: skip
    """``extra``: more lines for the [feedwatch] table."""
    cfg = tmp / f"{name}.toml"
    blocks = "".join(f'\n[[feeds]]\nname = "{f}"\nurl = "{srv.url("/" + f)}"\n' for f in feeds)
    cfg.write_text(
        f"""
[feedwatch]
state = "{state}"
interval = "{INTERVAL:g}s"
jitter = "0s"
timeout = "10s"
user_agent = "{agent}"
log_format = "json"
shutdown_timeout = "{shutdown}"
{extra}
[sinks.hook]
type = "webhook"
url = "{hook}"
{blocks}
"""
    )
    return cfg


@pytest.fixture
def receiver() -> Iterator[StampedReceiver]:
    r = StampedReceiver()
    yield r
    r.close()


@pytest.fixture
def stamped_server() -> Iterator[StampedFeedServer]:
    with StampedFeedServer() as srv:
        yield srv


@pytest.fixture
def instances() -> Iterator[list[Instance]]:
    started: list[Instance] = []
    yield started
    for i in started:
        if i.proc.poll() is None:
            i.proc.kill()
            i.proc.wait()


def _leased_by(url: str, pid: int) -> set[str]:
    """The feeds whose lease an instance (by its pid: owners are ``host:pid:random``) holds."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT name FROM feeds WHERE lease_owner LIKE %s", (f"%:{pid}:%",)
        ).fetchall()
    return {r[0] for r in rows}


def _delivered_at(url: str) -> dict[str, float]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT alert_id, status, delivered_at FROM deliveries WHERE sink = 'hook'"
        ).fetchall()
    assert all(r[1] == "delivered" for r in rows), rows
    return {r[0]: r[2].timestamp() for r in rows}


def test_three_instances_poll_each_feed_once_per_interval_and_take_over_a_dead_one(
    tmp_path: Path,
    pg_cluster: PgCluster,
    pg_url: str,
    stamped_server: StampedFeedServer,
    receiver: StampedReceiver,
    instances: list[Instance],
) -> None:
    srv = stamped_server
    feeds = [f"f{i}" for i in range(6)]
    for f in feeds:
        srv.set("/" + f, rss([entry(f"{f}-1")]))
    srv.set("/slow", rss([entry("s-1")]), delay=2.0)  # a poll that holds its lease 2 s
    agents = [f"feedwatch-test/i{i}" for i in range(3)]
    for i, agent in enumerate(agents):
        cfg = write_config(tmp_path, f"i{i}", pg_url, srv, [*feeds, "slow"], receiver.url, agent)
        instances.append(Instance(cfg, tmp_path / f"i{i}.log", setup=SHORT_LEASE))

    # every feed baselined, then new entries: alerts from whichever instance polls
    wait_for(lambda: all(srv.polls("/" + f) for f in feeds), 30, "every feed polled")
    for f in feeds:
        srv.set("/" + f, rss([entry(f"{f}-1"), entry(f"{f}-2", title=f"news {f}")]))
    wait_for(lambda: len(set(receiver.ids())) >= len(feeds), 20, "an alert per feed")
    steady = time.time()
    wait_for(lambda: time.time() - steady > 4, 10, "a few intervals")

    # kill -9 the instance that is polling the slow feed, while it is polling it
    def slow_in_flight() -> str | None:
        hits = srv.polls("/slow")
        if hits and time.time() - hits[-1][0] < 0.8:
            return hits[-1][1]
        return None

    agent = wait_for(slow_in_flight, 30, "the slow feed in flight")
    victim = instances[agents.index(agent)]
    killed_at = time.time()
    victim.proc.kill()
    victim.proc.wait()
    held = _leased_by(pg_url, victim.proc.pid)  # the slow feed, and any it was polling too
    assert "slow" in held, held
    # its lease expires; another instance takes the feed over within the bound
    taken = wait_for(
        lambda: [t for t, ua in srv.polls("/slow") if t > killed_at and ua != agent],
        LEASE_SECONDS + 10,
        "the slow feed taken over",
    )
    takeover = taken[0] - killed_at
    assert takeover <= LEASE_SECONDS + 3, takeover
    # and alerts keep flowing through the survivors
    for f in feeds[:3]:
        srv.set("/" + f, rss([entry(f"{f}-1"), entry(f"{f}-2", title=f"news {f}"),
                              entry(f"{f}-3", title=f"more {f}")]))  # fmt: skip
    wait_for(lambda: len(set(receiver.ids())) >= len(feeds) + 3, 20, "alerts after the kill")
    end = time.time()
    for inst in instances:
        if inst is not victim:
            assert inst.stop() == 0

    # 1. no feed polled twice within one interval, across all instances
    for f in [*feeds, "slow"]:
        times = [t for t, _ in srv.polls("/" + f)]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert gaps and min(gaps) > MIN_GAP, (f, [round(g, 3) for g in gaps])
    # the work was shared: every instance polled
    polled_by = {ua for _t, _p, ua in srv.hits}
    assert polled_by == set(agents)
    # 2. the dead instance's other feeds went on at their pace (no gap near a lease);
    # one it was polling at the kill waited for its lease to expire, no longer
    for f in feeds:
        # every gap that reaches into the window, the one still open at its end too: a
        # feed whose lease waited out could have a single poll inside the window
        times = [t for t, _ in srv.polls("/" + f) if t < end] + [end]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b > killed_at - 2]
        bound = LEASE_SECONDS + 3 if f in held else INTERVAL + 2
        assert max(gaps) < bound, (f, max(gaps), held)
    # 3. every alert delivered, none received after it was marked delivered
    delivered = _delivered_at(pg_url)
    got = receiver.ids()
    assert set(got) == set(delivered) and len(delivered) == len(feeds) + 3
    with receiver.lock:
        # (delivered_at is on feedwatch's clock, to the second: hence the 1 s)
        late = [(i, t - delivered[i]) for t, i, _ in receiver.got if t > delivered[i] + 1.0]
    assert late == []
    assert len(got) - len(set(got)) <= 1  # at most the one in flight at the kill
    # 4. the password never reached a log line
    password = pg_cluster.password
    assert password
    for inst in instances:
        text = inst.log.read_text()
        assert password not in text
        assert any(e.get("event") == "daemon.started" for e in inst.events())


@pytest.fixture(scope="module")
def _outage_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL server of the outage tests' own (not the session's, which other
    tests use meanwhile), to stop and start; skips where there is none."""
    pytest.importorskip("psycopg")
    if os.environ.get("FEEDWATCH_TEST_PG_URL"):
        pytest.skip("needs a PostgreSQL server of its own to stop")
    try:
        cluster = PgCluster.start()
    except Unavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop_server()


@pytest.fixture
def own_cluster(_outage_cluster: PgCluster) -> Iterator[PgCluster]:
    """The outage tests' server, up at the start of each test (each uses a schema of
    its own): a test stops it (or freezes it) as it needs."""
    if not _outage_cluster.running():
        _outage_cluster.start_server()
    yield _outage_cluster
    _outage_cluster.stop_server()  # whatever the test left connected to it goes too


# The state's back-off while out of reach, shortened from 2 s doubling to 30 s
# (store.postgres) so that a test does not wait out a long one after the server is back.
FAST_REACH = (
    "import feedwatch.store.postgres as p\np.OUT_OF_REACH_FIRST = 0.5\np.OUT_OF_REACH_MAX = 2.0"
)


def _events(inst: Instance, name: str, feed: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in inst.events()
        if e.get("event") == name and (feed is None or e.get("feed") == feed)
    ]


def test_a_database_out_of_reach_is_one_log_line_per_claim_and_the_feeds_are_retried(
    tmp_path: Path,
    stamped_server: StampedFeedServer,
    instances: list[Instance],
    own_cluster: PgCluster,
) -> None:
    """The server stopped under a running daemon: each poll job's claim failed, and
    APScheduler logged "Job ... raised an exception" with a traceback (after the
    reschedule's own). Now: ``feed.claim_failed`` naming the feed and the (masked)
    state's error, no traceback, every feed tried again, and SIGTERM still stops it."""
    cluster = own_cluster
    try:
        srv = stamped_server
        for f in ("a", "b"):
            srv.set("/" + f, rss([entry(f"{f}-1")]))
        cfg = write_config(
            tmp_path, "i", cluster.new_schema(), srv, ["a", "b"], "http://127.0.0.1:9/"
        )
        inst = Instance(cfg, tmp_path / "i.log", setup=FAST_REACH)
        instances.append(inst)
        wait_for(lambda: srv.polls("/a") and srv.polls("/b"), 20, "both feeds polled")
        password = cluster.password
        cluster.stop_server()

        wait_for(
            lambda: (
                len(_events(inst, "feed.claim_failed", "a")) >= 2
                and len(_events(inst, "feed.claim_failed", "b")) >= 2
            ),
            30,
            "claims retried",
        )
        assert inst.stop() == 0
    finally:
        cluster.stop_server()
    events = inst.events()
    for e in _events(inst, "feed.claim_failed", "a") + _events(inst, "feed.claim_failed", "b"):
        assert e["error"].startswith("PostgreSQL state postgresql://***@127.0.0.1:"), e
        assert "exception" not in e
    assert [
        e for e in events if "exception" in e or e.get("logger", "").startswith("apscheduler")
    ] == []
    assert password and password not in inst.log.read_text()


def test_a_database_out_of_reach_leaves_the_daemon_responsive_and_it_recovers_by_itself(
    tmp_path: Path,
    stamped_server: StampedFeedServer,
    receiver: StampedReceiver,
    instances: list[Instance],
    own_cluster: PgCluster,
) -> None:
    """The server stopped under a running daemon: every state call waited 15 s for a
    pooled connection, on the event loop, so the daemon answered nothing (its metrics,
    the other feeds, a SIGTERM) while the database was down. Now a call fails as soon as
    the connection is refused, and for a few seconds after that at once; the daemon
    stays responsive, stops within shutdown_timeout, and once the server is back polls
    again by itself: a poll whose commit failed is repeated, and each new entry alerts
    exactly once."""
    cluster = own_cluster
    srv = stamped_server
    try:
        srv.set("/a", rss([entry("a-1")]))
        srv.set("/b", rss([entry("b-1")]))
        port = free_port()
        cfg = write_config(tmp_path, "i", cluster.new_schema(), srv, ["a", "b"], receiver.url,
                           shutdown="2s", extra=f'metrics_listen = "127.0.0.1:{port}"')  # fmt: skip
        inst = Instance(cfg, tmp_path / "i.log", setup=FAST_REACH)
        instances.append(inst)

        wait_for(
            lambda: _events(inst, "feed.polled", "a") and _events(inst, "feed.polled", "b"),
            20,
            "baseline",
        )
        # a new entry in b, and the server stops while b's poll of it is under way
        hits = len(srv.polls("/b"))
        srv.set("/b", rss([entry("b-1"), entry("b-2", title="news b")]), delay=2.0)
        wait_for(lambda: len(srv.polls("/b")) > hits, 10, "b polled again")
        cluster.stop_server()
        srv.set("/a", rss([entry("a-1"), entry("a-2", title="news a")]))
        down = len(inst.events())

        def failed_after(mark: int) -> bool:
            later = inst.events()[mark:]
            return {e.get("feed") for e in later if e.get("event") == "feed.claim_failed"} >= {
                "a",
                "b",
            }

        wait_for(lambda: failed_after(down), 10, "both feeds' claims failed")
        # responsive meanwhile: the metrics answer at once, again and again (but for the
        # one state call a back-off lets try the server again, at most 2 s: a loaded
        # machine's clock may put one scrape behind it)
        took = []
        for _ in range(6):
            began = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                assert r.status == 200
            took.append(time.monotonic() - began)
            time.sleep(0.25)
        slow = [t for t in took if t >= 1.0]
        assert len(slow) <= 1 and all(t < 2.5 for t in slow), took
        assert _events(inst, "feed.state_error", "b")  # the poll of b-2 was not committed

        cluster.start_server()
        wait_for(lambda: len(receiver.ids()) >= 2, 30, "both new entries alerted")
        polls = {f: len(_events(inst, "feed.polled", f)) for f in ("a", "b")}
        wait_for(
            lambda: all(len(_events(inst, "feed.polled", f)) > polls[f] for f in ("a", "b")),
            15,
            "another poll of each feed",
        )
        with receiver.lock:
            titles = sorted(p["entry"]["title"] for _t, _i, p in receiver.got)
        assert titles == ["news a", "news b"]
        assert len(set(receiver.ids())) == 2
        assert _events(inst, "state.out_of_reach") and _events(inst, "state.reachable")

        # down again, and SIGTERM: the daemon stops within shutdown_timeout
        cluster.stop_server()
        mark = len(inst.events())
        wait_for(lambda: failed_after(mark), 10, "claims failed again")
        began = time.monotonic()
        inst.proc.send_signal(signal.SIGTERM)
        assert inst.stop() == 0
        took = time.monotonic() - began
        assert took < 2.0 + 1.5, took
    finally:
        cluster.stop_server()
    password = cluster.password
    assert password and password not in inst.log.read_text()
    assert [e for e in inst.events() if "exception" in e] == []


def test_a_feed_added_by_a_reload_while_the_database_is_down_is_polled_once_it_is_back(
    tmp_path: Path,
    stamped_server: StampedFeedServer,
    receiver: StampedReceiver,
    instances: list[Instance],
    own_cluster: PgCluster,
) -> None:
    """A SIGHUP adding a feed while the server was down: the reload switched the config,
    then failed reading the state ("Task exception was never retrieved", a traceback),
    and the new feed was never scheduled, not even by a later reload (only a restart
    polled it). Now the reload is applied (one line says the state was not read), and
    the feed is polled once the server is back: baselined, then its new entry alerts."""
    cluster = own_cluster
    srv = stamped_server
    try:
        for f in ("a", "b", "c"):
            srv.set("/" + f, rss([entry(f"{f}-1")]))
        state = cluster.new_schema()
        cfg = write_config(tmp_path, "i", state, srv, ["a", "b"], receiver.url)
        inst = Instance(cfg, tmp_path / "i.log", setup=FAST_REACH)
        instances.append(inst)
        wait_for(lambda: _events(inst, "feed.polled", "a") and _events(inst, "feed.polled", "b"),
                 20, "baseline")  # fmt: skip
        cluster.stop_server()
        wait_for(lambda: _events(inst, "state.out_of_reach"), 10, "the state out of reach")
        write_config(tmp_path, "i", state, srv, ["a", "b", "c"], receiver.url)
        inst.proc.send_signal(signal.SIGHUP)
        reloaded = wait_for(lambda: _events(inst, "config.reloaded"), 10, "the reload")
        assert reloaded[0]["added"] == 1
        unread = _events(inst, "config.reload_state_unread")
        assert len(unread) == 1 and unread[0]["feeds"] == ["c"], unread
        assert unread[0]["error"].startswith("PostgreSQL state postgresql://***@"), unread

        cluster.start_server()
        polled = wait_for(lambda: _events(inst, "feed.polled", "c"), 30, "c polled")
        assert polled[0]["result"] != "error" and polled[0]["alerts"] == 0  # its baseline
        srv.set("/c", rss([entry("c-1"), entry("c-2", title="news c")]))
        wait_for(lambda: receiver.ids(), 15, "c's new entry alerted")
        assert inst.stop() == 0
    finally:
        cluster.stop_server()
    with receiver.lock:
        assert [p["entry"]["title"] for _t, _i, p in receiver.got] == ["news c"]
    assert [e for e in inst.events() if "exception" in e] == []
    assert "Traceback" not in inst.log.read_text()


def test_the_state_out_of_reach_at_the_upkeep_and_at_a_stop_during_a_send_is_one_line(
    tmp_path: Path,
    stamped_server: StampedFeedServer,
    instances: list[Instance],
    own_cluster: PgCluster,
) -> None:
    """The server down: the hourly upkeep (prune, drop removed feeds) logged
    ``state.maintenance_failed`` with a traceback, and so did a SIGTERM cutting a send
    short (``delivery.release_failed``, giving the claim back). Now each is one line
    with the (masked) error and what happens next, as ``feed.claim_failed`` is."""
    cluster = own_cluster
    srv = stamped_server
    slow = StampedReceiver(delay=20.0)
    try:
        srv.set("/a", rss([entry("a-1")]))
        cfg = write_config(tmp_path, "i", cluster.new_schema(), srv, ["a"], slow.url, shutdown="2s")
        inst = Instance(
            cfg,
            tmp_path / "i.log",
            setup=f"import feedwatch.daemon as d\nd.MAINTENANCE_EVERY = 1.0\n{FAST_REACH}",
        )
        instances.append(inst)
        wait_for(lambda: _events(inst, "feed.polled", "a"), 20, "baseline")
        srv.set("/a", rss([entry("a-2", title="news"), entry("a-1")]))
        wait_for(lambda: slow.arrived, 15, "the alert's send under way")
        cluster.stop_server()
        wait_for(lambda: _events(inst, "state.maintenance_failed"), 10, "an upkeep, the state down")
        assert inst.stop() == 0
    finally:
        cluster.stop_server()
        slow.close()
    for name in ("state.maintenance_failed", "delivery.release_failed"):
        got = _events(inst, name)
        assert got, name
        for e in got:
            assert e["error"].startswith("PostgreSQL state postgresql://***@"), e
            assert e["hint"] and "exception" not in e, e
    assert [e for e in inst.events() if "exception" in e] == []
    assert "Traceback" not in inst.log.read_text()


def test_a_server_that_stops_answering_is_out_of_reach_and_the_daemon_stays_responsive(
    tmp_path: Path,
    stamped_server: StampedFeedServer,
    receiver: StampedReceiver,
    instances: list[Instance],
    own_cluster: PgCluster,
) -> None:
    """The server's processes stopped (SIGSTOP: its TCP connections stay, the kernel
    still acknowledges): a state call waited for its answer for ever, on the event loop,
    so the daemon polled nothing, answered no /metrics and ignored SIGTERM. Now a call
    gets no more than ANSWER_TIMEOUT (3 s here) for its answers, and the look at the
    server that follows (a new connection: no answer within 2 s): the state is out of
    reach, the daemon answers and recovers once the server does, each new entry alerts
    once, and SIGTERM while it is frozen stops it."""
    cluster = own_cluster
    srv = stamped_server
    frozen: list[int] = []
    try:
        srv.set("/a", rss([entry("a-1")]))
        port = free_port()
        cfg = write_config(tmp_path, "i", cluster.new_schema(), srv, ["a"], receiver.url,
                           shutdown="2s", extra=f'metrics_listen = "127.0.0.1:{port}"')  # fmt: skip
        setup = f"{FAST_REACH}\np.ANSWER_TIMEOUT = 3.0"
        inst = Instance(cfg, tmp_path / "i.log", setup=setup)
        instances.append(inst)
        wait_for(lambda: _events(inst, "feed.polled", "a"), 20, "baseline")

        def freeze() -> None:
            frozen[:] = cluster.server_pids()
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)

        def thaw() -> None:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            frozen.clear()

        freeze()
        lost = wait_for(lambda: _events(inst, "state.out_of_reach"), 10, "the state out of reach")
        assert "no answer from the server within 3s" in lost[0]["error"], lost
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.status == 200
        thaw()
        srv.set("/a", rss([entry("a-1"), entry("a-2", title="news a")]))
        wait_for(lambda: receiver.ids(), 20, "the new entry alerted once the server answers")
        # (recorded as delivered before the server freezes again: a send whose record
        # the freeze cuts stays pending, to be sent again, as SPEC allows)
        wait_for(lambda: _events(inst, "alert.delivered"), 10, "the delivery recorded")
        assert _events(inst, "state.reachable")

        freeze()
        wait_for(lambda: _events(inst, "state.out_of_reach")[1:], 10, "out of reach again")
        began = time.monotonic()
        assert inst.stop() == 0
        assert time.monotonic() - began < 2.0 + 3.0 + 2.0
        assert _events(inst, "daemon.stopped")
    finally:
        thaw()
        cluster.stop_server()
    assert len(receiver.ids()) == 1 and len(_events(inst, "alert.delivered")) == 1
    assert [e for e in inst.events() if "exception" in e] == []


def test_a_state_call_the_server_is_slow_to_answer_is_waited_for_and_a_stop_cuts_it(
    tmp_path: Path,
    pg_url: str,
    stamped_server: StampedFeedServer,
    receiver: StampedReceiver,
    instances: list[Instance],
) -> None:
    """Another connection holds LOCK TABLE feeds: the daemon's state calls wait for the
    lock, past ANSWER_TIMEOUT (1 s here), while the server answers everything else. They
    were cut as if the server were frozen: ``state.out_of_reach``, the poll's claim or
    record failed and was done again, and a call that always takes that long never
    succeeded. Now the daemon waits for them (``state.slow``): the new entry alerts once
    and the state is never out of reach. A SIGTERM while such a call holds the event
    loop stops the daemon within shutdown_timeout (the call is cut), exit 0."""
    import psycopg

    srv = stamped_server
    srv.set("/a", rss([entry("a-1")]))
    cfg = write_config(tmp_path, "i", pg_url, srv, ["a"], receiver.url, shutdown="2s")
    setup = "import feedwatch.store.postgres as p\np.ANSWER_TIMEOUT = 1.0"
    inst = Instance(cfg, tmp_path / "i.log", setup=setup)
    instances.append(inst)
    wait_for(lambda: _events(inst, "feed.polled", "a"), 20, "baseline")
    holder = psycopg.connect(pg_url)
    try:
        holder.execute("LOCK TABLE feeds IN ACCESS EXCLUSIVE MODE")
        srv.set("/a", rss([entry("a-1"), entry("a-2", title="news a")]))
        slow = wait_for(lambda: _events(inst, "state.slow"), 20, "a slow state call")
        assert slow[0]["waiting"] == "Lock: relation", slow
        holder.commit()
        wait_for(lambda: receiver.ids(), 20, "the new entry alerted")
        wait_for(lambda: _events(inst, "state.slow_done"), 10, "the slow call done")

        holder.execute("LOCK TABLE feeds IN ACCESS EXCLUSIVE MODE")
        seen = len(_events(inst, "state.slow"))
        wait_for(lambda: _events(inst, "state.slow")[seen:], 20, "a slow call again")
        began = time.monotonic()
        assert inst.stop() == 0
        took = time.monotonic() - began
    finally:
        holder.close()
    assert took < 2.0 + 2.0 + 2.0, took  # shutdown_timeout, then a look at the server
    assert _events(inst, "daemon.stopped")
    assert len(receiver.ids()) == 1
    events = inst.events()
    # until the stop cut the second slow call, nothing failed: no claim, no record
    slow = [i for i, e in enumerate(events) if e.get("event") == "state.slow"][1]
    failed = [e for e in events[:slow] if e.get("level") in ("warning", "error")]
    assert [e["event"] for e in failed] == ["state.slow"], failed
    assert [e for e in events if "exception" in e] == []


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_feedwatch(*args, cwd=cwd)


def test_migrate_state_then_check_on_postgresql_alerts_nothing_new(
    tmp_path: Path,
    pg_cluster: PgCluster,
    pg_url: str,
    stamped_server: StampedFeedServer,
    receiver: StampedReceiver,
) -> None:
    from feedwatch.store import SqliteStore, open_store

    srv = stamped_server
    srv.set("/a", rss([entry(1), entry(2)]))
    srv.set("/b", rss([entry("b1")]))
    db = tmp_path / "state.db"
    down = "http://127.0.0.1:9/hook"  # nothing listens: the delivery stays pending
    sqlite_cfg = write_config(tmp_path, "sqlite", str(db), srv, ["a", "b"], down)
    assert _run("-c", str(sqlite_cfg), "check").returncode == 0  # baseline
    srv.set("/a", rss([entry(1), entry(2), entry(3, title="Only once")]))
    first = _run("-c", str(sqlite_cfg), "check")
    assert first.returncode == 1 and "Only once" in first.stdout  # alerted; delivery failed
    with SqliteStore(db) as s:
        before = [(d.alert_id, d.sink, d.attempts, d.next_attempt) for d in s.pending()]
        feeds_before = s.feeds()
    assert len(before) == 1

    migrated = _run("migrate-state", str(db), pg_url)
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated 2 feeds, 4 entries, 1 alerts and 1 deliveries (1 pending)" in migrated.stdout
    password = pg_cluster.password
    assert password and password not in migrated.stdout + migrated.stderr
    again = _run("migrate-state", str(db), pg_url)  # never over live state
    assert again.returncode == 1 and "already holds feedwatch state" in again.stderr
    assert password not in again.stderr

    pg = open_store(pg_url)
    assert pg is not None
    try:
        after = [(d.alert_id, d.sink, d.attempts, d.next_attempt) for d in pg.pending()]
        assert after == before  # pending stays pending, attempts and backoff kept
        assert pg.feeds() == feeds_before
    finally:
        pg.close()

    pg_cfg = write_config(tmp_path, "pg", pg_url, srv, ["a", "b"], receiver.url)
    check = _run("-c", str(pg_cfg), "check")
    assert check.returncode == 0, check.stderr
    assert "alert " not in check.stdout and ", 0 alerts;" in check.stderr
    assert "1 sent" in check.stderr
    assert receiver.ids() == [before[0][0]]  # the pending one, with its id, once
    status = _run("-c", str(pg_cfg), "status", "--json")
    assert status.returncode == 0
    assert password not in status.stdout + status.stderr + check.stderr
    sinks = {s["name"]: s for s in json.loads(status.stdout)["sinks"]}
    assert (sinks["hook"]["pending"], sinks["hook"]["delivered"]) == (0, 1)
    assert {f["name"]: f["state"] for f in json.loads(status.stdout)["feeds"]} == {
        "a": "ok",
        "b": "ok",
    }


def test_migrate_state_carries_the_duplicate_claims_over(
    tmp_path: Path, pg_url: str, stamped_server: StampedFeedServer
) -> None:
    """`duplicates = "skip"`: a story sent from one feed is not sent again when a second
    feed carries it. migrate-state left the claims behind, so after the switch it was."""
    srv = stamped_server
    story = entry("s", title="Story S", link="https://news.example.com/story/S")
    srv.set("/world", rss([entry("a")]))
    srv.set("/europe", rss([entry("b")]))

    def config(state: str, name: str) -> Path:
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(
            f'''
[feedwatch]
state = "{state}"
duplicates = "skip"
jitter = "0s"
log_format = "json"

[sinks.log]
type = "jsonl"
path = "{tmp_path}/alerts.jsonl"

[[feeds]]
name = "world"
url = "{srv.url("/world")}"

[[feeds]]
name = "europe"
url = "{srv.url("/europe")}"
'''
        )
        return cfg

    db = tmp_path / "state.db"
    sqlite_cfg = config(str(db), "sqlite")
    assert _run("-c", str(sqlite_cfg), "check").returncode == 0  # the baselines
    srv.set("/world", rss([entry("a"), replace(story, entry_id="w-s")]))
    assert _run("-c", str(sqlite_cfg), "check").returncode == 0  # Story S, once
    migrated = _run("migrate-state", str(db), pg_url)
    assert migrated.returncode == 0, migrated.stderr
    srv.set("/europe", rss([entry("b"), replace(story, entry_id="e-s")]))
    r = _run("-c", str(config(pg_url, "pg")), "check")
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert [json.loads(x)["entry"]["title"] for x in lines] == ["Story S"]


def test_migrate_state_says_it_upgraded_a_file_from_an_older_feedwatch(
    tmp_path: Path, pg_url: str, stamped_server: StampedFeedServer
) -> None:
    """It holds the file's lock, so no older daemon runs on it: like `check`, it may
    upgrade an older schema (keeping the `.bak-v*` copy). It used to say the file was
    "left as it was" all the same."""
    import sqlite3

    srv = stamped_server
    srv.set("/a", rss([entry(1), entry(2)]))
    db = tmp_path / "state.db"
    cfg = write_config(tmp_path, "sqlite", str(db), srv, ["a"], "http://127.0.0.1:9/hook")
    assert _run("-c", str(cfg), "check").returncode == 0  # baseline
    conn = sqlite3.connect(db)  # the file as schema 4 left it
    conn.execute("ALTER TABLE deliveries DROP COLUMN recipients_left")  # (schema 7's)
    conn.execute("ALTER TABLE feeds DROP COLUMN masked_name")  # (schema 6's)
    conn.execute("DROP TABLE duplicate_claims")
    conn.execute("ALTER TABLE alerts DROP COLUMN duplicate_key")
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    migrated = _run("migrate-state", str(db), pg_url)
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated 1 feeds, 2 entries" in migrated.stdout
    assert "left as it was" not in migrated.stdout
    assert (
        f"the SQLite file was upgraded from schema version 4 first, as `check` would (its"
        f" copy as it was: {db}.bak-v4); nothing else in it changed"
    ) in migrated.stdout, migrated.stdout
    assert (tmp_path / "state.db.bak-v4").exists()


def test_migrate_state_usage_errors(tmp_path: Path) -> None:
    r = _run("migrate-state", str(tmp_path / "none.db"), "postgresql://u:sekrit-pw@127.0.0.1/x")
    assert r.returncode == 2 and "no SQLite state file" in r.stderr
    r = _run("migrate-state", str(tmp_path / "none.db"), str(tmp_path / "other.db"))
    assert r.returncode == 2 and "must be a postgresql:// URL" in r.stderr
    assert "sekrit-pw" not in r.stderr


def test_a_state_password_with_brackets_migrates_then_checks(
    tmp_path: Path, pg_cluster: PgCluster, pg_url: str, stamped_server: StampedFeedServer
) -> None:
    """A password with "[" and "]" (libpq takes it as written): `migrate-state` went
    through, then `check` and `status` died with urlsplit's traceback quoting a piece
    of it ("'abc' does not appear to be an IPv4 or IPv6 address"): no daemon started."""
    import uuid

    import psycopg

    password = "pw[abc]defgh"
    role = f"fw_{uuid.uuid4().hex[:10]}"
    schema = pg_url.rsplit("search_path%3D", 1)[-1]
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
            conn.execute(f"GRANT ALL ON SCHEMA {schema} TO {role}")
    except psycopg.Error as exc:  # FEEDWATCH_TEST_PG_URL's user may create no role
        pytest.skip(f"cannot create a role: {exc}")
    url = pg_url.replace(f"//feedwatch:{pg_cluster.password}@", f"//{role}:{password}@")
    assert url != pg_url
    try:
        srv = stamped_server
        srv.set("/a", rss([entry(1), entry(2)]))
        down = "http://127.0.0.1:9/hook"
        db = tmp_path / "state.db"
        sqlite_cfg = write_config(tmp_path, "sqlite", str(db), srv, ["a"], down)
        assert _run("-c", str(sqlite_cfg), "check").returncode == 0  # baseline
        migrated = _run("migrate-state", str(db), url)
        assert migrated.returncode == 0, migrated.stderr
        srv.set("/a", rss([entry(1), entry(2), entry(3)]))
        pg_cfg = write_config(tmp_path, "pg", url, srv, ["a"], down)
        runs = [
            _run("-c", str(pg_cfg), "validate"),
            _run("-c", str(pg_cfg), "check"),  # the new entry; its delivery fails
            _run("-c", str(pg_cfg), "status"),
        ]
        assert [r.returncode for r in runs] == [0, 1, 0], [r.stderr for r in runs]
        assert "Traceback" not in "".join(r.stderr for r in runs)
        out = "".join(r.stdout + r.stderr for r in [migrated, *runs])
        assert not [
            password[i : i + 3] for i in range(len(password) - 2) if password[i : i + 3] in out
        ]
    finally:
        pg_cluster.drop_schema(pg_url)  # its tables are the role's
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")
