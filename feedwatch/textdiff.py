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
words took 80 s, and an alert's rendering must not wait on a hostile feed's text),
else it is one removal and one addition.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Piece", "changed_words", "excerpt", "marked", "word_diff"]

MAX_PAIRS = 120 * 120
_TOKEN = re.compile(r"\S+|\s+")
_WORD = re.compile(r"(\S+)(\s*)")
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
    mid_a, mid_b = wa[start : len(wa) - end], wb[start : len(wb) - end]
    if len(mid_a) * len(mid_b) <= MAX_PAIRS:
        matcher = difflib.SequenceMatcher(None, mid_a, mid_b, autojunk=False)
        opcodes = [
            (tag, i1 + start, i2 + start, j1 + start, j2 + start)
            for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        ]
    else:
        opcodes = [("replace", start, len(wa) - end, start, len(wb) - end)]
    opcodes = [("equal", 0, start, 0, start), *opcodes]
    opcodes.append(("equal", len(wa) - end, len(wa), len(wb) - end, len(wb)))
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
