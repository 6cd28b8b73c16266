"""structlog set-up: console lines on a terminal, one JSON object per line otherwise.

Every string that reaches a log line passes through `redact`, so a secret that
slipped into an exception message still prints as ``***``. The libraries that log
through the standard library (APScheduler, asyncio, aiohttp) come out the same way:
their warnings and errors are feedwatch's lines too, in the same format, redacted
(else they would print as bare text among the JSON lines, secrets and all).

Written to the journal (systemd connects stderr to it and says so in
``$JOURNAL_STREAM``), each line starts with its syslog priority, ``<4>`` for a
warning: journald stores the line at that priority (``journalctl -p warning``) and
strips the prefix, so the message is the same JSON. A file or a pipe gets none.

A console line writes a control character or a bidi override of a value (a feed's or
an entry's title, a server's error) as ``\\x1b``, ``\\u202e``: structlog's console
renderer quotes a value only when it holds a space, a quote, ``=``, a tab or a line
break, so an escape sequence (``ESC E`` a new line, ``ESC [C`` a space) drew a line of
its own making on the terminal. A JSON line needs nothing: JSON escapes every C0
control, the line breaks included, and a reader takes the value as one string.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog

from feedwatch import streams
from feedwatch.redact import redact
from feedwatch.text import escaped, escaped_lines

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# syslog priorities (sd-daemon(3)'s "<N>" line prefix) of the levels a line can have
_PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value(v) for v in value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    return value


def redact_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_value(value)
    return event_dict


_configured: dict[str, Any] = {}  # what ``configure`` was last given


def configure(*, level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    _configured.update(level=level, fmt=fmt, stream=stream)
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer: Any
    if fmt == "console":
        renderer = _Escaping(structlog.dev.ConsoleRenderer(colors=False))
    else:
        renderer = structlog.processors.JSONRenderer(ensure_ascii=streams.ascii_json(stream))
    if _is_journal(stream):
        renderer = _Prioritised(renderer)
    threshold = _LEVELS.get(level, logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        # one write a line: print() writes the message and its newline apart, and the
        # body workers of a `check` share its stderr, so two lines could run together
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(stream, renderer, max(threshold, logging.WARNING))


def _is_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal's: ``$JOURNAL_STREAM`` names its device and
    inode (a process started from the service inherits the variable, not the stream)."""
    expected = os.environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


# a console line's values printed as they are, over several lines: a traceback's
_MULTILINE = frozenset({"exception", "stack"})


class _Escaping:
    """A console renderer that escapes the control characters and bidi overrides of
    every string value (``text.escaped``) as it renders it: a value (``key=...``)
    holding one is quoted as Python writes it (``title='a\\x1bE'``), as the renderer
    quotes one with a line break; the event as ``escaped`` writes it; a traceback keeps
    its line breaks, each of its lines escaped."""

    def __init__(self, renderer: Any) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> str:
        for key, value in list(event_dict.items()):
            if not isinstance(value, str) or escaped(value) is value:
                continue  # (a list or a dict is rendered by repr, which escapes)
            if key in _MULTILINE:
                event_dict[key] = escaped_lines(value)
            else:
                event_dict[key] = _Escaped(value)
        return str(self._renderer(logger, name, event_dict))


class _Escaped:
    """A value for the console renderer, which writes the event by ``str`` and another
    value by ``repr``: ``escaped`` and Python's literal, never the text as it is."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return escaped(self.text)

    def __repr__(self) -> str:
        # quoted as Python quotes a string, but escaped as ``escaped`` escapes: an emoji's
        # joiner and a backslash stay as they are (repr would write ``\u200d``, ``\\``)
        return "'" + escaped(self.text).replace("'", "\\'") + "'"


class _Prioritised:
    """A renderer whose every line starts with the event's syslog priority."""

    def __init__(self, renderer: Any) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> str:
        level = str(event_dict.get("level") or name).lower()
        prefix = f"<{_PRIORITIES.get(level, 6)}>"
        text = str(self._renderer(logger, name, event_dict))
        # a console line's traceback runs over several lines: journald stores each
        return "\n".join(prefix + line for line in text.split("\n"))


def restorer() -> Callable[[], None]:
    """A way back to the logging configured now: loading a config sets its logging
    (``cli._load``), and a reload the daemon then rejects must keep the running one's."""
    given = dict(_configured)

    def restore() -> None:
        if given:
            configure(**given)

    return restore


class _StdlibHandler(logging.StreamHandler):
    """The root logger's handler that ``configure`` puts there (and replaces)."""


def _route_stdlib(stream: TextIO, renderer: Any, threshold: int) -> None:
    """Records of the standard library's loggers as feedwatch's own lines. Their
    info chatter (APScheduler's "Added job", "Running job") stays out: warnings and
    errors only, or fewer when ``log_level`` asks for fewer."""
    handler = _StdlibHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_processor,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
