"""The state interface: what the shell asks of storage, whatever the backend.

SQLite (``feedwatch.store.sqlite``) is the default; PostgreSQL
(``feedwatch.store.postgres``) implements the same ``Store`` protocol, passes the
same contract tests, and adds leases so that several daemons can share it.

Every method is one transaction (or, inside ``batch()``, one savepoint of the batch's
transaction: still all or nothing on its own). ``commit_poll`` is the important one: the
entry changes of a poll, the alerts they caused and those alerts' deliveries
are written together or not at all, so an alert can never be lost between
"we saw the change" and "we queued the alert".
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol

from feedwatch.model import Alert, IdentityState, StoredEntry, StoredNeed
from feedwatch.redact import MASK, redact


class StateError(Exception):
    """The state file cannot be used: locked, corrupt, from a newer version, unwritable.

    The message names the file and says what to do; feedwatch never resets
    state silently (that would re-alert everything).
    """


def log_state_failure(
    logger: Any, event: str, exc: BaseException, hint: str, **fields: Any
) -> None:
    """A state that failed (a database out of reach) is one line saying why and what
    happens next; anything else is a bug, logged with its traceback."""
    if isinstance(exc, StateError):
        logger.error(event, **fields, error=redact(str(exc)), hint=hint)
    else:
        logger.error(event, **fields, exc_info=exc)


class StateBusy(StateError):
    """Another process held SQLite's write lock: the write was not done (nothing of it)."""


class StateLocked(StateError):
    """Another feedwatch daemon holds this state."""


def older_schema(where: str, version: int, target: int, copy: str) -> StateError:
    """A state with an older schema, opened by a command that does not upgrade it: only
    `check` and `run` do (so, for SQLite, under the state's lock), since an older
    release still running on it would find a schema it refuses. ``where`` names the
    state, ``copy`` what the upgrade keeps of it as it was."""
    return StateError(
        f"{where} has schema version {version}, older than this feedwatch's ({target}):"
        f" `feedwatch check`, or restarting `feedwatch run`, upgrades it ({copy});"
        " stop every older feedwatch instance using it first"
    )


class ForgottenMeanwhile(Exception):
    """``forget`` ran while this poll was under way: the poll compared against
    entries that are gone, so its commit is void (nothing written) and the
    feed's next poll records the baseline ``forget`` promised."""


@dataclass(frozen=True)
class FeedRecord:
    """What the state holds about one feed (also feeds removed from the config)."""

    name: str
    url: str | None = None
    title: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    identity: IdentityState = IdentityState()
    baselined: bool = False  # a successful poll has been recorded
    last_poll: datetime | None = None
    last_success: datetime | None = None
    http_status: int | None = None
    errors: int = 0  # consecutive failed polls
    last_error: str | None = None
    next_poll: datetime | None = None
    retry_after_until: datetime | None = None
    gone: bool = False
    redirected_to: str | None = None
    last_new_entry: datetime | None = None
    stale_notified: bool = False
    entries: int = 0  # entries tracked (when read with counts=True, else 0)
    # the name as its last poll showed it, each ${VAR} value masked (schema 6)
    masked_name: str | None = None

    @property
    def shown_name(self) -> str:
        """The name to show for a feed no longer in the config: ``name`` is the expanded
        one, whose ``${VAR}`` values nothing knows for secrets any more (SPEC 2), so the
        name as its last poll showed it; ``***`` for a row no poll wrote since schema 6
        (what in it was a secret is not known: none of it is shown)."""
        return redact(self.masked_name) if self.masked_name is not None else MASK

    def gone_at(self, url: str) -> bool:
        """Whether ``url`` answered 410 Gone: not polled until `forget` (or `check
        --feed`); a feed given another url is polled as a new one would be."""
        return self.gone and self.url == url

    def retry_after_at(self, url: str) -> datetime | None:
        """When ``url``'s server said polls may resume (Retry-After), if it said so: the
        server of a url the feed no longer has does not hold back the new one."""
        return self.retry_after_until if self.url == url else None

    def errors_at(self, url: str) -> int:
        """Consecutive failed polls of ``url``: a new url starts without the old one's
        backoff."""
        return self.errors if self.url == url else 0


@dataclass(frozen=True)
class PollCommit:
    """Everything one successful poll changes, written in one transaction."""

    feed: str
    url: str
    now: datetime
    http_status: int
    etag: str | None
    last_modified: str | None
    body_hash: str | None
    title: str | None
    identity: IdentityState
    upserts: tuple[StoredEntry, ...] = ()  # new or changed entries (full row)
    touched: tuple[str, ...] = ()  # identities seen unchanged: last_seen = now
    rekeys: tuple[tuple[str, str], ...] = ()  # (old identity, new identity), applied first
    alerts: tuple[Alert, ...] = ()  # each queued for each of alert.sinks
    prune_before: datetime | None = None  # drop entries last seen before this
    # An alert of an id already recorded, made before this and none of its deliveries
    # pending (one the prune, store.prune_alerts, drops now: the global `retention`),
    # is dropped here and the alert queued anew: an entry back after `retention` alerts
    # again at its first poll, not only once an upkeep has run between. None: never.
    alerts_before: datetime | None = None
    next_poll: datetime | None = None
    redirected_to: str | None = None
    had_new_entry: bool = False  # sets last_new_entry = now
    stale_notified: bool | None = None  # None = leave as is
    baselined: bool = False  # what the poll took the feed to be (ForgottenMeanwhile)
    masked_name: str | None = None  # the name as shown (FeedRecord.masked_name); None: kept


class Matching(NamedTuple):
    """What ``Store.entries_matching`` read for one changed body."""

    has_rows: bool  # the feed has stored entries
    rows: dict[str, StoredEntry]  # at least those the body can match
    settled_ok: bool  # every settled identity is an entry of the feed's last body


DeliveryStatus = Literal["pending", "delivered", "dead"]
"""A delivery's state (the deliveries table's CHECK constraint says the same)."""


QUIET_SINCE_FAILED = (
    "last_new_entry = CASE WHEN last_success IS NULL"
    " THEN COALESCE(last_new_entry, ?) ELSE last_new_entry END"
)
"""A failed poll of a feed that never had a successful one: ``last_new_entry`` (what
``staleness`` counts "no new entry" from) becomes its first poll's time, so a feed added
broken is stale ``stale_after`` later (SQLite's form; PostgreSQL writes it inline)."""

INTERRUPTED = "interrupted: a stop came during the send"
"""What a delivery's last error ends with after a stop cancelled its send
(``release_deliveries``): after the error before it, which stays to be read."""

NOTE_INTERRUPTED = (
    "CASE WHEN last_error IS NULL THEN {p}"
    " WHEN last_error LIKE '{pct}' || {p} THEN last_error"
    " ELSE last_error || '; then ' || {p} END"
)
"""``release_deliveries``' new ``last_error``, noted once (``{p}``: the placeholder,
given ``INTERRUPTED`` three times; ``{pct}``: a literal ``%`` in the driver's syntax)."""


def interrupted(last_error: str | None) -> bool:
    """Whether a delivery's last send was cut short by a stop (``INTERRUPTED``)."""
    return last_error is not None and last_error.endswith(INTERRUPTED)


@dataclass(frozen=True)
class Delivery:
    """One alert queued for one sink."""

    alert_id: str
    sink: str
    feed: str
    kind: str
    payload: Mapping[str, Any]
    thread_id: str | None
    created_at: datetime
    attempts: int = 0
    next_attempt: datetime | None = None
    status: DeliveryStatus = "pending"
    last_error: str | None = None
    delivered_at: datetime | None = None
    # The recipients still owed the alert (an email sink: some took it, the server
    # deferred or refused the others; schema 7): a retry or a redelivery goes to these
    # alone. None: all of the sink's.
    recipients_left: tuple[str, ...] | None = None


def alert_feed_name(feed: str, payload: Mapping[str, Any], *, in_config: bool) -> str:
    """An alert's ``feed`` as it may be shown (SPEC 2). The state keys it by the name
    with its ``${VAR}`` values expanded: while the feed is in the config (``in_config``)
    they are registered secrets, and ``redact`` masks them; once it has left, no process
    knows them, and the name is shown as the alert's payload gives it, each value masked
    when the alert was made (``***`` for a payload that gives none, or does not decode)."""
    if in_config:
        return redact(feed)
    try:
        given = payload.get("feed")
        name = given.get("name") if isinstance(given, Mapping) else None
    except ValueError:  # a stored payload that does not decode (StoredPayload)
        name = None
    return redact(name) if isinstance(name, str) else MASK


@dataclass(frozen=True)
class SinkCounts:
    pending: int = 0
    delivered: int = 0
    dead: int = 0


@dataclass(frozen=True)
class AlertRecord:
    """An alert as stored, for `explain`."""

    alert_id: str
    feed: str
    identity: str | None
    kind: str
    created_at: datetime
    payload: Mapping[str, Any]
    deliveries: tuple[Delivery, ...] = field(default_factory=tuple)
    # `duplicates = "skip"`: (sink, alert id, feed) of the other alerts of its key that
    # went to a sink first; this one was not sent there
    duplicate_of: tuple[tuple[str, str, str], ...] = ()
    thread_id: str | None = None  # the entry's `new` alert id (model.StoredEntry.new_alert_id)


@dataclass(frozen=True)
class AlertQuery:
    """Which alerts to read (`feedwatch alerts`, `explain`): of these feeds (all when
    empty), of one entry's ``identity``, created at ``since`` or later, with a delivery to
    ``sink`` / in ``status`` (both on one delivery when both are given); at most
    ``limit``, the filters applied first."""

    feeds: tuple[str, ...] = ()
    identity: str | None = None
    since: datetime | None = None
    sink: str | None = None
    status: DeliveryStatus | None = None
    limit: int = 20


# Several daemons may share one PostgreSQL state: a feed is polled, and a delivery sent, only
# under a lease in the database. A live daemon renews its leases every LEASE_RENEW seconds;
# a dead one's expire LEASE_SECONDS after its last renewal and the others take over.
LEASE_SECONDS = 20.0
LEASE_RENEW = 5.0

# Pending deliveries read at once by the dispatcher (their payloads are in memory together).
PENDING_PAGE = 1000


def new_owner() -> str:
    """A lease owner id unique to this process run: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class FeedClaim:
    """The answer to ``claim_feed``: granted, or why not and when to look again."""

    granted: bool
    next_poll: datetime | None = None  # the stored next poll (another instance polled it)
    held_until: datetime | None = None  # another instance's lease on it expires then
    gone: bool = False  # 410 Gone recorded (by any instance): stop scheduling it


class Store(Protocol):
    path: str

    # -- feeds and entries -------------------------------------------------
    def feed(self, name: str, *, counts: bool = False) -> FeedRecord | None:
        """``counts``: fill in ``entries`` (a count of the feed's stored entries, which
        grows with them: only what shows it asks; otherwise 0)."""
        ...

    def feeds(self, *, counts: bool = False) -> dict[str, FeedRecord]: ...

    def knows_feed(self, name: str) -> bool:
        """Whether the state holds a feed row or an alert of ``name``: a feed removed
        from the config keeps its alerts after ``drop_batches`` drops its row, and
        `alerts --feed`, `redeliver --feed` and `explain` still take its name."""
        ...

    def entries(self, feed: str) -> dict[str, StoredEntry]: ...

    def entries_matching(self, feed: str, need: StoredNeed) -> Matching:
        """Whether the feed has any stored entry, at least those ``need`` names
        (feedwatch.diff.stored_needed; more is allowed, fewer never), and whether every
        identity of ``need.settled`` is a stored entry of the feed's last body."""
        ...

    def batch(self, *, wait: bool = True) -> AbstractContextManager[None]:
        """Writes inside may share one transaction; each stays all or nothing by itself.

        The batch's end makes them durable: a write is not done before it. A backend
        may give each write its own transaction instead (PostgreSQL does).
        ``wait=False`` (the group commit, on the event loop): a batch that cannot begin
        at once, the state locked by another process, raises ``StateBusy`` as it
        begins, nothing done, instead of waiting out the busy timeout.
        """
        ...

    def commit_poll(self, commit: PollCommit) -> list[str]:
        """Apply a poll; returns the ids of the alerts actually queued.

        An alert whose id is already recorded is skipped (an id once recorded
        never alerts again).
        """
        ...

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
        """A 304 or a byte-identical body: the entries of the last body were seen again
        (those that left the feed age, and retention drops them). ``masked_name``: the
        name as it shows (``FeedRecord.masked_name``; None keeps the stored one)."""
        ...

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
    ) -> None: ...

    def queue_notices(
        self,
        alerts: Iterable[Alert],
        *,
        stale_notified: bool | None = None,
        now: datetime | None = None,
    ) -> list[str]:
        """Queue feed-level notices (stale/recovered) outside a poll; returns ids queued."""
        ...

    def set_next_poll(self, feed: str, next_poll: datetime | None, *, was: Any = ...) -> None:
        """Store the feed's next poll; with ``was``, only if the stored one is still that
        (several instances: not over the next poll another's poll just committed)."""
        ...

    def pull_back_times(self, feed: str, now: datetime) -> None:
        """Store ``now`` for the feed's ``last_success`` and ``last_new_entry`` where
        they are later (written by a clock that was ahead: ``staleness.as_of``)."""
        ...

    def forget(self, feed: str) -> bool:
        """Drop a feed's entries, parse cache and HTTP state (its alerts and deliveries stay)."""
        ...

    def drop_batches(self, keep: Iterable[str], idle_before: datetime) -> Iterator[list[str]]:
        """Drop what the state holds of each feed not in ``keep`` (the config's) that was
        last polled before ``idle_before`` (``retention`` ago), or never: its entries and
        feed row, more than `forget` drops. Its alerts and deliveries stay: those pending
        are still sent, the others go as ``prune_batches`` says. In bounded transactions
        (a few thousand entries each), yielding the names each dropped."""
        ...

    def clear_gone(self, feed: str) -> None: ...

    # -- outbox --------------------------------------------------------------
    def pending(self, *, sink: str | None = None, due_at: datetime | None = None) -> list[Delivery]:
        """Pending deliveries, oldest alert first; with ``due_at``, only those due then."""
        ...

    def pending_sinks(self, *, due_at: datetime | None = None) -> list[str]:
        """The sinks with a pending delivery (with ``due_at``: one due then), by name."""
        ...

    def pending_pages(self, sink: str, *, page: int = PENDING_PAGE) -> Iterator[list[Delivery]]:
        """``sink``'s pending deliveries, oldest alert first, ``page`` at a time: the memory
        is a page's, however long the queue (a cold start queues one per entry). The order
        is fixed by the first page; one settled meanwhile (another instance) is left out."""
        ...

    def mark_delivered(self, sink: str, alert_ids: Iterable[str], now: datetime) -> None: ...

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
        """One more failed attempt. ``recipients_left`` (some recipients took it): the
        ones still owed it from now on (``Delivery.recipients_left``); None keeps them."""
        ...

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
        """Dead after a permanent failure (one more attempt), or given up without one
        (``attempted=False``: too old, its sink gone). ``recipients_left`` as for
        ``mark_retry``: `redeliver` sends to these alone."""
        ...

    def redeliver(self, now: datetime, *, sink: str | None = None, feed: str | None = None) -> int:
        """Dead deliveries back to pending, due now, attempts reset to 0 (each still owed
        to its ``recipients_left``)."""
        ...

    def shift_retries(self, seconds: float, now: datetime) -> int:
        """The wall clock was set back ``seconds`` (negative): the pending deliveries
        waiting past ``now`` wait as long as they were told to, not the step more. How
        many moved. A shared (PostgreSQL) state moves none: the other instances' clocks
        did not step."""
        ...

    def sink_counts(self) -> dict[str, SinkCounts]: ...

    def pending_counts(self) -> dict[str, int]:
        """Each sink's pending deliveries (``SinkCounts.pending``; sinks with none left
        out), in one grouped count over the pending ones only (an index range): cheap
        enough for every delivery run (feedwatch_outbox_pending)."""
        ...

    def alerts_for(
        self, feed: str, identity: str | None = None, limit: int = 50
    ) -> list[AlertRecord]: ...

    def recent_alerts(self, query: AlertQuery) -> list[AlertRecord]:
        """The alerts ``query`` selects, newest first, with their deliveries."""
        ...

    def recorded_alerts(
        self, alert_ids: Sequence[str], expired: datetime | None = None
    ) -> set[str]:
        """Which of these alert ids the state has recorded (a commit would not queue
        them again): what `check --dry-run` leaves out. With ``expired`` (a poll's
        ``PollCommit.alerts_before``), not those its commit drops and queues again."""
        ...

    def duplicate_claims(
        self, keys: Sequence[str], expired: datetime | None = None
    ) -> dict[str, dict[str, str]]:
        """``duplicates = "skip"``: for each of these keys that an alert went somewhere
        under, the sinks it went to and the alert that took each. With ``expired`` (a
        poll's ``PollCommit.alerts_before``), not the claims its commit drops."""
        ...

    def prune_batches(self, before: datetime) -> Iterator[int]:
        """Forget delivered and dead deliveries (and their alerts) created before
        ``before``, in bounded transactions (a few thousand alerts each, oldest first),
        yielding the deliveries each dropped. Stopped early, what it did is kept, and the
        next prune goes on."""
        ...

    # -- leases (several instances on one state) ------------------------------
    def claim_feed(self, feed: str, url: str, owner: str, now: datetime, lease: float) -> FeedClaim:
        """Take the lease on ``feed`` for ``lease`` seconds, in one transaction, when no other
        owner holds a live lease on it and it is due: never polled (or not at ``url``), its
        stored ``next_poll`` and Retry-After passed, not gone. A feed row is created if
        needed. Not granted: the stored ``next_poll`` / the holder's expiry say when to look
        again. (SQLite: one daemon per file, always granted.)"""
        ...

    def release_feed(self, feed: str, owner: str) -> None:
        """Drop ``owner``'s lease on ``feed`` (after its poll was recorded)."""
        ...

    def claim_deliveries(
        self, sink: str, alert_ids: Iterable[str], owner: str, now: datetime, lease: float
    ) -> list[str]:
        """Claim these pending deliveries of ``sink`` for ``lease`` seconds; returns the ids
        granted: still pending and not claimed by another owner whose claim is live.
        ``mark_delivered``/``mark_retry``/``mark_dead`` end a claim. (SQLite: all of them.)"""
        ...

    def release_deliveries(
        self, sink: str, alert_ids: Iterable[str], owner: str, *, interrupted: bool = False
    ) -> None:
        """Give back claims not settled by a mark: pending again now. ``interrupted``: a
        send was under way (a stop cancelled it), noted as the deliveries' last error
        (``INTERRUPTED``): what it wrote may have been cut short, which a sink writing a
        stream must know before it writes them again."""
        ...

    def renew_leases(self, owner: str, now: datetime, lease: float) -> None:
        """Extend every live lease and claim ``owner`` holds to ``now + lease``."""
        ...

    def release_leases(self, owner: str) -> None:
        """Drop every lease and claim of ``owner`` (a graceful stop)."""
        ...

    def stopping(self, grace: float) -> None:
        """The process stops: a call the database is slow to answer goes on at most
        ``grace`` seconds more (PostgreSQL; nothing to do for SQLite, whose calls are
        local). Safe to call from a signal handler."""
        ...

    def checkpoint(self) -> None:
        """Move what a write-ahead log holds into the database now, waiting for no one
        (SQLite; nothing elsewhere): a process done writing does it for the one that
        closes the state last."""
        ...

    def close(self) -> None: ...
