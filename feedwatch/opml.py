"""`feedwatch import-opml FILE`: a feed reader's subscriptions as ``[[feeds]]`` TOML blocks.

What real exports look like, and what this does about it:

- feeds are ``<outline xmlUrl=...>`` at any depth; ``type="rss"`` is often
  missing (or ``atom``, or odd case: ``xmlurl``) -- an ``xmlUrl`` is what makes
  a feed; outlines without one are folders (their names become the feeds'
  ``tags``, every level of nesting) or not feeds at all (``type="link"``,
  ``include``, an empty folder), which are reported on stderr;
- titles carry HTML entities, escaped once or twice (``&amp;amp;``) or not
  declared at all (``&nbsp;``, which XML does not know): they are decoded;
- the same feed in two folders: one feed, with both folders as tags;
- ``feed://`` URLs become ``http://``; a URL a config would refuse is skipped
  and reported.

Parsing is expat with every DTD feature refused: an OPML file with a DOCTYPE
or an entity declaration is rejected (no entity expansion, no external
entities). Names are made unique (also against the feeds of the config, given
with ``-c`` or found by the usual lookup, whose URLs are then skipped), and every
string is written as a TOML basic string with ``$`` doubled, so the output
appended to a config passes ``feedwatch validate``.
"""

from __future__ import annotations

import argparse
import html
import html.entities
import os
import re
import sys
import xml.parsers.expat as expat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from feedwatch.config import ConfigError, _default_feed_name, _http_url, find_config_path
from feedwatch.identity import loose_link, normalize_link
from feedwatch.model import Config
from feedwatch.redact import redact_refused_url
from feedwatch.text import escaped

__all__ = [
    "ImportedFeed",
    "OpmlError",
    "OpmlImport",
    "config_string",
    "parse_opml",
    "render_feeds",
    "toml_string",
]


class OpmlError(Exception):
    """The file cannot be read as OPML at all."""


@dataclass
class ImportedFeed:
    name: str
    url: str
    tags: list[str]
    line: int
    title: str  # as found (decoded), for messages


@dataclass
class OpmlImport:
    title: str | None
    feeds: list[ImportedFeed] = field(default_factory=list)
    problems: list[tuple[int | None, str]] = field(default_factory=list)  # (line, message)
    skipped: int = 0
    duplicates: int = 0
    configured: set[str] = field(default_factory=set)  # names of configured feeds met


# --------------------------------------------------------------------------
# TOML output
# --------------------------------------------------------------------------

_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n"}
_TOML_ESCAPES.update({"\f": "\\f", "\r": "\\r"})


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string: quotes, backslashes and control characters escaped."""
    out = ['"']
    for ch in text:
        esc = _TOML_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def config_string(text: str) -> str:
    """A TOML string that feedwatch's config reads back as ``text`` (``$`` doubled: no ``${VAR}``)."""
    return toml_string(text.replace("$", "$$"))


def readable_config_string(text: str) -> str:
    """``config_string``, but a TOML literal string where one reads ``text`` back (no
    ``'``, ``$`` or control character): a ``/regex/`` shown without doubled backslashes."""
    if any(ch in "'$" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        return config_string(text)
    return f"'{text}'"


def render_feeds(feeds: Iterable[ImportedFeed]) -> str:
    blocks = []
    for f in feeds:
        lines = ["[[feeds]]", f"name = {config_string(f.name)}", f"url = {config_string(f.url)}"]
        if f.tags:
            lines.append("tags = [" + ", ".join(config_string(t) for t in f.tags) + "]")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


# --------------------------------------------------------------------------
# Reading OPML
# --------------------------------------------------------------------------

_XML_ENTITIES = frozenset({"amp", "lt", "gt", "quot", "apos"})
_NAMED_ENTITY = re.compile(rb"&([A-Za-z][A-Za-z0-9]{0,31});")
_BARE_AMP = re.compile(rb"&(?!(?:[A-Za-z][A-Za-z0-9]{0,31}|#[0-9]{1,8}|#[xX][0-9A-Fa-f]{1,8});)")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _html_entity(m: re.Match[bytes]) -> bytes:
    name = m.group(1).decode("ascii")
    if name in _XML_ENTITIES:
        return m.group(0)
    value = html.entities.html5.get(name + ";")
    if value is None:
        return m.group(0)
    return "".join(f"&#{ord(c)};" for c in value).encode("ascii")


def _ascii_compatible(data: bytes) -> bool:
    head = data[:4]
    return not (head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:1024])


def clean_text(text: str) -> str:
    """Decoded, single-line, trimmed: entities (also double-escaped ones) and control characters gone."""
    for _ in range(3):  # "&amp;amp;" exports: decode until it no longer changes
        decoded = html.unescape(text)
        if decoded == text:
            break
        text = decoded
    return " ".join(_CONTROLS.sub(" ", text).split())


@dataclass
class _Outline:
    attrs: dict[str, str]
    line: int
    children: list[_Outline] = field(default_factory=list)


class _Reader:
    def __init__(self) -> None:
        self.root: str | None = None
        self.stack: list[str] = []
        self.outlines: list[_Outline] = []  # top-level outlines of <body>
        self.open: list[_Outline] = []
        self.title_parts: list[str] | None = None
        self.title: str | None = None
        self.in_body = False

    def parse(self, data: bytes) -> None:
        p = expat.ParserCreate()
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

        def refuse_doctype(*_: object) -> None:
            raise OpmlError(
                "refused: the file has a DOCTYPE declaration (OPML needs none; "
                "entity declarations are never expanded)"
            )

        def refuse_entity(*_: object) -> None:
            raise OpmlError("refused: the file declares an entity (never expanded)")

        def refuse_external(*_: object) -> int:
            raise OpmlError("refused: the file refers to an external entity")

        p.StartDoctypeDeclHandler = refuse_doctype
        p.EntityDeclHandler = refuse_entity
        p.UnparsedEntityDeclHandler = refuse_entity
        p.ExternalEntityRefHandler = refuse_external

        def start(name: str, attrs: dict[str, str]) -> None:
            local = name.rsplit(":", 1)[-1].lower()
            if self.root is None:
                self.root = local
                if local != "opml":
                    raise OpmlError(f"not an OPML file (its root element is <{name}>, not <opml>)")
            self.stack.append(local)
            if local == "body" and len(self.stack) == 2:
                self.in_body = True
            elif local == "title" and self.stack[-2:-1] == ["head"]:
                self.title_parts = []
            elif local == "outline" and self.in_body:
                o = _Outline({k.lower(): v for k, v in attrs.items()}, p.CurrentLineNumber)
                (self.open[-1].children if self.open else self.outlines).append(o)
                self.open.append(o)

        def end(name: str) -> None:
            local = self.stack.pop() if self.stack else ""
            if local == "outline" and self.open and self.in_body:
                self.open.pop()
            elif local == "body" and not self.open:
                self.in_body = False
            elif local == "title" and self.title_parts is not None:
                self.title = clean_text("".join(self.title_parts)) or None
                self.title_parts = None

        def chars(text: str) -> None:
            if self.title_parts is not None:
                self.title_parts.append(text)

        p.StartElementHandler = start
        p.EndElementHandler = end
        p.CharacterDataHandler = chars
        try:
            p.Parse(data, True)
        except expat.ExpatError as exc:
            raise OpmlError(
                f"not well-formed XML at line {exc.lineno}, column {exc.offset + 1}: "
                f"{expat.ErrorString(exc.code)}"
            ) from None
        except (ValueError, LookupError) as exc:  # an encoding expat cannot read itself
            raise _EncodingError(f"cannot read its encoding: {exc}") from None
        if self.root is None:
            raise OpmlError("no XML element found")


class _EncodingError(OpmlError):
    pass


_DECLARED = re.compile(rb"""^(\s*<\?xml[^>]*?encoding\s*=\s*)(["'])([^"']+)\2""")


def _as_utf8(data: bytes) -> bytes:
    """The document in UTF-8, its declaration saying so: expat reads only UTF-8,
    UTF-16 and 8-bit encodings itself (a Japanese or Chinese reader's Shift_JIS,
    GB2312 or EUC-JP export stopped with a traceback)."""
    m = _DECLARED.match(data)
    if m is None:
        raise _EncodingError("cannot read its encoding")
    name = m.group(3).decode("ascii", "replace")
    try:
        text = data[m.end() :].decode(name)
    except LookupError:
        raise OpmlError(f"unknown encoding {name!r} in its XML declaration") from None
    except UnicodeDecodeError as exc:
        raise OpmlError(f"not {name} text (byte {exc.start + m.end()})") from None
    return m.group(1) + b'"utf-8"' + text.encode("utf-8")


def _read(data: bytes) -> _Reader:
    try:
        return _read_once(data)
    except _EncodingError:  # read as UTF-8, with the same repairs below
        return _read_once(_as_utf8(data))


def _read_once(data: bytes) -> _Reader:
    reader = _Reader()
    try:
        reader.parse(data)
        return reader
    except _EncodingError:
        raise
    except OpmlError as first:
        # Feed readers do export HTML entities XML does not know (&nbsp;) and bare "&"
        # in URLs; repair those (ASCII-compatible encodings only) and try once more.
        if "well-formed" not in str(first) or not _ascii_compatible(data):
            raise
        repaired = _BARE_AMP.sub(b"&amp;", _NAMED_ENTITY.sub(_html_entity, data))
        if repaired == data:
            raise
        reader = _Reader()
        try:
            reader.parse(repaired)
        except OpmlError:
            raise first from None
        return reader


def url_key(url: str) -> str:
    """Which feeds are one: validate's test of two feeds that poll the same URL
    (config.same_url_feeds), so http/https or www. apart is one feed here too."""
    return loose_link(normalize_link(url) or url) or url


def _feed_url(raw: str) -> str:
    url = raw.strip()
    low = url.lower()
    if low.startswith("feed:"):
        rest = url[5:]
        if rest.startswith("//"):
            url = "http:" + rest  # feed://host/path
        elif rest.lower().startswith(("http://", "https://")):
            url = rest  # feed:https://host/path
    return _http_url(url)


def parse_opml(
    data: bytes,
    *,
    taken_names: Iterable[str] = (),
    known_urls: dict[str, str] | None = None,
) -> OpmlImport:
    """The feeds of an OPML document. Raises OpmlError if it is not OPML at all.

    ``taken_names``: feed names already used (a name is never reused);
    ``known_urls``: normalised URL -> feed name of feeds already configured (skipped).
    """
    reader = _read(data)
    if reader.root is None:
        raise OpmlError("no XML element found")
    result = OpmlImport(title=reader.title)
    taken = set(taken_names)
    by_url: dict[str, ImportedFeed] = {}
    known = dict(known_urls or {})

    def problem(line: int | None, message: str) -> None:
        result.problems.append((line, message))

    def label(title: str, o: _Outline) -> str:
        return f'"{title}"' if title else "an outline without a title"

    next_n: dict[str, int] = {}  # base name -> the number to try next (not from 2 again)

    def unique(base: str) -> str:
        name, n = base, next_n.get(base, 2)
        while name in taken:
            name = f"{base} ({n})"
            n += 1
        next_n[base] = n
        taken.add(name)
        return name

    def walk(outlines: list[_Outline], folders: list[str]) -> None:
        """Every outline in document order; a stack, not recursion (folders nest as
        deep as a file likes: a thousand levels ended in RecursionError)."""
        stack: list[tuple[Iterator[_Outline], list[str]]] = [(iter(outlines), folders)]
        while stack:
            it, folders = stack[-1]
            o = next(it, None)
            if o is None:
                stack.pop()
                continue
            visit(o, folders, stack)

    def visit(
        o: _Outline, folders: list[str], stack: list[tuple[Iterator[_Outline], list[str]]]
    ) -> None:
        a = o.attrs
        title = clean_text(a.get("title", "") or a.get("text", ""))
        if a.get("title") is not None and not title:
            title = clean_text(a.get("text", ""))
        xml_url = a.get("xmlurl", "")
        kind = a.get("type", "").strip().lower()
        if xml_url.strip():
            add(o, title, xml_url, folders)
            if o.children:
                stack.append((iter(o.children), folders))
            return
        if o.children:
            stack.append((iter(o.children), [*folders, title] if title else folders))
            return
        result.skipped += 1
        if kind == "include":
            problem(
                o.line,
                f"skipped {label(title, o)}: an include outline (a link to another OPML "
                "file) is not followed; import that file too",
            )
        elif kind == "link" or a.get("url") or a.get("htmlurl"):
            problem(o.line, f"skipped {label(title, o)}: a link, not a feed (no xmlUrl)")
        else:
            problem(
                o.line,
                f"skipped {label(title, o)}: no xmlUrl (an empty folder, or not a feed)",
            )

    def add(o: _Outline, title: str, raw_url: str, folders: list[str]) -> None:
        try:
            url = _feed_url(raw_url)
        except ValueError as exc:
            result.skipped += 1
            shown = redact_refused_url(clean_text(raw_url))[:200]
            problem(o.line, f'skipped {label(title, o)}: xmlUrl "{shown}": {exc}')
            return
        tags = list(folders)
        for category in clean_text(o.attrs.get("category", "")).split(","):
            tags.extend(part.strip() for part in category.split("/"))
        tags = list(dict.fromkeys(t for t in tags if t))
        key = url_key(url)
        if key in known:
            result.duplicates += 1
            result.configured.add(known[key])
            problem(o.line, f'skipped {label(title, o)}: already configured as feed "{known[key]}"')
            return
        first = by_url.get(key)
        if first is not None:
            result.duplicates += 1
            added = [t for t in tags if t not in first.tags]
            first.tags.extend(added)
            what = f" (tags added: {', '.join(added)})" if added else ""
            problem(
                o.line,
                f"duplicate {label(title, o)}: same URL as "
                f'"{first.name}" (line {first.line}){what}; imported once',
            )
            return
        feed = ImportedFeed(
            name=unique(title or _default_feed_name(url)),
            url=url,
            tags=tags,
            line=o.line,
            title=title,
        )
        by_url[key] = feed
        result.feeds.append(feed)

    walk(reader.outlines, [])
    return result


# --------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Print a [[feeds]] block for every feed of an OPML file (a feed reader's export): "
        "`feedwatch import-opml subscriptions.opml >> config.toml`. Folders become tags, "
        "names are made unique; problems go to stderr. Feeds already in the config (-c "
        "CONFIG, or the one the usual lookup finds, if any) are skipped and its names are "
        "not reused. Exit 1 if the file holds no feed; 0, with nothing printed, if every "
        "feed in it is configured already."
    )
    parser.add_argument("file", metavar="FILE", help="the OPML file ('-' for stdin)")


def _utf8_shown(name: str) -> str:
    """A file's name fit for the config's comment, which must stay UTF-8 text: bytes
    of a name that is not UTF-8 (``abo-f\\xfcr.opml`` in Latin-1, surrogate-escaped
    by Python) as ``\\xNN``; printed raw, they made the whole config unreadable."""
    try:
        raw = os.fsencode(name)
    except UnicodeEncodeError:  # a surrogate no file system name decodes to
        raw = name.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def run(args: argparse.Namespace, out: TextIO, load: Callable[[], Config]) -> int:
    path: str = args.file
    shown = "<stdin>" if path == "-" else path
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        print(f"feedwatch: {shown}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return 2
    taken: list[str] = []
    known: dict[str, str] = {}
    try:
        # -c, $FEEDWATCH_CONFIG or the first config found: the one appended to, likely
        config_path = find_config_path(getattr(args, "config", None))
    except ConfigError:
        config_path = None  # none yet: this import may be its start
    if config_path is not None:
        config = load()  # a ConfigError: cli prints it, exit 2
        for f in config.feeds:
            taken.append(f.name)
            known[url_key(f.url)] = f.name
    try:
        result = parse_opml(data, taken_names=taken, known_urls=known)
    except OpmlError as exc:
        print(f"feedwatch: {shown}: {exc}", file=sys.stderr)
        return 2
    for line, message in result.problems:
        where = f"{shown}:{line}" if line else shown
        print(f"{where}: {escaped(message)}", file=sys.stderr)
    if not result.feeds and result.configured:  # run again: nothing new, not a failure
        print(
            f"{shown}: nothing to import: its {len(result.configured)} feeds are all in"
            f" {config_path} already",
            file=sys.stderr,
        )
        return 0
    if not result.feeds:
        print(f"feedwatch: {shown}: no feeds to import", file=sys.stderr)
        return 1
    source = _utf8_shown(clean_text(Path(path).name if path != "-" else "stdin"))
    heading = f" ({clean_text(result.title)})" if result.title else ""
    out.write(
        f"\n# Imported by `feedwatch import-opml` from {source}{heading}: "
        f"{len(result.feeds)} feeds.\n"
    )
    out.write(render_feeds(result.feeds))
    out.flush()
    notes = []
    if result.duplicates:
        notes.append(f"{result.duplicates} duplicates")
    if result.skipped:
        notes.append(f"{result.skipped} outlines skipped")
    extra = f" ({', '.join(notes)}, listed above)" if notes else ""
    print(f"imported {len(result.feeds)} feeds{extra}", file=sys.stderr)
    return 0
