"""The PostgreSQL state backend: one database shared by several `feedwatch run` instances.

``state = "postgresql://user@host/db"`` selects it. It implements the same ``Store``
protocol as SQLite and passes the same contract tests (``tests/test_store.py``); what
it adds is leases, so that several daemons can share the state safely:

- a feed is polled only under a lease (``feeds.lease_owner``/``lease_until``) taken in
  one ``UPDATE`` that also checks the feed is due against the shared ``next_poll``:
  the first instance whose timer fires polls it, the others see it held or not yet due;
- a delivery is sent only under a claim (``deliveries.claimed_by``/``claimed_until``)
  that a pending row alone can give; marking it delivered, retried or dead ends the
  claim, so a delivery marked delivered can never be claimed (and sent) again;
- a live instance renews its leases every few seconds; a dead one's expire
  ``LEASE_SECONDS`` after its last renewal and the others take over.

The driver is psycopg 3, **synchronous**, with a ``psycopg_pool.ConnectionPool``: the
``Store`` protocol is synchronous, and the daemon calls it from its event loop, each
call being one short transaction (a few round trips on a nearby server). So a call
never waits long for a server out of reach: it fails as soon as the pool's attempt to
connect fails, and once one has, the calls of the next few seconds fail at once
(``_Reach``) while one call at a time looks again.

Times are ``timestamptz`` (microseconds, exact) and come back as aware UTC datetimes;
text columns that are keys or sort keys use the "C" collation, so ordering is the same
byte order as SQLite's. The schema version is the highest row of ``feedwatch_schema``;
``MIGRATIONS`` are applied in one transaction under an advisory lock, so several
instances starting at once migrate once; only an opening with ``upgrade`` (`run`,
`check`) migrates, the other commands refuse an older schema (``base.older_schema``).
A database from a newer feedwatch, or one whose tables are someone else's, is refused
with a message saying what to do.

The password in the URL is registered as a secret: it never appears in a log line,
an error or ``status`` (``self.path`` is the URL with its user-info masked).
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import socket
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import structlog

from feedwatch import pgurl, sdnotify
from feedwatch.model import Alert
from feedwatch.payload import stored_text
from feedwatch.redact import MASK, redact, register_secret
from feedwatch.store import is_postgres_url  # noqa: F401 (re-exported: migrate, tests)
from feedwatch.store.base import (
    INTERRUPTED,
    NOTE_INTERRUPTED,
    PENDING_PAGE,
    Delivery,
    FeedClaim,
    PollCommit,
    StateError,
    older_schema,
)
from feedwatch.store.rows import (
    DELIVERY_COLS,
    SharedWrites,
    kept_alert,
    link_key,
    recipients_to_db,
)
from feedwatch.store.seen import seen_step, touch_cut

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]

log = structlog.get_logger("feedwatch.store")

CONNECT_TIMEOUT = 10  # seconds to reach the server
POOL_TIMEOUT = 5.0  # seconds a call waits for a pooled connection (one being made)
POOL_SIZE = 4
# The state out of reach: calls fail at once for this long after a call found no
# connection, doubling up to OUT_OF_REACH_MAX while it stays so; then one call looks
# again, waiting at most PROBE_TIMEOUT.
OUT_OF_REACH_FIRST = 2.0
OUT_OF_REACH_MAX = 30.0
PROBE_TIMEOUT = 2.0
# The pool gives up retrying a lost connection after this long (the next call that
# finds none starts again at once, rather than after a back-off of up to minutes).
RECONNECT_TIMEOUT = 5.0
# A call's wait for the server's answers (its statements, the commit): past it, the
# server is asked over a new connection (within PROBE_TIMEOUT) whether it is working on
# the call. It is (a lock wait, a slow disk): the call goes on, and the
# server is asked again every ANSWER_TIMEOUT, up to SLOW_LIMIT in all. No answer (a
# stopped process, a frozen machine: the connections stay open), or not working on it:
# the connection is cut, the call fails and the state is out of reach.
ANSWER_TIMEOUT = 10.0
SLOW_LIMIT = 300.0
# How often the server looks whether the client of a statement went away (a cut call):
# it then stops that statement rather than finish it for no one (PostgreSQL 14+).
CLIENT_CHECK_MS = 1000
FIRST_WAIT = 0.25  # a call's first wait: then on only if the pool's connect did not fail

_C = 'COLLATE "C"'

_V1 = (
    f"""CREATE TABLE feeds (
        name TEXT {_C} PRIMARY KEY,
        url TEXT,
        title TEXT,
        etag TEXT,
        last_modified TEXT,
        body_hash TEXT,
        id_policy TEXT NOT NULL DEFAULT 'guid',
        id_candidate TEXT,
        baselined BOOLEAN NOT NULL DEFAULT FALSE,
        last_poll TIMESTAMPTZ,
        last_success TIMESTAMPTZ,
        http_status INTEGER,
        errors INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        next_poll TIMESTAMPTZ,
        retry_after_until TIMESTAMPTZ,
        gone BOOLEAN NOT NULL DEFAULT FALSE,
        redirected_to TEXT,
        last_new_entry TIMESTAMPTZ,
        stale_notified BOOLEAN NOT NULL DEFAULT FALSE,
        lease_owner TEXT,
        lease_until TIMESTAMPTZ
    )""",
    "CREATE INDEX feeds_lease ON feeds (lease_owner) WHERE lease_owner IS NOT NULL",
    f"""CREATE TABLE entries (
        feed TEXT {_C} NOT NULL REFERENCES feeds(name) ON DELETE CASCADE,
        identity TEXT {_C} NOT NULL,
        entry_id TEXT,
        link TEXT,
        title TEXT NOT NULL,
        summary TEXT NOT NULL,
        content TEXT NOT NULL,
        published TIMESTAMPTZ,
        updated TIMESTAMPTZ,
        fingerprint TEXT NOT NULL,
        first_seen TIMESTAMPTZ NOT NULL,
        last_seen TIMESTAMPTZ NOT NULL,
        new_alert_id TEXT NOT NULL,
        PRIMARY KEY (feed, identity)
    )""",
    # seq: insertion order, the tie-break for "oldest alert first".
    f"""CREATE TABLE alerts (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        alert_id TEXT {_C} NOT NULL UNIQUE,
        feed TEXT {_C} NOT NULL,
        identity TEXT {_C},
        kind TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        payload TEXT NOT NULL,
        thread_id TEXT
    )""",
    "CREATE INDEX alerts_feed ON alerts (feed, identity, created_at)",
    "CREATE INDEX alerts_created ON alerts (created_at)",
    f"""CREATE TABLE deliveries (
        alert_id TEXT {_C} NOT NULL REFERENCES alerts(alert_id) ON DELETE CASCADE,
        sink TEXT {_C} NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'delivered', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt TIMESTAMPTZ,
        last_error TEXT,
        delivered_at TIMESTAMPTZ,
        claimed_by TEXT,
        claimed_until TIMESTAMPTZ,
        PRIMARY KEY (alert_id, sink)
    )""",
    "CREATE INDEX deliveries_status ON deliveries (status, sink, next_attempt)",
    "CREATE INDEX deliveries_claimed ON deliveries (claimed_by) WHERE claimed_by IS NOT NULL",
)

# Version 2: feedwatch.partial's cache of parsed items, one row per feed (only a cache).
_V2 = (
    f"""CREATE TABLE IF NOT EXISTS parse_cache (
        feed TEXT {_C} PRIMARY KEY REFERENCES feeds(name) ON DELETE CASCADE,
        data BYTEA NOT NULL
    )""",
)

# As SQLite's schema 3 (sqlite.py): each entry's normalised link (rows.link_key), and
# an index for the retention DELETE. Rows from before keep a NULL link_key (the server
# cannot compute it): every comparison of their feed reads them, as before, until a
# poll rewrites them or `retention` removes them.
_V3 = (
    "ALTER TABLE entries ADD COLUMN IF NOT EXISTS link_key TEXT",
    "CREATE INDEX IF NOT EXISTS entries_link_key ON entries (feed, link_key)",
    "CREATE INDEX IF NOT EXISTS entries_seen ON entries (feed, last_seen)",
)

# As SQLite's schema 4 (sqlite.py): which stored entries are in the feed's last body,
# the ones a 304 sees again (rows from before start as in the body).
_V4 = (
    "ALTER TABLE entries ADD COLUMN IF NOT EXISTS in_body INTEGER NOT NULL DEFAULT 1",
    "CREATE INDEX IF NOT EXISTS entries_body ON entries (feed, identity) WHERE in_body = 1",
)

# As SQLite's schema 5 (sqlite.py): `duplicates = "skip"`'s claims, one per key and sink.
_V5 = (
    f"""CREATE TABLE IF NOT EXISTS duplicate_claims (
        key TEXT {_C} NOT NULL,
        sink TEXT {_C} NOT NULL,
        alert_id TEXT {_C} NOT NULL REFERENCES alerts(alert_id) ON DELETE CASCADE,
        PRIMARY KEY (key, sink)
    )""",
    "CREATE INDEX IF NOT EXISTS duplicate_claims_alert ON duplicate_claims (alert_id)",
    "ALTER TABLE alerts ADD COLUMN IF NOT EXISTS duplicate_key TEXT",
)

# As SQLite's schema 6 (sqlite.py): each feed's name as it shows, its ${VAR} values masked.
_V6 = ("ALTER TABLE feeds ADD COLUMN IF NOT EXISTS masked_name TEXT",)

# As SQLite's schema 7 (sqlite.py): the recipients a delivery is still owed to.
_V7 = ("ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS recipients_left TEXT",)

# The tables feedwatch owns: a database that has one of them but no feedwatch_schema
# is someone else's.
OWN_TABLES = ("feeds", "entries", "alerts", "deliveries", "parse_cache")


# The claim: granted when no other live lease is held and the feed is due. Returns one
# row: granted?, then the row as it was (all NULL: no such feed).
_CLAIM_FEED = (
    "WITH claimed AS (UPDATE feeds SET lease_owner = %(owner)s, lease_until = %(until)s"
    " WHERE name = %(feed)s AND NOT gone"
    " AND (lease_owner IS NULL OR lease_owner = %(owner)s OR lease_until <= %(now)s)"
    " AND (last_poll IS NULL OR url IS DISTINCT FROM %(url)s"
    "      OR ((next_poll IS NULL OR next_poll <= %(now)s)"
    "          AND (retry_after_until IS NULL OR retry_after_until <= %(now)s)))"
    " RETURNING 1)"
    " SELECT EXISTS (SELECT 1 FROM claimed), f.name, f.next_poll, f.lease_owner,"
    " f.lease_until, f.gone FROM (SELECT 1) AS one LEFT JOIN feeds f ON f.name = %(feed)s"
)


def _ts(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(
            f"naive datetime {dt.isoformat()} given to the state store: pass aware UTC"
        )
    return dt


def _now_ts(dt: datetime) -> datetime:
    value = _ts(dt)
    assert value is not None
    return value


def _dt(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is timezone.utc:
        return value
    return value.astimezone(timezone.utc)


def _req_dt(value: datetime) -> datetime:
    return value if value.tzinfo is timezone.utc else value.astimezone(timezone.utc)


def _t(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: it becomes U+FFFD (feed text never has one:
    the parser strips control characters; this guards the odd header or error text)."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd")


def _detected_at(alert: Alert) -> datetime:
    """A notice's creation time: its payload's ``detected_at`` (SPEC section 5), else now."""
    stamp = alert.payload.get("detected_at")
    if isinstance(stamp, str):
        try:
            return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    return datetime.now(timezone.utc)


def safe_location(url: str) -> str:
    """The URL with its password registered as a secret and its user-info masked."""
    register_url_secrets(url)
    head, userinfo, rest = pgurl.split(url)
    body, q, query = url[len(head) :].partition("?")
    if pgurl.problem(url) and "@" in body:  # libpq misreads it: mask all to its last "@"
        return redact(f"{head}{MASK}@{body.rpartition('@')[2]}{q}{query}")
    return redact(f"{head}{MASK}@{rest}" if userinfo else url)


def register_url_secrets(url: str) -> None:
    """Every piece of ``url`` that may be its password, as libpq reads it (a "[" or
    "@" in it not percent-encoded included: ``pgurl.secrets``)."""
    for secret in pgurl.secrets(url):
        register_secret(secret)
    if psycopg is not None and not pgurl.problem(url):
        try:
            password = conninfo_to_dict(url).get("password")
        except (psycopg.Error, ValueError):  # (UnicodeDecodeError: a %e9 in it)
            password = None
        if password:
            register_secret(str(password))


class _Missing(Exception):
    """No feedwatch schema in the database (and we were asked not to create one)."""


class _Reach:
    """Whether the server is within reach, as the last call that asked found it.

    The daemon calls the state from its event loop: a call waiting for a connection
    stops everything else (other feeds, deliveries, the watchdog, a SIGTERM). So a call
    stops waiting as soon as the pool's attempt to connect fails (``connect_failed``,
    from its worker threads), and once a call found no connection, the calls of the
    next few seconds fail at once with the same error, while one of them at a time
    looks again (after 2 s, then twice as long each time, up to 30 s)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.error: str | None = None  # why the state is out of reach; None: it is not
        self._until = 0.0  # (monotonic) no call asks before this
        self._backoff = 0.0
        self._connect_error: tuple[float, str] | None = None

    def admit(self) -> float:
        """How long this call may wait for a connection; StateError at once while the
        state is out of reach and it is not yet time to look again (or another call
        is looking)."""
        with self._lock:
            if self.error is None:
                return POOL_TIMEOUT
            now = time.monotonic()
            if now < self._until:
                raise StateError(self.error)
            self._until = now + PROBE_TIMEOUT + 1.0  # the others fail at once meanwhile
            return PROBE_TIMEOUT

    def connect_failed(self, error: str) -> None:
        with self._lock:
            self._connect_error = (time.monotonic(), error)

    def connect_error_since(self, since: float) -> str | None:
        """The error of a connection attempt that failed after ``since`` (monotonic)."""
        with self._lock:
            failed = self._connect_error
        return failed[1] if failed is not None and failed[0] >= since else None

    def lost(self, error: str) -> bool:
        """A call found no connection; True when the state was within reach until now."""
        with self._lock:
            first = self.error is None
            self._backoff = (
                OUT_OF_REACH_FIRST if first else min(OUT_OF_REACH_MAX, self._backoff * 2)
            )
            self.error = error
            self._until = time.monotonic() + self._backoff
            return first

    def found(self) -> bool:
        """A call got a connection; True when the state was out of reach until now."""
        with self._lock:
            was = self.error is not None
            self.error = None
            self._backoff = 0.0
            return was


class _Call:
    """A call under way, as the watchdog sees it."""

    __slots__ = ("conn", "deadline", "every", "patient", "slow", "started")

    def __init__(self, conn: Any, seconds: float, patient: bool) -> None:
        self.conn = conn
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.every = seconds  # past each deadline, the server is asked again
        self.patient = patient  # may go on while the server works on it
        self.slow = False  # went on past its first deadline


# Why the watchdog cut a call (``_Watchdog.disarm``).
FROZEN, TOO_SLOW, STOPPING = "frozen", "slow", "stopping"


class _Watchdog:
    """Cuts the connection of a call the server does not answer.

    A server whose processes stopped (SIGSTOP, a frozen VM) keeps its TCP connections:
    the kernel still acknowledges what is sent, so neither TCP keepalives nor the
    server's own timeouts end the wait, and psycopg (synchronous) waits for the answer
    for ever, on the daemon's event loop. One thread per store watches the calls under
    way. Past its deadline, a (patient) call is not cut at once: a statement may just
    be slow (a lock wait, a slow disk), so the server is asked over a new connection
    what the call's backend is doing (``ask``). Working on it: the call goes on, asked
    about again every ``every`` seconds, up to SLOW_LIMIT, or ``stopping``'s grace once
    the process stops; meanwhile the systemd watchdog is pinged (the daemon's loop, that
    pings it otherwise, is held by the call), and ``state.slow`` is logged once. No
    answer, or not working on it: the call's socket is shut down, so its wait ends at
    once with a connection error (a StateError), and the pool drops that connection.
    A call it cut is reported as failed, never as done (if the server applied its commit
    just then, the state has it, as after any connection lost at a commit)."""

    def __init__(self, ask: Callable[[int], tuple[str, str | None] | None], path: str) -> None:
        self._ask = ask  # (backend pid) -> what the server says it does (_ask_server)
        self._path = path
        self._cond = threading.Condition()
        self._armed: dict[int, _Call] = {}
        self._cut: dict[int, str] = {}  # token: why (FROZEN, TOO_SLOW, STOPPING)
        self._slow: dict[int, float] = {}  # token of a slow call: when it started
        self._next = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stop_at: float | None = None  # (monotonic) no call goes on past it

    def arm(self, conn: Any, seconds: float, *, patient: bool = False) -> int:
        """Watch a call that waits ``seconds`` for its answers (``patient``: and on
        while the server says it works on them). Once the process stops, no longer than
        ``stopping``'s grace; past it, PROBE_TIMEOUT, and the call is not patient."""
        with self._cond:
            token = self._next
            self._next += 1
            stop_at = self._stop_at
            if stop_at is not None and time.monotonic() >= stop_at:
                seconds, patient = min(seconds, PROBE_TIMEOUT), False
            call = self._armed[token] = _Call(conn, seconds, patient)
            if stop_at is not None and patient:
                call.deadline = min(call.deadline, stop_at)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="feedwatch-pg-watchdog", daemon=True
                )
                self._thread.start()
            elif all(call.deadline < c.deadline for t, c in self._armed.items() if t != token):
                self._cond.notify()  # due before the others: the thread's wait is too long
            return token

    def disarm(self, token: int) -> tuple[str | None, float]:
        """The call is over: why its connection was cut (once; None: it was not), and
        how long it took if it was slow (0.0: it was not; once)."""
        with self._cond:
            self._armed.pop(token, None)
            started = self._slow.pop(token, None)
            return self._cut.pop(token, None), (
                0.0 if started is None else time.monotonic() - started
            )

    def stopping(self, grace: float) -> None:
        """The process stops: no call waits more than ``grace`` seconds from now (then
        the server is asked, and the call is cut whatever it says). (Called from a
        signal handler, on the thread that may hold the lock: it is reentrant.)"""
        with self._cond:
            at = time.monotonic() + max(0.0, grace)
            self._stop_at = at if self._stop_at is None else min(self._stop_at, at)
            for call in self._armed.values():
                call.deadline = min(call.deadline, self._stop_at)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _limit(self, call: _Call) -> float:
        """When the call goes on no more, however slow the server says it is."""
        limit = call.started + SLOW_LIMIT
        return limit if self._stop_at is None else min(limit, self._stop_at)

    def _why_not(self, now: float) -> str:
        """Why a call past its limit is cut: the process stops, or the server is too slow."""
        return STOPPING if self._stop_at is not None and now >= self._stop_at else TOO_SLOW

    def _cut_now(self, token: int, why: str) -> None:
        call = self._armed.pop(token)
        self._cut[token] = why
        _shut_down(call.conn)

    def _run(self) -> None:
        while True:
            ask: list[tuple[int, int]] = []  # (token, backend pid): due, to ask about
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                for token, call in list(self._armed.items()):
                    if call.deadline > now:
                        continue
                    if not call.patient:
                        self._cut_now(token, FROZEN)
                    elif call.slow and now >= self._limit(call):
                        self._cut_now(token, self._why_not(now))
                    else:
                        ask.append((token, _backend_pid(call.conn)))
                if not ask:
                    nearest = min((c.deadline for c in self._armed.values()), default=None)
                    self._cond.wait(None if nearest is None else max(0.01, nearest - now))
                    continue
            # the server is asked with the lock let go: the calls go on meanwhile
            answers = {pid: self._ask(pid) for pid in {pid for _, pid in ask}}
            went_on = False
            newly_slow: list[tuple[float, str | None]] = []  # (seconds, waiting for)
            with self._cond:
                now = time.monotonic()
                for token, pid in ask:
                    asked = self._armed.get(token)
                    if asked is None:  # over meanwhile
                        continue
                    answer = answers[pid]
                    if answer is None or answer[0] != "active":
                        self._cut_now(token, FROZEN)  # no answer, or not working on it
                    elif now >= self._limit(asked):
                        self._cut_now(token, self._why_not(now))
                    else:
                        went_on = True
                        asked.deadline = min(now + asked.every, self._limit(asked))
                        if not asked.slow:
                            asked.slow = True
                            self._slow[token] = asked.started
                            newly_slow.append((now - asked.started, answer[1]))
            for seconds, waiting in newly_slow:
                log.warning(
                    "state.slow",
                    path=self._path,
                    seconds=round(seconds, 1),
                    waiting=waiting,
                    hint="the server is still working on a state call (a lock wait, a slow"
                    " disk): it is waited for while the server says so, up to"
                    f" {SLOW_LIMIT:g}s; the daemon does nothing else meanwhile",
                )
            if went_on and sdnotify.watchdog_interval():
                sdnotify.watchdog()  # alive: waiting, bounded, for a server that works


def _backend_pid(conn: Any) -> int:
    """The server process of a connection (known to the client: no round trip)."""
    try:
        return int(conn.info.backend_pid)
    except Exception:  # closed meanwhile
        return 0


def _ask_server(url: str, kwargs: dict[str, Any], pid: int) -> tuple[str, str | None] | None:
    """What the server says its process ``pid`` is doing, asked over a new connection,
    waiting at most about PROBE_TIMEOUT to connect and as long for the answer: its
    ``state`` ("active": working on a statement, or waiting for a lock) and what it waits
    for ("Lock: relation"; None: nothing); ("gone", None) when there is no such
    process; None when no answer came (a frozen server)."""
    if not pid:
        return ("gone", None)
    try:
        conn = psycopg.connect(url, **{**kwargs, "connect_timeout": max(2, round(PROBE_TIMEOUT))})
    except psycopg.Error:
        return None
    try:
        pg = conn.pgconn
        pg.send_query_params(
            b"SELECT state, wait_event_type || ': ' || wait_event FROM pg_stat_activity"
            b" WHERE pid = $1",
            [str(pid).encode()],
        )
        deadline = time.monotonic() + PROBE_TIMEOUT
        ready = select.poll()  # (not select.select: a busy daemon's fds pass 1024)
        ready.register(pg.socket, select.POLLIN)
        while True:
            pg.consume_input()
            if not pg.is_busy():
                break
            left = deadline - time.monotonic()
            if left <= 0 or not ready.poll(left * 1000):
                return None
        res = pg.get_result()
        if res is None or res.status != psycopg.pq.ExecStatus.TUPLES_OK:
            return None
        if res.ntuples == 0:
            return ("gone", None)
        state, wait = res.get_value(0, 0), res.get_value(0, 1)
        return (
            state.decode() if state is not None else "unknown",
            wait.decode() if wait is not None else None,
        )
    except psycopg.Error:
        return None
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _alive(conn: Any) -> bool:
    """Whether a connection is still open and good (not lost in its last call)."""
    return not conn.closed and conn.info.status == psycopg.pq.ConnStatus.OK


def _shut_down(conn: Any) -> None:
    """Shut the connection's socket down (both ways): a wait on it ends at once."""
    with contextlib.suppress(Exception):  # closed meanwhile: nothing is waiting on it
        fd = os.dup(conn.pgconn.socket)
        with socket.socket(fileno=fd) as sock:
            sock.shutdown(socket.SHUT_RDWR)


def _watched_connection(reach: _Reach) -> type:
    """The pool's connection class: a failed attempt to connect is told to ``reach``
    (the pool only logs it, and the caller waiting for the connection would wait on)."""

    class WatchedConnection(psycopg.Connection):
        @classmethod
        def connect(cls, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().connect(*args, **kwargs)
            except psycopg.Error as exc:
                reach.connect_failed(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
                raise

    return WatchedConnection


class PostgresStore(SharedWrites):
    """The ``Store`` protocol on a PostgreSQL database (see the module docstring)."""

    # what feedwatch.store.rows (the reads both stores share) needs: times are TIMESTAMPTZ
    P = "%s"
    ROW_LOCK = " FOR UPDATE"
    UNLEASED = " AND (lease_until IS NULL OR lease_until < {p})"
    SAME = " IS NOT DISTINCT FROM "
    _to_db = staticmethod(_ts)
    _from_db = staticmethod(_dt)
    _from_db_req = staticmethod(_req_dt)

    def _reading(self) -> contextlib.AbstractContextManager[Any]:
        return self._tx(single=True)

    def _snapshot(self) -> contextlib.AbstractContextManager[Any]:
        return self._tx(snapshot=True)

    def _writing(self, *, pipeline: bool = False) -> contextlib.AbstractContextManager[Any]:
        return self._tx(pipeline=pipeline)

    def _ids_in(self, column: str, ids: Sequence[str]) -> Iterator[tuple[str, Sequence[Any]]]:
        if ids:
            yield f"{column} = ANY(%s)", ([_t(i) for i in ids],)

    # Forward migrations, in order: MIGRATIONS[n] takes version n to n + 1.
    MIGRATIONS: ClassVar[Sequence[Sequence[str]]] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7)

    def __init__(
        self, url: str, *, create: bool = True, upgrade: bool = True, pool_size: int = POOL_SIZE
    ) -> None:
        """``upgrade=False``: an older schema is refused, and opening writes nothing
        (``feedwatch.store.open_store``)."""
        if psycopg is None:
            raise StateError(
                "PostgreSQL state needs the psycopg driver: pip install 'feedwatch[postgres]'"
                " (psycopg[binary] and psycopg-pool)"
            )
        self.path = safe_location(url)
        why = pgurl.problem(url)  # libpq would misread it: its error may quote the password
        if why:
            raise StateError(f"not a valid PostgreSQL URL: {why}")
        try:
            params = conninfo_to_dict(url)
        except (psycopg.Error, ValueError) as exc:
            raise StateError(f"PostgreSQL state {self.path}: {redact(str(exc))}") from None
        extra: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            extra["connect_timeout"] = CONNECT_TIMEOUT
        if "application_name" not in params:
            extra["application_name"] = "feedwatch"
        try:
            conn = psycopg.connect(url, **extra)
        except psycopg.Error as exc:
            raise StateError(
                f"cannot connect to the PostgreSQL state {self.path}: {redact(str(exc).strip())}"
            ) from None
        try:
            self._open(conn, create, upgrade)
            if upgrade:
                with contextlib.suppress(psycopg.Error):
                    # schema 2 kept feedwatch.partial's cache here; it is in files now
                    # (feedwatch.parsecache): its rows go, the table stays for older versions
                    conn.execute("DELETE FROM parse_cache")
        finally:
            conn.close()
        self._reach = _Reach()
        self._watchdog = _Watchdog(functools.partial(_ask_server, url, extra), self.path)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs=extra,
            connection_class=_watched_connection(self._reach),
            reconnect_timeout=RECONNECT_TIMEOUT,
            configure=_configure,
            check=self._check,
            reset=_note_returned,
            timeout=POOL_TIMEOUT,
            open=False,
            name="feedwatch",
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT + 5)
        except PoolTimeout as exc:
            self._pool.close()
            raise StateError(
                f"cannot open connections to the PostgreSQL state {self.path}: {redact(str(exc))}"
            ) from None

    @classmethod
    def open(cls, url: str, *, create: bool = True, upgrade: bool = True) -> PostgresStore | None:
        """Like the constructor; with ``create=False`` a database without feedwatch's
        schema gives None and nothing is created (``status`` before the first run)."""
        try:
            return cls(url, create=create, upgrade=upgrade)
        except _Missing:
            return None

    # -- opening ---------------------------------------------------------------

    def _open(self, conn: Any, create: bool, upgrade: bool) -> None:
        target = len(self.MIGRATIONS)
        try:
            with conn.transaction():
                # Several instances starting at once: one migrates, the others wait.
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('feedwatch:' ||"
                    " COALESCE(current_schema(), '')))"
                )
                has_version = conn.execute(
                    "SELECT to_regclass('feedwatch_schema') IS NOT NULL"
                ).fetchone()[0]
                if has_version:
                    version = conn.execute(
                        "SELECT COALESCE(MAX(version), 0) FROM feedwatch_schema"
                    ).fetchone()[0]
                else:
                    version = 0
                    foreign = [
                        t
                        for t in OWN_TABLES
                        if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (t,)).fetchone()[0]
                    ]
                    if foreign:
                        raise StateError(
                            f"PostgreSQL database {self.path} has tables named"
                            f" {', '.join(foreign)} but no feedwatch_schema table: it is not"
                            " feedwatch state. Use an empty database, or a schema of its own"
                            " (`?options=-csearch_path%3Dfeedwatch` after CREATE SCHEMA feedwatch)"
                        )
                if version > target:
                    raise StateError(
                        f"PostgreSQL state {self.path} has schema version {version}, newer than"
                        f" this feedwatch understands ({target}): upgrade feedwatch to use it"
                    )
                if version == target:
                    return
                if version == 0 and not create:
                    raise _Missing()
                if not upgrade:
                    raise older_schema(
                        f"PostgreSQL state {self.path}",
                        version,
                        target,
                        "pg_dump it first: no copy is kept",
                    )
                if current_schema_missing(conn):
                    raise StateError(
                        f"PostgreSQL state {self.path}: no schema to create tables in (the"
                        " search_path names none that exists): CREATE SCHEMA it, or fix"
                        " search_path"
                    )
                if not has_version:
                    conn.execute(
                        "CREATE TABLE feedwatch_schema (version INTEGER PRIMARY KEY,"
                        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                    )
                for step in range(version, target):
                    for statement in self.MIGRATIONS[step]:
                        conn.execute(statement)
                    conn.execute("INSERT INTO feedwatch_schema (version) VALUES (%s)", (step + 1,))
                log.info(
                    "state.created" if version == 0 else "state.migrated",
                    path=self.path,
                    version=target,
                )
        except psycopg.Error as exc:
            mapped = self._error(exc)
            if mapped is exc:
                raise
            raise mapped from None

    # -- errors and transactions ---------------------------------------------

    def _error(self, exc: Exception) -> Exception:
        """A server or connection failure becomes a StateError naming the (masked) URL;
        a bug (bad SQL, a broken constraint) stays what it is."""
        msg = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        if isinstance(exc, pg_errors.InsufficientPrivilege):
            return StateError(
                f"PostgreSQL state {self.path}: {msg}: grant the feedwatch role the rights"
                " it needs on its tables (or own them)"
            )
        if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
            return StateError(
                f"PostgreSQL state {self.path} is read-only ({msg}): point `state` at the"
                " primary server, not a standby"
            )
        if isinstance(exc, pg_errors.DiskFull):
            return StateError(
                f"PostgreSQL state {self.path} cannot be written: {msg}: free space on the"
                " database server; the state is as it was after the last successful write"
            )
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            return StateError(f"PostgreSQL state {self.path}: {msg}")
        return exc

    def batch(self, *, wait: bool = True) -> contextlib.AbstractContextManager[None]:
        """Each write stays its own transaction: they run on pooled connections, and a
        COMMIT costs a round trip rather than a WAL write (see SqliteStore.batch). It
        never waits as it begins (``wait`` changes nothing)."""
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _tx(self, *, snapshot: bool = False, single: bool = False,
            pipeline: bool = False) -> Iterator[Any]:  # fmt: skip
        """One transaction: all of it commits, or none of it.

        ``single``: the caller runs ONE statement, a transaction by itself (no BEGIN and
        COMMIT round trips). ``pipeline``: the statements are sent without waiting for
        each result (fewer round trips; results are still there when fetched).
        ``snapshot``: several SELECTs see the same state (REPEATABLE READ).
        """
        try:
            with self._connection() as conn:
                if single:
                    with conn.cursor() as cur:
                        yield cur
                    return
                with contextlib.ExitStack() as stack:
                    if pipeline:
                        stack.enter_context(conn.pipeline())
                    stack.enter_context(conn.transaction())
                    cur = stack.enter_context(conn.cursor())
                    if snapshot:
                        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    yield cur
        except psycopg.Error as exc:
            mapped = self._error(exc)
            if mapped is exc:
                raise
            raise mapped from None

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled connection (as ``ConnectionPool.connection``), or StateError. The
        server's answers are waited for ANSWER_TIMEOUT, and on while the server says it
        is working on them, up to SLOW_LIMIT (``_Watchdog``): one that keeps the
        connection but answers nothing puts the state out of reach (while it is, the
        call that looks again waits PROBE_TIMEOUT, and no more)."""
        reachable = self._reach.error is None
        answer = ANSWER_TIMEOUT if reachable else PROBE_TIMEOUT
        conn = self._getconn()
        began = time.monotonic()
        watch = self._watchdog.arm(conn, answer, patient=reachable)
        cut: str | None = None
        slow = 0.0
        try:
            with conn:
                yield conn
        except psycopg.Error:
            cut, slow = self._watchdog.disarm(watch)
            if cut == FROZEN:
                raise self._lose(f"no answer from the server within {answer:g}s") from None
            if cut is not None:
                why = (
                    "the process is stopping"
                    if cut == STOPPING
                    else f"the server was still working on it after {SLOW_LIMIT:g}s"
                )
                took = time.monotonic() - began
                raise StateError(
                    f"PostgreSQL state {self.path}: a state call was cut short after"
                    f" {took:.0f}s: {why}"
                ) from None
            raise
        finally:
            again, slower = self._watchdog.disarm(watch)
            cut, slow = cut or again, slow or slower
            self._pool.putconn(conn)
            if slow and cut is None:
                log.info("state.slow_done", path=self.path, seconds=round(slow, 1))
        # (cut as the last answer came: done, and the pool drops that connection)
        if cut is None and _alive(conn) and self._reach.found():
            log.info("state.reachable", path=self.path)

    def _getconn(self) -> Any:
        """A connection from the pool, waiting at most ``_Reach.admit``'s time: first a
        short while, and no longer if the pool's attempt to connect failed meanwhile (a
        refused connection, a wrong password: no use waiting). None to be had puts the
        state out of reach. (Two waits, not many short ones: the pool keeps each wait
        that timed out queued until a connection comes.)"""
        wait = self._reach.admit()
        started = time.monotonic()
        try:
            try:
                conn = self._pool.getconn(timeout=min(FIRST_WAIT, wait))
            except PoolTimeout:
                if wait <= FIRST_WAIT or self._reach.connect_error_since(started):
                    raise
                conn = self._pool.getconn(timeout=max(0.001, started + wait - time.monotonic()))
        except PoolTimeout:
            failed = self._reach.connect_error_since(started)
            raise self._lose(failed or f"no connection within {wait:g}s") from None
        return conn

    def _lose(self, why: str) -> StateError:
        """The state is out of reach (logged once, as it begins): the error to raise."""
        error = f"PostgreSQL state {self.path}: " + redact(why)
        if self._reach.lost(error):
            log.warning(
                "state.out_of_reach",
                path=self.path,
                error=error,
                hint="state calls fail at once for a few seconds at a time, then one looks again",
            )
        return StateError(error)

    def _check(self, conn: Any) -> None:
        """The pool's check of a connection (``_check_if_idle``), bounded as a call is."""
        watch = self._watchdog.arm(conn, PROBE_TIMEOUT)
        try:
            _check_if_idle(conn)
        finally:
            self._watchdog.disarm(watch)

    def stopping(self, grace: float) -> None:
        """The process stops: a state call the server is slow to answer (``state.slow``)
        goes on at most ``grace`` seconds more, then it is cut (and the server stops
        it). Safe to call from a signal handler: the daemon's, as SIGTERM comes in while
        its loop waits for such a call."""
        self._watchdog.stopping(grace)

    def checkpoint(self) -> None:
        pass  # the server's business

    def close(self) -> None:
        # (a pool worker may be connecting to a server out of reach: not waited for long)
        with contextlib.suppress(Exception):
            self._pool.close(timeout=1.0 if self._reach.error else 5.0)
        self._watchdog.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- feeds and entries ---------------------------------------------------

    @staticmethod
    def _ensure_feed(cur: Any, feed: str, url: str | None) -> None:
        cur.execute(
            "INSERT INTO feeds (name, url) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
            (feed, _t(url)),
        )

    @staticmethod
    def _queue(
        cur: Any, alerts: Iterable[Alert], at: datetime | None, expired: datetime | None = None
    ) -> list[str]:
        """Record alerts not yet known, each with a pending delivery per sink.

        ``at`` is their creation time; None: each alert's own ``detected_at``.
        ``expired`` (``PollCommit.alerts_before``): an alert of the same id made before
        it, with no delivery pending, is one the prune drops: it goes first (its
        deliveries and claims with it, ON DELETE CASCADE), and the alert is new again.
        """
        first: dict[str, Alert] = {}
        rows: list[tuple[Any, ...]] = []
        for alert in alerts:
            # Serialise every one first: an alert that cannot be stored fails the whole
            # transaction (the caller's), whatever its place in the list.
            payload = stored_text(alert.payload)  # the bytes the sinks send (feedwatch.payload)
            if alert.id in first:
                continue
            first[alert.id] = alert
            created = at if at is not None else _detected_at(alert)
            rows.append(
                (
                    alert.id,
                    alert.feed,
                    _t(alert.identity),
                    alert.kind,
                    created,
                    payload,
                    _t(alert.thread_id),
                    alert.duplicate_key,
                )
            )
        if not rows:
            return []
        if expired is not None:  # the prune's condition (rows.prune_batches)
            # an alert of these ids, or one holding these stories' duplicate claims (a
            # story counts as sent while that alert is kept), the prune would drop now
            keys = [a.duplicate_key for a in first.values() if a.duplicate_key is not None]
            cur.execute(
                "DELETE FROM alerts WHERE (alert_id = ANY(%s) OR alert_id IN (SELECT alert_id"
                f" FROM duplicate_claims WHERE key = ANY(%s))) AND NOT {kept_alert('%s')}",
                (list(first), keys, expired),
            )
        cols = list(zip(*rows, strict=True))
        cur.execute(
            "INSERT INTO alerts (alert_id, feed, identity, kind, created_at, payload, thread_id,"
            " duplicate_key)"
            " SELECT u.alert_id, u.feed, u.identity, u.kind, u.created_at, u.payload, u.thread_id,"
            " u.duplicate_key"
            " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[],"
            " %s::text[], %s::text[], %s::text[]) WITH ORDINALITY"
            " AS u(alert_id, feed, identity, kind, created_at, payload, thread_id, duplicate_key, n)"
            " ORDER BY u.n"
            " ON CONFLICT (alert_id) DO NOTHING RETURNING alert_id",
            [list(c) for c in cols],
        )
        inserted = {r[0] for r in cur.fetchall()}
        claimed = PostgresStore._claim_duplicates(
            cur, [first[aid] for aid in first if aid in inserted]
        )
        queued: list[str] = []
        ids: list[str] = []
        sinks: list[str] = []
        times: list[datetime] = []
        for row in rows:
            if row[0] not in inserted:
                continue  # an id once recorded never alerts again
            alert = first[row[0]]
            to = [
                sink
                for sink in dict.fromkeys(alert.sinks)
                if alert.duplicate_key is None or (alert.id, sink) in claimed
            ]
            if alert.sinks and not to:
                continue  # recorded (never alerts again), sent nowhere: a duplicate
            queued.append(alert.id)
            for sink in to:
                ids.append(row[0])
                sinks.append(sink)
                times.append(row[4])
        if ids:
            cur.execute(
                "INSERT INTO deliveries (alert_id, sink, status, next_attempt)"
                " SELECT alert_id, sink, 'pending', at"
                " FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS u(alert_id, sink, at)"
                " ON CONFLICT DO NOTHING",
                (ids, sinks, times),
            )
        return queued

    @staticmethod
    def _claim_duplicates(cur: Any, alerts: list[Alert]) -> set[tuple[str, str]]:
        """(alert id, sink) of the claims these alerts took; none where a claim of the
        key and sink was already held (another feed's alert went there)."""
        keys: list[str] = []
        sinks: list[str] = []
        ids: list[str] = []
        for alert in alerts:
            if alert.duplicate_key is None:
                continue
            for sink in dict.fromkeys(alert.sinks):
                keys.append(alert.duplicate_key)
                sinks.append(sink)
                ids.append(alert.id)
        if not keys:
            return set()
        cur.execute(
            "INSERT INTO duplicate_claims (key, sink, alert_id)"
            " SELECT u.key, u.sink, u.alert_id"
            " FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY"
            " AS u(key, sink, alert_id, n) ORDER BY u.n"
            " ON CONFLICT (key, sink) DO NOTHING RETURNING alert_id, sink",
            (keys, sinks, ids),
        )
        return {(r[0], r[1]) for r in cur.fetchall()}

    def commit_poll(self, commit: PollCommit) -> list[str]:
        now = _now_ts(commit.now)
        feed = commit.feed
        upserts = [
            (
                feed,
                _t(e.identity),
                _t(e.entry_id),
                _t(e.link),
                _t(e.title),
                _t(e.summary),
                _t(e.content),
                _ts(e.published),
                _ts(e.updated),
                e.fingerprint,
                _ts(e.first_seen),
                _ts(e.last_seen),
                e.new_alert_id,
                link_key(_t(e.link)),
            )
            for e in commit.upserts
        ]
        next_poll = _ts(commit.next_poll)
        prune_before = _ts(commit.prune_before)
        with self._tx(pipeline=True) as cur:
            self._void_if_forgotten(cur, feed, commit.baselined)
            self._ensure_feed(cur, feed, commit.url)
            for old, new in commit.rekeys:
                self._rekey(cur, feed, _t(old) or "", _t(new) or "", commit.prune_before)
            if upserts:
                cur.executemany(
                    "INSERT INTO entries (feed, identity, entry_id, link, title, summary,"
                    " content, published, updated, fingerprint, first_seen, last_seen,"
                    " new_alert_id, link_key)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (feed, identity) DO UPDATE SET entry_id = excluded.entry_id,"
                    " link = excluded.link, title = excluded.title, summary = excluded.summary,"
                    " content = excluded.content, published = excluded.published,"
                    " updated = excluded.updated, fingerprint = excluded.fingerprint,"
                    " first_seen = excluded.first_seen, last_seen = excluded.last_seen,"
                    " new_alert_id = excluded.new_alert_id, link_key = excluded.link_key",
                    upserts,
                )
            if commit.touched:
                # on the feed's first success of each step only (feedwatch.store.seen)
                cut = _now_ts(touch_cut(commit.now, seen_step(commit.now, commit.prune_before)))
                cur.execute(
                    "UPDATE entries SET last_seen = %s WHERE feed = %s AND identity = ANY(%s)"
                    " AND NOT EXISTS"
                    " (SELECT 1 FROM feeds WHERE name = %s AND last_success >= %s)",
                    (now, feed, [_t(i) for i in commit.touched], feed, cut),
                )
            # which stored entries are in this body (in_body: what a 304 sees again);
            # only those that left it or came back are written. (SQLite reads the old
            # body first, sqlite.py's _mark_body: its statements take 500 parameters.)
            # One that leaves was last seen at the feed's previous success (not yet
            # this poll's): its last_seen, kept to the step, moves up to that time.
            body = [e[1] for e in upserts] + [_t(i) for i in commit.touched]
            cur.execute(
                "UPDATE entries SET in_body = 0, last_seen = GREATEST(last_seen,"
                " (SELECT last_success FROM feeds WHERE name = %s))"
                " WHERE feed = %s AND in_body = 1 AND NOT (identity = ANY(%s))",
                (feed, feed, body),
            )
            cur.execute(  # one back is seen now, not at the step's next touch
                "UPDATE entries SET in_body = 1, last_seen = %s WHERE feed = %s AND in_body = 0"
                " AND identity = ANY(%s)",
                (now, feed, body),
            )
            queued = self._queue(cur, commit.alerts, now, _ts(commit.alerts_before))
            if prune_before is not None:  # never an entry of the body just marked
                cur.execute(
                    "DELETE FROM entries WHERE feed = %s AND in_body = 0 AND last_seen < %s",
                    (feed, prune_before),
                )
            cur.execute(
                "UPDATE feeds SET url = %s, title = %s, etag = %s, last_modified = %s,"
                " body_hash = %s, id_policy = %s, id_candidate = %s, baselined = TRUE,"
                " last_poll = %s, last_success = %s, http_status = %s, errors = 0,"
                " last_error = NULL, next_poll = %s, retry_after_until = NULL, gone = FALSE,"
                " redirected_to = %s,"
                " last_new_entry = CASE WHEN %s THEN %s ELSE last_new_entry END,"
                " stale_notified = COALESCE(%s, stale_notified),"
                " masked_name = COALESCE(%s, masked_name)"
                " WHERE name = %s",
                (
                    _t(commit.url),
                    _t(commit.title),
                    _t(commit.etag),
                    _t(commit.last_modified),
                    commit.body_hash,
                    commit.identity.policy,
                    commit.identity.candidate,
                    now,
                    now,
                    commit.http_status,
                    next_poll,
                    _t(commit.redirected_to),
                    commit.had_new_entry,
                    now,
                    commit.stale_notified,
                    _t(commit.masked_name),
                    feed,
                ),
            )
        return queued

    def record_unchanged(
        self,
        feed: str,
        url: str,
        now: datetime,
        *,
        http_status: int,
        etag: str | None,
        last_modified: str | None,
        next_poll: datetime | None,
        redirected_to: str | None = None,
        prune_before: datetime | None = None,
        masked_name: str | None = None,
    ) -> None:
        """A 304 or identical body: the entries of the last body seen again; validators
        kept when none came."""
        ts = _now_ts(now)
        nxt, prune = _ts(next_poll), _ts(prune_before)
        step = seen_step(now, prune_before)
        # One statement (the poll of every unchanged feed: the hot path) touches the
        # entries of the last body, drops what retention forgets and upserts the feed
        # row. The touch happens on the feed's first success of each `step`
        # (feedwatch.store.seen; every part of the statement sees the feed row as it
        # was before it), so most unchanged polls write no entry. Entries that left the
        # feed are not seen: they age until retention drops them (an index search); an
        # entry of the body is never dropped, so the two parts never write one row.
        parts = [
            "seen AS (UPDATE entries SET last_seen = %(ts)s"
            " WHERE feed = %(feed)s AND in_body = 1 AND NOT EXISTS"
            " (SELECT 1 FROM feeds WHERE name = %(feed)s AND last_success >= %(cut)s))"
        ]
        if prune is not None:
            parts.append(
                "gone AS (DELETE FROM entries"
                " WHERE feed = %(feed)s AND in_body = 0 AND last_seen < %(prune)s)"
            )
        with self._tx(single=True) as cur:
            cur.execute(
                f"WITH {', '.join(parts)}"
                " INSERT INTO feeds (name, url, etag, last_modified, last_poll, last_success,"
                " http_status, next_poll, redirected_to, masked_name) VALUES (%(feed)s,"
                " %(url)s, %(etag)s, %(lm)s, %(ts)s, %(ts)s, %(status)s, %(next)s,"
                " %(redirected)s, %(masked)s)"
                " ON CONFLICT (name) DO UPDATE SET url = excluded.url,"
                " etag = COALESCE(excluded.etag, feeds.etag),"
                " last_modified = COALESCE(excluded.last_modified, feeds.last_modified),"
                " last_poll = excluded.last_poll, last_success = excluded.last_success,"
                " http_status = excluded.http_status, errors = 0, last_error = NULL,"
                " next_poll = excluded.next_poll, retry_after_until = NULL, gone = FALSE,"
                " redirected_to = excluded.redirected_to,"
                " masked_name = COALESCE(excluded.masked_name, feeds.masked_name)",
                {
                    "feed": feed,
                    "url": _t(url),
                    "etag": _t(etag),
                    "lm": _t(last_modified),
                    "ts": ts,
                    "status": http_status,
                    "next": nxt,
                    "redirected": _t(redirected_to),
                    "masked": _t(masked_name),
                    "cut": touch_cut(now, step),
                    "prune": prune,
                },
            )

    def record_failure(
        self,
        feed: str,
        url: str,
        now: datetime,
        *,
        http_status: int | None,
        error: str,
        next_poll: datetime | None,
        retry_after_until: datetime | None = None,
        gone: bool = False,
        redirected_to: str | None = None,
        masked_name: str | None = None,
    ) -> None:
        ts = _now_ts(now)
        nxt, until = _ts(next_poll), _ts(retry_after_until)
        with self._tx(single=True) as cur:
            cur.execute(
                "INSERT INTO feeds (name, url, errors, last_error, http_status, last_poll,"
                " next_poll, retry_after_until, gone, redirected_to, last_new_entry,"
                " masked_name) VALUES (%s, %s, 1, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET url = excluded.url,"
                " errors = CASE WHEN feeds.url = excluded.url THEN feeds.errors + 1 ELSE 1 END,"
                " last_error = excluded.last_error,"
                " http_status = excluded.http_status, last_poll = excluded.last_poll,"
                " next_poll = excluded.next_poll, retry_after_until = excluded.retry_after_until,"
                " gone = excluded.gone, redirected_to = excluded.redirected_to,"
                " last_new_entry = CASE WHEN feeds.last_success IS NULL"
                " THEN COALESCE(feeds.last_new_entry, excluded.last_poll)"
                " ELSE feeds.last_new_entry END,"
                " masked_name = COALESCE(excluded.masked_name, feeds.masked_name)",
                (
                    feed,
                    _t(url),
                    _t(error),
                    http_status,
                    ts,
                    nxt,
                    until,
                    gone,
                    _t(redirected_to),
                    ts,
                    _t(masked_name),
                ),
            )

    def clear_gone(self, feed: str) -> None:
        with self._tx(single=True) as cur:
            cur.execute("UPDATE feeds SET gone = FALSE WHERE name = %s", (feed,))

    # -- outbox ----------------------------------------------------------------

    def pending_pages(self, sink: str, *, page: int = PENDING_PAGE) -> Iterator[list[Delivery]]:
        # The queue's order as alert numbers (8 bytes each), then the rows a page at a time.
        with self._tx(single=True) as cur:
            order = array(
                "q",
                (
                    r[0]
                    for r in cur.execute(
                        "SELECT a.seq FROM deliveries d JOIN alerts a ON a.alert_id = d.alert_id"
                        " WHERE d.status = 'pending' AND d.sink = %s ORDER BY a.created_at, a.seq",
                        (sink,),
                    )
                ),
            )
        for start in range(0, len(order), max(1, page)):
            chunk = order[start : start + max(1, page)]
            with self._tx(single=True) as cur:
                rows = cur.execute(
                    # each alert by number, then its delivery by primary key (OFFSET 0
                    # keeps the planner, on fresh statistics, from scanning every
                    # pending row of the sink once per alert instead)
                    f"SELECT {DELIVERY_COLS}, a.seq FROM alerts a CROSS JOIN LATERAL"
                    " (SELECT * FROM deliveries x WHERE x.alert_id = a.alert_id"
                    " AND x.sink = %s OFFSET 0) d"
                    " WHERE a.seq = ANY(%s) AND d.status = 'pending'",
                    (sink, list(chunk)),
                ).fetchall()
            rank = {seq: i for i, seq in enumerate(chunk)}
            rows.sort(key=lambda r: rank[r[-1]])
            yield [self._delivery(r) for r in rows]

    def mark_delivered(self, sink: str, alert_ids: Iterable[str], now: datetime) -> None:
        ts = _now_ts(now)
        ids = list(alert_ids)
        with self._tx(single=True) as cur:
            cur.execute(
                "UPDATE deliveries SET status = 'delivered', delivered_at = %s,"
                " last_error = NULL, claimed_by = NULL, claimed_until = NULL,"
                " attempts = attempts + 1"
                " WHERE sink = %s AND alert_id = ANY(%s) AND status != 'delivered'",
                (ts, sink, ids),
            )

    def mark_retry(
        self,
        sink: str,
        alert_ids: Iterable[str],
        now: datetime,
        *,
        error: str,
        next_attempt: datetime,
        recipients_left: Sequence[str] | None = None,
    ) -> None:
        """One more failed attempt; only pending deliveries are touched."""
        nxt = _ts(next_attempt)
        ids = list(alert_ids)
        left = None if recipients_left is None else _t(recipients_to_db(recipients_left))
        with self._tx(single=True) as cur:
            cur.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = %s,"
                " next_attempt = %s, claimed_by = NULL, claimed_until = NULL,"
                " recipients_left = COALESCE(%s, recipients_left)"
                " WHERE sink = %s AND alert_id = ANY(%s) AND status = 'pending'",
                (_t(error), nxt, left, sink, ids),
            )

    def mark_dead(
        self,
        sink: str,
        alert_ids: Iterable[str],
        now: datetime,
        *,
        error: str,
        attempted: bool = True,
        recipients_left: Sequence[str] | None = None,
    ) -> None:
        ids = list(alert_ids)
        left = None if recipients_left is None else _t(recipients_to_db(recipients_left))
        with self._tx(single=True) as cur:
            cur.execute(
                "UPDATE deliveries SET status = 'dead', last_error = %s,"
                " claimed_by = NULL, claimed_until = NULL, attempts = attempts + %s,"
                " recipients_left = COALESCE(%s, recipients_left)"
                " WHERE sink = %s AND alert_id = ANY(%s) AND status = 'pending'",
                (_t(error), int(attempted), left, sink, ids),
            )

    def shift_retries(self, seconds: float, now: datetime) -> int:
        return 0  # shared: the other instances' clocks did not step (store.base)

    def redeliver(self, now: datetime, *, sink: str | None = None, feed: str | None = None) -> int:
        """Dead deliveries back to pending, due now, attempts reset to 0."""
        sql = (
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt = %s,"
            " claimed_by = NULL, claimed_until = NULL WHERE status = 'dead'"
        )
        args: list[Any] = [_ts(now)]
        if sink is not None:
            sql += " AND sink = %s"
            args.append(sink)
        if feed is not None:
            sql += " AND alert_id IN (SELECT alert_id FROM alerts WHERE feed = %s)"
            args.append(feed)
        with self._tx(single=True) as cur:
            return int(cur.execute(sql, args).rowcount)

    # -- leases ----------------------------------------------------------------

    def claim_feed(self, feed: str, url: str, owner: str, now: datetime, lease: float) -> FeedClaim:
        ts = _now_ts(now)
        args = {
            "feed": feed,
            "url": _t(url),
            "owner": owner,
            "now": ts,
            "until": ts + timedelta(seconds=lease),
        }
        # One statement, one round trip whatever the answer: the conditional UPDATE is the
        # claim; the row as it was before it says why not (another holder, not yet due).
        with self._tx(single=True) as cur:
            row = cur.execute(_CLAIM_FEED, args).fetchone()
            if row[0]:
                return FeedClaim(granted=True)
            if row[1] is None:  # no such feed yet: the first to create it holds it
                if cur.execute(
                    "INSERT INTO feeds (name, url, lease_owner, lease_until)"
                    " VALUES (%(feed)s, %(url)s, %(owner)s, %(until)s)"
                    " ON CONFLICT (name) DO NOTHING RETURNING 1",
                    args,
                ).fetchone():
                    return FeedClaim(granted=True)
                # another instance created it at the same moment: its lease decides
                row = cur.execute(_CLAIM_FEED, args).fetchone()
                if row[0]:
                    return FeedClaim(granted=True)
        _granted, _name, next_poll, holder, until, gone = row
        held = holder is not None and holder != owner and until is not None and until > ts
        return FeedClaim(
            granted=False,
            next_poll=_dt(next_poll),
            held_until=_dt(until) if held else None,
            gone=bool(gone),
        )

    def release_feed(self, feed: str, owner: str) -> None:
        with self._tx(single=True) as cur:
            cur.execute(
                "UPDATE feeds SET lease_owner = NULL, lease_until = NULL"
                " WHERE name = %s AND lease_owner = %s",
                (feed, owner),
            )

    def claim_deliveries(
        self, sink: str, alert_ids: Iterable[str], owner: str, now: datetime, lease: float
    ) -> list[str]:
        ids = list(alert_ids)
        if not ids:
            return []
        ts = _now_ts(now)
        with self._tx(single=True) as cur:
            got = {
                r[0]
                for r in cur.execute(
                    "UPDATE deliveries SET claimed_by = %(owner)s, claimed_until = %(until)s"
                    " WHERE sink = %(sink)s AND alert_id = ANY(%(ids)s) AND status = 'pending'"
                    " AND (claimed_by IS NULL OR claimed_by = %(owner)s"
                    "      OR claimed_until <= %(now)s)"
                    " RETURNING alert_id",
                    {
                        "owner": owner,
                        "until": ts + timedelta(seconds=lease),
                        "sink": sink,
                        "ids": ids,
                        "now": ts,
                    },
                ).fetchall()
            }
        return [i for i in dict.fromkeys(ids) if i in got]

    def release_deliveries(
        self, sink: str, alert_ids: Iterable[str], owner: str, *, interrupted: bool = False
    ) -> None:
        ids = list(alert_ids)
        if not ids:
            return
        note = NOTE_INTERRUPTED.format(p="%s", pct="%%")
        noted = (
            f", last_error = CASE WHEN status <> 'pending' THEN last_error ELSE {note} END"
            if interrupted
            else ""
        )
        with self._tx(single=True) as cur:
            cur.execute(
                f"UPDATE deliveries SET claimed_by = NULL, claimed_until = NULL{noted}"
                " WHERE sink = %s AND alert_id = ANY(%s) AND claimed_by = %s",
                (*((INTERRUPTED,) * 3 if interrupted else ()), sink, ids, owner),
            )

    def renew_leases(self, owner: str, now: datetime, lease: float) -> None:
        until = _now_ts(now) + timedelta(seconds=lease)
        with self._tx(pipeline=True) as cur:
            cur.execute("UPDATE feeds SET lease_until = %s WHERE lease_owner = %s", (until, owner))
            cur.execute(
                "UPDATE deliveries SET claimed_until = %s WHERE claimed_by = %s", (until, owner)
            )

    def release_leases(self, owner: str) -> None:
        with self._tx(pipeline=True) as cur:
            cur.execute(
                "UPDATE feeds SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = %s",
                (owner,),
            )
            cur.execute(
                "UPDATE deliveries SET claimed_by = NULL, claimed_until = NULL"
                " WHERE claimed_by = %s",
                (owner,),
            )

    # -- bulk import (`feedwatch migrate-state`) ---------------------------------

    def is_empty(self) -> bool:
        with self._tx(single=True) as cur:
            row = cur.execute(
                "SELECT EXISTS (SELECT 1 FROM feeds) OR EXISTS (SELECT 1 FROM alerts)"
            ).fetchone()
        return not row[0]

    IMPORT_TABLES: ClassVar[tuple[str, ...]] = (
        "feeds",
        "entries",
        "alerts",
        "duplicate_claims",
        "deliveries",
    )

    def import_rows(
        self, tables: Sequence[tuple[str, Sequence[str], Iterable[Sequence[Any]]]]
    ) -> dict[str, int]:
        """Copy rows into an empty state in ONE transaction (all of it, or none of it);
        ``tables`` in dependency order: feeds, entries, alerts, duplicate_claims,
        deliveries. Returns the
        row count per table."""
        counts: dict[str, int] = {}
        with self._tx() as cur:
            if cur.execute(
                "SELECT EXISTS (SELECT 1 FROM feeds) OR EXISTS (SELECT 1 FROM alerts)"
            ).fetchone()[0]:
                raise StateError(
                    f"PostgreSQL state {self.path} already holds feedwatch state: migrate"
                    " into an empty database (or schema), never over live state"
                )
            for table, columns, rows in tables:
                if table not in self.IMPORT_TABLES:
                    raise ValueError(f"unknown table {table!r}")
                for col in columns:
                    if not col.replace("_", "").isalnum():
                        raise ValueError(f"bad column name {col!r}")
                n = 0
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row([_t(v) if isinstance(v, str) else v for v in row])
                        n += 1
                counts[table] = n
            cur.execute(
                "SELECT setval(pg_get_serial_sequence('alerts', 'seq'),"
                " COALESCE((SELECT MAX(seq) FROM alerts), 0) + 1, false)"
            )
        return counts


def _configure(conn: Any) -> None:
    conn.execute("SET TIME ZONE 'UTC'")
    # A call cut short (too slow, the process stopping, a server frozen a while): the
    # server stops its statement, and what it holds, once it sees the client gone
    # (PostgreSQL 14 and later, on most systems; elsewhere the statement runs to its end).
    if conn.info.server_version >= 140000:
        with contextlib.suppress(psycopg.Error):  # (a system without the check)
            conn.execute(f"SET client_connection_check_interval = {int(CLIENT_CHECK_MS)}")


IDLE_CHECK = 10.0  # a pooled connection idle longer than this is checked before use


def _note_returned(conn: Any) -> None:
    conn._feedwatch_returned = time.monotonic()


def _check_if_idle(conn: Any) -> None:
    """A connection back from the pool is checked (one round trip) when it sat idle long
    enough for the server to have gone away (an idle timeout), or when the server wrote
    to it while it was idle: a restart (or ``pg_terminate_backend``) sends "terminating
    connection" and closes it, and a busy daemon, whose connections are never idle for
    long, then failed its next call (a delivery sent was not marked, and sent again).
    A busy daemon pays a poll of the socket, no round trip."""
    idle = time.monotonic() - getattr(conn, "_feedwatch_returned", 0.0)
    if idle > IDLE_CHECK or _written_to(conn):
        ConnectionPool.check_connection(conn)


def _written_to(conn: Any) -> bool:
    """Whether an idle connection has something to read (or is closed): nothing is
    asked of the server between calls, so whatever came is the end of it."""
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):  # closed already
        return True
    return bool(readable)


def current_schema_missing(conn: Any) -> bool:
    return bool(conn.execute("SELECT current_schema() IS NULL").fetchone()[0])
