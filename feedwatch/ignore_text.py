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

A term cuts what a case-insensitive rule's term written the same way hits: it searches
the text as rules read it (``match.locate``: NFKC, invisible characters dropped,
typographic apostrophes and hyphens as typed ones, no variation selector, case-folded
for a plain term), and what is cut is the feed's characters each hit was read from, so
"O'Brien" cuts "O’Brien" and "COVID-19" a "COVID‑19" with a non-breaking hyphen, and
the rest is compared as the feed wrote it.

A ``/regex/`` that runs out of time on a text (0.1 s), or of the poll's regex time (1 s
over all its comparisons, as for rules), leaves that text as it is: the two texts are
then compared whole. Logged once per term, or once per poll.
"""

from __future__ import annotations

import functools
import time
import unicodedata
from dataclasses import dataclass, field, replace

import structlog

from feedwatch.match import (
    POLL_REGEX_BUDGET,
    REGEX_TIMEOUT,
    Located,
    Search,
    compile_search,
    locate,
)

__all__ = ["Ignore", "compile_ignore", "validate"]

log = structlog.get_logger("feedwatch.ignore_text")


def validate(term: str) -> None:
    """Raise ValueError naming what is wrong with ``term`` (a rule term's checks, the
    empty term's included); the config loader and preview call this."""
    compile_search(term)


@dataclass
class _PollBudget:
    """The regex time one poll's comparisons may spend (``POLL_REGEX_BUDGET``, as for
    rules): the diff runs on the daemon's event loop, where 0.1 s a text added up over
    the fields and entries of a big update to a minute without a poll of another feed."""

    feed: str
    left: float = POLL_REGEX_BUDGET
    warned: bool = False


@dataclass(frozen=True, eq=False)
class Ignore:
    terms: tuple[str, ...]
    searches: tuple[Search, ...]  # one per term
    _timed_out: set[str] = field(default_factory=set)
    budget: _PollBudget | None = None

    def for_poll(self, feed: str) -> Ignore:
        """These terms with a poll's own budget of regex time (``_PollBudget``)."""
        return replace(self, budget=_PollBudget(feed))

    def clean(self, text: str) -> str:
        """``text`` with every hit of every term cut out, white space folded (NFC, as
        fingerprints fold it)."""
        return self._clean(text)[0]

    def _clean(self, text: str) -> tuple[str, bool]:
        """(``clean``'s text, whether every term ran to its end)."""
        budget = self.budget
        limit = REGEX_TIMEOUT if budget is None else min(REGEX_TIMEOUT, budget.left)
        spent = 0.0  # searching: reading the text as terms do is not regex time
        whole = True
        read: dict[bool, Located] = {}  # the text as the terms read it, until one cuts
        for term, search in zip(self.terms, self.searches, strict=True):
            try:
                view = read.get(search.case_sensitive)
                if view is None:
                    view = read[search.case_sensitive] = locate(text, search.case_sensitive)
                if limit - spent <= 0:
                    raise TimeoutError
                started = time.monotonic()
                try:
                    spans = search.spans(view, timeout=limit - spent)
                finally:
                    spent += time.monotonic() - started
                if spans:
                    text = _cut(text, spans)
                    read.clear()
            except TimeoutError:
                whole = False
                if budget is not None and budget.left - spent <= 0:
                    if not budget.warned:
                        budget.warned = True
                        log.warning(
                            "ignore_text.budget_spent",
                            feed=budget.feed,
                            term=term,
                            budget=POLL_REGEX_BUDGET,
                            hint="the poll's texts are compared whole: simplify the term",
                        )
                elif term not in self._timed_out:
                    self._timed_out.add(term)
                    log.warning("ignore_text.timeout", term=term, timeout=REGEX_TIMEOUT)
        if budget is not None:
            budget.left -= spent
        return unicodedata.normalize("NFC", " ".join(text.split())), whole

    def found(self, *texts: str, limit: int = 6) -> list[str]:
        """The text the terms cut from ``texts`` (each hit once, at most ``limit``): what
        ``feedwatch preview --ignore-text`` shows."""
        out: list[str] = []
        for search in self.searches:
            for text in texts:
                try:
                    spans = search.spans(locate(text, search.case_sensitive), REGEX_TIMEOUT)
                    for start, end in spans:
                        hit = " ".join(text[start:end].split())
                        if hit and hit not in out:
                            out.append(hit)
                        if len(out) >= limit:
                            return out
                except TimeoutError:
                    continue
        return out

    def same(self, a: str, b: str) -> bool:
        """Whether ``a`` and ``b`` differ only in what the terms cut out (or white space).
        Where a term ran out of time on either, the two are compared whole: cut on one
        side only, they would differ in what was cut."""
        if a == b:
            return True
        ca, whole_a = self._clean(a)
        cb, whole_b = self._clean(b) if whole_a else (b, False)
        if whole_a and whole_b:
            return ca == cb
        return " ".join(a.split()) == " ".join(b.split())


@functools.lru_cache(maxsize=256)
def compile_ignore(terms: tuple[str, ...]) -> Ignore | None:
    """The terms of one ``ignore_text`` compiled once (a config holds few distinct
    lists); None for none. The config loader has checked each term."""
    if not terms:
        return None
    return Ignore(terms=terms, searches=tuple(compile_search(t) for t in terms))


def _cut(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each span (in order; they may overlap where two hits were read
    from one character) a space."""
    out: list[str] = []
    at = 0
    for start, end in spans:
        out.append(text[at:start])
        out.append(" ")
        at = max(at, end)
    out.append(text[at:])
    return "".join(out)
