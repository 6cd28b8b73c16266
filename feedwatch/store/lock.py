"""One daemon per state file: an exclusive ``flock`` on ``<state>.lock``.

``flock`` locks die with the process (even on ``kill -9``), so a stale lock
file never blocks a restart; the pid inside is only for the error message. A lock
belongs to the open file, not the process: a forked child (a `check`'s body
workers) would keep it held after its parent was killed, so a child closes its
copy at the fork (``_drop_in_child``).
The daemon and a non-dry-run ``check`` take it; ``status`` and ``--dry-run``
do not (they only read). Only they, holding it, upgrade an older state's schema
(``open_store``'s ``upgrade``): never under an older release's daemon.
"""

from __future__ import annotations

import fcntl
import os
import weakref
from pathlib import Path
from types import TracebackType

from feedwatch.redact import redact
from feedwatch.store.base import StateError, StateLocked


class LockHandle:
    """A held lock; ``release()`` (or leaving the ``with`` block) lets it go."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _drop_in_child(ref))

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # the pid no longer names a holder
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> LockHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - best effort
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass


def _drop_in_child(ref: weakref.ref[LockHandle]) -> None:
    """In a forked child: close the lock's copy without letting the lock go (the parent
    holds it) or clearing the pid (the parent's)."""
    handle = ref()
    if handle is None or handle._fd is None:
        return
    fd, handle._fd = handle._fd, None
    try:
        os.close(fd)
    except OSError:
        pass


def lock_path(state_path: str | Path) -> Path:
    """Beside the state file itself: a symlink to it (or a path through a symlinked
    directory) names the same lock, as SQLite follows it to the same file."""
    return Path(os.path.realpath(os.path.expanduser(str(state_path))) + ".lock")


def make_state_directory(directory: Path, state: str) -> None:
    """Create the state's directory (and its parents). A file in the way is named: mkdir's
    own words ('File exists', 'Not a directory') read as if the lock or state file were
    the trouble."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            reason = f"{existing} is a file, not a directory"
        raise StateError(
            f"cannot create the state's directory {directory} for state {state}: {reason}"
        ) from exc


def acquire_lock(state_path: str | Path) -> LockHandle:
    """Take the state's lock without waiting, or raise ``StateLocked`` naming the holder's pid."""
    state = str(state_path)
    if "://" in state:
        raise StateError(
            f"{redact(state)!r} is not a state file: PostgreSQL instances coordinate"
            " through leases in the database; a file lock is only for SQLite"
        )
    path = lock_path(state)
    make_state_directory(path.parent, state)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(
            f"cannot open lock file {path} for state {state}: {exc.strerror or exc}"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        except OSError:
            holder = ""
        os.close(fd)
        pid = holder if holder.isdigit() else "unknown"
        raise StateLocked(
            f"state {state} is in use by another feedwatch process (pid {pid}: a `feedwatch run` daemon or a `check`); wait for it, or stop it"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise StateError(f"cannot lock {path} for state {state}: {exc.strerror or exc}") from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError:
        pass  # the pid is informative only; the flock is what counts
    return LockHandle(path, fd)
