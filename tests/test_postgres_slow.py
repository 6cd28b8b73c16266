"""A state call the PostgreSQL server is slow to answer, against a real cluster.

The store's watchdog cut every call still unanswered after ANSWER_TIMEOUT, to survive a
server that keeps its connections but answers nothing (a frozen machine). It cut a
statement the server was working on all the same: a lock wait behind another
connection, a prune of millions of rows. The call failed as if the server were frozen
(``state.out_of_reach``), and one that always takes that long never succeeded. Now the
watchdog asks the server, over a new connection, what the call's backend is doing:

- working on it (a lock wait here: another connection holds ``LOCK TABLE`` in a
  transaction, the server answers everything else at once): the call goes on, and
  succeeds; ``state.slow`` says so once, the systemd watchdog is pinged meanwhile;
- no answer (SIGSTOP on the server's processes): cut, as before;
- still working at SLOW_LIMIT, or when the process stops (``stopping``): cut, and the
  server stops the statement (its client went away), releasing what it held.

ANSWER_TIMEOUT is 1 s here (10 s in feedwatch) so that each test takes seconds.
Skipped, with the reason, where PostgreSQL cannot be run (see tests/pg.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from feedwatch.store import open_store
from feedwatch.store.base import StateError, Store
from tests.helpers import wait_for
from tests.pg import PgCluster, pg_cluster, pg_url
from tests.test_store import alert, at, entry, poll

__all__ = ["pg_cluster", "pg_url"]  # fixtures, imported for pytest

pytestmark = pytest.mark.timeout(90)

ANSWER = 1.0


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> Any:
    import feedwatch.store.postgres as p

    monkeypatch.setattr(p, "ANSWER_TIMEOUT", ANSWER)
    return p


@pytest.fixture
def state(pg_url: str, fast: Any) -> Iterator[Store]:
    s = open_store(pg_url)
    assert s is not None
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def holder(pg_url: str) -> Iterator[Any]:
    """Another connection, in a transaction: what it locks stays locked until it ends."""
    import psycopg

    conn = psycopg.connect(pg_url)
    try:
        yield conn
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.rollback()
        conn.close()


def _in_background(call: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """``call()`` in a thread: its result or exception, and when it ended."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = call()
        except Exception as exc:
            out["error"] = exc
        out["ended"] = time.monotonic()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _active(pg_url: str) -> list[tuple[str, str | None]]:
    """The store's backends the server is working on (state, wait event)."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT state, wait_event_type FROM pg_stat_activity"
            " WHERE application_name = 'feedwatch' AND state = 'active'"
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def _delivered_alert(s: Store) -> None:
    """One delivered alert, old enough for any retention: what a prune removes."""
    s.commit_poll(poll(alerts=(alert("x1", sinks=("hook",)),)))
    s.mark_delivered("hook", ["x1"], at(1))


def test_a_prune_waiting_for_a_lock_is_waited_for_and_succeeds(
    state: Store, holder: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The hourly upkeep's prune behind a lock another connection holds for 3.5 s
    (ANSWER_TIMEOUT is 1 s): it failed after 1 s, "no answer from the server", with the
    state out of reach, though the server answered everything else at once. Now it
    succeeds once the lock is gone; the systemd watchdog is pinged while it waits (the
    daemon's loop, that pings it otherwise, is held by the call)."""
    _delivered_alert(state)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(0.01)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    holder.execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
    release = threading.Timer(3.5, holder.commit)
    release.start()
    try:
        began = time.monotonic()
        with capture_logs() as logs:
            n = sum(state.prune_batches(at(10**6)))
        took = time.monotonic() - began
    finally:
        release.join()
    assert n == 1
    assert took >= 3.0, took  # it waited for the lock, not failed
    events = [e["event"] for e in logs]
    assert events.count("state.slow") == 1, logs
    assert "state.out_of_reach" not in events, logs
    slow = next(e for e in logs if e["event"] == "state.slow")
    assert slow["waiting"] == "Lock: relation", slow
    assert slow["log_level"] == "warning"
    done = next(e for e in logs if e["event"] == "state.slow_done")
    assert done["seconds"] >= 3.0, done
    pings = []
    with contextlib.suppress(OSError):
        while True:
            pings.append(sock.recv(100))
    sock.close()
    assert b"WATCHDOG=1" in pings, pings
    assert state.feeds()  # within reach: the next call goes through at once


def test_a_poll_commit_behind_a_row_lock_is_waited_for_not_failed(
    state: Store, holder: Any
) -> None:
    """A poll's commit that waits for a row another connection holds (2.5 s): it was cut
    at ANSWER_TIMEOUT and reported failed, as if the server were down, and the poll
    was done again. Now it commits once the row is free."""
    state.commit_poll(poll(upserts=(entry("a"),)))
    holder.execute("SELECT * FROM feeds WHERE name = 'f' FOR UPDATE")
    release = threading.Timer(2.5, holder.commit)
    release.start()
    try:
        with capture_logs() as logs:
            state.commit_poll(poll(now=at(60), upserts=(entry("b", seen=at(60)),)))
    finally:
        release.join()
    assert set(state.entries("f")) == {"a", "b"}
    events = [e["event"] for e in logs]
    assert "state.slow" in events and "state.out_of_reach" not in events, logs


def test_a_server_that_freezes_during_a_slow_statement_is_still_cut(
    pg_cluster: PgCluster, pg_url: str, state: Store, holder: Any
) -> None:
    """A slow statement (a lock wait) is waited for only while the server says it works
    on it: the server's processes stopped meanwhile (SIGSTOP), the next look gets no
    answer and the call is cut, within ANSWER_TIMEOUT and PROBE_TIMEOUT of the freeze,
    with the state out of reach as for any server that stopped answering."""
    from feedwatch.store.postgres import PROBE_TIMEOUT

    if pg_cluster._root is None:
        pytest.skip("freezing the server needs a cluster of our own")
    _delivered_alert(state)
    holder.execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
    frozen: list[int] = []
    with capture_logs() as logs:
        t, out = _in_background(lambda: sum(state.prune_batches(at(10**6))))
        try:
            wait_for(lambda: any(e["event"] == "state.slow" for e in logs), 10, "state.slow")
            frozen[:] = pg_cluster.server_pids()
            froze = time.monotonic()
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            t.join(ANSWER + PROBE_TIMEOUT + 5)
            assert not t.is_alive(), "the call was not cut"
        finally:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
    assert isinstance(out.get("error"), StateError), out
    assert "no answer from the server" in str(out["error"])
    assert out["ended"] - froze < ANSWER + PROBE_TIMEOUT + 1.5, out["ended"] - froze
    assert [e["event"] for e in logs].count("state.out_of_reach") == 1, logs


def test_a_statement_slow_past_the_limit_is_cut_and_the_server_stops_it(
    pg_url: str, fast: Any, state: Store, holder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait is bounded all the same (SLOW_LIMIT, 3 s here): past it the call fails,
    saying the server was still working on it, without putting the state out of reach;
    and the server stops the statement (its client is gone), not holding its place in
    the lock's queue until the lock comes free."""
    monkeypatch.setattr(fast, "SLOW_LIMIT", 3.0)
    _delivered_alert(state)
    holder.execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
    began = time.monotonic()
    with capture_logs() as logs, pytest.raises(StateError) as raised:
        sum(state.prune_batches(at(10**6)))
    took = time.monotonic() - began
    assert 3.0 <= took < 3.0 + ANSWER + 1.5, took
    assert "still working on it after 3s" in str(raised.value), raised.value
    assert "state.out_of_reach" not in [e["event"] for e in logs], logs
    wait_for(lambda: not _active(pg_url), 5, "the server to stop the cut statement")
    assert state.feeds()  # (the lock is on deliveries)


def test_a_stop_cuts_a_slow_statement_after_its_grace(
    pg_url: str, state: Store, holder: Any
) -> None:
    """The process is stopping (the daemon's SIGTERM handler calls ``stopping`` with
    shutdown_timeout): a slow statement is waited for that long more, then cut, and the
    server stops it. The state is not put out of reach (the server answers)."""
    from feedwatch.store.postgres import PROBE_TIMEOUT

    _delivered_alert(state)
    holder.execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
    with capture_logs() as logs:
        t, out = _in_background(lambda: sum(state.prune_batches(at(10**6))))
        wait_for(lambda: any(e["event"] == "state.slow" for e in logs), 10, "state.slow")
        asked = time.monotonic()
        state.stopping(1.5)
        t.join(10)
    assert not t.is_alive()
    assert 1.5 <= out["ended"] - asked < 1.5 + 1.0, out["ended"] - asked
    assert isinstance(out.get("error"), StateError), out
    assert "the process is stopping" in str(out["error"]), out["error"]
    assert "state.out_of_reach" not in [e["event"] for e in logs], logs
    wait_for(lambda: not _active(pg_url), 5, "the server to stop the cut statement")
    # the calls of the rest of the stop (releasing leases...) wait PROBE_TIMEOUT: one
    # behind a lock for 0.5 s goes through, one behind a lock held on is cut
    import psycopg

    with psycopg.connect(pg_url) as other:
        other.execute("LOCK TABLE feeds IN ACCESS EXCLUSIVE MODE")
        threading.Timer(0.5, other.commit).start()
        assert set(state.feeds()) == {"f"}
    began = time.monotonic()
    with pytest.raises(StateError):
        state.pending()  # (deliveries is still locked)
    assert time.monotonic() - began < PROBE_TIMEOUT + 1.0
