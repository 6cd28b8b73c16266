"""Turn a fetched body into entry snapshots: bytes + headers in, ParsedFeed out.

Pure: feed bytes are only ever parsed. feedparser is handed an in-memory
stream, never a str/bytes (which it may treat as a URL or a file path), and
the fetch URL only as a ``Content-Location`` header so relative links resolve.
JSON Feed 1.x is read here (feedparser 6 does not). Nothing in this module
raises on any body: a failure inside a parser becomes ``is_feed=False`` with
a warning, so one hostile feed fails alone.
"""

from __future__ import annotations

import calendar
import codecs
import contextvars
import email.utils
import functools
import html
import io
import json
import re
import time
import types
import warnings as _warnings
import xml.sax
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import feedparser
import structlog
from feedparser.datetimes import _date_handlers
from feedparser.datetimes import _parse_date as _feedparser_date
from feedparser.datetimes.iso8601 import _parse_date_iso8601
from feedparser.datetimes.rfc822 import _parse_date_rfc822

from feedwatch.model import MISLABELLED, Enclosure, EntrySnapshot, ParsedFeed, Readings
from feedwatch.text import (
    html_readings,
    html_to_text,
    normalize_space,
    plain_readings,
)

__all__ = ["PARSE_VERSION", "Decoding", "XmlParse", "decoding", "parse_body", "parse_xml_detail"]

log = structlog.get_logger("feedwatch.parse")


# Bump whenever parse_body's result for some body changes (a conversion, an option,
# the entity guard, the entry cap): feedwatch.partial keys its cache of parsed
# entries on it, so entries cached by an older parser are never reused.
# 2: an entry a body was cut short in is dropped; 3, 5: fields declared plain are
# read as text; 4: ids as the feed wrote them; 6: every author, an Atom feed's
# inherited; 7: an Atom id standing for the link is resolved; 8: digits alone are Unix
# time, impossible dates none (a changed date kept from an older cache would alert as
# updated when the feed is next parsed in full, one entry here and there; re-read at
# once, a feed's entries all move together, which diff takes for timestamp churn);
# 9: RFC 822 zones of one to three digits, ISO zones without a colon; 10: tags read by
# the lenient parser have their entities decoded; 11: ids too (guid, Atom id, rdf:about);
# 12: RFC 822 zone names beyond the US ones (JST, CET, AEST: ``_ZONE_NAMES``), read as
# UTC before; an Atom entry without an author has its <source>'s before its feed's;
# 13: attributes read by the lenient parser have their XML references decoded
# (an enclosure's url, an Atom link's href, xml:base); 14: the zone name a published
# date was written with (``EntrySnapshot.zone``); 15: "/>" ends an svg (``text``), and
# the texts as read before (``EntrySnapshot.earlier``); 16: a tag's name runs to white
# space, "/" or ">" (<svg-icon>), a head or an xml left open is a tag, an svg ends where
# a browser leaves it, and the texts as fingerprint v4 read them too; 17: the published time as read
# before 9 (``EntrySnapshot.misread``); 18: and as the
# first releases of fingerprint v1 read them (an element decoding made, left open,
# dropped to the end); 19: ISO 8601's basic format with its time of day (midnight
# before), RFC 822 seconds with a fraction (no date before); 20: a body that is UTF-8 is
# read as UTF-8 whatever a single-byte label says (windows-1252, ISO-8859-15: mojibake
# before), a UTF-16 label on a body that plainly is not UTF-16 is dropped (``decoding``);
# 21: in a field of markup of its own, what decoding made is text ("Vec&lt;u8&gt;" is
# "Vec<u8>"), a footnote marker is parted from the word before it, a MathML annotation
# is dropped, and the texts as fingerprint v5 read them too (``text``); 22: Media RSS
# <media:content> is an enclosure (``_xml_enclosures``); 23: an RFC 822 time with AM/PM
# ("10:40:17 PM GMT": 10:40 before), a zone name after an ISO 8601 date ("10:40:17 EST":
# UTC before), an ISO fraction written with a comma (its zone dropped before), and no
# date read in the process's local zone (feedparser's ISO reader: ``_feedparser_utc``);
# the times as read before (``EntrySnapshot.reread``); 24: what decoding made of a
# field without a tag of its own is text unless it holds HTML's structure ("the
# &lt;dialog&gt; element"), ruby's readings are dropped, and the texts as fingerprint
# v6 read them too (``text``); 25: a relative enclosure URL is resolved against the
# xml:base in effect at its item, whatever the item holds (``_item_bases``: the base
# of its title, summary or content only before, else the document's URL); 26: a bare
# "&" in a body read by the lenient parser is read as HTML5 reads it ("AT&T wins", not
# "AT&T; wins": ``_amps_as_html5_reads``), and the texts as read before
# (``EntrySnapshot.loose``); 27: a date without its day (a time alone, "10:00:00",
# "T10:00:00"; "--12-01" without its year: read on the day of the poll before) is
# none, and a numeric zone beyond 14 hours ("+1500", "-99:59", "+24:00": read as
# written before) is UTC, in every form (``_DAYLESS``, ``_ZONE_BEYOND``); the times as
# read before (``EntrySnapshot.read_26``)
PARSE_VERSION = 27

# --------------------------------------------------------------------------
# Entity-expansion hardening.
#
# feedparser strips DTD entity declarations before expat sees them, keeping
# only "safe" ones (a literal or one character reference), but its pattern
# only finds declarations at the start of a line: a one-line internal subset
# reaches expat intact, and a billion-laughs body then spends seconds in
# feedparser's Python callbacks before expat's amplification limit stops it.
# We wrap feedparser's own hook (it runs after feedparser has decoded the body
# to UTF-8, so UTF-16/32 and EBCDIC bodies are covered) to drop every unsafe
# declaration wherever it is and put each safe one (and the DOCTYPE) on its
# own line, so feedparser's own handling of them applies. External
# entities are unsafe by definition; safe values are short, so expansion stays
# linear in the body size.
# --------------------------------------------------------------------------

# --------------------------------------------------------------------------
# Entry cap before parsing.
#
# feedparser builds every entry of a body (about 0.8 ms each, in Python) before
# we could drop those beyond ``max_entries``: a 4 MB body of 50,000 entries took
# 45 s and held the parse thread (and the GIL) all that time. So the same hook
# cuts the (UTF-8) document first: it keeps everything up to the first entry
# past the cap and everything after the last entry's end, dropping the entries
# in between. Entries are siblings, so the result is well-formed whenever the
# body was; if a raw "<item" hid in a CDATA section the cut may not be, and
# feedparser's lenient parser still reads the (now short) rest.
# --------------------------------------------------------------------------

_ENTRY_TAG = rb"(?:[A-Za-z_][\w.-]*:)?(?:item|entry)"
# Entry start and end tags, skipping CDATA sections and comments (where a raw
# "<item>" is text). A start tag ending in "/>" is an empty entry.
_ENTRY_SCAN = re.compile(
    rb"<(?:!\[CDATA\[.*?(?:\]\]>|\Z)|!--.*?(?:-->|\Z)"
    rb"|(?P<start>" + _ENTRY_TAG + rb"(?=[\s/>])(?P<empty>[^<>]*/>)?)"
    rb"|(?P<end>/" + _ENTRY_TAG + rb"\s*>))",
    re.DOTALL,
)
# [cap, entries dropped by the cut]: set around one feedparser.parse call (its thread).
_entry_cap: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "feedwatch_entry_cap", default=None
)


# The end tag of an RSS, Atom or RSS 1.0 document's root.
_ROOT_END = re.compile(rb"</(?:[A-Za-z_][\w.-]*:)?(?:rss|feed|RDF)\s*>")


def _entry_spans(data: bytes) -> tuple[list[int], int]:
    """Where each entry starts (its ``<``), and where the last one ends (-1: it never
    does): entries do not nest, so the first end tag after a start closes it."""
    starts: list[int] = []
    end_of_last = -1
    for m in _ENTRY_SCAN.finditer(data):
        if m.group("start") is not None:
            starts.append(m.start())
            end_of_last = m.end() if m.group("empty") else -1
        elif m.group("end") is not None and end_of_last < 0 and starts:
            end_of_last = m.end()
    return starts, end_of_last


def _cut_short(data: bytes) -> int | None:
    """How many entries ``data`` starts, when it ends inside the last of them (neither
    that entry nor the root is closed after its start): a body cut short, by a dropped
    connection whose end HTTP could not tell, or by a script that died mid-feed
    (PHP's "Fatal error: Allowed memory size..." after half an item). None otherwise."""
    starts, end_of_last = _entry_spans(data)
    if not starts or end_of_last >= 0 or _ROOT_END.search(data, starts[-1]):
        return None
    return len(starts)


def _unfinished(data: bytes) -> bool:
    """Whether ``data``'s root is not closed after its last entry starts (or at all): the
    document ended early, whether inside an entry or between two."""
    starts, _ = _entry_spans(data)
    return not _ROOT_END.search(data, starts[-1] if starts else 0)


def _cut_entries(data: bytes, cap: int) -> tuple[bytes, int]:
    """``data`` without the entries past the first ``cap``, and how many were dropped."""
    if data.count(b"<") < cap:  # cheap: too few tags to hold more than ``cap`` entries
        return data, 0
    starts, end_of_last = _entry_spans(data)
    if len(starts) <= cap or end_of_last < 0:
        return data, 0  # the last entry never ends: leave it to the parser and the later cap
    return data[: starts[cap]] + data[end_of_last:], len(starts) - cap


_ENTITY_DECL = re.compile(rb"""<!ENTITY(?:[^>"']|"[^"]*"|'[^']*')*>""")
_DOCTYPE_MID_LINE = re.compile(rb"(?<=[^\n])<!DOCTYPE")
_SAFE_ENTITY = re.compile(rb'<!ENTITY\s+(\w+)\s+"(&#\w+;|[^&"%<]{0,256})"\s*>')


def _keep_safe_entity(m: re.Match[bytes]) -> bytes:
    safe = _SAFE_ENTITY.fullmatch(m.group(0))
    return b'\n<!ENTITY %s "%s">' % (safe.group(1), safe.group(2)) if safe else b""


# A character reference to a surrogate or past U+10FFFF is not XML; expat stops, and
# feedparser's lenient parser then failed on the lone surrogate ("surrogates not
# allowed"), losing the whole feed for one bad reference. It reads as U+FFFD instead.
_CHAR_REF = re.compile(rb"&#(?:[xX]([0-9a-fA-F]{1,8})|([0-9]{1,10}));")


def _valid_char_ref(m: re.Match[bytes]) -> bytes:
    code = int(m.group(1), 16) if m.group(1) else int(m.group(2))
    if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
        return b"&#xFFFD;"
    return m.group(0)


def _harden_feedparser() -> None:
    api = getattr(feedparser, "api", None)
    original = getattr(api, "replace_doctype", None)
    if original is None or getattr(original, "_feedwatch", False):
        return

    def replace_doctype(data: bytes) -> Any:
        if b"<!ENTITY" in data:
            data = _ENTITY_DECL.sub(_keep_safe_entity, data)
            # feedparser re-declares the safe entities only for a DOCTYPE that
            # starts a line.
            data = _DOCTYPE_MID_LINE.sub(b"\n<!DOCTYPE", data, count=1)
        if b"&#" in data:
            data = _CHAR_REF.sub(_valid_char_ref, data)
        cap = _entry_cap.get()
        if cap is not None:
            data, cap[1] = _cut_entries(data, cap[0])
        return original(data)

    replace_doctype._feedwatch = True  # type: ignore[attr-defined]
    setattr(api, "replace_doctype", replace_doctype)  # noqa: B010 (api is untyped here)


_harden_feedparser()


# --------------------------------------------------------------------------
# feedparser made faster, its results unchanged.
#
# A third of a small parse was work feedparser repeats: a failed import of a SAX
# driver, URL joins of the same strings, its dict lookups' special cases. Each
# change below is installed once, at import (like the entity guard above); the
# replaced function stays reachable as ``__wrapped__``, and tests/test_corpus.py
# parses the whole corpus both ways.
# --------------------------------------------------------------------------


def _drop_missing_sax_drivers() -> None:
    """feedparser asks ``xml.sax.make_parser`` for libxml2's driver before expat on
    every parse; when that module is not installed, each parse pays a failed import
    (a search of sys.path, ~0.05 ms, more with a long path). Looking once gives the
    same parser: the one feedparser falls back to anyway."""
    import importlib.util

    preferred = getattr(feedparser.api, "PREFERRED_XML_PARSERS", None)
    if isinstance(preferred, list):
        for name in list(preferred):
            try:
                missing = importlib.util.find_spec(name) is None
            except (ImportError, ValueError):
                missing = True
            if missing:
                preferred.remove(name)


_drop_missing_sax_drivers()


REMEMBER_ENTRIES = 1024
REMEMBER_MAX_CHARS = 1024


def _remember(fn: Any) -> Any:
    """``fn`` with its results kept in a bounded LRU. Only short string arguments are
    kept (a hostile feed's megabyte-long links go straight through: at most
    ``REMEMBER_ENTRIES`` results of ``REMEMBER_MAX_CHARS`` characters of arguments
    each stay in memory, a few MB in a long-running daemon); anything else, and
    arguments that cannot be keys, go straight through."""
    cached = functools.lru_cache(maxsize=REMEMBER_ENTRIES)(fn)

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        size = 0
        for a in args:
            if a is not None and type(a) is not str:
                return fn(*args)
            size += len(a) if a else 0
        if size > REMEMBER_MAX_CHARS:
            return fn(*args)
        return cached(*args)

    call.cache_info = cached.cache_info  # type: ignore[attr-defined]
    call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return call


_URL_FUNCTIONS = ("_urljoin", "make_safe_absolute_uri")
_URL_USERS = ("urls", "mixin", "namespaces._base", "sanitizer", "api")


def _remember_url_joins() -> None:
    """feedparser joins the base URI with itself at every start tag (for xml:base) and
    each link with it: ~20 % of a small parse went to ``urllib.parse.urljoin`` on the
    same few strings. Both functions are pure (strings in, a string out; the list of
    allowed schemes is a constant), so remembering their results gives the same
    parse. Each module that imported them by name gets the remembering version
    (``__wrapped__`` is feedparser's own)."""
    import importlib

    urls = importlib.import_module("feedparser.urls")
    wrapped = {}
    for name in _URL_FUNCTIONS:
        fn = getattr(urls, name, None)
        if callable(fn) and not hasattr(fn, "__wrapped__"):
            wrapped[fn] = _remember(fn)
    for mod_name in _URL_USERS:
        try:
            mod = importlib.import_module(f"feedparser.{mod_name}")
        except ImportError:
            continue
        for name in _URL_FUNCTIONS:
            fn = getattr(mod, name, None)
            if fn in wrapped:
                setattr(mod, name, wrapped[fn])


_remember_url_joins()

# The keys FeedParserDict.__getitem__ treats specially (feedparser 6.0); every other key
# that is not in its ``keymap`` is a plain dict lookup. tests/test_parse.py reads them
# back from feedparser's source, so a feedparser that adds one fails the tests.
FEEDPARSER_SPECIAL_KEYS = frozenset(
    {"category", "enclosures", "license", "updated", "updated_parsed"}
)


def _plain_key_fast_path() -> None:
    """feedparser looks up its own dicts ~200 times a parse, each time through a chain
    of special cases, a key map and, for a missing key, a raised KeyError: ~5 % of a
    small parse. For a key that is neither special nor mapped those end in a plain dict
    lookup, which is what these do at once; every other key takes feedparser's own way.
    Installed for feedparser 6.0 only (the version whose special cases are listed)."""
    cls = feedparser.util.FeedParserDict
    if not str(getattr(feedparser, "__version__", "")).startswith("6.0."):
        return
    if hasattr(cls.get, "__wrapped__"):
        return
    keymap = cls.keymap
    special = FEEDPARSER_SPECIAL_KEYS
    own_get, own_getitem, own_contains = cls.get, cls.__getitem__, cls.__contains__
    plain_get, plain_getitem, plain_contains = dict.get, dict.__getitem__, dict.__contains__

    @functools.wraps(own_get)
    def get(self: Any, key: Any, default: Any = None) -> Any:
        if key not in special and key not in keymap:
            return plain_get(self, key, default)
        return own_get(self, key, default)

    @functools.wraps(own_getitem)
    def getitem(self: Any, key: Any) -> Any:
        if key not in special and key not in keymap:
            return plain_getitem(self, key)
        return own_getitem(self, key)

    @functools.wraps(own_contains)
    def contains(self: Any, key: Any) -> bool:
        if key not in special and key not in keymap:
            return plain_contains(self, key)
        return bool(own_contains(self, key))

    cls.get = get
    cls.__getitem__ = getitem
    cls.__contains__ = contains


_plain_key_fast_path()


def _untyped_atom_enclosures() -> None:
    """feedparser gives every Atom ``<link>`` without a ``type`` the type text/html, an
    enclosure too (an audio file "text/html" in the alert): an enclosure link is handed
    to it with an empty type, which the entry reads as none. Its type decides nothing
    else (only an alternate link's type picks the entry's link)."""
    from feedparser.namespaces._base import Namespace

    own = Namespace._start_link
    if hasattr(own, "__wrapped__"):
        return

    @functools.wraps(own)
    def start_link(self: Any, attrs_d: dict[str, Any]) -> Any:
        if attrs_d.get("rel") == "enclosure" and "type" not in attrs_d:
            attrs_d["type"] = ""
        return own(self, attrs_d)

    Namespace._start_link = start_link


_untyped_atom_enclosures()

# the key under which ``_item_bases`` records an entry's base in feedparser's dict
_ITEM_BASE = "feedwatch_base"


def _item_bases() -> None:
    """feedparser records the xml:base in effect only in a text field's details (an
    item's ``title_detail``, ...): an item without a title, summary or content had
    none, and its relative enclosure URL was resolved against the document's URL. The
    base in effect where an RSS ``<item>`` or an Atom ``<entry>`` starts (its own
    xml:base, else its channel's or feed's, else the document's URL) is recorded in
    the entry (``_ITEM_BASE``) for ``_entry_base``."""
    from feedparser.namespaces._base import Namespace

    own = Namespace._start_item
    if hasattr(own, "__wrapped__"):
        return

    @functools.wraps(own)
    def start_item(self: Any, attrs_d: dict[str, Any]) -> Any:
        out = own(self, attrs_d)
        if self.entries and isinstance(self.baseuri, str) and self.baseuri:
            dict.__setitem__(self.entries[-1], _ITEM_BASE, self.baseuri)
        return out

    Namespace._start_item = start_item
    Namespace._start_entry = start_item


_item_bases()


class _ContentParamsCopy:
    """Stands in for the ``copy`` module in ``feedparser.mixin``, whose only use of it is
    ``copy.deepcopy(self.contentparams)`` for every title, summary and content it keeps:
    ~8 % of parsing an item went to deepcopy's generic machinery (``__reduce_ex__``,
    then each item put back). Those params are a FeedParserDict of strings, None,
    booleans and numbers, whose deep copy is a new FeedParserDict with the same items,
    put in through ``__setitem__`` as deepcopy does: that is what ``deepcopy`` here
    builds. Anything else (another type, another value, a memo, attributes) goes to
    ``copy.deepcopy`` itself."""

    _SIMPLE = (str, bool, int, float, type(None))

    def __init__(self, real: Any, cls: Any) -> None:
        self.__wrapped__ = real
        self._cls = cls

    def deepcopy(self, x: Any, memo: Any = None) -> Any:
        cls = self._cls
        if type(x) is cls and memo is None and not vars(x):
            simple = self._SIMPLE
            y = cls()
            for k, v in x.items():
                if type(v) not in simple:
                    return self.__wrapped__.deepcopy(x)
                y[k] = v
            return y
        return self.__wrapped__.deepcopy(x, memo)

    def __getattr__(self, name: str) -> Any:  # anything else: the real module's
        return getattr(self.__wrapped__, name)


def _content_params_copy() -> None:
    import importlib

    mixin = importlib.import_module("feedparser.mixin")
    real = getattr(mixin, "copy", None)
    if real is None or isinstance(real, _ContentParamsCopy):
        return
    mixin.copy = _ContentParamsCopy(real, feedparser.util.FeedParserDict)  # type: ignore[attr-defined]


_content_params_copy()


def _ids_as_given() -> None:
    """An entry's id is the feed's own, as written: feedparser resolved an RSS guid (and
    an Atom id) that looks relative against the feed's URL, so ``<guid>1</guid>`` was
    ``https://host/dir/1``, and every entry became new when the feed's URL moved (a 301
    followed, the url edited). The link a permalink guid stands for is still resolved,
    as feedparser does. (Identities stored from resolved ids are re-keyed as they are
    met: ``identity.legacy_keys``.)"""
    import importlib

    mixin = importlib.import_module("feedparser.mixin")._FeedParserMixin
    if getattr(mixin._end_guid, "_feedwatch", False):
        return
    mixin.can_be_relative_uri = set(mixin.can_be_relative_uri) - {"id"}

    def _end_guid(self: Any) -> None:
        value = self.pop("id")
        self._save("guidislink", self.guidislink and "link" not in self._get_context())
        if self.guidislink:
            # guid acts as link, but only if 'ispermalink' is not present or is 'true',
            # and only if the item doesn't already have a link element
            self._save("link", self.resolve_uri(value) if value else value)

    _end_guid._feedwatch = True  # type: ignore[attr-defined]
    mixin._end_guid = _end_guid
    mixin._end_id = _end_guid  # an Atom <id>: feedparser's own is an alias of _end_guid


_ids_as_given()

# Elements whose text feedparser makes an entry's tags (dc:subject and keywords are read
# as a category).
_TAG_ELEMENTS = frozenset({"category", "tags", "itunes_keywords", "media_keywords"})
_ENTITY_REFERENCE = re.compile(
    r"&(?:#[0-9]{1,10}|#[xX][0-9a-fA-F]{1,8}|[A-Za-z][A-Za-z0-9]{0,31});"
)


_XML_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
_XML_REFERENCE = re.compile(r"&(amp|lt|gt|quot|apos|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});")


def _xml_unescaped(text: str) -> str:
    """``text`` with its XML references decoded once, as an XML parser decodes them: the
    five entities XML declares and character references. A reference to a character
    XML does not allow is left as written (no XML parser reads a body holding it), as
    is any other entity (the lenient parser decoded those it knows)."""
    return _XML_REFERENCE.sub(_xml_reference, text) if "&" in text else text


def _xml_reference(m: re.Match[str]) -> str:
    name = m.group(1)
    if name[0] != "#":
        return _XML_ENTITIES[name]
    code = int(name[2:], 16) if name[1] == "x" else int(name[1:])
    allowed = code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF
    allowed = allowed or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF
    return chr(code) if allowed else m.group(0)


def _tags_decoded_leniently() -> None:
    """A tag read by feedparser's lenient parser (a body that is not well-formed XML: one
    ``&nbsp;`` is enough) has its entities decoded, as the XML parser decodes them:
    feedparser leaves the text of an element of no declared type escaped there, so
    ``R&amp;D`` was the tag, and a rule on tags for "R&D" missed. Decoded once, from
    the escaped text: ``&amp;amp;`` is the text "&amp;" either way. An id (RSS guid,
    Atom id) too, of XML's own references only: ``a&amp;b`` was another entry's id than
    the well-formed body's ``a&b``, so it alerted as new when the feed stopped being
    well-formed (stored ids of that form: ``identity.legacy_keys``)."""
    import importlib

    loose = importlib.import_module("feedparser.parsers.loose")._LooseFeedParser
    original = loose.decode_entities
    if getattr(original, "_feedwatch", False):
        return

    def decode_entities(self: Any, element: str, data: str) -> Any:
        escaped = str(self.contentparams.get("type", "xml")).endswith("xml")
        data = original(self, element, data)
        if not (escaped and isinstance(data, str) and "&" in data):
            return data
        if element in _TAG_ELEMENTS:
            data = _ENTITY_REFERENCE.sub(lambda m: html.unescape(m.group(0)), data)
        elif element == "id":
            data = _xml_unescaped(data)
        return data

    decode_entities._feedwatch = True  # type: ignore[attr-defined]
    decode_entities.__wrapped__ = original  # type: ignore[attr-defined]
    loose.decode_entities = decode_entities


_tags_decoded_leniently()


def _attributes_decoded_leniently() -> None:
    """An attribute read by feedparser's lenient parser has its XML references decoded,
    as the XML parser decodes them: feedparser decoded only ``&amp;`` in an attribute
    there, so an enclosure's ``url="e.mp3?a=1&#38;b=2"`` kept ``&#38;`` (its ``#`` then
    began a fragment), ``&#9;`` stayed text, and an ``rdf:about`` (an RSS 1.0 item's id)
    or an Atom ``<link href>`` (the entry's link) differed from the well-formed body's.
    Decoded once, from the text as written; inline XHTML has its attributes escaped
    again, as feedparser's XML parser writes them (stored links of the old form:
    ``identity.legacy_forms``)."""
    import importlib

    loose = importlib.import_module("feedparser.parsers.loose")._LooseFeedParser
    original = loose._normalize_attributes
    if getattr(original, "_feedwatch", False):
        return
    strict = importlib.import_module("feedparser.mixin")._FeedParserMixin.strattrs

    def normalize_attributes(kv: tuple[str, str]) -> tuple[str, str]:
        k, v = original(kv)
        if isinstance(kv[1], str):
            v = _xml_unescaped(kv[1])
            v = v.lower() if k in ("rel", "type") else v
        return k, v

    normalize_attributes._feedwatch = True  # type: ignore[attr-defined]
    normalize_attributes.__wrapped__ = original  # type: ignore[attr-defined]
    loose._normalize_attributes = staticmethod(normalize_attributes)

    loose.strattrs = staticmethod(strict)


_attributes_decoded_leniently()

# --------------------------------------------------------------------------
# A bare "&" in a body that is not well-formed XML, read as a browser reads it.
#
# feedparser's lenient parser (sgmllib) takes "&" and a name for an entity reference
# whether or not a ";" ends it, and writes back an unknown one with a ";": "AT&T wins"
# was "AT&T; wins", "Q&A" "Q&A;", a guid "?p=1&b=2" "?p=1&b;=2"; a known HTML 4 name
# was decoded however it went on ("?id=1&lang=en" had "〈", "&copy2024" was
# "&copy2024;"), and "&#38" without its ";" stayed as written in a plain field but was
# decoded in HTML. The lenient path only (the XML parser reads a well-formed body; it
# holds no bare "&"), every "&" in text (not in a tag, a comment, a CDATA section or a
# declaration) is made what HTML5 reads in an attribute value before sgmllib sees it
# (URLs, where a bare "&" is commonest, stand in a feed's text): a reference HTML5
# knows, with its ";", is left to feedparser; a number without its ";" is that
# reference with it; a name HTML5 reads without a ";" (its legacy names: "&amp",
# "&nbsp", "&copy", "&eacute"...) is that character where it is the whole name and no
# "=" follows ("&copy 2024", "&nbsp<"); any other "&" is a literal "&" ("&T", "&lang=",
# "&hellip " and, a legacy name running on into a letter, a digit or "=", "&region=eu",
# "&param=x", "&copy2024", "&amp=1" stay as written; HTML5's reading of text, which
# takes the longest legacy name that starts the name, made a link "?ref=rss®ion=eu").
# ``_loose_reading`` is set around the parse: False reads as releases before
# PARSE_VERSION 26 did (``EntrySnapshot.loose``), and the list records whether any "&"
# was read otherwise.
# --------------------------------------------------------------------------

# what the lenient parser reads as markup, where an "&" is no reference (each stops at
# the next "<" or ">", so a body of unclosed ones is still read in linear time)
_LOOSE_AMP = re.compile(
    r"<!\[CDATA\[.*?(?:\]\]>|\Z)|<!--.*?(?:-->|\Z)|<[!?][^<>]*>"
    r"|</?[A-Za-z](?:[^\"'<>]|\"[^\"<>]*\"|'[^'<>]*')*>"
    r"|&(?:#(?:[xX]([0-9A-Fa-f]+)|([0-9]+))|([A-Za-z][A-Za-z0-9]*))(;?)",
    re.DOTALL,
)
# HTML5's names read without a ";" (its legacy ones), each one character
_LEGACY_NAMES = {k: v for k, v in html.entities.html5.items() if not k.endswith(";")}
# [read as now (True) or as before PARSE_VERSION 26 (False), an "&" read otherwise]
_loose_reading: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar(
    "feedwatch_loose_reading", default=None
)


def _char_ref(code: int) -> str:
    """A character reference feedparser reads as ``code``'s character (U+FFFD for no
    character: NUL, a surrogate, beyond U+10FFFF)."""
    if code == 0 or 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
        code = 0xFFFD
    return f"&#{code};"


def _mended_amp(m: re.Match[str], declared: Mapping[str, Any]) -> str:
    hexd, dec, name, semi = m.group(1), m.group(2), m.group(3), m.group(4)
    if hexd is None and dec is None and name is None:
        return m.group(0)  # markup
    if name is None:
        if semi:
            return m.group(0)
        digits = hexd if hexd is not None else dec
        if len(digits.lstrip("0")) > 8:
            return _char_ref(0x110000)
        return _char_ref(int(hexd, 16) if hexd is not None else int(dec))
    if (semi and name + ";" in html.entities.html5) or name in declared:
        return m.group(0)
    char = _LEGACY_NAMES.get(name) if not semi else None
    if char is not None and m.string[m.end() : m.end() + 1] != "=":
        return _char_ref(ord(char))
    return "&amp;" + name + semi


def _amps_as_html5_reads() -> None:
    """Installs the reading above on feedparser's lenient parser (its ``feed``)."""
    import importlib

    loose = importlib.import_module("feedparser.parsers.loose")._LooseFeedParser
    if getattr(loose.__dict__.get("feed"), "_feedwatch", False):
        return

    def feed(self: Any, data: str) -> Any:
        reading = _loose_reading.get()
        if (reading is None or reading[0]) and isinstance(data, str) and "&" in data:
            declared = self.entities if isinstance(self.entities, Mapping) else {}
            mended = _LOOSE_AMP.sub(lambda m: _mended_amp(m, declared), data)
            if reading is not None and mended != data:
                reading[1] = True
            data = mended
        return super(loose, self).feed(data)

    feed._feedwatch = True  # type: ignore[attr-defined]
    loose.feed = feed


_amps_as_html5_reads()

_JSONFEED_VERSION = re.compile(r"https?://jsonfeed\.org/version/")
_JSON_TYPE = re.compile(r"^\s*(?:application|text)/(?:[\w.+-]*\+)?json\b", re.IGNORECASE)
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
_LEADING = b"\xef\xbb\xbf \t\r\n"
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_WARNING = 300
_FOUR_DIGIT_YEAR = re.compile(r"(?<!\d)\d{4}(?!\d)")


def parse_body(
    body: bytes,
    headers: Mapping[str, str],
    *,
    url: str | None = None,
    max_entries: int = 5000,
) -> ParsedFeed:
    """Read one body as RSS 0.9x/1.0/2.0, Atom 0.3/1.0 or JSON Feed 1.x.

    ``headers`` are the response headers (any case); ``url`` the final fetch
    URL, used only as the base for relative links. Entries beyond
    ``max_entries`` (document order) are dropped and counted.
    """
    try:
        if not body.strip():
            return _not_a_feed("empty body")
        if body.startswith(_GZIP_MAGIC):
            return _not_a_feed(
                "the body is gzip-compressed (compressed twice, or sent without"
                " Content-Encoding: gzip): not read"
            )
        lower = {str(k).lower(): str(v) for k, v in headers.items()}
        max_entries = max(0, max_entries)
        if _looks_like_json(body, lower.get("content-type", "")):
            return _parse_json(body, lower, url, max_entries)
        return _parse_xml(body, lower, url, max_entries)
    except Exception as exc:  # the contract: a bad body never takes the poll down
        log.warning("parse.failed", error=type(exc).__name__, url=url)
        return ParsedFeed(
            title=None,
            link=None,
            entries=(),
            is_feed=False,
            warnings=(_short(f"parser failed: {type(exc).__name__}: {exc}"),),
        )


# --------------------------------------------------------------------------
# RSS / Atom through feedparser
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class XmlParse:
    """``parse_body``'s result for an XML body, with what feedparser saw (for feedwatch.partial)."""

    feed: ParsedFeed
    version: str  # feedparser's format version ("rss20", "atom10", ...; "" = none)
    raw_entries: int  # entries feedparser found (before max_entries and failed conversions)
    strict: bool  # read by the XML parser, not the lenient fallback, the encoding as declared


def parse_xml_detail(
    body: bytes,
    headers: Mapping[str, str],
    *,
    url: str | None,
    max_entries: int,
    read_as: Decoding | None = None,
) -> XmlParse:
    """``parse_body`` on a body known to be XML (not JSON, not empty), by the same code path;
    may raise where ``parse_body`` would turn the error into ``is_feed=False``.
    ``read_as``: how to read its bytes, when ``body`` is a part of a body (``decoding``
    of the whole, so that the part is read as the whole is); None: decided from ``body``."""
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    return _parse_xml_detail(body, lower, url, max(0, max_entries), read_as)


def _parse_xml(
    body: bytes, headers: dict[str, str], url: str | None, max_entries: int
) -> ParsedFeed:
    return _parse_xml_detail(body, headers, url, max_entries).feed


# feedparser's XML handling is quadratic in the attributes of one element and in the
# namespace prefixes of a document: 20,000 attributes took 4.6 s, 200,000 (2.3 MB, under
# max_body) seven minutes of a core that no timeout bounds. No feed comes near these.
MAX_ATTRIBUTES = 1000
MAX_PREFIXES = 256
_LONG_TAG = re.compile(rb"<[^<>]{4096,}>")
_ATTRIBUTE = re.compile(rb"""[\s"'][^\s=<>"']+\s*=""")
_PREFIX = re.compile(rb"xmlns:([^\s=/>]+)\s*=")


def _costly_markup(body: bytes) -> str | None:
    """Why parsing ``body`` would take minutes, or None (the usual case, cheaply)."""
    if body.count(b"=") > MAX_ATTRIBUTES:
        for m in _LONG_TAG.finditer(body):
            n = len(_ATTRIBUTE.findall(m.group(0)))
            if n > MAX_ATTRIBUTES:
                return (
                    f"an element with {n} attributes (more than {MAX_ATTRIBUTES}): not read,"
                    " parsing it would take minutes"
                )
    if body.count(b"xmlns:") > MAX_PREFIXES:
        n = len(set(_PREFIX.findall(body)))
        if n > MAX_PREFIXES:
            return (
                f"{n} namespace prefixes (more than {MAX_PREFIXES}): not read,"
                " parsing them would take minutes"
            )
    return None


def _parse_xml_detail(
    body: bytes,
    headers: dict[str, str],
    url: str | None,
    max_entries: int,
    read_as: Decoding | None = None,
) -> XmlParse:
    costly = _costly_markup(body)
    if costly:
        return XmlParse(feed=_not_a_feed(costly), version="", raw_entries=0, strict=False)
    response_headers = dict(headers)
    body = _bom_to_utf8(body, response_headers)
    how = read_as if read_as is not None else _decide(body, response_headers)
    body = _read_as(body, response_headers, how)
    location = response_headers.get("content-location")
    url = _without_userinfo(url)
    if url:
        # feedparser only resolves an absolute Content-Location; a relative one
        # (allowed by HTTP) is relative to the request URL.
        response_headers["content-location"] = urljoin(url, location) if location else url
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        # Both options only rewrite HTML *inside* text fields, which we reduce
        # to text anyway; entry and feed links are still resolved. Measured on
        # a 27 KB RSS feed: 55 ms with the defaults, 14 ms without.
        cap = [max_entries, 0]
        token = _entry_cap.set(cap)
        reading = [True, False]
        loose_token = _loose_reading.set(reading)
        try:
            d = feedparser.parse(
                io.BytesIO(body),
                response_headers=response_headers,
                sanitize_html=False,
                resolve_relative_uris=False,
            )
            if reading[1]:
                # an "&" read otherwise than releases before PARSE_VERSION 26 read it:
                # their reading too (``EntrySnapshot.loose``), for the rows they stored
                reading[0] = False
                cap[1] = 0
                before = feedparser.parse(
                    io.BytesIO(body),
                    response_headers=response_headers,
                    sanitize_html=False,
                    resolve_relative_uris=False,
                )
        finally:
            _loose_reading.reset(loose_token)
            _entry_cap.reset(token)
    warnings: list[str] = list(how.warnings)
    if d.get("bozo"):
        text = _describe_bozo(
            d.get("bozo_exception"),
            "content-type" in headers,
            _added_lines(body, d.get("encoding")),
        )
        if text:
            warnings.append(text)
    raw_entries = d.get("entries") or []
    is_feed = bool(d.get("version")) or bool(raw_entries) or bool(cap[1])
    malformed = isinstance(d.get("bozo_exception"), xml.sax.SAXParseException)
    cut_short = malformed and _unfinished(body)
    if (
        raw_entries
        and not cap[1]
        and len(raw_entries) <= max_entries
        and cut_short
        and _cut_short(body) == len(raw_entries)
    ):
        # Its text is only what arrived: compared, it would be an update (and the whole
        # entry, next poll, another); as new, an alert of half a story. Not seen now, so
        # nothing of it is removed: the next poll reads it whole.
        raw_entries = raw_entries[:-1]
        warnings.append(
            "the body ends inside its last entry (cut short?): that entry is left for the next poll"
        )
    dropped = max(0, len(raw_entries) - max_entries) + cap[1]
    base = response_headers.get("content-location") or None
    feed = d.get("feed") or {}
    # an Atom entry without an author has its <source>'s, else the feed's (RFC 4287
    # 4.2.1: ``_source_authors``); an RSS channel's
    # managingEditor is no author of its items
    feed_author = _authors(feed) if str(d.get("version") or "").startswith("atom") else None
    raw_before: list[Any] = []
    if reading[1]:
        raw_before = list(before.get("entries") or [])[: len(raw_entries)]
        if len(raw_before) != len(raw_entries):
            raw_before = []
    pairs = list(
        zip(raw_entries[:max_entries], raw_before or [None] * len(raw_entries), strict=False)
    )
    entries = _convert_all(pairs, lambda ep: _xml_entry(ep[0], base, feed_author, ep[1]), warnings)
    if dropped:
        warnings.append(f"{dropped} entries beyond max_entries ignored")
    if not is_feed:
        warnings.append("no RSS, Atom or JSON Feed found")
    parsed = ParsedFeed(
        title=_text_or_none(feed.get("title")),
        link=_str_or_none(feed.get("link")),
        author=feed_author,
        entries=entries,
        is_feed=is_feed,
        warnings=tuple(warnings),
        dropped_entries=dropped,
        cut_short=cut_short,
    )
    # A bozo NonXMLContentType (set from the headers alone) still parses strictly; any
    # later failure replaces it with the parser's or the encoding's exception.
    strict = not d.get("bozo") or isinstance(d.get("bozo_exception"), feedparser.NonXMLContentType)
    strict = strict and not how.stray
    return XmlParse(
        feed=parsed,
        version=_str(d.get("version")),
        raw_entries=len(raw_entries),
        strict=strict and not cap[1],
    )


_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_DECL_ENCODING = re.compile(r"""^(\s*<\?xml[^>]*?\sencoding\s*=\s*)(["'])[^"']*\2""")
_CHARSET_PARAM = re.compile(r"""charset\s*=\s*(?:"[^"]*"|'[^']*'|[^;\s]*)""", re.IGNORECASE)


def _bom_to_utf8(body: bytes, headers: dict[str, str]) -> bytes:
    """A body that starts with a byte-order mark, as UTF-8 with the labels made to agree.

    The mark is authoritative (XML 1.0 appendix F; browsers agree), but feedparser
    trusts a Content-Type charset or a missing encoding declaration over it: a
    UTF-16 feed without ``encoding="utf-16"`` failed as "not well-formed". ``headers``
    (our copy) gets ``charset=utf-8``.
    """
    for bom, codec in _BOMS:
        if body.startswith(bom):
            text = body[len(bom) :].decode(codec, "replace")
            text = _DECL_ENCODING.sub(r"\1\2utf-8\2", text, count=1)
            if "content-type" in headers:
                headers["content-type"] = _CHARSET_PARAM.sub(
                    "charset=utf-8", headers["content-type"]
                )
            return text.encode("utf-8")
    return body


# How a body's bytes are read (``decoding``), beside the byte-order mark (above).
#
# feedparser reads a body as its labels say (the Content-Type charset, the XML
# declaration; with response headers but neither, ISO-8859-1), trying UTF-8, then
# windows-1252, when that fails. So a UTF-8 body labelled windows-1252 (or cp1252,
# ISO-8859-15) was read as windows-1252, every character beyond ASCII in mojibake
# ("CafÃ©"), silently; and when a later body held a byte windows-1252 leaves undefined
# (0x9D: the UTF-8 of "”" ends with it) the whole document as UTF-8, so every entry
# beyond ASCII alerted as updated, and again when the byte went. (ISO-8859-1 looked
# right only because feedparser puts back each field that reads as UTF-8 once
# encoded as ISO-8859-1 again: one that also held a character reference, "&#233;
# Café", stayed in mojibake.) Real text in a single-byte encoding that happens to be
# valid UTF-8 with multi-byte sequences is all but impossible (each accented letter
# would have to be followed by one to three of the bytes 0x80-0xBF), so such a body is
# UTF-8 whatever a single-byte label says, with a warning naming the label. A body
# that is mostly UTF-8 holds bytes that are not (a title pasted from a Windows
# editor): with more UTF-8 characters beyond ASCII than such bytes, each byte alone is
# read in the single-byte encoding the body names (windows-1252 where it names none),
# the rest stays UTF-8 (read whole in windows-1252, every other entry in mojibake
# alerted as updated, and again when the byte went). A Shift_JIS or KOI8-R body without
# a label has far fewer, and is left to feedparser, which reads it whole as
# windows-1252, as it always did; one labelled another multi-byte encoding (Shift_JIS,
# GB18030) is read as labelled.
#
# A UTF-16 or UTF-32 label on a body without a byte-order mark that starts with "<" and
# a byte that is not NUL (ASCII; in UTF-16 every ASCII character has a NUL byte) is
# wrong: it is read as its declaration says, or as UTF-8 (feedparser decoded it as
# UTF-16, and it failed as not well-formed).
#
# The decision is made from the whole body, once: feedwatch.partial parses the body
# without its cached items, which must be read as the whole would be.


@dataclass(frozen=True)
class Decoding:
    """How a body's bytes are read (``decoding``)."""

    label: str | None = None  # the encoding its labels are made to name; None: as they are
    stray: str | None = None  # in a UTF-8 body, the encoding each byte that is not UTF-8 is read in
    warnings: tuple[str, ...] = ()


_AS_LABELLED = Decoding()
# Each invalid byte, as decoding with "surrogateescape" leaves it.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
# The XML declaration's encoding, after white space (which makes the declaration no XML,
# and feedparser does not see it: a label all the same).
_DECLARED = re.compile(rb"""^\s*<\?xml[^>]*?\sencoding\s*=\s*["']([^"']*)["']""")
_DECLARED_AT = re.compile(rb"""^(\s*<\?xml[^>]*?\sencoding\s*=\s*)(["'])[^"']*\2""")
# "<" then a byte that is not NUL, after white space: ASCII, not UTF-16 or UTF-32
_ASCII_START = re.compile(rb"[ \t\r\n]*<[^\x00]")
_WIDE = frozenset({"utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"})
_UTF8 = frozenset({"utf-8", "utf-8-sig"})


def decoding(body: bytes, headers: Mapping[str, str]) -> Decoding:
    """How ``parse_body`` reads ``body``'s bytes: for feedwatch.partial, which parses a
    part of it (``parse_xml_detail``'s ``read_as``). ``headers`` in lower case."""
    response_headers = dict(headers)
    return _decide(_bom_to_utf8(body, response_headers), response_headers)


def _codec(name: str) -> str | None:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


@functools.lru_cache(maxsize=64)
def _single_byte(codec: str | None) -> bool:
    """Whether ``codec`` reads every byte as one character, ASCII's below 0x80
    (windows-1252, ISO-8859-n, KOI8-R, US-ASCII), by what it does."""
    if codec is None or codec.startswith("utf"):
        return False
    try:
        low = bytes(range(0x80)).decode(codec)
        high = bytes(range(0x80, 0x100)).decode(codec, "replace")
    except Exception:  # not a text encoding (rot13), or one that refuses its own bytes
        return False
    return low == bytes(range(0x80)).decode("ascii") and len(high) == 0x80


@functools.lru_cache(maxsize=16)
def _stray_table(codec: str) -> dict[int, str]:
    """Each escaped byte (``_ESCAPED_BYTE``) as ``codec`` reads it (one it leaves
    undefined as ISO-8859-1, as browsers read windows-1252's)."""
    return {0xDC00 + b: bytes([b]).decode(codec, "ignore") or chr(b) for b in range(0x80, 0x100)}


def _decide(body: bytes, headers: Mapping[str, str]) -> Decoding:
    """How to read ``body`` (after ``_bom_to_utf8``), by its labels in ``headers`` and
    itself."""
    m = _CHARSET.search(headers.get("content-type", ""))
    charset = m.group(1) if m else None
    decl = _DECLARED.match(body)
    declared = decl.group(1).decode("ascii", "replace") if decl else None
    wide = None
    if (charset or declared) and _ASCII_START.match(body):
        if charset and _codec(charset) in _WIDE:
            wide, charset = charset, None
        if declared and _codec(declared) in _WIDE:
            wide, declared = wide or declared, None
    names = [n for n in (charset, declared) if n]
    single = next((n for n in names if _single_byte(_codec(n))), None)
    primary = _codec(charset or declared or "utf-8")  # the label most Content-Types go by
    other = not _single_byte(primary) and primary not in _UTF8  # Shift_JIS, GB18030, unknown
    label = (declared or "utf-8") if wide else None
    warnings = [
        f"labelled {wide}, but the body is not UTF-16 or UTF-32 (no byte-order mark, and"
        f" ASCII at its start): read as {label}"
    ] * bool(wide)
    if body.isascii() or other:
        return Decoding(label, None, tuple(warnings)) if wide else _AS_LABELLED
    try:
        body.decode("utf-8")
        first = -1
    except UnicodeDecodeError as exc:
        first = exc.start
    stray = None
    if first >= 0:
        text = body.decode("utf-8", "surrogateescape")
        bad = len(_ESCAPED_BYTE.findall(text))
        beyond_ascii = len(text) - len(text.encode("ascii", "ignore"))
        if beyond_ascii - bad <= bad:  # most likely in the encoding labelled, or another
            return Decoding(label, None, tuple(warnings)) if wide else _AS_LABELLED
        # the bytes alone in the single-byte encoding named (one beyond ASCII)
        stray = single if single and _codec(single) != "ascii" else "windows-1252"
    if single is not None:
        label = "utf-8"
        warnings.append(f"labelled {single}{MISLABELLED}")
    elif "content-type" not in headers:
        label = "utf-8"  # not feedparser's ISO-8859-1 for a response without a Content-Type
    if stray is not None:
        line = body.count(b"\n", 0, first) + 1
        warnings.append(f"bytes that are not UTF-8 (the first at line {line}) read as {stray}")
    return Decoding(label, stray, tuple(warnings))


def _read_as(body: bytes, headers: dict[str, str], how: Decoding) -> bytes:
    """``body`` read as ``how`` says: each byte that is not UTF-8 read in ``how.stray``,
    and its labels made to name ``how.label`` (in ``headers``, our copy, a Content-Type
    that names it when there is none)."""
    if how.stray is not None and not body.isascii():
        codec = _codec(how.stray) or "cp1252"
        text = body.decode("utf-8", "surrogateescape")
        body = text.translate(_stray_table(codec)).encode("utf-8")
    if how.label is None:
        return body
    m = _DECLARED_AT.match(body)
    if m:
        label = how.label.encode("ascii", "replace")
        body = m.group(1) + m.group(2) + label + m.group(2) + body[m.end() :]
    content_type = headers.get("content-type")
    if content_type is None:
        headers["content-type"] = f"application/xml; charset={how.label}"
    elif _CHARSET.search(content_type):
        headers["content-type"] = _CHARSET_PARAM.sub(f"charset={how.label}", content_type)
    return body


def _added_lines(body: bytes, encoding: object) -> int:
    """The lines feedparser put before ``body`` (which it read as ``encoding``): an XML
    declaration and a line break when it had no declaration, so an error on the
    body's line 3 was said to be on line 4."""
    if not isinstance(encoding, str) or not encoding:
        return 0  # not decoded: handed over as it was
    try:
        head = body[:32].decode(encoding, "ignore")
    except LookupError:
        return 0
    head = head[1:] if head.startswith("\ufeff") else head  # a byte-order mark it drops
    return 0 if head.startswith("<?xml") else 1


def _describe_bozo(exc: object, had_content_type: bool, added_lines: int = 0) -> str | None:
    """feedparser's bozo exception as a short sentence a person understands; its line
    numbers less the ``added_lines`` feedparser put before the body."""
    if exc is None:
        return None
    if isinstance(exc, feedparser.NonXMLContentType) and not had_content_type:
        return None  # we gave no Content-Type: nothing wrong with the feed
    if isinstance(exc, xml.sax.SAXParseException):
        line = max(1, (exc.getLineNumber() or 0) - added_lines)
        return _short(f"not well-formed XML at line {line}: {exc.getMessage()}")
    if isinstance(exc, feedparser.CharacterEncodingOverride):
        return _short(f"character encoding: {exc}")
    if isinstance(exc, feedparser.CharacterEncodingUnknown):
        return _short(f"unknown character encoding: {exc}")
    if isinstance(exc, feedparser.NonXMLContentType):
        return _short(f"content type is not XML: {exc}")
    return _short(f"{type(exc).__name__}: {exc}")


def _authors(obj: dict[str, Any]) -> str | None:
    """An entry's (or a feed's) author: feedparser's own text for one; "name, name" for
    several (feedparser's ``author`` is the last one alone, and it gives the later ones
    the first one's email)."""
    authors = dict.get(obj, "authors")
    if isinstance(authors, list) and len(authors) > 1:
        names = _unique(
            _text_or_none(_str(a.get("name")) or _str(a.get("email"))) or ""
            for a in authors
            if isinstance(a, Mapping)
        )
        if names:
            return ", ".join(names)
    return _text_or_none(dict.get(obj, "author"))


def _source_authors(e: dict[str, Any]) -> str | None:
    """The authors of an Atom entry's ``<source>``: the feed it was copied from (a
    Planet's), whose authors are the entry's before the aggregating feed's (RFC 4287
    4.2.1). An RSS ``<source>`` names a channel, with no author."""
    source = dict.get(e, "source")
    return _authors(source) if isinstance(source, dict) else None


def _xml_entry(
    e: dict[str, Any],
    feed_base: str | None,
    feed_author: str | None = None,
    before: dict[str, Any] | None = None,
) -> EntrySnapshot:
    """``e`` as an entry; ``before``: the same entry as releases before PARSE_VERSION 26
    read its body (``_amps_as_html5_reads``), whose texts give ``EntrySnapshot.loose``
    and ``earlier`` where they differ."""
    now = _xml_entry_read(e, feed_base, feed_author)
    if before is None:
        return now
    was = _xml_entry_read(before, feed_base, feed_author)
    texts = (was.title, was.summary, was.content)
    if texts == (now.title, now.summary, now.content):
        return now
    # every release before read this entry's "&"s so: its texts as they read them
    earlier = was.earlier or (texts, texts, texts, texts)
    return replace(now, loose=texts, earlier=earlier)


def _xml_entry_read(
    e: dict[str, Any], feed_base: str | None, feed_author: str | None = None
) -> EntrySnapshot:
    # dict.get, never e.get/e[...]: FeedParserDict maps a missing `updated`
    # onto `published`, which would invent an update time.
    get = dict.get
    summary, summary_was = "", None
    # feedparser copies Atom <content> into `summary` when there is none: that
    # copy has no summary_detail; keep summary for a real summary only.
    if get(e, "summary_detail") is not None:
        summary, summary_was = _readings_as(_str(get(e, "summary")), get(e, "summary_detail"))
    contents = get(e, "content") or []
    readings = [_readings_as(_str(c.get("value")), c) for c in contents if isinstance(c, Mapping)]
    content = _join_texts(text for text, _ in readings)
    content_was = None
    if any(was is not None for _, was in readings):
        v5, v4, before, early = (
            _join_texts(text if was is None else was[i] for text, was in readings) for i in range(4)
        )
        content_was = (v5, v4, before, early)
    title, title_was = _readings_as(_str(get(e, "title")), get(e, "title_detail"))
    tags = _unique(
        normalize_space(_str(t.get("term")) or _str(t.get("label")))
        for t in (get(e, "tags") or [])
        if isinstance(t, Mapping)
    )
    enclosures = _xml_enclosures(e, _entry_base(e) or feed_base)
    (published, published_was, published_26), zone = (
        _entry_times(e, "published"),
        _named_zone(get(e, "published")),
    )
    updated, updated_was, updated_26 = _entry_times(e, "updated")
    return EntrySnapshot(
        entry_id=_str_or_none(get(e, "id")),
        title=title,
        link=_str_or_none(get(e, "link")),
        author=_authors(e) or _source_authors(e) or feed_author,
        published=published,
        updated=updated,
        summary=summary,
        content=content,
        tags=tags,
        enclosures=enclosures,
        zone=zone,
        earlier=_earlier((title, title_was), (summary, summary_was), (content, content_was)),
        misread=_misread(published, _read_before(e, "published"), zone),
        reread=_reread((published, updated), (published_was, updated_was)),
        read_26=_reread((published, updated), (published_26, updated_26)),
    )


def _xml_enclosures(e: dict[str, Any], base: str | None) -> tuple[Enclosure, ...]:
    """An entry's RSS ``<enclosure>``s and Atom ``rel="enclosure"`` links, then its
    Media RSS ``<media:content>``s (YouTube's Atom feeds, photo and podcast feeds; a
    ``<media:group>``'s too: feedparser lists them all as ``media_content``, its
    attribute names in lower case), each with its ``fileSize`` as the length. A
    media:content of a URL already there is the same file, and is left out. A
    ``<media:thumbnail>`` is a preview of the entry, not a file it carries: none.
    feedparser resolves <link>s but neither an RSS <enclosure url> nor a
    <media:content url>: done here, against the entry's xml:base where feedparser
    recorded one."""
    enclosures = [
        Enclosure(
            url=_resolve(base, href),
            type=_str_or_none(enc.get("type")),
            length=_to_length(enc.get("length")),
        )
        for enc in (e.get("enclosures") or [])
        if isinstance(enc, Mapping) and (href := _str(enc.get("href")).strip())
    ]
    media = dict.get(e, "media_content")
    if isinstance(media, list):
        seen = {enc.url for enc in enclosures}
        for m in media:
            if not (isinstance(m, Mapping) and (href := _str(m.get("url")).strip())):
                continue
            url = _resolve(base, href)
            if url not in seen:
                seen.add(url)
                length = _to_length(m.get("filesize"))
                enclosures.append(Enclosure(url, _str_or_none(m.get("type")), length))
    return tuple(enclosures)


def _readings_as(value: str, detail: Any) -> tuple[str, tuple[str, str, str, str] | None]:
    """A field's text by the type feedparser found for it: HTML unless it says plain
    (an Atom ``type="text"``, an RSS title without markup), where a "<" is text; and
    the texts earlier releases read, or None when those are the same (``html_readings``)."""
    if isinstance(detail, Mapping) and detail.get("type") == "text/plain":
        return plain_readings(value)
    return html_readings(value)


def _earlier(*fields: tuple[str, tuple[str, str, str, str] | None]) -> Readings | None:
    """``EntrySnapshot.earlier`` of a title's, a summary's and a content's readings."""
    if all(was is None for _, was in fields):
        return None

    def read(i: int) -> tuple[str, str, str]:
        title, summary, content = (text if was is None else was[i] for text, was in fields)
        return (title, summary, content)

    return (read(0), read(1), read(2), read(3))


def _entry_base(e: dict[str, Any]) -> str | None:
    """The xml:base in effect at the entry (``_item_bases``); else its title's,
    summary's or content's."""
    if b := _str(dict.get(e, _ITEM_BASE)).strip():
        return b
    details = [dict.get(e, "title_detail"), dict.get(e, "summary_detail")]
    details += list(dict.get(e, "content") or [])
    for d in details:
        if isinstance(d, Mapping) and (b := _str(d.get("base")).strip()):
            return b
    return None


def _read_by_shape(
    text: str, as_22: bool = False, as_26: bool = False
) -> tuple[bool, datetime | None]:
    """A date of a shape read here, not as feedparser reads it (digits alone, RFC 822,
    ISO 8601's basic format, a zone name or a comma fraction in ISO 8601, an ISO zone
    without a colon, a date without its day, a zone beyond 14 hours): (True, its instant
    or None); else (False, None). ``as_22``: as parse version 22 read it (no AM/PM, no
    ISO zone name or comma: feedparser's); ``as_26``: as parse version 26 read it (a
    date without its day on the day of the poll, a zone beyond 14 hours as written)."""
    if not (as_22 or as_26):
        if _DAYLESS.match(text):
            return True, None
        if (bounded := _zone_within(text)) is not None:
            read, when = _read_by_shape(bounded)
            return True, (when if read else _feedparser_instant(bounded))
    if _distrusted(text):
        return True, _unix_time(text)
    if _RFC822_SHAPE.match(text):
        text = _RFC822_FRACTION.sub(r"\1", text)
        return True, _rfc822(text if as_22 else _MERIDIEM.sub(_hours_of_day, text))
    if not as_22 and (iso := _ISO_NAMED_OR_COMMA.match(text)):
        read, when = _iso_exact(iso)
        if read:
            return True, when
    if basic := _ISO_BASIC.match(text):
        return True, _iso_basic(basic, as_22, as_26)
    if _ISO_ZONE_NO_COLON.search(text):
        return True, _iso_zone_no_colon(text, as_22)
    return False, None


# A date without its day: a time of day alone ("10:00:00", "T10:00:00+02:00") or an ISO
# 8601 date without its year ("--12-01", "--12", "---01", the ordinal "-335").
# feedparser's ISO 8601 reader took the missing part from the clock, so the date was
# that time on the day of the poll (or that day of its year): each day's poll read it
# otherwise. No date, as a browser or a feed reader would not invent one.
_DAYLESS = re.compile(r"^(?:[Tt]?\d\d:\d\d|--|-\d{3}(?!\d))")

# A numeric zone after a time of day (RFC 822 or ISO 8601, its basic format too):
# feedparser's readers took any hours ("+1500" and "+15" as 15 hours, "-9959" as 99).
# One beyond 14 hours (UTC+14:00 is the farthest real one) is no zone: UTC, as an RFC
# 822 zone of one or two digits is (``_zone_seconds``).
_ZONE_BEYOND = re.compile(
    r"(?:\d\d:\d\d|[Tt]\d{4})(?::?\d\d)?(?:[.,]\d+)?(?:\s*[AaPp]\.?[Mm]\.?)?"
    r"(\s*[+-](\d\d)(?::?(\d\d))?)$"
)
_MAX_ZONE = 14 * 60  # minutes


def _zone_within(text: str) -> str | None:
    """``text`` with its numeric zone beyond 14 hours written as UTC (RFC 822's
    "+0000", ISO 8601's "Z"); None when it has no such zone."""
    m = _ZONE_BEYOND.search(text)
    if m is None or int(m.group(2)) * 60 + int(m.group(3) or 0) <= _MAX_ZONE:
        return None
    return text[: m.start(1)] + (" +0000" if _RFC822_SHAPE.match(text) else "Z")


def _feedparser_instant(text: str) -> datetime | None:
    try:
        return _from_struct(_feedparser_utc(text))
    except Exception:  # feedparser's date handlers on arbitrary text: never fatal
        return None


# A time of day with AM or PM in an RFC 822 date ("10:40:17 PM GMT", some CMSs): both
# readers dropped it, so 10:40 PM was 10:40. Written as the 24-hour time it is (12 AM
# is midnight, 12 PM noon); an hour that is no 12-hour one (0, 13) keeps its reading.
_MERIDIEM = re.compile(r"(?<=\s)(\d{1,2})(:\d\d(?::\d\d)?)\s*([AaPp])\.?[Mm]\.?(?=\s|$)")


def _hours_of_day(m: re.Match[str]) -> str:
    hour = int(m.group(1))
    if 1 <= hour <= 12:
        hour = hour % 12 + (12 if m.group(3) in "Pp" else 0)
    return f"{hour:02d}{m.group(2)}"


# An ISO 8601 date and time with a zone name ("2024-11-22T10:40:17 EST", "2024-11-22
# 10:40:17 PST"), which feedparser took for UTC (or midnight, after a space), or with a
# fraction of a second after a comma ("10:40:17,5+01:00"), whose zone it dropped and
# which it read in the process's local zone (``_feedparser_utc``). Read exactly here;
# the zone names are RFC 822's, as ``_rfc822`` reads them (an unknown name is left to
# feedparser: UTC, as before).
_ISO_NAMED_OR_COMMA = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d)(?::(\d\d)(?:([.,])\d+)?)?"
    r"\s*([A-Za-z]{2,5}|[Zz]|[+-]\d\d(?::?\d\d)?)?$"
)
_ISO_ZONE_NAMES = {  # minutes; with ``_ZONE_NAMES``
    "UT": 0,
    "UTC": 0,
    "GMT": 0,
    "MET": 60,
    "MEST": 120,
    "ADT": -180,
    "AST": -240,
    "EDT": -240,
    "EST": -300,
    "CDT": -300,
    "CST": -360,
    "MDT": -360,
    "MST": -420,
    "PDT": -420,
    "PST": -480,
}


def _iso_exact(m: re.Match[str]) -> tuple[bool, datetime | None]:
    """(True, the instant) of an ``_ISO_NAMED_OR_COMMA`` date with a known zone name
    or a comma fraction; (False, None) for any other, left to feedparser."""
    y, mo, d, h, mi, sec, mark, zone = m.groups()
    zone = zone or ""
    if zone[:1].isalpha() and len(zone) > 1:
        minutes = _ISO_ZONE_NAMES.get(zone.upper())
        if minutes is None:
            return False, None
    elif mark == ",":
        minutes = 0
        if zone[:1] in "+-" and zone:
            digits = zone[1:].replace(":", "")
            minutes = int(digits[:2]) * 60 + int(digits[2:] or 0)
            minutes = -minutes if zone[0] == "-" else minutes
    else:
        return False, None
    try:
        day = datetime(int(y), int(mo), int(d), tzinfo=timezone.utc)
        clock = timedelta(hours=int(h), minutes=int(mi) - minutes, seconds=int(sec or 0))
        return True, day + clock
    except (ValueError, OverflowError):
        return True, None


def _read_before(e: dict[str, Any], key: str) -> datetime | None:
    """``key``'s time as a release before PARSE_VERSION 9 read it: feedparser's reading,
    else Python's of an RFC 822 date, its zone's digits as Python takes them."""
    before = _from_struct(dict.get(e, key + "_parsed"))
    raw = dict.get(e, key)
    if before is None and isinstance(raw, str):
        before = _rfc822_without_zone(raw, as_read_before=True)
    return before


def _misread(when: datetime | None, before: datetime | None, zone: int | None) -> datetime | None:
    """``EntrySnapshot.misread`` of a published time ``when`` that an earlier release read
    as ``before``: None where that is the same, and for a date naming a zone of
    ``_ZONE_NAMES`` (``EntrySnapshot.zone`` tells of that one)."""
    return None if zone or before == when else before


def _entry_times(
    e: dict[str, Any], key: str
) -> tuple[datetime | None, datetime | None, datetime | None]:
    """``key``'s time, as parse version 22 read it (``EntrySnapshot.reread``), and as
    parse version 26 read it (``EntrySnapshot.read_26``)."""
    raw = dict.get(e, key)
    text = raw.strip() if isinstance(raw, str) else ""
    read, when = _read_by_shape(text)
    read_22, when_22 = _read_by_shape(text, as_22=True) if _read_otherwise(text) else (read, when)
    if not read_22:
        when_22 = _from_struct(dict.get(e, key + "_parsed"))  # in the process's local zone
        if when_22 is None and text:
            when_22 = _rfc822_without_zone(text)
    if not read:
        when = when_22 if _local_is_utc() else _from_struct(_feedparser_utc(text))
        if when is None and text:
            when = _rfc822_without_zone(text)
    when_26 = when
    if _read_otherwise_26(text):
        read_26, when_26 = _read_by_shape(text, as_26=True)
        if not read_26:
            when_26 = when_22 if _local_is_utc() else _from_struct(_feedparser_utc(text))
    return when, when_22, when_26


def _read_otherwise(text: str) -> bool:
    """Whether ``_read_by_shape`` may read ``text`` otherwise than parse version 22 did
    (AM/PM, an ISO zone name or comma fraction): the cost of a second reading is paid
    for those only."""
    if _MERIDIEM.search(text) or ("," in text and _ISO_BASIC.match(text)):
        return True
    if _read_otherwise_26(text):
        return True
    iso = _ISO_NAMED_OR_COMMA.match(text)
    if iso is None:
        return False
    # "Z" or a numeric offset, no comma: read as before (most feeds' dates, read once);
    # none (the process's zone before), a name, or a comma fraction: maybe not
    zone = iso.group(8)
    return iso.group(7) == "," or zone is None or (zone.isalpha() and zone not in "Zz")


def _read_otherwise_26(text: str) -> bool:
    """Whether ``_read_by_shape`` reads ``text`` otherwise than parse version 26 did (a
    date without its day, a zone beyond 14 hours): the cost of a second reading is paid
    for those only."""
    return bool(_DAYLESS.match(text)) or _zone_within(text) is not None


def _local_is_utc() -> bool:
    """Whether the process's local time is UTC at every instant (its TZ is UTC), where
    feedparser's ISO 8601 reader reads as ``_feedparser_utc`` does."""
    return time.timezone == 0 and time.altzone == 0 and not time.daylight


def _reread(
    now: tuple[datetime | None, datetime | None], as_22: tuple[datetime | None, datetime | None]
) -> tuple[datetime | None, datetime | None] | None:
    """``EntrySnapshot.reread``: the (published, updated) times as parse version 22 read
    them, where one differs from ``now``'s; else None."""
    return None if as_22 == now else as_22


# An RFC 822 date: feedparser's chain of readers tries the next one when its RFC 822
# reader fails, and its asctime reader took "Mon, 01 Jan 0001 00:00:00 +0100" (before
# year 1 in UTC) for the year 100. Its RFC 822 reader took a zone of three digits as
# hours ("+530": 53 hours); Python's, one of two as minutes ("-5", "+01").
_RFC822_SHAPE = re.compile(r"^(?:[A-Za-z]+,?\s*)?\d{1,2}[\s-]+[A-Za-z]{3,}\.?[\s-]+\d{2,4}\s+\d")
_SHORT_ZONE = re.compile(r"\s([+-])(\d{1,3})$")
# Seconds with a fraction ("10:40:17.000": some generators write milliseconds), which
# both RFC 822 readers refuse, so the date was none: read without the fraction.
_RFC822_FRACTION = re.compile(r"(:\d\d)[.,]\d+(?=\s|$)")


# Zone names that feedparser's RFC 822 reader and Python's do not know (they know UT,
# GMT, Z, UTC, the US ones, MET, MEST and military letters), so "19:40:17 JST" was
# 19:40:17 UTC: the common ones that stand for one offset, in minutes. The ambiguous
# ones keep their reading: IST (India, Ireland, Israel) and BST (British Summer Time,
# Bangladesh) as UTC, CST as US Central (RFC 822's), not China's.
_ZONE_NAMES = {
    "WET": 0,
    "WEST": 60,
    "CET": 60,
    "CEST": 120,
    "MEZ": 60,
    "MESZ": 120,
    "WAT": 60,
    "EET": 120,
    "EEST": 180,
    "CAT": 120,
    "SAST": 120,
    "MSK": 180,
    "TRT": 180,
    "EAT": 180,
    "PKT": 300,
    "ICT": 420,
    "WIB": 420,
    "HKT": 480,
    "SGT": 480,
    "PHT": 480,
    "AWST": 480,
    "JST": 540,
    "KST": 540,
    "ACST": 570,
    "ACDT": 630,
    "AEST": 600,
    "AEDT": 660,
    "NZST": 720,
    "NZDT": 780,
    "HST": -600,
    "AKST": -540,
    "AKDT": -480,
    "BRT": -180,
    "ART": -180,
}
_NAMED_ZONE = re.compile(r"(?<=\d)\s+([A-Za-z]{3,4})$")
_ISO_ZONE_NAMES.update(_ZONE_NAMES)


def _zone_name(text: str) -> tuple[int, int] | None:
    """Where the zone name of ``_ZONE_NAMES`` that ``text`` ends with begins, and its
    offset in minutes; None when it ends with no such name."""
    m = _NAMED_ZONE.search(text)
    minutes = _ZONE_NAMES.get(m.group(1).upper()) if m else None
    return None if m is None or minutes is None else (m.start(), minutes)


def _named_zone(raw: Any) -> int | None:
    """The offset of the zone name of ``_ZONE_NAMES`` an RFC 822 date ends with, which
    an earlier version read as UTC (``EntrySnapshot.zone``); None for any other date
    (and for one of offset 0, which nothing misread)."""
    text = raw.strip() if isinstance(raw, str) else ""
    found = _zone_name(text) if _RFC822_SHAPE.match(text) else None
    return (found[1] or None) if found else None


def _numeric_zone(text: str) -> str:
    """``text`` with a zone name of ``_ZONE_NAMES`` at its end written as its offset."""
    found = _zone_name(text)
    if found is None:
        return text
    start, minutes = found
    hours, mins = divmod(abs(minutes), 60)
    return f"{text[:start]} {'-' if minutes < 0 else '+'}{hours:02d}{mins:02d}"


def _rfc822(text: str) -> datetime | None:
    """An RFC 822 date by feedparser's RFC 822 reader alone (it knows some zone names;
    ``_ZONE_NAMES`` the others), or by ours when it fails or when the zone has fewer
    than four digits."""
    text = _numeric_zone(text)
    if not _SHORT_ZONE.search(text):
        try:
            parsed = _from_struct(_parse_date_rfc822(text))
        except (KeyError, OverflowError, ValueError, AttributeError, IndexError):
            parsed = None
        if parsed is not None:
            return parsed
    return _rfc822_without_zone(text)


# An ISO 8601 zone without its colon ("+0530"): feedparser read its hours and dropped
# the minutes (10:40+0530 was 05:40Z).
_ISO_ZONE_NO_COLON = re.compile(r"(?<=\d)\s*([+-]\d\d)(\d\d)$")


def _iso_zone_no_colon(text: str, as_22: bool = False) -> datetime | None:
    read = _feedparser_date if as_22 else _feedparser_utc
    try:
        return _from_struct(read(_ISO_ZONE_NO_COLON.sub(r"\1:\2", text)))
    except Exception:  # feedparser's date handlers on arbitrary text: never fatal
        return None


# ISO 8601's basic format ("20241122T104017Z"): feedparser read its date alone, so the
# time was midnight. Read as the extended format it spells ("2024-11-22T10:40:17Z").
_ISO_BASIC = re.compile(
    r"^(\d{4})(\d\d)(\d\d)[Tt](\d\d)(\d\d)(\d\d)?([.,]\d+)?\s*([Zz]|[+-]\d\d(?::?\d\d)?)?$"
)


def _iso_basic(m: re.Match[str], as_22: bool = False, as_26: bool = False) -> datetime | None:
    y, mo, d, h, mi, s, fraction, zone = m.groups()
    text = f"{y}-{mo}-{d}T{h}:{mi}{':' + s if s else ''}{fraction or ''}{zone or ''}"
    read, when = _read_by_shape(text, as_22, as_26)  # an impossible date, a zone without its colon
    if read:
        return when
    try:
        return _from_struct((_feedparser_date if as_22 else _feedparser_utc)(text))
    except Exception:  # feedparser's date handlers on arbitrary text: never fatal
        return None


# feedparser reads any run of digits as a date, leniently: a Unix time "1764000000" as
# the year 1764, month 00 (1763-11-30), so a new entry was 260 years old and max_age
# never let it alert; and it rolls an impossible date over ("2024-00-10" was 2023-12-10,
# "2024-11-22T25:00" the 23rd).
_ISO_START = re.compile(r"^(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d))?)?(?!\d)")


def _distrusted(text: str) -> bool:
    """Whether feedparser's reading of ``text`` must not be taken: digits alone (see
    ``_unix_time``), or a date or time of day that cannot be."""
    if text.isascii() and text.isdigit():
        return len(text) != 4  # a year alone is a W3C-DTF date (Dublin Core's dc:date)
    m = _ISO_START.match(text)
    if m is None:
        return False
    y, mo, d = (int(v) for v in m.group(1, 2, 3))
    h, mi, sec = (int(v or 0) for v in m.group(4, 5, 6))
    try:
        datetime(y, mo, d)
    except ValueError:
        return True  # month 00 or 13, the 31st of November, the 29th of February 2023
    return mi > 59 or sec > 60 or h > 24 or (h == 24 and mi + sec > 0)


def _unix_time(text: str) -> datetime | None:
    """Digits alone: 9 to 11 are Unix seconds (1973 to 5138), 12 to 14 milliseconds;
    any other number ("20241122", "12") is no date we can be sure of. None for anything
    else (``_distrusted``'s impossible dates)."""
    if not (text.isascii() and text.isdigit()):
        return None
    if 9 <= len(text) <= 11:
        seconds = int(text)
    elif 12 <= len(text) <= 14:
        seconds = int(text) // 1000
    else:
        return None
    return _UNIX_EPOCH + timedelta(seconds=seconds)


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _rfc822_without_zone(raw: str, as_read_before: bool = False) -> datetime | None:
    """feedparser gives up on an RFC 822 date with no (or an unknown) zone; read it as UTC.
    ``as_read_before``: as a release before PARSE_VERSION 9 read it (a zone name of
    ``_ZONE_NAMES`` as UTC, a zone of one or two digits as minutes: Python's reading)."""
    raw = raw.strip() if as_read_before else _numeric_zone(raw.strip())
    try:
        fields = email.utils.parsedate_tz(raw.strip())
        if fields is None:
            return None
        year = _FOUR_DIGIT_YEAR.search(raw)
        if year and int(year.group(0)) != fields[0]:
            return None  # "0000" would become 2000: a two-digit-year rule misapplied
        when = _from_struct(fields[:6])
        zone = (fields[9] or 0) if as_read_before else _zone_seconds(raw, fields[9])
        return when - timedelta(seconds=zone) if when else None
    except (ValueError, TypeError, OverflowError, IndexError):
        return None


def _zone_seconds(raw: str, parsed: int | None) -> int:
    """The zone's offset: Python's reading, but a zone of one or two digits is hours
    ("-5"), and one beyond any real zone (more than 14 hours) is unknown: UTC."""
    m = _SHORT_ZONE.search(raw.strip())
    if m is None or len(m.group(2)) == 3:
        return parsed or 0
    hours = int(m.group(2))
    if hours > 14:
        return 0
    return -hours * 3600 if m.group(1) == "-" else hours * 3600


class _UtcClock:
    """The ``time`` feedparser's ISO 8601 reader sees: its ``mktime`` and ``localtime``
    in UTC. It read a date as a local time of the process (``time.mktime``) and gave
    that back as one (``time.localtime``): the same wall-clock time, but a time a local
    DST change skips ("2026-03-29T02:30:00,5" under TZ=Europe/Berlin) came out an hour
    later, so the reading depended on the process's TZ."""

    mktime = staticmethod(calendar.timegm)
    localtime = staticmethod(time.gmtime)
    gmtime = staticmethod(time.gmtime)


# feedparser's ISO 8601 reader with ``_UtcClock`` as its ``time``: the same code
_iso8601_utc = types.FunctionType(
    _parse_date_iso8601.__code__, {**_parse_date_iso8601.__globals__, "time": _UtcClock}
)


def _feedparser_utc(text: str) -> Any:
    """feedparser's reading of a date (its chain of readers, as ``_parse_date`` tries
    them), its ISO 8601 reader in UTC whatever the process's TZ (``_UtcClock``)."""
    if not text:
        return None
    for handler in _date_handlers:
        read = _iso8601_utc if handler is _parse_date_iso8601 else handler
        try:
            t = read(text)
        except (KeyError, OverflowError, ValueError, AttributeError):
            continue
        except Exception:  # feedparser's date handlers on arbitrary text: never fatal
            continue
        if t and len(t) == 9:
            return t
    return None


def _from_struct(t: object) -> datetime | None:
    """feedparser's UTC struct_time as an aware datetime, or None when out of range."""
    if not isinstance(t, (time.struct_time, tuple)) or len(t) < 6:
        return None
    try:
        y, mo, d, h, mi, s = (int(v) for v in t[:6])
        return datetime(y, mo, d, h, mi, min(s, 59), tzinfo=timezone.utc)
    except (ValueError, TypeError, OverflowError):
        return None


# --------------------------------------------------------------------------
# JSON Feed 1.0 / 1.1
# --------------------------------------------------------------------------


def _looks_like_json(body: bytes, content_type: str) -> bool:
    start = _start(body)
    if start.startswith(b"{"):
        return True
    return bool(_JSON_TYPE.match(content_type)) and not start.startswith(b"<")


def _start(body: bytes) -> bytes:
    """The body's first bytes after white space, and after a byte-order mark read as
    the mark says (a UTF-16 JSON Feed starts "{\\x00"; not seen, it failed as XML
    unless its Content-Type said JSON)."""
    for bom, codec in _BOMS:
        if body.startswith(bom) and codec != "utf-8":
            text = body[len(bom) : len(bom) + 256].decode(codec, "ignore")
            return text.encode("utf-8", "replace").lstrip(_LEADING)[:64]
    return body[:64].lstrip(_LEADING)


def _not_a_feed(warning: str) -> ParsedFeed:
    return ParsedFeed(title=None, link=None, entries=(), is_feed=False, warnings=(warning,))


def _parse_json(
    body: bytes, headers: dict[str, str], url: str | None, max_entries: int
) -> ParsedFeed:
    try:
        doc = _load_json(body, headers.get("content-type", ""))
    except (ValueError, RecursionError) as exc:
        return _not_a_feed(_short(f"invalid JSON: {exc}"))
    version = doc.get("version") if isinstance(doc, dict) else None
    if not isinstance(version, str) or not _JSONFEED_VERSION.match(version):
        return _not_a_feed("JSON but not a JSON Feed (no https://jsonfeed.org/version/ version)")
    assert isinstance(doc, dict)
    warnings: list[str] = []
    base = _without_userinfo(url) or _str(doc.get("feed_url")) or None
    home = _str(doc.get("home_page_url")).strip()
    home_abs = _resolve(base, home) if home else None
    item_base = home_abs or base
    feed_authors = _json_authors(doc)
    items = doc.get("items")
    if not isinstance(items, list):
        if items is not None:
            warnings.append("JSON Feed `items` is not a list")
        items = []
    dropped = max(0, len(items) - max_entries)
    entries = _convert_all(
        items[:max_entries],
        lambda item: _json_entry(item, item_base, feed_authors),
        warnings,
    )
    if dropped:
        warnings.append(f"{dropped} entries beyond max_entries ignored")
    return ParsedFeed(
        title=_text_or_none(doc.get("title")),
        link=home_abs,
        entries=entries,
        is_feed=True,
        warnings=tuple(warnings),
        dropped_entries=dropped,
    )


# A JSON "\ud800" escape (or CESU-8 bytes) decodes to a lone surrogate, which no
# UTF-8 codec accepts: the state store (and every sink) would fail on that text.
_MAYBE_SURROGATE = re.compile(rb"\\[uU][dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_surrogates(value: Any) -> Any:
    """``value`` (parsed JSON) with every lone surrogate replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_no_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_no_surrogates(k): _no_surrogates(v) for k, v in value.items()}
    return value


def _load_json(body: bytes, content_type: str) -> Any:
    doc = _load_json_text(body, content_type)
    if _MAYBE_SURROGATE.search(body) or (
        not body.isascii() and body[:2] in (b"\xff\xfe", b"\xfe\xff")
    ):
        doc = _no_surrogates(doc)
    return doc


def _load_json_text(body: bytes, content_type: str) -> Any:
    try:
        return json.loads(body)  # detects UTF-8/16/32 (with or without BOM)
    except UnicodeDecodeError:
        m = _CHARSET.search(content_type)
        if not m:
            raise
        try:
            return json.loads(body.decode(m.group(1)))
        except LookupError as exc:
            raise ValueError(f"unknown charset {m.group(1)!r}") from exc


def _json_entry(item: Any, base: str | None, feed_authors: str | None) -> EntrySnapshot:
    if not isinstance(item, dict):
        raise ValueError("item is not an object")
    raw_id = item.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int, float)):
        raw_id = None
    link = _str(item.get("url")).strip() or _str(item.get("external_url")).strip()
    content_html = _str(item.get("content_html"))
    # JSON Feed: content_text, title and summary are plain text (a "<" is text)
    content, content_was = (
        html_readings(content_html)
        if content_html
        else plain_readings(_str(item.get("content_text")))
    )
    title, title_was = plain_readings(_str(item.get("title")))
    summary, summary_was = plain_readings(_str(item.get("summary")))
    tags = (
        _unique(normalize_space(t) for t in (item.get("tags") or []) if isinstance(t, str))
        if isinstance(item.get("tags"), list)
        else ()
    )
    published, before, published_was, published_26 = _parse_dates(item.get("date_published"))
    updated, _, updated_was, updated_26 = _parse_dates(item.get("date_modified"))
    zone = _named_zone(item.get("date_published"))
    attachments = item.get("attachments")
    enclosures = tuple(
        Enclosure(
            url=_resolve(base, href),
            type=_str_or_none(a.get("mime_type")),
            length=_to_length(a.get("size_in_bytes")),
        )
        for a in (attachments if isinstance(attachments, list) else [])
        if isinstance(a, dict) and (href := _str(a.get("url")).strip())
    )
    return EntrySnapshot(
        entry_id=_str_or_none(str(raw_id) if raw_id is not None else None),
        title=title,
        link=_resolve(base, link) if link else None,
        author=_json_authors(item) or feed_authors,
        published=published,
        updated=updated,
        summary=summary,
        content=content,
        tags=tags,
        enclosures=enclosures,
        zone=zone,
        earlier=_earlier((title, title_was), (summary, summary_was), (content, content_was)),
        misread=_misread(published, before, zone),
        reread=_reread((published, updated), (published_was, updated_was)),
        read_26=_reread((published, updated), (published_26, updated_26)),
    )


def _json_authors(obj: Mapping[str, Any]) -> str | None:
    """``authors`` (1.1) or ``author`` (1.0) as "name, name"."""
    authors = obj.get("authors")
    if not isinstance(authors, list):
        authors = [obj.get("author")]
    names = _unique(
        normalize_space(_str(a.get("name")) or _str(a.get("url")))
        for a in authors
        if isinstance(a, dict)
    )
    return ", ".join(names) or None


def _parse_dates(
    value: Any,
) -> tuple[datetime | None, datetime | None, datetime | None, datetime | None]:
    """A JSON Feed date, as a release before PARSE_VERSION 9 read it (feedparser's
    reading alone), as parse version 22 read it, and as parse version 26 read it."""
    if not isinstance(value, str) or not value.strip():
        return None, None, None, None
    text = value.strip()
    try:
        before = _from_struct(_feedparser_date(text))  # in the process's local zone
    except Exception:  # feedparser's date handlers on arbitrary text: never fatal
        before = None
    read, when = _read_by_shape(text)
    if not read:
        when = before if _local_is_utc() else _from_struct(_feedparser_utc(text))
    read_22, when_22 = _read_by_shape(text, as_22=True) if _read_otherwise(text) else (read, when)
    when_26 = when
    if _read_otherwise_26(text):
        read_26, when_26 = _read_by_shape(text, as_26=True)
        if not read_26:
            when_26 = before if _local_is_utc() else _from_struct(_feedparser_utc(text))
    return when, before, (when_22 if read_22 else before), when_26


def _without_userinfo(url: str | None) -> str | None:
    """The fetch URL as a base for the body's relative links: without the feed's
    credentials, which would otherwise be in every link resolved against it."""
    if not url or "@" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _resolve(base: str | None, link: str) -> str:
    if not base:
        return link
    try:
        return urljoin(base, link)
    except ValueError:
        return link


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _convert_all(
    raw: Iterable[Any], convert: Any, warnings: list[str]
) -> tuple[EntrySnapshot, ...]:
    """Convert each entry; one that cannot be read is skipped with a warning, not fatal."""
    out: list[EntrySnapshot] = []
    for i, e in enumerate(raw):
        try:
            out.append(convert(e))
        except Exception as exc:  # one odd entry must not lose the others
            warnings.append(_short(f"entry {i + 1} skipped: {exc}"))
    return tuple(out)


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _str_or_none(v: Any) -> str | None:
    s = _str(v).strip()
    return s or None


def _text_or_none(v: Any) -> str | None:
    return html_to_text(_str(v)) or None


def _join_texts(texts: Iterable[str]) -> str:
    return "\n\n".join(_unique(texts))


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))


def _to_length(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if v >= 0 else None
    if isinstance(v, float):
        return int(v) if v >= 0 and v.is_integer() else None
    s = _str(v).strip()
    return int(s) if s.isascii() and s.isdigit() and len(s) < 20 else None


def _short(s: str) -> str:
    s = normalize_space(s)
    return s if len(s) <= _MAX_WARNING else s[: _MAX_WARNING - 1] + "…"
