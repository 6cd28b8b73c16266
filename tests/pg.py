"""A throwaway PostgreSQL cluster on 127.0.0.1 for tests and benchmarks.

    cluster = PgCluster.start()          # initdb into a temp dir + pg_ctl start, free port
    url = cluster.new_schema()           # postgresql://feedwatch:PASSWORD@127.0.0.1:PORT/
                                         #   feedwatch?options=-csearch_path%3Dt_...
    cluster.stop()                       # pg_ctl stop -m immediate, temp dir removed
    cluster.stop_server()                # the server gone (pg_ctl stop -m immediate), data kept
    cluster.start_server()               # and back, on the same port

``FEEDWATCH_TEST_PG_URL`` (a database a test may create schemas in) is used instead
when set. The server binaries are looked up on PATH, then under
/usr/lib/postgresql/*/bin (Debian's packages). PostgreSQL refuses to run as root, so
as root the cluster is run as the ``postgres`` user (``runuser``, else ``su``).

Where none of this is possible the ``pg_url`` fixture skips with the reason (visible
in pytest's ``-ra`` summary); ``.ci/run`` installs the ``postgresql`` package so that
CI runs these tests.

Password authentication (scram-sha-256) is on, so the URLs carry a real password: a
test can check it never shows in logs, errors or ``status``.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "feedwatch"
DB = "feedwatch"


class Unavailable(Exception):
    """PostgreSQL cannot be run here; the message says why."""


def find_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.split("/")[4].split(".")],
    )
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    def __init__(self, url: str, *, root: Path | None = None, runas: list[str] | None = None):
        self.url = url  # the database URL, with password
        self._root = root
        self._runas = runas or []
        self._pg_ctl = find_bin("pg_ctl")
        self._opts = ""  # the server's options (its port): start_server starts it again

    # -- starting ------------------------------------------------------------
    @classmethod
    def start(cls) -> PgCluster:
        external = os.environ.get("FEEDWATCH_TEST_PG_URL")
        if external:
            return cls(external)
        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise Unavailable(
                "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under"
                " /usr/lib/postgresql/*/bin: install the postgresql package"
                " (apt-get install postgresql), or set FEEDWATCH_TEST_PG_URL"
            )
        runas: list[str] = []
        owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable(
                    "running as root and there is no `postgres` user to run the server as"
                ) from None
            owner = (pw.pw_uid, pw.pw_gid)
            if shutil.which("runuser"):
                runas = ["runuser", "-u", "postgres", "--"]
            elif shutil.which("su"):
                runas = ["su-wrap"]
            else:
                raise Unavailable("running as root and neither runuser nor su is available")
        root = Path(tempfile.mkdtemp(prefix="feedwatch-pg-"))
        data = root / "data"
        password = secrets.token_urlsafe(12)
        pwfile = root / "pw"
        pwfile.write_text(password + "\n")
        if owner is not None:
            os.chown(root, *owner)
            os.chown(pwfile, *owner)
        cluster = cls("", root=root, runas=runas)
        try:
            cluster._run(
                [
                    initdb,
                    "-D",
                    str(data),
                    "-U",
                    USER,
                    f"--pwfile={pwfile}",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8" if _has_locale("C.UTF-8") else "--locale=C",
                    "--no-sync",
                ],
                timeout=120,
            )
            port = 0
            for _attempt in range(3):
                port = _free_port()
                opts = (
                    f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories=''"
                    " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                    " -c max_connections=200 -c shared_buffers=64MB"
                )
                result = cluster._run(
                    [pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w",
                     "-t", "60", "start"],
                    timeout=90,
                    check=False,
                )  # fmt: skip
                if result.returncode == 0:
                    cluster._opts = opts
                    break
            else:
                log = (
                    (root / "log").read_text(errors="replace")[-2000:]
                    if (root / "log").exists()
                    else ""
                )
                raise Unavailable(f"pg_ctl start failed: {result.stderr.strip()} {log}")
            base = f"postgresql://{USER}:{password}@127.0.0.1:{port}"
            cluster.url = f"{base}/{DB}"
            import psycopg

            with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {DB}")
        except BaseException:
            cluster.stop()
            raise
        # A session cut short (an interrupted xdist worker) still stops its server.
        atexit.register(cluster.stop)
        return cluster

    def _run(
        self, argv: list[str], *, timeout: float, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        if self._runas == ["su-wrap"]:
            import shlex

            cmd = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(argv)]
        else:
            cmd = [*self._runas, *argv]
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=self._root or None
        )
        if check and result.returncode != 0:
            raise Unavailable(
                f"{os.path.basename(argv[0])} failed ({result.returncode}):"
                f" {result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    # -- using ---------------------------------------------------------------
    @property
    def password(self) -> str | None:
        from urllib.parse import urlsplit

        return urlsplit(self.url).password

    def new_schema(self, prefix: str = "t") -> str:
        """A fresh empty schema; returns the URL that puts it first on the search_path."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}options=-csearch_path%3D{name}"

    def drop_schema(self, url: str) -> None:
        import psycopg

        name = url.rsplit("search_path%3D", 1)[-1]
        with contextlib.suppress(psycopg.Error), psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")

    def running(self) -> bool:
        """Whether the server of a cluster of our own is up (its pid file: ``pg_ctl -w
        stop`` returns once the server removed it)."""
        return self._root is not None and (self._root / "data" / "postmaster.pid").exists()

    def server_pids(self) -> list[int]:
        """The postmaster of a cluster of our own and its children (from /proc): a test
        freezes the server by stopping them (SIGSTOP; its connections stay open)."""
        assert self._root is not None, "a cluster of our own"
        master = (self._root / "data" / "postmaster.pid").read_text().split()[0]
        kids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == master:
                kids.append(int(pid))
        return [int(master), *kids]

    def stop_server(self) -> None:
        """Stop the server as a crash would (clients see their connections end and new
        ones refused); its data stays for ``start_server``. Stopped already: nothing."""
        assert self._root is not None and self._pg_ctl, "a cluster of our own"
        if not self.running():
            return
        data = self._root / "data"
        self._run([self._pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], timeout=60)

    def start_server(self) -> None:
        """Start the server ``stop_server`` stopped, on the same port, with its data."""
        assert self._root is not None and self._pg_ctl, "a cluster of our own"
        data = self._root / "data"
        self._run(
            [self._pg_ctl, "-D", str(data), "-o", self._opts, "-l", str(self._root / "log"),
             "-w", "-t", "60", "start"],
            timeout=90,
        )  # fmt: skip

    def stop(self) -> None:
        if self._root is None:
            return
        data = self._root / "data"
        if self._pg_ctl and (data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._run([self._pg_ctl, "-D", str(data), "-m", "immediate", "stop"], timeout=60)
        shutil.rmtree(self._root, ignore_errors=True)
        self._root = None


def _has_locale(name: str) -> bool:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    wanted = name.lower().replace("-", "")
    return any(line.strip().lower().replace("-", "") == wanted for line in out.splitlines())


_cluster: PgCluster | None = None
_why: str | None = None


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One cluster per test process (each xdist worker starts its own)."""
    global _cluster, _why
    if _why is not None:
        pytest.skip(_why)
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        _why = "PostgreSQL tests need psycopg and psycopg-pool: pip install -e '.[test]'"
        pytest.skip(_why)
    try:
        cluster = PgCluster.start()
    except Unavailable as exc:
        _why = f"PostgreSQL unavailable: {exc}"
        pytest.skip(_why)
    _cluster = cluster
    try:
        yield cluster
    finally:
        cluster.stop()
        if _cluster is cluster:
            _cluster = None


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A URL to a fresh, empty schema of the session's cluster (dropped afterwards)."""
    url = pg_cluster.new_schema()
    try:
        yield url
    finally:
        pg_cluster.drop_schema(url)
