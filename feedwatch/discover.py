"""The feeds an HTML page advertises, and what to tell a user whose feed URL is a page.

Pasting a site's address instead of its feed's is the commonest first mistake: a
poll of such a URL fails with an error that names the feeds the page links to
(``page_problem``), and ``feedwatch preview`` lists them.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit, urlunsplit

from feedwatch.redact import redact_url
from feedwatch.text import printable

__all__ = ["FEED_TYPES", "FeedLink", "discover_feeds", "looks_like_html", "page_problem"]

FEED_TYPES = {
    "application/rss+xml": "RSS",
    "application/atom+xml": "Atom",
    "application/feed+json": "JSON Feed",
    "application/rdf+xml": "RSS 1.0",
    "application/json": "JSON Feed",  # JSON Feed 1.0's; only with a sign (_json_feed)
    "application/x.atom+xml": "Atom",
    "application/x-atom+xml": "Atom",
}


@dataclass(frozen=True)
class FeedLink:
    url: str
    type: str
    title: str | None


class _LinkFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.links: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "base" and self.base is None and a.get("href"):
            self.base = a["href"].strip()
        elif tag == "link":
            rels = a.get("rel", "").lower().split()
            kind = a.get("type", "").split(";")[0].strip().lower()
            href = a.get("href", "").strip()
            title = a.get("title") or None
            if "alternate" in rels and kind in FEED_TYPES and href:
                if kind != "application/json" or _json_feed(href, title):
                    self.links.append((href, kind, title))

    handle_startendtag = handle_starttag


def _json_feed(href: str, title: str | None) -> bool:
    """Whether a plain ``application/json`` alternate is a JSON Feed: JSON Feed 1.0
    advertised one so (1.1 says ``application/feed+json``), but every WordPress page
    advertises its REST API record the same way (``/wp-json/wp/v2/pages/2``, titled
    "JSON"). Taken when its title or its URL's path says "feed", never a ``wp-json`` one."""
    try:
        path = urlsplit(href).path.lower()
    except ValueError:
        return False
    if "/wp-json/" in path + "/":
        return False
    return "feed" in path or "feed" in (title or "").lower()


_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
_COMMENT = re.compile(rb"<!--.*?(?:-->|$)", re.DOTALL)
_META_CHARSET = re.compile(
    rb"""<meta\s[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE
)


def _known(charset: str) -> str | None:
    """``charset`` if Python has a codec of that name, else None."""
    try:
        codecs.lookup(charset)
    except LookupError:
        return None
    return charset


def _page_charset(body: bytes, content_type: str) -> str:
    """The encoding to read a page in, as a browser picks it (HTML's encoding sniffing):
    a byte order mark; else the Content-Type header's charset; else the page's own
    ``<meta charset>`` or ``<meta http-equiv="Content-Type" content="...; charset=">``
    in its first 1024 bytes (outside comments); else UTF-8. A charset Python does not
    know counts as none."""
    for bom, charset in _BOMS:
        if body.startswith(bom):
            return charset
    for part in content_type.split(";")[1:]:
        k, _, v = part.partition("=")
        if k.strip().lower() == "charset" and v.strip():
            known = _known(v.strip().strip("\"'"))
            if known:
                return known
    m = _META_CHARSET.search(_COMMENT.sub(b"", body[:1024]))
    if m:
        declared = m.group(1).decode("ascii").lower()
        # a page read this far as ASCII cannot be UTF-16: HTML says to take it as UTF-8
        if declared.startswith(("utf-16", "utf16")):
            return "utf-8"
        known = _known(declared)
        if known:
            return known
    return "utf-8"


def discover_feeds(body: bytes, page_url: str, content_type: str = "") -> list[FeedLink]:
    """The feeds an HTML page advertises (``<link rel="alternate" type=...>``), absolute URLs."""
    text = body.decode(_page_charset(body, content_type), errors="replace")
    finder = _LinkFinder()
    try:
        finder.feed(text[: 2 * 1024 * 1024])
        finder.close()
    except Exception:  # HTMLParser is lenient; whatever it raises must not stop the caller
        pass
    base = urljoin(page_url, finder.base) if finder.base else page_url
    out: list[FeedLink] = []
    # A page that advertises its own URL (a maintenance or login page served at the
    # feed's URL, keeping the site's <head>) offers nothing to change to.
    seen: set[str] = {_same_url(page_url)}
    for href, kind, title in finder.links:
        try:
            url = urljoin(base, href)
        except ValueError:
            continue
        if not url.lower().startswith(("http://", "https://")) or _same_url(url) in seen:
            continue
        seen.add(_same_url(url))
        out.append(FeedLink(url, kind, " ".join(title.split()) if title else None))
    return out


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _same_url(url: str) -> str:
    """``url`` as a key two spellings of one address share: scheme and host in lower
    case, without a default port, credentials or a fragment, "/" for an empty path."""
    try:
        p = urlsplit(url)
        scheme, host, port = p.scheme.lower(), p.hostname or "", p.port
    except ValueError:
        return url
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host += f":{port}"
    return urlunsplit((scheme, host, p.path or "/", p.query, ""))


def looks_like_html(body: bytes, content_type: str) -> bool:
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in ("text/html", "application/xhtml+xml"):
        return True
    head = body[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html"))


def page_problem(body: bytes, page_url: str, content_type: str) -> str | None:
    """The error for a body that is an HTML page (None: it is not one): what it is, and
    the feeds it advertises, if any, to put in the config instead."""
    if not looks_like_html(body, content_type):
        return None
    ctype = content_type.split(";")[0].strip() or "no content type"
    found = discover_feeds(body, page_url, content_type)
    if not found:
        return (
            f"not a feed but an HTML page ({ctype}) that advertises no feed: a login, error"
            " or bot-check page, or a site's home page? `feedwatch preview URL` shows it"
        )
    shown = ", ".join(
        redact_url(f.url) + (f' ("{printable(f.title)[:80]}")' if f.title else "")
        for f in found[:3]
    )
    more = f" and {len(found) - 3} more (`feedwatch preview URL` lists them)" if found[3:] else ""
    n = len(found)
    return (
        f"not a feed but an HTML page ({ctype}); it advertises {n} feed{'s' if n != 1 else ''}:"
        f" {shown}{more}: set the feed's url to {'it' if n == 1 else 'one of them'}"
    )
