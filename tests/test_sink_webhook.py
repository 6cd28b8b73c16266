"""The webhook sink against a real receiver on 127.0.0.1, and each service format's shape."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from email.header import decode_header
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedwatch.model import Secret, SinkConfig
from feedwatch.sinks import formats
from feedwatch.sinks.base import SendResult
from feedwatch.sinks.webhook import WebhookSink, parse_retry_after, render
from tests.receivers import (
    UPDATE_CHANGES,
    Receiver,
    make_delivery,
    make_payload,
    webhook_receiver,
)

__all__ = ["webhook_receiver"]  # the fixture, imported for pytest

HOOK_PATH = "/hook/T000/B000/secret-token-xyz"
HEADER_TOKEN = "Bearer header-token-abc"
SIGNING_SECRET = "s3cret-signing-key"
BIG = "A" * 1_000_000


def _sink(
    receiver: Receiver,
    *,
    fmt: str = "json",
    timeout: float = 5.0,
    digest: float = 0.0,
    **opts: Any,
) -> WebhookSink:
    options: dict[str, Any] = {
        "url": Secret(receiver.url + HOOK_PATH),
        "format": fmt,
        "headers": (("Authorization", Secret(HEADER_TOKEN)), ("X-Plain", "plain-value")),
        "secret": Secret(SIGNING_SECRET),
        "timeout": timeout,
    }
    options.update(opts)
    return WebhookSink(SinkConfig(name="hook", type="webhook", digest=digest, options=options))


def _send(sink: WebhookSink, *payloads: dict[str, Any]) -> SendResult:
    async def go() -> SendResult:
        try:
            return await sink.send([make_delivery(p) for p in payloads])
        finally:
            await sink.aclose()

    return asyncio.run(go())


def _assert_no_secret(error: str | None, receiver: Receiver) -> None:
    assert error is not None
    assert "hook" in error  # names the sink
    for secret in (HOOK_PATH, "secret-token-xyz", receiver.url, HEADER_TOKEN, "header-token-abc"):
        assert secret not in error


# --------------------------------------------------------------------------
# The json format, headers and signature
# --------------------------------------------------------------------------


def test_json_body_headers_and_signature(webhook_receiver: Receiver) -> None:
    payload = make_payload(title="Ünïcödé title – with \u2028 separator")
    result = _send(_sink(webhook_receiver), payload)
    assert result == SendResult.success()
    [req] = webhook_receiver.received()
    assert req.method == "POST"
    assert req.path == HOOK_PATH
    assert req.body == formats.payload_json(payload)
    assert json.loads(req.body) == payload
    assert list(json.loads(req.body)) == list(payload)  # key order kept
    assert b"\xe2\x80\xa8" not in req.body  # U+2028 escaped
    h = req.headers
    assert h["content-type"] == "application/json"
    assert h["user-agent"].startswith("feedwatch/")
    assert h["x-feedwatch-delivery"] == payload["id"]
    assert "x-feedwatch-digest" not in h
    assert h["authorization"] == HEADER_TOKEN
    assert h["x-plain"] == "plain-value"
    expected = hmac.new(SIGNING_SECRET.encode(), req.body, hashlib.sha256).hexdigest()
    assert h["x-feedwatch-signature-256"] == f"sha256={expected}"


def test_no_signature_without_secret(webhook_receiver: Receiver) -> None:
    assert _send(_sink(webhook_receiver, secret=None), make_payload()).ok
    [req] = webhook_receiver.received()
    assert "x-feedwatch-signature-256" not in req.headers


def test_digest_body_and_headers(webhook_receiver: Receiver) -> None:
    p1 = make_payload(alert_id="a" * 32)
    p2 = make_payload(kind="updated", alert_id="b" * 32, changes=UPDATE_CHANGES)
    assert _send(_sink(webhook_receiver), p1, p2).ok
    [req] = webhook_receiver.received()
    assert json.loads(req.body) == {"version": 1, "kind": "digest", "alerts": [p1, p2]}
    assert req.body == formats.digest_json([p1, p2])
    ids = "\n".join(sorted(["a" * 32, "b" * 32]))
    assert (
        req.headers["x-feedwatch-delivery"]
        == "digest-" + hashlib.sha256(ids.encode()).hexdigest()[:32]
    )
    assert req.headers["x-feedwatch-digest"] == "2"
    expected = hmac.new(SIGNING_SECRET.encode(), req.body, hashlib.sha256).hexdigest()
    assert req.headers["x-feedwatch-signature-256"] == f"sha256={expected}"


def test_a_digest_sink_sends_one_alert_as_a_digest(webhook_receiver: Receiver) -> None:
    """A digest due with one alert in it went out as that alert, with its id as the
    delivery id and no X-Feedwatch-Digest: a receiver reading digests missed it."""
    payload = make_payload()
    assert _send(_sink(webhook_receiver, digest=3600.0), payload).ok
    [req] = webhook_receiver.received()
    assert json.loads(req.body) == {"version": 1, "kind": "digest", "alerts": [payload]}
    assert req.headers["x-feedwatch-digest"] == "1"
    digest_id = "digest-" + hashlib.sha256(payload["id"].encode()).hexdigest()[:32]
    assert req.headers["x-feedwatch-delivery"] == digest_id


@pytest.mark.parametrize("fmt", ["slack", "discord", "teams", "ntfy"])
def test_a_one_alert_digest_renders_as_a_digest_in_every_format(fmt: str) -> None:
    payload = make_payload(title="Only story")
    body, _, headers = render(fmt, [payload], digest=True)
    single, _, single_headers = render(fmt, [payload])
    text = body.decode()
    assert "feedwatch: 1 alert" in text + headers.get("Title", "")
    assert "feedwatch: 1 alert" not in single.decode() + single_headers.get("Title", "")
    assert "Only story" in text


# --------------------------------------------------------------------------
# Status classes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_success(webhook_receiver: Receiver, status: int) -> None:
    webhook_receiver.script(status=status, body=b"")
    assert _send(_sink(webhook_receiver), make_payload()) == SendResult.success()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_is_dead_and_not_followed(webhook_receiver: Receiver, status: int) -> None:
    webhook_receiver.script(status=status, location=webhook_receiver.url + "/elsewhere")
    result = _send(_sink(webhook_receiver), make_payload())
    assert result.permanent and not result.ok
    assert f"redirect ({status})" in (result.error or "")
    assert "final URL" in (result.error or "")
    _assert_no_secret(result.error, webhook_receiver)
    assert [r.path for r in webhook_receiver.received()] == [HOOK_PATH]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_transient(webhook_receiver: Receiver, status: int) -> None:
    webhook_receiver.script(status=status, retry_after="120")
    result = _send(_sink(webhook_receiver), make_payload())
    assert not result.ok and not result.permanent
    assert result.retry_after == 120
    assert str(status) in (result.error or "")
    _assert_no_secret(result.error, webhook_receiver)


def test_retry_after_http_date(webhook_receiver: Receiver) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=600)
    webhook_receiver.script(status=503, retry_after=format_datetime(when, usegmt=True))
    result = _send(_sink(webhook_receiver), make_payload())
    assert not result.permanent
    assert result.retry_after is not None and 590 <= result.retry_after <= 601


def test_retry_after_date_whose_numbers_overflow_is_ignored(webhook_receiver: Receiver) -> None:
    """OverflowError escaped the sink: 'internal error in sink' and a traceback."""
    webhook_receiver.script(
        status=503, retry_after="Mon, 01 Jan 2024 99999999999999999999:00:00 GMT"
    )
    result = _send(_sink(webhook_receiver), make_payload())
    assert not result.ok and not result.permanent and result.retry_after is None
    assert result.error == "sink hook: webhook answered HTTP 503 Service Unavailable: ok"


def test_retry_after_of_hundreds_of_digits_is_the_cap(webhook_receiver: Receiver) -> None:
    """OverflowError escaped the sink ("internal error in sink: OverflowError", and
    `test-sink` died with a traceback): any number of digits is the 24 h cap."""
    webhook_receiver.script(status=503, retry_after="9" * 400)
    result = _send(_sink(webhook_receiver), make_payload())
    assert not result.ok and not result.permanent and result.retry_after == 86400
    assert result.error == "sink hook: webhook answered HTTP 503 Service Unavailable: ok"


def test_parse_retry_after() -> None:
    now = datetime(2024, 11, 22, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("30", now) == 30
    assert parse_retry_after("Fri, 22 Nov 2024 12:01:00 GMT", now) == 60
    assert parse_retry_after("Fri, 22 Nov 2024 11:00:00 GMT", now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("\u00b2", now) is None  # a digit to isdigit(), not to float()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422])
def test_other_4xx_are_dead(webhook_receiver: Receiver, status: int) -> None:
    # a receiver that echoes our token back must not get it into the error
    webhook_receiver.script(
        status=status, body=b'{"message": "bad token ' + HEADER_TOKEN.encode() + b'"}'
    )
    result = _send(_sink(webhook_receiver), make_payload())
    assert result.permanent and not result.ok
    assert str(status) in (result.error or "")
    assert "bad token" in (result.error or "")
    _assert_no_secret(result.error, webhook_receiver)


def test_timeout_is_transient(webhook_receiver: Receiver) -> None:
    webhook_receiver.script(delay=30)
    started = time.monotonic()
    result = _send(_sink(webhook_receiver, timeout=0.3), make_payload())
    assert time.monotonic() - started < 5
    assert not result.ok and not result.permanent
    assert "timed out" in (result.error or "")
    _assert_no_secret(result.error, webhook_receiver)


def test_connection_refused_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = SinkConfig(
        name="hook",
        type="webhook",
        options={"url": Secret(f"http://127.0.0.1:{port}{HOOK_PATH}"), "format": "json"},
    )
    result = asyncio.run(WebhookSink(cfg).send([make_delivery(make_payload())]))
    assert not result.ok and not result.permanent
    assert HOOK_PATH not in (result.error or "") and str(port) not in (result.error or "")
    # the feed side's words, not httpx's "All connection attempts failed"
    assert result.error == "sink hook: webhook request failed: connection refused"


def test_a_name_that_does_not_resolve_is_a_transient_dns_failure() -> None:
    """Said as a feed's is; the host stays masked (a webhook URL is a secret, and a
    host can be the token: ``<id>.m.pipedream.net``), and so do its user-info and query."""
    cfg = SinkConfig(
        name="hook",
        type="webhook",
        options={
            "url": Secret("http://user:pw-1234@nonexistent.invalid/hook?token=tok-5678"),
            "format": "json",
        },
    )
    result = asyncio.run(WebhookSink(cfg).send([make_delivery(make_payload())]))
    assert not result.ok and not result.permanent
    assert result.error == "sink hook: webhook request failed: DNS lookup failed for host ***"


def test_a_query_token_echoed_back_alone_is_masked(webhook_receiver: Receiver) -> None:
    """ntfy's ``?auth=<token>``: a receiver that quotes the token, or the request
    target without its host, must not put it into the error (and so the logs)."""
    token = "QUERYTOKEN9876"
    webhook_receiver.script(
        status=403,
        body=json.dumps(
            {"error": "invalid token", "token": token, "request": f"/mytopic?auth={token}"}
        ).encode(),
    )
    cfg = SinkConfig(
        name="hook",
        type="webhook",
        options={
            "url": Secret(f"{webhook_receiver.url}/mytopic?auth={token}&x=tok%2Fen%2B1"),
            "format": "ntfy",
        },
    )
    result = asyncio.run(WebhookSink(cfg).send([make_delivery(make_payload())]))
    assert not result.ok and result.permanent
    error = result.error or ""
    assert "HTTP 403" in error and "invalid token" in error
    for secret in (token, "mytopic", "tok/en+1", "tok%2Fen%2B1"):
        assert secret not in error


@pytest.mark.parametrize(
    ("url_path", "headers", "echo"),
    [
        ("/api/webhooks/123456/LiteralSegTok987", (), "invalid webhook token LiteralSegTok987"),
        ("/hook", (("Authorization", "Bearer LitBearer555"),), "invalid token LitBearer555"),
    ],
    ids=["path-segment", "bearer-word"],
)
def test_a_token_echoed_back_as_a_path_segment_or_a_word_is_masked(
    webhook_receiver: Receiver, url_path: str, headers: tuple[tuple[str, str], ...], echo: str
) -> None:
    webhook_receiver.script(status=401, body=echo.encode())
    cfg = SinkConfig(
        name="hook",
        type="webhook",
        options={
            "url": Secret(webhook_receiver.url + url_path),
            "format": "json",
            "headers": headers,
        },
    )
    result = asyncio.run(WebhookSink(cfg).send([make_delivery(make_payload())]))
    assert not result.ok and "HTTP 401" in (result.error or "")
    token = echo.rsplit(" ", 1)[1]
    assert token not in (result.error or "")


@pytest.mark.parametrize(
    ("reason", "body"),
    [
        ("Unknown webhook SegTok98765", b""),  # the token in the reason phrase
        (None, b" " * 1988 + b"echo SegTok98765"),  # a cut of the answer inside the token
    ],
    ids=["reason-phrase", "answer-cut"],
)
def test_a_token_in_the_reason_phrase_or_at_the_answers_cut_is_masked(
    webhook_receiver: Receiver, reason: str | None, body: bytes
) -> None:
    webhook_receiver.script(status=404, reason=reason, body=body)
    cfg = SinkConfig(
        name="hook",
        type="webhook",
        options={"url": Secret(webhook_receiver.url + "/services/T0/B0/SegTok98765")},
    )
    result = asyncio.run(WebhookSink(cfg).send([make_delivery(make_payload())]))
    error = result.error or ""
    assert not result.ok and "HTTP 404" in error
    assert "SegTok" not in error, error
    assert ("Unknown webhook ***" if reason else "echo ***") in error


def test_ordinary_words_of_a_webhooks_answer_are_not_masked(webhook_receiver: Receiver) -> None:
    """Masking every word of a header value and every path segment blanked "Bearer",
    "webhooks" and "setup" anywhere in the receiver's answer; the tokens alone go."""
    webhook_receiver.script(
        status=401, body=b"missing Bearer token SECRETTOKEN1 or HdrTok777; see docs/webhooks/setup"
    )
    cfg = SinkConfig(
        name="hook",
        type="webhook",
        options={
            "url": Secret(webhook_receiver.url + "/webhooks/setup/SECRETTOKEN1"),
            "format": "json",
            "headers": (("Authorization", Secret("Bearer HdrTok777")),),
        },
    )
    result = asyncio.run(WebhookSink(cfg).send([make_delivery(make_payload())]))
    error = result.error or ""
    assert "missing Bearer token" in error and "docs/webhooks/setup" in error
    assert "SECRETTOKEN1" not in error and "HdrTok777" not in error


def _raw_receiver(answer: bytes, *, then_hang: bool) -> tuple[str, threading.Event]:
    """A receiver on a bare socket: reads one request, writes ``answer`` as it is, then
    closes the connection or holds it open until the test ends (the event)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    done = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn, srv:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":", 1)[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
            )
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(answer)
            if then_hang:
                done.wait(10)

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{srv.getsockname()[1]}/hook", done


@pytest.mark.parametrize("then_hang", [False, True], ids=["cut-short", "never-ends"])
def test_a_2xx_whose_answer_breaks_off_is_delivered(then_hang: bool) -> None:
    """The receiver said 200: that it then closes the connection before the promised
    answer, or never finishes it, must not make the alert a failure to send again."""
    url, done = _raw_receiver(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\naccepted", then_hang=then_hang
    )
    cfg = SinkConfig(
        name="hook", type="webhook", options={"url": Secret(url), "format": "json", "timeout": 2.0}
    )
    started = time.monotonic()
    try:
        result = asyncio.run(WebhookSink(cfg).send([make_delivery(make_payload())]))
    finally:
        done.set()
    assert result.ok, result.error
    assert time.monotonic() - started < 1.5  # not the timeout


def test_an_error_whose_answer_breaks_off_keeps_its_status_and_text() -> None:
    url, done = _raw_receiver(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 100\r\n\r\nmissing field text",
        then_hang=False,
    )
    cfg = SinkConfig(name="hook", type="webhook", options={"url": Secret(url), "format": "json"})
    result = asyncio.run(WebhookSink(cfg).send([make_delivery(make_payload())]))
    done.set()
    assert not result.ok and result.permanent
    assert "HTTP 400" in (result.error or "") and "missing field text" in (result.error or "")


def test_given_client_is_used_and_not_closed(webhook_receiver: Receiver) -> None:
    import httpx

    async def go() -> tuple[SendResult, bool]:
        async with httpx.AsyncClient(follow_redirects=True) as client:
            sink = WebhookSink(
                SinkConfig(
                    name="hook",
                    type="webhook",
                    options={"url": Secret(webhook_receiver.url + HOOK_PATH), "format": "json"},
                ),
                client=client,
            )
            webhook_receiver.script(status=302, location="/elsewhere")
            result = await sink.send([make_delivery(make_payload())])
            await sink.aclose()
            return result, client.is_closed

    result, closed = asyncio.run(go())
    assert result.permanent  # even a client that follows redirects does not follow here
    assert not closed
    assert [r.path for r in webhook_receiver.received()] == [HOOK_PATH]


@pytest.mark.parametrize("fmt", ["slack", "discord", "teams"])
def test_service_formats_post_json(webhook_receiver: Receiver, fmt: str) -> None:
    payload = make_payload(kind="updated", changes=UPDATE_CHANGES)
    assert _send(_sink(webhook_receiver, fmt=fmt), payload).ok
    [req] = webhook_receiver.received()
    assert req.headers["content-type"] == "application/json"
    assert req.headers["x-feedwatch-delivery"] == payload["id"]
    renderer = {"slack": formats.slack, "discord": formats.discord, "teams": formats.teams}[fmt]
    assert json.loads(req.body) == renderer([payload])


def test_ntfy_posts_text_with_headers(webhook_receiver: Receiver) -> None:
    payload = make_payload(title="Взрыв в Днепре")
    assert _send(_sink(webhook_receiver, fmt="ntfy"), payload).ok
    [req] = webhook_receiver.received()
    assert req.headers["content-type"].startswith("text/plain")
    assert "Взрыв в Днепре" in req.body.decode("utf-8")
    assert _decode_2047(req.headers["title"]).endswith("Взрыв в Днепре")
    assert req.headers["click"] == payload["entry"]["link"]
    assert "new" in req.headers["tags"].split(",")


# --------------------------------------------------------------------------
# Format shapes and limits (pure)
# --------------------------------------------------------------------------

HOSTILE = (
    "<!everyone> <@U123> & <https://evil.example|click me> @everyone [x](https://evil.example)"
)


def _slack_texts(msg: dict[str, Any]) -> list[str]:
    texts = [msg["text"]]
    for block in msg["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        for el in block.get("elements", ()):
            texts.append(el["text"])
    return texts


def test_slack_shape_escaping_and_links() -> None:
    payload = make_payload(title=HOSTILE, summary=HOSTILE)
    msg = formats.slack([payload])
    assert msg["text"] and msg["blocks"]
    for block in msg["blocks"]:
        assert block["type"] in ("section", "context", "divider")
        if block["type"] == "section":  # the summary: plain_text, no formatting at all
            assert block["text"]["type"] in ("mrkdwn", "plain_text")
    joined = "\n".join(_slack_texts(msg))
    assert "<!everyone>" not in joined and "<@U123>" not in joined
    assert "<https://evil.example" not in joined
    assert "&lt;!everyone&gt;" in joined and "&amp;" in joined
    # the only link is the entry's own
    assert f"<{payload['entry']['link']}|" in msg["blocks"][0]["text"]["text"]
    assert joined.count("<") == 1


def test_slack_mrkdwn_objects_are_verbatim() -> None:
    """Slack auto-parses a mrkdwn object without ``verbatim``: a feed title's @here,
    @channel or #general pinged a channel or became a link."""
    hostile = "@here @channel #general https://evil.example/x"
    payloads = [
        make_payload(title=hostile, summary=hostile, feed=hostile),
        make_payload(
            kind="updated", title=hostile, changes={"title": {"old": hostile, "new": "x"}}
        ),
        make_payload(kind="stale", message=hostile, feed=hostile),
    ]
    messages = [formats.slack([p]) for p in payloads]
    messages.append(formats.slack(payloads * 20, digest=True))  # with "…and N more"
    seen = 0
    for msg in messages:
        for block in msg["blocks"]:
            for obj in [block.get("text"), *block.get("elements", ())]:
                if obj and obj["type"] == "mrkdwn":
                    assert obj.get("verbatim") is True, obj
                    seen += 1
                elif obj:
                    assert "verbatim" not in obj  # only a mrkdwn object takes it
    assert seen >= 8
    # the entry's link is explicit <url|text>: verbatim leaves it a link
    link = payloads[0]["entry"]["link"]
    assert f"<{link}|" in messages[0]["blocks"][0]["text"]["text"]


def test_slack_non_http_link_is_not_a_link() -> None:
    msg = formats.slack([make_payload(link="javascript:alert(1)")])
    assert "javascript" not in json.dumps(msg)
    assert "<" not in msg["blocks"][0]["text"]["text"]


def test_slack_limits_for_huge_title_and_digest() -> None:
    msg = formats.slack(
        [
            make_payload(
                title=BIG + "&" * 5000, kind="updated", changes={"title": {"old": BIG, "new": BIG}}
            )
        ]
    )
    for text in _slack_texts(msg):
        assert len(text) <= 3000
    digest = formats.slack([make_payload(title=BIG, alert_id=f"{i:032x}") for i in range(60)])
    assert len(digest["blocks"]) <= 50
    assert "more alerts" in digest["blocks"][-1]["text"]["text"]
    for text in _slack_texts(digest):
        assert len(text) <= 3000


def test_slack_update_shows_changes() -> None:
    msg = formats.slack([make_payload(kind="updated", changes=UPDATE_CHANGES)])
    text = "\n".join(_slack_texts(msg))
    assert "*Updated*" in text
    assert "Officials will meet." in text and "Officials met in Brussels." in text
    assert "2024-11-22 10:40:17 UTC" in text and "2024-11-22 15:56:45 UTC" in text


_LONG_OLD = (
    " ".join(
        f"Paragraph {i} of the report says what the officials said on the day." for i in range(30)
    )
    + " The strike caused no casualties, the ministry said."
)
_LONG_NEW = _LONG_OLD.replace("caused no casualties", "killed two workers")


@pytest.mark.parametrize("fmt", ["slack", "discord", "teams", "ntfy"])
def test_a_long_text_corrected_at_its_end_shows_the_correction(fmt: str) -> None:
    """A 2,100-character summary whose last sentence changed: every format cut the old
    and the new text to their (identical) beginnings, and the message showed no
    difference. Now each side is cut to the words that changed and a few around them."""
    payload = make_payload(
        kind="updated", changes={"summary": {"old": _LONG_OLD, "new": _LONG_NEW}}
    )
    rendered = getattr(formats, fmt)([payload])
    text = rendered[0].decode() if fmt == "ntfy" else json.dumps(rendered, ensure_ascii=False)
    assert "caused no casualties" in text and "killed two workers" in text
    assert "Paragraph 0 of" not in text  # the unchanged start is cut to "…"
    short = make_payload(kind="updated", changes=UPDATE_CHANGES)  # short texts: whole
    rendered = getattr(formats, fmt)([short])
    text = rendered[0].decode() if fmt == "ntfy" else json.dumps(rendered, ensure_ascii=False)
    assert "Officials will meet." in text and "Officials met in Brussels." in text


_FAR_OLD = " ".join(
    f"Paragraph {i}: the committee heard evidence about the roads." for i in range(40)
)
_FAR_NEW = _FAR_OLD.replace("Paragraph 2: the committee heard", "Paragraph 2: the mayor heard")
_FAR_NEW = _FAR_NEW.replace(
    "Paragraph 35: the committee heard", "Paragraph 35: the committee ignored"
)


@pytest.mark.parametrize("fmt", ["slack", "discord", "teams", "ntfy"])
def test_two_corrections_far_apart_show_both_and_not_the_text_between(fmt: str) -> None:
    """Two one-word corrections 33 sentences apart showed as the whole stretch between
    them removed and added, cut to the message's limit (Slack lost the second one).
    Now each side shows the two corrections with a few words around them."""
    payload = make_payload(kind="updated", changes={"content": {"old": _FAR_OLD, "new": _FAR_NEW}})
    rendered = getattr(formats, fmt)([payload])
    text = rendered[0].decode() if fmt == "ntfy" else json.dumps(rendered, ensure_ascii=False)
    assert "the mayor heard" in text and "the committee ignored" in text
    assert "Paragraph 20:" not in text  # the unchanged stretch between is cut to "…"


def _embed_total(embeds: list[dict[str, Any]]) -> int:
    total = 0
    for e in embeds:
        total += len(e.get("title", "")) + len(e.get("description", ""))
        total += len(e.get("footer", {}).get("text", ""))
        total += sum(len(f["name"]) + len(f["value"]) for f in e.get("fields", ()))
    return total


def _check_discord(msg: dict[str, Any]) -> None:
    assert msg["allowed_mentions"] == {"parse": []}
    assert len(msg["content"]) <= 2000
    assert 1 <= len(msg["embeds"]) <= 10
    assert _embed_total(msg["embeds"]) <= 6000
    for e in msg["embeds"]:
        assert len(e.get("title", "")) <= 256  # a digest's closing "…and N more" has none
        assert len(e.get("description", "")) <= 4096
        assert len(e.get("fields", ())) <= 25
        for f in e.get("fields", ()):
            assert 0 < len(f["name"]) <= 256 and 0 < len(f["value"]) <= 1024
        if "url" in e:
            assert e["url"].startswith(("http://", "https://"))


def test_discord_shape_and_limits() -> None:
    payload = make_payload(title=BIG, summary=BIG)
    msg = formats.discord([payload])
    _check_discord(msg)
    embed = msg["embeds"][0]
    assert embed["url"] == payload["entry"]["link"]
    assert embed["timestamp"] == "2024-11-22T15:56:45Z"
    assert embed["title"].startswith("New: AAA") and embed["title"].endswith("…")
    digest = formats.discord(
        [make_payload(title=BIG, summary=BIG, alert_id=f"{i:032x}") for i in range(15)]
    )
    _check_discord(digest)
    assert len(digest["embeds"]) == 10
    assert "15 alerts" in digest["content"]


def test_discord_mentions_and_markdown_neutralised() -> None:
    msg = formats.discord(
        [make_payload(title=HOSTILE, summary=HOSTILE, link="javascript:alert(1)")]
    )
    _check_discord(msg)
    embed = msg["embeds"][0]
    assert "url" not in embed
    assert "[x](https://evil.example)" not in embed["description"]
    assert "\\[x\\](https" in embed["description"]


def test_discord_update_shows_old_and_new() -> None:
    msg = formats.discord([make_payload(kind="updated", changes=UPDATE_CHANGES)])
    desc = msg["embeds"][0]["description"]
    assert "What changed" in desc and "Officials will meet." in desc and "Brussels." in desc
    assert msg["embeds"][0]["title"].startswith("Updated: ")


def test_discord_long_digest_ends_with_and_n_more() -> None:
    """A 60-alert Discord digest showed 10 embeds and said only "(the first 10 shown)"
    at the top: unlike Slack, Teams and ntfy it had no closing "…and N more alerts"."""
    payloads = [make_payload(title=f"story {i}", alert_id=f"{i:032x}") for i in range(60)]
    msg = formats.discord(payloads, digest=True)
    _check_discord(msg)
    *alerts, last = msg["embeds"]
    assert len(msg["embeds"]) == 10
    assert last == {"description": f"…and {60 - len(alerts)} more alerts"}
    assert [e["title"] for e in alerts] == [f"New: story {i}" for i in range(len(alerts))]
    assert f"(the first {len(alerts)} shown)" in msg["content"]
    # big alerts too: the closing embed counts in the 6000 characters
    big = [make_payload(title=BIG, summary=BIG, alert_id=f"{i:032x}") for i in range(60)]
    msg = formats.discord(big, digest=True)
    _check_discord(msg)
    assert msg["embeds"][-1]["description"] == "…and 51 more alerts"
    # ten alerts all fit: no closing line
    msg = formats.discord(payloads[:10], digest=True)
    assert len(msg["embeds"]) == 10 and "more alerts" not in json.dumps(msg, ensure_ascii=False)


def _card(msg: dict[str, Any]) -> dict[str, Any]:
    assert msg["type"] == "message"
    [att] = msg["attachments"]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    for block in card["body"]:
        if block["type"] == "TextBlock":
            assert block["wrap"] is True
    return card


def test_teams_adaptive_card() -> None:
    payload = make_payload(kind="updated", changes=UPDATE_CHANGES)
    card = _card(formats.teams([payload]))
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open entry", "url": payload["entry"]["link"]}
    ]
    text = json.dumps(card, ensure_ascii=False)
    assert (
        "Updated" in text
        and "Officials will meet." in text
        and "Officials met in Brussels." in text
    )


def test_teams_limits_and_bad_links() -> None:
    msg = formats.teams([make_payload(title=BIG, summary=BIG, link="file:///etc/passwd")])
    card = _card(msg)
    assert "actions" not in card
    assert len(json.dumps(msg).encode()) <= 28_000
    digest = formats.teams(
        [make_payload(title=BIG, summary=BIG, alert_id=f"{i:032x}") for i in range(30)]
    )
    _card(digest)
    assert len(json.dumps(digest).encode()) <= 28_000
    assert "more alerts" in json.dumps(digest)


def test_a_teams_digest_of_long_titles_and_links_shows_fewer_alerts_under_the_limit() -> None:
    """The smallest text caps cut summaries, not titles (500) or links (2,048): twenty
    of those made a 77 KB card, which Teams refuses, and every alert in it went dead."""
    link = "https://example.org/" + "a" * 1800
    digest = formats.teams(
        [
            make_payload(
                title="字" * 500, summary="字" * 500, link=f"{link}{i}", alert_id=f"{i:032x}"
            )
            for i in range(20)
        ]
    )
    _card(digest)
    assert len(json.dumps(digest, ensure_ascii=False).encode()) <= formats.TEAMS_MAX_BYTES
    assert "more alerts" in json.dumps(digest)


def test_an_idn_link_keeps_its_port_and_user_info_whatever_the_hosts_case() -> None:
    assert formats.safe_link("http://Bücher.example:8080/path") == (
        "http://xn--bcher-kva.example:8080/path"
    )
    assert formats.safe_link("http://u:p@Bücher.example:8080/x") == (
        "http://u:p@xn--bcher-kva.example:8080/x"
    )


def test_a_slack_link_long_once_escaped_is_not_cut_inside_its_markup() -> None:
    link = "https://example.org/?" + "&x" * 700  # 1,421 characters, ~3,500 escaped
    msg = formats.slack([make_payload(title="Amp title", link=link)])
    text = msg["blocks"][0]["text"]["text"]
    assert text.count("<") == text.count(">")
    assert "Amp title" in text


def test_a_discord_embed_title_renders_feed_text_literally() -> None:
    title = "@everyone **bold** __u__ ~~s~~ [click](https://evil.example) `x`"
    embed = formats.discord([make_payload(title=title)])["embeds"][0]
    assert "[click](https://evil.example)" not in embed["title"]
    assert "\\*\\*bold\\*\\*" in embed["title"] and "\\[click\\]" in embed["title"]


def _decode_2047(value: str) -> str:
    return "".join(
        part.decode(charset or "ascii") if isinstance(part, bytes) else part
        for part, charset in decode_header(value)
    )


def test_ntfy_limits_and_headers() -> None:
    body, headers = formats.ntfy([make_payload(title=BIG + "\r\nX-Evil: 1", summary=BIG)])
    assert len(body) <= 4096
    for value in headers.values():
        assert value.isascii() and "\r" not in value and "\n" not in value
    assert set(headers) == {"Title", "Click", "Tags"}
    _, headers = formats.ntfy([make_payload(link="javascript:alert(1)")])
    assert "Click" not in headers
    body, headers = formats.ntfy(
        [make_payload(alert_id=f"{i:032x}", summary=BIG) for i in range(40)]
    )
    assert len(body) <= 4096 and headers["Title"] == "feedwatch: 40 alerts"


def test_ntfy_body_stays_under_4096_bytes_and_is_cut_at_a_word() -> None:
    """A body could be exactly 4096 bytes, which older ntfy servers turn into an
    attachment ("under 4096", the docs say), and it was cut in the middle of a word."""
    body, _ = formats.ntfy([make_payload(summary=BIG)])  # no space to cut at
    assert len(body) == 4095
    words = [f"word{i}" for i in range(2000)]
    for payloads in (
        [make_payload(summary=" ".join(words))],
        [make_payload(alert_id=f"{i:032x}", summary=" ".join(words)) for i in range(3)],
    ):
        body, _ = formats.ntfy(payloads)
        cuts = re.findall(r"(\S+)…", body.decode())
        assert len(body) <= 4095 and cuts
        assert set(cuts) <= set(words)  # a whole word before each "…"


def test_ntfy_update_and_notice() -> None:
    body, headers = formats.ntfy([make_payload(kind="updated", changes=UPDATE_CHANGES)])
    text = body.decode()
    assert headers["Title"].startswith("moscow-times: updated: ")
    assert "summary: Officials will meet. -> Officials met in Brussels." in text
    assert "arrows_counterclockwise" in headers["Tags"]
    body, headers = formats.ntfy([make_payload(kind="flood", message="73 new entries at once")])
    assert "73 new entries at once" in body.decode()
    assert "Click" not in headers and headers["Title"] == "moscow-times: flood"


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_ntfy_headers_are_always_safe(title: str) -> None:
    _, headers = formats.ntfy([make_payload(title=title, feed="f")])
    for value in headers.values():
        assert value.isascii()
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    decoded = _decode_2047(headers["Title"]) if "=?" in headers["Title"] else headers["Title"]
    expected = formats.shorten(f"f: new: {formats.oneline(title) or '(untitled)'}", 250)
    assert decoded == expected


@pytest.mark.parametrize("fmt", ["slack", "discord", "teams", "ntfy"])
def test_notices_render_their_message(fmt: str) -> None:
    payload = make_payload(kind="stale", message="no new entry for 3 days")
    out = getattr(formats, fmt)([payload])
    text = out[0].decode() if fmt == "ntfy" else json.dumps(out, ensure_ascii=False)
    assert "no new entry for 3 days" in text
    assert "Stale" in text or "stale" in text


def test_payload_json_is_compact_and_ordered() -> None:
    payload = make_payload()
    data = formats.payload_json(payload)
    assert b": " not in data.split(b'"title"')[0]
    assert data.startswith(b'{"version":1,"id":')
    assert data.decode("utf-8") == json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def test_bad_configured_header_is_dead_without_its_value(webhook_receiver: Receiver) -> None:
    sink = _sink(webhook_receiver, headers=(("X-Token", Secret("abc\r\nInjected: 1")),))
    result = _send(sink, make_payload())
    assert result.permanent and "X-Token" in (result.error or "")
    assert "abc" not in (result.error or "") and "Injected" not in (result.error or "")
    assert webhook_receiver.received() == []


def test_teams_feed_text_forms_no_link() -> None:
    card = _card(formats.teams([make_payload(title=HOSTILE, summary=HOSTILE)]))
    texts = [b["text"] for b in card["body"] if b["type"] == "TextBlock"]
    assert any("\\[x\\](https://evil.example)" in t for t in texts)
    assert not any("[x](" in t for t in texts)
    assert [a["url"] for a in card["actions"]] == [
        "https://www.example.org/2024/11/22/nato-ukraine"
    ]


def test_a_teams_title_of_escaped_brackets_forms_no_link() -> None:
    """Teams escaped "[" but not the backslash: a feed's "\\[" came out as "\\\\[", a
    literal backslash before a live "[", and the title was a masked link again."""
    title = r"\[Reset your password\](https://evil.example/login)"
    card = _card(formats.teams([make_payload(title=title)]))
    texts = [b["text"] for b in card["body"] if b["type"] == "TextBlock"]
    assert r"\\\[Reset your password\\\](https://evil.example/login)" in texts
    assert not any(_live("[", t) for t in texts)


# --------------------------------------------------------------------------
# No feed text forms a link or a mention, in any format
# --------------------------------------------------------------------------

LINK = "https://www.example.org/2024/11/22/nato-ukraine"
_PIECES = (
    "[x](https://evil.example)",
    "\\[x\\](https://evil.example)",
    "<https://evil.example|x>",
    "<!everyone>",
    "<@U123>",
    "@everyone",
    "&amp;",
    "&lt;",
    "\\",
    "\\\\",
    "**",
    "~~",
    "```",
    "＊",
    "＿",
    "｀",
    "～",
    "\n- ",
    "\n1. ",
    "\n2) ",
    "\n> ",
    "\n# ",
    "{{DATE(2017-02-14T06:08:39Z,SHORT)}}",
    "{",
    *"[]()<>&|@#!*_~`-+.>\n ",
)
_hostile = st.lists(
    st.one_of(st.sampled_from(_PIECES), st.text("ab1", max_size=3)), max_size=10
).map("".join)


@st.composite
def _hostile_payload(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["new", "updated", "stale"]))
    changes = None
    if kind == "updated":
        changes = {
            key: {"old": draw(_hostile), "new": draw(_hostile)} for key in ("title", "summary")
        }
    payload = make_payload(
        kind=kind,
        title=draw(_hostile),
        summary=draw(_hostile),
        link=draw(st.sampled_from([LINK, "javascript:alert(1)", None])),
        changes=changes,
        message=draw(_hostile) if kind == "stale" else None,
        feed=draw(_hostile),
    )
    payload["feed"]["title"] = draw(_hostile)
    if payload["matched"]:
        payload["matched"] = [{"rule": draw(_hostile), "terms": [draw(_hostile)]}]
    return payload


def _live(chars: str, text: str) -> bool:
    """Whether ``text`` holds one of ``chars`` not escaped by a backslash."""
    return re.search(r"(?<!\\)(?:\\\\)*[" + re.escape(chars) + "]", text) is not None


def _slack_objects(msg: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (type, text) of a Slack message: the fallback text is mrkdwn."""
    out = [("mrkdwn", msg["text"])]
    for block in msg["blocks"]:
        for obj in [block.get("text"), *block.get("elements", ())]:
            if obj:
                out.append((obj["type"], obj["text"]))
    return out


def _discord_texts(msg: dict[str, Any]) -> list[str]:
    texts = [msg["content"]]
    for embed in msg["embeds"]:
        texts += [embed.get("title", ""), embed.get("description", "")]
        texts.append(embed.get("footer", {}).get("text", ""))
        texts += [t for f in embed.get("fields", ()) for t in (f["name"], f["value"])]
    return texts


def _teams_texts(msg: dict[str, Any]) -> list[str]:
    texts = []
    for block in msg["attachments"][0]["content"]["body"]:
        if block["type"] == "TextBlock":
            texts.append(block["text"])
        texts += [t for f in block.get("facts", ()) for t in (f["title"], f["value"])]
    return texts


def _check_no_link_or_mention(payloads: list[dict[str, Any]], digest: bool) -> None:
    links = {formats.entry_link(p) for p in payloads} - {None}
    msg = formats.slack(payloads, digest=digest)
    for _, text in _slack_objects(msg):
        # the one link is the entry's own, <URL|TITLE>
        for url in re.findall(r"<([^<>|]*)\|[^<>]*>", text):
            assert url.replace("&amp;", "&") in links, text
        rest = re.sub(r"<[^<>|]*\|[^<>]*>", "", text)
        assert "<" not in rest and ">" not in rest, text
        assert not re.search(r"&(?!amp;|lt;|gt;)", rest), text
    msg = formats.discord(payloads, digest=digest)
    assert msg["allowed_mentions"] == {"parse": []}
    assert {e["url"] for e in msg["embeds"] if "url" in e} <= links
    for text in _discord_texts(msg):
        assert not _live("[]<@", text), text
    msg = formats.teams(payloads, digest=digest)
    for text in _teams_texts(msg):
        assert not _live("[]", text), text
    card = msg["attachments"][0]["content"]
    for block in [card, *card["body"]]:
        assert {a["url"] for a in block.get("actions", ())} <= links
    _, headers = formats.ntfy(payloads, digest=digest)
    assert headers.get("Click") in links | {None}
    assert "Markdown" not in headers and "X-Markdown" not in headers


@settings(max_examples=200, deadline=None)
@given(st.lists(_hostile_payload(), min_size=1, max_size=3), st.booleans())
def test_no_feed_text_forms_a_link_or_a_mention(
    payloads: list[dict[str, Any]], digest: bool
) -> None:
    _check_no_link_or_mention(payloads, digest)


def test_slack_and_teams_feed_text_forms_no_formatting() -> None:
    """Slack's mrkdwn and Teams' TextBlocks carried a title's *soar*, _again_, ~or not~,
    `maybe` and **really** as they were: the alert showed them bold, italic, struck."""
    title = "Rates *soar* _again_ ~or not~ `maybe` **really**"
    payload = make_payload(title=title, summary="A *bold claim* with _emphasis_ and ~strike~")
    payload["feed"]["title"] = "The *Daily* _Feed_"
    msg = formats.slack([payload])
    head = msg["blocks"][0]["text"]["text"]
    assert "The ∗Daily∗ ˍFeedˍ" in head
    assert "|Rates ∗soar∗ ˍagainˍ ∼or not∼ ˋmaybeˋ ∗∗really∗∗>" in head
    assert msg["blocks"][1]["text"] == {
        "type": "plain_text",
        "text": "A *bold claim* with _emphasis_ and ~strike~",
    }
    texts = _teams_texts(formats.teams([payload]))
    assert r"Rates \*soar\* \_again\_ \~or not\~ \`maybe\` \*\*really\*\*" in texts
    assert r"A \*bold claim\* with \_emphasis\_ and \~strike\~" in texts
    assert any(r"The \*Daily\* \_Feed\_" in t for t in texts)


def test_a_teams_card_evaluates_no_date_function_of_the_feed() -> None:
    """A TextBlock shows {{DATE(...)}} and {{TIME(...)}} as a local date: a post about
    Adaptive Cards had its title rewritten. Its braces are parted by a zero-width space,
    as Slack's <!date^...> and Discord's <t:...> are escaped; the link stays as it is."""
    title = "Tip: write {{DATE(2017-02-14T06:08:39Z,SHORT)}} and {{{TIME(2017-02-14T06:08:39Z)}}"
    link = "https://example.org/a?b=1"
    msg = formats.teams([make_payload(title=title, summary="{{DATE(x)}}", link=link)])
    texts = _teams_texts(msg)
    assert (
        "Tip: write {\u200b{DATE(2017-02-14T06:08:39Z,SHORT)}} and"
        " {\u200b{\u200b{TIME(2017-02-14T06:08:39Z)}}"
    ) in texts
    assert "{\u200b{DATE(x)}}" in texts
    assert not any("{{" in t for t in texts)
    assert msg["attachments"][0]["content"]["actions"][0]["url"] == link


def test_a_line_of_feed_text_starts_no_list() -> None:
    payload = make_payload(kind="stale", message="1. first\n- second\n+ third\n10) tenth")
    for text in _teams_texts(formats.teams([payload])) + _discord_texts(formats.discord([payload])):
        assert not _LIST.search(text), text
    assert any(r"1\. first" in t for t in _teams_texts(formats.teams([payload])))


# a line starting a list, a quote (Slack's &gt;) or a heading: formatting
_LIST = re.compile(r"^[ \t]*(?:[-+*]|\d{1,9}[.)])(?=\s|$)", re.M)


def _check_no_formatting(payloads: list[dict[str, Any]], digest: bool) -> None:
    for kind, text in _slack_objects(formats.slack(payloads, digest=digest)):
        if kind == "plain_text":
            continue
        # feedwatch's own, "*New* · ", "*<URL|TITLE>*", "*What changed*", "• *key*: ",
        # become "=": what follows them starts no line
        text = re.sub(r"(?m)^\*[^*\n]*\* · ", "=", text)
        text = re.sub(r"(?m)^\*<[^<>|]*\|(.*)>\*$", r"=\1", text)
        text = re.sub(r"(?m)^(?:• )?\*([^*\n]*)\*(:|$)", r"=\1\2", text)
        # a URL keeps its _ and ~ (Slack links it as written): a mark in it opens
        # nothing (not after a space) and closes nothing (none outside is live)
        text = re.sub(r"https?://[^\s<>*`＊＿｀～]+", "URL", text)
        assert not re.search("[*_~`＊＿｀～]", text), text
        assert not re.search(r"(?m)^&gt;", text), text
    for text in _discord_texts(formats.discord(payloads, digest=digest)):
        text = re.sub(r"\*\*([^*\n]*)\*\*", r"\1", text)  # "**What changed**", "**New**"
        assert not _live("*_~`|>#", text) and not _LIST.search(text), text
    for text in _teams_texts(formats.teams(payloads, digest=digest)):
        assert not _live("*_~`", text) and not _LIST.search(text), text
        assert "{{" not in text, text  # a date function


@settings(max_examples=200, deadline=None)
@given(st.lists(_hostile_payload(), min_size=1, max_size=3), st.booleans())
def test_no_feed_text_forms_formatting(payloads: list[dict[str, Any]], digest: bool) -> None:
    _check_no_formatting(payloads, digest)


def test_slack_keeps_the_urls_in_feed_text_as_written() -> None:
    """The look-alikes that keep feed text from forming formatting went into URLs too:
    a changed link .../my_tool_1 -> .../my_tool_2 read .../myˍtoolˍ1, and Slack linked
    those addresses, which do not exist. A URL keeps its characters; the text around
    it still gets look-alikes."""
    changes = {
        "link": {"old": "https://ex.org/posts/my_tool_1", "new": "https://ex.org/posts/my_tool_2"},
        "summary": {
            "old": "Get *it* at https://ex.org/~user/my_tool_1.tar.gz",
            "new": "Get *it* at https://ex.org/~user/my_tool_2.tar.gz",
        },
    }
    msg = formats.slack([make_payload(kind="updated", changes=changes)])
    text = "\n".join(_slack_texts(msg))
    for url in ("https://ex.org/posts/my_tool_1", "https://ex.org/posts/my_tool_2"):
        assert url in text, text
    assert "https://ex.org/~user/my_tool_2.tar.gz" in text
    assert "Get ∗it∗ at" in text and "Get *it*" not in text


def test_cut_payload_cuts_texts_and_lists_never_ids_links_or_times() -> None:
    """An alert cut to fit a receiver's size (413): its texts end in "…" after a word,
    its lists keep their first items; what names or points at it stays whole."""
    long_link = "https://www.example.org/" + "a" * 300
    p = make_payload(
        kind="updated",
        title="word " * 100,
        summary="text " * 1000,
        link=long_link,
        changes={
            "link": {"old": long_link, "new": long_link + "b"},
            "updated": {"old": "2024-11-22T10:40:17Z", "new": "2024-11-22T15:56:45Z"},
            "summary": {"old": "old " * 100, "new": "new " * 100},
        },
    )
    p["entry"]["tags"] = [f"tag{i}" for i in range(100)]
    cut = formats.cut_payload(p, 40)
    entry = cut["entry"]
    assert entry["title"].endswith("…") and len(entry["title"]) <= 40
    assert p["entry"]["title"].startswith(entry["title"][:-1])
    assert len(entry["summary"]) <= 40 and len(cut["changes"]["summary"]["new"]) <= 40
    assert entry["tags"] == p["entry"]["tags"][:40]
    for key in ("id", "link", "published", "updated"):
        assert entry[key] == p["entry"][key]
    assert cut["changes"]["link"] == p["changes"]["link"]
    assert cut["changes"]["updated"] == p["changes"]["updated"]
    assert (cut["id"], cut["detected_at"], cut["feed"]["url"]) == (
        p["id"],
        p["detected_at"],
        p["feed"]["url"],
    )
    assert formats.longest_part(p) == len(p["entry"]["summary"])
    assert formats.cut_payload(p, formats.longest_part(p)) == p  # nothing to cut above it
