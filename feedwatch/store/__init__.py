"""State storage: ``open_store`` picks the backend from the ``state`` setting.

A path (``~`` expanded) is an SQLite file; ``postgresql://`` is a PostgreSQL
database that several instances may share (``feedwatch.store.postgres``, imported
only then: psycopg is the optional extra ``feedwatch[postgres]``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from feedwatch.redact import redact
from feedwatch.store.base import (
    AlertQuery,
    AlertRecord,
    Delivery,
    FeedRecord,
    ForgottenMeanwhile,
    PollCommit,
    SinkCounts,
    StateBusy,
    StateError,
    StateLocked,
    Store,
)
from feedwatch.store.lock import LockHandle, acquire_lock
from feedwatch.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from feedwatch.model import Config

__all__ = [
    "AlertQuery",
    "AlertRecord",
    "Delivery",
    "FeedRecord",
    "ForgottenMeanwhile",
    "LockHandle",
    "PollCommit",
    "SinkCounts",
    "SqliteStore",
    "StateBusy",
    "StateError",
    "StateLocked",
    "Store",
    "acquire_lock",
    "drop_removed_feeds",
    "dropping_removed_feeds",
    "is_postgres_url",
    "no_state_at",
    "nothing_polled",
    "open_store",
    "prune_alerts",
    "pruning_alerts",
]

log = structlog.get_logger("feedwatch.store")

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_postgres_url(state: str) -> bool:
    """Here, not in store.postgres: asking must not import psycopg (70 ms of every start)."""
    return state.lower().startswith(("postgresql://", "postgres://"))


def no_state_at(state: str) -> str:
    """Saying there is no state at ``state``: a PostgreSQL URL names a database
    (without feedwatch's schema yet), not a file, and its password never shows."""
    if is_postgres_url(state):
        return f"no feedwatch state in the PostgreSQL database {redact(state)}"
    return f"no state file at {redact(state)}"


def nothing_polled(state: str) -> str:
    """The note of `status` and `redeliver` run with no state at ``state``: most often
    not a first run but another config (or ``--state``) than the service's."""
    return f"note: {no_state_at(state)}: nothing polled yet with this config (is this the service's config?)"


def open_store(state: str, *, create: bool = True, upgrade: bool = True) -> Store | None:
    """Open the state at ``state``; with ``create=False`` a missing file gives None
    and nothing is created (``status`` before the first run).

    ``upgrade=False`` for every command but `run` and `check`: a state with an older
    schema is refused (``base.older_schema``: what upgrades it) instead of migrated, and
    opening writes nothing (the legacy parse cache, SQLite's journal mode). Those that
    only read promise not to write; `forget` and `redeliver` write beside a running
    daemon, without the lock. Either way an older release may still be running on the
    state, and a migrated schema is one it refuses. `run` and `check` migrate it (on
    SQLite holding the state's lock, as `migrate-state` does its source: so never
    under a running daemon)."""
    if not state or not state.strip():
        raise StateError("the state location is empty: set `state` to a file path")
    if m := _URL.match(state):
        # never echo the URL: it may hold a password (nor urlsplit it: a "[" in one
        # makes that raise, quoting a piece of it)
        scheme = m.group(0)[:-3].lower()
        if scheme in ("postgresql", "postgres"):
            from feedwatch.store.postgres import PostgresStore  # psycopg: an optional extra

            return PostgresStore.open(state, create=create, upgrade=upgrade)
        raise StateError(f"state location with scheme {scheme!r} is not supported: use a file path")
    path = os.path.expanduser(state)
    if not create and not os.path.exists(path):
        return None
    return SqliteStore(path, create=create, upgrade=upgrade)


def drop_removed_feeds(store: Store, config: Config, now: datetime) -> int:
    """SPEC 6: a feed removed from the config keeps its state until ``retention`` (the
    global one: it has no settings left) after its last poll; then its entries and feed
    row go (``Store.drop_batches``), its pending alerts still to be sent. A feed
    added back later starts as a new one. How many went."""
    return sum(len(names) for names in dropping_removed_feeds(store, config, now))


def dropping_removed_feeds(
    store: Store, config: Config, now: datetime
) -> Generator[list[str], None, None]:
    """``drop_removed_feeds`` one bounded transaction at a time (``Store.drop_batches``):
    the daemon lets its event loop run between them. The names each dropped."""
    before = now - timedelta(seconds=config.defaults.retention)
    n = 0
    try:
        for names in store.drop_batches([f.name for f in config.feeds], before):
            n += len(names)
            yield names
    finally:
        if n:  # (not named: a removed feed's name may hold a secret no longer masked)
            log.info("state.removed_feeds_dropped", feeds=n)


def prune_alerts(store: Store, config: Config, now: datetime) -> int:
    """SPEC: ``retention`` (the global one) forgets delivered or dead alerts older than
    it: their deliveries, then each alert left with none (one still pending is kept until
    it is sent or given up). With an alert goes its id, which kept an entry forgotten by
    its feed's retention and back unchanged (its `new` alert's id is the first one's)
    from alerting again. The daemon's hourly upkeep and every `check` run it. How many
    deliveries went."""
    return sum(pruning_alerts(store, config, now))


def pruning_alerts(store: Store, config: Config, now: datetime) -> Generator[int, None, None]:
    """``prune_alerts`` one bounded transaction at a time (``Store.prune_batches``:
    PRUNE_BATCH alerts each): the daemon lets its event loop run between them, so polls
    and deliveries go on through a prune of millions of alerts (``retention`` lowered,
    a long stop). The deliveries each dropped."""
    n = 0
    try:
        for dropped in store.prune_batches(now - timedelta(seconds=config.defaults.retention)):
            n += dropped
            yield dropped
    finally:
        if n:
            log.info("state.pruned", deliveries=n)
