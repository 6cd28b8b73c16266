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
- no limit of its own on connections: ``Fetcher``'s semaphores are the limit.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx


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
import yarl  # noqa: E402  (aiohttp's own dependency: imported with it above)

# Larger than aiohttp's 8 KiB default, as h11 (httpx's default) allows: some servers
# send long Set-Cookie or Link headers.
MAX_HEADER_LINE = 16 * 1024
_HTTP11 = b"HTTP/1.1"
_NEEDS_CLEANUP_CLOSED = sys.version_info < (3, 12, 8) or (3, 13, 0) <= sys.version_info < (3, 13, 1)


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
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=0,  # Fetcher's semaphores bound the requests in flight
            limit_per_host=0,
            # every https request names its context (``_send``); aiohttp's own default
            # was built with no CA (``_without_default_cas``), so it trusts nothing
            keepalive_timeout=self._keepalive,
            # CPython before 3.12.8 can leak the TLS transports of connections closed
            # abruptly; aiohttp's clean-up keeps a long-running daemon from growing
            enable_cleanup_closed=_NEEDS_CLEANUP_CLOSED,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
            max_line_size=MAX_HEADER_LINE,
            max_field_size=MAX_HEADER_LINE,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )
        return self._session

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
        """The response (headers read, body not) and the peer address it came from."""
        session = self._session or self._open()
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
        # A response without a body (a 304, most redirects) has handed its connection
        # back already; its protocol still knows the socket while the connection lives.
        conn = resp.connection
        proto = conn.protocol if conn is not None else getattr(resp, "_protocol", None)
        sock = getattr(proto, "transport", None)
        return resp, sock.get_extra_info("peername") if sock is not None else None

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
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
