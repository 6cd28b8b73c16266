"""`feedwatch explain FEED [ENTRY]`: why an entry did or did not alert (SPEC section 2).

Read-only. It loads the config, reads the state (never writes it, nor upgrades an
older one: ``open_store(upgrade=False)``), fetches the feed once now with the same
Fetcher and parser a poll uses (no validators, so there is a body to compare), and runs the pure diff and the rules on it
exactly as the next poll would, without committing anything. Then, for the
entry (an id, a link or a title substring), it prints:

- its identity and the feed's id policy (configured, in use, and what this
  body suggests under ``auto``);
- what the state holds for it (first/last seen, stored times, fingerprint);
- new / updated / unchanged against the body now, and which fields changed
  (or why a change is stored silently: churn, ``updates``, a link-only move);
- every rule and term: hit (in which fields) or missed (feedwatch.match.explain);
- the verdict: would the next poll alert it, to which sinks, or why not
  (baseline, flood, notify_on, max_age, no rule matched, already alerted);
- the alerts recorded for it and each sink's delivery outcome.

Without ENTRY: the feed's state and its latest entries, one line each. If the
fetch fails (or ``--no-fetch``), everything is explained from the stored state.

Exit status: 0 explained; 1 no entry matches ENTRY; 2 unknown feed (or a bad config).
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, TextIO

from feedwatch.alert import route
from feedwatch.config import format_duration
from feedwatch.diff import (
    TEXT_FIELDS,
    DiffResult,
    _comparable,
    _field_changes,
    _legacy,
    _moved_text,
    _read_26,
    _reread,
    _stored_in_mojibake,
    _text_changed,
    _was,
    diff,
    stale_copy,
    within_retention,
)
from feedwatch.identity import (
    alert_id,
    bare_enclosure_url,
    comparable_text,
    duplicate_key,
    enclosure_urls,
    entry_fingerprint,
    entry_keys,
    id_bases,
    identity_for,
    misdecoded_keys,
    normalize_link,
)
from feedwatch.ignore_text import compile_ignore
from feedwatch.model import (
    Change,
    Config,
    EntrySnapshot,
    FeedConfig,
    Fetched,
    FetchFailed,
    FetchRequest,
    FieldChange,
    IdentityState,
    NotModified,
    ParsedFeed,
    RuleMatch,
    Secret,
    StoredEntry,
)
from feedwatch.opml import readable_config_string
from feedwatch.present import delivery_detail, one_line, show, show_term, unknown_feed
from feedwatch.present import when as _t
from feedwatch.redact import redact_url
from feedwatch.store import open_store
from feedwatch.store.base import AlertRecord, FeedRecord, alert_feed_name
from feedwatch.textdiff import changed_words

if TYPE_CHECKING:
    from feedwatch.match import CompiledRule, RegexBudget, RuleExplanation

# The fetcher, parser and matcher (httpx, feedparser, regex) are imported when the
# command runs: the cli builds every command's parser on each start.

__all__ = ["Item", "add_arguments", "run"]

MAX_SHOWN = 5  # entries explained in full when ENTRY matches several


# --------------------------------------------------------------------------
# What the state and the body say about one entry
# --------------------------------------------------------------------------


@dataclass
class Item:
    identity: str
    current: EntrySnapshot | None  # in the body fetched now
    stored: StoredEntry | None  # the state before this (re-keyed to the policy in use)
    status: str  # new | updated | unchanged | silent | absent | stored | duplicate
    change: Change | None = None
    changes: dict[str, FieldChange] = field(default_factory=dict)
    silent_reason: str | None = None
    position: int = 0  # in the body (document order), or the stored order
    # the row the state still holds for it, though it left the feed longer than
    # `retention` ago: the next poll forgets it (``diff.within_retention``)
    expired: StoredEntry | None = None
    # its version against the feed's rules, and whether one matched (``_rules``)
    explained: tuple[list[RuleExplanation], bool] | None = field(default=None, repr=False)

    @property
    def version(self) -> EntrySnapshot:
        """The version rules are judged on: the current one, else the stored one."""
        if self.current is not None:
            return self.current
        assert self.stored is not None
        s = self.stored
        return EntrySnapshot(
            entry_id=s.entry_id,
            title=s.title,
            link=s.link,
            published=s.published,
            updated=s.updated,
            summary=s.summary,
            content=s.content,
        )

    @property
    def title(self) -> str:
        return self.version.title

    @property
    def when(self) -> datetime | None:
        v = self.version
        times = [t for t in (v.updated, v.published) if t is not None]
        return max(times) if times else None


@dataclass
class Analysis:
    feed_name: str  # as shown: a removed feed's as the state keeps it (shown_name)
    feed: FeedConfig | None
    record: FeedRecord | None
    items: list[Item]
    parsed: ParsedFeed | None
    result: DiffResult | None
    fetch_note: str  # what happened when fetching now
    alerts: list[AlertRecord]
    now: datetime
    # duplicates = "skip": duplicate key -> the sinks an alert of it went to -> that alert
    claimed: dict[str, dict[str, str]] = field(default_factory=dict)
    configured: frozenset[str] = frozenset()  # the config's feeds (the others: removed)
    # the next poll's cut (``PollCommit.alerts_before``: now less the global retention):
    # an alert made before it with nothing pending is one that poll drops and makes again
    alerts_before: datetime | None = None
    # the feed's rules, compiled at their first use, and the regex time left to them
    compiled: tuple[CompiledRule, ...] | None = None
    budget: RegexBudget | None = None


def _read_as_stored(old: StoredEntry, new: EntrySnapshot) -> bool:
    """Whether each text field of ``new`` that differs from ``old``'s is what the release
    that stored ``old`` read of it (``diff._was``): the same text, as it stored it."""
    for f in ("title", "summary", "content"):
        stored = _comparable(getattr(old, f))
        if stored == _comparable(getattr(new, f)):
            continue
        if not any(stored == _comparable(was) for was in _was(old, new, f)):
            return False
    return True


def _read_otherwise(old: StoredEntry) -> str:
    """Why ``old``'s text, stored by an earlier release, is the entry's (``_read_as_stored``)."""
    lost = (
        "an element named like one whose text is dropped (svg-icon, title-bar), or a head,"
        " xml or svg left open"
    )
    v5 = (
        "read escaped markup in HTML as tags (Vec&lt;u8&gt; as Vec), joined a footnote"
        " marker to the word before it (Dnipro1) or read a MathML annotation"
    )
    v6 = (
        "read again as tags what decoding made of a field without a tag of its own, a"
        " lone one too (the &lt;dialog&gt; element as the element), or read ruby's"
        " readings into the words they annotate (北きた朝ちょう鮮せん)"
    )
    if old.fingerprint.startswith("v7:"):
        return (
            "it was stored under fingerprint v7, which read a bare & in a feed that is not"
            " well-formed XML as an entity reference (AT&T wins as AT&T; wins): its text as"
            " that release read it is the same"
        )
    if old.fingerprint.startswith("v6:"):
        stored = f"it was stored under fingerprint v6, which {v6}"
    elif old.fingerprint.startswith("v5:"):
        stored = f"it was stored under fingerprint v5, which {v5}"
    elif old.fingerprint.startswith("v4:"):
        stored = f"it was stored under fingerprint v4, which lost the text after {lost}"
    else:
        stored = (
            "it was stored by a release before fingerprint v4, which lost the text after a"
            f" self-closed svg icon (or xml, head), or after {lost}"
        )
        if _legacy(old):
            stored += (
                " (the first releases of v1: or after a tag quoted in the text, an escaped"
                " <script>, <style> or <title>)"
            )
    if not old.fingerprint.startswith(("v5:", "v6:")):
        stored += f" (or, as v5, {v5})"
    if not old.fingerprint.startswith("v6:"):
        stored += f" (and, as v6, {v6})"
    return (
        f"{stored}: its text as that release read it is the same (an edit in the text it"
        " lost, made before this poll, is not seen: once)"
    )


def _silent_reason(
    feed: FeedConfig, result: DiffResult, old: StoredEntry, new: EntrySnapshot
) -> str:
    ts_moved = old.published != new.published or old.updated != new.updated
    text_changed = any(
        comparable_text(getattr(old, f)) != comparable_text(getattr(new, f))
        for f in ("title", "summary", "content")
    )
    mode = feed.settings.updates
    if (ts_moved or text_changed) and stale_copy(
        feed.name, old.identity, old, new, entry_fingerprint(new)
    ):
        return (
            "it is back to the version it was first seen as, its times moving back (a stale"
            " copy from another server or a cache, which feeds flip from and to): stored"
            " silently"
        )
    ignore = compile_ignore(feed.settings.ignore_text)
    # Texts that differ as written, not as read: no edit (diff._was, diff._moved_text).
    for same_text, what in (
        (
            lambda: all(
                _comparable(getattr(old, f)) == _comparable(getattr(new, f)) for f in TEXT_FIELDS
            ),
            "its text differs only by characters no reader sees (a soft hyphen, a zero-width"
            " space, a word joiner, a byte order mark, a direction mark), which is not an edit",
        ),
        (lambda: _read_as_stored(old, new), _read_otherwise(old)),
        (
            lambda: _stored_in_mojibake(old, new),
            "its text was stored in mojibake (a release before read a UTF-8 body labelled"
            " windows-1252 or ISO-8859-15 in that encoding, or one with a stray byte that"
            " is not UTF-8 so): the same text, read right now",
        ),
        (
            lambda: _moved_text(old, new, ignore),
            "its text only moved between summary and content (the feed's format or layout"
            " changed), which is not an edit",
        ),
    ):
        if text_changed and same_text():
            if not ts_moved:
                return f"{what}: stored silently"
            text_changed = False  # the rest as for a moved timestamp alone
    if (
        text_changed
        and ignore is not None
        and not _text_changed(old, new, entry_fingerprint(new), ignore)
    ):
        what = "its text changed only in what ignore_text cuts out"
        if not ts_moved:
            return f"{what} ({', '.join(map(show_term, ignore.terms))}): stored silently"
        text_changed = False  # the rest as for a moved timestamp alone
    if ts_moved and not text_changed and result.churn:
        return (
            "timestamp churn: every known entry of the feed was re-stamped in this body "
            "with no text change, so the new times are stored silently"
        )
    if ts_moved and not text_changed and _reread(old, new):
        return (
            "its stored times are its date as releases before read it (AM/PM dropped, a zone"
            " name after an ISO date as UTC, an ISO date in the process's local zone): the"
            " same times read right now, stored silently"
        )
    if ts_moved and not text_changed and _read_26(old, new):
        return (
            "its stored times are its date as releases before read it (a date without its"
            " day on the day of the poll, a zone beyond 14 hours as written): the same"
            " date read right now (none, or its zone as UTC), stored silently"
        )
    if ts_moved and not text_changed and old.identity in result.stamped:
        return (
            "its times moved with the time of the fetch (the feed stamps its entries when"
            " they are requested, as it did when this version was stored), its text did"
            " not: stored silently"
        )
    if ts_moved and not text_changed and mode == "content":
        return 'updates = "content": a moved timestamp alone is not an update'
    if text_changed and not ts_moved and mode == "timestamp":
        return 'updates = "timestamp": a text change alone is not an update'
    if not ts_moved and not text_changed:
        was = dict((n, o) for o, n in result.rekeys).get(old.identity)
        if was is not None and was in misdecoded_keys(old.identity):
            return (
                f"its {'id' if was.startswith('g:') else 'link'} was stored in mojibake (it was"
                f" {was[2:]}: a release before read a UTF-8 body labelled windows-1252,"
                " ISO-8859-1 or -15 in that encoding), the same entry read right now, its text"
                " unchanged: stored silently"
            )
        if was is not None and was.startswith("g:") and old.identity.startswith("g:"):
            moved = " and its link" if normalize_link(old.link) != normalize_link(new.link) else ""
            return (
                f"the same entry under a new id: its id{moved} changed (it was {was[2:]}),"
                " its text did not, which is not an update: stored silently"
            )
        if normalize_link(old.link) != normalize_link(new.link):
            return "only its link changed, which is not an update: stored silently"
        if old.entry_id != new.entry_id:
            return "only its id came or changed, which is not an update: stored silently"
        return "its stored fingerprint is from another version: refreshed silently"
    return "stored silently"


def analyse(
    name: str,
    feed: FeedConfig | None,
    record: FeedRecord | None,
    stored: dict[str, StoredEntry],
    parsed: ParsedFeed | None,
    fetch_note: str,
    alerts: list[AlertRecord],
    now: datetime,
    bases: tuple[str, ...] = (),
) -> Analysis:
    items: list[Item] = []
    result: DiffResult | None = None
    if parsed is not None and feed is not None:
        # as the poll: rows that left the feed longer than `retention` ago are forgotten
        live = within_retention(stored, now - timedelta(seconds=feed.settings.retention))
        expired = {k: r for k, r in stored.items() if k not in live}
        result = diff(
            name,
            live,
            parsed.entries,
            settings=feed.settings,
            identity=record.identity if record else IdentityState(),
            baselined=record.baselined if record else False,
            now=now,
            bases=bases,
            previous=record.last_success if record else None,
        )
        current = dict(live)
        for old_key, new_key in result.rekeys:
            row = current.pop(old_key, None)
            if row is not None:
                current[new_key] = replace(row, identity=new_key)
        for row in result.kept:  # the row a re-key collision kept, as compared
            current[row.identity] = row
        changes = {c.identity: c for c in result.changes}
        upserted = {u.identity for u in result.upserts}
        seen: set[str] = set()
        dropped = set(result.dropped)
        for pos, e in enumerate(parsed.entries):
            key = (
                result.identities[pos]
                if len(result.identities) == len(parsed.entries)
                else identity_for(e, result.identity.policy)
            )
            # of several entries with one identity, the one the diff compared is the entry
            if pos in dropped:
                items.append(
                    Item(
                        identity=key,
                        current=e,
                        stored=None,
                        status="duplicate",
                        position=pos,
                    )
                )
                continue
            seen.add(key)
            old = current.get(key)
            item = Item(identity=key, current=e, stored=old, status="unchanged", position=pos)
            if old is None:
                item.status = "new"
                item.change = changes.get(key)
                item.expired = expired.get(key)
            elif key in changes:
                item.status = "updated"
                item.change = changes[key]
                item.changes = dict(changes[key].changes)
            elif key in upserted:
                item.status = "silent"
                item.changes = _field_changes(old, e)
                item.silent_reason = _silent_reason(feed, result, old, e)
            items.append(item)
        rest = sorted(
            (s for k, s in current.items() if k not in seen),
            key=lambda s: s.last_seen,
            reverse=True,
        )
        gone = sorted(
            (s for k, s in expired.items() if k not in seen and k not in current),
            key=lambda s: s.last_seen,
            reverse=True,
        )
        for pos, s in enumerate([*rest, *gone], start=len(items)):
            items.append(
                Item(
                    identity=s.identity,
                    current=None,
                    stored=s,
                    status="absent",
                    position=pos,
                    expired=s if s.identity in expired else None,
                )
            )
    else:
        ordered = sorted(stored.values(), key=lambda s: (s.last_seen, s.first_seen), reverse=True)
        for pos, s in enumerate(ordered):
            items.append(
                Item(identity=s.identity, current=None, stored=s, status="stored", position=pos)
            )
    return Analysis(name, feed, record, items, parsed, result, fetch_note, alerts, now)


def find(items: Sequence[Item], query: str) -> list[Item]:
    """Items whose identity, id, link or an enclosure's URL (its query aside: a CDN's
    token) is ``query``; else whose title contains it."""
    q = query.strip()
    q_link = normalize_link(q)
    q_enclosure = bare_enclosure_url(q) if "/" in q else ""
    exact = []
    for it in items:
        v = it.version
        if (
            it.identity == q
            or (v.entry_id is not None and v.entry_id.strip() == q)
            or (q_link is not None and v.link and normalize_link(v.link) == q_link)
            or (q_enclosure and q_enclosure in enclosure_urls(v))
        ):
            exact.append(it)
    if exact:
        return exact
    folded = _title_key(q)
    if not folded:
        return []
    return [it for it in items if folded in _title_key(it.title)]


def _title_key(text: str) -> str:
    """A title, or part of one looked for, as ``find`` compares them: as rule terms meet
    text (normalize_text: "izmir" is in "İzmir depremi", "O'Brien" in "O’Brien"), each run
    of white space one space."""
    from feedwatch.match import normalize_text

    return " ".join(normalize_text(text).split())


# --------------------------------------------------------------------------
# The verdict: does (did) it alert, and why (not)
# --------------------------------------------------------------------------


def _dated(e: EntrySnapshot | StoredEntry) -> str:
    """Which of its times max_age read: the published time, else the updated one."""
    return "published" if e.published is not None else "updated"


@dataclass
class Verdict:
    short: str  # a few words for the list
    lines: list[str]  # the full reasoning
    would_alert: bool = False


def _rules(a: Analysis, item: Item) -> tuple[list[RuleExplanation], bool]:
    """The item's version against each of the feed's rules, and whether one matched.

    Judged once per item, on rules compiled once for the whole command (a regex term
    that runs out of time is warned of once, as in the daemon), with one regex budget
    for every entry explained, as a poll has for its entries."""
    if item.explained is None:
        feed = a.feed
        if feed is None or not feed.rules:
            item.explained = ([], True)
        else:
            from feedwatch.match import RegexBudget, compile_rules, explain

            if a.compiled is None or a.budget is None:
                a.compiled = compile_rules(feed.rules)
                a.budget = RegexBudget(feed.name)
            exps = [explain(r, item.version, a.budget) for r in a.compiled]
            item.explained = (exps, any(e.matched for e in exps))
    return item.explained


def _alerts_for(a: Analysis, item: Item) -> list[AlertRecord]:
    if item.status == "duplicate":  # its identity's alerts are the other entry's
        return []
    if item.stored is None:
        return [r for r in a.alerts if r.identity == item.identity]
    # every alert of the entry has its thread (its `new` alert's id), under whatever
    # key it was made: a re-key since (this one's or an earlier release's) loses none
    thread = item.stored.new_alert_id
    return [
        r
        for r in a.alerts
        if r.identity in (item.identity, item.stored.identity)
        or thread in (r.thread_id, r.alert_id)
    ]


def _delivery_summary(records: Sequence[AlertRecord]) -> str:
    if not records:
        return ""
    states = [d.status for r in records for d in r.deliveries]
    if not states and any(r.duplicate_of for r in records):
        return "a duplicate, not sent"
    if not states:
        return "alerted (no sink)"
    if "dead" in states:
        return "alerted, delivery DEAD"
    if "pending" in states:
        return "alerted, delivery pending"
    return "alerted, delivered"


def verdict(a: Analysis, item: Item) -> Verdict:
    """Whether the next poll alerts ``item`` (or why it did not); when its rules
    decided and a regex term ran out of time on it, said so (``short`` too)."""
    consulted = False

    def rules() -> tuple[list[RuleExplanation], bool]:
        nonlocal consulted
        consulted = True
        return _rules(a, item)

    vd = _verdict(a, item, rules)
    if consulted:
        slow = list(
            dict.fromkeys(t.term for e in _rules(a, item)[0] for t in e.terms if t.timed_out)
        )
        if slow:
            vd.short += " (regex ran out of time)"
            many = len(slow) > 1
            vd.lines.append(
                f"the regex term{'s' if many else ''} {', '.join(map(repr, slow))} ran out of"
                f" time and count{'' if many else 's'} as missed here, as in a poll (0.1 s a"
                " field, 1 s for all the entries explained): simplify it"
            )
    return vd


def _verdict(
    a: Analysis, item: Item, rules: Callable[[], tuple[list[RuleExplanation], bool]]
) -> Verdict:
    feed = a.feed
    recorded = _alerts_for(a, item)
    lines: list[str] = []
    if feed is None:
        return Verdict(
            "feed not in config",
            ["the feed is no longer in the config: nothing about it alerts any more"],
        )
    s = feed.settings
    change = item.change
    if item.status in ("new", "updated"):
        kind = item.status
        if change is None:  # new but not offered for alerting
            assert a.result is not None
            if a.result.baseline:
                return Verdict(
                    "baseline",
                    [
                        "the state has no successful poll of this feed yet: the next poll is "
                        'its first, and first_poll = "baseline" records every entry without '
                        "alerting"
                    ],
                )
            if a.result.flood:
                return Verdict(
                    "flood",
                    [
                        f"{a.result.flood} new entries appear at once (more than flood_limit = "
                        f"{s.flood_limit} and over half the feed): they are recorded without an "
                        "alert each; one flood notice goes out instead"
                    ],
                )
            return Verdict("not alerted", ["this change is not offered for alerting"])
        if kind not in s.notify_on:
            return Verdict(
                f"notify_on excludes {kind}",
                [f"notify_on = {list(s.notify_on)} leaves out {kind!r} changes: no alert"],
            )
        if s.max_age > 0:
            when = change.entry.published or change.entry.updated
            if when is not None and (a.now - when).total_seconds() > s.max_age:
                return Verdict(
                    "older than max_age",
                    [
                        f"{_dated(change.entry)} {_t(when)}, longer ago than max_age "
                        f"({format_duration(s.max_age)}): backfills never alert"
                    ],
                )
        exps, matched = rules()
        if not matched:
            return Verdict("no rule matched", ["no rule matched this version: no alert"])
        aid = alert_id(
            feed.name,
            change.identity,
            change.kind,
            change.fingerprint,
            change.entry.published,
            change.entry.updated,
        )
        ms = [
            RuleMatch(e.rule, tuple(t.term for t in e.terms if t.hit and t.group != "not"))
            for e in exps
            if e.matched
        ]
        sinks = route(feed, ms)
        if any(r.alert_id == aid and not _expired(r, a.alerts_before) for r in recorded):
            return Verdict(
                "already alerted",
                [
                    f"this exact change was alerted before (id {aid}): an id once recorded never"
                    " alerts again (while its alert is kept: the global retention after it"
                    " was made, once delivered)"
                ],
            )
        taken: set[str] = set()
        if s.duplicates == "skip":
            key = duplicate_key(change.kind, change.entry, change.fingerprint)
            taken = set(a.claimed.get(key, {}) if key else ()) & set(sinks)
        left = [x for x in sinks if x not in taken]
        lines = []
        if taken:
            lines.append(
                f"an alert of this story (its link) already went to {', '.join(sorted(taken))}"
                ' (duplicates = "skip"): not sent there again'
            )
        if sinks and not left:
            lines.append(f"the next poll records it as {kind!r} (id {aid}) and sends it nowhere")
            return Verdict("a duplicate", lines)
        where = ", ".join(left) if left else "no sink (none configured)"
        lines.insert(0, f"the next poll alerts it as {kind!r} (id {aid}) to: {where}")
        return Verdict(f"would alert ({kind})", lines, would_alert=True)
    if item.status == "silent":
        return Verdict("stored silently", [f"changed, but {item.silent_reason}: no alert"])
    if item.status == "duplicate":
        why = (
            " (the same title, link and published time, or without a published time the"
            " same title, link and text: the same post twice)"
            if item.identity.startswith("c:")
            else ' (a feed repeating an id; id_policy = "link" tells them apart by their links)'
        )
        return Verdict(
            "another copy of one identity",
            [
                f"another entry of the feed has the same identity ({item.identity}): of"
                " several entries with one identity, the entry is the one likest its stored"
                " version (the same text, else link, else title, else times; else the"
                f" first), and this one is neither compared nor alerted{why}"
            ],
        )
    # unchanged, absent from the body, or no body to compare with
    if item.status == "unchanged":
        lines.append(
            f"nothing changed since it was last seen ({_t(item.stored.last_seen if item.stored else None)}): "
            "the next poll does not alert it"
        )
    elif item.status == "absent" and item.expired is not None:
        lines.append(
            f"not in the feed since {_t(item.expired.last_seen)}, longer than retention"
            f" ({format_duration(s.retention)}): the next poll forgets it, and if it comes"
            " back it is new"
        )
    elif item.status == "absent":
        lines.append(
            f"not in the feed now (last seen {_t(item.stored.last_seen if item.stored else None)}); "
            f"if it comes back unchanged within retention ({format_duration(s.retention)})"
            " it is not new and does not alert"
        )
    if recorded:
        return Verdict(_delivery_summary(recorded), [*lines, "it was alerted before: see below"])
    exps, matched = rules()
    if exps and not matched:
        lines.append("no alert recorded for it: its rules do not match it (see above)")
        return Verdict("no rule matched", lines)
    if item.stored is not None:
        first = item.stored.first_seen
        same_poll = sum(
            1 for it in a.items if it.stored is not None and it.stored.first_seen == first
        )
        earliest = min(
            (it.stored.first_seen for it in a.items if it.stored is not None), default=first
        )
        baseline = (
            first == earliest
            and s.first_poll == "baseline"
            and not any(r.created_at <= first for r in a.alerts)
        )
        if baseline:
            others = f", with {same_poll - 1} other entries" if same_poll > 1 else ""
            lines.append(
                f"no alert recorded for it: it was first seen {_t(first)}{others}, in the "
                "earliest poll the state remembers, which alerted nothing: the feed's first "
                'poll, a baseline (first_poll = "baseline" records what is there and alerts '
                'nothing; `forget` plus first_poll = "alert" would alert it)'
            )
            return Verdict("baseline", lines)
        flood = next(
            # the poll's notice: made at the time its entries were first seen
            (r for r in a.alerts if r.kind == "flood" and r.created_at == first),
            None,
        )
        if flood is not None:
            lines.append(
                f"no alert recorded for it: it was first seen {_t(first)} with more new entries"
                " than flood_limit, over half the feed, which were recorded without an alert"
                f" each; one flood notice went out instead (id {flood.alert_id})"
            )
            return Verdict("flood", lines)
        when = item.stored.published or item.stored.updated
        if s.max_age > 0 and when is not None and (first - when).total_seconds() > s.max_age:
            lines.append(
                f"no alert recorded for it: {_dated(item.stored)} {_t(when)}, already longer"
                " ago than"
                f" max_age ({format_duration(s.max_age)}) when it was first seen {_t(first)}:"
                " backfills never alert"
            )
            return Verdict("older than max_age", lines)
        lines.append(
            f"no alert recorded for it (first seen {_t(first)}): the rules, notify_on or "
            "max_age were different when it was new or updated (changed rules apply to "
            "later changes only), or its alert was pruned "
            f"{format_duration(s.retention)} after delivery (retention)"
        )
        return Verdict("never alerted", lines)
    return Verdict("unknown", lines or ["no state for it"])


# --------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------


def _identity_words(key: str, version: EntrySnapshot) -> str:
    if key.startswith("g:"):
        return "its guid"
    if key.startswith("l:"):
        return "its link"
    # told apart by its enclosures (identity.told_apart): what tells it from the others
    told = " and its enclosures' URLs" if key == entry_keys(version).told else ""
    if key.startswith("c:") and version.published is None:
        return f"a hash of its title, link and text{told} (it has no published time)"
    if key.startswith("c:"):
        return f"a hash of its title, link and published time{told}"
    return "?"


def _policy_line(a: Analysis) -> str:
    if a.feed is None:
        return "id policy: unknown (feed not in config)"
    configured = a.feed.settings.id_policy
    if configured != "auto":
        return f'id_policy = "{configured}"'
    in_state = a.record.identity if a.record and a.record.baselined else None
    parts = ['id_policy = "auto"']
    if in_state is not None:
        parts.append(f"in use: {in_state.policy}")
        if in_state.candidate:
            parts.append(f"{in_state.candidate} waits for a second poll to agree")
    if a.result is not None:
        now = a.result.identity
        if in_state is None or now.policy != in_state.policy:
            parts.append(f"this body: {now.policy}")
        elif now.candidate and now.candidate != (in_state.candidate if in_state else None):
            parts.append(f"this body suggests {now.candidate} (switches after two polls agree)")
    return ", ".join(parts)


def _header(out: TextIO, a: Analysis) -> None:
    w = out.write
    # a feed removed from the config: not the URL its state holds, whose ${VAR}s are
    # expanded and no longer known to be masked
    url = a.feed.url if a.feed else None
    w(f"Feed {show(a.feed_name)}" + (f" <{show(redact_url(url))}>" if url else "") + "\n")
    r = a.record
    if r is None:
        w("  state: never polled (nothing stored)\n")
    else:
        errors = ""
        if r.errors:
            errors = f", {r.errors} consecutive errors"
            if a.feed:  # (a removed feed's may hold a secret no longer registered)
                errors += f": {show(r.last_error)}"
        w(
            f"  state: last poll {_t(r.last_poll)}, last success {_t(r.last_success)}, "
            f"HTTP {r.http_status or '-'}, {r.entries} entries tracked{errors}"
            + (", gone (410)" if r.gone else "")
            + "\n"
        )
    w(f"  identity: {_policy_line(a)}\n")
    if a.result is not None and a.result.duplicates:
        n = a.result.duplicates
        w(
            f"  repeated: {n} {'entry' if n == 1 else 'entries'} of this body"
            f" {'has' if n == 1 else 'have'} the identity of another one: only one of each"
            " is compared and alerted (marked duplicate)\n"
        )
    w(f"  now: {a.fetch_note}\n")
    if a.feed is not None:
        rules = ", ".join(r.name for r in a.feed.rules) or "none (every entry alerts)"
        w(
            f"  rules: {rules}; sinks: {', '.join(a.feed.sinks) or 'none'}; "
            f'notify_on = {list(a.feed.settings.notify_on)}, updates = "{a.feed.settings.updates}"'
            + (
                f", max_age = {format_duration(a.feed.settings.max_age)}"
                if a.feed.settings.max_age
                else ""
            )
            + (
                f", ignore_text = [{show(', '.join(readable_config_string(t) for t in a.feed.settings.ignore_text))}]"
                if a.feed.settings.ignore_text
                else ""
            )
            + "\n"
        )


_STATUS_WORDS = {
    "new": "NEW (not in the state)",
    "updated": "UPDATED since last seen",
    "unchanged": "unchanged since last seen",
    "silent": "changed, stored silently",
    "absent": "not in the feed now (only in the state)",
    "stored": "in the state (not compared: no current body)",
    "duplicate": "another copy of an entry's identity (not compared)",
}


def _explain_item(out: TextIO, a: Analysis, item: Item) -> None:
    w = out.write
    v = item.version
    w(f"\nEntry: {show(v.title) or '(no title)'}\n")
    w(f"  id:       {show(v.entry_id) if v.entry_id else '(none)'}\n")
    w(f"  link:     {show(v.link) if v.link else '(none)'}\n")
    w(f"  identity: {show(item.identity)}  ({_identity_words(item.identity, v)})\n")
    st = item.stored
    if item.status == "duplicate":
        w("  state:    nothing of its own (its identity is another entry's)\n")
    elif st is None and item.expired is not None:
        w(
            f"  state:    forgotten: it left the feed (last seen {_t(item.expired.last_seen)})"
            " longer than retention ago; the next poll drops its row\n"
        )
    elif st is None:
        w("  state:    nothing stored for it\n")
    else:
        w(
            f"  state:    first seen {_t(st.first_seen)}, last seen {_t(st.last_seen)}; "
            f"published {_t(st.published)}, updated {_t(st.updated)}; fingerprint {st.fingerprint}\n"
        )
    if item.current is not None:
        c = item.current
        w(
            f"  now:      published {_t(c.published)}, updated {_t(c.updated)}; "
            f"fingerprint {entry_fingerprint(c)}\n"
        )
    w(f"  status:   {_STATUS_WORDS.get(item.status, item.status)}\n")
    for name, ch in item.changes.items():
        old, new = ch.old or "", ch.new or ""
        if name in ("title", "summary", "content") and max(len(old), len(new)) > 60:
            old, new = changed_words(old, new, 4)  # what changed, not two equal beginnings
        w(f"    {name}: {show(one_line(old, 100)) or '-'}  ->  {show(one_line(new, 100)) or '-'}\n")

    exps, _ = _rules(a, item)
    if a.feed is not None:
        which = "current" if item.current is not None else "stored"
        if not exps:
            w("  rules:    none: every entry alerts\n")
        else:
            w(f"  rules (against the {which} version):\n")
            for e in exps:
                w(f"    {e.rule}: {'MATCHED' if e.matched else 'no match'} ({show(e.reason)})\n")
                for t in e.terms:
                    where = f"hit in {', '.join(t.fields)}" if t.hit else "missed"
                    if t.timed_out:
                        where += " (regex ran out of time)"
                    w(f"      {t.group:3} {show_term(t.term)!s:30} {where}\n")
            if item.current is None and any(
                f in ("tags", "author") for e in exps for f in e.fields
            ):
                w("    (the state keeps no tags or author: terms on those fields miss here)\n")
    vd = verdict(a, item)
    w("  verdict:  " + "\n            ".join(show(line) for line in vd.lines) + "\n")

    recorded = _alerts_for(a, item)
    if recorded:
        w("  alerts recorded:\n")
        for r in recorded:
            matched = [m for m in r.payload.get("matched") or [] if isinstance(m, dict)]
            rules = "; ".join(
                f"{m.get('rule')}: {', '.join(m.get('terms') or [])}" for m in matched
            )
            w(
                f"    {_t(r.created_at)} {r.kind} {r.alert_id}"
                + (f" [{show(rules)}]" if rules else "")
                + "\n"
            )
            sent_to = {d.sink for d in r.deliveries}
            routed = (  # where the feed's rules send it, as alert.route decided
                route(a.feed, [RuleMatch(str(m.get("rule")), ()) for m in matched])
                if a.feed is not None
                else ()
            )
            skipped = [x for x in r.duplicate_of if x[0] not in sent_to and x[0] in routed]
            if not r.deliveries and not skipped:
                w("      no sink\n")
            for sink, other, other_feed in skipped:
                # (a removed feed's name is expanded: its ${VAR} values no longer known)
                who = show(other_feed) if other_feed in a.configured else "a removed feed"
                w(
                    f"      {sink}: not sent, a duplicate: {who}'s alert {other}"
                    ' went there first (duplicates = "skip")\n'
                )
            for d in r.deliveries:
                w(f"      {d.sink}: {delivery_detail(d)}\n")
    elif item.stored is not None or item.status not in ("new", "duplicate"):
        w("  alerts recorded: none\n")


def _brief(out: TextIO, a: Analysis, limit: int) -> None:
    w = out.write
    items = sorted(
        a.items,
        key=lambda it: (it.when is not None, it.when or datetime.min.replace(tzinfo=timezone.utc)),
        reverse=True,
    )
    if not items:
        w("\nno entries (nothing fetched now and nothing stored)\n")
        return
    w(f"\nLatest entries ({min(limit, len(items))} of {len(items)}), newest first:\n")
    rows = []
    for it in items[:limit]:
        when = it.when.strftime("%Y-%m-%d %H:%M") if it.when else "(no date)"
        rows.append(
            (it.status, verdict(a, it).short, when, show(one_line(it.title, 60)) or "(no title)")
        )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        w("  " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:3])) + "  " + r[3] + "\n")
    w(
        f"\nDetails: feedwatch explain {shlex.quote(show(a.feed_name))} "
        "'part of a title' (or an id or a link)\n"
    )


# --------------------------------------------------------------------------
# A feed whose state went with retention: only its alerts are left
# --------------------------------------------------------------------------


def _payload(r: AlertRecord) -> dict[str, object]:
    """The stored payload, or nothing for a row that does not decode (one damaged row
    must not hide the others)."""
    try:
        return dict(r.payload)
    except ValueError:
        return {}


def _alert_entry(r: AlertRecord) -> dict[str, object]:
    entry = _payload(r).get("entry")
    return entry if isinstance(entry, dict) else {}


def _alert_title(r: AlertRecord) -> str:
    return str(_alert_entry(r).get("title") or _payload(r).get("message") or "")


def _alerts_matching(alerts: Sequence[AlertRecord], query: str) -> list[list[AlertRecord]]:
    """The alerts of each entry whose identity, id or link is ``query`` (else whose
    title contains it), as ``find`` looks for an entry; newest entry first."""
    by_entry: dict[str, list[AlertRecord]] = {}
    for r in alerts:
        if r.identity is not None:
            by_entry.setdefault(r.identity, []).append(r)
    q = query.strip()
    q_link = normalize_link(q)

    def exact(r: AlertRecord) -> bool:
        e = _alert_entry(r)
        link = e.get("link")
        return (
            r.identity == q
            or str(e.get("id") or "").strip() == q
            or (q_link is not None and isinstance(link, str) and normalize_link(link) == q_link)
        )

    found = [rs for rs in by_entry.values() if any(exact(r) for r in rs)]
    folded = _title_key(q)
    if not found and folded:
        found = [
            rs for rs in by_entry.values() if any(folded in _title_key(_alert_title(r)) for r in rs)
        ]
    return found


def _alert_lines(out: TextIO, r: AlertRecord, indent: str) -> None:
    out.write(f"{indent}{_t(r.created_at)} {r.kind} {r.alert_id}\n")
    if not r.deliveries:
        out.write(f"{indent}  no sink\n")
    for d in r.deliveries:
        out.write(f"{indent}  {d.sink}: {delivery_detail(d)}\n")


def _dropped(out: TextIO, alerts: Sequence[AlertRecord], args: argparse.Namespace) -> int:
    """Explain a feed removed from the config whose row and entries `check` or the
    daemon dropped after ``retention``: its alerts stay (pending ones are still sent)."""
    w = out.write
    # not in the config: as its (newest) alert's payload names it
    name = alert_feed_name(alerts[0].feed, alerts[0].payload, in_config=False)
    w(f"Feed {show(name)}\n")
    w(
        "  state: dropped: the feed is not in the config and its entries went with"
        f" retention; {len(alerts)} alerts kept (pending deliveries are still sent)\n"
    )
    w("  now: not in the config any more: nothing about it alerts any more\n")
    if not args.entry:
        w(f"\nLatest alerts ({min(args.limit, len(alerts))} of {len(alerts)}), newest first:\n")
        for r in alerts[: args.limit]:
            title = show(one_line(_alert_title(r), 60)) or "(no title)"
            w(f"  {_t(r.created_at)}  {r.kind:<8} {title}\n")
            for d in r.deliveries:
                w(f"      {d.sink}: {delivery_detail(d)}\n")
        w(
            f"\nDetails: feedwatch explain {shlex.quote(show(name))} "
            "'part of a title' (or an id or a link)\n"
        )
        out.flush()
        return 0
    matches = _alerts_matching(alerts, args.entry)
    if not matches:
        out.flush()
        print(
            f"feedwatch: no alert of {show(name)!r} matches {args.entry!r} in the state (its"
            " entries went with retention; an id, a link or part of a title)",
            file=sys.stderr,
        )
        return 1
    for records in matches[:MAX_SHOWN]:
        e = _alert_entry(records[0])
        w(f"\nEntry: {show(_alert_title(records[0])) or '(no title)'}\n")
        w(f"  id:       {show(str(e.get('id'))) if e.get('id') else '(none)'}\n")
        w(f"  link:     {show(str(e.get('link'))) if e.get('link') else '(none)'}\n")
        w(f"  identity: {show(records[0].identity or '')}\n")
        w("  state:    dropped with the feed's (retention): only its alerts are left\n")
        w("  alerts recorded:\n")
        for r in records:
            _alert_lines(out, r, "    ")
    out.flush()
    return 0


# --------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Say why an entry did or did not alert: its identity, what the state holds, "
        "new/updated/unchanged against the feed now, the rules and terms that hit or "
        "missed, and the alerts recorded with each sink's delivery outcome. Reads the "
        "state, never writes it: one from an older feedwatch is refused until `check` "
        "or `run` upgrades it."
    )
    parser.add_argument("feed", metavar="FEED", help="the feed's name")
    parser.add_argument(
        "entry",
        metavar="ENTRY",
        nargs="?",
        help="an entry id, a link, part of a title, or an enclosure's URL (in the feed now)",
    )
    parser.add_argument(
        "--no-fetch",
        action="store_true",
        help="do not fetch the feed now: explain from the stored state only",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=15,
        metavar="N",
        help="entries listed without ENTRY, 1 or more (default 15)",
    )


def _reveal(value: str | Secret) -> str:
    return value.reveal() if isinstance(value, Secret) else value


async def _fetch(feed: FeedConfig) -> Fetched | NotModified | FetchFailed:
    from feedwatch.fetch import Fetcher

    s = feed.settings
    req = FetchRequest(
        url=feed.url,
        timeout=s.timeout,
        max_body=s.max_body,
        user_agent=s.user_agent,
        headers=tuple((k, _reveal(v)) for k, v in feed.headers),
        allow_private=feed.allow_private,
    )
    async with Fetcher(concurrency=1, per_host=1) as fetcher:
        return await fetcher.fetch(req)


def _expired(r: AlertRecord, before: datetime | None) -> bool:
    """An alert the next poll drops and makes again (the prune's condition)."""
    return (
        before is not None
        and r.created_at < before
        and not any(d.status == "pending" for d in r.deliveries)
    )


def _claims(config: Config, a: Analysis) -> dict[str, dict[str, str]]:
    """The sinks an alert of each change's story already went to (``duplicates =
    "skip"``), read from the state again: it was closed for the fetch."""
    if a.feed is None or a.feed.settings.duplicates != "skip" or a.result is None:
        return {}
    keys = [k for c in a.result.changes if (k := duplicate_key(c.kind, c.entry, c.fingerprint))]
    if not keys:
        return {}
    store = open_store(config.state, create=False, upgrade=False)
    if store is None:
        return {}
    try:
        return store.duplicate_claims(keys, a.alerts_before)
    finally:
        store.close()


def run(args: argparse.Namespace, out: TextIO, load: Callable[[], Config]) -> int:
    config = load()
    if args.limit < 1:  # (as `alerts --limit 0` is refused)
        print(
            f"feedwatch: --limit {args.limit}: give a number of entries, 1 or more",
            file=sys.stderr,
        )
        return 2
    name: str = args.feed
    feed = config.feed(name)
    store = open_store(config.state, create=False, upgrade=False)
    record: FeedRecord | None = None
    stored: dict[str, StoredEntry] = {}
    alerts: list[AlertRecord] = []
    if store is not None:
        try:
            record = store.feed(name, counts=True)
            if record is not None or feed is not None:
                stored = store.entries(name)
            alerts = store.alerts_for(name, limit=10_000)
        finally:
            store.close()
    if feed is None and record is None:
        if alerts:  # removed from the config, its row and entries gone with retention
            return _dropped(out, alerts, args)
        print(f"feedwatch: {unknown_feed(name, (f.name for f in config.feeds))}", file=sys.stderr)
        return 2

    now = datetime.now(timezone.utc)
    parsed: ParsedFeed | None = None
    bases: tuple[str, ...] = ()
    if feed is None:
        note = "not in the config any more: explained from the stored state"
    elif args.no_fetch:
        note = "not fetched (--no-fetch): explained from the stored state"
    else:
        outcome = asyncio.run(_fetch(feed))
        now = datetime.now(timezone.utc)
        if isinstance(outcome, FetchFailed):
            note = f"fetch failed ({show(outcome.reason)}): explained from the stored state"
        elif isinstance(outcome, NotModified):  # cannot happen without validators
            note = "304 Not Modified: explained from the stored state"
        else:
            from feedwatch.parse import parse_body

            body = parse_body(
                outcome.body,
                outcome.headers,
                url=outcome.url,
                max_entries=feed.settings.max_entries,
            )
            if not body.is_feed and not body.entries:
                why = "; ".join(body.warnings) or "no feed found"
                note = f"fetched, but not a feed ({show(why)}): explained from the stored state"
            else:
                parsed = body
                bases = id_bases(outcome.url, outcome.headers, record.url if record else None)
                warn = (
                    f"; parser warnings: {show('; '.join(body.warnings))}" if body.warnings else ""
                )
                note = (
                    f"fetched {_t(now)}: HTTP {outcome.status}, {len(body.entries)} entries "
                    f"(compared with the state as the next poll would, nothing written){warn}"
                )

    a = analyse(name, feed, record, stored, parsed, note, alerts, now, bases)
    if feed is None and record is not None:
        # removed from the config: its ${VAR} values are no longer known for secrets
        a.feed_name = record.shown_name
    a.alerts_before = now - timedelta(seconds=config.defaults.retention)
    a.claimed = _claims(config, a)
    a.configured = frozenset(f.name for f in config.feeds)
    _header(out, a)
    if not args.entry:
        _brief(out, a, args.limit)
        out.flush()
        return 0
    matches = find(a.items, args.entry)
    if not matches:
        out.flush()
        where = "in the feed now or in the state" if parsed is not None else "in the state"
        print(
            f"feedwatch: no entry of {show(a.feed_name)!r} matches {args.entry!r} {where} (an id, a link or part of a title)",
            file=sys.stderr,
        )
        return 1
    if len(matches) > 1:
        out.write(
            f"\n{len(matches)} entries match {show(args.entry)!r}"
            + (f"; the first {MAX_SHOWN}:" if len(matches) > MAX_SHOWN else ":")
            + "\n"
        )
    for item in matches[:MAX_SHOWN]:
        _explain_item(out, a, item)
    out.flush()
    return 0
