"""Metrics: the text exposition format parsed back line by line, and the server over real HTTP."""

from __future__ import annotations

import asyncio
import math
import re

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedwatch import metrics
from feedwatch.metrics import Counter, Gauge, Histogram, MetricsServer, Registry, parse_listen
from feedwatch.redact import clear_secrets, redact, register_secret

# -- a strict little parser for format 0.0.4 -------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\":
            nxt = value[i + 1]
            out.append({"\\": "\\", '"': '"', "n": "\n"}[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _parse_labels(text: str) -> dict[str, str]:
    labels, pos = {}, 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        assert m, f"bad label text at {pos}: {text!r}"
        labels[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
    return labels


def _parse_value(text: str) -> float:
    return {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(text) or float(text)


def parse(text: str) -> dict[str, dict]:
    """-> {family: {"type", "help", "samples": [(name, labels, value)]}}; asserts the format."""
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    current = None
    for line in text.split("\n")[:-1]:  # the format splits on LF only
        assert line, "no blank lines"
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, f"{name} twice"
            current = families[name] = {"help": help_text, "type": None, "samples": []}
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert current is families[name] and kind in ("counter", "gauge", "histogram")
            current["type"] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, labels = m.group(1), _parse_labels(m.group(3) or "")
            assert current is not None and current["type"]
            family = next(
                f for f in families if name in (f, f + "_bucket", f + "_sum", f + "_count")
            )
            assert families[family] is current, "samples follow their own TYPE line"
            current["samples"].append((name, labels, _parse_value(m.group(4))))
    return families


# -- metric types ------------------------------------------------------------


def test_counter_and_gauge_render_and_parse_back():
    reg = Registry()
    c = reg.counter("t_polls_total", "Polls.\nTwo lines \\ here.", ("feed", "result"))
    g = reg.gauge("t_pending", "Pending.", ("sink",))
    c.inc(feed="a", result="ok")
    c.inc(2, feed="a", result="ok")
    c.inc(feed="b", result="error")
    g.set(5, sink="me")
    g.dec(2, sink="me")
    g.inc(0.5, sink="chat")
    fam = parse(reg.render())
    assert fam["t_polls_total"]["type"] == "counter"
    assert fam["t_polls_total"]["help"] == "Polls.\\nTwo lines \\\\ here."
    assert fam["t_polls_total"]["samples"] == [
        ("t_polls_total", {"feed": "a", "result": "ok"}, 3.0),
        ("t_polls_total", {"feed": "b", "result": "error"}, 1.0),
    ]
    assert fam["t_pending"]["samples"] == [
        ("t_pending", {"sink": "chat"}, 0.5),
        ("t_pending", {"sink": "me"}, 3.0),
    ]
    assert c.get(feed="a", result="ok") == 3
    assert c.get(feed="zzz", result="ok") == 0


@settings(max_examples=80, deadline=None)
@given(value=st.text(max_size=40).filter(lambda v: redact(v) == v))  # (secrets: below)
def test_any_label_value_survives_escaping(value):
    reg = Registry()
    g = reg.gauge("t_g", "x", ("feed",))
    g.set(1.5, feed=value)
    (sample,) = parse(reg.render())["t_g"]["samples"]
    assert sample == ("t_g", {"feed": value}, 1.5)


def test_a_secret_in_a_label_value_is_masked_and_each_feed_keeps_one_name() -> None:
    # a feed named with a ${VAR} ("tenant ${TENANT}"): the daemon labels its series with
    # the expanded name, and a scrape is stored by whoever scrapes it
    register_secret("AcmeSecret42")
    register_secret("GlobexSecret7")
    try:
        reg = Registry()
        c = reg.counter("t_polls_total", "Polls.", ("feed", "result"))
        g = reg.gauge("t_last", "Last success.", ("feed",))
        h = reg.histogram("t_seconds", "Durations.", ("feed",), buckets=(1,))
        acme, globex = "tenant AcmeSecret42", "tenant GlobexSecret7"
        # globex succeeds first; acme only fails (its series exist in one metric only)
        c.inc(feed=globex, result="ok")
        g.set(7, feed=globex)
        h.observe(0.5, feed=globex)
        c.inc(feed=acme, result="error")
        first = reg.render()
        assert "Secret" not in first

        def by_feed(text: str) -> dict[str, set[tuple[str, str, float]]]:
            out: dict[str, set[tuple[str, str, float]]] = {}
            for family in parse(text).values():  # (no series twice: it asserts the format)
                for name, labels, value in family["samples"]:
                    if "feed" in labels:
                        out.setdefault(labels["feed"], set()).add(
                            (name, labels.get("result", ""), value)
                        )
            return out

        shown = by_feed(first)
        assert set(shown) == {"tenant ***", "tenant *** (2)"}
        # one name per feed in every metric: never acme's error beside globex's success
        (a,) = [n for n, series in shown.items() if ("t_polls_total", "error", 1.0) in series]
        (b,) = set(shown) - {a}
        assert shown[a] == {("t_polls_total", "error", 1.0)}
        assert {("t_polls_total", "ok", 1.0), ("t_last", "", 7.0)} <= shown[b]
        # acme recovers: its new series take its name, globex keeps its own
        c.inc(feed=acme, result="ok")
        g.set(9, feed=acme)
        again = by_feed(reg.render())
        assert {("t_polls_total", "ok", 1.0), ("t_last", "", 9.0)} <= again[a]
        assert ("t_last", "", 7.0) in again[b] and ("t_last", "", 9.0) not in again[b]
        assert c.get(feed=acme, result="error") == 1  # kept by the real name
    finally:
        clear_secrets()


def test_the_configs_feeds_are_named_in_its_order() -> None:
    """``introduce`` (the daemon, at start and at each reload): which of two feeds alike
    is "(2)" follows the config, the same after a restart, not the first poll to end."""
    register_secret("AcmeSecret42")
    register_secret("GlobexSecret7")
    try:
        reg = Registry()
        g = reg.gauge("t_last", "Last success.", ("feed",))
        reg.introduce(["tenant AcmeSecret42", "plain", "tenant GlobexSecret7"])
        g.set(7, feed="tenant GlobexSecret7")
        g.set(1, feed="tenant AcmeSecret42")
        samples = parse(reg.render())["t_last"]["samples"]
        assert samples == [
            ("t_last", {"feed": "tenant ***"}, 1.0),
            ("t_last", {"feed": "tenant *** (2)"}, 7.0),
        ]
    finally:
        clear_secrets()


def test_histogram_buckets_sum_count():
    reg = Registry()
    h = reg.histogram("t_seconds", "Durations.", buckets=(0.1, 1, 10))
    for v in (0.05, 0.1, 0.5, 3, 3, 100):
        h.observe(v)
    fam = parse(reg.render())["t_seconds"]
    assert fam["type"] == "histogram"
    buckets = [(s[1]["le"], s[2]) for s in fam["samples"] if s[0] == "t_seconds_bucket"]
    assert buckets == [("0.1", 2), ("1.0", 3), ("10.0", 5), ("+Inf", 6)]
    sums = {s[0]: s[2] for s in fam["samples"] if s[0] != "t_seconds_bucket"}
    assert sums == {"t_seconds_sum": pytest.approx(106.65), "t_seconds_count": 6}


def test_labelled_histogram_keeps_series_apart():
    h = Histogram("t_h", "x", ("feed",), buckets=(1,))
    h.observe(0.5, feed="a")
    h.observe(2, feed="b")
    reg = Registry()
    reg.register(h)
    samples = parse(reg.render())["t_h"]["samples"]
    assert ("t_h_bucket", {"feed": "a", "le": "1.0"}, 1) in samples
    assert ("t_h_bucket", {"feed": "b", "le": "1.0"}, 0) in samples
    assert ("t_h_bucket", {"feed": "b", "le": "+Inf"}, 1) in samples


def test_unlabelled_metrics_show_zero_before_any_update():
    reg = Registry()
    reg.counter("t_c_total", "x")
    reg.histogram("t_h", "x", buckets=(1,))
    fam = parse(reg.render())
    assert fam["t_c_total"]["samples"] == [("t_c_total", {}, 0)]
    assert ("t_h_count", {}, 0) in fam["t_h"]["samples"]


def test_bad_use_is_a_clear_error():
    c = Counter("t_c_total", "x", ("feed",))
    with pytest.raises(ValueError, match=r"t_c_total: expected labels \['feed'\], got \['sink'\]"):
        c.inc(sink="x")
    with pytest.raises(ValueError, match="cannot decrease"):
        c.inc(-1, feed="x")
    with pytest.raises(ValueError, match="invalid metric name"):
        Gauge("1bad", "x")
    with pytest.raises(ValueError, match="reserved label"):
        Histogram("t_h", "x", ("le",))
    reg = Registry()
    reg.register(c)
    with pytest.raises(ValueError, match="already registered"):
        reg.counter("t_c_total", "again")


def test_remove_and_replace_keep_cardinality_bounded():
    reg = Registry()
    c = reg.counter("t_c_total", "x", ("feed", "result"))
    g = reg.gauge("t_last", "x", ("feed",))
    s = reg.gauge("t_sink", "x", ("sink",))
    for feed in ("a", "b"):
        c.inc(feed=feed, result="ok")
        c.inc(feed=feed, result="error")
        g.set(1, feed=feed)
    s.set(1, sink="a")
    assert reg.remove(feed="a") == 3
    text = reg.render()
    assert 'feed="a"' not in text and 'feed="b"' in text and 'sink="a"' in text
    states = reg.gauge("t_feeds", "x", ("state",))
    states.set(9, state="gone")
    states.replace([({"state": "ok"}, 4), ({"state": "error"}, 1)])
    assert sorted(x[1]["state"] for x in parse(reg.render())["t_feeds"]["samples"]) == [
        "error",
        "ok",
    ]


def test_module_registry_has_the_daemon_metrics():
    fam = parse(metrics.REGISTRY.render())
    expected = {
        "feedwatch_polls_total": ("counter", ("feed", "result")),
        "feedwatch_poll_duration_seconds": ("histogram", ()),
        "feedwatch_alerts_total": ("counter", ("feed", "kind")),
        "feedwatch_deliveries_total": ("counter", ("sink", "result")),
        "feedwatch_outbox_pending": ("gauge", ("sink",)),
        "feedwatch_feeds": ("gauge", ("state",)),
        "feedwatch_last_success_timestamp_seconds": ("gauge", ("feed",)),
    }
    for name, (kind, labels) in expected.items():
        assert fam[name]["type"] == kind
        metric = metrics.REGISTRY.get(name)
        assert metric is not None and metric.labelnames == labels
    assert metrics.POLLS is metrics.REGISTRY.get("feedwatch_polls_total")


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:0", ("::1", 0)),
        (":9464", ("0.0.0.0", 9464)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_parse_listen(listen, expected):
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9464", "127.0.0.1", "host:port", "::1:9464", "h:70000"])
def test_parse_listen_rejects(listen):
    with pytest.raises(ValueError, match="metrics_listen"):
        parse_listen(listen)


# -- the server over real HTTP ------------------------------------------------


def test_server_answers_metrics_healthz_and_404():
    reg = Registry()
    polls = reg.counter("t_polls_total", "Polls.", ("feed", "result"))
    polls.inc(feed="moscow-times", result="ok")
    health = {"ok": True, "reason": ""}

    def check() -> tuple[bool, str]:
        if health["reason"] == "boom":
            raise RuntimeError("store unreachable")
        return bool(health["ok"]), str(health["reason"])

    async def scenario() -> None:
        server = MetricsServer("127.0.0.1:0", reg, check)
        await server.start()
        try:
            assert server.port != 0
            base = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=base, timeout=5) as client:
                r = await client.get("/metrics")
                assert r.status_code == 200
                assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
                fam = parse(r.text)
                assert fam["t_polls_total"]["samples"] == [
                    ("t_polls_total", {"feed": "moscow-times", "result": "ok"}, 1.0)
                ]
                polls.inc(feed="moscow-times", result="ok")
                r = await client.get("/metrics?x=1")
                assert 'result="ok"} 2' in r.text

                r = await client.get("/healthz")
                assert (r.status_code, r.text) == (200, "ok\n")
                health.update(ok=False, reason="3 deliveries dead")
                r = await client.get("/healthz")
                assert (r.status_code, r.text) == (503, "3 deliveries dead\n")
                health.update(reason="boom")
                r = await client.get("/healthz")
                assert r.status_code == 503 and "store unreachable" in r.text

                r = await client.head("/metrics")
                assert r.status_code == 200 and r.content == b""
                assert int(r.headers["content-length"]) > 0
                assert (await client.get("/")).status_code == 404
                assert (await client.get("/metricsx")).status_code == 404
                r = await client.post("/metrics", content=b"x")
                assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"

            # garbage on the wire gets a 400, not a crash
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"NONSENSE\r\n\r\n")
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 5)
            assert status_line.startswith(b"HTTP/1.1 400 ")
            writer.close()
            await writer.wait_closed()
        finally:
            await server.stop()
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(timeout=2) as client:
                await client.get(f"http://127.0.0.1:{server.port}/metrics")

    asyncio.run(scenario())


def test_idle_connections_beyond_the_cap_are_closed_at_once():
    """Each connection to metrics_listen was held up to 10 s waiting for its request,
    with no cap: 1100 idle ones under `ulimit -n 1024` took every file descriptor
    (feed polls failed "could not connect", asyncio logged `socket.accept() out of
    system resource` thousands of times). Beyond MAX_CONNECTIONS at once, a new one is
    now closed at once; once one of those held ends, a scrape is answered again."""
    cap = 64  # metrics.MAX_CONNECTIONS (as the docs say)

    async def scenario() -> None:
        server = MetricsServer("127.0.0.1:0", Registry(), lambda: (True, ""))
        await server.start()
        idle: list[asyncio.StreamWriter] = []
        try:
            for _ in range(cap):  # idle: connected, no request
                idle.append((await asyncio.open_connection("127.0.0.1", server.port))[1])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while True:  # one more is closed at once (not after the 10 s read timeout)
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                try:
                    got: bytes | None = await asyncio.wait_for(reader.read(), 1)
                except ConnectionError:
                    got = b""  # (closed all the same)
                except asyncio.TimeoutError:
                    got = None
                finally:
                    writer.close()
                if got == b"":
                    break
                assert loop.time() < deadline, "a connection beyond the cap was kept open"
            idle.pop().close()
            deadline = loop.time() + 5
            while True:  # a place is free again: a scrape is answered
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                try:
                    got = await asyncio.wait_for(reader.read(), 5)
                except ConnectionError:  # still beyond it: closed, the request unread
                    got = b""
                writer.close()
                if got.startswith(b"HTTP/1.1 200 "):
                    break
                assert loop.time() < deadline, "no place came free"
                await asyncio.sleep(0.05)
        finally:
            for w in idle:
                w.close()
            deadline = asyncio.get_running_loop().time() + 5
            while server._connections and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)  # their handlers see the end
            await server.stop()

    asyncio.run(scenario())


def test_server_port_in_use_is_a_clear_error():
    async def scenario() -> None:
        first = MetricsServer("127.0.0.1:0", Registry(), lambda: (True, ""))
        await first.start()
        try:
            second = MetricsServer(f"127.0.0.1:{first.port}", Registry(), lambda: (True, ""))
            with pytest.raises(
                OSError, match=rf"metrics_listen: cannot listen on 127.0.0.1:{first.port}"
            ):
                await second.start()
        finally:
            await first.stop()

    asyncio.run(scenario())
