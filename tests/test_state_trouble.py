"""State file trouble through the real commands: a clear error, exit 1, never a silent reset.

Each case starts from a real state file made by `feedwatch check` (a feed with entries
and delivered alerts), breaks it the way disks and people do, and runs `check`, `run`
and `status` as subprocesses. Each must exit 1 with a message naming the file and what
to do, leave the file byte for byte as it was, and write no alert; once the trouble is
gone, the next `check` carries on from the old state (nothing re-alerts).

The full disk is a real 1 MiB tmpfs (needs root, else skipped); read-only is the
immutable attribute (root) or file modes (others).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from feedwatch.store.sqlite import SqliteStore
from tests.feedserver import FeedServer, feed_server_fixture  # noqa: F401
from tests.test_hostile import DaemonProc, Run, daemons, fw, item, read_alerts, rss_doc, wait_for

__all__ = ["daemons"]  # the fixture, imported for pytest

pytestmark = pytest.mark.timeout(120)

COMMANDS = ("check", "run", "status")


class Setup:
    def __init__(self, tmp: Path, srv: FeedServer, state_dir: Path | None = None) -> None:
        self.tmp = tmp
        self.srv = srv
        self.state_dir = state_dir or tmp / "state"
        self.state = self.state_dir / "state.db"
        self.alerts_path = tmp / "alerts.jsonl"
        self.cfg = tmp / "feedwatch.toml"
        self.entries = [item(f"e{i}", f"Story {i}") for i in range(3)]
        srv.set("/a.xml", rss_doc(self.entries))
        self.cfg.write_text(
            f"""
[feedwatch]
state = "{self.state}"
log_format = "json"
first_poll = "alert"
interval = "1s"
jitter = "0s"
shutdown_timeout = "3s"

[sinks.log]
type = "jsonl"
path = "{self.alerts_path}"

[[feeds]]
name = "a"
url = "{srv.url("/a.xml")}"
"""
        )

    def run(self, *args: str, timeout: float = 30) -> Run:
        return fw(self.cfg, *args, timeout=timeout)

    def alerts(self) -> list[str]:
        return [a["entry"]["title"] for a in read_alerts(self.alerts_path)]

    def add_entry(self, n: int) -> None:
        self.entries.append(item(f"e{n}", f"Story {n}"))
        self.srv.set("/a.xml", rss_doc(self.entries))

    def files(self) -> dict[str, str]:
        """The state directory: name -> sha256 of the content."""
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.state_dir.iterdir())
            if p.is_file() and not p.name.endswith(".lock")
        }


@pytest.fixture
def setup(tmp_path: Path, feed_server: FeedServer) -> Setup:
    s = Setup(tmp_path, feed_server)
    r = s.run("check")
    assert r.returncode == 0, r.stderr
    assert s.alerts() == ["Story 0", "Story 1", "Story 2"]
    return s


def assert_refused(s: Setup, *needles: str, commands: tuple[str, ...] = COMMANDS) -> None:
    """Every command exits 1 naming the file and the needles, and changes nothing."""
    before = s.files()
    alerts = s.alerts()
    s.add_entry(99)  # something a poll would alert on, were it allowed to go on
    for cmd in commands:
        r = s.run(cmd, timeout=30)
        assert r.returncode == 1, (cmd, r.returncode, r.stderr[-2000:])
        message = r.stderr.strip().splitlines()[-1]
        assert str(s.state) in message, (cmd, message)
        for needle in needles:
            assert needle in message, (cmd, needle, message)
        assert "Traceback" not in r.stderr, r.stderr
        assert s.files() == before, f"{cmd} changed the state directory"
        assert s.alerts() == alerts, f"{cmd} alerted"
    s.entries.pop()
    s.srv.set("/a.xml", rss_doc(s.entries))


def assert_carries_on(s: Setup) -> None:
    """The old state is used as it was: a new entry alerts, the old ones do not."""
    s.add_entry(7)
    r = s.run("check")
    assert r.returncode == 0, r.stderr[-2000:]
    assert s.alerts()[-1:] == ["Story 7"]
    assert s.alerts().count("Story 0") == 1


# --------------------------------------------------------------------------
# Corrupt, truncated, foreign, newer
# --------------------------------------------------------------------------


def sql(path: Path, statement: str) -> list[tuple[object, ...]]:
    """One statement on the state file, the connection closed after (so no -wal is left)."""
    db = sqlite3.connect(path)
    try:
        with db:
            return db.execute(statement).fetchall()
    finally:
        db.close()


def _page_size(path: Path) -> int:
    return int(sql(path, "PRAGMA page_size")[0][0])


@pytest.mark.parametrize("damage", ["garbage", "truncated", "emptied", "bad-page", "zeroed-header"])
def test_corrupt_state_is_refused_and_left_alone(setup: Setup, damage: str) -> None:
    s = setup
    path = s.state
    data = path.read_bytes()
    size = _page_size(path)
    assert len(data) >= 4 * size
    if damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2 + 100])
    elif damage == "emptied":  # 0 bytes: it was taken as a new state, silently
        path.write_bytes(b"")
    elif damage == "bad-page":  # a b-tree page in the middle scribbled over
        path.write_bytes(data[: 2 * size] + os.urandom(size) + data[3 * size :])
    else:
        path.write_bytes(b"\0" * 100 + data[100:])
    damaged = path.read_bytes()
    assert_refused(s, "corrupt", "restore it from your backup", "move it aside")
    assert path.read_bytes() == damaged
    # the way out the message names: move it aside, and the next poll is a baseline
    path.rename(path.with_name("state.db.broken"))
    r = s.run("check")
    assert r.returncode == 0, r.stderr


def test_foreign_database_is_refused(setup: Setup) -> None:
    s = setup
    s.state.unlink()
    sql(s.state, "CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    assert_refused(s, "not a feedwatch state file", "point `state` elsewhere")


def test_state_from_a_newer_version_is_refused(setup: Setup) -> None:
    s = setup
    sql(s.state, "PRAGMA user_version = 99")
    assert_refused(s, "schema version 99", "newer than this feedwatch understands", "upgrade")
    sql(s.state, f"PRAGMA user_version = {len(SqliteStore.MIGRATIONS)}")  # what it was
    assert_carries_on(s)


# --------------------------------------------------------------------------
# A schema upgrade keeps a backup
# --------------------------------------------------------------------------

# A feedwatch whose schema has one more version: the same CLI, one more migration.
_NEXT_VERSION = textwrap.dedent(
    """
    import sys
    from feedwatch.cli import main
    from feedwatch.store.sqlite import SqliteStore

    SqliteStore.MIGRATIONS = (*SqliteStore.MIGRATIONS, ("ALTER TABLE feeds ADD COLUMN extra TEXT",))
    sys.exit(main(sys.argv[1:]))
    """
)


def _dump(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def test_schema_upgrade_keeps_a_backup_and_a_downgrade_is_refused(setup: Setup) -> None:
    s = setup
    old_dump = _dump(s.state)
    s.add_entry(5)
    r = subprocess.run(
        [sys.executable, "-c", _NEXT_VERSION, "-c", str(s.cfg), "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert s.alerts()[-1] == "Story 5"
    current = len(SqliteStore.MIGRATIONS)  # this feedwatch's schema version
    backup = s.state.with_name(f"state.db.bak-v{current}")
    assert backup.exists() and backup.stat().st_mode & 0o777 == 0o600
    assert _dump(backup) == old_dump  # the file as it was before the upgrade
    assert sql(s.state, "PRAGMA user_version") == [(current + 1,)]
    events = [json.loads(x) for x in r.stderr.splitlines() if x.startswith("{")]
    assert any(e["event"] == "state.backup" and e["backup"] == str(backup) for e in events)
    # this feedwatch cannot use the upgraded file: refused, and the backup is the way back
    assert_refused(s, f"schema version {current + 1}", "upgrade feedwatch")
    shutil.copy(backup, s.state)
    for suffix in ("-wal", "-shm"):
        s.state.with_name("state.db" + suffix).unlink(missing_ok=True)
    # the backup predates Story 5's alert: it is new again to this state (at least once)
    s.add_entry(6)
    r = s.run("check")
    assert r.returncode == 0, r.stderr
    assert s.alerts()[-2:] == ["Story 5", "Story 6"]
    assert s.alerts().count("Story 0") == 1


def _next_version(s: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    """``args`` run by the build with one more migration (a release after this one)."""
    return subprocess.run(
        [sys.executable, "-c", _NEXT_VERSION, "-c", str(s.cfg), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


# What only reads the state, and what writes beside a running daemon without its lock:
# none of them may upgrade the schema (an older release may still be running on it).
NOT_UPGRADING = (
    ("status",),
    ("status", "--json"),
    ("status", "--check"),
    ("explain", "a"),
    ("explain", "a", "--no-fetch"),
    ("alerts",),
    ("check", "--dry-run"),
    ("redeliver",),
    ("forget", "a"),
)


def assert_not_upgraded(s: Setup, r: subprocess.CompletedProcess[str], what: object) -> None:
    """Exit 1, one line naming the file, both schema versions and the way to upgrade."""
    current = len(SqliteStore.MIGRATIONS)  # the file's: this feedwatch wrote it
    assert r.returncode == 1, (what, r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr
    message = r.stderr.strip().splitlines()[-1]
    assert message == (
        f"feedwatch: state file {s.state} has schema version {current}, older than this"
        f" feedwatch's ({current + 1}): `feedwatch check`, or restarting `feedwatch run`,"
        f" upgrades it (keeping a copy as {s.state}.bak-v{current}); stop every older"
        " feedwatch instance using it first"
    ), (what, message)
    assert sql(s.state, "PRAGMA user_version") == [(current,)], what
    assert not list(s.state_dir.glob("*.bak-v*")), what


def test_an_older_state_is_upgraded_only_by_check_and_run(setup: Setup) -> None:
    """`status`, `explain`, `alerts` and `check --dry-run` never write the state, and
    `forget` and `redeliver` write it beside a running daemon: none of them upgrades an
    older schema (each used to, leaving a `.bak-v*` and a file the older release, maybe
    still running, refuses). They refuse it instead, naming what does upgrade it."""
    s = setup
    before = s.files()
    alerts = s.alerts()
    s.add_entry(5)
    for args in NOT_UPGRADING:
        assert_not_upgraded(s, _next_version(s, *args), args)
        assert s.files() == before, f"{args} changed the state directory"
    assert s.alerts() == alerts
    # the way the message names: `check` upgrades it, and everything reads it after
    r = _next_version(s, "check")
    assert r.returncode == 0, r.stderr[-2000:]
    current = len(SqliteStore.MIGRATIONS)
    assert sql(s.state, "PRAGMA user_version") == [(current + 1,)]
    assert s.state.with_name(f"state.db.bak-v{current}").exists()
    assert s.alerts()[-1:] == ["Story 5"]
    for args in NOT_UPGRADING:
        r = _next_version(s, *args)
        assert r.returncode == 0, (args, r.stderr[-2000:])


def test_the_newer_release_leaves_alone_the_state_an_older_daemon_runs_on(
    setup: Setup, daemons: list[DaemonProc]
) -> None:
    """`pip install -U` and a `feedwatch status` before restarting the service: the
    older daemon goes on with its state as it was, and can be rolled back to. Only once
    it is stopped does the newer `check` (or `run`) upgrade the file."""
    s = setup
    d = DaemonProc(s.cfg, log_dir=s.tmp)  # this build: the release before _NEXT_VERSION
    daemons.append(d)
    wait_for(lambda: d.has("daemon.started"), what="the older daemon's start")
    for args in NOT_UPGRADING:
        assert_not_upgraded(s, _next_version(s, *args), args)
    r = _next_version(s, "check")  # the lock: the daemon holds the state
    assert r.returncode == 1 and "in use by another feedwatch process" in r.stderr, r.stderr
    assert not list(s.state_dir.glob("*.bak-v*"))
    s.add_entry(5)  # the older daemon goes on, on the file as it knows it
    wait_for(lambda: s.alerts()[-1:] == ["Story 5"], what="the older daemon's alert")
    assert d.proc.poll() is None
    assert s.run("status").returncode == 0  # and its own commands still read it
    assert d.stop() == 0
    assert not d.has("feed.state_error"), d.text()[-2000:]
    r = _next_version(s, "check")
    assert r.returncode == 0, r.stderr[-2000:]
    current = len(SqliteStore.MIGRATIONS)
    assert sql(s.state, "PRAGMA user_version") == [(current + 1,)]
    assert s.alerts().count("Story 5") == 1


# --------------------------------------------------------------------------
# Read-only file or directory
# --------------------------------------------------------------------------


@pytest.fixture
def immutable() -> Iterator[Callable[[Path], None]]:
    """Makes a file or directory unwritable, even for root; undone at teardown."""
    done: list[Path] = []

    def make(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o555 if path.is_dir() else 0o444)
        elif subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("running as root and `chattr +i` does not work here")
        done.append(path)

    yield make
    for path in reversed(done):
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=False)
        path.chmod(0o700 if path.is_dir() else 0o600)


def test_read_only_state_file(setup: Setup, immutable: Callable[[Path], None]) -> None:
    s = setup
    immutable(s.state)
    assert_refused(s, "cannot be written", commands=("check", "run"))
    # status only reads: it works, and shows the state as it is
    r = s.run("status", "--json")
    assert r.returncode == 0, r.stderr
    (feed,) = json.loads(r.stdout)["feeds"]
    assert feed["state"] == "ok" and feed["entries"] == 3


def test_read_only_state_directory(setup: Setup, immutable: Callable[[Path], None]) -> None:
    s = setup
    immutable(s.state_dir)
    assert_refused(s, "cannot be written", "on directory", commands=("check", "run"))


def test_read_only_state_directory_is_read_or_says_why_not(
    setup: Setup, immutable: Callable[[Path], None]
) -> None:
    """An admin who may not write the service's state directory ran `status` on it: it
    said the state "cannot be written", which it never meant to do. SQLite cannot read
    a WAL-mode file without its -shm beside it, nor make one there: the commands that
    only read now say the state cannot be READ, and why. With a -shm there (a daemon
    has the file open) they read it."""
    s = setup
    shm = s.state.with_name(s.state.name + "-shm")
    assert not shm.exists()  # `check` closed the state: no -wal or -shm is left
    immutable(s.state_dir)
    before = s.files()
    for cmd in (("status",), ("status", "--json"), ("explain", "a"), ("alerts",)):
        r = s.run(*cmd)
        assert r.returncode == 1, (cmd, r.stderr[-2000:])
        assert "Traceback" not in r.stderr, r.stderr
        message = r.stderr.strip().splitlines()[-1]
        assert f"state file {s.state} cannot be read" in message, (cmd, message)
        assert f"{s.state_dir} is not writable" in message, message
        assert f"no {shm.name}" in message, message
        assert "cannot be written" not in message, message
    assert s.files() == before
    # a daemon running on it keeps its -wal and -shm there: then they read it
    subprocess.run(["chattr", "-i", str(s.state_dir)], capture_output=True)
    s.state_dir.chmod(0o700)
    db = sqlite3.connect(s.state)
    try:
        db.execute("SELECT count(*) FROM feeds").fetchall()
        assert shm.exists()
        immutable(s.state_dir)
        r = s.run("status", "--json")
        assert r.returncode == 0, r.stderr[-2000:]
        (feed,) = json.loads(r.stdout)["feeds"]
        assert feed["state"] == "ok" and feed["entries"] == 3
    finally:
        db.close()


@pytest.mark.parametrize("suffix", ["-shm", "-wal"])
def test_a_read_only_wal_file_left_behind_is_named(
    setup: Setup, immutable: Callable[[Path], None], suffix: str
) -> None:
    """`status` on a state file that was read-only leaves `-wal`/`-shm` files with its
    mode; once the file's mode was mended, `check` hung (no answer from the batch that
    could not begin) and `run` never polled, saying nothing of those files. The start
    now refuses, naming the file and what to do."""
    s = setup
    left = s.state.with_name(s.state.name + suffix)
    left.write_bytes(b"")
    immutable(left)
    assert_refused(
        s, f"on {left} (left by a command run", "owner and mode", commands=("check", "run")
    )
    r = s.run("status", "--json")  # reading still works
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("depth", ["directory", "its parent"])
def test_state_directory_cannot_be_created(
    tmp_path: Path, feed_server: FeedServer, depth: str
) -> None:
    """The message names the file in the way (mkdir's 'File exists' read as if the lock
    file were the trouble)."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    state_dir = blocker if depth == "directory" else blocker / "state"
    s = Setup(tmp_path, feed_server, state_dir=state_dir)
    for cmd in ("check", "run"):
        r = s.run(cmd)
        assert r.returncode == 1, r.stderr
        message = r.stderr.strip().splitlines()[-1]
        assert str(s.state) in message, message
        assert f"cannot create the state's directory {state_dir}" in message, message
        assert f"{blocker} is a file, not a directory" in message, message
    r = s.run("status")
    assert r.returncode == 0  # nothing to read yet: every feed is `new`
    assert blocker.read_text() == "a file where the state directory should be"


# --------------------------------------------------------------------------
# A full disk (a real, tiny tmpfs)
# --------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk is simulated with a tiny tmpfs: needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill the file system to the last byte."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def big_entries(s: Setup, first: int, n: int) -> None:
    s.entries += [
        item(f"e{i}", f"Story {i}", description="words " * 250) for i in range(first, first + n)
    ]
    s.srv.set("/a.xml", rss_doc(s.entries))


def test_full_disk_check_fails_clearly_and_loses_nothing(
    tmp_path: Path, feed_server: FeedServer, tiny_disk: Path
) -> None:
    s = Setup(tmp_path, feed_server, state_dir=tiny_disk / "state")
    r = s.run("check")
    assert r.returncode == 0, r.stderr
    filler = fill(tiny_disk)
    big_entries(s, 10, 40)  # ~120 KB of text to store (twice: entries, alerts): cannot fit
    for cmd in ("check", "status"):
        r = s.run(cmd)
        assert r.returncode == 1, (cmd, r.stderr[-2000:])
        assert str(s.state) in r.stderr and "full" in r.stderr, r.stderr[-2000:]
        assert "free some space" in r.stderr, r.stderr[-2000:]
    assert s.alerts() == ["Story 0", "Story 1", "Story 2"]  # no alert without its state
    filler.unlink()
    r = s.run("check")
    assert r.returncode == 0, r.stderr[-2000:]
    # every new entry alerts once, the old ones not again: nothing was reset or lost
    assert s.alerts() == [f"Story {i}" for i in (0, 1, 2, *range(10, 50))]
    assert sql(s.state, "PRAGMA integrity_check") == [("ok",)]


def test_full_disk_under_the_daemon_recovers_when_space_returns(
    tmp_path: Path, feed_server: FeedServer, tiny_disk: Path, daemons: list[DaemonProc]
) -> None:
    s = Setup(tmp_path, feed_server, state_dir=tiny_disk / "state")
    d = DaemonProc(s.cfg, log_dir=tmp_path)
    daemons.append(d)
    wait_for(lambda: len(s.alerts()) == 3, what="first alerts")
    # recorded as delivered before the disk fills (a send whose record the full disk
    # stops stays pending, and is sent again once there is room: SPEC's one repeat)
    wait_for(lambda: d.text().count('"alert.delivered"') == 3, what="the sends recorded")
    filler = fill(tiny_disk)
    big_entries(s, 10, 40)
    wait_for(
        lambda: str(s.state) in d.text() and "full" in d.text(),
        what="a logged error naming the state file",
    )
    time.sleep(1.5)  # a few more failing polls: the daemon keeps going
    assert d.proc.poll() is None, "the daemon exited on a full disk"
    assert s.alerts() == ["Story 0", "Story 1", "Story 2"]
    filler.unlink()
    wait_for(lambda: len(s.alerts()) == 43, what="the new entries, once space returned")
    assert s.alerts() == [f"Story {i}" for i in (0, 1, 2, *range(10, 50))]
    assert d.stop() == 0
    assert sql(s.state, "PRAGMA integrity_check") == [("ok",)]


def test_schema_upgrade_on_a_full_disk_leaves_no_backup_and_no_change(
    tmp_path: Path, feed_server: FeedServer, tiny_disk: Path
) -> None:
    """A backup cut short by a full disk was left as an empty ``.bak-v*``: the copy the
    corrupt-state message tells users to restore. It is written under another name and
    renamed once whole, and the upgrade waits for it."""
    s = Setup(tmp_path, feed_server, state_dir=tiny_disk / "state")
    big_entries(s, 10, 30)  # a state of ~250 KB: its copy cannot fit in what is left
    r = s.run("check")
    assert r.returncode == 0, r.stderr
    current = len(SqliteStore.MIGRATIONS)
    before, alerts = s.files(), s.alerts()
    filler = fill(tiny_disk)
    os.truncate(filler, filler.stat().st_size - 64 * 1024)  # room to open it, no more
    s.add_entry(5)
    upgrade = [sys.executable, "-c", _NEXT_VERSION, "-c", str(s.cfg), "check"]
    r = subprocess.run(upgrade, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr[-2000:]
    message = r.stderr.strip().splitlines()[-1]
    assert f"cannot write backup {s.state}.bak-v{current}" in message, message
    assert s.files() == before  # no backup, whole or not, and the state as it was
    assert s.alerts() == alerts
    filler.unlink()
    r = subprocess.run(upgrade, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert s.alerts()[-1] == "Story 5"
    backup = s.state.with_name(f"state.db.bak-v{current}")
    assert sql(backup, "PRAGMA user_version") == [(current,)]
    assert sql(backup, "SELECT COUNT(*) FROM entries") == [(len(alerts),)]
