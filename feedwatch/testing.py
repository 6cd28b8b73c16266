"""Fakes and builders shared by feedwatch's tests (and usable in yours).

Public on purpose: a fake clock you move by hand, entry builders, a sink that
records what it was given and can be told to fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from html import escape

from feedwatch.model import EntrySnapshot
from feedwatch.sinks.base import SendResult
from feedwatch.store.base import Delivery

T0 = datetime(2024, 11, 22, 10, 40, 17, tzinfo=timezone.utc)


class FakeClock:
    """A clock that moves only when told: ``clock()`` reads it, ``advance`` moves it."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0, **kw: float) -> datetime:
        self.now += timedelta(seconds=seconds, **kw)
        return self.now


def entry(
    n: int | str = 1,
    *,
    title: str | None = None,
    summary: str | None = None,
    content: str = "",
    link: str | None | bool = True,
    entry_id: str | None | bool = True,
    published: datetime | None = T0,
    updated: datetime | None = None,
    tags: Sequence[str] = (),
    author: str | None = None,
) -> EntrySnapshot:
    """An entry snapshot with sensible defaults derived from ``n``."""
    return EntrySnapshot(
        entry_id=f"urn:entry:{n}" if entry_id is True else (entry_id or None),
        title=title if title is not None else f"Entry {n}",
        link=f"https://example.org/{n}" if link is True else (link or None),
        author=author,
        published=published,
        updated=updated,
        summary=summary if summary is not None else f"Summary of entry {n}.",
        content=content,
        tags=tuple(tags),
    )


def rss(entries: Sequence[EntrySnapshot], *, title: str = "Test Feed") -> bytes:
    """An RSS 2.0 body for these entries (updated times as atom:updated)."""
    items = []
    for e in entries:
        parts = ["<item>"]
        if e.entry_id:
            parts.append(f'<guid isPermaLink="false">{escape(e.entry_id)}</guid>')
        if e.title:
            parts.append(f"<title>{escape(e.title)}</title>")
        if e.link:
            parts.append(f"<link>{escape(e.link)}</link>")
        if e.published:
            parts.append(f"<pubDate>{format_datetime(e.published, usegmt=True)}</pubDate>")
        if e.updated:
            parts.append(f"<atom:updated>{e.updated.strftime('%Y-%m-%dT%H:%M:%SZ')}</atom:updated>")
        if e.summary:
            parts.append(f"<description>{escape(e.summary)}</description>")
        for t in e.tags:
            parts.append(f"<category>{escape(t)}</category>")
        parts.append("</item>")
        items.append("".join(parts))
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"><channel>'
        f"<title>{escape(title)}</title><link>https://example.org/</link>"
        "<description>test</description>" + "".join(items) + "</channel></rss>"
    ).encode()


@dataclass
class RecordingSink:
    """A sink that records every batch; set ``fail_with`` to make it fail."""

    name: str = "recording"
    type: str = "recording"
    supports_digest: bool = True
    max_batch: int = 1
    batches: list[list[Delivery]] = field(default_factory=list)
    fail_with: SendResult | None = None

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        self.batches.append(list(deliveries))
        return self.fail_with or SendResult.success()

    async def aclose(self) -> None:
        pass

    @property
    def alert_ids(self) -> list[str]:
        return [d.alert_id for b in self.batches for d in b]
