"""State storage: ``open_store`` picks the backend from the ``state`` setting.

A path (``~`` expanded) is an SQLite file; ``postgresql://`` is a PostgreSQL
database that several instances may share (``feedwatch.store.postgres``, imported
only then: psycopg is the optional extra ``feedwatch[postgres]``).
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from feedwatch.redact import redact
from feedwatch.store.base import (
    AlertQuery,
    AlertRecord,
    Delivery,
    FeedRecord,
    ForgottenMeanwhile,
    PollCommit,
    SinkCounts,
    StateError,
    StateLocked,
    Store,
)
from feedwatch.store.lock import LockHandle, acquire_lock
from feedwatch.store.sqlite import SqliteStore

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
    "StateError",
    "StateLocked",
    "Store",
    "acquire_lock",
    "is_postgres_url",
    "no_state_at",
    "open_store",
]

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


def open_store(state: str, *, create: bool = True) -> Store | None:
    """Open the state at ``state``; with ``create=False`` a missing file gives None
    and nothing is created (``status`` before the first run)."""
    if not state or not state.strip():
        raise StateError("the state location is empty: set `state` to a file path")
    if _URL.match(state):
        scheme = urlsplit(state).scheme.lower()  # never echo the URL: it may hold a password
        if scheme in ("postgresql", "postgres"):
            from feedwatch.store.postgres import PostgresStore  # psycopg: an optional extra

            return PostgresStore.open(state, create=create)
        raise StateError(f"state location with scheme {scheme!r} is not supported: use a file path")
    path = os.path.expanduser(state)
    if not create and not os.path.exists(path):
        return None
    return SqliteStore(path, create=create)
