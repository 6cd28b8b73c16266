"""A digest never grows past what its receiver takes (docs/alerts.md "Digests").

A held batch too big for one message goes as several digests, each within the
sink's budget, oldest first, each succeeding or failing on its own and marked as
it goes: a stop between two parts re-sends only the part in flight. Against real
receivers: aiosmtpd with a ``data_size_limit`` (announced as SIZE in its EHLO, or
not), and a webhook receiver answering 413 past 1 MiB as nginx does. A digest that
a receiver refuses for its size anyway (a limit smaller than announced, or than the
default) goes again in halves, until each alert is taken; one too big alone goes with
its texts cut to fit (dead only when even that is refused); the email and webhook
sinks remember the size refused.
"""

from __future__ import annotations

import asyncio
import email
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import replace
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from feedwatch.deliver import Dispatcher, DispatchReport
from feedwatch.model import Alert, Config, Secret, SinkConfig
from feedwatch.sinks import email as email_sink
from feedwatch.sinks.base import SendResult, Sink
from feedwatch.sinks.email import EmailSink
from feedwatch.sinks.formats import alerts_count
from feedwatch.sinks.webhook import WebhookSink
from feedwatch.store.base import Delivery
from feedwatch.store.sqlite import SqliteStore
from feedwatch.testing import FakeClock, RecordingSink
from tests.receivers import Received, Receiver, make_delivery, make_payload, webhook_receiver
from tests.smtpserver import PASSWORD, USER, SMTPServer, smtp_cert, smtp_server
from tests.test_deliver_unit import store

__all__ = ["smtp_cert", "smtp_server", "store", "webhook_receiver"]  # fixtures, imported for pytest

MIB = 1024 * 1024
WORDS = "the ministry said on Tuesday that a strike hit a power plant near Dnipro".split()


def long_read(n: int, chars: int) -> str:
    """``chars`` characters of words, different for each ``n``, ending in a word."""
    words: list[str] = []
    size, i = 0, 0
    while size < chars:
        words.append(f"{WORDS[(n + i) % len(WORDS)]}{i}")
        size += len(words[-1]) + 1
        i += 1
    text = " ".join(words)[:chars]
    return text[:-1] + "x" if text.endswith(" ") else text


def hold(
    store: SqliteStore,
    clock: FakeClock,
    sink: str,
    count: int,
    chars: int,
    huge: Collection[int] = (),
    first: int = 0,
) -> list[str]:
    """``count`` alerts for ``sink``, one a minute, each with a summary (and the same
    content) of ``chars`` characters; their ids, oldest first. Those numbered in
    ``huge`` also carry 12,000 tags (some 300 KB, shown whole everywhere). Numbered
    from ``first`` (another batch: other alerts)."""
    ids = []
    for n in range(first, first + count):
        aid = hashlib.sha256(f"alert {n}".encode()).hexdigest()[:32]
        payload = make_payload(alert_id=aid, title=f"Long read {n}", summary=long_read(n, chars))
        if n in huge:
            payload["entry"]["tags"] = [f"tag-{i:05d}-ukraine-war" for i in range(12_000)]
        alert = Alert(
            id=aid,
            kind="new",
            feed="moscow-times",
            payload=payload,
            sinks=(sink,),
            thread_id=None,
            identity=f"urn:{n}",
        )
        assert store.queue_notices([alert], now=clock()) == [aid]
        ids.append(aid)
        clock.advance(60)
    return ids


def config(state: Path, *sinks: SinkConfig) -> Config:
    return Config(path=None, state=str(state), feeds=(), rules={}, sinks={s.name: s for s in sinks})


def dispatch(
    tmp_path: Path, store: SqliteStore, sink: Sink, cfg: SinkConfig, clock: FakeClock
) -> DispatchReport:
    async def go() -> DispatchReport:
        d = Dispatcher(config(tmp_path, cfg), store, {cfg.name: sink}, clock=clock)
        try:
            return await d.run_once()
        finally:
            await d.aclose()

    return asyncio.run(go())


def digest_id(ids: Sequence[str], length: int) -> str:
    return "digest-" + hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:length]


def statuses(store: SqliteStore, sink: str) -> dict[str, str]:
    return {i: d.status for i, d in deliveries(store, sink).items()}


def deliveries(store: SqliteStore, sink: str) -> dict[str, Delivery]:
    return {
        rec.alert_id: d
        for rec in store.alerts_for("moscow-times", limit=10_000)
        for d in rec.deliveries
        if d.sink == sink
    }


# --------------------------------------------------------------------------
# Email
# --------------------------------------------------------------------------


def mail_config(smtp: SMTPServer, security: str = "none", digest: float = 3.0) -> SinkConfig:
    login = {"username": USER, "password": Secret(PASSWORD)} if security != "none" else {}
    return SinkConfig(
        name="mail",
        type="email",
        digest=digest,
        options={
            "host": smtp.host,
            "port": smtp.port,
            "security": security,
            **login,
            "from_": "feedwatch <alerts@example.org>",
            "to": ("me@example.org",),
            "timeout": 10.0,
        },
    )


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def mail_alert_ids(msg: EmailMessage) -> list[str]:
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return re.findall(r"^-- feedwatch new alert ([0-9a-f]{32})\r?$", text, flags=re.M)


def assert_split_mail(smtp: SMTPServer, ids: list[str], limit: int) -> None:
    """Every alert in exactly one message, oldest first; each message within ``limit``
    bytes as sent and a digest of its own alerts."""
    assert len(smtp.messages) >= 2
    sent: list[str] = []
    for m in smtp.messages:
        assert len(m.data) <= limit
        msg = parse(m.data)
        got = mail_alert_ids(msg)
        assert msg["X-Feedwatch-Kind"] == "digest"
        assert msg["X-Feedwatch-Alert-Count"] == str(len(got))
        assert msg["Subject"] == f"[feedwatch] {alerts_count(len(got))}: moscow-times"
        assert msg["Message-ID"] == f"<{digest_id(got, 40)}@feedwatch>"
        sent += got
    assert sent == ids


@pytest.mark.parametrize("security", ["none", "starttls"])
def test_email_digest_past_the_servers_size_goes_as_several_messages(
    tmp_path: Path, store: SqliteStore, smtp_server: Callable[..., SMTPServer], security: str
) -> None:
    """One digest of every held alert was refused (SMTP 552, message size exceeds fixed
    maximum) and every alert in it went dead; `redeliver` rebuilt the same message."""
    limit = 60_000
    # announced: 250-SIZE 60000 (after STARTTLS, to a client yet to log in)
    smtp = smtp_server(security, auth=security != "none", data_size_limit=limit)
    cfg = mail_config(smtp, security)
    clock = FakeClock()
    ids = hold(store, clock, "mail", 40, 8000)
    sink = EmailSink(cfg, tls_context=smtp.client_context)
    report = dispatch(tmp_path, store, sink, cfg, clock)
    assert (report.delivered, report.dead, report.retried) == (40, 0, 0), report.failures
    assert_split_mail(smtp, ids, limit)
    assert set(statuses(store, "mail").values()) == {"delivered"}
    # nothing left to send
    clock.advance(3600)
    assert dispatch(tmp_path, store, sink, cfg, clock).delivered == 0


def test_email_digest_to_a_server_that_announces_no_size_keeps_to_the_default(
    tmp_path: Path,
    store: SqliteStore,
    smtp_server: Callable[..., SMTPServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limit = 60_000
    smtp = smtp_server("none", data_size_limit=limit, announce_size=False)
    # the default (under Postfix's 10,240,000) scaled down with the server's limit
    monkeypatch.setattr(email_sink, "DEFAULT_MAX_MESSAGE", limit - 5000)
    cfg = mail_config(smtp)
    clock = FakeClock()
    ids = hold(store, clock, "mail", 30, 8000)
    report = dispatch(tmp_path, store, EmailSink(cfg), cfg, clock)
    assert (report.delivered, report.dead, report.retried) == (30, 0, 0), report.failures
    assert_split_mail(smtp, ids, limit - 5000)


def test_email_digest_refused_for_its_size_goes_in_halves_until_each_is_taken(
    tmp_path: Path, store: SqliteStore, smtp_server: Callable[..., SMTPServer]
) -> None:
    """A server enforcing a smaller limit than the default without announcing SIZE
    refused the one digest (552 Error: Too much mail data): every alert in it went
    dead, and `redeliver` sent the same message again. Now a part refused for its size
    goes as two halves, again and again within the same run: each alert is mailed
    once; the one too big alone (its 12,000 tags) goes cut to fit, not dead."""
    limit = 60_000
    smtp = smtp_server("none", data_size_limit=limit, announce_size=False)
    cfg = mail_config(smtp)
    clock = FakeClock()
    ids = hold(store, clock, "mail", 40, 8000, huge=(25,))
    report = dispatch(tmp_path, store, EmailSink(cfg), cfg, clock)
    assert (report.delivered, report.dead, report.retried) == (40, 0, 0), report.failures
    assert_split_mail(smtp, ids, limit)  # each accepted once, in order
    [huge] = [m for m in smtp.messages if mail_alert_ids(parse(m.data)) == [ids[25]]]
    plain = parse(huge.data).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    [tags] = [line for line in plain.splitlines() if line.startswith("Tags:")]
    assert tags.startswith("Tags:      tag-00000-ukraine-war, tag-00001-ukraine-war")
    assert "tag-11999-ukraine-war" not in tags and tags.endswith("…")
    assert set(statuses(store, "mail").values()) == {"delivered"}


def test_email_alert_refused_for_its_size_alone_goes_cut_to_fit_and_later_ones_fit_at_once(
    tmp_path: Path, store: SqliteStore, smtp_server: Callable[..., SMTPServer]
) -> None:
    """A long read mailed alone to a server taking less (552, not announced) went dead:
    the alert lost, and every later long read the same. Now its texts (text and HTML
    parts) are cut after a word (" …") until the message fits, and it is sent again at
    once with the same headers. The sink remembers the size refused: the next long reads
    are cut before they are sent, not refused first; a short alert goes whole."""
    limit = 30_000
    smtp = smtp_server("none", data_size_limit=limit, announce_size=False)
    cfg = mail_config(smtp, digest=0.0)
    sink = EmailSink(cfg)
    clock = FakeClock()
    [first] = hold(store, clock, "mail", 1, 40_000)
    with capture_logs() as logs:
        report = dispatch(tmp_path, store, sink, cfg, clock)
    assert (report.delivered, report.dead, report.retried) == (1, 0, 0), report.failures
    # refused whole, then cut; refused again while bigger than the server takes, cut further
    cuts = [(e["refused"], e["sent"]) for e in logs if e["event"] == "email.cut"]
    assert cuts and all(sent < refused for refused, sent in cuts), cuts
    assert [c[0] for c in cuts[1:]] == [c[1] for c in cuts[:-1]], cuts
    [taken] = smtp.messages
    assert len(taken.data) <= limit
    msg = parse(taken.data)
    whole = email_sink.build_message(list(deliveries(store, "mail").values()), cfg)
    for header in ("Message-ID", "Subject", "X-Feedwatch-Alert-Id", "X-Feedwatch-Kind"):
        assert msg[header] == whole[header], header
    assert msg["Message-ID"] == f"<{first}@feedwatch>"
    text = long_read(0, 40_000)
    plain = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    for part in (plain, html.replace("<br>\n", "\n")):
        [shown] = re.findall(rf"({text[:20]}[^<\n]*) …", part)[:1]
        assert 1000 < len(shown) < 20_000 and text.startswith(shown), len(shown)
        assert f"-- feedwatch new alert {first}" in part or f"alert {first}</p>" in part
    assert statuses(store, "mail") == {first: "delivered"}

    smtp.messages.clear()
    later = hold(store, clock, "mail", 3, 40_000, first=1)
    with capture_logs() as logs:
        report = dispatch(tmp_path, store, sink, cfg, clock)
    assert (report.delivered, report.dead, report.retried) == (3, 0, 0), report.failures
    assert [e for e in logs if e["event"] == "email.failed"] == []  # cut before sending
    # ... which the log says: the size of the message cut, never seen by the server (as
    # the webhook's does), not a size "refused"
    cut = [e for e in logs if e["event"] == "email.cut"]
    assert len(cut) == 3 and all("refused" not in e and e["size"] > e["sent"] for e in cut), cut
    assert [parse(m.data)["Message-ID"] for m in smtp.messages] == [
        f"<{i}@feedwatch>" for i in later
    ]
    assert all(len(m.data) <= limit for m in smtp.messages)
    # a short alert goes whole, as always
    smtp.messages.clear()
    hold(store, clock, "mail", 1, 100, first=4)
    assert dispatch(tmp_path, store, sink, cfg, clock).delivered == 1
    [m] = smtp.messages
    assert long_read(4, 100) in parse(m.data).get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_email_update_refused_for_its_size_goes_cut_in_its_thread(
    smtp_server: Callable[..., SMTPServer],
) -> None:
    """An update (threaded under the first alert of its entry) cut to fit keeps its
    Message-ID, In-Reply-To and References; a server refusing even the smallest cut
    leaves it dead, saying it was refused for its size, after messages ever smaller."""
    from tests.receivers import UPDATE_CHANGES, make_delivery

    smtp = smtp_server("none", data_size_limit=12_000, announce_size=False)
    cfg = mail_config(smtp, digest=0.0)
    payload = make_payload(kind="updated", summary=long_read(7, 30_000), changes=UPDATE_CHANGES)
    d = replace(make_delivery(payload, "mail"), thread_id="f" * 32)
    whole = email_sink.build_message([d], cfg)
    assert whole["In-Reply-To"] == f"<{'f' * 32}@feedwatch>"
    result = asyncio.run(EmailSink(cfg).send([d]))
    assert result.ok, result.error
    [taken] = smtp.messages
    msg = parse(taken.data)
    for header in ("Message-ID", "In-Reply-To", "References", "Subject"):
        assert msg[header] == whole[header], header
    assert len(taken.data) <= 12_000 < len(whole.as_bytes())
    # cut to the bone and still too big: dead
    smtp.messages.clear()
    tiny = smtp_server("none", data_size_limit=2_000, announce_size=False)
    cfg = mail_config(tiny, digest=0.0)
    with capture_logs() as logs:
        result = asyncio.run(EmailSink(cfg).send([d]))
    assert not result.ok and result.permanent and result.too_big
    assert "refused the message for its size" in (result.error or "")
    sizes = [e["refused"] for e in logs if e["event"] == "email.cut"]
    assert sizes and sizes == sorted(set(sizes), reverse=True), sizes
    assert tiny.messages == []


def test_email_sink_remembers_the_size_refused_and_cuts_the_next_digest_before_sending(
    tmp_path: Path, store: SqliteStore, smtp_server: Callable[..., SMTPServer]
) -> None:
    """A server refusing a digest for its size without announcing SIZE: every later
    digest went whole first, was refused again, and only then went in halves (a refused
    send each time, and a 552 in its log). The sink remembers the smallest message
    refused: the next digests are cut below it before anything is sent."""
    limit = 60_000
    smtp = smtp_server("none", data_size_limit=limit, announce_size=False)
    cfg = mail_config(smtp)
    for ids in learnt_then_held(tmp_path, store, EmailSink(cfg), cfg, 8000, smtp.messages.clear):
        assert_split_mail(smtp, ids, limit)


def learnt_then_held(
    tmp_path: Path, store: SqliteStore, sink: Any, cfg: Any, chars: int, clear: Callable[[], None]
) -> Iterator[list[str]]:
    """A digest of 40 alerts of ``chars`` characters refused for its size, halved until
    each part was taken (the sink learns the size); then two more, each sent without a
    refusal: after each, the ids it held, for the caller to check what the receiver
    got (``clear`` empties the receiver's record before each)."""
    clock = FakeClock()
    hold(store, clock, sink.name, 40, chars)
    with capture_logs() as logs:
        report = dispatch(tmp_path, store, sink, cfg, clock)
    assert (report.delivered, report.dead, report.retried) == (40, 0, 0), report.failures
    assert [e["event"] for e in logs].count("delivery.split") >= 1  # learnt the hard way
    for batch in range(1, 3):
        clear()
        clock.advance(3600)
        ids = hold(store, clock, sink.name, 40, chars, first=40 * batch)
        clock.advance(3600)
        with capture_logs() as logs:
            report = dispatch(tmp_path, store, sink, cfg, clock)
        assert (report.delivered, report.dead, report.retried) == (40, 0, 0), report.failures
        refused = [e for e in logs if e["event"] in ("delivery.split", "email.failed")]
        assert refused == [], refused  # each part taken at its first send
        yield ids


def refused_after_taken(logs: list[dict]) -> list[dict]:
    """The refusals for size logged after the receiver had taken a message (an alert
    marked delivered): a half sent bigger than the sink had learnt it takes."""
    events = [e["event"] for e in logs]
    if "alert.delivered" not in events:
        return []
    first = events.index("alert.delivered")
    return [e for e in logs[first:] if e["event"] in ("delivery.split", "email.failed")]


def test_email_halves_go_cut_to_the_size_learnt_not_refused_again(
    tmp_path: Path, store: SqliteStore, smtp_server: Callable[..., SMTPServer]
) -> None:
    """A digest refused for its size went as two halves, each halved again if refused:
    once the server had taken one (its limit learnt), the halves still waiting went
    whole (a 25-alert one of 270 KB to a server taking 30,000 bytes) and were refused
    again and again. Now a half goes cut to the size learnt: once a message is taken,
    none is refused; each alert is mailed once, in order."""
    limit = 30_000
    smtp = smtp_server("none", data_size_limit=limit, announce_size=False)
    cfg = mail_config(smtp)
    clock = FakeClock()
    ids = hold(store, clock, "mail", 100, 3000)
    with capture_logs() as logs:
        report = dispatch(tmp_path, store, EmailSink(cfg), cfg, clock)
    assert (report.delivered, report.dead, report.retried) == (100, 0, 0), report.failures
    assert refused_after_taken(logs) == []
    splits = [e["alerts"] for e in logs if e["event"] == "delivery.split"]
    assert splits == sorted(splits, reverse=True) and len(splits) <= 6, splits  # one descent
    assert_split_mail(smtp, ids, limit)  # each accepted once, in order
    assert set(statuses(store, "mail").values()) == {"delivered"}


@pytest.mark.parametrize(
    ("reply", "too_big"),
    [
        ("552 5.3.4 Message size exceeds fixed limit", True),
        ("552 Error: Too much mail data", True),
        ("554 5.3.4 Message too big for system", True),
        ("554 Transaction failed: message size exceeds the limit", True),
        ("552 5.2.2 Mailbox full", False),
        ("554 5.7.1 Message rejected as spam", False),
        ("550 5.7.1 No such user", False),
    ],
)
def test_email_tells_a_refusal_for_size_from_other_refusals(
    smtp_server: Callable[..., SMTPServer], reply: str, too_big: bool
) -> None:
    from tests.receivers import make_delivery

    smtp = smtp_server("none", data_reply=reply)
    result = asyncio.run(EmailSink(mail_config(smtp)).send([make_delivery(make_payload())]))
    assert not result.ok and result.permanent
    assert result.too_big is too_big
    assert ("refused the message for its size" in (result.error or "")) is too_big


def test_email_digest_shows_an_excerpt_of_each_long_read() -> None:
    """A digest of long reads printed each whole, twice (text and HTML): 100 of them
    made a 10 MB mail that no one reads through."""
    text = long_read(1, 40_000)
    from tests.receivers import make_delivery

    ds = [make_delivery(make_payload(alert_id=f"{i:032x}", summary=text), "m") for i in range(3)]
    cfg = SinkConfig(
        name="m", type="email", digest=60.0, options={"from_": "a@b.org", "to": ("c@d.org",)}
    )
    msg = email_sink.build_message(ds, cfg)
    assert len(msg.as_bytes()) < 40_000
    plain = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    excerpt = text[: email_sink.DIGEST_EXCERPT]
    cut = excerpt[: excerpt.rstrip().rfind(" ")].rstrip()
    for part in (plain, html):
        assert part.count(cut[:200]) == 3 and text[:1500] not in part
        assert cut + " …" in part.replace("<br>\n", "\n")
    # one alert alone (not a digest) keeps its whole text
    single = email_sink.build_message(
        ds[:1], SinkConfig(name="m", type="email", options=cfg.options)
    )
    assert text in single.get_body(("plain",)).get_content()  # type: ignore[union-attr]


# --------------------------------------------------------------------------
# Webhook json
# --------------------------------------------------------------------------


def hook_config(receiver: Receiver, fmt: str = "json", digest: float = 3.0) -> SinkConfig:
    return SinkConfig(
        name="hook",
        type="webhook",
        digest=digest,
        options={
            "url": receiver.url + "/hook",
            "format": fmt,
            "timeout": 10.0,
            "secret": Secret("signing-key"),
        },
    )


def test_json_digest_past_one_mib_goes_as_several_requests(
    tmp_path: Path, store: SqliteStore, webhook_receiver: Receiver
) -> None:
    """40 alerts of ~32 KB were one 1.3 MB body: nginx's default client_max_body_size
    answered 413 and all 40 went dead."""
    webhook_receiver.max_body = MIB
    cfg = hook_config(webhook_receiver)
    clock = FakeClock()
    ids = hold(store, clock, "hook", 40, 16_000)
    report = dispatch(tmp_path, store, WebhookSink(cfg), cfg, clock)
    assert (report.delivered, report.dead, report.retried) == (40, 0, 0), report.failures
    requests = webhook_receiver.received()
    assert len(requests) >= 2 and {r.status for r in requests} == {200}
    sent: list[str] = []
    for r in requests:
        assert len(r.body) <= MIB
        body = json.loads(r.body)
        assert body["version"] == 1 and body["kind"] == "digest"
        got = [a["id"] for a in body["alerts"]]
        assert r.headers["x-feedwatch-digest"] == str(len(got))
        assert r.headers["x-feedwatch-delivery"] == digest_id(got, 32)
        for a in body["alerts"]:  # the alert objects whole, as everywhere else
            assert a["entry"]["summary"] == long_read(ids.index(a["id"]), 16_000)
        sent += got
    assert sent == ids
    assert set(statuses(store, "hook").values()) == {"delivered"}


def test_json_digest_refused_413_by_a_smaller_proxy_goes_in_halves(
    tmp_path: Path, store: SqliteStore, webhook_receiver: Receiver
) -> None:
    """Behind a proxy taking less than 1 MB each digest was answered 413 and every alert
    in it went dead. Now each refused part goes as two halves: every alert is posted
    (and taken) once, in order; the one too big alone (its 12,000 tags) goes cut to fit,
    not dead."""
    webhook_receiver.max_body = 200_000
    cfg = hook_config(webhook_receiver)
    clock = FakeClock()
    ids = hold(store, clock, "hook", 40, 16_000, huge=(25,))
    report = dispatch(tmp_path, store, WebhookSink(cfg), cfg, clock)
    assert (report.delivered, report.dead, report.retried) == (40, 0, 0), report.failures
    requests = webhook_receiver.received()
    assert {r.status for r in requests} == {200, 413}
    assert all(len(r.body) > 200_000 for r in requests if r.status == 413)
    taken: list[str] = []
    for r in requests:
        if r.status != 200:
            continue
        alerts = json.loads(r.body)["alerts"]
        got = [a["id"] for a in alerts]
        assert r.headers["x-feedwatch-digest"] == str(len(got))
        assert r.headers["x-feedwatch-delivery"] == digest_id(got, 32)
        if got == [ids[25]]:  # its tags cut, the first ones kept
            tags = alerts[0]["entry"]["tags"]
            assert 0 < len(tags) < 12_000 and tags[0] == "tag-00000-ukraine-war"
        else:
            for a in alerts:  # the others whole
                assert a["entry"]["summary"] == long_read(ids.index(a["id"]), 16_000)
        taken += got
    assert taken == ids
    assert set(statuses(store, "hook").values()) == {"delivered"}


def test_webhook_tells_413_from_other_refusals(webhook_receiver: Receiver) -> None:
    from tests.receivers import make_delivery

    async def answered(status: int) -> SendResult:
        webhook_receiver.script(status=status, body=b"no")
        sink = WebhookSink(hook_config(webhook_receiver))
        try:
            return await sink.send([make_delivery(make_payload())])
        finally:
            await sink.aclose()

    for status, too_big in ((413, True), (400, False), (422, False)):
        webhook_receiver.requests.clear()
        result = asyncio.run(answered(status))
        assert not result.ok and result.permanent and result.too_big is too_big
        sizes = [len(r.body) for r in webhook_receiver.received()]
        if too_big:  # each try smaller than the one refused, until nothing is left to cut
            assert len(sizes) >= 2 and sizes == sorted(set(sizes), reverse=True), sizes
            assert "refused the alert for its size: HTTP 413" in (result.error or "")
        else:  # any other 4xx: dead at its first answer, never sent again
            assert len(sizes) == 1, sizes


def signed(r: Received) -> bool:
    mac = hmac.new(b"signing-key", r.body, hashlib.sha256).hexdigest()
    return r.headers["x-feedwatch-signature-256"] == f"sha256={mac}"


@pytest.mark.parametrize(("fmt", "limit"), [("json", 2500), ("slack", 1000), ("discord", 2500)])
def test_webhook_alert_refused_413_alone_goes_cut_to_fit_and_later_ones_fit_at_once(
    tmp_path: Path, store: SqliteStore, webhook_receiver: Receiver, fmt: str, limit: int
) -> None:
    """A long read posted alone to a receiver taking less (a proxy's small body limit)
    was answered 413 and went dead: the alert lost, and every later long read the same.
    Now its texts are cut ("…") until the body fits, and sent again at once: delivered,
    with its own id and a signature of the body sent. The sink remembers the size refused:
    the next long reads are cut before they are sent, not refused first."""
    webhook_receiver.max_body = limit
    cfg = hook_config(webhook_receiver, fmt, digest=0.0)
    sink = WebhookSink(cfg)
    clock = FakeClock()
    [first] = hold(store, clock, "hook", 1, 40_000)
    report = dispatch(tmp_path, store, sink, cfg, clock)
    assert (report.delivered, report.dead, report.retried) == (1, 0, 0), report.failures
    requests = webhook_receiver.received()
    assert [r.status for r in requests][0] == 413 and requests[-1].status == 200
    assert [r.status for r in requests].count(200) == 1
    assert all(r.headers["x-feedwatch-delivery"] == first for r in requests)
    taken = requests[-1]
    assert len(taken.body) <= limit and signed(taken)
    assert "Long read 0" in taken.body.decode()
    if fmt == "json":
        alert = json.loads(taken.body)
        assert alert["id"] == first and alert["entry"]["link"] == make_payload()["entry"]["link"]
        summary = alert["entry"]["summary"]
        assert summary.endswith("…") and long_read(0, 40_000).startswith(summary[:-1].rstrip())
    assert statuses(store, "hook") == {first: "delivered"}
    webhook_receiver.requests.clear()
    later = hold(store, clock, "hook", 3, 40_000, first=1)
    report = dispatch(tmp_path, store, sink, cfg, clock)
    assert (report.delivered, report.dead, report.retried) == (3, 0, 0), report.failures
    requests = webhook_receiver.received()
    assert [r.status for r in requests] == [200] * 3  # cut before sending: none refused
    assert [r.headers["x-feedwatch-delivery"] for r in requests] == later
    assert all(len(r.body) <= limit and signed(r) for r in requests)
    # a short alert goes whole, as always
    webhook_receiver.requests.clear()
    [short] = hold(store, clock, "hook", 1, 100, first=4)
    assert dispatch(tmp_path, store, sink, cfg, clock).delivered == 1
    [r] = webhook_receiver.received()
    assert r.status == 200 and long_read(4, 100) in r.body.decode()


@pytest.mark.parametrize("fmt", ["json", "slack"])
def test_webhook_sink_remembers_the_size_refused_and_cuts_the_next_digest_before_sending(
    tmp_path: Path, store: SqliteStore, webhook_receiver: Receiver, fmt: str
) -> None:
    """A proxy taking less than the format's own limit: every digest went whole first,
    was answered 413 and only then went in halves (a refused request each time). The
    sink remembers the smallest body refused, as the email sink does: the next digests
    are cut below it before anything is sent, each alert in one of them, in order."""
    limit = 60_000 if fmt == "json" else 6_000
    webhook_receiver.max_body = limit
    cfg = hook_config(webhook_receiver, fmt)
    held = learnt_then_held(
        tmp_path, store, WebhookSink(cfg), cfg, 3000, webhook_receiver.requests.clear
    )
    for ids in held:
        requests = webhook_receiver.received()
        assert len(requests) >= 2 and {r.status for r in requests} == {200}
        assert_posted_in_parts(requests, ids, limit, fmt)
        assert set(statuses(store, "hook").values()) == {"delivered"}


def assert_posted_in_parts(requests: Sequence[Any], ids: list[str], limit: int, fmt: str) -> None:
    """``requests`` are digests of ``ids``, in order, each once: each body within
    ``limit`` and signed, each delivery id the digest id of its part."""
    sent: list[str] = []
    for r in requests:
        assert len(r.body) <= limit and signed(r)
        n = int(r.headers["x-feedwatch-digest"])
        part = ids[len(sent) : len(sent) + n]
        assert r.headers["x-feedwatch-delivery"] == digest_id(part, 32)
        if fmt == "json":
            assert [a["id"] for a in json.loads(r.body)["alerts"]] == part
        sent += part
    assert sent == ids


@pytest.mark.parametrize(("fmt", "limit", "chars"), [("json", 20_000, 3000), ("slack", 3000, 1000)])
def test_webhook_halves_go_cut_to_the_size_learnt_not_refused_again(
    tmp_path: Path, store: SqliteStore, webhook_receiver: Receiver, fmt: str, limit: int, chars: int
) -> None:
    """A digest answered 413 went as two halves, each halved again if refused: once the
    receiver had taken a body (its limit learnt), the halves still waiting went whole and
    were answered 413 again (slack: 47 requests, 22 refused). Now a half goes cut to the
    size learnt: once a body is taken, none is refused; each alert posted once, in order,
    each part marked as it goes."""
    webhook_receiver.max_body = limit
    cfg = hook_config(webhook_receiver, fmt)
    clock = FakeClock()
    ids = hold(store, clock, "hook", 40, chars)
    with capture_logs() as logs:
        report = dispatch(tmp_path, store, WebhookSink(cfg), cfg, clock)
    assert (report.delivered, report.dead, report.retried) == (40, 0, 0), report.failures
    requests = webhook_receiver.received()
    statuses_ = [r.status for r in requests]
    first_taken = statuses_.index(200)
    # the refusals: the first digest and its first halves, down to one the receiver took
    assert statuses_[first_taken:] == [200] * (len(requests) - first_taken), statuses_
    refused = [len(r.body) for r in requests[:first_taken]]
    assert refused == sorted(refused, reverse=True) and len(refused) <= 6, statuses_
    assert refused_after_taken(logs) == []
    assert_posted_in_parts(requests[first_taken:], ids, limit, fmt)
    assert set(statuses(store, "hook").values()) == {"delivered"}


# --------------------------------------------------------------------------
# Parts, through the dispatcher
# --------------------------------------------------------------------------


class PartsSink(RecordingSink):
    """Splits a digest into parts of ``size`` alerts; ``block`` holds the send of the
    part whose first alert it names until cancelled; ``fail`` fails such a part."""

    def __init__(self, size: int) -> None:
        super().__init__(name="parts")
        self.size = size
        self.block: str | None = None
        self.blocked = asyncio.Event()
        self.fail: dict[str, SendResult] = {}

    async def digest_parts(self, deliveries: Sequence[Delivery]) -> list[list[Delivery]]:
        items = list(deliveries)
        return [items[i : i + self.size] for i in range(0, len(items), self.size)]

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        self.batches.append(list(deliveries))
        if deliveries[0].alert_id == self.block:
            self.blocked.set()
            await asyncio.Event().wait()  # until cancelled
        return self.fail.get(deliveries[0].alert_id, SendResult.success())


def parts_config(tmp_path: Path) -> Config:
    return config(tmp_path, SinkConfig(name="parts", type="webhook", digest=600.0))


def due_parts(store: SqliteStore, n: int) -> tuple[FakeClock, list[str]]:
    """``n`` small alerts held for the "parts" digest, and the clock once it is due."""
    clock = FakeClock()
    ids = hold(store, clock, "parts", n, 10)
    clock.advance(600)
    return clock, ids


def test_a_stop_between_digest_parts_sends_again_only_the_part_in_flight(
    tmp_path: Path, store: SqliteStore
) -> None:
    clock, ids = due_parts(store, 7)
    sink = PartsSink(3)
    sink.block = ids[3]

    async def stopped_mid_digest() -> None:
        d = Dispatcher(parts_config(tmp_path), store, {"parts": sink}, clock=clock)
        task = asyncio.get_running_loop().create_task(d.run_once())
        await asyncio.wait_for(sink.blocked.wait(), 5)
        d.stop()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(stopped_mid_digest())
    state = statuses(store, "parts")
    assert [state[i] for i in ids] == ["delivered"] * 3 + ["pending"] * 4
    # the next run: the part in flight and the rest; the first part is not sent again
    sink.block = None
    before = len(sink.batches)
    report = asyncio.run(
        Dispatcher(parts_config(tmp_path), store, {"parts": sink}, clock=clock).run_once()
    )
    assert report.delivered == 4
    assert [[d.alert_id for d in b] for b in sink.batches[before:]] == [ids[3:6], ids[6:]]


def test_a_failed_part_holds_the_later_parts_and_a_dead_one_does_not(
    tmp_path: Path, store: SqliteStore
) -> None:
    clock, ids = due_parts(store, 7)
    sink = PartsSink(3)
    sink.fail[ids[3]] = SendResult.transient("HTTP 503")
    d = Dispatcher(parts_config(tmp_path), store, {"parts": sink}, clock=clock)
    report = asyncio.run(d.run_once())
    assert (report.delivered, report.retried, report.waiting) == (3, 3, 1)
    assert [[x.alert_id for x in b] for b in sink.batches] == [ids[:3], ids[3:6]]
    sink.batches.clear()
    sink.size = 2  # re-split: 3 4 | 5 6
    sink.fail = {ids[3]: SendResult.dead("HTTP 400")}
    report = asyncio.run(d.run_once(force=True))
    assert (report.delivered, report.dead) == (2, 2)  # the dead part did not stop the next
    state = statuses(store, "parts")
    assert [state[i] for i in ids] == ["delivered"] * 3 + ["dead"] * 2 + ["delivered"] * 2


class SizeSink(PartsSink):
    """``PartsSink`` whose receiver refuses a message of more than ``most`` alerts for
    its size."""

    def __init__(self, size: int, most: int) -> None:
        super().__init__(size)
        self.most = most

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        if len(deliveries) > self.most:
            self.batches.append(list(deliveries))
            return SendResult.dead("HTTP 413 Payload Too Large", too_big=True)
        return await super().send(deliveries)


def taken(sink: SizeSink) -> list[list[str]]:
    return [[d.alert_id for d in b] for b in sink.batches if len(b) <= sink.most]


def test_a_part_refused_for_its_size_goes_in_halves_each_marked_as_it_goes(
    tmp_path: Path, store: SqliteStore
) -> None:
    clock, ids = due_parts(store, 12)
    sink = SizeSink(6, most=2)
    report = asyncio.run(
        Dispatcher(parts_config(tmp_path), store, {"parts": sink}, clock=clock).run_once()
    )
    assert (report.delivered, report.dead, report.retried) == (12, 0, 0), report.failures
    assert [i for b in taken(sink) for i in b] == ids  # each once, oldest first
    assert all(len(b) <= 2 for b in taken(sink))
    assert set(statuses(store, "parts").values()) == {"delivered"}


def test_a_half_that_fails_for_now_holds_the_rest_and_other_failures_keep_a_part_whole(
    tmp_path: Path, store: SqliteStore
) -> None:
    clock, ids = due_parts(store, 12)
    sink = SizeSink(6, most=2)
    sink.fail[ids[2]] = SendResult.transient("HTTP 503")
    d = Dispatcher(parts_config(tmp_path), store, {"parts": sink}, clock=clock)
    report = asyncio.run(d.run_once())
    assert (report.delivered, report.retried, report.dead, report.waiting) == (2, 1, 0, 9)
    assert taken(sink) == [ids[:2], ids[2:3]]  # nothing sent after the failed half
    state = statuses(store, "parts")
    assert [state[i] for i in ids] == ["delivered"] * 2 + ["pending"] * 10
    # a part refused for another reason fails whole, in one send: no halves
    sink.batches.clear()
    sink.most = 6
    sink.fail = {ids[2]: SendResult.dead("HTTP 400")}
    report = asyncio.run(d.run_once(force=True))
    assert (report.delivered, report.dead) == (4, 6)
    assert taken(sink) == [ids[2:8], ids[8:]]
    state = statuses(store, "parts")
    assert [state[i] for i in ids] == ["delivered"] * 2 + ["dead"] * 6 + ["delivered"] * 4


def test_a_stop_during_a_send_refused_for_its_size_starts_no_half(
    tmp_path: Path, store: SqliteStore
) -> None:
    """A SIGTERM while a digest was being refused for its size: the halves still went
    out after the stop (holding it up to shutdown_timeout, and a send cut off there was
    sent again at the next start). Now nothing new starts; every alert stays pending."""
    clock, ids = due_parts(store, 12)

    class StoppedWhileRefused(SizeSink):
        async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
            if len(deliveries) > self.most:
                d.stop()  # the signal arrives while the receiver is answering 413
            return await super().send(deliveries)

    sink = StoppedWhileRefused(6, most=2)
    d = Dispatcher(parts_config(tmp_path), store, {"parts": sink}, clock=clock)
    report = asyncio.run(d.run_once())
    assert taken(sink) == []  # no half was sent after the stop
    assert len(sink.batches) == 1
    assert (report.delivered, report.dead, report.retried) == (0, 0, 0)
    assert [statuses(store, "parts")[i] for i in ids] == ["pending"] * 12
    # the next run sends each once, in halves
    sink2 = SizeSink(6, most=2)
    report = asyncio.run(
        Dispatcher(parts_config(tmp_path), store, {"parts": sink2}, clock=clock).run_once()
    )
    assert [i for b in taken(sink2) for i in b] == ids


class LearningSink(SizeSink):
    """``SizeSink`` that learns, as the email and webhook sinks do: once it has been
    refused, its parts are as many alerts as the most it had taken (``LearntSize``)."""

    def __init__(self, most: int) -> None:
        super().__init__(1000, most)
        self.took = 0  # the most alerts taken in one message
        self.stop_at: tuple[str, Dispatcher] | None = None  # a stop during that part's send

    async def digest_parts(self, deliveries: Sequence[Delivery]) -> list[list[Delivery]]:
        self.size = self.took or 1000
        return await super().digest_parts(deliveries)

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        if self.stop_at is not None and deliveries[0].alert_id == self.stop_at[0]:
            self.stop_at[1].stop()
        result = await super().send(deliveries)
        if result.ok:
            self.took = max(self.took, len(deliveries))
        return result


def test_a_half_goes_cut_to_what_the_receiver_took_each_part_marked_as_it_goes(
    tmp_path: Path, store: SqliteStore
) -> None:
    """12 alerts to a receiver taking 2: 12, 6 and 3 refused, then 2 taken; the halves
    still waiting (1, 3, 6 alerts) went whole, and 3 and 6 were refused again (7
    refusals). Now they go cut to 2 alerts a message: 3 refusals, each alert once."""
    clock, ids = due_parts(store, 12)
    sink = LearningSink(most=2)
    report = asyncio.run(
        Dispatcher(parts_config(tmp_path), store, {"parts": sink}, clock=clock).run_once()
    )
    assert (report.delivered, report.dead, report.retried) == (12, 0, 0), report.failures
    refused = [len(b) for b in sink.batches if len(b) > sink.most]
    assert refused == [12, 6, 3]
    assert taken(sink) == [ids[0:2], ids[2:3], ids[3:5], ids[5:6]] + [
        ids[i : i + 2] for i in range(6, 12, 2)
    ]
    assert set(statuses(store, "parts").values()) == {"delivered"}


@pytest.mark.parametrize("how", ["stop", "retry"])
def test_a_part_of_a_cut_half_that_stops_or_fails_for_now_holds_the_rest(
    tmp_path: Path, store: SqliteStore, how: str
) -> None:
    """The second half cut into parts: each part marked as it is taken; a stop during
    one, or a part failing for now, leaves those after it pending (order is kept)."""
    clock, ids = due_parts(store, 12)
    sink = LearningSink(most=2)
    d = Dispatcher(parts_config(tmp_path), store, {"parts": sink}, clock=clock)
    if how == "stop":
        sink.stop_at = (ids[8], d)  # the second of the second half's parts 6-7, 8-9, 10-11
    else:
        sink.fail[ids[8]] = SendResult.transient("HTTP 503")
    report = asyncio.run(d.run_once())
    assert taken(sink)[-1] == ids[8:10]  # nothing sent after it
    state = statuses(store, "parts")
    if how == "stop":  # the send under way ends and is marked
        assert (report.delivered, report.waiting) == (10, 2)
        assert [state[i] for i in ids] == ["delivered"] * 10 + ["pending"] * 2
    else:
        assert (report.delivered, report.retried, report.waiting) == (8, 2, 2)
        assert [state[i] for i in ids] == ["delivered"] * 8 + ["pending"] * 4
    # the next run sends the rest, each once
    sink.stop_at, sink.fail = None, {}
    before = len(sink.batches)
    report = asyncio.run(
        Dispatcher(parts_config(tmp_path), store, {"parts": sink}, clock=clock).run_once(force=True)
    )
    assert [d.alert_id for b in sink.batches[before:] for d in b] == (
        ids[10:] if how == "stop" else ids[8:]
    )
    assert set(statuses(store, "parts").values()) == {"delivered"}


def test_email_sink_learns_its_cut_from_refusals_not_from_one_small_message_taken(
    smtp_server: Callable[..., SMTPServer],
) -> None:
    """One small alert taken says little of the server's limit: cutting every digest to
    it would send an alert a message for good. The cut is half the smallest refused when
    that is more, and it comes down as halves are refused in turn."""
    sink = EmailSink(mail_config(smtp_server("none", announce_size=False)))
    assert sink._known_limit() is None
    sink._learn(3_000, SendResult.success())
    sink._learn(1_000_000, SendResult.dead("552 too big", too_big=True))
    assert sink._known_limit() == 500_000
    sink._learn(500_000, SendResult.dead("552 too big", too_big=True))
    sink._learn(250_000, SendResult.success())
    assert sink._known_limit() == 250_000
    sink._learn(2_000_000, SendResult.success())  # the limit went up
    assert sink._known_limit() is None


def test_email_alert_cut_to_fit_ends_on_a_whole_emoji_flag_or_letter(
    smtp_server: Callable[..., SMTPServer],
) -> None:
    """A long text with no space to cut at (Japanese, a flag, a woman scientist with a
    skin tone, markup) mailed to a server taking 20,000 bytes was cut after 👩🏽 and the
    zero-width joiner of 👩🏽‍🔬 (or inside a flag) in both parts. Now the cut ends
    between two grapheme clusters: on a whole emoji, flag or accented letter."""
    import html as html_lib

    import regex

    unit = "日本語の文章🇩🇪👩🏽\u200d🔬A&B<c>"
    text = (unit * (100_000 // len(unit) + 1))[:100_000]
    ends = {m.end() for m in regex.finditer(r"\X", text)}
    d = make_delivery(make_payload(summary=text), "mail")
    for limit in (12_000, 15_000, 20_000):  # each cut elsewhere in the sequence
        smtp = smtp_server("none", data_size_limit=limit, announce_size=False)
        result = asyncio.run(EmailSink(mail_config(smtp, digest=0.0)).send([d]))
        assert result.ok, result.error
        [taken] = smtp.messages
        assert len(taken.data) <= limit
        msg = parse(taken.data)
        plain = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        [shown_plain] = re.findall(r"\nSummary:\r?\n(.*) …\r?\n", plain)
        [shown_html] = re.findall(r"<h3>Summary</h3><p>(.*?) …</p>", html, flags=re.S)
        for shown in (shown_plain, html_lib.unescape(shown_html)):
            assert 100 < len(shown) < 10_000 and text.startswith(shown), len(shown)
            assert len(shown) in ends, (limit, ascii(shown[-6:]))  # between two clusters
            assert not shown.endswith("\u200d") and shown.count("🇩") == shown.count("🇪")


def test_email_update_cut_to_fit_keeps_the_words_added(
    smtp_server: Callable[..., SMTPServer],
) -> None:
    """An update whose word diff begins with a long removed run, cut to fit a server's
    size, showed only ``[-removed …-]``: the words added were cut away, and the alert no
    longer said what changed. Each run now keeps its share: the short addition whole."""
    removed = " ".join(f"old{i}" for i in range(3000))
    tail = " officials said on Tuesday that the strike hit a power plant near Dnipro."
    added = "Two workers were killed,"
    changes = {"summary": {"old": removed + tail, "new": added + tail}}
    payload = make_payload(kind="updated", summary=added + tail, changes=changes)
    smtp = smtp_server("none", data_size_limit=12_000, announce_size=False)
    cfg = mail_config(smtp, digest=0.0)
    d = replace(make_delivery(payload, "mail"), thread_id="f" * 32)
    assert len(email_sink.build_message([d], cfg).as_bytes()) > 12_000
    result = asyncio.run(EmailSink(cfg).send([d]))
    assert result.ok, result.error
    [taken] = smtp.messages
    msg = parse(taken.data)
    plain = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "[-old0 old1 old2" in plain and f"{{+{added}+}} officials said" in plain
    assert "<del>old0 old1 old2" in html and f"<ins>{added}</ins> officials said" in html
