"""How the state's records read for a person, shared by `explain` and `alerts`.

Its own small module so that `alerts` (a listing) does not import `explain`'s
comparison stack to print a time or a delivery's outcome.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from feedwatch.alert import format_time
from feedwatch.redact import redact
from feedwatch.store.base import Delivery
from feedwatch.text import cap, escaped, normalize_space


def show(text: object) -> str:
    """Feed text made safe for a terminal, secrets masked: a control character or a
    bidi override written as ``\\x1b``, ``\\u202e`` (``text.escaped``)."""
    return escaped(redact(str(text)))


def show_term(term: str) -> str:
    """A rule's or ignore_text's term for a terminal: ``show``, but a character that
    is not printable is written as Python writes it (``\\x08``, ``\\t``), not as a
    space: a backspace (TOML's ``"\\b"`` in a regex) must show as what it is."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in redact(str(term)))


def when(dt: datetime | None) -> str:
    """A time as the payload writes it (UTC), or "-"."""
    return format_time(dt) or "-"


def one_line(text: str | None, n: int = 70) -> str:
    """``text`` on one line, cut to ``n`` characters."""
    return cap(normalize_space(text or ""), n)


def delivery_detail(d: Delivery) -> str:
    """One delivery's outcome: delivered when, pending and why, or dead and what to do."""
    if d.status == "delivered":
        return f"delivered {when(d.delivered_at)}"
    # some recipients took it: it is owed to the others alone
    owed = "" if d.recipients_left is None else ", ".join(show(a) for a in d.recipients_left)
    if d.status == "dead":
        tries = f" after {_attempts(d.attempts)}" if d.attempts else ""
        return (
            f"DEAD{tries}: {show(d.last_error or 'no error recorded')} "
            f"(`feedwatch redeliver --sink {d.sink}` queues it again"
            + (f", for {owed} alone)" if owed else ")")
        )
    if not d.attempts:
        if owed:  # redelivered: goes when due, holding back nothing
            return f"pending (not sent yet, for {owed} alone)"
        # its stored next attempt is its creation: due, but it goes in order, after
        # any older alert of the sink that waits for a retry (or with its digest)
        return "pending (not sent yet: after any older alert this sink still holds)"
    nxt = f", next attempt {when(d.next_attempt)}" if d.next_attempt else ""
    err = f", last error: {show(d.last_error)}" if d.last_error else ""
    left = f", still owed to {owed} alone" if owed else ""
    return f"pending ({_attempts(d.attempts)}{left}{nxt}{err})"


def _attempts(n: int) -> str:
    return f"{n} attempt" + ("" if n == 1 else "s")


def unknown_feed(name: str, configured: Iterable[str]) -> str:
    """The message for a feed name neither the config nor the state knows, listing the
    configured ones (`check --feed`, `forget`, `explain`, `alerts`)."""
    known = ", ".join(show(n) for n in configured) or "none"
    return f"unknown feed {name!r} (configured: {known})"
