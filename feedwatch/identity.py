"""Who an entry is, and whether its text is the same: identity keys, fingerprints, alert ids.

All hashing lives here so that a change to any of it is one versioned edit:
stored fingerprints carry their version, and a fingerprint of another version
is never taken as "content changed" (the diff compares the stored text then).
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import html.entities
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Literal
from urllib.parse import parse_qsl, unquote_plus, urlencode, urljoin, urlsplit, urlunsplit

from feedwatch.model import EntryKeys, EntrySnapshot, StoredEntry
from feedwatch.text import holds_hidden, visible_text

Policy = Literal["guid", "link", "content"]

FINGERPRINT_VERSION = "v8"
# v2 hashes text as v1 did, except a URL written in the text, hashed without its
# tracking and cache-busting parameters (comparable_text). The label marks a row
# written since fields declared plain keep their tag-like words ("Vec<u8>"):
# feedwatch.diff forgives a stored text that differs only by how an earlier version
# read such words in v1 rows only. v3: a URL written in the text ends at the first
# character beyond printable ASCII (v2 took the text after it, up to white space,
# for its last parameter's value), and every such URL, with a query or not, has its
# scheme and host lower-cased and the rest but those parameters as written (v2
# rewrote only one with a query, as normalize_link did: "/" path added, the query
# rebuilt where a parameter was dropped, so it differed from the same URL written
# without them); a row of an earlier label is compared by its stored text, so the
# new reading alerts nothing. v4 hashes as v3 does; it marks rows whose texts were read
# with "/>" ending an svg (feedwatch.text): a release before lost the text after a
# self-closed svg, xml or head, and feedwatch.diff takes a row of an earlier label
# whose text is the entry's as that release read it (``EntrySnapshot.earlier``) for
# the same text. v5 hashes as v4 does; it marks rows whose texts were read with a tag's
# name running to white space, "/" or ">", a head or an xml left open read as a tag,
# and an svg ended where a browser leaves it (feedwatch.text): v4 lost the text after
# <svg-icon>, <title-bar>, <head> or <xml> left open, and an open svg before </p>;
# feedwatch.diff takes a v4 row whose text is the entry's as v4 read it, and an older
# row whose text is the entry's as the releases before v4 read it, for the same text
# (``EntrySnapshot.earlier``). v6 hashes as v5 does; it marks rows whose texts were
# read with what decoding made of a field of markup of its own as text ("Vec&lt;u8&gt;"
# is "Vec<u8>"), a footnote marker parted from the word before it ("Dnipro 1") and a
# MathML annotation dropped (feedwatch.text): feedwatch.diff takes a v5 row whose text
# is the entry's as v5 read it for the same text, and an older row as above (each
# reading of ``EntrySnapshot.earlier`` is also without v6's); an entry keyed by its
# content is found under the key v5's reading gave it (``content_identity_at``). v7
# hashes as v6 does; it marks rows whose texts were read with what decoding made of a
# field without a tag of its own as text unless it holds HTML's structure ("the
# &lt;dialog&gt; element" is "the <dialog> element", feedwatch.text) and ruby's readings
# (<rt>, <rp>) dropped, not read into the words they annotate: feedwatch.diff takes a
# v6 row whose text is the entry's as v6 read it for the same text (v5 read such a
# field, and ruby, as v6 did: ``EntrySnapshot.earlier``'s first reading serves both), and
# an entry keyed by its content is found under the key that reading gave it. v8 hashes
# as v7 does; it marks rows whose texts were read with a bare "&" in a body that is not
# well-formed XML read as HTML5 reads it ("AT&T wins" where v7 read "AT&T; wins":
# feedwatch.parse._amps_as_html5_reads): feedwatch.diff takes a v7 row whose text is the
# entry's as v7 read it (``EntrySnapshot.loose``) for the same text, and an older row
# as above (``EntrySnapshot.earlier``, then read from the texts v7 read); an entry keyed
# by its content is found under the key either reading gave it. Ids
# hash a fingerprint as v1
# labels it (``_as_hashed``), so a change met under either label has one id: nothing
# alerts twice across the upgrade but a change of a text holding such a URL
# (docs/change-detection.md, "Fingerprint versions").
_SAME_HASH = ("v1:", "v2:", "v3:", "v4:", "v5:", "v6:", "v7:", "v8:")
# Names everything ``entry_keys`` derives (fingerprint, link normalisation, identity
# keys): stored keys of another version are not used (feedwatch.partial's cache).
# .2: a link's other query parameters kept as written when a tracking one is dropped.
# .3: the content key of an entry without a published time covers its text
# (``content_identity_at``), and ``EntryKeys.textless`` is the key without it.
# .4: an entry with an enclosure has the content key that tells it apart by the
# enclosures' URLs (``EntryKeys.told``). .5: every entry keyed by its content that has
# an enclosure is keyed so (``told_apart``), not only where content keys collide, so
# ``distinct_under`` (a parse cache's ``Settled.unique_under``) counts those keys.
KEYS_VERSION = f"{FINGERPRINT_VERSION}.5"

# Query parameters that say nothing about what a link points at: analytics tags
# and cache-busters. A link differing only by these is the same link.
_VOLATILE_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "msclkid",
        "mc_cid",
        "mc_eid",
        "igshid",
        "_ga",
        "_gl",
        "yclid",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "ncid",
        "cmpid",
        "_",
        "cb",
        "cachebust",
        "cachebuster",
        "nocache",
        "rnd",
    }
)


def normalize_space(text: str) -> str:
    return " ".join(text.split())


@functools.lru_cache(maxsize=16384)  # a diff asks ~4 times per entry; urlsplit is the cost
def normalize_link(link: str | None) -> str | None:
    """Canonical form of a link for comparing: lower-case scheme and host, no tracking params."""
    if not link:
        return None
    link = link.strip()
    if not link:
        return None
    try:
        parts = urlsplit(link)
    except ValueError:
        return link
    query = parts.query
    if query:
        # the other parameters as written: rebuilt (decoded and encoded again) they
        # read otherwise than the same link without a tracking parameter does
        # ("section=world/europe" became "section=world%2Feurope")
        pieces = query.split("&")
        kept = [piece for piece in pieces if not _volatile(piece)]
        if len(kept) != len(pieces):
            query = "&".join(piece for piece in kept if piece)
    netloc = parts.netloc.lower()
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", query, parts.fragment))


def _volatile(piece: str) -> bool:
    """Whether a query's ``name=value`` names a tracking or cache-busting parameter."""
    return _volatile_name(unquote_plus(piece.partition("=")[0]))


def _volatile_name(name: str) -> bool:
    name = name.lower()
    return name in _VOLATILE_PARAMS or name.startswith("utm_")


def _moved(link: str) -> tuple[str, str] | None:
    """An http(s) normalised link's host without a leading ``www.``, and the rest of it
    after the host; None for any other link."""
    for scheme in ("https://", "http://"):
        if link.startswith(scheme):
            rest = link[len(scheme) :]
            host, slash, path = rest.partition("/")
            return host.removeprefix("www."), slash + path
    return None


@functools.lru_cache(maxsize=16384)
def loose_link(link: str | None) -> str | None:
    """A normalised link (``normalize_link``) without what a site's move to https, or to
    or from ``www.``, changes in it: GUID churn's key, so an entry whose id is its
    permalink (Hugo, Ghost, Jekyll feeds) and moved with it is the same entry."""
    if not link:
        return None
    moved = _moved(link)
    return link if moved is None else "//" + moved[0] + moved[1]


def link_variants(link: str) -> tuple[str, ...]:
    """Every normalised link with ``link``'s ``loose_link`` (``link`` first): the rows a
    comparison reads as candidates for GUID churn."""
    moved = _moved(link)
    if moved is None:
        return (link,)
    host, rest = moved
    every = (f"{s}://{w}{host}{rest}" for s in ("https", "http") for w in ("", "www."))
    return (link, *(v for v in every if v != link))


def _h(*parts: str) -> str:
    digest = hashlib.sha256()
    for p in parts:
        digest.update(p.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


# a URL written in text: up to white space or what commonly closes it in prose. An IRI
# holds characters beyond ASCII ("/wiki/Köln", "?q=café"), and so may CJK text or an em
# dash that follows a URL without a space ("见https://x.org/r?utm_source=rss。死亡…"):
# ``_text_url`` ends a tracking parameter's value where a query cannot go on, and keeps
# what follows as the text's.
_URL_CHAR = r"[^<>\"')\]\s\x00-\x20\x7f]"
# what a query's value holds as written (RFC 3986, ASCII): past it, the URL has ended
_QUERY_CHARS = re.compile(r"[A-Za-z0-9\-._~%!$'()*+,;=:@/?]*")
# (the scheme alone ignores case: so would the class, and then not take "s", "k" or
# "i", whose other cases "ſ", "K" (Kelvin) and "ı" lie beyond ASCII)
_URL_IN_TEXT = re.compile(rf"(?i:https?)://{_URL_CHAR}+")
# how fingerprints up to v2 read one, which content identities keep (``_identity_text``)
_V2_URL_IN_TEXT = re.compile(r"https?://[^\s<>\"')\]]+\?[^\s<>\"')\]]*", re.IGNORECASE)


def _rewritten(url: str, rewrite: Callable[[str], str | None]) -> str:
    """A URL matched in text, ``rewrite`` applied to it without the sentence's
    punctuation after it."""
    trail = len(url) - len(url.rstrip(".,;:!"))  # the sentence's, not the URL's
    core = url[: len(url) - trail] if trail else url
    return (rewrite(core) or core) + url[len(core) :]


@functools.lru_cache(maxsize=4096)
def _text_url(url: str) -> str:
    """A URL written in text as compared, with or without a query: its scheme and host
    in lower case (as ``normalize_link`` has them), its query without tracking and
    cache-busting parameters (nor empty ones), the rest as written; so it reads as the
    same URL written without them ("https://Example.org?cb=1" as "https://example.org",
    "?section=world/europe&utm_source=rss" as "?section=world/europe")."""
    base, mark, fragment = url.partition("#")
    head, _, query = base.partition("?")
    scheme, sep, rest = head.partition("://")
    host, slash, path = rest.partition("/")
    kept: list[str] = []
    after = ""  # the text's, where the URL ended inside a dropped parameter's value
    pieces = query.split("&")
    for n, piece in enumerate(pieces):
        if not piece:
            continue
        if not _volatile(piece):
            kept.append(piece)
            continue
        end = _QUERY_CHARS.match(piece)
        if end is not None and end.end() < len(piece):
            after = piece[end.end() :] + "".join("&" + p for p in pieces[n + 1 :]) + mark + fragment
            mark = fragment = ""
            break
    head = scheme.lower() + sep + host.lower() + slash + path
    return head + ("?" + "&".join(kept) if kept else "") + mark + fragment + after


@functools.lru_cache(maxsize=4096)
def _v2_text_url(url: str) -> str | None:
    """A URL written in text as content identities (``_identity_text``) have it: as
    ``normalize_link`` gave it before it kept the other parameters as written, the
    query rebuilt (decoded, encoded again) where a parameter was dropped."""
    link = normalize_link(url)
    if not link:
        return link
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return link
    pairs = parse_qsl(parts.query, keep_blank_values=True) if parts.query else []
    kept = [(k, v) for k, v in pairs if not _volatile_name(k)]
    if len(kept) == len(pairs):
        return link
    rebuilt = urlsplit(link)
    return urlunsplit(rebuilt._replace(query=urlencode(kept)))


def comparable_text(text: str) -> str:
    """Text as it is compared: white space folded and each URL written in it without
    its analytics and cache-busting parameters (SPEC 4: "report.pdf?cb=1" and
    "report.pdf?cb=2" in a summary are the same content). feedwatch.diff compares it
    without the characters no reader sees too (``text.visible_text``); the fingerprint
    and the content keys hash it with them, as stored rows' were."""
    return _urls_without_volatile_params(normalize_space(text), _URL_IN_TEXT, _text_url)


def _identity_text(text: str) -> str:
    """A title as content identities hash it: its URLs read as up to fingerprint v2
    (``_V2_URL_IN_TEXT``, ``_v2_text_url``). A stored content key must keep naming its
    entry: changed, an entry keyed by its content whose title holds such a URL would
    alert as new after an upgrade."""
    text = normalize_space(text)
    text = _urls_without_volatile_params(text, _V2_URL_IN_TEXT, _v2_text_url)
    return unicodedata.normalize("NFC", text)


def _urls_without_volatile_params(
    text: str, urls: re.Pattern[str], rewrite: Callable[[str], str | None]
) -> str:
    if "://" in text:
        text = urls.sub(lambda m: _rewritten(m.group(0), rewrite), text)
    return text


def _text_key(text: str) -> str:
    # comparable_text: what tells two versions apart (link churn, the stale copy, the
    # duplicate keys of corrections) must not see a cache-buster either
    return unicodedata.normalize("NFC", comparable_text(text))


def fingerprint(title: str, summary: str, content: str) -> str:
    """A versioned hash of the normalised title, summary and content.

    The texts are already HTML-free (tracking pixels and markup are gone), and
    white space is folded here, so cosmetic churn does not change it.
    """
    return (
        f"{FINGERPRINT_VERSION}:"
        + _h(_text_key(title), _text_key(summary), _text_key(content))[:32]
    )


def entry_fingerprint(entry: EntrySnapshot | StoredEntry) -> str:
    return fingerprint(entry.title, entry.summary, entry.content)


def same_text(a: EntrySnapshot | StoredEntry, b: EntrySnapshot | StoredEntry) -> bool:
    return (
        _text_key(a.title) == _text_key(b.title)
        and _text_key(a.summary) == _text_key(b.summary)
        and _text_key(a.content) == _text_key(b.content)
    )


def _time_key(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ") if dt else ""


def content_identity(entry: EntrySnapshot | StoredEntry) -> str:
    return content_identity_at(entry, entry.published)


def content_identity_at(
    entry: EntrySnapshot | StoredEntry,
    published: datetime | None,
    title: str | None = None,
    *,
    told: bool = True,
) -> str:
    """The content key ``entry`` has with the published time ``published`` (and the
    title ``title``, when given): a hash of its title, link and published time, and,
    without a published time, of its text too (``told``; False: without it, the key
    releases before ``KEYS_VERSION`` v5.3 gave every entry).

    Without a date, a title and a link leave many entries one key (a microblog's posts
    with neither, a status page's items all titled "Status" with the page's link), and
    of several entries with one key only the first is compared: the others were lost.
    The text is the entry's own, so the key depends on no other entry of the body (one
    that did would change when a neighbour came or went). Its summary and content are
    taken together, in either order (a text that moved between the two is the same
    entry), as compared (``comparable_text``): a release that reads or compares such
    texts otherwise changes these keys, and must find the rows under their earlier
    ones (feedwatch.diff's link churn does where the text as read now is the row's;
    where the parse read it otherwise, the key of the texts as the release before read
    them, ``EntrySnapshot.earlier``: ``diff._keyed_before``)."""
    text = _identity_text(entry.title if title is None else title)
    link, when = normalize_link(entry.link) or "", _time_key(published)
    if told and not when:
        texts = sorted({_text_key(entry.summary), _text_key(entry.content)} - {""})
        if texts:
            return "c:" + _h(text, link, when, *texts)[:32]
    return "c:" + _h(text, link, when)[:32]


def textless_identity(entry: EntrySnapshot | StoredEntry) -> str | None:
    """For an entry without a published time, the content key of its title and link
    alone (``EntryKeys.textless``); None for one with a published time."""
    if entry.published is not None:
        return None
    return content_identity_at(entry, None, told=False)


def _bare_url(url: str) -> str:
    """An enclosure URL as ``told_identity`` hashes it: normalised, without its query
    and fragment (a CDN's signed token, changed at every request)."""
    base = url.strip().partition("#")[0].partition("?")[0]
    return normalize_link(base) or ""


def bare_enclosure_url(url: str) -> str:
    """An enclosure's URL as ``told_identity`` hashes it (``_bare_url``)."""
    return _bare_url(url)


def enclosure_urls(entry: EntrySnapshot | StoredEntry) -> set[str]:
    """The URLs of an entry's enclosures as ``told_identity`` hashes them: what `explain`
    finds an entry by when nothing else tells it apart."""
    found = getattr(entry, "enclosures", ())  # (a stored row keeps none)
    return {u for enc in found if enc.url and (u := _bare_url(enc.url))}


def told_identity(entry: EntrySnapshot, content: str) -> str | None:
    """For an entry with an enclosure, the content key ``content`` told apart by the
    URLs of its enclosures, each without its query and fragment (``_bare_url``), in
    any order; None for one without. The key of such an entry keyed by its content
    (``told_apart``)."""
    urls = sorted({u for enc in entry.enclosures if enc.url and (u := _bare_url(enc.url))})
    if not urls:
        return None
    return "c:" + _h("enclosures", content, *urls)[:32]


def told_apart(keys: Sequence[EntryKeys], policy: Policy) -> Sequence[EntryKeys]:
    """A body's keys under ``policy``, where each entry keyed by its content (``key_for``)
    that has an enclosure is keyed by its content and its enclosures' URLs
    (``EntryKeys.told``: ``content`` its ``told`` key, ``plain`` its own content key),
    whatever the body's other entries: a feed of recordings with neither id, link,
    title, date nor text, or items all titled "Morning briefing", has an entry for each
    recording, and an entry's key never depends on its neighbours (a new item at the
    top, or one without an enclosure, takes no row of another; a group of such entries
    never grows from one). Entries without an enclosure keep their key, and entries
    nothing tells apart (the same enclosure, or none) share one. ``keys`` itself when
    nothing changes (the common case: entries with ids or links, or no enclosure)."""
    if not any(k.told and k.plain is None and key_for(k, policy) == k.content for k in keys):
        return keys
    return [
        replace(k, content=k.told, plain=k.content)
        if k.told and k.plain is None and key_for(k, policy) == k.content
        else k
        for k in keys
    ]


def identity_for(entry: EntrySnapshot | StoredEntry, policy: Policy) -> str:
    """The entry's key under a policy, falling back per entry when it lacks the field."""
    entry_id = entry.entry_id.strip() if entry.entry_id else ""
    link = normalize_link(entry.link)
    if policy == "guid":
        if entry_id:
            return "g:" + entry_id
        if link:
            return "l:" + link
    elif policy == "link":
        if link:
            return "l:" + link
        if entry_id:
            return "g:" + entry_id
    return content_identity(entry)


def id_bases(url: str | None, headers: Mapping[str, str], *more: str | None) -> tuple[str, ...]:
    """The URLs a relative id may have been resolved against before ids were kept as
    given, for ``legacy_keys``: the document's base as the parse takes it (a
    Content-Location, against the URL), the URL, and ``more`` (the feed's URL as the
    state recorded it). An ``xml:base`` in the document is not among them."""
    location = next(
        (str(v) for k, v in headers.items() if str(k).lower() == "content-location"), ""
    )
    first = urljoin(url, location) if url and location else url
    return tuple(dict.fromkeys(b for b in (first, url, *more) if b))


def legacy_keys(key: str, bases: Sequence[str]) -> list[str]:
    """The identities a stored row of the entry ``key`` may have from an earlier version
    (``legacy_forms``)."""
    return [was for was, _ in legacy_forms(key, bases)]


def legacy_forms(key: str, bases: Sequence[str]) -> list[tuple[str, bool]]:
    """The identities a stored row of the entry ``key`` may have from an earlier version,
    each with whether it is a spelling of the id (a row under it may be another entry's,
    whose id was that spelling decoded once more): the id as a body that was not
    well-formed XML left it escaped (``a&amp;b`` for ``a&b``:
    feedwatch.parse._tags_decoded_leniently and _attributes_decoded_leniently), and a
    relative id (``<guid>1</guid>``) resolved against one of ``bases``, as feedparser
    did before ids were kept as given (feedwatch.parse._ids_as_given); and a link
    (``l:``) as that parser left an attribute (an Atom ``<link href>``), a spelling
    too; an id or a link holding "&" and a name without a ";" as that parser read it
    before parse version 26 (``loose_keys``: "?p=1&b;=2" for "?p=1&b=2", an item's
    ``<link>`` "?p=1〈=en&b=2" for "?p=1&lang=en&b=2"), the entry's very id as read then
    (feedwatch.diff takes such a row of a release before whatever its text). An id or
    link beyond ASCII, also in mojibake (``misdecoded``), not a spelling: the entry's. None for an absolute ASCII id or link without ``&``, ``<``, ``>``,
    ``"`` or ``'``."""
    if key.startswith("l:"):
        out = {was: True for was in _link_forms(key[2:])}
        for was in loose_keys(key):  # an item's <link>, a permalink guid standing for it
            out.setdefault(was, True)
        for was in misdecoded_keys(key):
            out.setdefault(was, False)
        return list(out.items())
    if not key.startswith("g:"):
        return []
    raw = key[2:]
    text = _text_forms(raw)
    forms = [*text, *_about_forms(raw), *_loose_forms(raw)]
    out = {"g:" + e: True for e in dict.fromkeys(forms) if e != raw}
    for was in _resolved(raw, bases):
        out.setdefault(was, False)
    for given in text:  # an rdf:about was never resolved
        for was in _resolved(given, bases):
            out.setdefault(was, True)
    for was in misdecoded_keys(key):
        out.setdefault(was, False)
    return list(out.items())


def misdecoded_keys(key: str) -> tuple[str, ...]:
    """The keys of an id (``g:``) or link (``l:``) beyond ASCII as releases before
    ``parse.PARSE_VERSION`` 20 read it in mojibake (``misdecoded``); empty for any other."""
    kind, raw = key[:2], key[2:]
    if kind not in ("g:", "l:") or raw.isascii():
        return ()
    forms = misdecoded(raw)
    if kind == "l:":
        forms = tuple(link for link in map(normalize_link, forms) if link and link != raw)
    return tuple(kind + form for form in dict.fromkeys(forms))


# feedparser's reading of an element's text: a C1 control character left in it (ISO-8859-1,
# -15 and -2 have them at 0x80-0x9F) is windows-1252's character of that byte, where it
# has one; an attribute's it left as it was. Each reading as a table of the 256 bytes'
# characters (``codecs.charmap_decode``: one C call a reading).
_C1_AS_1252 = {
    b: bytes([b]).decode("cp1252") for b in range(0x80, 0xA0) if b not in b"\x81\x8d\x8f\x90\x9d"
}
_READINGS = tuple(
    table
    for codec in ("iso-8859-1", "iso-8859-15", "iso-8859-2")
    for read in [bytes(range(256)).decode(codec)]
    for table in (read, read.translate(_C1_AS_1252))
)


def misdecoded(raw: str) -> tuple[str, ...]:
    """An id or link beyond ASCII (``raw``) as releases before ``parse.PARSE_VERSION`` 20
    read it from a UTF-8 document labelled windows-1252, ISO-8859-1, -15 or -2: its UTF-8
    bytes in that encoding ("lâ€™Ã©tÃ©" for "l’été"), as an element's text (an RSS guid or
    link, an Atom id: where it read as UTF-8 once encoded as ISO-8859-1 again, feedparser
    put it back, so not "cafÃ©") and as an attribute (an Atom ``<link href>``, an
    ``rdf:about``: in any such label, its C1 controls kept), also as one stray byte that is
    not UTF-8 once made a whole document read in windows-1252, else ISO-8859-2. Their
    entries are keyed right now, so each such row is found under its key (``legacy_forms``)
    and re-keyed. Only for a key beyond ASCII: the common path pays nothing. The same
    readings of a stored title or text are how feedwatch.diff forgives a row an earlier
    release stored in mojibake."""
    data = raw.encode("utf-8", "surrogatepass")
    out: list[str] = []
    try:
        out.append(data.decode("cp1252"))
    except UnicodeDecodeError:  # a byte it leaves undefined: such a body was read as UTF-8
        pass
    out += [codecs.charmap_decode(data, "strict", table)[0] for table in _READINGS]
    return tuple(form for form in dict.fromkeys(out) if form != raw)


_SPECIAL = re.compile("[&<>\"']")
_NAMED = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}


def _spelled(raw: str, spell: Mapping[str, str], other: str = "") -> str:
    """``raw`` with each of ``spell``'s characters written as it says, and each
    character beyond ASCII as a decimal (``other="d"``) or hex (``"x"``) reference."""
    out = "".join(spell.get(ch, ch) for ch in raw)
    if other and not out.isascii():
        form = "&#{:d};" if other == "d" else "&#x{:X};"
        out = "".join(ch if ch.isascii() else form.format(ord(ch)) for ch in out)
    return out


def _text_forms(raw: str) -> list[str]:
    """``raw`` as feedparser's lenient parser left an RSS guid or Atom id holding ``&``,
    ``<``, ``>``, ``"`` or ``'``: ``&`` and ``<`` escaped; ``>`` and the quotes escaped
    or as written (XML text may have them so; the quotes both one way)."""
    if not _SPECIAL.search(raw):
        return []
    forms = []
    for gt in (True, False):
        for quotes in (True, False):
            keep = {">"} if not gt else set()
            keep |= set() if quotes else {'"', "'"}
            forms.append(_spelled(raw, {c: e for c, e in _NAMED.items() if c not in keep}))
    return [form for form in dict.fromkeys(forms) if form != raw]


# A bare "&" and a name without a ";", as the lenient parser (sgmllib) read it before
# parse version 26 (feedwatch.parse._amps_as_html5_reads): the name is the longest run
# of letters, digits, "-" and "." (never cut short to dodge a ";"); the names of XML and
# HTML 4 decoded, any other written back with a ";" ("AT&T wins" was "AT&T; wins",
# "?p=1&b=2" "?p=1&b;=2", "&lang=" "〈=", "&copy2024" "&copy2024;"). "&#38" without
# its ";" it left as written.
_BARE_NAME = re.compile(r"&([A-Za-z][-.A-Za-z0-9]*)(?![-.A-Za-z0-9;])")
_XML_NAMES = {"lt": "<", "gt": ">", "quot": '"', "amp": "&", "apos": "'"}
# feedparser's mend of an item's <link> (a query's "&b;=2" back to "&b=2")
_LINK_MENDED = re.compile(r"&([A-Za-z0-9_]+);")


def _loose_name(m: re.Match[str]) -> str:
    name = m.group(1)
    if name in _XML_NAMES:
        return _XML_NAMES[name]
    code = html.entities.name2codepoint.get(name)
    return chr(code) if code is not None else f"&{name};"


def read_loosely(text: str) -> str:
    """``text`` as releases before parse version 26 (fingerprint v7 and every one
    before) read it where it stood in a body that was not well-formed XML, each "&" of
    it bare (``_BARE_NAME``): "AT&T wins" as "AT&T; wins". Of the text itself, so it
    holds whatever parser read the text now (a feed that fixed its XML since: the rows
    of before hold that reading). ``text`` where it reads so too."""
    if "&" not in text:
        return text
    return _BARE_NAME.sub(_loose_name, text)


def _loose_forms(raw: str) -> list[str]:
    """``raw``, an RSS guid or Atom id holding "&" and a name without a ";", as the
    lenient parser read it before parse version 26 (``read_loosely``)."""
    was = read_loosely(raw)
    return [was] if was != raw else []


def _loose_links(link: str) -> list[str]:
    """A link holding "&" and a name without a ";", as the lenient parser read it before
    parse version 26: an item's ``<link>`` (feedparser took the ";" it gave an unknown
    name back out: "?p=1&lang=en&b=2" was "?p=1〈=en&b=2") and a permalink guid
    standing for the link ("?p=1〈=en&b;=2"); each normalised."""
    out = []
    for was in _loose_forms(link):
        for form in (_LINK_MENDED.sub(r"&\1", was.replace("&amp;", "&")), was):
            norm = normalize_link(form)
            if norm and norm != link:
                out.append(norm)
    return list(dict.fromkeys(out))


def loose_keys(key: str) -> tuple[str, ...]:
    """The keys releases before parse version 26 gave the entry ``key`` (an id ``g:``, a
    link ``l:``) from a body that was not well-formed XML, where it holds "&" and a name
    without a ";" (``read_loosely``): that entry's very id or link as they read it, so a
    row under one that a release before stored is the entry's, whatever its text."""
    if key.startswith("g:"):
        return tuple("g:" + was for was in _loose_forms(key[2:]))
    if key.startswith("l:"):
        return tuple("l:" + was for was in _loose_links(key[2:]))
    return ()


# An RSS 1.0 item's rdf:about as the lenient parser kept it: ``&amp;`` decoded, any other
# reference as written. The spellings feeds use, each for every such character at once:
# named (``&lt;``, an attribute's ``&quot;``), decimal (``&#38;``; ``&#39;`` and ``&#34;``
# it decoded), zero-padded (WordPress's ``&#038;``) and hex (``&#x26;``).
_ABOUT_SPELLINGS: tuple[tuple[dict[str, str], tuple[str, ...]], ...] = (
    ({"<": "&lt;", ">": "&gt;", '"': "&quot;"}, ("", "d")),
    ({"&": "&#38;", "<": "&#60;", ">": "&#62;"}, ("", "d")),
    ({c: f"&#{ord(c):03d};" for c in _NAMED}, ("",)),
    ({c: f"&#x{ord(c):X};" for c in _NAMED}, ("", "x")),
)


def _about_forms(raw: str) -> list[str]:
    """``raw`` as the lenient parser left an ``rdf:about`` holding a character it had to
    be written as a reference (``_ABOUT_SPELLINGS``); a character beyond ASCII as
    written or as a reference of the spelling's kind. At most eight forms."""
    if raw.isascii() and not _SPECIAL.search(raw):
        return []
    forms = (_spelled(raw, spell, o) for spell, others in _ABOUT_SPELLINGS for o in others)
    return [form for form in dict.fromkeys(forms) if form != raw]


def _link_forms(link: str) -> list[str]:
    """The keys of a normalised link as the lenient parser left an attribute holding
    it, its ``&`` written ``&#38;`` (``_about_forms``): the normalised form of each,
    which reads a ``#`` as a fragment's start."""
    forms = (normalize_link(form) for form in _about_forms(link))
    return ["l:" + form for form in dict.fromkeys(forms) if form and form != link]


def _resolved(raw: str, bases: Sequence[str]) -> list[str]:
    """The keys of a relative id ``raw`` resolved against each of ``bases``."""
    try:
        absolute = ":" in raw and bool(urlsplit(raw).scheme)
    except ValueError:  # "http://example.c[o.test/": no URL, and nothing resolved it
        return []
    if not bases or not raw or absolute:  # an id with a scheme: as given
        return []
    from feedparser.urls import make_safe_absolute_uri

    out: list[str] = []
    for base in bases:
        try:
            resolved = make_safe_absolute_uri(base, raw)
        except ValueError:
            continue
        if resolved and resolved != raw:
            out.append("g:" + resolved)
    return out


def entry_keys(entry: EntrySnapshot) -> EntryKeys:
    """Everything the diff hashes or normalises of one snapshot, computed once."""
    content = content_identity(entry)
    return EntryKeys(
        fingerprint=entry_fingerprint(entry),
        entry_id=entry.entry_id.strip() if entry.entry_id else "",
        link=normalize_link(entry.link),
        content=content,
        textless=textless_identity(entry),
        told=told_identity(entry, content) if entry.enclosures else None,
    )


def key_for(keys: EntryKeys, policy: Policy) -> str:
    """``identity_for`` from an entry's keys."""
    if policy == "guid":
        if keys.entry_id:
            return "g:" + keys.entry_id
        if keys.link:
            return "l:" + keys.link
    elif policy == "link":
        if keys.link:
            return "l:" + keys.link
        if keys.entry_id:
            return "g:" + keys.entry_id
    return keys.content


def distinct_under(keys: Sequence[EntryKeys]) -> list[Policy]:
    """The policies under which these entries' identities are all distinct, as the diff
    keys them (``told_apart``: entries of one content key told apart by their
    enclosures are distinct)."""
    policies: tuple[Policy, ...] = ("guid", "link", "content")
    return [p for p in policies if len({key_for(k, p) for k in told_apart(keys, p)}) == len(keys)]


def detect_policy(entries: Sequence[EntrySnapshot], threshold: float = 0.9) -> Policy | None:
    """``auto``: guid while >= 90% of entries have distinct ids, else link, else content."""
    return detect_policy_keys([entry_keys(e) for e in entries], threshold)


def detect_policy_keys(keys: Sequence[EntryKeys], threshold: float = 0.9) -> Policy | None:
    """``detect_policy`` from the entries' keys."""
    n = len(keys)
    if n == 0:
        return None
    ids = {k.entry_id for k in keys if k.entry_id}
    if len(ids) >= threshold * n:
        return "guid"
    links = {k.link for k in keys if k.link}
    if len(links) >= threshold * n:
        return "link"
    return "content"


def _as_hashed(fp: str) -> str:
    """``fp`` as ids hash it: the label of a version whose hash is v1's reads v1."""
    return "v1:" + fp[3:] if fp.startswith(_SAME_HASH) else fp


def alert_id(
    feed: str,
    identity: str,
    kind: str,
    fp: str,
    published: datetime | None,
    updated: datetime | None,
) -> str:
    """Same feed, entry, kind and version: same id, whoever computes it and when."""
    return _h(
        "alert", feed, identity, kind, _as_hashed(fp), _time_key(published), _time_key(updated)
    )[:32]


def duplicate_key(kind: str, entry: EntrySnapshot, fp: str) -> str | None:
    """What makes two alerts of ``entry`` (its version ``fp``, its fingerprint) the same
    news for ``duplicates = "skip"``, whichever feed they come from: for ``new``, the
    entry's normalised link (the same article, however each feed summarises it); for
    ``updated``, the link and the new version. Both as a reader sees them
    (``text.visible_text``): a feed that writes soft hyphens into its link and text
    carries the same story. None without a link: nothing to tell a duplicate by.

    Stored (duplicate_claims, alerts.duplicate_key): an entry that holds no character
    ``visible_text`` drops keeps the key releases before gave it."""
    link = visible_text(entry.link) if entry.link else ""
    key = normalize_link(link) if link else ""
    if not key:
        return None
    if kind == "new":
        return _h("dup", key, kind)[:32]
    texts = (entry.title, entry.summary, entry.content)
    if any(holds_hidden(t) for t in texts):
        fp = fingerprint(*(visible_text(t) for t in texts))
    return _h(
        "dup", key, kind, _as_hashed(fp), _time_key(entry.published), _time_key(entry.updated)
    )[:32]


def notice_id(feed: str, kind: str, key: str) -> str:
    return _h("notice", feed, kind, key)[:32]
