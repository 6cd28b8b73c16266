"""Keep secrets out of every line feedwatch prints.

The config loader registers each secret it sees (expanded ``${VAR}`` values,
passwords, webhook URLs, URL user-info); ``redact`` then replaces them (in any
case, also as ``str.lower()`` and ``upper()`` write them) and the user-info of any URL
with ``***``. It runs on every log line, so
it is one precompiled regex swap (rebuilt only when a secret is added) and a
cheap ``"://" in text`` test before the URL pass.
"""

from __future__ import annotations

import re
import threading

MASK = "***"
_MIN_LEN = 4  # a secret at least this long is masked wherever it appears
_MIN_TOKEN = 2  # a shorter one (2-3 characters) only as a whole part of a URL:
# after "=", "/", "@" or ":" and before no letter or digit, or as the first label of
# a host an error quotes ("host ab.example.org"); masked anywhere, "ok" or "en" would
# blank out ordinary words of every log line ('"result": "ok"')
_TOKEN = r"(?:(?<=[=/@:]){0}(?![0-9A-Za-z])|(?<![0-9A-Za-z.\-]){0}(?=\.[0-9A-Za-z]))"

_lock = threading.Lock()
_secrets: dict[str, str] = {}  # each secret -> _fold(it), for the cheap tests first
_pattern: re.Pattern[str] | None = None

# scheme://user[:password]@  -- user-info cannot hold / ? # @ or white space.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#@\"'<>]+@")


def register_secret(value: str) -> None:
    """Remember ``value`` so that ``redact`` hides it from now on."""
    global _pattern
    if not isinstance(value, str) or len(value) < _MIN_TOKEN:
        return
    forms = [f for f in case_forms(value) if len(f) >= _MIN_TOKEN]
    with _lock:
        if all(f in _secrets for f in forms):
            return
        _secrets.update((f, _fold(f)) for f in forms)
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = _alternatives(ordered)


def case_forms(value: str) -> list[str]:
    """``value`` and each of its lower, upper and case-folded forms that
    ``re.IGNORECASE`` does not take for it: those compare one character with one,
    while ``str.lower()`` makes a capital dotted İ an i and a combining dot (a
    ``${TENANT}`` of "İzmirHaber" in a host comes back as "i̇zmirhaber"), and
    ``upper()`` makes ß SS."""
    forms = [value]
    for form in (
        value.lower(),
        value.upper(),
        value.casefold(),
        value.upper().lower(),
        value.lower().upper(),
    ):
        if not any(re.fullmatch(re.escape(f), form, re.IGNORECASE) for f in forms):
            forms.append(form)
    return forms


def _one(secret: str) -> str:
    """The pattern a secret is masked by: anywhere, or (short) as a part of a URL."""
    escaped = re.escape(secret)
    return escaped if len(secret) >= _MIN_LEN else _TOKEN.format(escaped)


def _alternatives(secrets: list[str]) -> re.Pattern[str]:
    # in any case: a ${TENANT} of "AcmeCorp" in a host comes back lower-cased (a DNS
    # error's host, the feed's default name)
    return re.compile("|".join(_one(s) for s in secrets), re.IGNORECASE)


def mask(text: str, secrets: list[str]) -> str:
    """``text`` with these secrets (``secrets_in``'s, longest first) masked as
    ``redact`` masks them."""
    return _alternatives(secrets).sub(MASK, text) if secrets else text


def secrets_in(text: str) -> list[str]:
    """The registered secrets found in ``text``, longest first (a short one only
    where it is a whole part of it, as ``redact`` masks it)."""
    folded = _fold(text)
    with _lock:
        found = [
            s
            for s, f in _secrets.items()
            # (_fold misses a few pairs of non-ASCII letters IGNORECASE equates: ΐ ΐ)
            if (f in folded or not s.isascii()) and re.search(_one(s), text, re.IGNORECASE)
        ]
    return sorted(found, key=len, reverse=True)


def url_secrets(url: str) -> list[str]:
    """A secret URL (a webhook's) and the parts of it a receiver may echo back
    alone: its path and each of its segments, its query and each query value (raw
    and decoded), its user-info. For the sink's own errors only: registered for every line, a
    value such as ``format=json`` would blank out ordinary words."""
    from urllib.parse import parse_qsl, urlsplit

    parts = [url]
    try:
        u = urlsplit(url)
    except ValueError:
        return parts
    if u.path not in ("", "/"):
        parts.append(u.path)
        # a token segment (a Discord webhook's), quoted back alone: one with a digit,
        # or long; not "webhooks" or "api", which would blank out ordinary words
        parts += [
            seg for seg in u.path.split("/") if any(c.isdigit() for c in seg) or len(seg) >= 16
        ]
    if u.query:
        parts.append(u.query)
        for raw in u.query.split("&"):
            parts.append(raw.partition("=")[2])
        parts += [v for _, v in parse_qsl(u.query, keep_blank_values=True)]
    if "@" in u.netloc:
        parts.append(u.netloc.rpartition("@")[0])
    return [p for p in dict.fromkeys(parts) if p]


def clear_secrets() -> None:
    """Forget every registered secret (for tests)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def redact(text: str) -> str:
    """``text`` with every registered secret and every URL user-info as ``***``."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "://" in text:
        text = _USERINFO.sub(r"\1" + MASK + "@", text)
    return text


def redact_cut(text: str, *, start: bool = False, end: bool = False) -> str:
    """``redact`` for a piece cut from a longer text (a program's last 8 KiB): where
    its ``start`` is a cut it may begin with a secret's last part, where its ``end``
    is, end with a secret's first part; no whole secret is left to match, so such a
    part is dropped. Any cut of the piece comes after this: it masks whole secrets."""
    with _lock:
        folds = list(_secrets.values())  # as long as each secret: _fold keeps lengths
    if start and end and any(len(text) <= len(f) and _fold(text) in f for f in folds):
        return MASK  # the piece lies inside a secret
    text = redact(text)  # first: a whole secret at an edge is not taken for a part
    if start:
        text = text[max((_lead(text, f) for f in folds), default=0) :]
    if end:
        text = text[: len(text) - max((_trail(text, f) for f in folds), default=0)]
    return text


def _fold(text: str) -> str:
    """``text`` with each character as ``re.IGNORECASE`` compares it (its simple lower
    case: İ an i, ſ an s), one for one: ``str.lower()`` makes İ two characters."""
    return "".join(_fold_char(c) for c in text)


def _fold_char(c: str) -> str:
    upper = c.upper()
    return (upper.lower() if len(upper) == 1 else c.lower())[0]


def _lead(text: str, folded: str) -> int:
    """The length of the longest part of a secret (``folded``: its ``_fold``), short of
    all of it, ending it and beginning ``text``."""
    head = _fold(text[: len(folded) - 1])
    for n in range(len(head), 0, -1):
        if head[:n] == folded[-n:]:
            return n
    return 0


def _trail(text: str, folded: str) -> int:
    """The length of the longest part of a secret (``folded``: its ``_fold``), short of
    all of it, beginning it and ending ``text``."""
    tail = _fold(text[max(len(text) - len(folded) + 1, 0) :])
    for n in range(len(tail), 0, -1):
        if tail[len(tail) - n :] == folded[:n]:
            return n
    return 0


def redact_url(url: str) -> str:
    """A URL fit for logs: user-info and any registered secret masked."""
    return redact(url)


def redact_refused_url(url: str) -> str:
    """A URL that was refused as malformed, as an error quotes it: ``redact_url``,
    and all from the scheme (or the start, without one) to its last "@" masked too.
    Such a URL's user-info may hold what ``redact_url`` stops at (a "/", "#" or white
    space in a password: "https://bob:pa/ss@host/"); an "@" in a path (a Mastodon
    "/@user" feed) is masked with it, which a valid URL, shown by ``redact_url``,
    never is."""
    shown = redact_url(url)
    head, sep, rest = shown.partition("://")
    if not sep:
        head, rest = "", shown
    if "@" in rest:
        rest = MASK + "@" + rest.rpartition("@")[2]
    return head + sep + rest
