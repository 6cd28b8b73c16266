"""`feedwatch demo`: the real pipeline against a feed served on 127.0.0.1.

No config, no network, no state left behind: a temporary state file, a feed
that gains an entry and then edits it, and a console sink showing the alerts.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TextIO

from feedwatch import DEFAULT_USER_AGENT
from feedwatch.deliver import Dispatcher
from feedwatch.fetch import Fetcher
from feedwatch.model import Config, FeedConfig, FeedSettings, Jitter, Rule, SinkConfig
from feedwatch.poll import Poller
from feedwatch.sinks import build_sink
from feedwatch.store import open_store


class _Feed:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[dict[str, str]] = []

    def body(self) -> bytes:
        with self.lock:
            items = list(self.items)
        parts = [
            '<?xml version="1.0" encoding="utf-8"?>',
            '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"><channel>',
            "<title>Demo Wire</title><link>http://127.0.0.1/</link>",
            "<description>A feed served by feedwatch demo</description>",
        ]
        for it in reversed(items):
            parts.append(
                "<item>"
                f'<guid isPermaLink="false">{escape(it["guid"])}</guid>'
                f"<title>{escape(it['title'])}</title>"
                f"<link>{escape(it['link'])}</link>"
                f"<pubDate>{it['published']}</pubDate>"
                + (f"<atom:updated>{it['updated']}</atom:updated>" if it.get("updated") else "")
                + f"<description>{escape(it['summary'])}</description>"
                "</item>"
            )
        parts.append("</channel></rss>")
        return "".join(parts).encode()


def _serve(feed: _Feed) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = feed.body()
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _rfc822(dt: datetime) -> str:
    return format_datetime(dt, usegmt=True)


async def run_demo(out: TextIO) -> int:
    feed = _Feed()
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=5)
    for i, title in enumerate(["Markets open higher", "City council meets on budget"]):
        feed.items.append(
            {
                "guid": f"demo-{i}",
                "title": title,
                "link": f"https://news.example.org/{i}",
                "published": _rfc822(start + timedelta(minutes=10 * i)),
                "summary": f"Routine story number {i}.",
            }
        )
    server = _serve(feed)
    url = f"http://127.0.0.1:{server.server_address[1]}/wire.xml"
    with tempfile.TemporaryDirectory(prefix="feedwatch-demo-") as tmp:
        state = str(Path(tmp) / "state.db")
        rule = Rule(name="missiles", any=("hypersonic", "missile*"))
        settings = FeedSettings(interval=60, jitter=Jitter(), user_agent=DEFAULT_USER_AGENT)
        feed_cfg = FeedConfig(
            name="demo-wire", url=url, settings=settings, sinks=("console",), rules=(rule,)
        )
        config = Config(
            path=None,
            state=state,
            feeds=(feed_cfg,),
            rules={"missiles": rule},
            sinks={"console": SinkConfig(name="console", type="console")},
            per_host=2,
        )
        store = open_store(state)
        assert store is not None
        sink = build_sink(config.sinks["console"], stdout=out)
        async with Fetcher(concurrency=2, per_host=2, use_env_proxy=False) as fetcher:
            poller = Poller(config, store, fetcher)
            dispatcher = Dispatcher(config, store, {"console": sink})

            async def step(text: str) -> None:
                out.write(f"\n== {text}\n")
                out.flush()
                report = await poller.poll(feed_cfg)
                await dispatcher.run_once(force=True)
                out.write(
                    f"   poll: {report.result}, HTTP {report.http_status}, new {report.new}, "
                    f"updated {report.updated}, alerts {len(report.alerts)}\n"
                )
                out.flush()

            out.write(f"feedwatch demo: a feed served at {url}\n")
            out.write('rule "missiles": any of hypersonic, missile*\n')
            await step("1. first poll: a baseline is recorded, nothing alerts")
            published = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=30)
            with feed.lock:
                feed.items.append(
                    {
                        "guid": "demo-strike",
                        "title": "NATO and Ukraine to discuss hypersonic missile strike",
                        "link": "https://news.example.org/strike",
                        "published": _rfc822(published),
                        "summary": "Officials will meet on Friday.",
                    }
                )
            await step("2. the feed gains an entry that matches the rule: a NEW alert")
            await step("3. nothing changed: the server answers 304, nothing alerts")
            with feed.lock:
                it = feed.items[-1]
                it["updated"] = _rfc822(published + timedelta(minutes=20))
                it["summary"] = "Officials met on Friday and agreed on air defence deliveries."
            await step(
                "4. the entry is edited (updated time moved, summary changed): an UPDATED alert"
            )
        await dispatcher.aclose()
        store.close()
    server.shutdown()
    server.server_close()
    out.write("\nDone. Write a config (feedwatch init) and run `feedwatch check`.\n")
    return 0


def main(out: TextIO) -> int:
    return asyncio.run(run_demo(out))
