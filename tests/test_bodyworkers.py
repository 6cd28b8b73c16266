"""Body workers (feedwatch.bodyworkers): a big `check` hands each fetched body to a forked
process that parses, compares and stores it. The same alerts and output as one process,
and nothing lost or repeated when a worker is killed. Real `feedwatch` subprocesses, a
real feed server, real SQLite files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from feedwatch.bodyworkers import MIN_FEEDS
from feedwatch.testing import T0, entry, rss
from tests.feedserver import FeedServer, feed_server  # noqa: F401
from tests.helpers import run_feedwatch, wait_for

FEEDS = 3 * MIN_FEEDS


def _config(tmp: Path, server: FeedServer, *, workers: int, state: str) -> Path:
    cfg = tmp / f"feedwatch-{state}.toml"
    feeds = "".join(
        f'\n[[feeds]]\nname = "f{i:03d}"\nurl = "{server.url(f"/f{i:03d}.xml")}"\n'
        for i in range(FEEDS)
    )
    cfg.write_text(
        f"""
[feedwatch]
state = "{tmp}/{state}.db"
log_format = "json"
first_poll = "alert"
parse_workers = {workers}

[sinks.log]
type = "jsonl"
path = "{tmp}/{state}.jsonl"
{feeds}
"""
    )
    return cfg


def _serve(server: FeedServer, version: int, delay: float = 0.0) -> None:
    for i in range(FEEDS):
        entries = [
            entry(f"{i}-{n}", title=f"Story {n} of feed {i}", published=T0) for n in range(3)
        ]
        if version >= 2:  # an edit and a new story
            entries[0] = entry(
                f"{i}-0", title=f"Story 0 of feed {i}", summary="Corrected.", published=T0
            )
            entries.append(entry(f"{i}-new", title=f"Late story of feed {i}", published=T0))
        server.set(f"/f{i:03d}.xml", rss(entries, title=f"Feed {i}"), delay=delay)


def _check(cfg: Path) -> subprocess.CompletedProcess[str]:
    return run_feedwatch("-c", str(cfg), "check", env=dict(os.environ), timeout=120)


def _alerts(tmp: Path, state: str) -> list[dict]:
    path = tmp / f"{state}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _events(stderr: str, name: str) -> list[dict]:
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                out.append(event)
    return out


def test_body_workers_alert_and_print_exactly_as_one_process(
    tmp_path: Path,
    feed_server: FeedServer,  # noqa: F811
) -> None:
    one = _config(tmp_path, feed_server, workers=0, state="one")
    two = _config(tmp_path, feed_server, workers=2, state="two")
    for version in (1, 2):
        _serve(feed_server, version)
        a = _check(one)
        b = _check(two)
        assert a.returncode == b.returncode == 0, (a.stderr[-2000:], b.stderr[-2000:])
        assert _events(a.stderr, "check.body_workers") == []
        assert [e["workers"] for e in _events(b.stderr, "check.body_workers")] == [2]
        assert a.stdout == b.stdout  # the alert lines, in config order
        assert a.stdout.count("\n") == (3 * FEEDS if version == 1 else 2 * FEEDS)
        assert a.stderr.splitlines()[-1] == b.stderr.splitlines()[-1]  # the summary
        # the workers wrote the polls: the second check found the validators they stored
        polled = {e["feed"]: e["result"] for e in _events(b.stderr, "feed.polled")}
        assert len(polled) == FEEDS and set(polled.values()) == {"ok"}
    key = lambda x: (x["feed"]["name"], x["kind"], x["entry"]["id"])  # noqa: E731
    two_alerts = sorted(map(key, _alerts(tmp_path, "two")))
    assert two_alerts == sorted(map(key, _alerts(tmp_path, "one")))
    assert sum(k == "updated" for _f, k, _i in two_alerts) == FEEDS

    _serve(feed_server, 2)  # the same bodies again: all 304, no alert, workers idle
    again = _check(two)
    assert again.returncode == 0 and again.stdout == ""
    assert {e["result"] for e in _events(again.stderr, "feed.polled")} == {"not_modified"}


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _check_killing(cfg: Path, kill: int, *, when_busy: bool) -> tuple[int, str]:
    """A check whose first ``kill`` workers are killed: once one of them has worked a
    while on a body (``when_busy``), or at once, before any body came."""
    p = subprocess.Popen(
        [sys.executable, "-m", "feedwatch", "-c", str(cfg), "check"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        kids = wait_for(lambda: len(_children(p.pid)) == 2 and _children(p.pid), what="workers")
        if when_busy:  # an idle worker uses no CPU; parsing the big body takes seconds
            wait_for(lambda: max(map(_cpu_ticks, kids)) >= 20, what="a worker busy")
        for pid in kids[:kill]:
            os.kill(pid, signal.SIGKILL)
        _out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    return p.returncode, err


def test_a_worker_killed_before_any_body_costs_nothing(
    tmp_path: Path,
    feed_server: FeedServer,  # noqa: F811
) -> None:
    cfg = _config(tmp_path, feed_server, workers=2, state="s")
    _serve(feed_server, 1, delay=0.3)  # the bodies come after the kill
    code, err = _check_killing(cfg, kill=1, when_busy=False)
    assert code == 0, err[-3000:]
    died = _events(err, "check.body_worker_died")
    assert len(died) == 1 and died[0]["why"] == "killed by SIGKILL" and died[0]["left"] == 1
    assert {e["result"] for e in _events(err, "feed.polled")} == {"ok"}
    assert len(_alerts(tmp_path, "s")) == 3 * FEEDS


def _big(n: int) -> bytes:
    return rss([entry(f"big-{k}", title=f"Big story {k}", published=T0) for k in range(n)])


def test_workers_killed_mid_body_lose_and_repeat_nothing(
    tmp_path: Path,
    feed_server: FeedServer,  # noqa: F811
) -> None:
    """Both workers die, one of them while it parses a big body: that poll fails and says
    why, the other bodies are handled in the main process, and the next check alerts
    what the failed poll did not, once."""
    cfg = _config(tmp_path, feed_server, workers=2, state="d")
    _serve(feed_server, 1, delay=1.0)
    feed_server.set("/f000.xml", _big(3000))  # at once, and seconds to parse
    code, err = _check_killing(cfg, kill=2, when_busy=True)
    assert code == 1
    assert [e["left"] for e in _events(err, "check.body_worker_died")] == [1, 0]
    results = {e["feed"]: e for e in _events(err, "feed.polled")}
    assert results["f000"]["result"] == "error"
    assert "its body worker died (killed by SIGKILL) while handling it" in results["f000"]["error"]
    assert all(results[f"f{i:03d}"]["result"] == "ok" for i in range(1, FEEDS))
    assert not any(a["feed"]["name"] == "f000" for a in _alerts(tmp_path, "d"))

    _serve(feed_server, 1)
    feed_server.set("/f000.xml", _big(3000))
    again = _check(cfg)
    assert again.returncode == 0, again.stderr[-3000:]
    ids = [(a["feed"]["name"], a["entry"]["id"]) for a in _alerts(tmp_path, "d")]
    assert len(ids) == len(set(ids))  # nothing repeated
    per_feed = Counter(f for f, _id in ids)
    assert all(per_feed[f"f{i:03d}"] == 3 for i in range(1, FEEDS))  # nothing lost
    polled = {e["feed"]: e for e in _events(again.stderr, "feed.polled")}
    assert per_feed["f000"] == polled["f000"]["alerts"] > 0  # all alerted by the second


def test_workers_exit_with_a_killed_main_process(
    tmp_path: Path,
    feed_server: FeedServer,  # noqa: F811
) -> None:
    cfg = _config(tmp_path, feed_server, workers=2, state="k")
    _serve(feed_server, 1, delay=5.0)  # the check is still fetching when it is killed
    p = subprocess.Popen(
        [sys.executable, "-m", "feedwatch", "-c", str(cfg), "check"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        kids = wait_for(lambda: len(_children(p.pid)) == 2 and _children(p.pid), what="workers")
        p.kill()
        p.wait(timeout=10)
        t = time.monotonic()
        wait_for(lambda: not any(_running(k) for k in kids), timeout=15, what="workers gone")
        assert time.monotonic() - t < 5
    finally:
        p.kill()


_MAIN_PROCESS = """
import json, sys
from feedwatch import cli, fetch
rc = cli.main(["-c", sys.argv[1], "check"])
parsing = [m for m in ("feedparser", "regex", "feedwatch.parse", "feedwatch.partial")
           if m in sys.modules]
print(json.dumps({"rc": rc, "parsing": parsing, "tls": fetch._ssl_context is not None}))
"""


def test_the_main_process_imports_no_parser_and_no_ca_bundle_for_http_feeds(
    tmp_path: Path,
    feed_server: FeedServer,  # noqa: F811
) -> None:
    """With body workers, the parsing stack is theirs alone (each imports it at its first
    body), and feeds that are all http:// never load the CA bundle. The alerts are all
    there: the workers handled every body."""
    cfg = _config(tmp_path, feed_server, workers=2, state="lean")
    _serve(feed_server, 1)
    p = subprocess.run(
        [sys.executable, "-c", _MAIN_PROCESS, str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    seen = json.loads(p.stdout.splitlines()[-1])
    assert seen == {"rc": 0, "parsing": [], "tls": False}
    assert [e["workers"] for e in _events(p.stderr, "check.body_workers")] == [2]
    assert len(_alerts(tmp_path, "lean")) == 3 * FEEDS


_HERE = """
import json, sys
from feedwatch import cli
rc = cli.main(["-c", sys.argv[1], "check"])
print(json.dumps({"rc": rc, "feedparser": "feedparser" in sys.modules,
                  "regex": "regex" in sys.modules}))
"""


@pytest.mark.parametrize("rule", [False, True])
def test_the_regex_engine_is_imported_only_for_feeds_with_rules(
    tmp_path: Path,
    feed_server: FeedServer,  # noqa: F811
    rule: bool,
) -> None:
    """Bodies handled in this process (no workers): feeds without rules alert on every
    entry and never import the regex engine; a rule imports it and filters."""
    cfg = _config(tmp_path, feed_server, workers=0, state=f"rx{int(rule)}")
    if rule:  # one rule, on the first feed: only its story 1 alerts there
        text = cfg.read_text().replace(
            "[sinks.log]", '[rules.one]\nany = ["Story 1"]\n\n[sinks.log]'
        )
        cfg.write_text(text.replace('name = "f000"\n', 'name = "f000"\nmatch = ["one"]\n'))
    _serve(feed_server, 1)
    p = subprocess.run(
        [sys.executable, "-c", _HERE, str(cfg)], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.splitlines()[-1]) == {"rc": 0, "feedparser": True, "regex": rule}
    titles = [(a["feed"]["name"], a["entry"]["title"]) for a in _alerts(tmp_path, f"rx{int(rule)}")]
    assert len(titles) == 3 * FEEDS - (2 if rule else 0)
    assert [t for f, t in titles if f == "f000"] == (
        ["Story 1 of feed 0"] if rule else [f"Story {n} of feed 0" for n in range(3)]
    )


def test_small_checks_and_dry_runs_fork_no_worker(
    tmp_path: Path,
    feed_server: FeedServer,  # noqa: F811
) -> None:
    cfg = _config(tmp_path, feed_server, workers=2, state="m")
    _serve(feed_server, 1)
    dry = run_feedwatch("-c", str(cfg), "check", "--dry-run", env=dict(os.environ))
    assert dry.returncode == 0 and _events(dry.stderr, "check.body_workers") == []
    few = run_feedwatch(
        "-c",
        str(cfg),
        "check",
        *[f"--feed=f{i:03d}" for i in range(MIN_FEEDS - 1)],
        env=dict(os.environ),
    )
    assert few.returncode == 0 and _events(few.stderr, "check.body_workers") == []


def test_stopping_then_closing_closes_each_pipe_once() -> None:
    """`check` stops the workers after polling and reaps them after delivery: the pipe
    numbers freed at the stop may by then be a sink's files, which close leaves alone."""
    script = """
import os
from feedwatch.bodyworkers import BodyWorkers
workers = BodyWorkers(2, lambda: None)  # no body: no poller is ever made
assert workers.alive == 2
workers.stop()
r, w = os.pipe()  # the lowest free numbers: those the stop freed
workers.close()
os.write(w, b"ok")
print(os.read(r, 2).decode())
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_a_second_worker_takes_bodies_only_when_they_pile_up() -> None:
    """While the main process fetches, bodies of a few ms (a changed round) all go to the
    first worker on two cores: a second one beside it cost more CPU for no less time.
    Bodies of tens of ms (a first poll) go to both as soon as their backlog would keep
    one busy past ``SPILL_SECONDS``, and so do all bodies once the main process has
    nothing to fetch, or on a machine whose cores hold both beside it."""
    script = """
import asyncio, json, os, sys, time
from collections import Counter
from feedwatch import bodyworkers
from feedwatch.bodyworkers import BodyWorkers
from feedwatch.poll import PollReport

bodyworkers.usable_cpus = lambda: int(sys.argv[1])  # the machine's cores, as told

class Busy:  # stands for a poller: a body that takes `job` seconds of CPU
    def handle_body(self, job):
        end = time.process_time() + job
        while time.process_time() < end:
            pass
        return PollReport(feed=str(os.getpid()), result="ok")

async def handled(cost, n):
    reports = await asyncio.gather(*(workers.run(cost) for _ in range(n)))
    return sorted(Counter(r.feed for r in reports).values())

async def main():
    if sys.argv[1] != "2":
        return {"cheap": await handled(0.001, 150)}
    # the idle phase before the dear one, whose cost would spread cheap bodies anyway
    took = {"cheap": await handled(0.001, 150)}
    workers.fetching = lambda: False
    took["idle"] = await handled(0.001, 150)
    workers.fetching = lambda: True
    took["dear"] = await handled(0.03, 40)
    return took

workers = BodyWorkers(2, Busy)
assert workers.alive == 2
print(json.dumps(asyncio.run(main())))
workers.close()
"""

    def handled_by(cores: int) -> dict[str, list[int]]:
        r = subprocess.run(
            [sys.executable, "-c", script, str(cores)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)  # type: ignore[no-any-return]

    three = handled_by(3)["cheap"]
    assert len(three) == 2 and min(three) >= 30  # three cores: both, while fetching
    took = handled_by(2)
    assert took["cheap"] == [150]  # two cores: one worker handled every cheap body
    assert len(took["dear"]) == 2 and min(took["dear"]) >= 8  # both shared the dear ones
    assert len(took["idle"]) == 2 and min(took["idle"]) >= 30  # and the cheap ones, idle
