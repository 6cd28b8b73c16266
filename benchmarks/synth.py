"""Synthetic feeds for the benchmark: deterministic from a seed, evolving in rounds.

Feed ``i`` (0-based) is RSS 2.0 when ``i`` is even and Atom 1.0 when odd, with
20-50 entries and a body of about 5-60 KB. Every entry has an id, a unique link,
a title, a published date (Atom: also ``updated``) and an HTML summary (links,
bold text, an image, several paragraphs).

Round 0 is the initial state. Round K (K >= 1) is derived from round K-1: about
30% of the feeds gain 1-3 entries at the top (the oldest ones drop out, so the
count stays the same) and about 20% have 1-2 existing entries edited (a new
summary and a bumped ``updated``: ``<updated>`` in Atom, ``<atom:updated>`` in
RSS). ``advance`` returns the record of what changed, which is the truth the
benchmark checks every tool against.

Everything is pure Python and cheap: summary text is a slice of one fixed
pseudo-random corpus, so rendering 5,000 feeds takes a few seconds.
"""

from __future__ import annotations

import hashlib
import html
import random
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from time import gmtime, strftime

BASE_TIME = 1_736_121_600  # 2025-01-06T00:00:00Z: round 0; round K is K hours later
ROUND_SECONDS = 3600

_WORDS = (
    "the of and to in a is that for on with as was by at from his are be this an which "
    "or have had not but were they their one all been has there more when will would "
    "who so no if out up said what its about into than them can only other new some "
    "could time these two may then first any like now over such our also after most "
    "market council minister report storm bridge harbour festival energy prices rail "
    "union budget court election winter museum river school hospital airport research "
    "satellite missile treaty border drought harvest vaccine climate summit protest "
    "bank ferry tunnel strike league coach transfer orchestra novel archive glacier"
).split()


def _corpus() -> str:
    rng = random.Random(20250106)
    words = rng.choices(_WORDS, k=400_000)
    for i in range(0, len(words), 17):
        words[i] = words[i].capitalize()
    return " ".join(words)


CORPUS = _corpus()
_CORPUS_LIMIT = len(CORPUS) - 20_000


@dataclass(frozen=True)
class Entry:
    n: int  # serial number within its feed
    title: str
    published: int  # epoch seconds
    updated: int | None  # epoch seconds; None = never edited (RSS shows no updated)
    text_at: int  # offset of the summary text in CORPUS
    text_len: int
    rev: int = 0  # times edited


@dataclass
class Feed:
    index: int
    kind: str  # "rss" | "atom"
    title: str
    size: int  # entries kept
    text_len: int  # summary characters per entry (sets the body size)
    entries: list[Entry] = field(default_factory=list)  # newest first
    next_n: int = 0
    changed_at: int = BASE_TIME  # Last-Modified

    def path(self) -> str:
        return f"/f/{self.index:05d}"

    def link(self, e: Entry) -> str:
        return f"https://news{self.index % 37}.example/f{self.index:05d}/story-{e.n}"

    def guid(self, e: Entry) -> str:
        return f"urn:bench:f{self.index:05d}:e{e.n}"


@dataclass(frozen=True)
class RoundRecord:
    """What changed from round K-1 to K: (feed index, entry link) pairs."""

    round: int
    new: tuple[tuple[int, str], ...]
    edited: tuple[tuple[int, str], ...]
    changed_feeds: tuple[int, ...]


def _title(rng: random.Random) -> str:
    words = rng.choices(_WORDS[60:], k=rng.randint(4, 9))
    return " ".join(words).capitalize()


def _text_at(rng: random.Random) -> int:
    at = rng.randrange(0, _CORPUS_LIMIT)
    sp = CORPUS.find(" ", at)
    return sp + 1


def initial(n: int, seed: int, sizes: tuple[int, int] = (20, 50)) -> list[Feed]:
    """``sizes``: the least and most entries a feed carries (the benchmark's 20-50)."""
    feeds: list[Feed] = []
    for i in range(n):
        rng = random.Random(f"{seed}:feed:{i}")
        size = rng.randint(*sizes)
        # body ~ size * (markup + text_len): markup is ~430 bytes an entry in RSS and
        # ~505 in Atom; sizes lean towards the small end (mode at the smallest)
        markup = 430 if i % 2 == 0 else 505
        low = max(5_000, size * (markup + 80))
        target = int(rng.triangular(low, 60_000, low))
        text_len = max(60, int((target - 600) / size - markup) * 100 // 107)
        feed = Feed(
            index=i,
            kind="rss" if i % 2 == 0 else "atom",
            title=f"Bench feed {i}: {_title(rng)}",
            size=size,
            text_len=text_len,
        )
        t = BASE_TIME - rng.randint(60, 600)
        entries = []
        for n_ in range(size):
            entries.append(
                Entry(
                    n=size - 1 - n_,
                    title=_title(rng),
                    published=t,
                    updated=None,
                    text_at=_text_at(rng),
                    text_len=text_len + rng.randint(-text_len // 4, text_len // 4),
                )
            )
            t -= rng.randint(600, 7200)
        feed.entries = entries
        feed.next_n = size
        feeds.append(feed)
    return feeds


def advance(feeds: list[Feed], seed: int, k: int) -> tuple[list[Feed], RoundRecord]:
    """Round ``k`` from round ``k - 1`` (``feeds`` is not modified)."""
    now = BASE_TIME + k * ROUND_SECONDS
    out: list[Feed] = []
    new: list[tuple[int, str]] = []
    edited: list[tuple[int, str]] = []
    changed: list[int] = []
    for feed in feeds:
        rng = random.Random(f"{seed}:round:{k}:feed:{feed.index}")
        f = replace(feed, entries=list(feed.entries))
        grows = rng.random() < 0.30
        edits = rng.random() < 0.20
        if edits:
            count = rng.randint(1, 2)
            for pos in rng.sample(range(len(f.entries)), count):
                e = f.entries[pos]
                e2 = replace(
                    e,
                    updated=now - rng.randint(0, 600),
                    text_at=_text_at(rng),
                    rev=e.rev + 1,
                )
                f.entries[pos] = e2
                edited.append((f.index, f.link(e2)))
        if grows:
            for _ in range(rng.randint(1, 3)):
                e = Entry(
                    n=f.next_n,
                    title=_title(rng),
                    published=now - rng.randint(0, 3000),
                    updated=None,
                    text_at=_text_at(rng),
                    text_len=f.text_len + rng.randint(-f.text_len // 4, f.text_len // 4),
                )
                f.next_n += 1
                f.entries.insert(0, e)
                new.append((f.index, f.link(e)))
            # the oldest drop out; an edited entry that drops out is no longer expected
            dropped = {f.link(e) for e in f.entries[f.size :]}
            f.entries = f.entries[: f.size]
            edited = [x for x in edited if x[0] != f.index or x[1] not in dropped]
        if grows or edits:
            f.changed_at = now
            changed.append(f.index)
        out.append(f)
    return out, RoundRecord(k, tuple(new), tuple(edited), tuple(changed))


def rounds(
    n: int, seed: int, upto: int, sizes: tuple[int, int] = (20, 50)
) -> tuple[list[list[Feed]], list[RoundRecord | None]]:
    """States of rounds 0..upto and their records (None for round 0)."""
    states = [initial(n, seed, sizes)]
    records: list[RoundRecord | None] = [None]
    for k in range(1, upto + 1):
        s, r = advance(states[-1], seed, k)
        states.append(s)
        records.append(r)
    return states, records


# ----------------------------------------------------------------------
# Rendering


def _summary_html(feed: Feed, e: Entry) -> str:
    text = CORPUS[e.text_at : e.text_at + e.text_len]
    cut1 = text.find(" ", len(text) // 3)
    cut2 = text.find(" ", 2 * len(text) // 3)
    if cut1 < 0 or cut2 < 0:
        cut1 = cut2 = len(text)
    a, b, c = text[:cut1], text[cut1:cut2], text[cut2:]
    w = a.split(" ", 3)
    if len(w) >= 4:
        a = f'{w[0]} {w[1]} <a href="{feed.link(e)}?ref=rss">{w[2]}</a> {w[3]}'
    edit = f"<p><i>Updated (revision {e.rev}).</i></p>" if e.rev else ""
    return (
        f"<p>{a}</p><p><b>{b[:40]}</b>{b[40:]}</p>"
        f'<p><img src="https://img.example/{feed.index}/{e.n}.jpg" alt="" width="600"/>{c}</p>'
        f"{edit}"
    )


def _rfc822(t: int) -> str:
    return formatdate(t, usegmt=True)


def _iso(t: int) -> str:
    return strftime("%Y-%m-%dT%H:%M:%SZ", gmtime(t))


def render(feed: Feed) -> bytes:
    if feed.kind == "rss":
        return _render_rss(feed)
    return _render_atom(feed)


def _render_rss(feed: Feed) -> bytes:
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/">\n<channel>\n'
        f"<title>{html.escape(feed.title)}</title>\n"
        f"<link>https://news{feed.index % 37}.example/f{feed.index:05d}/</link>\n"
        "<description>Synthetic feed for the feedwatch benchmark</description>\n"
        "<language>en</language>\n"
        f"<lastBuildDate>{_rfc822(feed.changed_at)}</lastBuildDate>\n"
    ]
    for e in feed.entries:
        upd = f"<atom:updated>{_iso(e.updated)}</atom:updated>\n" if e.updated else ""
        parts.append(
            "<item>\n"
            f"<title>{html.escape(e.title)}</title>\n"
            f"<link>{feed.link(e)}</link>\n"
            f'<guid isPermaLink="false">{feed.guid(e)}</guid>\n'
            f"<pubDate>{_rfc822(e.published)}</pubDate>\n"
            f"{upd}"
            "<dc:creator>Bench Desk</dc:creator>\n"
            "<category>news</category>\n"
            f"<description><![CDATA[{_summary_html(feed, e)}]]></description>\n"
            "</item>\n"
        )
    parts.append("</channel>\n</rss>\n")
    return "".join(parts).encode("utf-8")


def _render_atom(feed: Feed) -> bytes:
    updated = max((e.updated or e.published) for e in feed.entries)
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<feed xmlns="http://www.w3.org/2005/Atom">\n'
        f"<title>{html.escape(feed.title)}</title>\n"
        f'<link href="https://news{feed.index % 37}.example/f{feed.index:05d}/"/>\n'
        f"<id>urn:bench:f{feed.index:05d}</id>\n"
        f"<updated>{_iso(updated)}</updated>\n"
    ]
    for e in feed.entries:
        parts.append(
            "<entry>\n"
            f"<title>{html.escape(e.title)}</title>\n"
            f'<link rel="alternate" href="{feed.link(e)}"/>\n'
            f"<id>{feed.guid(e)}</id>\n"
            f"<published>{_iso(e.published)}</published>\n"
            f"<updated>{_iso(e.updated or e.published)}</updated>\n"
            "<author><name>Bench Desk</name></author>\n"
            '<category term="news"/>\n'
            f'<summary type="html">{html.escape(_summary_html(feed, e), quote=False)}</summary>\n'
            "</entry>\n"
        )
    parts.append("</feed>\n")
    return "".join(parts).encode("utf-8")


def etag(body: bytes) -> str:
    return '"' + hashlib.sha1(body).hexdigest()[:20] + '"'


def http_date(t: int) -> str:
    return formatdate(t, usegmt=True)
