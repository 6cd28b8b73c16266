"""A proxy named in the environment: used for feeds and webhooks, judged rightly by
the redirect guard, refused at the start when httpx cannot use it, ignored by the demo.

The proxies are real: the feed server answers an HTTP proxy's absolute-form requests
by their path, and tests/socksproxy.py is a SOCKS5 proxy. Names under ``.invalid``
resolve nowhere, as on a network whose only way out is the proxy.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedwatch.config import ConfigError
from feedwatch.fetch import Fetcher
from feedwatch.model import Fetched, FetchFailed, FetchOutcome, FetchRequest, SinkConfig
from feedwatch.sinks.base import SendResult
from feedwatch.sinks.webhook import WebhookSink
from tests.feedserver import FeedServer, feed_server_fixture, free_port  # noqa: F401
from tests.helpers import bare_env, raw_server, run_feedwatch
from tests.receivers import Receiver, make_delivery, make_payload, webhook_receiver
from tests.socksproxy import SocksProxy

__all__ = ["webhook_receiver"]  # a fixture, imported for pytest

RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><guid>1</guid><title>one</title></item></channel></rss>"""

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


@pytest.fixture
def proxy(feed_server: FeedServer, no_proxy_env: pytest.MonkeyPatch) -> FeedServer:
    """The feed server as the environment's HTTP proxy."""
    no_proxy_env.setenv("HTTP_PROXY", feed_server.url("/"))
    return feed_server


@pytest.fixture
def socks(feed_server: FeedServer, no_proxy_env: pytest.MonkeyPatch) -> Iterator[SocksProxy]:
    """A SOCKS5 proxy in ALL_PROXY that knows ``feeds.invalid`` as the feed server."""
    proxy = SocksProxy({"feeds.invalid": ("127.0.0.1", feed_server.port)})
    no_proxy_env.setenv("ALL_PROXY", proxy.url)
    try:
        yield proxy
    finally:
        proxy.close()


def fetch(req: FetchRequest) -> FetchOutcome:
    async def go() -> FetchOutcome:
        async with Fetcher() as f:
            return await f.fetch(req)

    return asyncio.run(go())


def test_an_environment_proxy_is_used(proxy: FeedServer) -> None:
    proxy.set("/feed.xml", RSS)
    out = fetch(FetchRequest("http://feeds.invalid/feed.xml"))
    assert isinstance(out, Fetched) and out.body == RSS
    assert proxy.requests[-1][1] == "http://feeds.invalid/feed.xml"


def test_behind_a_proxy_a_redirect_needs_no_dns_here(proxy: FeedServer) -> None:
    """A network whose only way out is the proxy has no public DNS: the redirect
    guard leaves a name it cannot resolve to the proxy (it was "DNS lookup failed")."""
    proxy.set("/feed.xml", RSS)
    proxy.redirect("/old.xml", "http://mirror.feeds.invalid/feed.xml")
    out = fetch(FetchRequest("http://feeds.invalid/old.xml"))
    assert isinstance(out, Fetched) and out.body == RSS
    assert out.url == "http://mirror.feeds.invalid/feed.xml"
    assert [p for _, p, _ in proxy.requests] == [
        "http://feeds.invalid/old.xml",
        "http://mirror.feeds.invalid/feed.xml",
    ]


@pytest.mark.parametrize("allow_private", [False, True])
def test_behind_a_proxy_the_guard_judges_names_not_the_proxys_address(
    proxy: FeedServer, allow_private: bool
) -> None:
    """The connection's far end is the proxy, here on 127.0.0.1: that says nothing of
    where the feed is, and once let every redirect to a private address through."""
    proxy.set("/feed.xml", RSS)
    proxy.redirect("/old.xml", proxy.url("/feed.xml"))  # http://127.0.0.1:PORT/feed.xml
    out = fetch(FetchRequest("http://feeds.invalid/old.xml", allow_private=allow_private))
    if allow_private:
        assert isinstance(out, Fetched) and out.body == RSS
    else:
        assert isinstance(out, FetchFailed)
        assert out.reason == (
            "redirect to a private address (127.0.0.1) refused; set allow_private = true for this feed"
        )
        assert [p for _, p, _ in proxy.requests] == ["http://feeds.invalid/old.xml"]


def test_a_socks_proxy_resolves_the_names(feed_server: FeedServer, socks: SocksProxy) -> None:
    feed_server.set("/feed.xml", RSS)
    feed_server.redirect("/old.xml", "/feed.xml")
    out = fetch(FetchRequest("http://feeds.invalid/old.xml"))
    assert isinstance(out, Fetched) and out.body == RSS
    assert socks.requests == [("feeds.invalid", 80)] * len(socks.requests)
    assert [p for _, p, _ in feed_server.requests] == ["/old.xml", "/feed.xml"]


def test_a_webhook_goes_through_the_proxy(webhook_receiver: Receiver, socks: SocksProxy) -> None:
    socks.names["hooks.invalid"] = ("127.0.0.1", webhook_receiver.port)
    sink = WebhookSink(
        SinkConfig(name="hook", type="webhook", options={"url": "http://hooks.invalid/in"})
    )
    payload = make_payload()

    async def go() -> SendResult:
        try:
            return await sink.send([make_delivery(payload)])
        finally:
            await sink.aclose()

    assert asyncio.run(go()).ok
    assert socks.requests == [("hooks.invalid", 80)]
    (got,) = webhook_receiver.received()
    assert got.path == "/in" and json.loads(got.body)["id"] == payload["id"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "HTTPS_PROXY",
            "ftp://proxy.example:21",
            "HTTPS_PROXY=ftp://proxy.example:21: a proxy URL starts with http://, https://, "
            "socks5:// or socks5h://; fix it or unset HTTPS_PROXY",
        ),
        (
            "all_proxy",
            "socks5://alice:s3cret@127.0.0.1:1080",
            "all_proxy=socks5://***@127.0.0.1:1080: a SOCKS proxy needs the socksio package: "
            "pip install 'feedwatch[socks]'",
        ),
    ],
)
def test_a_proxy_httpx_cannot_use_is_a_config_error_at_the_start(
    no_proxy_env: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    """It was a traceback from inside httpx at every fetch and every webhook send."""
    no_proxy_env.setenv(name, value)
    if "socks" in value:  # as on a machine without the extra
        real = importlib.util.find_spec
        no_proxy_env.setattr(
            importlib.util, "find_spec", lambda n, *a: None if n == "socksio" else real(n, *a)
        )
    with pytest.raises(ConfigError) as fetcher_error:
        Fetcher()
    with pytest.raises(ConfigError) as sink_error:
        WebhookSink(SinkConfig(name="hook", type="webhook", options={"url": "http://x.invalid/"}))
    assert str(fetcher_error.value) == str(sink_error.value) == message


def test_check_names_the_unusable_proxy_and_polls_nothing(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.set("/feed.xml", RSS)
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(f'[[feeds]]\nname = "f"\nurl = "{feed_server.url("/feed.xml")}"\n')
    done = run_feedwatch("-c", str(cfg), "check", env=bare_env(tmp_path, HTTPS_PROXY="ftp://p"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "HTTPS_PROXY=ftp://p: a proxy URL starts with http://, https://, socks5:// or "
        "socks5h://; fix it or unset HTTPS_PROXY"
    )
    assert feed_server.requests == []
    # exit 2 writes nothing (SPEC section 2): not even an empty state file
    assert [p.name for p in tmp_path.rglob("state.db*")] == []
    assert "state.created" not in done.stderr


def test_run_with_an_unusable_proxy_creates_no_state(tmp_path: Path) -> None:
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path / "state.db"}"\nlog_format = "json"\n'
        '[[feeds]]\nname = "f"\nurl = "http://127.0.0.1:9/feed.xml"\n'
    )
    done = run_feedwatch(
        "-c", str(cfg), "run", env=bare_env(tmp_path, HTTPS_PROXY="ftp://u:pw@127.0.0.1:1")
    )
    assert done.returncode == 2, done.stderr
    assert "HTTPS_PROXY=ftp://***@127.0.0.1:1: a proxy URL starts with" in done.stderr
    assert "state.created" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feedwatch.toml"]


def test_validate_warns_of_an_unusable_proxy(tmp_path: Path) -> None:
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text('[[feeds]]\nname = "f"\nurl = "http://127.0.0.1:9/feed.xml"\n')
    done = run_feedwatch("-c", str(cfg), "validate", env=bare_env(tmp_path, HTTPS_PROXY="ftp://p"))
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "warning: HTTPS_PROXY=ftp://p: a proxy URL starts with http://, https://, socks5:// or "
        "socks5h://; fix it or unset HTTPS_PROXY"
    )


def test_the_demo_ignores_the_environments_proxy(tmp_path: Path) -> None:
    """Its feed is served on this machine, where a proxy elsewhere cannot reach."""
    dead = f"http://127.0.0.1:{free_port()}"
    done = run_feedwatch("demo", env=bare_env(tmp_path, HTTP_PROXY=dead, http_proxy=dead))
    assert done.returncode == 0, done.stderr
    assert "== NEW · Demo Wire (demo-wire) ==" in done.stdout
    assert "== UPDATED · Demo Wire (demo-wire) ==" in done.stdout
    assert "poll: error" not in done.stdout


# -- a failure of the proxy says so, naming it ----------------------------------


# A proxy that answers every request (a CONNECT too) with 407.
_ASKS_FOR_CREDENTIALS = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b'Proxy-Authenticate: Basic realm="p"\r\nContent-Length: 0\r\n'
    b"Connection: close\r\n\r\n"
)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_proxy_that_refuses_the_connection_is_named(
    no_proxy_env: pytest.MonkeyPatch, scheme: str
) -> None:
    port = free_port()  # nothing listens there
    no_proxy_env.setenv("HTTP_PROXY", f"http://puser:pw1234@127.0.0.1:{port}")
    no_proxy_env.setenv("HTTPS_PROXY", f"http://puser:pw1234@127.0.0.1:{port}")
    out = fetch(FetchRequest(f"{scheme}://feeds.invalid/feed.xml"))
    assert isinstance(out, FetchFailed), out
    variable = "HTTPS_PROXY" if scheme == "https" else "HTTP_PROXY"
    assert out.reason == f"proxy http://***@127.0.0.1:{port} ({variable}): connection refused"


def test_a_feed_the_proxy_is_not_used_for_fails_as_its_own(
    no_proxy_env: pytest.MonkeyPatch,
) -> None:
    no_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    no_proxy_env.setenv("NO_PROXY", "localhost")
    out = fetch(FetchRequest(f"http://localhost:{free_port()}/feed.xml"))
    assert isinstance(out, FetchFailed) and out.reason == "connection refused"


def test_a_proxy_asking_for_credentials_is_named(proxy: FeedServer) -> None:
    """An http:// feed: the proxy's own 407 answer to the forwarded request."""
    proxy.set("/feed.xml", "", status=407, headers={"Proxy-Authenticate": 'Basic realm="p"'})
    out = fetch(FetchRequest("http://feeds.invalid/feed.xml"))
    assert isinstance(out, FetchFailed), out
    assert out.reason == (
        f"proxy {proxy.url('/')} (HTTP_PROXY): HTTP 407 Proxy Authentication Required"
    )


def test_a_proxy_refusing_a_tunnel_is_named(no_proxy_env: pytest.MonkeyPatch) -> None:
    """An https:// feed: the proxy answers the CONNECT with 407 (it was "proxy error")."""
    server = raw_server(_ASKS_FOR_CREDENTIALS)
    port = server.getsockname()[1]
    try:
        no_proxy_env.setenv("https_proxy", f"http://puser:pw1234@127.0.0.1:{port}")
        out = fetch(FetchRequest("https://feeds.invalid/feed.xml"))
    finally:
        server.close()
    assert isinstance(out, FetchFailed), out
    assert out.reason == (
        f"proxy http://***@127.0.0.1:{port} (https_proxy): HTTP 407 Proxy Authentication Required"
    )


def test_check_and_status_name_the_proxy_that_refused(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path / "state.db"}"\nlog_format = "json"\n'
        '[[feeds]]\nname = "f"\nurl = "http://feeds.invalid/feed.xml"\n'
    )
    env = bare_env(tmp_path, HTTP_PROXY=f"http://puser:pw1234@127.0.0.1:{port}")
    done = run_feedwatch("-c", str(cfg), "check", env=env)
    assert done.returncode == 1, done.stderr
    said = f"proxy http://***@127.0.0.1:{port} (HTTP_PROXY): connection refused"
    assert f"error f: {said}" in done.stderr.splitlines()
    assert "pw1234" not in done.stderr
    shown = run_feedwatch("-c", str(cfg), "status", "--json", env=env)
    (feed,) = json.loads(shown.stdout)["feeds"]
    assert feed["last_error"] == said
