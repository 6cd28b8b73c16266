"""The aiohttp transport under httpx, and what Fetcher keeps doing on top of it.

Real sockets (tests/feedserver.py) wherever the behaviour is about the wire: the
peer address, raw bytes, cookies, proxies, error mapping. MockTransport only where a
public address is needed (the redirect guard), since tests cannot reach one.
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import http.server
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import structlog

from feedwatch import fetch as fetch_mod
from feedwatch.config import ConfigError
from feedwatch.fetch import Fetcher, _Deadline
from feedwatch.model import Fetched, FetchFailed, FetchOutcome, FetchRequest, NotModified
from feedwatch.transport import AiohttpTransport, _Peer
from tests.feedserver import FeedServer, feed_server_fixture, free_port  # noqa: F401
from tests.helpers import raw_server
from tests.smtpserver import _make_cert

T = TypeVar("T")
RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><guid>1</guid><title>one</title></item></channel></rss>"""


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def transport() -> AiohttpTransport:
    return AiohttpTransport(verify=fetch_mod._default_ssl_context())


async def get(t: AiohttpTransport, url: str, **headers: str) -> tuple[httpx.Response, bytes]:
    resp = await t.handle_async_request(httpx.Request("GET", url, headers=headers))
    try:
        body = b"".join([c async for c in resp.aiter_raw()])
    finally:
        await resp.aclose()
    return resp, body


def peer(resp: httpx.Response) -> object:
    return resp.extensions["network_stream"].get_extra_info("server_addr")


# -- the transport itself ----------------------------------------------------


def test_peer_address_for_a_body_a_304_and_a_redirect(feed_server: FeedServer) -> None:
    feed_server.set("/feed", RSS)
    feed_server.redirect("/old", "/feed")

    async def go() -> list[tuple[int, object]]:
        t = transport()
        try:
            ok, body = await get(t, feed_server.url("/feed"))
            assert body == RSS
            etag = ok.headers["etag"]
            same, _ = await get(t, feed_server.url("/feed"), **{"If-None-Match": etag})
            moved, _ = await get(t, feed_server.url("/old"))
            return [(r.status_code, peer(r)) for r in (ok, same, moved)]
        finally:
            await t.aclose()

    got = run(go())
    assert [s for s, _ in got] == [200, 304, 301]
    for _, addr in got:
        assert isinstance(addr, tuple) and addr[0] == "127.0.0.1"


def test_bytes_arrive_as_sent_gzip_included(feed_server: FeedServer) -> None:
    feed_server.set("/gz", RSS, gzip=True)

    async def go() -> tuple[httpx.Response, bytes]:
        t = transport()
        try:
            return await get(t, feed_server.url("/gz"), **{"Accept-Encoding": "gzip"})
        finally:
            await t.aclose()

    resp, body = run(go())
    assert resp.headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == RSS  # Fetcher decodes, counting against max_body


def test_connection_refused_is_an_httpx_connect_error_with_its_errno() -> None:
    async def go() -> BaseException:
        t = transport()
        try:
            await get(t, f"http://127.0.0.1:{free_port()}/")
        except httpx.ConnectError as exc:
            return exc
        finally:
            await t.aclose()
        raise AssertionError("no error")

    exc = run(go())
    assert any(
        isinstance(e, OSError) and e.errno == errno.ECONNREFUSED
        for e in fetch_mod._exception_chain(exc)
    )


@pytest.mark.parametrize(
    "header", [("X-Token", "a\r\nInjected: 1"), ("X-Name", "Zoë")], ids=["crlf", "not-ascii"]
)
def test_a_bad_header_value_is_refused_before_sending(
    feed_server: FeedServer, header: tuple[str, str]
) -> None:
    feed_server.set("/feed", RSS)

    async def go() -> FetchOutcome:
        async with Fetcher() as f:
            return await f.fetch(FetchRequest(feed_server.url("/feed"), headers=(header,)))

    out = run(go())
    assert isinstance(out, FetchFailed)
    assert out.reason == "invalid request (check the feed's headers)"
    assert feed_server.requests == []  # nothing was sent, let alone an injected header


# -- what the client used to do, still done ----------------------------------


def test_a_feeds_cookies_go_back_to_it_alone(feed_server: FeedServer) -> None:
    """A cookie wall sets its cookie on the way (a redirect) and wants it back, then at
    the feed's next poll; another feed of the same host never gets it."""
    feed_server.set("/wall", RSS, headers={"Set-Cookie": "consent=yes; Path=/"})
    feed_server.redirect("/feed", "/wall", 302)
    feed_server.set("/other", RSS)

    async def go() -> None:
        async with Fetcher() as f:
            await f.fetch(FetchRequest(feed_server.url("/feed")))
            await f.fetch(FetchRequest(feed_server.url("/other")))
            await f.fetch(FetchRequest(feed_server.url("/feed")))

    run(go())
    sent = [(p, h.get("cookie")) for _, p, h in feed_server.requests]
    assert sent == [
        ("/feed", None),
        ("/wall", None),
        ("/other", None),
        ("/feed", "consent=yes"),
        ("/wall", "consent=yes"),
    ]


def test_a_cookie_wall_that_sends_the_feed_url_back_is_no_loop() -> None:
    """/feed -> /consent (sets the cookie) -> /feed again, now with it: the second
    visit of /feed was refused as a redirect loop."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[tuple[str, str | None]] = []

    class Wall(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            cookie = self.headers.get("Cookie")
            seen.append((self.path, cookie))
            if self.path == "/consent":
                self.send_response(302)
                self.send_header("Set-Cookie", "consent=yes; Path=/")
                self.send_header("Location", "/feed")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif cookie != "consent=yes":
                self.send_response(302)
                self.send_header("Location", "/consent")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                body = RSS
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Wall)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/feed"

        async def go() -> object:
            async with Fetcher() as f:
                return await f.fetch(FetchRequest(url))

        out = run(go())
        assert isinstance(out, Fetched), out
        assert seen == [("/feed", None), ("/consent", None), ("/feed", "consent=yes")]
    finally:
        server.shutdown()


def test_a_host_that_sets_new_cookies_at_every_response_cannot_grow_them(
    feed_server: FeedServer,
) -> None:
    """Two new 1 KB cookies a response: the Cookie header grew without end (5 MB after 44
    polls), until the server refused every feed's requests."""
    count = iter(range(10_000))
    feed_server.set("/track", RSS)

    async def go() -> None:
        async with Fetcher() as f:
            for _ in range(12):
                n = next(count)
                feed_server.set(
                    "/track",
                    RSS,
                    headers={"Set-Cookie": f"t{n}={'x' * 1000}; Path=/"},
                )
                await f.fetch(FetchRequest(feed_server.url("/track")))

    run(go())
    sizes = [len(h.get("cookie", "")) for _, _, h in feed_server.requests]
    assert max(sizes) <= 4096 + 200
    assert sizes[1] > 0  # a cookie is still sent back while the jar is small


def test_many_304s_at_high_concurrency(feed_server: FeedServer) -> None:
    feed_server.set("/feed", RSS)

    async def go() -> list[FetchOutcome]:
        async with Fetcher(concurrency=64, per_host=64) as f:
            first = await f.fetch(FetchRequest(feed_server.url("/feed")))
            assert isinstance(first, Fetched)
            reqs = [FetchRequest(feed_server.url("/feed"), etag=first.etag)] * 300
            return list(await asyncio.gather(*(f.fetch(r) for r in reqs)))

    outs = run(go())
    assert all(isinstance(o, NotModified) for o in outs)


@pytest.mark.parametrize("status", [304, 200], ids=["304-with-a-body", "200-past-its-length"])
def test_bytes_one_response_left_on_its_connection_fail_no_other_feed(
    feed_server: FeedServer, status: int
) -> None:
    """A 304 with a body, or a 200 with more bytes than its Content-Length, sent a moment
    late: the next request on the kept-alive connection read them as its response, and
    a healthy feed of the same host failed ("invalid HTTP response") while the bad one
    was ok. That request is sent once more, on a new connection; the peer is still known."""
    feed_server.set("/bad", RSS, trailing=RSS)
    feed_server.set("/good", RSS)

    async def go() -> list[tuple[FetchOutcome, FetchOutcome]]:
        async with Fetcher(concurrency=1, per_host=1) as f:
            bad = FetchRequest(feed_server.url("/bad"), etag=feed_server._routes["/bad"].etag)
            if status == 200:
                bad = FetchRequest(feed_server.url("/bad"))
            good = FetchRequest(feed_server.url("/good"))
            return [(await f.fetch(bad), await f.fetch(good)) for _ in range(3)]

    for bad_out, good_out in run(go()):
        assert bad_out.status == status
        assert isinstance(good_out, Fetched) and good_out.body == RSS, good_out
    assert feed_server.count("/bad") == 3
    assert feed_server.count("/good") == 6  # each once more, never twice more

    async def peers() -> object:  # what the private-address guard reads
        t = transport()
        try:
            etag = feed_server._routes["/bad"].etag or ""
            await get(t, feed_server.url("/bad"), **{"If-None-Match": etag})
            resp, body = await get(t, feed_server.url("/good"))
            assert body == RSS
            return peer(resp)
        finally:
            await t.aclose()

    addr = run(peers())
    assert isinstance(addr, tuple) and addr[0] == "127.0.0.1"


def test_a_response_that_is_no_http_is_not_sent_again_on_a_new_connection() -> None:
    """Only a kept-alive connection's garbled response is retried: a server whose own
    response is no HTTP fails its feed at once, with one request."""
    requests: list[bytes] = []
    srv = raw_server(b"<rss>not HTTP</rss>\r\n\r\n", requests)
    try:
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/feed"
        out = fetch_outcome(FetchRequest(url))
    finally:
        srv.close()
    assert isinstance(out, FetchFailed) and out.reason == "invalid HTTP response", out
    assert len(requests) == 1


_LEFTOVER = b"<html>leftover of a page</html>"
_304_WITH_A_BODY = b'HTTP/1.1 304 Not Modified\r\nETag: "r"\r\nContent-Length: %d\r\n\r\n%s' % (
    len(_LEFTOVER),
    _LEFTOVER,
)


def _thrice_kept_alive(
    answer: bytes, etag: str | None = None
) -> tuple[str, list[FetchOutcome], list[bytes], list[object], list[dict[str, Any]]]:
    """Three fetches through one Fetcher of a raw server answering ``answer`` on a kept-
    alive connection: the URL, the outcomes, the requests, the connections, the logs."""
    requests: list[bytes] = []
    accepted: list[object] = []
    srv = raw_server(answer, requests, keep_alive=True, accepted=accepted)
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/feed"

    async def go() -> list[FetchOutcome]:
        async with Fetcher() as f:
            return [await f.fetch(FetchRequest(url, etag=etag)) for _ in range(3)]

    try:
        with structlog.testing.capture_logs() as logs:
            outs = run(go())
    finally:
        srv.close()
    return url, outs, requests, accepted, logs


def test_a_304_sent_with_a_body_is_a_304() -> None:
    """Naive servers (PHP's) send a 304 with a Content-Length and the body, in one write:
    aiohttp's parser read the body as the next response ("Bad status line") and failed
    the 304, so the feed was an error at every unchanged poll. curl and httpx read it as
    a 304 and ignore the body: so does feedwatch, on a connection it does not use again
    (those bytes are not HTTP), with one warning."""
    url, outs, requests, accepted, logs = _thrice_kept_alive(_304_WITH_A_BODY, etag='"r"')
    for out in outs:
        assert isinstance(out, NotModified) and out.etag == '"r"', out
    assert len(requests) == 3  # none sent again
    assert len(accepted) == 3  # each on a new connection: the body was never read as HTTP
    warned = [e for e in logs if e["event"] == "fetch.not_modified_with_body"]
    assert len(warned) == 1, logs
    assert warned[0]["log_level"] == "info" and warned[0]["url"] == url


@pytest.mark.parametrize(
    ("extra", "connections"), [(RSS, 3), (b"\r\n", 1)], ids=["a-second-copy", "a-line-break"]
)
def test_a_body_past_its_content_length_in_the_same_write_is_read_to_its_length(
    extra: bytes, connections: int
) -> None:
    """A server that writes more than its Content-Length in one write (a generator that
    counted characters, not bytes, or wrote a newline after the document): aiohttp's
    parser read the excess as the next response and failed this one with it ("invalid
    HTTP response"), at every poll; CI saw it when the late bytes of a test's server
    came in the same read. curl reads the body to its stated length and ignores the
    rest: so does feedwatch, on a connection it does not use again, with one line. A
    line break alone after the body is what HTTP parsers skip: the connection is kept."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
    answer += b"Content-Length: %d\r\n\r\n%s%s" % (len(RSS), RSS, extra)
    _url, outs, requests, accepted, logs = _thrice_kept_alive(answer)
    for out in outs:
        assert isinstance(out, Fetched) and out.status == 200 and out.body == RSS, out
    assert len(requests) == 3  # none sent again
    assert len(accepted) == connections  # a new one each: the excess never read as HTTP
    warned = [e for e in logs if e["event"] == "fetch.body_past_its_length"]
    assert len(warned) == (connections > 1), logs
    if warned:
        assert warned[0]["log_level"] == "info" and warned[0]["bytes"] == len(extra)


def test_a_304_to_a_request_without_validators_is_an_error() -> None:
    """A 304 answers a conditional request; to one without If-None-Match or
    If-Modified-Since it is a broken server (RFC 9110 15.4.5), and was taken as "not
    modified" at every poll: "ok" for ever, with no entry ever read. It is an error."""
    srv = raw_server(b'HTTP/1.1 304 Not Modified\r\nETag: "r"\r\n\r\n')
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/feed"
    try:
        out = fetch_outcome(FetchRequest(url))
        conditional = fetch_outcome(FetchRequest(url, etag='"r"'))
        by_header = fetch_outcome(FetchRequest(url, headers=(("If-None-Match", '"r"'),)))
    finally:
        srv.close()
    assert isinstance(out, FetchFailed), out
    assert out.reason == "HTTP 304 to a request without validators: a broken server"
    assert out.status == 304
    assert isinstance(conditional, NotModified), conditional
    assert isinstance(by_header, NotModified), by_header


def fetch_outcome(req: FetchRequest) -> FetchOutcome:
    async def go() -> FetchOutcome:
        async with Fetcher() as f:
            return await f.fetch(req)

    return run(go())


# -- the redirect guard checks where the connection went -----------------------


class _Stream(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data


def _peered(addr: str, status: int, **kw: object) -> httpx.Response:
    """A response that says it came from ``addr``, as AiohttpTransport's do."""
    return httpx.Response(status, extensions={"network_stream": _Peer((addr, 80))}, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("allow_private", [False, True])
def test_a_redirect_whose_connection_lands_on_a_private_address(allow_private: bool) -> None:
    """The target's name resolved public when checked, the connection went private."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "93.184.216.34":
            return _peered("93.184.216.34", 301, headers={"Location": "http://93.184.216.35/"})
        return _peered("10.0.0.7", 200, stream=_Stream(RSS))

    async def go() -> FetchOutcome:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        async with client:
            f = Fetcher(client=client)
            return await f.fetch(
                FetchRequest("http://93.184.216.34/feed", allow_private=allow_private)
            )

    out = run(go())
    if allow_private:
        assert isinstance(out, Fetched)
    else:
        assert isinstance(out, FetchFailed)
        assert out.reason == (
            "redirect to a private address (10.0.0.7) refused; set allow_private = true for this feed"
        )


# -- the timeout without a task of its own --------------------------------------


def test_deadline_times_out_and_calls_on_slow_first() -> None:
    calls: list[str] = []

    async def go() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(asyncio.TimeoutError):
            with _Deadline(loop.time() + 0.2, loop.time() + 0.05, lambda: calls.append("slow")):
                await asyncio.Event().wait()
        task = asyncio.current_task()
        assert task is not None
        if hasattr(task, "cancelling"):
            assert task.cancelling() == 0  # the cancel it made is undone

    run(go())
    assert calls == ["slow"]


def test_deadline_not_reached_leaves_nothing_behind() -> None:
    calls: list[str] = []

    async def go() -> str:
        loop = asyncio.get_running_loop()
        deadline = _Deadline(loop.time() + 0.05, loop.time() + 0.01, lambda: calls.append("slow"))
        with deadline:
            result = "done"
        # both timers are cancelled on exit: neither callback can fire later
        assert deadline._handles and all(h.cancelled() for h in deadline._handles)
        return result

    assert run(go()) == "done"
    assert calls == []


def test_a_cancel_from_outside_stays_a_cancel() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()

        inside = asyncio.Event()

        async def inner() -> None:
            with _Deadline(loop.time() + 30):
                inside.set()
                await asyncio.Event().wait()

        task = asyncio.ensure_future(inner())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(go())


# -- SSL_CERT_FILE that cannot be used -----------------------------------------


def test_missing_ssl_cert_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_mod, "_ssl_context", None)
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
    with pytest.raises(ConfigError) as err:
        fetch_mod._default_ssl_context()
    assert str(err.value) == (
        "SSL_CERT_FILE: /nonexistent/ca.pem: no such file; "
        "point it at a PEM file of CA certificates or unset it"
    )


def test_preloaded_context_is_the_one_used_and_its_thread_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fetch_mod, "_ssl_context", None)
    monkeypatch.setattr(fetch_mod, "_ssl_loading", None)
    before = threading.active_count()
    wait = fetch_mod.preload_ssl_context()
    wait()
    assert threading.active_count() == before  # a fork may follow: no thread is left
    ctx = fetch_mod._ssl_context
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.cert_store_stats()["x509_ca"] > 0  # the CA bundle is in it
    assert fetch_mod._default_ssl_context() is ctx


def test_preload_with_a_bad_ssl_cert_file_leaves_the_error_to_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fetch_mod, "_ssl_context", None)
    monkeypatch.setattr(fetch_mod, "_ssl_loading", None)
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
    fetch_mod.preload_ssl_context()
    with pytest.raises(ConfigError, match="SSL_CERT_FILE: /nonexistent/ca.pem: no such file"):
        fetch_mod._default_ssl_context()


def test_a_refused_check_leaves_no_tls_thread_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` of an https feed starts the CA load before it opens the state; when the
    state is refused it must still wait for that thread: one left inside OpenSSL at
    interpreter exit crashed the process (a segfault, 1 run in 150, on a corrupt state
    file)."""
    from feedwatch import cli
    from feedwatch.cli import main

    real_load, real_open = httpx.create_ssl_context, cli._open
    refused = threading.Event()
    loads: list[str] = []

    def load_after_the_refusal(*args: object, **kwargs: object) -> ssl.SSLContext:
        loads.append(threading.current_thread().name)
        refused.wait(timeout=30)  # the load ends only once the state has been refused
        return real_load()

    def open_and_note(config: object) -> object:
        try:
            return real_open(config)  # type: ignore[arg-type]
        finally:
            refused.set()

    monkeypatch.setattr(fetch_mod, "_ssl_context", None)
    monkeypatch.setattr(fetch_mod, "_ssl_loading", None)
    # (with one of these set, `check` waits for the load before it opens the state, to
    # see that the CAs can be read: the load then never outlasts a refused state)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setattr(fetch_mod.httpx, "create_ssl_context", load_after_the_refusal)
    monkeypatch.setattr(cli, "_open", open_and_note)
    state = tmp_path / "state.db"
    state.write_bytes(b"\0" * 4096)  # not a database
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{state}"\n'
        f'[sinks.j]\ntype = "jsonl"\npath = "{tmp_path / "alerts.jsonl"}"\n'
        '[[feeds]]\nname = "x"\nurl = "https://127.0.0.1:9/feed"\n'
    )
    before = threading.active_count()
    logging_before = structlog.get_config()  # main() points the logs at this test's stderr
    try:
        assert main(["-q", "-c", str(cfg), "check"]) == 1
    finally:
        structlog.configure(**logging_before)
    assert "is corrupt" in capsys.readouterr().err
    assert refused.is_set()
    assert loads == ["feedwatch-tls"]  # the load ran, in its thread
    alive = threading.active_count() - before
    fetch_mod._wait_ssl_context()  # the test's own clean-up, whatever the outcome
    assert alive == 0


def test_check_says_what_is_wrong_with_ssl_cert_file(tmp_path: Path) -> None:
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path / "state.db"}"\n'
        f'[sinks.j]\ntype = "jsonl"\npath = "{tmp_path / "alerts.jsonl"}"\n'
        '[[feeds]]\nname = "x"\nurl = "https://127.0.0.1:9/feed"\n'
    )
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    env = dict(os.environ, SSL_CERT_FILE=str(bad))
    p = subprocess.run(
        [sys.executable, "-m", "feedwatch", "-q", "-c", str(cfg), "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert f"SSL_CERT_FILE: {bad}: holds no CA certificate in PEM form" in p.stderr
    # exit 2 writes nothing (SPEC section 2): the state was created before the CA load
    assert sorted(f.name for f in tmp_path.iterdir()) == ["ca.pem", "feedwatch.toml"]


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("SSL_CERT_FILE", "nonexistent.pem: no such file; point it at a PEM file"),
        # OpenSSL reads a directory only at a handshake: every request failed instead
        ("SSL_CERT_DIR", "nonexistent.pem: no such directory; point it at a directory"),
    ],
)
def test_a_missing_ssl_cert_file_creates_no_state(
    tmp_path: Path, command: str, variable: str, message: str
) -> None:
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path / "state.db"}"\nlog_format = "json"\n'
        f'[sinks.j]\ntype = "jsonl"\npath = "{tmp_path / "alerts.jsonl"}"\n'
        '[[feeds]]\nname = "x"\nurl = "https://127.0.0.1:9/feed"\n'
    )
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    env[variable] = str(tmp_path / "nonexistent.pem")
    p = subprocess.run(
        [sys.executable, "-m", "feedwatch", "-c", str(cfg), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert message in p.stderr
    assert "state.created" not in p.stderr
    assert sorted(f.name for f in tmp_path.iterdir()) == ["feedwatch.toml"]


def test_validate_warns_of_an_ssl_cert_file_that_cannot_be_read(tmp_path: Path) -> None:
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text('[[feeds]]\nname = "x"\nurl = "https://127.0.0.1:9/feed"\n')
    env = dict(os.environ, SSL_CERT_FILE=str(tmp_path / "nonexistent.pem"))
    p = subprocess.run(
        [sys.executable, "-m", "feedwatch", "-c", str(cfg), "validate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ok: 1 feeds")
    assert f"warning: SSL_CERT_FILE: {tmp_path}/nonexistent.pem: no such file" in p.stderr


# -- TLS: verified against SSL_CERT_FILE's CAs ----------------------------------


class _Feed(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Content-Length", str(len(RSS)))
        self.end_headers()
        self.wfile.write(RSS)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tls_feed(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS feed on 127.0.0.1 with a self-signed certificate (and that certificate)."""
    cert, key = _make_cert(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Feed)
    srv.daemon_threads = True
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{srv.server_address[1]}/feed", cert
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize("on_demand", [False, True])
@pytest.mark.parametrize("trusted", [True, False])
def test_tls_is_verified_against_ssl_cert_file(
    tls_feed: tuple[str, Path], trusted: bool, on_demand: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether the context is built with the Fetcher or at the first https request."""
    url, cert = tls_feed
    monkeypatch.setattr(fetch_mod, "_ssl_context", None)
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    else:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    async def go() -> FetchOutcome:
        async with Fetcher(tls_on_demand=on_demand) as f:
            assert (fetch_mod._ssl_context is None) == on_demand
            return await f.fetch(FetchRequest(url, timeout=10))

    out = run(go())
    assert fetch_mod._ssl_context is not None
    if trusted:
        assert isinstance(out, Fetched) and out.body == RSS
    else:
        assert isinstance(out, FetchFailed)
        assert out.reason == "TLS error: self-signed certificate"


def test_on_demand_tls_is_not_loaded_for_http_and_a_bad_bundle_fails_only_https(
    tls_feed: tuple[str, Path],
    feed_server: FeedServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``tls_on_demand`` (a check whose feeds are all http://): an http fetch loads no CA
    bundle; an https one (a redirect, say) whose bundle cannot be read fails, naming
    SSL_CERT_FILE, and the next http fetch still works."""
    url, _cert = tls_feed
    feed_server.set("/plain.xml", RSS)
    monkeypatch.setattr(fetch_mod, "_ssl_context", None)
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")

    async def go() -> tuple[FetchOutcome, bool, FetchOutcome, FetchOutcome]:
        async with Fetcher(tls_on_demand=True) as f:
            plain = await f.fetch(FetchRequest(feed_server.url("/plain.xml"), timeout=10))
            loaded = fetch_mod._ssl_context is not None
            tls = await f.fetch(FetchRequest(url, timeout=10))
            again = await f.fetch(FetchRequest(feed_server.url("/plain.xml"), timeout=10))
            return plain, loaded, tls, again

    plain, loaded, tls, again = run(go())
    assert isinstance(plain, Fetched) and plain.body == RSS
    assert not loaded
    assert isinstance(tls, FetchFailed)
    assert "SSL_CERT_FILE: /nonexistent/ca.pem: no such file" in tls.reason
    assert isinstance(again, Fetched) and again.body == RSS


def test_importing_the_transport_leaves_ssl_as_it_was() -> None:
    """aiohttp is imported without loading CAs into its unused default contexts (they
    trust nothing), and the ssl module is put back as it was (a fresh interpreter, so
    the import is the first)."""
    code = (
        "import ssl\n"
        "create, paths = ssl.create_default_context, ssl.SSLContext.set_default_verify_paths\n"
        "import feedwatch.transport, aiohttp.connector as c\n"
        "assert ssl.create_default_context is create\n"
        "assert ssl.SSLContext.set_default_verify_paths is paths\n"
        "assert c._SSL_CONTEXT_VERIFIED.verify_mode == ssl.CERT_REQUIRED\n"
        "assert c._SSL_CONTEXT_VERIFIED.check_hostname\n"
        "assert c._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca'] == 0\n"
        "print('ok')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


# -- what httpx (h11 through httpcore) reads, the direct path reads too ---------------

_RAW_RSS = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>raw</title>'
    b"<item><guid>r1</guid><title>Raw 1</title></item></channel></rss>"
)


def _serve_once_each(response: bytes) -> tuple[socket.socket, str]:
    """A server answering every request with ``response`` as it is, then closing."""
    srv = raw_server(response)
    return srv, f"http://127.0.0.1:{srv.getsockname()[1]}/feed"


def _raw_response(*header_lines: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
        + b"".join(line + b"\r\n" for line in header_lines)
        + b"Connection: close\r\n\r\n"
        + _RAW_RSS
    )


@pytest.mark.parametrize(
    "header_lines",
    [
        # a long Content-Security-Policy: 17-20 KB lines are seen in the wild
        (b"Content-Security-Policy: " + b"a" * 20_000,),
        (b"X-Long: " + b"b" * 90_000,),  # httpcore reads up to 100 KiB of headers
        tuple(b"X-H%d: " % n + b"d" * 4000 for n in range(10)),
    ],
    ids=["header-20k", "header-90k", "ten-4k-headers"],
)
def test_the_direct_path_reads_what_httpx_reads(header_lines: tuple[bytes, ...]) -> None:
    srv, url = _serve_once_each(_raw_response(*header_lines))
    try:
        direct = fetch_outcome(FetchRequest(url))

        async def through_httpx() -> FetchOutcome:
            async with httpx.AsyncClient(follow_redirects=False) as client:
                async with Fetcher(client=client) as f:
                    return await f.fetch(FetchRequest(url))

        via_httpx = run(through_httpx())
    finally:
        srv.close()
    assert isinstance(via_httpx, Fetched), via_httpx
    assert isinstance(direct, Fetched), direct
    assert direct.body == via_httpx.body == _RAW_RSS


def test_a_header_line_beyond_what_httpx_reads_is_an_invalid_response() -> None:
    srv, url = _serve_once_each(_raw_response(b"X-Huge: " + b"c" * 200_000))
    try:
        out = fetch_outcome(FetchRequest(url))
    finally:
        srv.close()
    assert isinstance(out, FetchFailed) and out.reason == (
        "invalid HTTP response (headers over the 100 KiB limit)"
    ), out


def test_content_length_twice_is_refused_by_the_direct_path_saying_so() -> None:
    """The same Content-Length twice: RFC 9110 8.6 lets a recipient take it as one, and
    httpx does, but aiohttp's parser (llhttp) refuses it whatever its lenient flags: a
    limit, documented (docs/troubleshooting.md). The reason says what it is."""
    srv, url = _serve_once_each(_raw_response(*(b"Content-Length: %d" % len(_RAW_RSS),) * 2))
    try:
        out = fetch_outcome(FetchRequest(url))
    finally:
        srv.close()
    assert isinstance(out, FetchFailed), out
    assert out.reason == "invalid HTTP response (Content-Length sent twice)"
