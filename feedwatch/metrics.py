"""Prometheus metrics without a client library: counters, gauges, histograms, and a tiny server.

The daemon updates the module-level metrics below; ``MetricsServer`` serves
``GET /metrics`` in the text exposition format 0.0.4 and ``GET /healthz`` for
a load balancer or a monitoring check. Label values are feed and sink names
(bounded by the config) and fixed enums, so cardinality stays bounded; call
``REGISTRY.remove(feed=NAME)`` when a reload drops a feed. A name holds the expanded
value of any ``${VAR}`` written in it, and a scrape is stored by whoever scrapes it:
label values are shown as every other output shows them, secrets masked
(``_shown``), when rendered.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import ClassVar

import structlog

from feedwatch.redact import redact

log = structlog.get_logger("feedwatch.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

POLL_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

LabelKey = tuple[str, ...]


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value)}"
    return repr(float(value))


def escape_label_value(value: str) -> str:
    """Backslash, double quote and newline escaped, as the format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class ShownNames:
    """The value each label value is rendered with: itself, secrets masked (``redact``),
    and one masked value per real one, kept for the process's life. Two feeds named
    alike but for a secret ("tenant ${A}", "tenant ${B}") would otherwise show as one
    series, or as one per metric, changing as series come: the later one to be named is
    "tenant *** (2)", in every metric, from then on (``introduce`` names the config's
    feeds in order first, so a restart names them alike)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._given: dict[str, tuple[str, str]] = {}  # real value -> (masked, shown)
        self._owner: dict[str, str] = {}  # shown -> the real value it stands for

    def __call__(self, value: str) -> str:
        masked = redact(value)
        if masked == value:
            return value
        with self._lock:
            given = self._given.get(value)
            if given is not None and given[0] == masked:  # (a reload may add secrets)
                return given[1]
            shown, n = masked, 2
            while self._owner.get(shown, value) != value:
                shown, n = f"{masked} ({n})", n + 1
            self._given[value] = (masked, shown)
            self._owner[shown] = value
            return shown

    def introduce(self, values: Iterable[str]) -> None:
        for value in values:
            self(value)


class _Metric:
    """Common label handling: one child value per label-value tuple."""

    type_name: ClassVar[str] = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        if not name or not all(c.isalnum() or c in "_:" for c in name) or name[0].isdigit():
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not label or not all(c.isalnum() or c == "_" for c in label) or label[0].isdigit():
                raise ValueError(f"metric {name}: invalid label name {label!r}")
            if label.startswith("__") or label == "le":
                raise ValueError(f"metric {name}: reserved label name {label!r}")
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self.shown = ShownNames()  # its registry's, once registered (``Registry.register``)

    def _shown(self) -> list[tuple[LabelKey, LabelKey]]:
        """Each series' labels (sorted), and those it is rendered with (``ShownNames``)."""
        return [(key, tuple(map(self.shown, key))) for key in sorted(self._children())]

    def _key(self, labels: Mapping[str, object]) -> LabelKey:
        if set(labels) != set(self.labelnames):
            raise ValueError(
                f"metric {self.name}: expected labels {sorted(self.labelnames)}, got {sorted(labels)}"
            )
        return tuple(str(labels[n]) for n in self.labelnames)

    def _children(self) -> dict[LabelKey, object]:
        raise NotImplementedError

    def remove(self, **labels: object) -> int:
        """Drop every series whose labels include these values (e.g. ``feed="x"``); how many went."""
        idx = {self.labelnames.index(k): str(v) for k, v in labels.items() if k in self.labelnames}
        if len(idx) != len(labels):
            return 0
        with self._lock:
            children = self._children()
            gone = [key for key in children if all(key[i] == v for i, v in idx.items())]
            for key in gone:
                del children[key]
        return len(gone)

    def clear(self) -> None:
        with self._lock:
            self._children().clear()

    def render(self) -> list[str]:
        lines = [
            f"# HELP {self.name} {_escape_help(self.help)}",
            f"# TYPE {self.name} {self.type_name}",
        ]
        with self._lock:
            lines.extend(self._samples())
        return lines

    def _samples(self) -> list[str]:
        raise NotImplementedError


class _Scalar(_Metric):
    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[LabelKey, float] = {}
        if not self.labelnames:
            self._values[()] = 0.0  # an unlabelled series exists from the start

    def _children(self) -> dict[LabelKey, object]:
        return self._values  # type: ignore[return-value]  # dict is invariant; values are floats

    def get(self, **labels: object) -> float:
        """The current value (0 for a series never touched)."""
        key = self._key(labels)
        with self._lock:
            return self._values.get(key, 0.0)

    def _samples(self) -> list[str]:
        return [
            f"{self.name}{_labels_text(self.labelnames, shown)} {_format_value(self._values[key])}"
            for key, shown in self._shown()
        ]


class Counter(_Scalar):
    """Only goes up (a restart resets it; Prometheus' rate() handles that)."""

    type_name = "counter"

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        if amount < 0:
            raise ValueError(f"metric {self.name}: a counter cannot decrease (inc by {amount})")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(_Scalar):
    """A value that goes up and down (pending deliveries, feeds per state, timestamps)."""

    type_name = "gauge"

    def set(self, value: float, **labels: object) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: object) -> None:
        self.inc(-amount, **labels)

    def replace(self, values: Iterable[tuple[Mapping[str, object], float]]) -> None:
        """Set every series at once, dropping the ones not given (one scrape never sees half)."""
        new = {self._key(labels): float(value) for labels, value in values}
        with self._lock:
            self._values.clear()
            self._values.update(new)


class _HistogramChild:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self, n: int) -> None:
        self.buckets = [0] * n  # non-cumulative; rendered cumulatively
        self.sum = 0.0
        self.count = 0


class Histogram(_Metric):
    """Observations counted into fixed buckets (``le`` upper bounds, ``+Inf`` implied)."""

    type_name = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = POLL_DURATION_BUCKETS,
    ) -> None:
        super().__init__(name, help, labelnames)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"metric {name}: buckets must be distinct finite numbers")
        self.buckets = (*bounds, math.inf)
        self._values: dict[LabelKey, _HistogramChild] = {}
        if not self.labelnames:
            self._values[()] = _HistogramChild(len(self.buckets))

    def _children(self) -> dict[LabelKey, object]:
        return self._values  # type: ignore[return-value]  # dict is invariant

    def observe(self, value: float, **labels: object) -> None:
        key = self._key(labels)
        with self._lock:
            child = self._values.get(key)
            if child is None:
                child = self._values[key] = _HistogramChild(len(self.buckets))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    child.buckets[i] += 1
                    break
            child.sum += value
            child.count += 1

    def _samples(self) -> list[str]:
        lines: list[str] = []
        for key, shown in self._shown():
            child = self._values[key]
            running = 0
            for bound, n in zip(self.buckets, child.buckets, strict=True):
                running += n
                le = f'le="{_format_le(bound)}"'
                lines.append(
                    f"{self.name}_bucket{_labels_text(self.labelnames, shown, le)} {running}"
                )
            labels = _labels_text(self.labelnames, shown)
            lines.append(f"{self.name}_sum{labels} {_format_value(child.sum)}")
            lines.append(f"{self.name}_count{labels} {child.count}")
        return lines


def _format_le(bound: float) -> str:
    if math.isinf(bound):
        return "+Inf"
    return repr(float(bound))  # "1.0", "0.25": the spelling Prometheus' own clients use


class Registry:
    """The metrics one ``/metrics`` page shows, in registration order."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self.shown = ShownNames()  # one name per label value across its metrics

    def register(self, metric: _Metric) -> _Metric:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} is already registered")
        self._metrics[metric.name] = metric
        metric.shown = self.shown
        return metric

    def introduce(self, values: Iterable[str]) -> None:
        """Name these label values (a config's feeds, in order) before any series does:
        which of two alike is "(2)" then follows the config, not the first poll to end."""
        self.shown.introduce(values)

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        metric = Counter(name, help, labelnames)
        self.register(metric)
        return metric

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        metric = Gauge(name, help, labelnames)
        self.register(metric)
        return metric

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = POLL_DURATION_BUCKETS,
    ) -> Histogram:
        metric = Histogram(name, help, labelnames, buckets)
        self.register(metric)
        return metric

    def get(self, name: str) -> _Metric | None:
        return self._metrics.get(name)

    def remove(self, **labels: object) -> int:
        """Drop the series of a feed or sink that left the config, in every metric that has that label."""
        return sum(
            m.remove(**labels) for m in self._metrics.values() if set(labels) <= set(m.labelnames)
        )

    def clear(self) -> None:
        for metric in self._metrics.values():
            metric.clear()

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


REGISTRY = Registry()

POLLS = REGISTRY.counter(
    "feedwatch_polls_total", "Feed polls by outcome (ok, not_modified, error).", ("feed", "result")
)
POLL_DURATION = REGISTRY.histogram(
    "feedwatch_poll_duration_seconds", "Time one poll took: fetch, parse, diff and commit."
)
ALERTS = REGISTRY.counter(
    "feedwatch_alerts_total",
    "Alerts recorded, by kind (new, updated, flood, stale, recovered).",
    ("feed", "kind"),
)
DELIVERIES = REGISTRY.counter(
    "feedwatch_deliveries_total",
    "Delivery attempts by outcome (delivered, retry, dead).",
    ("sink", "result"),
)
OUTBOX_PENDING = REGISTRY.gauge(
    "feedwatch_outbox_pending", "Deliveries waiting to be sent or retried.", ("sink",)
)
FEEDS = REGISTRY.gauge(
    "feedwatch_feeds", "Configured feeds by state (new, ok, error, gone, disabled).", ("state",)
)
LAST_SUCCESS = REGISTRY.gauge(
    "feedwatch_last_success_timestamp_seconds",
    "Unix time of the feed's last successful poll.",
    ("feed",),
)


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------

HealthCheck = Callable[[], tuple[bool, str]]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
_MAX_HEAD = 16 * 1024
_READ_TIMEOUT = 10.0
# connections served at once: one more is closed as soon as it is accepted. Each one
# waits up to _READ_TIMEOUT for its request and holds a file descriptor meanwhile, and
# the daemon's polls and sends need theirs: uncapped, idle connections took them all
MAX_CONNECTIONS = 64


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"``, ``":9464"`` (every interface) -> (host, port)."""
    host, sep, port_text = listen.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(
            f"metrics_listen: expected HOST:PORT such as 127.0.0.1:9464, got {listen!r}"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(
            f"metrics_listen: put an IPv6 address in brackets ([::1]:9464), got {listen!r}"
        )
    return (host or "0.0.0.0"), int(port_text)  # ":PORT" = every interface


class MetricsServer:
    """``GET /metrics`` and ``GET /healthz`` over plain asyncio HTTP/1.1 (one request per connection,
    ``MAX_CONNECTIONS`` at once).

    ``health`` returns (healthy, reason); /healthz answers 200 ``ok`` or 503
    with the reason. Listen on ``127.0.0.1:0`` to get a free port (see ``.port``).
    """

    def __init__(self, listen: str, registry: Registry, health: HealthCheck) -> None:
        self.host, self._port = parse_listen(listen)
        self.registry = registry
        self.health = health
        self._server: asyncio.Server | None = None
        self._connections = 0  # being served (MAX_CONNECTIONS at most)

    @property
    def port(self) -> int:
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self._port)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"metrics_listen: cannot listen on {self.host}:{self._port}: {exc.strerror or exc}",
            ) from exc
        log.info("metrics.listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._connections >= MAX_CONNECTIONS:
            writer.close()  # its descriptor back at once, not after _READ_TIMEOUT
            return
        self._connections += 1
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
                return
            if len(head) > _MAX_HEAD:
                await self._respond(writer, 400, "request head too large\n")
                return
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                await self._respond(writer, 400, "bad request line\n")
                return
            method, target, _ = parts
            path = target.split("?", 1)[0]
            head_only = method == "HEAD"
            if method not in ("GET", "HEAD"):
                await self._respond(
                    writer, 405, "only GET and HEAD\n", extra={"Allow": "GET, HEAD"}
                )
            elif path == "/metrics":
                body = self.registry.render()
                await self._respond(
                    writer, 200, body, content_type=CONTENT_TYPE, head_only=head_only
                )
            elif path == "/healthz":
                try:
                    healthy, reason = self.health()
                except Exception as exc:  # a broken health check is itself unhealthy
                    healthy, reason = False, f"health check failed: {exc}"
                if healthy:
                    await self._respond(writer, 200, "ok\n", head_only=head_only)
                else:
                    await self._respond(
                        writer, 503, f"{reason or 'unhealthy'}\n", head_only=head_only
                    )
            else:
                await self._respond(
                    writer, 404, "not found: try /metrics or /healthz\n", head_only=head_only
                )
        except (ConnectionError, OSError):
            pass
        finally:
            self._connections -= 1
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: int,
        body: str,
        *,
        content_type: str = "text/plain; charset=utf-8",
        head_only: bool = False,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        data = body.encode("utf-8")
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(len(data)),
            "Cache-Control": "no-store",
            "Connection": "close",
            **(extra or {}),
        }
        head = f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        writer.write(head.encode("latin-1") + b"\r\n" + (b"" if head_only else data))
        await writer.drain()
