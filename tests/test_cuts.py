"""Texts cut to fit end between two grapheme clusters (UAX 29), never inside one: not
in the middle of an emoji sequence (👩🏽‍🔬 kept as 👩🏽 and a dangling zero-width joiner),
a flag (🇩🇪 kept as a lone 🇩), or a letter and its accent. And a word diff cut to fit
keeps each removed and added run, cut to its share. Pure functions on strings: every
cutting function of the sinks (feedwatch.sinks.email, feedwatch.sinks.formats) and
``feedwatch.text.cap``."""

from __future__ import annotations

import time

import regex
from hypothesis import example, given, settings
from hypothesis import strategies as st

from feedwatch.sinks import email as email_sink
from feedwatch.sinks import formats
from feedwatch.text import cap
from feedwatch.textdiff import Piece, marked

# what a cluster is made of, and what ends one: letters, CJK, spaces, a letter and
# its combining accent, emoji ZWJ sequences with skin tones, flags (regional
# indicator pairs), a variation selector, a Hangul syllable in jamo, an Arabic
# prepended mark, markup the formats escape
PARTS = [
    "a",
    "b",
    " ",
    "\n",
    "日",
    "e",
    "\u0301",
    "\u0308",
    "\u200d",
    "👩",
    "🏽",
    "🔬",
    "🇩",
    "🇪",
    "\ufe0f",
    "❤",
    "\u1100",
    "\u1161",
    "\u11a8",
    "\u0600",
    "\u0903",
    "&",
    "<",
    "*",
    "\\",
]
TEXTS = st.lists(st.sampled_from(PARTS), max_size=60).map("".join)
UNIT = "日本語の文章🇩🇪👩🏽\u200d🔬A&B<c>"  # no spaces
REPEATED = UNIT * 40
ELLIPSES = (" …", "…")


def boundaries(text: str) -> set[int]:
    """Where ``text`` may be cut: between two of its extended grapheme clusters."""
    return {0} | {m.end() for m in regex.finditer(r"\X", text)}


def kept_part(cut: str) -> str:
    for e in ELLIPSES:
        if cut.endswith(e):
            return cut[: -len(e)]
    return cut


def assert_whole_clusters(cut: str, text: str) -> None:
    kept = kept_part(cut)
    assert text.startswith(kept), (cut, text)
    assert len(kept) in boundaries(text), (kept, text)


def test_the_reported_text_is_cut_after_a_whole_emoji_sequence() -> None:
    """Every cut of a run of 日本語の文章🇩🇪👩🏽‍🔬A&B<c> (no space to cut at) ends on a
    whole cluster: never in a joiner, a lone regional indicator, nor before a skin tone."""
    for limit in range(1, 3 * len(UNIT)):
        for cut in (
            email_sink._cut(REPEATED, limit),
            formats.shorten(REPEATED, limit),
            formats.shorten(REPEATED, limit, words=True),
            formats.shorten_bytes(REPEATED, limit, words=True),
            cap(REPEATED, limit),
        ):
            kept = kept_part(cut)
            assert not kept.endswith("\u200d"), (limit, cut)
            assert not kept.endswith(("👩", "👩🏽")), (limit, cut)  # 👩🏽‍🔬 is one cluster
            assert kept.count("🇩") == kept.count("🇪"), (limit, cut)
            assert_whole_clusters(cut, REPEATED)
    assert email_sink._cut("caf" + "e\u0301" * 4, 4) == "caf …"  # not the bare e
    assert formats.shorten("xx🇩🇪🇩🇪", 5) == "xx🇩🇪…"


@settings(max_examples=300, deadline=None)
@given(TEXTS, st.integers(min_value=1, max_value=70))
@example("aaaaaa👩🏽\u200d🔬", 8)
@example("aaaa🇩🇪🇩🇪", 6)
@example("aaaaa e\u0301\u0308", 9)
@example("a\u0600 bbbbbbbbbbbb", 3)
def test_every_cut_ends_between_two_grapheme_clusters(text: str, limit: int) -> None:
    assert_whole_clusters(email_sink._cut(text, limit), text)
    assert_whole_clusters(email_sink._header_text(text, limit), email_sink._header_text(text))
    assert_whole_clusters(formats.shorten(text, limit), text)
    assert_whole_clusters(formats.shorten(text, limit, words=True), text)
    assert_whole_clusters(formats.shorten_bytes(text, limit), text)
    assert_whole_clusters(formats.shorten_bytes(text, limit, words=True), text)
    assert_whole_clusters(cap(text, limit), text)
    escaped = formats.slack_mrkdwn(text)
    assert_whole_clusters(formats._slack_cut(escaped, limit), escaped)
    assert_whole_clusters(formats._md(text, limit), formats.markdown_escape(text))
    cut = formats.cut_payload({"id": "x", "entry": {"summary": text, "tags": [text]}}, limit)
    assert_whole_clusters(cut["entry"]["summary"], text)
    assert_whole_clusters(cut["entry"]["tags"][0], text)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["same", "del", "ins"]), TEXTS.filter(bool)), max_size=8),
    st.integers(min_value=1, max_value=200),
)
def test_a_cut_word_diff_keeps_every_run_and_whole_clusters(
    runs: list[tuple[str, str]], limit: int
) -> None:
    pieces = [Piece(op, text) for op, text in runs]  # type: ignore[arg-type]
    cut = email_sink._cut_pieces(pieces, limit)
    if sum(len(p.text) for p in pieces) <= limit:
        assert cut == pieces
        return
    assert [p.op for p in cut] == [p.op for p in pieces]  # each run, in its place
    for got, was in zip(cut, pieces, strict=True):
        assert_whole_clusters(got.text, was.text)
    assert sum(len(kept_part(p.text)) for p in cut) <= limit


def test_a_cut_word_diff_keeps_what_was_added_after_a_long_removal() -> None:
    """An update whose diff begins with a long removed run, cut to fit, showed only
    ``[-removed …]``: the added words were cut away. Each run now gets its share: a
    short run is whole, the long one is cut."""
    removed = " ".join(f"old{i}" for i in range(2000))
    pieces = [
        Piece("same", "… the ministry said "),
        Piece("del", removed),
        Piece("ins", "killed two workers"),
        Piece("same", " officials said."),
    ]
    cut = email_sink._cut_pieces(pieces, 300)
    assert cut[0] == pieces[0] and cut[2:] == pieces[2:]
    assert cut[1].op == "del" and removed.startswith(cut[1].text[:-2])
    assert cut[1].text.endswith(" …") and 200 < len(cut[1].text) < 300
    # and a long addition after a long removal: both cut, both shown
    added = " ".join(f"new{i}" for i in range(2000))
    cut = email_sink._cut_pieces([Piece("del", removed), Piece("ins", added)], 300)
    assert [p.op for p in cut] == ["del", "ins"]
    assert all(100 < len(p.text) < 160 and p.text.endswith(" …") for p in cut), cut
    assert "{+new0 new1" in marked(cut)


def test_a_cut_of_a_long_run_of_flags_or_marks_takes_no_time() -> None:
    """Read from the text's start, ``\\X`` counts each flag's halves back to the run's
    first: 16,000 flags took seconds, a 64 KiB payload string of them minutes. A cut
    reads from the last point before it that a cluster surely ends at."""
    # a text of one unit repeated, and where in a unit its clusters end
    for unit, ends in (("🇩🇪", {0}), ("x🇩🇪", {0, 1}), ("🇩\u0301", {0}), ("e\u0301", None)):
        text = unit * 40_000 if ends else "e" + "\u0301" * 80_000  # (one cluster)
        started = time.monotonic()
        cuts = [
            cut(text, limit)
            for limit in (65_535, 65_536, 65_537)
            for cut in (email_sink._cut, lambda t, n: formats.shorten(t, n, words=True))
        ]
        assert time.monotonic() - started < 5, ascii(unit)
        for cut in cuts:
            kept = kept_part(cut)
            assert text.startswith(kept)
            assert len(kept) % len(unit) in ends if ends else kept == "", ascii(cut[-4:])
