"""``python -m feedwatch ARGS`` as a fork of an interpreter that has already imported it.

Most of the suite's CPU went to starting interpreters: ~800 `feedwatch` subprocesses
each paid ~0.35 s of imports before doing ~0.05 s of work. Here one server per test
process imports feedwatch once and forks a child per call; the child is a real, separate
process (its own pid, file descriptors 0-2, working directory, environment, exit status,
signals) that runs ``feedwatch/__main__.py`` as ``-m`` does, and exits the way the
interpreter does. Only what the interpreter decides at its start is shared: the hash
seed, ``sys.flags``, and the stdio encoding, which is why a call whose environment
would start Python differently (a locale that is not UTF-8, a ``PYTHON*`` variable
other than the two that only change buffering and bytecode files) is run by ``exec``
instead. ``FEEDWATCH_TEST_EXEC=1`` runs every call by ``exec``.

Run as a script, this file is the server: ``python warmexec.py SOCKET``.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence

_LOCALE = ("LC_ALL", "LC_CTYPE", "LANG")
# Variables that change how output is buffered or whether .pyc files are written: no
# effect on what a command does or prints.
_HARMLESS_PYTHON = frozenset({"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"})
_HEADER = struct.Struct("!Q")


# --------------------------------------------------------------------------
# the server (run as a script)
# --------------------------------------------------------------------------


def _preload() -> None:
    import feedwatch.cli as cli

    for _name, module, _help in cli.COMMAND_MODULES:
        try:
            __import__(module)
        except ImportError:
            pass
    for module in (
        "feedwatch.fetch",
        "feedwatch.bodyworkers",
        "feedwatch.present",
        "feedwatch.parse",
        "feedwatch.partial",
        "feedwatch.store.sqlite",
        "feedparser",
        "psycopg",
    ):
        try:
            __import__(module)
        except ImportError:
            pass


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _serve(path: str) -> tuple[dict[str, object], list[int]] | None:
    """Accept calls until the parent goes; returns only in a forked program child."""
    parent = os.getppid()
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the waiters are reaped by the kernel
    # what was imported is never collected: a child's collections (and its exit's) do
    # not walk it, nor copy its pages by touching them
    gc.collect()
    gc.freeze()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        ready, _, _ = select.select([srv], [], [], 1.0)
        if os.getppid() != parent:
            return None
        if not ready:
            continue
        conn, _ = srv.accept()
        if os.fork():
            conn.close()
            continue
        # the waiter: read the call, fork the program, report its pid and its status
        srv.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        head, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
        head += _recv_exact(conn, _HEADER.size - len(head))
        call = json.loads(_recv_exact(conn, _HEADER.unpack(head)[0]))
        pid = os.fork()
        if pid == 0:
            conn.close()
            return call, fds
        for fd in fds:
            os.close(fd)
        conn.sendall(_HEADER.pack(pid))
        _, status = os.waitpid(pid, 0)
        conn.sendall(_HEADER.pack(status))
        os._exit(0)


def _become(call: Mapping[str, object], fds: Sequence[int]) -> None:
    """Turn this fork into ``python -m feedwatch ARGS`` started in ``call``'s place."""
    import locale
    import runpy

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(str(call["cwd"]))
    env = dict(call["env"])  # type: ignore[call-overload]
    if _locale(env) in ("", "C", "POSIX") and not env.get("LC_ALL"):
        env["LC_CTYPE"] = "C.UTF-8"  # PEP 538: what the interpreter sets for a C locale
    os.environ.clear()
    os.environ.update(env)
    try:
        locale.setlocale(locale.LC_CTYPE, "")
    except locale.Error:
        pass
    import feedwatch

    main = os.path.join(os.path.dirname(str(feedwatch.__file__)), "__main__.py")
    sys.argv = [main, *call["args"]]  # type: ignore[misc]
    sys.path[0] = os.getcwd()
    runpy.run_module("feedwatch", run_name="__main__", alter_sys=True)


def _server_main() -> None:
    _preload()
    served = _serve(sys.argv[1])
    if served is not None:
        # sys.std* are the server's objects, never read nor written since its "ready":
        # empty buffers over fds 0-2, which now are the caller's
        _become(*served)


# --------------------------------------------------------------------------
# the client (imported by tests/helpers.py)
# --------------------------------------------------------------------------


class _Server:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="fwwarm-")
        self.path = os.path.join(self.dir, "s")
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _LOCALE and not k.startswith("PYTHON") and not k.startswith("FEEDWATCH")
        }
        self.proc = subprocess.Popen(
            [sys.executable, __file__, self.path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=env,
            cwd=self.dir,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line != b"ready\n":
            raise RuntimeError(f"the warm feedwatch server did not start: {line!r}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)


_server: _Server | None = None
_lock = threading.Lock()


def _get_server() -> _Server:
    global _server
    with _lock:
        if _server is None or not _server.alive():
            _server = _Server()
            import atexit

            atexit.register(_server.stop)
        return _server


def _locale(env: Mapping[str, str]) -> str:
    return next((env[k] for k in _LOCALE if env.get(k)), "")


def _locale_as_servers(env: Mapping[str, str]) -> bool:
    """The server starts with none (coerced to C.UTF-8): UTF-8 stdio, surrogateescape."""
    return _locale(env) in ("", "C", "POSIX", "C.UTF-8", "C.utf8")


def _text(data: bytes) -> str:
    return data.decode().replace("\r\n", "\n").replace("\r", "\n")


def warm_enough(env: Mapping[str, str]) -> bool:
    """Would an interpreter started with ``env`` start as the server did?"""
    if os.environ.get("FEEDWATCH_TEST_EXEC") == "1":
        return False
    python = {k for k in env if k.startswith("PYTHON")} - _HARMLESS_PYTHON
    return not python and _locale_as_servers(env)


def run(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    stdin: str | None,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    """As ``subprocess.run([python, -m, feedwatch, *args], capture_output=True, text=True)``."""
    server = _get_server()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    if stdin is not None:
        in_r, in_w = os.pipe()
    else:
        in_r, in_w = os.open(os.devnull, os.O_RDONLY), -1
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(server.path)
        body = json.dumps({"args": list(args), "env": dict(env), "cwd": cwd}).encode()
        socket.send_fds(conn, [_HEADER.pack(len(body))], [in_r, out_w, err_w])
        conn.sendall(body)
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    pid = _HEADER.unpack(_recv_exact(conn, _HEADER.size))[0]
    deadline = time.monotonic() + timeout
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    pending = bytes(stdin.encode()) if stdin is not None else b""
    reading = {out_r, err_r}
    writing = {in_w} if in_w >= 0 else set()
    if in_w >= 0 and not pending:
        os.close(in_w)
        writing = set()
    timed_out = False
    try:
        while reading or writing:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            r, w, _ = select.select(list(reading), list(writing), [], left)
            for fd in r:
                data = os.read(fd, 65536)
                if data:
                    chunks[fd].append(data)
                else:
                    reading.discard(fd)
            for fd in w:
                try:
                    n = os.write(fd, pending[:65536])
                except BrokenPipeError:
                    n = len(pending)
                pending = pending[n:]
                if not pending:
                    os.close(fd)
                    writing.discard(fd)
        if timed_out:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        status = _HEADER.unpack(_recv_exact(conn, _HEADER.size))[0]
    finally:
        conn.close()
        for fd in (out_r, err_r, *writing):
            os.close(fd)
    # as text=True reads them: UTF-8 (the locale's), universal newlines
    out, err = (_text(b"".join(chunks[fd])) for fd in (out_r, err_r))
    argv = [sys.executable, "-m", "feedwatch", *args]
    if timed_out:
        raise subprocess.TimeoutExpired(argv, timeout, output=out, stderr=err)
    return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(status), out, err)


if __name__ == "__main__":
    _server_main()
