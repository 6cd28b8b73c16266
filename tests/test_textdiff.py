"""What an update changed, word by word (feedwatch.textdiff): pure functions on strings."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from feedwatch.textdiff import MAX_PAIRS, excerpt, marked, word_diff

OLD = (
    "The minister said on Tuesday that the strike hit a power plant in the region and "
    "caused no casualties, according to officials who spoke on condition of anonymity."
)
NEW = OLD.replace("caused no casualties", "killed two workers")


def test_one_edit_reads_as_one_change_with_its_context():
    assert marked(excerpt(word_diff(OLD, NEW), 4)) == (
        "… in the region and [-caused no casualties,-]{+killed two workers,+}"
        " according to officials who …"
    )


def test_separate_edits_keep_the_words_between_them():
    got = marked(excerpt(word_diff("a x b y c", "a p b q c")))
    assert got == "a [-x-]{+p+} b [-y-]{+q+} c"
    words = " ".join(f"w{i}" for i in range(40))
    edited = words.replace("w0 ", "W0 ").replace("w39", "W39")
    assert marked(excerpt(word_diff(words, edited), 2)) == (
        "[-w0-]{+W0+} w1 w2 … w37 w38 [-w39-]{+W39+}"
    )


def test_additions_removals_and_white_space():
    assert marked(excerpt(word_diff("x y", "x a b y"))) == "x {+a b+} y"
    assert marked(excerpt(word_diff("x a b y", "x y"))) == "x [-a b-] y"
    assert marked(excerpt(word_diff("a a", "a"))) == "a [-a-]"
    assert marked(excerpt(word_diff("", "new text"))) == "{+new text+}"
    assert excerpt(word_diff("a  b\n\nc", "a b c")) == []  # only the spacing moved
    assert marked(excerpt(word_diff("a  b c", "a b c d"))) == "a b c {+d+}"


def test_a_long_middle_is_one_removal_and_one_addition():
    """Past MAX_PAIRS the middle is not compared word by word: a hostile feed's
    repetitive text ("the the the ...", 2,000 words) took SequenceMatcher 80 s."""
    n = int(MAX_PAIRS**0.5) + 1
    old = " ".join(f"o{i} the" for i in range(n))
    new = " ".join(f"n{i} the" for i in range(n))
    pieces = word_diff("start " + old + " end", "start " + new + " end")
    assert [p.op for p in pieces] == ["same", "del", "ins", "same"]
    pieces = word_diff("the " * 2000, "the a " * 1000)  # at once
    assert [p.op for p in pieces if p.op != "same"] == ["del", "ins"]


_words = st.lists(st.sampled_from(["a", "b", "c", "dé", "e,", "f."]), max_size=25)
_spaces = st.sampled_from([" ", "  ", "\n\n", "\t"])


@st.composite
def _texts(draw):
    words = draw(_words)
    return "".join(w + draw(_spaces) for w in words).strip()


@settings(max_examples=400, deadline=None)
@given(_texts(), _texts(), st.integers(0, 6))
def test_pieces_give_back_both_texts_and_the_excerpt_keeps_every_change(old, new, context):
    pieces = word_diff(old, new)
    assert "".join(p.text for p in pieces if p.op != "ins").split() == old.split()
    assert "".join(p.text for p in pieces if p.op != "del").split() == new.split()
    assert all(p.text for p in pieces)
    assert all(a.op != b.op for a, b in zip(pieces, pieces[1:], strict=False))  # joined
    assert all(p.op == "same" or p.text.strip() for p in pieces)  # no change of spacing
    cut = excerpt(pieces, context)
    assert [p for p in cut if p.op != "same"] == [p for p in pieces if p.op != "same"]
    assert (cut == []) == (old.split() == new.split())
