"""Keyword rules: which rules, and which of their terms, hit an entry (SPEC section 3).

Pure: rules are compiled once per config load (:func:`compile_rules`) and then
evaluated against entry snapshots (:func:`evaluate`, :func:`explain`). The only
side effects are warnings: once per (rule, term) when a ``/regex/`` runs out of time
on a field, once per poll when the poll's regex time (:class:`RegexBudget`) is spent.

Text and plain terms go through the same normalisation (:func:`normalize_text`:
without the characters no reader sees, as change detection reads them
(``text.visible_text``), NFKC, typographic apostrophes and hyphens as typed ones, no
emoji variation selector, then case folding unless the rule is ``case_sensitive``),
so "Dni&lrm;pro", full-width letters, ligatures, "O’Brien" and "İZMİR" hit their plain
forms while accents stay significant. ``/regex/`` terms search the same text, not
case-folded (their flags make them case-insensitive), their own typographic
characters read as typed ones.
Each field of an entry is normalised once per case mode, however many
rules look at it, and the plain terms of a rule group are tried as one combined
pattern first: most entries hit nothing, and one search per rule is what makes that
cheap.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import structlog

from feedwatch.model import RULE_FIELDS, EntrySnapshot, Rule, RuleMatch
from feedwatch.text import HIDDEN, hidden_spans, visible_text

__all__ = [
    "REGEX_TIMEOUT",
    "POLL_REGEX_BUDGET",
    "CompiledRule",
    "Located",
    "RegexBudget",
    "RuleExplanation",
    "TermExplanation",
    "compile_rule",
    "compile_rules",
    "Search",
    "compile_search",
    "evaluate",
    "explain",
    "locate",
    "normalize_text",
    "validate_term",
]

log = structlog.get_logger("feedwatch.match")

REGEX_TIMEOUT = 0.1
"""Seconds a ``/regex/`` term may spend on one field of one entry; past it, it misses."""

POLL_REGEX_BUDGET = 1.0
"""Seconds all ``/regex/`` terms together may spend on one poll's entries (``RegexBudget``)."""

TermGroup = Literal["any", "all", "not"]

# Scripts written without spaces between words: there a term hits as a substring,
# so their letters never count as "word characters" for a boundary.
_SPACELESS = "".join(
    rf"\p{{scx={s}}}" for s in ("Han", "Hiragana", "Katakana", "Thai", "Lao", "Khmer", "Myanmar")
)
_WORD = rf"[^\W{_SPACELESS}]"
_BEFORE = rf"(?<!{_WORD})"
_AFTER = rf"(?!{_WORD})"
# A flag is two regional indicators (U+1F1E6..U+1F1FF, the letters of its country
# code), and a run of them is read in pairs: "🇺🇦🇺🇸" is Ukraine and the USA, not an
# Australia "🇦🇺" in the middle. Where a plain term starts or ends with one, it hits
# at a flag's boundary only: after an even number of them in their run (a lone one
# last, too: the end of a run of odd length).
_RI = "[\U0001f1e6-\U0001f1ff]"
_PAIRED = rf"(?<=(?<!{_RI})(?:{_RI}{_RI})*)"  # after a whole number of flags in the run
_FLAG_START = rf"(?<=(?<!{_RI})(?:{_RI}{_RI})*{_RI})"  # after the first of a pair's two
_FLAG_END = rf"(?:{_PAIRED}|(?!{_RI}))"
# Joins the segments (fields, tags) searched at once. Plain terms never contain
# it (control characters are refused), so no plain term can span two segments.
_SEP = "\x00"
_KEY_LEN = 6


@functools.cache
def _regex() -> Any:
    """The regex engine (~14 ms to import), at the first term compiled: a config without
    rules, and a check or daemon polling feeds without them, never import it."""
    import regex

    return regex


@functools.cache
def _is_word() -> Any:
    return _regex().compile(_WORD)


@functools.cache
def _quant() -> Any:
    return _regex().compile(r"\{(\d*)(,?)(\d*)\}")


# Characters plain terms, and the text they search, read as the one a user types, as
# no reader tells them apart: the apostrophes a word processor (WordPress: every ')
# writes for ' ("O’Brien", "l’Ukraine"), the hyphens for - ("COVID‑19": non-breaking,
# which NFKC makes U+2010), and no variation selector (❤️ is ❤ drawn as an emoji). Not
# a prime (′), an en or em dash or a minus sign: other signs than an apostrophe or a hyphen.
_TYPED = {
    "\u2018": "'",  # left single quotation mark, turned the wrong way for an apostrophe
    "\u2019": "'",  # right single quotation mark: the typographic apostrophe
    "\u02bc": "'",  # modifier letter apostrophe
    "\u2010": "-",  # hyphen
    "\u2011": "-",  # non-breaking hyphen
    "\u2012": "-",  # figure dash (a hyphen between digits: 555‒0199)
    "\ufe0e": "",  # variation selectors: text or emoji presentation
    "\ufe0f": "",
}
_ANY_TYPED = re.compile("[" + "".join(_TYPED) + "]")


def _typed(m: re.Match[str]) -> str:
    return _TYPED[m[0]]


def _as_written(text: str) -> str:
    """What a reader sees of ``text`` (``text.visible_text``: a word may hold a soft
    hyphen, "Hyper&shy;schall&shy;rakete", or a direction mark, "Dni&lrm;pro", where a
    reader sees one word; looked for first, then dropped), NFKC."""
    return unicodedata.normalize("NFKC", visible_text(text))


def _as_typed(text: str) -> str:
    """``_as_written`` text with ``_TYPED``'s characters as typed: what ``/regex/``
    terms and the plain terms of a ``case_sensitive`` rule search, and what the others
    fold."""
    # (a search that finds none is ten times faster than str.translate)
    return text if text.isascii() else _ANY_TYPED.sub(_typed, text)


def _fold_case(text: str) -> str:
    """``_as_typed`` text case-folded, re-normalised. A capital dotted İ folds to a
    plain i: ``casefold()`` makes it an i and a combining dot above (U+0307), which
    "İzmir" and "IZMIR" (folded to "izmir") would then not share, so a dot above
    right after an i is dropped. The dotless ı stays a letter of its own."""
    text = text.casefold()
    if "\u0307" in text:
        text = text.replace("i\u0307", "i")
    return unicodedata.normalize("NFKC", text)


def normalize_text(text: str, case_sensitive: bool = False) -> str:
    """``text`` as plain terms meet it, and as they are written themselves: without the
    characters no reader sees (``text.visible_text``), NFKC, typographic apostrophes and
    hyphens as typed ones and no variation selector (``_TYPED``), then (unless
    ``case_sensitive``) case folding, İ as i. For matching only: stored, compared and
    alerted text is as the feed wrote it."""
    return _read(visible_text(text), case_sensitive)


def _read(text: str, case_sensitive: bool) -> str:
    """``normalize_text`` of a text that holds nothing ``visible_text`` drops (a joiner
    it keeps, read as it is: whether one is seen depends on what is around it)."""
    text = _as_typed(unicodedata.normalize("NFKC", text))
    return text if case_sensitive else _fold_case(text)


# Characters read with the one before them (``locate``, in text ``visible_text`` gave):
# marks (accents, variation selectors), and what NFKC makes (or keeps) a Hangul vowel or
# final, which composes with the letters before it, or a combining kana mark (halfwidth
# ﾞ and ﾟ). Before any other character, normalising the text so far and the rest apart
# is normalising it whole.
_JOINS = (
    r"\p{M}\u1160-\u11ff\ud7b0-\ud7ff\u3133\u3135\u3136"
    r"\u313a-\u313f\u314f-\u3163\uff9e\uff9f\uffa3\uffa5\uffa6\uffaa-\uffaf\uffc2-\uffdc"
)
# What normalisation drops wherever it is in text a reader sees: the variation selectors.
_DROPPED = re.compile("[\ufe0e\ufe0f]+")
_OTHER = "\uffff"  # in ``_OneForOne``'s reading: a character not read as one on its own
_OTHERS = re.compile(f"{_OTHER}+")


@functools.cache
def _joins() -> Any:
    return _regex().compile(f"[{_JOINS}]")


class _Joins(dict[str, bool]):
    """Whether a character is read with the one before it (``_JOINS``), filled as
    characters come."""

    def __missing__(self, ch: str) -> bool:
        joins = self[ch] = _joins().match(ch) is not None
        return joins


_JOINING = _Joins()


class _OneForOne(dict[int, str]):
    """A ``str.translate`` table, filled as characters come: each character as plain
    terms read it (``_read``) where that is one character read on its own,
    else ``_OTHER`` (it is read with those around it, ``locate``)."""

    def __init__(self, case_sensitive: bool) -> None:
        super().__init__()
        self.case_sensitive = case_sensitive

    def __missing__(self, key: int) -> str:
        ch = chr(key)
        read = _read(ch, self.case_sensitive)
        if len(read) != 1 or ch == _OTHER or _JOINING[ch]:
            read = _OTHER
        self[key] = read
        return read


_ONE_FOR_ONE = {cs: _OneForOne(cs) for cs in (False, True)}


class Located(NamedTuple):
    """Text as terms read it (``normalize_text``), located in the text it was read
    from (``locate``): in pieces, each read one for one or, a character and those read
    with it, as a whole."""

    text: str
    at: list[int]  # where each piece starts in ``text``, in order
    pieces: list[tuple[int, int, bool]]  # its characters in the raw text; one for one?
    size: int  # the length of the raw text

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The characters ``text[start:end]`` was read from, whole: a hit of "ss" in
        "Straße" read as "strasse" is of "ße". An empty one: where it is."""
        if start >= len(self.text):
            return self.size, self.size
        first = self._raw(start)[0]
        return (first, first) if start >= end else (first, self._raw(end - 1)[1])

    def _raw(self, i: int) -> tuple[int, int]:
        """The raw characters ``text[i]`` was read from."""
        k = bisect.bisect_right(self.at, i) - 1
        begin, stop, one = self.pieces[k]
        if not one:
            return begin, stop
        raw = begin + i - self.at[k]
        return raw, raw + 1


def locate(text: str, case_sensitive: bool = False) -> Located:
    """``normalize_text(text, case_sensitive)``, located in ``text``: what cuts the
    hits of ``ignore_text`` out of the text as the feed wrote it. ASCII text is read one
    for one, and so is text that is NFKC already, with nothing that folds to more, but
    for what is dropped (Cyrillic, CJK, "O’Brien", "COVID‑19", "❤️", a soft hyphen: most
    text); other text a character at a time where one reads as none or several
    (``_OneForOne``), with those read with it (``_JOINS``). What no reader sees
    (``text.visible_text``) is read with the character before it."""
    n = len(text)
    if text.isascii():
        return Located(text if case_sensitive else text.lower(), [0], [(0, n, True)], n)
    hidden = hidden_spans(text)
    if hidden:
        return _through(_seen_located(visible_text(text), case_sensitive), hidden, n)
    return _seen_located(text, case_sensitive)


def _seen_located(text: str, case_sensitive: bool) -> Located:
    """``locate`` for text that holds nothing ``visible_text`` drops."""
    n = len(text)
    read = _as_typed(_DROPPED.sub("", text))  # (NFKC makes a ‑ a ‐, both a typed -)
    if "\u0307" in read or not unicodedata.is_normalized("NFKC", read):
        return _located(text, case_sensitive)
    if not case_sensitive:
        folded = read.casefold()  # never shorter: the same length is one for one
        if len(folded) != len(read) or not unicodedata.is_normalized("NFKC", folded):
            return _located(text, case_sensitive)
        read = folded
    pieces = _Pieces()
    last = 0
    for m in _DROPPED.finditer(text):  # dropped: read with the character before it
        if m.start() > 0:
            pieces.one_for_one(last, m.start() - 1)
            pieces.whole(m.start() - 1, m.end(), 1)
        last = m.end()
    pieces.one_for_one(last, n)
    return Located(read, pieces.at, pieces.pieces, n)


def _through(seen: Located, hidden: list[tuple[int, int]], n: int) -> Located:
    """``seen``, located in the text ``visible_text`` gave, located in the text of ``n``
    characters it was given, from which it dropped ``hidden`` (``hidden_spans``): each
    span read with the character before it (at the start, with none)."""
    at: list[int] = []  # where each dropped span was, in the text seen
    gone: list[int] = []  # how many characters were dropped up to its end
    total = 0
    for start, end in hidden:
        at.append(start - total)
        total += end - start
        gone.append(total)

    def raw(i: int) -> int:
        """Where the character ``i`` of the text seen is in the text given (``i`` its
        length: the end of that text)."""
        k = bisect.bisect_right(at, i)
        return i + (gone[k - 1] if k else 0)

    pieces = _Pieces()
    ends = [*seen.at[1:], len(seen.text)] if seen.at else []
    for (begin, stop, one), first, end in zip(seen.pieces, seen.at, ends, strict=True):
        if not one:  # with the spans dropped after it
            pieces.whole(raw(begin), raw(stop), end - first)
            continue
        i = begin
        k = bisect.bisect_right(at, begin)  # a span at its start is the piece's before
        while k < len(at) and at[k] <= stop:
            q = at[k]  # dropped after the character q - 1: read with it
            pieces.one_for_one(raw(i), raw(q - 1))
            pieces.whole(raw(q - 1), raw(q), 1)
            i = q
            k += 1
        pieces.one_for_one(raw(i), raw(i) + stop - i)
    return Located(seen.text, pieces.at, pieces.pieces, n)


class _Pieces:
    """``Located``'s pieces, as they come."""

    def __init__(self) -> None:
        self.at: list[int] = []
        self.pieces: list[tuple[int, int, bool]] = []
        self.size = 0  # of the text read so far

    def one_for_one(self, begin: int, stop: int) -> None:
        if stop > begin:
            self.at.append(self.size)
            self.pieces.append((begin, stop, True))
            self.size += stop - begin

    def whole(self, begin: int, stop: int, size: int) -> None:
        if size:
            self.at.append(self.size)
            self.pieces.append((begin, stop, False))
            self.size += size


def _located(text: str, case_sensitive: bool) -> Located:
    """``locate`` for text some of whose characters read as none or several: those
    (``_OneForOne``), each with the characters read with it, are read one cluster at
    a time; the rest, one for one, as they are."""
    marked = text.translate(_ONE_FOR_ONE[case_sensitive])  # _OTHER where not one for one
    parts: list[str] = []
    pieces = _Pieces()
    last = 0
    for run in _OTHERS.finditer(marked):
        begin, stop = run.span()
        if begin > last and _JOINING[text[begin]]:  # a mark: with the letter before it
            begin -= 1
        parts.append(marked[last:begin])
        pieces.one_for_one(last, begin)
        i = begin
        while i < stop:  # a character and those read with it
            j = i + 1
            while j < stop and _JOINING[text[j]]:
                j += 1
            part = _read_cluster(text[i:j], case_sensitive)
            parts.append(part)
            pieces.whole(i, j, len(part))
            i = j
        last = stop
    parts.append(marked[last:])
    pieces.one_for_one(last, len(text))
    return Located("".join(parts), pieces.at, pieces.pieces, len(text))


@functools.lru_cache(maxsize=4096)
def _read_cluster(cluster: str, case_sensitive: bool) -> str:
    return _read(cluster, case_sensitive)


# --------------------------------------------------------------------------
# Terms
# --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Term:
    text: str  # as written in the config
    is_regex: bool
    pattern: Any  # regex.Pattern[str]; plain terms run on normalised text
    source: str = ""  # plain terms: the pattern source, for combining
    left: bool = False  # plain terms: needs a word boundary before
    right: bool = False  # ... and after
    key: str = ""  # plain terms: the normalised text a hit must start with (a short prefix)


def _is_indicator(ch: str) -> bool:
    """A regional indicator: half a flag."""
    return "\U0001f1e6" <= ch <= "\U0001f1ff"


def is_regex_term(term: str) -> bool:
    """A ``/regex/`` term (else a plain one): the config's rule, which ``preview --keywords``
    splitting follows too. White space around it is not part of it (``"/ICBM/ "``), as it
    is not of a plain term."""
    term = term.strip()
    return len(term) >= 2 and term.startswith("/") and term.endswith("/")


def _compile_term(term: str, case_sensitive: bool) -> _Term:
    if not isinstance(term, str):
        raise ValueError(f"term {term!r} must be a string")
    if not term.strip():
        raise ValueError("empty term: a term needs at least one non-space character")
    if is_regex_term(term):
        return _compile_regex_term(term, case_sensitive)
    for ch in term:
        if unicodedata.category(ch) == "Cc" and not ch.isspace():
            raise ValueError(f"term {term!r} contains a control character (U+{ord(ch):04X})")
    norm = normalize_text(term, case_sensitive).strip()
    if not norm:  # only what text loses too: a soft hyphen, a zero-width space, a BOM
        raise ValueError(
            f"term {term!r} holds only invisible characters (text is read without them):"
            " it could never hit"
        )
    prefix = False
    star = norm.find("*")
    if star != -1:
        if star != len(norm) - 1:
            raise ValueError(
                f"term {term!r}: '*' is only allowed at the end of a term (a prefix, as in 'missile*')"
            )
        norm = norm[:-1]
        prefix = True
        if not norm.strip():
            raise ValueError(f"term {term!r}: a prefix term needs text before the '*'")
        if norm[-1].isspace():
            raise ValueError(
                f"term {term!r}: the '*' of a prefix term must follow a character, not a space"
            )
    rx = _regex()
    body = r"\s+".join(rx.escape(word) for word in norm.split())
    if _is_indicator(norm[0]):  # (checked after it: a flag's first letter is rare text)
        first = rx.escape(norm[0])
        body = first + _FLAG_START + body[len(first) :]
    if not prefix and _is_indicator(norm[-1]):
        body += _FLAG_END
    left = _is_word().match(norm[0]) is not None
    right = not prefix and _is_word().match(norm[-1]) is not None
    source = (_BEFORE if left else "") + body + (_AFTER if right else "")
    return _Term(
        text=term,
        is_regex=False,
        pattern=rx.compile(source, rx.V0),
        source=body,
        left=left,
        right=right,
        key=norm.split()[0][:_KEY_LEN],
    )


def _compile_regex_term(term: str, case_sensitive: bool) -> _Term:
    body = term.strip()[1:-1]
    if not body:
        raise ValueError(f"term {term!r}: empty regular expression")
    rx = _regex()
    flags = rx.V0 if case_sensitive else rx.V0 | rx.IGNORECASE | rx.FULLCASE
    try:
        pattern = rx.compile(body, flags)
    except rx.error as exc:
        pos = getattr(exc, "pos", None)
        where = f" at position {pos} of the pattern" if pos is not None else ""
        raise ValueError(
            f"term {term!r}: invalid regular expression: {getattr(exc, 'msg', exc)}{where}"
        ) from None
    problem = _pathology(body)
    if problem:
        raise ValueError(
            f"term {term!r}: regular expression could take exponential time ({problem}); "
            "simplify it"
        )
    typed = _typed_pattern(body)
    if typed != body:
        try:
            as_typed = rx.compile(typed, flags)
        except rx.error:  # (a set's bracket inside a comment): the pattern as written
            as_typed = pattern
        if as_typed.search("") is not None and pattern.search("") is None:
            raise ValueError(
                f"term {term!r}: a variation selector or an invisible character is read as"
                " nothing (text is read without them), so this regular expression would hit"
                " every text"
            )
        pattern = as_typed
    return _Term(text=term, is_regex=True, pattern=pattern)


def _typed_pattern(body: str) -> str:
    """A ``/regex/``'s pattern reading its own characters as the text it searches has
    them (``normalize_text``, case kept: NFKC, typographic apostrophes and hyphens as
    typed, no variation selector or invisible character), so that ``/O’Brien/`` still
    hits what ``/O'Brien/`` now does, and a full-width ``/阅读：\\d+/`` copied from a feed
    the NFKC text's "阅读:100": outside a set each is read so (as a group where that is
    several characters or none, which a quantifier may follow); a set that holds one
    holds what it is read as too (``[‘’]`` hits "'"; ``[^’]`` misses it; ``[０-９]``
    hits "0" to "9", each character of a range read)."""
    if body.isascii() or all(c.isascii() or _reading(c) == c for c in body):
        return body
    out: list[str] = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c == "\\" and i + 1 < n:
            nxt = body[i + 1]
            out.append(_read_literal(nxt) if _reading(nxt) != nxt else body[i : i + 2])
            i += 2
        elif c == "[":
            end = _set_end(body, i)
            if end is None:  # not a set the engine reads: left as it is
                out.append(body[i:])
                break
            whole = body[i : end + 1]
            reads = {_reading(ch) for ch in _set_members(whole)} - {""}
            singles = sorted(r for r in reads if len(r) == 1)
            also = "|".join(
                (["[" + "".join(re.escape(r) for r in singles) + "]"] if singles else [])
                + [re.escape(r) for r in sorted(reads - set(singles), key=len, reverse=True)]
            )
            if also:
                negated = body[i + 1 : i + 2] == "^"
                # an atomic group never tries the other again (of the same characters)
                whole = f"(?:(?!{also}){whole})" if negated else f"(?>{whole}|{also})"
            out.append(whole)
            i = end + 1
        else:
            out.append(_read_literal(c) if _reading(c) != c else c)
            i += 1
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _reading(c: str) -> str:
    """A character of a pattern as the text it searches has it (ASCII: itself). One no
    reader sees (``text.HIDDEN``) is nothing; a joiner is itself, as the text keeps it
    where it joins what a reader sees (an emoji sequence: a pattern cannot tell)."""
    if c.isascii():
        return c
    return "" if c in HIDDEN else _read(c, case_sensitive=True)


def _read_literal(c: str) -> str:
    read = _reading(c)
    return re.escape(read) if len(read) == 1 else f"(?:{re.escape(read)})"


_RANGE_LIMIT = 1 << 16  # a wider range is taken as its two ends (at a config's load)


def _set_members(whole: str) -> Iterator[str]:
    """The characters beyond ASCII a set (``[...]``, as ``_set_end`` found it) names:
    its own, escaped or not, and each of a range (up to ``_RANGE_LIMIT`` of them; a
    wider one, its ends). Classes (``\\d``, ``[:alpha:]``) and ASCII name none."""
    i = 2 if whole.startswith("[^") else 1
    last = len(whole) - 1
    items: list[tuple[str | None, bool]] = []  # (a character or None: a class; unescaped?)
    while i < last:
        c = whole[i]
        if c == "\\":
            nxt = whole[i + 1 : i + 2]
            items.append((None if nxt.isascii() and nxt.isalnum() else nxt, False))
            i += 2
        elif c == "[" and whole[i + 1 : i + 2] == ":" and whole.find(":]", i + 2) != -1:
            items.append((None, False))
            i = whole.find(":]", i + 2) + 2
        else:
            items.append((c, True))
            i += 1
    k = 0
    while k < len(items):
        lo = items[k][0]
        if k + 2 < len(items) and items[k + 1] == ("-", True) and lo and items[k + 2][0]:
            hi = items[k + 2][0]
            assert hi is not None
            if 0 < ord(hi) - ord(lo) <= _RANGE_LIMIT:
                yield from (chr(o) for o in range(max(ord(lo), 128), ord(hi) + 1))
            else:
                yield from (ch for ch in (lo, hi) if not ch.isascii())
            k += 3
            continue
        if lo and not lo.isascii():
            yield lo
        k += 1


def _set_end(body: str, start: int) -> int | None:
    """The index of the ``]`` that closes the set opened at ``body[start]`` (V0: a ``]``
    first in it is one of its characters; ``[:alpha:]`` is a class in it), or None."""
    i = start + 1
    if body[i : i + 1] == "^":
        i += 1
    if body[i : i + 1] == "]":
        i += 1
    while i < len(body):
        c = body[i]
        if c == "\\":
            i += 2
        elif c == "[" and body[i + 1 : i + 2] == ":":
            close = body.find(":]", i + 2)
            i = i + 1 if close == -1 else close + 2
        elif c == "]":
            return i
        else:
            i += 1
    return None


def validate_term(term: str, case_sensitive: bool = False) -> None:
    """Raise ValueError naming what is wrong with ``term``; the config loader calls this."""
    _compile_term(term, case_sensitive)


@dataclass(frozen=True, eq=False)
class Search:
    """A term that finds, in text as the feed wrote it, what a case-insensitive rule's
    term written the same way hits (``compile_search``)."""

    pattern: Any  # regex.Pattern[str]
    # the text it searches (``locate``): a /regex/ the text as typed (its flags make it
    # case-insensitive), a plain term the text case-folded too, as rules' terms do
    case_sensitive: bool

    def spans(self, text: Located, timeout: float | None = None) -> list[tuple[int, int]]:
        """Where it hits ``text`` (``locate(raw, self.case_sensitive)``): the spans of
        the raw text each hit was read from, in order. TimeoutError past ``timeout``."""
        found: list[tuple[int, int]] = []

        def add(m: Any) -> str:
            found.append(text.span(*m.span()))
            return ""

        # one call for the whole text, as the timeout is
        self.pattern.sub(add, text.text, timeout=timeout)
        return found


def compile_search(term: str) -> Search:
    """``term`` (the syntax of a rule's terms, checked as theirs are) as it finds what a
    case-insensitive rule's term written the same way hits: what a feed's
    ``ignore_text`` removes (feedwatch.ignore_text). Raises ValueError as
    ``validate_term`` does."""
    t = _compile_term(term, case_sensitive=False)
    if t.is_regex:
        return Search(t.pattern, case_sensitive=True)
    rx = _regex()
    source = t.pattern.pattern
    if term.rstrip().endswith("*"):
        source += f"{_WORD}*"  # a prefix: the rest of the word it starts, too
    return Search(rx.compile(source, rx.V0), case_sensitive=False)


@dataclass
class _Frame:
    content: int  # index where the group's content starts
    atomic: bool = False  # atomic group or lookaround: no backtracking into it
    inner_unbounded: bool = False  # holds an unbounded quantifier (at any depth)
    repeats: float = 1  # the most times a group inside it that holds one is repeated
    bars: list[int] = field(default_factory=list)  # top-level '|' positions


class _Quant(NamedTuple):
    most: float  # the most times it repeats what it follows (inf: no limit)
    possessive: bool
    end: int  # index just after it

    @property
    def unbounded(self) -> bool:
        return self.most == math.inf


def _quantifier(src: str, i: int) -> _Quant | None:
    """The quantifier at ``src[i]``, or None."""
    if i >= len(src):
        return None
    c = src[i]
    most: float
    if c in "*+":
        most, j = math.inf, i + 1
    elif c == "?":
        most, j = 1, i + 1
    elif c == "{":
        m = _quant().match(src, i)
        if not m or not (m.group(1) or m.group(3)):
            return None
        if m.group(3):
            most = int(m.group(3))
        else:
            most = math.inf if m.group(2) else int(m.group(1))
        j = m.end()
    else:
        return None
    possessive = False
    if j < len(src) and src[j] == "?":
        j += 1
    elif j < len(src) and src[j] == "+":
        possessive, j = True, j + 1
    return _Quant(most, possessive, j)


def _skip_class(src: str, i: int) -> int:
    """Index just past the character class opening at ``src[i]`` (``[``)."""
    n = len(src)
    i += 1
    if i < n and src[i] == "^":
        i += 1
    if i < n and src[i] == "]":
        i += 1
    depth = 1
    while i < n and depth:
        c = src[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        i += 1
    return i


def _pathology(src: str) -> str | None:
    r"""A cheap, conservative look for exponential backtracking.

    Flags a group that holds an unbounded quantifier and is itself repeated without
    limit (``(a+)+``, ``(.*)*``, counting the repeats of groups around it), and a
    group under an unbounded quantifier that repeats an alternative (``(a|a)*``).
    Not a bounded repeat of such a group (``(.*,){15}``, slow, but also the common
    proximity idiom ``(?:\w+\W+){1,6}``, which is not): the poll's regex time
    (``RegexBudget``) bounds what this lets through."""
    n = len(src)
    stack = [_Frame(content=0)]
    i = 0
    while i < n:
        c = src[i]
        if c == "\\":
            if i + 2 < n and src[i + 1] in "pPNxuUg" and src[i + 2] in "{<":
                close = src.find("}" if src[i + 2] == "{" else ">", i + 2)
                i = n if close == -1 else close + 1
            else:
                i += 2
        elif c == "[":
            i = _skip_class(src, i)
        elif c == "(":
            atomic, content = False, i + 1
            if src.startswith("(?#", i):
                close = src.find(")", i)
                i = n if close == -1 else close + 1
                continue
            if src.startswith("(?", i):
                rest = src[i + 2 : i + 4]
                if rest[:1] in ("=", "!", ">") or rest in ("<=", "<!"):
                    atomic, content = True, i + 3 + (rest[:1] == "<")
                elif rest[:1] in ("<", "P", "'"):
                    close = src.find(">" if rest[:1] != "'" else "'", i + 3)
                    content = n if close == -1 else close + 1
                else:  # inline flags: (?i) or (?i:...)
                    j = i + 2
                    while j < n and src[j] not in ":)":
                        j += 1
                    if j < n and src[j] == ")":
                        i = j + 1
                        continue
                    content = j + 1
            stack.append(_Frame(content=content, atomic=atomic))
            i = content
        elif c == ")" and len(stack) > 1:
            frame = stack.pop()
            q = _quantifier(src, i + 1)
            if not frame.atomic and not (q and q.possessive):
                # times it repeats, counting the repeated groups inside it
                repeats = (q.most if q else 1) * frame.repeats
                if q and frame.inner_unbounded and repeats == math.inf:
                    return "a repeated group that holds a repeat, like (a+)+"
                if frame.inner_unbounded:
                    stack[-1].repeats = max(stack[-1].repeats, repeats)
                if q and q.unbounded:
                    edges = [frame.content - 1, *frame.bars, i]
                    alts = [src[a + 1 : b] for a, b in zip(edges, edges[1:], strict=False)]
                    alts = [a for a in alts if a]
                    if len(set(alts)) < len(alts):
                        return "a repeated group with the same alternative twice, like (a|a)*"
            stack[-1].inner_unbounded |= frame.inner_unbounded or bool(
                q and q.unbounded and not q.possessive
            )
            i = q.end if q else i + 1
        elif c == "|":
            stack[-1].bars.append(i)
            i += 1
        else:
            q = _quantifier(src, i)
            if q:
                if q.unbounded and not q.possessive:
                    stack[-1].inner_unbounded = True
                i = q.end
            else:
                i += 1
    return None


# --------------------------------------------------------------------------
# Compiled rules
# --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Group:
    terms: tuple[_Term, ...]
    combined: Any  # regex.Pattern[str] | None: every plain term of the group at once
    regexes: tuple[_Term, ...]
    # Plain terms by the length, then the text, of their key: where the combined
    # pattern hits, these name the few terms worth trying one by one.
    index: dict[int, dict[str, list[_Term]]]


def _combine(terms: Sequence[_Term]) -> Any:
    plain = [t for t in terms if not t.is_regex]
    if not plain:
        return None
    # Terms that share their boundaries share one alternation.
    parts: dict[tuple[bool, bool], list[str]] = {}
    for t in plain:
        bucket = parts.setdefault((t.left, t.right), [])
        if t.source not in bucket:
            bucket.append(t.source)
    alts = [
        (_BEFORE if left else "") + "(?:" + "|".join(bodies) + ")" + (_AFTER if right else "")
        for (left, right), bodies in parts.items()
    ]
    rx = _regex()
    return rx.compile("|".join(alts), rx.V0)


def _group(terms: tuple[_Term, ...]) -> _Group:
    index: dict[int, dict[str, list[_Term]]] = {}
    for t in terms:
        if not t.is_regex:
            index.setdefault(len(t.key), {}).setdefault(t.key, []).append(t)
    return _Group(terms, _combine(terms), tuple(t for t in terms if t.is_regex), index)


@dataclass(frozen=True, eq=False)
class CompiledRule:
    """A :class:`Rule` with every term compiled; build with :func:`compile_rule`."""

    rule: Rule
    any: _Group
    all: _Group
    not_: _Group
    # (term) already reported as timing out: logged once per config load.
    _timed_out: set[str] = field(default_factory=set, repr=False)

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def fields(self) -> tuple[str, ...]:
        return self.rule.fields

    @property
    def case_sensitive(self) -> bool:
        return self.rule.case_sensitive


def compile_rule(rule: Rule) -> CompiledRule:
    """Compile every term of ``rule``; ValueError names the rule, group and term at fault."""
    for f in rule.fields:
        if f not in RULE_FIELDS:
            raise ValueError(
                f"rule {rule.name!r}: unknown field {f!r} (one of: {', '.join(RULE_FIELDS)})"
            )
    groups = []
    for label, terms in (("any", rule.any), ("all", rule.all), ("not", rule.not_)):
        compiled = []
        for term in terms:
            try:
                compiled.append(_compile_term(term, rule.case_sensitive))
            except ValueError as exc:
                raise ValueError(f"rule {rule.name!r}, {label}: {exc}") from None
        groups.append(_group(tuple(compiled)))
    return CompiledRule(rule, groups[0], groups[1], groups[2])


def compile_rules(rules: Iterable[Rule]) -> tuple[CompiledRule, ...]:
    return tuple(compile_rule(r) for r in rules)


# --------------------------------------------------------------------------
# Entry text, normalised lazily and once
# --------------------------------------------------------------------------


class _EntryText:
    """The normalised segments of one entry, computed on first use per (field, case
    mode); ``/regex/`` terms search them as case-sensitive rules' plain terms do."""

    __slots__ = ("_entry", "_fields", "_joined", "_segments")

    def __init__(self, entry: EntrySnapshot) -> None:
        self._entry = entry
        self._segments: dict[tuple[str, bool], tuple[str, ...]] = {}
        self._fields: dict[tuple[str, bool], str] = {}
        self._joined: dict[tuple[tuple[str, ...], bool], str] = {}

    def _raw(self, name: str) -> tuple[str, ...]:
        e = self._entry
        if name == "tags":
            return tuple(t for t in e.tags if t)
        value = getattr(e, name)
        return (value,) if value else ()

    def segments(self, name: str, case_sensitive: bool) -> tuple[str, ...]:
        """The field's segments as plain terms search them (``normalize_text``), each
        step made once from the one before."""
        key = (name, case_sensitive)
        segs = self._segments.get(key)
        if segs is None:
            if case_sensitive:
                segs = tuple(_as_typed(_as_written(s)) for s in self._raw(name))
            else:
                segs = tuple(_fold_case(s) for s in self.segments(name, True))
            self._segments[key] = segs
        return segs

    def field(self, name: str, case_sensitive: bool) -> str:
        key = (name, case_sensitive)
        text = self._fields.get(key)
        if text is None:
            text = self._fields[key] = _SEP.join(self.segments(name, case_sensitive))
        return text

    def joined(self, names: tuple[str, ...], case_sensitive: bool) -> str:
        key = (names, case_sensitive)
        text = self._joined.get(key)
        if text is None:
            text = self._joined[key] = _SEP.join(self.field(n, case_sensitive) for n in names)
        return text


class RegexBudget:
    """The ``/regex/`` time one poll may spend over all its entries (``POLL_REGEX_BUDGET``).

    Matching runs on the daemon's event loop, where ``REGEX_TIMEOUT`` alone adds up
    over fields, entries and terms to minutes without a poll of any other feed or a
    signal handled. Once spent, the poll's remaining regex terms miss without
    running, and one warning (per poll) names the feed and the rule."""

    def __init__(self, feed: str, seconds: float = POLL_REGEX_BUDGET) -> None:
        self.feed = feed
        self.seconds = seconds
        self.left = seconds
        self.warned = False

    def ran_out(self, rule: CompiledRule, term: _Term) -> None:
        if not self.warned:
            self.warned = True
            log.warning(
                "rule.regex_budget_spent",
                feed=self.feed,
                rule=rule.name,
                term=term.text,
                budget=self.seconds,
                hint="the poll's regex terms not yet tried count as missed: simplify the term",
            )


def _regex_in_field(
    rule: CompiledRule,
    term: _Term,
    view: _EntryText,
    name: str,
    budget: RegexBudget | None = None,
) -> bool | None:
    """Whether a regex term hits one field: True, False, or None when it ran out of time
    (``REGEX_TIMEOUT`` on this field, or what is left of the poll's ``budget``)."""
    limit = REGEX_TIMEOUT if budget is None else min(REGEX_TIMEOUT, budget.left)
    started = time.monotonic()
    deadline = started + limit
    found: bool | None = False
    # Regexes run on the text as typed (not case-folded): the pattern's own flags make
    # it case-insensitive.
    for seg in view.segments(name, True):
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            if term.pattern.search(seg, timeout=remaining) is not None:
                found = True
                break
        except TimeoutError:
            found = None
            break
    if budget is not None:
        budget.left -= time.monotonic() - started
    if found is None:
        if limit < REGEX_TIMEOUT:
            assert budget is not None
            budget.ran_out(rule, term)
        elif term.text not in rule._timed_out:
            rule._timed_out.add(term.text)
            log.warning(
                "rule.regex_timeout",
                rule=rule.name,
                term=term.text,
                field=name,
                timeout=REGEX_TIMEOUT,
            )
    return found


class _Ctx:
    """One rule against one entry: remembers each term's result so none runs twice."""

    __slots__ = ("_text", "budget", "memo", "rule", "view")

    def __init__(
        self, rule: CompiledRule, view: _EntryText, budget: RegexBudget | None = None
    ) -> None:
        self.rule = rule
        self.view = view
        self.budget = budget
        self.memo: dict[int, bool] = {}
        self._text: str | None = None

    def text(self) -> str:
        if self._text is None:
            self._text = self.view.joined(self.rule.fields, self.rule.case_sensitive)
        return self._text

    def hit(self, term: _Term) -> bool:
        key = id(term)
        found = self.memo.get(key)
        if found is None:
            if term.is_regex:
                found = any(
                    _regex_in_field(self.rule, term, self.view, f, self.budget)
                    for f in self.rule.fields
                )
            else:
                found = term.pattern.search(self.text()) is not None
            self.memo[key] = found
        return found

    def any_hit(self, group: _Group) -> bool:
        if group.combined is not None and group.combined.search(self.text()) is not None:
            return True
        return any(self.hit(t) for t in group.regexes)

    def hits(self, group: _Group) -> list[_Term]:
        """Every term of ``group`` that hits, in config order."""
        candidates: set[int] = set()
        if group.combined is not None:
            text = self.text()
            # Every place some plain term hits starts a match here (overlapped
            # finds them all); only terms whose key is there can hit.
            for start in {m.start() for m in group.combined.finditer(text, overlapped=True)}:
                for length, table in group.index.items():
                    for t in table.get(text[start : start + length], ()):
                        candidates.add(id(t))
        return [t for t in group.terms if (t.is_regex or id(t) in candidates) and self.hit(t)]


def _matched_terms(
    rule: CompiledRule, view: _EntryText, budget: RegexBudget | None
) -> tuple[str, ...] | None:
    """The terms that hit (any, then all, config order) when ``rule`` matches, else None."""
    ctx = _Ctx(rule, view, budget)
    if rule.any.terms and not ctx.any_hit(rule.any):
        return None
    if not all(ctx.hit(t) for t in rule.all.terms):
        return None
    if rule.not_.terms and ctx.any_hit(rule.not_):
        return None
    terms: list[str] = []
    for t in [*ctx.hits(rule.any), *rule.all.terms]:
        if t.text not in terms:
            terms.append(t.text)
    return tuple(terms)


def evaluate(
    rules: Sequence[CompiledRule], entry: EntrySnapshot, budget: RegexBudget | None = None
) -> tuple[bool, tuple[RuleMatch, ...]]:
    """Whether a feed with these rules alerts on ``entry``, and every rule that matched.

    No rules at all means every entry alerts (with no rule listed). ``budget``: the
    regex time left to the poll this entry is part of (a regex term past it misses).
    """
    if not rules:
        return True, ()
    view = _EntryText(entry)
    matches = []
    for rule in rules:
        terms = _matched_terms(rule, view, budget)
        if terms is not None:
            matches.append(RuleMatch(rule.name, terms))
    return bool(matches), tuple(matches)


# --------------------------------------------------------------------------
# explain
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TermExplanation:
    term: str  # as written in the config
    group: TermGroup
    fields: tuple[str, ...]  # the fields it hit, in the rule's field order; () = missed
    timed_out: bool = False  # a regex that ran out of time somewhere (counted as a miss there)

    @property
    def hit(self) -> bool:
        return bool(self.fields)

    @property
    def field(self) -> str | None:
        return self.fields[0] if self.fields else None


@dataclass(frozen=True)
class RuleExplanation:
    rule: str
    matched: bool
    fields: tuple[str, ...]  # the fields the rule looks at
    terms: tuple[TermExplanation, ...]  # any, then all, then not; config order
    reason: str  # one sentence: why it matched or not


def _explain_term(
    rule: CompiledRule,
    term: _Term,
    group: TermGroup,
    view: _EntryText,
    budget: RegexBudget | None = None,
) -> TermExplanation:
    hit_fields = []
    timed_out = False
    for name in rule.fields:
        if term.is_regex:
            found = _regex_in_field(rule, term, view, name, budget)
            timed_out |= found is None
        else:
            found = term.pattern.search(view.field(name, rule.case_sensitive)) is not None
        if found:
            hit_fields.append(name)
    return TermExplanation(term.text, group, tuple(hit_fields), timed_out)


def explain(
    rule: CompiledRule, entry: EntrySnapshot, budget: RegexBudget | None = None
) -> RuleExplanation:
    """Every term of ``rule`` against ``entry``: hit or missed, and where (``feedwatch
    explain``). ``budget``: the regex time left to the explanations it is one of, as
    for a poll's entries (a regex term past it misses, ``timed_out``)."""
    view = _EntryText(entry)
    any_ = [_explain_term(rule, t, "any", view, budget) for t in rule.any.terms]
    all_ = [_explain_term(rule, t, "all", view, budget) for t in rule.all.terms]
    not_ = [_explain_term(rule, t, "not", view, budget) for t in rule.not_.terms]

    def where(t: TermExplanation) -> str:
        return f"{t.term!r} ({', '.join(t.fields)})"

    any_hits = [t for t in any_ if t.hit]
    all_misses = [t for t in all_ if not t.hit]
    not_hits = [t for t in not_ if t.hit]
    matched = False
    if any_ and not any_hits:
        reason = "no 'any' term hit"
    elif all_misses:
        reason = "'all' term " + ", ".join(repr(t.term) for t in all_misses) + " did not hit"
    elif not_hits:
        reason = "'not' term " + ", ".join(where(t) for t in not_hits) + " hit"
    else:
        matched = True
        hits = [*any_hits, *all_]
        reason = "matched: " + ", ".join(where(t) for t in hits) if hits else "matched"
    return RuleExplanation(rule.name, matched, rule.fields, (*any_, *all_, *not_), reason)
