"""One email address as a config writes it: ``user@example.org`` or ``Name <user@example.org>``.

``email.utils.parseaddr`` reads RFC 5322, where a display name holding a comma
must be quoted: given ``Doe, Jane <jane@example.org>`` it returns ``Doe`` as the
address, and the mail went to ``<Doe>`` while the delivery was marked done. A
config entry is one address, so the display name is everything before ``<``,
commas included, and anything that looks like a list is refused at `validate`.

Addresses go out in ASCII: feedwatch does not use SMTPUTF8, so a domain is sent
as IDNA (punycode) and a non-ASCII local part is refused at `validate`.
"""

from __future__ import annotations

import re

__all__ = ["SeveralAddresses", "address_parts", "ascii_address", "parse_mailbox"]

_ANGLE = re.compile(r"(?P<name>[^<>]*?)\s*<(?P<addr>[^<>]*)>")
# a display name in quotes, which may hold anything ("Jane <work>", "Doe, Jane")
_QUOTED = re.compile(r'"(?P<name>(?:[^"\\]|\\.)*)"\s*<(?P<addr>[^<>]*)>')
# the older form: user@example.org (Jane Doe)
_COMMENTED = re.compile(r"(?P<addr>[^\s()<>]+)\s*\((?P<name>[^()]*)\)")
_NOT_IN_ADDRESS = re.compile(r"[\s,;<>()\[\]\\\"]")


class SeveralAddresses(ValueError):
    """A list where one address goes (its message names the hint for ``to``)."""


def parse_mailbox(text: str) -> tuple[str, str]:
    """(display name, address); ValueError saying what is wrong with ``text``."""
    t = text.strip()
    if m := _QUOTED.fullmatch(t):
        name = re.sub(r"\\(.)", r"\1", m["name"])
        addr = m["addr"].strip()
    elif m := _ANGLE.fullmatch(t):
        name, addr = m["name"].strip(), m["addr"].strip()
    elif m := _COMMENTED.fullmatch(t):
        name, addr = m["name"].strip(), m["addr"]
    elif "<" in t or ">" in t:
        raise ValueError('not one email address: write "Name <user@example.org>"')
    else:
        name, addr = "", t
    if "," in addr or ";" in addr:
        raise SeveralAddresses(
            'more than one address: give each its own string (to = ["a@example.org",'
            ' "b@example.org"])'
        )
    local, at, domain = addr.rpartition("@")
    if not at:
        raise ValueError("not an email address (no @)")
    if not local or not domain or ("@" in local and not local.startswith('"')):
        raise ValueError(f"not an email address: {addr!r} (user@domain)")
    # a quoted local part ("john.doe"@example.org) may hold what a bare one may not
    checked = domain if address_parts(addr)[0] != local else addr
    if _NOT_IN_ADDRESS.search(checked) or domain.startswith(".") or domain.endswith("."):
        raise ValueError(f"not an email address: {addr!r}")
    if not local.isascii():
        raise ValueError(
            f"{addr!r}: a non-ASCII local part (before the @) cannot be sent:"
            " feedwatch does not use SMTPUTF8"
        )
    ascii_domain(domain)
    return name, addr


def ascii_domain(domain: str) -> str:
    """``domain`` as sent: an international one in IDNA (punycode); ValueError if it has none."""
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"not a domain name (IDNA refuses it): {domain!r}") from None


def ascii_address(addr: str) -> str:
    """An address ``parse_mailbox`` returned, as the SMTP envelope carries it."""
    local, _, domain = addr.rpartition("@")
    return f"{local}@{ascii_domain(domain)}"


def address_parts(addr: str) -> tuple[str, str]:
    """(local part, domain) of an address ``parse_mailbox`` returned, the local part
    without the quotes a quoted one ("john.doe"@example.org) is written in."""
    local, _, domain = addr.rpartition("@")
    if len(local) >= 2 and local[0] == local[-1] == '"' and '"' not in local[1:-1]:
        local = local[1:-1]
    return local, domain
