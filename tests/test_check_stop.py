"""`feedwatch check` stopped by a signal (cron's `timeout`, systemd stopping a oneshot
service, Ctrl-C): the sends under way end and are marked, nothing new starts, what is
left waits for the next check. Real subprocesses, a real feed server and webhook."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from feedwatch.testing import entry, rss
from tests.feedserver import FeedServer, feed_server  # noqa: F401
from tests.helpers import run_feedwatch, wait_for
from tests.receivers import Receiver, webhook_receiver  # noqa: F401

pytestmark = pytest.mark.timeout(120)

ENTRIES = 10


def _config(tmp: Path, srv: FeedServer, hook: Receiver, feeds: list[str], extra: str = "") -> Path:
    cfg = tmp / "feedwatch.toml"
    blocks = "".join(f'\n[[feeds]]\nname = "{n}"\nurl = "{srv.url("/" + n)}"\n' for n in feeds)
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp}/state.db"\nlog_format = "json"\nfirst_poll = "alert"\n'
        f'{extra}\n[sinks.hook]\ntype = "webhook"\nurl = "{hook.url}/in"\n{blocks}'
    )
    return cfg


class Check:
    """`feedwatch check` running, its stderr (JSON log lines) in a file."""

    def __init__(self, cfg: Path, tmp: Path) -> None:
        self.err = tmp / f"check-{id(self)}.err"
        with self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "feedwatch", "-c", str(cfg), "check"],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def events(self) -> list[dict]:
        out = []
        for line in self.err.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def logged(self, event: str) -> dict | None:
        return next((e for e in self.events() if e.get("event") == event), None)


def _statuses(tmp: Path) -> Counter[str]:
    with sqlite3.connect(tmp / "state.db") as db:
        return Counter(s for (s,) in db.execute("SELECT status FROM deliveries"))


def _sent_ids(hook: Receiver) -> list[str]:
    return [json.loads(r.body)["id"] for r in hook.received()]


def test_sigterm_mid_delivery_ends_the_send_under_way_and_the_next_check_sends_the_rest(
    tmp_path,
    feed_server,  # noqa: F811
    webhook_receiver,  # noqa: F811
):
    """SIGTERM as the first alert is delivered: the send under way ends and is marked,
    no other starts, exit 143 with a log line saying what is left; the next check sends
    the rest. Every alert reaches the receiver exactly once. (Before, SIGTERM killed
    `check` mid-send: the alert the receiver had got was never marked, and the next
    check sent it again.)"""
    hook = webhook_receiver
    hook.script(delay=0.5)
    feed_server.set("/f", rss([entry(i, title=f"Story {i}") for i in range(ENTRIES)]))
    cfg = _config(tmp_path, feed_server, hook, ["f"], 'shutdown_timeout = "20s"')
    check = Check(cfg, tmp_path)
    wait_for(lambda: check.logged("alert.delivered"), timeout=30, what="the first delivery")
    wait_for(lambda: len(hook.received()) >= 2, timeout=10, what="the second send under way")
    check.proc.send_signal(signal.SIGTERM)
    assert check.proc.wait(timeout=30) == 128 + signal.SIGTERM, check.err.read_text()

    stopped = check.logged("check.stopped")
    assert stopped is not None, check.err.read_text()
    assert stopped["signal"] == "SIGTERM"
    got = len(hook.received())
    assert 2 <= got < ENTRIES
    # every alert the receiver got is marked delivered; the rest wait, none lost
    assert _statuses(tmp_path) == Counter(delivered=got, pending=ENTRIES - got)
    assert stopped["deliveries_sent"] == got and stopped["cut_short"] is False
    assert stopped["deliveries_pending"] == ENTRIES - got
    assert "Traceback" not in check.err.read_text()

    hook.script(delay=0)
    r = run_feedwatch("-c", str(cfg), "check", timeout=60)
    assert r.returncode == 0, r.stderr
    ids = _sent_ids(hook)
    assert len(ids) == ENTRIES and len(set(ids)) == ENTRIES, Counter(ids).most_common(2)
    assert _statuses(tmp_path) == Counter(delivered=ENTRIES)


def test_a_second_signal_stops_check_at_once(
    tmp_path,
    feed_server,  # noqa: F811
    webhook_receiver,  # noqa: F811
):
    """SIGTERM waits for the send under way (up to shutdown_timeout, 30 s here); a
    second signal (Ctrl-C) cuts it now: that alert stays pending (sent again by the
    next check: at least once), nothing is lost."""
    hook = webhook_receiver
    hook.script(delay=30)
    feed_server.set("/f", rss([entry(i, title=f"Story {i}") for i in range(3)]))
    cfg = _config(tmp_path, feed_server, hook, ["f"], 'shutdown_timeout = "30s"')
    check = Check(cfg, tmp_path)
    hook.wait_for(1, timeout=30)
    check.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: check.logged("check.stopping"), timeout=10, what="check.stopping")
    check.proc.send_signal(signal.SIGINT)
    assert check.proc.wait(timeout=10) == 128 + signal.SIGTERM, check.err.read_text()
    assert check.logged("check.stopping_now") is not None
    assert len(hook.received()) == 1
    assert _statuses(tmp_path) == Counter(pending=3)

    hook.script(delay=0)
    r = run_feedwatch("-c", str(cfg), "check", timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(set(_sent_ids(hook))) == 3
    assert _statuses(tmp_path) == Counter(delivered=3)


def test_a_delivery_cut_short_at_shutdown_timeout_still_counts_what_it_sent(
    tmp_path,
    feed_server,  # noqa: F811
    webhook_receiver,  # noqa: F811
):
    """shutdown_timeout over while an alert's send is under way: that send is cut short
    (pending, sent again by the next check), and `check.stopped` counts the alerts sent
    and marked before it (it said "deliveries_sent": 0, the step's report lost with it)."""
    hook = webhook_receiver
    hook.script(delay=4)
    feed_server.set("/f", rss([entry(i, title=f"Story {i}") for i in range(3)]))
    cfg = _config(tmp_path, feed_server, hook, ["f"], 'shutdown_timeout = "1s"')
    check = Check(cfg, tmp_path)
    wait_for(lambda: check.logged("alert.delivered"), timeout=30, what="the first delivery")
    hook.wait_for(2, timeout=10)  # the second send under way, 4 s to its answer
    check.proc.send_signal(signal.SIGTERM)
    assert check.proc.wait(timeout=30) == 128 + signal.SIGTERM, check.err.read_text()
    stopped = check.logged("check.stopped")
    assert stopped is not None, check.err.read_text()
    assert stopped["cut_short"] is True
    assert _statuses(tmp_path) == Counter(delivered=1, pending=2)
    assert stopped["deliveries_sent"] == 1 and stopped["deliveries_pending"] == 2
    assert "Traceback" not in check.err.read_text()


def test_sigterm_during_the_polls_lets_the_one_under_way_end_and_sends_nothing(
    tmp_path,
    feed_server,  # noqa: F811
    webhook_receiver,  # noqa: F811
):
    """SIGTERM while a feed's request is out: that poll ends and is committed, no other
    poll starts and no alert is sent (they wait in the outbox); the next check polls
    the other feed and sends every alert once."""
    hook = webhook_receiver
    for name in ("a", "b"):
        feed_server.set(
            f"/{name}", rss([entry(i, title=f"{name} {i}") for i in range(2)]), delay=1.5
        )
    cfg = _config(tmp_path, feed_server, hook, ["a", "b"], "concurrency = 1")
    check = Check(cfg, tmp_path)
    wait_for(lambda: feed_server.requests, timeout=30, what="a request at the server")
    check.proc.send_signal(signal.SIGTERM)
    assert check.proc.wait(timeout=30) == 128 + signal.SIGTERM, check.err.read_text()
    assert len(feed_server.requests) == 1
    assert hook.received() == []
    assert _statuses(tmp_path) == Counter(pending=2)
    stopped = check.logged("check.stopped")
    assert stopped is not None and stopped["feeds_not_polled"] == 1, check.err.read_text()

    r = run_feedwatch("-c", str(cfg), "check", timeout=60)
    assert r.returncode == 0, r.stderr
    ids = _sent_ids(hook)
    assert len(ids) == 4 and len(set(ids)) == 4
