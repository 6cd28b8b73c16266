"""The command sink: run a program with the alert JSON on stdin (never through a shell).

The argv comes from the config only; feed text reaches the program as bytes on
its stdin and nowhere else, so nothing in a title can be interpreted. Exit 0
means delivered; a non-zero exit or a timeout is retried; a program that cannot
be started at all is a config problem and the delivery is dead at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
from collections.abc import Sequence

import structlog

from feedwatch.model import SinkConfig
from feedwatch.redact import redact_cut
from feedwatch.sinks.base import SendResult
from feedwatch.sinks.formats import payload_json
from feedwatch.store.base import Delivery, alert_feed_name
from feedwatch.text import printable

log = structlog.get_logger("feedwatch.sinks.command")

TAIL_BYTES = 8 * 1024  # of stdout/stderr kept while the program runs
ERROR_LINES = 5
ERROR_CHARS = 500
_CONTINUATION = bytes(range(0x80, 0xC0))  # a UTF-8 character's bytes after its first


class _Tail:
    """Keeps the last bytes of a stream, so a chatty program cannot fill memory."""

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._seen = 0

    def add(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        self._seen += len(chunk)
        while self._size - len(self._chunks[0]) >= TAIL_BYTES:
            self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        """The kept bytes with secrets masked: those the cut of the first kept bytes
        fell inside of too (their part that is kept is dropped)."""
        data = b"".join(self._chunks)[-TAIL_BYTES:]
        cut = self._seen > TAIL_BYTES
        if cut:  # a character cut in two would not match a secret's part
            data = data.lstrip(_CONTINUATION)
        return redact_cut(data.decode("utf-8", "replace"), start=cut)


def _last_lines(text: str) -> str:
    """The output's last lines on one line, without its control characters: it reaches
    the state, the log and `check`'s stderr (a terminal's title, a cleared screen).
    ``text`` is masked already (``_Tail.text``): this cut must not halve a secret."""
    lines = [printable(line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    tail = " | ".join(lines[-ERROR_LINES:])
    return tail if len(tail) <= ERROR_CHARS else "…" + tail[-(ERROR_CHARS - 1) :]


def _program_path(program: str) -> str | None:
    path = program if "/" in program else shutil.which(program)
    return path if path is not None and os.path.isfile(path) else None


def _not_found(program: str) -> str:
    """What was not found: ENOENT also means a program that exists but whose #! line
    names an interpreter that does not, or whose interpreter is a script whose own #!
    line does (or an ELF whose loader is missing)."""
    path = _program_path(program)
    if path is None:
        return "no such program"
    chain = _interpreters(path)
    if not chain:
        return "it exists, but its interpreter (or loader) was not found"
    last = chain[-1]
    if last.endswith("\r"):  # the system keeps the CR: it looks for "/bin/sh\r"
        crlf = f"#! line ends in a carriage return (CRLF line ends), so its interpreter is {last!r}"
        return _through(chain[:-1], f"is a script whose {crlf}") if chain[1:] else f"its {crlf}"
    if os.path.isfile(last):  # not a script: an ELF whose loader is missing
        return _through(chain, "exists, but its own interpreter (or loader) was not found")
    return _through(chain, "was not found")


def _not_permitted(program: str) -> str:
    """What may not run: EACCES of an executable script is the first interpreter on its
    #! chain that is not executable."""
    path = _program_path(program)
    chain = _interpreters(path) if path is not None and os.access(path, os.X_OK) else []
    for n, interpreter in enumerate(chain):
        if not (os.path.isfile(interpreter) and os.access(interpreter, os.X_OK)):
            return _through(chain[: n + 1], "is not executable")
    return "not executable"


def _interpreters(path: str) -> list[str]:
    """The #! interpreters the system follows from ``path``: a script's interpreter may
    be a script itself (the kernel follows a few levels), up to the first that is not a
    script or not there."""
    chain: list[str] = []
    while len(chain) < 5 and (interpreter := _shebang(path)) is not None:
        chain.append(interpreter)
        if not os.path.isfile(interpreter):
            break
        path = interpreter
    return chain


def _through(chain: Sequence[str], what: str) -> str:
    """``what`` of the last interpreter of ``chain``, by way of the scripts before it:
    "its interpreter 'A' (its #! line) is a script whose interpreter 'B' was not found"."""
    named = [f"interpreter {i!r}" for i in chain]
    named[0] += " (its #! line)"
    return "its " + " is a script whose ".join(named) + " " + what


def _shebang(path: str) -> str | None:
    """The program a script's ``#!`` line names, if it has one (a CR after it kept, as
    the system keeps it)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(1024)
    except OSError:
        return None
    words = first[2:].rstrip(b"\n").replace(b"\t", b" ").split(b" ")
    words = [w for w in words if w] if first.startswith(b"#!") else []
    return words[0].decode("utf-8", "replace") if words else None


async def _drain(stream: asyncio.StreamReader | None, tail: _Tail) -> None:
    if stream is None:
        return
    while chunk := await stream.read(4096):
        tail.add(chunk)


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's own, plus ``exited``: done when the program exits. (``Process.wait``
    waits for its pipes to close too, so a program that leaves a child behind holding
    its stdout, ``notify-send &`` say, would seem to run until it timed out, and its
    alert, delivered, would be sent again.)"""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


class CommandSink:
    type = "command"
    supports_digest = False

    def __init__(self, cfg: SinkConfig) -> None:
        self.name = cfg.name
        self._argv = tuple(str(a) for a in cfg.options["argv"])
        if not self._argv:
            raise ValueError(f"sink {cfg.name}: argv is empty")
        self._timeout = float(cfg.options.get("timeout", 30.0))

    def __repr__(self) -> str:
        return f"CommandSink(name={self.name!r}, program={self._argv[0]!r})"

    def _err(self, what: str) -> str:
        return f"sink {self.name}: {what}"

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        # Not a digest sink: the dispatcher hands one delivery; several run one by one.
        for delivery in deliveries:
            result = await self._run(delivery)
            if not result.ok:
                return result
        return SendResult.success()

    async def _run(self, delivery: Delivery) -> SendResult:
        env = dict(os.environ)
        env.update(
            FEEDWATCH_ALERT_ID=delivery.alert_id.replace("\0", ""),
            # (as its payload names it: the sink does not know whether the feed is still
            # in the config, which alone knows its name's ${VAR} values for secrets)
            FEEDWATCH_FEED=alert_feed_name(
                delivery.feed, delivery.payload, in_config=False
            ).replace("\0", ""),
            FEEDWATCH_KIND=delivery.kind.replace("\0", ""),
        )
        program = self._argv[0]
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _Protocol(loop),
                *self._argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,  # its own process group: a timeout kills its children too
            )
        except FileNotFoundError:
            return SendResult.dead(self._err(f"cannot start {program!r}: {_not_found(program)}"))
        except PermissionError:
            return SendResult.dead(
                self._err(f"cannot start {program!r}: {_not_permitted(program)}")
            )
        except OSError as exc:
            return SendResult.dead(self._err(f"cannot start {program!r}: {exc.strerror or exc}"))

        try:
            return await self._talk(
                asyncio.subprocess.Process(transport, protocol, loop), protocol.exited, delivery
            )
        finally:
            transport.close()  # its pipes, even where a child of it still holds them

    async def _talk(
        self, proc: asyncio.subprocess.Process, exited: asyncio.Future[None], delivery: Delivery
    ) -> SendResult:
        out, err = _Tail(), _Tail()
        readers = [
            asyncio.ensure_future(_drain(proc.stdout, out)),
            asyncio.ensure_future(_drain(proc.stderr, err)),
        ]
        data = payload_json(delivery.payload) + b"\n"
        try:
            await asyncio.wait_for(self._feed_and_wait(proc, exited, data), self._timeout)
        except asyncio.TimeoutError:
            await self._kill(proc, exited, readers)
            log.warning(
                "command.timeout", sink=self.name, alert_id=delivery.alert_id, timeout=self._timeout
            )
            return SendResult.transient(
                self._err(f"command timed out after {self._timeout:g}s and was killed")
            )
        finally:
            if not exited.done():  # cancelled (shutdown): never leave it running
                await self._kill(proc, exited, readers)
        # what it wrote before it exited (not what a child left behind writes after)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*readers), 2)
        for r in readers:
            r.cancel()
        code = proc.returncode
        if code == 0:
            return SendResult.success()
        stderr = _last_lines(err.text())
        status = (
            f"was killed by signal {-code}" if code is not None and code < 0 else f"exited {code}"
        )
        log.warning(
            "command.failed",
            sink=self.name,
            alert_id=delivery.alert_id,
            exit=code,
            stderr=stderr,
            stdout=_last_lines(out.text()),
        )
        return SendResult.transient(
            self._err(f"command {status}" + (f": {stderr}" if stderr else ""))
        )

    @staticmethod
    async def _feed_and_wait(
        proc: asyncio.subprocess.Process, exited: asyncio.Future[None], data: bytes
    ) -> None:
        if proc.stdin is not None:
            try:
                proc.stdin.write(data)
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the program did not read its stdin: its exit status decides
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        await asyncio.shield(exited)

    @staticmethod
    async def _kill(
        proc: asyncio.subprocess.Process,
        exited: asyncio.Future[None],
        readers: Sequence[asyncio.Future[None]],
    ) -> None:
        if not exited.done():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError, AttributeError):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await asyncio.shield(exited)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), 1)
        for r in readers:
            r.cancel()

    async def aclose(self) -> None:
        return None
