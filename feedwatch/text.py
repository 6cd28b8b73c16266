"""HTML to plain text, for matching, diffing and alerts.

A regex pipeline rather than an HTML parser: it runs on every title, summary
and content of every poll, and it only has to produce comparable text (no
tag or attribute of the markup survives), not a faithful rendering. It never raises,
and its time is linear in the text's length however malformed the markup.

Two ways to read the tags, which give the same text (tests/test_parse.py runs both
on the same random markup; ``_markup_removed`` picks one per pass). A regex
substitution per kind of tag is the fastest on ordinary HTML (the C regex engine, no
Python step per tag), but a tag that never ends makes each such regex read from its
"<" to the end of the text: at worst (number of "<") x (length) steps, quadratic on
hostile markup (70 KB of ``<math x``: 17 s). The linear reading finds a tag by its
opening and reads where its attributes end once per text (``_TagEnds``), linear for
every input, but with a Python step per tag (~2x the regex's time on ordinary HTML).
A pass takes the regex unless that worst case could exceed ``_REGEX_LIMIT`` steps
(~10 ms, ``_regex_bounded``): ordinary fields (a few KB, tens of tags) stay fast,
big or hostile ones stay linear.

Markup escaped twice: a field that holds no tag of its own (no element's start or end
tag, nor a declaration, in the markup as given: comments and a tag cut off by the end
of the text do not count) but markup once decoded (``&lt;p&gt;Hello&lt;/p&gt;``: a feed
that escapes its whole HTML once too often, common in badly made feeds) is read again,
pass after pass, until nothing changes (``_MAX_PASSES``): escaped tags never reach
keyword matching, and such a text is a fixed point (``html_to_text`` of it is itself).
Markup is what holds HTML's structure (``_escaped_markup``): an end tag of an element
it opened before (``<p>Hello</p>``, ``<b>Breaking</b> news``), an element with an
attribute (``<a href="x">``, ``<img src="x">``) or a line break or rule (``<br/>``,
``<hr>``). What decoding made without any is text, as a browser shows it, and read no
further: a start tag alone ("Why the &lt;dialog&gt; element matters", WordPress's Atom
title, is "Why the <dialog> element matters"; "Vec&lt;u8&gt;" is "Vec<u8>"), an end
tag alone, an address in angle brackets ("&lt;a@b.org&gt;"); like the text decoded in
a field of markup of its own (below), it is no fixed point. Fingerprint v6 and the
releases before it read it again as markup whatever it held ("Why the element
matters"). Only a tag goes, though, never the text after it: an element whose contents are
dropped (``<script>``, ``<title>``...) is dropped to the end of the text when the markup
as given leaves it open, but a ``<script>`` that decoding made ("put a &lt;script&gt;
tag at the end of the body", in a story about HTML) is only a word to lose, or the rest
of the story would vanish, and its edits with it. A field that holds a tag of its own
is read once, as a browser shows it: what decoding made of it is text ("Adds
<code>Vec&lt;u8&gt;</code>" is "Adds Vec<u8>", "Report bugs to &lt;a@b.org&gt;" keeps
the address, "x&lt;y and y&gt;z" its signs). Such a text may look like markup (a
"<u8>"), so it is no fixed point; it is text, never read as HTML again. Fingerprint v5
and the releases before it read every field the first way.

A footnote marker is a word of its own: a ``<sup>`` or a link (``<a>``, Substack's
footnote anchors, Markdown's ``<sup><a>``) whose text is only digits, brackets, "*",
"†", "‡", "§", "¶", "#", commas and dashes gets a space before it unless white space or
an opening bracket is there ("Dnipro<sup>1</sup>" reads "Dnipro 1", so a rule for
"Dnipro" hits; "x<sup>2</sup>" reads "x 2"). A ``<sup>`` of letters ("10<sup>th</sup>",
"Brand<sup>TM</sup>") and a ``<sub>`` ("CO<sub>2</sub>": a rule for "CO2" hits) stay
joined, as written. A MathML ``<annotation>`` or ``<annotation-xml>`` (a formula's TeX
source) after a ``<math>`` is dropped to its end tag, as a browser never shows it
(``_annotations_removed``). Fingerprint v5 and the releases before joined the marker
and read the annotation.

Ruby's readings are not text: a browser shows the base text on the line and the
readings above it, and matching, diffing and alerts read the line. After a ``<ruby>``,
the text of an ``<rt>`` (a reading: NHK News Web Easy and other news for learners give
every kanji one, per character or per word) and of an ``<rp>`` (the brackets a browser
without ruby shows around it) is dropped, to its end tag or, where a writer leaves that
out as HTML allows, to the first tag that ends it in a browser: another ``<rt>``,
``<rp>``, ``<rb>`` or ``<rtc>``, the ``</ruby>``, or the end of the paragraph, list
item, definition or cell around it (``_ruby_text_removed``: one linear scan, before
either reading of the tags). "<ruby>北<rt>きた</rt>朝<rt>ちょう</rt>鮮<rt>せん</rt></ruby>"
reads "北朝鮮". One with none of those after it keeps its text (the end of the text
would end it in a browser, but a stray tag must not take the rest of a story with it),
and so does one outside any ruby. Fingerprint v6 and the releases before it read the
readings inline: "北きた朝ちょう鮮せん".

Which elements' contents are dropped, and where they end, is decided by what a
browser shows. A tag's name runs to white space, "/" or ">" (HTML's tokenizer):
``<svg-icon>``, ``<title-bar>``, ``<script-loader>`` are custom elements whose text a
browser shows, not an svg, a title or a script. Left open in the markup as given, a
``<script>``, ``<style>``, ``<template>``, ``<noscript>``, ``<iframe>`` or ``<title>``
holds the rest of the text (raw text, RCDATA or template contents in a browser too);
a ``<head>`` left open is only a tag (a browser ignores it in a body), and so is an
``<xml>`` (an unknown element, whose text a browser shows); closed, their contents go
(a head's title and styles, Word's xml data). An ``<svg>`` ends at its end tag or at
the first tag that takes a browser out of foreign content, whichever comes first:
``</p>``, ``</br>`` or the start of an element HTML keeps out of an svg (``<p>``,
``<div>``, ``<b>``, ``<img>``...: ``_SVG_BREAKOUT``; a ``<font>`` with attributes is
not counted, nor is such a tag kept in the svg by a ``<foreignObject>``, ``<desc>`` or
``<title>`` around it). Markup that decoding made drops an element only to its end
tag, as above. Fingerprint v4 and the releases before it ended a name at any other
character than a letter, a digit or "_", and dropped every element left open, an svg
before ``</p>`` too, to the end of the text (``_V4_DROPPING``).

Whether a tag written ``<name .../>`` is empty or opens an element whose contents
are dropped is decided by what a browser shows after it. ``/>`` ends a foreign
element (SVG, MathML) and any element inside one (HTML5 honours it there):
``<svg class="icon" width="16"/> Dnipro strike`` is an empty icon, then the text.
On an HTML element a browser ignores ``/>``, so per element: ``<xml/>`` opens an
unknown element whose text it shows, and ``<head/>`` is ignored in a body (a head
holds no text in a document either), so the text after either is kept; a
``<template/>``, ``<script/>``, ``<style/>``, ``<title/>``, ``<iframe/>`` or
``<noscript/>`` opens an element whose text it never shows, so it is dropped as if
written without the slash. A slash that ends an unquoted attribute value
(``<svg width=16/>``) is the value's, as in HTML: that svg is left open. Releases
before fingerprint v4 took every such svg, xml and head for one left open and lost
the text after it. ``html_readings`` gives the readings of v6, v5, v4 and of the
releases before v4 too, where they differ, for comparing the rows they stored
(``feedwatch.diff``); each is read only when the current reading met something they
read otherwise (decoded text of no HTML structure kept, ruby text dropped, what
decoding made of a field with a tag of its own that another pass would change, a
footnote marker parted, an annotation dropped; a self-closed tag read as empty, a
``_V4_DROPPING`` that removes other text), so ordinary fields pay one regex search a
pass. The first releases of fingerprint v1 (before parse version 3) also dropped an
element that decoding made ("a &lt;script&gt; tag", escaped twice) to the end of the
text when it was left open: that reading too, where a pass after the first meets such
an opening.

``plain_to_text`` is for a field its format declares plain text (JSON Feed's
``title`` and ``content_text``, Atom's ``type="text"``): a "<" there is text, kept
(``<dialog>`` in a story about HTML), unless the text looks like HTML as feedparser
judges an RSS title (a closing tag or an entity, of HTML's own, any element of HTML),
which is how publishers who escape markup into such a field are read.
"""

from __future__ import annotations

import bisect
import functools
import html
import html.entities
import re
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

__all__ = [
    "HIDDEN",
    "JOINERS",
    "cap",
    "cluster_cut",
    "clusters",
    "escaped",
    "hidden_spans",
    "holds_hidden",
    "html_readings",
    "html_to_text",
    "normalize_space",
    "plain_readings",
    "plain_to_text",
    "printable",
    "visible_text",
]

_FLAGS = re.IGNORECASE | re.DOTALL

# Control characters that are neither text nor white space (NUL is also our marker).
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
_CDATA = re.compile(r"<!\[CDATA\[(.*?)(?:\]\]>|\Z)", re.DOTALL)
# Elements whose content is never text a reader sees (``_Dropping``).
_DROPPED_NAMES = r"script|style|head|template|noscript|iframe|svg|title|xml"
# A tag's name ends at white space, "/" or ">", as HTML's tokenizer reads it: <svg-icon>
# is another element (fingerprint v4 and before ended it at any other character, "\b").
_NAME_END = r"(?=[\s/>])"
# Left open in the markup as given, these run to the end of the text (a browser's raw
# text, RCDATA, template contents); a head or an xml left open is only a tag, and an svg
# ends at the first of its end tag and ``_SVG_BREAKOUT``.
_TO_END_NAMES = r"script|style|template|noscript|iframe|title"
_CLOSED_ONLY_NAMES = r"head|xml"
_CLOSED_ONLY = frozenset(_CLOSED_ONLY_NAMES.split("|"))
# The tags that end an svg in a browser (HTML's foreign content: "</p>", "</br>" and
# the start of an element HTML keeps out of one; a <font> with attributes too, not read)
_SVG_BREAKOUT = re.compile(
    r"<(?:(?:b|big|blockquote|body|br|center|code|dd|div|dl|dt|em|embed|h[1-6]|head|hr|i"
    r"|img|li|listing|menu|meta|nobr|ol|p|pre|ruby|s|small|span|strong|strike|sub|sup"
    r"|table|tt|u|ul|var)|/(?:br|p))" + _NAME_END,
    re.IGNORECASE,
)
# Where fingerprint v4's reading of the dropped elements may differ: a name that goes on
# past one of theirs, or a head, an xml or an svg (``html_readings``). Searched in every
# field: case-sensitive around "<", so the search skips from one "<" to the next, and
# gated on the names' first letters (~0.7 us a summary; with re.IGNORECASE, 2).
_READ_OTHERWISE = re.compile(
    rf"<(?=(?i:[hinstx]))(?i:(?:{_DROPPED_NAMES})[^\w\s/>]|(?:head|xml|svg){_NAME_END})"
)
# The opening of a tag of a foreign element (SVG, MathML) or of a dropped one, which
# ends ">" or "/>" (``_tags``): what ``_self_closed_emptied`` reads.
_FOREIGN_NAMES = r"svg|math"
_SELF_CLOSING_OPEN = re.compile(
    rf"<(?P<end>/)?(?P<name>{_FOREIGN_NAMES}|{_DROPPED_NAMES})(?=[\s/>])", re.IGNORECASE
)
# HTML elements whose "/>" (ignored by a browser) leaves the text after them shown.
_SHOWN_AFTER = frozenset({"head", "xml"})
# Whether ``_self_closed_emptied`` may have anything to do (with a "/>" in the text):
# a self-closed tag is empty only of these, or inside a foreign element.
_SELF_CLOSING_NAME = re.compile(rf"<(?:{_FOREIGN_NAMES}|head|xml)(?=[\s/>])", re.IGNORECASE)
# MathML's annotations, whose text a browser never shows (``_annotations_removed``)
_MATH_OPEN = re.compile(r"<math(?=[\s/>])", re.IGNORECASE)
_ANNOTATION_OPEN = re.compile(r"<(annotation(?:-xml)?)(?=[\s/>])", re.IGNORECASE)
# Ruby: the readings (<rt>) and their fallback brackets (<rp>) over the text a ruby
# annotates, which a browser shows above the base text, not in it
# (``_ruby_text_removed``); each to its end tag, or to the first tag that ends it in a
# browser when that is left out (another rt, rp, rb or rtc, the ruby's end, or that of
# a paragraph, a list item, a definition or a cell around it). Case-sensitive around
# "<", so a search skips from one "<" to the next.
_RUBY_OPEN = re.compile(r"<(?i:ruby)(?=[\s/>])")
_RUBY_TEXT_OPEN = re.compile(r"<(?i:r[tp])(?=[\s/>])")
_RUBY_TEXT_END = re.compile(
    r"<(?:(?i:r[tbp]|rtc)(?=[\s/>])|/(?i:(?P<own>r[tp])|rb|rtc|ruby|p|li|dd|dt|td|th)\s*>)"
)
# A footnote marker: a <sup> or a link (up to three such tags, "<sup><a ...>") whose text
# is only digits, brackets, "*", "†"... (and references, "&#8224;"), to its end tag;
# matched from its "<" (a literal start: the regex engine skips to each "<"), unless
# white space or an opening bracket is before it. The text gets a space before it, so
# "Dnipro<sup>1</sup>" reads "Dnipro 1" (``_markup_removed``). Linear: a tag's
# attributes are read to the next "<" or ">" at most.
_MARKER_TAG = r"(?:sup|a)(?=[\s/>])[^<>]*>\s*"
_FOOTNOTE_MARK = re.compile(
    rf"<(?<![\s(\[{{]<){_MARKER_TAG}(?:<{_MARKER_TAG}){{0,2}}"
    r"(?=(?:[\s\d\[\](){}*#,\u2013\u2020\u2021\u00a7\u00b6-]|&#?[A-Za-z0-9]{1,8};){1,16}"
    r"</(?:sup|a)\s*>)",
    re.IGNORECASE,
)
# Before "/>": an unquoted attribute value, which the slash is part of.
_UNQUOTED_VALUE_END = re.compile(r"=\s*[^\s\"'=<>`]*\Z")
# A tag's attributes run to its ">", past a ">" in a quoted value (bounded: a quote
# closed more than 512 characters on, or never, ends the tag unread). ``_TagEnds``
# reads that; these are the tags' openings.
_BLOCK_NAMES = (
    "address|article|aside|blockquote|br|caption|center|dd|details|dialog|div|dl|dt|"
    "fieldset|figcaption|figure|footer|form|h[1-6]|header|hr|li|main|menu|nav|ol|p|pre|"
    "section|summary|table|tbody|tfoot|thead|tr|ul"
)
_BLOCK_OPEN = re.compile(rf"</?(?:{_BLOCK_NAMES})(?=[\s/>])", re.IGNORECASE)
_CELL_OPEN = re.compile(r"</?(?:td|th)(?=[\s/>])", re.IGNORECASE)
_ANY_OPEN = re.compile(r"<(?:/?[A-Za-z]|[!?])")
_ASCII_LETTER = re.compile(r"[A-Za-z]")
_TAG_NAME_REST = re.compile(r"[^\s/>]*")
_QUOTE_LIMIT = 512
_TAG_BODY = re.compile(rf"""(?:[^>"']|"[^"]{{0,{_QUOTE_LIMIT}}}"|'[^']{{0,{_QUOTE_LIMIT}}}')*>""")
_WINDOW = 4096
# The regex reading (``_markup_removed``): each tag read by one regex.
_ATTRS = _TAG_BODY.pattern[:-1]
_SELF_CLOSING_TOKEN = re.compile(_SELF_CLOSING_OPEN.pattern + _ATTRS + ">", re.IGNORECASE)
_BLOCK_TAG = re.compile(_BLOCK_OPEN.pattern + _TAG_BODY.pattern, re.IGNORECASE)
_CELL_TAG = re.compile(_CELL_OPEN.pattern + _TAG_BODY.pattern, re.IGNORECASE)
_ANY_TAG = re.compile(rf"<(?:/?[A-Za-z][^\s/>]*|[!?]){_TAG_BODY.pattern}|<[/!?]?[A-Za-z][^>]*>")
# Its worst case, (number of "<") x (length of the text) regex steps, above which a
# pass reads the tags linearly (``_markup_removed``): ~10 ms of regex at most.
_REGEX_LIMIT = 1 << 17
# A tag name (``_ANY_TAG``) longer than this: the regex, failing, retries from each
# of its characters (a name full of quotes, one "<": quadratic), so linear.
_LONG_NAME = re.compile(r"<[/!?]?[A-Za-z][^\s/>]{10}")
_SPECIAL = re.compile(r"[>\"']")
# A tag cut off by the end of the text (a browser drops it too).
_TRAILING_TAG = re.compile(r"<[/!?]?[A-Za-z][^<>]*\Z")
# Nested escaping of "&" collapses in one pass ("&amp;amp;amp;lt;" -> "&lt;").
_AMP_RUN = re.compile(r"&(?:amp;|#0*38;|#x0*26;)+", re.IGNORECASE)
_NEWLINES = re.compile(r"\r\n?")
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")
_MARK = "\x00"
_MAX_PASSES = 6
# What makes decoded text markup escaped twice (``_escaped_markup``): a tag, by HTML's
# tokenizer (its name runs to white space, "/" or ">"), with its attributes to the next
# "<" or ">" (linear: each read to the next "<" at most); an attribute with a value; the
# elements that mean something without one (a line break, a rule)
_DECODED_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)(?=[\s/>])([^<>]*)>")
_ATTRIBUTE = re.compile(r"\s[^\s\"'<>/=]+\s*=")
_BREAKS = frozenset({"br", "hr", "wbr"})


def normalize_space(s: str) -> str:
    """Fold every run of white space to one space and strip: for comparisons."""
    return " ".join(s.split())


def printable(s: str) -> str:
    """Feed text made safe for a terminal or a log line: every control character (an
    escape sequence's ESC, a newline) becomes a space."""
    return "".join(ch if ch.isprintable() else " " for ch in s)


# What acts on a terminal or on a line instead of showing: the C0 and C1 controls and
# DEL (ESC and CSI start escape sequences, CR returns over the line, BS rubs out), the
# line and paragraph separators, the bidi controls (U+202E draws what follows right to
# left: "TXT.exe" as "exe.TXT") and lone surrogates. Not the zero-width joiner, the
# variation selectors or tag characters: an emoji sequence draws as one glyph.
_ACTING = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def escaped(s: str) -> str:
    """Text of a feed (a name, a title, an error) for a terminal or a console log
    line: each character that would act on the terminal or break the line written as
    Python writes it (``\\x1b``, ``\\r``, ``\\u202e``), the rest as it is. A backslash
    already in the text stays one. JSON output keeps the text itself (its escapes are
    JSON's)."""
    if _ACTING.search(s) is None:
        return s
    return _ACTING.sub(lambda m: repr(m.group())[1:-1], s)


def escaped_lines(s: str) -> str:
    """``escaped`` line by line: a message of several lines (a config's problems, a
    traceback) keeps its line breaks."""
    return "\n".join(escaped(line) for line in s.split("\n"))


def cap(s: str, limit: int = 65536) -> str:
    """``s`` cut to at most ``limit`` characters (whole grapheme clusters:
    ``clusters``), ending in "…" when cut."""
    if len(s) <= limit:
        return s
    if limit <= 0:
        return ""
    return clusters(s, limit - 1) + "…"


# Grapheme clusters (UAX 29's extended ones: what a reader sees as one character): a
# cut of a text ends between two, never inside one: not after 👩🏽 and the zero-width
# joiner of 👩🏽‍🔬, between the two regional indicators of a flag (🇩🇪), or between a
# letter and its accent. The regex engine's ``\X`` finds them, read from the last point
# before the cut that a cluster surely ends at, whatever came before it: read from the
# start of the text, a run of 16,000 flags took it seconds (each pair counted back to
# the run's first half), 64 KiB of them minutes.


@functools.cache
def _cluster_regexes() -> tuple[Any, Any, Any, Any]:
    import regex  # ~14 ms to import: at the first cut of a text that is not ASCII

    gcb = "\\p{{Grapheme_Cluster_Break={}}}".format
    # a character a cluster may go on after, whatever follows it (a prepended mark,
    # half a flag, Hangul jamo, a CR before LF)
    joins_on = "".join(gcb(v) for v in ("CR", "Prepend", "RI", "L", "V", "T", "LV", "LVT"))
    # an accent or a joiner: a cluster goes on after it only to join an emoji or an
    # Indic consonant to the one before
    joined = gcb("Extend") + gcb("ZWJ")
    linked = r"\p{Extended_Pictographic}\p{Indic_Conjunct_Break=Consonant}"
    # a character that joins the cluster before it, whatever that is
    joins_back = gcb("Extend") + gcb("ZWJ") + gcb("SpacingMark")
    ri = gcb("RI")
    return (
        regex.compile(r"\X"),
        regex.compile(  # searched back from the cut
            f"(?r)(?<=[^{joins_on}{joined}])(?=[^{joins_back}])"
            f"|(?<=[{joined}])(?=[^{joins_back}{linked}])"
        ),
        regex.compile(f"(?r)[{ri}]{{3}}"),
        regex.compile(f"(?r)[^{ri}]"),
    )


def cluster_cut(text: str, n: int) -> int:
    """The end of the last grapheme cluster of ``text`` that ends within its first
    ``n`` characters: where a cut at ``n`` falls to keep every cluster whole."""
    if n <= 0:
        return 0
    if n >= len(text):
        return len(text)
    if text[n - 1 : n + 1].isascii() and text[n - 1] != "\r":
        return n  # two ASCII characters: two clusters (but CR LF)
    every, sure_end, long_run, no_half_flag = _cluster_regexes()
    m = sure_end.search(text, 0, n + 1)
    start = m.start() if m else 0
    # or later, in a run of flags' halves: after a whole number of pairs (a long run
    # left in what ``\X`` reads is what took it seconds)
    m = long_run.search(text, start, n + 1)
    if m:
        other = no_half_flag.search(text, 0, m.start())
        first = other.end() if other else 0  # the run's first half
        start = max(start, first + (m.end() - 1 - first) // 2 * 2)
    end = start
    for m in every.finditer(text[start : n + 1]):  # what follows the cut decides it
        if start + m.end() > n:
            break
        end = start + m.end()
    return end


def clusters(text: str, n: int) -> str:
    """The longest start of ``text`` of at most ``n`` characters that ends between two
    grapheme clusters (``cluster_cut``)."""
    return text[: cluster_cut(text, n)]


# Characters no reader sees, which a text gains or loses with no edit (SPEC 4: noise is
# not a change): the soft hyphen a German CMS's hyphenation pass writes into its words
# ("Hyper&shy;schall&shy;rakete"), the zero-width space, the word joiner, the BOM, the
# direction marks (LRM, RLM, ALM: they place neutral characters, draw nothing) and the
# invisible mathematical operators. Not the variation selectors (an emoji or a text
# heart), the bidi embeddings, overrides and isolates (they reorder what is seen), nor
# the zero-width joiner and non-joiner (``JOINERS``) where they join or part what a
# reader sees (an emoji sequence, Arabic or Indic letters): ``_LOOSE_JOINERS``. The one
# definition: change detection compares texts without them (``feedwatch.diff``),
# matching reads text and terms without them (``feedwatch.match``), and
# ``duplicates = "skip"`` keys a story without them (``identity.duplicate_key``).
HIDDEN = "\u00ad\u061c\u200b\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff"
JOINERS = "\u200c\u200d"
# what ``holds_hidden`` looks for: one "in" test each (~0.1 us for 2 KB of Cyrillic;
# a regex search of the class, 15 us; ``str.translate``, 200 us)
_MAY_HIDE = HIDDEN + JOINERS
_HIDDEN_RUN = re.compile(f"[{HIDDEN}]+")
# letters no joiner joins or parts (Latin, Greek, Cyrillic), white space, punctuation
_UNJOINED = r"\s\x00-\x7f\u00a0\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff\u1e00-\u1eff"
# a zero-width joiner or non-joiner between two such characters (or the text's end)
_LOOSE_JOINERS = re.compile(f"(?:(?<=[{_UNJOINED}])|^)[{JOINERS}]+(?=[{_UNJOINED}]|$)")


def holds_hidden(text: str) -> bool:
    """Whether ``text`` holds a character ``visible_text`` may drop."""
    if text.isascii():
        return False
    for ch in _MAY_HIDE:
        if ch in text:
            return True
    return False


def visible_text(text: str) -> str:
    """``text`` without what no reader sees of it (``HIDDEN``, and a joiner that joins
    nothing a reader sees): two texts that read the same so are the same text. ``text``
    itself when it holds none (``holds_hidden``)."""
    if not holds_hidden(text):
        return text
    return _LOOSE_JOINERS.sub("", _HIDDEN_RUN.sub("", text))


def hidden_spans(text: str) -> list[tuple[int, int]]:
    """Where ``visible_text`` drops characters of ``text``: its (start, end) spans, in
    order, neither overlapping nor touching (a hidden character between two joiners
    it drops is in their span)."""
    if not holds_hidden(text):
        return []
    runs = [m.span() for m in _HIDDEN_RUN.finditer(text)]
    if not any(j in text for j in JOINERS):
        return runs
    # a joiner is judged by what is next to it once the hidden characters are gone:
    # where a run of them starts in that text (``at``), and how much went before it
    at: list[int] = []
    gone: list[int] = []
    total = 0
    for start, end in runs:
        at.append(start - total)
        total += end - start
        gone.append(total)

    def raw(i: int) -> int:  # the index in ``text`` of the character ``i`` of that text
        k = bisect.bisect_right(at, i)
        return i + (gone[k - 1] if k else 0)

    shown = _HIDDEN_RUN.sub("", text)
    spans = sorted(
        runs + [(raw(m.start()), raw(m.end() - 1) + 1) for m in _LOOSE_JOINERS.finditer(shown)]
    )
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


class _TagEnds:
    """Where a tag's attributes that start at a position end, in one string: the index
    of the ">" (a quoted value, closed within 512 characters, may hold a ">"), or -1
    when a quote left open or the end of the text comes first. Every start that reaches
    the same quote or ">" outside a quoted value ends alike, so each is read once, and
    reading every tag of a text, however malformed, stays linear in its length (a regex
    per tag would read to the end of the text from every "<" of an unclosed one)."""

    def __init__(self, s: str) -> None:
        self.s = s
        self._specials: list[int] | None = None  # indexes of ">", '"' and "'"
        self.known: dict[int, int] = {}  # a special's index -> the tag's end from it
        self.slow_before = 0

    @property
    def specials(self) -> list[int]:
        if self._specials is None:
            self._specials = [m.start() for m in _SPECIAL.finditer(self.s)]
        return self._specials

    def __call__(self, start: int) -> int:
        if start >= self.slow_before:
            # Most tags end near their start: read them at once, within a window (the
            # same end when it is in it); a window that fails is not read again.
            m = _TAG_BODY.match(self.s, start, start + _WINDOW)
            if m:
                return m.end() - 1
            self.slow_before = start + _WINDOW
        s, specials, known = self.s, self.specials, self.known
        i = bisect.bisect_left(specials, start)
        path: list[int] = []
        end = -1
        while i < len(specials):
            j = specials[i]
            if j in known:
                end = known[j]
                break
            path.append(j)
            if s[j] == ">":
                end = j
                break
            close = s.find(s[j], j + 1, j + _QUOTE_LIMIT + 2)
            if close < 0:
                break
            i = bisect.bisect_right(specials, close, i + 1)
        for j in path:
            known[j] = end
        return end


def _tags(s: str, opening: re.Pattern[str], ends: _TagEnds) -> Iterator[tuple[re.Match[str], int]]:
    """Each tag that ``opening`` starts, left to right and not overlapping (as a regex
    substitution finds them), with the index just after its ">"."""
    after = 0
    for m in opening.finditer(s):
        if m.start() < after:
            continue
        end = ends(m.end())
        if end >= 0:
            after = end + 1
            yield m, after


def _replace_tags(s: str, opening: re.Pattern[str], by: str, ends: _TagEnds) -> str:
    out: list[str] = []
    done = 0
    for m, after in _tags(s, opening, ends):
        out += (s[done : m.start()], by)
        done = after
    return "".join(out) + s[done:] if out else s


def _any_tags_removed(s: str) -> str:
    """``s`` without its tags: ``<`` and a name (its characters anything but white
    space, "/" and ">"), or ``<!``/``<?``, then the attributes to ">"; where those do not
    end (a quote left open), from the "<" to the next ">"."""
    ends = _TagEnds(s)
    out, done = [], 0
    for m in _ANY_OPEN.finditer(s):
        start = m.start()
        if start < done:
            continue
        end = -1
        if m.group(0)[-1] in "!?":
            end = ends(m.end())
        else:
            # The longest name whose attributes end: the name's end, or a quote in it.
            first = m.end()
            last = _TAG_NAME_REST.match(s, first).end()  # type: ignore[union-attr]
            end = ends(last)
            if end < 0:
                lo = bisect.bisect_left(ends.specials, first)
                hi = bisect.bisect_left(ends.specials, last)
                for k in reversed(ends.specials[lo:hi]):
                    end = ends(k)
                    if end >= 0:
                        break
        if end < 0 and (m.group(0)[-1] not in "!?" or _ASCII_LETTER.match(s, m.end())):
            end = s.find(">", start)
        if end < 0:
            continue
        out.append(s[done:start])
        done = end + 1
    return "".join(out) + s[done:] if out else s


class _SelfClosing:
    """Which self-closing tags are empty elements (see the module's docstring): an
    svg's or a math's, any inside one, a head's and an xml's. The others stay, to be
    dropped to their end tag as written without the slash. Fed the tags in document
    order (it counts the foreign elements open)."""

    __slots__ = ("depth",)

    def __init__(self) -> None:
        self.depth = 0  # foreign elements open

    def empty(self, tag: str, name: str, end: bool) -> bool:
        name = name.lower()
        foreign = name in ("svg", "math")
        if end:
            if foreign and self.depth:
                self.depth -= 1
            return False
        if not (tag.endswith("/>") and not _UNQUOTED_VALUE_END.search(tag, 0, len(tag) - 2)):
            self.depth += foreign
            return False
        return bool(self.depth) or foreign or name in _SHOWN_AFTER


def _self_closed_emptied_regex(s: str) -> str:
    """``s`` without the self-closed tags that are empty elements (``_SelfClosing``)."""
    tags = _SelfClosing()
    return _SELF_CLOSING_TOKEN.sub(
        lambda m: "" if tags.empty(m[0], m["name"], bool(m["end"])) else m[0], s
    )


def _self_closed_emptied_linear(s: str) -> str:
    """``_self_closed_emptied_regex``, reading each tag's end once (``_TagEnds``)."""
    tags = _SelfClosing()
    out, done = [], 0
    for m, after in _tags(s, _SELF_CLOSING_OPEN, _TagEnds(s)):
        if tags.empty(s[m.start() : after], m["name"], bool(m["end"])):
            out.append(s[done : m.start()])
            done = after
    return "".join(out) + s[done:] if out else s


@functools.lru_cache(maxsize=64)
def _end_tag(name: str) -> re.Pattern[str]:
    return re.compile(rf"</{re.escape(name)}\s*>", re.IGNORECASE)


class _Dropping(NamedTuple):
    """How a release found the elements whose contents are dropped (``_DROPPED_NAMES``)."""

    opening: re.Pattern[str]  # an element's opening, its name group 1 (``_dropped_removed``)
    given: re.Pattern[str]  # each element, in the markup as given (the regex reading)
    closed: re.Pattern[str]  # each one closed, in markup that decoding made
    as_browser: bool  # a head or an xml left open is a tag; an svg ends at _SVG_BREAKOUT


# As a browser reads them (fingerprint v5: module's docstring)
_DROPPING = _Dropping(
    re.compile(rf"<({_DROPPED_NAMES}){_NAME_END}", re.IGNORECASE),
    re.compile(
        rf"<(?:({_TO_END_NAMES}){_NAME_END}[^>]*>.*?(?:</\1\s*>|\Z)"
        rf"|({_CLOSED_ONLY_NAMES}){_NAME_END}[^>]*>.*?</\2\s*>"
        rf"|svg{_NAME_END}[^>]*>.*?(?:</svg\s*>|(?={_SVG_BREAKOUT.pattern})|\Z))",
        _FLAGS,
    ),
    re.compile(rf"<({_DROPPED_NAMES}){_NAME_END}[^>]*>.*?</\1\s*>", _FLAGS),
    True,
)
# As fingerprint v4 and the releases before it read them: a name ends at any character
# but a letter, a digit or "_", and every element left open runs to the end of the text
_V4_DROPPING = _Dropping(
    re.compile(rf"<({_DROPPED_NAMES})\b", re.IGNORECASE),
    re.compile(rf"<({_DROPPED_NAMES})\b[^>]*>.*?(?:</\1\s*>|\Z)", _FLAGS),
    re.compile(rf"<({_DROPPED_NAMES})\b[^>]*>.*?</\1\s*>", _FLAGS),
    False,
)


def _first(
    found: dict[str, tuple[int, re.Match[str] | None]],
    key: str,
    pattern: re.Pattern[str],
    s: str,
    start: int,
) -> re.Match[str] | None:
    """``pattern``'s first match in ``s`` at or after ``start``; ``found[key]`` keeps the
    last search (where from, what it found), so no stretch of ``s`` is searched twice."""
    since, match = found.get(key, (-1, None))
    if not (0 <= since <= start and (match is None or match.start() >= start)):
        match = pattern.search(s, start)
        found[key] = (start, match)
    return match


def _dropped_removed(s: str, given: bool, how: _Dropping) -> str:
    """``s`` without the elements whose contents are dropped (``_DROPPED_NAMES``), found
    as ``how`` says: to their end (their end tag; for an svg, as a browser reads one,
    also ``_SVG_BREAKOUT``), or (``given``) to the end of the text when it leaves them
    open. Read left to right, each end looked for once, so an unclosed one cannot make it
    quadratic. The same text as ``how.given`` or ``how.closed`` substituted."""
    out, done = [], 0
    # name -> (from, its first end tag from there); "": the first _SVG_BREAKOUT
    found: dict[str, tuple[int, re.Match[str] | None]] = {}
    gt = -1  # the first ">" at or after an opening's name
    for m in how.opening.finditer(s):
        if m.start() < done:
            continue
        if gt < m.end():
            gt = s.find(">", m.end())
            if gt < 0:
                break  # no tag can end: nothing more to drop
        name = m.group(1)
        end_tag = _first(found, name, _end_tag(name), s, gt + 1)
        end = -1 if end_tag is None else end_tag.end()
        if how.as_browser and given and name.lower() == "svg":
            breakout = _first(found, "", _SVG_BREAKOUT, s, gt + 1)
            if breakout is not None and (end_tag is None or breakout.start() < end_tag.start()):
                end = breakout.start()
        if end < 0:
            if given and not (how.as_browser and name.lower() in _CLOSED_ONLY):
                out.append(s[done : m.start()])
                done = len(s)
                break
            continue
        out.append(s[done : m.start()])
        done = end
    return "".join(out) + s[done:] if out else s


# How a release read markup, by the fingerprint version of the rows it wrote
# (``html_readings``): v7 as now; v6 with what decoding made of a field without a tag of
# its own read again as markup however it looked ("the &lt;dialog&gt; element" as "the
# element") and ruby's readings read inline ("北きた朝ちょう鮮せん"); v5 also with the
# markup that decoding made read as tags in a field of markup of its own too, no
# footnote marker parted from the word before and MathML annotations kept; v4 also
# with ``_V4_DROPPING``; before v4 also with every "/>" ignored (an svg's too); the
# first releases of v1 (before parse version 3) also with the markup decoding made read
# as given (an element left open dropped to the end).
_NOW, _V6, _V5, _V4, _BEFORE_V4, _EARLY_V1 = 7, 6, 5, 4, 3, 2


class _Met:
    """What a reading met that an earlier release's may read otherwise (``html_readings``
    reads those only then)."""

    __slots__ = ("decoded_opening", "self_closed", "v4_otherwise", "v5_otherwise", "v6_otherwise")

    def __init__(self) -> None:
        # what v6 read otherwise: decoded text of no HTML structure read again, ruby
        # text read inline
        self.v6_otherwise = False
        # what v5 read otherwise: markup that decoding made in a field of markup of its
        # own (``_html_to_text``), a footnote marker parted, a MathML annotation dropped
        self.v5_otherwise = False
        self.self_closed = False  # a self-closed tag read as empty (before v4: not)
        self.v4_otherwise = False  # an element _V4_DROPPING reads otherwise
        self.decoded_opening = False  # markup decoding made opens a dropped element


def _one_pass(s: str, given: bool, reading: int, met: _Met | None = None) -> tuple[str, bool]:
    """One pass, and whether ``s`` held a tag (``_markup_removed``); ``given``: ``s`` is
    the markup as given, not what decoding made. ``reading``: whose (``_NOW``...).
    ``met``: None, or what it met (``_Met``)."""
    s = _CONTROLS.sub("", s)
    tagged = False
    if "<" in s:
        s = _COMMENT.sub("", s)
        s = _CDATA.sub(r"\1", s)
        s, tagged = _markup_removed(s, given, reading, met)
    if "&" in s:
        # html.unescape never yields a control character (it drops or maps them).
        s = html.unescape(_AMP_RUN.sub("&", s))
    return _fold(s), tagged


def _regex_bounded(s: str) -> bool:
    """Whether the regex reading of ``_markup_removed`` is bounded on ``s`` (module's docstring): at
    most ``_REGEX_LIMIT`` steps for its "<", each read at worst to the end of the text
    (by at most 32 retries, one per character of a tag's name)."""
    return s.count("<") * len(s) <= _REGEX_LIMIT and not _LONG_NAME.search(s)


def _dropped(s: str, given: bool, linear: bool, how: _Dropping) -> str:
    if linear:
        return _dropped_removed(s, given, how)
    return (how.given if given else how.closed).sub("", s)


def _markup_removed(s: str, given: bool, reading: int, met: _Met | None) -> tuple[str, bool]:
    """``s`` without its tags and dropped elements: by a regex substitution per kind of
    tag where that is bounded (``_regex_bounded``: its speed), else reading each tag's
    end once per text (``_TagEnds``: linear for every input). The same text either way.
    And whether ``s`` held a tag (or an element) that went, a tag cut off by the end of
    the text aside: markup of its own, when ``s`` is the markup as given."""
    given_s = s
    if reading >= _V6 and "<" in s:
        s = _annotations_removed(s)
        if met is not None and s != given_s:
            met.v5_otherwise = True
    linear = not _regex_bounded(s)
    if met is not None and not given and not met.decoded_opening:
        met.decoded_opening = _V4_DROPPING.opening.search(s) is not None
    if reading >= _V4 and "/>" in s and _SELF_CLOSING_NAME.search(s):
        emptied = (_self_closed_emptied_linear if linear else _self_closed_emptied_regex)(s)
        if emptied != s:
            s = emptied
            if met is not None:
                met.self_closed = True
    dropped = _dropped(s, given, linear, _DROPPING if reading >= _V5 else _V4_DROPPING)
    if (
        met is not None
        and _READ_OTHERWISE.search(s)
        and _dropped(s, given, linear, _V4_DROPPING) != dropped
    ):
        met.v4_otherwise = True
    s = dropped
    if reading >= _NOW and "<" in s:
        shown = _ruby_text_removed(s)
        if met is not None and shown != s:
            met.v6_otherwise = True  # v6 read the readings inline
        s = shown
    if reading >= _V6 and "<" in s:
        parted = _FOOTNOTE_MARK.sub(r" \g<0>", s)
        if met is not None and parted != s:
            met.v5_otherwise = True
        s = parted
    # Tags only occur before the last ">": scanning past it could go quadratic.
    end = s.rfind(">") + 1
    head, tail = s[:end], s[end:]
    if head and linear:
        head = _replace_tags(head, _BLOCK_OPEN, _MARK, _TagEnds(head))
        head = _replace_tags(head, _CELL_OPEN, " ", _TagEnds(head))
        head = _any_tags_removed(head)
    elif head:
        head = _ANY_TAG.sub("", _CELL_TAG.sub(" ", _BLOCK_TAG.sub(_MARK, head)))
    return head + _TRAILING_TAG.sub("", tail), head + tail != given_s


def _spans_removed(
    s: str,
    after: re.Pattern[str],
    opening: re.Pattern[str],
    end_of: Callable[[re.Match[str], int], int | None],
) -> str:
    """``s`` without the elements ``opening`` finds after ``after``'s first match, each
    from its opening to the end ``end_of(opening, its ">")`` gives: an index, -1 (this
    one is only a tag: kept) or None (no more to drop). Left to right, so that, with
    ``end_of`` looking each end up once (``_first``), it stays linear."""
    first = after.search(s)
    if first is None:
        return s
    out, done = [], 0
    gt = -1  # the first ">" at or after an opening's name
    for m in opening.finditer(s, first.end()):
        if m.start() < done:
            continue
        if gt < m.end():
            gt = s.find(">", m.end())
            if gt < 0:
                break
        stop = end_of(m, gt)
        if stop is None:
            break
        if stop < 0:
            continue
        out.append(s[done : m.start()])
        done = stop
    return "".join(out) + s[done:] if out else s


def _annotations_removed(s: str) -> str:
    """``s`` without the MathML annotations after its first ``<math>`` (``<annotation>``,
    ``<annotation-xml>``: a formula's TeX source, its content markup), each to its end
    tag, which a browser never shows; one self-closed or left open is only a tag."""
    found: dict[str, tuple[int, re.Match[str] | None]] = {}

    def end_of(m: re.Match[str], gt: int) -> int | None:
        if s[gt - 1] == "/":  # <annotation .../>: empty (MathML honours "/>")
            return -1
        name = m.group(1).lower()
        end_tag = _first(found, name, _end_tag(name), s, gt + 1)
        return -1 if end_tag is None else end_tag.end()

    return _spans_removed(s, _MATH_OPEN, _ANNOTATION_OPEN, end_of)


def _ruby_text_removed(s: str) -> str:
    """``s`` without the ruby text after its first ``<ruby>``: each ``<rt>`` (a reading,
    "北<rt>きた</rt>") and ``<rp>`` (the brackets a browser without ruby shows around it),
    which a browser shows above the base text or not at all, to its end tag or to the
    first tag that ends it when that is left out (``_RUBY_TEXT_END``); one with none
    after it is only a tag."""
    found: dict[str, tuple[int, re.Match[str] | None]] = {}

    def end_of(m: re.Match[str], gt: int) -> int | None:
        end = _first(found, "", _RUBY_TEXT_END, s, gt + 1)
        if end is None:
            return None  # nothing after it ends one: no more ruby text to drop
        return end.end() if end["own"] else end.start()

    return _spans_removed(s, _RUBY_OPEN, _RUBY_TEXT_OPEN, end_of)


def _escaped_markup(s: str) -> bool:
    """Whether ``s``, what decoding made of a field without a tag of its own, is markup
    escaped twice (module's docstring): it holds HTML's structure, an end tag of an
    element it opened before, an element with an attribute, or a line break or rule. A
    start tag alone ("the <dialog> element", "Vec<u8>", "Option<T>"), an end tag alone,
    an address in angle brackets ("<a@b.org>", "<https://...>") is text."""
    opened: set[str] = set()
    for m in _DECODED_TAG.finditer(s):
        name = m.group(2).lower()
        if m.group(1):
            if name in opened:
                return True
        elif name in _BREAKS or _ATTRIBUTE.search(m.group(3)):
            return True
        else:
            opened.add(name)
    return False


def _fold(s: str) -> str:
    """Paragraphs (a blank line, or a block element's mark, between them) with their
    white space folded, joined by a blank line; NFC."""
    if "\r" in s:
        s = _NEWLINES.sub("\n", s)
    s = _BLANK_LINE.sub(_MARK, s)
    paragraphs = (" ".join(p.split()) for p in s.split(_MARK))
    s = "\n\n".join(p for p in paragraphs if p)
    if not s.isascii() and not unicodedata.is_normalized("NFC", s):
        s = unicodedata.normalize("NFC", s)
    return s


def html_to_text(html_or_text: str) -> str:
    """Plain text of an HTML fragment (or of plain text): paragraphs joined by a blank line.

    Tags go; script, style, template, title, iframe, noscript and svg contents go (and
    a head's and an xml's closed, MathML annotations, and ruby's readings); images and
    other void elements leave nothing (a tracking pixel is no change); entities are decoded (in a
    field with a tag of its own, once: "Vec&lt;u8&gt;" is "Vec<u8>"; in one without,
    until no markup is left); a footnote marker is a word of its own; block elements
    become paragraph breaks; white space folds.
    """
    return _html_to_text(html_or_text, _NOW)


def _html_to_text(html_or_text: str, reading: int, met: _Met | None = None) -> str:
    """``html_to_text``, or as the release ``reading`` names read it (``_one_pass``)."""
    try:
        s = html_or_text if isinstance(html_or_text, str) else str(html_or_text)
        for n in range(_MAX_PASSES):
            if n and reading >= _NOW and "<" in s and not _escaped_markup(s):
                # what decoding made is no HTML (module's docstring): text; v6 read it
                # again as markup
                if met is not None and not met.v6_otherwise:
                    met.v6_otherwise = _html_to_text(html_or_text, _V6) != s
                return s
            out, tagged = _one_pass(s, n == 0 or reading <= _EARLY_V1, reading, met)
            if tagged and n == 0 and reading >= _V6:
                # markup of its own: what decoding made of it is text (module's
                # docstring); v5 read it as markup, in the passes after this one
                if met is not None and not met.v5_otherwise and ("<" in out or "&" in out):
                    met.v5_otherwise = _one_pass(out, False, _V5, met)[0] != out
                return out
            # Without "<" or "&" another pass is the identity: stop early.
            if out == s or ("<" not in out and "&" not in out):
                return out
            s = out
        return s
    except Exception:  # never raise on feed text; a regex/codec surprise must not stop a poll
        return normalize_space(str(html_or_text))


def html_readings(html_or_text: str) -> tuple[str, tuple[str, str, str, str] | None]:
    """``html_to_text``, and the texts earlier releases read, where one differs: as
    fingerprint v6 read it where that differs from now (what decoding made of a field
    without a tag of its own read again as markup however it looked, "the
    &lt;dialog&gt; element" as "the element"; ruby's readings inline; v5 read such a
    field and ruby so too), else as v5 read it (markup that decoding made reduced in a
    field of markup of its own too, "Vec&lt;u8&gt;" as "Vec"; a footnote marker joined
    to the word before it; a MathML annotation read); as v4 read it (also an element
    named like svg-icon, a head, an xml or an svg left open: the text after it lost), as
    the releases before v4 read it (the text after a self-closed svg, xml or head lost
    too) and as the first releases of v1 read it (also the text after an element that
    decoding made and left open: "a &lt;script&gt; tag"); else None. For comparing the
    rows they stored (``feedwatch.diff``). Each is read only where it may differ."""
    met = _Met()
    text = _html_to_text(html_or_text, _NOW, met)
    v6 = text
    if met.v6_otherwise:
        # its passes are not this reading's: what the earlier releases read otherwise
        # is what v6's own passes met
        met = _Met()
        v6 = _html_to_text(html_or_text, _V6, met)
    v5 = v6
    if met.v5_otherwise:
        # its passes are not this reading's: what the earlier releases read otherwise
        # is what v5's own passes met
        met = _Met()
        v5 = _html_to_text(html_or_text, _V5, met)
    # the first reading: v6's where it read otherwise than now (then v5's is v6's but
    # where a later pass of v6 met a footnote marker or an annotation), else v5's
    first = v6 if v6 != text else v5
    if not (met.self_closed or met.v4_otherwise or met.decoded_opening):
        return text, None if first == text and v5 == text else (first, v5, v5, v5)
    v4 = _html_to_text(html_or_text, _V4) if met.v4_otherwise else v5
    if met.self_closed or met.v4_otherwise:
        # its passes are not this reading's: whether the first v1 releases differ is
        # whether one of its own later passes met such an opening
        met.decoded_opening = False
        before = _html_to_text(html_or_text, _BEFORE_V4, met)
    else:
        before = v5
    early = _html_to_text(html_or_text, _EARLY_V1) if met.decoded_opening else before
    if first == text and v4 == text and before == text and early == text:
        return text, None
    return text, (first, v4, before, early)


def plain_to_text(text: str) -> str:
    """A field declared plain text, folded as ``html_to_text`` folds text; its "<" and
    "&" are text, unless it looks like HTML (see the module's docstring)."""
    return plain_readings(text)[0]


def plain_readings(text: str) -> tuple[str, tuple[str, str, str, str] | None]:
    """``plain_to_text``, and the texts earlier releases read, or None when those are
    the same (``html_readings``)."""
    s = text if isinstance(text, str) else str(text)
    try:
        if ("<" in s or "&" in s) and _looks_like_html(s):
            return html_readings(s)
        return _fold(_CONTROLS.sub("", s)), None
    except Exception:  # never raise on feed text
        return normalize_space(s), None


_CLOSE_TAG = re.compile(r"</(\w+)>")
_ENTITY_REF = re.compile(r"&#?\w+;")
_TAG_NAME = re.compile(r"</?(\w+)")
_NAMED_ENTITY = re.compile(r"&(\w+);")
# HTML's elements feedparser's guess does not count (they are not in its sanitiser's
# list), but a publisher escaping markup into a title may well write
_MORE_ELEMENTS = frozenset(
    "applet base body embed head html iframe link math meta noscript object script"
    " style svg template title".split()
)


def _looks_like_html(s: str) -> bool:
    """feedparser's guess for an RSS title (a closing tag or an entity reference, every
    tag an HTML element, every entity HTML's), over all of HTML's elements: escaped
    ``<script>alert(1)</script>`` is markup to reduce, not text to keep."""
    if not (_CLOSE_TAG.search(s) or _ENTITY_REF.search(s)):
        return False
    from feedparser.sanitizer import _HTMLSanitizer  # (only a parse calls this)

    known = _HTMLSanitizer.acceptable_elements
    if any(
        t.lower() not in known and t.lower() not in _MORE_ELEMENTS for t in _TAG_NAME.findall(s)
    ):
        return False
    return all(e in html.entities.entitydefs for e in _NAMED_ENTITY.findall(s))
