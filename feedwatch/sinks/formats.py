"""Pure renderers: the SPEC section 5 payload as each receiving service wants it.

Nothing here does I/O. Every renderer takes one or more payloads (several for
a digest) and returns what goes on the wire. Feed text is hostile input: it is
escaped for the target's markup so it cannot form links, mentions or
formatting tricks, only http(s) URLs ever become links, and every service's
documented length limits are respected by cutting text (ending in ``…``).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

# re-exported: the sinks take every renderer from here
from feedwatch.payload import Payload as Payload
from feedwatch.payload import payload_json as payload_json
from feedwatch.text import cluster_cut, clusters
from feedwatch.textdiff import changed_words

ELLIPSIS = "…"

KIND_LABELS = {
    "new": "New",
    "updated": "Updated",
    "flood": "Flood",
    "stale": "Stale",
    "recovered": "Recovered",
}
NOTICE_KINDS = frozenset({"flood", "stale", "recovered"})

# The order changed fields are shown in (any others follow, sorted).
CHANGE_ORDER = ("title", "link", "published", "updated", "summary", "content")
TIME_FIELDS = frozenset({"published", "updated"})

TEXT_READ = 16 * 1024  # of any one payload text, more than any service shows
WHOLE_TEXT = 160  # a changed text longer than this is shown by the words that changed
CONTEXT_WORDS = 8

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # keeps \t and \n
_HEADER_BAD = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SPACES = re.compile(r"\s+")
_URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))  # printable ASCII kept as is


# --------------------------------------------------------------------------
# The canonical JSON body (feedwatch.payload: the state stores the same bytes)
# --------------------------------------------------------------------------


def digest_json(payloads: Sequence[Payload]) -> bytes:
    return payload_json({"version": 1, "kind": "digest", "alerts": list(payloads)})


# What ``cut_payload`` never cuts (the whole value under such a key): what names or
# points at the alert, and times. A cut link or id would point nowhere or name another.
_UNCUT_KEYS = frozenset(
    {"version", "id", "kind", "detected_at", "name", "url", "link", "published", "updated"}
)
MIN_CUT = 16  # ``cut_payload``'s smallest cap


def cut_payload(p: Payload, cap: int) -> dict[str, Any]:
    """The payload with each text longer than ``cap`` characters cut after a word (ending
    in ``…``) and each list to its first ``cap`` items: an alert made to fit a receiver
    that refuses it whole for its size. Ids, links, URLs, names and times stay whole."""

    def cut(value: object) -> object:
        if isinstance(value, str):
            return shorten(value, cap, words=True)
        if isinstance(value, Mapping):
            return {k: v if k in _UNCUT_KEYS else cut(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [cut(v) for v in value[:cap]]
        return value

    return {k: v if k in _UNCUT_KEYS else cut(v) for k, v in p.items()}


def longest_part(p: Payload) -> int:
    """The longest text or list of a payload that ``cut_payload`` may cut: the cap above
    which it cuts nothing."""

    def most(value: object) -> int:
        if isinstance(value, str):
            return len(value)
        if isinstance(value, Mapping):
            return max((most(v) for k, v in value.items() if k not in _UNCUT_KEYS), default=0)
        if isinstance(value, (list, tuple)):
            return max([len(value), *(most(v) for v in value)])
        return 0

    return most(p)


def alerts_count(n: int) -> str:
    """``1 alert``, ``3 alerts``: a digest may hold a single alert."""
    return f"{n} alert" if n == 1 else f"{n} alerts"


# --------------------------------------------------------------------------
# Reading a payload (defensively: a stored payload may come from an older version)
# --------------------------------------------------------------------------


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: object) -> str:
    """A payload value as text, pre-cut: no service shows more, and 64 KiB fields add up."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return text[:TEXT_READ]


def kind_of(p: Payload) -> str:
    return _str(p.get("kind")) or "new"


def kind_label(p: Payload) -> str:
    kind = kind_of(p)
    return KIND_LABELS.get(kind, kind.capitalize())


def is_notice(p: Payload) -> bool:
    return kind_of(p) in NOTICE_KINDS or not isinstance(p.get("entry"), Mapping)


def entry_of(p: Payload) -> Mapping[str, Any]:
    return _map(p.get("entry"))


def feed_name(p: Payload) -> str:
    return oneline(_str(_map(p.get("feed")).get("name"))) or "feed"


def feed_display(p: Payload) -> str:
    """The feed's title when it has one, with its configured name."""
    feed = _map(p.get("feed"))
    name = oneline(_str(feed.get("name")))
    title = oneline(_str(feed.get("title")))
    if title and name and title != name:
        return f"{title} ({name})"
    return title or name or "feed"


def entry_title(p: Payload) -> str:
    return oneline(_str(entry_of(p).get("title"))) or "(untitled)"


def entry_summary(p: Payload) -> str:
    return oneline(_str(entry_of(p).get("summary")))


def message_of(p: Payload) -> str:
    return clean(_str(p.get("message"))).strip()


def headline(p: Payload) -> str:
    """``Updated: TITLE`` for an entry, ``Stale: MESSAGE`` for a notice."""
    if is_notice(p):
        return f"{kind_label(p)}: {oneline(message_of(p)) or feed_name(p)}"
    return f"{kind_label(p)}: {entry_title(p)}"


def entry_link(p: Payload) -> str | None:
    return safe_link(entry_of(p).get("link"))


def matched_text(p: Payload) -> str:
    """``missiles (hypersonic, ICBM); keywords (Dnipro)``."""
    parts = []
    for m in p.get("matched") or ():
        m = _map(m)
        rule = oneline(_str(m.get("rule")))
        terms = ", ".join(oneline(_str(t)) for t in m.get("terms") or ())
        parts.append(f"{rule} ({terms})" if terms else rule)
    return "; ".join(parts)


def human_time(value: object) -> str:
    """``2024-11-22T15:56:45Z`` -> ``2024-11-22 15:56:45 UTC``; anything else as is."""
    text = oneline(_str(value))
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)Z", text)
    return f"{m.group(1)} {m.group(2)} UTC" if m else text


def dates_text(p: Payload) -> str:
    entry = entry_of(p)
    parts = []
    if entry.get("published"):
        parts.append(f"published {human_time(entry['published'])}")
    if entry.get("updated") and entry.get("updated") != entry.get("published"):
        parts.append(f"updated {human_time(entry['updated'])}")
    return ", ".join(parts)


def changed_fields(p: Payload) -> list[tuple[str, str, str]]:
    """``(field, old, new)`` for every changed field, one line each, times made readable.

    A long text is cut to what changed (``textdiff.changed_words``): a story corrected in its
    last sentence showed two identical beginnings, each cut to fit the message, and
    never the correction."""
    changes = _map(p.get("changes"))
    keys = [k for k in CHANGE_ORDER if k in changes]
    keys += sorted(k for k in changes if k not in CHANGE_ORDER)
    out = []
    for key in keys:
        change = _map(changes[key])
        old, new = change.get("old"), change.get("new")
        if key in TIME_FIELDS:
            old_s, new_s = human_time(old), human_time(new)
        else:
            old_s, new_s = oneline(_str(old)), oneline(_str(new))
            if max(len(old_s), len(new_s)) > WHOLE_TEXT:
                old_s, new_s = changed_words(old_s, new_s, CONTEXT_WORDS)
        out.append((oneline(_str(key)), old_s or "(none)", new_s or "(none)"))
    return out


# --------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------


def clean(text: str) -> str:
    """Drop control characters (terminal escapes, NULs) but keep tabs and newlines."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def oneline(text: str) -> str:
    return _SPACES.sub(" ", _HEADER_BAD.sub(" ", text)).strip()


def _word_end(head: str, whole: str) -> str:
    """``head``, a cut prefix of ``whole``, ending at the end of a word where the cut
    fell inside one (unless the word is over half of it)."""
    if not head or len(head) >= len(whole) or head[-1].isspace() or whole[len(head)].isspace():
        return head
    space = max(head.rfind(" "), head.rfind("\n"), head.rfind("\t"))
    return head[:space] if space > len(head) // 2 else head


def shorten(text: str, limit: int, *, words: bool = False) -> str:
    """At most ``limit`` characters, ending in ``…`` when cut (``words``: after a word),
    never inside a grapheme cluster (an emoji sequence, a flag, a letter and its accent:
    ``feedwatch.text.clusters``)."""
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    head = clusters(text, limit - 1)
    head = _word_end(head, text) if words else head
    return clusters(text, len(head.rstrip())) + ELLIPSIS


def shorten_bytes(text: str, limit: int, *, words: bool = False) -> str:
    """At most ``limit`` UTF-8 bytes, never splitting a character nor a grapheme
    cluster, ending in ``…`` when cut (``words``: after a word)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    budget = max(0, limit - len(ELLIPSIS.encode()))
    head = data[:budget].decode("utf-8", "ignore")  # a lone surrogate is "?" here
    head = head[: cluster_cut(text, len(head))]
    head = _word_end(head, text) if words else head
    return head[: cluster_cut(text, len(head.rstrip()))] + ELLIPSIS


def safe_link(value: object, *, limit: int = 2048) -> str | None:
    """An http(s) URL fit to become a link (ASCII, no spaces, a host), else None.

    Non-ASCII characters are percent-encoded (and an IDN host punycoded), so
    the result is also fit for an HTTP header. A link longer than ``limit``
    is not linked: services reject or mangle such URLs.
    """
    if not isinstance(value, str):
        return None
    url = value.strip()
    if not url or any(c.isspace() or _HEADER_BAD.match(c) for c in url):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    if not url.isascii():
        netloc = parts.netloc
        if not host.isascii():
            try:
                ascii_host = host.encode("idna").decode("ascii")
            except UnicodeError:
                return None
            # the host as written (its case kept by netloc, not by .hostname), with
            # the user-info and port around it kept
            userinfo, at, _ = netloc.rpartition("@")
            try:
                port = f":{parts.port}" if parts.port is not None else ""
            except ValueError:
                return None
            netloc = f"{userinfo}{at}{ascii_host}{port}"
        url = urlunsplit(
            (
                parts.scheme,
                quote(netloc, safe=_URL_SAFE),
                quote(parts.path, safe=_URL_SAFE),
                quote(parts.query, safe=_URL_SAFE),
                quote(parts.fragment, safe=_URL_SAFE),
            )
        )
    return url if len(url) <= limit else None


def header_value(text: str, limit: int = 250) -> str:
    """A safe HTTP header value: no CR/LF or control characters, ASCII on the wire.

    Non-ASCII text (and ASCII that already looks like an encoded word) is sent
    as RFC 2047 base64 encoded words, which ntfy decodes on every header it
    reads; httpx itself only sends ASCII header values.
    """
    text = shorten(oneline(text), limit)
    if text.isascii() and "=?" not in text:
        return text
    words = []
    chunk = ""
    for ch in text:
        if len((chunk + ch).encode("utf-8")) > 45:  # 60 base64 chars: words stay under 75
            words.append(chunk)
            chunk = ""
        chunk += ch
    if chunk:
        words.append(chunk)
    return " ".join(
        "=?utf-8?b?" + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?=" for w in words
    )


def _fit(render: Callable[[int], Any], fits: Callable[[Any], bool]) -> Any:
    """Render with ever smaller per-text caps until the whole message fits the service."""
    result = None
    for cap in (4000, 2000, 1000, 500, 250, 120, 60, 30):
        result = render(cap)
        if fits(result):
            return result
    return result


# --------------------------------------------------------------------------
# Slack (Incoming Webhook, Block Kit)
# --------------------------------------------------------------------------

SLACK_SECTION_TEXT = 3000
SLACK_MAX_BLOCKS = 50
SLACK_TEXT = 3000


# mrkdwn has no escape for its formatting characters (*bold*, _italic_, ~strike~,
# `code`, and their fullwidth forms): feed text in mrkdwn gets look-alikes instead
_SLACK_LOOKALIKES = str.maketrans(
    {"*": "∗", "＊": "∗", "_": "ˍ", "＿": "ˍ", "~": "∼", "～": "∼", "`": "ˋ", "｀": "ˋ"}
)


def slack_escape(text: str) -> str:
    """Slack's three control characters: without them feed text forms no link or mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_SLACK_URL = re.compile(r"https?://[^\s<>*`＊＿｀～]+")  # no * or ` in one: look-alikes


def slack_mrkdwn(text: str) -> str:
    """Feed text for a mrkdwn object: no link, no mention, no formatting. A URL in it
    keeps its ``_`` and ``~`` (shown as the feed wrote it, not linked: the objects are
    ``verbatim``; with look-alikes a copied one led elsewhere); a mark inside a URL
    opens no formatting (one must follow a space or begin the text) and can close none (the marks outside are look-alikes)."""
    escaped = slack_escape(text)
    out: list[str] = []
    last = 0
    for m in _SLACK_URL.finditer(escaped):
        out += [escaped[last : m.start()].translate(_SLACK_LOOKALIKES), m.group(0)]
        last = m.end()
    out.append(escaped[last:].translate(_SLACK_LOOKALIKES))
    return "".join(out)


def _slack_cut(escaped: str, limit: int) -> str:
    """Cut already-escaped text without leaving half an ``&amp;``."""
    if len(escaped) <= limit:
        return escaped
    head = re.sub(r"&[a-z]{0,3}$", "", clusters(escaped, limit - 1))
    return clusters(escaped, len(head.rstrip())) + ELLIPSIS


def _slack_text(text: str, limit: int) -> str:
    return _slack_cut(slack_mrkdwn(text), limit)


def _slack_plain(text: str, limit: int) -> dict[str, str]:
    """A plain_text object: feed text standing alone keeps its own characters."""
    return {"type": "plain_text", "text": _slack_cut(slack_escape(text), limit)}


def _slack_alert_blocks(p: Payload, cap: int) -> list[dict[str, Any]]:
    head = f"*{slack_mrkdwn(kind_label(p))}* · {_slack_text(feed_display(p), 200)}"
    if is_notice(p):
        body = _slack_plain(message_of(p) or "(no message)", min(cap, 2500))
        return [_slack_section(head), {"type": "section", "text": body}]
    title = _slack_text(entry_title(p), 250)
    link = entry_link(p)
    # measured escaped: every "&" grows to "&amp;", and a link cut by the section's
    # limit would leave half of its <url|title> markup
    href = slack_escape(link).replace("|", "%7C") if link else ""
    if href and len(href) <= 1500:
        blocks = [_slack_section(f"{head}\n*<{href}|{title}>*")]
    else:
        blocks = [_slack_section(f"{head}\n*{title}*")]
    changes = changed_fields(p)
    if changes:
        each = max(20, min(cap, 1200) // 2)
        lines = ["*What changed*"]
        for key, old, new in changes:
            lines.append(
                f"• *{slack_mrkdwn(key)}*: {_slack_text(old, each)} → {_slack_text(new, each)}"
            )
        blocks.append(_slack_section("\n".join(lines)))
    else:
        summary = entry_summary(p)
        if summary:
            blocks.append({"type": "section", "text": _slack_plain(summary, min(cap, 1000))})
    context = [t for t in (dates_text(p), matched_text(p) and f"matched: {matched_text(p)}") if t]
    if context:
        blocks.append({"type": "context", "elements": [_slack_plain(t, 1000) for t in context]})
    return blocks


def _slack_section(text: str) -> dict[str, Any]:
    """A section of mrkdwn, ``verbatim``: without it Slack parses the plain text too,
    so a feed's ``@here``, ``@channel`` or ``#general`` pinged or linked, and bare
    URLs became links. feedwatch's own links are explicit ``<url|text>``, which
    verbatim text keeps."""
    return {
        "type": "section",
        "text": {"type": "mrkdwn", "text": _slack_cut(text, SLACK_SECTION_TEXT), "verbatim": True},
    }


def slack(payloads: Sequence[Payload], *, digest: bool = False) -> dict[str, Any]:
    """A Slack Incoming Webhook message: ``text`` (notification fallback) plus ``blocks``.

    ``digest``: the list rendering even for one alert (a digest sink's message)."""
    payloads = list(payloads)
    if len(payloads) == 1 and not digest:
        p = payloads[0]
        text = _slack_text(f"[{feed_name(p)}] {headline(p)}", SLACK_TEXT)
        return {"text": text, "blocks": _slack_alert_blocks(p, 2000)}
    blocks: list[dict[str, Any]] = [_slack_section(f"*feedwatch: {alerts_count(len(payloads))}*")]
    shown = 0
    for p in payloads:
        more = [{"type": "divider"}, *_slack_alert_blocks(p, 500)]
        # keep one block free for the "and N more" line
        if len(blocks) + len(more) > SLACK_MAX_BLOCKS - 1:
            break
        blocks.extend(more)
        shown += 1
    if shown < len(payloads):
        blocks.append(_slack_section(f"…and {len(payloads) - shown} more alerts"))
    titles = "; ".join(f"[{feed_name(p)}] {headline(p)}" for p in payloads[:5])
    text = _slack_text(f"feedwatch: {alerts_count(len(payloads))}: {titles}", SLACK_TEXT)
    return {"text": text, "blocks": blocks}


# --------------------------------------------------------------------------
# Discord (execute webhook)
# --------------------------------------------------------------------------

DISCORD_CONTENT = 2000
DISCORD_MAX_EMBEDS = 10
DISCORD_EMBED_TOTAL = 6000
DISCORD_TITLE = 256
DISCORD_DESCRIPTION = 4096
DISCORD_FIELD_NAME = 256
DISCORD_FIELD_VALUE = 1024
DISCORD_FOOTER = 2048
_DISCORD_COLORS = {"new": 0x2ECC71, "updated": 0x3498DB}
_DISCORD_NOTICE_COLOR = 0xE67E22
_MARKDOWN = re.compile(r"([\\*_~`|>\[\]#<@])")
# a line that would start a list: "- item", "+ item", "1. item", "1) item"
_LIST_START = re.compile(r"^([ \t]*)([-+]|\d{1,9}[.)])(?=\s|$)", re.M)


def escape_list_starts(text: str) -> str:
    """Backslash-escape the marker of a line that would start a list (``1\\. item``)."""
    return _LIST_START.sub(lambda m: f"{m[1]}{m[2][:-1]}\\{m[2][-1]}", text)


def markdown_escape(text: str) -> str:
    """Backslash-escape markdown syntax so feed text renders literally (no masked links)."""
    return escape_list_starts(_MARKDOWN.sub(r"\\\1", text))


def _md(text: str, limit: int) -> str:
    """Cut then escape, dropping a dangling backslash so the cut stays within ``limit``."""
    escaped = markdown_escape(text)
    if len(escaped) <= limit:
        return escaped
    head = clusters(escaped, limit - 1)
    trailing = len(head) - len(head.rstrip("\\"))
    if trailing % 2:
        head = clusters(escaped, len(head) - 1)
    return head + ELLIPSIS


def _embed_size(embed: Mapping[str, Any]) -> int:
    size = len(embed.get("title", "")) + len(embed.get("description", ""))
    size += len(_map(embed.get("footer")).get("text", ""))
    size += len(_map(embed.get("author")).get("name", ""))
    for f in embed.get("fields", ()):
        size += len(f["name"]) + len(f["value"])
    return size


def _discord_embed(p: Payload, cap: int) -> dict[str, Any]:
    kind = kind_of(p)
    embed: dict[str, Any] = {
        "title": _md(headline(p), DISCORD_TITLE),  # embed titles render markdown too
        "color": _DISCORD_COLORS.get(kind, _DISCORD_NOTICE_COLOR),
    }
    fields: list[dict[str, Any]] = [
        {"name": "Feed", "value": _md(feed_display(p), min(cap, 256)), "inline": True}
    ]
    if is_notice(p):
        embed["description"] = _md(message_of(p) or "(no message)", min(cap, DISCORD_DESCRIPTION))
    else:
        link = entry_link(p)
        if link:
            embed["url"] = link
        changes = changed_fields(p)
        if changes:
            each = max(10, min(cap, 1500) // 2)
            lines = ["**What changed**"]
            for key, old, new in changes:
                lines.append(f"**{markdown_escape(key)}**: {_md(old, each)} → {_md(new, each)}")
            embed["description"] = shorten("\n".join(lines), min(cap, DISCORD_DESCRIPTION))
        else:
            summary = entry_summary(p)
            if summary:
                embed["description"] = _md(summary, min(cap, DISCORD_DESCRIPTION))
        entry = entry_of(p)
        for key, name in (("published", "Published"), ("updated", "Updated")):
            if entry.get(key):
                fields.append({"name": name, "value": human_time(entry[key]), "inline": True})
        matched = matched_text(p)
        if matched:
            fields.append({"name": "Matched", "value": _md(matched, min(cap, DISCORD_FIELD_VALUE))})
    entry = entry_of(p)
    when = entry.get("updated") or entry.get("published") or p.get("detected_at")
    if isinstance(when, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", when):
        embed["timestamp"] = when
    embed["fields"] = [
        {
            "name": shorten(f["name"], DISCORD_FIELD_NAME),
            "value": shorten(f["value"], DISCORD_FIELD_VALUE) or "-",
            **({"inline": True} if f.get("inline") else {}),
        }
        for f in fields
    ]
    embed["footer"] = {"text": shorten(f"feedwatch · {_str(p.get('id'))[:12]}", DISCORD_FOOTER)}
    return embed


def discord(payloads: Sequence[Payload], *, digest: bool = False) -> dict[str, Any]:
    """A Discord webhook message: up to 10 embeds, 6000 characters in all, mentions disabled.

    A digest of more than 10 alerts shows 9 and ends with an embed "…and N more alerts"."""
    payloads = list(payloads)
    fit_all = len(payloads) <= DISCORD_MAX_EMBEDS
    shown = payloads if fit_all else payloads[: DISCORD_MAX_EMBEDS - 1]
    closing = [] if fit_all else [{"description": f"…and {len(payloads) - len(shown)} more alerts"}]
    if len(payloads) == 1 and not digest:
        p = payloads[0]
        content = f"**{markdown_escape(kind_label(p))}** in {_md(feed_name(p), 200)}"
    else:
        content = f"**feedwatch: {alerts_count(len(payloads))}**"
        if len(shown) < len(payloads):
            content += f" (the first {len(shown)} shown)"

    def render(cap: int) -> list[dict[str, Any]]:
        return [*(_discord_embed(p, cap) for p in shown), *closing]

    embeds = _fit(render, lambda es: sum(_embed_size(e) for e in es) <= DISCORD_EMBED_TOTAL)
    return {
        "content": shorten(content, DISCORD_CONTENT),
        "embeds": embeds,
        "allowed_mentions": {"parse": []},
    }


# --------------------------------------------------------------------------
# Microsoft Teams (Workflows webhook: a message with one Adaptive Card)
# --------------------------------------------------------------------------

TEAMS_MAX_BYTES = 24_000  # Teams refuses messages over ~28 KB
TEAMS_MAX_ALERTS = 20
_TEAMS_COLORS = {"new": "Good", "updated": "Accent"}
# TextBlock markdown (CommonMark backslash escapes): what could form a link or
# formatting, and the backslash itself: unescaped, a feed's "\[" became "\\[", a
# literal backslash before a live "[". Lists are escaped where a line starts.
_TEAMS_MARKDOWN = re.compile(r"([\\\[\]*_~`])")
# A TextBlock evaluates {{DATE(...)}} and {{TIME(...)}} (shown as the reader's local
# date), and Adaptive Cards has no escape for them: a zero-width space parts the braces.
_TEAMS_FUNCTION = re.compile(r"\{(?=\{)")


def _teams_text(text: str, limit: int) -> str:
    escaped = escape_list_starts(_TEAMS_MARKDOWN.sub(r"\\\1", shorten(text, limit)))
    return _TEAMS_FUNCTION.sub("{\u200b", escaped)


def _text_block(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _teams_alert(p: Payload, cap: int, *, first: bool) -> list[dict[str, Any]]:
    kind = kind_of(p)
    blocks: list[dict[str, Any]] = [
        _text_block(
            _teams_text(f"{kind_label(p)} · {feed_display(p)}", 300),
            size="Small",
            weight="Bolder",
            color=_TEAMS_COLORS.get(kind, "Warning"),
            spacing="Medium",
            separator=not first,
        )
    ]
    if is_notice(p):
        blocks.append(_text_block(_teams_text(message_of(p) or "(no message)", cap)))
        return blocks
    blocks.append(_text_block(_teams_text(entry_title(p), 500), size="Medium", weight="Bolder"))
    facts = []
    entry = entry_of(p)
    for key, name in (("published", "Published"), ("updated", "Updated")):
        if entry.get(key):
            facts.append({"title": name, "value": human_time(entry[key])})
    if matched_text(p):
        facts.append({"title": "Matched", "value": _teams_text(matched_text(p), min(cap, 500))})
    if facts:
        blocks.append({"type": "FactSet", "facts": facts})
    changes = changed_fields(p)
    if changes:
        each = max(10, cap // 2)
        blocks.append(_text_block("What changed", weight="Bolder", spacing="Small"))
        blocks.append(
            {
                "type": "FactSet",
                "facts": [
                    {
                        "title": _teams_text(key, 40),
                        "value": f"{_teams_text(old, each)} → {_teams_text(new, each)}",
                    }
                    for key, old, new in changes
                ],
            }
        )
    else:
        summary = entry_summary(p)
        if summary:
            blocks.append(_text_block(_teams_text(summary, cap), isSubtle=True))
    return blocks


def teams(payloads: Sequence[Payload], *, digest: bool = False) -> dict[str, Any]:
    """A Teams Workflows webhook message carrying one Adaptive Card (version 1.4)."""
    payloads = list(payloads)
    single = len(payloads) == 1 and not digest
    fits = lambda m: len(json.dumps(m, ensure_ascii=False).encode("utf-8")) <= TEAMS_MAX_BYTES  # noqa: E731
    # the smallest caps cut texts, not titles or links: a digest of long ones is still
    # too big, so it shows fewer alerts ("…and N more"), down to one
    message: dict[str, Any] = {}
    for count in range(max(1, min(len(payloads), TEAMS_MAX_ALERTS)), 0, -1):
        message = _teams_card(payloads, payloads[:count], single)
        if fits(message):
            break
    return message


def _teams_card(payloads: list[Payload], shown: list[Payload], single: bool) -> dict[str, Any]:
    def render(cap: int) -> dict[str, Any]:
        body: list[dict[str, Any]] = []
        if not single:
            body.append(
                _text_block(
                    f"feedwatch: {alerts_count(len(payloads))}", size="Large", weight="Bolder"
                )
            )
        for i, p in enumerate(shown):
            body.extend(_teams_alert(p, cap, first=i == 0 and single))
            link = None if is_notice(p) else entry_link(p)
            if link and not single:
                body.append(
                    {
                        "type": "ActionSet",
                        "actions": [{"type": "Action.OpenUrl", "title": "Open", "url": link}],
                    }
                )
        if len(shown) < len(payloads):
            body.append(_text_block(f"…and {len(payloads) - len(shown)} more alerts"))
        card: dict[str, Any] = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": body,
            "msteams": {"width": "Full"},
        }
        link = entry_link(payloads[0]) if single and not is_notice(payloads[0]) else None
        if link:
            card["actions"] = [{"type": "Action.OpenUrl", "title": "Open entry", "url": link}]
        return {
            "type": "message",
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": None,
                    "content": card,
                }
            ],
        }

    return _fit(
        render,
        lambda m: len(json.dumps(m, ensure_ascii=False).encode("utf-8")) <= TEAMS_MAX_BYTES,
    )


# --------------------------------------------------------------------------
# ntfy (plain text body, Title / Click / Tags headers)
# --------------------------------------------------------------------------

# ntfy turns a body of 4096 bytes or more into an attachment (older servers already at
# 4096 itself): under that
NTFY_MAX_BODY = 4095
_NTFY_TAGS = {
    "new": "new",
    "updated": "arrows_counterclockwise",
    "flood": "warning",
    "stale": "hourglass",
    "recovered": "white_check_mark",
}


def _ntfy_block(p: Payload, limit: int) -> str:
    lines = []
    if is_notice(p):
        lines.append(f"{kind_label(p)} in {feed_name(p)}")
        lines.append(message_of(p) or "(no message)")
    else:
        lines.append(f"{kind_label(p)} in {feed_name(p)}: {entry_title(p)}")
        link = entry_link(p)
        if link:
            lines.append(link)
        if dates_text(p):
            dates = dates_text(p)
            lines.append(dates[:1].upper() + dates[1:])
        changes = changed_fields(p)
        if changes:
            lines.append("Changed:")
            each = max(20, limit // (2 * len(changes) + 1))
            for key, old, new in changes:
                old, new = shorten(old, each, words=True), shorten(new, each, words=True)
                lines.append(f"- {key}: {old} -> {new}")
        else:
            summary = entry_summary(p)
            if summary:
                lines.append(shorten(summary, limit, words=True))
        if matched_text(p):
            lines.append(f"Matched: {matched_text(p)}")
    return shorten_bytes(clean("\n".join(lines)), limit, words=True)


def ntfy(payloads: Sequence[Payload], *, digest: bool = False) -> tuple[bytes, dict[str, str]]:
    """ntfy: a plain text body under 4096 bytes (cut after a word), and ``Title``,
    ``Click``, ``Tags`` headers."""
    payloads = list(payloads)
    headers: dict[str, str] = {}
    if len(payloads) == 1 and not digest:
        p = payloads[0]
        body = _ntfy_block(p, NTFY_MAX_BODY)
        if is_notice(p):
            title = f"{feed_name(p)}: {kind_label(p).lower()}"
        else:
            title = f"{feed_name(p)}: {kind_label(p).lower()}: {entry_title(p)}"
        tags = [_NTFY_TAGS.get(kind_of(p), "bell"), feed_name(p)]
    else:
        title = f"feedwatch: {alerts_count(len(payloads))}"
        each = max(300, NTFY_MAX_BODY // len(payloads))
        blocks: list[str] = []
        used = 0
        for i, p in enumerate(payloads):
            block = _ntfy_block(p, each)
            size = len(block.encode("utf-8")) + 2
            rest = len(payloads) - i
            if used + size + 40 > NTFY_MAX_BODY and rest:
                blocks.append(f"…and {rest} more alerts")
                break
            blocks.append(block)
            used += size
        body = shorten_bytes("\n\n".join(blocks), NTFY_MAX_BODY, words=True)
        tags = ["newspaper", *dict.fromkeys(feed_name(p) for p in payloads)]
    headers["Title"] = header_value(title)
    link = next((entry_link(p) for p in payloads if entry_link(p)), None)
    if link:
        headers["Click"] = link  # safe_link: http(s), ASCII, no whitespace
    tag_text = ",".join(t for t in (oneline(t.replace(",", " ")) for t in tags[:6]) if t)
    headers["Tags"] = header_value(tag_text, 200)
    return body.encode("utf-8", "replace"), headers
