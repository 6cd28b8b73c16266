"""The payload's one JSON form: stored as the sinks send it, passed through undecoded."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedwatch.model import Alert, SinkConfig
from feedwatch.payload import StoredPayload, format_time, payload_json, stored_text
from feedwatch.sinks.jsonl import JsonlSink
from feedwatch.store import open_store
from feedwatch.testing import T0
from tests.receivers import make_payload

_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"])  # no lone surrogates: not UTF-8
    | st.sampled_from(["\u2028", "\u2029", '"', "\\", "\x00", "\n", "é", "ё", "🚀"])
)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def _payloads(draw: Any) -> dict[str, Any]:
    rest = draw(st.dictionaries(_TEXT.filter(lambda k: k != "version"), _JSON, max_size=6))
    return {"version": 1, **rest}


@given(_payloads())
def test_a_stored_payload_is_sent_as_stored_and_equals_decoding_it(payload: dict[str, Any]) -> None:
    stored = StoredPayload(stored_text(payload))
    assert stored.compact
    # what a sink sends: the stored text itself ...
    assert payload_json(stored) == stored.text.encode("utf-8") == payload_json(payload)
    # ... which is what decoding it and encoding it again gave before
    assert payload_json(json.loads(stored.text)) == payload_json(payload)
    assert dict(stored) == json.loads(payload_json(payload))


@given(_payloads())
def test_a_payload_stored_by_an_earlier_version_is_encoded_again(payload: dict[str, Any]) -> None:
    older = StoredPayload(json.dumps(payload, ensure_ascii=False))  # how it was stored
    assert not older.compact
    assert payload_json(older) == payload_json(payload)


def test_a_stored_payload_decodes_where_it_is_read() -> None:
    p = make_payload()
    stored = StoredPayload(stored_text(p))
    assert stored == p and stored["kind"] == "new" and stored.get("nope") is None
    assert len(stored) == len(p) and list(stored) == list(p)
    with pytest.raises(ValueError):
        StoredPayload("[1, 2]").get("kind")
    with pytest.raises(ValueError):
        dict(StoredPayload('{"version":1,"kind":'))
    assert not StoredPayload('{"version":1,"kind":').compact  # cut short: never sent as is


def _alert(i: int) -> Alert:
    p = make_payload(alert_id=f"{i:032x}", title=f"Story {i} \u2028 «ё»", summary="a\nb")
    return Alert(id=p["id"], kind="new", feed="moscow-times", payload=p, sinks=("log",))


def test_the_state_stores_the_sent_bytes_and_older_rows_still_send_the_same(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "state.db")
    store = open_store(db)
    assert store is not None
    alerts = [_alert(i) for i in range(3)]
    assert store.queue_notices(alerts, now=T0) == [a.id for a in alerts]
    raw = sqlite3.connect(db)
    stored = dict(raw.execute("SELECT alert_id, payload FROM alerts").fetchall())
    assert stored == {a.id: payload_json(a.payload).decode("utf-8") for a in alerts}
    # one row as an earlier version stored it
    raw.execute(
        "UPDATE alerts SET payload = ? WHERE alert_id = ?",
        (json.dumps(alerts[1].payload, ensure_ascii=False), alerts[1].id),
    )
    raw.commit()
    raw.close()

    pending = store.pending(sink="log")
    kept = [d.payload for d in pending]
    assert [isinstance(p, StoredPayload) and p.compact for p in kept] == [True, False, True]
    sink = JsonlSink(SinkConfig(name="log", type="jsonl", options={"path": str(tmp_path / "a")}))
    assert asyncio.run(sink.send(pending)).ok
    lines = (tmp_path / "a").read_bytes().split(b"\n")
    assert lines == [payload_json(a.payload) for a in alerts] + [b""]
    store.close()


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_times_are_always_four_digit_years_to_the_second(dt: datetime) -> None:
    """strftime wrote the year 202 as "202-11-22T10:40:17Z", not ISO 8601."""
    text = format_time(dt.replace(tzinfo=timezone.utc))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text)
    assert datetime.fromisoformat(text.replace("Z", "+00:00")) == dt.replace(
        microsecond=0, tzinfo=timezone.utc
    )
