"""What an update changed, word by word (feedwatch.textdiff): pure functions on strings."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from feedwatch.textdiff import MAX_PAIRS, changed_words, excerpt, marked, word_diff

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
    """Past MAX_PAIRS a middle with no sentence the two texts share is not compared
    word by word: a hostile feed's repetitive text ("the the the ...", 2,000 words)
    took SequenceMatcher 80 s."""
    n = int(MAX_PAIRS**0.5) + 1
    old = " ".join(f"o{i} the" for i in range(n))
    new = " ".join(f"n{i} the" for i in range(n))
    pieces = word_diff("start " + old + " end", "start " + new + " end")
    assert [p.op for p in pieces] == ["same", "del", "ins", "same"]
    pieces = word_diff("the " * 2000, "the a " * 2000)  # at once
    assert [p.op for p in pieces if p.op != "same"] == ["del", "ins"]


def _article(first: str, last: str) -> str:
    paras = [f"Paragraph {i}: the committee heard evidence about the roads." for i in range(40)]
    paras[2] = f"Paragraph 2: the mayor said that {first} schools would close next year."
    paras[35] = f"Paragraph 35: the committee {last} evidence about the roads."
    return "\n\n".join(paras)


def test_two_corrections_far_apart_show_only_themselves():
    """Two one-word corrections 33 paragraphs apart (a middle past MAX_PAIRS) showed
    as one removal and one addition of the whole stretch between them, 4,000
    characters for two words. The sentences both texts share are kept now, and the
    words between them compared: each correction with its few words around it."""
    old, new = _article("eleven", "heard"), _article("twelve", "ignored")
    got = marked(excerpt(word_diff(old, new), 4))
    assert got == (
        "… the mayor said that [-eleven-]{+twelve+} schools would close next … "
        "Paragraph 35: the committee [-heard-]{+ignored+} evidence about the roads. …"
    )
    one_line = changed_words(" ".join(old.split()), " ".join(new.split()), 4)  # chat, explain
    assert one_line == (
        "… the mayor said that eleven schools would close next … "
        "Paragraph 35: the committee heard evidence about the roads. …",
        "… the mayor said that twelve schools would close next … "
        "Paragraph 35: the committee ignored evidence about the roads. …",
    )


def test_a_hostile_long_text_is_compared_in_bounded_time():
    """Matching by sentences first must not bring back the cost MAX_PAIRS bounds:
    sentences repeated, shuffled, or repetitive text between shared sentences."""
    gap_a = " ".join("the" if i % 3 else "x" for i in range(118)) + "."
    gap_b = " ".join("the" if i % 2 else "y" for i in range(118)) + "."
    unique = [f"s{i}." for i in range(9000)]
    cases = [
        ("a. " * 20000, "b. a. " * 10000),
        (" ".join(unique), " ".join(unique[::2] + unique[1::2])),
        (
            " ".join(f"U{i}. {gap_a}" for i in range(100)),
            " ".join(f"U{i}. {gap_b}" for i in range(100)),
        ),
    ]
    for old, new in cases:
        started = time.monotonic()
        pieces = word_diff(old[:65536], new[:65536])
        assert time.monotonic() - started < 2  # ~50 ms; one middle of 2,000 words: 80 s
        assert "".join(p.text for p in pieces if p.op != "ins").split() == old[:65536].split()


_words = st.lists(st.sampled_from(["a", "b", "c", "dé", "e,", "f."]), max_size=25)
_spaces = st.sampled_from([" ", "  ", "\n\n", "\t"])


@st.composite
def _texts(draw):
    words = draw(_words)
    return "".join(w + draw(_spaces) for w in words).strip()


@settings(max_examples=250, deadline=None)
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


_sentence = st.lists(st.sampled_from(["a", "b", "c", "dé", "e,"]), min_size=1, max_size=6)


@st.composite
def _long_texts(draw):
    """An article of sentences and a copy with a few sentences edited, added or
    dropped: long enough (past MAX_PAIRS) to be matched by sentences first."""
    count = draw(st.integers(40, 60))
    old = [" ".join([f"s{i}", *draw(_sentence)]) + "." for i in range(count)]
    new = list(old)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(new) - 1))
        action = draw(st.sampled_from(["edit", "add", "drop"]))
        if action == "edit":
            new[at] = " ".join(draw(_sentence)) + "."
        elif action == "add":
            new.insert(at, " ".join(draw(_sentence)) + ".")
        elif len(new) > 1:
            del new[at]
    if draw(st.booleans()):  # both ends edited too: the whole text is the middle
        new[0], new[-1] = "x " + new[0], new[-1] + " x."
    return " ".join(old), draw(st.sampled_from([" ", "\n\n"])).join(new)


@settings(max_examples=150, deadline=None)
@given(_long_texts())
def test_long_texts_matched_by_sentences_give_back_both_texts(texts):
    old, new = texts
    pieces = word_diff(old, new)
    assert "".join(p.text for p in pieces if p.op != "ins").split() == old.split()
    assert "".join(p.text for p in pieces if p.op != "del").split() == new.split()
    assert all(p.text for p in pieces)
    assert all(a.op != b.op for a, b in zip(pieces, pieces[1:], strict=False))
    assert all(p.op == "same" or p.text.strip() for p in pieces)
    assert (excerpt(pieces) == []) == (old.split() == new.split())
