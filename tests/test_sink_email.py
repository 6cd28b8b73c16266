"""The email sink against a real aiosmtpd server, and build_message as a pure function."""

from __future__ import annotations

import asyncio
import email
import socket
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedwatch.model import Secret, SinkConfig
from feedwatch.sinks.base import SendResult
from feedwatch.sinks.email import EmailSink, build_message
from feedwatch.store.base import Delivery
from tests.smtpserver import PASSWORD, USER, SMTPServer, free_port, smtp_cert, smtp_server

_fixtures = (smtp_cert, smtp_server)  # imported for pytest
# The implicit-TLS server cannot tell aiosmtpd that it is encrypted (see tests/smtpserver.py).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

NEW_ID = "a1b2c3d4e5f6a7b8c9d0a1b2c3d4e5f6"
UPD_ID = "ffeeddccbbaa99887766554433221100"
TO = ("me@example.org", "you@example.net")


def cfg(
    port: int = 25,
    *,
    security: str = "none",
    username: str | None = None,
    password: str | None = None,
    timeout: float = 5.0,
    name: str = "me",
) -> SinkConfig:
    return SinkConfig(
        name=name,
        type="email",
        options={
            "host": "127.0.0.1",
            "port": port,
            "security": security,
            "username": username,
            "password": Secret(password) if password is not None else None,
            "from_": "feedwatch <alerts@example.org>",
            "to": TO,
            "timeout": timeout,
        },
    )


def payload(
    kind: str = "new",
    *,
    alert_id: str = NEW_ID,
    feed: str = "moscow-times",
    title: str = "NATO and Ukraine to Discuss Russia's Hypersonic Missile Strike",
    link: str | None = "https://www.themoscowtimes.com/2024/11/22/nato-ukraine-a86xxx",
    detected_at: str = "2024-11-22T15:57:03Z",
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if kind == "updated":
        changes = {
            "updated": {"old": "2024-11-22T10:40:17Z", "new": "2024-11-22T15:56:45Z"},
            "summary": {"old": "Old summary.", "new": "New summary with hypersonic."},
        }
    return {
        "version": 1,
        "id": alert_id,
        "kind": kind,
        "detected_at": detected_at,
        "feed": {
            "name": feed,
            "url": "https://www.themoscowtimes.com/rss/news",
            "title": "The Moscow Times",
            "tags": ["news"],
        },
        "entry": {
            "id": "https://www.themoscowtimes.com/2024/11/22/nato-ukraine-a86xxx",
            "title": title,
            "link": link,
            "author": "The Moscow Times",
            "published": "2024-11-22T10:40:17Z",
            "updated": "2024-11-22T15:56:45Z",
            "summary": "New summary with hypersonic.",
            "content": "Full text.\n\nSecond paragraph.",
            "tags": ["Ukraine war"],
            "enclosures": [
                {"url": "https://cdn.example.org/a.mp3", "type": "audio/mpeg", "length": 1234}
            ],
        },
        "changes": changes,
        "matched": [{"rule": "missiles", "terms": ["hypersonic"]}],
        "message": None,
    }


def delivery(p: dict[str, Any], thread_id: str | None = NEW_ID) -> Delivery:
    return Delivery(
        alert_id=p["id"],
        sink="me",
        feed=p["feed"]["name"],
        kind=p["kind"],
        payload=p,
        thread_id=thread_id,
        created_at=datetime(2024, 11, 22, 15, 57, 3, tzinfo=timezone.utc),
    )


def notice(
    kind: str = "flood", message: str = "120 new entries at once: recorded, not alerted"
) -> Delivery:
    p = {
        "version": 1,
        "id": "0123456789abcdef",
        "kind": kind,
        "detected_at": "2024-11-23T08:00:00Z",
        "feed": {"name": "moscow-times", "url": "https://x.example/rss", "title": None, "tags": []},
        "entry": None,
        "changes": {},
        "matched": [],
        "message": message,
    }
    return delivery(p, thread_id=None)


def send(sink: EmailSink, deliveries: Sequence[Delivery]) -> SendResult:
    async def go() -> SendResult:
        try:
            return await sink.send(deliveries)
        finally:
            await sink.aclose()

    return asyncio.run(go())


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parts(msg: EmailMessage) -> dict[str, str]:
    assert msg.get_content_type() == "multipart/alternative"
    out = {}
    for part in msg.iter_parts():
        assert isinstance(part, EmailMessage)
        out[part.get_content_type()] = part.get_content()
    return out


def header_block(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


# --------------------------------------------------------------------------
# build_message
# --------------------------------------------------------------------------


def test_new_alert_headers_and_parts() -> None:
    msg = parse(build_message([delivery(payload())], cfg()).as_bytes(policy=policy.SMTP))
    assert msg["Subject"] == (
        "[feedwatch] moscow-times: NATO and Ukraine to Discuss Russia's Hypersonic Missile Strike"
    )
    assert msg["Date"] == "Fri, 22 Nov 2024 15:57:03 +0000"
    assert msg["Message-ID"] == f"<{NEW_ID}@feedwatch>"
    assert msg["In-Reply-To"] is None and msg["References"] is None
    assert msg["List-ID"] == "<moscow-times.feedwatch>"
    assert msg["X-Feedwatch-Feed"] == "moscow-times"
    assert msg["X-Feedwatch-Alert-Id"] == NEW_ID
    assert msg["From"] == "feedwatch <alerts@example.org>"
    assert msg["To"] == "me@example.org, you@example.net"
    body = parts(msg)
    text, page = body["text/plain"], body["text/html"]
    for needle in (
        "NATO and Ukraine",
        "https://www.themoscowtimes.com/2024/11/22/nato-ukraine-a86xxx",
        "Published: 2024-11-22T10:40:17Z",
        "missiles: hypersonic",
        "Second paragraph.",
        "Ukraine war",
        "https://cdn.example.org/a.mp3 (audio/mpeg, 1234)",
    ):
        assert needle in text
    assert "What changed" not in text
    assert 'href="https://www.themoscowtimes.com/2024/11/22/nato-ukraine-a86xxx"' in page
    assert "Russia&#x27;s Hypersonic" in page


def test_updated_alert_threads_to_new_alert_and_shows_changes() -> None:
    d = delivery(payload("updated", alert_id=UPD_ID), thread_id=NEW_ID)
    msg = parse(build_message([d], cfg()).as_bytes(policy=policy.SMTP))
    assert msg["Subject"].startswith("[feedwatch] moscow-times: updated: NATO and Ukraine")
    assert msg["Message-ID"] == f"<{UPD_ID}@feedwatch>"
    assert msg["In-Reply-To"] == f"<{NEW_ID}@feedwatch>"
    assert msg["References"] == f"<{NEW_ID}@feedwatch>"
    text = parts(msg)["text/plain"]
    assert "updated: 2024-11-22T10:40:17Z -> 2024-11-22T15:56:45Z" in text
    assert "old: Old summary." in text and "new: New summary with hypersonic." in text


def test_a_long_summary_corrected_at_its_end_shows_the_words_that_changed() -> None:
    """Two 2,000-character texts that differ in one sentence were printed whole, one
    after the other, for the reader to compare. The mail now shows the words removed
    and added with a few around them: [-...-]{+...+} in text, <del>/<ins> in HTML."""
    old = " ".join(f"Paragraph {i} says what was said on the day." for i in range(40))
    old += " The strike caused no casualties, the ministry said <b>today</b>."
    p = payload("updated", alert_id=UPD_ID)
    p["changes"]["summary"] = {"old": old, "new": old.replace("caused no", "killed two")}
    body = parts(parse(build_message([delivery(p)], cfg()).as_bytes(policy=policy.SMTP)))
    text, page = body["text/plain"], body["text/html"]
    assert "summary, word by word ([-removed-] {+added+}):" in text
    assert (
        "    … day. Paragraph 39 says what was said on the day. The strike [-caused no-]"
        "{+killed two+} casualties, the ministry said <b>today</b>.\r\n"
    ) in text
    assert "Paragraph 0 says" not in text.split("Summary:")[0]  # whole only below
    assert "The strike <del>caused no</del><ins>killed two</ins> casualties" in page
    assert "&lt;b&gt;today&lt;/b&gt;" in page and "<b>today" not in page


def test_two_corrections_far_apart_show_as_two_words_changed() -> None:
    """Corrections in paragraphs 2 and 35 showed the whole stretch between them as
    removed and added: 8,691 characters to compare by eye for two words."""
    old = "\n\n".join(f"Paragraph {i}: the committee heard evidence." for i in range(40))
    new = old.replace("2: the committee", "2: the mayor").replace(
        "35: the committee heard", "35: the committee ignored"
    )
    p = payload("updated", alert_id=UPD_ID)
    p["changes"]["summary"] = {"old": old, "new": new}
    text = parts(parse(build_message([delivery(p)], cfg()).as_bytes(policy=policy.SMTP)))[
        "text/plain"
    ]
    changed = text.split("What changed:")[1].split("Summary:")[0]
    assert "Paragraph 2: the [-committee-]{+mayor+} heard evidence." in changed
    assert "Paragraph 35: the committee [-heard-]{+ignored+} evidence." in changed
    assert "Paragraph 20:" not in changed


def test_rendering_is_deterministic_with_boundary_from_id() -> None:
    d = delivery(payload())
    one = build_message([d], cfg()).as_bytes(policy=policy.SMTP)
    two = build_message([delivery(payload())], cfg()).as_bytes(policy=policy.SMTP)
    assert one == two
    other = build_message([delivery(payload(alert_id=UPD_ID))], cfg()).as_bytes(policy=policy.SMTP)
    boundary = parse(one).get_boundary()
    assert boundary and boundary.startswith("==feedwatch-")
    assert boundary != parse(other).get_boundary()


def test_notice_subject() -> None:
    msg = build_message([notice()], cfg())
    assert msg["Subject"] == (
        "[feedwatch] moscow-times: flood: 120 new entries at once: recorded, not alerted"
    )
    assert "120 new entries at once" in parts(parse(msg.as_bytes()))["text/plain"]


def test_html_escapes_feed_text_and_drops_non_http_links() -> None:
    p = payload(title='<script>alert("x")</script> & <b>', link="javascript:alert(1)")
    p["entry"]["summary"] = "<img src=x onerror=alert(1)>"
    page = parts(parse(build_message([delivery(p)], cfg()).as_bytes()))["text/html"]
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in page
    assert "javascript:" not in page
    assert "onerror=alert(1)" in page  # present only as escaped text
    assert page.count("<a href=") == 1  # the enclosure; the title link was dropped


def test_digest_is_one_message_with_a_section_per_alert() -> None:
    ds = [
        delivery(payload(alert_id=f"{i:032x}", feed=f, title=f"Story {i}"))
        for i, f in enumerate(["alpha", "beta", "alpha"], start=1)
    ]
    msg = parse(build_message(ds, cfg()).as_bytes())
    assert msg["Subject"] == "[feedwatch] 3 alerts: alpha, beta"
    assert msg["Message-ID"].startswith("<digest-") and msg["Message-ID"].endswith("@feedwatch>")
    reordered = parse(build_message(list(reversed(ds)), cfg()).as_bytes())
    assert reordered["Message-ID"] == msg["Message-ID"]
    text = parts(msg)["text/plain"]
    assert all(f"Story {i}" in text and f"{i:032x}" in text for i in (1, 2, 3))
    many = [
        delivery(payload(alert_id=f"{i:032x}", feed=f"feed-with-a-longish-name-{i}"))
        for i in range(20)
    ]
    subject = build_message(many, cfg())["Subject"]
    assert subject.startswith("[feedwatch] 20 alerts: feed-with-a-longish-name-0, ")
    assert subject.endswith(" …") and len(subject) <= 130


def test_a_digest_sinks_one_alert_is_a_digest() -> None:
    """A digest due with one alert in it went out as an ordinary alert mail
    (X-Feedwatch-Kind: new, no X-Feedwatch-Alert-Count): a filter on digests missed it."""
    d = delivery(payload("updated", alert_id=UPD_ID))  # a thread's update
    msg = parse(build_message([d], replace(cfg(), digest=3600.0)).as_bytes())
    assert msg["Subject"] == "[feedwatch] 1 alert: moscow-times"
    assert msg["X-Feedwatch-Kind"] == "digest" and msg["X-Feedwatch-Alert-Count"] == "1"
    assert msg["X-Feedwatch-Alert-Id"] is None and msg["In-Reply-To"] is None
    assert msg["Message-ID"].startswith("<digest-")
    text = parts(msg)["text/plain"]
    assert text.startswith("1 alert\r\n") and UPD_ID in text
    single = parse(build_message([d], cfg()).as_bytes())  # test-sink's sink: digest 0
    assert single["X-Feedwatch-Kind"] == "updated" and single["In-Reply-To"]


def test_header_injection_is_neutralised() -> None:
    p = payload(title="Breaking\r\nBcc: evil@example.org\r\n\r\nbody", feed="moscow\nX-Evil: 1")
    data = build_message([delivery(p)], cfg()).as_bytes(policy=policy.SMTP)
    msg = parse(data)
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    assert msg["Subject"] == "[feedwatch] moscow X-Evil: 1: Breaking Bcc: evil@example.org body"
    assert not any(line.lower().startswith((b"bcc", b"x-evil")) for line in data.split(b"\r\n"))


def test_encoded_words_in_feed_text_are_taken_literally(
    smtp_server: Callable[..., SMTPServer],
) -> None:
    """The email package decoded RFC 2047 encoded words in the text feedwatch gave it
    as a header and wrote what they decoded to: a title holding one for CR LF sent
    ``Reply-To: attacker@evil.example`` and ``X-Injected: yes end`` as headers."""
    server = smtp_server("none")
    title = (
        "Missile strike =?utf-8?q?=0D=0AReply-To=3A_attacker=40evil=2Eexample=0D=0A"
        "X-Injected=3A_yes?= end =?utf-8?b?SGVsbG8=?= world Удар"
    )
    feed = "news=?utf-8?q?=0D=0AX-Evil=3A_1?="
    c = cfg(server.port)
    opts = {**c.options, "from_": "=?utf-8?q?a=0D=0AX-Evil=3A_2?= <alerts@example.org>"}
    sink = EmailSink(SinkConfig(name=c.name, type=c.type, options=opts))
    assert send(sink, [delivery(payload(title=title, feed=feed))]).ok
    (got,) = server.messages
    assert got.rcpt_tos == TO
    lines = header_block(got.data).split(b"\r\n")
    names = {line.split(b":", 1)[0].lower() for line in lines if line[:1] not in (b" ", b"\t")}
    assert names == {
        b"subject", b"from", b"to", b"date", b"message-id", b"list-id", b"x-feedwatch-feed",
        b"x-feedwatch-alert-id", b"x-feedwatch-kind", b"auto-submitted", b"mime-version",
        b"content-type",
    }  # fmt: skip
    assert not any(b"Reply-To" in line or b"X-Injected" in line for line in lines)
    msg = parse(got.data)
    assert msg["Subject"] == f"[feedwatch] {feed}: {title}"
    assert msg["X-Feedwatch-Feed"] == feed
    assert msg["From"].addresses[0].display_name == "=?utf-8?q?a=0D=0AX-Evil=3A_2?="
    assert msg["Reply-To"] is None and msg["X-Injected"] is None and msg["X-Evil"] is None


@pytest.mark.parametrize(
    "feed",
    [
        "Новости Москвы и Московской области",
        "www.example.com/news/world/europe/russia/feed.rss?format=full",
        "x" * 54,
        "y" * 300,
        "Ålesund" * 12,
    ],
)
def test_no_header_line_is_longer_than_rfc_2047_allows(feed: str) -> None:
    """The first word after ``X-Feedwatch-Feed:`` was never folded: a 72-character
    encoded word made a 90-column line (RFC 2047: 76 with an encoded word, RFC 5322: 78)."""
    titles = ["Удар по Киеву " * 12, "z" * 80, "Новости"]
    messages = [build_message([delivery(payload(feed=feed, title=t))], cfg()) for t in titles]
    digest = [delivery(payload(alert_id=f"{i}" * 16, feed=f"{feed} {i}")) for i in range(3)]
    messages.append(build_message(digest, cfg()))
    for msg in messages:
        data = msg.as_bytes(policy=policy.SMTP)
        for line in header_block(data).split(b"\r\n"):
            assert len(line) <= (76 if b"=?" in line else 78), line
        assert parse(data)["X-Feedwatch-Feed"] == str(msg["X-Feedwatch-Feed"])
    assert parse(messages[0].as_bytes(policy=policy.SMTP))["X-Feedwatch-Feed"] == feed


@pytest.mark.parametrize(
    "title",
    [
        "Strike on Ålesund harbour reported by local papers yesterday evening Møre (and"
        " Romsdal) ferry",
        "Strike on Ålesund harbour reported by local papers later (yesterday evening) Møre ferry",
        "Strike on Ålesund harbour reported by local papers and many more others, see\\ Møre",
    ],
)
def test_a_fold_beside_a_parenthesis_keeps_its_space_for_decode_header(title: str) -> None:
    """An encoded word at a line's end, then "(and" on the next line (or "evening)"
    then an encoded word) read back through email.header's decode_header and
    make_header with the space lost: "Møre(and", "evening)Møre", "see\\Møre"."""
    data = build_message([delivery(payload(title=title))], cfg()).as_bytes(policy=policy.SMTP)
    raw = email.message_from_bytes(data, policy=policy.compat32)["Subject"]
    assert "\r\n" in raw and "=?" in raw  # folded, with encoded words
    assert str(make_header(decode_header(raw))) == f"[feedwatch] moscow-times: {title}"
    assert str(parse(data)["Subject"]) == f"[feedwatch] moscow-times: {title}"
    for line in header_block(data).split(b"\r\n"):
        assert len(line) <= 76


_FOLDED_OK = {
    "subject", "from", "to", "date", "message-id", "in-reply-to", "references", "list-id",
    "x-feedwatch-feed", "x-feedwatch-alert-id", "x-feedwatch-kind", "auto-submitted",
    "mime-version", "content-type",
}  # fmt: skip


_piece = st.one_of(
    st.text(st.characters(blacklist_categories=()), max_size=20),  # lone surrogates too
    st.sampled_from(["\r", "\n", "\r\n", "\x00", "\x85", "\u2028", ":", " ", "=?utf-8?q?x?=",
                     "Bcc: evil@example.org", "x" * 120,
                     "=?utf-8?q?=0D=0AX-Evil=3A_1?=", "=?utf-8?b?DQpYLUV2aWw6IDE=?="]),
)  # fmt: skip
_nasty = st.lists(_piece, max_size=12).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=_nasty, feed=_nasty, kind=st.sampled_from(["new", "updated"]))
def test_property_headers_never_break(title: str, feed: str, kind: str) -> None:
    p = payload(kind, title=title, feed=feed or "f")
    data = build_message([delivery(p)], cfg()).as_bytes(policy=policy.SMTP)
    head = header_block(data)
    assert b"\r" not in head.replace(b"\r\n", b"") and b"\n" not in head.replace(b"\r\n", b"")
    names = set()
    for line in head.split(b"\r\n"):
        assert len(line) <= 78
        if line[:1] in (b" ", b"\t"):
            continue  # folding
        names.add(line.split(b":", 1)[0].decode("ascii").lower())
    assert names <= _FOLDED_OK
    head.decode("ascii")  # non-ASCII only as RFC 2047 encoded words
    msg = parse(data)
    # The email package may fold right after "Subject:" (valid; it then keeps the leading space).
    subject = str(msg["Subject"]).lstrip(" ")
    assert subject.startswith("[feedwatch] ")
    assert not any(ch in subject for ch in "\r\n\x00\x85\u2028")
    assert msg["Bcc"] is None and msg["To"] == "me@example.org, you@example.net"


# --------------------------------------------------------------------------
# Against a real SMTP server
# --------------------------------------------------------------------------


def test_plain_delivery_of_new_then_updated(smtp_server: Callable[..., SMTPServer]) -> None:
    server = smtp_server("none")
    sink = EmailSink(cfg(server.port))
    assert (sink.name, sink.type, sink.supports_digest) == ("me", "email", True)
    new = delivery(payload())
    upd = delivery(payload("updated", alert_id=UPD_ID), thread_id=NEW_ID)
    assert send(sink, [new]) == SendResult.success()
    assert send(sink, [upd]) == SendResult.success()
    assert len(server.messages) == 2
    first, second = server.messages
    assert first.mail_from == "alerts@example.org"
    assert first.rcpt_tos == TO and second.rcpt_tos == TO
    # What arrives is exactly the deterministic rendering.
    assert first.data.rstrip(b"\r\n") == build_message([new], sink.cfg).as_bytes(
        policy=policy.SMTP
    ).rstrip(b"\r\n")
    m1, m2 = parse(first.data), parse(second.data)
    assert m2["In-Reply-To"] == m1["Message-ID"] == f"<{NEW_ID}@feedwatch>"
    assert set(parts(m2)) == {"text/plain", "text/html"}


def test_a_display_name_with_a_comma_mails_the_address_in_angle_brackets(
    smtp_server: Callable[..., SMTPServer],
) -> None:
    """``Doe, Jane <jane@example.org>``: RFC 5322's parser took ``Doe`` for the
    address, so the mail went to ``<Doe>`` and was marked delivered."""
    server = smtp_server("none")
    c = cfg(server.port)
    opts = {
        **c.options,
        "from_": "Alerts, Feedwatch <alerts@example.org>",
        "to": ("Doe, Jane <jane@example.org>", '"Roe, Rick" <rick@example.net>', "bo@example.org"),
    }
    sink = EmailSink(SinkConfig(name=c.name, type=c.type, options=opts))
    assert send(sink, [delivery(payload())]) == SendResult.success()
    (got,) = server.messages
    assert got.mail_from == "alerts@example.org"
    assert got.rcpt_tos == ("jane@example.org", "rick@example.net", "bo@example.org")
    msg = parse(got.data)
    assert msg["From"] == '"Alerts, Feedwatch" <alerts@example.org>'
    assert msg["To"] == (
        '"Doe, Jane" <jane@example.org>, "Roe, Rick" <rick@example.net>, bo@example.org'
    )


@pytest.mark.parametrize(
    "name",
    [
        "Ålesund Nyheter, Møre og Romsdal fylkeskommune avdeling for varsler",
        "Tolkien, J. R. R. (the author of a very long book about rings)",
        'Back\\slash "q" and a long tail of words, enough to be a long name',
        'Jane "JJ" Doe',
        "Doe, Jane",
        "Jörg Müller-Lüdenscheidt, Redaktion für Nachrichten aus Köln",
        "Новости Москвы, Россия",
        "\\" * 40,
        "Desk " + "\\" * 40 + " (night)",
    ],
)
def test_a_long_display_name_reads_back_as_written(name: str) -> None:
    """A name longer than one encoded word was cut mid-word into several; Python's
    email read a space in at each cut ('fylkeskomm une', 'long  book'). A name of 40
    backslashes was quoted (each one doubled) on an 88-column From line."""
    mailbox = f"{_quoted(name)} <alerts@example.org>"
    c = cfg()
    opts = {**c.options, "from_": mailbox, "to": (mailbox, "bo@example.org")}
    sink = SinkConfig(name=c.name, type=c.type, options=opts)
    data = build_message([delivery(payload())], sink).as_bytes(policy=policy.SMTP)
    msg = parse(data)
    assert msg["From"].addresses[0].display_name == name
    assert [a.display_name for a in msg["To"].addresses] == [name, ""]
    for line in header_block(data).split(b"\r\n"):
        assert len(line) <= 76
    assert data.isascii()


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_an_international_domain_is_sent_in_punycode(
    smtp_server: Callable[..., SMTPServer],
) -> None:
    """``me@bücher.example`` passed validate, then every delivery raised
    UnicodeEncodeError in RCPT TO (a traceback, retried until dead)."""
    server = smtp_server("none")
    c = cfg(server.port)
    opts = {**c.options, "from_": "Jörg <alerts@bücher.example>", "to": ("me@BÜCHER.example",)}
    sink = EmailSink(SinkConfig(name=c.name, type=c.type, options=opts))
    assert send(sink, [delivery(payload())]) == SendResult.success()
    (got,) = server.messages
    assert got.mail_from == "alerts@xn--bcher-kva.example"
    assert got.rcpt_tos == ("me@xn--bcher-kva.example",)
    msg = parse(got.data)
    assert msg["From"] == "Jörg <alerts@xn--bcher-kva.example>"
    assert msg["To"] == "me@xn--bcher-kva.example"
    header_block(got.data).decode("ascii")


def test_a_server_without_8bitmime_gets_7bit_data(smtp_server: Callable[..., SMTPServer]) -> None:
    """The text and HTML parts went out as raw UTF-8 (Content-Transfer-Encoding: 8bit)
    to a server whose EHLO did not offer 8BITMIME (RFC 6152)."""
    server = smtp_server("none", eightbitmime=False)
    p = payload(title="Удар по Днепру")
    p["entry"]["summary"] = "Zoë’s café — “quoted”"
    assert send(EmailSink(cfg(server.port)), [delivery(p)]).ok
    (got,) = server.messages
    assert max(got.data) < 0x80
    assert b"8bit" not in got.data.lower()
    body = parts(parse(got.data))
    text = body["text/plain"].replace("\r\n", "\n")
    assert text.startswith("Удар по Днепру\n")
    assert "\nSummary:\nZoë’s café — “quoted”\n" in text
    assert "<h3>Summary</h3><p>Zoë’s café — “quoted”</p>" in body["text/html"]


def test_starttls_with_auth(smtp_server: Callable[..., SMTPServer]) -> None:
    server = smtp_server("starttls", auth=True)
    sink = EmailSink(
        cfg(server.port, security="starttls", username=USER, password=PASSWORD),
        tls_context=server.client_context,
    )
    result = send(sink, [delivery(payload())])
    assert result.ok, result.error
    assert [m.rcpt_tos for m in server.messages] == [TO]
    assert parse(server.messages[0].data)["Message-ID"] == f"<{NEW_ID}@feedwatch>"


def test_implicit_tls_with_auth(smtp_server: Callable[..., SMTPServer]) -> None:
    server = smtp_server("tls", auth=True)
    sink = EmailSink(
        cfg(server.port, security="tls", username=USER, password=PASSWORD),
        tls_context=server.client_context,
    )
    result = send(sink, [delivery(payload())])
    assert result.ok, result.error
    assert len(server.messages) == 1


def test_untrusted_certificate_is_refused(smtp_server: Callable[..., SMTPServer]) -> None:
    server = smtp_server("starttls")
    result = send(EmailSink(cfg(server.port, security="starttls")), [delivery(payload())])
    assert not result.ok and not result.permanent
    assert result.error and "'me'" in result.error
    assert server.messages == []


def test_starttls_required_but_not_offered_is_dead(smtp_server: Callable[..., SMTPServer]) -> None:
    server = smtp_server("none")
    result = send(EmailSink(cfg(server.port, security="starttls")), [delivery(payload())])
    assert result.permanent and result.error and "STARTTLS" in result.error
    assert server.messages == []


def test_injected_bcc_never_reaches_anyone(smtp_server: Callable[..., SMTPServer]) -> None:
    server = smtp_server("none")
    p = payload(title="Hello\r\nBcc: evil@example.org")
    assert send(EmailSink(cfg(server.port)), [delivery(p)]).ok
    (got,) = server.messages
    assert got.rcpt_tos == TO
    msg = parse(got.data)
    assert msg["Bcc"] is None
    assert "evil@example.org" in msg["Subject"]  # harmless text in the subject


def test_digest_of_three_is_one_message(smtp_server: Callable[..., SMTPServer]) -> None:
    server = smtp_server("none")
    ds = [delivery(payload(alert_id=f"{i:032x}", title=f"Story {i}")) for i in range(3)]
    assert send(EmailSink(cfg(server.port)), ds).ok
    (got,) = server.messages
    msg = parse(got.data)
    assert msg["Subject"] == "[feedwatch] 3 alerts: moscow-times"
    assert all(f"Story {i}" in parts(msg)["text/plain"] for i in range(3))


@pytest.mark.parametrize(
    ("kwargs", "permanent", "code"),
    [
        ({"rcpt_reply": "451 4.3.0 Try again later"}, False, "451"),
        ({"data_reply": "451 4.3.0 Try again later"}, False, "451"),
        ({"rcpt_reply": "550 5.1.1 No such user"}, True, "550"),
        ({"data_reply": "554 5.7.1 Rejected as spam"}, True, "554"),
    ],
)
def test_refusals_are_classified(
    smtp_server: Callable[..., SMTPServer], kwargs: dict[str, str], permanent: bool, code: str
) -> None:
    server = smtp_server("none", **kwargs)
    result = send(EmailSink(cfg(server.port)), [delivery(payload())])
    assert not result.ok
    assert result.permanent is permanent
    assert result.error and "'me'" in result.error and code in result.error
    assert server.messages == []


def test_unreachable_port_is_transient() -> None:
    result = send(EmailSink(cfg(free_port())), [delivery(payload())])
    assert not result.ok and not result.permanent
    assert result.error and "'me'" in result.error


def test_silent_server_times_out_transient() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never greets
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        port = listener.getsockname()[1]
        result = send(EmailSink(cfg(port, timeout=0.5)), [delivery(payload())])
    assert not result.ok and not result.permanent
    assert result.error and "'me'" in result.error


def test_wrong_password_is_dead_and_the_password_never_leaks(
    smtp_server: Callable[..., SMTPServer],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level("DEBUG")
    server = smtp_server("starttls", auth=True)
    wrong = "wr0ng-" + PASSWORD
    results: list[SendResult] = []
    with structlog.testing.capture_logs() as logs:
        sink = EmailSink(
            cfg(server.port, security="starttls", username=USER, password=wrong),
            tls_context=server.client_context,
        )
        results.append(send(sink, [delivery(payload())]))
        # the right password on a server that then refuses, and one that is unreachable
        refusing = smtp_server("starttls", auth=True, data_reply="550 5.7.1 no")
        for port in (refusing.port, free_port()):
            sink = EmailSink(
                cfg(port, security="starttls", username=USER, password=PASSWORD),
                tls_context=refusing.client_context,
            )
            results.append(send(sink, [delivery(payload())]))
    auth_failed = results[0]
    assert auth_failed.permanent and auth_failed.error and "535" in auth_failed.error
    assert [r.permanent for r in results] == [True, True, False]
    assert server.messages == []
    captured = capsys.readouterr()
    everything = " ".join(
        [str(r) for r in results]
        + [repr(e) for e in logs]
        + [caplog.text, captured.out, captured.err, repr(sink)]
    )
    assert logs, "the sink logs its failures"
    for secret in (PASSWORD, wrong):
        assert secret not in everything


def test_a_password_a_server_echoes_at_the_cut_of_its_reply_is_masked(
    smtp_server: Callable[..., SMTPServer],
) -> None:
    """The reply is cut to 300 characters: cut before masking, the password's first
    part showed where the cut fell inside it."""
    reply = "550 5.7.1 " + "x" * 270 + " you sent " + PASSWORD
    server = smtp_server("starttls", auth=True, data_reply=reply)
    sink = EmailSink(
        cfg(server.port, security="starttls", username=USER, password=PASSWORD),
        tls_context=server.client_context,
    )
    result = send(sink, [delivery(payload())])
    assert result.permanent and result.error and "550" in result.error
    assert "xxx" in result.error and PASSWORD[:6] not in result.error, result.error
