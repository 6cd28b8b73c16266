"""Fetching feeds over HTTP: one GET, made polite and safe, turned into a value.

``Fetcher.fetch`` never raises for anything the network or the server does; it
returns one of ``Fetched``, ``NotModified`` or ``FetchFailed`` (feedwatch.model), so
the poller cannot confuse "nothing changed" with "could not tell". What it guards:

- politeness: conditional GET, ``concurrency`` requests in flight at most, and
  ``per_host`` against one host name; a request still waiting on a slow server after
  ``SLOW_AFTER`` (5 s, or a quarter of its timeout) gives its ``concurrency`` slot
  back, and its body's place while no body is arriving, so slow or trickling servers
  cannot starve healthy feeds (it keeps its ``per_host`` slot). So up to about
  ``concurrency`` x timeout / ``SLOW_AFTER`` requests are open at once when every
  server is slow (6 x ``concurrency`` at the default 30 s);
- time: ``timeout`` bounds the whole request, body included, so a server trickling
  bytes cannot hold a poll open (waiting for a free slot does not count, at the first
  request or at a redirect's; the requests of every hop do);
- memory: the body is streamed and counted, raw and after gzip/deflate, so a huge
  body or a decompression bomb is an error at about ``max_body`` bytes, not an OOM;
- redirects: followed by hand (at most ``max_redirects``, loops detected); a hop
  from a public address to a private one is refused unless ``allow_private``, both
  by the target's name and by the address the connection really reached;
- secrets: reasons and logs never hold URL user-info or header values;
- bodies in hand: through ``fetch_held`` a body, from its first byte, keeps one of
  ``max_bodies`` places (2 x ``concurrency``) until the caller has parsed and stored
  it, so when parsing is slower than fetching (a cold start of thousands of feeds)
  fetches wait instead of bodies piling up in memory. The place is taken before the
  request, after the ``per_host`` slot, so feeds waiting for a busy host never hold
  one; a request with no body arriving yet after ``SLOW_AFTER`` gives it back (more
  slow hosts than places held every feed for their whole timeout) and takes one again
  when its body starts (that wait counts against its timeout).

The wire is aiohttp (feedwatch.transport), driven directly; an injected httpx client,
or a proxy named in the environment (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY, honoured by
httpx's own transports), takes the httpx path instead. Either way the whole request
runs in the caller's task, bounded by a deadline timer (``_Deadline``), not a task
of its own.

``Fetched.url``, ``redirects`` and ``permanent_redirect`` are real URLs the caller
may fetch again, so they keep any user-info the feed's URL had; show them through
``redact_url``. ``FetchFailed.url`` is already redacted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import ipaddress
import os
import re
import socket
import ssl
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import httpx
import structlog

from feedwatch import DEFAULT_USER_AGENT, proxyenv
from feedwatch.config import ConfigError, Problem
from feedwatch.model import Fetched, FetchFailed, FetchOutcome, FetchRequest, NotModified
from feedwatch.pacing import parse_retry_after
from feedwatch.redact import redact_url
from feedwatch.transport import MAX_HEADER_LINE, AiohttpTransport

log = structlog.get_logger("feedwatch.fetch")

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PERMANENT_REDIRECT_STATUSES = frozenset({301, 308})
ACCEPT = (
    "application/atom+xml, application/rss+xml, application/rdf+xml, application/feed+json, "
    "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5"
)
ACCEPT_ENCODING = "gzip, deflate"
# A request still running after this long (or a quarter of its timeout, if less) stops
# counting against `concurrency`, and against the places for bodies until its body
# starts: a trickling or silent server costs a socket, not a slot that healthy feeds
# need. It still counts against `per_host` and its timeout.
SLOW_AFTER = 5.0
_URL_CACHE = 20_000
_KiB = 1024
_MiB = 1024 * 1024


class _Fail(Exception):
    """Internal: one hop failed for a reason a person understands."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class _Response(Protocol):
    """What ``_request`` reads of a response: an httpx.Response, or the transport's
    lighter ``Reply`` on the direct path."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def extensions(self) -> Mapping[str, Any]: ...
    @property
    def is_stream_consumed(self) -> bool: ...
    @property
    def content(self) -> bytes: ...
    def aiter_raw(self) -> AsyncIterator[bytes]: ...


class _Held:
    """A held global slot that can be given back early (by a slow request), once."""

    __slots__ = ("_give_back", "_place")

    def __init__(self, give_back: Callable[[], None], place: _BodyPlace | None) -> None:
        self._give_back: Callable[[], None] | None = give_back
        self._place = place

    def release(self) -> None:
        give_back, self._give_back = self._give_back, None
        if give_back is not None:
            give_back()

    def slow(self) -> None:
        """The request is still running after ``SLOW_AFTER``: its global slot goes back,
        and its body's place too if no body is arriving yet (it is taken again when one
        starts): a request waiting for its answer holds nothing healthy feeds need."""
        self.release()
        if self._place is not None:
            self._place.set_aside()


@dataclass
class _Hop:
    status: int
    headers: dict[str, str]
    body: bytes | None  # read for 2xx only
    peer: str | None  # the address actually connected to, when the transport says


class Fetcher:
    """Fetches feeds over one shared HTTP/1.1 connection pool; see the module docstring.

    Use as ``async with Fetcher() as f: outcome = await f.fetch(req)``. An injected
    ``client`` is used as is (and not closed); it must not follow redirects itself.
    """

    def __init__(
        self,
        *,
        concurrency: int = 16,
        per_host: int = 2,
        client: httpx.AsyncClient | None = None,
        max_redirects: int = 5,
        max_bodies: int | None = None,
        tls_on_demand: bool = False,
        use_env_proxy: bool = True,
    ) -> None:
        """``tls_on_demand``: build the TLS context (the CA bundle) at the first https
        request rather than now: for feeds that are all http://, where it is likely
        never needed; a CA bundle that cannot be read then fails that request.
        ``use_env_proxy``: False ignores the environment's proxy (the demo's server is
        on this machine, which a proxy elsewhere cannot reach)."""
        if concurrency < 1 or per_host < 1 or max_redirects < 0:
            raise ValueError("concurrency and per_host must be >= 1, max_redirects >= 0")
        self.concurrency = concurrency
        self.per_host = per_host
        self.max_redirects = max_redirects
        self._own_client = client is None
        # aiohttp does the wire work (feedwatch.transport), called directly. With a
        # proxy in the environment (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY) the client keeps
        # httpx's own transports, which honour those (and ignore them when given ours).
        # Through a proxy the connection's far end is the proxy, not the feed's server,
        # and names this machine cannot resolve may be the proxy's to resolve: the
        # redirect guard then judges names by this machine's DNS alone (see
        # _private_redirect), never the proxy's address.
        self._via_proxy = client is None and use_env_proxy and proxyenv.configured()
        # which proxy a URL goes through, to name it when a failure is the proxy's
        self._proxies: proxyenv.Routes | None = None
        if self._via_proxy:
            proxyenv.check()  # one httpx cannot use: a config error now, not every request
            self._proxies = proxyenv.Routes()
        direct = client is None and not self._via_proxy
        transport = (
            AiohttpTransport(
                verify=_default_ssl_context if tls_on_demand else _default_ssl_context()
            )
            if direct
            else None
        )
        self._direct = transport
        # One cookie jar per feed (by its configured URL): a feed's session cookies go
        # back to it alone. One jar for every feed sent one site's cookies with another
        # feed's requests, and a host that set new ones at every response grew the
        # Cookie header of every feed on it until the server refused them all.
        self._jars: dict[str, httpx.Cookies] = {}
        self._client = client or httpx.AsyncClient(
            http1=True,
            http2=False,
            follow_redirects=False,
            transport=transport,
            limits=httpx.Limits(
                # our semaphores bound the requests; a slow one past SLOW_AFTER keeps its
                # connection but not its slot, so the pool itself must not be the limit
                max_connections=None,
                max_keepalive_connections=concurrency,
                keepalive_expiry=60.0,
            ),
            timeout=httpx.Timeout(30.0),
            # with our transport (and no proxy) httpx uses no context of its own
            verify=True if direct else _default_ssl_context(),
        )
        # the client's own jar would be one for every feed: ours are per feed (_get).
        # (Its setter would copy ours into a plain Cookies: the attribute is set.)
        self._client._cookies = _NoCookies()
        self._global = asyncio.Semaphore(concurrency)
        # requests holding a global slot now: none while every fetch waits for a
        # body's place (or none is left), which is when this process has little to do
        self.requests = 0
        self._bodies = asyncio.Semaphore(max_bodies or 2 * concurrency)
        self._urls: dict[str, httpx.URL] = {}  # parsing one costs ~16 us
        # host name -> (its semaphore, how many fetches hold or wait for it)
        self._hosts: dict[str, tuple[asyncio.Semaphore, int]] = {}
        # a stop (stop_new_requests): no request starts; the fetches waiting for a slot
        self._stopped = False
        self._waiting: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    # ------------------------------------------------------------------

    async def fetch(self, req: FetchRequest) -> FetchOutcome:
        """GET ``req.url`` once (following redirects); never raises for network or server trouble."""
        return await self._fetch_safely(req, None)

    async def fetch_held(self, req: FetchRequest) -> tuple[FetchOutcome, Callable[[], None]]:
        """``fetch``, but a body (``Fetched``) keeps its place among ``max_bodies`` until
        the returned ``release`` is called (call it once the body is parsed and stored;
        calling it again does nothing). Without a body the place is already free."""
        place = _BodyPlace(self._bodies)
        try:
            outcome = await self._fetch_safely(req, place)
        except BaseException:  # cancelled
            place.release()
            raise
        if not isinstance(outcome, Fetched):
            place.release()
        return outcome, place.release

    async def _fetch_safely(self, req: FetchRequest, place: _BodyPlace | None) -> FetchOutcome:
        try:
            outcome = await self._fetch(req, place)
        except Exception as exc:  # a case not foreseen must still not stop the daemon
            log.error("fetch.unexpected", url=redact_url(req.url), error=type(exc).__name__)
            outcome = FetchFailed(
                reason=f"unexpected error ({type(exc).__name__})", url=redact_url(req.url)
            )
        if isinstance(outcome, FetchFailed):
            outcome = FetchFailed(
                reason=_scrub(outcome.reason, req),
                status=outcome.status,
                url=outcome.url,
                retry_after=outcome.retry_after,
                gone=outcome.gone,
                permanent_redirect=outcome.permanent_redirect,
                elapsed=outcome.elapsed,
            )
            log.debug(
                "fetch.failed",
                url=redact_url(req.url),
                reason=outcome.reason,
                status=outcome.status,
                elapsed=round(outcome.elapsed, 3),
            )
        else:
            log.debug(
                "fetch.done",
                url=redact_url(req.url),
                status=outcome.status,
                elapsed=round(outcome.elapsed, 3),
            )
        return outcome

    async def _fetch(self, req: FetchRequest, place: _BodyPlace | None) -> FetchOutcome:
        loop = asyncio.get_running_loop()
        first = self._urls.get(req.url)
        if first is None:
            try:
                first = httpx.URL(req.url)
            except (httpx.InvalidURL, TypeError, ValueError):
                return FetchFailed(reason="invalid URL", url=redact_url(req.url))
            if len(self._urls) < _URL_CACHE:  # the daemon polls the same URLs again
                self._urls[req.url] = first
        if first.scheme not in ("http", "https"):
            return FetchFailed(
                reason=f"unsupported URL scheme {first.scheme!r} (only http and https)",
                url=redact_url(req.url),
            )
        if not first.host:
            return FetchFailed(reason="invalid URL (no host)", url=redact_url(req.url))

        current, current_str = first, req.url
        visited: set[str] | None = None  # made at the first redirect: most fetches have none
        redirects: list[str] = []
        permanent: str | None = None
        permanent_run = True
        must_be_public = False  # followed a redirect away from a public address
        started: float | None = None
        # waiting for a slot does not count against the timeout, at any hop: the
        # deadline moves on by each redirect hop's wait (a site moved to https, several
        # feeds on it, queues every second hop for the new host's per_host slots)
        waited = 0.0
        deadline = 0.0
        timeout_reason = f"timed out after {req.timeout:g}s"

        def failed(
            reason: str,
            status: int | None = None,
            *,
            retry_after: float | None = None,
            gone: bool = False,
        ) -> FetchFailed:
            return FetchFailed(
                reason=reason,
                status=status,
                url=redact_url(current_str),
                retry_after=retry_after,
                gone=gone,
                permanent_redirect=permanent,
                elapsed=loop.time() - started - waited if started is not None else 0.0,
            )

        while True:
            trusted = _same_site(first, current)
            headers = _request_headers(req, trusted)
            queued = loop.time()
            async with self._slot(current.host, place) as slot:
                if started is None:
                    started = loop.time()
                else:
                    waited += loop.time() - queued
                deadline = started + waited + req.timeout
                remaining = deadline - loop.time()
                try:
                    if remaining <= 0:
                        raise asyncio.TimeoutError
                    # after SLOW_AFTER the request gives up its global slot and, until a
                    # body arrives, its place (keeping the per-host slot), so slow servers
                    # cannot starve the others
                    with _Deadline(
                        deadline, loop.time() + min(SLOW_AFTER, req.timeout / 4), slot.slow
                    ):
                        hop = await self._request(current, headers, req, timeout_reason, place)
                except asyncio.TimeoutError:
                    return failed(timeout_reason)
                except _Fail as f:
                    return failed(f.reason, f.status)
            status = hop.status
            if must_be_public and hop.peer is not None and is_private_address(hop.peer):
                # the redirect's host looked public when checked, but the connection went
                # to a private address (DNS changed in between, or a resolver split)
                return failed(_private_refusal(current.host, hop.peer), status)

            if status in REDIRECT_STATUSES:
                location = hop.headers.get("location", "").strip()
                if not location:
                    return failed(f"HTTP {status} {_phrase(status)} without a Location", status)
                try:
                    target = current.join(location).copy_with(fragment=None)
                    if target.port is not None and not 0 < target.port < 65536:
                        raise ValueError("port out of range")  # (httpx lets it through)
                except (httpx.InvalidURL, TypeError, ValueError):
                    return failed("redirect to an invalid URL", status)
                if target.scheme not in ("http", "https") or not target.host:
                    return failed(f"redirect to an unsupported URL ({target.scheme}:)", status)
                if not target.userinfo and first.userinfo and _same_site(first, target):
                    # http -> https on the same host keeps the feed's basic auth
                    target = target.copy_with(userinfo=first.userinfo)
                if visited is None:
                    visited = {str(first.copy_with(fragment=None))}
                # back to a URL already asked is a loop, unless this answer set a
                # cookie: a cookie wall sends the feed's URL back with its consent
                if str(target) in visited and "set-cookie" not in hop.headers:
                    return failed("redirect loop", status)
                if len(redirects) >= self.max_redirects:
                    return failed(f"too many redirects (more than {self.max_redirects})", status)
                if not req.allow_private:
                    try:
                        with _Deadline(deadline):
                            refused = await _private_redirect(
                                current, hop.peer, target, via_proxy=self._via_proxy
                            )
                    except asyncio.TimeoutError:
                        return failed(timeout_reason)
                    if refused:
                        return failed(refused, status)
                    if hop.peer is not None and not is_private_address(hop.peer):
                        must_be_public = True
                visited.add(str(target))
                current, current_str = target, str(target)
                redirects.append(current_str)
                if permanent_run and status in PERMANENT_REDIRECT_STATUSES:
                    permanent = current_str
                else:
                    permanent_run = False
                continue

            elapsed = loop.time() - started - waited
            if status == 304:
                if "if-none-match" not in headers and "if-modified-since" not in headers:
                    # (RFC 9110 15.4.5: only a conditional request is answered 304) taken
                    # as "not modified", it kept the feed "ok" for ever with nothing read
                    return failed("HTTP 304 to a request without validators: a broken server", 304)
                return NotModified(
                    status=304,
                    url=current_str,
                    etag=_validator(hop.headers.get("etag")) or req.etag,
                    last_modified=_validator(hop.headers.get("last-modified")) or req.last_modified,
                    permanent_redirect=permanent,
                    elapsed=elapsed,
                )
            if 200 <= status < 300:
                if not hop.body:
                    return failed("empty body", status)
                return Fetched(
                    status=status,
                    url=current_str,
                    body=hop.body,
                    headers=hop.headers,
                    etag=_validator(hop.headers.get("etag")),
                    last_modified=_validator(hop.headers.get("last-modified")),
                    permanent_redirect=permanent,
                    redirects=tuple(redirects),
                    elapsed=elapsed,
                )
            reason = f"HTTP {status} {_phrase(status)}".rstrip()
            if status == 407 and self._proxies is not None:
                # the proxy's own answer to a forwarded request (an http:// feed)
                reason = f"{self._proxies.label(current) or 'proxy'}: {reason}"
            if status == 410:
                return failed(reason, status, gone=True)
            if status in (429, 503):
                retry_after = parse_retry_after(
                    hop.headers.get("retry-after"), datetime.now(timezone.utc)
                )
                if retry_after is not None:
                    reason += f" (retry after {retry_after:g}s)"
                return failed(reason, status, retry_after=retry_after)
            return failed(reason, status)

    async def _request(
        self,
        url: httpx.URL,
        headers: dict[str, tuple[str, str]],
        req: FetchRequest,
        timeout_reason: str,
        place: _BodyPlace | None = None,
    ) -> _Hop:
        """One GET; reads the body of a 2xx only, in its ``place`` (taken again if a slow
        request set it aside: waiting for it counts against the timeout). Raises _Fail."""
        body_started = False
        status: int | None = None
        try:
            async with self._get(url, headers, req.timeout, req.url) as resp:
                status = resp.status_code
                resp_headers = {k.lower(): _header_text(v) for k, v in resp.headers.items()}
                peer = None if self._via_proxy else _peer_address(resp)
                if not 200 <= status < 300:
                    return _Hop(status, resp_headers, None, peer)
                length = resp_headers.get("content-length", "").strip()
                if length.isascii() and length.isdigit() and int(length) > req.max_body:
                    raise _Fail(
                        f"body larger than the {_size(req.max_body)} max_body limit", status
                    )
                decoder = _Decoder.for_encoding(resp_headers.get("content-encoding", ""), status)
                if place is not None:
                    await place.take_for_body()
                body_started = True
                body = await _read_body(resp, req.max_body, decoder, status)
                return _Hop(status, resp_headers, body, peer)
        except httpx.TimeoutException:
            raise _Fail(timeout_reason) from None
        except (httpx.LocalProtocolError, UnicodeEncodeError):  # before TransportError: it is one
            raise _Fail("invalid request (check the feed's headers)") from None
        except httpx.TransportError as exc:
            if body_started:
                raise _Fail("connection closed mid-body", status) from None
            proxy = self._proxies.label(url) if self._proxies is not None else None
            if proxy is not None:
                reason = _proxy_reason(exc)
                if reason is not None:
                    raise _Fail(f"{proxy}: {reason}") from None
            raise _Fail(transport_reason(exc, url.host)) from None
        except httpx.InvalidURL:
            raise _Fail("invalid URL") from None
        except ConfigError as exc:  # the CA bundle, loaded on demand (tls_on_demand)
            raise _Fail(str(exc)) from None

    @asynccontextmanager
    async def _get(
        self,
        url: httpx.URL,
        headers: dict[str, tuple[str, str]],
        timeout: float,
        feed: str = "",
    ) -> AsyncIterator[_Response]:
        """A streamed GET response, closed on exit.

        Through the client when one was injected or a proxy is configured; else
        straight to aiohttp, doing what the client would (basic auth from the URL's
        user-info, cookies, refusing headers that are not ASCII): httpx's per-request
        machinery (Request and Response objects, its auth and redirect layers) cost as
        much CPU as the request itself.
        """
        jar = self._jars.get(feed)  # (made at the feed's first cookie: most have none)
        if self._direct is None:
            request = self._client.build_request(
                "GET", url, headers=list(headers.values()), timeout=timeout
            )
            if jar:
                jar.set_cookie_header(request)
            resp = await self._client.send(request, stream=True, follow_redirects=False)
            try:
                if "set-cookie" in resp.headers:
                    _keep_cookies(self._jar(feed), resp)
                yield resp
            finally:
                await resp.aclose()
            return
        if url.userinfo:
            headers["authorization"] = ("Authorization", _basic_auth(url.username, url.password))
        pairs = list(headers.values())
        if not all(name.isascii() and value.isascii() for name, value in pairs):
            raise httpx.LocalProtocolError("a header name or value is not ASCII")
        request_with_cookies: httpx.Request | None = None
        if jar:
            request_with_cookies = httpx.Request("GET", url, headers=pairs)
            jar.set_cookie_header(request_with_cookies)
            pairs = request_with_cookies.headers.multi_items()
        async with self._direct.open(url, pairs, timeout) as reply:
            if "set-cookie" in reply.headers:
                _keep_cookies(
                    self._jar(feed),
                    reply.to_httpx(
                        request_with_cookies or httpx.Request("GET", url, headers=pairs)
                    ),
                )
            yield reply

    def _jar(self, feed: str) -> httpx.Cookies:
        jar = self._jars.get(feed)
        if jar is None:
            jar = self._jars[feed] = httpx.Cookies()
        return jar

    def stop_new_requests(self) -> None:
        """The daemon stops: every fetch still waiting for a slot is cancelled now, and
        none starts a request from here on (its poll is abandoned, having committed
        nothing); the requests already sent go on."""
        self._stopped = True
        for task in list(self._waiting):
            task.cancel()

    def _give_back_slot(self) -> None:
        self.requests -= 1
        self._global.release()

    @asynccontextmanager
    async def _slot(self, host: str, place: _BodyPlace | None) -> AsyncIterator[_Held]:
        """Wait for a per-host slot, then the body ``place`` if not taken yet (a waiter for
        a busy host never holds one), then a global slot (one busy host cannot hog the pool)."""
        if self._stopped:
            raise asyncio.CancelledError("feedwatch is stopping: no new request")
        key = host.lower()
        sem, users = self._hosts.get(key, (None, 0))
        if sem is None:
            sem = asyncio.Semaphore(self.per_host)
        self._hosts[key] = (sem, users + 1)
        task = asyncio.current_task()
        if task is not None:
            self._waiting.add(task)
        try:
            async with sem:
                if place is not None:
                    await place.take()  # kept past this slot, until the body is done with
                await self._global.acquire()
                self._waiting.discard(task)
                self.requests += 1
                held = _Held(self._give_back_slot, place)
                try:
                    yield held
                finally:
                    held.release()
        finally:
            self._waiting.discard(task)
            sem, users = self._hosts[key]
            if users <= 1:
                del self._hosts[key]
            else:
                self._hosts[key] = (sem, users - 1)


class _BodyPlace:
    """One of ``max_bodies`` places for a body in hand (being read, or read and not yet
    done with): taken at a fetch's slot, kept by its body. A slow request sets it aside
    while no body is arriving (``set_aside``) and takes it again for one."""

    __slots__ = ("_body", "_sem", "_taken")

    def __init__(self, sem: asyncio.Semaphore) -> None:
        self._sem = sem
        self._taken = False
        self._body = False  # a body is arriving (or arrived) in it

    async def take(self) -> None:
        if not self._taken:
            await self._sem.acquire()
            self._taken = True

    async def take_for_body(self) -> None:
        await self.take()
        self._body = True

    def set_aside(self) -> None:
        if not self._body:
            self.release()

    def release(self) -> None:
        self._body = False
        if self._taken:
            self._taken = False
            self._sem.release()


class _Deadline:
    """Cancels the running task at ``deadline`` (loop time) and turns that into
    ``asyncio.TimeoutError``; calls ``on_slow`` at ``slow_at`` if still running then.

    What ``asyncio.timeout`` does on 3.11, for 3.10 too, without the extra task and
    the two extra wake-ups per request ``wait_for`` costs. Use it in the task that
    awaits: it cancels ``asyncio.current_task()``.
    """

    def __init__(
        self,
        deadline: float,
        slow_at: float | None = None,
        on_slow: Callable[[], None] | None = None,
    ) -> None:
        self._deadline = deadline
        self._slow_at = slow_at
        self._on_slow = on_slow
        self._task: asyncio.Task[Any] | None = None
        self._handles: list[asyncio.TimerHandle] = []
        self._expired = False

    def __enter__(self) -> _Deadline:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        if self._task is None:
            raise RuntimeError("_Deadline must be used inside a task")
        self._handles.append(loop.call_at(self._deadline, self._expire))
        if self._on_slow is not None and self._slow_at is not None:
            if self._slow_at < self._deadline:
                self._handles.append(loop.call_at(self._slow_at, self._on_slow))
        return self

    def _expire(self) -> None:
        self._expired = True
        if self._task is not None:
            self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for handle in self._handles:
            handle.cancel()
        if self._expired and exc_type is asyncio.CancelledError:
            # 3.11+: a cancel from elsewhere that came at the same time stays a cancel
            uncancel = getattr(self._task, "uncancel", None)
            if uncancel is None or uncancel() == 0:
                raise asyncio.TimeoutError from exc


# ----------------------------------------------------------------------
# Helpers (pure unless they say otherwise)
# ----------------------------------------------------------------------


_ssl_context: ssl.SSLContext | None = None
_ssl_loading: threading.Thread | None = None


def preload_ssl_context() -> Callable[[], None]:
    """Start building the TLS context in a thread; returns the wait for it.

    Loading the CA bundle is ~20 ms of a start, in OpenSSL with the GIL released: begun
    before a ``check`` reads its state, it is ready by the time the first request needs
    it. The wait must come before any fork (a fork copies only the calling thread) and
    before the interpreter exits (a thread still inside OpenSSL then can crash it).
    A failure is left for ``_default_ssl_context`` to raise, as without the thread.
    """
    global _ssl_loading
    if _ssl_context is not None or _ssl_loading is not None:
        return _wait_ssl_context

    def load() -> None:
        global _ssl_context
        with contextlib.suppress(Exception):
            _ssl_context = _create_ssl_context()

    _ssl_loading = threading.Thread(target=load, name="feedwatch-tls", daemon=True)
    _ssl_loading.start()
    return _wait_ssl_context


def _wait_ssl_context() -> None:
    global _ssl_loading
    if _ssl_loading is not None:
        _ssl_loading.join()
        _ssl_loading = None


def _default_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per process: loading the CA bundle costs ~0.1 s a client.

    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` replace the bundled CAs (as httpx does); one
    that cannot be read is a ``ConfigError`` saying so, not a traceback.
    """
    global _ssl_context
    _wait_ssl_context()
    if _ssl_context is None:
        try:
            _ssl_context = _create_ssl_context()
        except (OSError, ssl.SSLError) as exc:
            raise _ca_error(exc) from None
    return _ssl_context


def _create_ssl_context() -> ssl.SSLContext:
    """httpx's verifying context, and an ``SSL_CERT_DIR`` that is no directory an error
    (OpenSSL reads one only at a handshake: every request would fail instead)."""
    cert_dir = os.environ.get("SSL_CERT_DIR")
    if cert_dir and not os.environ.get("SSL_CERT_FILE") and not os.path.isdir(cert_dir):
        raise FileNotFoundError(cert_dir)
    return httpx.create_ssl_context()


def environment_problems(*, tls: bool = True) -> list[str]:
    """What in the environment would fail every request, each naming its variable: a
    proxy httpx cannot use, or (with ``tls``) an ``SSL_CERT_FILE``/``SSL_CERT_DIR``
    that cannot be read (only these are looked at: the bundled CAs are not).

    For a command to see before it writes anything (an exit 2 creates no state file);
    with ``tls`` and such a variable set, it loads the TLS context now."""
    problems = []
    proxy = proxyenv.problem()
    if proxy is not None:
        problems.append(proxy)
    if tls and (os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR")):
        try:
            _default_ssl_context()
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def check_environment(*, tls: bool = True) -> None:
    """Raise ConfigError for ``environment_problems``, the first of them."""
    problems = environment_problems(tls=tls)
    if problems:
        raise ConfigError([Problem("", None, "", problems[0])])


def _ca_error(exc: BaseException) -> ConfigError:
    name = "SSL_CERT_FILE" if os.environ.get("SSL_CERT_FILE") else "SSL_CERT_DIR"
    value = os.environ.get(name, "")
    if isinstance(exc, ssl.SSLError):  # an OSError too: test it first
        why = "holds no CA certificate in PEM form"
    elif isinstance(exc, FileNotFoundError):
        why = "no such file" if name == "SSL_CERT_FILE" else "no such directory"
    elif isinstance(exc, OSError):
        why = (exc.strerror or "cannot be read").lower()
    else:
        why = "cannot be read"
    return ConfigError(
        [
            Problem(
                "",
                None,
                name,
                f"{value}: {why}; point it at a PEM file of CA certificates or unset it"
                if name == "SSL_CERT_FILE"
                else f"{value}: {why}; point it at a directory of hashed PEM CA certificates"
                " (c_rehash) or unset it",
            )
        ]
    )


def _basic_auth(username: str, password: str) -> str:
    """The Authorization value httpx's client makes from a URL's user-info."""
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def is_private_address(address: str) -> bool:
    """True for private, loopback, link-local, multicast, reserved or unspecified addresses."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]").split("%", 1)[0]))
    except ValueError:
        return None


async def _resolve(host: str, port: int | None) -> list[str]:
    """Addresses for ``host`` (an IP literal needs no lookup). Raises OSError."""
    literal = _ip_literal(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def _private_redirect(
    source: httpx.URL, peer: str | None, target: httpx.URL, *, via_proxy: bool = False
) -> str | None:
    """The refusal reason when a hop goes from a public address to a private one, else None.

    ``via_proxy``: a target name this machine cannot resolve is the proxy's to resolve
    (a network whose only way out is the proxy often has no public DNS): not refused.
    A name that resolves here to a private address, or a private IP literal, still is."""
    try:
        target_addrs = await _resolve(target.host, target.port)
    except OSError:
        if via_proxy:
            return None
        return f"DNS lookup failed for host {target.host}"
    private = [a for a in target_addrs if is_private_address(a)]
    if not private:
        return None
    if peer is not None:
        source_private = is_private_address(peer)
    else:
        try:
            source_private = any(is_private_address(a) for a in await _resolve(source.host, None))
        except OSError:
            source_private = False  # unknown: assume public, the safe side
    if source_private:
        return None
    return _private_refusal(target.host, private[0])


def _private_refusal(host: str, address: str) -> str:
    shown = address if _ip_literal(host) else f"{host} = {address}"
    return (
        f"redirect to a private address ({shown}) refused; set allow_private = true for this feed"
    )


def _peer_address(resp: _Response) -> str | None:
    stream = resp.extensions.get("network_stream")
    if stream is None:
        return None
    try:
        addr = stream.get_extra_info("server_addr")
    except Exception:  # transports differ; the lookup fallback covers it
        return None
    if isinstance(addr, tuple) and addr:
        return str(addr[0])
    return None


MAX_COOKIES = 50  # a feed's jar (RFC 6265 suggests at least 50 a domain)
MAX_COOKIE_BYTES = 4096  # their names and values together


def _keep_cookies(jar: httpx.Cookies, response: httpx.Response) -> None:
    """The response's cookies into the feed's jar; a jar that outgrows the bounds (a
    server setting new ones at every response) is emptied, not sent ever larger."""
    jar.extract_cookies(response)
    cookies = list(jar.jar)
    size = sum(len(c.name) + len(c.value or "") for c in cookies)
    if len(cookies) > MAX_COOKIES or size > MAX_COOKIE_BYTES:
        jar.clear()
        log.info("fetch.cookies_dropped", cookies=len(cookies), bytes=size)


class _NoCookies(httpx.Cookies):
    """The client's jar, kept empty: cookies are per feed (``Fetcher._jars``)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set_cookie_header(self, request: httpx.Request) -> None:
        return None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _same_site(first: httpx.URL, url: httpx.URL) -> bool:
    """Whether the feed's own headers and credentials may go to ``url``: the same origin
    (host and port: another port is another service), or the same host moved from
    http to https on their default ports, as httpx itself allows; never a downgrade."""
    if url.host.lower() != first.host.lower():
        return False
    a_port = first.port or _DEFAULT_PORTS.get(first.scheme)
    b_port = url.port or _DEFAULT_PORTS.get(url.scheme)
    if first.scheme == url.scheme:
        return a_port == b_port
    return (first.scheme, url.scheme, a_port, b_port) == ("http", "https", 80, 443)


_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")


def _validator(value: str | None) -> str | None:
    """An ETag or Last-Modified fit to send back: printable ASCII. Another (a server's
    raw UTF-8 'ETag: "café"') could never be sent, and every later request would fail
    before it left; such a feed is fetched without it."""
    return value if value and _PRINTABLE_ASCII.fullmatch(value) else None


def _header_text(value: str) -> str:
    """A response header's value as text: bytes that are not UTF-8 (the transport keeps
    them as surrogates, which nothing can store or print) become U+FFFD."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _request_headers(req: FetchRequest, trusted: bool) -> dict[str, tuple[str, str]]:
    """The request's headers by lower-cased name (a later one replaces an earlier one)."""
    headers = {
        "user-agent": ("User-Agent", req.user_agent or DEFAULT_USER_AGENT),
        "accept": ("Accept", ACCEPT),
        "accept-encoding": ("Accept-Encoding", ACCEPT_ENCODING),
    }
    if etag := _validator(req.etag):
        headers["if-none-match"] = ("If-None-Match", etag)
    if last_modified := _validator(req.last_modified):
        headers["if-modified-since"] = ("If-Modified-Since", last_modified)
    if trusted:
        for name, value in req.headers:
            key = name.lower()
            if key != "accept-encoding":  # we only decode gzip and deflate
                headers[key] = (name, value)
    return headers


_PLAIN_LEAD = b" \t\r\n\x00\xef\xbb\xbf\xff\xfe"  # white space and byte-order marks


class _Decoder:
    """Streaming gzip/deflate decoder that stops at ``limit`` decompressed bytes.

    A body that is plainly not encoded (its first bytes are ``<`` or ``{``, not a gzip
    or zlib header) passes through whatever ``Content-Encoding`` claims: servers that
    label a plain feed ``gzip``, or send ``Content-Encoding: UTF-8``, are common enough,
    and feedparser's own fetcher (so rss2email) reads them. A body that is encoded in
    a way we cannot decode is still an error.

    A body sent without ``Content-Encoding`` that starts with gzip's magic bytes
    (``1f 8b``, which no feed starts with: a ``.xml.gz`` served as it is) is inflated
    as a labelled one is, within the same limit (``unlabelled``); any other passes
    through. It failed as "not well-formed XML"."""

    def __init__(self, encoding: str, header: str = "", unlabelled: bool = False) -> None:
        self.encoding = encoding  # gzip, x-gzip or deflate; "" for one we cannot decode
        self._header = header
        self._unlabelled = unlabelled  # no Content-Encoding: gzip if its magic bytes say so
        self._z: zlib._Decompress | None = None
        self._pending = b""
        self._plain = False  # the body is not encoded after all

    @classmethod
    def for_encoding(cls, header: str, status: int) -> _Decoder:
        codings = [c.strip().lower() for c in header.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if not codings:
            return cls("gzip", unlabelled=True)
        if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
            return cls(codings[0])
        return cls("", header)  # accepted only if the body turns out not to be encoded

    def _start(self, out: bytearray, status: int, final: bool) -> bytes | None:
        """Decide from the first bytes how to read the body; the bytes to decompress,
        or None (passed through, or too few bytes yet to tell)."""
        if self._unlabelled:
            if not final and len(self._pending) < 2:
                return None
            data, self._pending = self._pending, b""
            if not data.startswith(b"\x1f\x8b"):
                self._plain = True
                out += data  # within max_body: _read_body bounds the bytes as they come
                return None
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            return data
        head = self._pending.lstrip(_PLAIN_LEAD)
        if not final and (not head or (self.encoding == "deflate" and len(self._pending) < 2)):
            return None
        data, self._pending = self._pending, b""
        plain = head[:1] in (b"<", b"{")
        if not self.encoding or (plain and not self._header_ok(data)):
            if not plain and data:
                raise _Fail(f"unsupported Content-Encoding {self._header.strip()[:40]!r}", status)
            self._plain = True
            out += data  # within max_body: _read_body bounds the bytes as they come
            return None
        self._z = zlib.decompressobj(self._wbits(data))
        return data

    def _header_ok(self, data: bytes) -> bool:
        """Whether ``data`` starts as this encoding does (raw deflate has no header)."""
        if self.encoding != "deflate":
            return data[:2] == b"\x1f\x8b"
        return self._wbits(data) == zlib.MAX_WBITS

    def feed(self, data: bytes, out: bytearray, limit: int, status: int) -> None:
        if self._plain:
            out += data
            return
        if self._z is None:
            self._pending += data
            started = self._start(out, status, final=False)
            if started is None:
                return
            data = started
        assert self._z is not None
        try:
            while True:
                if self._z.eof:
                    # gzip may hold several members, one after another (gzip -c a b):
                    # the next one starts where this one ended; anything else is junk
                    rest = self._z.unused_data + data
                    if self.encoding == "deflate" or rest[:2] != b"\x1f\x8b":
                        break
                    self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    data = rest
                if not data:
                    break
                out += self._z.decompress(data, limit - len(out) + 1)
                if len(out) > limit:
                    raise _Fail(
                        f"decompressed body larger than the {_size(limit)} max_body limit", status
                    )
                data = self._z.unconsumed_tail
        except zlib.error:
            raise _Fail(self._broken("corrupt"), status) from None

    def finish(self, out: bytearray, limit: int, status: int) -> None:
        if self._plain:
            return
        if self._z is None:
            if not self._pending:
                return
            data = self._start(out, status, final=True)
            if data is None:
                return
            self.feed(data, out, limit, status)
        assert self._z is not None
        try:
            out += self._z.flush()
        except zlib.error:
            raise _Fail(self._broken("corrupt"), status) from None
        if len(out) > limit:
            raise _Fail(f"decompressed body larger than the {_size(limit)} max_body limit", status)
        if not self._z.eof:
            raise _Fail(self._broken("truncated"), status)

    def _broken(self, how: str) -> str:
        why = f"could not decompress the body ({self.encoding} data is {how}"
        return why + ("; it was sent without Content-Encoding: gzip)" if self._unlabelled else ")")

    def _wbits(self, head: bytes) -> int:
        if self.encoding != "deflate":
            return 16 + zlib.MAX_WBITS
        # "deflate" is meant to be zlib-wrapped, but some servers send raw deflate.
        if len(head) >= 2 and head[0] & 0x0F == 8 and ((head[0] << 8) | head[1]) % 31 == 0:
            return zlib.MAX_WBITS
        return -zlib.MAX_WBITS


async def _read_body(resp: _Response, limit: int, decoder: _Decoder | None, status: int) -> bytes:
    if resp.is_stream_consumed:
        # Only a response built in memory (an injected MockTransport) arrives read,
        # and already decoded by httpx: nothing left to stream or decompress.
        if len(resp.content) > limit:
            raise _Fail(f"body larger than the {_size(limit)} max_body limit", status)
        return resp.content
    raw = 0
    out = bytearray()
    async for chunk in resp.aiter_raw():
        raw += len(chunk)
        if raw > limit:
            raise _Fail(f"body larger than the {_size(limit)} max_body limit", status)
        if decoder is None:
            out += chunk
        else:
            decoder.feed(chunk, out, limit, status)
    if decoder is not None:
        decoder.finish(out, limit, status)
    return bytes(out)


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                stack.append(nxt)
        stack.extend(getattr(e, "exceptions", ()) or ())


_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ETIMEDOUT: "connection timed out",
    errno.EPIPE: "connection closed",
}


def transport_reason(exc: BaseException, host: str) -> str:
    """A short, secret-free sentence for a failure before the response headers arrived
    (a feed's, and a webhook sink's: the same words for the same failure; ``host`` is
    named only by a DNS failure)."""
    chain = list(_exception_chain(exc))
    for e in chain:
        if isinstance(e, socket.gaierror):
            return f"DNS lookup failed for host {host}"
    tls = [e for e in chain if isinstance(e, ssl.SSLError)]
    if tls:
        # aiohttp's wrapper is an SSLError too, without the details of the one it wraps
        details = (getattr(e, "verify_message", None) or getattr(e, "reason", None) for e in tls)
        detail = next((d for d in details if d), "handshake")
        return f"TLS error: {str(detail).replace('_', ' ').lower()}"
    for e in chain:
        if isinstance(e, OSError) and e.errno in _ERRNO_REASONS:
            return _ERRNO_REASONS[e.errno]
    text = " ".join(str(e) for e in chain).lower()
    if "refused" in text:
        return "connection refused"
    if isinstance(exc, httpx.ProxyError):
        return "proxy error"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return "unsupported URL scheme"
    if isinstance(exc, httpx.ConnectError):
        return "could not connect"
    if isinstance(exc, httpx.RemoteProtocolError):
        if "without sending" in text or "disconnected" in text:
            return "server closed the connection without a response"
        if "duplicate content-length" in text:
            # (aiohttp's parser, llhttp, refuses it even when both say the same: RFC
            # 9110 8.6 allows taking them as one, and httpx does; docs/troubleshooting.md)
            return "invalid HTTP response (Content-Length sent twice)"
        if "too long" in text or "got more than" in text:
            return f"invalid HTTP response (headers over the {_size(MAX_HEADER_LINE)} limit)"
        return "invalid HTTP response"
    return "connection error"


_CONNECT_ANSWER = re.compile(r"(\d{3})\b\s*(.*)")


def _proxy_reason(exc: httpx.TransportError) -> str | None:
    """What went wrong with the proxy itself, when it did: it could not be reached (the
    connection goes to the proxy, and the feed's name is the proxy's to look up), or
    it refused the tunnel to an https:// feed (httpcore's ``ProxyError("407 Proxy
    Authentication Required")``); None for the rest (a TLS error is the feed's, in
    the tunnel)."""
    if isinstance(exc, httpx.ProxyError):
        answer = _CONNECT_ANSWER.fullmatch(str(exc).strip())
        if answer is not None:
            return f"HTTP {answer[1]} {answer[2] or _phrase(int(answer[1]))}".rstrip()
    elif not isinstance(exc, httpx.ConnectError):
        return None
    chain = list(_exception_chain(exc))
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return None
    for e in chain:
        if isinstance(e, socket.gaierror):
            return "DNS lookup failed"
    return transport_reason(exc, "")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _size(n: int) -> str:
    if n >= _MiB and n % _MiB == 0:
        return f"{n // _MiB} MiB"
    if n >= _KiB and n % _KiB == 0:
        return f"{n // _KiB} KiB"
    return f"{n} bytes"


def _scrub(text: str, req: FetchRequest) -> str:
    """Belt and braces: no user-info or header value of the request survives in ``text``."""
    secrets: list[str] = []
    try:
        parts = urlsplit(req.url)
        for raw in (parts.password, parts.username):
            if raw:
                secrets += [raw, unquote(raw)]
        netloc = parts.netloc
        if "@" in netloc:
            secrets.append(netloc.rsplit("@", 1)[0])
    except ValueError:
        pass
    secrets += [value for _, value in req.headers]
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 4 and secret in text:
            text = text.replace(secret, "***")
    return text
