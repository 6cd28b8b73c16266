"""Where the parse cache lives: one file per feed, read and written by the parse worker.

``feedwatch.partial`` keeps, per feed, the parsed items of the last body so the
next poll parses only the items whose bytes changed. That cache is a memo of a
pure function (an item's bytes in its context -> its snapshot), not state: any
copy of it, old or new, gives the same parse, and losing it costs one full
parse. So it stays out of the state database, where it was ~26 KB a feed read
and written by the main process in every changed poll, carried to the worker and
back, and copied into the database again at each WAL checkpoint. Here the worker
that parses reads the file and replaces it; the main process only names it.

Location (``directory``):

- SQLite state ``/path/state.db`` -> ``/path/state.db.parse-cache/`` (wherever the
  state can be written, so can its cache);
- PostgreSQL state -> ``$CACHE_DIRECTORY`` (systemd's ``CacheDirectory=``), else
  ``$XDG_CACHE_HOME/feedwatch``, else ``~/.cache/feedwatch``; in it
  ``parse-<digest>/``, the digest of the database's host, port, name and user
  (never its password), so two databases never share files.

Files are named by a digest of the feed's name, overwritten in place and never
synced: a file lost in a crash is a cache miss, a torn or damaged one fails its
CRC in ``feedwatch.partial`` and is a miss too. The directory is used only if it
is ours and no one else may write to it (``usable``): the CRC detects damage, not
a forgery. Nothing here raises: a cache that cannot be read or written is a miss.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from feedwatch import pgurl

__all__ = [
    "SUFFIX",
    "directory",
    "file_for",
    "prepare",
    "prune",
    "read",
    "remove",
    "usable",
    "write",
]

SUFFIX = ".parse-cache"


def directory(state: str, env: Mapping[str, str] = os.environ) -> str:
    """The cache directory for the state at ``state`` (a path or a PostgreSQL URL)."""
    # imported here: a parse worker imports this module for read/write only
    from feedwatch.store import is_postgres_url

    if not is_postgres_url(state):  # absolute: a worker must find it whatever its cwd
        return os.path.abspath(os.path.expanduser(state)) + SUFFIX
    base = env.get("CACHE_DIRECTORY", "").split(":")[0]
    if not os.path.isabs(base):
        xdg = env.get("XDG_CACHE_HOME", "")
        root = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(root, "feedwatch")
    # the password left out (urlsplit raises at a "[" in one: pgurl)
    head, userinfo, rest = pgurl.split(state)
    user = userinfo.partition(":")[0]
    try:
        u = urlsplit(f"{head}{user}@{rest}" if userinfo else state)
        port = u.port
    except ValueError:
        where = f"{user}@{rest}"
        return os.path.join(base, "parse-" + hashlib.sha256(where.encode()).hexdigest()[:16])
    where = f"{u.hostname or ''}:{port or ''}/{u.path.lstrip('/')}?{u.username or ''}"
    return os.path.join(base, "parse-" + hashlib.sha256(where.encode()).hexdigest()[:16])


def prepare(path: str) -> str | None:
    """Create the directory (mode 0700); None when it cannot be, or is not safe to use
    (the cache is then off)."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return None
    return path if usable(path) else None


def usable(path: str) -> bool:
    """An existing directory we own and may write, that no one else may write: a file
    planted in it would be read as parsed entries."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == os.geteuid()
        and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        and os.access(path, os.W_OK | os.X_OK)
    )


def file_for(cache_dir: str, feed: str) -> str:
    return os.path.join(cache_dir, hashlib.sha256(feed.encode("utf-8")).hexdigest()[:32])


def read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def write(path: str, data: bytes | None) -> None:
    """Overwrite the file with ``data`` in place; None or empty removes it.

    In place, not to a temporary name and renamed: on ext4 a rename over an existing
    file (like a truncation to zero) starts writing the new data out at once, ~0.1 ms
    a call against ~0.02 ms here. A reader that races the write, or a crash in the
    middle, sees a file that fails its CRC (``feedwatch.partial``): a cache miss."""
    if not data:
        remove(path)
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError:
        return
    try:
        view, at = memoryview(data), 0
        while at < len(view):
            at += os.pwrite(fd, view[at:], at)
        os.ftruncate(fd, len(view))
    except OSError:
        remove(path)
    finally:
        os.close(fd)


def remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def prune(cache_dir: str, feeds: Iterable[str]) -> int:
    """Remove the files of feeds not in ``feeds``; returns how many went."""
    keep = {os.path.basename(file_for(cache_dir, f)) for f in feeds}
    try:
        names = os.listdir(cache_dir)
    except OSError:
        return 0
    gone = 0
    for name in names:
        if name not in keep:
            try:
                os.unlink(os.path.join(cache_dir, name))
                gone += 1
            except OSError:
                pass
    return gone
