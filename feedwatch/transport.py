"""The wire under ``Fetcher``: HTTP/1.1 requests sent with aiohttp.

httpcore's pool (httpx's default transport) spent ~0.75 ms of CPU per request on
loopback, and more as concurrency grew (its bookkeeping walks every queued request
times every connection on each event); aiohttp's connector does the same request
for ~0.1 ms (docs/performance.md, "The transport and the 304 path"). httpx stays
the API: URLs are ``httpx.URL``, errors are httpx's, and ``AiohttpTransport`` is an
``httpx.AsyncBaseTransport`` any ``httpx.AsyncClient`` can use. ``Fetcher`` calls
its lighter ``open`` directly (no httpx Request or Response objects: they cost as
much as the request) unless a client was injected or a proxy is configured.

What it promises ``Fetcher``:

- bytes as they came: no decompression (``Fetcher`` decodes, counting against
  ``max_body``), no redirects, no cookies, no auth, no proxy (the caller's job);
- the address actually connected to, as the ``network_stream`` extension's
  ``server_addr`` (what the private-address guard checks);
- aiohttp's errors as httpx's (``ConnectError``, ``ReadError``, ``ReadTimeout``,
  ``RemoteProtocolError``, ``LocalProtocolError``), raised from the original so
  the errno, DNS and TLS causes stay in the chain ``Fetcher`` reads reasons from;
- no limit of its own on connections: ``Fetcher``'s semaphores are the limit;
- a 304 sent with a body (naive servers send one, Content-Length and all) is the 304
  it is: the bytes after its head are dropped and its connection is closed, with a
  warning once for each server (``_Protocol``);
- a GET that a kept-alive connection answered with bytes that are no HTTP response
  (what the connection's last response left behind: more bytes than its
  Content-Length, a 304's body sent late) is sent once more, on a new connection
  (``_send``).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import sys
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

import httpx
import structlog

from feedwatch.redact import redact


@contextmanager
def _without_default_cas() -> Iterator[None]:
    """While aiohttp is imported, TLS contexts load no CA certificates.

    aiohttp builds two default TLS contexts when it is imported, each reading the
    system's CA bundle: ~40 ms of every start. feedwatch never uses them: every
    connection gets the context ``Fetcher`` builds (httpx's settings, certifi or
    ``SSL_CERT_FILE``), passed to the connector as ``ssl=``. Should one ever be used,
    it verifies against no CA, so it trusts nothing: it fails closed. Everything is
    put back once aiohttp is imported (a process imports it once, before any thread
    or connection of ours exists)."""
    create = ssl.create_default_context
    load_paths = ssl.SSLContext.set_default_verify_paths

    def bare(*_args: Any, **_kwargs: Any) -> ssl.SSLContext:
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname and certificate checked

    def no_paths(_self: ssl.SSLContext) -> None:
        return None

    ssl.create_default_context = bare
    ssl.SSLContext.set_default_verify_paths = no_paths  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        ssl.create_default_context = create
        ssl.SSLContext.set_default_verify_paths = load_paths  # type: ignore[method-assign]


with _without_default_cas():
    import aiohttp
    from aiohttp.client_proto import ResponseHandler
import yarl  # noqa: E402  (aiohttp's own dependency: imported with it above)

# Larger than aiohttp's 8 KiB default: what httpx reads (h11 through httpcore, which
# allows 100 KiB of headers), so a feed read through a proxy (httpx) is read here too.
# Some servers send long Set-Cookie, Link or Content-Security-Policy headers (17-20 KB
# of CSP are seen). aiohttp bounds each line and the count (128), not their total.
MAX_HEADER_LINE = 100 * 1024
_HTTP11 = b"HTTP/1.1"
_NEEDS_CLEANUP_CLOSED = sys.version_info < (3, 12, 8) or (3, 13, 0) <= sys.version_info < (3, 13, 1)
# Methods sent again after a kept-alive connection garbled their response (RFC 9112
# 9.3.1: idempotent, and no body to send again).
_RETRIED = frozenset({"GET", "HEAD"})

log = structlog.get_logger("feedwatch.transport")


class _Attempt:
    """What the connector tells the request it is connecting (through ``_attempt``): the
    URL its connection carried last (None: a new connection) and the peer address."""

    __slots__ = ("peer", "previous")

    def __init__(self) -> None:
        self.previous: str | None = None
        self.peer: Any = None


_attempt: ContextVar[_Attempt | None] = ContextVar("feedwatch_attempt", default=None)

# What a _Protocol does with the bytes that come: hand them to aiohttp's parser; look
# at a response's head first (is it a 304? how long is its body?); count a body of a
# stated length; drop them (they followed a 304's head, or a body's stated length).
_PASS, _HEAD, _AFTER_304, _BODY = 0, 1, 2, 3
_HEAD_END = b"\r\n\r\n"
# a head longer than this is not looked into (aiohttp's own limits apply to it)
_HEAD_LIMIT = 256 * 1024
# servers whose 304 came with a body, or whose body ran past its Content-Length:
# said once each (a bounded set)
_WARNED: set[tuple[str, str]] = set()


def _content_length(head: bytes) -> int | None:
    """The body length a response's head states, where that alone ends the body: one
    Content-Length (or several that agree) and no Transfer-Encoding; else None."""
    lengths: set[bytes] = set()
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
    if len(lengths) != 1:
        return None
    (value,) = lengths
    return int(value) if value.isdigit() else None


class _Protocol(ResponseHandler):
    """aiohttp's protocol for a connection, reading a response that has bytes after it
    as that response, as curl and browsers do.

    A 304 has no body (RFC 9110 15.4.5), but naive servers (PHP's, a page's whole
    output) send one, with its Content-Length, in the same write. A body may also run
    past the Content-Length its head states (a generator that counted characters, not
    bytes, or wrote a newline after the document). aiohttp's parser reads those bytes as
    the next response and fails on them, and with them the response they followed
    ("Bad status line") when they came in the same read: the feed was an error at every
    poll. curl and httpx read the response and ignore what follows; so does this:
    whatever comes after a 304's head, or after the stated length of a body, until the
    next request, is dropped, and the connection is closed (not used again: where those
    bytes end is anyone's guess). Other bytes go to the parser untouched."""

    fw_url = ""  # the URL asked last on this connection (set by _Connector)
    _fw_state = _PASS
    _fw_start = b""  # the response's first 12 bytes: "HTTP/1.1 304"
    _fw_head = b""  # the head so far (its end may span two reads)
    _fw_left = 0  # in _BODY: the bytes of the body still to come
    _fw_skip = False  # a response without a body whatever its head says (to a HEAD)

    def set_response_params(self, **kwargs: Any) -> None:  # (at each request)
        self._fw_state, self._fw_start, self._fw_head = _HEAD, b"", b""
        self._fw_skip = bool(kwargs.get("skip_payload"))
        super().set_response_params(**kwargs)

    def data_received(self, data: bytes) -> None:
        if self._fw_state == _PASS or not data:
            super().data_received(data)
        elif self._fw_state == _HEAD:
            self._head_received(data)
        elif self._fw_state == _BODY:
            self._body_received(data)
        else:
            self._left_behind(len(data), past_304=True)

    def _head_received(self, data: bytes) -> None:
        start = self._fw_start
        if len(start) < 12:
            start = self._fw_start = (start + data[:12])[:12]
        if len(start) == 12 and not start.startswith(b"HTTP/"):
            self._fw_state = _PASS  # no HTTP: aiohttp's parser says so
            super().data_received(data)
            return
        before = self._fw_head
        head = before + data
        end = head.find(_HEAD_END, max(0, len(before) - 3))
        if end < 0 or len(start) < 12:
            if len(head) > _HEAD_LIMIT:
                self._fw_state = _PASS
            else:
                self._fw_head = head
            super().data_received(data)
            return
        end += 4
        cut = end - len(before)
        super().data_received(data[:cut])
        rest = data[cut:]
        self._fw_head = b""
        status = start[9:12]
        if status == b"304":
            self._fw_state = _AFTER_304
            if rest:
                self._left_behind(len(rest), past_304=True)
            return
        if status[:1] == b"1":  # an interim 1xx: the response's head follows
            self._fw_start = b""
            if rest:
                self.data_received(rest)
            return
        length = None if self._fw_skip or status == b"204" else _content_length(head[:end])
        if length is None:  # chunked, until the close, or none: aiohttp's parser ends it
            self._fw_state = _PASS
            if rest:
                super().data_received(rest)
            return
        self._fw_state, self._fw_left = _BODY, length
        if rest:
            self._body_received(rest)

    def _body_received(self, data: bytes) -> None:
        left = self._fw_left
        if len(data) <= left:
            self._fw_left = left - len(data)
            super().data_received(data)
            return
        self._fw_left = 0
        if not data[left:].strip(b"\r\n"):  # a line break after the body: aiohttp's
            self._fw_state = _PASS  # parser skips blank lines before a response
            super().data_received(data)
            return
        if left:
            super().data_received(data[:left])
        self._left_behind(len(data) - left, past_304=False)

    def _left_behind(self, size: int, *, past_304: bool) -> None:
        """Bytes after a 304's head, or past a body's stated length: dropped, and the
        connection closed."""
        self.force_close()
        if self.transport is not None:
            self.transport.close()
        url = yarl.URL(self.fw_url) if self.fw_url else None
        server = f"{url.scheme}://{url.host}:{url.port}" if url is not None else ""
        event = "fetch.not_modified_with_body" if past_304 else "fetch.body_past_its_length"
        if (event, server) in _WARNED or len(_WARNED) >= 10_000:
            return
        _WARNED.add((event, server))
        hint = (
            "the server sent its 304 Not Modified with a body (which a 304 has not):"
            " read as a 304, the body ignored, the connection closed; said once per server"
            if past_304
            else "the server sent more bytes than its Content-Length: the response read to"
            " its stated length, the rest ignored, the connection closed; said once per"
            " server"
        )
        log.info(  # (read right; nothing to mend here: no warning a cron `-q check` mails)
            event, url=redact(self.fw_url), bytes=size, hint=hint
        )


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector, its connections speaking ``_Protocol``, telling the request in
    ``_attempt`` whether its connection is a kept-alive one (and which URL that one
    carried last) and the peer address (while the socket is surely open: a 304 may
    close it before its headers return)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._factory = functools.partial(_Protocol, loop=self._loop)  # type: ignore[assignment]
        self._carried: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    async def connect(
        self, req: aiohttp.ClientRequest, traces: list[Any], timeout: aiohttp.ClientTimeout
    ) -> aiohttp.connector.Connection:
        conn = await super().connect(req, traces, timeout)
        proto = conn.protocol
        attempt = _attempt.get()
        if proto is not None and attempt is not None:
            attempt.previous = self._carried.get(proto)
            sock = proto.transport
            attempt.peer = sock.get_extra_info("peername") if sock is not None else None
        if proto is not None:
            self._carried[proto] = str(req.url)
            if isinstance(proto, _Protocol):
                proto.fw_url = str(req.url)
        return conn


class _Peer:
    """Enough of httpcore's network stream for ``Fetcher`` to read the peer address."""

    __slots__ = ("_addr",)

    def __init__(self, addr: Any) -> None:
        self._addr = addr

    def get_extra_info(self, name: str) -> Any:
        return self._addr if name == "server_addr" else None


@contextmanager
def _mapped(before_headers: bool) -> Iterator[None]:
    """aiohttp's exceptions as httpx's, keeping the original as the cause."""
    try:
        yield
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise httpx.ReadTimeout("timed out") from exc
    except aiohttp.ServerDisconnectedError as exc:
        if before_headers:
            raise httpx.RemoteProtocolError(
                "server disconnected without sending a response"
            ) from exc
        raise httpx.ReadError("server disconnected") from exc
    except aiohttp.ClientConnectorError as exc:  # DNS, refused, TLS: all before a byte is sent
        raise httpx.ConnectError(str(exc)) from exc
    except aiohttp.ClientSSLError as exc:
        raise httpx.ConnectError(str(exc)) from exc
    except aiohttp.ClientPayloadError as exc:
        raise httpx.ReadError(str(exc)) from exc
    except aiohttp.ClientResponseError as exc:  # a response aiohttp could not parse
        raise httpx.RemoteProtocolError(f"invalid HTTP response ({exc.message})") from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.InvalidURL("invalid URL") from exc
    except (aiohttp.ClientOSError, ConnectionError) as exc:
        raise httpx.ReadError(str(exc)) from exc
    except aiohttp.ClientError as exc:
        raise httpx.TransportError(str(exc)) from exc
    except ValueError as exc:  # a header value aiohttp will not send (CR/LF, ...)
        raise httpx.LocalProtocolError(str(exc)) from exc


class _Body(httpx.AsyncByteStream):
    """A response body streamed as it arrives; closing it frees (or drops) the connection."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in Reply(self._resp, None).aiter_raw():
            yield chunk

    async def aclose(self) -> None:
        # release() keeps the connection only when the body was read to its end.
        self._resp.release()


class Reply:
    """What ``Fetcher`` reads of a response, as httpx.Response spells it: status,
    headers, the peer (``network_stream``) and the raw body, streamed."""

    __slots__ = ("_resp", "extensions", "headers", "status_code")
    is_stream_consumed = False
    content = b""

    def __init__(self, resp: aiohttp.ClientResponse, peer: Any) -> None:
        self._resp = resp
        self.status_code = resp.status
        self.headers = resp.headers
        self.extensions = {"network_stream": _Peer(peer)}

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        content = self._resp.content
        with _mapped(before_headers=False):
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk

    def to_httpx(self, request: httpx.Request) -> httpx.Response:
        """The status and headers as an httpx.Response (for its cookie jar)."""
        return httpx.Response(self.status_code, headers=self._resp.raw_headers, request=request)


def _str_headers(headers: httpx.Headers) -> list[tuple[str, str]]:
    # httpx has checked and encoded them (ASCII); latin-1 gives the same text back
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers.raw]


class AiohttpTransport(httpx.AsyncBaseTransport):
    """GET (and any other method without a streamed body) over one aiohttp session.

    The session is made on first use, inside the running loop, and closed by
    ``aclose`` (which ``httpx.AsyncClient.aclose`` calls).
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | Callable[[], ssl.SSLContext],
        keepalive_expiry: float = 60.0,
    ) -> None:
        """``verify``: the TLS context, or what makes it at the first https request (a
        check of only http:// feeds never loads the CA bundle: ~20 ms of CPU)."""
        if isinstance(verify, ssl.SSLContext):
            context = verify

            def given() -> ssl.SSLContext:
                return context

            verify = given
        self._make_ssl = verify
        self._ssl: ssl.SSLContext | None = None
        self._keepalive = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None  # new connections only (_send)
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        self._session = self._new_session(keepalive_timeout=self._keepalive)
        return self._session

    def _open_fresh(self) -> aiohttp.ClientSession:
        """The session whose every request is on a new connection, closed after it."""
        self._fresh = self._fresh or self._new_session(force_close=True)
        return self._fresh

    @staticmethod
    def _new_session(**pooling: Any) -> aiohttp.ClientSession:
        connector = _Connector(
            limit=0,  # Fetcher's semaphores bound the requests in flight
            limit_per_host=0,
            # every https request names its context (``_send``); aiohttp's own default
            # was built with no CA (``_without_default_cas``), so it trusts nothing
            # CPython before 3.12.8 can leak the TLS transports of connections closed
            # abruptly; aiohttp's clean-up keeps a long-running daemon from growing
            enable_cleanup_closed=_NEEDS_CLEANUP_CLOSED,
            **pooling,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
            max_line_size=MAX_HEADER_LINE,
            max_field_size=MAX_HEADER_LINE,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )

    def _timeout(self, timeouts: dict[str, float | None]) -> aiohttp.ClientTimeout:
        """httpx's connect and read timeouts; the caller bounds the whole request."""
        key = (timeouts.get("connect"), timeouts.get("read"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=key[0], sock_read=key[1])
            if len(self._timeouts) < 64:
                self._timeouts[key] = timeout
        return timeout

    async def _send(
        self,
        method: str,
        url: httpx.URL,
        headers: list[tuple[str, str]],
        timeouts: dict[str, float | None],
        body: bytes | None = None,
    ) -> tuple[aiohttp.ClientResponse, Any]:
        """The response (headers read, body not) and the peer address it came from.

        A kept-alive connection may hold bytes its last response left behind (a 304 with
        a body, more bytes than a Content-Length said, sent late): read as the start of
        this response, they fail it, though this URL's server may be fine. So a GET whose
        response was no HTTP on a kept-alive connection is sent once more, on a new
        connection, as browsers and httpcore do; not a second time, nor after a timeout
        or on a new connection (that server's response is what is wrong)."""
        attempt = _Attempt()
        token = _attempt.set(attempt)
        try:
            resp: aiohttp.ClientResponse | None = None
            try:
                resp = await self._request(
                    self._session or self._open(), method, url, headers, timeouts, body
                )
            except httpx.RemoteProtocolError as exc:
                if not (
                    attempt.previous is not None
                    and method in _RETRIED
                    and isinstance(exc.__cause__, aiohttp.ClientResponseError)
                ):
                    raise
            if resp is None:  # (not in the except: its error would be the retry's context)
                previous, attempt.peer = attempt.previous, None
                resp = await self._request(self._open_fresh(), method, url, headers, timeouts, body)
                # answered on a new connection: the bytes were the earlier response's
                log.warning(
                    "fetch.connection_garbled",
                    url=redact(str(url)),
                    after=redact(str(previous)),
                    hint="the response before this one on its connection left bytes behind"
                    " (a 304 with a body, more than its Content-Length): sent again on a"
                    " new connection",
                )
        finally:
            _attempt.reset(token)
        if attempt.peer is not None:
            return resp, attempt.peer
        # A response without a body (a 304, most redirects) has handed its connection
        # back already; its protocol still knows the socket while the connection lives.
        conn = resp.connection
        proto = conn.protocol if conn is not None else getattr(resp, "_protocol", None)
        sock = getattr(proto, "transport", None)
        return resp, sock.get_extra_info("peername") if sock is not None else None

    async def _request(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: httpx.URL,
        headers: list[tuple[str, str]],
        timeouts: dict[str, float | None],
        body: bytes | None,
    ) -> aiohttp.ClientResponse:
        tls: ssl.SSLContext | bool = True  # (unused for http://)
        if url.scheme == "https":
            if self._ssl is None:
                self._ssl = self._make_ssl()
            tls = self._ssl
        # The caller turned any user-info into an Authorization header already; aiohttp
        # would refuse both, so the URL goes without it.
        target = yarl.URL(
            f"{url.scheme}://{url.netloc.decode('ascii')}{url.raw_path.decode('ascii')}",
            encoded=True,
        )
        with _mapped(before_headers=True):
            resp = await session.request(
                method,
                target,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=self._timeout(timeouts),
                ssl=tls,
            )
        return resp

    @asynccontextmanager
    async def open(
        self, url: httpx.URL, headers: list[tuple[str, str]], timeout: float
    ) -> AsyncIterator[Reply]:
        """A GET without httpx's Request and Response objects (Fetcher's hot path):
        ``headers`` go as they are, so the caller adds and checks what a client would
        (auth, cookies, ASCII only). The connection is freed (or dropped, if the body was not read to
        its end) on exit."""
        resp, peer = await self._send("GET", url, headers, {"connect": timeout, "read": timeout})
        try:
            yield Reply(resp, peer)
        finally:
            resp.release()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread() if request.method not in ("GET", "HEAD") else None
        resp, peer = await self._send(
            request.method,
            request.url,
            _str_headers(request.headers),
            request.extensions.get("timeout", {}),
            body,
        )
        return httpx.Response(
            status_code=resp.status,
            headers=resp.raw_headers,
            stream=_Body(resp),
            extensions={
                "http_version": _HTTP11,
                "reason_phrase": (resp.reason or "").encode("latin-1", "replace"),
                "network_stream": _Peer(peer),
            },
            request=request,
        )

    async def aclose(self) -> None:
        for session in (self._session, self._fresh):
            if session is not None:
                await session.close()
        self._session = self._fresh = None
