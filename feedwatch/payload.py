"""The alert payload's one JSON form: what the state stores, and what the jsonl, webhook
and command sinks send (and a webhook signs), byte for byte.

Why one form: the state used to store each payload as ``json.dumps`` wrote it, and every
delivery decoded it and encoded it again for the sink (~35 us an alert: a third of a
changed round's delivery, most of a cold one's). The state now stores ``payload_json``'s
bytes, and a delivery's payload (``StoredPayload``) is decoded only where a sink reads
it: a sink that sends the JSON sends the stored text as it is.

A payload stored by an earlier version (spaces after ``:`` and ``,``) is told apart by its
first bytes (every payload's first key is ``version``) and encoded as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

Payload = Mapping[str, Any]

# payload_json of any payload starts so (its first key is "version"); json.dumps's
# default separators, which stored payloads before, put a space after the colon
_COMPACT = '{"version":'
_SPACED = '{"version": '


def format_time(dt: datetime) -> str:
    """A time as payloads write it: UTC, to the second, ``Z``."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc)
    # not strftime: glibc writes the year 202 as "202", not "0202"
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}Z"
    )


def _jsonable(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, datetime):
        return format_time(value)
    raise TypeError(f"cannot put a {type(value).__name__} in an alert payload")


def payload_json(payload: Payload) -> bytes:
    """Compact UTF-8 JSON, keys in the order given: these exact bytes get signed.

    U+2028/U+2029 are written as escapes so a JSON line never splits for a
    reader that treats them as line breaks (JavaScript, ``str.splitlines``).
    A ``StoredPayload`` in this form is its stored text, not decoded.
    """
    if isinstance(payload, StoredPayload) and payload.compact:
        return payload.text.encode("utf-8", "replace")
    text = json.dumps(
        payload, ensure_ascii=False, separators=(",", ":"), default=_jsonable, allow_nan=False
    )
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text.encode("utf-8", "replace")


def payload_line(payload: Payload, *, ascii_only: bool = False) -> str:
    """A payload as a printed JSON line (``check --json``, ``alerts --json``): the text of
    ``payload_json``, U+2028/U+2029 escaped as a sink writes them. ``ascii_only``, for a
    stream that cannot write UTF-8: every non-ASCII character escaped."""
    if not ascii_only:
        return payload_json(payload).decode("utf-8") + "\n"
    text = json.dumps(
        payload, ensure_ascii=True, separators=(",", ":"), default=_jsonable, allow_nan=False
    )
    return text + "\n"


def stored_text(payload: Payload) -> str:
    """What the state stores of a payload: ``payload_json``'s text."""
    return payload_json(payload).decode("utf-8")


class StoredPayload(Mapping[str, Any]):
    """A payload as the state holds it: its JSON text, decoded at the first read.

    A text that does not decode raises ``ValueError`` there, in the sink that reads it
    (the dispatcher makes that a failed send, retried: never a lost alert)."""

    __slots__ = ("text", "_value")

    def __init__(self, text: str) -> None:
        self.text = text
        self._value: dict[str, Any] | None = None

    @property
    def compact(self) -> bool:
        """Whether ``text`` is ``payload_json``'s (stored by this version), not older (nor
        cut short: a text that does not end its object is decoded, and fails there)."""
        t = self.text
        return t.startswith(_COMPACT) and not t.startswith(_SPACED) and t.endswith("}")

    def _decoded(self) -> dict[str, Any]:
        if self._value is None:
            value = json.loads(self.text)
            if not isinstance(value, dict):
                raise ValueError("a stored alert payload is not a JSON object")
            self._value = value
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return f"StoredPayload({self.text[:60]!r}{'...' if len(self.text) > 60 else ''})"
