"""The email sink: alerts as MIME messages, sent over SMTP with aiosmtplib.

``build_message`` is pure and deterministic (Message-ID, Date and the MIME
boundary all come from the alerts), so a rendering can be compared byte for
byte and a retry sends the very same message. Feed text is untrusted: it is
stripped of control characters and taken literally (never read as RFC 2047
encoded words) in any header, HTML-escaped in the HTML part, and never decides
who receives the mail (the envelope recipients come from the config alone).

Failure classification follows SPEC section 6: connection errors, timeouts
and SMTP 4xx replies are transient; authentication failures and 5xx refusals
are permanent. A server taking some recipients and deferring (4xx) or refusing
(5xx) the others at RCPT: the delivery is owed to those alone from then on
(``SendResult.recipients_left``, kept with the delivery), so that its retry, or
its redelivery once dead, never reaches again a recipient that took it. A refusal
for the message's size (552, or 5.3.4 and the like) says so (``SendResult.too_big``):
a digest so refused goes again in halves, and the sink cuts later digests to the
size the server took (``EmailSink._learn``); one alert so refused goes again at once
with its texts cut to fit (``build_message``'s ``cut``), cut further if refused again.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import html
import re
import ssl
import string
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

import aiosmtplib
import structlog

from feedwatch.mailbox import address_parts, ascii_address, ascii_domain, parse_mailbox
from feedwatch.model import SinkConfig
from feedwatch.redact import redact
from feedwatch.sinks import formats
from feedwatch.sinks.base import MAX_CUTS, LearntSize, SendResult, cut_to_fit, fit_parts
from feedwatch.sinks.formats import alerts_count
from feedwatch.store.base import Delivery
from feedwatch.text import clusters
from feedwatch.textdiff import Piece, excerpt, marked, word_diff

log = structlog.get_logger("feedwatch.sinks.email")

__all__ = ["EmailSink", "build_message"]

SUBJECT_PREFIX = "[feedwatch]"
MAX_SUBJECT_TEXT = 200  # characters of feed text in a subject; the rest becomes "…"
MAX_DIGEST_SUBJECT = 120
# A digest shows each alert's texts (title, summary, content, changes) cut to about
# this many characters at a word's end: a digest is for skimming, the link has the rest
DIGEST_EXCERPT = 1000
# A digest message is at most this many bytes as sent when the server announces no
# SIZE (RFC 1870); one that does announces the most it takes (less SIZE_MARGIN), and
# more than this never goes either: under Postfix's default message_size_limit of
# 10,240,000, which the servers after the first one may still have
DEFAULT_MAX_MESSAGE = 10_000_000
SIZE_MARGIN = 0.01  # of an announced SIZE: what a server counts besides (the envelope)
MIN_MESSAGE = 64 * 1024  # RFC 5321 4.5.3.1.7: the least a server must take
NOTICE_KINDS = ("flood", "stale", "recovered")
# 7-bit: a part is 7bit, quoted-printable or base64, never raw 8-bit bytes, which a
# server that does not offer 8BITMIME (RFC 6152) may refuse or mangle
SMTP_7BIT = policy.SMTP.clone(cte_type="7bit")
_ID_SAFE = re.compile(r"[A-Za-z0-9._-]{1,128}")
# A 5xx reply refusing a message for its size: its enhanced status (RFC 3463: X.3.4
# message too big for system, X.2.3 message length exceeds administrative limit), or
# its words ("552 Message size exceeds fixed limit", "554 ... too large")
_ENHANCED_STATUS = re.compile(r"\s*([245]\.\d{1,3}\.\d{1,3})\b")
_SIZE_STATUS = ("5.3.4", "5.2.3")
_SIZE_WORDS = re.compile(r"\bsize\b|\btoo (?:large|big)\b|\btoo much (?:mail )?data\b", re.I)


# --------------------------------------------------------------------------
# Text hygiene
# --------------------------------------------------------------------------


# Unicode category -> replacement. Lone surrogates (possible in JSON text) cannot be encoded.
# As patterns (a character at a time through unicodedata took seconds for a digest of
# long reads): Cc is U+0000-U+001F and U+007F-U+009F, Zl U+2028, Zp U+2029, Cs the
# surrogates.
_HEADER_SPACE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BODY_DROP = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # keeps \t and \n
_SURROGATE = re.compile("[\ud800-\udfff]")


def _header_text(value: object, limit: int | None = None) -> str:
    """One line of feed text fit for a header: control and line-break characters become spaces.

    Covers every Unicode control (Cc), line (Zl) and paragraph (Zp) separator,
    since the email package and MTAs split lines on more than CR/LF.
    """
    text = "" if value is None else str(value)
    text = _SURROGATE.sub("\ufffd", _HEADER_SPACE.sub(" ", text))
    text = " ".join(text.split())
    if limit is not None and len(text) > limit:
        text = clusters(text, len(clusters(text, limit - 1).rstrip())) + "…"
    return text


def _body_text(value: object) -> str:
    """Feed text for a body: line breaks kept as ``\\n``, other control characters dropped."""
    text = "" if value is None else str(value)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u2028", "\n").replace("\u2029", "\n\n")
    return _SURROGATE.sub("\ufffd", _BODY_DROP.sub("", text))


def _safe_link(value: object) -> str | None:
    """An http(s) URL usable as an href, else None (payload links should already be)."""
    if not isinstance(value, str) or not value:
        return None
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Zs") for ch in value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return value


def _msgid_token(alert_id: str) -> str:
    """The left part of a Message-ID: the alert id when it is a plain token, else its hash."""
    if _ID_SAFE.fullmatch(alert_id):
        return alert_id
    return hashlib.sha256(alert_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def _list_label(feed: str) -> str:
    """A dot-atom label for List-ID (RFC 2919) from a feed name."""
    label = re.sub(r"[^a-z0-9-]+", "-", feed.lower()).strip("-")
    label = re.sub(r"-{2,}", "-", label)
    if not label or len(label) > 60 or label != feed.lower():
        digest = hashlib.sha256(feed.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        label = f"{label[:50]}-{digest}".strip("-")
    return label


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return dt.replace(tzinfo=timezone.utc)


def _detected(delivery: Delivery) -> datetime:
    dt = _parse_time(delivery.payload.get("detected_at"))
    if dt is not None:
        return dt
    created = delivery.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    return created.astimezone(timezone.utc).replace(microsecond=0)


# --------------------------------------------------------------------------
# Headers, written as given
# --------------------------------------------------------------------------

# RFC 2047 section 2: a line holding an encoded word is at most 76 characters. Every
# word fits on the first line after the longest name written here, so no line is longer.
_LINE_MAX = 76
_WORD_MAX = _LINE_MAX - len("X-Feedwatch-Alert-Id: ")  # 54
_EW_BYTES = (_WORD_MAX - len("=?utf-8?b??=")) // 4 * 3  # 30 bytes: a 52-character encoded word
_PLAIN_MAX = _WORD_MAX - 2  # a longer word (quotes and all) is encoded, so the header can fold
# A display name's encoded words may be longer (a 68-character word fits after "From: "):
# Python's email reads a space in at each cut between encoded words in a display name.
_PHRASE_EW_BYTES = (_LINE_MAX - len("From: ") - len("=?utf-8?b??=")) // 4 * 3  # 42
_ATEXT = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")


class _Header(str):
    """A header the email package writes as given, not through its header factory.

    The factory reads RFC 2047 encoded words in the string it is handed and
    writes out what they decode to, CR LF included: a title holding
    ``=?utf-8?q?=0D=0AX-Injected=3A_yes?=`` became a header of its own. To
    EmailPolicy a value with a ``name`` is a header object, folded by its ``fold``.
    """

    name: str
    words: tuple[str, ...]

    def __new__(cls, name: str, value: str, words: Sequence[str]) -> _Header:
        header = super().__new__(cls, value)
        header.name = name
        header.words = tuple(words)
        return header

    def fold(self, *, policy: Policy) -> str:
        """``Name: words``, a line broken between words where it would pass the policy's
        width or RFC 2047's 76 characters."""
        width = min(policy.max_line_length or _LINE_MAX, _LINE_MAX)
        lines = [f"{self.name}:"]
        for i, word in enumerate(self.words):
            if i and len(lines[-1]) + 1 + len(word) > width:
                lines.append("")
            lines[-1] += " " + word
        return policy.linesep.join(lines) + policy.linesep


def _encoded_words(text: str, size: int = _EW_BYTES) -> list[str]:
    """``text`` as RFC 2047 encoded words (UTF-8, base64) of ``size`` bytes at most, cut
    before a space where the chunk has one: a reader that keeps the white space between
    encoded words (Python's email does, in a display name) then splits no word."""
    chunks = [""]
    for ch in text:
        while len((chunks[-1] + ch).encode("utf-8", "replace")) > size:
            cut = chunks[-1].rfind(" ")
            cut = cut if cut > 0 else len(chunks[-1])
            chunks[-1:] = [chunks[-1][:cut], chunks[-1][cut:]]
        chunks[-1] += ch
    return [
        f"=?utf-8?b?{base64.b64encode(c.encode('utf-8', 'replace')).decode('ascii')}?="
        for c in chunks
        if c
    ]


def _plain_text(word: str) -> bool:
    """A word a reader takes as written: printable ASCII, short, and no ``=?`` that
    could start an encoded word."""
    return word.isascii() and word.isprintable() and "=?" not in word and len(word) <= _PLAIN_MAX


def _plain_atom(word: str) -> bool:
    return _plain_text(word) and all(ch in _ATEXT for ch in word)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _as_text(word: str) -> str | None:
    """A word of unstructured text (a subject) as written, or None to encode it."""
    return word if _plain_text(word) else None


def _as_phrase_word(word: str) -> str | None:
    """A word of a display name: an atom as written, other plain text quoted (if the
    quoted string, backslashes doubled, still fits on a line), or None."""
    if _plain_atom(word):
        return word
    return _quoted(word) if _plain_text(word) and len(_quoted(word)) <= _WORD_MAX else None


# A reader that decodes word by word (email.header.decode_header and make_header) puts
# no space between an encoded word and the text on the next line when that text starts
# with one of these, nor between text ending with one and an encoded word on the next
# line: the space a fold stands for there is lost ("Møre(aus").
_NO_SPACE_AT_FOLD = "()\\"


def _words(text: str, written: Callable[[str], str | None], size: int = _EW_BYTES) -> list[str]:
    """``text``'s words, the plain ones as ``written`` has them and each run of others as
    encoded words (which hold the spaces of the run: a reader drops those between encoded
    words). A plain word with ``_NO_SPACE_AT_FOLD`` on its side next to a run joins it."""
    words = text.split()
    plain = _join_runs([written(word) for word in words])
    out: list[str] = []
    run: list[str] = []
    for word, as_written in zip(words, plain, strict=True):
        if as_written is None:
            run.append(word)
            continue
        if run:
            out += _encoded_words(" ".join(run), size)
            run = []
        out.append(as_written)
    if run:
        out += _encoded_words(" ".join(run), size)
    return out


def _join_runs(plain: list[str | None]) -> list[str | None]:
    """``plain`` with each word that has ``_NO_SPACE_AT_FOLD`` on its side next to an
    encoded one (None) encoded too, until none is left."""
    joined = True
    while joined:
        joined = False
        for i, word in enumerate(plain):
            if word is None:
                continue
            before = i > 0 and plain[i - 1] is None and word[0] in _NO_SPACE_AT_FOLD
            after = i + 1 < len(plain) and plain[i + 1] is None and word[-1] in _NO_SPACE_AT_FOLD
            if before or after:
                plain[i] = None
                joined = True
    return plain


def _phrase(name: str) -> list[str]:
    """A display name as words: a short printable ASCII name as one quoted string, else
    word by word (``_as_phrase_word``). Not the whole name as encoded words: Python's
    email reads a space in at each cut between encoded words in a display name."""
    if all(_plain_atom(word) for word in name.split()):
        return name.split()
    if _plain_text(name.replace(" ", "")) and len(_quoted(name)) <= _WORD_MAX:
        return [_quoted(name)]
    return _words(name, _as_phrase_word, _PHRASE_EW_BYTES)


def _put_text(msg: EmailMessage, name: str, text: object, limit: int | None = None) -> None:
    """Set header ``name`` to one line of (feed) text, taken literally."""
    value = _header_text(text, limit)
    msg[name] = _Header(name, value, _words(value, _as_text))


def _put_addresses(msg: EmailMessage, name: str, mailboxes: Sequence[object]) -> None:
    """Set header ``name`` to config addresses: an international domain in punycode
    (as the envelope has it), a display name taken literally."""
    words: list[str] = []
    shown: list[str] = []
    for i, text in enumerate(mailboxes):
        display, addr = parse_mailbox(str(text))
        local, domain = address_parts(addr)  # Address quotes a local part itself, where it must
        address = Address(_header_text(display), local, ascii_domain(domain))
        comma = "," if i < len(mailboxes) - 1 else ""
        if address.display_name:
            words += [*_phrase(address.display_name), f"<{address.addr_spec}>{comma}"]
        else:
            words.append(address.addr_spec + comma)
        shown.append(str(address))
    msg[name] = _Header(name, ", ".join(shown), words)


# --------------------------------------------------------------------------
# Reading the payload (tolerant: a malformed payload still renders)
# --------------------------------------------------------------------------


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strings(value: object) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return []


def _feed_name(d: Delivery) -> str:
    name = _mapping(d.payload.get("feed")).get("name")
    return str(name) if name else d.feed


def _kind(d: Delivery) -> str:
    kind = d.payload.get("kind") or d.kind
    return str(kind)


def _title(d: Delivery) -> str:
    entry = _mapping(d.payload.get("entry"))
    title = _header_text(entry.get("title"))
    if title:
        return title
    link = _safe_link(entry.get("link"))
    return link or "(untitled)"


def _subject_line(d: Delivery) -> str:
    """``FEED: TITLE`` / ``FEED: updated: TITLE`` / ``FEED: <kind>: <message>``, without the prefix."""
    feed = _header_text(_feed_name(d), 80)
    kind = _kind(d)
    if d.payload.get("entry") is None or kind in NOTICE_KINDS:
        message = _header_text(d.payload.get("message")) or kind
        return f"{feed}: {_header_text(kind, 20)}: {_header_text(message, MAX_SUBJECT_TEXT)}"
    title = _header_text(_title(d), MAX_SUBJECT_TEXT)
    if kind == "updated":
        return f"{feed}: updated: {title}"
    return f"{feed}: {title}"


# --------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------


def _cut(text: str, limit: int | None) -> str:
    """``text`` cut to about ``limit`` characters at a word's end, ending in `` …``
    (None: whole); never inside a grapheme cluster (an emoji sequence, a flag, a letter
    and its accent: ``feedwatch.text.clusters``), where a word is too long to cut after."""
    if limit is None or len(text) <= limit:
        return text
    head = clusters(text, limit)
    space = max(head.rfind(" "), head.rfind("\n"))
    if space > limit // 2:
        head = head[:space]
    return clusters(text, len(head.rstrip())) + " …"


def _head(value: object, limit: int | None) -> str:
    """A payload text, or as much of it as a cut to ``limit`` can show (the rest needs
    no cleaning: a digest of 64 KiB texts spent seconds on it)."""
    text = "" if value is None else str(value)
    return text if limit is None else text[: 2 * limit + 64]


def _excerpt(value: object, limit: int | None) -> str:
    """Feed text for a body (``_body_text``) cut to about ``limit`` characters."""
    return _cut(_body_text(_head(value, limit)), limit)


def _cut_pieces(pieces: list[Piece], limit: int | None) -> list[Piece]:
    """A word diff cut to about ``limit`` characters of text (None: whole): each run
    (removed, added, the words around them) keeps its share of ``limit``, the shorter
    ones whole and the rest cut alike (``_cut``), so a long removal cannot crowd out the
    words added."""
    if limit is None or sum(len(p.text) for p in pieces) <= limit:
        return pieces
    share: dict[int, int] = {}
    left, waiting = limit, sorted(range(len(pieces)), key=lambda i: len(pieces[i].text))
    for k, i in enumerate(waiting):
        share[i] = min(len(pieces[i].text), left // (len(waiting) - k))
        left -= share[i]
    return [Piece(p.op, _cut(p.text, share[i])) for i, p in enumerate(pieces)]


def _lists_cut(d: Delivery, cap: int) -> Delivery:
    """The delivery with its payload's lists (tags, enclosures, matched rules and their
    terms) cut to their first ``cap`` items (cut tags end in ``…``), and its author and
    feed title to about ``cap`` characters: with its texts cut (``excerpt``), an alert
    made to fit a server that refused it whole for its size."""
    p = dict(d.payload)

    def first(value: object) -> object:
        return list(value)[:cap] if isinstance(value, (list, tuple)) else value

    entry = p.get("entry")
    if isinstance(entry, Mapping):
        entry = dict(entry)
        tags = _strings(entry.get("tags"))
        if len(tags) > cap:
            entry["tags"] = [*tags[:cap], "…"]
        entry["enclosures"] = first(entry.get("enclosures"))
        if entry.get("author"):
            entry["author"] = _cut(_header_text(entry["author"]), cap)
        p["entry"] = entry
    feed = p.get("feed")
    if isinstance(feed, Mapping) and feed.get("title"):
        p["feed"] = {**feed, "title": _cut(_header_text(feed["title"]), cap)}
    matched = p.get("matched")
    if isinstance(matched, (list, tuple)):
        p["matched"] = [
            {**m, "terms": first(m.get("terms"))} if isinstance(m, Mapping) else m
            for m in matched[:cap]
        ]
    return dataclasses.replace(d, payload=p)


def _section_text(d: Delivery, excerpt: int | None = None) -> str:
    """The plain-text rendering of one alert; ``excerpt``: its texts cut to about that
    many characters each (a digest)."""
    p = d.payload
    feed = _mapping(p.get("feed"))
    entry = p.get("entry")
    kind = _kind(d)
    lines: list[str] = []
    if not isinstance(entry, Mapping):
        lines.append(f"[{_header_text(kind)}] {_header_text(_feed_name(d))}")
        lines.append("")
        lines.append(_excerpt(p.get("message") or "", excerpt))
        if _safe_link(feed.get("url")):
            lines += ["", f"Feed URL: {feed.get('url')}"]
    else:
        prefix = "[updated] " if kind == "updated" else ""
        lines.append(prefix + _cut(_body_text(_title(d)), excerpt))
        link = _safe_link(entry.get("link"))
        if link:
            lines.append(link)
        lines.append("")
        feed_title = _header_text(feed.get("title"))
        feed_line = _header_text(_feed_name(d)) + (f" ({feed_title})" if feed_title else "")
        lines.append(f"Feed:      {feed_line}")
        for label, key in (("Published", "published"), ("Updated", "updated")):
            if entry.get(key):
                lines.append(f"{label + ':':<10} {_header_text(entry.get(key))}")
        if entry.get("author"):
            lines.append(f"Author:    {_header_text(entry.get('author'))}")
        tags = _strings(entry.get("tags"))
        if tags:
            lines.append("Tags:      " + ", ".join(_header_text(t) for t in tags))
        changes = _mapping(p.get("changes"))
        if changes:
            lines += ["", "What changed:"]
            for fname, change in changes.items():
                ch = _mapping(change)
                old, new = ch.get("old"), ch.get("new")
                words = _changed_words(fname, old, new)
                if words is not None:
                    lines.append(
                        f"  {_header_text(fname)}, word by word ([-removed-] {{+added+}}):"
                    )
                    words = _cut_pieces(words, excerpt)
                    lines.append("    " + _indent(_body_text(marked(words)), 4))
                elif fname in ("summary", "content"):
                    lines.append(f"  {_header_text(fname)}:")
                    lines.append("    old: " + _indent(_excerpt(old or "(none)", excerpt), 9))
                    lines.append("    new: " + _indent(_excerpt(new or "(none)", excerpt), 9))
                else:
                    lines.append(
                        f"  {_header_text(fname)}: {_cut(_header_text(old), excerpt) or '(none)'}"
                        f" -> {_cut(_header_text(new), excerpt) or '(none)'}"
                    )
        matched = p.get("matched")
        if isinstance(matched, (list, tuple)) and matched:
            lines += ["", "Matched:"]
            for m in matched:
                mm = _mapping(m)
                terms = ", ".join(_header_text(t) for t in _strings(mm.get("terms")))
                lines.append(f"  {_header_text(mm.get('rule'))}: {terms}")
        summary = _body_text(_head(entry.get("summary") or "", excerpt)).strip()
        content = _body_text(_head(entry.get("content") or "", excerpt)).strip()
        if summary:
            lines += ["", "Summary:", _cut(summary, excerpt)]
        if content and content != summary:
            lines += ["", "Content:", _cut(content, excerpt)]
        enclosures = entry.get("enclosures")
        if isinstance(enclosures, (list, tuple)) and enclosures:
            lines += ["", "Enclosures:"]
            for enc in enclosures:
                e = _mapping(enc)
                url = _safe_link(e.get("url"))
                if url:
                    extra = ", ".join(
                        _header_text(e.get(k)) for k in ("type", "length") if e.get(k) is not None
                    )
                    lines.append(f"  {url}" + (f" ({extra})" if extra else ""))
    lines += ["", f"-- feedwatch {_header_text(kind)} alert {_header_text(d.alert_id)}"]
    return "\n".join(lines)


WHOLE_TEXT = 400  # a changed text longer than this is shown by the words that changed


def _changed_words(fname: str, old: object, new: object) -> list[Piece] | None:
    """A long changed text's removed and added words with a few around them
    (feedwatch.textdiff); None: show the old and the new text whole."""
    if fname not in ("title", "summary", "content"):
        return None
    a, b = ("" if v is None else str(v) for v in (old, new))
    if max(len(a), len(b)) <= WHOLE_TEXT:
        return None
    return excerpt(word_diff(a, b), 12) or None


def _words_html(pieces: Sequence[Piece]) -> str:
    tags = {"same": ("", ""), "del": ("<del>", "</del>"), "ins": ("<ins>", "</ins>")}
    return "".join(f"{tags[p.op][0]}{_esc_block(p.text)}{tags[p.op][1]}" for p in pieces)


def _indent(text: str, width: int) -> str:
    return text.replace("\n", "\n" + " " * width)


def _esc(value: object) -> str:
    return html.escape(_body_text("" if value is None else str(value)), quote=True)


def _esc_block(value: object) -> str:
    return _esc(value).replace("\n", "<br>\n")


def _a(url: str | None, label: object) -> str:
    if url is None:
        return _esc(label)
    return f'<a href="{html.escape(url, quote=True)}" rel="noopener noreferrer">{_esc(label)}</a>'


def _section_html(d: Delivery, excerpt: int | None = None) -> str:
    """The HTML rendering of one alert: the same data as the text part, every string escaped."""
    p = d.payload
    feed = _mapping(p.get("feed"))
    entry = p.get("entry")
    kind = _kind(d)
    out: list[str] = ['<div class="feedwatch-alert">']
    if not isinstance(entry, Mapping):
        out.append(f"<h2>[{_esc(_header_text(kind))}] {_esc(_header_text(_feed_name(d)))}</h2>")
        out.append(f"<p>{_esc_block(_excerpt(p.get('message') or '', excerpt))}</p>")
        url = _safe_link(feed.get("url"))
        if url:
            out.append(f"<p>Feed URL: {_a(url, url)}</p>")
    else:
        prefix = "[updated] " if kind == "updated" else ""
        link = _safe_link(entry.get("link"))
        out.append(f"<h2>{_esc(prefix)}{_a(link, _cut(_title(d), excerpt))}</h2>")
        rows: list[tuple[str, str]] = []
        feed_title = _header_text(feed.get("title"))
        rows.append(
            (
                "Feed",
                _esc(_header_text(_feed_name(d)))
                + (f" ({_esc(feed_title)})" if feed_title else ""),
            )
        )
        for label, key in (
            ("Published", "published"),
            ("Updated", "updated"),
            ("Author", "author"),
        ):
            if entry.get(key):
                rows.append((label, _esc(_header_text(entry.get(key)))))
        tags = _strings(entry.get("tags"))
        if tags:
            rows.append(("Tags", ", ".join(_esc(_header_text(t)) for t in tags)))
        out.append("<table>")
        out += [f'<tr><th align="left">{k}</th><td>{v}</td></tr>' for k, v in rows]
        out.append("</table>")
        changes = _mapping(p.get("changes"))
        if changes:
            out.append("<h3>What changed</h3><ul>")
            for fname, change in changes.items():
                ch = _mapping(change)
                words = _changed_words(fname, ch.get("old"), ch.get("new"))
                if words is not None:
                    words = _cut_pieces(words, excerpt)
                    out.append(f"<li><b>{_esc(_header_text(fname))}</b>: {_words_html(words)}</li>")
                    continue
                old = _excerpt(ch.get("old") or "(none)", excerpt)
                new = _excerpt(ch.get("new") or "(none)", excerpt)
                out.append(
                    f"<li><b>{_esc(_header_text(fname))}</b>: "
                    f"<del>{_esc_block(old)}</del> &rarr; "
                    f"<ins>{_esc_block(new)}</ins></li>"
                )
            out.append("</ul>")
        matched = p.get("matched")
        if isinstance(matched, (list, tuple)) and matched:
            out.append("<h3>Matched</h3><ul>")
            for m in matched:
                mm = _mapping(m)
                terms = ", ".join(_esc(_header_text(t)) for t in _strings(mm.get("terms")))
                out.append(f"<li><b>{_esc(_header_text(mm.get('rule')))}</b>: {terms}</li>")
            out.append("</ul>")
        summary = _body_text(_head(entry.get("summary") or "", excerpt)).strip()
        content = _body_text(_head(entry.get("content") or "", excerpt)).strip()
        if summary:
            out.append(f"<h3>Summary</h3><p>{_esc_block(_cut(summary, excerpt))}</p>")
        if content and content != summary:
            out.append(f"<h3>Content</h3><p>{_esc_block(_cut(content, excerpt))}</p>")
        enclosures = entry.get("enclosures")
        if isinstance(enclosures, (list, tuple)) and enclosures:
            items = []
            for enc in enclosures:
                url = _safe_link(_mapping(enc).get("url"))
                if url:
                    items.append(f"<li>{_a(url, url)}</li>")
            if items:
                out.append("<h3>Enclosures</h3><ul>" + "".join(items) + "</ul>")
    out.append(
        f'<p style="color:#777">feedwatch {_esc(_header_text(kind))} alert '
        f"{_esc(_header_text(d.alert_id))}</p>"
    )
    out.append("</div>")
    return "\n".join(out)


def _html_document(title: str, sections: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title, quote=True)}</title></head>\n<body>\n"
        + "\n<hr>\n".join(sections)
        + "\n</body></html>\n"
    )


# --------------------------------------------------------------------------
# The message
# --------------------------------------------------------------------------


def _digest_subject(deliveries: Sequence[Delivery]) -> str:
    feeds: list[str] = []
    for d in deliveries:
        name = _header_text(_feed_name(d), 60)
        if name not in feeds:
            feeds.append(name)
    head = f"{SUBJECT_PREFIX} {alerts_count(len(deliveries))}: "
    shown: list[str] = []
    for name in feeds:
        if shown and len(head) + len(", ".join([*shown, name])) + 2 > MAX_DIGEST_SUBJECT:
            break
        shown.append(name)
    subject = head + ", ".join(shown)
    if len(shown) < len(feeds):
        subject += " …"
    return subject


def _boundary(seed: str, parts: Sequence[str]) -> str:
    """A MIME boundary derived from ``seed``, re-derived in the (improbable) case a part holds it."""
    n = 0
    while True:
        digest = hashlib.sha256(f"{seed}\0{n}".encode("utf-8", "surrogatepass")).hexdigest()[:32]
        boundary = f"==feedwatch-{digest}=="
        if not any(boundary in part for part in parts):
            return boundary
        n += 1


def build_message(
    deliveries: Sequence[Delivery], cfg: SinkConfig, *, cut: int | None = None
) -> EmailMessage:
    """Render one alert, or several as a digest, as a ``multipart/alternative`` message.

    A sink with ``digest`` sends only digests, one alert's too: its readers filter on
    one kind of message (`test-sink` builds the sink with digest 0 for its sample).
    Pure and deterministic: the same deliveries and config give the same bytes.
    Headers take From/To from ``cfg`` only; feed text in headers is reduced to
    one line of printable characters and written by ``_Header``, which encodes
    what a reader could misread (non-ASCII, ``=?``) as RFC 2047 encoded words.
    ``cut``: the bodies (text and HTML) show each alert's texts cut to about that many
    characters (a digest's, to its excerpt if less) and its lists to their first that
    many items (``_lists_cut``); the headers are those of the message whole. An alert
    the server refused for its size goes so (``EmailSink.send``).
    """
    if not deliveries:
        raise ValueError(f"email sink {cfg.name!r}: build_message needs at least one delivery")
    opts = cfg.options
    msg = EmailMessage(policy=SMTP_7BIT)
    feeds = list(dict.fromkeys(_feed_name(d) for d in deliveries))
    digest = cfg.digest > 0 or len(deliveries) > 1
    if not digest:
        d = deliveries[0]
        subject = f"{SUBJECT_PREFIX} {_subject_line(d)}"
        date = _detected(d)
        token = _msgid_token(d.alert_id)
        seed = d.alert_id
    else:
        subject = _digest_subject(deliveries)
        date = max(_detected(d) for d in deliveries)
        ids = "\n".join(sorted(d.alert_id for d in deliveries))
        token = "digest-" + hashlib.sha256(ids.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        seed = token

    _put_text(msg, "Subject", subject)
    _put_addresses(msg, "From", [opts.get("from_", "")])
    _put_addresses(msg, "To", list(opts.get("to", ())))
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = f"<{token}@feedwatch>"
    if not digest:
        d = deliveries[0]
        if _kind(d) == "updated" and d.thread_id and d.thread_id != d.alert_id:
            ref = f"<{_msgid_token(d.thread_id)}@feedwatch>"
            msg["In-Reply-To"] = ref
            msg["References"] = ref
    if len(feeds) == 1:
        msg["List-ID"] = f"<{_list_label(feeds[0])}.feedwatch>"
    else:
        msg["List-ID"] = "<digest.feedwatch>"
    _put_text(msg, "X-Feedwatch-Feed", ", ".join(feeds), 900)
    if not digest:
        _put_text(msg, "X-Feedwatch-Alert-Id", deliveries[0].alert_id, 200)
        _put_text(msg, "X-Feedwatch-Kind", _kind(deliveries[0]), 20)
    else:
        msg["X-Feedwatch-Kind"] = "digest"
        msg["X-Feedwatch-Alert-Count"] = str(len(deliveries))
    msg["Auto-Submitted"] = "auto-generated"

    excerpt = DIGEST_EXCERPT if digest else None
    shown = deliveries
    if cut is not None:
        excerpt = cut if excerpt is None else min(cut, excerpt)
        shown = [_lists_cut(d, cut) for d in deliveries]
    text_sections = [_section_text(d, excerpt) for d in shown]
    html_sections = [_section_html(d, excerpt) for d in shown]
    if not digest:
        text = text_sections[0] + "\n"
    else:
        text = "\n\n" + ("=" * 72 + "\n\n").join(s + "\n\n" for s in text_sections)
        text = f"{alerts_count(len(deliveries))}\n" + text
    html_doc = _html_document(_header_text(subject), html_sections)
    msg.set_content(text, subtype="plain", charset="utf-8")
    msg.add_alternative(html_doc, subtype="html", charset="utf-8")
    rendered = [part.as_string() for part in msg.iter_parts()]
    msg.set_boundary(_boundary(seed, rendered))
    return msg


def _took(n: int) -> str:
    """The note of an error naming the recipients that did not take a message: how many
    others have it (none: no note)."""
    return f" ({n} other recipient{'s' if n != 1 else ''} took it)" if n else ""


def refused_for_size(code: int, message: str) -> bool:
    """Whether an SMTP reply refuses the message for its size: a 5xx whose enhanced
    status or words say so, or a 552 (RFC 5321: "exceeded storage allocation", which
    servers enforcing a limit they do not announce send) unless its enhanced status
    says another thing (5.2.2, mailbox full)."""
    if not 500 <= code < 600:
        return False
    status = _ENHANCED_STATUS.match(message)
    if (status and status.group(1) in _SIZE_STATUS) or _SIZE_WORDS.search(message):
        return True
    return code == 552 and status is None


def wire_size(data: bytes) -> int:
    """A message's size as DATA sends it (a line starting with a dot gets another)."""
    return len(data) + data.count(b"\n.") + data.startswith(b".")


# --------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------


class EmailSink:
    """Sends each alert (or digest) as one message over a fresh SMTP connection."""

    type = "email"
    supports_digest = True

    def __init__(self, cfg: SinkConfig, *, tls_context: ssl.SSLContext | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        opts = cfg.options
        self.host: str = str(opts.get("host", "localhost"))
        self.security: str = str(opts.get("security", "starttls"))
        if self.security not in ("starttls", "tls", "none"):
            raise ValueError(
                f"email sink {cfg.name!r}: security must be starttls, tls or none, "
                f"not {self.security!r}"
            )
        default_port = {"starttls": 587, "tls": 465, "none": 25}[self.security]
        self.port: int = int(opts.get("port") or default_port)
        self.timeout: float = float(opts.get("timeout") or 30.0)
        self.username: str | None = opts.get("username") or None
        password = opts.get("password")
        self._password: str | None = password.reveal() if password is not None else None
        try:
            self.sender = ascii_address(parse_mailbox(str(opts.get("from_", "")))[1])
            self.recipients = [ascii_address(parse_mailbox(str(a))[1]) for a in opts.get("to", ())]
        except ValueError as exc:
            raise ValueError(f"email sink {cfg.name!r}: {exc}") from None
        if not self.recipients:
            raise ValueError(f"email sink {cfg.name!r}: needs a from address and to addresses")
        self._tls_context = tls_context
        # the server's SIZE (RFC 1870) as its last EHLO reply gave it: None, none given;
        # unknown until a connection has told
        self._size: int | None = None
        self._size_known = False
        # what the server's refusals for size taught of a limit it enforces but did not
        # announce (or announced larger): the next digests are cut to what it took
        # before they are sent, not refused first and then halved (``_learn``)
        self._sizes = LearntSize()

    def __repr__(self) -> str:
        return f"EmailSink(name={self.name!r}, host={self.host!r}, port={self.port})"

    def _scrub(self, text: str) -> str:
        """Remove the password (and its SASL encodings) from a string meant for logs."""
        pw = self._password
        if not pw or len(pw) < 4:  # scrubbing a 1-3 character string would garble every message
            return text
        user = self.username or ""
        forms = {
            pw,
            base64.b64encode(pw.encode()).decode(),
            base64.b64encode(f"\0{user}\0{pw}".encode()).decode(),
            base64.b64encode(f"{user}\0{user}\0{pw}".encode()).decode(),
        }
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, "***")
        return text

    def _said(self, value: object, limit: int) -> str:
        """A server's (or the system's) text for an error: masked whole, then cut, so
        that the cut cannot leave a secret's first part to show."""
        text = "" if value is None else str(value)
        return _header_text(redact(self._scrub(text)), limit)

    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _err(self, what: str) -> str:
        return self._scrub(f"email sink {self.name!r} ({self._where()}): {what}")

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        """Send the deliveries as one message; never raises for a failed send."""
        if not deliveries:
            return SendResult.success()
        ids = [d.alert_id for d in deliveries]
        recipients = self._owed(deliveries)
        if not recipients:
            # each recipient still owed it has left the config since: nothing to send
            log.info("email.nobody_left", sink=self.name, alerts=len(ids))
            return SendResult.success()
        try:
            data = build_message(deliveries, self.cfg).as_bytes(policy=SMTP_7BIT)
            limit = self._alert_limit()
            if len(deliveries) == 1 and limit is not None and wire_size(data) > limit:
                # bigger than the server takes (it said so, or refused one for its size):
                # cut before sending, not refused first
                data = self._cut(deliveries[0], limit, data, "size")
        except Exception as exc:  # a message we cannot render will not render on retry either
            result = SendResult.dead(self._err(f"cannot build the message: {type(exc).__name__}"))
            log.error("email.failed", sink=self.name, alerts=len(ids), error=result.error)
            return result
        for _ in range(MAX_CUTS):
            # those of the configured recipients not owed it any more took it before
            result = await self._deliver(data, recipients, len(self.recipients) - len(recipients))
            self._learn(wire_size(data), result)
            if not result.too_big or len(deliveries) != 1:
                break  # several alerts refused for their size: the dispatcher halves them
            # One alert refused for its size: at once again, its texts cut to fit what the
            # server took (dead only when cutting them makes it no smaller)
            try:
                limit = self._alert_limit() or len(data) // 2
                cut = self._cut(deliveries[0], limit, data, "refused")
            except Exception:  # rendered whole above: not expected
                break
            if wire_size(cut) >= wire_size(data):
                break
            data = cut
        if result.ok:
            log.debug("email.sent", sink=self.name, alerts=len(ids), recipients=len(recipients))
        else:
            log.warning(
                "email.failed",
                sink=self.name,
                alerts=len(ids),
                permanent=result.permanent,
                error=result.error,
            )
        return result

    def _owed(self, deliveries: Sequence[Delivery]) -> list[str]:
        """Who the message goes to: the configured recipients, or those of them the
        deliveries are still owed to (``Delivery.recipients_left``: some took it
        before). A recipient since removed from the config gets nothing."""
        owed: set[str] = set()
        for d in deliveries:
            if d.recipients_left is None:
                return list(self.recipients)
            owed.update(d.recipients_left)
        return [r for r in self.recipients if r in owed]

    # ----------------------------------------------------------------------
    # A digest in parts that each fit the server
    # ----------------------------------------------------------------------

    async def digest_parts(self, deliveries: Sequence[Delivery]) -> list[list[Delivery]]:
        """The held batch as digests (oldest first) that each fit the server: at most its
        SIZE (RFC 1870) as sent, less SIZE_MARGIN, and at most DEFAULT_MAX_MESSAGE; and
        no larger than the messages it took, once it refused one for its size
        (``_known_limit``)."""
        items = list(deliveries)
        if len(items) <= 1:
            return [items]
        guess = [
            len(_section_text(d, DIGEST_EXCERPT).encode("utf-8", "replace"))
            + len(_section_html(d, DIGEST_EXCERPT).encode("utf-8", "replace"))
            for d in items
        ]
        # the most the message can take: quoted-printable writes a byte as three, and the
        # headers (the recipients among them) and the HTML document around the sections
        bound = (
            3.2 * sum(guess)
            + 16 * 1024
            + 4 * sum(len(str(a)) for a in self.cfg.options.get("to", ()))
        )
        known = self._known_limit()
        if bound <= MIN_MESSAGE and (known is None or bound <= known):
            return [items]  # every server takes that much: no need to ask
        limit = self._limit(await self._announced_size())
        if known is not None:
            limit = min(limit, known)
        if bound <= limit:
            return [items]
        return fit_parts(items, self._wire_size, limit, guess)

    def _learn(self, size: int, result: SendResult) -> None:
        """What a send of ``size`` bytes tells of the server's unannounced limit."""
        self._sizes.learn(size, result)

    def _known_limit(self) -> int | None:
        """The most a digest may take as the server's refusals taught (``LearntSize``)."""
        return self._sizes.limit()

    def _alert_limit(self) -> int | None:
        """The most one alert's message may take before it is cut to fit: the server's
        announced SIZE (less SIZE_MARGIN), and what its refusals taught; None, neither
        (it goes whole, whatever its size)."""
        limits = [self._known_limit()]
        if self._size_known and self._size:
            limits.append(self._size - max(1024, int(self._size * SIZE_MARGIN)))
        return min((n for n in limits if n is not None), default=None)

    def _cut(self, delivery: Delivery, limit: int, whole: bytes, why: str) -> bytes:
        """One alert's message with its texts cut (``build_message``'s ``cut``) no more
        than it needs to fit ``limit`` bytes as sent, or cut as far as they go when even
        that is bigger; ``whole`` when nothing in it can be cut. Logged (``email.cut``):
        ``why`` names the size of ``whole``, ``size`` (cut before it was sent) or
        ``refused`` (the server refused it)."""

        def build(cap: int) -> bytes:
            return build_message([delivery], self.cfg, cut=cap).as_bytes(policy=SMTP_7BIT)

        most = formats.longest_part(delivery.payload)
        data = cut_to_fit(build, wire_size, formats.MIN_CUT, most, limit)
        if data is None or wire_size(data) >= wire_size(whole):
            return whole
        log.info(
            "email.cut",
            sink=self.name,
            alert=delivery.alert_id,
            sent=wire_size(data),
            limit=limit,
            **{why: wire_size(whole)},
        )
        return data

    def _wire_size(self, deliveries: Sequence[Delivery]) -> int:
        return wire_size(build_message(deliveries, self.cfg).as_bytes(policy=SMTP_7BIT))

    @staticmethod
    def _limit(announced: int | None) -> int:
        if not announced:
            return DEFAULT_MAX_MESSAGE
        return max(1, min(DEFAULT_MAX_MESSAGE, announced - max(1024, int(announced * SIZE_MARGIN))))

    def _remember_size(self, smtp: aiosmtplib.SMTP) -> None:
        if smtp.is_ehlo_or_helo_needed:
            return  # no EHLO reply (yet) on this connection: it told nothing
        value = smtp.esmtp_extensions.get("size", "").strip()
        self._size = int(value) if value.isdigit() and int(value) > 0 else None
        self._size_known = True

    async def _announced_size(self) -> int | None:
        """The server's SIZE: as the last connection learnt it, else asked for now (an
        EHLO, no login, no mail). A server that cannot be asked: None (the default),
        and it is asked again for the next digest."""
        if not self._size_known:
            try:
                await asyncio.wait_for(self._ask_size(), self.timeout * 3 + 5)
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
                log.debug("email.size_unknown", sink=self.name, error=self._said(exc, 300))
        return self._size

    async def _ask_size(self) -> None:
        smtp = self._client()
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
            self._remember_size(smtp)
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                pass
        finally:
            smtp.close()

    def _client(self) -> aiosmtplib.SMTP:
        context = self._tls_context
        if context is None and self.security != "none":
            context = ssl.create_default_context()
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            use_tls=self.security == "tls",
            start_tls=True if self.security == "starttls" else False,
            tls_context=context if self.security != "none" else None,
            timeout=self.timeout,
        )

    async def _exchange(self, data: bytes, recipients: Sequence[str]) -> dict[str, Any]:
        smtp = self._client()
        try:
            await smtp.connect()
            if self.username is not None:
                await smtp.login(self.username, self._password or "")
            try:
                errors, _ = await smtp.sendmail(self.sender, list(recipients), data)
            finally:
                self._remember_size(smtp)  # for the next digest's parts
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                pass  # the message is accepted; a rude goodbye changes nothing
            return dict(errors)
        finally:
            smtp.close()

    async def _deliver(
        self, data: bytes, recipients: Sequence[str], took_before: int = 0
    ) -> SendResult:
        # aiosmtplib bounds each command; this bounds a server that answers slowly at every step.
        overall = self.timeout * 4 + 5
        try:
            errors = await asyncio.wait_for(self._exchange(data, recipients), overall)
        except aiosmtplib.SMTPAuthenticationError as exc:
            what = f"authentication failed: SMTP {exc.code} {self._said(exc.message, 300)}"
            if 400 <= exc.code < 500:  # 454 "temporary authentication failure"
                return SendResult.transient(self._err(what))
            return SendResult.dead(self._err(what))
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            detail = "; ".join(
                f"{self._said(r.recipient, 100)}: {r.code} {self._said(r.message, 200)}"
                for r in exc.recipients
            )
            # a 4xx defers (try later), a 5xx refuses; "every recipient": every one it
            # went to (a partly delivered alert's retry goes to those still owed it)
            later = [c for c in codes if 400 <= c < 500]
            if not later:
                word = "refused"
            elif len(later) == len(codes):
                word = "deferred"
            else:
                word = "deferred or refused"
            what = f"every recipient {word}: {detail}{_took(took_before)}"
            if later:
                return SendResult.transient(self._err(what))
            return SendResult.dead(self._err(what))
        except aiosmtplib.SMTPResponseException as exc:
            what = f"SMTP {exc.code} {self._said(exc.message, 300)}"
            if refused_for_size(exc.code, exc.message):
                # a digest of several alerts goes again as two halves (the dispatcher)
                return SendResult.dead(
                    self._err(f"the server refused the message for its size: {what}"),
                    too_big=True,
                )
            if exc.code >= 500:
                return SendResult.dead(self._err(what))
            return SendResult.transient(self._err(what))
        except (aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPConnectError) as exc:
            return SendResult.transient(
                self._err(
                    f"{self._said(exc.message, 300)} (timeout {self.timeout:g}s)"
                    if isinstance(exc, aiosmtplib.SMTPTimeoutError)
                    else self._said(exc.message, 300)
                )
            )
        except aiosmtplib.SMTPServerDisconnected as exc:
            return SendResult.transient(
                self._err(f"server disconnected: {self._said(exc.message, 300)}")
            )
        except aiosmtplib.SMTPException as exc:
            # STARTTLS or AUTH not offered, and the like: the server and the config
            # disagree, and retrying will not change that (never downgrade to plain).
            return SendResult.dead(self._err(self._said(exc.message, 300)))
        except asyncio.TimeoutError:  # the overall bound (an alias of TimeoutError on 3.11+)
            return SendResult.transient(self._err(f"timed out after {overall:g}s in all"))
        except ssl.SSLError as exc:
            return SendResult.transient(self._err(f"TLS error: {self._said(exc, 300)}"))
        except OSError as exc:
            return SendResult.transient(self._err(f"connection failed: {self._said(exc, 300)}"))
        if errors:
            # Some took it (none: SMTPRecipientsRefused above), and never get it again:
            # the delivery is owed to the others alone. Deferred (4xx): retried, with
            # those refused (5xx) too, whom a retry costs nothing; refused alone: dead,
            # and `redeliver` sends to them alone.
            deferred = [r for r in recipients if r in errors and 400 <= errors[r].code < 500]
            refused = [r for r in recipients if r in errors and r not in deferred]
            detail = "; ".join(
                f"{self._said(rcpt, 100)}: {resp.code} {self._said(resp.message, 200)}"
                for rcpt, resp in errors.items()
            )
            others = _took(took_before + len(recipients) - len(errors))
            if deferred:
                return SendResult.transient(
                    self._err(f"recipients deferred: {detail}{others}"),
                    recipients_left=[*deferred, *refused],
                )
            return SendResult.dead(
                self._err(f"recipients refused: {detail}{others}"), recipients_left=refused
            )
        return SendResult.success()

    async def aclose(self) -> None:
        """Nothing held open: each send uses its own connection."""
        return None
