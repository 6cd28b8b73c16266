"""`feedwatch status`: how every feed and sink is doing, read from config + state only."""

from __future__ import annotations

import json
import sys
import unicodedata
from typing import Any, TextIO

from feedwatch import streams
from feedwatch.alert import format_time
from feedwatch.model import Config
from feedwatch.redact import redact, redact_url
from feedwatch.store import nothing_polled, open_store
from feedwatch.store.base import FeedRecord, SinkCounts
from feedwatch.text import escaped


def feed_state(record: FeedRecord | None, enabled: bool, url: str) -> str:
    """The state of a feed in the config; ``url`` its url there: a feed given another
    url is "new" until its first poll there (the old url's errors, 410 or Retry-After are
    not the new one's; its entries are kept). A feed only the state knows is "removed"."""
    if not enabled:
        return "disabled"
    if record is None or record.last_poll is None or record.url != url:
        return "new"
    if record.gone_at(url):
        return "gone"
    if record.errors > 0:
        return "error"
    return "ok"


_NOT_POLLED = frozenset({"disabled", "removed", "gone"})


def collect(config: Config) -> dict[str, Any]:
    store = open_store(config.state, create=False, upgrade=False)
    records: dict[str, FeedRecord] = {}
    counts: dict[str, SinkCounts] = {}
    if store is None:  # (stdout as with a state: every feed `new`; SPEC 2)
        print(nothing_polled(config.state), file=sys.stderr)
    else:
        try:
            records = store.feeds(counts=True)
            counts = store.sink_counts()
        finally:
            store.close()
    feeds: list[dict[str, Any]] = []
    names = [f.name for f in config.feeds]
    for f in config.feeds:
        rec = records.get(f.name)
        feeds.append(_row(f.name, f.url, rec, feed_state(rec, f.enabled, f.url)))
    for name, rec in sorted(records.items()):
        if name not in names:
            # neither its name nor its URL: the state holds them with their ${VAR}s
            # expanded, and with the feed gone from the config they are no longer known
            # to be masked; the name as its last poll showed it instead
            feeds.append(_row(rec.shown_name, None, rec, "removed"))
    sinks = []
    for name in list(config.sinks) + sorted(set(counts) - set(config.sinks)):
        c = counts.get(name, SinkCounts())
        sinks.append(
            {
                "name": name,
                "pending": c.pending,
                "delivered": c.delivered,
                "dead": c.dead,
                # out of the config (removed or renamed): its pending deliveries are held
                # until it is back or give_up_after passes
                "removed": name not in config.sinks,
            }
        )
    return {"feeds": feeds, "sinks": sinks}


def _row(name: str, url: str | None, rec: FeedRecord | None, state: str) -> dict[str, Any]:
    # what the last poll said of a url the feed no longer has is not said of its url:
    # until its first poll there the feed reads as one never polled (`new`), its next
    # poll as soon as the daemon or `check` runs (the old url's backoff is not its)
    other_url = rec is not None and url is not None and rec.url != url
    polled = None if other_url else rec
    return {
        "name": redact(name),  # (a name written with a ${VAR} shows as ***)
        "url": redact_url(url) if url else None,
        "state": state,
        "http_status": polled.http_status if polled else None,
        "last_poll": format_time(polled.last_poll) if polled else None,
        "last_success": format_time(polled.last_success) if polled else None,
        "errors": polled.errors if polled else 0,
        # (a removed feed's, stored by a version that did not mask it, might hold a
        # secret no longer registered: not shown, as its URL is not)
        "last_error": (
            redact(polled.last_error)
            if polled and polled.last_error and state != "removed"
            else None
        ),
        "entries": rec.entries if rec else 0,
        # a disabled, removed or gone feed is not polled: no time would come true
        "next_poll": (
            format_time(polled.next_poll) if polled and state not in _NOT_POLLED else None
        ),
        "redirected_to": (
            redact_url(polled.redirected_to)
            if polled and polled.redirected_to and state != "removed"
            else None
        ),
    }


def _cells(text: str) -> int:
    """The terminal cells ``text`` takes, as terminals (and wcwidth) count them: a wide
    or fullwidth character (CJK, an emoji shown as one: 🚀) 2, a combining mark, a
    format character (a zero-width joiner, a bidi mark) 0, any other 1; a variation
    selector 16 makes a narrow character before it an emoji (❤️: 2), and a character
    joined by a zero-width joiner is drawn in the glyph before it (👩‍💻: 2)."""
    n = last = 0
    joined = False
    for ch in text:
        if joined:
            joined = False
            continue
        if ch == "\ufe0f":
            n += 1 if last == 1 else 0
            last = 2
            continue
        if ch == "\u200d":
            joined = last > 0
            continue
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        last = 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
        n += last
    return n


def _table(rows: list[list[str]], out: TextIO) -> None:
    """``rows`` in columns, padded by the cells each takes in a terminal (a name in CJK
    or with an emoji takes more than its characters); a row may have a last cell more
    than the header (a note)."""
    widths = [
        max(_cells(r[i]) for r in rows if i < len(r)) for i in range(max(len(r) for r in rows))
    ]
    for r in rows:
        line = "  ".join(c + " " * (w - _cells(c)) for c, w in zip(r, widths, strict=False))
        out.write(line.rstrip() + "\n")


def status_command(config: Config, out: TextIO, *, as_json: bool, check: bool) -> int:
    data = collect(config)
    if as_json:
        out.write(json.dumps(data, ensure_ascii=streams.ascii_json(out)) + "\n")
    else:
        rows = [
            ["FEED", "STATE", "HTTP", "LAST POLL", "LAST SUCCESS", "ERR", "ENTRIES", "NEXT POLL"]
        ]
        # a name, an error, a URL with a control character or a bidi override (a
        # hostile feed's, an OPML title's): written as \x1b, \u202e; --json has the text
        for f in data["feeds"]:
            rows.append(
                [
                    escaped(f["name"]),
                    f["state"],
                    str(f["http_status"] or "-"),
                    f["last_poll"] or "-",
                    f["last_success"] or "-",
                    str(f["errors"]),
                    str(f["entries"]),
                    f["next_poll"] or "-",
                ]
            )
        _table(rows, out)
        for f in data["feeds"]:
            name = escaped(f["name"])
            if f["last_error"] and f["state"] in ("error", "gone"):
                out.write(f"  {name}: {escaped(f['last_error'])}\n")
            if f["redirected_to"]:
                out.write(
                    f"  {name}: permanently redirected to {escaped(f['redirected_to'])}"
                    " (update its url)\n"
                )
        if data["sinks"]:
            out.write("\n")
            srows = [["SINK", "PENDING", "DELIVERED", "DEAD"]]
            for s in data["sinks"]:
                srows.append(
                    [escaped(s["name"]), str(s["pending"]), str(s["delivered"]), str(s["dead"])]
                    + (["(removed from the config)"] if s["removed"] else [])
                )
            _table(srows, out)
    if check:
        bad = any(f["state"] in ("error", "gone") for f in data["feeds"]) or any(
            s["dead"] for s in data["sinks"]
        )
        return 1 if bad else 0
    return 0
