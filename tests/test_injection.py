"""Injection: hostile feed text reaches every sink only escaped (SPEC section 6).

One `feedwatch check` subprocess polls two hostile feeds (RSS and JSON Feed) whose
titles, summaries, authors, tags, ids, links and enclosure types carry CR/LF, NUL,
markup, `javascript:` links, shell metacharacters, template syntax and chat mentions,
and delivers every alert to a real SMTP server (aiosmtpd), a webhook receiver in each
format (json, slack, discord, teams, ntfy), a command and a jsonl file. Each output is
then checked the way its consumer would read it.
"""

from __future__ import annotations

import ast
import email
import json
import re
import sys
from collections.abc import Iterator
from email import policy
from email.message import Message
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.feedserver import FeedServer
from tests.receivers import Receiver
from tests.smtpserver import Collector, SMTPServer, free_port
from tests.test_hostile import fw, read_alerts

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = "{{ 7+7 }} {0} %s %d %(x)s ${HOME} {feed} #{1+1}"
CR_LF_TITLE = "Breaking&#13;&#10;&#13;&#10;Bcc: victim@evil.example&#13;&#10;X-Injected: 1"
MENTIONS = "<!channel> <!here> @everyone @here <@U123> [click](https://evil.example) <https://evil.example|click>"


def shell_text(tmp: Path) -> str:
    p = tmp / "PWNED"
    return (
        f"$(touch {p}1) `touch {p}2`; touch {p}3 | cat /etc/passwd && echo $HOME > {p}4"
        f" ' \" \\ $((1+1)) !! {p}5"
    )


def evil_rss(tmp: Path) -> bytes:
    shell = escape(shell_text(tmp))
    items = [
        # CR/LF as character references survive XML parsing: a title with a line break
        f"""<item><guid isPermaLink="false">crlf</guid><title>{CR_LF_TITLE}</title>
        <link>https://example.org/1</link>
        <description>line1&#13;&#10;&#13;&#10;Bcc: body@evil.example</description>
        <author>a@example.org&#13;&#10;Bcc: author@evil.example</author>
        <category>tag&#13;&#10;Bcc: tag@evil.example</category>
        <enclosure url="https://example.org/a.mp3" type="audio/mpeg&#13;&#10;Bcc: enc@evil.example"
          length="12"/></item>""",
        """<item><guid isPermaLink="false">script</guid>
        <title>&lt;script&gt;alert(1)&lt;/script&gt; x &lt; script&gt;alert(2)&lt;/ script&gt;
        &lt;img src=x onerror=alert(3)&gt; 1 &amp;lt; 2 &lt;/title&gt;&lt;/head&gt;</title>
        <link>javascript:alert(document.cookie)</link>
        <description><![CDATA[<p onclick="alert(4)">hi</p><a href="javascript:alert(5)">click</a>
        <iframe src="https://evil.example"></iframe><svg onload=alert(6)> a<b]]></description>
        </item>""",
        """<item><guid isPermaLink="false">link-quote</guid><title>Quote link</title>
        <link>https://ok.example/a"onmouseover="alert(1)"&gt;x|&lt;!channel&gt;</link></item>""",
        """<item><guid isPermaLink="false">js-upper</guid><title>Upper js</title>
        <link>  JaVaScRiPt:alert(1)</link>
        <enclosure url="data:text/html,&lt;script&gt;alert(1)&lt;/script&gt;" type="text/html"/>
        </item>""",
        f"""<item><guid isPermaLink="false">shell</guid><title>{shell}</title>
        <link>https://example.org/shell</link><description>{shell}</description></item>""",
        f"""<item><guid isPermaLink="false">template</guid><title>{escape(TEMPLATE)}</title>
        <link>https://example.org/t</link><description>{escape(TEMPLATE)}</description></item>""",
        f"""<item><guid isPermaLink="false">mention</guid><title>{escape(MENTIONS)}</title>
        <link>https://example.org/m</link><description>{escape(MENTIONS)}</description></item>""",
    ]
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        "<title>Evil&#13;&#10;Bcc: channel@evil.example {{ 7+7 }}</title>"
        "<link>https://example.org/</link>" + "".join(items) + "</channel></rss>"
    ).encode()


def evil_json() -> bytes:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "J\r\nBcc: title@evil.example",
        "items": [
            {
                "id": "nul\u0000id\r\nBcc: id@evil.example",
                "title": "NUL\u0000title\r\nBcc: j@evil.example\u2028X-Injected: 2\x1b[31m",
                "url": "https://example.org/j1",
                "summary": "s\u0000\r\n\x07bell",
                "authors": [{"name": "au\u0000thor\r\nBcc: a@evil.example"}],
                "tags": ["t\u0000ag\r\nBcc: x@evil.example"],
                "attachments": [
                    {
                        "url": "https://example.org/a.mp3",
                        "mime_type": "audio/mpeg\r\nBcc: m@x\u0000",
                    }
                ],
            }
        ],
    }
    return json.dumps(doc).encode()


RECORDER = """
import json, os, sys
out = os.path.join(sys.argv[1], os.environ["FEEDWATCH_ALERT_ID"] + ".json")
with open(out, "w") as f:
    json.dump({"argv": sys.argv[2:], "stdin": sys.stdin.read()}, f)
"""
ARGV_EXTRA = ["$HOME", "{{ 7+7 }}", "; touch PWNED-ARGV", "`id`"]


def write_config(tmp: Path, srv: FeedServer, hook: Receiver, smtp: SMTPServer) -> Path:
    recorder = tmp / "recorder.py"
    recorder.write_text(RECORDER)
    (tmp / "cmd").mkdir()
    argv = json.dumps([sys.executable, str(recorder), str(tmp / "cmd"), *ARGV_EXTRA])
    hooks = "".join(
        f'\n[sinks.{fmt}]\ntype = "webhook"\nurl = "{hook.url}/{fmt}"\nformat = "{fmt}"\n'
        for fmt in ("json", "slack", "discord", "teams", "ntfy")
    )
    cfg = tmp / "feedwatch.toml"
    cfg.write_text(
        f"""
[feedwatch]
state = "{tmp}/state.db"
log_format = "json"
first_poll = "alert"

[sinks.mail]
type = "email"
host = "127.0.0.1"
port = {smtp.port}
security = "none"
from = "feedwatch <alerts@example.org>"
to = ["me@example.org"]

[sinks.cmd]
type = "command"
argv = {argv}

[sinks.log]
type = "jsonl"
path = "{tmp}/alerts.jsonl"
{hooks}
[[feeds]]
name = "evil-rss"
url = "{srv.url("/evil.xml")}"

[[feeds]]
name = "evil-json"
url = "{srv.url("/evil.json")}"
"""
    )
    return cfg


class Delivered:
    """What every sink got from one `check` run."""

    def __init__(self, tmp: Path, hook: Receiver, smtp: SMTPServer, stderr: str) -> None:
        self.tmp = tmp
        self.alerts = {a["id"]: a for a in read_alerts(tmp / "alerts.jsonl")}
        self.hooks: dict[str, list[Any]] = {}
        for r in hook.received():
            self.hooks.setdefault(r.path.strip("/"), []).append(r)
        self.mails = list(smtp.messages)
        self.stderr = stderr
        self.commands = {
            p.stem: json.loads(p.read_text()) for p in sorted((tmp / "cmd").glob("*.json"))
        }


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Delivered]:
    """One `check` run for the whole module (every test reads what it delivered)."""
    tmp = tmp_path_factory.mktemp("injection")
    handler = Collector()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), ready_timeout=10)
    controller.start()
    hook = Receiver().start()
    try:
        with FeedServer() as srv:
            srv.set("/evil.xml", evil_rss(tmp), content_type="application/rss+xml")
            srv.set("/evil.json", evil_json(), content_type="application/feed+json")
            smtp = SMTPServer("127.0.0.1", controller.port, handler, None)
            cfg = write_config(tmp, srv, hook, smtp)
            r = fw(cfg, "check", "--json")
            assert r.returncode == 0, r.stderr[-3000:]
            d = Delivered(tmp, hook, smtp, r.stderr)
    finally:
        hook.stop()
        controller.stop()
    assert len(d.alerts) == 8, sorted(a["entry"]["id"] for a in d.alerts.values())
    yield d


def by_entry(d: Delivered, entry_id: str) -> dict[str, Any]:
    (a,) = [a for a in d.alerts.values() if a["entry"]["id"] == entry_id]
    return a


def all_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in all_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in all_strings(v)]
    return []


# --------------------------------------------------------------------------
# The payload itself (jsonl, webhook json, command stdin: the same object)
# --------------------------------------------------------------------------


def test_payload_keeps_text_literal_and_drops_unsafe_links(delivered: Delivered) -> None:
    d = delivered
    assert by_entry(d, "template")["entry"]["title"] == TEMPLATE  # never formatted
    assert by_entry(d, "shell")["entry"]["title"] == shell_text(d.tmp)
    assert by_entry(d, "script")["entry"]["link"] is None  # javascript:
    assert by_entry(d, "js-upper")["entry"]["link"] is None
    assert by_entry(d, "js-upper")["entry"]["enclosures"] == []  # data:
    script = by_entry(d, "script")
    assert "alert(1)" not in script["entry"]["title"]  # a <script> element is dropped whole
    assert (
        "onclick" not in script["entry"]["summary"] and "iframe" not in script["entry"]["summary"]
    )
    for a in d.alerts.values():
        for s in all_strings(a["entry"]):
            assert not s.lower().startswith(("javascript:", "data:")), s
        link = a["entry"]["link"]
        assert link is None or link.startswith(("http://", "https://"))


def test_webhook_json_and_command_stdin_carry_the_identical_payload(delivered: Delivered) -> None:
    d = delivered
    hooks = d.hooks["json"]
    assert len(hooks) == len(d.alerts)
    for r in hooks:
        body = json.loads(r.body)
        assert r.headers["x-feedwatch-delivery"] == body["id"]
        assert body == d.alerts[body["id"]]
    assert set(d.commands) == set(d.alerts)
    for alert_id, got in d.commands.items():
        assert json.loads(got["stdin"]) == d.alerts[alert_id]
        # argv comes from the config only, and no shell ever read it
        assert got["argv"] == ARGV_EXTRA


def test_shell_metacharacters_never_ran(delivered: Delivered) -> None:
    leftovers = list(delivered.tmp.rglob("PWNED*")) + list(Path.cwd().glob("PWNED*"))
    assert leftovers == []


# --------------------------------------------------------------------------
# Email: headers one line each, no injected header, safe HTML
# --------------------------------------------------------------------------

MAIL_HEADERS = {
    "subject", "from", "to", "date", "message-id", "in-reply-to", "references", "list-id",
    "x-feedwatch-feed", "x-feedwatch-alert-id", "x-feedwatch-kind", "x-feedwatch-alert-count",
    "auto-submitted",
    "mime-version", "content-type", "content-transfer-encoding",
}  # fmt: skip
HTML_TAGS = {
    "html", "head", "meta", "title", "body", "style", "h1", "h2", "h3", "p", "a", "ul", "ol",
    "li", "b", "strong", "i", "em", "table", "tbody", "thead", "tr", "td", "th", "div", "span",
    "hr", "br", "pre", "small", "blockquote", "code", "del", "ins", "s",
}  # fmt: skip


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def _parts(msg: Message) -> dict[str, str]:
    out = {}
    for part in msg.walk():
        if not part.is_multipart():
            out[part.get_content_type()] = part.get_payload(decode=True).decode(
                part.get_content_charset() or "utf-8"
            )
    return out


def test_email_headers_cannot_be_injected(delivered: Delivered) -> None:
    d = delivered
    assert len(d.mails) == len(d.alerts)
    subjects = []
    for m in d.mails:
        assert m.rcpt_tos == ("me@example.org",)  # the envelope comes from the config only
        head = m.data.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in m.data else m.data
        for line in re.split(rb"\r?\n", head):
            if line[:1] in (b" ", b"\t"):
                continue  # a folded continuation
            name = line.split(b":", 1)[0].decode().lower()
            assert name in MAIL_HEADERS, line
        assert b"\r" not in head.replace(b"\r\n", b"")
        msg = email.message_from_bytes(m.data, policy=policy.default)
        assert msg["Bcc"] is None and msg["X-Injected"] is None and msg["Cc"] is None
        for name, value in msg.items():
            assert not re.search(r"[\x00-\x1f\x7f\u2028\u2029]", str(value)), (name, value)
        subjects.append(str(msg["Subject"]))
    assert "[feedwatch] evil-rss: Breaking Bcc: victim@evil.example X-Injected: 1" in subjects
    assert f"[feedwatch] evil-rss: {TEMPLATE}" in subjects  # literal, not formatted
    assert "[feedwatch] evil-json: NULtitle Bcc: j@evil.example X-Injected: 2[31m" in subjects


def test_email_html_is_inert_and_text_is_clean(delivered: Delivered) -> None:
    for m in delivered.mails:
        msg = email.message_from_bytes(m.data, policy=policy.default)
        parts = _parts(msg)
        page = parts["text/html"]
        parser = _Html()
        parser.feed(page)
        for tag, attrs in parser.tags:
            assert tag in HTML_TAGS, (tag, attrs)
            for name, value in attrs:
                assert not name.startswith("on"), (tag, name, value)
                if name in ("href", "src"):
                    # (the parser has decoded &quot; and friends: the value stayed one value)
                    assert value is not None and value.startswith(("http://", "https://")), value
        assert "<script" not in page.lower() and "javascript:" not in page.lower()
        text = parts["text/plain"].replace("\r\n", "\n")  # SMTP line ends
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text), repr(text)
    pages = " ".join(_parts(email.message_from_bytes(m.data))["text/html"] for m in delivered.mails)
    assert "x &lt; script&gt;alert(2)&lt;/ script&gt;" in pages  # as text, escaped
    assert "&lt;!channel&gt;" in pages


# --------------------------------------------------------------------------
# Chat formats: no mention, no masked link, no markup from feed text
# --------------------------------------------------------------------------


def test_slack_text_forms_no_link_or_mention(delivered: Delivered) -> None:
    reqs = delivered.hooks["slack"]
    assert len(reqs) == len(delivered.alerts)
    texts = []
    for r in reqs:
        body = json.loads(r.body)
        for s in all_strings(body):
            # the only <...> are the links feedwatch made, to http(s) URLs
            rest = re.sub(r"<https?://[^|<>\s]+\|[^<>]*>", "", s)
            assert "<" not in rest and ">" not in rest, s
            assert "javascript:" not in s.lower()
            texts.append(s)
    joined = "\n".join(texts)
    assert "@everyone @here &lt;@U123&gt; [click](https://evil.example)" in joined
    assert TEMPLATE.replace("&", "&amp;") in joined
    # the hostile link became one URL: its "|" and ">" encoded, not a second label
    assert 'https://ok.example/a"onmouseover="alert(1)"&gt;x%7C&lt;!channel&gt;|' in joined


def test_discord_disables_mentions_and_escapes_markdown(delivered: Delivered) -> None:
    reqs = delivered.hooks["discord"]
    assert len(reqs) == len(delivered.alerts)
    for r in reqs:
        body = json.loads(r.body)
        assert body["allowed_mentions"] == {"parse": []}
        for e in body["embeds"]:
            assert e.get("url") is None or e["url"].startswith(("http://", "https://"))
            for f in e.get("fields", []):
                assert "](" not in f["value"].replace("\\](", ""), f
            if "description" in e:
                assert "[click](" not in e["description"], e["description"]
    mention = [json.loads(r.body) for r in reqs if b"everyone" in r.body]
    (m,) = mention
    assert "\\@everyone" in m["embeds"][0]["description"]
    assert "\\[click\\](https://evil.example)" in m["embeds"][0]["description"]


def test_ntfy_headers_are_single_line_ascii(delivered: Delivered) -> None:
    reqs = delivered.hooks["ntfy"]
    assert len(reqs) == len(delivered.alerts)
    for r in reqs:
        for name in ("title", "tags", "click"):
            value = r.headers.get(name)
            if value is None:
                continue
            assert value.isascii() and not re.search(r"[\x00-\x1f\x7f]", value), (name, value)
        click = r.headers.get("click")
        assert click is None or click.startswith(("http://", "https://"))
        body = r.body.decode("utf-8")
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", body), repr(body)


def test_teams_card_has_no_feed_made_link(delivered: Delivered) -> None:
    reqs = delivered.hooks["teams"]
    assert len(reqs) == len(delivered.alerts)
    for r in reqs:
        body = json.loads(r.body)
        for s in all_strings(body):
            assert "javascript:" not in s.lower()
            assert "[click](" not in s, s


# --------------------------------------------------------------------------
# No shell anywhere
# --------------------------------------------------------------------------

_SHELL_CALLS = {
    ("os", "system"),
    ("os", "popen"),
    ("subprocess", "getoutput"),
    ("subprocess", "getstatusoutput"),
    ("asyncio", "create_subprocess_shell"),
}


def test_no_shell_anywhere_in_feedwatch() -> None:
    sources = sorted((REPO / "feedwatch").rglob("*.py"))
    assert len(sources) > 20
    found = []
    for path in sources:
        text = path.read_text()
        if re.search(r"shell\s*=\s*True", text):
            found.append(f"{path}: shell=True")
        for node in ast.walk(ast.parse(text, str(path))):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                if kw.arg == "shell" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    found.append(f"{path}:{node.lineno}: shell=...")
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                if (f.value.id, f.attr) in _SHELL_CALLS:
                    found.append(f"{path}:{node.lineno}: {f.value.id}.{f.attr}")
            if isinstance(f, ast.Name) and f.id in ("eval", "exec", "system", "popen"):
                found.append(f"{path}:{node.lineno}: {f.id}()")
    assert found == []
