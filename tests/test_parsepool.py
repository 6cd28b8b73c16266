"""The parse pool: worker processes that survive a dying worker and never print."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from feedwatch.config import ConfigError, load_config
from feedwatch.parse import parse_body
from feedwatch.parsepool import ParsePool, worker_count
from feedwatch.testing import entry, rss
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
BODY = rss([entry(f"id-{i}", title=f"Entry {i}", summary=f"<p>text {i}</p>") for i in range(5)])


def die() -> None:
    os._exit(3)  # what the OOM killer or a segfault looks like from the pool


def pid() -> int:
    return os.getpid()


@contextmanager
def thread_busy(pool: ParsePool) -> Iterator[None]:
    """Hold the pool's thread, so what comes next must go to the worker processes."""
    release = threading.Event()
    held = pool.submit(release.wait, 60)
    try:
        yield
    finally:
        release.set()
        held.result(timeout=60)


async def _parse_all(pool: ParsePool, bodies: list[bytes]) -> list[object]:
    loop = asyncio.get_running_loop()
    return list(
        await asyncio.gather(
            *(
                loop.run_in_executor(pool, parse_body, b, {"content-type": "application/rss+xml"})
                for b in bodies
            )
        )
    )


def test_workers_parse_exactly_like_the_main_process() -> None:
    pool = ParsePool(2)
    try:
        got = asyncio.run(_parse_all(pool, [BODY] * 6))
        assert pool.uses_processes  # six bodies waited at once
        # once started, the workers take every body
        assert pool.submit(pid).result(timeout=60) != os.getpid()
    finally:
        pool.shutdown(wait=True)
    want = parse_body(BODY, {"content-type": "application/rss+xml"})
    assert want.entries and all(g == want for g in got)


def test_workers_start_in_a_thread_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first fork waits for the fork server's imports: the caller (the event loop)
    must not. What waited for the workers is handed to them once they run."""
    import feedwatch.parsepool as parsepool

    started_in: list[str] = []
    real = parsepool._new_pool

    def recording(workers: int) -> Any:
        started_in.append(threading.current_thread().name)
        return real(workers)

    monkeypatch.setattr(parsepool, "_new_pool", recording)
    pool = ParsePool(2)
    try:
        with thread_busy(pool):
            waited = pool.submit(pid)
            assert waited.result(timeout=60) != os.getpid()
        assert started_in == ["feedwatch-parse-start"]
        assert pool.uses_processes
    finally:
        pool.shutdown(wait=True)


def test_zero_workers_parse_in_a_thread_of_this_process() -> None:
    pool = ParsePool(0)
    try:
        assert pool.submit(pid).result(timeout=30) == os.getpid()
        assert not pool.uses_processes
    finally:
        pool.shutdown(wait=True)


def test_a_dying_worker_costs_only_its_own_parse() -> None:
    pool = ParsePool(2)
    try:
        with thread_busy(pool):
            first = pool.submit(pid).result(timeout=60)
            doomed = pool.submit(die)
            others = [pool.submit(parse_body, BODY, {}) for _ in range(8)]
            with pytest.raises(BrokenProcessPool):
                doomed.result(
                    timeout=60
                )  # it ran twice (then alone) and killed its worker both times
            want = parse_body(BODY, {})
            assert all(f.result(timeout=60) == want for f in others)
            # and the pool still works afterwards, with new workers
            assert pool.submit(pid).result(timeout=60) not in (first, os.getpid())
    finally:
        pool.shutdown(wait=True)


def test_one_body_at_a_time_never_starts_processes() -> None:
    pool = ParsePool(2)
    try:
        for _ in range(3):
            assert pool.submit(pid).result(timeout=30) == os.getpid()
        assert not pool.uses_processes
    finally:
        pool.shutdown(wait=True)


def test_a_shut_down_pool_refuses_work() -> None:
    pool = ParsePool(1)
    pool.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(pid)


def test_workers_print_nothing(tmp_path: Path) -> None:
    """A worker's log line would land unredacted in the daemon's journal, or in --json output."""
    script = textwrap.dedent(
        """
        import threading
        import structlog
        from feedwatch import log
        from feedwatch.parsepool import ParsePool

        def shout():
            structlog.get_logger("x").error("from.worker", secret="hunter2")
            return 7

        if __name__ == "__main__":
            log.configure(level="debug", fmt="json")
            pool = ParsePool(1)
            release = threading.Event()
            pool.submit(release.wait, 60)  # holds the thread: shout goes to a worker
            print(pool.submit(shout).result(timeout=60), pool.uses_processes)
            release.set()
            pool.shutdown(wait=True)
        """
    )
    (tmp_path / "probe.py").write_text(script)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    out = subprocess.run(
        [sys.executable, str(tmp_path / "probe.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "7 True"
    assert "from.worker" not in out.stdout + out.stderr


def test_workers_exit_when_the_main_process_is_killed(tmp_path: Path) -> None:
    """kill -9 of feedwatch must not leave its parse workers (and fork server) running."""
    script = textwrap.dedent(
        """
        import os, sys, threading
        from feedwatch.parsepool import ParsePool

        if __name__ == "__main__":
            pool = ParsePool(2)
            release = threading.Event()
            pool.submit(release.wait, 600)  # holds the thread: the next goes to a worker
            print(pool.submit(os.getpid).result(timeout=60), flush=True)
            threading.Event().wait(600)
        """
    )
    (tmp_path / "victim.py").write_text(script)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "victim.py")], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        worker = int(proc.stdout.readline())
        assert worker != proc.pid and _running(worker)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    wait_for(lambda: not _running(worker), timeout=20, what=f"worker {worker} to exit")


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return False


def test_worker_count_setting() -> None:
    assert worker_count(0) == 0
    assert worker_count(3) == 3
    assert 1 <= worker_count(-1) <= 4


@pytest.mark.parametrize(("value", "want"), [('"auto"', -1), ("0", 0), ("3", 3)])
def test_parse_workers_config(tmp_path: Path, value: str, want: int) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[feedwatch]\nparse_workers = {value}\nstate = "s.db"\n')
    assert load_config(cfg).parse_workers == want


@pytest.mark.parametrize("value", ['"many"', "-1", "true", "65"])
def test_parse_workers_config_errors_name_the_key(tmp_path: Path, value: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[feedwatch]\nparse_workers = {value}\nstate = "s.db"\n')
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "parse_workers" in str(err.value) and "c.toml:2" in str(err.value)
