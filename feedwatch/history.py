"""`feedwatch alerts`: what was alerted, newest first, and where each alert went.

`status` counts a sink's deliveries and `explain` follows one entry; neither answers
"what did it send me yesterday?" or "which alerts did my chat miss while its token was
wrong?". This reads the alerts the state records (each with the payload its sinks got)
and each sink's outcome. It reads the state only, so it is safe beside a running daemon.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO, get_args

from feedwatch import streams
from feedwatch.alert import format_time
from feedwatch.config import parse_duration_arg
from feedwatch.model import Config
from feedwatch.payload import payload_line
from feedwatch.present import delivery_detail, one_line, show, unknown_feed
from feedwatch.redact import redact
from feedwatch.store import no_state_at, open_store
from feedwatch.store.base import (
    AlertQuery,
    AlertRecord,
    Delivery,
    DeliveryStatus,
    alert_feed_name,
)

STATUSES = get_args(DeliveryStatus)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "List the alerts the state records, newest first, with each sink's delivery "
        "outcome (delivered, pending with its last error, or dead). Reads the state, "
        "never writes it: one from an older feedwatch is refused until `check` or `run` "
        "upgrades it."
    )
    parser.add_argument(
        "--feed", action="append", default=[], metavar="NAME", help="only this feed's (repeatable)"
    )
    parser.add_argument(
        "--since", metavar="DURATION", help='only those of the last DURATION ("90m", "2h", "7d")'
    )
    parser.add_argument("--sink", metavar="NAME", help="only those with a delivery to this sink")
    parser.add_argument(
        "--status",
        choices=STATUSES,
        help="only those with a delivery in this state (with --sink: that sink's)",
    )
    parser.add_argument(
        "--limit", type=int, default=20, metavar="N", help="at most N alerts (default 20)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per alert: its payload and its deliveries",
    )


def run(args: argparse.Namespace, out: TextIO, load: Callable[[], Config]) -> int:
    config = load()
    since: datetime | None = None
    if args.since is not None:
        try:
            seconds = parse_duration_arg(args.since)
        except ValueError as exc:
            print(f"feedwatch: --since {args.since!r}: {exc}", file=sys.stderr)
            return 2
        since = datetime.now(timezone.utc) - timedelta(seconds=seconds)
    if args.limit < 1:
        print(
            f"feedwatch: --limit {args.limit}: give a number of alerts, 1 or more", file=sys.stderr
        )
        return 2
    if args.sink is not None and args.sink not in config.sinks:
        # a sink removed from the config still has its deliveries: say so, list them
        print(
            f"note: no sink {args.sink!r} in the config; listing what the state holds",
            file=sys.stderr,
        )
    store = open_store(config.state, create=False, upgrade=False)
    if store is None:
        unknown = [name for name in dict.fromkeys(args.feed) if config.feed(name) is None]
        if unknown:  # a typo, as with a state: there is none to hold a removed feed
            return _unknown_feed(unknown[0], config)
        if not args.json:
            print(f"no alerts: {no_state_at(config.state)} yet (nothing was polled)", file=out)
        return 0
    try:
        for name in dict.fromkeys(args.feed):
            # a feed removed from the config keeps its alerts in the state (after its
            # row went with retention too); a name in neither is a typo, not "no alerts"
            if config.feed(name) is None and not store.knows_feed(name):
                return _unknown_feed(name, config)
        query = AlertQuery(
            feeds=tuple(dict.fromkeys(args.feed)),
            since=since,
            sink=args.sink,
            status=args.status,
            limit=args.limit,
        )
        records = store.recent_alerts(query)
    finally:
        store.close()
    if args.json:
        # a stdout that cannot encode UTF-8 would write "\U0001f680" for an emoji: not JSON
        ascii_only = streams.ascii_json(out)
        for r in records:
            out.write(payload_line(_json(r, config), ascii_only=ascii_only))
    else:
        _text(out, records, args, config)
    out.flush()
    return 0


def _unknown_feed(name: str, config: Config) -> int:
    print(f"feedwatch: {unknown_feed(name, (f.name for f in config.feeds))}", file=sys.stderr)
    return 2


def _payload(r: AlertRecord) -> dict[str, Any] | None:
    """The stored payload, or None (with a word on stderr) for a row that does not
    decode: one damaged row must not hide the others."""
    try:
        return dict(r.payload)
    except ValueError as exc:
        print(
            f"warning: alert {r.alert_id}: its stored payload does not decode ({exc})",
            file=sys.stderr,
        )
        return None


def _feed(r: AlertRecord, config: Config) -> str:
    """The alert's feed as shown: one since removed from the config as its payload
    names it (``alert_feed_name``)."""
    return alert_feed_name(r.feed, r.payload, in_config=config.feed(r.feed) is not None)


def _json(r: AlertRecord, config: Config) -> dict[str, Any]:
    return {
        "alert": _payload(r),
        "alert_id": r.alert_id,
        "feed": _feed(r, config),
        "kind": r.kind,
        "created_at": format_time(r.created_at),
        "deliveries": [_delivery_json(d) for d in r.deliveries],
    }


def _delivery_json(d: Delivery) -> dict[str, Any]:
    return {
        "sink": d.sink,
        "status": d.status,
        "attempts": d.attempts,
        "delivered_at": format_time(d.delivered_at),
        # set once an attempt failed (before, it goes in its turn: see delivery_detail)
        "next_attempt": (
            format_time(d.next_attempt) if d.status == "pending" and d.attempts else None
        ),
        "last_error": redact(d.last_error) if d.last_error else None,  # as `explain` shows it
        # some recipients took it: those still owed it (an email sink); null: all of them
        "recipients_left": (
            None
            if d.recipients_left is None or d.status == "delivered"
            else list(d.recipients_left)
        ),
    }


def _text(
    out: TextIO, records: list[AlertRecord], args: argparse.Namespace, config: Config
) -> None:
    w = out.write
    if not records:
        w("no alerts" + (" match" if _filtered(args) else " recorded yet") + "\n")
        return
    for r in records:
        payload = _payload(r) or {}
        entry = payload.get("entry")
        title = entry.get("title") if isinstance(entry, dict) else None
        what = title or payload.get("message") or "(no title)"
        w(
            f"{format_time(r.created_at)}  {r.kind:<8} {show(_feed(r, config))}: {show(one_line(str(what), 100))}\n"
        )
        link = entry.get("link") if isinstance(entry, dict) else None
        if link:
            w(f"    {show(link)}\n")
        if not r.deliveries:
            w(
                "    no sink"
                + (" (a duplicate: sent from another feed)" if r.duplicate_of else "")
                + "\n"
            )
        for d in r.deliveries:
            w(f"    {d.sink}: {delivery_detail(d)}\n")
    if len(records) == args.limit:
        w(f"(the newest {args.limit}; --limit N shows more)\n")


def _filtered(args: argparse.Namespace) -> bool:
    return bool(args.feed or args.since or args.sink or args.status)
