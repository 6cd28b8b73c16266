"""Text a feed's ``ignore_text`` names is not a change (pure; SPEC section 4's "noise is
not a change", for the noise only the user can name).

Some feeds put a counter in each entry's text: a WordPress plugin's "(Visited 222 times,
1 visits today)", hnrss.org's "Points: 123" and "# Comments: 45", a forum's "12 posts - 5
participants". Every poll then changes the text of every entry someone visited, and each
is an update (FreshRSS#3571; YouTube's statistics do it to readers' "updated" marks).
``ignore_text`` names that text in the syntax of a rule's terms (a phrase, ``prefix*``,
``/regex/``; case-insensitive): it is cut out of the stored text and of the new text
before the two are compared, so an entry whose text changed only there is stored
silently, and the next poll compares with it. Nothing else changes: the text is stored
and sent whole (an alert for a real change carries the counter as it is, rules match
it), alert ids hash the whole text, and changing ``ignore_text`` never makes an alert
by itself, since both sides are cut with the same terms.

A ``/regex/`` that runs out of time on a text leaves that text as it is (the comparison
is then the plain one) and is logged once per term.
"""

from __future__ import annotations

import functools
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import structlog

from feedwatch.match import REGEX_TIMEOUT, compile_search

__all__ = ["Ignore", "compile_ignore", "validate"]

log = structlog.get_logger("feedwatch.ignore_text")


def validate(term: str) -> None:
    """Raise ValueError naming what is wrong with ``term`` (a rule term's checks, the
    empty term's included); the config loader and preview call this."""
    compile_search(term)


@dataclass(frozen=True, eq=False)
class Ignore:
    terms: tuple[str, ...]
    patterns: tuple[Any, ...]  # regex.Pattern[str], one per term
    _timed_out: set[str] = field(default_factory=set)

    def clean(self, text: str) -> str:
        """``text`` with every hit of every term cut out, white space folded (NFC, as
        fingerprints fold it)."""
        deadline = time.monotonic() + REGEX_TIMEOUT
        for term, pattern in zip(self.terms, self.patterns, strict=True):
            try:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                text = pattern.sub(" ", text, timeout=remaining)
            except TimeoutError:
                if term not in self._timed_out:
                    self._timed_out.add(term)
                    log.warning("ignore_text.timeout", term=term, timeout=REGEX_TIMEOUT)
        return unicodedata.normalize("NFC", " ".join(text.split()))

    def found(self, *texts: str, limit: int = 6) -> list[str]:
        """The text the terms cut from ``texts`` (each hit once, at most ``limit``): what
        ``feedwatch preview --ignore-text`` shows."""
        out: list[str] = []
        for pattern in self.patterns:
            for text in texts:
                try:
                    hits = pattern.finditer(text, timeout=REGEX_TIMEOUT)
                    for m in hits:
                        hit = " ".join(m.group(0).split())
                        if hit and hit not in out:
                            out.append(hit)
                        if len(out) >= limit:
                            return out
                except TimeoutError:
                    continue
        return out

    def same(self, a: str, b: str) -> bool:
        """Whether ``a`` and ``b`` differ only in what the terms cut out (or white space)."""
        return a == b or self.clean(a) == self.clean(b)


@functools.lru_cache(maxsize=256)
def compile_ignore(terms: tuple[str, ...]) -> Ignore | None:
    """The terms of one ``ignore_text`` compiled once (a config holds few distinct
    lists); None for none. The config loader has checked each term."""
    if not terms:
        return None
    return Ignore(terms=terms, patterns=tuple(compile_search(t) for t in terms))
