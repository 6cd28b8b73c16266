"""A ``postgresql://`` URL's user-info, read as libpq reads it.

``urllib.parse.urlsplit`` is no reader of these URLs: a password with a "[" or
"]" (which libpq, psql and psycopg take as written) makes it raise (``Invalid IPv6
URL``, or ``'abc' does not appear to be an IPv4 or IPv6 address``, quoting a piece of
the password). libpq takes the user-info to end at the first "@" before any "/";
the user name ends at its first ":", and the password is the rest; each is
percent-decoded. So a "[", "]", "#", "?" or ":" in a password is fine as written, while
an "@" or "/" must be written %40 or %2F, and a "%" itself %25.

Imports nothing heavy: the config loader asks this of every PostgreSQL state.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_SCHEME = re.compile(r"(?i)^postgres(?:ql)?://")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def split(url: str) -> tuple[str, str, str]:
    """``(scheme://, user-info, rest)`` as libpq splits them; the user-info is
    empty when there is none (without its "@")."""
    m = _SCHEME.match(url)
    head = m.group(0) if m else ""
    rest = url[len(head) :]
    cut = re.search(r"[@/]", rest)
    if cut and cut.group(0) == "@":
        return head, rest[: cut.start()], rest[cut.end() :]
    return head, "", rest


def password(url: str) -> str | None:
    """The password as written in the URL (not decoded), None without one."""
    _, userinfo, _ = split(url)
    user, colon, pw = userinfo.partition(":")
    return pw if colon else None


def secrets(url: str) -> list[str]:
    """What may be the URL's password, as written and decoded: libpq's password, and
    what follows the user name up to the URL's last "@" before its query (a password
    with an "@" or "/" not percent-encoded, which ``problem`` refuses: no part of it
    reaches libpq, whose errors would quote a piece alone)."""
    head, _, _ = split(url)
    found: list[str] = []
    pw = password(url)
    if pw:
        found.append(pw)
    body = url[len(head) :].partition("?")[0]
    if "@" in body:
        found.append(body.rpartition("@")[0].partition(":")[2])
    decoded = [unquote(s, errors="replace") for s in found]
    return [s for s in dict.fromkeys(found + decoded) if s]


def problem(url: str) -> str | None:
    """Why libpq would not read ``url``'s user-info as written (or psycopg not at all),
    in words that quote no part of it; None when it would."""
    head, userinfo, rest = split(url)
    if "@" in rest.partition("?")[0]:
        return (
            'an "@" that does not end its user-info (before the host): write each "@" and'
            ' "/" in it percent-encoded, as %40 and %2F'
        )
    for part in userinfo.partition(":")[::2]:
        if _PERCENT.search(part):
            return 'a "%" in the user name or password not followed by two hex digits: write it %25'
        try:
            decoded = unquote(part, errors="strict")
        except UnicodeDecodeError:
            return (
                'a "%" in the user name or password that decodes to no UTF-8 character:'
                ' write each such "%" as %25'
            )
        if "\x00" in decoded:
            return "%00 in the user name or password"
    return None
