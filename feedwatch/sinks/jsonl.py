"""The jsonl sink: one SPEC section 5 payload per line, appended to a file or stdout.

Each send is one ``write`` on an ``O_APPEND`` descriptor followed by ``fsync``
(on a regular file: a pipe or a device has no disk to sync, and refuses),
so lines from concurrent writers never interleave and a delivered alert is on
disk before it is marked delivered. A send that fails part-way (a full disk, a
file-size limit) is cut back off the file under an exclusive ``flock``, so its
retry neither repeats the lines that did get written nor leaves half a line in
front of them; a file that does not end in a newline (a crash in the middle of a
line, a hand edit) gets one first, so the next line is whole.

A pipe or a FIFO cannot be read back: a line is one ``write`` there, which the
kernel keeps whole up to PIPE_BUF (4 KiB) bytes. A stop that cancelled a send (the
reader slow, the stop's time out) is noted on its deliveries
(``store.base.INTERRUPTED``): when one of them is a longer line, which the stop may
have cut, their next send starts with a newline, so the half line stands alone
instead of spoiling the line that follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import re
import select
import stat
import sys
from collections.abc import Sequence
from typing import TextIO

from feedwatch import streams
from feedwatch.model import SinkConfig
from feedwatch.sinks.base import SendResult
from feedwatch.sinks.formats import payload_json
from feedwatch.store.base import Delivery, interrupted


def file_path(cfg: SinkConfig) -> str:
    """The file the sink appends to, or "-" for stdout."""
    path = str(cfg.options.get("path", "-"))
    return path if path == "-" else os.path.expanduser(path)


def missing_directory(path: str) -> str | None:
    """The directory ``path`` would be in, when it does not exist."""
    directory = os.path.dirname(os.path.abspath(path))
    return None if os.path.isdir(directory) else directory


_OWN_FD = re.compile(r"/dev/std(?P<std>out|err)|/dev/fd/(?P<n>\d+)|/proc/self/fd/(?P<pn>\d+)")


def _own_descriptor(path: str) -> int | None:
    """The descriptor of ours a path such as ``/dev/stderr`` names. Opening the path
    opens what the descriptor points to anew, which Linux refuses for a socket (ENXIO):
    under systemd stderr is one, the journal's; such a path is then written through a
    copy of the descriptor (only then: a copy shares its flags, a non-blocking pipe's
    included, so a new open, blocking, is the better way wherever there is one)."""
    m = _OWN_FD.fullmatch(path)
    if m is None:
        return None
    if m["std"]:
        return 1 if m["std"] == "out" else 2
    return int(m["n"] or m["pn"])


def writes_to_stdout(path: str) -> bool:
    """Whether a jsonl ``path`` is our stdout: ``-``, or a name of descriptor 1."""
    return path == "-" or _own_descriptor(path) == 1


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


class JsonlSink:
    type = "jsonl"
    supports_digest = False
    max_batch = 1000  # the dispatcher may hand over this many alerts: one write, one fsync

    def __init__(self, cfg: SinkConfig, *, stdout: TextIO | None = None) -> None:
        self.name = cfg.name
        self._path = file_path(cfg)
        self._stdout = stdout

    def __repr__(self) -> str:
        return f"JsonlSink(name={self.name!r}, path={self._path!r})"

    def _err(self, what: str) -> str:
        return f"sink {self.name}: {what}"

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        lines = [payload_json(d.payload) + b"\n" for d in deliveries]
        data = b"".join(lines)
        if not data:
            return SendResult.success()
        if self._path == "-":
            stream = self._stdout if self._stdout is not None else sys.stdout
            text = data.decode("utf-8")
            if streams.ascii_json(stream) and not text.isascii():
                # a stdout that cannot encode UTF-8 would write "\U0001f680": not JSON
                text = "".join(
                    json.dumps(json.loads(line), ensure_ascii=True, separators=(",", ":")) + "\n"
                    for line in text.splitlines()
                )
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError) as exc:  # a closed pipe or stream
                return SendResult.transient(self._err(f"cannot write to stdout: {exc}"))
            return SendResult.success()
        # a stop cut the last send of these short: on a pipe its reader may hold half of
        # a line longer than PIPE_BUF (a shorter one goes whole or not at all), which
        # this send's first line would join (a regular file is mended by its own last
        # byte, _write_whole)
        cut = any(
            interrupted(d.last_error) and len(line) > select.PIPE_BUF
            for d, line in zip(deliveries, lines, strict=True)
        )
        return await asyncio.to_thread(self._append, data, cut)

    def _append(self, data: bytes, cut: bool = False) -> SendResult:
        directory = missing_directory(self._path)
        if directory is not None:
            return SendResult.transient(
                self._err(f"cannot write to {self._path}: directory {directory} does not exist")
            )
        # O_NONBLOCK: a FIFO nobody reads refuses at once (ENXIO) instead of holding the
        # open (and `check`, and the daemon's stop) until a reader comes
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        named = _own_descriptor(self._path)
        if (named == 1 and sys.stdout is None) or (named == 2 and sys.stderr is None):
            # feedwatch was started with it closed (streams.guard_standard_descriptors)
            return SendResult.transient(self._err(f"cannot write to {self._path}: it is closed"))
        own = None
        try:
            try:
                fd = os.open(self._path, flags, 0o640)
            except OSError as exc:
                own = _own_descriptor(self._path) if exc.errno == errno.ENXIO else None
                if own is None:
                    raise
                fd = os.dup(own)
        except OSError as exc:
            if exc.errno == errno.EISDIR:  # only another `path` mends that: dead at once
                return SendResult.dead(
                    self._err(
                        f"cannot write to {self._path}: it is a directory;"
                        " point path at a file (in it, or elsewhere)"
                    )
                )
            return SendResult.transient(self._err(self._open_error(exc)))
        try:
            if own is None:  # a copy shares its flags with our own stderr: left be
                os.set_blocking(fd, True)  # the write waits for a slow reader, as on stdout
            self._write_whole(fd, data, cut)
        except OSError as exc:
            return SendResult.transient(
                self._err(f"cannot write to {self._path}: {exc.strerror or exc}")
            )
        finally:
            os.close(fd)
        return SendResult.success()

    def _open_error(self, exc: OSError) -> str:
        if exc.errno == errno.ENXIO and _is_fifo(self._path):
            return f"cannot open {self._path}: no process has the FIFO open for reading"
        return f"cannot open {self._path}: {exc.strerror or exc}"

    def _write_whole(self, fd: int, data: bytes, cut: bool = False) -> None:
        """Lock, end the file's last line, write, sync; what a failed write left is cut
        back off (and the OSError raised). A pipe or a device is not synced: fsync
        fails there (EINVAL) after the line went through. To a pipe, one write a line:
        a line of up to PIPE_BUF bytes then goes whole or not at all (a stop cannot
        cut it); after a send that was cut (``cut``), a newline first."""
        with contextlib.suppress(OSError):  # a file system without locks: append without
            fcntl.flock(fd, fcntl.LOCK_EX)  # other feedwatch writers; let go by close
        st = os.fstat(fd)
        size = st.st_size if stat.S_ISREG(st.st_mode) else None  # not a pipe, a device
        if (size and not self._ends_in_newline(size)) or (size is None and cut):
            data = b"\n" + data
        try:
            for line in [data] if size is not None else data.splitlines(keepends=True):
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
            if size is not None:
                os.fsync(fd)
        except OSError:
            if size is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
            raise

    def _ends_in_newline(self, size: int) -> bool:
        """The descriptor we append through is write-only: read the last byte apart."""
        try:
            fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return True  # cannot tell: add nothing
        try:
            return os.pread(fd, 1, size - 1) in (b"\n", b"")
        except OSError:
            return True
        finally:
            os.close(fd)

    async def aclose(self) -> None:
        return None
