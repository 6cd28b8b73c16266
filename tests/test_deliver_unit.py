"""The outbox dispatcher (feedwatch.deliver) with a FakeClock and a real SQLite state file.

Time is the point here: the retry schedule (30 s, doubling ±20 %, at most 1 h,
Retry-After honoured), giving up after ``give_up_after``, and digests that wait
for their oldest alert to be ``digest`` old. Sinks are feedwatch.testing's
RecordingSink, a scripted sink, or the real email and webhook sinks against
real servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import email
import json
import random
import re
import textwrap
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from http.server import HTTPServer
from pathlib import Path
from typing import Any

import pytest

from feedwatch.config import load_config
from feedwatch.deliver import Dispatcher, DispatchReport
from feedwatch.model import Alert, Config, Secret, SinkConfig
from feedwatch.sinks.base import SendResult, Sink
from feedwatch.sinks.email import EmailSink
from feedwatch.sinks.webhook import WebhookSink
from feedwatch.store.base import Delivery
from feedwatch.store.sqlite import SqliteStore
from feedwatch.testing import T0, FakeClock, RecordingSink
from tests.helpers import HeldWriteLock
from tests.receivers import Receiver, make_delivery, make_payload, webhook_receiver
from tests.smtpserver import PASSWORD, USER, SMTPServer, smtp_cert, smtp_server

__all__ = ["smtp_cert", "smtp_server", "webhook_receiver"]  # fixtures, imported for pytest

DAY = 86400.0


# --------------------------------------------------------------------------
# Set-up
# --------------------------------------------------------------------------


def config(state: Path, *, give_up_after: float = 3 * DAY, **sinks: SinkConfig | float) -> Config:
    """A Config with the named sinks; a float value means a RecordingSink's digest."""
    built = {
        name: s if isinstance(s, SinkConfig) else SinkConfig(name=name, type="webhook", digest=s)
        for name, s in sinks.items()
    }
    return Config(
        path=None, state=str(state), feeds=(), rules={}, sinks=built, give_up_after=give_up_after
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db")
    try:
        yield s
    finally:
        s.close()


_seq = iter(range(1, 1_000_000))


def queue(
    store: SqliteStore,
    clock: FakeClock,
    *sinks: str,
    kind: str = "new",
    title: str | None = None,
    thread_id: str | None = None,
    alert_id: str | None = None,
) -> str:
    """Record one alert for ``sinks`` at the clock's time; returns its id."""
    n = next(_seq)
    aid = alert_id or f"{n:032x}"
    payload = make_payload(kind=kind, alert_id=aid, title=title or f"Hypersonic test {n}")
    alert = Alert(
        id=aid,
        kind=kind,
        feed="moscow-times",
        payload=payload,
        sinks=tuple(sinks),
        thread_id=thread_id,
        identity=f"urn:{n}",
    )
    assert store.queue_notices([alert], now=clock()) == [aid]
    return aid


def run(dispatcher: Dispatcher, *, force: bool = False) -> DispatchReport:
    return asyncio.run(dispatcher.run_once(force=force))


def pending(store: SqliteStore, sink: str) -> list[Delivery]:
    return store.pending(sink=sink)


def delivery(store: SqliteStore, alert_id: str, sink: str) -> Delivery:
    for rec in store.alerts_for("moscow-times", limit=10_000):
        if rec.alert_id == alert_id:
            for d in rec.deliveries:
                if d.sink == sink:
                    return d
    raise AssertionError(f"no delivery {alert_id} -> {sink}")


class ScriptedSink(RecordingSink):
    """A RecordingSink whose outcome is chosen per alert id (default: success)."""

    def __init__(self, name: str, outcomes: Mapping[str, SendResult] | None = None) -> None:
        super().__init__(name=name, supports_digest=False)
        self.outcomes = dict(outcomes or {})

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        self.batches.append(list(deliveries))
        return self.outcomes.get(deliveries[0].alert_id, SendResult.success())


class CrashingSink(RecordingSink):
    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        self.batches.append(list(deliveries))
        raise RuntimeError("bug in a sink")


# --------------------------------------------------------------------------
# The retry schedule
# --------------------------------------------------------------------------


def test_transient_failures_retry_on_the_spec_schedule_then_give_up(
    tmp_path: Path, store: SqliteStore
) -> None:
    clock = FakeClock()
    sink = RecordingSink(
        name="hook", fail_with=SendResult.transient("HTTP 503 Service Unavailable")
    )
    d = Dispatcher(config(tmp_path), store, {"hook": sink}, clock=clock, rng=random.Random(7))
    aid = queue(store, clock, "hook")

    delays: list[float] = []
    while True:
        report = run(d)
        (p,) = store.pending(sink="hook") or [None]  # type: ignore[list-item]
        if p is None:
            break
        assert report.retried == 1 and not report.ok
        assert p.next_attempt is not None
        delay = (p.next_attempt - clock()).total_seconds()
        delays.append(delay)
        # not due a second early: nothing is sent
        clock.advance(delay - 1)
        tries = len(sink.batches)
        assert run(d).retried == 0 and len(sink.batches) == tries
        clock.advance(1)

    for attempt, delay in enumerate(delays, start=1):
        base = min(30 * 2 ** (attempt - 1), 3600)
        assert base * 0.8 <= delay <= min(base * 1.2, 3600), (attempt, delay)
    assert 24 <= delays[0] <= 36
    assert max(delays) <= 3600
    assert any(abs(delay - min(30 * 2**i, 3600)) > 1 for i, delay in enumerate(delays))  # jittered
    assert sum(1 for x in delays if x > 3600 * 0.8) > 50  # hourly for most of the 3 days

    # given up once the alert is 3 days old, with the reason and the last error
    assert clock() - T0 >= timedelta(days=3)
    assert clock() - T0 < timedelta(days=3, hours=1)  # within an hour of the limit
    dead = delivery(store, aid, "hook")
    assert dead.status == "dead"
    assert dead.last_error is not None
    assert dead.last_error.startswith("gave up: still failing 3d after the alert was created")
    assert "HTTP 503" in dead.last_error
    assert len(sink.batches) == len(delays)  # one send per attempt, no more


def test_retry_after_longer_than_the_backoff_wins(tmp_path: Path, store: SqliteStore) -> None:
    clock = FakeClock()
    sink = RecordingSink(name="hook", fail_with=SendResult.transient("429", retry_after=7200))
    d = Dispatcher(config(tmp_path), store, {"hook": sink}, clock=clock)
    queue(store, clock, "hook")
    run(d)
    (p,) = pending(store, "hook")
    assert p.next_attempt == T0 + timedelta(seconds=7200)  # beyond the 1 h cap: the server asked
    clock.advance(7199)
    run(d)
    assert len(sink.batches) == 1
    sink.fail_with = SendResult.transient("429", retry_after=3)  # shorter: the backoff wins
    clock.advance(1)
    run(d)
    (p,) = pending(store, "hook")
    assert p.attempts == 2
    assert 48 <= (p.next_attempt - clock()).total_seconds() <= 72  # type: ignore[operator]


def test_retry_after_from_a_real_webhook(
    tmp_path: Path, store: SqliteStore, webhook_receiver: Receiver
) -> None:
    webhook_receiver.script(status=429, retry_after="5400")
    cfg = SinkConfig(
        name="hook", type="webhook", options={"url": Secret(webhook_receiver.url), "timeout": 5.0}
    )
    clock = FakeClock()

    async def go() -> None:
        d = Dispatcher(config(tmp_path, hook=cfg), store, {"hook": WebhookSink(cfg)}, clock=clock)
        try:
            await d.run_once()
        finally:
            await d.aclose()

    queue(store, clock, "hook")
    asyncio.run(go())
    (p,) = pending(store, "hook")
    assert p.next_attempt == T0 + timedelta(seconds=5400)
    assert p.last_error is not None and "429" in p.last_error


def test_force_ignores_the_backoff(tmp_path: Path, store: SqliteStore) -> None:
    clock = FakeClock()
    sink = RecordingSink(name="hook", fail_with=SendResult.transient("down"))
    d = Dispatcher(config(tmp_path), store, {"hook": sink}, clock=clock)
    queue(store, clock, "hook")
    run(d)
    run(d)
    assert len(sink.batches) == 1  # in backoff
    sink.fail_with = None
    assert run(d, force=True).delivered == 1  # `check`: an explicit request
    assert pending(store, "hook") == []


def test_give_up_only_after_a_failure_and_never_when_zero(
    tmp_path: Path, store: SqliteStore
) -> None:
    clock = FakeClock()
    sink = RecordingSink(name="hook", fail_with=SendResult.transient("connection refused"))
    aid = queue(store, clock, "hook")
    # the daemon was down for 5 hours: a never-tried alert older than give_up_after gets a try
    clock.advance(hours=5)
    d = Dispatcher(config(tmp_path, give_up_after=3600), store, {"hook": sink}, clock=clock)
    report = run(d)
    assert report.retried == 1 and len(sink.batches) == 1
    clock.advance(60)
    report = run(d)
    assert report.dead == 1 and len(sink.batches) == 1
    dead = delivery(store, aid, "hook")
    assert dead.status == "dead"
    assert dead.last_error == (
        "gave up: still failing 1h after the alert was created (last error: connection refused)"
    )
    # redeliver: one more try; give_up_after = 0 means never give up
    store.redeliver(clock())
    d = Dispatcher(config(tmp_path, give_up_after=0), store, {"hook": sink}, clock=clock)
    for _ in range(5):
        clock.advance(days=10)
        assert run(d).retried == 1
    assert pending(store, "hook")[0].attempts == 5


def test_a_removed_sink_keeps_its_deliveries_pending_until_given_up(
    tmp_path: Path, store: SqliteStore
) -> None:
    clock = FakeClock()
    aid = queue(store, clock, "gone")
    d = Dispatcher(config(tmp_path, give_up_after=5400), store, {}, clock=clock)
    clock.advance(5399)
    assert run(d, force=True).waiting == 1  # kept, visible in `status`, pending
    assert store.sink_counts()["gone"].pending == 1
    clock.advance(1)
    assert run(d).dead == 1
    dead = delivery(store, aid, "gone")
    assert dead.status == "dead"
    assert dead.last_error == (
        "gave up: sink 'gone' is no longer configured (1h30m after the alert was created)"
    )


# --------------------------------------------------------------------------
# Order, permanent failures, sink bugs
# --------------------------------------------------------------------------


def test_oldest_first_transient_blocks_permanent_does_not(
    tmp_path: Path, store: SqliteStore
) -> None:
    clock = FakeClock()
    a = queue(store, clock, "hook", "other")
    clock.advance(1)
    b = queue(store, clock, "hook", "other")
    clock.advance(1)
    c = queue(store, clock, "hook", "other")
    hook = ScriptedSink("hook", {a: SendResult.dead("HTTP 413"), b: SendResult.transient("503")})
    other = ScriptedSink("other")
    d = Dispatcher(config(tmp_path), store, {"hook": hook, "other": other}, clock=clock)
    report = run(d)
    # a is dead (it does not hold up the rest), b failed transiently: c must not overtake it
    assert [x.alert_id for batch in hook.batches for x in batch] == [a, b]
    assert other.alert_ids == [a, b, c]  # another sink is unaffected
    assert (report.dead, report.retried, report.delivered) == (1, 1, 3)
    assert delivery(store, a, "hook").status == "dead"
    assert delivery(store, a, "hook").last_error == "HTTP 413"
    assert sorted(report.failures) == ["hook: 503", "hook: HTTP 413"]

    hook.outcomes.clear()
    run(d, force=True)
    assert [x.alert_id for batch in hook.batches for x in batch] == [a, b, b, c]
    assert store.sink_counts()["hook"].delivered == 2
    assert store.sink_counts()["hook"].dead == 1


def test_a_sink_that_raises_is_a_transient_failure(tmp_path: Path, store: SqliteStore) -> None:
    clock = FakeClock()
    d = Dispatcher(config(tmp_path), store, {"hook": CrashingSink(name="hook")}, clock=clock)
    queue(store, clock, "hook")
    report = run(d)
    assert report.retried == 1
    (p,) = pending(store, "hook")
    assert p.last_error == "internal error in sink: RuntimeError: bug in a sink"


# --------------------------------------------------------------------------
# Digests
# --------------------------------------------------------------------------


def test_digest_waits_for_the_oldest_then_sends_one_batch(
    tmp_path: Path, store: SqliteStore
) -> None:
    clock = FakeClock()
    sink = RecordingSink(name="digest")
    d = Dispatcher(config(tmp_path, digest=3600.0), store, {"digest": sink}, clock=clock)
    ids = [queue(store, clock, "digest")]
    clock.advance(minutes=10)
    ids.append(queue(store, clock, "digest"))
    clock.advance(minutes=40)
    ids.append(queue(store, clock, "digest"))
    clock.advance(minutes=9, seconds=59)  # the oldest is 59:59 old
    assert run(d).waiting == 3
    assert run(d, force=True).waiting == 3  # `check` too sends only when due
    assert sink.batches == []
    clock.advance(1)
    report = run(d)
    assert report.delivered == 3
    assert [[x.alert_id for x in b] for b in sink.batches] == [ids]  # ONE message, oldest first
    clock.advance(minutes=5)
    later = queue(store, clock, "digest")
    clock.advance(minutes=59)
    run(d)
    assert len(sink.batches) == 1
    clock.advance(minutes=1)
    run(d)
    assert [x.alert_id for x in sink.batches[1]] == [later]


def test_digest_alerts_fail_and_succeed_together(tmp_path: Path, store: SqliteStore) -> None:
    clock = FakeClock()
    sink = RecordingSink(name="digest", fail_with=SendResult.transient("HTTP 502"))
    d = Dispatcher(
        config(tmp_path, digest=600.0), store, {"digest": sink}, clock=clock, rng=random.Random(1)
    )
    ids = [queue(store, clock, "digest") for _ in range(3)]
    clock.advance(600)
    assert run(d).retried == 3
    rows = pending(store, "digest")
    assert [r.attempts for r in rows] == [1, 1, 1]
    assert len({r.next_attempt for r in rows}) == 1
    # a new alert while the batch waits for its retry: it joins the next digest
    clock.advance(10)
    extra = queue(store, clock, "digest")
    clock.advance((rows[0].next_attempt - clock()).total_seconds())  # type: ignore[operator]
    sink.fail_with = SendResult.dead("HTTP 404")
    report = run(d)
    assert report.dead == 4 and len(sink.batches) == 2
    assert [x.alert_id for x in sink.batches[-1]] == [*ids, extra]
    assert pending(store, "digest") == []
    assert {delivery(store, i, "digest").status for i in [*ids, extra]} == {"dead"}


def test_email_digest_is_one_message_and_fails_as_one(
    tmp_path: Path, store: SqliteStore, smtp_server: Callable[..., SMTPServer]
) -> None:
    smtp = smtp_server("starttls", auth=True)
    cfg = email_config(smtp, digest=3600.0)
    clock = FakeClock()
    ids = []
    for i in range(3):
        if i:
            clock.advance(minutes=20)
        ids.append(queue(store, clock, "mail", title=f"Missile story {i}"))
    smtp.handler.data_reply = "451 4.3.0 try again later"
    report = dispatch_email(tmp_path, store, cfg, smtp, clock)
    assert report.waiting == 3  # 40 minutes old
    clock.advance(minutes=20)
    report = dispatch_email(tmp_path, store, cfg, smtp, clock)
    assert report.retried == 3 and smtp.messages == []
    assert [r.attempts for r in pending(store, "mail")] == [1, 1, 1]
    assert "451" in (pending(store, "mail")[0].last_error or "")

    smtp.handler.data_reply = None
    report = dispatch_email(tmp_path, store, cfg, smtp, clock, force=True)
    assert report.delivered == 3
    (m,) = smtp.messages
    msg = parse(m.data)
    assert msg["X-Feedwatch-Kind"] == "digest"
    assert msg["X-Feedwatch-Alert-Count"] == "3"
    assert msg["Subject"] == "[feedwatch] 3 alerts: moscow-times"
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    for i, aid in enumerate(ids):
        assert f"Missile story {i}" in text and aid in text

    # a permanent refusal kills the whole digest
    more = [queue(store, clock, "mail") for _ in range(2)]
    clock.advance(hours=1)
    smtp.handler.data_reply = "554 5.7.1 rejected"
    report = dispatch_email(tmp_path, store, cfg, smtp, clock)
    assert report.dead == 2 and len(smtp.messages) == 1
    assert {delivery(store, i, "mail").status for i in more} == {"dead"}


# --------------------------------------------------------------------------
# Email over STARTTLS + AUTH, through the dispatcher
# --------------------------------------------------------------------------


def email_config(
    smtp: SMTPServer,
    *,
    password: str = PASSWORD,
    digest: float = 0.0,
    to: tuple[str, ...] = ("me@example.org",),
) -> SinkConfig:
    return SinkConfig(
        name="mail",
        type="email",
        digest=digest,
        options={
            "host": smtp.host,
            "port": smtp.port,
            "security": "starttls",
            "username": USER,
            "password": Secret(password),
            "from_": "feedwatch <alerts@example.org>",
            "to": to,
            "timeout": 5.0,
        },
    )


def dispatch_email(
    tmp_path: Path,
    store: SqliteStore,
    cfg: SinkConfig,
    smtp: SMTPServer,
    clock: FakeClock,
    *,
    force: bool = False,
) -> DispatchReport:
    async def go() -> DispatchReport:
        sinks: dict[str, Sink] = {"mail": EmailSink(cfg, tls_context=smtp.client_context)}
        d = Dispatcher(config(tmp_path, mail=cfg), store, sinks, clock=clock)
        try:
            return await d.run_once(force=force)
        finally:
            await d.aclose()

    return asyncio.run(go())


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_email_starttls_auth_threads_updates_and_ignores_header_injection(
    tmp_path: Path, store: SqliteStore, smtp_server: Callable[..., SMTPServer]
) -> None:
    smtp = smtp_server("starttls", auth=True)
    cfg = email_config(smtp)
    clock = FakeClock()
    new = queue(store, clock, "mail", title="Strike\r\nBcc: x@y\r\n\r\nbody")
    clock.advance(minutes=5)
    upd = queue(store, clock, "mail", kind="updated", title="Strike, updated", thread_id=new)
    report = dispatch_email(tmp_path, store, cfg, smtp, clock)
    assert report.delivered == 2 and report.ok
    m1, m2 = smtp.messages
    for m in (m1, m2):
        assert m.rcpt_tos == ("me@example.org",)
        assert b"\nBcc:" not in m.data.split(b"\r\n\r\n", 1)[0]
    first, second = parse(m1.data), parse(m2.data)
    assert first["Bcc"] is None
    assert first["Subject"] == "[feedwatch] moscow-times: Strike Bcc: x@y body"
    assert first["Message-ID"] == f"<{new}@feedwatch>"
    assert second["Message-ID"] == f"<{upd}@feedwatch>"
    assert second["In-Reply-To"] == first["Message-ID"]
    assert second["References"] == first["Message-ID"]
    assert second["Subject"] == "[feedwatch] moscow-times: updated: Strike, updated"


def test_email_wrong_password_is_dead_at_once_and_never_logged(
    tmp_path: Path,
    store: SqliteStore,
    smtp_server: Callable[..., SMTPServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    smtp = smtp_server("starttls", auth=True)
    wrong = "Wr0ng-passw0rd-zz"
    cfg = email_config(smtp, password=wrong)
    clock = FakeClock()
    aid = queue(store, clock, "mail")
    report = dispatch_email(tmp_path, store, cfg, smtp, clock)
    assert report.dead == 1 and smtp.messages == []
    dead = delivery(store, aid, "mail")
    assert dead.status == "dead" and dead.attempts == 1  # the one refused attempt
    assert dead.last_error is not None and "535" in dead.last_error
    captured = capsys.readouterr()
    for text in (captured.out, captured.err, dead.last_error, json.dumps(report.failures)):
        assert wrong not in text
    # fixed: redeliver, and it goes
    store.redeliver(clock())
    report = dispatch_email(tmp_path, store, email_config(smtp), smtp, clock)
    assert report.delivered == 1 and len(smtp.messages) == 1


def copies(smtp: SMTPServer, ids: Sequence[str] = ()) -> Counter[tuple[str, str]]:
    """How many copies of each alert each recipient got (a digest: each of ``ids`` that
    its text names)."""
    got: Counter[tuple[str, str]] = Counter()
    for m in smtp.messages:
        msg = parse(m.data)
        if msg["X-Feedwatch-Alert-Id"]:
            held = [msg["X-Feedwatch-Alert-Id"]]
        else:
            text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            held = [i for i in ids if i in text]
        got.update((rcpt, i) for rcpt in m.rcpt_tos for i in held)
    return got


def due(store: SqliteStore, clock: FakeClock, alert_id: str) -> None:
    """Move the clock to the retry of ``alert_id``'s pending delivery."""
    (retry_at,) = {p.next_attempt for p in pending(store, "mail") if p.alert_id == alert_id}
    assert retry_at is not None
    clock.advance(max(0.0, (retry_at - clock()).total_seconds()))


ME, FULL = "me@example.org", "full@example.org"


def test_email_a_recipient_deferred_at_rcpt_gets_it_later_and_the_others_only_once(
    tmp_path: Path, store: SqliteStore, smtp_server: Callable[..., SMTPServer]
) -> None:
    """452 for one of two recipients: the one that took it never gets it again; the
    deferred one gets it at a retry, once; the sink's later alerts are not held."""
    smtp = smtp_server("starttls", auth=True)
    smtp.handler.rcpt_replies[FULL] = "452 4.2.2 Mailbox full"
    cfg = email_config(smtp, to=(ME, FULL))
    clock = FakeClock()
    a = queue(store, clock, "mail")
    report = dispatch_email(tmp_path, store, cfg, smtp, clock)
    assert report.retried == 1 and report.delivered == 0
    assert copies(smtp) == {(ME, a): 1}
    for _ in range(3):  # retries while the mailbox stays full: me@ gets nothing more
        due(store, clock, a)
        dispatch_email(tmp_path, store, cfg, smtp, clock)
    assert copies(smtp) == {(ME, a): 1}
    d = delivery(store, a, "mail")
    assert d.status == "pending" and d.attempts == 4 and d.recipients_left == (FULL,)
    assert d.last_error is not None and FULL in d.last_error and "452" in d.last_error
    assert ME not in d.last_error

    # a later alert is not held behind the one that waits for its retry
    clock.advance(1)
    b = queue(store, clock, "mail")
    report = dispatch_email(tmp_path, store, cfg, smtp, clock)
    assert copies(smtp) == {(ME, a): 1, (ME, b): 1}
    assert report.retried == 1 and report.waiting == 1

    smtp.handler.rcpt_replies.clear()  # the mailbox has room again
    due(store, clock, a)
    due(store, clock, b)
    report = dispatch_email(tmp_path, store, cfg, smtp, clock)
    assert report.delivered == 2 and pending(store, "mail") == []
    assert copies(smtp) == {(ME, a): 1, (ME, b): 1, (FULL, a): 1, (FULL, b): 1}
    report = dispatch_email(tmp_path, store, cfg, smtp, clock, force=True)
    assert report.delivered == 0 and len(smtp.messages) == 4  # nothing more, ever


def test_email_a_recipient_refused_at_rcpt_is_a_dead_delivery_redelivered_to_it_alone(
    tmp_path: Path, store: SqliteStore, smtp_server: Callable[..., SMTPServer]
) -> None:
    smtp = smtp_server("starttls", auth=True)
    smtp.handler.rcpt_replies[FULL] = "550 5.1.1 User unknown"
    cfg = email_config(smtp, to=(ME, FULL))
    clock = FakeClock()
    a = queue(store, clock, "mail")
    report = dispatch_email(tmp_path, store, cfg, smtp, clock)
    assert copies(smtp) == {(ME, a): 1}
    assert report.dead == 1 and report.delivered == 0 and not report.ok
    d = delivery(store, a, "mail")
    assert d.status == "dead" and d.recipients_left == (FULL,)
    assert d.last_error is not None and FULL in d.last_error and "550 5.1.1" in d.last_error
    assert ME not in d.last_error

    smtp.handler.rcpt_replies.clear()  # the address was made
    assert store.redeliver(clock()) == 1
    report = dispatch_email(tmp_path, store, cfg, smtp, clock)
    assert report.delivered == 1
    assert copies(smtp) == {(ME, a): 1, (FULL, a): 1}


def test_email_recipients_deferred_and_refused_at_once_are_retried_then_the_refused_dead(
    tmp_path: Path, store: SqliteStore, smtp_server: Callable[..., SMTPServer]
) -> None:
    """One deferred, one refused: retried to both (the refused may be back); once the
    deferred one takes it, the delivery is dead for the refused one alone."""
    gone = "gone@example.org"
    smtp = smtp_server("starttls", auth=True)
    smtp.handler.rcpt_replies.update({FULL: "452 4.2.2 Mailbox full", gone: "550 5.1.1 No"})
    cfg = email_config(smtp, to=(ME, FULL, gone))
    clock = FakeClock()
    a = queue(store, clock, "mail")
    report = dispatch_email(tmp_path, store, cfg, smtp, clock)
    assert report.retried == 1 and copies(smtp) == {(ME, a): 1}
    assert delivery(store, a, "mail").recipients_left == (FULL, gone)
    del smtp.handler.rcpt_replies[FULL]
    due(store, clock, a)
    report = dispatch_email(tmp_path, store, cfg, smtp, clock)
    assert report.dead == 1 and copies(smtp) == {(ME, a): 1, (FULL, a): 1}
    d = delivery(store, a, "mail")
    assert d.status == "dead" and d.recipients_left == (gone,)
    assert d.last_error is not None and f"{gone}: 550 5.1.1 No" in d.last_error


def test_email_a_recipient_left_out_of_the_config_is_no_longer_owed_the_alert(
    tmp_path: Path, store: SqliteStore, smtp_server: Callable[..., SMTPServer]
) -> None:
    smtp = smtp_server("starttls", auth=True)
    smtp.handler.rcpt_replies[FULL] = "452 4.2.2 Mailbox full"
    clock = FakeClock()
    a = queue(store, clock, "mail")
    dispatch_email(tmp_path, store, email_config(smtp, to=(ME, FULL)), smtp, clock)
    assert delivery(store, a, "mail").recipients_left == (FULL,)
    # the user drops the full mailbox from `to`: nothing is owed to anyone
    report = dispatch_email(tmp_path, store, email_config(smtp, to=(ME,)), smtp, clock, force=True)
    assert report.delivered == 1 and copies(smtp) == {(ME, a): 1}


def test_email_digest_parts_owed_to_different_recipients_go_as_separate_digests(
    tmp_path: Path, store: SqliteStore, smtp_server: Callable[..., SMTPServer]
) -> None:
    smtp = smtp_server("starttls", auth=True)
    smtp.handler.rcpt_replies[FULL] = "450 4.7.1 Greylisted, try again"
    cfg = email_config(smtp, to=(ME, FULL), digest=3600.0)
    clock = FakeClock()
    first = [queue(store, clock, "mail") for _ in range(2)]
    clock.advance(hours=1)
    report = dispatch_email(tmp_path, store, cfg, smtp, clock)
    assert report.retried == 2 and copies(smtp, first) == {(ME, first[0]): 1, (ME, first[1]): 1}
    assert {delivery(store, i, "mail").recipients_left for i in first} == {(FULL,)}

    smtp.handler.rcpt_replies.clear()
    later = queue(store, clock, "mail")
    clock.advance(hours=1)
    report = dispatch_email(tmp_path, store, cfg, smtp, clock, force=True)
    assert report.delivered == 3 and pending(store, "mail") == []
    # the two owed to full@ alone as one digest to it; the newer one to both
    every = [*first, later]
    assert copies(smtp, every) == {(r, i): 1 for r in (ME, FULL) for i in every}
    sent = [(m.rcpt_tos, parse(m.data)["X-Feedwatch-Alert-Count"]) for m in smtp.messages]
    assert sent[1:] == [((FULL,), "2"), ((ME, FULL), "1")] or sent[1:] == [
        ((ME, FULL), "1"),
        ((FULL,), "2"),
    ]


def test_email_a_partly_delivered_alert_retried_by_each_check_holds_back_no_later_one(
    tmp_path: Path, store: SqliteStore, smtp_server: Callable[..., SMTPServer]
) -> None:
    """Cron `check` (a forced run each time), three recipients, bob's mailbox full: the
    first alert went to alice and carol. Each later check retried it to bob alone, it
    failed for every recipient it went to (transient, no recipients_left), and that
    stopped the sink: every later alert was held from alice and carol for as long as
    bob's mailbox stayed full. The error also called bob's 452 a refusal."""
    alice, bob, carol = "alice@example.org", "bob@example.org", "carol@example.org"
    smtp = smtp_server("starttls", auth=True)
    smtp.handler.rcpt_replies[bob] = "452 4.2.2 Mailbox full"
    cfg = email_config(smtp, to=(alice, bob, carol))
    clock = FakeClock()
    sent: list[str] = []
    for run_no in range(3):  # three cron runs, new alerts each time
        new = [queue(store, clock, "mail") for _ in range(2 if run_no else 1)]
        report = dispatch_email(tmp_path, store, cfg, smtp, clock, force=True)
        assert report.waiting == 0 and report.delivered == 0, run_no
        assert report.retried == len(sent) + len(new), run_no
        sent += new
        # every alert so far reached alice and carol, once; bob got nothing
        assert copies(smtp) == {(r, i): 1 for r in (alice, carol) for i in sent}, run_no
        clock.advance(60)
    first = delivery(store, sent[0], "mail")
    assert first.status == "pending" and first.recipients_left == (bob,)  # still owed to bob
    assert first.attempts == 3
    assert first.last_error is not None
    assert "every recipient deferred: bob@example.org: 452 4.2.2 Mailbox full" in first.last_error
    assert "(2 other recipients took it)" in first.last_error
    assert "refused" not in first.last_error

    smtp.handler.rcpt_replies.clear()  # bob's mailbox has room again
    report = dispatch_email(tmp_path, store, cfg, smtp, clock, force=True)
    assert report.delivered == len(sent) and pending(store, "mail") == []
    assert copies(smtp) == {(r, i): 1 for r in (alice, bob, carol) for i in sent}


def test_email_every_recipient_deferred_or_refused_says_which(
    tmp_path: Path, store: SqliteStore, smtp_server: Callable[..., SMTPServer]
) -> None:
    """No recipient took it: 4xx alone is a deferral, 5xx alone a refusal, both: both."""
    gone = "gone@example.org"
    smtp = smtp_server("starttls", auth=True)
    cfg = email_config(smtp, to=(FULL, gone))
    clock = FakeClock()
    for replies, said in (
        ({FULL: "452 4.2.2 Mailbox full", gone: "451 4.3.0 Try later"}, "every recipient deferred"),
        ({FULL: "550 5.1.1 No", gone: "550 5.1.1 No"}, "every recipient refused"),
        (
            {FULL: "452 4.2.2 Mailbox full", gone: "550 5.1.1 No"},
            "every recipient deferred or refused",
        ),
    ):
        smtp.handler.rcpt_replies.update(replies)
        a = queue(store, clock, "mail")
        dispatch_email(tmp_path, store, cfg, smtp, clock, force=True)
        error = delivery(store, a, "mail").last_error
        assert error is not None and f"{said}: " in error, error
        assert "took it" not in error  # nobody had it
        store.mark_dead("mail", [p.alert_id for p in pending(store, "mail")], clock(), error="next")


class LockingSink(RecordingSink):
    """Another process takes the state's write lock right after this sink's first send
    (an admin's `sqlite3` session, a long VACUUM), and keeps it until released."""

    def __init__(self, name: str, state: Path) -> None:
        super().__init__(name=name, supports_digest=False)
        self.state = state
        self.held: HeldWriteLock | None = None

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        result = await super().send(deliveries)
        if self.held is None:
            self.held = HeldWriteLock(self.state, seconds=600)
        return result


def test_a_sent_alert_whose_mark_the_locked_state_refused_is_not_sent_again(
    tmp_path: Path, store: SqliteStore
) -> None:
    """The state locked elsewhere past the busy limit right after a send: the delivered
    mark failed, the alert stayed pending, and each later delivery round sent it again
    (4 copies in a 60 s lock). Now the mark waits in memory, the sink sends nothing
    more until it is stored, and it is stored once the lock is let go."""
    clock = FakeClock()
    a, b = queue(store, clock, "hook"), queue(store, clock, "hook")
    sink = LockingSink("hook", tmp_path / "state.db")
    dispatcher = Dispatcher(config(tmp_path, hook=0.0), store, {"hook": sink}, clock=clock)
    dispatcher.writes.busy_limit = 0.3
    errors: list[BaseException] = []

    async def round_() -> DispatchReport:
        # as the daemon's delivery job: a run that raises is logged, the next one follows
        try:
            return await dispatcher.run_once()
        except Exception as exc:
            errors.append(exc)
            return DispatchReport()

    async def main() -> tuple[DispatchReport, ...]:
        first = await round_()  # a sent, its mark refused: b waits
        second = await round_()  # still locked: nothing sent again
        third = await round_()
        assert sink.held is not None
        sink.held.release()
        fourth = await round_()  # a's mark stored, then b sent
        return first, second, third, fourth

    try:
        first, second, third, fourth = asyncio.run(main())
    finally:
        if sink.held is not None:
            sink.held.close()
    assert sink.alert_ids == [a, b]  # each sent once
    assert errors == []
    assert (first.delivered, first.unmarked, first.waiting) == (1, 1, 1)
    for report in (second, third):
        assert (report.delivered, report.retried, report.waiting) == (0, 0, 2)
    assert (fourth.delivered, fourth.unmarked, fourth.waiting) == (1, 0, 0)
    assert pending(store, "hook") == []
    assert delivery(store, a, "hook").status == "delivered"
    assert delivery(store, a, "hook").attempts == 1


def test_a_stop_with_the_state_still_locked_names_the_marks_it_loses(
    tmp_path: Path, store: SqliteStore
) -> None:
    """A stop while a mark the locked state refused waits in memory: it is tried once
    more; still refused, the daemon ended silently and the restart sent the alert again
    with nothing in the log to say why. Now each mark lost is one error naming its sink
    and alerts; the alert stays pending (sent again: at least once, never lost)."""
    from structlog.testing import capture_logs

    clock = FakeClock()
    a = queue(store, clock, "hook")
    sink = LockingSink("hook", tmp_path / "state.db")
    dispatcher = Dispatcher(config(tmp_path, hook=0.0), store, {"hook": sink}, clock=clock)
    dispatcher.writes.busy_limit = 0.3

    async def main() -> DispatchReport:
        report = await dispatcher.run_once()
        dispatcher.stop()
        await dispatcher.store_unmarked_at_stop()
        return report

    try:
        with capture_logs() as logs:
            report = asyncio.run(main())
    finally:
        if sink.held is not None:
            sink.held.close()
    assert (report.delivered, report.unmarked) == (1, 1)
    lost = [e for e in logs if e["event"] == "delivery.unmarked_lost"]
    assert len(lost) == 1 and lost[0]["log_level"] == "error", logs
    assert (lost[0]["sink"], lost[0]["alerts"], lost[0]["mark"]) == ("hook", [a], "delivered")
    assert "is busy" in lost[0]["error"] and "sends these alerts again" in lost[0]["hint"]
    assert delivery(store, a, "hook").status == "pending"


class HangingSink(RecordingSink):
    """A send that never ends (a receiver that never answers) till a stop cancels it."""

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        await super().send(deliveries)
        await asyncio.Event().wait()
        raise AssertionError("not reached")


def test_a_send_cut_short_by_a_stop_gives_its_claim_back_with_the_loop_running(
    tmp_path: Path, store: SqliteStore
) -> None:
    """A stop cancelled a send while another process held SQLite's write lock (an
    admin's `sqlite3` shell in a transaction): noting the cut-short send on its delivery
    (``release_deliveries(interrupted=True)``) slept in SQLite's busy handler on the
    event loop's thread, up to 10 s with no signal handled and no watchdog ping. Now it
    waits with the loop running, and is written once the lock is let go."""
    from feedwatch.store.base import interrupted
    from tests.helpers import LoopLateness

    clock = FakeClock()
    a = queue(store, clock, "hook")
    sink = HangingSink(name="hook", supports_digest=False)
    dispatcher = Dispatcher(config(tmp_path, hook=0.0), store, {"hook": sink}, clock=clock)
    lock = HeldWriteLock(tmp_path / "state.db", seconds=2.0)

    async def main() -> LoopLateness:
        async with LoopLateness() as loop:
            run = asyncio.ensure_future(dispatcher.run_once())
            for _ in range(500):  # till the send is under way
                if sink.alert_ids:
                    break
                await asyncio.sleep(0.01)
            assert sink.alert_ids == [a]
            lock.start()
            dispatcher.stop()
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(run, 20)
        return loop

    try:
        loop = asyncio.run(main())
    finally:
        lock.close()
    assert loop.late < 0.5, f"the event loop stood still for {loop.late:.2f} s"
    assert loop.ticks >= 20  # it ticked through the hold (2 s: ~40 ticks)
    d = delivery(store, a, "hook")
    assert d.status == "pending" and interrupted(d.last_error), d.last_error


def test_check_tries_an_unmarked_send_again_at_its_end_and_says_if_it_cannot(
    tmp_path: Path, store: SqliteStore
) -> None:
    """`check` has no next round: at the end of its run it tries the marks the state did
    not take once more; still locked, its report says so (the next check sends again)."""
    clock = FakeClock()

    async def check(dispatcher: Dispatcher, sink: LockingSink, released: bool) -> DispatchReport:
        report = await dispatcher.run_once(force=True)  # as `check` does (cli._deliver)
        assert sink.held is not None and report.unmarked == 1 and report.ok
        if released:
            sink.held.release()
        await dispatcher.store_unmarked(report)
        return report

    for released in (True, False):
        a = queue(store, clock, "hook")
        sink = LockingSink("hook", tmp_path / "state.db")
        dispatcher = Dispatcher(config(tmp_path, hook=0.0), store, {"hook": sink}, clock=clock)
        dispatcher.writes.busy_limit = 0.3
        try:
            report = asyncio.run(check(dispatcher, sink, released))
        finally:
            if sink.held is not None:
                sink.held.close()
        assert sink.alert_ids == [a]
        if released:
            assert report.ok and report.unmarked == 0 and report.delivered == 1
            assert delivery(store, a, "hook").status == "delivered"
        else:
            assert report.unmarked == 1 and len(report.failures) == 1
            assert "hook: 1 alert sent but not marked delivered (state file" in report.failures[0]
            assert "the next run sends it again" in report.failures[0]
            assert delivery(store, a, "hook").status == "pending"


def test_status_counts_per_sink(tmp_path: Path, store: SqliteStore) -> None:
    clock = FakeClock()
    ok, dead, retry = (ScriptedSink(n) for n in ("ok", "dead", "retry"))
    a = queue(store, clock, "ok", "dead", "retry")
    dead.outcomes[a] = SendResult.dead("410 Gone")
    retry.outcomes[a] = SendResult.transient("timeout")
    sinks: dict[str, Sink] = {"ok": ok, "dead": dead, "retry": retry}
    run(Dispatcher(config(tmp_path), store, sinks, clock=clock))
    counts = {k: (v.pending, v.delivered, v.dead) for k, v in store.sink_counts().items()}
    assert counts == {"ok": (0, 1, 0), "dead": (0, 0, 1), "retry": (1, 0, 0)}


# --------------------------------------------------------------------------
# docs/alerts.md: its config examples load, its receiver code works
# --------------------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "alerts.md"


def _blocks(lang: str) -> list[str]:
    text = DOC.read_text()
    return re.findall(rf"^ *```{lang}\n(.*?)^ *```$", text, flags=re.S | re.M)


def test_docs_config_examples_load(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "smtp-password").write_text("from-a-credential\n")
    env = {
        "FEEDWATCH_SMTP_PASSWORD": "pw-from-env",
        "FEEDWATCH_HOOK_SECRET": "hook-secret",
        "HOOK_TOKEN": "hook-token",
        "CREDENTIALS_DIRECTORY": str(creds),
        "HOME": str(tmp_path),
    }
    blocks = [textwrap.dedent(b) for b in _blocks("toml")]
    assert len(blocks) >= 7
    loaded: dict[str, SinkConfig] = {}
    for i, block in enumerate(blocks):
        path = tmp_path / f"example{i}.toml"
        path.write_text(block)
        cfg = load_config(path, env=env)
        assert cfg.sinks, block
        loaded.update(cfg.sinks)
    assert {s.type for s in loaded.values()} == {"email", "webhook", "command", "jsonl"}
    assert loaded["me-systemd"].options["password"].reveal() == "from-a-credential"
    assert loaded["daily-mail"].digest == 3600
    assert loaded["phone"].options["format"] == "ntfy"


def test_docs_receiver_accepts_a_real_signed_delivery_and_refuses_a_forged_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    for block in _blocks("python"):
        exec(compile(block, str(DOC), "exec"), namespace)
    namespace["SECRET"] = "the-shared-secret"
    server = HTTPServer(("127.0.0.1", 0), namespace["Hook"])
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"

    def sink(secret: str) -> WebhookSink:
        return WebhookSink(
            SinkConfig(
                name="hook",
                type="webhook",
                options={"url": Secret(url), "secret": Secret(secret), "timeout": 5.0},
            )
        )

    alert = make_delivery(make_payload())
    try:
        assert asyncio.run(sink("the-shared-secret").send([alert])).ok
        assert asyncio.run(sink("the-shared-secret").send([alert])).ok  # a repeat: dropped
        forged = asyncio.run(sink("a-guess").send([alert]))
        assert forged.permanent and forged.error is not None and "401" in forged.error
    finally:
        server.shutdown()
        server.server_close()
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("new ")]
    assert printed == [f"new moscow-times {alert.payload['entry']['title']}"]


def test_newer_alerts_wait_behind_one_in_backoff(tmp_path: Path, store: SqliteStore) -> None:
    """Oldest first per sink also across rounds: a retrying alert is never overtaken."""
    clock = FakeClock()
    a = queue(store, clock, "hook")
    sink = ScriptedSink("hook", {a: SendResult.transient("HTTP 503")})
    d = Dispatcher(config(tmp_path), store, {"hook": sink}, clock=clock, rng=random.Random(3))
    run(d)
    clock.advance(5)
    b = queue(store, clock, "hook")
    clock.advance(5)
    run(d)  # the daemon's next round: b is due, but a (older) is still in backoff
    assert sink.alert_ids == [a]
    (retry_at,) = {p.next_attempt for p in pending(store, "hook") if p.alert_id == a}
    assert retry_at is not None
    clock.advance((retry_at - clock()).total_seconds())
    sink.outcomes.clear()
    report = run(d)
    assert sink.alert_ids == [a, a, b] and report.delivered == 2


# --------------------------------------------------------------------------
# Batching (a sink with max_batch, such as jsonl)
# --------------------------------------------------------------------------


def test_batches_in_order_and_a_failed_batch_stops_the_sink(
    tmp_path: Path, store: SqliteStore
) -> None:
    clock = FakeClock(T0)
    ids = [queue(store, clock, "b") for _ in range(7)]
    sink = RecordingSink(name="b", supports_digest=False, max_batch=3)
    d = Dispatcher(config(tmp_path / "state.db", b=0.0), store, {"b": sink}, clock=clock)
    report = run(d)
    assert [len(b) for b in sink.batches] == [3, 3, 1]
    assert sink.alert_ids == ids
    assert report.delivered == 7 and pending(store, "b") == []

    more = [queue(store, clock, "b") for _ in range(5)]
    sink.batches.clear()
    sink.fail_with = SendResult.transient("disk full")
    report = run(d)
    assert [len(b) for b in sink.batches] == [3]  # the first batch failed: the rest wait
    assert report.retried == 3
    assert [p.alert_id for p in pending(store, "b")] == more
