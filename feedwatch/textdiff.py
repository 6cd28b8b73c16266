"""What an update changed in a text, word by word, and the few words around it (pure).

An alert's ``changes`` carries a field's whole old and whole new text (SPEC section 5).
A story corrected in its last sentence then shows two long texts that agree for
hundreds of words, and a chat message, which keeps only the start of each, shows two
identical beginnings and hides the change. The renderings (email, chat formats) show
this module's excerpt instead: the words removed and added, each with a few words of
context, the unchanged stretches between them cut to "…".

Words are runs of non-space characters, and only words are compared: joining the
``same`` and ``del`` pieces gives the old text's words back, and the ``same`` and
``ins`` pieces the new one's (kept text has the new spacing; a change of spacing alone
is none). The words both texts start and end with are
set aside first (most edits are in one place); the rest is compared with difflib's
``SequenceMatcher`` when it is short enough to be cheap (``MAX_PAIRS``: its time
grows with the product of the two lengths, and worse on repetitive text, where 2,000
words took 80 s, and an alert's rendering must not wait on a hostile feed's text).
A longer rest (two corrections far apart) is first matched by sentences and lines:
those found once in each text, in the same order, are kept (patience diff: a
sort-like cost, whatever the text repeats), and only what lies between them is
compared word by word, within ``MAX_PAIRS`` each and ``MAX_TOTAL_PAIRS`` in all; a
stretch past either is one removal and one addition.
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Piece", "changed_words", "excerpt", "marked", "word_diff"]

MAX_PAIRS = 120 * 120
MAX_TOTAL_PAIRS = 2 * MAX_PAIRS  # word by word between the matched sentences, in all
_TOKEN = re.compile(r"\S+|\s+")
_WORD = re.compile(r"(\S+)(\s*)")
_SENTENCE_END = re.compile(r"[.!?…][\"'’”)\]]*$")
ELLIPSIS = "…"

Op = Literal["same", "del", "ins"]


@dataclass(frozen=True)
class Piece:
    op: Op
    text: str


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _words(text: str) -> list[tuple[str, str]]:
    """Each word of ``text`` with the white space after it."""
    return [(m.group(1), m.group(2)) for m in _WORD.finditer(text)]


def _append(out: list[Piece], op: Op, text: str) -> None:
    if not text:
        return
    if out and out[-1].op == op:
        out[-1] = Piece(op, out[-1].text + text)
    else:
        out.append(Piece(op, text))


def word_diff(old: str, new: str) -> list[Piece]:
    """``old`` -> ``new`` as pieces kept, removed and added (adjacent pieces of one
    kind joined; a removal comes before the addition that replaces it). Words are
    compared, not the spaces between them: kept text has the new spacing."""
    a, b = _words(old), _words(new)
    wa, wb = [w for w, _ in a], [w for w, _ in b]
    start = 0
    while start < len(wa) and start < len(wb) and wa[start] == wb[start]:
        start += 1
    end = 0
    while end < len(wa) - start and end < len(wb) - start and wa[-1 - end] == wb[-1 - end]:
        end += 1
    a_end, b_end = len(wa) - end, len(wb) - end
    if (a_end - start) * (b_end - start) <= MAX_PAIRS:
        opcodes = _matched(wa, wb, start, a_end, start, b_end)
    else:  # (two corrections far apart)
        opcodes = _by_sentences(a, b, start, a_end, start, b_end)
    opcodes = [("equal", 0, start, 0, start), *opcodes]
    opcodes.append(("equal", a_end, len(wa), b_end, len(wb)))
    out: list[Piece] = []
    for tag, i1, i2, j1, j2 in opcodes:
        if tag == "equal":
            _append(out, "same", "".join(w + sp for w, sp in b[j1:j2]))
        else:  # the space after the change is kept text, as the new text has it
            gone = "".join(w + sp for w, sp in a[i1:i2])
            came = "".join(w + sp for w, sp in b[j1:j2])
            if out and out[-1].op == "same" and not out[-1].text[-1].isspace():
                # the new text's last word, where the old one went on
                out[-1] = Piece("same", out[-1].text + " ")
            _append(out, "del", gone.rstrip())
            _append(out, "ins", came.rstrip())
            _append(out, "same", (came or gone)[len((came or gone).rstrip()) :])
    return out


_Opcode = tuple[str, int, int, int, int]


def _matched(wa: list[str], wb: list[str], i1: int, i2: int, j1: int, j2: int) -> list[_Opcode]:
    """``wa[i1:i2]`` -> ``wb[j1:j2]`` word by word (the caller keeps it cheap)."""
    matcher = difflib.SequenceMatcher(None, wa[i1:i2], wb[j1:j2], autojunk=False)
    return [(t, i1 + a1, i1 + a2, j1 + b1, j1 + b2) for t, a1, a2, b1, b2 in matcher.get_opcodes()]


def _by_sentences(
    a: list[tuple[str, str]], b: list[tuple[str, str]], i1: int, i2: int, j1: int, j2: int
) -> list[_Opcode]:
    """A long stretch: its sentences found once in each text kept (in order), the
    stretches between them compared word by word while the budget lasts."""
    ua, ub = _sentences(a, i1, i2), _sentences(b, j1, j2)
    wa, wb = [w for w, _ in a], [w for w, _ in b]
    out: list[_Opcode] = []
    budget = MAX_TOTAL_PAIRS
    ai, bj = i1, j1
    for x, y in [*_anchors(ua, wa, ub, wb), (len(ua), len(ub))]:
        a_to = ua[x][0] if x < len(ua) else i2
        b_to = ub[y][0] if y < len(ub) else j2
        gap, budget = _between(wa, wb, ai, a_to, bj, b_to, budget)
        out += gap
        if x < len(ua):
            ai, bj = ua[x][1], ub[y][1]
            out.append(("equal", a_to, ai, b_to, bj))
    return out


def _sentences(words: list[tuple[str, str]], start: int, end: int) -> list[tuple[int, int]]:
    """``words[start:end]`` as (start, end) ranges, each ending at a sentence's end
    or a line break."""
    out, first = [], start
    for i in range(start, end):
        word, space = words[i]
        if "\n" in space or _SENTENCE_END.search(word) or i == end - 1:
            out.append((first, i + 1))
            first = i + 1
    return out


def _anchors(
    ua: list[tuple[int, int]], wa: list[str], ub: list[tuple[int, int]], wb: list[str]
) -> list[tuple[int, int]]:
    """The sentences found once in each text, as (index in ua, index in ub): the
    longest run of them in the same order in both (patience sorting)."""
    ka = [tuple(wa[s:e]) for s, e in ua]
    kb = [tuple(wb[s:e]) for s, e in ub]
    ca, cb = Counter(ka), Counter(kb)
    where = {k: y for y, k in enumerate(kb) if cb[k] == 1}
    pairs = [(x, where[k]) for x, k in enumerate(ka) if ca[k] == 1 and k in where]
    tops: list[int] = []  # per pile, the smallest last index into ub
    tails: list[int] = []  # per pile, the index into pairs of that top
    back = [-1] * len(pairs)
    for n, (_, y) in enumerate(pairs):
        pile = bisect.bisect_left(tops, y)
        back[n] = tails[pile - 1] if pile else -1
        if pile == len(tops):
            tops.append(y)
            tails.append(n)
        else:
            tops[pile], tails[pile] = y, n
    chain, n = [], tails[-1] if tails else -1
    while n >= 0:
        chain.append(pairs[n])
        n = back[n]
    return chain[::-1]


def _between(
    wa: list[str], wb: list[str], i1: int, i2: int, j1: int, j2: int, budget: int
) -> tuple[list[_Opcode], int]:
    """``wa[i1:i2]`` -> ``wb[j1:j2]``, the stretch between two kept sentences, and the
    budget left: word by word while it lasts, else one removal and one addition (of
    what lies between the words both start and end with)."""
    s = 0
    while i1 + s < i2 and j1 + s < j2 and wa[i1 + s] == wb[j1 + s]:
        s += 1
    e = 0
    while i1 + s < i2 - e and j1 + s < j2 - e and wa[i2 - 1 - e] == wb[j2 - 1 - e]:
        e += 1
    pairs = (i2 - i1 - s - e) * (j2 - j1 - s - e)
    if pairs <= min(MAX_PAIRS, budget):
        mid = _matched(wa, wb, i1 + s, i2 - e, j1 + s, j2 - e)
        budget -= pairs
    else:
        mid = [("replace", i1 + s, i2 - e, j1 + s, j2 - e)]
    head, tail = ("equal", i1, i1 + s, j1, j1 + s), ("equal", i2 - e, i2, j2 - e, j2)
    return [head, *mid, tail], budget


def excerpt(pieces: Sequence[Piece], context: int = 8) -> list[Piece]:
    """``pieces`` with each kept stretch cut to ``context`` words on the side of each
    change it touches (what is cut becomes ``…``); every removal and addition stays
    whole. No change: nothing."""
    if all(p.op == "same" for p in pieces):
        return []
    out: list[Piece] = []
    last = len(pieces) - 1
    for i, p in enumerate(pieces):
        if p.op != "same":
            _append(out, p.op, p.text)
            continue
        words = _tokens(p.text)
        after, before = i > 0, i < last  # it follows a change / precedes one
        if sum(1 for w in words if not w.isspace()) <= context * (after + before):
            _append(out, "same", p.text)
        elif after and before:
            head, tail = _first_words(words, context), _last_words(words, context)
            _append(out, "same", f"{head.rstrip()} {ELLIPSIS} {tail.lstrip()}")
        elif after:
            _append(out, "same", f"{_first_words(words, context).rstrip()} {ELLIPSIS}")
        else:
            _append(out, "same", f"{ELLIPSIS} {_last_words(words, context).lstrip()}")
    return out


def _first_words(words: list[str], n: int) -> str:
    out, seen = [], 0
    for w in words:
        if not w.isspace():
            if seen == n:
                break
            seen += 1
        out.append(w)
    return "".join(out)


def _last_words(words: list[str], n: int) -> str:
    out, seen = [], 0
    for w in reversed(words):
        if not w.isspace():
            if seen == n:
                break
            seen += 1
        out.append(w)
    return "".join(reversed(out))


def changed_words(old: str, new: str, context: int = 8) -> tuple[str, str]:
    """``old`` and ``new`` cut to the words that differ, each with ``context`` words
    around it, white space folded; the rest is ``…``. Unchanged words: both whole."""
    pieces = excerpt(word_diff(old, new), context)
    if not pieces:
        return old, new
    return (
        " ".join("".join(x.text for x in pieces if x.op != "ins").split()),
        " ".join("".join(x.text for x in pieces if x.op != "del").split()),
    )


def marked(pieces: Sequence[Piece]) -> str:
    """Plain text with ``[-removed-]`` and ``{+added+}`` (git's word-diff markers)."""
    out = []
    for p in pieces:
        if p.op == "same":
            out.append(p.text)
        elif p.op == "del":
            out.append(f"[-{p.text}-]")
        else:
            out.append(f"{{+{p.text}+}}")
    return "".join(out)
