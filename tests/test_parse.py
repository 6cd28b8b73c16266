"""feedwatch.parse and feedwatch.text: bodies in, snapshots out."""

from __future__ import annotations

import dataclasses
import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import feedparser
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import feedwatch.text as text_module
from feedwatch.model import Enclosure, EntrySnapshot, ParsedFeed
from feedwatch.parse import parse_body
from feedwatch.text import (
    cap,
    html_readings,
    html_to_text,
    normalize_space,
    plain_readings,
    plain_to_text,
)

RSS_CT = {"content-type": "application/rss+xml; charset=utf-8"}
ATOM_CT = {"content-type": "application/atom+xml"}
JSON_CT = {"content-type": "application/feed+json"}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)  # type: ignore[misc]


def rss(items: str, channel: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:content="http://purl.org/rss/1.0/modules/content/">'
        f"<channel><title>Chan</title><link>https://ex.org/</link>{channel}{items}</channel></rss>"
    ).encode()


def atom(entries: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>Atom feed</title>{entries}</feed>"
    ).encode()


def one(parsed: ParsedFeed) -> EntrySnapshot:
    assert parsed.is_feed, parsed.warnings
    assert len(parsed.entries) == 1, parsed.entries
    return parsed.entries[0]


# --------------------------------------------------------------------------
# html_to_text
# --------------------------------------------------------------------------


# Fragments of markup, well and badly formed, that random text is mixed with.
_MARKUP_FRAGMENTS = [
    "<p>",
    "</p>",
    "<br/>",
    "<b>",
    "<script>",
    "</script>",
    "<svg/>",
    "<svg>",
    "</svg>",
    "<svg-icon>",
    "<title-bar x>",
    "<head>",
    "<xml>",
    "</br>",
    "<DIV>",
    "<math>",
    "<annotation>",
    "</annotation>",
    "<sup>",
    "</sup>",
    "<a>",
    "</a>",
    "1",
    "<title/>",
    "<xml/>",
    "&amp;",
    "&lt;",
    "&gt;",
    "&#38;",
    "&nbsp;",
    "<!--",
    "-->",
    '<a href="',
    '">',
    "\n\n",
    "\r\n",
    "<",
    ">",
    "&",
    ";",
    "\u0301",
    "\u037e",
    "<ruby>",
    "</ruby>",
    "<rt>",
    "</rt>",
    "<rp>",
    "</rp>",
]


def _markup_mixes(*extra: str) -> st.SearchStrategy[str]:
    """Random text mixed with ``_MARKUP_FRAGMENTS`` (and ``extra``)."""
    return st.lists(
        st.one_of(st.text(max_size=20), st.sampled_from([*_MARKUP_FRAGMENTS, *extra])),
        max_size=25,
    ).map("".join)


class TestHtmlToText:
    def test_tracking_pixel_leaves_no_trace(self) -> None:
        with_pixel = '<p>Story text.<img src="https://t.example/p.gif?u=123" width="1" height="1" alt="pixel"></p>'
        assert html_to_text(with_pixel) == "Story text."
        assert html_to_text(with_pixel) == html_to_text("<p>Story text.</p>")

    def test_whitespace_folds_and_blocks_become_paragraphs(self) -> None:
        html = "<div>  one\n\t two  </div><p>three<br>four</p><ul><li>a</li><li>b  c</li></ul>"
        assert html_to_text(html) == "one two\n\nthree\n\nfour\n\na\n\nb c"

    def test_inline_tags_do_not_split_words(self) -> None:
        assert (
            html_to_text("un<b>believ</b><i>able</i> <a href='x'>link</a>") == "unbelievable link"
        )

    def test_entities_decoded(self) -> None:
        assert html_to_text("AT&amp;T &lt;3 caf&eacute; &#8364;5 &#x263A; a&nbsp;b") == (
            "AT&T <3 café €5 ☺ a b"
        )

    def test_script_style_head_template_dropped(self) -> None:
        html = (
            "<html><head><title>T</title><style>p{color:red}</style></head><body>"
            "<script>alert('x')</script>Body<template><p>hidden</p></template>"
            "<SCRIPT type='text/javascript'>var a = '<p>';</SCRIPT> text</body></html>"
        )
        assert html_to_text(html) == "Body text"

    def test_unclosed_script_and_cut_tag_dropped(self) -> None:
        assert html_to_text("before<script>evil(); and the rest") == "before"
        assert html_to_text('text <a href="http://x') == "text"

    def test_attribute_values_never_leak(self) -> None:
        out = html_to_text('<a title="NATO > all" href="/missile">x</a><img alt="hypersonic">')
        assert out == "x"

    def test_comments_and_cdata(self) -> None:
        assert html_to_text("a<!-- secret -->b<![CDATA[c]]>") == "abc"

    def test_table_cells_separated(self) -> None:
        assert html_to_text("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>") == (
            "a b\n\nc"
        )

    def test_plain_text_comes_back(self) -> None:
        text = "Plain text, a < b and c > d.\n\nSecond paragraph: 5 & 6."
        assert html_to_text(text) == text
        assert html_to_text("  spaced \t out \n line ") == "spaced out line"

    def test_double_escaped_markup_is_reduced(self) -> None:
        assert (
            html_to_text("&lt;p&gt;Hello &amp;lt;b&amp;gt;x&amp;lt;/b&amp;gt;&lt;/p&gt;")
            == "Hello x"
        )

    def test_a_tag_named_in_the_text_loses_only_itself(self) -> None:
        """A story about HTML names a <script> tag, in a field escaped twice (no tag of
        its own): decoding makes it look like markup, but the text after it is the story
        (and its edits). (In a field of markup of its own it is text, kept whole.)"""
        html = (
            "&lt;p&gt;Put a &lt;code&gt;&amp;lt;script&amp;gt;&lt;/code&gt; tag. Fixed.&lt;/p&gt;"
        )
        assert html_to_text(html) == "Put a tag. Fixed."
        assert html_to_text("&lt;p&gt;a &lt;title&gt; b &lt;style&gt;c&lt;/p&gt;") == "a b c"
        # with no HTML structure (no end tag of an element it opened...), it is text
        assert html_to_text("a &lt;title&gt; b &lt;style&gt;c") == "a <title> b <style>c"
        # escaped and closed, it is still dropped whole, as markup escaped twice is
        assert html_to_text("x &lt;script&gt;evil()&lt;/script&gt; y") == "x y"

    def test_a_self_closed_svg_or_math_is_empty(self) -> None:
        """HTML5 honours "/>" on a foreign element (SVG, MathML) and on any element
        inside one: a browser shows the text after the icon, so it is the entry's (it
        was dropped to the end of the text, with every edit there)."""
        icon = '<p><svg class="icon" width="16" height="16"/> Dnipro strike: 3 dead</p>'
        assert html_to_text(icon + "<p>More.</p>") == "Dnipro strike: 3 dead\n\nMore."
        assert html_to_text("a <SVG/> b <svg viewBox='0 0 1 1' /> c") == "a b c"
        assert html_to_text('a <svg aria-label="x > y"/> b') == "a b"
        assert html_to_text("a <math/> b <math display='block'/> c") == "a b c"
        # inside one: a self-closed svg, and elements of HTML's names, are empty too
        assert html_to_text('a<svg><svg/><path d="M0"/></svg> b') == "a b"
        assert html_to_text("<math><mi>x</mi><title/><mo>=</mo></math> y") == "x= y"
        assert html_to_text("<svg><title/>icon</svg> y") == "y"
        # a slash that ends an unquoted attribute value is the value's: left open
        assert html_to_text("a <svg width=16/> b") == "a"
        assert html_to_text("a <svg/ > b") == "a"
        # an svg open, or escaped once and decoded, as before
        assert html_to_text("a <svg><path/>icon text</svg> b") == "a b"
        assert html_to_text("a <svg> b") == "a"
        assert html_to_text("a &lt;svg/&gt; b &lt;/svg&gt; c") == "a b c"

    def test_a_slash_on_an_html_element_is_read_as_a_browser_shows_it(self) -> None:
        """A browser ignores "/>" on an HTML element: <template/> opens a template,
        whose text it never shows (so <script/>, <style/>, <title/> ...); an <xml/>
        opens an unknown element whose text it shows, and <head/> is ignored in a body
        and holds no text: the text after those two is kept."""
        assert html_to_text("a<xml/> b") == "a b"
        assert html_to_text("a<head/> b") == "a b"
        assert html_to_text("a<template/> b</template> c") == "a c"
        assert html_to_text("a<template/> b") == "a"
        assert html_to_text("a<script/> b") == "a"
        assert html_to_text("a<style/> b</style>c") == "ac"
        assert html_to_text("a<title/> b") == "a"
        # closed, or left open, as before
        assert html_to_text("a<xml><o:p>meta</o:p></xml> b") == "a b"
        assert html_to_text("a<head><title>T</title></head> b") == "a b"

    def test_an_element_named_like_a_dropped_one_keeps_its_text(self) -> None:
        """A tag's name runs to white space, "/" or ">": <svg-icon>, <title-bar> are
        custom elements whose text a browser shows, not an svg or a title. They were
        read as those, left open, and the rest of the text was dropped with them."""
        assert html_to_text('<svg-icon name="x"></svg-icon> Dnipro strike') == "Dnipro strike"
        assert html_to_text("<title-bar>Breaking</title-bar> text") == "Breaking text"
        assert html_to_text('<script-loader src="a.js">Loading</script-loader> Kyiv') == (
            "Loading Kyiv"
        )
        assert html_to_text("<style-guide>Guide</style-guide> x") == "Guide x"
        assert html_to_text("<template-card><p>Card</p></template-card> y") == "Card\n\ny"
        assert (
            html_to_text(
                "<p>a <head-line>H</head-line> <xml-data>d</xml-data> <iframe-x>i</iframe-x>"
                " <NOSCRIPT-Y>n</NOSCRIPT-Y> <svg:svg>s</svg:svg> <title.x>t</title.x> b</p>"
            )
            == "a H d i n s t b"
        )
        # self-closed, or escaped once and decoded
        assert html_to_text("a <svg-icon/> b <title-bar/> c") == "a b c"
        assert html_to_text("&lt;i&gt;a &lt;svg-icon&gt; b &lt;/svg&gt; c&lt;/i&gt;") == "a b c"
        # the elements themselves, as before
        assert html_to_text("a<svg><path/></svg> b <title>T</title>c <script >x") == "a b c"

    def test_a_head_or_xml_left_open_is_only_a_tag(self) -> None:
        """A browser ignores <head> in a body and shows an unknown <xml>'s text: left
        open, each is a tag, not the start of text dropped to the end (closed, their
        contents go as before: a head's title and styles, Word's xml data)."""
        assert html_to_text("<p>Intro</p><head><b>Dnipro strike</b>") == "Intro\n\nDnipro strike"
        assert html_to_text("a <XML>b<p>c") == "a b\n\nc"
        page = "<html><head><title>T</title><style>p{}</style><body><p>Text</p></body></html>"
        assert html_to_text(page) == "Text"
        assert html_to_text("a<xml><o:p>meta</o:p></xml> b <head>h</head>c") == "a b c"
        # escaped once and decoded, as before
        assert html_to_text("&lt;i&gt;a &lt;head&gt; b&lt;/i&gt;") == "a b"

    def test_an_svg_ends_where_a_browser_leaves_it(self) -> None:
        """In an svg, </p>, </br> and the start of an HTML element that cannot be in
        one (<p>, <div>, <b>, <img>...) end it, in a browser: the text after is shown.
        An icon left open before such a tag dropped the rest of the text."""
        icon = '<p><svg class="icon"><path d="M0 0h16"></p> Dnipro strike: 3 dead'
        assert html_to_text(icon) == "Dnipro strike: 3 dead"
        assert html_to_text(icon + "<p>More.</p>") == "Dnipro strike: 3 dead\n\nMore."
        assert html_to_text("a<svg><path/>x<DIV class='y'>y</div>z") == "a\n\ny\n\nz"
        assert html_to_text("a <svg><g> <b>bold</b> c") == "a bold c"
        assert html_to_text("a<svg></br>b") == "a\n\nb"
        # before its end tag too (what is left of it is a stray end tag)
        assert html_to_text("a<svg><path/>x<p>y</svg>z") == "a\n\nyz"
        # no such tag: to its end tag, or left open to the end, as before
        assert html_to_text("a <svg><text>icon</text></svg> b <svg><path d='M0'> c") == "a b"
        assert html_to_text("a <svg><path/><pre-x>p</pre-x><brx> b") == "a"
        # escaped once and decoded: dropped only to its end tag, as before
        assert html_to_text("&lt;p&gt;a &lt;svg&gt; b &lt;/p&gt; c") == "a b\n\nc"

    def test_escaped_markup_in_real_markup_is_text(self) -> None:
        """In a field that holds markup of its own, an escaped "&lt;...&gt;" is text, as a
        browser shows it: a type's parameters, an address, a line of code, "x<y and
        y>z". It was reduced as a tag, so the words were lost and an edit inside them
        (u8 -> u16) alerted nothing."""
        html = (
            "<p>Adds <code>Vec&lt;u8&gt;</code> support. Report bugs to"
            " &lt;security@example.org&gt;.</p><pre><code>&lt;script&gt;init({debug:"
            " true});&lt;/script&gt;</code></pre><p>Upgrade if x&lt;y and y&gt;z holds.</p>"
        )
        assert html_to_text(html) == (
            "Adds Vec<u8> support. Report bugs to <security@example.org>.\n\n"
            "<script>init({debug: true});</script>\n\nUpgrade if x<y and y>z holds."
        )
        assert html_to_text("<p>Use <code>Option&lt;T&gt;</code></p>") == "Use Option<T>"
        assert html_to_text("<p>Contact &lt;me@m.example&gt;</p>") == "Contact <me@m.example>"
        assert html_to_text("A <b>List&lt;String&gt;</b>") == "A List<String>"
        assert html_to_text("<br>See &lt;https://example.org/x&gt;") == (
            "See <https://example.org/x>"
        )
        # "Put a <script> tag": a story about HTML keeps the tag it names
        assert html_to_text("<p>Put a <code>&lt;script&gt;</code> tag at the end.</p>") == (
            "Put a <script> tag at the end."
        )
        # a field all escaped twice (no tag of its own) is still reduced
        assert html_to_text("&lt;p&gt;Hello &lt;b&gt;Vec&lt;/b&gt;&lt;/p&gt;") == "Hello Vec"
        assert html_to_text("&lt;p&gt;Put a &lt;script&gt; tag at the end&lt;/p&gt;") == (
            "Put a tag at the end"
        )
        # but a text whose decoding made no HTML structure is text (a story about HTML)
        assert html_to_text("Put a &lt;script&gt; tag at the end") == (
            "Put a <script> tag at the end"
        )
        # a comment is no tag: such a field is still escaped twice
        assert html_to_text("<!-- x -->&lt;p&gt;Hello&lt;/p&gt;") == "Hello"

    def test_text_naming_a_tag_is_no_markup_escaped_twice(self) -> None:
        """A field without a tag of its own whose decoded text names a tag or a generic
        ("Why the &lt;dialog&gt; element matters": WordPress's Atom title) is text, as a
        browser shows it: it lost the word ("Why the element matters"), or was cut in
        two paragraphs. Markup escaped twice, with an end tag of an element it opened, an
        element with attributes or a line break, is still reduced."""
        for escaped, text in (
            ("Why the &lt;dialog&gt; element matters", "Why the <dialog> element matters"),
            ("Serde now supports Vec&lt;u8&gt; fields", "Serde now supports Vec<u8> fields"),
            ("Why &lt;dialog&gt; matters", "Why <dialog> matters"),
            ("Option&lt;T&gt; and Result&lt;T, E&gt;", "Option<T> and Result<T, E>"),
            ("Report bugs to &lt;a@b.org&gt;", "Report bugs to <a@b.org>"),
            ("See &lt;https://example.org/x&gt;", "See <https://example.org/x>"),
            ("Ends with &lt;/p&gt; alone", "Ends with </p> alone"),
            ("a &lt;b&gt; c &lt;/i&gt; d", "a <b> c </i> d"),
        ):
            assert html_to_text(escaped) == text, escaped
            assert html_readings(escaped)[0] == text, escaped
        for escaped, text in (
            ("&lt;p&gt;Hello&lt;/p&gt;", "Hello"),
            ("&lt;b&gt;Breaking&lt;/b&gt; news", "Breaking news"),
            ("&lt;p&gt;a&lt;br/&gt;b&lt;/p&gt;", "a\n\nb"),
            ("line one&lt;br&gt;line two", "line one\n\nline two"),
            ('&lt;a href="x"&gt;link&lt;/a&gt;', "link"),
            ('see &lt;img src="x"&gt;', "see"),
            ("&lt;P&gt;Hello&lt;/p&gt; &lt;dialog&gt;", "Hello"),
        ):
            assert html_to_text(escaped) == text, escaped

    def test_a_footnote_marker_is_apart_from_the_word_before(self) -> None:
        """A footnote marker (a <sup>, or a link, of digits, brackets, * or †) stuck to a
        word made one word of both: "Dnipro1", and a rule for "Dnipro" missed it."""
        html = (
            '<p>strike on Dnipro<a class="footnote-anchor" href="#footnote-1">1</a> used a'
            " new hypersonic<sup>2</sup> missile</p>"
        )
        assert html_to_text(html) == "strike on Dnipro 1 used a new hypersonic 2 missile"
        assert html_to_text('Kyiv<sup><a href="#fn:1">[1]</a></sup>.') == "Kyiv [1]."
        assert html_to_text("Kyiv<sup id='r'>*</sup> and Lviv<sup>&#8224;</sup>") == (
            "Kyiv * and Lviv †"
        )
        assert html_to_text("x<sup>2</sup> + y<sup>1, 3</sup>") == "x 2 + y 1, 3"
        # after a space or a bracket, nothing to part; words in a <sup>, or a <sub>, as before
        assert html_to_text("Kyiv <sup>1</sup> (<sup>2</sup>)") == "Kyiv 1 (2)"
        assert html_to_text("the 10<sup>th</sup> Brand<sup>TM</sup>") == "the 10th BrandTM"
        assert html_to_text("CO<sub>2</sub> and H<sub>2</sub>O") == "CO2 and H2O"
        assert html_to_text('<a href="/x">Dnipro</a> <a href="/y">Lviv</a>2') == "Dnipro Lviv2"

    def test_a_mathml_annotation_is_not_text(self) -> None:
        """A browser shows no MathML <annotation> (a formula's TeX source) nor
        <annotation-xml>: their text was read after the formula's."""
        tex = (
            "<math><semantics><mrow><msup><mi>e</mi><mrow><mi>i</mi><mi>&#960;</mi></mrow>"
            "</msup><mo>+</mo><mn>1</mn><mo>=</mo><mn>0</mn></mrow>"
            '<annotation encoding="application/x-tex">e^{i\\pi}+1=0</annotation>'
            '<annotation-xml encoding="MathML-Content"><apply><eq/><cn>0</cn></apply>'
            "</annotation-xml></semantics></math> holds"
        )
        assert html_to_text(tex) == "eiπ+1=0 holds"
        # outside a formula it is an unknown element, whose text a browser shows
        assert html_to_text("a <annotation>b</annotation> c") == "a b c"

    def test_ruby_text_is_not_read_into_the_words_it_annotates(self) -> None:
        """Japanese with per-character <ruby> (NHK News Web Easy, learners' and
        children's news): a browser shows 北朝鮮 on the base line and the readings above
        it; they were read inline, "北きた朝ちょう鮮せん", and a rule for 北朝鮮 missed.
        The text of an <rt> (the reading) and an <rp> (its fallback brackets) goes."""
        per_char = (
            "<p><ruby>北<rt>きた</rt>朝<rt>ちょう</rt>鮮<rt>せん</rt></ruby>がミサイルを"
            "<ruby>発<rt>はっ</rt>射<rt>しゃ</rt></ruby></p>"
        )
        assert html_to_text(per_char) == "北朝鮮がミサイルを発射"
        whole = "<ruby>北朝鮮<rt>きたちょうせん</rt></ruby>が<ruby>発射<rt>はっしゃ</rt></ruby>した"
        assert html_to_text(whole) == "北朝鮮が発射した"
        with_rp = (
            "<ruby>北朝鮮<rp>(</rp><rt>きたちょうせん</rt><rp>)</rp></ruby>が"
            "<ruby>発<rp>（</rp><rt>はっ</rt><rp>）</rp>射<rp>（</rp><rt>しゃ</rt><rp>）</rp></ruby>"
        )
        assert html_to_text(with_rp) == "北朝鮮が発射"
        # end tags left out, as HTML allows: a reading ends at the next <rt>/<rp>/<rb>,
        # </ruby>, or the paragraph's end; attributes, case, an <rtc>, a <rb> too
        assert html_to_text("<ruby>北<rt>きた<rp>)</ruby>朝鮮") == "北朝鮮"
        assert html_to_text("<ruby>北<rt>きた</ruby>朝<ruby>鮮<rt>せん</p><p>次") == "北朝鮮\n\n次"
        assert html_to_text('<RUBY><rb>漢</rb><rb>字</rb><RT class="r">かん</RT><rt>じ</ruby>') == (
            "漢字"
        )
        assert html_to_text("<ruby>漢字<rtc><rt>かんじ</rt></rtc></ruby>です") == "漢字です"
        assert html_to_text("<ruby>東京<rt><b>とう</b>きょう</rt></ruby>") == "東京"
        # escaped into an RSS description, read the same
        escaped = "&lt;ruby&gt;北&lt;rt&gt;きた&lt;/rt&gt;朝鮮&lt;/ruby&gt;"
        assert html_to_text(escaped) == "北朝鮮"
        # an <rt> outside a ruby, or left open with nothing to end it, keeps its text
        assert html_to_text("a <rt>b</rt> c") == "a b c"
        assert html_to_text("<ruby>北<rt>きた") == "北きた"
        assert html_to_text("<rubylike>a<rt>b</rt></rubylike>") == "ab"
        assert html_to_text("<ruby>a<rtx>b</rtx></ruby>") == "ab"
        # fingerprint v6 read the readings inline: its reading comes with the text
        assert html_readings(per_char) == (
            "北朝鮮がミサイルを発射",
            ("北きた朝ちょう鮮せんがミサイルを発はっ射しゃ",) * 4,
        )
        assert html_readings(with_rp)[1] == ("北朝鮮(きたちょうせん)が発（はっ）射（しゃ）",) * 4
        assert html_readings("<ruby>漢字<rt></rt></ruby>") == ("漢字", None)

    def test_the_readings_of_the_releases_before_come_with_a_changed_one(self) -> None:
        """``html_readings``: the text, and the texts fingerprint v5, v4, the releases
        before it and the first releases of v1 read where one differs (the diff compares
        the rows each stored with its own)."""
        icon = '<p><svg class="icon"/> Dnipro strike: 3 dead</p>'
        whole = "Dnipro strike: 3 dead"
        assert html_readings(icon) == (whole, (whole, whole, "", ""))
        assert html_readings("Kyiv<xml/> open") == ("Kyiv open", ("Kyiv open",) * 2 + ("Kyiv",) * 2)
        named = '<p><svg-icon name="bolt"></svg-icon> Dnipro strike</p>'
        assert html_readings(named) == ("Dnipro strike", ("Dnipro strike", "", "", ""))
        assert html_readings("a<title-bar>b</title-bar>") == ("ab", ("ab", "a", "a", "a"))
        assert html_readings("a<head>b") == ("ab", ("ab", "a", "a", "a"))
        left_open = '<p><svg class="icon"><path d="M0"></p> Dnipro strike'
        assert html_readings(left_open) == ("Dnipro strike", ("Dnipro strike", "", "", ""))
        # each its own: v4 honoured the self-closed icon, and lost the text after <xml>
        both = "a <svg/> b <xml> c"
        assert html_readings(both) == ("a b c", ("a b c", "a b", "a", "a"))
        assert html_readings("a <math/> b") == ("a b", None)  # read so before too
        assert html_readings("a <svg><path/></svg> b") == ("a b", None)
        in_svg = ("a\n\nx\n\nb", ("a\n\nx\n\nb", "a b", "a b", "a b"))
        assert html_readings("a <svg><p>x</p></svg> b") == in_svg
        assert html_readings("a <head><title>T</title></head> b <xml>c</xml>") == ("a b", None)
        assert html_readings("a <br/> b") == ("a\n\nb", None)
        # v5 reduced what decoding made in a field of markup of its own, parted no
        # footnote marker and read a MathML annotation
        assert html_readings("<p>Vec&lt;u8&gt;</p>") == ("Vec<u8>", ("Vec",) * 4)
        assert html_readings("<p>Dnipro<sup>1</sup></p>") == ("Dnipro 1", ("Dnipro1",) * 4)
        tex = "<math><mi>x</mi><annotation>x</annotation></math>"
        assert html_readings(tex) == ("x", ("xx",) * 4)
        assert html_readings("<p>AT&amp;T &lt; 3</p>") == ("AT&T < 3", None)  # read so before
        # a quoted tag: the first releases of v1 lost the text after it, escaped twice
        # (v5 and the releases before it read it as a tag, as it still is without a
        # tag of the field's own)
        quoted = "<p>Never put a &lt;script&gt; tag inside an SVG file.</p>"
        text = "Never put a tag inside an SVG file."
        assert html_readings(quoted) == (
            "Never put a <script> tag inside an SVG file.",
            (text, text, text, "Never put a"),
        )
        quoted = "&lt;p&gt;Never put a &amp;lt;script&amp;gt; tag inside an SVG file.&lt;/p&gt;"
        assert html_readings(quoted) == (text, (text, text, text, "Never put a"))
        escaped = "&lt;p&gt;a &lt;svg/&gt; b &lt;xml&gt; c&lt;/p&gt;"
        assert html_readings(escaped) == ("a b c", ("a b c",) * 3 + ("a",))
        # v6 (and the releases before it) read decoded text of no HTML structure as
        # markup too: the first reading is v6's, the older ones from v6's own passes
        assert html_readings("a &lt;svg/&gt; b &lt;xml&gt; c") == (
            "a <svg/> b <xml> c",
            ("a b c",) * 3 + ("a",),
        )
        assert html_readings("Why the &lt;dialog&gt; element") == (
            "Why the <dialog> element",
            ("Why the\n\nelement",) * 4,
        )
        assert html_readings("a &lt;style&gt;p{}&lt;/style&gt; b") == ("a b", None)  # closed
        # as the releases before v4 read it in their own later passes: now the script is
        # left open after the icon, then it was in the svg (to its </svg>), and the
        # title after it, decoded, dropped the rest in the first releases of v1 alone
        inside = "a<svg/><script></svg>&lt;title&gt; b"
        assert html_readings(inside) == ("a", ("a", "a", "a b", "a"))
        # a plain field that looks like HTML (feedparser's guess) is read as HTML
        assert plain_readings("<svg/> Dnipro &amp; <b>Kyiv</b>") == (
            "Dnipro & Kyiv",
            ("Dnipro & Kyiv", "Dnipro & Kyiv", "", ""),
        )
        assert plain_readings("a <svg/> b") == ("a <svg/> b", None)  # text, not markup

    @given(
        st.lists(
            st.sampled_from(["a", " ", "<", ">", "&", "/", "script", "title", "lt;", "amp;"]),
            max_size=30,
        ).map("".join)
    )
    def test_plain_text_is_a_fixed_point(self, s: str) -> None:
        """Unless read as HTML with a tag of its own, whose escaped "&lt;/a&gt;" is text
        ("</a>&lt;/a&gt;" reads "</a>", which looks like HTML again)."""
        out = plain_to_text(s)
        as_html = "<" in s and text_module._looks_like_html(s)
        if not (as_html and text_module._one_pass(s, True, text_module._NOW)[1]):
            assert plain_to_text(out) == out
        assert out == out.strip()

    def test_plain_text_keeps_its_angle_brackets(self) -> None:
        assert plain_to_text("How <script> loading affects missile sites") == (
            "How <script> loading affects missile sites"
        )
        assert plain_to_text("Firefox ships the <dialog> element") == (
            "Firefox ships the <dialog> element"
        )
        assert plain_to_text("AT&T <3 and 5 < 6") == "AT&T <3 and 5 < 6"
        # markup escaped into a plain field, as feedparser judges an RSS title
        assert plain_to_text("<b>NATO</b> &amp; co") == "NATO & co"

    def test_nfc(self) -> None:
        assert html_to_text("Dnipro\u0301") == "Dnipr\u00f3"

    def test_control_characters_removed(self) -> None:
        assert html_to_text("a\x00b\x07c &#1;d") == "abc d"

    def test_empty(self) -> None:
        assert html_to_text("") == ""
        assert html_to_text("<p> </p><br/>") == ""

    def test_adversarial_inputs_stay_fast(self) -> None:
        svg = ("<svg " * 20000 + ">/>", '<svg "' * 20001 + ">/>", "<math><title/>" * 20000)
        for bad in (
            "<a " * 20000,
            '<a "' * 20000,
            "&amp;" * 20000,
            "<!--" * 20000,
            "a<b " * 20000,
            *svg,
            "<svg a=" * 20000 + "/>",
        ):
            start = time.perf_counter()
            html_to_text(bad)
            assert time.perf_counter() - start < 1.0, bad[:10]

    def test_malformed_tags_stay_linear(self) -> None:
        """Every tag is read once, left to right: a regex per tag read to the end of the
        text from each "<" of an unclosed one (70 KB of ``<math x``: 17 s in a parse)."""
        n = 15000
        for bad in (
            "<p>Dnipro<br/>strike</p>" + "<math x" * n,
            "<br/>" + "<svg a" * n,
            "<br/><svg " + "a='" * n,
            "<head " * n + "/>",
            "<br/>" + "<xml" * n,
            "<br/>" + "<xml " * n,
            "<br/>" + '<svg a="<svg b ' * n,
            "<br/><svg " + "a=\"<svg '" * n,
            "<br/>" + "<math x" * n + '"' + ">",
            "<math x" * n + "/>" * n,
            "<p x" * n + '"' + ">",
            "<td x" * n + "'" + ">",
            "<a" + '"x' * n + " '" + ">",
            "&lt;svg&gt;" * n,
            "&lt;title&gt;x" * n,
            "a<sup " * n,
            "a<sup>" * n + "1",
            "a<a x>" * n + "1</a>",
            "<br/>a<sup x=" + "[" * n + "1",
            "<math>" + "<annotation>" * n,
            "<math>" + "<annotation x" * n,
            "<math>" + "<annotation-xml/>" * n + "</annotation>",
            "<p>" + "Vec&lt;u8&gt;" * n,
            "<ruby>" + "<rt>" * n,
            "<ruby>" + "<rt x" * n,
            "<ruby>" + "<rp>a</rt>" * n,
            "<ruby>a" + "<rt>b" * n + "</ruby>" * n,
        ):
            start = time.process_time()  # (CPU: a loaded machine's wall clock is no bound)
            html_readings(bad)
            plain_readings(bad)
            assert time.process_time() - start < 1.0, bad[:30]

    @settings(max_examples=300, deadline=None)
    @given(_markup_mixes("<custom-element-name ", '<a"x', "<svg-icon>", "'>"))
    def test_regex_and_linear_readings_agree(self, s: str) -> None:
        """The regex reading (fast, bounded only on ordinary markup) and the linear one
        give the same text, whichever the guard picks."""
        from unittest import mock

        import feedwatch.text as text

        outs = []
        for limit in (0, 1 << 62):  # every pass linear, then every pass by regex
            with (
                mock.patch.object(text, "_REGEX_LIMIT", limit),
                mock.patch.object(text, "_LONG_NAME", re.compile("(?!)")),
            ):
                outs.append((html_readings(s), plain_readings(s)))
        assert outs[0] == outs[1]

    @settings(max_examples=200, deadline=None)
    @given(_markup_mixes())
    def test_never_raises_and_idempotent(self, s: str) -> None:
        """The text of a field without a tag of its own (escaped twice, or text) is
        reduced for good; a field of markup of its own, or one whose decoding made no
        HTML structure, may read as text what looks like markup ("Vec<u8>", "the
        <dialog> element"), which is no markup to read again."""
        _, tagged = text_module._one_pass(s, True, text_module._NOW)
        out = html_to_text(s)
        assert isinstance(out, str)
        if not tagged and "<" not in out:
            assert html_to_text(out) == out
        assert out == out.strip()
        assert "\x00" not in out


def test_normalize_space() -> None:
    assert normalize_space("  a \n\n b\t\u00a0c  ") == "a b c"
    assert normalize_space("") == ""


def test_cap() -> None:
    assert cap("abc", 5) == "abc"
    assert cap("abcdef", 5) == "abcd…"
    assert len(cap("x" * 70000)) == 65536
    assert cap("x" * 70000).endswith("…")
    assert cap("abc", 0) == ""


# --------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------


def test_rss20_full_entry() -> None:
    body = rss(
        "<item><title>NATO &amp; Ukraine</title><link>https://ex.org/a/1</link>"
        '<guid isPermaLink="false">  tag:ex.org,2024:1  </guid>'
        "<author>desk@ex.org (News Desk)</author>"
        "<pubDate>Fri, 22 Nov 2024 10:40:17 GMT</pubDate>"
        "<description>&lt;p&gt;Short &lt;b&gt;summary&lt;/b&gt;&lt;/p&gt;</description>"
        "<content:encoded><![CDATA[<p>Full</p><p>story<img src='https://t/p.gif'></p>]]></content:encoded>"
        "<category>Ukraine war</category><category>Ukraine war</category><category>NATO</category>"
        '<enclosure url="https://ex.org/a.mp3" type="audio/mpeg" length="1234"/>'
        "</item>"
    )
    parsed = parse_body(body, RSS_CT, url="https://ex.org/rss")
    assert parsed.title == "Chan"
    assert parsed.link == "https://ex.org/"
    assert parsed.warnings == ()
    e = one(parsed)
    assert e == EntrySnapshot(
        entry_id="tag:ex.org,2024:1",
        title="NATO & Ukraine",
        link="https://ex.org/a/1",
        author="desk@ex.org (News Desk)",
        published=utc(2024, 11, 22, 10, 40, 17),
        updated=None,
        summary="Short summary",
        content="Full\n\nstory",
        tags=("Ukraine war", "NATO"),
        enclosures=(Enclosure("https://ex.org/a.mp3", "audio/mpeg", 1234),),
    )


def test_rss091_and_092() -> None:
    rss091 = (
        b'<?xml version="1.0"?><!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN"'
        b' "http://my.netscape.com/publish/formats/rss-0.91.dtd"><rss version="0.91"><channel>'
        b"<title>Old</title><link>http://ex.org/</link><description>d</description>"
        b"<item><title>First</title><link>http://ex.org/1</link><description>One</description></item>"
        b"</channel></rss>"
    )
    e = one(parse_body(rss091, {}))
    assert (e.entry_id, e.title, e.link, e.summary) == (None, "First", "http://ex.org/1", "One")
    rss092 = (
        b'<rss version="0.92"><channel><title>c</title><item><title>Two</title>'
        b'<enclosure url="http://ex.org/e.mp3" length="x" type="audio/mpeg"/></item></channel></rss>'
    )
    e = one(parse_body(rss092, {}))
    assert e.title == "Two"
    assert e.enclosures == (Enclosure("http://ex.org/e.mp3", "audio/mpeg", None),)


def test_rss10_rdf() -> None:
    body = (
        b'<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
        b' xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        b'<channel rdf:about="http://ex.org/"><title>RDF</title><link>http://ex.org/</link></channel>'
        b'<item rdf:about="http://ex.org/r/1"><title>R1</title><link>http://ex.org/r/1</link>'
        b"<dc:date>2024-01-02T03:04:05+01:00</dc:date><dc:creator>Ann</dc:creator>"
        b"<description>rdf item</description></item></rdf:RDF>"
    )
    parsed = parse_body(body, {"content-type": "application/rdf+xml"})
    e = one(parsed)
    assert parsed.title == "RDF"
    assert (e.title, e.link, e.author, e.summary) == ("R1", "http://ex.org/r/1", "Ann", "rdf item")
    # dc:date is feedparser's "updated": it is not invented as a publication time
    assert e.updated == utc(2024, 1, 2, 2, 4, 5)


def test_atom10_entry() -> None:
    body = atom(
        "<entry><id> urn:uuid:1 </id>"
        '<title type="html">&lt;b&gt;Bold&lt;/b&gt; &amp;amp; co</title>'
        '<link rel="alternate" href="https://ex.org/e/1"/>'
        '<link rel="enclosure" href="https://ex.org/v.mp4" type="video/mp4" length="99"/>'
        "<author><name>Ann</name></author>"
        "<published>2024-11-22T10:40:17Z</published><updated>2024-11-22T15:56:45.5+00:00</updated>"
        "<summary>Sum</summary>"
        '<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>a</p><p>b</p></div></content>'
        '<category term="t1"/><category scheme="s" label="Only label" term=""/>'
        "</entry>"
    )
    e = one(parse_body(body, ATOM_CT))
    assert e.entry_id == "urn:uuid:1"
    assert e.title == "Bold & co"
    assert e.link == "https://ex.org/e/1"
    assert e.author == "Ann"
    assert e.published == utc(2024, 11, 22, 10, 40, 17)
    assert e.updated == utc(2024, 11, 22, 15, 56, 45)
    assert (e.summary, e.content) == ("Sum", "a\n\nb")
    assert e.tags == ("t1", "Only label")
    assert e.enclosures == (Enclosure("https://ex.org/v.mp4", "video/mp4", 99),)


def test_an_atom_category_is_matched_by_its_term_not_its_label() -> None:
    """As docs/matching.md says: a rule on tags sees an Atom category's term (its label
    only where it has no term), the value stored and shown in alerts."""
    from feedwatch.match import compile_rule, evaluate
    from feedwatch.model import Rule

    body = atom(
        "<entry><id>urn:uuid:1</id><title>T</title>"
        '<category term="tech-ai" label="Artificial intelligence"/>'
        '<category label="Machine learning"/></entry>'
    )
    e = one(parse_body(body, ATOM_CT))
    assert e.tags == ("tech-ai", "Machine learning")

    def hits(term: str) -> bool:
        return evaluate([compile_rule(Rule("r", any=(term,), fields=("tags",)))], e)[0]

    assert hits("tech-ai") and hits("machine learning")
    assert not hits("artificial intelligence")


def test_an_enclosure_without_a_type_has_none() -> None:
    """feedparser gives an Atom link without a type "text/html": an enclosure's type is
    the one the document gave, or none."""
    links = (
        '<link href="https://ex.org/e/1"/>'
        '<link rel="enclosure" href="https://ex.org/a.mp3" length="1234"/>'
        '<link rel="enclosure" href="https://ex.org/b.mp3" type="audio/mpeg"/>'
        '<link rel="enclosure" href="https://ex.org/c.html" type="text/html"/>'
    )
    want = (
        Enclosure("https://ex.org/a.mp3", None, 1234),
        Enclosure("https://ex.org/b.mp3", "audio/mpeg", None),
        Enclosure("https://ex.org/c.html", "text/html", None),
    )
    e = one(parse_body(atom(f"<entry><id>1</id>{links}</entry>"), ATOM_CT))
    assert e.enclosures == want
    assert e.link == "https://ex.org/e/1"  # an alternate link without a type is still the link
    # the same read by feedparser's lenient parser (the body is not well-formed)
    e = one(parse_body(atom(f"<entry><id>1</id><title>a & b</title>{links}</entry>"), ATOM_CT))
    assert (e.enclosures, e.link) == (want, "https://ex.org/e/1")
    items = (
        '<item><guid>1</guid><enclosure url="https://ex.org/a.mp3" length="1234"/>'
        '<enclosure url="https://ex.org/b.mp3" type="audio/mpeg" length="5"/></item>'
    )
    e = one(parse_body(rss(items), {}))
    assert e.enclosures == (
        Enclosure("https://ex.org/a.mp3", None, 1234),
        Enclosure("https://ex.org/b.mp3", "audio/mpeg", 5),
    )


def test_tags_have_their_entities_decoded_in_a_body_that_is_not_well_formed() -> None:
    """One ``&nbsp;`` sends a body to feedparser's lenient parser, which left a category's
    entities undecoded ("R&amp;D"): its tags are the well-formed body's, decoded once."""
    cats = (
        "<category>Science &amp; Tech</category><category>R&amp;D</category>"
        "<category>&#38; &lt;b&gt; &quot;q&apos;</category>"
        "<category><![CDATA[C &amp; D]]></category><category>lit &amp;amp;</category>"
        "<dc:subject>S &amp; T</dc:subject>"
    )
    want = ("Science & Tech", "R&D", "& <b> \"q'", "C &amp; D", "lit &amp;", "S & T")
    for space in ("&#160;", "&nbsp;"):  # well-formed, then not
        item = f"<item><guid>1</guid><description>a{space}b</description>{cats}</item>"
        assert one(parse_body(rss(item), RSS_CT)).tags == want, space


def test_attributes_have_their_xml_references_decoded_in_a_body_that_is_not_well_formed():
    """One ``&nbsp;`` sends a body to feedparser's lenient parser, which decoded only
    ``&amp;`` in an attribute: an enclosure's ``url="e.mp3?a=1&#38;c=3"`` kept ``&#38;``
    (its ``#`` then began a fragment), ``&#9;`` stayed text, and an Atom entry's link,
    its categories and an ``xml:base`` differed from the well-formed body's. Every
    attribute is now the well-formed body's, decoded once."""
    items = (  # (a permalink guid is resolved against xml:base; urljoin drops a tab)
        "<item><guid>1</guid><title>a{sp}b</title><link>http://a.ex/p?a=1&amp;b=2</link>"
        '<enclosure url="http://a.ex/e.mp3?a=1&amp;b=2&#38;c=3&#x26;d=&#233;&#9;"'
        ' type="Audio/MPEG" length="&#53;"/></item>'
        '<item xml:base="http://b.ex/x&#38;y/"><guid>2</guid><title>B</title>'
        '<enclosure url="r&#038;s.mp3" type="audio/mpeg"/></item>'
    )
    entries = (
        '<entry><id>1</id><title>a{sp}b</title><link href="http://a.ex/p?a=1&#38;b=2&#x26;c=&#233;"/>'
        '<link rel="enclosure" href="e.mp3?a=1&#038;b=2&amp;amp;c" type="audio/mpeg" length="3"/>'
        '<category term="T&#38;U &lt;x&gt;"/><category term="" label="L&#38;M &quot;q&apos;"/>'
        "</entry>"
        '<entry xml:base="http://c.ex/q&#38;r/"><id>2</id><title>B</title>'
        '<link href="p&#38;2"/></entry>'
    )
    want_rss = [
        ("http://a.ex/p?a=1&b=2", ("http://a.ex/e.mp3?a=1&b=2&c=3&d=\u00e9", "audio/mpeg", 5), ()),
        ("http://b.ex/x&y/2", ("http://b.ex/x&y/r&s.mp3", "audio/mpeg", None), ()),
    ]
    want_atom = [
        (
            "http://a.ex/p?a=1&b=2&c=\u00e9",
            ("http://a.ex/e.mp3?a=1&b=2&amp;c", "audio/mpeg", 3),
            ("T&U <x>", "L&M \"q'"),
        ),
        ("http://c.ex/q&r/p&2", None, ()),
    ]
    for space in ("&#160;", "&nbsp;"):  # well-formed, then not
        for body, want in (
            (rss(items.format(sp=space)), want_rss),
            (
                atom(entries.format(sp=space)).replace(
                    b"<feed ", b'<feed xml:base="http://a.ex/" '
                ),
                want_atom,
            ),
        ):
            got = [
                (e.link, next(((n.url, n.type, n.length) for n in e.enclosures), None), e.tags)
                for e in parse_body(body, {}).entries
            ]
            assert got == want, (space, body[:60])
    # inline XHTML is written with its attributes escaped again, as the XML parser's is
    xhtml = (
        '<entry><id>1</id><title>a{sp}b</title><content type="xhtml"><div xmlns='
        '"http://www.w3.org/1999/xhtml"><a href="x?a=1&#38;b" title="c&amp;amp;">t</a></div>'
        "</content></entry>"
    )
    html = [
        feedparser.parse(atom(xhtml.format(sp=sp))).entries[0].content[0].value
        for sp in ("&#160;", "&nbsp;")
    ]
    assert html[0] == html[1] == '<a href="x?a=1&amp;b" title="c&amp;amp;">t</a>'


def test_ids_have_their_xml_references_decoded_in_a_body_that_is_not_well_formed() -> None:
    """One ``&nbsp;`` sends a body to feedparser's lenient parser, which left an id's
    references undecoded (``a&amp;b``, an ``rdf:about``'s ``&#38;``): another entry's
    id than the well-formed body's, so every such entry alerted as new when its feed
    stopped being well-formed. Ids are now the well-formed body's, decoded once."""
    ids = {
        "tag:x,2024:a&amp;b": "tag:x,2024:a&b",
        "http://e.com/item?id=1&amp;cat=2": "http://e.com/item?id=1&cat=2",
        "lit &amp;amp; &amp;lt;": "lit &amp; &lt;",  # escaped twice: decoded once
        "&#38; &#x26; &#60;&#x3E; &lt;b&gt; &quot;q&apos;": "& & <> <b> \"q'",
        "<![CDATA[c &amp; d <e> &]]>": "c &amp; d <e> &",
        "&#233;&#xe9; caf\u00e9": "\u00e9\u00e9 caf\u00e9",
    }
    rdf = (
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
        ' xmlns="http://purl.org/rss/1.0/"><channel rdf:about="http://e.com/">'
        "<title>R</title></channel>{}</rdf:RDF>"
    )
    for written, want in ids.items():
        for space in ("&#160;", "&nbsp;"):  # well-formed, then not
            guid = (
                f'<item><guid isPermaLink="false">{written}</guid><title>a{space}b</title></item>'
            )
            assert one(parse_body(rss(guid), RSS_CT)).entry_id == want, (written, space)
            entry = f"<entry><id>{written}</id><title>a{space}b</title></entry>"
            assert one(parse_body(atom(entry), ATOM_CT)).entry_id == want, (written, space)
            if "CDATA" in written:  # no CDATA in an attribute
                continue
            item = f'<item rdf:about="{written}"><title>a{space}b</title></item>'
            body = rdf.format(item).encode()
            assert one(parse_body(body, RSS_CT)).entry_id == want, (written, space)
    # a permalink guid is the entry's link too: decoded the same
    item = "<item><guid>http://e.com/?a=1&amp;b=2</guid><title>a&nbsp;b</title></item>"
    got = one(parse_body(rss(item), RSS_CT))
    assert (got.entry_id, got.link) == ("http://e.com/?a=1&b=2", "http://e.com/?a=1&b=2")
    # JSON Feed's ids are JSON strings: nothing is decoded in them
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "J"}
    doc["items"] = [{"id": "a&amp;b", "content_text": "x"}]
    assert one(parse_body(json.dumps(doc).encode(), JSON_CT)).entry_id == "a&amp;b"


def test_every_author_and_the_atom_feeds_for_an_entry_without_one() -> None:
    """feedparser's `author` is the last author alone (with the first one's email);
    an Atom entry without an author has its feed's (RFC 4287); an RSS channel's
    managingEditor is no author of its items."""
    body = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>A</title>'
        b"<author><name>Feed Jane</name></author>"
        b"<entry><id>1</id><title>a</title><author><name>Jane Doe</name></author>"
        b"<author><name>John Roe</name></author></entry>"
        b"<entry><id>2</id><title>b</title></entry>"
        b"<entry><id>3</id><title>c</title><author><name>Solo</name></author></entry>"
        b"</feed>"
    )
    parsed = parse_body(body, ATOM_CT)
    assert [e.author for e in parsed.entries] == ["Jane Doe, John Roe", "Feed Jane", "Solo"]
    assert parsed.author == "Feed Jane"
    rss_body = (
        b'<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>t</title>'
        b"<managingEditor>ed@x.org (Ed)</managingEditor>"
        b"<item><title>a</title><dc:creator>Jane Doe</dc:creator><dc:creator>John Roe</dc:creator></item>"
        b"<item><title>b</title></item><item><title>c</title><author>al@x.org (Al)</author></item>"
        b"</channel></rss>"
    )
    parsed = parse_body(rss_body, {"content-type": "application/rss+xml"})
    assert [e.author for e in parsed.entries] == ["Jane Doe, John Roe", None, "al@x.org (Al)"]
    assert parsed.author is None


def test_an_aggregated_atom_entry_has_its_sources_author_before_the_feeds() -> None:
    """A Planet: the feed's author is the aggregator's, each entry's <source> names the
    blog it was copied from and its authors, which are the entry's (RFC 4287 4.2.1).
    The entry's own author still comes first, and a source without one changes nothing."""

    def source(authors: str) -> str:
        return f"<source><id>tag:alice</id><title>Alice's blog</title>{authors}</source>"

    alice = "<author><name>Alice Liddell</name><email>alice@example.org</email></author>"
    body = (
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>Planet</title><id>urn:planet</id>'
        "<author><name>Planet Admin</name></author>"
        f"<entry><id>1</id><title>a</title>{source(alice)}</entry>"
        f"<entry><id>2</id><title>b</title>{source(alice + '<author><name>Bob</name></author>')}"
        "</entry>"
        f"<entry><id>3</id><title>c</title><author><name>Solo</name></author>{source(alice)}"
        "</entry>"
        f"<entry><id>4</id><title>d</title>{source('')}</entry>"
        "</feed>"
    )
    parsed = parse_body(body.encode(), ATOM_CT)
    assert [e.author for e in parsed.entries] == [
        "Alice Liddell (alice@example.org)",
        "Alice Liddell, Bob",
        "Solo",
        "Planet Admin",
    ]
    assert parsed.author == "Planet Admin"
    # RSS 2.0's <source> names the channel an item came from: no author
    item = '<item><title>a</title><source url="https://a.example/rss">Alice</source></item>'
    assert one(parse_body(rss(item), RSS_CT)).author is None


def test_an_atom_id_standing_for_the_link_is_resolved_and_kept_as_written() -> None:
    """The id is the feed's own ("post-2"); the link it stands for (no <link>) is
    resolved, as feedparser does: it was left relative, and safe_link dropped it."""
    body = (
        b'<feed xmlns="http://www.w3.org/2005/Atom" xml:base="http://base.example/blog/">'
        b"<title>t</title><entry><id>post-2</id><title>Second</title></entry></feed>"
    )
    e = one(parse_body(body, ATOM_CT, url="http://h.example/feed.xml"))
    assert (e.entry_id, e.link) == ("post-2", "http://base.example/blog/post-2")


def test_atom_content_only_is_not_copied_into_summary() -> None:
    e = one(
        parse_body(
            atom('<entry><id>x</id><content type="html">&lt;p&gt;c&lt;/p&gt;</content></entry>'), {}
        )
    )
    assert (e.summary, e.content) == ("", "c")


def test_atom03_issued_modified() -> None:
    body = (
        b'<feed version="0.3" xmlns="http://purl.org/atom/ns#"><title>Old atom</title>'
        b'<entry><id>tag:ex.org,2004:1</id><title>A03</title><link rel="alternate" type="text/html"'
        b' href="http://ex.org/03"/><issued>2004-01-01T00:00:00Z</issued>'
        b"<modified>2004-01-02T00:00:00Z</modified></entry></feed>"
    )
    parsed = parse_body(body, {})
    e = one(parsed)
    assert parsed.title == "Old atom"
    assert (e.entry_id, e.title, e.link) == ("tag:ex.org,2004:1", "A03", "http://ex.org/03")
    assert (e.published, e.updated) == (utc(2004, 1, 1), utc(2004, 1, 2))


JSON10 = {
    "version": "https://jsonfeed.org/version/1",
    "title": "J",
    "home_page_url": "https://ex.org/blog/",
    "author": {"name": "Feed Author"},
    "items": [
        {
            "id": 123,
            "url": "posts/1",
            "title": "One",
            "content_html": "<p>Hi <script>x()</script>there</p>",
            "content_text": "ignored when html is there",
            "summary": "S",
            "date_published": "2024-11-22T10:40:17Z",
            "tags": ["a", "a", "b", 5],
            "attachments": [
                {"url": "/m.mp3", "mime_type": "audio/mpeg", "size_in_bytes": 10},
                {"mime_type": "no/url"},
            ],
        },
        {"id": "", "content_text": "text\n\nonly", "date_modified": "2024-11-23T00:00:00+02:00"},
    ],
}


def test_json_feed_10() -> None:
    parsed = parse_body(json.dumps(JSON10).encode(), JSON_CT, url="https://ex.org/feed.json")
    assert parsed.is_feed and parsed.warnings == ()
    assert (parsed.title, parsed.link) == ("J", "https://ex.org/blog/")
    first, second = parsed.entries
    assert first == EntrySnapshot(
        entry_id="123",
        title="One",
        link="https://ex.org/blog/posts/1",
        author="Feed Author",
        published=utc(2024, 11, 22, 10, 40, 17),
        updated=None,
        summary="S",
        content="Hi there",
        tags=("a", "b"),
        enclosures=(Enclosure("https://ex.org/m.mp3", "audio/mpeg", 10),),
    )
    assert (second.entry_id, second.link, second.title) == (None, None, "")
    assert second.content == "text\n\nonly"
    assert (second.published, second.updated) == (None, utc(2024, 11, 22, 22))


def test_json_feed_11_authors_and_detection_without_content_type() -> None:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "J11",
        "authors": [{"name": "Top"}],
        "items": [
            {"id": "a", "url": "https://ex.org/a", "authors": [{"name": "X"}, {"name": "Y"}]},
            {"id": "b", "url": "https://ex.org/b"},
        ],
    }
    body = b"\xef\xbb\xbf \n" + json.dumps(doc).encode()
    parsed = parse_body(body, {"content-type": "text/plain"})
    assert [e.author for e in parsed.entries] == ["X, Y", "Top"]


def test_json_not_a_feed_and_invalid() -> None:
    other = parse_body(b'{"version": "1.0", "items": []}', {"content-type": "application/json"})
    assert not other.is_feed
    assert "not a JSON Feed" in other.warnings[0]
    broken = parse_body(b'{"version": "https://jsonfeed.org/version/1", ', JSON_CT)
    assert not broken.is_feed
    assert broken.warnings[0].startswith("invalid JSON")
    array = parse_body(b"[1, 2]", JSON_CT)
    assert not array.is_feed
    deep = parse_body(b"{" + b'"a":[' * 100000, JSON_CT)
    assert not deep.is_feed


def test_the_text_after_a_self_closed_svg_is_read_in_every_format() -> None:
    """An icon written <svg .../> before the text, in an RSS description (escaped), an
    Atom HTML content, a JSON Feed content_html: the text after it is the entry's, and
    ``earlier`` holds the texts as the release before read them (for the rows it
    stored). XHTML content was read right before (no ``earlier``)."""
    icon = '<svg class="icon" width="16" height="16"/>'
    text = f"<p>{icon} Dnipro strike: 3 dead</p>"
    e = one(
        parse_body(
            rss(
                f"<item><guid>1</guid><title>Strike</title><description>{escape(text)}"
                f"</description><content:encoded>{escape('<p>Full<xml/> story</p>')}"
                "</content:encoded></item>"
            ),
            RSS_CT,
        )
    )
    assert (e.title, e.summary, e.content) == ("Strike", "Dnipro strike: 3 dead", "Full story")
    assert e.earlier == (
        ("Strike", "Dnipro strike: 3 dead", "Full story"),
        ("Strike", "Dnipro strike: 3 dead", "Full story"),
        ("Strike", "", "Full"),
        ("Strike", "", "Full"),
    )
    e = one(
        parse_body(
            atom(
                f'<entry><id>1</id><title type="html">{escape("Strike <svg/>2")}</title>'
                f'<content type="html">{escape(text)}</content></entry>'
            ),
            ATOM_CT,
        )
    )
    assert (e.title, e.content, e.earlier) == (
        "Strike 2",
        "Dnipro strike: 3 dead",
        (("Strike 2", "", "Dnipro strike: 3 dead"),) * 2 + (("Strike", "", ""),) * 2,
    )
    xhtml = (
        '<entry><id>1</id><title>Strike</title><content type="xhtml">'
        f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{icon} Dnipro strike: 3 dead</p></div>'
        "</content></entry>"
    )
    e = one(parse_body(atom(xhtml), ATOM_CT))
    assert (e.content, e.earlier) == ("Dnipro strike: 3 dead", None)
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "J",
        "items": [{"id": "1", "title": "Strike", "content_html": text}],
    }
    e = one(parse_body(json.dumps(doc).encode(), JSON_CT))
    assert (e.content, e.earlier) == (
        "Dnipro strike: 3 dead",
        (("Strike", "", "Dnipro strike: 3 dead"),) * 2 + (("Strike", "", ""),) * 2,
    )
    plain = one(parse_body(rss("<item><guid>1</guid><description>d</description></item>"), RSS_CT))
    assert plain.earlier is None


def test_the_text_after_an_element_named_like_a_dropped_one_is_read_in_every_format() -> None:
    """<svg-icon> and <title-bar> before the text, in an RSS description (escaped), an
    Atom HTML title and content, a JSON Feed content_html: the text after them is the
    entry's, and ``earlier`` holds the texts as fingerprint v4 and the releases before it
    read them (the same here: the rest of the field lost)."""
    text = '<p><svg-icon name="bolt"></svg-icon> Dnipro strike: 3 dead</p>'
    e = one(
        parse_body(
            rss(
                f"<item><guid>1</guid><title>Strike</title><description>{escape(text)}"
                f"</description><content:encoded>{escape('<p>Full<head> story</p>')}"
                "</content:encoded></item>"
            ),
            RSS_CT,
        )
    )
    assert (e.title, e.summary, e.content) == ("Strike", "Dnipro strike: 3 dead", "Full story")
    assert (
        e.earlier
        == (("Strike", "Dnipro strike: 3 dead", "Full story"),) + (("Strike", "", "Full"),) * 3
    )
    e = one(
        parse_body(
            atom(
                f'<entry><id>1</id><title type="html">{escape("<title-bar>Strike</title-bar> 2")}'
                f'</title><content type="html">{escape(text)}</content></entry>'
            ),
            ATOM_CT,
        )
    )
    assert (e.title, e.content, e.earlier) == (
        "Strike 2",
        "Dnipro strike: 3 dead",
        (("Strike 2", "", "Dnipro strike: 3 dead"),) + (("", "", ""),) * 3,
    )
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "J",
        "items": [{"id": "1", "title": "Strike", "content_html": text}],
    }
    e = one(parse_body(json.dumps(doc).encode(), JSON_CT))
    assert (e.content, e.earlier) == (
        "Dnipro strike: 3 dead",
        (("Strike", "", "Dnipro strike: 3 dead"),) + (("Strike", "", ""),) * 3,
    )


def test_escaped_markup_and_footnote_markers_are_read_as_a_browser_shows_them() -> None:
    """In an RSS description (CDATA), an Atom HTML content and a JSON Feed content_html:
    "Vec&lt;u8&gt;" inside the field's own markup is "Vec<u8>", a footnote marker is a
    word of its own, a MathML annotation is no text; ``earlier`` holds the texts as
    fingerprint v5 (and the releases before it) read them, for the rows they stored."""
    html = (
        "<p>Adds <code>Vec&lt;u8&gt;</code> to Dnipro<sup>1</sup>.</p>"
        "<math><mi>x</mi><annotation encoding='application/x-tex'>x</annotation></math>"
    )
    text, was = "Adds Vec<u8> to Dnipro 1.\n\nx", "Adds Vec to Dnipro1.\n\nxx"
    e = one(
        parse_body(
            rss(
                f"<item><guid>1</guid><title>Release</title><description><![CDATA[{html}]]>"
                "</description></item>"
            ),
            RSS_CT,
        )
    )
    assert (e.summary, e.earlier) == (text, (("Release", was, ""),) * 4)
    e = one(
        parse_body(
            atom(
                f'<entry><id>1</id><title>Release</title><content type="html">{escape(html)}'
                "</content></entry>"
            ),
            ATOM_CT,
        )
    )
    assert (e.content, e.earlier) == (text, (("Release", "", was),) * 4)
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "J",
        "items": [{"id": "1", "title": "<b>Release</b> of &lt;T&gt;", "content_html": html}],
    }
    e = one(parse_body(json.dumps(doc).encode(), JSON_CT))
    assert (e.title, e.content) == ("Release of <T>", text)
    assert e.earlier == (("Release of", "", was),) * 4
    # a description escaped twice, no tag of its own: reduced as before (no ``earlier``)
    twice = escape("<p>Adds <b>support</b>.</p>")
    e = one(
        parse_body(
            rss(
                f"<item><guid>1</guid><title>R</title><description>{escape(twice)}"
                "</description></item>"
            ),
            RSS_CT,
        )
    )
    assert (e.summary, e.earlier) == ("Adds support.", None)


def test_a_title_naming_a_tag_reads_the_same_in_wordpress_atom_and_rss() -> None:
    """WordPress's Atom feed writes a title as HTML in CDATA, escaped: "Why the
    &lt;dialog&gt; element matters", which a browser shows "Why the <dialog> element
    matters", as its RSS feed's title reads. It read "Why the element matters" (a
    paragraph break for the block element); ``earlier`` holds that reading, fingerprint
    v6's, for the rows it stored."""
    title = "Why the &lt;dialog&gt; element matters"
    e = one(
        parse_body(
            atom(
                f'<entry><id>1</id><title type="html"><![CDATA[{title}]]></title>'
                '<content type="html"><![CDATA[<p>Body.</p>]]></content></entry>'
            ),
            ATOM_CT,
        )
    )
    assert e.title == "Why the <dialog> element matters"
    assert e.earlier == (("Why the\n\nelement matters", "", "Body."),) * 4
    e = one(parse_body(rss(f"<item><guid>1</guid><title>{title}</title></item>"), RSS_CT))
    assert (e.title, e.earlier) == ("Why the <dialog> element matters", None)


def test_fields_declared_plain_text_are_not_cut_at_a_tag_name() -> None:
    """JSON Feed's title and content_text and Atom's type="text" are plain text: a
    "<title>" in them cut the rest of the field away (and every keyword in it); it is
    text, kept as it is."""
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "J",
        "items": [
            {
                "id": "1",
                "title": "How <script> loading affects missile sites",
                "content_text": "Put <title> in the head. Missile news follows.",
            }
        ],
    }
    (j,) = parse_body(json.dumps(doc).encode(), JSON_CT).entries
    assert j.title == "How <script> loading affects missile sites"
    assert j.content == "Put <title> in the head. Missile news follows."
    atom = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>A</title><entry><id>1</id>'
        b'<title type="text">The &lt;title&gt; element and a missile</title>'
        b'<summary type="text">Use &lt;style&gt; for a missile map</summary></entry></feed>'
    )
    (a,) = parse_body(atom, {"content-type": "application/atom+xml"}).entries
    assert (a.title, a.summary) == (
        "The <title> element and a missile",
        "Use <style> for a missile map",
    )


def test_json_feed_without_items_is_an_empty_feed() -> None:
    parsed = parse_body(b'{"version": "https://jsonfeed.org/version/1.1", "title": "t"}', {})
    assert parsed.is_feed and parsed.entries == ()


def test_xml_with_json_content_type_still_parsed_as_xml() -> None:
    e = one(parse_body(rss("<item><title>x</title></item>"), {"content-type": "application/json"}))
    assert e.title == "x"


# --------------------------------------------------------------------------
# Not feeds, encodings, warnings
# --------------------------------------------------------------------------


def test_html_page_is_not_a_feed() -> None:
    page = b"<!DOCTYPE html><html><head><title>Home</title></head><body><p>Hello</p></body></html>"
    for headers in ({"content-type": "text/html; charset=utf-8"}, {}):
        parsed = parse_body(page, headers)
        assert not parsed.is_feed
        assert parsed.entries == ()
        assert parsed.warnings


@pytest.mark.parametrize("body", [b"", b"   \n", b"\x00\xff\xfe garbage \x89PNG", b"plain words"])
def test_empty_or_garbage_is_not_a_feed(body: bytes) -> None:
    parsed = parse_body(body, {})
    assert not parsed.is_feed
    assert parsed.entries == ()
    assert parsed.warnings


def test_latin1_body_labelled_in_content_type() -> None:
    body = (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Caf\xe9</title>'
        "<item><title>Dnipr\xf3 na\xefve \xbd</title></item></channel></rss>"
    ).encode("latin-1")
    parsed = parse_body(body, {"Content-Type": "application/rss+xml; charset=ISO-8859-1"})
    assert parsed.title == "Café"
    assert one(parsed).title == "Dnipró naïve ½"


@pytest.mark.parametrize(
    ("declaration", "headers"),
    [
        ('<?xml version="1.0" encoding="utf-8"?>', RSS_CT),
        ('<?xml version="1.0" encoding="UTF8"?>', {"content-type": "text/xml"}),
        ("", {"content-type": "application/xml"}),
        ("", {}),
    ],
)
def test_bytes_that_are_not_utf8_are_read_as_windows_1252_alone(
    declaration: str, headers: dict[str, str]
) -> None:
    """A UTF-8 document (by its charset, its declaration or by default) keeps its valid
    UTF-8; only each invalid byte is read as windows-1252."""
    body = (
        declaration + '<rss version="2.0"><channel><title>Chan</title>'
        "<item><title>Dnipró strike – update in Zürich</title></item>"
        "<item><title>Caf@ society, 5@@</title></item></channel></rss>"
    ).encode()
    body = body.replace(b"@@", b"\x80").replace(b"@", b"\xe9")
    parsed = parse_body(body, headers, url="http://x/")
    assert [e.title for e in parsed.entries] == [
        "Dnipró strike – update in Zürich",
        "Café society, 5€",
    ]
    assert "bytes that are not UTF-8 (the first at line 1) read as windows-1252" in parsed.warnings


def test_an_unlabelled_document_in_another_encoding_is_read_whole_as_windows_1252() -> None:
    """Few of its bytes form UTF-8 by chance: it is not a UTF-8 document with bad bytes."""
    title = "Привет, мир: новости"
    body = f'<rss version="2.0"><channel><item><title>{title}</title></item></channel></rss>'
    parsed = parse_body(body.encode("koi8-r"), {"content-type": "application/xml"})
    assert one(parsed).title == title.encode("koi8-r").decode("cp1252")


def test_a_document_labelled_in_another_encoding_is_not_repaired() -> None:
    body = '<?xml version="1.0" encoding="windows-1252"?><rss version="2.0"><channel><item><title>Caf\xe9 \u20ac</title></item></channel></rss>'
    for headers in ({"content-type": "application/xml; charset=windows-1252"}, {}):
        parsed = parse_body(body.encode("cp1252"), headers)
        assert one(parsed).title == "Café €" and parsed.warnings == ()


_MISLABELLED = "Über Café crème — résumé"


def _mislabelled(declared: str | None, summary: str = _MISLABELLED, lead: str = "") -> bytes:
    declaration = f'<?xml version="1.0" encoding="{declared}"?>' if declared else ""
    return (
        f'{lead}{declaration}<rss version="2.0"><channel><title>Chan</title>'
        f"<item><guid>1</guid><title>One</title><description>{summary}</description></item>"
        "<item><guid>2</guid><title>Two – Zürich</title><description>plain</description></item>"
        "</channel></rss>"
    ).encode()


@pytest.mark.parametrize(
    ("declared", "headers", "label"),
    [
        ("windows-1252", RSS_CT | {"content-type": "application/rss+xml"}, "windows-1252"),
        ("cp1252", {"content-type": "application/xml"}, "cp1252"),
        ("ISO-8859-15", {}, "ISO-8859-15"),
        ("ISO-8859-1", {"content-type": "application/xml"}, "ISO-8859-1"),
        ("latin1", {"content-location": "https://ex.org/"}, "latin1"),
        ("windows-1252", {"content-type": "text/xml"}, "windows-1252"),
        (None, {"content-type": "application/rss+xml; charset=windows-1252"}, "windows-1252"),
        ("utf-8", {"content-type": "application/xml; charset=cp1252"}, "cp1252"),
        (
            "windows-1252",
            {"content-type": "application/octet-stream; charset=utf-8"},
            "windows-1252",
        ),
    ],
)
def test_a_utf8_body_labelled_in_a_single_byte_encoding_is_read_as_utf8(
    declared: str | None, headers: dict[str, str], label: str
) -> None:
    """A body that is valid UTF-8 holding characters beyond ASCII is UTF-8 whatever a
    single-byte label says: feedparser read it as the label said, every summary in
    mojibake ("Ãœber CafÃ© crÃ¨me â€” rÃ©sumÃ©"), silently."""
    parsed = parse_body(_mislabelled(declared), headers)
    assert [(e.title, e.summary) for e in parsed.entries] == [
        ("One", _MISLABELLED),
        ("Two – Zürich", "plain"),
    ]
    assert f"labelled {label}, but the body is UTF-8: read as UTF-8" in parsed.warnings


@pytest.mark.parametrize("headers", [{}, {"content-location": "https://ex.org/"}])
def test_an_unlabelled_utf8_body_is_read_as_utf8_field_by_field_too(
    headers: dict[str, str],
) -> None:
    """With response headers but no Content-Type nor declaration feedparser read a body
    as ISO-8859-1 and put back each field that was UTF-8 alone: one that also held a
    character reference ("&#233; Café") stayed in mojibake."""
    body = _mislabelled(None, summary="&#233; Café")
    parsed = parse_body(body, headers)
    assert parsed.entries[0].summary == "é Café" and parsed.warnings == ()


def test_a_mislabelled_utf8_body_reads_the_same_whatever_else_it_holds() -> None:
    """A byte windows-1252 leaves undefined (0x9D, in the UTF-8 of "”") made feedparser
    read the whole document as UTF-8, the next body without it as windows-1252 again:
    every entry beyond ASCII flipped between the two readings. A leading line break
    hid the declaration, with the same effect."""
    headers = {"content-type": "application/rss+xml"}
    plain = parse_body(_mislabelled("windows-1252"), headers)
    quoted = parse_body(_mislabelled("windows-1252", _MISLABELLED + " “quoted”"), headers)
    led = parse_body(_mislabelled("windows-1252", lead="\n"), headers)
    assert plain.entries[0].summary == led.entries[0].summary == _MISLABELLED
    assert quoted.entries[0].summary == _MISLABELLED + " “quoted”"
    assert plain.entries[1] == quoted.entries[1] == led.entries[1]


def test_a_mislabelled_utf8_body_with_a_stray_byte_is_still_utf8() -> None:
    """Mostly UTF-8 but for one byte that is not: read as UTF-8, that byte alone as the
    label says (the body read whole as windows-1252 would flip every entry beyond ASCII
    when the byte comes and goes)."""
    body = _mislabelled("ISO-8859-2", summary=_MISLABELLED + " @").replace(b"@", b"\xe8")
    parsed = parse_body(body, {"content-type": "application/xml"})
    assert [e.summary for e in parsed.entries] == [_MISLABELLED + " č", "plain"]
    assert parsed.entries[1].title == "Two – Zürich"
    assert parsed.warnings == (
        "labelled ISO-8859-2, but the body is UTF-8: read as UTF-8",
        "bytes that are not UTF-8 (the first at line 1) read as ISO-8859-2",
    )


@pytest.mark.parametrize("codec", ["cp1252", "iso-8859-15", "iso-8859-2", "koi8-r"])
def test_a_body_in_the_single_byte_encoding_it_names_is_read_so(codec: str) -> None:
    text = {"koi8-r": "Привет, мир", "iso-8859-2": "Żółć gęślą"}.get(codec, "Café crème €")
    body = _mislabelled(codec, summary=text).decode().replace("Two – Zürich", "Two")
    for headers in ({"content-type": "application/xml"}, {}):
        parsed = parse_body(body.encode(codec), headers)
        assert parsed.entries[0].summary == text and parsed.warnings == ()


@pytest.mark.parametrize("charset", ["utf-16", "UTF-16LE", "utf-32"])
@pytest.mark.parametrize("declared", ["utf-8", None, "utf-16"])
def test_a_body_labelled_utf16_that_plainly_is_not_is_read_as_utf8(
    charset: str, declared: str | None
) -> None:
    """No byte-order mark, and "<" then a byte that is not NUL at its start: not UTF-16
    (nor UTF-32), whose every ASCII character has a NUL byte. Read as its declaration
    says (or UTF-8); it failed as not well-formed."""
    for pad in ("", " "):  # an even and an odd length
        body = _mislabelled(declared, summary=_MISLABELLED + pad)
        parsed = parse_body(body, {"content-type": f"application/rss+xml; charset={charset}"})
        assert parsed.entries[0].summary == _MISLABELLED, parsed.warnings
        assert any(
            w.startswith(f"labelled {charset}, but the body is not UTF-16") for w in parsed.warnings
        )
    real = _mislabelled(None).decode().encode("utf-16-le")
    parsed = parse_body(real, {"content-type": "application/rss+xml; charset=utf-16le"})
    assert parsed.entries[0].summary == _MISLABELLED and parsed.warnings == ()


def test_a_gzip_body_says_it_is_compressed() -> None:
    """A gzip body the fetcher did not inflate (compressed twice): "not well-formed XML"."""
    import gzip

    parsed = parse_body(gzip.compress(_mislabelled(None)), {"content-type": "application/xml"})
    assert not parsed.is_feed
    assert parsed.warnings[0].startswith("the body is gzip-compressed")


def test_malformed_xml_with_entries_is_a_feed_with_a_warning() -> None:
    body = rss(
        "<item><title>ok</title><link>https://ex.org/1</link></item><item><title>broken</item>"
    )
    parsed = parse_body(body, RSS_CT)
    assert parsed.is_feed
    assert [e.title for e in parsed.entries][:1] == ["ok"]
    assert parsed.warnings[0].startswith("not well-formed XML at line 1:")


@pytest.mark.parametrize(
    "declaration",
    ["", '<?xml version="1.0" encoding="utf-8"?>\n', "\ufeff", "\ufeff<?xml version='1.0'?>\n"],
)
def test_a_parse_error_names_the_body_s_own_line(declaration: str) -> None:
    """feedparser puts a declaration line before a body without one: an error on line 3
    was said to be on line 4."""
    body = '<rss version="2.0">\n<channel><title>T</title>\n<item><title>Tom & Jerry</title></item>\n</channel></rss>'
    line = 3 + declaration.count("\n")
    for encoding in ("utf-8", "utf-16"):
        parsed = parse_body((declaration + body).encode(encoding), RSS_CT)
        assert parsed.warnings[0].startswith(f"not well-formed XML at line {line}:"), (
            parsed.warnings
        )


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", None])
def test_a_json_feed_with_a_byte_order_mark_is_read_whatever_its_label(
    encoding: str, content_type: str | None
) -> None:
    """A UTF-16 JSON Feed not labelled JSON failed as "not well-formed XML"."""
    doc = {"version": "https://jsonfeed.org/version/1.1", "items": [{"id": "1", "title": "Café"}]}
    body = json.dumps(doc, ensure_ascii=False).encode(encoding)
    if encoding == "utf-16-be":
        body = b"\xfe\xff" + body
    headers = {"content-type": content_type} if content_type else {}
    assert one(parse_body(body, headers)).title == "Café"


def test_feed_with_zero_entries_is_a_feed() -> None:
    parsed = parse_body(rss(""), RSS_CT)
    assert parsed.is_feed and parsed.entries == () and parsed.warnings == ()


def test_entries_without_id_link_title() -> None:
    e = one(parse_body(rss("<item><description>only a description</description></item>"), RSS_CT))
    assert (e.entry_id, e.link, e.title, e.author) == (None, None, "", None)
    assert e.summary == "only a description"
    e = one(parse_body(atom("<entry><id>   </id><title></title></entry>"), {}))
    assert (e.entry_id, e.link, e.title) == (None, None, "")


def test_relative_links_resolved_against_feed_url() -> None:
    body = rss(
        "<item><link>/a/1</link></item><item><link>rel/2</link>"
        '<enclosure url="media/e.mp3" type="audio/mpeg" length="1"/></item>',
        channel="",
    )
    parsed = parse_body(body, RSS_CT, url="https://ex.org/feeds/main.xml")
    assert [e.link for e in parsed.entries] == ["https://ex.org/a/1", "https://ex.org/feeds/rel/2"]
    assert parsed.entries[1].enclosures[0].url == "https://ex.org/feeds/media/e.mp3"
    # a relative Content-Location is relative to the fetch URL
    parsed = parse_body(body, {"Content-Location": "/other/f.xml"}, url="https://ex.org/feeds/x")
    assert parsed.entries[1].link == "https://ex.org/other/rel/2"
    # xml:base wins inside the document
    body = atom('<entry xml:base="https://base.example/d/"><id>1</id><link href="p"/></entry>')
    assert one(parse_body(body, {}, url="https://ex.org/f")).link == "https://base.example/d/p"


def test_max_entries_keeps_document_order() -> None:
    items = "".join(f"<item><guid>g{i}</guid><title>t{i}</title></item>" for i in range(10))
    parsed = parse_body(rss(items), RSS_CT, max_entries=3)
    assert [e.entry_id for e in parsed.entries] == ["g0", "g1", "g2"]
    assert parsed.dropped_entries == 7
    assert "7 entries beyond max_entries ignored" in parsed.warnings
    full = parse_body(rss(items), RSS_CT)
    assert len(full.entries) == 10 and full.dropped_entries == 0
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "items": [{"id": str(i)} for i in range(5)],
    }
    parsed = parse_body(json.dumps(doc).encode(), {}, max_entries=2)
    assert [e.entry_id for e in parsed.entries] == ["0", "1"]
    assert parsed.dropped_entries == 3


# --------------------------------------------------------------------------
# Dates
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pubdate", "expected"),
    [
        ("Fri, 22 Nov 2024 10:40:17 GMT", utc(2024, 11, 22, 10, 40, 17)),
        ("Fri, 22 Nov 2024 10:40:17 +0200", utc(2024, 11, 22, 8, 40, 17)),
        ("Fri, 22 Nov 2024 10:40:17", utc(2024, 11, 22, 10, 40, 17)),  # no zone: UTC
        ("2024-11-22T10:40:17", utc(2024, 11, 22, 10, 40, 17)),
        ("2024-11-22T10:40:17.987654Z", utc(2024, 11, 22, 10, 40, 17)),  # truncated
        ("Sun, 20 Jul 1969 20:17:40 GMT", utc(1969, 7, 20, 20, 17, 40)),  # pre-1970
        ("Mon, 01 Jan 1900 00:00:00 GMT", utc(1900, 1, 1)),
        ("Fri, 31 Dec 9999 23:59:59 GMT", utc(9999, 12, 31, 23, 59, 59)),
        ("Fri, 31 Dec 9999 23:59:59 -1200", None),  # beyond datetime.max in UTC
        ("9999-12-31T23:59:59-12:00", None),
        ("Sat, 01 Jan 0000 00:00:00 GMT", None),
        ("yesterday-ish", None),
        ("", None),
    ],
)
def test_pubdate_edge_cases(pubdate: str, expected: datetime | None) -> None:
    e = one(parse_body(rss(f"<item><title>x</title><pubDate>{pubdate}</pubDate></item>"), RSS_CT))
    assert e.published == expected
    assert e.updated is None
    if e.published is not None:
        assert e.published.tzinfo is timezone.utc and e.published.microsecond == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1764000000", utc(2025, 11, 24, 16)),  # Unix seconds
        ("1764000000123", utc(2025, 11, 24, 16)),  # milliseconds
        ("176400000", utc(1975, 8, 4, 16)),
        ("99999999999", utc(5138, 11, 16, 9, 46, 39)),
        ("20241122", None),
        ("12", None),
        ("123456789012345", None),
        ("2024", utc(2024, 1, 1)),  # a year alone: W3C-DTF
        ("2024-00-10", None),
        ("2024-13-01T10:00:00Z", None),
        ("2023-02-29", None),
        ("2024-11-31T10:00:00Z", None),
        ("2024-11-22T25:00:00Z", None),
        ("2024-11-22T10:61:00Z", None),
        ("2024-02-29", utc(2024, 2, 29)),
        ("2024-11-22T24:00:00Z", utc(2024, 11, 23)),
    ],
)
def test_digits_alone_are_unix_time_and_impossible_dates_are_null(
    text: str, expected: datetime | None
) -> None:
    """feedparser read "1764000000" as 1763-11-30 (year 1764, month 00) and rolled
    impossible dates over; in RSS and in JSON Feed alike."""
    e = one(parse_body(rss(f"<item><title>x</title><pubDate>{text}</pubDate></item>"), RSS_CT))
    assert e.published == expected
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "items": [{"id": "1", "date_modified": text}],
    }
    assert one(parse_body(json.dumps(doc).encode(), JSON_CT)).updated == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Fri, 22 Nov 2024 10:40:17 +530", utc(2024, 11, 22, 5, 10, 17)),  # was 53 hours
        ("Fri, 22 Nov 2024 10:40:17 +0530", utc(2024, 11, 22, 5, 10, 17)),
        ("Fri, 22 Nov 2024 10:40:17 -5", utc(2024, 11, 22, 15, 40, 17)),  # was minutes
        ("Fri, 22 Nov 2024 10:40:17 +01", utc(2024, 11, 22, 9, 40, 17)),
        ("Fri, 22 Nov 2024 10:40:17 +99", utc(2024, 11, 22, 10, 40, 17)),  # no zone: UTC
        ("Mon, 01 Jan 0001 00:00:00 +0100", None),  # was the year 100
        ("Mon, 01 Jan 0001 00:00:00 GMT", utc(1, 1, 1)),
        ("Fri, 22 Nov 2024 10:40:17 EST", utc(2024, 11, 22, 15, 40, 17)),
        ("2024-11-22T10:40:17+0530", utc(2024, 11, 22, 5, 10, 17)),  # minutes were dropped
        ("2024-11-22T10:40:17-0800", utc(2024, 11, 22, 18, 40, 17)),
    ],
)
def test_odd_zones_give_the_right_instant(text: str, expected: datetime | None) -> None:
    e = one(parse_body(rss(f"<item><title>x</title><pubDate>{text}</pubDate></item>"), RSS_CT))
    assert e.published == expected
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "items": [{"id": "1", "date_modified": text}],
    }
    assert one(parse_body(json.dumps(doc).encode(), JSON_CT)).updated == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # ISO 8601's basic format: feedparser read the date alone (midnight)
        ("20241122T104017Z", utc(2024, 11, 22, 10, 40, 17)),
        ("20241122T104017z", utc(2024, 11, 22, 10, 40, 17)),
        ("20241122T104017+0100", utc(2024, 11, 22, 9, 40, 17)),
        ("20241122T104017-05:30", utc(2024, 11, 22, 16, 10, 17)),
        ("20241122T104017.123Z", utc(2024, 11, 22, 10, 40, 17)),
        ("20241122T1040Z", utc(2024, 11, 22, 10, 40)),
        ("20241122T104017", utc(2024, 11, 22, 10, 40, 17)),  # no zone: UTC
        ("20241122T240000Z", utc(2024, 11, 23)),  # as the extended format's
        ("20241131T104017Z", None),  # the 31st of November
        ("20241122T254017Z", None),
        # RFC 822 with fractional seconds: no date before; the fraction is cut off
        ("Fri, 22 Nov 2024 10:40:17.000 +0000", utc(2024, 11, 22, 10, 40, 17)),
        ("Fri, 22 Nov 2024 10:40:17.987 GMT", utc(2024, 11, 22, 10, 40, 17)),
        ("22 Nov 2024 10:40:17.5 +0530", utc(2024, 11, 22, 5, 10, 17)),
        ("Fri, 22 Nov 2024 19:40:17.123 JST", utc(2024, 11, 22, 10, 40, 17)),
        # an hour of 24 is no RFC 822 time (its hours are 00 to 23): no date, as before
        ("Fri, 22 Nov 2024 24:00:00 +0000", None),
    ],
)
def test_iso_basic_format_and_rfc822_fractions_keep_the_time_of_day(
    text: str, expected: datetime | None
) -> None:
    """'20241122T104017Z' was read as midnight, so an edit that only moved the time
    alerted nothing; 'Fri, 22 Nov 2024 10:40:17.000 +0000' (milliseconds, as some
    generators write them) as no date at all: in RSS, Atom and JSON Feed alike."""
    e = one(parse_body(rss(f"<item><title>x</title><pubDate>{text}</pubDate></item>"), RSS_CT))
    assert e.published == expected
    atom = (
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><entry><id>a</id>'
        f"<title>x</title><published>{text}</published><updated>{text}</updated>"
        "</entry></feed>"
    )
    a = one(parse_body(atom.encode(), {"content-type": "application/atom+xml"}))
    assert (a.published, a.updated) == (expected, expected)
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "items": [{"id": "1", "date_published": text, "date_modified": text}],
    }
    j = one(parse_body(json.dumps(doc).encode(), JSON_CT))
    assert (j.published, j.updated) == (expected, expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Fri, 22 Nov 2024 19:40:17 JST", utc(2024, 11, 22, 10, 40, 17)),  # was 19:40:17
        ("Fri, 22 Nov 2024 19:40:17 jst", utc(2024, 11, 22, 10, 40, 17)),
        ("22 Nov 2024 19:40 KST", utc(2024, 11, 22, 10, 40)),
        ("Fri, 22 Nov 2024 11:40:17 CET", utc(2024, 11, 22, 10, 40, 17)),
        ("Sat, 22 Jun 2024 12:40:17 CEST", utc(2024, 6, 22, 10, 40, 17)),
        ("Fri, 22 Nov 2024 12:40:17 EET", utc(2024, 11, 22, 10, 40, 17)),
        ("Fri, 22 Nov 2024 13:40:17 MSK", utc(2024, 11, 22, 10, 40, 17)),
        ("Fri, 22 Nov 2024 21:10:17 ACDT", utc(2024, 11, 22, 10, 40, 17)),  # +10:30
        ("Fri, 22 Nov 2024 21:40:17 AEDT", utc(2024, 11, 22, 10, 40, 17)),
        ("Fri, 22 Nov 2024 00:40:17 HST", utc(2024, 11, 22, 10, 40, 17)),
        ("Fri, 22 Nov 2024 11:40:17 MET", utc(2024, 11, 22, 10, 40, 17)),  # feedparser's
        ("Fri, 22 Nov 2024 19:40:17 +0900 (JST)", utc(2024, 11, 22, 10, 40, 17)),
        # ambiguous names keep their reading: IST and BST as UTC, CST as US Central
        ("Fri, 22 Nov 2024 10:40:17 IST", utc(2024, 11, 22, 10, 40, 17)),
        ("Fri, 22 Nov 2024 10:40:17 BST", utc(2024, 11, 22, 10, 40, 17)),
        ("Fri, 22 Nov 2024 04:40:17 CST", utc(2024, 11, 22, 10, 40, 17)),
        ("Fri, 22 Nov 2024 10:40:17 XYZ", utc(2024, 11, 22, 10, 40, 17)),  # unknown: UTC
    ],
)
def test_rfc822_zone_names_give_their_offset(text: str, expected: datetime | None) -> None:
    """feedparser's and Python's RFC 822 readers know only UT, GMT and the US zones (and
    MET): "19:40:17 JST" was 19:40:17 UTC, nine hours off, in RSS, Atom and JSON Feed."""
    e = one(parse_body(rss(f"<item><title>x</title><pubDate>{text}</pubDate></item>"), RSS_CT))
    assert e.published == expected
    atom = (
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><entry><id>a</id>'
        f"<title>x</title><updated>{text}</updated></entry></feed>"
    )
    assert one(parse_body(atom.encode(), {"content-type": "application/atom+xml"})).updated == (
        expected
    )
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "items": [{"id": "1", "date_modified": text}],
    }
    assert one(parse_body(json.dumps(doc).encode(), JSON_CT)).updated == expected


def _read_everywhere(text: str) -> list[tuple[datetime | None, datetime | None]]:
    """(published, updated) of ``text`` as an RSS pubDate, as an Atom entry's published
    and updated, and as a JSON Feed item's date_published and date_modified."""
    e = one(parse_body(rss(f"<item><title>x</title><pubDate>{text}</pubDate></item>"), RSS_CT))
    atom = (
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><entry><id>a</id>'
        f"<title>x</title><published>{text}</published><updated>{text}</updated>"
        "</entry></feed>"
    )
    a = one(parse_body(atom.encode(), {"content-type": "application/atom+xml"}))
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "items": [{"id": "1", "date_published": text, "date_modified": text}],
    }
    j = one(parse_body(json.dumps(doc).encode(), JSON_CT))
    return [(e.published, None), (a.published, a.updated), (j.published, j.updated)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Tue, 08 Dec 2026 10:40:17 PM GMT", utc(2026, 12, 8, 22, 40, 17)),  # was 10:40:17
        ("Tue, 08 Dec 2026 10:40:17 AM GMT", utc(2026, 12, 8, 10, 40, 17)),
        ("Tue, 08 Dec 2026 12:40:17 PM GMT", utc(2026, 12, 8, 12, 40, 17)),  # noon
        ("Tue, 08 Dec 2026 12:40:17 AM GMT", utc(2026, 12, 8, 0, 40, 17)),  # midnight
        ("Tue, 08 Dec 2026 10:40 pm +0100", utc(2026, 12, 8, 21, 40)),
        ("08 Dec 2026 1:05:00 P.M. EST", utc(2026, 12, 8, 18, 5)),
        ("Tue, 08 Dec 2026 10:40:17.000 PM JST", utc(2026, 12, 8, 13, 40, 17)),
        ("Tue, 08 Dec 2026 10:40:17PM", utc(2026, 12, 8, 22, 40, 17)),
        ("Tue, 08 Dec 2026 13:40:17 PM GMT", utc(2026, 12, 8, 13, 40, 17)),  # no 12-hour time
    ],
)
def test_rfc822_times_with_am_or_pm_are_read_in_24_hours(text: str, expected: datetime) -> None:
    """'Tue, 08 Dec 2026 10:40:17 PM GMT' (some CMSs) was read as 10:40 AM: the alert's
    published time twelve hours off, max_age and ordering judged on it."""
    assert _read_everywhere(text) == [(expected, None), (expected, expected), (expected, expected)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-08T10:40:17 EST", utc(2026, 12, 8, 15, 40, 17)),  # was 10:40:17 UTC
        ("2026-12-08 10:40:17 PST", utc(2026, 12, 8, 18, 40, 17)),  # was midnight
        ("2026-12-08T10:40:17EDT", utc(2026, 12, 8, 14, 40, 17)),
        ("2026-12-08T10:40 cst", utc(2026, 12, 8, 16, 40)),
        ("2026-12-08T19:40:17 JST", utc(2026, 12, 8, 10, 40, 17)),
        ("2026-12-08T11:40:17.250 CET", utc(2026, 12, 8, 10, 40, 17)),
        ("2026-12-08T10:40:17 GMT", utc(2026, 12, 8, 10, 40, 17)),
        ("2026-12-08T10:40:17 UTC", utc(2026, 12, 8, 10, 40, 17)),
        ("2026-12-08T10:40:17 XYZ", utc(2026, 12, 8, 10, 40, 17)),  # unknown: UTC, as before
        # a comma fraction: its zone was dropped
        ("2026-07-01T10:00:00,5+02:00", utc(2026, 7, 1, 8)),
        ("2026-07-01T10:00:00,5-0130", utc(2026, 7, 1, 11, 30)),
        ("2026-07-01T10:00:00,5Z", utc(2026, 7, 1, 10)),
    ],
)
def test_zone_names_after_iso_dates_give_their_offset(text: str, expected: datetime) -> None:
    """'2026-12-08T10:40:17 EST' was read as 10:40:17 UTC (feedparser ignores the name),
    '2026-12-08 10:40:17 PST' as midnight; "10:00:00,5+02:00" lost its zone."""
    assert _read_everywhere(text) == [(expected, None), (expected, expected), (expected, expected)]


_READ_IN = """
import json, sys
from feedwatch.parse import parse_body
texts = json.loads(sys.argv[1])
items = "".join(f"<item><title>{i}</title><pubDate>{t}</pubDate></item>" for i, t in enumerate(texts))
body = f'<rss version="2.0"><channel><title>t</title>{items}</channel></rss>'.encode()
feed = parse_body(body, {"content-type": "application/rss+xml"})
print(json.dumps([str(e.published) for e in feed.entries]))
"""


def test_no_date_is_read_in_the_processs_time_zone() -> None:
    """feedparser's ISO 8601 reader read a date as a local time of the process
    (time.mktime, then time.localtime): a time a DST change skips there came out an hour
    later, so a daemon under TZ=Europe/Berlin and a cron check under TZ=UTC stored such
    an entry at different times, and each re-dated it. Read in a process of each TZ."""
    import os
    import subprocess
    import sys

    texts = [
        "2026-03-29T02:30:00,5",  # a comma fraction: feedparser's ISO reader
        "20260329T023000,5",
        "2026-03-29 02:30 (approx)",
        "2026-03-08T02:30:00,5",  # the US spring gap
        "26-03-29T02:30",  # two-digit year: the ISO reader too
    ]
    root = Path(__file__).resolve().parent.parent
    got = {}
    for tz in ("UTC", "Europe/Berlin", "America/New_York"):
        env = {**os.environ, "TZ": tz, "PYTHONPATH": str(root)}
        r = subprocess.run(
            [sys.executable, "-c", _READ_IN, json.dumps(texts)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        got[tz] = json.loads(r.stdout)
    assert got["UTC"][:4] == [
        "2026-03-29 02:30:00+00:00",
        "2026-03-29 02:30:00+00:00",
        "2026-03-29 02:30:00+00:00",
        "2026-03-08 02:30:00+00:00",
    ]
    assert got["Europe/Berlin"] == got["UTC"] == got["America/New_York"]


@pytest.mark.parametrize(
    ("text", "rss_was", "json_was"),
    [
        ("1732300817", utc(1732, 10, 26), utc(1732, 10, 26)),
        (
            "Fri, 22 Nov 2024 10:40:17 +530",
            utc(2024, 11, 20, 5, 40, 17),
            utc(2024, 11, 20, 5, 40, 17),
        ),
        # Python's RFC 822 reader (an earlier release's after feedparser's, for RSS and
        # Atom only) took one or two digits as minutes; feedparser read nothing
        ("Fri, 22 Nov 2024 10:40:17 -5", utc(2024, 11, 22, 10, 45, 17), None),
        ("Fri, 22 Nov 2024 10:40:17 +01", utc(2024, 11, 22, 10, 39, 17), None),
        ("2024-11-22T10:40:17+0530", utc(2024, 11, 22, 5, 40, 17), utc(2024, 11, 22, 5, 40, 17)),
        ("2024-00-10", utc(2023, 12, 10), utc(2023, 12, 10)),
        # the basic format's date alone, midnight (every release before PARSE_VERSION 19)
        ("20241122T104017Z", utc(2024, 11, 22), utc(2024, 11, 22)),
        ("Fri, 22 Nov 2024 10:40:17.000 +0000", None, None),  # no date: nothing to key
        # read as they were: nothing misread
        ("Fri, 22 Nov 2024 10:40:17 GMT", None, None),
        ("Fri, 22 Nov 2024 10:40:17 +0100", None, None),
        ("2024-11-22T10:40:17Z", None, None),
        ("Fri, 22 Nov 2024 19:40:17 JST", None, None),  # EntrySnapshot.zone's
    ],
)
def test_the_published_time_as_read_before_is_kept(
    text: str, rss_was: datetime | None, json_was: datetime | None
) -> None:
    """An entry keyed by its content has its published time in its key, and a release
    before PARSE_VERSION 9 read some dates otherwise (a Unix time as a date in 1732,
    "+530" as 53 hours, "-5" as minutes): the parse keeps that reading where it differs
    (``EntrySnapshot.misread``), for the diff to find the row it keyed so."""
    e = one(parse_body(rss(f"<item><title>x</title><pubDate>{text}</pubDate></item>"), RSS_CT))
    assert e.misread == rss_was
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "items": [{"id": "1", "date_published": text}],
    }
    assert one(parse_body(json.dumps(doc).encode(), JSON_CT)).misread == json_was


def test_json_dates_out_of_range() -> None:
    doc = {
        "version": "https://jsonfeed.org/version/1",
        "items": [
            {"id": "1", "date_published": "9999-12-31T23:59:59-12:00", "date_modified": "nonsense"},
            {"id": "2", "date_published": "1950-05-06T07:08:09+01:00", "date_modified": 5},
        ],
    }
    first, second = parse_body(json.dumps(doc).encode(), {}).entries
    assert (first.published, first.updated) == (None, None)
    assert (second.published, second.updated) == (utc(1950, 5, 6, 6, 8, 9), None)


def test_updated_is_only_set_by_a_real_updated_element() -> None:
    only_pub = one(
        parse_body(rss("<item><pubDate>Fri, 22 Nov 2024 10:40:17 GMT</pubDate></item>"), RSS_CT)
    )
    assert (only_pub.published, only_pub.updated) == (utc(2024, 11, 22, 10, 40, 17), None)
    both = one(
        parse_body(
            rss(
                "<item><pubDate>Fri, 22 Nov 2024 10:40:17 GMT</pubDate>"
                "<atom:updated>2024-11-22T15:56:45Z</atom:updated></item>"
            ),
            RSS_CT,
        )
    )
    assert (both.published, both.updated) == (
        utc(2024, 11, 22, 10, 40, 17),
        utc(2024, 11, 22, 15, 56, 45),
    )
    only_upd = one(
        parse_body(atom("<entry><id>1</id><updated>2024-11-22T15:56:45Z</updated></entry>"), {})
    )
    assert (only_upd.published, only_upd.updated) == (None, utc(2024, 11, 22, 15, 56, 45))
    bad_upd = one(
        parse_body(
            atom(
                "<entry><id>1</id><published>2024-01-01T00:00:00Z</published><updated>junk</updated></entry>"
            ),
            {},
        )
    )
    assert (bad_upd.published, bad_upd.updated) == (utc(2024, 1, 1), None)


# --------------------------------------------------------------------------
# Hostile input and "no surprise requests"
# --------------------------------------------------------------------------


def _all_text(parsed: ParsedFeed) -> str:
    return repr(parsed) + repr([dataclasses.asdict(e) for e in parsed.entries])


def test_external_entities_are_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    marker = "FEEDWATCH-SECRET-7f3a9c"
    secret.write_text(marker)
    uri = secret.as_uri()
    bodies = [
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "{uri}">]>'
        "<rss version='2.0'><channel><title>&xxe;</title><item><title>t &xxe;</title>"
        "<description>&xxe;</description><guid>&xxe;</guid></item></channel></rss>",
        f'<?xml version="1.0"?><!DOCTYPE feed SYSTEM "{uri}"><feed xmlns="http://www.w3.org/2005/Atom">'
        "<entry><id>1</id><title>x</title></entry></feed>",
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY % p SYSTEM "{uri}"> %p;]>'
        "<rss version='2.0'><channel><item><title>&p;</title></item></channel></rss>",
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x SYSTEM "{secret}">]>'
        "<rss version='2.0'><channel><item><title>&x;</title></item></channel></rss>",
    ]
    for body in bodies:
        parsed = parse_body(body.encode(), RSS_CT, url="https://ex.org/f")
        assert marker not in _all_text(parsed)


@pytest.mark.parametrize("layout", ["one-line", "multi-line", "utf-16", "hidden-after-markup"])
def test_billion_laughs_is_fast_and_not_expanded(layout: str) -> None:
    decls = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    if layout == "hidden-after-markup":  # feedparser's prolog ends at the first "<b"
        decls.insert(0, '<!ENTITY pre "<b>x</b>">')
    sep = "\n" if layout == "multi-line" else ""
    encoding = "utf-16" if layout == "utf-16" else "utf-8"
    text = (
        f'<?xml version="1.0" encoding="{encoding}"?><!DOCTYPE rss [' + sep.join(decls) + "]>"
        "<rss version='2.0'><channel><title>&lol9;</title>"
        "<item><title>&lol9;</title><description>&lol9;</description></item></channel></rss>"
    )
    start = time.perf_counter()
    parsed = parse_body(text.encode(encoding), RSS_CT)
    assert time.perf_counter() - start < 0.5
    assert "lollollol" not in _all_text(parsed)


@pytest.mark.parametrize("kind", ["attributes", "prefixes"])
def test_markup_that_would_take_minutes_to_parse_is_refused_at_once(kind: str) -> None:
    """feedparser is quadratic in one element's attributes and in a document's namespace
    prefixes: 200,000 attributes (2.3 MB) took seven minutes no timeout bounded."""
    if kind == "attributes":
        attrs = " ".join(f'a{i}="x"' for i in range(20000))
        inner = f"<description {attrs}>x</description>"
    else:
        inner = "".join(f'<p{i}:x xmlns:p{i}="urn:x:{i}">y</p{i}:x>' for i in range(2000))
    body = f'<rss version="2.0"><channel><title>t</title><item><title>x</title>{inner}</item></channel></rss>'
    started = time.monotonic()
    parsed = parse_body(body.encode(), {"content-type": "application/rss+xml"})
    assert time.monotonic() - started < 0.5
    assert not parsed.is_feed
    (warning,) = parsed.warnings
    assert "would take minutes" in warning and (
        "20000 attributes" in warning or "2000 namespace prefixes" in warning
    )
    # a rich element well under the limit still parses
    attrs = " ".join(f'a{i}="x"' for i in range(900))
    ok = f'<rss version="2.0"><channel><title>t</title><item><title>x</title><description {attrs}>d</description></item></channel></rss>'
    assert one(parse_body(ok.encode(), {"content-type": "application/rss+xml"})).title == "x"


def test_safe_internal_entities_still_work() -> None:
    body = (
        b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY nbsp "&#160;"><!ENTITY co "ACME">]>'
        b'<rss version="2.0"><channel><item><title>a&nbsp;b &co;</title></item></channel></rss>'
    )
    assert one(parse_body(body, RSS_CT)).title == "a b ACME"


def test_body_that_is_a_path_is_not_opened(tmp_path: Path) -> None:
    feed_file = tmp_path / "feed.xml"
    feed_file.write_bytes(rss("<item><title>from disk</title></item>"))
    for body in (str(feed_file).encode(), feed_file.as_uri().encode()):
        parsed = parse_body(body, {})
        assert not parsed.is_feed
        assert "from disk" not in _all_text(parsed)


@pytest.fixture
def hit_counter() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = rss("<item><title>fetched</title></item>")
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/feed", hits
    finally:
        server.shutdown()
        server.server_close()


def test_body_that_is_a_url_is_not_fetched(hit_counter: tuple[str, list[str]]) -> None:
    url, hits = hit_counter
    parsed = parse_body(url.encode(), {}, url=url)
    assert not parsed.is_feed
    # An XML doctype pointing at the server is not fetched either.
    dtd = f'<?xml version="1.0"?><!DOCTYPE rss SYSTEM "{url}/x.dtd"><rss version="2.0"><channel/></rss>'
    assert parse_body(dtd.encode(), RSS_CT, url=url).is_feed
    assert hits == []


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda s: ("<rss version='2.0'><channel><item>" + s).encode()),
        st.text(max_size=200).map(
            lambda s: ('{"version":"https://jsonfeed.org/version/1",' + s).encode()
        ),
    ),
    st.sampled_from([{}, RSS_CT, JSON_CT, {"content-type": "text/html"}]),
)
def test_parse_body_never_raises(body: bytes, headers: dict[str, str]) -> None:
    parsed = parse_body(body, headers, url="https://ex.org/f")
    assert isinstance(parsed, ParsedFeed)
    for e in parsed.entries:
        for t in (e.published, e.updated):
            assert t is None or t.tzinfo is timezone.utc


def test_feedparser_is_not_asked_for_sax_drivers_that_are_not_installed():
    """Each name left in the list costs every parse a failed import (a sys.path search)."""
    import importlib.util

    import feedparser.api

    import feedwatch.parse  # noqa: F401  (trims the list on import)

    for name in feedparser.api.PREFERRED_XML_PARSERS:
        assert importlib.util.find_spec(name) is not None, name


_URLS = st.sampled_from(
    [
        "",
        "http://example.com/a/b",
        "https://x.org",
        "javascript:alert(1)",
        "/rel",
        "../up",
        "?q=1",
        "#f",
        "mailto:a@b",
        "HTTP://EXAMPLE.COM:80/../x",
        "http:///x",
        "//host/p",
        "[::1",
    ]
) | st.text(max_size=30)


@given(base=_URLS, rel=_URLS | st.none())
def test_feedparser_url_joins_are_remembered_not_changed(base, rel):
    """feedparser's URL joins are kept, not recomputed: the same result, twice."""
    import feedparser.mixin
    import feedparser.urls

    import feedwatch.parse  # noqa: F401  (installs the remembering versions)

    for name in ("_urljoin", "make_safe_absolute_uri"):
        for mod in (feedparser.mixin, feedparser.urls):
            fn = getattr(mod, name)
            args = (base, rel or "") if name == "_urljoin" else (base, rel)
            expected = fn.__wrapped__(*args)
            assert fn(*args) == expected
            assert fn(*args) == expected  # from the cache


_PARAMS = st.dictionaries(
    st.sampled_from(["type", "language", "base", "value", "mode", "base64", "description"]),
    st.none() | st.text(max_size=10) | st.booleans() | st.integers() | st.lists(st.text()),
)


@given(items=_PARAMS)
def test_feedparser_content_params_copy_is_deepcopy(items):
    """feedparser.mixin's copy of its content params: equal to ``copy.deepcopy``'s, of
    the same type, and sharing nothing mutable with the original (a list value goes to
    deepcopy itself)."""
    import copy

    import feedparser.mixin
    import feedparser.util

    import feedwatch.parse  # noqa: F401  (installs it)

    params = feedparser.util.FeedParserDict(items)
    ours = feedparser.mixin.copy.deepcopy(params)
    theirs = copy.deepcopy(params)
    assert type(ours) is type(theirs) is feedparser.util.FeedParserDict
    assert ours == theirs and ours is not params
    for v in ours.values():
        if isinstance(v, list):
            assert all(v is not w for w in dict.values(params))
    assert feedparser.mixin.copy.copy is copy.copy  # the rest of the module is the module's


def test_feedparser_special_keys_are_the_ones_its_source_has():
    """The fast path skips feedparser's own lookup only for keys it does not special-case:
    if a feedparser release adds a case, this fails instead of the parse changing."""
    import ast
    import inspect
    import textwrap

    import feedparser.util

    from feedwatch.parse import FEEDPARSER_SPECIAL_KEYS

    own = feedparser.util.FeedParserDict.__getitem__.__wrapped__
    tree = ast.parse(textwrap.dedent(inspect.getsource(own)))
    found = {
        node.comparators[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        and isinstance(node.left, ast.Name)
        and node.left.id == "key"
        and isinstance(node.ops[0], ast.Eq)
        and isinstance(node.comparators[0], ast.Constant)
    }
    assert found == FEEDPARSER_SPECIAL_KEYS


_FPD_POOL = [
    "category",
    "enclosures",
    "license",
    "updated",
    "updated_parsed",
    "published",
    "published_parsed",
    "tags",
    "links",
    "channel",
    "items",
    "guid",
    "date",
    "description",
    "url",
    "modified",
    "issued",
    "summary",
    "id",
    "title",
    "rel",
]
_FPD_KEYS = st.sampled_from(_FPD_POOL) | st.text(max_size=8)


@given(
    contents=st.dictionaries(
        _FPD_KEYS,
        st.one_of(
            st.integers(),
            st.just([]),
            st.lists(
                st.fixed_dictionaries(
                    {
                        "rel": st.sampled_from(["enclosure", "license", "alternate"]),
                        "href": st.text(max_size=3),
                        "term": st.text(max_size=3),
                    }
                ),
                max_size=2,
            ),
        ),
        max_size=8,
    ),
    key=_FPD_KEYS,
)
def test_feedparser_dict_fast_path_answers_as_feedparser_does(contents, key):
    import warnings

    import feedparser.util

    import feedwatch.parse  # noqa: F401  (installs the fast path)

    cls = feedparser.util.FeedParserDict
    d = cls()
    for k, v in contents.items():
        dict.__setitem__(d, k, [cls(x) for x in v] if isinstance(v, list) else v)

    def outcome(fn, *args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return ("ok", fn(d, *args))
            except Exception as exc:
                return ("raised", type(exc))

    for k in [key, *_FPD_POOL]:
        assert outcome(cls.get, k, "x") == outcome(cls.get.__wrapped__, k, "x")
        assert outcome(cls.__getitem__, k) == outcome(cls.__getitem__.__wrapped__, k)
        assert outcome(cls.__contains__, k) == outcome(cls.__contains__.__wrapped__, k)


def test_long_urls_are_joined_but_not_kept():
    """The URL-join memory stays small: a hostile feed's megabyte links are not kept."""
    import feedparser.urls

    from feedwatch.parse import REMEMBER_MAX_CHARS

    join = feedparser.urls.make_safe_absolute_uri
    join.cache_clear()  # other tests' parses may have filled it
    long_rel = "/" + "a" * (REMEMBER_MAX_CHARS + 10)
    before = join.cache_info().currsize
    assert join("http://example.com/feed", long_rel) == join.__wrapped__(
        "http://example.com/feed", long_rel
    )
    assert join.cache_info().currsize == before
    join("http://example.com/feed", f"/short-{before}")
    assert join.cache_info().currsize == before + 1


_ITEMS = "".join(
    f"<item><guid>urn:{i}</guid><title>Story {i}</title>"
    f"<description><![CDATA[<p>The whole text of story {i}, in several words.</p>]]>"
    "</description></item>"
    for i in range(3)
)
_ENTRIES = "".join(
    f"<entry><id>urn:{i}</id><title>Story {i}</title><updated>2024-11-22T10:40:17Z</updated>"
    f"<summary>The whole text of story {i}, in several words.</summary></entry>"
    for i in range(3)
)
_PHP = b"<br />\n<b>Fatal error</b>:  Allowed memory size exhausted in <b>/var/www/feed.php</b> on line <b>42</b><br />\n"


@pytest.mark.parametrize(("body", "ct"), [(rss(_ITEMS), RSS_CT), (atom(_ENTRIES), ATOM_CT)])
def test_an_entry_the_body_was_cut_short_in_is_left_for_the_next_poll(body, ct):
    """A connection dropped where HTTP could not tell, or a script that died mid-feed:
    the loose parser gave the last entry the half of its text that arrived (an
    "updated" alert, then another when the whole came back). It is dropped, with a
    warning; the entries before it are read."""
    whole = parse_body(body, ct)
    assert len(whole.entries) == 3 and whole.warnings == ()
    cut_at = body.rindex(b"in several")
    last_end = body.rindex(b"</item>" if b"<rss" in body else b"</entry>")
    for cut in (body[:cut_at], body[:cut_at] + _PHP, body[: last_end + 4]):
        got = parse_body(cut, ct)
        assert got.is_feed and got.entries == whole.entries[:2], cut[-80:]
        assert "the body ends inside its last entry (cut short?)" in " ".join(got.warnings)
        assert got.cut_short
    assert not whole.cut_short


def test_a_body_whose_entries_all_closed_keeps_them_all():
    """Not well-formed elsewhere (an unknown entity, no end of the root): every entry
    that closed is whole, and is kept."""
    for body in (
        rss(_ITEMS).replace(b"</channel></rss>", b""),
        rss(_ITEMS.replace("Story 2", "Story &nbsp; 2")),
    ):
        got = parse_body(body, RSS_CT)
        assert [e.entry_id for e in got.entries] == ["urn:0", "urn:1", "urn:2"]
        assert not any("cut short" in w for w in got.warnings)
        # with no end of the root, the document itself was cut short (validators unkept)
        assert got.cut_short == (b"</rss>" not in body)


_MRSS = 'xmlns:media="http://search.yahoo.com/mrss/"'


def _youtube(entries: str) -> bytes:
    """An Atom feed as YouTube serves a channel's (``/feeds/videos.xml``)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<feed xmlns:yt="http://www.youtube.com/xml/schemas/2015" {_MRSS}'
        ' xmlns="http://www.w3.org/2005/Atom">'
        f"<title>A channel</title>{entries}</feed>"
    ).encode()


def test_media_rss_content_is_an_enclosure() -> None:
    """Media RSS ``<media:content>`` (YouTube's Atom feeds, photo and podcast feeds) is
    an enclosure, after the RSS/Atom ones, with its ``fileSize`` as the length: such
    entries alerted with no media link. One URL is one enclosure; a thumbnail is none."""
    video = (
        "<entry><id>yt:video:abc</id><yt:videoId>abc</yt:videoId><title>A video</title>"
        '<link rel="alternate" href="https://www.youtube.com/watch?v=abc"/>'
        "<media:group><media:title>A video</media:title>"
        '<media:content url="https://www.youtube.com/v/abc?version=3"'
        ' type="application/x-shockwave-flash" width="640" height="390"/>'
        '<media:thumbnail url="https://i2.ytimg.com/vi/abc/hqdefault.jpg" width="480"/>'
        "<media:description>About it</media:description></media:group></entry>"
    )
    want = (
        Enclosure("https://www.youtube.com/v/abc?version=3", "application/x-shockwave-flash", None),
    )
    assert one(parse_body(_youtube(video), ATOM_CT)).enclosures == want
    # the same read by feedparser's lenient parser (the body is not well-formed)
    lenient = video.replace("About it", "About it &amp; more &nbsp;")
    assert one(parse_body(_youtube(lenient), ATOM_CT)).enclosures == want

    items = (
        "<item><guid>1</guid>"
        '<enclosure url="https://ex.org/ep1.mp3" type="audio/mpeg" length="1234"/>'
        '<media:content url="https://ex.org/ep1.mp3" type="audio/mpeg" fileSize="99"/>'
        '<media:content url="photos/1.jpg" type="image/jpeg" fileSize="2048" medium="image">'
        "<media:title>A photo</media:title></media:content>"
        '<media:content url="https://ex.org/photos/1.jpg" fileSize="2048"/>'
        '<media:content url="https://ex.org/2.webp" fileSize="2 kB" medium="image"/>'
        '<media:content type="video/mp4"/>'
        '<media:thumbnail url="https://ex.org/t.jpg"/></item>'
    )
    body = rss(items).replace(b"<rss ", f"<rss {_MRSS} ".encode())
    e = one(parse_body(body, RSS_CT, url="https://ex.org/feed/"))
    assert e.enclosures == (
        Enclosure("https://ex.org/ep1.mp3", "audio/mpeg", 1234),
        Enclosure("https://ex.org/feed/photos/1.jpg", "image/jpeg", 2048),
        Enclosure("https://ex.org/photos/1.jpg", None, 2048),
        Enclosure("https://ex.org/2.webp", None, None),
    )


@pytest.mark.parametrize(
    ("written", "title", "summary"),
    [
        ("AT&T wins", "AT&T wins", "AT&T wins"),
        ("Q&A session", "Q&A session", "Q&A session"),
        ("P&G's", "P&G's", "P&G's"),
        # a legacy name running on into a letter, a digit or "=": as written (in the
        # description, HTML, the HTML reads it as a browser reads HTML's text)
        ("a&ampb", "a&ampb", "a&b"),
        ("x&nbspy", "x&nbspy", "x y"),
        ("&copy2024", "&copy2024", "©2024"),
        ("&notit", "&notit", "¬it"),
        ("a&amp=1", "a&amp=1", "a&=1"),
        ("a &#38 b", "a & b", "a & b"),
        ("&copy 2024", "© 2024", "© 2024"),
        ("x&nbsp y", "x y", "x y"),
        ("a&amp b", "a& b", "a& b"),
        ("&hellip x", "&hellip x", "&hellip x"),
        ("end &", "end &", "end &"),
    ],
)
def test_a_bare_amp_in_a_lenient_body_reads_as_a_browser_reads_it(written, title, summary):
    """feedparser's lenient parser took "&" and a name for a reference, ";" or not, and
    wrote an unknown one back with a ";": "AT&T wins" read "AT&T; wins". Read as HTML5
    reads an attribute now: an unknown name stays as written, a legacy name that is the
    whole name, no "=" after it, is its character; a literal "&" as the same feed reads
    once its publisher escaped each "&"."""
    body = (
        '<rss version="2.0"><channel><title>S&nbsp;x</title><item><guid>1</guid>'
        f"<title>{written}</title><description>{written}</description></item></channel></rss>"
    ).encode()
    parsed = parse_body(body, {})
    assert any("not well-formed" in w for w in parsed.warnings)
    e = parsed.entries[0]
    assert (e.title, e.summary) == (title, summary)
    if title == written:  # each "&" a literal one: as the feed reads with its XML fixed
        fixed = parse_body(body.replace(b"&", b"&amp;").replace(b"&amp;nbsp;", b"&#160;"), {})
        assert not fixed.warnings
        assert (fixed.entries[0].title, fixed.entries[0].summary) == (title, summary)
    # in CDATA, as before: a plain title as written
    cdata = body.replace(
        f"<title>{written}</title>".encode(), f"<title><![CDATA[{written}]]></title>".encode()
    )
    assert parse_body(cdata, {}).entries[0].title == written


@pytest.mark.parametrize(
    "query",
    [
        "?ref=rss&region=eu",
        "?id=9&param=x",
        "?id=9&section=world",
        "?a=1&not=2&notes=3",
        "?a=1&currency=EUR",
        "?a=1&times=2&timestamp=3",
        "?a=1&degrees=4&deg=5",
        "?a=1&copyright=no&copy=1",
        "?a=1&ampb=2&amp=3",
    ],
)
def test_a_bare_amp_in_a_url_of_a_lenient_body_reads_as_written(query):
    """An unescaped "&" in a URL is the commonest reason a feed is not well-formed. The
    longest legacy name that starts a name was read as its character: a link
    "?ref=rss&region=eu" was "?ref=rss\u00aegion=eu", a guid "?id=9&param=x"
    "?id=9\u00b6m=x", "&section=" "\u00a7ion=": a dead link in every alert, and the
    entry new again when the publisher fixed the XML. As HTML5 reads an attribute: a
    legacy name without its ";" followed by a letter, a digit or "=" is as written."""
    link = f"https://ex.org/p/9{query}"
    guid = f"https://ex.org/g{query}"
    body = (
        '<rss version="2.0"><channel><title>S&nbsp;x</title><item>'
        f'<guid isPermaLink="false">{guid}</guid><title>T {query}</title>'
        f"<link>{link}</link></item></channel></rss>"
    ).encode()
    parsed = parse_body(body, {})
    assert any("not well-formed" in w for w in parsed.warnings)
    e = parsed.entries[0]
    assert (e.entry_id, e.link, e.title) == (guid, link, f"T {query}")
    # as the same feed reads once its publisher escaped each "&"
    fixed = parse_body(body.replace(b"&", b"&amp;").replace(b"&amp;nbsp;", b"&#160;"), {})
    assert not fixed.warnings
    f = fixed.entries[0]
    assert (f.entry_id, f.link, f.title) == (e.entry_id, e.link, e.title)


@pytest.mark.parametrize(
    "text", ["10:00:00", "T10:00:00", "10:00", "10:00:00Z", "T10:00:00+02:00", "--12-01", "---01"]
)
def test_a_date_without_its_day_is_no_date(text: str) -> None:
    """'10:00:00', 'T10:00:00' and '--12-01' were read on the day of the poll (feedparser
    took the missing year, month and day from the clock), so each day's poll re-dated
    the entry: after the parse cache was dropped it alerted as updated, and again the
    next day. A date without its day is none."""
    assert _read_everywhere(text) == [(None, None), (None, None), (None, None)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T10:00:00+15", utc(2026, 12, 1, 10)),  # was 2026-11-30T19:00Z
        ("2026-12-01T10:00:00+1500", utc(2026, 12, 1, 10)),
        ("2026-12-01T10:00:00-9959", utc(2026, 12, 1, 10)),  # was 2026-12-05T13:59Z
        ("2026-12-01T10:00:00+24:00", utc(2026, 12, 1, 10)),  # was 2026-11-30T10:00Z
        ("2026-12-01T10:00:00+14:01", utc(2026, 12, 1, 10)),
        ("20261201T100000+1500", utc(2026, 12, 1, 10)),
        ("2026-12-01T10:00:00,5+15:00", utc(2026, 12, 1, 10)),
        ("Tue, 01 Dec 2026 10:00:00 +1500", utc(2026, 12, 1, 10)),
        ("Tue, 01 Dec 2026 10:00:00 -9959", utc(2026, 12, 1, 10)),
        ("Tue, 01 Dec 2026 10:00:00 PM +1500", utc(2026, 12, 1, 22)),
        ("Tue, 01 Dec 2026 10:00:00 +15", utc(2026, 12, 1, 10)),  # as before
        ("2026-12-01T10:00:00+14:00", utc(2026, 11, 30, 20)),  # a real zone: as before
        ("2026-12-01T10:00:00-14:00", utc(2026, 12, 2)),
        ("2026-12-31", utc(2026, 12, 31)),  # a date alone, no zone
    ],
)
def test_a_zone_beyond_14_hours_is_utc_in_every_form(text: str, expected: datetime) -> None:
    """Only an RFC 822 zone of one or two digits ('+15') followed the documented rule (a
    zone beyond 14 hours is UTC): '+1500', '-9959' and ISO 8601's '+15', '+24:00' were
    read as written, the entry dated days off."""
    assert _read_everywhere(text) == [(expected, None), (expected, expected), (expected, expected)]
