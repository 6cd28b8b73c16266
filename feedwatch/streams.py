"""The streams feedwatch prints to, in an encoding it does not choose.

A cron job or a terminal under a legacy locale (``LANG=en_US.ISO-8859-1``, or
``PYTHONIOENCODING=ascii``) gives stdout and stderr an encoding in which a feed's
Cyrillic title or an emoji cannot be written: Python raises at the first one, and
`check` stopped there, before delivering its alerts, at every run. Text that cannot
be encoded is written escaped instead, and JSON escapes every non-ASCII character
(``\\u0420``), which any JSON reader reads back as it was.

And a stderr that is gone (the reader of a pipe left, a terminal hung up, a journal
stream broke) drops what is written to it: logging it failed used to stop the work
that logged, a poll or a delivery, with it.
"""

from __future__ import annotations

import codecs
import errno
import io
import os
from typing import Any, TextIO


class ClosedStdout(io.TextIOBase):
    """stdout when descriptor 1 is closed (``feedwatch check >&-``: Python sets
    ``sys.stdout`` to None): writing fails as into a closed pipe, so output is dropped
    where a closed pipe's is, and a jsonl sink on stdout fails (stays pending)."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "stdout is closed")


def guard_standard_descriptors() -> None:
    """Put /dev/null on each of descriptors 0-2 that is closed (``feedwatch check >&-``),
    so that no file opened later takes its number: a write meant for stdout (a jsonl
    sink on /dev/stdout) would land in the state file. ``sys.stdout`` stays None."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def tolerant(stream: Any) -> None:
    """A character ``stream`` cannot encode is written as ``\\u0420`` from now on,
    not an exception (a text stream with strict errors; anything else is left)."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None and getattr(stream, "errors", None) == "strict":
        reconfigure(errors="backslashreplace")


def ascii_json(stream: Any) -> bool:
    """Whether JSON written to ``stream`` must escape non-ASCII characters: it does not
    encode as UTF-8 (one without an encoding, a StringIO, holds any text)."""
    encoding = getattr(stream, "encoding", None)
    if not encoding:
        return False
    try:
        return codecs.lookup(encoding).name != "utf-8"
    except LookupError:
        return True


class _Lasting:
    """``stream``, but a write or flush that fails is dropped (see the module's text)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):  # gone, or closed
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def lasting(stream: TextIO) -> TextIO:
    """``stream`` whose writes never raise: for stderr, which only logs."""
    if isinstance(stream, _Lasting):
        return stream
    return _Lasting(stream)  # type: ignore[return-value]
