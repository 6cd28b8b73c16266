"""The webhook sink: one POST per alert (or per digest), classified per SPEC section 6.

The URL is a secret (it usually embeds a token), so no error or log line ever
names it, nor a header value: errors name the sink and the HTTP status.
Redirects are never followed: a webhook that moved is a config problem, and
following it would re-send the body (and its auth headers) somewhere else.

A 413 (Payload Too Large: a proxy's body limit, a service's) is a refusal for size,
told apart from any other 4xx: the sink remembers the size refused (``LearntSize``, as
the email sink does) and cuts later digests to what the receiver took before sending
them; a message of one alert so refused goes again at once with its texts cut
(``formats.cut_payload``) until it fits, and later ones are cut before they are sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import httpx
import structlog

from feedwatch import __version__, proxyenv
from feedwatch.config import HEADER_NAME, HEADER_VALUE_BAD
from feedwatch.fetch import transport_reason
from feedwatch.model import Secret, SinkConfig
from feedwatch.pacing import parse_retry_after
from feedwatch.redact import url_secrets
from feedwatch.sinks import formats
from feedwatch.sinks.base import MAX_CUTS, LearntSize, SendResult, cut_to_fit, fit_parts
from feedwatch.store.base import Delivery

log = structlog.get_logger("feedwatch.sinks.webhook")

FORMATS = ("json", "slack", "discord", "ntfy", "teams")
USER_AGENT = f"feedwatch/{__version__}"
MAX_RESPONSE = 64 * 1024  # we read at most this much of an answer (for the error message)
_RESERVED = frozenset({"content-length", "host", "transfer-encoding"})
# A `json` digest body is at most this many bytes (several digests when the held alerts
# need more): under 1 MiB, nginx's default client_max_body_size. The other formats cut
# a long digest to their service's limits ("…and N more alerts").
MAX_JSON_DIGEST = 1_000_000


class _BadHeader(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = formats.oneline(name)[:60]


def _reveal(value: object) -> str:
    return value.reveal() if isinstance(value, Secret) else str(value)


def render(
    fmt: str, payloads: Sequence[formats.Payload], *, digest: bool = False
) -> tuple[bytes, str, dict[str, str]]:
    """(body, content type, extra headers) for a format: pure, shared with `test-sink` output.

    ``digest``: a digest sink's message, a digest even when it holds one alert (a
    receiver of a digest sink reads one shape); several payloads are always one."""
    digest = digest or len(payloads) != 1
    if fmt == "json":
        body = formats.digest_json(payloads) if digest else formats.payload_json(payloads[0])
        return body, "application/json", {}
    if fmt == "ntfy":
        body, headers = formats.ntfy(payloads, digest=digest)
        return body, "text/plain; charset=utf-8", headers
    renderer = {"slack": formats.slack, "discord": formats.discord, "teams": formats.teams}[fmt]
    message = renderer(payloads, digest=digest)
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")
    return body, "application/json", {}


def sign(secret: str, body: bytes) -> str:
    """The ``X-Feedwatch-Signature-256`` value: HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookSink:
    type = "webhook"
    supports_digest = True

    def __init__(self, cfg: SinkConfig, *, client: httpx.AsyncClient | None = None) -> None:
        opts = cfg.options
        self.name = cfg.name
        self._url = opts["url"]
        self._format = str(opts.get("format", "json"))
        if self._format not in FORMATS:
            raise ValueError(
                f"sink {cfg.name}: unknown webhook format {self._format!r} "
                f"(one of: {', '.join(FORMATS)})"
            )
        self._headers: tuple[tuple[str, Any], ...] = tuple(opts.get("headers", ()))
        secret = opts.get("secret")
        self._secret = _reveal(secret) if secret is not None else None
        self._timeout = float(opts.get("timeout", 30.0))
        # the dispatcher sends such a sink's queue only as digests (`test-sink` builds
        # the sink with digest 0: its sample is one alert)
        self._digest = cfg.digest > 0
        self._client = client
        self._own_client = client is None
        # what the receiver's 413s taught of its body limit, for the life of this sink
        self._sizes = LearntSize()
        if client is None:
            proxyenv.check()  # httpx's client takes the environment's proxy

    def __repr__(self) -> str:
        return f"WebhookSink(name={self.name!r}, format={self._format!r})"

    def _scrub(self, text: str) -> str:
        """Remove the URL and every header value from a text before it goes to a log."""
        values = [_reveal(v) for _, v in self._headers]
        # and a header value's last word: "Bearer <token>" echoed as "<token>" (not
        # the scheme's word, which would blank out "Bearer" in every answer)
        secrets = (
            url_secrets(_reveal(self._url)) + values + [v.split()[-1] for v in values if v.split()]
        )
        if self._secret:
            secrets.append(self._secret)
        secrets.append(self._host())
        for s in sorted(secrets, key=len, reverse=True):
            if s and len(s) > 3 and s != "/":
                text = text.replace(s, "***")
        return text

    def _host(self) -> str:
        try:
            return httpx.URL(_reveal(self._url)).host
        except Exception:
            return ""

    def _err(self, what: str) -> str:
        return f"sink {self.name}: {what}"

    def build_request(
        self, deliveries: Sequence[Delivery], payloads: Sequence[formats.Payload] | None = None
    ) -> tuple[bytes, httpx.Headers]:
        """The body and headers of a POST of ``deliveries``, or of ``payloads`` in their
        stead (the same alerts cut to fit: the same ids)."""
        if payloads is None:
            payloads = [d.payload for d in deliveries]
        digest = self._digest or len(deliveries) > 1
        body, content_type, extra = render(self._format, payloads, digest=digest)
        headers = httpx.Headers({"User-Agent": USER_AGENT, "Content-Type": content_type})
        for name, value in extra.items():
            headers[name] = value
        for name, value in self._headers:
            if name.lower() in _RESERVED or name.lower() == "content-type":
                continue
            text = _reveal(value)
            if not HEADER_NAME.fullmatch(name) or HEADER_VALUE_BAD.search(text):
                raise _BadHeader(name)
            headers[name] = text
        if not digest:
            headers["X-Feedwatch-Delivery"] = deliveries[0].alert_id
        else:
            # A digest's id names exactly its set of alerts: a retried digest that gained
            # alerts is a different delivery, so a receiver dropping repeats loses nothing.
            ids = "\n".join(sorted(d.alert_id for d in deliveries))
            headers["X-Feedwatch-Delivery"] = (
                "digest-" + hashlib.sha256(ids.encode()).hexdigest()[:32]
            )
            headers["X-Feedwatch-Digest"] = str(len(deliveries))
        if self._secret:
            headers["X-Feedwatch-Signature-256"] = sign(self._secret, body)
        return body, headers

    async def digest_parts(self, deliveries: Sequence[Delivery]) -> list[list[Delivery]]:
        """The held batch as digests (oldest first) whose bodies each fit: a `json` one at
        most MAX_JSON_DIGEST bytes, and any format's no larger than what the receiver took,
        once it refused one for its size (413: ``LearntSize.limit``). An alert too big
        alone goes alone, whole (``send`` cuts its texts to fit)."""
        items = list(deliveries)
        if len(items) <= 1:
            return [items]
        limit = self._sizes.limit()
        if self._format == "json":
            limit = MAX_JSON_DIGEST if limit is None else min(limit, MAX_JSON_DIGEST)
            sizes = [len(formats.payload_json(d.payload)) + 1 for d in items]  # and a comma
            if sum(sizes) + 64 <= limit:
                return [items]
            return fit_parts(
                items,
                lambda run: len(formats.digest_json([d.payload for d in run])),
                limit,
                sizes,
            )
        if limit is None:
            return [items]  # the format keeps to its service's limits ("…and N more")

        def size(run: Sequence[Delivery]) -> int:
            return len(render(self._format, [d.payload for d in run], digest=True)[0])

        if size(items) <= limit:
            return [items]
        guess = [len(formats.payload_json(d.payload)) for d in items]
        return fit_parts(items, size, limit, guess)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, timeout=self._timeout)
        return self._client

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        if not deliveries:
            return SendResult.success()
        try:
            body, headers = self.build_request(deliveries)
            limit = self._sizes.limit()
            if len(deliveries) == 1 and limit is not None and len(body) > limit:
                # bigger than the receiver took since it refused one for its size: cut
                # before sending, not refused first
                cut = self._smaller(deliveries[0], len(body), limit, "size")
                if cut is not None:
                    body, headers = cut
        except _BadHeader as exc:
            return SendResult.dead(
                self._err(
                    f"header {exc.name!r} cannot be sent: its name or value has bad characters"
                )
            )
        except (TypeError, ValueError) as exc:  # a payload that cannot be rendered
            return SendResult.dead(self._err(f"cannot render the alert: {type(exc).__name__}"))
        for _ in range(MAX_CUTS):
            result = await self._exchange(body, headers, len(deliveries))
            self._sizes.learn(len(body), result)
            if not result.too_big or len(deliveries) != 1:
                break  # several alerts refused for their size: the dispatcher halves them
            # One alert refused for its size: at once again, its texts cut to fit what the
            # receiver took (dead only when cutting them makes it no smaller)
            limit = self._sizes.limit() or len(body) // 2
            try:
                cut = self._smaller(deliveries[0], len(body), limit, "refused")
            except (_BadHeader, TypeError, ValueError):
                cut = None
            if cut is None:
                break
            body, headers = cut
        return result

    def _smaller(
        self, delivery: Delivery, size: int, limit: int, why: str
    ) -> tuple[bytes, httpx.Headers] | None:
        """``_cut``'s request when it is smaller than the ``size`` bytes it replaces
        (logged: ``why`` names that size, ``size`` or ``refused``); else None."""
        cut = self._cut(delivery, limit)
        if cut is None or len(cut[0]) >= size:
            return None
        log.info(
            "webhook.cut",
            sink=self.name,
            alert=delivery.alert_id,
            sent=len(cut[0]),
            limit=limit,
            **{why: size},
        )
        return cut

    def _cut(self, delivery: Delivery, limit: int) -> tuple[bytes, httpx.Headers] | None:
        """One alert's request with its texts cut (``formats.cut_payload``) no more than
        its body needs to fit ``limit`` bytes, or cut as far as they go when even that is
        bigger; None, nothing in it to cut."""

        def build(cap: int) -> tuple[bytes, httpx.Headers]:
            return self.build_request([delivery], [formats.cut_payload(delivery.payload, cap)])

        most = formats.longest_part(delivery.payload)
        return cut_to_fit(build, lambda request: len(request[0]), formats.MIN_CUT, most, limit)

    async def _exchange(self, body: bytes, headers: httpx.Headers, count: int) -> SendResult:
        """One POST of ``body``, and how it went."""
        try:
            # httpx's timeout is per read; this bounds the whole exchange
            status, reason, retry_after, answer = await asyncio.wait_for(
                self._post(body, headers), self._timeout
            )
        except (asyncio.TimeoutError, httpx.TimeoutException):
            return SendResult.transient(self._err(f"webhook timed out after {self._timeout:g}s"))
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            return SendResult.dead(self._err("the webhook url is not a valid http(s) URL"))
        except httpx.ProxyError as exc:  # the proxy's answer ("407 Proxy Authentication ...")
            detail = self._scrub(str(exc)) or "proxy error"
            return SendResult.transient(self._err(f"webhook request failed: {detail}"))
        except (httpx.TransportError, OSError) as exc:
            # a feed's words for the same failure ("connection refused", "DNS lookup
            # failed for host ***": the host is part of the secret URL, so masked)
            reason = self._scrub(transport_reason(exc, self._host()))
            return SendResult.transient(self._err(f"webhook request failed: {reason}"))
        except httpx.HTTPError as exc:
            detail = self._scrub(str(exc)) or type(exc).__name__
            return SendResult.transient(self._err(f"webhook request failed: {detail}"))
        return self._classify(status, reason, retry_after, answer, count)

    async def _post(
        self, body: bytes, headers: httpx.Headers
    ) -> tuple[int, str, str | None, bytes]:
        client = self._http()
        request = client.build_request(
            "POST", _reveal(self._url), content=body, headers=headers, timeout=self._timeout
        )
        response = await client.send(request, stream=True, follow_redirects=False)
        answer = b""
        try:
            # A 2xx status is the receiver's word that it took the alert: its answer is
            # not read, so one cut short or never ending cannot turn it into a failure
            # (and a resend). Another status keeps what of its answer arrived.
            if not 200 <= response.status_code < 300:
                async for chunk in response.aiter_raw():
                    answer += chunk
                    if len(answer) >= MAX_RESPONSE:
                        break
        except (httpx.HTTPError, OSError):
            pass
        finally:
            with contextlib.suppress(httpx.HTTPError, OSError):
                await response.aclose()
        return (
            response.status_code,
            response.reason_phrase,
            response.headers.get("retry-after"),
            answer,
        )

    def _classify(
        self, status: int, reason: str, retry_after: str | None, answer: bytes, count: int
    ) -> SendResult:
        # the reason phrase is the receiver's text too: "404 Unknown webhook <token>"
        reason = formats.shorten(self._scrub(formats.oneline(reason)), 100)
        what = f"HTTP {status}" + (f" {reason}" if reason else "")
        if 200 <= status < 300:
            log.debug("webhook.sent", sink=self.name, status=status, alerts=count)
            return SendResult.success()
        if 300 <= status < 400:
            return SendResult.dead(
                self._err(
                    f"webhook answered a redirect ({status}): point the sink at the final URL"
                )
            )
        detail = self._answer_text(answer)
        if status in (408, 429) or status >= 500:
            return SendResult.transient(
                self._err(f"webhook answered {what}{detail}"),
                parse_retry_after(retry_after, datetime.now(timezone.utc)),
            )
        if status == 413:  # several alerts go again as two halves, one alert cut (send)
            return SendResult.dead(
                self._err(f"webhook refused the alert for its size: {what}{detail}"), too_big=True
            )
        if 400 <= status < 500:
            return SendResult.dead(self._err(f"webhook refused the alert: {what}{detail}"))
        return SendResult.transient(self._err(f"webhook answered {what}{detail}"))

    def _answer_text(self, answer: bytes) -> str:
        """A short, scrubbed piece of the receiver's answer (Slack and Discord say what was wrong)."""
        # scrubbed whole, then cut: a cut first could leave a secret's first part to show
        text = formats.oneline(self._scrub(answer.decode("utf-8", "replace")))
        if not text or text.lstrip().startswith("<"):  # an HTML error page says nothing useful
            return ""
        return ": " + formats.shorten(text, 200)

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None
