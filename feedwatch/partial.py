"""Parse only the items whose bytes changed since the last poll; the result equals ``parse_body``.

feedparser costs ~0.5 ms per item, in Python, so a changed feed of 40 items where
one item is new costs 40 times what that item alone would. A fast byte-level pass
splits an XML body into its *head* (everything outside the top-level
``<item>``/``<entry>`` elements: the root and the channel) and the raw bytes of
each item. The cache kept from the previous body maps each item's hash to its
parsed ``EntrySnapshot``. When the cache's *context key* matches, feedparser is
handed (through ``parse.parse_xml_detail``, so the entity guard, the encoding
rules and every conversion are parse_body's own) the body with the cached items
cut out, and the entries are put back together in document order. How the bytes are
read (``parse.decoding``: a body labelled windows-1252 that is UTF-8) is decided once,
from the whole body, and the part is read so (its bytes alone might be valid UTF-8, or
not, where the whole body's are not, or are); that decision is in the context key.

Why that equals a full parse. An item's snapshot depends on its own bytes and its
context: the headers and URL (relative links, encoding), the markup of the head
(the XML declaration, namespace declarations, ``xml:base``/``xml:lang`` of its
ancestors, the root that fixes the format version) and where it sits among the
head's elements. The context key hashes all of that: the head's tags and
processing instructions in order with a marker where each run of items sits, but
not its text (a channel's ``<lastBuildDate>`` changes on every change, and no
text of the head reaches an entry's fields). An item leaves no state behind in
feedparser for the next one, except through a namespace declaration or a
feed-level element inside it: such items are refused (``_item_ok``), and
feedparser must find exactly one entry per item. Well-formedness is per piece:
the head and the new items are parsed now, every cached item was parsed without
a warning in the same context, so the whole is well-formed and decodes as the
same encoding (only encodings where every byte below 0x80 is ASCII are allowed).

Whenever that argument might not hold, this is a full ``parse_body``: JSON
Feed, a byte-order mark or a non-ASCII-compatible encoding, a DOCTYPE or an
ENTITY, items that nest or do not close, a processing instruction holding
markup, items outside the root/channel, more items than ``max_entries``, any
warning from feedparser beyond "content type is not XML" (now or when the item
was cached), an entry that failed to convert, a count of entries that is not the
count of items, a cache that does not decode. Nothing here raises.

The cache (``None`` = keep none) is text behind a magic and a CRC-32: a JSON
header line (with the digest of the body it was made from, and the identity
policies under which that body's identities were distinct), then one line per
item, ``<hash> <JSON keys>\t<JSON snapshot>``; an unchanged item's line is copied
as it is, so only new items are serialised. The keys (``identity.entry_keys``:
fingerprint, normalised link, identities) go with the parse, so neither the main
process nor this one hashes an unchanged item again; the format names
``KEYS_VERSION``, so a cache of other keys is not used. An unchanged item's
snapshot is decoded only when read (``CachedEntries``): when the cache was made
from the body the state last committed, its entries are ``settled``
(``model.Settled``) and a poll's comparison reads none of them. It is not
compressed: zlib cost more CPU (~0.25 ms a feed) than parsing a changed item.
No pickle: decoding it runs no code; a cache that fails its CRC is not used.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import json
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, overload

import feedparser

from feedwatch import parsecache
from feedwatch.identity import KEYS_VERSION, distinct_under, entry_keys
from feedwatch.model import Enclosure, EntryKeys, EntrySnapshot, ParsedFeed, Settled
from feedwatch.parse import (
    _ENTRY_TAG,
    PARSE_VERSION,
    Decoding,
    decoding,
    parse_body,
    parse_xml_detail,
)

__all__ = ["CACHE_FORMAT", "CachedEntries", "parse_cached", "parse_incremental", "split_items"]

# 4: the feed's author in the header; 5: an entry's zone (its line); 6: its texts as
# read before fingerprint v4 (``EntrySnapshot.earlier``, its line); 7: and as v4 read
# them (``earlier`` two readings); 8: its published
# time as read before (``EntrySnapshot.misread``, its line); 9: and as the first
# releases of v1 (three readings); 10: and as v5 read them (four readings); 11: its
# times as parse version 22 read them (``EntrySnapshot.reread``, its line); 12: and as
# parse version 26 read them (``EntrySnapshot.read_26``)
CACHE_FORMAT = 12
_FORMAT = f"{CACHE_FORMAT}/{KEYS_VERSION}"
_MAGIC = b"FWPC1\n"


# Entry start/end tags, skipping CDATA sections, comments and processing
# instructions (parse._ENTRY_SCAN plus PIs); each construct must be closed.
# (The unrolled loops run in the regex engine's fast path: "[^\]]*" and the like.)
def _scan(tag: bytes) -> re.Pattern[bytes]:
    return re.compile(
        rb"<(?:(?P<cdata>!\[CDATA\[[^\]]*(?:\](?!\]>)[^\]]*)*(?:\]\]>|\Z))"
        rb"|(?P<comment>!--[^-]*(?:-(?!->)[^-]*)*(?:-->|\Z))"
        rb"|(?P<pi>\?[^?]*(?:\?(?!>)[^?]*)*(?:\?>|\Z))"
        rb"|(?P<start>" + tag + rb"(?=[\s/>])(?P<empty>[^<>]*/>)?)"
        rb"|(?P<end>/" + tag + rb"\s*>))",
        re.DOTALL,
    )


_SCAN = _scan(_ENTRY_TAG)
# The same without the optional namespace prefix, which every tag of the body was
# tried against (twice the cost of the pass): used when no ":item" or ":entry" is in
# the body, where no prefixed entry tag can be.
_SCAN_UNPREFIXED = _scan(rb"(?:item|entry)")
# Markup of the head (which is well-formed whenever the cache is used: it is always
# parsed). Group "tag" is a start/end/empty tag, "pi" a processing instruction.
_HEAD_TOKEN = re.compile(
    rb"<!\[CDATA\[.*?\]\]>|<!--.*?-->|(?P<pi><\?.*?\?>)"
    rb"|(?P<tag><(?P<close>/)?(?P<name>[^\s/<>!?]+)(?:[^<>\"']|\"[^\"]*\"|'[^']*')*>)",
    re.DOTALL,
)
_MARKER = b"\x00"  # where a run of items sits in the head (NUL is never in a usable body)
_DOCTYPE = re.compile(rb"<!DOCTYPE", re.IGNORECASE)
_FEED_LEVEL = re.compile(rb"<(?:[^\s/<>!?:]+:)?(?:channel|feed|rss)[\s/>]", re.IGNORECASE)
_XMLNS = re.compile(rb"""\bxmlns(?::[^\s=/>]+)?\s*=\s*(?:"([^"]*)"|'([^']*)')""")
# feedparser's own pattern for the declared encoding (encodings.RE_XML_PI_ENCODING)
_DECL_ENCODING = re.compile(rb"""^<\?.*encoding=['"](.*?)['"].*\?>""")
_STARTS_XML = re.compile(rb"\s*<")
_CHARSET = re.compile(r"""charset\s*=\s*["']?([^"';\s]*)""", re.IGNORECASE)
# Items may sit only in these (local names, lower case).
_CONTAINERS = frozenset({b"rss", b"channel", b"rdf", b"feed"})
# Encodings in which every byte below 0x80 is that ASCII character and decoding is
# per byte or per UTF-8 sequence: splitting at "<" is then splitting characters.
_SAFE_CODECS = frozenset(
    {"utf-8", "ascii", "koi8-r", "koi8-u", "mac-roman"}
    | {f"iso8859-{n}" for n in range(1, 17)}
    | {f"cp{n}" for n in range(1250, 1259)}
)
# Namespaces whose declaration sets feedparser's format version when none is set yet.
_VERSION_NAMESPACES = frozenset(
    {
        "http://my.netscape.com/rdf/simple/0.9/",
        "http://purl.org/rss/1.0/",
        "http://www.w3.org/2005/atom",
    }
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SECOND = timedelta(seconds=1)


def _known_namespaces() -> frozenset[str]:
    from feedparser.mixin import _FeedParserMixin

    return frozenset(k.lower() for k in _FeedParserMixin.namespaces)


_KNOWN_NAMESPACES = _known_namespaces()


@dataclass(frozen=True)
class Split:
    """A body cut into its head and its items (spans into the body)."""

    items: tuple[tuple[int, int], ...]
    head: bytes  # the body without its items, a marker per run of items


def split_items(body: bytes) -> Split | None:
    """The items of an XML body and its head, or None when the body is unusual."""
    if b"\x00" in body or b"<!ENTITY" in body:
        return None
    items: list[tuple[int, int]] = []
    open_at = -1
    scan = _SCAN if b":item" in body or b":entry" in body else _SCAN_UNPREFIXED
    for m in scan.finditer(body):
        kind = m.lastgroup
        if kind == "start":  # (an "empty" group closes inside "start")
            if open_at >= 0:
                return None  # nested
            if m.group("empty") is not None:
                items.append(m.span())
            else:
                open_at = m.start()
        elif kind == "end":
            if open_at < 0:
                return None  # an end without a start
            items.append((open_at, m.end()))
            open_at = -1
        else:
            start, end = m.span()
            if not body.endswith((b"]]>", b"-->", b"?>"), start, end):
                return None  # never closed
            if kind == "pi" and body.find(b"<", start + 1, end) >= 0:
                return None  # parse._cut_entries would count a "<item" in it
    if open_at >= 0:
        return None
    parts: list[bytes] = []
    last = 0
    for start, end in items:
        gap = body[last:start]
        if last and not gap.strip():
            last = end  # the same run of items
            continue
        parts += (gap, _MARKER)
        last = end
    parts.append(body[last:])
    head = b"".join(parts)
    if _DOCTYPE.search(head):
        return None
    return Split(items=tuple(items), head=head)


def _skeleton(head: bytes) -> tuple[bytes, bool, bytes]:
    """The head's markup (tags, PIs, markers) without its text; whether every run of
    items sits in rss/channel/rdf:RDF/feed elements; the root's local name."""
    out: list[bytes] = []
    stack: list[bytes] = []
    placed = True
    root = b""
    pos = 0
    for seg in head.split(_MARKER):
        if pos:
            out.append(_MARKER)
            placed = placed and bool(stack) and all(n in _CONTAINERS for n in stack)
        pos += 1
        for m in _HEAD_TOKEN.finditer(seg):
            if m.group("pi") is not None:
                out.append(m.group(0))
            elif m.group("tag") is not None:
                tag = m.group(0)
                out.append(tag)
                name = m.group("name").rsplit(b":", 1)[-1].lower()
                if m.group("close"):
                    if stack:
                        stack.pop()
                elif not tag.endswith(b"/>"):
                    if not root:
                        root = name
                    stack.append(name)
    return b"\n".join(out), placed, root


def _encoding_ok(body: bytes, headers: Mapping[str, str]) -> bool:
    """Every encoding the body could be read as is ASCII-compatible, byte by byte.

    The caller saw "<" first: no byte-order mark, UTF-16/32 or EBCDIC."""
    names: list[str] = []
    decl = _DECL_ENCODING.match(body)
    if decl:
        names.append(decl.group(1).decode("ascii", "replace"))
    names += _CHARSET.findall(headers.get("content-type", ""))
    for name in names:
        try:
            if codecs.lookup(name).name not in _SAFE_CODECS:
                return False
        except LookupError:
            return False
    return True


def _item_ok(item: bytes, root: bytes) -> bool:
    """Whether parsing ``item`` leaves feedparser's state as it found it, so that the
    items after it parse the same whether it is there or not.

    Two things in an item do not: a feed-level element (``<channel>``, ``<feed>``,
    ``<rss>``: their handlers set the format version and "in the feed", which outlive
    the item), and a namespace declaration feedparser does not know (it maps later
    elements of that namespace by the first prefix seen) or that sets the version.
    """
    if _FEED_LEVEL.search(item):
        return False
    if b"xmlns" not in item:
        return True
    for m in _XMLNS.finditer(item):
        uri = (m.group(1) if m.group(1) is not None else m.group(2)).decode("utf-8", "replace")
        low = uri.lower()
        if "backend.userland.com/rss" in low:
            continue
        if low not in _KNOWN_NAMESPACES:
            return False
        if low in _VERSION_NAMESPACES and root not in (b"rss", b"feed"):
            return False
    return True


def _hash(data: bytes) -> bytes:
    # SHA-256 (hardware-accelerated here, faster than BLAKE2 on ~1 KB), 128 bits kept
    return hashlib.sha256(data).hexdigest()[:32].encode("ascii")


def _context_key(
    skeleton: bytes,
    headers: Mapping[str, str],
    url: str | None,
    max_entries: int,
    read_as: Decoding | None = None,
) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in (
        f"{CACHE_FORMAT}\n{PARSE_VERSION}\n{feedparser.__version__}\n{url or ''}\n{max_entries}",
        headers.get("content-type", ""),
        headers.get("content-location", ""),
        headers.get("content-language", ""),
        repr(read_as),  # how the whole body's bytes are read (parse.decoding)
    ):
        h.update(part.encode("utf-8", "surrogatepass") + b"\x00")
    h.update(skeleton)
    return h.hexdigest()


# --------------------------------------------------------------------------
# The cache blob
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cache:
    key: str
    head: str  # hash of the whole head, text included
    title: str | None
    link: str | None
    author: str | None  # the feed's, which its Atom entries without one inherit
    version: str
    warnings: tuple[str, ...]
    digest: str  # of the body it was made from ("" when not given)
    unique_under: frozenset[str]  # policies under which its entries' identities are distinct
    lines: dict[bytes, bytes]  # item hash -> its line


def _time(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    if dt.tzinfo is not timezone.utc or dt.microsecond:
        raise ValueError("not a whole-second UTC time")
    return (dt - _EPOCH) // _SECOND


def _encode_entry(e: EntrySnapshot, k: EntryKeys) -> bytes:
    """A cache line's body: the keys, a tab, the snapshot (JSON escapes every tab in a
    string, so the first tab ends the keys)."""
    keys = [k.fingerprint, k.entry_id, k.link, k.content, k.textless, k.told]
    row = [
        e.entry_id,
        e.title,
        e.link,
        e.author,
        _time(e.published),
        _time(e.updated),
        e.summary,
        e.content,
        list(e.tags),
        [[x.url, x.type, x.length] for x in e.enclosures],
        e.zone,
        None if e.earlier is None else [list(texts) for texts in e.earlier],
        _time(e.misread),
        None if e.reread is None else [_time(e.reread[0]), _time(e.reread[1])],
        None if e.read_26 is None else [_time(e.read_26[0]), _time(e.read_26[1])],
    ]
    dump = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))
    return (dump(keys) + "\t" + dump(row)).encode("utf-8")


def _opt_str(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise ValueError("not a string")


def _req_str(v: Any) -> str:
    if isinstance(v, str):
        return v
    raise ValueError("not a string")


def _decode_keys(lines: Sequence[bytes]) -> list[EntryKeys]:
    """The keys of cache lines, all in one JSON read; the snapshots stay undecoded."""
    rows = json.loads(b"[" + b",".join(line.partition(b"\t")[0] for line in lines) + b"]")
    if not isinstance(rows, list) or len(rows) != len(lines):
        raise ValueError("bad parse cache entries")
    out = []
    for row in rows:
        fp, key_id, key_link, key_content, textless, told = row
        if type(fp) is not str or type(key_id) is not str or type(key_content) is not str:
            raise ValueError("not a string")
        out.append(
            EntryKeys(
                fp, key_id, _opt_str(key_link), key_content, _opt_str(textless), _opt_str(told)
            )
        )
    return out


_new = object.__new__


def _snapshot(line: bytes) -> EntrySnapshot:
    """The snapshot of a cache line as ``_encode_entry`` wrote it (the CRC vouches for
    that; the shape is checked).

    Filled in without its frozen ``__init__`` (a third of the cost of reading an
    unchanged item back): the fields are the same, checked here instead."""
    tab = line.find(b"\t")
    if tab < 0:
        raise ValueError("bad parse cache line")
    row = json.loads(line[tab + 1 :])
    (
        eid,
        title,
        link,
        author,
        published,
        updated,
        summary,
        content,
        tags,
        encs,
        zone,
        was,
        mis,
        rr,
        r26,
    ) = row
    for v in (eid, link, author):
        if v is not None and type(v) is not str:
            raise ValueError("not a string")
    if zone is not None and type(zone) is not int:
        raise ValueError("not a zone offset")
    if mis is not None and type(mis) is not int:
        raise ValueError("not a time")
    # [published, updated] as parse version 22, and as parse version 26, read them
    reread, read_26 = _times_before(rr), _times_before(r26)
    texts, earlier = [title, summary, content], None
    if was is not None:  # [[title, summary, content] as v5, v4, before v4, early v1 read them]
        if type(was) is not list or len(was) != 4:
            raise ValueError("not the texts as read before")
        for read in was:
            if type(read) is not list or len(read) != 3:
                raise ValueError("not the texts as read before")
            texts += read
        earlier = (tuple(was[0]), tuple(was[1]), tuple(was[2]), tuple(was[3]))
    for v in texts:
        if type(v) is not str:
            raise ValueError("not a string")
    entry = _new(EntrySnapshot)
    entry.__dict__.update(
        entry_id=eid,
        title=title,
        link=link,
        author=author,
        published=None if published is None else _EPOCH + published * _SECOND,
        updated=None if updated is None else _EPOCH + updated * _SECOND,
        summary=summary,
        content=content,
        tags=tuple(tags),
        enclosures=tuple(Enclosure(url=u, type=t, length=n) for u, t, n in encs) if encs else (),
        zone=zone,
        earlier=earlier,
        misread=None if mis is None else _EPOCH + mis * _SECOND,
        reread=reread,
        read_26=read_26,
    )
    return entry


def _times_before(rr: Any) -> tuple[datetime | None, datetime | None] | None:
    """A cache line's [published, updated] as a release before read them."""
    if rr is None:
        return None
    if type(rr) is not list or len(rr) != 2:
        raise ValueError("not the times as read before")
    for t in rr:
        if t is not None and type(t) is not int:
            raise ValueError("not a time")
    return (
        None if rr[0] is None else _EPOCH + rr[0] * _SECOND,
        None if rr[1] is None else _EPOCH + rr[1] * _SECOND,
    )


class CachedEntries(Sequence[EntrySnapshot]):
    """The entries of a parse that reused the cache: an unchanged item's snapshot is
    decoded from its cache line when first asked for. A poll's comparison never asks
    for the settled ones (``model.Settled``), most of a changed feed; anything else
    sees a sequence equal to the tuple a full parse gives."""

    __slots__ = ("_items",)

    def __init__(self, items: list[EntrySnapshot | bytes]) -> None:
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, i: int) -> EntrySnapshot: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[EntrySnapshot, ...]: ...

    def __getitem__(self, i: int | slice) -> EntrySnapshot | tuple[EntrySnapshot, ...]:
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(len(self._items))))
        v = self._items[i]
        if isinstance(v, bytes):
            v = self._items[i] = _snapshot(v)
        return v

    def __iter__(self) -> Iterator[EntrySnapshot]:
        for i in range(len(self._items)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (CachedEntries, tuple, list)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


def _decode_cache(blob: bytes) -> _Cache:
    if not blob.startswith(_MAGIC):
        raise ValueError("not a feedwatch parse cache")
    crc, text = blob[len(_MAGIC) : len(_MAGIC) + 4], blob[len(_MAGIC) + 4 :]
    if int.from_bytes(crc, "big") != zlib.crc32(text):
        raise ValueError("parse cache fails its CRC")
    first, _, rest = text.partition(b"\n")
    header = json.loads(first)
    if not isinstance(header, list) or len(header) != 10 or header[0] != _FORMAT:
        raise ValueError("unknown parse cache format")
    _, key, head, title, link, version, warnings, digest, unique, author = header
    if not isinstance(warnings, list) or not isinstance(unique, list):
        raise ValueError("bad parse cache header")
    lines: dict[bytes, bytes] = {}
    if rest:
        for line in rest.split(b"\n"):
            h, sep, row = line.partition(b" ")
            if not sep or len(h) != 32:
                raise ValueError("bad parse cache line")
            lines[h] = row
    return _Cache(
        key=_req_str(key),
        head=_req_str(head),
        title=_opt_str(title),
        link=_opt_str(link),
        author=_opt_str(author),
        version=_req_str(version),
        warnings=tuple(_req_str(w) for w in warnings),
        digest=_req_str(digest),
        unique_under=frozenset(_req_str(p) for p in unique),
        lines=lines,
    )


def _encode_cache(
    key: str,
    head: str,
    feed: ParsedFeed,
    version: str,
    lines: Sequence[tuple[bytes, bytes]],
    digest: str | None,
    keys: Sequence[EntryKeys],
) -> bytes:
    header = json.dumps(
        [
            _FORMAT,
            key,
            head,
            feed.title,
            feed.link,
            version,
            list(feed.warnings),
            digest or "",
            distinct_under(keys),
            feed.author,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    seen: set[bytes] = set()
    out = [header]
    for h, row in lines:
        if h not in seen:
            seen.add(h)
            out.append(h + b" " + row)
    text = b"\n".join(out)
    return _MAGIC + zlib.crc32(text).to_bytes(4, "big") + text


# --------------------------------------------------------------------------
# The parse
# --------------------------------------------------------------------------


def parse_incremental(
    body: bytes,
    headers: Mapping[str, str],
    *,
    url: str | None,
    max_entries: int,
    cache: bytes | None,
    digest: str | None = None,
    basis: str | None = None,
) -> tuple[ParsedFeed, bytes | None]:
    """``parse_body(body, headers, url=url, max_entries=max_entries)``, reusing ``cache``
    (from the previous call for this feed) for unchanged items; returns the parsed
    feed and the cache to keep for the next call (None: keep none).

    ``digest``: this body's (``poll.body_hash``), written into the cache. ``basis``:
    the digest of the body the state last committed; when the cache was made from
    that body, the entries of its unchanged items are ``settled`` (``model.Settled``)."""
    try:
        feed, kept = _parse(body, headers, url, max_entries, cache, digest, basis)
    except Exception:  # a bug here must never cost more than a full parse
        feed, kept = parse_body(body, headers, url=url, max_entries=max_entries), None
    if feed.keys is None:
        feed = replace(feed, keys=tuple(entry_keys(e) for e in feed.entries))
    return feed, kept


def parse_cached(
    body: bytes,
    headers: Mapping[str, str],
    *,
    url: str | None,
    max_entries: int,
    cache_file: str | None,
    write: bool = True,
    digest: str | None = None,
    basis: str | None = None,
) -> ParsedFeed:
    """``parse_incremental`` with the cache in ``cache_file`` (feedwatch.parsecache),
    replaced by the new one when ``write``; runs where the parse runs (a worker), so
    the cache never passes through the main process. None: no cache."""
    cache = None if cache_file is None else parsecache.read(cache_file)
    feed, kept = parse_incremental(
        body,
        headers,
        url=url,
        max_entries=max_entries,
        cache=cache,
        digest=digest,
        basis=basis,
    )
    if cache_file is not None and write and kept != cache:
        parsecache.write(cache_file, kept)  # None: a cache that no longer applies goes
    return feed


@dataclass(frozen=True)
class _Doc:
    body: bytes
    headers: dict[str, str]
    url: str | None
    max_entries: int
    split: Split
    key: str
    head: str
    hashes: tuple[bytes, ...]
    placed: bool
    root: bytes
    digest: str | None
    read_as: Decoding  # how the whole body's bytes are read: its changed items alone too


def _parse(
    body: bytes,
    headers: Mapping[str, str],
    url: str | None,
    max_entries: int,
    cache: bytes | None,
    digest: str | None,
    basis: str | None,
) -> tuple[ParsedFeed, bytes | None]:
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    max_entries = max(0, max_entries)
    split = split_items(body) if _STARTS_XML.match(body) else None
    if split is None or len(split.items) > max_entries or not _encoding_ok(body, lower):
        return parse_body(body, headers, url=url, max_entries=max_entries), None
    skeleton, placed, root = _skeleton(split.head)
    read_as = decoding(body, lower)
    doc = _Doc(
        body=body,
        headers=lower,
        url=url,
        max_entries=max_entries,
        split=split,
        key=_context_key(skeleton, lower, url, max_entries, read_as),
        head=_hash(split.head).decode("ascii"),
        hashes=tuple(_hash(body[s:e]) for s, e in split.items),
        placed=placed,
        root=root,
        digest=digest,
        read_as=read_as,
    )
    old: _Cache | None = None
    if cache:
        try:
            old = _decode_cache(cache)
        except Exception:
            old = None
    if old is not None and old.key == doc.key:
        try:
            done = _from_cache(doc, old, settle=bool(basis) and old.digest == basis)
        except Exception:  # an entry of the cache that does not decode
            done = None
        if done is not None:
            return done
    return _full(doc)


def _usable(result: Any, items: int) -> bool:
    """A parse whose entries map one to one onto ``items`` items, with no warning that
    depends on more than the headers."""
    feed = result.feed
    return bool(
        result.strict
        and result.version
        and feed.is_feed
        and result.raw_entries == items
        and len(feed.entries) == items
        and not feed.dropped_entries
    )


def _full(doc: _Doc) -> tuple[ParsedFeed, bytes | None]:
    """A full parse; a cache of it when every item maps onto one entry."""
    result = parse_xml_detail(
        doc.body, doc.headers, url=doc.url, max_entries=doc.max_entries, read_as=doc.read_as
    )
    feed = result.feed
    if not (doc.placed and _usable(result, len(doc.hashes))):
        return feed, None
    body = doc.body
    if not all(_item_ok(body[s:e], doc.root) for s, e in doc.split.items):
        return feed, None
    keys = tuple(entry_keys(e) for e in feed.entries)
    feed = replace(feed, keys=keys)
    try:
        lines = [
            (h, _encode_entry(e, k)) for h, e, k in zip(doc.hashes, feed.entries, keys, strict=True)
        ]
        blob = _encode_cache(doc.key, doc.head, feed, result.version, lines, doc.digest, keys)
        return feed, blob
    except (ValueError, TypeError, UnicodeError):
        return feed, None


def _from_cache(doc: _Doc, old: _Cache, *, settle: bool) -> tuple[ParsedFeed, bytes | None] | None:
    """The parse from ``old`` plus the new items, or None to parse in full. ``settle``:
    ``old`` was made from the body the state last committed (``model.Settled``)."""
    body = doc.body
    changed = [i for i, h in enumerate(doc.hashes) if h not in old.lines]
    for i in changed:
        s, e = doc.split.items[i]
        if not _item_ok(body[s:e], doc.root):
            return None
    new_entries: Sequence[EntrySnapshot] = ()
    if changed or doc.head != old.head:
        # the body without the cached items
        pieces: list[bytes] = []
        last = 0
        is_changed = set(changed)
        for i, (s, e) in enumerate(doc.split.items):
            if i not in is_changed:
                pieces.append(body[last:s])
                last = e
        pieces.append(body[last:])
        result = parse_xml_detail(
            b"".join(pieces),
            doc.headers,
            url=doc.url,
            max_entries=doc.max_entries,
            read_as=doc.read_as,  # the whole body's reading, not the part's
        )
        if not _usable(result, len(changed)) or result.version != old.version:
            return None
        feed = result.feed
        if feed.author != old.author:
            return None  # the cached entries that inherit it would be out of date
        title, link, warnings = feed.title, feed.link, feed.warnings
        new_entries = feed.entries
    else:
        title, link, warnings = old.title, old.link, old.warnings
    kept = [old.lines[h] for h in doc.hashes if h in old.lines]
    cached_keys = iter(_decode_keys(kept))
    fresh = iter(new_entries)
    items: list[EntrySnapshot | bytes] = []
    keys: list[EntryKeys] = []
    lines: list[tuple[bytes, bytes]] = []
    for h in doc.hashes:
        line = old.lines.get(h)
        if line is None:
            entry = next(fresh)
            k = entry_keys(entry)
            line = _encode_entry(entry, k)
            items.append(entry)
        else:
            k = next(cached_keys)
            items.append(line)
        keys.append(k)
        lines.append((h, line))
    settled = None
    if settle:
        settled = Settled(
            indexes=frozenset(i for i, h in enumerate(doc.hashes) if h in old.lines),
            unique_under=old.unique_under,
        )
    parsed = ParsedFeed(
        title=title,
        link=link,
        author=old.author,
        entries=CachedEntries(items),
        is_feed=True,
        warnings=warnings,
        keys=tuple(keys),
        settled=settled,
    )
    return parsed, _encode_cache(doc.key, doc.head, parsed, old.version, lines, doc.digest, keys)
