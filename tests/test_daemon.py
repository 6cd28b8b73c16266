"""`feedwatch run` as a real subprocess against a real feed server and state file."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from feedwatch.testing import entry, rss
from tests.feedserver import FeedServer, feed_server_fixture  # noqa: F401
from tests.helpers import run_feedwatch, wait_for
from tests.receivers import webhook_receiver

__all__ = ["webhook_receiver"]  # a fixture, imported for pytest

pytestmark = pytest.mark.timeout(90)


class Daemon:
    """``feedwatch run`` on ``cfg``, its stderr in a log file (or ``stderr``), the
    environment's plus ``env``."""

    def __init__(
        self,
        cfg: Path | None,
        tmp: Path,
        *,
        stderr: Any = None,
        env: dict[str, str] | None = None,
        module: str = "feedwatch",
        cwd: Path | None = None,
    ) -> None:
        """``cfg`` None: no ``-c`` (the daemon finds its config, from ``cwd``)."""
        self.log = (tmp / f"daemon-{time.monotonic_ns()}.log").open("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *(("-c", str(cfg)) if cfg else ()), "run"],
            stdout=subprocess.DEVNULL,
            stderr=self.log if stderr is None else stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=cwd,
        )

    def events(self) -> list[dict]:
        self.log.flush()
        out = []
        for line in Path(self.log.name).read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def has(self, event: str, **fields: object) -> bool:
        return any(
            e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
            for e in self.events()
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def write_config(tmp: Path, srv: FeedServer, feeds: list[str], extra: str = "") -> Path:
    cfg = tmp / "feedwatch.toml"
    blocks = "".join(
        f'\n[[feeds]]\nname = "{name}"\nurl = "{srv.url("/" + name)}"\n' for name in feeds
    )
    cfg.write_text(
        f"""
[feedwatch]
state = "{tmp}/state.db"
interval = "1s"
jitter = "0s"
log_format = "json"
shutdown_timeout = "5s"
{extra}

[sinks.log]
type = "jsonl"
path = "{tmp}/alerts.jsonl"
{blocks}
"""
    )
    return cfg


def with_webhook(cfg: Path, url: str, base: str | None = None) -> None:
    """Write ``base`` (else the file as it is) plus a webhook sink ``hook`` posting to ``url``."""
    text = cfg.read_text() if base is None else base
    cfg.write_text(text + f'\n[sinks.hook]\ntype = "webhook"\nurl = "{url}"\n')


def first_and_second(tmp: Path, srv: FeedServer) -> Path:
    """A config whose feed "a" holds "First" and "Second", both alerted at its first poll."""
    srv.set("/a", rss([entry(1, title="First"), entry(2, title="Second")]))
    return write_config(tmp, srv, ["a"], extra='first_poll = "alert"')


def alerts(tmp: Path) -> list[dict]:
    p = tmp / "alerts.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Starts a ``Daemon`` (``start_daemon(cfg, stderr=..., env=..., module=...)``); any
    still running after the test is killed."""
    started: list[Daemon] = []

    def start(cfg: Path | None, **kw: Any) -> Daemon:
        d = Daemon(cfg, tmp_path, **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def test_new_entry_alerts_within_seconds_then_sigterm_exits_0(tmp_path, feed_server, start_daemon):
    feed_server.set("/a", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a"])
    d = start_daemon(cfg)
    wait_for(lambda: d.has("feed.polled", feed="a", result="ok"), what="baseline poll")
    feed_server.set("/a", rss([entry(1), entry(2, title="Fresh news")]))
    wait_for(lambda: alerts(tmp_path), what="an alert")
    assert [a["entry"]["title"] for a in alerts(tmp_path)] == ["Fresh news"]
    # polled again and again at its 1 s pace, without repeating the alert
    n = feed_server.count("/a")
    wait_for(lambda: feed_server.count("/a") >= n + 2, what="more polls")
    assert len(alerts(tmp_path)) == 1
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 6
    assert d.has("daemon.stopped")


def test_feeds_named_like_the_daemons_own_jobs_are_polled(tmp_path, feed_server, start_daemon):
    names = ["deliveries", "maintenance", "leases", "gone", "held_off", "watchdog"]
    for name in names:
        feed_server.set("/" + name, rss([entry(1)]))
    d = start_daemon(write_config(tmp_path, feed_server, names))
    wait_for(
        lambda: all(feed_server.count("/" + n) >= 2 for n in names),
        what="every feed polled twice",
    )
    assert d.stop() == 0


def test_second_daemon_refuses_and_check_refuses_but_dry_run_works(
    tmp_path, feed_server, start_daemon
):
    feed_server.set("/a", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a"])
    d = start_daemon(cfg)
    wait_for(lambda: d.has("daemon.started"), what="start")
    second = run_feedwatch("-c", str(cfg), "run", timeout=30)
    assert second.returncode == 1
    assert "in use by another feedwatch" in second.stderr
    check = run_feedwatch("-c", str(cfg), "check", timeout=30)
    assert check.returncode == 1 and "in use" in check.stderr
    dry = run_feedwatch("-c", str(cfg), "check", "--dry-run", timeout=30)
    assert dry.returncode == 0, dry.stderr
    status = run_feedwatch("-c", str(cfg), "status", "--json", timeout=30)
    assert status.returncode == 0
    assert json.loads(status.stdout)["feeds"][0]["name"] == "a"
    assert d.stop() == 0


def _start_failure(proc: subprocess.CompletedProcess[str]) -> dict:
    """The one log line `run` wrote when it could not start (stderr not a terminal)."""
    (line,) = proc.stderr.splitlines()
    event = json.loads(line)
    assert (event["event"], event["level"]) == ("daemon.start_failed", "error"), event
    return event


def test_a_daemon_that_cannot_start_says_why_in_one_json_line(tmp_path, feed_server, start_daemon):
    """A config error, a state in use, a corrupt state: `run` printed plain text among
    its JSON log lines, and `journalctl -o cat | jq` stopped there. It logs one
    `daemon.start_failed` event now, same exit codes; other commands keep plain text."""
    feed_server.set("/a", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a"])
    good = cfg.read_text()
    cfg.write_text(good.replace("[feedwatch]\n", "[feedwatch]\nintervall = 3\n"))
    bad = run_feedwatch("-c", str(cfg), "run", timeout=30)
    assert bad.returncode == 2
    assert "feedwatch.intervall: unknown key" in _start_failure(bad)["error"]
    validate = run_feedwatch("-c", str(cfg), "validate", timeout=30)
    assert validate.returncode == 2 and validate.stderr.startswith(str(cfg))

    cfg.write_text(good)
    d = start_daemon(cfg)
    wait_for(lambda: d.has("daemon.started"), what="start")
    second = run_feedwatch("-c", str(cfg), "run", timeout=30)
    assert second.returncode == 1
    assert "in use by another feedwatch" in _start_failure(second)["error"]
    assert d.stop() == 0

    (tmp_path / "state.db").write_bytes(b"garbage " * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"state.db{suffix}").unlink(missing_ok=True)
    corrupt = run_feedwatch("-c", str(cfg), "run", timeout=30)
    assert corrupt.returncode == 1
    assert "corrupt" in _start_failure(corrupt)["error"]
    status = run_feedwatch("-c", str(cfg), "status", timeout=30)
    assert status.returncode == 1 and status.stderr.startswith("feedwatch: state file")


def test_sighup_adds_a_feed_and_invalid_config_keeps_running(tmp_path, feed_server, start_daemon):
    feed_server.set("/a", rss([entry(1)]))
    feed_server.set("/b", rss([entry("b1")]))
    cfg = write_config(tmp_path, feed_server, ["a"])
    d = start_daemon(cfg)
    wait_for(lambda: d.has("feed.polled", feed="a"), what="first poll")
    good = cfg.read_text()
    # an invalid config is rejected, the old one keeps running
    cfg.write_text(good.replace('interval = "1s"', 'interval = "soon"'))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.has("config.reload_failed"), what="reload failure logged")
    n = feed_server.count("/a")
    wait_for(lambda: feed_server.count("/a") > n, what="still polling")
    # a valid config with a new feed is picked up
    cfg.write_text(good + f'\n[[feeds]]\nname = "b"\nurl = "{feed_server.url("/b")}"\n')
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.has("config.reloaded"), what="reload")
    wait_for(lambda: feed_server.count("/b") > 0, what="new feed polled")
    # a feed a reload drops loses its parse-cache file (feedwatch.parsecache)
    from feedwatch.parsecache import file_for

    cache = str(tmp_path / "state.db.parse-cache")
    wait_for(lambda: os.path.exists(file_for(cache, "b")), what="b's parse cache")
    assert os.path.exists(file_for(cache, "a"))
    write_config(tmp_path, feed_server, ["b"])
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: not os.path.exists(file_for(cache, "a")), what="a's cache file gone")
    assert os.path.exists(file_for(cache, "b"))
    assert d.stop() == 0


def test_kill_9_then_restart_loses_no_pending_alert(
    tmp_path, feed_server, start_daemon, webhook_receiver
):
    hook = webhook_receiver
    hook.script(status=503)
    feed_server.set("/a", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a"])
    with_webhook(cfg, f"{hook.url}/in")
    d = start_daemon(cfg)
    wait_for(lambda: d.has("feed.polled", feed="a", result="ok"), what="baseline")
    feed_server.set("/a", rss([entry(1), entry(2, title="Must not be lost")]))
    wait_for(lambda: hook.received(), what="a failed delivery attempt")
    d.proc.kill()
    d.proc.wait()
    hook.script(status=200)
    # the retry is 30 s away; a restart with `check` retries now (an explicit request)
    r = run_feedwatch("-c", str(cfg), "check", "--feed", "a", timeout=30)
    assert r.returncode == 0, r.stderr
    bodies = [json.loads(x.body) for x in hook.received()]
    ids = {b["id"] for b in bodies}
    assert len(ids) == 1
    assert bodies[-1]["entry"]["title"] == "Must not be lost"


def test_sigterm_lets_a_poll_in_flight_finish_and_starts_no_request(
    tmp_path, feed_server, start_daemon
):
    """SIGTERM while a request is out: that poll ends and is committed (within
    shutdown_timeout), not abandoned; no other request starts after the signal."""
    feed_server.set("/a", rss([entry(1)]), delay=1.5)
    feed_server.set("/b", rss([entry(1)]), delay=1.5)
    cfg = write_config(tmp_path, feed_server, ["a", "b"], extra="concurrency = 1")
    d = start_daemon(cfg)
    wait_for(lambda: feed_server.requests, what="a request at the server")
    name = feed_server.requests[0][1].strip("/")
    assert d.stop() == 0
    events = [e.get("event") for e in d.events()]
    after = d.events()[events.index("daemon.stopping") :]
    assert any(
        e.get("event") == "feed.polled" and e.get("feed") == name and e.get("result") == "ok"
        for e in after
    ), after
    assert not d.has("feed.poll_abandoned", feed=name)
    assert len(feed_server.requests) == 1
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT count(*) FROM entries WHERE feed = ?", (name,)).fetchone() == (1,)


def test_sigterm_lets_a_send_under_way_finish_and_sends_nothing_new(
    tmp_path, feed_server, start_daemon, webhook_receiver
):
    """SIGTERM while a webhook is being sent: that send ends and is marked delivered (so
    it is never sent again); the next alert is not sent by the stopping daemon but
    stays pending, and the next run sends it, once."""
    hook = webhook_receiver
    hook.script(delay=1.5)
    cfg = first_and_second(tmp_path, feed_server)
    with_webhook(cfg, f"{hook.url}/in")
    d = start_daemon(cfg)
    hook.wait_for(1, timeout=20)
    assert d.stop() == 0
    assert len(hook.received()) == 1
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute(
            "SELECT status, count(*) FROM deliveries WHERE sink = 'hook' GROUP BY status"
        ).fetchall()
    assert sorted(rows) == [("delivered", 1), ("pending", 1)]
    hook.script(delay=0)
    r = run_feedwatch("-c", str(cfg), "check", timeout=30)
    assert r.returncode == 0, r.stderr
    bodies = [json.loads(x.body) for x in hook.received()]
    assert [b["entry"]["title"] for b in bodies] == ["First", "Second"]
    assert len({b["id"] for b in bodies}) == 2


def test_a_second_sigterm_stops_at_once(tmp_path, feed_server, start_daemon):
    """The first SIGTERM waits for the poll under way (up to shutdown_timeout, 5 s
    here); a second one abandons it now, its state untouched, and exits 0."""
    feed_server.set("/a", rss([entry(1)]), delay=4.0)
    cfg = write_config(tmp_path, feed_server, ["a"])
    d = start_daemon(cfg)
    wait_for(lambda: feed_server.count("/a"), what="the slow poll under way")
    d.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: d.has("daemon.stopping"), what="the first signal taken")
    d.proc.send_signal(signal.SIGHUP)  # a reload while stopping starts nothing
    wait_for(lambda: d.has("config.reload_ignored"), what="the reload ignored")
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 2.5
    assert d.has("daemon.stopping_now", abandoned=1)
    assert d.has("feed.poll_abandoned", feed="a")
    assert not d.has("config.reloaded")
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone() == (0,)


def test_a_send_longer_than_the_delivery_tick_leaves_only_json_lines(
    tmp_path, feed_server, start_daemon, webhook_receiver
):
    """A webhook slower than the outbox's 5 s tick: the tick does not pile runs up
    behind it (APScheduler once warned "maximum number of running instances reached"
    at every tick, as bare text among the JSON lines), and a stop then leaves no
    traceback: every line on stderr is one JSON object."""
    hook = webhook_receiver
    hook.script(delay=6.5)
    cfg = first_and_second(tmp_path, feed_server)
    with_webhook(cfg, f"{hook.url}/in")
    d = start_daemon(cfg)
    wait_for(lambda: d.has("alert.delivered", sink="hook"), what="the slow send", timeout=30)
    assert d.stop() == 0
    d.log.flush()
    text = Path(d.log.name).read_text()
    for line in text.splitlines():
        json.loads(line)  # raises on a bare line
    assert "apscheduler" not in text and "Traceback" not in text


def test_a_reload_that_changes_a_sink_lets_its_send_finish_then_uses_the_new_one(
    tmp_path, feed_server, start_daemon, webhook_receiver
):
    """SIGHUP with a changed webhook while it sends: the send under way ends through the
    old sink (closing it mid-send failed a request the receiver had got, and its retry
    sent the alert twice); the next alert goes through the new one."""
    hook = webhook_receiver
    hook.script(delay=2.0)
    cfg = first_and_second(tmp_path, feed_server)
    base = cfg.read_text()
    with_webhook(cfg, f"{hook.url}/old", base)
    d = start_daemon(cfg)
    hook.wait_for(1, timeout=20)
    with_webhook(cfg, f"{hook.url}/new", base)
    d.proc.send_signal(signal.SIGHUP)
    hook.wait_for(2, timeout=20)
    wait_for(
        lambda: sum(1 for e in d.events() if e.get("event") == "alert.delivered") == 4,
        what="both alerts delivered to both sinks",
    )
    assert d.stop() == 0
    got = hook.received()
    titles = [(r.path, json.loads(r.body)["entry"]["title"]) for r in got]
    assert titles == [("/old", "First"), ("/new", "Second")]
    assert not d.has("delivery.failed")


def test_a_reload_that_changes_concurrency_closes_the_old_connections(
    tmp_path, feed_server, start_daemon
):
    """The fetcher a reload replaces is closed once its polls end: its kept-alive
    connections do not linger (they stayed open until the daemon stopped)."""
    feed_server.set("/a", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a"], extra="concurrency = 4")
    d = start_daemon(cfg)
    wait_for(lambda: d.has("feed.polled", feed="a"), what="a first poll")
    wait_for(lambda: feed_server.open_connections == 1, what="one kept-alive connection")
    cfg.write_text(cfg.read_text().replace("concurrency = 4", "concurrency = 5"))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.has("config.reloaded"), what="the reload")
    polls = feed_server.count("/a")
    wait_for(lambda: feed_server.count("/a") >= polls + 2, what="polls through the new fetcher")
    wait_for(lambda: feed_server.open_connections == 1, what="the old connection closed")
    assert d.stop() == 0


def test_a_reload_that_changes_a_url_during_its_poll_polls_the_new_url_at_once(
    tmp_path, feed_server, start_daemon
):
    """A feed's URL edited while its old URL is being polled: the new URL is polled as
    that poll ends, as after any reload (it waited a whole interval: the ending poll
    scheduled the next from its own time)."""
    feed_server.set("/old", rss([entry(1)]), delay=1.5)
    feed_server.set("/new", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["old"])
    cfg.write_text(cfg.read_text().replace('interval = "1s"', 'interval = "1m"'))
    d = start_daemon(cfg)
    wait_for(lambda: feed_server.count("/old"), what="the old URL's poll under way")
    cfg.write_text(cfg.read_text().replace(feed_server.url("/old"), feed_server.url("/new")))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.has("config.reloaded"), what="the reload")
    wait_for(lambda: feed_server.count("/new"), what="the new URL polled", timeout=15)
    assert feed_server.count("/old") == 1
    assert d.stop() == 0


def test_a_reload_that_shortens_the_interval_applies_at_once(tmp_path, feed_server, start_daemon):
    """interval 1h -> 2s by a reload: the next poll comes 2 s after the last, not at the
    hour the last poll had set; a restart does the same from the stored next poll."""
    feed_server.set("/a", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a"])
    cfg.write_text(cfg.read_text().replace('interval = "1s"', 'interval = "1h"'))
    d = start_daemon(cfg)
    wait_for(lambda: feed_server.count("/a") == 1, what="the first poll")
    cfg.write_text(cfg.read_text().replace('interval = "1h"', 'interval = "2s"'))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: feed_server.count("/a") >= 3, what="polls 2 s apart", timeout=15)
    assert d.stop() == 0
    cfg.write_text(cfg.read_text().replace('interval = "2s"', 'interval = "1h"'))
    polls = feed_server.count("/a")
    d = start_daemon(cfg)
    # the stored next poll is within 2 s: it polls once, and sets the next an hour on
    wait_for(lambda: d.has("feed.polled", feed="a"), what="the poll due", timeout=15)
    assert d.stop() == 0
    assert feed_server.count("/a") == polls + 1
    with sqlite3.connect(tmp_path / "state.db") as db:
        last, nxt = db.execute("SELECT last_poll, next_poll FROM feeds").fetchone()
    cfg.write_text(cfg.read_text().replace('interval = "1h"', 'interval = "2s"'))
    polls = feed_server.count("/a")
    d = start_daemon(cfg)
    wait_for(lambda: feed_server.count("/a") > polls, what="a start under 2s", timeout=15)
    assert d.stop() == 0
    assert nxt - last >= 3000  # that start would have waited the hour


def test_a_wall_clock_set_back_an_hour_holds_no_poll_and_no_watchdog_ping(
    tmp_path, feed_server, start_daemon
):
    """An NTP step back (a hardware clock kept in local time, corrected after boot).
    APScheduler waits for wall-clock times: every poll, every delivery tick and the
    systemd watchdog's ping waited the hour too, and systemd killed the daemon for it.
    A restart then waited the hour from the stored next poll. (A retry waiting in the
    outbox moves back too: tests/test_store.py.)"""
    import socket

    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    step = tmp_path / "step"
    env = {
        "FAKEWALL_FILE": str(step),
        "NOTIFY_SOCKET": str(sock_path),
        "WATCHDOG_USEC": "4000000",  # a ping every 2 s
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    feed_server.set("/a", rss([entry(1)]))
    from tests.feedserver import free_port

    port = free_port()
    failing = '\n[sinks.down]\ntype = "command"\nargv = ["false"]\n'  # retried in 30 s
    cfg = write_config(
        tmp_path, feed_server, ["a"], extra=f'metrics_listen = "127.0.0.1:{port}"\n{failing}'
    )
    d = start_daemon(cfg, env=env, module="tests.fakewall")
    wait_for(lambda: feed_server.count("/a") >= 2, what="polls a second apart")
    feed_server.set("/a", rss([entry(1), entry(2, title="Before the step")]))
    wait_for(lambda: d.has("delivery.failed", sink="down"), what="a retry waiting")
    tmp = tmp_path / "step.tmp"
    tmp.write_text("-3600")
    tmp.rename(step)
    feed_server.set(
        "/a", rss([entry(1), entry(2, title="Before the step"), entry(3, title="After")])
    )
    wait_for(lambda: len(alerts(tmp_path)) == 2, what="the poll after the step", timeout=30)
    assert [a["entry"]["title"] for a in alerts(tmp_path)] == ["Before the step", "After"]
    assert d.has("clock.stepped", seconds=-3600)
    assert d.has("clock.retries_moved", deliveries=1, seconds=-3600)
    metrics_text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'feedwatch_clock_steps_total{direction="back"} 1' in metrics_text
    sock.setblocking(False)
    while True:  # what was sent so far
        try:
            sock.recv(4096)
        except BlockingIOError:
            break
    sock.settimeout(15)
    assert "WATCHDOG=1" in sock.recv(4096).decode()  # still pinging
    assert d.stop() == 0
    sock.close()

    # started on a clock an hour behind the stored last poll: the wait stays a second
    tmp.write_text("-7200")
    tmp.rename(step)
    polls = feed_server.count("/a")
    env.pop("NOTIFY_SOCKET"), env.pop("WATCHDOG_USEC")
    d = start_daemon(cfg, env=env, module="tests.fakewall")
    wait_for(lambda: feed_server.count("/a") >= polls + 2, what="polls after a restart")
    assert d.stop() == 0


def test_a_sink_that_cannot_work_here_is_named_at_start(tmp_path, feed_server, start_daemon):
    """And two feeds of one URL (each alerts every story), and what else `validate`
    warns of: named too."""
    feed_server.set("/a", rss([entry(1)]))
    cfg = write_config(
        tmp_path,
        feed_server,
        ["a"],
        extra='\n[sinks.notify]\ntype = "command"\nargv = ["/nonexistent/notify-send"]\n',
    )
    cfg.write_text(
        cfg.read_text()
        + f'\n[[feeds]]\nname = "a2"\nurl = "{feed_server.url("/a")}"\nnotify_on = []\n'
    )
    d = start_daemon(cfg)
    wait_for(lambda: d.has("daemon.started"), what="the start")
    assert d.has(
        "sink.will_fail",
        sink="notify",
        problem="sink notify: program /nonexistent/notify-send does not exist",
    )
    assert not any(e.get("event") == "sink.will_fail" and e["sink"] == "log" for e in d.events())
    (same,) = [e for e in d.events() if e.get("event") == "config.same_url"]
    assert same["problem"].startswith('feeds "a" and "a2" poll the same URL')
    (rule,) = [e for e in d.events() if e.get("event") == "config.rule_warning"]
    assert rule["problem"].startswith('feed "a2": notify_on = [] alerts no new')
    assert d.stop() == 0


def test_a_config_without_sinks_is_named_once_at_start(tmp_path, feed_server, start_daemon):
    """Feeds and no sink: every alert is recorded and sent nowhere."""
    feed_server.set("/a", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a"])
    text = cfg.read_text()
    cfg.write_text(text[: text.index("[sinks.log]")] + text[text.index("[[feeds]]") :])
    d = start_daemon(cfg)
    wait_for(lambda: d.has("daemon.started"), what="the start")
    (warning,) = [e for e in d.events() if e.get("event") == "config.no_sinks"]
    assert warning["level"] == "warning" and "sent nowhere" in warning["problem"]
    assert d.stop() == 0


@pytest.mark.parametrize("seconds", [7200, 365 * 86400], ids=["two-hours", "a-year"])
def test_a_wall_clock_moved_on_polls_what_fell_due_within_seconds(
    tmp_path, feed_server, start_daemon, seconds
):
    """A step forward (or a resume from suspend) makes every slot overdue, but
    APScheduler's timer still waits out the interval it was set for on the monotonic
    clock: the overdue feeds are polled within seconds (spread, as at start) instead.
    A year on, APScheduler walked every missed run of the 5 s upkeep jobs first: 40 s
    and more with the event loop held, no poll, no watchdog ping (schedule.CatchUpInterval)."""
    step = tmp_path / "step"
    env = {"FAKEWALL_FILE": str(step), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    feed_server.set("/a", rss([entry(1)]))
    feed_server.set("/b", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a", "b"])
    cfg.write_text(cfg.read_text().replace('interval = "1s"', 'interval = "60s"'))
    d = start_daemon(cfg, env=env, module="tests.fakewall")
    wait_for(lambda: feed_server.count("/a") and feed_server.count("/b"), what="first polls")
    # each poll's next slot is set just after its request is answered: a step landing
    # before that (a few ms) rightly sets it an interval after the new time
    last = max(feed_server.arrivals("/a") + feed_server.arrivals("/b"))
    wait_for(lambda: time.time() - last > 1.0, what="both next slots set")
    (tmp_path / "step.tmp").write_text(str(seconds))
    (tmp_path / "step.tmp").rename(step)
    wait_for(
        lambda: feed_server.count("/a") >= 2 and feed_server.count("/b") >= 2,
        what="both feeds polled again, not a minute later",
        timeout=20,
    )
    # (its line may reach the log a moment after the polls it caused, on a busy machine;
    # the step is measured against the monotonic clock: give or take a second)
    wait_for(
        lambda: any(
            e.get("event") == "clock.stepped" and abs(e.get("seconds", 0) - seconds) <= 1
            for e in d.events()
        ),
        what="the step logged",
    )
    assert not d.has("clock.reschedule_failed")
    assert d.stop() == 0


def test_410_gone_stops_polling_and_status_shows_gone(tmp_path, feed_server, start_daemon):
    feed_server.set("/a", rss([entry(1)]))
    feed_server.set("/g", b"gone", status=410)
    cfg = write_config(tmp_path, feed_server, ["a", "g"])
    d = start_daemon(cfg)
    wait_for(lambda: d.has("feed.gone", feed="g"), what="gone")
    n = feed_server.count("/g")
    m = feed_server.count("/a")
    wait_for(lambda: feed_server.count("/a") >= m + 3, what="other feed keeps polling")
    assert feed_server.count("/g") == n
    assert d.stop() == 0
    status = run_feedwatch("-c", str(cfg), "status", "--json", "--check", timeout=30)
    assert status.returncode == 1
    states = {f["name"]: f["state"] for f in json.loads(status.stdout)["feeds"]}
    assert states == {"a": "ok", "g": "gone"}


def test_a_gone_feed_gets_one_stale_notice_and_recovered_after_a_forget(
    tmp_path, feed_server, start_daemon
):
    """A feed stopped by a 410 is never polled again, so its staleness was never judged:
    no `stale` notice ever came (a feed failing with 404 gets one)."""
    feed_server.set("/a", rss([entry(1)]))
    feed_server.set("/g", b"gone", status=410)
    cfg = write_config(tmp_path, feed_server, ["a", "g"])
    cfg.write_text(cfg.read_text() + 'stale_after = "2s"\n')  # g's own setting

    def notices(kind: str) -> list[dict]:
        return [a for a in alerts(tmp_path) if a["kind"] == kind and a["feed"]["name"] == "g"]

    d = start_daemon(cfg)
    wait_for(lambda: d.has("feed.gone", feed="g"), what="gone")
    n = feed_server.count("/g")
    [notice] = wait_for(lambda: notices("stale"), what="the gone feed's stale notice")
    assert notice["message"].startswith("feed 'g' looks stale: no successful poll since its")
    assert notice["message"].endswith("(last error: HTTP 410 Gone)"), notice["message"]
    m = feed_server.count("/a")
    wait_for(lambda: feed_server.count("/a") >= m + 3, what="a few more gone checks")
    assert len(notices("stale")) == 1  # once
    assert feed_server.count("/g") == n  # and still not polled
    # back: `forget` resumes it (check refuses under the daemon), and it recovers
    feed_server.set("/g", rss([entry(1)]))
    assert run_feedwatch("-c", str(cfg), "forget", "g", timeout=30).returncode == 0
    wait_for(lambda: notices("recovered"), what="recovered")
    assert d.stop() == 0


def test_a_feed_held_off_by_retry_after_gets_its_stale_notice_while_it_waits(
    tmp_path, feed_server, start_daemon
):
    """A server answering 429 with `Retry-After: 86400`: the daemon polls the feed again
    only a day later, and judged its staleness only at a poll, so the `stale` notice came
    up to a day after `stale_after` had passed."""
    feed_server.set("/a", rss([entry(1)]))
    feed_server.set("/r", b"slow down", status=429, headers={"Retry-After": "86400"})
    cfg = write_config(tmp_path, feed_server, ["a", "r"])
    cfg.write_text(cfg.read_text() + 'stale_after = "2s"\n')  # r's own setting

    def notices(kind: str) -> list[dict]:
        return [a for a in alerts(tmp_path) if a["kind"] == kind and a["feed"]["name"] == "r"]

    d = start_daemon(cfg)
    wait_for(lambda: d.has("feed.failed", feed="r"), what="the 429")
    [notice] = wait_for(lambda: notices("stale"), what="the held-off feed's stale notice")
    assert notice["message"].startswith("feed 'r' looks stale: no successful poll since its")
    assert "(last error: HTTP 429" in notice["message"], notice["message"]
    m = feed_server.count("/a")
    wait_for(lambda: feed_server.count("/a") >= m + 3, what="a few more looks at it")
    assert len(notices("stale")) == 1  # once
    assert feed_server.count("/r") == 1  # and not polled before its Retry-After
    assert d.stop() == 0


def test_forget_resumes_a_gone_feed_under_a_running_daemon(tmp_path, feed_server, start_daemon):
    """`check` refuses while the daemon runs, so `forget` is the way to resume a feed that
    answered 410: it cleared the state, but the daemon never polled the feed again."""
    feed_server.set("/a", rss([entry(1)]))
    feed_server.set("/g", b"gone", status=410)
    cfg = write_config(tmp_path, feed_server, ["a", "g"])
    d = start_daemon(cfg)
    wait_for(lambda: d.has("feed.gone", feed="g"), what="gone")
    feed_server.set("/g", rss([entry(1), entry(2)]))
    n = feed_server.count("/g")
    assert run_feedwatch("-c", str(cfg), "forget", "g", timeout=30).returncode == 0
    wait_for(lambda: d.has("feed.resumed", feed="g"), what="resumed", timeout=20)
    wait_for(lambda: feed_server.count("/g") >= n + 2, what="polled on schedule again")
    assert d.stop() == 0


def test_a_gone_feed_given_a_new_url_is_polled_after_a_restart(tmp_path, feed_server, start_daemon):
    """A reload with the new url polled it; a restart skipped it as gone, for ever."""
    feed_server.set("/a", rss([entry(1)]))
    feed_server.set("/g", b"gone", status=410)
    feed_server.set("/j", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a", "g"])
    d = start_daemon(cfg)
    wait_for(lambda: d.has("feed.gone", feed="g"), what="gone")
    assert d.stop() == 0
    cfg.write_text(cfg.read_text().replace(feed_server.url("/g"), feed_server.url("/j")))
    d = start_daemon(cfg)
    wait_for(lambda: feed_server.count("/j") >= 2, what="the new url polled, on schedule")
    assert not d.has("feed.gone_skipped", feed="g")
    assert d.stop() == 0


def test_a_feed_given_a_new_url_is_polled_at_a_start_despite_the_old_urls_retry_after(
    tmp_path, feed_server, start_daemon
):
    """The old url's server asked for an hour (429, Retry-After: 3600): a daemon started
    with the feed's new url waited that hour (a reload polled it at once)."""
    feed_server.set("/r", b"slow down", status=429, headers={"Retry-After": "3600"})
    feed_server.set("/j", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["r"])
    d = start_daemon(cfg)
    wait_for(lambda: d.has("feed.failed", feed="r"), what="the 429")
    assert d.stop() == 0
    cfg.write_text(cfg.read_text().replace(feed_server.url("/r"), feed_server.url("/j")))
    d = start_daemon(cfg)
    wait_for(lambda: feed_server.count("/j") >= 2, what="the new url polled, on schedule")
    assert d.stop() == 0
    assert feed_server.count("/r") == 1


def test_the_upkeep_drops_a_feed_removed_from_the_config_for_retention(tmp_path, feed_server):
    """SPEC 6: a removed feed's state is kept until `retention`; the daemon's upkeep only
    pruned deliveries, so it was kept for ever. (In process: the job runs hourly.)"""
    import asyncio

    from feedwatch.config import load_config
    from feedwatch.daemon import Daemon as FeedDaemon
    from feedwatch.store import SqliteStore

    cfg = write_config(tmp_path, feed_server, ["a"], extra='retention = "1h"')
    config = load_config(cfg)
    store = SqliteStore(tmp_path / "state.db")
    now = datetime.now(timezone.utc)
    for name, ago in (("a", 7200), ("gone-long", 7200), ("just-removed", 60)):
        store.record_failure(
            name, "http://127.0.0.1:9/", now - timedelta(seconds=ago), http_status=500,
            error="HTTP 500", next_poll=None,
        )  # fmt: skip
    d = FeedDaemon(config, lambda: config)
    d.store = store
    try:
        asyncio.run(d._maintenance_job())
        assert set(store.feeds()) == {"a", "just-removed"}
    finally:
        store.close()


def test_the_upkeep_lets_the_daemon_run_between_the_prune_s_transactions(
    tmp_path, feed_server, monkeypatch
):
    """The upkeep pruned every alert older than `retention` in one call on the event
    loop: after `retention` was lowered (1.5M alerts: 149 s on SQLite), no poll, no
    delivery, no watchdog ping for that long. It prunes PRUNE_BATCH alerts a
    transaction and lets the loop run between two; a stop ends it between two, and the
    next upkeep goes on. (In process, PRUNE_BATCH 5: the job runs hourly.)"""
    import asyncio

    import feedwatch.store.rows as rows
    from feedwatch.config import load_config
    from feedwatch.daemon import Daemon as FeedDaemon
    from feedwatch.store import SqliteStore
    from tests.test_store import alert, poll

    monkeypatch.setattr(rows, "PRUNE_BATCH", 5)
    cfg = write_config(tmp_path, feed_server, ["a"], extra='retention = "1h"')
    config = load_config(cfg)
    store = SqliteStore(tmp_path / "state.db")
    old = datetime.now(timezone.utc) - timedelta(hours=2)
    ids = [f"x{i:02}" for i in range(60)]
    store.commit_poll(poll("a", now=old, alerts=tuple(alert(i, "a", ("log",)) for i in ids)))
    store.mark_delivered("log", ids, old)
    d = FeedDaemon(config, lambda: config)
    d.store = store

    def stored() -> int:
        return len(store.alerts_for("a", limit=100))

    async def upkeep(stop_at: int | None) -> list[int]:
        """The job, and the alerts left each time the loop ran meanwhile (each count
        once: the loop runs more than once between two transactions)."""
        seen: list[int] = []
        running = True

        async def other_work() -> None:
            while running:  # (first run once the job let the loop go)
                n = stored()
                if not seen or seen[-1] != n:
                    seen.append(n)
                if stop_at is not None and n <= stop_at:
                    d._stopping = True
                await asyncio.sleep(0)

        task = asyncio.create_task(other_work())
        await d._maintenance_job()
        running = False
        await task
        return seen

    try:
        seen = asyncio.run(upkeep(stop_at=45))
        assert seen == [60, 55, 50, 45] and stored() == 45  # stopped after the third
        d._stopping = False
        seen = asyncio.run(upkeep(stop_at=None))
        assert seen == [45, 40, 35, 30, 25, 20, 15, 10, 5, 0] and stored() == 0
    finally:
        store.close()


def test_retry_after_is_honoured(tmp_path, feed_server, start_daemon):
    feed_server.set("/a", rss([entry(1)]))
    feed_server.set("/r", b"slow down", status=429, headers={"Retry-After": "3600"})
    cfg = write_config(tmp_path, feed_server, ["a", "r"])
    d = start_daemon(cfg)
    wait_for(lambda: feed_server.count("/r") >= 1, what="first poll of r")
    m = feed_server.count("/a")
    wait_for(lambda: feed_server.count("/a") >= m + 3, what="a keeps polling")
    assert feed_server.count("/r") == 1
    assert d.stop() == 0
    # check honours it too
    r = run_feedwatch("-c", str(cfg), "check", timeout=30)
    assert "Retry-After" in r.stderr
    assert feed_server.count("/r") == 1


def test_no_poll_comes_before_its_wait_is_over(tmp_path, feed_server, start_daemon):
    """The next poll, a Retry-After's end among them, was counted from the clock read to
    the second: a 1 s interval gave gaps of 0.02-0.5 s between requests, Retry-After: 3
    a poll 2.05 s later. Every wait now counts from the exact time of the poll."""
    feed_server.set("/a", rss([entry(1)]))
    feed_server.set("/r", b"slow down", status=503, headers={"Retry-After": "3"})
    cfg = write_config(tmp_path, feed_server, ["a", "r"])
    d = start_daemon(cfg)
    wait_for(lambda: len(feed_server.arrivals("/r")) >= 2, what="r polled again", timeout=15)
    assert d.stop() == 0
    for path, wait in (("/a", 1.0), ("/r", 3.0)):
        times = feed_server.arrivals(path)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert gaps and all(g >= wait for g in gaps), (path, gaps)


def test_a_feed_back_in_the_config_keeps_its_retry_after_and_backoff(
    tmp_path, feed_server, start_daemon
):
    """A feed under Retry-After: 3600 ("r"), or backing off after an error ("e"), taken
    out of the config by a reload and put back by another, or disabled and enabled
    again, was polled at once: it keeps its stored wait, as over a restart."""
    feed_server.set("/a", rss([entry(1)]))
    feed_server.set("/r", b"slow down", status=429, headers={"Retry-After": "3600"})
    feed_server.set("/e", b"down", status=500)
    cfg = write_config(tmp_path, feed_server, ["a", "r", "e"])
    e_url = f'url = "{feed_server.url("/e")}"\n'
    full = cfg.read_text().replace(e_url, e_url + 'interval = "1h"\n')
    cfg.write_text(full)
    without = full.split('\n[[feeds]]\nname = "r"')[0]  # r and e come last
    disabled = full
    for name in ("r", "e"):
        url = f'url = "{feed_server.url("/" + name)}"\n'
        disabled = disabled.replace(url, url + "enabled = false\n")
    d = start_daemon(cfg)
    wait_for(
        lambda: d.has("feed.failed", feed="r") and d.has("feed.failed", feed="e"),
        what="the first polls of r and e",
    )
    for n, text in enumerate((without, full, disabled, full), start=1):
        cfg.write_text(text)
        d.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda n=n: sum(1 for e in d.events() if e.get("event") == "config.reloaded") == n,
            what=f"reload {n}",
        )
    m = feed_server.count("/a")
    wait_for(lambda: feed_server.count("/a") >= m + 3, what="a keeps polling")
    assert (feed_server.count("/r"), feed_server.count("/e")) == (1, 1)
    assert d.stop() == 0


def _status_next_polls(cfg: Path) -> dict[str, datetime]:
    r = run_feedwatch("-c", str(cfg), "status", "--json", timeout=30)
    assert r.returncode == 0, r.stderr
    return {
        f["name"]: datetime.strptime(f["next_poll"], "%Y-%m-%dT%H:%M:%S%z")
        for f in json.loads(r.stdout)["feeds"]
    }


def test_status_shows_the_next_poll_after_a_reload_shortens_the_interval(
    tmp_path, feed_server, start_daemon
):
    """interval 1h -> 10s by a reload: the daemon polls 10 s after the last poll, and
    status said an hour on (the time stored by that poll) until then."""
    feed_server.set("/a", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a"])
    cfg.write_text(cfg.read_text().replace('interval = "1s"', 'interval = "1h"'))
    d = start_daemon(cfg)
    wait_for(lambda: d.has("feed.polled", feed="a"), what="the first poll")
    assert _status_next_polls(cfg)["a"] > datetime.now(timezone.utc) + timedelta(minutes=59)
    cfg.write_text(cfg.read_text().replace('interval = "1h"', 'interval = "10s"'))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.has("config.reloaded"), what="the reload")
    assert _status_next_polls(cfg)["a"] <= datetime.now(timezone.utc) + timedelta(seconds=11)
    assert d.stop() == 0


def test_status_shows_where_a_start_spread_the_overdue_feeds(tmp_path, feed_server, start_daemon):
    """30 feeds overdue at a start are spread over 30 s; status showed the past times the
    state held until each feed's poll, not the slots the daemon had given them."""
    names = [f"f{i}" for i in range(30)]
    for name in names:
        feed_server.set("/" + name, rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, names)
    cfg.write_text(cfg.read_text().replace('interval = "1s"', 'interval = "1h"'))
    assert run_feedwatch("-c", str(cfg), "check", timeout=30).returncode == 0
    past = int((time.time() - 3600) * 1_000_000)  # an hour overdue (stored in microseconds)
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("UPDATE feeds SET next_poll = ?", (past,))
    started = datetime.now(timezone.utc).replace(microsecond=0)
    d = start_daemon(cfg)
    wait_for(lambda: d.has("daemon.started"), what="the start")
    late = {n: t for n, t in _status_next_polls(cfg).items() if t < started}
    assert not late, late
    assert d.stop() == 0


def _series(metric: Any) -> set[str]:
    """A metric's samples as /metrics renders them (without its HELP and TYPE)."""
    return {line for line in metric.render() if not line.startswith("#")}


def test_the_outbox_gauge_follows_the_state_while_a_sink_backs_off(
    tmp_path, feed_server, webhook_receiver
):
    """feedwatch_outbox_pending{sink} was set only by a delivery run that delivered,
    retried or marked something dead: while a webhook backed off (503), the alerts
    recorded meanwhile left it where it was (status said 2, 4, ... 14, the gauge 1),
    and a sink had no series before its first delivery (status said 0). Every delivery
    run (one follows each poll that records alerts, and one runs every DELIVERY_TICK)
    now sets it from the state's pending counts, every configured sink from the start.
    (In process.)"""
    import asyncio

    from feedwatch import metrics
    from feedwatch.config import load_config
    from feedwatch.daemon import Daemon as FeedDaemon
    from feedwatch.deliver import Dispatcher
    from feedwatch.store import SqliteStore
    from tests.test_store import alert, poll

    webhook_receiver.script(status=503)
    cfg = write_config(tmp_path, feed_server, ["a"])
    with_webhook(cfg, f"{webhook_receiver.url}/in")
    config = load_config(cfg)
    store = SqliteStore(tmp_path / "state.db")
    d = FeedDaemon(config, lambda: config)
    d.store = store
    d.dispatcher = Dispatcher(config, store, d._build_sinks(config), owner=d.owner)
    metrics.OUTBOX_PENDING.clear()
    url = feed_server.url("/a")

    def gauge() -> set[str]:
        return _series(metrics.OUTBOX_PENDING)

    def record(*ids: str) -> None:
        now = datetime.now(timezone.utc).replace(microsecond=0)  # (system_clock's)
        store.commit_poll(
            poll("a", now=now, url=url, alerts=tuple(alert(i, "a", ("hook",)) for i in ids))
        )

    try:
        d._update_gauges()  # the start: nothing pending yet, each sink at 0
        assert gauge() == {
            'feedwatch_outbox_pending{sink="hook"} 0',
            'feedwatch_outbox_pending{sink="log"} 0',
        }
        record("x1", "x2")
        asyncio.run(d._deliver_job())  # 503: both wait for their retry
        assert len(webhook_receiver.received()) >= 1
        assert store.sink_counts()["hook"].pending == 2
        assert 'feedwatch_outbox_pending{sink="hook"} 2' in gauge()
        for n in (4, 6):
            record(f"y{n}", f"z{n}")  # recorded during the backoff: nothing is sent
            sent = len(webhook_receiver.received())
            asyncio.run(d._deliver_job())
            assert len(webhook_receiver.received()) == sent
            assert store.sink_counts()["hook"].pending == n
            assert gauge() == {
                f'feedwatch_outbox_pending{{sink="hook"}} {n}',
                'feedwatch_outbox_pending{sink="log"} 0',
            }
    finally:
        store.close()


def test_the_last_success_gauge_is_seeded_from_the_state_at_start_and_reload(tmp_path, feed_server):
    """feedwatch_last_success_timestamp_seconds{feed} was set only by a successful
    poll: after a restart a feed still failing had no series, so the usual alert
    (time() - feedwatch_last_success_timestamp_seconds > N) went silent for every
    broken feed. The start (and a reload) now set it from the state's last success.
    (In process.)"""
    from feedwatch import metrics
    from feedwatch.config import load_config
    from feedwatch.daemon import Daemon as FeedDaemon
    from feedwatch.store import SqliteStore
    from tests.test_store import poll

    cfg = write_config(tmp_path, feed_server, ["a", "b", "c"])
    config = load_config(cfg)
    store = SqliteStore(tmp_path / "state.db")
    ok_at = datetime(2024, 11, 22, 10, 0, 0, tzinfo=timezone.utc)
    for name in ("a", "b"):
        store.commit_poll(poll(name, now=ok_at, url=feed_server.url("/" + name)))
    store.record_failure(
        "a", feed_server.url("/a"), ok_at + timedelta(hours=1), http_status=500,
        error="HTTP 500", next_poll=None,
    )  # fmt: skip
    metrics.LAST_SUCCESS.clear()
    d = FeedDaemon(config, lambda: config)
    d.store = store
    try:
        d._update_gauges()  # the start
        stamp = int(ok_at.timestamp())
        assert _series(metrics.LAST_SUCCESS) == {  # c never succeeded: no series
            f'feedwatch_last_success_timestamp_seconds{{feed="a"}} {stamp}',
            f'feedwatch_last_success_timestamp_seconds{{feed="b"}} {stamp}',
        }
        metrics.LAST_SUCCESS.clear()
        d._update_gauges()  # a reload, the hourly upkeep
        assert f'feedwatch_last_success_timestamp_seconds{{feed="a"}} {stamp}' in _series(
            metrics.LAST_SUCCESS
        )
    finally:
        store.close()


def test_metrics_and_healthz(tmp_path, feed_server, start_daemon):
    from tests.feedserver import free_port

    port = free_port()
    feed_server.set("/a", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a"], extra=f'metrics_listen = "127.0.0.1:{port}"')
    d = start_daemon(cfg)
    wait_for(lambda: d.has("feed.polled", feed="a"), what="a poll")
    base = f"http://127.0.0.1:{port}"
    text = wait_for(
        lambda: (
            (r := httpx.get(base + "/metrics")).status_code == 200
            and 'feedwatch_polls_total{feed="a",result=' in r.text
            and r.text
        ),
        what="metrics",
    )
    assert "feedwatch_poll_duration_seconds_bucket" in str(text)
    assert httpx.get(base + "/healthz").text.strip() == "ok"
    assert d.stop() == 0


def test_a_reload_moves_the_metrics_endpoint_or_keeps_it_if_the_new_port_is_taken(
    tmp_path, feed_server, start_daemon
):
    """metrics_listen edited and reloaded: served at the new address (it stayed at the
    old one until a restart); a taken port is an error in the log and the old address
    is kept; parse_workers, which only a restart changes, is named in a warning."""
    import socket

    from tests.feedserver import free_port

    first, second = free_port(), free_port()
    feed_server.set("/a", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a"], extra=f'metrics_listen = "127.0.0.1:{first}"')
    d = start_daemon(cfg)

    def healthy(port: int) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(lambda: healthy(first), what="metrics on the first port")
    text = cfg.read_text()
    cfg.write_text(text.replace(str(first), str(second)))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: healthy(second), what="metrics on the second port")
    assert not healthy(first)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        cfg.write_text(
            text.replace(str(first), str(busy)).replace(
                "[feedwatch]\n", "[feedwatch]\nparse_workers = 1\n"
            )
        )
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: d.has("metrics.listen_failed"), what="the taken port refused")
        wait_for(lambda: d.has("config.restart_needed"), what="parse_workers named")
        assert healthy(second)
    assert d.stop() == 0


def test_a_metrics_address_in_use_at_start_is_one_clear_error_and_exit_1(
    tmp_path, feed_server, start_daemon
):
    """`run` crashed with a 40-line traceback; now one `daemon.start_failed` line naming
    the address, exit 1, nothing left behind (no lock held, no process on stderr)."""
    import socket

    feed_server.set("/a", rss([entry(1)]))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        cfg = write_config(
            tmp_path, feed_server, ["a"], extra=f'metrics_listen = "{busy}"\nparse_workers = 2'
        )
        r = run_feedwatch("-c", str(cfg), "run", timeout=30)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    events = [json.loads(line) for line in r.stderr.splitlines()]
    (failed,) = [e for e in events if e["event"] == "daemon.start_failed"]
    assert failed["listen"] == busy and failed["level"] == "error"
    assert busy in failed["error"] and "in use" in failed["error"]
    assert feed_server.count("/a") == 0
    d = start_daemon(cfg)  # the lock was let go, the address is free now
    wait_for(lambda: d.has("daemon.started"), what="a start once the address is free")
    assert d.stop() == 0


def _descendants(pid: int) -> set[int]:
    """The processes under ``pid`` still running (a zombie is not)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_bytes().rsplit(b")", 1)[-1].split()
        except OSError:
            continue
        if fields[0] != b"Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, pp in parents.items():
            if pp == parent and child not in found:
                found.add(child)
                todo.append(child)
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigterm_to_the_daemon_alone_ends_its_parse_workers(tmp_path, feed_server, start_daemon):
    """Under KillMode=mixed only the daemon gets SIGTERM: its parse workers (and their
    fork server) must end with it, not live on until systemd's SIGKILL."""
    feeds = ["a", "b", "c"]
    body = rss([entry(i) for i in range(1500)])
    for name in feeds:
        feed_server.set(f"/{name}", body)
    cfg = write_config(tmp_path, feed_server, feeds, extra="parse_workers = 2")
    cfg.write_text(cfg.read_text().replace('interval = "1s"', 'interval = "4s"'))
    # a check stores the same next poll for the three: the daemon polls them together,
    # and a namespace added to their root has each parsed again in full (the same
    # entries: no alert), so two bodies wait for a parse at once and workers start
    assert run_feedwatch("-c", str(cfg), "check", timeout=60).returncode == 0
    changed = body.replace(b"<rss ", b'<rss xmlns:dc="http://purl.org/dc/elements/1.1/" ', 1)
    for name in feeds:
        feed_server.set(f"/{name}", changed)
    d = start_daemon(cfg)
    children = wait_for(
        lambda: len(_descendants(d.proc.pid)) >= 2 and _descendants(d.proc.pid),
        timeout=30,
        what="the parse workers",
    )
    os.kill(d.proc.pid, signal.SIGTERM)
    assert d.proc.wait(timeout=20) == 0
    wait_for(
        lambda: not any(_alive(c) for c in children),
        timeout=10,
        what=f"the daemon's children {sorted(children)} to end",
    )


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return False


def test_sd_notify_ready_and_stopping(tmp_path, feed_server, start_daemon):
    import socket

    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    feed_server.set("/a", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a"])
    d = start_daemon(cfg, env={"NOTIFY_SOCKET": str(sock_path)})
    msgs = [sock.recv(4096).decode()]
    assert "READY=1" in msgs[0]
    d.proc.send_signal(signal.SIGHUP)
    msgs.append(sock.recv(4096).decode())
    assert "RELOADING=1" in msgs[-1] and "MONOTONIC_USEC=" in msgs[-1]
    msgs.append(sock.recv(4096).decode())
    assert "READY=1" in msgs[-1]
    d.proc.send_signal(signal.SIGTERM)
    msgs.append(sock.recv(4096).decode())
    assert "STOPPING=1" in msgs[-1]
    assert d.proc.wait(timeout=15) == 0
    sock.close()


def test_a_daemon_whose_stderr_is_gone_alerts_and_stops(tmp_path, feed_server, start_daemon):
    """A journal stream that broke: every log line raised; the daemon then ignored
    SIGTERM (its stop logs first) and had to be killed."""
    feed_server.set("/news", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["news"])
    d = start_daemon(cfg, stderr=subprocess.PIPE)
    assert d.proc.stderr is not None
    while b'"feed.polled"' not in d.proc.stderr.readline():  # the baseline
        assert d.proc.poll() is None
    d.proc.stderr.close()
    feed_server.set("/news", rss([entry(1), entry(2, title="After the journal broke")]))
    wait_for(lambda: alerts(tmp_path), what="the alert")
    assert [a["entry"]["title"] for a in alerts(tmp_path)] == ["After the journal broke"]
    assert d.stop(timeout=10) == 0


def test_a_thread_still_busy_at_the_end_does_not_keep_the_daemon_alive():
    """A parse that outlived shutdown_timeout (a thread cannot be cancelled) kept the
    process alive after 'daemon.stopped': the interpreter's exit joined its thread."""
    code = (
        "import threading, feedwatch.daemon as d\n"
        "stuck = threading.Event()\n"
        "threading.Thread(target=stuck.wait, name='feedwatch-parse_0').start()\n"
        "d._exit_past_stuck_threads(0)\n"
        "print('returned')\n"
    )
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "returned" not in r.stdout
    assert time.monotonic() - started < 10
    assert "daemon.thread_abandoned" in r.stdout + r.stderr


def _full_fifo(path: Path) -> int:
    """A FIFO at ``path`` whose reader (the descriptor returned) reads nothing: full."""
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(writer, b"x" * 65536)
    os.close(writer)
    return reader


def _writing_to_a_pipe(pid: int) -> bool:
    """Some thread of ``pid`` waits in a pipe write (Linux: its wchan; "pipe_wait" on
    kernels before 5.6)."""
    tasks = Path(f"/proc/{pid}/task")
    wchans = []
    for task in tasks.iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            wchans.append((task / "wchan").read_text())
    return any("pipe_write" in w or w == "pipe_wait" for w in wchans)


def test_sigterm_while_a_jsonl_write_waits_for_its_reader_exits_in_time(
    tmp_path, feed_server, start_daemon
):
    """A jsonl sink writing to a FIFO whose reader reads nothing: the write waits in a
    thread, and asyncio.run joined that thread with no limit, so the daemon never
    ended after 'daemon.stopped'. Now it ends; the alert stays pending and the next
    run delivers it, once."""
    fifo = tmp_path / "alerts.fifo"
    reader = _full_fifo(fifo)
    try:
        cfg = first_and_second(tmp_path, feed_server)
        text = cfg.read_text().replace('"5s"', '"1s"').replace("alerts.jsonl", "alerts.fifo")
        cfg.write_text(text)
        d = start_daemon(cfg)
        wait_for(lambda: _writing_to_a_pipe(d.proc.pid), what="the write waiting for the reader")
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 4  # shutdown_timeout 1 s, then 1 s for threads
        assert d.has("daemon.thread_abandoned")
        held = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(reader, 65536):
                held += chunk
        assert held.strip(b"x") == b""  # the filler only: no alert line got through
        r = run_feedwatch("-c", str(cfg), "check", timeout=30)
        assert r.returncode == 0, r.stderr
        lines = os.read(reader, 65536).decode().splitlines()
        assert [json.loads(x)["entry"]["title"] for x in lines] == ["First", "Second"]
    finally:
        os.close(reader)


def test_a_long_line_a_stop_cut_in_a_fifo_does_not_spoil_the_next_line(
    tmp_path, feed_server, start_daemon
):
    """A line longer than PIPE_BUF goes into a pipe as room frees; a stop that ends
    the write half way leaves half a line with the reader. The next run sent the line
    again right after it, so the reader saw one broken line holding both, and lost
    that alert. Now the stop is noted on the delivery and the next send starts with a
    newline: the half line stands alone, and every alert arrives as a whole line."""
    fifo = tmp_path / "alerts.fifo"
    reader = _full_fifo(fifo)
    try:
        long = "A long story. " * 2000  # ~28 KB: longer than the room the reader makes
        feed_server.set(
            "/a", rss([entry(1, title="First", summary=long), entry(2, title="Second")])
        )
        cfg = write_config(tmp_path, feed_server, ["a"], extra='first_poll = "alert"')
        text = cfg.read_text().replace('"5s"', '"1s"').replace("alerts.jsonl", "alerts.fifo")
        cfg.write_text(text)
        d = start_daemon(cfg)
        wait_for(lambda: _writing_to_a_pipe(d.proc.pid), what="the write waiting for the reader")
        room = os.read(reader, 8192)  # the filler: room for 8 KiB of the line
        assert room.strip(b"x") == b""
        wait_for(lambda: _writing_to_a_pipe(d.proc.pid), what="the write waiting again")
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=10) == 0
        held = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(reader, 65536):
                held += chunk
        half = held.lstrip(b"x")
        assert half.startswith(b"{") and b"\n" not in half  # half a line went through
        r = run_feedwatch("-c", str(cfg), "check", timeout=30)
        assert r.returncode == 0, r.stderr
        got = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(reader, 65536):
                got += chunk
        lines = (half + got).split(b"\n")
        assert lines[0] == half  # the half line alone
        assert [json.loads(x)["entry"]["title"] for x in lines[1:] if x] == ["First", "Second"]
    finally:
        os.close(reader)


def test_a_reload_rejected_for_its_state_keeps_the_running_logging(
    tmp_path, feed_server, start_daemon
):
    """Loading a config sets its logging; a reload then rejected (another state file)
    left the rejected config's logging in place: console lines, and at log_level =
    "error" no poll, delivery or stop was logged any more."""
    feed_server.set("/a", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a"])
    d = start_daemon(cfg)
    wait_for(lambda: d.has("feed.polled", feed="a"), what="first poll")
    good = cfg.read_text()
    cfg.write_text(
        good.replace("state.db", "other.db").replace(
            'log_format = "json"', 'log_format = "console"\nlog_level = "error"'
        )
    )
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.has("config.reload_failed"), what="the rejection, in JSON")
    # located as a validate error is: FILE:LINE: key: message
    line = cfg.read_text().splitlines().index(f'state = "{tmp_path}/other.db"') + 1
    (failed,) = [e for e in d.events() if e.get("event") == "config.reload_failed"]
    assert failed["problems"] == [
        f"{cfg}:{line}: feedwatch.state: changed: restart feedwatch to use another state file"
    ]
    assert failed["config"] == str(cfg)
    n = len([e for e in d.events() if e.get("event") == "feed.polled"])
    wait_for(
        lambda: len([e for e in d.events() if e.get("event") == "feed.polled"]) > n,
        what="polls still logged at info, in JSON",
    )
    assert d.stop() == 0
    assert d.has("daemon.stopped")


def test_a_reload_reads_the_file_the_daemon_started_with(tmp_path, feed_server, start_daemon):
    """Started without -c from a directory D, on ~/.config/feedwatch/config.toml: a
    feedwatch.toml created in D later (`feedwatch init > feedwatch.toml`) was what the
    next reload loaded, the real feeds "removed". The file is found once, at the start,
    and both the start and the reload name it."""
    feed_server.set("/a", rss([entry(1)]))
    real = tmp_path / "xdg" / "feedwatch" / "config.toml"
    real.parent.mkdir(parents=True)
    real.write_text(write_config(tmp_path, feed_server, ["a"]).read_text())
    where = tmp_path / "D"
    where.mkdir()
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "FEEDWATCH_CONFIG": ""}
    d = start_daemon(None, env=env, cwd=where)
    wait_for(lambda: d.has("feed.polled", feed="a"), what="the first poll")
    assert d.has("daemon.started", config=str(real))
    other = write_config(tmp_path, feed_server, ["other"]).read_text()
    (where / "feedwatch.toml").write_text(other)
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.has("config.reloaded"), what="the reload")
    assert d.has("config.reloaded", config=str(real), added=0, removed=0, feeds=1)
    n = feed_server.count("/a")
    wait_for(lambda: feed_server.count("/a") > n, what="a still polled")
    assert feed_server.count("/other") == 0
    assert d.stop() == 0


def test_a_reload_logs_the_warnings_a_start_logs(tmp_path, feed_server, start_daemon):
    """A reload that added a second feed on one URL and a command sink whose program
    does not exist logged only `config.reloaded`; `validate` warned of both. The start
    and the reload log the same warnings now, jitter and rule warnings included."""
    feed_server.set("/a", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a"])
    d = start_daemon(cfg)
    wait_for(lambda: d.has("feed.polled", feed="a"), what="the first poll")
    warnings = ("sink.will_fail", "config.same_url", "config.jitter_cut", "config.rule_warning")
    assert not any(e.get("event") in warnings for e in d.events())
    cfg.write_text(
        cfg.read_text()
        + '\n[sinks.notify]\ntype = "command"\nargv = ["/nonexistent/notify-send"]\n'
        + f'\n[[feeds]]\nname = "a2"\nurl = "{feed_server.url("/a")}"\n'
        + f'\n[[feeds]]\nname = "b"\nurl = "{feed_server.url("/b")}"\n'
        + 'jitter = "1h"\nnotify_on = []\nkeywords = []\n'
    )
    validate = run_feedwatch("-c", str(cfg), "validate", timeout=30)
    assert validate.returncode == 0 and validate.stderr.count("warning:") == 5, validate.stderr
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.has("config.reloaded"), what="the reload")
    events = d.events()
    assert [e["problem"] for e in events if e.get("event") == "sink.will_fail"] == [
        "sink notify: program /nonexistent/notify-send does not exist"
    ]
    (same,) = [e for e in events if e.get("event") == "config.same_url"]
    assert same["problem"].startswith('feeds "a" and "a2" poll the same URL')
    (jitter,) = [e for e in events if e.get("event") == "config.jitter_cut"]
    line = cfg.read_text().splitlines().index('jitter = "1h"') + 1
    assert jitter["problem"].startswith(
        f'{cfg}:{line}: feeds[2].jitter: feed "b": its jitter 1h is longer than its interval'
    )
    rule, emptied = [e for e in events if e.get("event") == "config.rule_warning"]
    assert rule["problem"].startswith('feed "b": notify_on = [] alerts no new or updated entry')
    line = cfg.read_text().splitlines().index("keywords = []") + 1
    assert emptied["problem"].startswith(
        f'{cfg}:{line}: feeds[2].keywords: feed "b": keywords = [] is no rule, so it alerts'
    )
    assert all(e["level"] == "warning" for e in events if e.get("event") in warnings)
    assert d.stop() == 0


def test_a_reload_refuses_an_emptied_config_and_one_without_its_sinks(
    tmp_path, feed_server, start_daemon
):
    """`: > feedwatch.toml; kill -HUP` (an editor that writes in two steps, a .path
    unit's reload in between) was a valid config: `config.reloaded removed 2`, every
    feed stopped and every sink gone. A reload now refuses a config with no feeds, or
    no sinks, while the running one has some: an error naming the file, the running
    config kept."""
    for name in ("a", "b"):
        feed_server.set("/" + name, rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a", "b"])
    # the state where an empty config puts it too (as $STATE_DIRECTORY under systemd)
    good = cfg.read_text().replace(f'state = "{tmp_path}/state.db"\n', "")
    cfg.write_text(good)
    d = start_daemon(cfg, env={"XDG_STATE_HOME": str(tmp_path / "xs")})
    wait_for(lambda: d.has("feed.polled", feed="b"), what="the first polls")

    def refused(n: int) -> dict:
        return wait_for(
            lambda: (
                len(failed := [e for e in d.events() if e.get("event") == "config.reload_failed"])
                >= n
                and failed[n - 1]
            ),
            what=f"rejection {n}",
        )

    no_feeds = (
        f"{cfg}: the new config has no feeds (the running one has 2): every feed would"
        " stop; an empty or cut-short file? Restart feedwatch to run with no feeds"
    )
    no_sinks = (
        f"{cfg}: sinks: the new config has none (the running one has 1): alerts would be"
        " recorded and sent nowhere; restart feedwatch to run without sinks"
    )
    cfg.write_text("")
    d.proc.send_signal(signal.SIGHUP)
    empty = refused(1)
    assert empty["level"] == "error" and empty["config"] == str(cfg)
    assert empty["problems"] == [no_feeds, no_sinks]
    assert empty["hint"] == "the running config is kept"
    cfg.write_text(good[: good.index("[[feeds]]")])  # cut short before the feeds
    d.proc.send_signal(signal.SIGHUP)
    assert refused(2)["problems"] == [no_feeds]
    # feeds that name no sink go to every sink: with none, nowhere
    cfg.write_text(good[: good.index("[sinks.log]")] + good[good.index("[[feeds]]") :])
    d.proc.send_signal(signal.SIGHUP)
    assert refused(3)["problems"] == [no_sinks]
    assert not d.has("config.reloaded")
    for name in ("a", "b"):
        n = feed_server.count("/" + name)
        wait_for(lambda n=n, name=name: feed_server.count("/" + name) > n, what=f"{name} polled")
    assert d.stop() == 0


def test_the_feeds_gauge_follows_each_poll(tmp_path, feed_server, start_daemon):
    """feedwatch_feeds{state} was set at the start (every feed "new"), at a reload and
    at the hourly upkeep: `status` said ok and error while /metrics said "new"."""
    from tests.feedserver import free_port

    port = free_port()
    feed_server.set("/a", rss([entry(1)]))
    feed_server.set("/b", "oops", status=500)
    cfg = write_config(
        tmp_path, feed_server, ["a", "b"], extra=f'metrics_listen = "127.0.0.1:{port}"'
    )
    d = start_daemon(cfg)

    def states() -> dict[str, int]:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        prefix = 'feedwatch_feeds{state="'
        return {
            line[len(prefix) :].split('"')[0]: int(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(prefix)
        }

    wait_for(lambda: d.has("feed.polled", feed="b"), what="b's first poll")
    wait_for(
        lambda: {k: v for k, v in states().items() if v} == {"ok": 1, "error": 1},
        what="a ok and b error on /metrics",
        timeout=10,
    )
    feed_server.set("/b", rss([entry(1)]))
    wait_for(
        lambda: {k: v for k, v in states().items() if v} == {"ok": 2},
        what="b ok again on /metrics",
        timeout=10,
    )
    assert d.stop() == 0


def test_a_removed_sink_s_held_deliveries_are_named_at_the_reload_and_in_status(
    tmp_path, feed_server, start_daemon, webhook_receiver
):
    """A sink taken out of the config (or renamed) keeps its pending deliveries until
    it comes back or give_up_after passes: `status` listed it like any other, and the
    reload said nothing of them."""
    hook = webhook_receiver
    hook.script(status=503)
    feed_server.set("/a", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a"])
    base = cfg.read_text()
    with_webhook(cfg, f"{hook.url}/in")
    d = start_daemon(cfg)
    wait_for(lambda: d.has("feed.polled", feed="a", result="ok"), what="the baseline")
    feed_server.set("/a", rss([entry(1), entry(2, title="Held")]))
    wait_for(lambda: hook.received(), what="a failed delivery")
    cfg.write_text(base)
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.has("config.reloaded"), what="the reload")
    (held,) = [e for e in d.events() if e.get("event") == "sink.removed_held"]
    assert (held["level"], held["sink"], held["pending"]) == ("warning", "hook", 1)
    assert "until it is back in the config or give_up_after (3d) passes" in held["hint"]
    status = run_feedwatch("-c", str(cfg), "status", "--json", timeout=30)
    sinks = {s["name"]: s for s in json.loads(status.stdout)["sinks"]}
    assert sinks["hook"] == {
        "name": "hook",
        "pending": 1,
        "delivered": 0,
        "dead": 0,
        "removed": True,
    }
    assert sinks["log"]["removed"] is False
    text = run_feedwatch("-c", str(cfg), "status", timeout=30).stdout
    (row,) = [line for line in text.splitlines() if line.startswith("hook")]
    assert row.split()[:4] == ["hook", "1", "0", "0"]
    assert row.endswith("  (removed from the config)")
    assert d.stop() == 0


_SLOW_TEXT = "Forces shelled the city overnight, officials said on Tuesday, and units were on. "


def _slow_version(v: int, n: int = 100) -> bytes:
    """``n`` entries whose ~4 KB summaries (commas, no "x") take (.*,){3}x, which
    passes validate, seconds each: every summary uses up its 0.1 s."""
    return rss(
        [entry(i, title=f"Story {i}", summary=f"v{v}. " + _SLOW_TEXT * 50) for i in range(n)]
    )


def _slow_poll_beside_another(tmp_path, feed_server, start_daemon, slow_config: str):
    """Feeds "other" and "slow" (``slow_config`` added to slow's block); slow's every
    entry is updated once it is baselined, and "other" must be polled twice within 5 s
    meanwhile. The daemon and slow's changed poll's log event."""
    feed_server.set("/other", rss([entry(1)]))
    feed_server.set("/slow", _slow_version(1))
    cfg = write_config(tmp_path, feed_server, ["other", "slow"])
    cfg.write_text(cfg.read_text() + slow_config)
    d = start_daemon(cfg)
    wait_for(lambda: d.has("feed.polled", feed="slow", result="ok"), what="slow's baseline")
    slow = feed_server.count("/slow")
    feed_server.set("/slow", _slow_version(2))  # every entry updated
    wait_for(lambda: feed_server.count("/slow") > slow, what="slow's changed poll")
    other = feed_server.count("/other")
    wait_for(lambda: feed_server.count("/other") >= other + 2, timeout=5, what="other polled")
    changed = wait_for(
        lambda: [e for e in d.events() if e.get("event") == "feed.polled" and e.get("updated")],
        what="slow's changed poll done",
    )
    assert changed[0]["feed"] == "slow" and changed[0]["updated"] == 100
    assert changed[0]["duration"] < 3
    return d, changed[0]


def _stops_in_time_during_a_slow_poll(d, feed_server) -> None:
    """SIGTERM while slow's next such poll runs: out within shutdown_timeout (5 s)."""
    slow = feed_server.count("/slow")
    feed_server.set("/slow", _slow_version(3))
    wait_for(lambda: feed_server.count("/slow") > slow, what="slow's next changed poll")
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 5


def test_a_slow_regex_on_many_updated_entries_holds_neither_the_other_feeds_nor_sigterm(
    tmp_path, feed_server, start_daemon
):
    """A /regex/ that runs out of time on every entry of a big update: its poll's regex
    time is capped (about 1 s, not 0.1 s x 100 entries), so the other feed is polled
    at its pace and SIGTERM ends the daemon within shutdown_timeout; the entries are
    still stored."""
    d, changed = _slow_poll_beside_another(
        tmp_path, feed_server, start_daemon, 'match = ["bad"]\n[rules.bad]\nany = ["/(.*,){3}x/"]\n'
    )
    assert changed["alerts"] == 0
    spent = [e for e in d.events() if e.get("event") == "rule.regex_budget_spent"]
    assert [(e["feed"], e["rule"], e["term"]) for e in spent] == [("slow", "bad", "/(.*,){3}x/")]
    with sqlite3.connect(tmp_path / "state.db") as db:  # stored as usual
        rows = db.execute("SELECT summary FROM entries WHERE feed = 'slow'").fetchall()
    assert len(rows) == 100 and all(r[0].startswith("v2.") for r in rows)
    # (whether that next poll reached its regexes before the SIGTERM depends on the
    # machine's load: its budget event is not asserted, the stop in time is)
    _stops_in_time_during_a_slow_poll(d, feed_server)


def test_a_slow_ignore_text_regex_holds_neither_the_other_feeds_nor_sigterm(
    tmp_path, feed_server, start_daemon
):
    """The same for an ignore_text /regex/: it runs in the comparison of each changed
    entry (0.1 s a text, several texts an entry) with no cap on the poll, and a big
    update held the daemon a minute. Its poll's regex time is capped too; past it the
    texts are compared whole, so the edits alert."""
    d, _ = _slow_poll_beside_another(
        tmp_path, feed_server, start_daemon, 'ignore_text = ["/(.*,){3}x/"]\n'
    )
    spent = [e for e in d.events() if e.get("event") == "ignore_text.budget_spent"]
    assert [(e["feed"], e["term"]) for e in spent] == [("slow", "/(.*,){3}x/")]
    _stops_in_time_during_a_slow_poll(d, feed_server)


def _signal_at_lock(tmp_path: Path, d: Daemon, sig: int) -> None:
    """``sig`` to the daemon as soon as it holds the state's lock (its pid in the lock
    file): within its start, before it has opened the state."""
    lock = tmp_path / "state.db.lock"
    pid = f"{d.proc.pid}\n"
    deadline = time.monotonic() + 30
    while not (lock.exists() and lock.read_text() == pid):
        assert d.proc.poll() is None and time.monotonic() < deadline, "never took the lock"
        time.sleep(0.0005)
    d.proc.send_signal(sig)


def test_a_signal_during_the_start_is_a_stop_or_a_reload(tmp_path, feed_server, start_daemon):
    """A SIGHUP that came while the daemon was starting (after it took the state's lock)
    killed it (the default action: the handlers were set at the end of the start), a
    SIGTERM too (no log, no exit status), and a SIGINT left asyncio's tracebacks. Now
    a SIGHUP is the reload, run once the start is done, and a SIGTERM a clean stop."""
    feed_server.set("/a", rss([entry(1)]))
    cfg = write_config(tmp_path, feed_server, ["a"])
    d = start_daemon(cfg)
    _signal_at_lock(tmp_path, d, signal.SIGHUP)
    wait_for(lambda: d.has("config.reloaded"), what="the reload asked during the start")
    assert d.proc.poll() is None
    assert d.stop() == 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        d = start_daemon(cfg)
        _signal_at_lock(tmp_path, d, sig)
        assert d.proc.wait(timeout=30) == 0
        assert d.has("daemon.stopping", signal=signal.Signals(sig).name)
        assert all(line.startswith("{") for line in Path(d.log.name).read_text().splitlines())


def test_the_upkeep_waits_for_a_state_locked_elsewhere_with_the_loop_running(tmp_path, feed_server):
    """Another process held SQLite's write lock (an admin's `sqlite3` shell in a
    transaction, a long VACUUM) as the hourly upkeep began: each prune step's BEGIN
    slept in SQLite's busy handler on the event loop's thread, so the daemon fetched
    nothing, handled no signal and sent no watchdog ping for up to 10 s. Now the step
    waits with the loop running and prunes once the lock is let go. (In process.)"""
    import asyncio

    from feedwatch.config import load_config
    from feedwatch.daemon import Daemon as FeedDaemon
    from feedwatch.store import SqliteStore
    from tests.helpers import HeldWriteLock, LoopLateness
    from tests.test_store import alert, poll

    cfg = write_config(tmp_path, feed_server, ["a"], extra='retention = "1h"')
    config = load_config(cfg)
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    old = datetime.now(timezone.utc) - timedelta(hours=2)
    ids = [f"x{i:02}" for i in range(10)]
    store.commit_poll(poll("a", now=old, alerts=tuple(alert(i, "a", ("log",)) for i in ids)))
    store.mark_delivered("log", ids, old)
    d = FeedDaemon(config, lambda: config)
    d.store = store
    lock = HeldWriteLock(path, seconds=2.0)

    async def main() -> tuple[LoopLateness, float]:
        async with LoopLateness() as loop:
            lock.start()
            await asyncio.wait_for(d._maintenance_job(), 20)
            done = time.monotonic()
        return loop, done

    try:
        loop, done = asyncio.run(main())
        assert loop.late < 0.5, f"the event loop stood still for {loop.late:.2f} s"
        assert loop.ticks >= 20  # it ticked through the hold (2 s: ~40 ticks)
        assert lock.released is not None and done >= lock.released
        assert store.alerts_for("a", limit=100) == []  # pruned once the lock was free
    finally:
        lock.close()
        store.close()


def test_a_stop_stores_the_mark_the_locked_state_refused_so_the_restart_sends_nothing_again(
    tmp_path, feed_server, start_daemon, webhook_receiver
):
    """A webhook taken while another process held SQLite's write lock past the busy
    limit: its delivered mark waited in memory (`delivery.mark_failed`). A SIGTERM then
    dropped it: the delivery run waiting for the lock was cancelled at shutdown_timeout
    and nothing tried the mark again, so the restart sent the alert a second time. Now
    the stop tries once more (the busy limit at most, the loop running) and stores it
    once the lock is let go; the restart sends only what is new."""
    from tests.helpers import HeldWriteLock

    hook = webhook_receiver
    hook.script(delay=1.0)  # the lock is taken while the receiver holds the answer
    feed_server.set("/a", rss([entry(1, title="Once")]))
    cfg = write_config(tmp_path, feed_server, ["a"], extra='first_poll = "alert"')
    cfg.write_text(cfg.read_text().replace('shutdown_timeout = "5s"', 'shutdown_timeout = "1s"'))
    with_webhook(cfg, f"{hook.url}/in")
    d = start_daemon(cfg)
    hook.wait_for(1, timeout=20)
    lock = HeldWriteLock(tmp_path / "state.db", seconds=600)
    try:
        wait_for(lambda: d.has("delivery.mark_failed", sink="hook"), 30, "the mark refused")
        d.proc.send_signal(signal.SIGTERM)
        # the delivery run waiting for the lock is cut at shutdown_timeout: then let go
        wait_for(lambda: d.has("daemon.abandoned"), 15, "the stop's wait over")
        lock.release()
        assert d.proc.wait(timeout=20) == 0
    finally:
        lock.close()
    assert d.has("delivery.mark_stored", sink="hook"), d.events()
    assert not d.has("delivery.unmarked_lost")
    assert len(hook.received()) == 1
    hook.script()
    feed_server.set("/a", rss([entry(1, title="Once"), entry(2, title="New")]))
    d = start_daemon(cfg)
    got = hook.wait_for(2, timeout=30)  # oldest first: a pending "Once" would go before
    assert [json.loads(r.body)["entry"]["title"] for r in got] == ["Once", "New"]
    assert d.stop() == 0
    assert len(hook.received()) == 2
