"""ignore_text (feedwatch.ignore_text): what it cuts is what a rule's term written the
same way hits, and the cut is of the characters the feed wrote."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedwatch.ignore_text import compile_ignore
from feedwatch.match import compile_search, locate
from tests.test_match import TURKISH, hits


def clean(term: str, text: str) -> str:
    ignore = compile_ignore((term,))
    assert ignore is not None
    return ignore.clean(text)


def cuts(term: str, text: str) -> bool:
    return clean(term, text) != unicodedata.normalize("NFC", " ".join(text.split()))


@pytest.mark.parametrize(
    ("term", "text", "expected"),
    [
        # typographic apostrophes, hyphens and emoji presentation, either way round
        ("COVID\u201119 update", "COVID\u201119 update", True),  # pasted: U+2011 both
        ("COVID-19 update", "COVID\u201119 update", True),
        ("COVID-19 update", "COVID\u201019 update", True),
        ("COVID\u201119 update", "COVID-19 update", True),
        ("555-0199", "call 555\u20120199", True),
        ("O'Brien", "Minister O\u2019Brien resigns", True),
        ("O\u2019Brien", "Minister O'Brien resigns", True),
        ("l'Ukraine", "l\u2018Ukraine", True),
        ("l'Ukraine", "l\u02bcUkraine", True),
        ("\u2764 trending", "I \u2764\ufe0f trending", True),
        ("\u2764\ufe0f trending", "I \u2764 trending", True),
        ("\u2764\ufe0e trending", "I \u2764\ufe0f trending", True),
        # what the normalisation does not equate, ignore_text does not either
        ("2020-2021", "2020\u20132021", False),
        ("Kyiv-Moscow", "Kyiv\u2014Moscow", False),
        ("O'Brien", "O\u2032Brien", False),
        ("\u2764 trending", "\u2665 trending", False),
        ("Dnipro", "Dnipr\u00f3", False),
        # NFKC, invisible characters, case folding (the Turkish İ too)
        ("Visited", "Vis\u00adited 3 times", True),
        ("Visited", "Vis\u200bited 3 times", True),
        ("Visited", "\uff36isited 3 times", True),
        ("profile views", "pro\ufb01le views: 3", True),
        ("caf\u00e9", "a cafe\u0301 story", True),
        ("izmir", "\u0130ZM\u0130R depremi", True),
        ("\u0130zmir", "IZMIR depremi", True),
        ("son dakika", TURKISH, True),
        ("strasse", "Stra\u00dfe 5", True),
        ("hypersonic", "\uff48\uff59\uff50\uff45\uff52\uff53\uff4f\uff4e\uff49\uff43 glide", True),
        ("missile*", "Missiles fly", True),
        ("missile*", "antimissile", False),
        # /regex/ terms meet the text as rules' do: NFKC, typed apostrophes and hyphens
        ("/O'Brien: \\d+/", "O\u2019Brien: 12 views", True),
        ("/O\u2019Brien: \\d+/", "O'Brien: 12 views", True),
        ("/COVID-19 cases: \\d+/", "COVID\u201119 cases: 120", True),
        ("/COVID\u201119 cases: \\d+/", "COVID\u201119 cases: 120", True),
        ("/Visited \\d+ times/", "(Vis\u00adited 222 times)", True),
        ("/Visited \\d+ times/", "(\uff36isited 222 times)", True),
        ("/\u2764\ufe0f \\d+/", "\u2764 12", True),
        ("/\u2764 \\d+/", "\u2764\ufe0f 12", True),
        ("/[\u2019]s \\d+/", "Bob's 12", True),
        ("/[^\u2019]s \\d+/", "Bob's 12", False),
        ("/[\u2010-\u2015]\\d+/", "score -5", True),
        ("/[\u2010-\u2015]\\d+/", "score \u20145", True),
        ("/[\u2010-\u2015]\\d+/", "score x5", False),
        ("/2020-2021/", "2020\u20132021", False),
        ("/\u0130srail/", TURKISH, True),
    ],
)
def test_ignore_text_cuts_what_a_rule_term_written_the_same_way_hits(
    term: str, text: str, expected: bool
) -> None:
    """The rule of ignore_text: a text is cut exactly where a rule's term written the
    same way hits it, whichever typographic form the feed or the user typed."""
    assert hits(term, text) is expected, "the rule"
    assert cuts(term, text) is expected, "ignore_text"


@pytest.mark.parametrize(
    ("term", "text", "left"),
    [
        # what comes before the hit reads longer or shorter than it is written
        (
            "/O'Brien: \\d+ views/",
            "\ufb01nal Stra\u00dfe O\u2019Brien: 12 views \u2764\ufe0f",
            "\ufb01nal Stra\u00dfe \u2764\ufe0f",
        ),
        (
            "/Visited \\d+ times/",
            "Hyper\u00adschall (Vis\u00adited 222 times) \u2764\ufe0f\u2764\ufe0f end",
            "Hyper\u00adschall ( ) \u2764\ufe0f\u2764\ufe0f end",
        ),
        (
            "COVID-19 update",
            "a cafe\u0301 \u2019s COVID\u201119 update\ufe0f. Then",
            "a caf\u00e9 \u2019s . Then",
        ),
        ("izmir", "\u0130ZM\u0130R \u0130ZM\u0130R: izmir", ":"),
        # a hit inside what one character reads as cuts that character whole
        ("strasse", "Stra\u00dfe 5", "5"),
        ("profile*", "my pro\ufb01les here", "my here"),
        ("/i/", "a\ufb01b", "a b"),
        ("\u2764 trending", "I \u2764\ufe0f\ufe0f trending now", "I now"),
        # a full-width counter copied into the pattern from the feed (阅读：100, 12件):
        # cut as 86dd6ef cut it, searching the raw text; it missed the NFKC text after
        (
            "/\u9605\u8bfb\uff1a\\d+/",
            "\u65b0\u95fb\u3002\u9605\u8bfb\uff1a100",
            "\u65b0\u95fb\u3002",
        ),
        ("/[\uff10-\uff19]+\u4ef6/", "\u8bc4\u8bba \uff11\uff12\u4ef6", "\u8bc4\u8bba"),
    ],
)
def test_ignore_text_cuts_the_characters_the_feed_wrote(term: str, text: str, left: str) -> None:
    """Terms search the text as rules read it, whose characters are not those the feed
    wrote one for one (NFKC makes "ﬁ" two, "ß" folds to "ss", a soft hyphen and a
    variation selector are dropped): the cut is of the feed's characters that the hit
    was read from, and the rest stays as the feed wrote it (NFC, white space folded)."""
    assert clean(term, text) == left


_ALPHABET = st.sampled_from(
    list("aAbi -'.:5")
    + [
        "\u2019",
        "\u2018",
        "\u02bc",
        "\u2010",
        "\u2011",
        "\u2012",
        "\u2013",
        "\ufe0f",
        "\ufe0e",
        "\u00ad",
        "\u200b",
        "\u2764",
        "\u00df",
        "\ufb01",
        "\u0130",
        "\u0131",
        "\u0301",
        "\u0307",
        "\uff21",
        "\u017f",
        "\u1100",
        "\u1161",
        "\u11a8",
        "\u3131",
        "\u314f",
        "\uff8a",
        "\uff9e",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_ALPHABET, min_size=1, max_size=12).map("".join),
    st.lists(_ALPHABET, min_size=1, max_size=4).map("".join),
)
def test_property_ignore_text_cuts_where_a_rule_term_hits(text: str, word: str) -> None:
    """Any text, any term made of the same tricky characters: cut exactly when hit."""
    term = f"/{word}/" if word.strip() else "/x/"
    try:
        hit = hits(term, text)
    except ValueError:
        return  # not a valid regex (a lone quantifier)
    search = compile_search(term)
    assert bool(search.spans(locate(text, search.case_sensitive))) is hit
