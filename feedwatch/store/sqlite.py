"""The SQLite state backend (the default).

One file, WAL mode, ``synchronous=NORMAL``: a process crash (``kill -9``)
loses no committed transaction, and ``status`` can read while the daemon
writes. Every public method is one transaction; ``commit_poll`` writes a
poll's entry changes, its alerts and their deliveries together
(SPEC section 6, "Nothing lost").

Times are stored as integer microseconds since the Unix epoch (UTC), so a
datetime comes back exactly as it went in, always as an aware UTC datetime.

The schema version lives in ``PRAGMA user_version``; ``MIGRATIONS`` is the
ordered list of forward steps (index 0 builds version 1). Only an opening with
``upgrade`` (the daemon, ``check`` and ``migrate-state``, each holding the state's
lock) migrates; the others refuse an older file (``base.older_schema``) and write
nothing as they open. Before migrating an existing file, a copy is written to ``<file>.bak-v<old>`` (under a temporary name,
renamed once whole: a failed copy leaves nothing, and stops the migration). A new file is built under a
temporary name and linked into place once its schema is written, so an empty state
file is a truncated one, never a new one. A file from a newer
feedwatch, a corrupt file or someone else's database is refused with a
message that says what to do: feedwatch never resets state by itself.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import tempfile
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

import structlog

from feedwatch.model import Alert
from feedwatch.payload import stored_text
from feedwatch.store.base import (
    INTERRUPTED,
    NOTE_INTERRUPTED,
    PENDING_PAGE,
    QUIET_SINCE_FAILED,
    Delivery,
    FeedClaim,
    PollCommit,
    StateBusy,
    StateError,
    older_schema,
)
from feedwatch.store.lock import make_state_directory
from feedwatch.store.rows import (
    DELIVERY_COLS,
    SharedWrites,
    kept_alert,
    link_key,
    recipients_to_db,
)
from feedwatch.store.seen import seen_step, touch_cut

log = structlog.get_logger("feedwatch.store")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
BUSY_TIMEOUT_MS = 10_000
# How long the BEGIN of a ``batch(wait=False)`` (the group commit, on the event loop)
# waits for the write lock held elsewhere before it gives up (``StateBusy``): the loop
# runs between tries (feedwatch.store.group), up to BUSY_TIMEOUT_MS in all.
BEGIN_WAIT_MS = 20
# A checkpoint copies the WAL into the file and syncs it: every 1,000 pages (SQLite's
# default) it was ~0.3 ms of each changed poll. 10,000 pages (40 MB of WAL at most)
# keeps that off most rounds; `check` pays it once, when it closes the file.
WAL_CHECKPOINT_PAGES = 10_000
# quick_check reads every page: worth it on open only while that is cheap (16 MiB:
# ~15 ms; a bigger state relies on SQLite reporting a bad page when it reads one).
QUICK_CHECK_MAX_BYTES = 16 * 1024 * 1024

_V1 = (
    """CREATE TABLE feeds (
        name TEXT PRIMARY KEY,
        url TEXT,
        title TEXT,
        etag TEXT,
        last_modified TEXT,
        body_hash TEXT,
        id_policy TEXT NOT NULL DEFAULT 'guid',
        id_candidate TEXT,
        baselined INTEGER NOT NULL DEFAULT 0,
        last_poll INTEGER,
        last_success INTEGER,
        http_status INTEGER,
        errors INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        next_poll INTEGER,
        retry_after_until INTEGER,
        gone INTEGER NOT NULL DEFAULT 0,
        redirected_to TEXT,
        last_new_entry INTEGER,
        stale_notified INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE entries (
        feed TEXT NOT NULL REFERENCES feeds(name) ON DELETE CASCADE,
        identity TEXT NOT NULL,
        entry_id TEXT,
        link TEXT,
        title TEXT NOT NULL,
        summary TEXT NOT NULL,
        content TEXT NOT NULL,
        published INTEGER,
        updated INTEGER,
        fingerprint TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        new_alert_id TEXT NOT NULL,
        PRIMARY KEY (feed, identity)
    )""",
    # seq: insertion order, the tie-break for "oldest alert first".
    """CREATE TABLE alerts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        alert_id TEXT NOT NULL UNIQUE,
        feed TEXT NOT NULL,
        identity TEXT,
        kind TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        payload TEXT NOT NULL,
        thread_id TEXT
    )""",
    "CREATE INDEX alerts_feed ON alerts (feed, identity, created_at)",
    "CREATE INDEX alerts_created ON alerts (created_at)",
    """CREATE TABLE deliveries (
        alert_id TEXT NOT NULL REFERENCES alerts(alert_id) ON DELETE CASCADE,
        sink TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'delivered', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt INTEGER,
        last_error TEXT,
        delivered_at INTEGER,
        PRIMARY KEY (alert_id, sink)
    )""",
    "CREATE INDEX deliveries_status ON deliveries (status, sink, next_attempt)",
)

# Version 2: feedwatch.partial's cache of parsed items, one row per feed (only a cache:
# a missing or stale row costs a full parse). IF NOT EXISTS: re-running the step on a
# file whose version number was set back is harmless.
_V2 = (
    """CREATE TABLE IF NOT EXISTS parse_cache (
        feed TEXT PRIMARY KEY REFERENCES feeds(name) ON DELETE CASCADE,
        data BLOB NOT NULL
    )""",
)


# A changed poll's cost no longer grows with the entries a feed keeps after they left
# it (up to `retention`): each entry's normalised link (rows.link_key), so the
# comparison reads only the stored entries whose identity or link is the body's
# (feedwatch.diff.stored_needed); rows from before are filled in here. And the
# retention DELETE finds the old rows through an index instead of reading every row.
_V3 = (
    "ALTER TABLE entries ADD COLUMN link_key TEXT",
    "UPDATE entries SET link_key = feedwatch_link_key(link)",
    "CREATE INDEX entries_link_key ON entries (feed, link_key)",
    "CREATE INDEX entries_seen ON entries (feed, last_seen)",
)


# Which stored entries are in the feed's last body (``in_body``): the ones a 304 sees
# again. A 304 used to move every entry's last_seen, those that had left the feed too,
# so while a feed answered 304s nothing it had dropped ever reached `retention`: its
# history grew without end, and each hourly touch rewrote all of it. Rows from before
# start as in the body, as they were treated; a feed's next changed poll sorts them.
_V4 = (
    "ALTER TABLE entries ADD COLUMN in_body INTEGER NOT NULL DEFAULT 1",
    "CREATE INDEX entries_body ON entries (feed, identity) WHERE in_body = 1",
)


# `duplicates = "skip"`: which sink already got an alert for a link (feedwatch.identity.
# duplicate_key). A claim is taken with the alert, in its transaction; a second alert
# with the same key gets no delivery to that sink. Claims go with their alert.
_V5 = (
    """CREATE TABLE IF NOT EXISTS duplicate_claims (
        key TEXT NOT NULL,
        sink TEXT NOT NULL,
        alert_id TEXT NOT NULL REFERENCES alerts(alert_id) ON DELETE CASCADE,
        PRIMARY KEY (key, sink)
    )""",
    "CREATE INDEX IF NOT EXISTS duplicate_claims_alert ON duplicate_claims (alert_id)",
    "ALTER TABLE alerts ADD COLUMN duplicate_key TEXT",  # what `explain` looks up
)


# A feed's name as it shows (``masked_name``: each ``${VAR}`` value in it as ``***``),
# written by each poll: the state keys a feed by its expanded name, and once the feed
# has left the config no process knows those values for secrets any more (SPEC 2), yet
# `status`, `explain` and `forget` show it until `retention` drops it. Rows from before
# have none: a removed feed's shows as ``***`` (store.base.FeedRecord.shown_name).
_V6 = ("ALTER TABLE feeds ADD COLUMN masked_name TEXT",)


# The recipients a delivery is still owed to (``Delivery.recipients_left``, a JSON list):
# an email server that took some recipients and deferred (4xx) or refused (5xx) the
# others. Its retry went to every recipient again, those that had the alert too (one
# copy each hour for days). Rows from before have none: all of the sink's recipients.
_V7 = ("ALTER TABLE deliveries ADD COLUMN recipients_left TEXT",)


def _ts(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(
            f"naive datetime {dt.isoformat()} given to the state store: pass aware UTC"
        )
    return (dt - _EPOCH) // _US


def _now_ts(dt: datetime) -> int:
    value = _ts(dt)
    assert value is not None
    return value


def _dt(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + value * _US


def _req_dt(value: int) -> datetime:
    return _EPOCH + value * _US


def _detected_at(alert: Alert) -> int:
    """A notice's creation time: its payload's ``detected_at`` (SPEC section 5), else now."""
    stamp = alert.payload.get("detected_at")
    if isinstance(stamp, str):
        try:
            when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            pass
        else:
            return _now_ts(when)
    return _now_ts(datetime.now(timezone.utc))


def _remove(*paths: str) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _sync_directory(directory: str) -> None:
    """A name just given (a rename, a link) survives a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # not every file system syncs a directory
            os.fsync(fd)
    finally:
        os.close(fd)


class SqliteStore(SharedWrites):
    """The ``Store`` protocol on one SQLite file (see ``feedwatch.store.base``)."""

    # what feedwatch.store.rows (the reads both stores share) needs: times are
    # integer microseconds since the epoch
    P = "?"
    _to_db = staticmethod(_ts)
    _from_db = staticmethod(_dt)
    _from_db_req = staticmethod(_req_dt)

    def _reading(self) -> contextlib.AbstractContextManager[sqlite3.Cursor]:
        return self._read()

    def _snapshot(self) -> contextlib.AbstractContextManager[sqlite3.Cursor]:
        return self._read()  # a read transaction: its SELECTs all see one state

    def _writing(
        self, *, pipeline: bool = False
    ) -> contextlib.AbstractContextManager[sqlite3.Cursor]:
        return self._write()

    def _ids_in(self, column: str, ids: Sequence[str]) -> Iterator[tuple[str, Sequence[Any]]]:
        for start in range(0, len(ids), 500):  # SQLite caps a statement's parameters
            chunk = ids[start : start + 500]
            yield f"{column} IN ({','.join('?' * len(chunk))})", chunk

    # Forward migrations, in order: MIGRATIONS[n] takes version n to n + 1.
    MIGRATIONS: ClassVar[Sequence[Sequence[str]]] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7)

    def __init__(self, path: str | Path, *, create: bool = True, upgrade: bool = True) -> None:
        """``upgrade=False``: an older schema is refused, and opening writes nothing
        (``feedwatch.store.open_store``)."""
        self.path = os.path.expanduser(str(path))
        self.upgraded_from: int | None = None  # the schema version this opening migrated
        self._lock = threading.RLock()
        self._batching = False  # inside batch(): writes are savepoints (under _lock)
        file = Path(self.path)
        if not file.exists():
            if not create:
                raise StateError(f"state file {self.path} does not exist")
            make_state_directory(file.parent, self.path)
            self._create()
        elif file.is_dir():
            raise StateError(f"state path {self.path} is a directory, not a state file")
        elif file.stat().st_size == 0:
            # feedwatch never leaves an empty state (``_create``): this one was cut short.
            # Refused before SQLite sees it, which would take it as new (and drop a -wal).
            raise self._corrupt("the file is empty: truncated to 0 bytes")
        elif create:
            # Fail at start, not at the first poll. Without ``create`` (``status``)
            # reading a file we may not write is fine.
            why = self._unwritable()
            if why:
                raise StateError(f"state file {self.path} cannot be written: {why}")
        try:
            self._conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by self._lock
            )
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            self._open(upgrade)
            if upgrade:
                self._empty_legacy_cache()
        except BaseException:
            self._conn.close()
            raise

    # -- opening ---------------------------------------------------------------

    def _create(self) -> None:
        """A new state is built under a temporary name and linked into place with its
        schema written: so a crash never leaves an empty state file, and an empty one is
        a truncated state (refused), not a new one."""
        # through a symlink (dangling until now), the file is made where it points
        target = os.path.realpath(self.path)
        directory, name = os.path.split(target)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".new", dir=directory)
            os.close(fd)  # mode 0600, as the state's -wal and -shm will be
        except OSError as exc:
            raise StateError(
                f"cannot create state file {self.path}: {exc.strerror or exc}"
            ) from exc
        try:
            self._build(tmp)
            installed = self._install(tmp, target)
        finally:
            _remove(tmp, f"{tmp}-journal", f"{tmp}-wal", f"{tmp}-shm")
        if installed:
            log.info("state.created", path=self.path, version=len(self.MIGRATIONS))

    def _build(self, tmp: str) -> None:
        """Every schema step in one transaction, then WAL mode: the file is whole on disk."""
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.create_function("feedwatch_link_key", 1, link_key, deterministic=True)
            conn.execute("BEGIN IMMEDIATE")
            for step in self.MIGRATIONS:
                for statement in step:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {len(self.MIGRATIONS)}")
            conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            conn.close()

    def _install(self, tmp: str, target: str) -> bool:
        """Give the built file the state's name (``target``, the path with its symlinks
        resolved), never over a state made meanwhile; False if one was."""
        try:
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False  # another process made it first: that one is used
            except OSError:
                os.rename(tmp, target)  # a file system without hard links
            _sync_directory(os.path.dirname(tmp))
            return True
        except OSError as exc:
            raise StateError(
                f"cannot create state file {self.path}: {exc.strerror or exc}"
            ) from exc

    def _open(self, upgrade: bool) -> None:
        conn = self._conn
        target = len(self.MIGRATIONS)
        try:
            # Read before anything writes: a corrupt file must be left as it is.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    " AND name NOT LIKE 'sqlite_%'"
                )
            }
            if os.path.getsize(self.path) <= QUICK_CHECK_MAX_BYTES:
                problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
                if problems != ["ok"]:
                    raise self._corrupt("; ".join(problems))
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        if version > target:
            raise StateError(
                f"state file {self.path} has schema version {version}, newer than this"
                f" feedwatch understands ({target}): upgrade feedwatch to use it"
            )
        if version == 0 and tables:
            raise StateError(
                f"{self.path} is an SQLite database but not a feedwatch state file"
                f" (it has tables {', '.join(sorted(tables))}): point `state` elsewhere"
            )
        if version < target and not upgrade:
            kept = f"keeping a copy as {self.path}.bak-v{version}" if version else "it is empty"
            raise older_schema(f"state file {self.path}", version, target, kept)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            if upgrade:  # (a file restored from a .bak-v* copy is not in WAL mode)
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    log.warning("state.no_wal", path=self.path, journal_mode=mode)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        if version < target:
            self._migrate(version, target)

    def _empty_legacy_cache(self) -> None:
        """Schema 2 kept feedwatch.partial's cache in ``parse_cache``; it is in files now
        (feedwatch.parsecache). Its rows go once; the table stays for older versions."""
        with self._read() as cur:
            found = cur.execute("SELECT 1 FROM parse_cache LIMIT 1").fetchone()
        if found:
            with self._write() as cur:
                cur.execute("DELETE FROM parse_cache")

    def _migrate(self, version: int, target: int) -> None:
        if version > 0:
            self._back_up(version)
        # what a migration's SQL may call (a connection's functions are its own)
        self._conn.create_function("feedwatch_link_key", 1, link_key, deterministic=True)
        for step in range(version, target):
            with self._write() as cur:
                for statement in self.MIGRATIONS[step]:
                    cur.execute(statement)
                cur.execute(f"PRAGMA user_version = {step + 1}")
        self.upgraded_from = version or None
        if target > version:  # one line for the file, not one per schema step
            log.info(
                "state.created" if version == 0 else "state.migrated",
                path=self.path,
                version=target,
                **({"from_version": version} if version else {}),
            )

    def _back_up(self, version: int) -> None:
        """Copy the file to ``<file>.bak-v<version>`` before migrating it. The copy is
        written under a temporary name and renamed once whole: one cut short (a full
        disk) left an empty backup, the file a corrupt state's message says to restore."""
        backup = f"{self.path}.bak-v{version}"
        directory, name = os.path.split(os.path.abspath(backup))
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".new", dir=directory)
            os.close(fd)  # mode 0600: the copy holds what the state holds
            dest = sqlite3.connect(tmp)
            try:
                with self._lock:
                    self._conn.backup(dest)
            finally:
                dest.close()
            os.replace(tmp, backup)
            _sync_directory(directory)
        except (sqlite3.Error, OSError) as exc:
            if tmp is not None:
                _remove(tmp, f"{tmp}-journal")
            raise StateError(
                f"cannot write backup {backup} before migrating state file {self.path}"
                f" from schema version {version}: {exc}; the state file is left as it was"
            ) from exc
        log.info("state.backup", path=self.path, backup=backup, version=version)

    # -- errors and transactions ---------------------------------------------

    def _corrupt(self, reason: str) -> StateError:
        return StateError(
            f"state file {self.path} is corrupt ({reason}): restore it from your backup"
            f" (or a {self.path}.bak-v* copy, if there is one) or move it aside to start"
            " afresh (every feed is then baselined again); feedwatch never resets state"
            " by itself"
        )

    def _error(self, exc: sqlite3.Error) -> Exception:
        """Turn an SQLite failure into a StateError that names the file; bugs stay bugs."""
        if not (type(exc) is sqlite3.DatabaseError or isinstance(exc, sqlite3.OperationalError)):
            return exc
        msg = str(exc)
        low = msg.lower()
        if "not a database" in low or "malformed" in low or "corrupt" in low:
            return self._corrupt(msg)
        if "unable to open" in low:
            unreadable = self._unreadable()
            if unreadable:
                return StateError(unreadable)
        if "readonly" in low or "read-only" in low or "unable to open" in low:
            why = self._unwritable()
            reason = f"{msg}: {why}" if why else msg
            return StateError(f"state file {self.path} cannot be written: {reason}")
        full = self._disk_full()
        if "full" in low or (full and ("i/o" in low or "unable to open" in low)):
            # (With WAL, even opening needs room for the -shm file: a full disk shows
            # up as "disk I/O error" there.)
            where = f" ({full})" if full else ""
            return StateError(
                f"state file {self.path} cannot be written: {msg}{where}: free some space"
                " and run again; the state is as it was after the last successful write"
            )
        if "i/o" in low:
            return StateError(
                f"state file {self.path}: {msg}: check the disk holding it (`dmesg`) and"
                " its free space; feedwatch never resets state by itself"
            )
        if "locked" in low or "busy" in low:
            return StateBusy(
                f"state file {self.path} is busy ({msg}): another process kept it locked"
                f" longer than {BUSY_TIMEOUT_MS // 1000}s"
            )
        return StateError(f"state file {self.path}: {msg}")

    def _disk_full(self) -> str | None:
        """Why the disk holding the file is full, or None when it has room left."""
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            st = os.statvfs(directory)
        except OSError:
            return None
        free = st.f_bavail * st.f_frsize
        if free >= 1024 * 1024 and st.f_favail != 0:
            return None
        return f"the file system holding {directory} is full: {free // 1024} KiB free"

    def _unreadable(self) -> str | None:
        """Why SQLite could not open the file even to read it, or None: a WAL-mode state
        is read only with its -shm file beside it (the ``mode=ro`` URI needs one too),
        made there by the first to open it. With none there (nothing has the state open:
        a daemon running on it keeps one) and a directory this user may not write (an
        admin reading the service's state), it cannot be read."""
        shm = self.path + "-shm"
        directory = os.path.dirname(os.path.abspath(self.path))
        if os.path.exists(shm) or os.access(directory, os.W_OK):
            return None
        return (
            f"state file {self.path} cannot be read: SQLite reads a WAL-mode state only with"
            f" {os.path.basename(shm)} beside it, and there is no {os.path.basename(shm)}"
            f" (nothing has the state open) while directory {directory} is not writable by"
            " this user to make one: run the command as a user who may write there (the"
            " service's, or root: `sudo feedwatch ...`), or while the daemon runs (it keeps"
            " that file there)"
        )

    def _unwritable(self) -> str | None:
        """The OS's reason the file (or its directory, for the WAL files) cannot be written."""
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CLOEXEC))
        except OSError as exc:
            return exc.strerror or str(exc)
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.access(directory, os.W_OK):
            return f"{os.strerror(errno.EACCES)} on directory {directory}"
        # SQLite makes the WAL files with the database file's mode: a read-only command
        # run while the file was read-only leaves read-only ones, which fail every write
        # after the file's mode is mended
        for suffix in ("-wal", "-shm"):
            try:
                os.close(os.open(self.path + suffix, os.O_RDWR | os.O_CLOEXEC))
            except FileNotFoundError:
                continue
            except OSError as exc:
                return (
                    f"{exc.strerror or exc} on {self.path}{suffix} (left by a command run"
                    " while the state file was read-only?): give it the state file's owner"
                    " and mode"
                )
        return None

    @contextlib.contextmanager
    def _transaction(self, begin: str, end: str, undo: tuple[str, ...]) -> Iterator[sqlite3.Cursor]:
        """``begin``, the body, ``end``; on any failure ``undo`` (while a transaction is
        open), and sqlite3's errors become the store's own (``_error``). Call with the
        lock held."""
        cur = self._conn.cursor()
        try:
            if begin:
                cur.execute(begin)
            yield cur
            if end:
                cur.execute(end)
        except BaseException as exc:
            if undo and self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    for statement in undo:
                        self._conn.execute(statement)
            if isinstance(exc, sqlite3.Error):
                mapped = self._error(exc)
                if mapped is not exc:
                    raise mapped from exc
            raise
        finally:
            cur.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction: all of it commits, or none of it.

        Inside ``batch()`` it is a savepoint of the batch's transaction: still all or
        nothing on its own, and made durable by the batch's one COMMIT.
        """
        with self._lock:
            if self._batching:
                tx = self._transaction("SAVEPOINT w", "RELEASE w", ("ROLLBACK TO w", "RELEASE w"))
            else:
                tx = self._transaction("BEGIN IMMEDIATE", "COMMIT", ("ROLLBACK",))
            with tx as cur:
                yield cur

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Cursor]:
        """One read transaction: several SELECTs see the same snapshot (inside ``batch()``,
        the batch's)."""
        with self._lock:
            if self._batching:
                tx = self._transaction("", "", ())
            else:
                tx = self._transaction("BEGIN", "COMMIT", ("ROLLBACK",))
            with tx as cur:
                yield cur

    @contextlib.contextmanager
    def batch(self, *, wait: bool = True) -> Iterator[None]:
        """Writes inside share one transaction, each still all-or-nothing (a savepoint).

        Why: a COMMIT costs more than a poll's own writes (the WAL frames of every page
        touched, and a checkpoint now and then); polls that finish together pay it once
        (feedwatch.store.group). If the COMMIT fails, none of the batch is kept.

        ``wait=False``: while another process holds the write lock, the BEGIN gives up
        after BEGIN_WAIT_MS instead of the busy timeout, with ``StateBusy`` and nothing
        done: the group commit tries again later, its event loop running meanwhile.
        """
        with self._lock:
            if self._batching:
                yield
                return
            if not wait:
                self._begin_soon()
            begin = "BEGIN IMMEDIATE" if wait else ""  # (else begun just now)
            with self._transaction(begin, "", ("ROLLBACK",)) as cur:
                self._batching = True
                try:
                    yield
                finally:
                    self._batching = False
                cur.execute("COMMIT")

    def _begin_soon(self) -> None:
        """BEGIN IMMEDIATE waiting at most BEGIN_WAIT_MS for the write lock (the
        statements after it, the COMMIT included, keep the full busy timeout)."""
        conn = self._conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {BEGIN_WAIT_MS}")
            try:
                conn.execute("BEGIN IMMEDIATE")
            finally:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            mapped = self._error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    # -- leases: one daemon per file (the lock), so every claim is granted -----

    def claim_feed(self, feed: str, url: str, owner: str, now: datetime, lease: float) -> FeedClaim:
        return FeedClaim(granted=True)

    def release_feed(self, feed: str, owner: str) -> None:
        pass

    def claim_deliveries(
        self, sink: str, alert_ids: Iterable[str], owner: str, now: datetime, lease: float
    ) -> list[str]:
        return list(alert_ids)

    def release_deliveries(
        self, sink: str, alert_ids: Iterable[str], owner: str, *, interrupted: bool = False
    ) -> None:
        if not interrupted:
            return  # one instance: no claims to give back
        with self._write() as cur:
            cur.executemany(
                f"UPDATE deliveries SET last_error = {NOTE_INTERRUPTED.format(p='?', pct='%')}"
                " WHERE alert_id = ? AND sink = ? AND status = 'pending'",
                [(INTERRUPTED,) * 3 + (alert_id, sink) for alert_id in alert_ids],
            )

    def renew_leases(self, owner: str, now: datetime, lease: float) -> None:
        pass

    def release_leases(self, owner: str) -> None:
        pass

    def stopping(self, grace: float) -> None:
        pass  # a call waits for a local file only (its lock: busy_timeout)

    def checkpoint(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):  # best effort: close does it anyway
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- feeds and entries ---------------------------------------------------

    @staticmethod
    def _ensure_feed(cur: sqlite3.Cursor, feed: str, url: str | None) -> None:
        cur.execute(
            "INSERT INTO feeds (name, url) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            (feed, url),
        )

    @staticmethod
    def _queue(
        cur: sqlite3.Cursor, alerts: Iterable[Alert], at: int | None, expired: int | None = None
    ) -> list[str]:
        """Record alerts not yet known, each with a pending delivery per sink (less the
        sinks an alert of the same ``duplicate_key`` went to); the ids of those that
        go somewhere (or were routed nowhere).

        ``at`` is their creation time; None: each alert's own ``detected_at``.
        ``expired`` (``PollCommit.alerts_before``): an alert of the same id made before
        it, with no delivery pending, is one the prune drops: it goes first (its
        deliveries and claims with it, ON DELETE CASCADE), and the alert is new again.
        """
        queued: list[str] = []
        for alert in alerts:
            now = at if at is not None else _detected_at(alert)
            payload = stored_text(alert.payload)  # the bytes the sinks send (feedwatch.payload)
            if expired is not None:  # the prune's condition (rows.prune_batches)
                # an alert of this id, or one holding this story's duplicate claims
                # (the story counts as sent while that alert is kept), the prune would
                # drop now: it goes first, its claims with it
                cur.execute(
                    "DELETE FROM alerts WHERE (alert_id = ? OR alert_id IN (SELECT alert_id"
                    f" FROM duplicate_claims WHERE key = ?)) AND NOT {kept_alert('?')}",
                    (alert.id, alert.duplicate_key, expired),
                )
            cur.execute(
                "INSERT OR IGNORE INTO alerts"
                " (alert_id, feed, identity, kind, created_at, payload, thread_id, duplicate_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    alert.id,
                    alert.feed,
                    alert.identity,
                    alert.kind,
                    now,
                    payload,
                    alert.thread_id,
                    alert.duplicate_key,
                ),
            )
            if cur.rowcount != 1:
                continue  # an id once recorded never alerts again
            sinks = list(dict.fromkeys(alert.sinks))
            if alert.duplicate_key is not None:
                claimed = []
                for sink in sinks:
                    cur.execute(
                        "INSERT OR IGNORE INTO duplicate_claims (key, sink, alert_id)"
                        " VALUES (?, ?, ?)",
                        (alert.duplicate_key, sink, alert.id),
                    )
                    if cur.rowcount == 1:
                        claimed.append(sink)
                if sinks and not claimed:
                    continue  # recorded (never alerts again), sent nowhere: a duplicate
                sinks = claimed
            queued.append(alert.id)
            cur.executemany(
                "INSERT OR IGNORE INTO deliveries (alert_id, sink, status, next_attempt)"
                " VALUES (?, ?, 'pending', ?)",
                [(alert.id, sink, now) for sink in sinks],
            )
        return queued

    @staticmethod
    def _touch_due(
        cur: sqlite3.Cursor, feed: str, now: datetime, prune_before: datetime | None
    ) -> bool:
        """Whether entries seen again move ``last_seen`` now (feedwatch.store.seen): on
        the feed's first success of each step. Rewriting every row of a changed feed
        was most of its COMMIT (every page of its entries went to the WAL)."""
        row = cur.execute("SELECT last_success FROM feeds WHERE name = ?", (feed,)).fetchone()
        cut = _now_ts(touch_cut(now, seen_step(now, prune_before)))
        return row is None or row[0] is None or row[0] < cut

    def commit_poll(self, commit: PollCommit) -> list[str]:
        now = _now_ts(commit.now)
        feed = commit.feed
        with self._write() as cur:
            self._void_if_forgotten(cur, feed, commit.baselined)
            self._ensure_feed(cur, feed, commit.url)
            for old, new in commit.rekeys:
                self._rekey(cur, feed, old, new, commit.prune_before)
            cur.executemany(
                "INSERT INTO entries (feed, identity, entry_id, link, title, summary, content,"
                " published, updated, fingerprint, first_seen, last_seen, new_alert_id,"
                " link_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (feed, identity) DO UPDATE SET entry_id = excluded.entry_id,"
                " link = excluded.link, title = excluded.title, summary = excluded.summary,"
                " content = excluded.content, published = excluded.published,"
                " updated = excluded.updated, fingerprint = excluded.fingerprint,"
                " first_seen = excluded.first_seen, last_seen = excluded.last_seen,"
                " new_alert_id = excluded.new_alert_id, link_key = excluded.link_key",
                [
                    (
                        feed,
                        e.identity,
                        e.entry_id,
                        e.link,
                        e.title,
                        e.summary,
                        e.content,
                        _ts(e.published),
                        _ts(e.updated),
                        e.fingerprint,
                        _ts(e.first_seen),
                        _ts(e.last_seen),
                        e.new_alert_id,
                        link_key(e.link),
                    )
                    for e in commit.upserts
                ],
            )
            if commit.touched and self._touch_due(cur, feed, commit.now, commit.prune_before):
                cur.executemany(
                    "UPDATE entries SET last_seen = ? WHERE feed = ? AND identity = ?",
                    [(now, feed, identity) for identity in commit.touched],
                )
            self._mark_body(cur, feed, {e.identity for e in commit.upserts}, commit.touched, now)
            queued = self._queue(cur, commit.alerts, now, _ts(commit.alerts_before))
            if commit.prune_before is not None:  # never an entry of the body just marked
                cur.execute(
                    "DELETE FROM entries WHERE feed = ? AND in_body = 0 AND last_seen < ?",
                    (feed, _ts(commit.prune_before)),
                )
            cur.execute(
                "UPDATE feeds SET url = ?, title = ?, etag = ?, last_modified = ?,"
                " body_hash = ?, id_policy = ?, id_candidate = ?, baselined = 1,"
                " last_poll = ?, last_success = ?, http_status = ?, errors = 0,"
                " last_error = NULL, next_poll = ?, retry_after_until = NULL, gone = 0,"
                " redirected_to = ?,"
                " last_new_entry = CASE WHEN ? THEN ? ELSE last_new_entry END,"
                " stale_notified = COALESCE(?, stale_notified),"
                " masked_name = COALESCE(?, masked_name)"
                " WHERE name = ?",
                (
                    commit.url,
                    commit.title,
                    commit.etag,
                    commit.last_modified,
                    commit.body_hash,
                    commit.identity.policy,
                    commit.identity.candidate,
                    now,
                    now,
                    commit.http_status,
                    _ts(commit.next_poll),
                    commit.redirected_to,
                    int(commit.had_new_entry),
                    now,
                    None if commit.stale_notified is None else int(commit.stale_notified),
                    commit.masked_name,
                    feed,
                ),
            )
        return queued

    def _mark_body(
        self, cur: Any, feed: str, upserted: set[str], touched: Iterable[str], now: int
    ) -> None:
        """Record which stored entries are in the body a poll just committed:
        ``in_body``, the entries a 304 sees again. Only the entries that left the body
        or came back are written (the others are read, through ``entries_body``).
        One that came back is seen ``now``, at this poll: not only at the next touch of
        the step, which left it "last seen" when it left (`explain`).

        An entry that leaves was last seen in the body of the feed's previous success
        (its ``last_success``, not yet this poll's): its ``last_seen``, kept only to
        the step (feedwatch.store.seen), moves up to that time, so retention forgets
        it ``retention`` after it was last in a body, not up to a step sooner."""
        body = upserted.union(touched)
        before = self._body_identities(cur, feed)
        for clause, values in self._ids_in("identity", sorted(before - body)):
            cur.execute(
                "UPDATE entries SET in_body = 0, last_seen = MAX(last_seen,"
                " IFNULL((SELECT last_success FROM feeds WHERE name = ?), last_seen))"
                f" WHERE feed = ? AND {clause}",
                (feed, feed, *values),
            )
        for clause, values in self._ids_in("identity", sorted(body - before)):
            cur.execute(
                f"UPDATE entries SET in_body = 1, last_seen = ? WHERE feed = ? AND {clause}",
                (now, feed, *values),
            )

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
        kept when none came.

        ``last_seen`` moves on the feed's first success of each ``seen_step`` (the
        subquery is evaluated once: other polls touch no entry row); entries that
        left the feed are not seen and age until retention drops them (an index
        search: feedwatch.store.seen). An entry of the last body is never dropped.
        """
        ts = _now_ts(now)
        step = seen_step(now, prune_before)
        with self._write() as cur:
            self._ensure_feed(cur, feed, url)
            cur.execute(
                "UPDATE entries SET last_seen = ? WHERE feed = ? AND in_body = 1 AND NOT EXISTS"
                " (SELECT 1 FROM feeds WHERE name = ? AND last_success >= ?)",
                (ts, feed, feed, _ts(touch_cut(now, step))),
            )
            if prune_before is not None:
                cur.execute(
                    "DELETE FROM entries WHERE feed = ? AND in_body = 0 AND last_seen < ?",
                    (feed, _ts(prune_before)),
                )
            cur.execute(
                "UPDATE feeds SET url = ?, etag = COALESCE(?, etag),"
                " last_modified = COALESCE(?, last_modified), last_poll = ?,"
                " last_success = ?, http_status = ?, errors = 0, last_error = NULL,"
                " next_poll = ?, retry_after_until = NULL, gone = 0, redirected_to = ?,"
                " masked_name = COALESCE(?, masked_name)"
                " WHERE name = ?",
                (
                    url,
                    etag,
                    last_modified,
                    ts,
                    ts,
                    http_status,
                    _ts(next_poll),
                    redirected_to,
                    masked_name,
                    feed,
                ),
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
        with self._write() as cur:
            self._ensure_feed(cur, feed, url)
            cur.execute(
                # (errors in a row at this url: another url's do not count)
                "UPDATE feeds SET url = ?, errors = CASE WHEN url = ? THEN errors + 1 ELSE 1 END,"
                " last_error = ?, http_status = ?, last_poll = ?, next_poll = ?,"
                f" retry_after_until = ?, gone = ?, redirected_to = ?, {QUIET_SINCE_FAILED},"
                " masked_name = COALESCE(?, masked_name)"
                " WHERE name = ?",
                (
                    url,
                    url,
                    error,
                    http_status,
                    ts,
                    _ts(next_poll),
                    _ts(retry_after_until),
                    int(gone),
                    redirected_to,
                    ts,
                    masked_name,
                    feed,
                ),
            )

    def clear_gone(self, feed: str) -> None:
        with self._write() as cur:
            cur.execute("UPDATE feeds SET gone = 0 WHERE name = ?", (feed,))

    # -- outbox ----------------------------------------------------------------

    def pending_pages(self, sink: str, *, page: int = PENDING_PAGE) -> Iterator[list[Delivery]]:
        # The queue's order as alert numbers (8 bytes each), then the rows a page at a time.
        with self._read() as cur:
            order = array(
                "q",
                (
                    r[0]
                    for r in cur.execute(
                        "SELECT a.seq FROM deliveries d JOIN alerts a ON a.alert_id = d.alert_id"
                        " WHERE d.status = 'pending' AND d.sink = ? ORDER BY a.created_at, a.seq",
                        (sink,),
                    )
                ),
            )
        for start in range(0, len(order), max(1, page)):
            chunk = order[start : start + max(1, page)]
            marks = ",".join("?" * len(chunk))
            with self._read() as cur:
                rows = cur.execute(
                    # CROSS JOIN: look up the alerts by number first (without it SQLite
                    # may walk every pending row of the sink once per number)
                    f"SELECT {DELIVERY_COLS}, a.seq FROM alerts a CROSS JOIN deliveries d"
                    " ON d.alert_id = a.alert_id AND d.sink = ?"
                    f" WHERE a.seq IN ({marks}) AND d.status = 'pending'",
                    [sink, *chunk],
                ).fetchall()
            rank = {seq: i for i, seq in enumerate(chunk)}
            rows.sort(key=lambda r: rank[r[-1]])
            yield [self._delivery(r) for r in rows]

    def mark_delivered(self, sink: str, alert_ids: Iterable[str], now: datetime) -> None:
        ts = _now_ts(now)
        with self._write() as cur:
            cur.executemany(
                "UPDATE deliveries SET status = 'delivered', delivered_at = ?, last_error = NULL,"
                " attempts = attempts + 1"
                " WHERE alert_id = ? AND sink = ? AND status != 'delivered'",
                [(ts, alert_id, sink) for alert_id in alert_ids],
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
        left = None if recipients_left is None else recipients_to_db(recipients_left)
        with self._write() as cur:
            cur.executemany(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_attempt = ?,"
                " recipients_left = COALESCE(?, recipients_left)"
                " WHERE alert_id = ? AND sink = ? AND status = 'pending'",
                [(error, nxt, left, alert_id, sink) for alert_id in alert_ids],
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
        left = None if recipients_left is None else recipients_to_db(recipients_left)
        with self._write() as cur:
            cur.executemany(
                "UPDATE deliveries SET status = 'dead', last_error = ?,"
                " attempts = attempts + ?, recipients_left = COALESCE(?, recipients_left)"
                " WHERE alert_id = ? AND sink = ? AND status = 'pending'",
                [(error, int(attempted), left, alert_id, sink) for alert_id in alert_ids],
            )

    def shift_retries(self, seconds: float, now: datetime) -> int:
        if seconds >= 0:
            return 0
        with self._write() as cur:
            return cur.execute(
                "UPDATE deliveries SET next_attempt = MAX(?, next_attempt + ?)"
                " WHERE status = 'pending' AND next_attempt > ?",
                (_ts(now), int(seconds * 1_000_000), _ts(now)),
            ).rowcount

    def redeliver(self, now: datetime, *, sink: str | None = None, feed: str | None = None) -> int:
        """Dead deliveries back to pending, due now, attempts reset to 0."""
        sql = "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt = ? WHERE status = 'dead'"
        args: list[Any] = [_ts(now)]
        if sink is not None:
            sql += " AND sink = ?"
            args.append(sink)
        if feed is not None:
            sql += " AND alert_id IN (SELECT alert_id FROM alerts WHERE feed = ?)"
            args.append(feed)
        with self._write() as cur:
            return cur.execute(sql, args).rowcount
