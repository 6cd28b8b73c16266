"""Small helpers the test modules share: a `feedwatch` subprocess and polling with a deadline."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from feedwatch.model import Config, FeedConfig, FeedSettings, SinkConfig
from feedwatch.store import Store, open_store

from . import warmexec


def wait_for(
    cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition", every: float = 0.05
) -> Any:
    """``cond()``'s first truthy value, polled every ``every`` s; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def bare_env(home: Path, **extra: str) -> dict[str, str]:
    """PATH and HOME only: no FEEDWATCH_* or password variable of the developer's to lean on."""
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(home), **extra}


def run_feedwatch(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -m feedwatch ARGS`` to completion; ``env`` None = this process's environment.

    Forked from a warm interpreter (tests/warmexec.py) unless ``env`` would start Python
    differently: a real process all the same, without ~0.35 s of imports each.
    """
    run_env = dict(env) if env is not None else dict(os.environ)
    if warmexec.warm_enough(run_env):
        return warmexec.run(
            args, env=run_env, cwd=str(cwd or os.getcwd()), stdin=stdin, timeout=timeout
        )
    return subprocess.run(
        [sys.executable, "-m", "feedwatch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        input=stdin,
    )


def poll_setup(
    tmp_path: Path, url: str, settings: FeedSettings
) -> tuple[FeedConfig, Config, Store]:
    """One feed ``f`` at ``url`` with a jsonl sink ``s``, and its real SQLite state."""
    feed = FeedConfig(name="f", url=url, settings=settings, sinks=("s",))
    config = Config(
        path=None,
        state=str(tmp_path / "state.db"),
        feeds=(feed,),
        rules={},
        sinks={
            "s": SinkConfig(name="s", type="jsonl", options={"path": str(tmp_path / "a.jsonl")})
        },
    )
    store = open_store(config.state)
    assert store is not None
    return feed, config, store


def age_state(db: Path, seconds: float) -> None:
    """Move every time a SQLite state holds ``seconds`` back, as if that much time had
    passed with no poll: how a test lets its entries and alerts grow old for a
    subprocess (`check`, `explain`) that reads the real clock."""
    us = round(seconds * 1_000_000)
    conn = sqlite3.connect(db)
    try:
        with conn:
            for table, columns in (
                ("entries", ("first_seen", "last_seen")),
                (
                    "feeds",
                    ("last_poll", "last_success", "next_poll", "last_new_entry")
                    + ("retry_after_until",),
                ),
                ("alerts", ("created_at",)),
                ("deliveries", ("next_attempt", "delivered_at")),
            ):
                moved = ", ".join(f"{c} = {c} - ?" for c in columns)
                conn.execute(f"UPDATE {table} SET {moved}", (us,) * len(columns))
    finally:
        conn.close()


def raw_server(
    response: bytes,
    requests: list[bytes] | None = None,
    *,
    host: str = "127.0.0.1",
    gate: threading.Event | None = None,
    keep_alive: bool = False,
    accepted: list[Any] | None = None,
) -> socket.socket:
    """A server on ``host`` answering each request, once its headers are in, with
    ``response`` byte for byte (what no HTTP server library would send), in one write,
    then closing the connection (``keep_alive``: reading the next request on it, until
    the client closes it); each connection in a thread of its own, its client address
    appended to ``accepted``, each request's bytes to ``requests``. With a ``gate``,
    each answer waits until it is set (a server as slow as the test wants). Close the
    socket to stop it; its port is ``getsockname()[1]``."""
    srv = socket.create_server((host, 0))

    def answer(conn: socket.socket) -> None:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            if requests is not None:
                requests.append(head + b"\r\n\r\n")
            if gate is not None:
                gate.wait()
            conn.sendall(response)
            if not keep_alive:
                return

    def serve() -> None:
        while True:
            try:
                conn, addr = srv.accept()
            except OSError:
                return
            if accepted is not None:
                accepted.append(addr)
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    def one(conn: socket.socket) -> None:
        with conn:
            try:
                answer(conn)
            except OSError:  # the client gave up
                pass

    threading.Thread(target=serve, daemon=True).start()
    return srv


class HeldWriteLock:
    """Another process's hold on a SQLite state's write lock (an admin's `sqlite3` shell
    in a transaction, a long VACUUM), let go ``seconds`` after ``start()``;
    ``released``: when (``time.monotonic``)."""

    def __init__(self, path: str | Path, seconds: float = 3.0) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("BEGIN IMMEDIATE")
        self.released: float | None = None
        self._timer = threading.Timer(seconds, self._release)

    def _release(self) -> None:
        self.released = time.monotonic()
        self._conn.execute("ROLLBACK")

    def start(self) -> None:
        self._timer.start()

    def release(self) -> None:
        """Let go now (not waiting for the timer)."""
        self._timer.cancel()
        if self.released is None:
            self._release()

    def close(self) -> None:
        self._timer.cancel()
        if self._timer.is_alive() or self._timer.ident is not None:
            self._timer.join()
        self._conn.close()


class LoopLateness:
    """How late a 50 ms tick ran, at worst, on the running event loop (``late``, in
    seconds) and how many ran: a loop held by a synchronous wait shows in both."""

    def __init__(self) -> None:
        self.late = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLateness:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        await asyncio.sleep(0.1)  # the ticker runs
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _tick(self) -> None:
        while True:
            due = time.monotonic() + 0.05
            await asyncio.sleep(0.05)
            self.late = max(self.late, time.monotonic() - due)
            self.ticks += 1
