"""`feedwatch import-opml`: OPML files as real feed readers export them, to a config that validates."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from feedwatch.config import load_config
from feedwatch.opml import OpmlError, config_string, parse_opml, toml_string
from tests.helpers import bare_env, run_feedwatch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BASE_CONFIG = """\
[rules.missiles]
any = ["hypersonic"]

[sinks.log]
type = "jsonl"
path = "alerts.jsonl"

[[feeds]]
name = "LWN.net"
url = "https://example.com/already-here.xml"
match = ["missiles"]
"""

# Feedly (OPML 1.0): folders one level deep, text and title, type="rss", the same feed in
# two folders, entities in titles (&amp; and a numeric one).
FEEDLY = """\
<?xml version="1.0" encoding="UTF-8"?>
<opml version="1.0">
    <head>
        <title>Alex subscriptions in feedly Cloud</title>
    </head>
    <body>
        <outline text="Tech" title="Tech">
            <outline type="rss" text="Ars Technica" title="Ars Technica" xmlUrl="https://feeds.arstechnica.com/arstechnica/index" htmlUrl="https://arstechnica.com"/>
            <outline type="rss" text="AT&amp;T Tech Channel" title="AT&amp;T Tech Channel" xmlUrl="https://example.com/att.xml" htmlUrl="https://example.com/"/>
            <outline type="rss" text="Simon Willison&#8217;s Weblog" title="Simon Willison&#8217;s Weblog" xmlUrl="https://simonwillison.net/atom/everything/" htmlUrl="https://simonwillison.net/"/>
        </outline>
        <outline text="News" title="News">
            <outline type="rss" text="Ars Technica" title="Ars Technica" xmlUrl="https://feeds.arstechnica.com/arstechnica/index" htmlUrl="https://arstechnica.com"/>
            <outline type="rss" text="The Moscow Times" title="The Moscow Times" xmlUrl="https://www.themoscowtimes.com/rss/news" htmlUrl="https://www.themoscowtimes.com"/>
        </outline>
    </body>
</opml>
"""

# An older reader (tt-rss / Google Reader era): nested folders, type missing, lower-case
# attribute names, a title escaped twice, an entity XML does not know, a bare & in a URL,
# a feed:// URL, and a title with quotes, a backslash and a dollar sign.
HANDMADE = """\
<?xml version="1.0" encoding="utf-8"?>
<opml version="1.1">
<head><title>My feeds</title><dateCreated>Fri, 22 Nov 2024 10:40:17 GMT</dateCreated></head>
<body>
<outline text="Reading">
  <outline text="Programming">
    <outline text="Rust">
      <outline text="This Week in Rust" xmlUrl="https://this-week-in-rust.org/rss.xml"/>
    </outline>
    <outline text="Tom &amp;amp; Jerry&nbsp;Weekly" xmlurl="https://example.org/feed?format=rss&page=1"/>
    <outline text="Old &quot;quoted&quot; \\ blog $5 ${HOME}" xmlUrl="feed://example.net/blog/rss"/>
  </outline>
</outline>
<outline text="Unfiled feed" type="rss" xmlUrl="https://example.org/unfiled.xml"/>
</body>
</opml>
"""

# Not feeds, bad URLs, and a name clash.
TROUBLE = """\
<?xml version="1.0"?>
<opml version="2.0">
<head><title>Trouble</title></head>
<body>
  <outline text="A web page" type="link" url="https://example.org/page"/>
  <outline text="More subscriptions" type="include" url="https://example.org/more.opml"/>
  <outline text="Empty folder"/>
  <outline text="Gopher" type="rss" xmlUrl="gopher://example.org/feed"/>
  <outline text="Relative" type="rss" xmlUrl="/feed.xml"/>
  <outline text="Spaced" type="rss" xmlUrl="https://example.org/a feed.xml"/>
  <outline text="Script" type="rss" xmlUrl="javascript:alert(1)"/>
  <outline text="Good" type="rss" xmlUrl="https://example.org/good.xml"/>
  <outline text="Good" type="rss" xmlUrl="https://example.org/good2.xml"/>
  <outline text="" type="rss" xmlUrl="https://example.org/untitled/feed.xml"/>
</body>
</opml>
"""

BILLION_LAUGHS = """\
<?xml version="1.0"?>
<!DOCTYPE opml [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<opml version="1.0"><body><outline text="&lol9;" xmlUrl="https://example.org/f.xml"/></body></opml>
"""

EXTERNAL_ENTITY = """\
<?xml version="1.0"?>
<!DOCTYPE opml [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<opml version="1.0"><body><outline text="&secret;" xmlUrl="https://example.org/f.xml"/></body></opml>
"""


def fw(tmp: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_feedwatch(*args, env=bare_env(tmp, LANG="C.UTF-8"), cwd=tmp, stdin=stdin)


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


def imported(tmp: Path, opml: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run import-opml, append its output to a config with a rule, a sink and a feed."""
    src = write(tmp, "subscriptions.opml", opml)
    r = fw(tmp, *extra, "import-opml", str(src))
    cfg = tmp / "config.toml"
    if not cfg.exists():
        cfg.write_text(BASE_CONFIG, encoding="utf-8")
    with cfg.open("a", encoding="utf-8") as f:
        f.write(r.stdout)
    return r, cfg


def validate(tmp: Path, cfg: Path) -> str:
    r = fw(tmp, "-c", str(cfg), "validate")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def feeds_of(cfg: Path) -> dict[str, dict]:
    data = tomllib.loads(cfg.read_text(encoding="utf-8"))
    return {f["name"]: f for f in data["feeds"]}


def test_feedly_export_nested_folders_duplicates_and_entities(tmp_path):
    r, cfg = imported(tmp_path, FEEDLY)
    assert r.returncode == 0, r.stderr
    assert validate(tmp_path, cfg) == "ok: 5 feeds, 1 sinks, 1 rules"
    feeds = feeds_of(cfg)
    ars = feeds["Ars Technica"]
    assert ars["url"] == "https://feeds.arstechnica.com/arstechnica/index"
    assert ars["tags"] == ["Tech", "News"]  # in two folders: imported once, both tags
    assert feeds["AT&T Tech Channel"]["tags"] == ["Tech"]
    assert "Simon Willison\u2019s Weblog" in feeds
    assert feeds["The Moscow Times"]["tags"] == ["News"]
    # the duplicate is reported with its line and the first one's line
    assert (
        'subscriptions.opml:13: duplicate "Ars Technica": same URL as "Ars Technica" (line 8)'
        in r.stderr
    )
    assert "imported 4 feeds (1 duplicates" in r.stderr
    assert "Alex subscriptions in feedly Cloud" in r.stdout  # the heading comment


def test_older_reader_export_missing_type_bad_entities_and_escaping(tmp_path):
    r, cfg = imported(tmp_path, HANDMADE)
    assert r.returncode == 0, r.stderr
    assert validate(tmp_path, cfg) == "ok: 5 feeds, 1 sinks, 1 rules"
    feeds = feeds_of(cfg)
    assert feeds["This Week in Rust"]["tags"] == ["Reading", "Programming", "Rust"]
    tom = feeds["Tom & Jerry Weekly"]  # &amp;amp; decoded twice, &nbsp; folded to a space
    assert tom["url"] == "https://example.org/feed?format=rss&page=1"  # bare & repaired
    assert tom["tags"] == ["Reading", "Programming"]
    # quotes, a backslash and "$" survive TOML and ${VAR} expansion exactly
    config = load_config(cfg, env={})
    names = [f.name for f in config.feeds]
    assert 'Old "quoted" \\ blog $5 ${HOME}' in names
    old = config.feed('Old "quoted" \\ blog $5 ${HOME}')
    assert old is not None and old.url == "http://example.net/blog/rss"  # feed:// -> http://
    assert feeds["Unfiled feed"].get("tags") is None  # top level: no tags key at all


def test_non_feed_outlines_and_bad_urls_are_reported_on_stderr(tmp_path):
    r, cfg = imported(tmp_path, TROUBLE)
    assert r.returncode == 0, r.stderr
    assert validate(tmp_path, cfg) == "ok: 4 feeds, 1 sinks, 1 rules"
    feeds = feeds_of(cfg)
    assert feeds["Good"]["url"] == "https://example.org/good.xml"
    assert feeds["Good (2)"]["url"] == "https://example.org/good2.xml"  # names made unique
    # no title: the config's own default name (host + path)
    assert feeds["example.org/untitled/feed.xml"]["url"] == "https://example.org/untitled/feed.xml"
    err = r.stderr
    assert 'subscriptions.opml:5: skipped "A web page": a link, not a feed' in err
    assert 'subscriptions.opml:6: skipped "More subscriptions": an include outline' in err
    assert 'subscriptions.opml:7: skipped "Empty folder": no xmlUrl' in err
    assert (
        'subscriptions.opml:8: skipped "Gopher": xmlUrl "gopher://example.org/feed": '
        "must be an http:// or https:// URL" in err
    )
    assert 'subscriptions.opml:9: skipped "Relative"' in err
    assert 'subscriptions.opml:10: skipped "Spaced"' in err and "white space" in err
    assert 'subscriptions.opml:11: skipped "Script"' in err
    assert "imported 3 feeds (7 outlines skipped" in err


def test_appending_to_a_config_skips_its_feeds_and_keeps_names_unique(tmp_path):
    cfg = write(tmp_path, "config.toml", BASE_CONFIG)
    opml = FEEDLY.replace("https://example.com/att.xml", "https://example.com/already-here.xml")
    opml = opml.replace("The Moscow Times", "LWN.net")  # a name the config already uses
    r, cfg = imported(tmp_path, opml, "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert 'already configured as feed "LWN.net"' in r.stderr
    feeds = feeds_of(cfg)
    assert "AT&T Tech Channel" not in feeds  # its URL was already there
    assert feeds["LWN.net (2)"]["url"] == "https://www.themoscowtimes.com/rss/news"
    assert validate(tmp_path, cfg) == "ok: 4 feeds, 1 sinks, 1 rules"


def test_stdin_and_exit_statuses(tmp_path):
    r = fw(tmp_path, "import-opml", "-", stdin=FEEDLY)
    assert r.returncode == 0 and r.stdout.count("[[feeds]]") == 4

    r = fw(tmp_path, "import-opml", str(tmp_path / "missing.opml"))
    assert r.returncode == 2
    assert "missing.opml: cannot read: No such file or directory" in r.stderr

    rss = write(tmp_path, "feed.xml", '<?xml version="1.0"?><rss version="2.0"><channel/></rss>')
    r = fw(tmp_path, "import-opml", str(rss))
    assert r.returncode == 2
    assert "not an OPML file (its root element is <rss>, not <opml>)" in r.stderr

    broken = write(tmp_path, "broken.opml", "<opml><body><outline text='x'></body>")
    r = fw(tmp_path, "import-opml", str(broken))
    assert r.returncode == 2 and "not well-formed XML at line 1" in r.stderr
    assert r.stdout == ""

    empty = write(tmp_path, "empty.opml", '<opml version="1.0"><head/><body/></opml>')
    r = fw(tmp_path, "import-opml", str(empty))
    assert r.returncode == 1 and "no feeds to import" in r.stderr


def test_entity_declarations_are_refused_fast(tmp_path):
    for text in (BILLION_LAUGHS, EXTERNAL_ENTITY):
        path = write(tmp_path, "evil.opml", text)
        started = time.monotonic()
        r = fw(tmp_path, "import-opml", str(path))
        assert r.returncode == 2, r.stderr
        assert "refused: the file has a DOCTYPE declaration" in r.stderr
        assert r.stdout == ""
        assert "root:" not in r.stderr  # nothing of /etc/passwd
        assert time.monotonic() - started < 10
    try:
        parse_opml(BILLION_LAUGHS.encode("utf-16"))
    except OpmlError as exc:
        assert "DOCTYPE" in str(exc)
    else:
        raise AssertionError("a UTF-16 DOCTYPE was not refused")


def test_utf16_and_latin1_exports(tmp_path):
    latin = FEEDLY.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"').replace(
        "The Moscow Times", "Le Monde diplomatique \u00e9t\u00e9"
    )
    result = parse_opml(latin.encode("latin-1"))
    assert "Le Monde diplomatique \u00e9t\u00e9" in [f.name for f in result.feeds]
    utf16 = FEEDLY.replace('encoding="UTF-8"', 'encoding="UTF-16"')
    result = parse_opml(utf16.encode("utf-16"))
    assert len(result.feeds) == 4


def test_multi_byte_exports_are_read_and_an_unknown_encoding_is_an_error(tmp_path):
    """Shift_JIS, GB2312 and EUC-JP exports ended in a traceback (expat reads only
    UTF-8, UTF-16 and 8-bit encodings itself)."""
    for encoding, title in (
        ("shift_jis", "日本語ニュース"),
        ("gb2312", "中文新闻"),
        ("euc-jp", "日本"),
    ):
        doc = FEEDLY.replace('encoding="UTF-8"', f'encoding="{encoding}"').replace(
            "The Moscow Times", title
        )
        result = parse_opml(doc.encode(encoding))
        assert title in [f.name for f in result.feeds], encoding
    # repaired as a UTF-8 export is: a bare "&" in a URL, an HTML entity in a title
    sjis = (
        '<?xml version="1.0" encoding="Shift_JIS"?><opml version="1.0"><body>'
        '<outline text="日本&nbsp;ニュース" xmlUrl="https://jp.example/rss?a=1&b=2"/></body></opml>'
    )
    (feed,) = parse_opml(sjis.encode("shift_jis")).feeds
    assert feed.url == "https://jp.example/rss?a=1&b=2"
    bogus = write(
        tmp_path, "bogus.opml", FEEDLY.replace('encoding="UTF-8"', 'encoding="bogus-enc"')
    )
    r = fw(tmp_path, "import-opml", str(bogus))
    assert r.returncode == 2 and "unknown encoding 'bogus-enc'" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_feed_already_configured_under_http_or_www_is_skipped(tmp_path):
    """validate calls http/https and www. apart one URL: the import must skip them too,
    or the appended config alerts every story twice."""
    cfg = write(tmp_path, "config.toml", BASE_CONFIG)
    configured = feeds_of(cfg)["LWN.net"]["url"]
    other = configured.replace("https://", "http://", 1)
    opml = FEEDLY.replace("https://example.com/att.xml", other)
    r, cfg = imported(tmp_path, opml, "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert 'already configured as feed "LWN.net"' in r.stderr
    assert "poll the same URL" not in validate(tmp_path, cfg)


def test_many_outlines_of_one_title_and_deep_folders_import_fast():
    """Unique names were counted from 2 again for each (20,000 "Feed"s: 34 s); folders a
    thousand deep ended in RecursionError."""
    outlines = "".join(
        f'<outline text="Feed" type="rss" xmlUrl="https://e.example/{i}"/>' for i in range(10000)
    )
    doc = f'<?xml version="1.0"?><opml version="1.0"><body>{outlines}</body></opml>'
    started = time.monotonic()
    result = parse_opml(doc.encode())
    assert time.monotonic() - started < 10  # it took 34 s; 0.3 s now, but CI machines vary
    assert len({f.name for f in result.feeds}) == 10000
    deep = '<outline text="f">' * 3000 + '<outline text="x" xmlUrl="https://e.example/x"/>'
    deep += "</outline>" * 3000
    result = parse_opml(f'<opml version="1.0"><body>{deep}</body></opml>'.encode())
    assert [f.url for f in result.feeds] == ["https://e.example/x"]


@given(st.text())
def test_toml_string_round_trips_any_text(text):
    assert tomllib.loads(f"k = {toml_string(text)}")["k"] == text


def test_config_string_survives_variable_expansion(tmp_path):
    name = 'a "b" \\c $d ${E} $${F} \t tab'
    cfg = write(
        tmp_path,
        "c.toml",
        f"[[feeds]]\nname = {config_string(name)}\nurl = {config_string('https://x.org/?a=$1')}\n",
    )
    config = load_config(cfg, env={})
    assert config.feeds[0].name == name
    assert config.feeds[0].url == "https://x.org/?a=$1"


def test_readable_config_string_is_a_literal_where_the_config_reads_one_back():
    """explain shows a feed's ignore_text terms with it: a regex without doubled
    backslashes, and a "$" (which the config reads as the start of ${VAR}) doubled."""
    from feedwatch.opml import readable_config_string

    assert readable_config_string(r"/Points: \d+/") == r"'/Points: \d+/'"
    assert readable_config_string(r"/\d+$/") == r'"/\\d+$$/"'
    assert readable_config_string("it's") == '"it\'s"'


def test_the_readme_example_run_twice_imports_each_feed_once(tmp_path):
    """Without -c, import-opml ignored ./feedwatch.toml (the config lookup of every
    command): README's `import-opml subs.opml >> feedwatch.toml` run twice appended
    every feed twice under new names."""
    cfg = write(tmp_path, "feedwatch.toml", BASE_CONFIG)
    src = write(tmp_path, "subs.opml", FEEDLY)
    r = fw(tmp_path, "import-opml", str(src))
    assert r.returncode == 0 and r.stdout.count("[[feeds]]") == 4, r.stderr
    with cfg.open("a", encoding="utf-8") as f:
        f.write(r.stdout)
    r = fw(tmp_path, "import-opml", str(src))
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert r.stderr.count("already configured as feed") == 5  # one feed in two folders
    assert r.stderr.splitlines()[-1] == (
        f"{src}: nothing to import: its 4 feeds are all in feedwatch.toml already"
    )
    assert validate(tmp_path, cfg) == "ok: 5 feeds, 1 sinks, 1 rules"
    # the same with the config where the lookup goes next ($XDG_CONFIG_HOME's)
    xdg = tmp_path / ".config" / "feedwatch"
    xdg.mkdir(parents=True)
    cfg.rename(xdg / "config.toml")
    r = fw(tmp_path, "import-opml", str(src))
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert r.stderr.splitlines()[-1].endswith(f"all in {xdg / 'config.toml'} already")
    # a broken config found by the lookup is an error, as with -c: nothing printed
    (xdg / "config.toml").write_text("[feedwatch]\nintervall = 1\n")
    r = fw(tmp_path, "import-opml", str(src))
    assert r.returncode == 2 and r.stdout == "" and "intervall" in r.stderr


def test_a_malformed_xml_url_never_shows_its_password(tmp_path):
    """A password with a "/", a space or a "#" makes the URL malformed: the skipped
    line quoted it whole ('xmlUrl "https://bob:pa/ss99@example.net/b.xml": not a valid
    URL'), where ``preview`` masks it."""
    opml = """\
<?xml version="1.0"?>
<opml version="2.0"><head><title>s</title></head>
<body>
  <outline text="B" xmlUrl="https://bob:pa/ss99@example.net/b.xml"/>
  <outline text="C" xmlUrl="https://bob:pa ss99@example.net/c.xml"/>
  <outline text="D" xmlUrl="https://bob:pa#ss99@example.net/d.xml"/>
  <outline text="Good" xmlUrl="https://example.org/good.xml"/>
</body></opml>
"""
    r = fw(tmp_path, "import-opml", str(write(tmp_path, "s.opml", opml)))
    assert r.returncode == 0, r.stderr
    assert "ss99" not in r.stderr + r.stdout, r.stderr
    for line, name in ((4, "B"), (5, "C"), (6, "D")):
        assert f's.opml:{line}: skipped "{name}": xmlUrl "https://***@example.net/' in r.stderr
    assert "imported 1 feeds (3 outlines skipped" in r.stderr


def test_a_file_name_that_is_not_utf8_leaves_the_config_utf8(tmp_path):
    """`abo-f\\xfcr.opml` (Latin-1 bytes): the "# Imported ... from NAME" line carried the
    raw byte, and the config it was appended to was no longer UTF-8 text."""
    src = tmp_path / os.fsdecode(b"abo-f\xfcr.opml")
    src.write_text(FEEDLY, encoding="utf-8")
    r = subprocess.run(
        [sys.executable, "-m", "feedwatch", "import-opml", src.name],
        capture_output=True,
        env=bare_env(tmp_path, LANG="C.UTF-8"),
        cwd=tmp_path,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode("utf-8")  # strict: every byte of it UTF-8
    assert "# Imported by `feedwatch import-opml` from abo-f\\xfcr.opml (" in out
    cfg = tmp_path / "config.toml"
    cfg.write_bytes(BASE_CONFIG.encode() + r.stdout)
    assert validate(tmp_path, cfg) == "ok: 5 feeds, 1 sinks, 1 rules"


def test_import_and_validate_write_a_name_s_escape_sequences_escaped(tmp_path: Path) -> None:
    """A skipped outline's title and a config's duplicate feed name went to the terminal
    as written: an escape sequence cleared the screen, a bidi override showed "exe.TXT"
    for "TXT.exe". Both are written as \\x1b, \\u202e (XML holds no ESC)."""
    src = write(
        tmp_path,
        "evil.opml",
        '<?xml version="1.0"?><opml version="2.0"><body>'
        '<outline text="x[2J&#x202e;TXT.exe"/></body></opml>',
    )
    r = fw(tmp_path, "import-opml", str(src))
    assert "x[2J\\u202eTXT.exe" in r.stderr and "\u202e" not in r.stderr, r.stderr
    cfg = write(
        tmp_path,
        "config.toml",
        '[sinks.log]\ntype = "jsonl"\npath = "a.jsonl"\n'
        + '[[feeds]]\nname = "x\\u001b[2J\\u202e"\nurl = "https://example.org/f.xml"\n' * 2,
    )
    r = fw(tmp_path, "-c", str(cfg), "validate")
    assert r.returncode == 2 and 'duplicate feed name "x\\x1b[2J\\u202e"' in r.stderr, r.stderr
    assert "\x1b" not in r.stderr and "\u202e" not in r.stderr
