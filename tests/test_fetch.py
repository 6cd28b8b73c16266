"""feedwatch.fetch against a real HTTP server on 127.0.0.1 (MockTransport only for odd cases)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import TypeVar

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedwatch import DEFAULT_USER_AGENT
from feedwatch import fetch as fetch_module
from feedwatch.fetch import Fetcher, is_private_address, parse_retry_after
from feedwatch.model import Fetched, FetchFailed, FetchOutcome, FetchRequest, NotModified
from feedwatch.redact import redact_url
from tests.feedserver import FeedServer, feed_server_fixture, free_port  # noqa: F401
from tests.helpers import raw_server

T = TypeVar("T")

RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><guid>1</guid><title>one</title></item></channel></rss>"""
MiB = 1024 * 1024


class _Body(httpx.AsyncByteStream):
    """A body MockTransport hands over as a stream (bytes content would arrive pre-read)."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def fetch(req: FetchRequest, **kw: object) -> FetchOutcome:
    async def go() -> FetchOutcome:
        async with Fetcher(**kw) as f:  # type: ignore[arg-type]
            return await f.fetch(req)

    return run(go())


def failed(outcome: FetchOutcome) -> FetchFailed:
    assert isinstance(outcome, FetchFailed), outcome
    return outcome


def fetched(outcome: FetchOutcome) -> Fetched:
    assert isinstance(outcome, Fetched), outcome
    return outcome


# -- success and conditional GET -------------------------------------------


def test_200_returns_body_headers_and_validators(feed_server: FeedServer) -> None:
    lm = "Wed, 21 Oct 2015 07:28:00 GMT"
    feed_server.set("/feed", RSS, last_modified=lm, headers={"X-Extra": "Yes"})
    out = fetched(fetch(FetchRequest(feed_server.url("/feed"))))
    assert out.status == 200
    assert out.body == RSS
    assert out.url == feed_server.url("/feed")
    assert out.headers["content-type"] == "application/xml"
    assert out.headers["x-extra"] == "Yes"
    assert all(k == k.lower() for k in out.headers)
    assert out.etag and out.etag.startswith('"')
    assert out.last_modified == lm
    assert out.redirects == () and out.permanent_redirect is None
    assert 0 < out.elapsed < 5


def test_conditional_get_etag_gives_304_then_200_after_change(feed_server: FeedServer) -> None:
    feed_server.set("/feed", RSS)
    first = fetched(fetch(FetchRequest(feed_server.url("/feed"))))
    second = fetch(FetchRequest(feed_server.url("/feed"), etag=first.etag))
    assert isinstance(second, NotModified)
    assert second.status == 304 and second.etag == first.etag
    assert feed_server.requests[-1][2]["if-none-match"] == first.etag
    feed_server.set("/feed", RSS + b"<!-- changed -->")
    third = fetched(fetch(FetchRequest(feed_server.url("/feed"), etag=first.etag)))
    assert third.etag != first.etag


def test_conditional_get_last_modified(feed_server: FeedServer) -> None:
    lm = "Wed, 21 Oct 2015 07:28:00 GMT"
    feed_server.set("/feed", RSS, etag=False, last_modified=lm)
    out = fetch(FetchRequest(feed_server.url("/feed"), last_modified=lm))
    assert isinstance(out, NotModified)
    assert out.last_modified == lm and out.etag is None
    assert feed_server.requests[-1][2]["if-modified-since"] == lm
    assert "if-none-match" not in feed_server.requests[-1][2]


def test_304_without_validators_keeps_the_old_ones(feed_server: FeedServer) -> None:
    feed_server.set("/feed", b"", status=304, etag=False)
    out = fetch(
        FetchRequest(
            feed_server.url("/feed"), etag='"old"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT"
        )
    )
    assert isinstance(out, NotModified)
    assert out.etag == '"old"'
    assert out.last_modified == "Mon, 01 Jan 2024 00:00:00 GMT"


# -- redirects -------------------------------------------------------------


def test_permanent_redirect_chain_is_reported(feed_server: FeedServer) -> None:
    feed_server.redirect("/old", "/mid", 301)
    feed_server.redirect("/mid", feed_server.url("/feed"), 308)
    feed_server.set("/feed", RSS)
    out = fetched(fetch(FetchRequest(feed_server.url("/old"))))
    assert out.body == RSS
    assert out.url == feed_server.url("/feed")
    assert out.redirects == (feed_server.url("/mid"), feed_server.url("/feed"))
    assert out.permanent_redirect == feed_server.url("/feed")


def test_temporary_redirect_is_followed_not_reported_permanent(feed_server: FeedServer) -> None:
    feed_server.redirect("/tmp", "/feed", 302)
    feed_server.set("/feed", RSS)
    out = fetched(fetch(FetchRequest(feed_server.url("/tmp"))))
    assert out.url == feed_server.url("/feed")
    assert out.permanent_redirect is None


def test_permanent_then_temporary_reports_the_permanent_part(feed_server: FeedServer) -> None:
    feed_server.redirect("/a", "/b", 301)
    feed_server.redirect("/b", "/feed", 307)
    feed_server.set("/feed", RSS)
    out = fetched(fetch(FetchRequest(feed_server.url("/a"))))
    assert out.permanent_redirect == feed_server.url("/b")
    assert out.url == feed_server.url("/feed")


def test_redirect_to_304_carries_permanent_redirect(feed_server: FeedServer) -> None:
    feed_server.set("/feed", RSS)
    etag = fetched(fetch(FetchRequest(feed_server.url("/feed")))).etag
    feed_server.redirect("/old", "/feed", 301)
    out = fetch(FetchRequest(feed_server.url("/old"), etag=etag))
    assert isinstance(out, NotModified)
    assert out.permanent_redirect == feed_server.url("/feed")


def test_five_redirects_ok_six_refused(feed_server: FeedServer) -> None:
    for i in range(6):
        feed_server.redirect(f"/r{i}", f"/r{i + 1}", 302)
    feed_server.set("/r6", RSS)
    ok = fetched(fetch(FetchRequest(feed_server.url("/r1"))))
    assert len(ok.redirects) == 5
    out = failed(fetch(FetchRequest(feed_server.url("/r0"))))
    assert out.reason == "too many redirects (more than 5)"
    assert feed_server.count("/r6") == 1  # only the 5-hop fetch reached it


def test_redirect_loop_detected(feed_server: FeedServer) -> None:
    feed_server.redirect("/a", "/b", 302)
    feed_server.redirect("/b", "/a", 302)
    out = failed(fetch(FetchRequest(feed_server.url("/a"))))
    assert out.reason == "redirect loop"
    assert feed_server.count("/a") == 1 and feed_server.count("/b") == 1


def test_redirect_to_a_port_out_of_range_is_an_invalid_url(feed_server: FeedServer) -> None:
    """It read "invalid request (check the feed's headers)", blaming the user's config."""
    feed_server.redirect("/a", "//127.0.0.1:99999/", 302)
    out = failed(fetch(FetchRequest(feed_server.url("/a"))))
    assert (out.reason, out.status) == ("redirect to an invalid URL", 302)


def test_redirect_without_location(feed_server: FeedServer) -> None:
    feed_server.set("/r", b"", status=301, etag=False)
    out = failed(fetch(FetchRequest(feed_server.url("/r"))))
    assert out.status == 301 and "Location" in out.reason


def _public_then(target: str) -> httpx.AsyncClient:
    """A client whose 'public' host (never contacted: MockTransport) redirects to ``target``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "93.184.216.34":
            return httpx.Response(301, headers={"Location": target})
        return httpx.Response(200, stream=_Body(RSS))

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("http://10.0.0.1/feed", "10.0.0.1"),
        ("http://[::1]/feed", "::1"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ("http://localhost/feed", "localhost = "),
    ],
)
def test_redirect_from_public_to_private_refused(target: str, shown: str) -> None:
    async def go() -> tuple[FetchOutcome, FetchOutcome]:
        async with _public_then(target) as client:
            f = Fetcher(client=client)
            refused = await f.fetch(FetchRequest("http://93.184.216.34/feed"))
            allowed = await f.fetch(FetchRequest("http://93.184.216.34/feed", allow_private=True))
            return refused, allowed

    refused, allowed = run(go())
    reason = failed(refused).reason
    assert reason.startswith(f"redirect to a private address ({shown}")
    assert reason.endswith("refused; set allow_private = true for this feed")
    assert fetched(allowed).url == target


def test_redirect_from_public_to_public_followed() -> None:
    async def go() -> FetchOutcome:
        async with _public_then("http://1.1.1.1/feed") as client:
            return await Fetcher(client=client).fetch(FetchRequest("http://93.184.216.34/feed"))

    assert fetched(run(go())).url == "http://1.1.1.1/feed"


def test_private_first_url_and_private_to_private_redirect_allowed(feed_server: FeedServer) -> None:
    feed_server.redirect("/a", f"http://localhost:{feed_server.port}/feed", 302)
    feed_server.set("/feed", RSS)
    assert fetched(fetch(FetchRequest(feed_server.url("/a")))).body == RSS


def test_is_private_address() -> None:
    for a in [
        "10.1.2.3",
        "127.0.0.1",
        "::1",
        "169.254.1.1",
        "224.0.0.1",
        "240.0.0.1",
        "0.0.0.0",
        "192.168.1.1",
        "::ffff:10.0.0.1",
        "fe80::1%eth0",
        "100.64.0.1",
    ]:
        assert is_private_address(a), a
    for a in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"]:
        assert not is_private_address(a), a


# -- limits: time, size, encoding -------------------------------------------


def test_timeout_bounds_a_trickling_body(feed_server: FeedServer) -> None:
    feed_server.set("/slow", RSS, trickle=0.1)  # ~13 s for the whole body
    t0 = time.monotonic()
    out = failed(fetch(FetchRequest(feed_server.url("/slow"), timeout=1.0)))
    took = time.monotonic() - t0
    assert out.reason == "timed out after 1s"
    assert 0.9 <= took < 2.5
    assert 0.9 <= out.elapsed < 2.5


def test_timeout_on_slow_headers(feed_server: FeedServer) -> None:
    feed_server.set("/slow", RSS, delay=3)
    t0 = time.monotonic()
    out = failed(fetch(FetchRequest(feed_server.url("/slow"), timeout=0.5)))
    assert out.reason == "timed out after 0.5s"
    assert time.monotonic() - t0 < 1.5


def test_body_over_max_body(feed_server: FeedServer) -> None:
    feed_server.set("/big", b"x" * 5000)
    out = failed(fetch(FetchRequest(feed_server.url("/big"), max_body=4096)))
    assert out.reason == "body larger than the 4 KiB max_body limit"
    ok = fetched(fetch(FetchRequest(feed_server.url("/big"), max_body=5000)))
    assert len(ok.body) == 5000


def test_endless_body_without_length_stops_at_max_body() -> None:
    sent = 0

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            nonlocal sent
            while True:
                sent += 65536
                yield b"y" * 65536

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Endless())

    async def go() -> FetchOutcome:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await Fetcher(client=client).fetch(FetchRequest("http://x.test/", max_body=MiB))

    out = failed(run(go()))
    assert out.reason == "body larger than the 1 MiB max_body limit"
    assert sent <= MiB + 2 * 65536


def test_gzip_body_decoded(feed_server: FeedServer) -> None:
    feed_server.set("/gz", RSS, gzip=True)
    out = fetched(fetch(FetchRequest(feed_server.url("/gz"))))
    assert out.body == RSS
    assert out.headers["content-encoding"] == "gzip"
    assert feed_server.requests[-1][2]["accept-encoding"] == "gzip, deflate"


def test_a_gzip_body_of_several_members_is_read_whole(feed_server: FeedServer) -> None:
    """`gzip -c head items` makes one body of two members: only the first was read, and
    the entries in the second were lost with a "not well-formed" warning."""
    import gzip as gz

    half = len(RSS) // 2
    body = gz.compress(RSS[:half]) + gz.compress(RSS[half:])
    feed_server.set("/multi", body, headers={"Content-Encoding": "gzip"})
    out = fetched(fetch(FetchRequest(feed_server.url("/multi"))))
    assert out.body == RSS


def test_gzip_bomb_refused(feed_server: FeedServer) -> None:
    feed_server.set("/bomb", b"\0" * (10 * MiB), gzip=True)
    out = failed(fetch(FetchRequest(feed_server.url("/bomb"), max_body=MiB)))
    assert out.reason == "decompressed body larger than the 1 MiB max_body limit"


def test_a_gzip_body_sent_without_content_encoding_is_inflated(feed_server: FeedServer) -> None:
    """A gzip body without ``Content-Encoding: gzip`` (a ``.xml.gz`` served as it is)
    failed as "not well-formed XML": it starts with gzip's magic bytes, which no
    document does, so it is inflated as a labelled one is, within max_body."""
    feed_server.set("/gz", gzip.compress(RSS), content_type="application/x-gzip")
    out = fetched(fetch(FetchRequest(feed_server.url("/gz"))))
    assert out.body == RSS and "content-encoding" not in out.headers
    feed_server.set("/bomb", gzip.compress(b"\0" * (4 * MiB)))
    out = failed(fetch(FetchRequest(feed_server.url("/bomb"), max_body=MiB)))
    assert out.reason == "decompressed body larger than the 1 MiB max_body limit"
    feed_server.set("/bad", b"\x1f\x8b" + RSS)
    out = failed(fetch(FetchRequest(feed_server.url("/bad"))))
    assert out.reason == (
        "could not decompress the body (gzip data is corrupt; it was sent without"
        " Content-Encoding: gzip)"
    )
    for plain in (b"\x1f", b"\x1f<rss/>", b"x"):  # too short, or not gzip: as it is
        feed_server.set("/plain", plain)
        assert fetched(fetch(FetchRequest(feed_server.url("/plain")))).body == plain


@pytest.mark.parametrize("raw", [False, True])
def test_deflate_zlib_and_raw(raw: bool) -> None:
    if raw:
        c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        data = c.compress(RSS) + c.flush()
    else:
        data = zlib.compress(RSS)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Body(data), headers={"Content-Encoding": "deflate"})

    async def go() -> FetchOutcome:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await Fetcher(client=client).fetch(FetchRequest("http://x.test/"))

    assert fetched(run(go())).body == RSS


def test_corrupt_gzip_is_a_clear_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, stream=_Body(b"not gzip at all"), headers={"Content-Encoding": "gzip"}
        )

    async def go() -> FetchOutcome:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await Fetcher(client=client).fetch(FetchRequest("http://x.test/"))

    assert failed(run(go())).reason == "could not decompress the body (gzip data is corrupt)"


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate", "UTF-8", "br", "gzip, br"])
def test_a_plain_feed_labelled_as_encoded_is_read_as_it_is(
    feed_server: FeedServer, coding: str
) -> None:
    """Servers that label a plain body gzip, or send ``Content-Encoding: UTF-8``:
    feedparser's own fetcher (so rss2email) reads them, and so do we, when the first
    bytes are plainly a document (``<`` or ``{``, after a byte-order mark or spaces)."""
    body = b"\xef\xbb\xbf\n  " + RSS
    feed_server.set("/mislabelled", body, headers={"Content-Encoding": coding})
    out = fetched(fetch(FetchRequest(feed_server.url("/mislabelled"))))
    assert out.body == body


def test_an_encoding_we_cannot_decode_is_still_an_error() -> None:
    """Really brotli-compressed (binary, not a document): refused, as before."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            stream=_Body(b"\x8b\x0b\x80" + bytes(range(200))),
            headers={"Content-Encoding": "br"},
        )

    async def go() -> FetchOutcome:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await Fetcher(client=client).fetch(FetchRequest("http://x.test/"))

    assert failed(run(go())).reason == "unsupported Content-Encoding 'br'"


def test_truncated_gzip_is_a_clear_error() -> None:
    data = gzip.compress(RSS * 50)[:-20]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Body(data), headers={"Content-Encoding": "gzip"})

    async def go() -> FetchOutcome:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await Fetcher(client=client).fetch(FetchRequest("http://x.test/"))

    assert "gzip data is" in failed(run(go())).reason


def test_connection_reset_mid_body(feed_server: FeedServer) -> None:
    feed_server.set("/reset", b"<rss>" + b"x" * 200_000, reset_mid_body=True)
    out = failed(fetch(FetchRequest(feed_server.url("/reset"))))
    assert out.reason == "connection closed mid-body"
    assert out.status == 200


# -- statuses ----------------------------------------------------------------


def test_404(feed_server: FeedServer) -> None:
    out = failed(fetch(FetchRequest(feed_server.url("/nothing"))))
    assert out.reason == "HTTP 404 Not Found" and out.status == 404 and not out.gone
    assert out.retry_after is None


def test_removed_path_is_404(feed_server: FeedServer) -> None:
    feed_server.set("/feed", RSS)
    feed_server.remove("/feed")
    assert failed(fetch(FetchRequest(feed_server.url("/feed")))).status == 404


def test_410_is_gone(feed_server: FeedServer) -> None:
    feed_server.set("/gone", "bye", status=410)
    out = failed(fetch(FetchRequest(feed_server.url("/gone"))))
    assert out.gone and out.status == 410 and out.reason == "HTTP 410 Gone"


def test_429_with_retry_after_seconds(feed_server: FeedServer) -> None:
    feed_server.set("/busy", "slow down", status=429, headers={"Retry-After": "120"})
    out = failed(fetch(FetchRequest(feed_server.url("/busy"))))
    assert out.retry_after == 120
    assert out.reason == "HTTP 429 Too Many Requests (retry after 120s)"


def test_503_with_retry_after_http_date(feed_server: FeedServer) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=300)
    feed_server.set(
        "/down", "x", status=503, headers={"Retry-After": format_datetime(when, usegmt=True)}
    )
    out = failed(fetch(FetchRequest(feed_server.url("/down"))))
    assert out.status == 503
    assert out.retry_after is not None and 290 <= out.retry_after <= 301
    assert out.reason.startswith("HTTP 503 Service Unavailable (retry after ")


def test_503_with_a_retry_after_of_hundreds_of_digits(feed_server: FeedServer) -> None:
    """It overflowed: the feed failed with an unexpected OverflowError, and the server's
    Retry-After was ignored. It is the 24 h cap now."""
    feed_server.set("/down", "x", status=503, headers={"Retry-After": "9" * 400})
    out = failed(fetch(FetchRequest(feed_server.url("/down"))))
    assert out.status == 503 and out.retry_after == 86400
    assert out.reason == "HTTP 503 Service Unavailable (retry after 86400s)"


def test_503_without_or_with_nonsense_retry_after(feed_server: FeedServer) -> None:
    feed_server.set("/down", "x", status=503)
    out = failed(fetch(FetchRequest(feed_server.url("/down"))))
    assert out.reason == "HTTP 503 Service Unavailable" and out.retry_after is None
    feed_server.set("/down", "x", status=503, headers={"Retry-After": "soon"})
    assert failed(fetch(FetchRequest(feed_server.url("/down")))).retry_after is None


def test_500_keeps_status(feed_server: FeedServer) -> None:
    feed_server.set("/err", "boom", status=500)
    out = failed(fetch(FetchRequest(feed_server.url("/err"))))
    assert out.status == 500 and out.reason == "HTTP 500 Internal Server Error"


def test_empty_body(feed_server: FeedServer) -> None:
    feed_server.set("/empty", b"")
    out = failed(fetch(FetchRequest(feed_server.url("/empty"))))
    assert out.reason == "empty body" and out.status == 200


def test_parse_retry_after() -> None:
    now = datetime(2024, 11, 22, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(" 0 ", now) == 0
    assert parse_retry_after("999999", now) == 86400
    # any number of digits: past the cap (OverflowError at 309, ValueError at 4300)
    for many in ("9" * 309, "1" + "0" * 400, "9" * 5000):
        assert parse_retry_after(many, now) == 86400
    assert parse_retry_after("0" * 400 + "120", now) == 120
    assert parse_retry_after("Fri, 22 Nov 2024 12:02:00 GMT", now) == 120
    assert parse_retry_after("Fri, 22 Nov 2024 11:00:00 GMT", now) == 0  # past
    assert parse_retry_after("Fri, 29 Nov 2024 12:00:00 GMT", now) == 86400
    for junk in [None, "", "-5", "1.5", "soon", "Fri, 99 Nov 2024", "٣"]:
        assert parse_retry_after(junk, now) is None, junk


@settings(max_examples=50)
@given(st.text(max_size=40))
def test_parse_retry_after_never_raises(value: str) -> None:
    r = parse_retry_after(value, datetime(2024, 1, 1, tzinfo=timezone.utc))
    assert r is None or 0 <= r <= 86400


# -- network failures ------------------------------------------------------


def test_connection_refused() -> None:
    out = failed(fetch(FetchRequest(f"http://127.0.0.1:{free_port()}/feed", timeout=5)))
    assert out.reason == "connection refused" and out.status is None


def test_dns_failure() -> None:
    out = failed(fetch(FetchRequest("http://no-such-host.invalid/feed", timeout=5)))
    assert out.reason in ("DNS lookup failed for host no-such-host.invalid", "timed out after 5s")


def test_tls_error(feed_server: FeedServer) -> None:
    feed_server.set("/feed", RSS)
    out = failed(fetch(FetchRequest(f"https://127.0.0.1:{feed_server.port}/feed", timeout=5)))
    assert out.reason.startswith("TLS error: ")


def test_bad_urls_fail_cleanly() -> None:
    assert "unsupported URL scheme" in failed(fetch(FetchRequest("ftp://example.org/x"))).reason
    assert failed(fetch(FetchRequest("http://"))).reason.startswith("invalid URL")


# -- what is sent ------------------------------------------------------------


def test_user_agent_and_custom_headers_sent(feed_server: FeedServer) -> None:
    feed_server.set("/feed", RSS)
    fetched(
        fetch(
            FetchRequest(
                feed_server.url("/feed"),
                user_agent="tester/1.0",
                headers=(("X-Token", "abc123"), ("Accept-Language", "uk")),
            )
        )
    )
    _, _, h = feed_server.requests[-1]
    assert h["user-agent"] == "tester/1.0"
    assert h["x-token"] == "abc123" and h["accept-language"] == "uk"
    fetched(fetch(FetchRequest(feed_server.url("/feed"))))
    assert feed_server.requests[-1][2]["user-agent"] == DEFAULT_USER_AGENT


def test_custom_headers_not_sent_to_another_host(feed_server: FeedServer) -> None:
    feed_server.redirect("/a", f"http://localhost:{feed_server.port}/feed", 302)
    feed_server.set("/feed", RSS)
    fetched(fetch(FetchRequest(feed_server.url("/a"), headers=(("Authorization", "Bearer zzzz"),))))
    (_, _, first), (_, _, second) = feed_server.requests[-2:]
    assert first["authorization"] == "Bearer zzzz"
    assert "authorization" not in second


def test_credentials_and_headers_not_sent_to_another_port_of_the_host(
    feed_server: FeedServer,
) -> None:
    """Another port is another service: a redirect there got the feed's Authorization
    header and its URL's user-info as Basic auth (only another host name was stripped)."""
    with FeedServer() as other:
        other.set("/feed", RSS)
        target = f"http://127.0.0.1:{other.port}/feed"
        feed_server.redirect("/a", target, 302)
        fetched(
            fetch(FetchRequest(feed_server.url("/a"), headers=(("Authorization", "Bearer zzzz"),)))
        )
        assert feed_server.requests[-1][2]["authorization"] == "Bearer zzzz"
        assert "authorization" not in other.requests[-1][2]
        fetched(fetch(FetchRequest(f"http://bob:pw9@127.0.0.1:{feed_server.port}/a")))
        assert "authorization" in feed_server.requests[-1][2]
        assert "authorization" not in other.requests[-1][2]


@pytest.mark.parametrize("etag", ['"caf\u00c3\u00a9"', '"x\u00ff"'], ids=["utf-8", "not-utf-8"])
def test_a_validator_that_cannot_be_sent_back_is_not_kept(
    feed_server: FeedServer, etag: str
) -> None:
    """A server's raw 'ETag: "café"' was stored, then every request failed before it
    left ("invalid request (check the feed's headers)") until `forget`; bytes that are
    not UTF-8 reached the state as surrogates and every poll crashed."""
    feed_server.set(
        "/odd",
        RSS,
        etag=False,
        headers={
            "ETag": etag,
            "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT\u00e9",
            "Content-Type": "application/rss+xml; charset=\u00ff",
        },
    )
    got = fetched(fetch(FetchRequest(feed_server.url("/odd"))))
    assert got.etag is None and got.last_modified is None
    for value in got.headers.values():
        value.encode("utf-8")  # no surrogates: storable, printable
    got = fetched(fetch(FetchRequest(feed_server.url("/odd"), etag=etag, last_modified="x\u00e9")))
    _, _, sent = feed_server.requests[-1]
    assert "if-none-match" not in sent and "if-modified-since" not in sent


def test_basic_auth_from_userinfo_and_password_never_in_reason(feed_server: FeedServer) -> None:
    feed_server.set("/feed", RSS)
    url = f"http://alice:s3cr3t-pw@127.0.0.1:{feed_server.port}"
    fetched(fetch(FetchRequest(url + "/feed")))
    auth = feed_server.requests[-1][2]["authorization"]
    assert auth == "Basic " + base64.b64encode(b"alice:s3cr3t-pw").decode()

    feed_server.set("/busy", "x", status=503, headers={"Retry-After": "5"})
    feed_server.redirect("/loop", "/loop", 302)
    bad = [
        url + "/missing",
        url + "/busy",
        url + "/loop",
        f"http://alice:s3cr3t-pw@127.0.0.1:{free_port()}/feed",
        f"https://alice:s3cr3t-pw@127.0.0.1:{feed_server.port}/feed",
        "ftp://alice:s3cr3t-pw@example.org/",
    ]
    for u in bad:
        out = failed(fetch(FetchRequest(u, timeout=5)))
        assert "s3cr3t" not in out.reason and "s3cr3t" not in repr(out), out
        assert out.url is None or "***@" in out.url


def test_redact_url() -> None:
    assert redact_url("https://u:p@h.example/x?a=b@c") == "https://***@h.example/x?a=b@c"
    assert redact_url("https://h.example/x@y") == "https://h.example/x@y"
    assert redact_url("not a url") == "not a url"


# -- concurrency -----------------------------------------------------------


def _fetch_all(urls: list[str], **kw: object) -> list[FetchOutcome]:
    async def go() -> list[FetchOutcome]:
        async with Fetcher(**kw) as f:  # type: ignore[arg-type]
            return list(await asyncio.gather(*(f.fetch(FetchRequest(u)) for u in urls)))

    return run(go())


def test_per_host_limit(feed_server: FeedServer) -> None:
    feed_server.set("/slow", RSS, delay=0.2)
    urls = [feed_server.url("/slow")] * 6 + [f"http://localhost:{feed_server.port}/slow"] * 6
    outs = _fetch_all(urls, concurrency=16, per_host=2)
    assert all(isinstance(o, Fetched) for o in outs)
    assert feed_server.in_flight_max == 4  # 2 per host name, both hosts at once


def test_waiting_for_a_slot_after_a_redirect_does_not_count_against_the_timeout(
    feed_server: FeedServer,
) -> None:
    # Six feeds on one host, all moved to another (http -> https, a new host name):
    # with per_host = 2 the redirected requests queue for the new host's slots, three
    # rounds of 0.5 s. Each request takes 0.5 s, well within the 1.2 s timeout; the
    # wait for its slot after the redirect must not count (it does not for a first
    # request, and six feeds at /slow directly are all fetched).
    feed_server.set("/slow", RSS, delay=0.5)
    for n in range(6):
        feed_server.redirect(f"/old{n}", f"http://localhost:{feed_server.port}/slow?n={n}")

    async def go() -> list[FetchOutcome]:
        async with Fetcher(concurrency=16, per_host=2) as f:
            return list(
                await asyncio.gather(
                    *(
                        f.fetch(FetchRequest(feed_server.url(f"/old{n}"), timeout=1.2))
                        for n in range(6)
                    )
                )
            )

    outs = run(go())
    assert [type(o).__name__ for o in outs] == ["Fetched"] * 6, outs
    assert feed_server.in_flight_max <= 2 + 2
    # the reported time is the requests', not the wait for a slot
    assert all(o.elapsed < 1.2 for o in outs)


def test_global_concurrency_limit(feed_server: FeedServer) -> None:
    feed_server.set("/slow", RSS, delay=0.15)
    outs = _fetch_all([feed_server.url("/slow")] * 12, concurrency=3, per_host=50)
    assert all(isinstance(o, Fetched) for o in outs)
    assert feed_server.in_flight_max == 3


def test_requests_counts_the_requests_holding_a_slot(feed_server: FeedServer) -> None:
    """``Fetcher.requests`` is what a big check's body workers read to tell whether the
    main process is fetching: the requests under way, not those waiting for a slot."""
    feed_server.set("/slow", RSS, delay=0.3)
    seen: list[int] = []

    async def go() -> None:
        async with Fetcher(concurrency=3, per_host=50) as f:
            assert f.requests == 0
            task = asyncio.gather(
                *(f.fetch(FetchRequest(feed_server.url("/slow"))) for _ in range(5))
            )
            deadline = time.monotonic() + 10
            while feed_server.in_flight_max < 3:  # the first three are at the server
                assert time.monotonic() < deadline, "three requests never reached the server"
                await asyncio.sleep(0.01)
            seen.append(f.requests)
            await task
            seen.append(f.requests)

    run(go())
    assert seen == [3, 0]


def test_stop_new_requests_cancels_the_waiting_and_lets_the_sent_finish(
    feed_server: FeedServer,
) -> None:
    """A daemon's stop: the fetches waiting for a slot end at once (cancelled, so their
    polls commit nothing); those whose request is out get their answer; none starts after."""
    feed_server.set("/slow", RSS, delay=0.5)
    outcome: dict[str, object] = {}

    async def go() -> None:
        async with Fetcher(concurrency=2, per_host=50) as f:
            tasks = [
                asyncio.ensure_future(f.fetch(FetchRequest(feed_server.url("/slow"))))
                for _ in range(5)
            ]
            deadline = time.monotonic() + 10
            while feed_server.in_flight_max < 2:  # two at the server, three waiting
                assert time.monotonic() < deadline, "two requests never reached the server"
                await asyncio.sleep(0.01)
            f.stop_new_requests()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            outcome["results"] = results
            outcome["later"] = await asyncio.gather(
                f.fetch(FetchRequest(feed_server.url("/slow"))), return_exceptions=True
            )
            outcome["requests"] = f.requests

    run(go())
    results = outcome["results"]
    assert isinstance(results, list)
    assert sum(isinstance(r, Fetched) for r in results) == 2
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 3
    assert isinstance(outcome["later"], list)
    assert isinstance(outcome["later"][0], asyncio.CancelledError)
    assert feed_server.count("/slow") == 2
    assert outcome["requests"] == 0


def test_server_holds_many_concurrent_connections(feed_server: FeedServer) -> None:
    # Raw sockets: httpcore's pool bookkeeping is quadratic in concurrent requests, so
    # 250 through one httpx client would measure httpx, not the server.
    feed_server.set("/slow", RSS, delay=1.0)

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", feed_server.port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        data = await reader.read()
        writer.close()
        return data

    async def go() -> list[bytes]:
        return list(await asyncio.gather(*(one() for _ in range(250))))

    t0 = time.monotonic()
    replies = run(go())
    assert all(r.startswith(b"HTTP/1.1 200 ") and r.endswith(RSS) for r in replies)
    assert feed_server.in_flight_max >= 200
    assert time.monotonic() - t0 < 4


def test_many_feeds_through_one_fetcher(feed_server: FeedServer) -> None:
    for i in range(60):
        feed_server.set(f"/f{i}", RSS + str(i).encode(), delay=0.05)
    urls = [feed_server.url(f"/f{i}") for i in range(60)]
    outs = _fetch_all(urls, concurrency=30, per_host=30)
    assert [fetched(o).body for o in outs] == [RSS + str(i).encode() for i in range(60)]
    assert feed_server.in_flight_max <= 30


def test_basic_auth_kept_on_same_host_redirect(feed_server: FeedServer) -> None:
    feed_server.redirect("/a", feed_server.url("/feed"), 301)  # absolute, no user-info
    feed_server.set("/feed", RSS)
    url = f"http://bob:hunter22@127.0.0.1:{feed_server.port}/a"
    out = fetched(fetch(FetchRequest(url)))
    assert (
        feed_server.requests[-1][2]["authorization"]
        == "Basic " + base64.b64encode(b"bob:hunter22").decode()
    )
    assert out.permanent_redirect == f"http://bob:hunter22@127.0.0.1:{feed_server.port}/feed"


def test_bodies_in_hand_are_bounded_until_released(feed_server: FeedServer) -> None:
    """When parsing falls behind, fetching waits: at most max_bodies bodies are held."""
    for i in range(4):
        feed_server.set(f"/b{i}", RSS)
    feed_server.set("/gone", b"", status=404)

    async def go() -> None:
        async with Fetcher(concurrency=4, per_host=4, max_bodies=2) as f:
            # a failure holds no place, before or after the bodies
            out, release = await f.fetch_held(FetchRequest(feed_server.url("/gone")))
            assert isinstance(out, FetchFailed)
            tasks = [
                asyncio.ensure_future(f.fetch_held(FetchRequest(feed_server.url(f"/b{i}"))))
                for i in range(4)
            ]
            deadline = time.monotonic() + 20
            while sum(t.done() for t in tasks) < 2:
                assert time.monotonic() < deadline, "two bodies never arrived"
                await asyncio.sleep(0.01)
            done = [t for t in tasks if t.done()]
            waiting = [t for t in tasks if not t.done()]
            # the other two never reached the server: their requests wait for a place
            assert sum(feed_server.count(f"/b{i}") for i in range(4)) == 2
            assert len(waiting) == 2
            first, release_first = done[0].result()
            assert isinstance(first, Fetched)
            release_first()
            release_first()  # twice is harmless
            while sum(t.done() for t in waiting) < 1:
                assert time.monotonic() < deadline, "a released place was not reused"
                await asyncio.sleep(0.01)
            assert sum(feed_server.count(f"/b{i}") for i in range(4)) == 3
            for t in tasks:
                if t.done():
                    t.result()[1]()
            await asyncio.wait_for(asyncio.gather(*tasks), 20)
            for t in tasks:
                t.result()[1]()
            assert sum(feed_server.count(f"/b{i}") for i in range(4)) == 4
            # plain fetch() never holds a place
            for _ in range(3):
                assert isinstance(await f.fetch(FetchRequest(feed_server.url("/b0"))), Fetched)

    run(go())


def test_slow_servers_on_more_hosts_than_places_cannot_hold_healthy_feeds(
    feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six silent servers, each its own host, against concurrency 2 (so 2 x 2 places
    for bodies). A slow request gave its slot back after SLOW_AFTER but kept its place,
    so the fifth and sixth slow feeds, and every healthy one, waited for the first slow
    ones' whole timeout. A request still waiting for its answer holds no place past
    SLOW_AFTER: all six reach their servers and the healthy feeds are fetched at once.
    An answer that comes later waits for a place before its body is read: the bodies
    in hand (read or being read) never outnumber the places."""
    monkeypatch.setattr(fetch_module, "SLOW_AFTER", 0.2)  # (5 s in production)
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n%s" % (
        len(RSS),
        RSS,
    )
    gate = threading.Event()
    asked: list[list[bytes]] = [[] for _ in range(6)]
    servers = [raw_server(answer, asked[i], host=f"127.0.0.{i + 2}", gate=gate) for i in range(6)]
    for i in range(5):
        feed_server.set(f"/ok{i}", RSS)

    async def go() -> None:
        async with Fetcher(concurrency=2, per_host=2) as f:  # 4 places for bodies
            slow = [
                asyncio.ensure_future(
                    f.fetch_held(
                        FetchRequest(
                            f"http://127.0.0.{i + 2}:{s.getsockname()[1]}/feed", timeout=60
                        )
                    )
                )
                for i, s in enumerate(servers)
            ]
            deadline = time.monotonic() + 10
            while not all(asked):
                reached = sum(map(bool, asked))
                assert time.monotonic() < deadline, f"{reached} of 6 slow requests were sent"
                await asyncio.sleep(0.01)
            # the healthy feeds go at once (and their four bodies take the four places)
            held = await asyncio.wait_for(
                asyncio.gather(
                    *(f.fetch_held(FetchRequest(feed_server.url(f"/ok{i}"))) for i in range(4))
                ),
                5,
            )
            assert all(isinstance(out, Fetched) for out, _ in held), held
            releases = [release for _, release in held]
            # every place taken: another feed waits for one before its request is sent,
            # and the slow answers, coming now, before their bodies are read
            fifth = asyncio.ensure_future(f.fetch_held(FetchRequest(feed_server.url("/ok4"))))
            gate.set()
            pending: set[asyncio.Future[tuple[FetchOutcome, object]]] = {fifth, *slow}
            done, pending = await asyncio.wait(pending, timeout=1.0)
            assert not done, [t.result()[0] for t in done]
            assert feed_server.count("/ok4") == 0
            # each place given back lets exactly one more body in
            while pending:
                releases.pop()()
                done, pending = await asyncio.wait(
                    pending, timeout=10, return_when=asyncio.FIRST_COMPLETED
                )
                assert len(done) == 1, f"{len(done)} bodies came in for one place"
                out, release = done.pop().result()
                assert isinstance(out, Fetched) and out.body == RSS, out
                assert callable(release)
                releases.append(release)
            for release in releases:
                release()

    try:
        run(go())
    finally:
        gate.set()
        for s in servers:
            s.close()
