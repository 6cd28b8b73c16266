"""Delivery end to end: `feedwatch` subprocesses against a real feed server, a real
aiosmtpd SMTP server, a real webhook receiver and real command-sink programs.

What is proven here (SPEC sections 3 [sinks.*], 5 and 6 "Nothing lost", "Digests",
"No floods"): every alert reaches every sink it is routed to, exactly once when
the receivers work, at least once (same id) across receiver outages and a
`kill -9`; permanent failures go dead at once and come back with `redeliver`;
no secret ever shows in any output.
"""

from __future__ import annotations

import asyncio
import email
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from feedwatch.config import load_config
from feedwatch.deliver import Dispatcher
from feedwatch.sinks import build_sink
from feedwatch.status import collect
from feedwatch.store.sqlite import SqliteStore
from feedwatch.testing import T0, FakeClock, entry, rss
from tests.feedserver import FeedServer, feed_server_fixture, free_port  # noqa: F401
from tests.helpers import run_feedwatch
from tests.receivers import Receiver, webhook_receiver
from tests.smtpserver import PASSWORD, USER, SMTPServer, _make_cert, smtp_cert, smtp_server

__all__ = ["smtp_cert", "smtp_server", "webhook_receiver"]  # fixtures, imported for pytest

# Plain SMTP with AUTH is what a subprocess can reach without trusting a test CA.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

HOOK_SECRET = "hmac-s3cret-0f9e8d7c6b5a"
HOOK_TOKEN = "bearer-t0ken-1a2b3c4d5e6f"
HOOK_PATH = "/services/T0AB12/B0CD34/xoxPathSecret77"
SECRET_ENV = {"FW_SMTP_PASSWORD": PASSWORD, "FW_HOOK_SECRET": HOOK_SECRET, "HOOK_TOKEN": HOOK_TOKEN}
SECRETS = (PASSWORD, HOOK_SECRET, HOOK_TOKEN, HOOK_PATH, "xoxPathSecret77")

MISSILE = "Hypersonic missile strike on Dnipro"


# --------------------------------------------------------------------------
# Running feedwatch
# --------------------------------------------------------------------------


@dataclass
class FW:
    """Runs `feedwatch -c CFG ...` as a subprocess and keeps every byte it printed."""

    cfg: Path
    env: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    def full_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDWATCH_")}
        return {**env, **SECRET_ENV, **self.env, **(extra or {})}

    def __call__(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        r = run_feedwatch("-c", str(self.cfg), *args, env=self.full_env(env))
        self.outputs += [r.stdout, r.stderr]
        return r

    def ok(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        r = self(*args)
        assert r.returncode == code, f"exit {r.returncode}\nstdout:{r.stdout}\nstderr:{r.stderr}"
        return r

    def sinks(self, *, real: bool = False) -> dict[str, dict[str, int]]:
        """Per-sink counts as `status --json` gives them.

        In-process (``feedwatch.status.collect``, the code behind the command) unless
        ``real``: each subprocess costs most of a second, and the file must stay fast.
        """
        if real:
            data = json.loads(self.ok("status", "--json").stdout)
        else:
            data = collect(load_config(self.cfg, env=self.full_env()))
        return {
            s["name"]: {k: s[k] for k in ("pending", "delivered", "dead")} for s in data["sinks"]
        }

    def assert_no_secrets(self, secrets: Iterable[str] = SECRETS, *, status: bool = False) -> None:
        """No secret in anything printed so far, nor in `status` (``status``: run it for real)."""
        if status:
            self.ok("status")
        text = "\n".join(
            [*self.outputs, json.dumps(collect(load_config(self.cfg, env=self.full_env())))]
        )
        assert text, "nothing was run"
        for s in secrets:
            assert s not in text, f"secret {s[:4]}… leaked into feedwatch output"


def counts(pending: int = 0, delivered: int = 0, dead: int = 0) -> dict[str, int]:
    return {"pending": pending, "delivered": delivered, "dead": dead}


def write_config(tmp: Path, body: str, *, first_poll: str = "alert") -> Path:
    cfg = tmp / "feedwatch.toml"
    cfg.write_text(
        f"""
[feedwatch]
state = "{tmp}/state.db"
log_format = "json"
jitter = "0s"
first_poll = "{first_poll}"

[rules.missiles]
any = ["hypersonic", "missile*"]
"""
        + body
    )
    return cfg


def feed_block(server: FeedServer, sinks: list[str], extra: str = "") -> str:
    return f"""
[[feeds]]
name = "news"
url = "{server.url("/news.xml")}"
match = ["missiles"]
sinks = {json.dumps(sinks)}
{extra}
"""


def jsonl_sink(tmp: Path, name: str = "log") -> str:
    return f"""
[sinks.{name}]
type = "jsonl"
path = "{tmp}/{name}.jsonl"
"""


def webhook_sink(receiver: Receiver, name: str = "hook", extra: str = "") -> str:
    return f"""
[sinks.{name}]
type = "webhook"
url = "{receiver.url}{HOOK_PATH}"
secret_env = "FW_HOOK_SECRET"
headers = {{ Authorization = "Bearer ${{HOOK_TOKEN}}" }}
timeout = "5s"
{extra}
"""


def email_sink(
    server: SMTPServer,
    name: str = "mail",
    *,
    security: str = "none",
    password: str = 'password_env = "FW_SMTP_PASSWORD"',
    extra: str = "",
) -> str:
    return f"""
[sinks.{name}]
type = "email"
host = "127.0.0.1"
port = {server.port}
security = "{security}"
username = "{USER}"
{password}
from = "feedwatch <alerts@example.org>"
to = ["me@example.org", "ops@example.net"]
timeout = "5s"
{extra}
"""


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def parse_mail(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def wait_until(cond: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does (docs/alerts.md shows the same code)."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


# --------------------------------------------------------------------------
# Email
# --------------------------------------------------------------------------


def test_email_new_then_update_threaded_over_plain_smtp_with_auth(
    tmp_path: Path, feed_server: FeedServer, smtp_server: Callable[..., SMTPServer]
) -> None:
    smtp = smtp_server("none", auth=True)
    news = [entry(1, title="Markets open"), entry(2, title="Weather")]
    feed_server.set("/news.xml", rss([*news, entry(3, title=MISSILE)]))
    cfg = write_config(tmp_path, email_sink(smtp) + feed_block(feed_server, ["mail"]))
    fw = FW(cfg)
    r = fw.ok("check")
    (m1,) = smtp.messages
    assert m1.mail_from == "alerts@example.org"
    assert set(m1.rcpt_tos) == {"me@example.org", "ops@example.net"}
    new = parse_mail(m1.data)
    assert new["Subject"] == f"[feedwatch] news: {MISSILE}"
    assert new["List-ID"] == "<news.feedwatch>"
    assert new["X-Feedwatch-Feed"] == "news"
    new_id = new["X-Feedwatch-Alert-Id"]
    assert new["Message-ID"] == f"<{new_id}@feedwatch>"
    assert new_id in r.stdout  # `check` printed the alert with that id
    assert new.get_body(("plain",)) is not None and new.get_body(("html",)) is not None

    later = T0 + timedelta(hours=5)
    feed_server.set(
        "/news.xml",
        rss([*news, entry(3, title=MISSILE, updated=later, summary="Casualties reported.")]),
    )
    fw.ok("check")
    _, m2 = smtp.messages
    assert set(m2.rcpt_tos) == {"me@example.org", "ops@example.net"}
    upd = parse_mail(m2.data)
    assert upd["Subject"] == f"[feedwatch] news: updated: {MISSILE}"
    assert upd["In-Reply-To"] == new["Message-ID"]
    assert upd["References"] == new["Message-ID"]
    assert upd["X-Feedwatch-Alert-Id"] != new_id
    assert fw.sinks() == {"mail": counts(delivered=2)}
    fw.assert_no_secrets()


def test_email_title_cannot_inject_a_header_or_a_recipient(
    tmp_path: Path, feed_server: FeedServer, smtp_server: Callable[..., SMTPServer]
) -> None:
    smtp = smtp_server("none", auth=True)
    body = rss([entry(1, title="Hypersonic MARK")]).replace(
        b"MARK", b"strike&#13;&#10;Bcc: x@y&#13;&#10;&#13;&#10;body"
    )
    feed_server.set("/news.xml", body)
    cfg = write_config(
        tmp_path, email_sink(smtp) + jsonl_sink(tmp_path) + feed_block(feed_server, ["mail", "log"])
    )
    fw = FW(cfg)
    fw.ok("check")
    (a,) = lines(tmp_path / "log.jsonl")
    assert "Bcc: x@y" in a["entry"]["title"]  # (the unit tests send a literal CR LF too)
    (m,) = smtp.messages
    assert set(m.rcpt_tos) == {"me@example.org", "ops@example.net"}
    msg = parse_mail(m.data)
    assert msg["Bcc"] is None
    assert "x@y" not in " ".join(str(v) for k, v in msg.items() if k.lower() != "subject")
    assert "\r" not in msg["Subject"] and "\n" not in msg["Subject"]
    assert msg["Subject"].startswith("[feedwatch] news: Hypersonic strike Bcc: x@y")
    fw.assert_no_secrets()


def test_email_starttls_with_auth_from_password_file_in_credentials_directory(
    tmp_path: Path,
    feed_server: FeedServer,
    smtp_server: Callable[..., SMTPServer],
    smtp_cert: tuple[Path, Path],
) -> None:
    """A real STARTTLS handshake in the subprocess: it trusts the test CA via SSL_CERT_FILE."""
    smtp = smtp_server("starttls", auth=True)
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "smtp").write_text(PASSWORD + "\n")
    feed_server.set("/news.xml", rss([entry(1, title=MISSILE)]))
    cfg = write_config(
        tmp_path,
        email_sink(smtp, security="starttls", password='password_file = "smtp"')
        + feed_block(feed_server, ["mail"]),
    )
    fw = FW(cfg, env={"CREDENTIALS_DIRECTORY": str(creds), "SSL_CERT_FILE": str(smtp_cert[0])})
    fw.ok("check")
    (m,) = smtp.messages
    assert parse_mail(m.data)["Subject"] == f"[feedwatch] news: {MISSILE}"
    fw.ok("test-sink", "mail")
    assert len(smtp.messages) == 2
    fw.assert_no_secrets()


def test_email_without_the_test_ca_is_a_tls_error_and_stays_pending(
    tmp_path: Path, feed_server: FeedServer, smtp_server: Callable[..., SMTPServer]
) -> None:
    """Never downgrade: an untrusted certificate is not "send it in the clear anyway"."""
    smtp = smtp_server("starttls", auth=True)
    feed_server.set("/news.xml", rss([entry(1, title=MISSILE)]))
    cfg = write_config(
        tmp_path, email_sink(smtp, security="starttls") + feed_block(feed_server, ["mail"])
    )
    other_ca, _ = _make_cert(tmp_path)  # a valid CA, just not the one that signed the server's
    fw = FW(cfg, env={"SSL_CERT_FILE": str(other_ca)})
    r = fw.ok("check", code=1)
    assert "delivery failed mail" in r.stderr
    assert smtp.messages == []
    assert fw.sinks() == {"mail": counts(pending=1)}
    fw.assert_no_secrets()


# --------------------------------------------------------------------------
# Webhook
# --------------------------------------------------------------------------


def test_webhook_json_body_is_the_jsonl_line_signed_with_delivery_id(
    tmp_path: Path, feed_server: FeedServer, webhook_receiver: Receiver
) -> None:
    feed_server.set("/news.xml", rss([entry(1, title=MISSILE), entry(2, title="Missiles again")]))
    cfg = write_config(
        tmp_path,
        webhook_sink(webhook_receiver)
        + jsonl_sink(tmp_path)
        + feed_block(feed_server, ["hook", "log"]),
    )
    fw = FW(cfg)
    r = fw.ok("check")
    logged = lines(tmp_path / "log.jsonl")
    got = webhook_receiver.received()
    assert len(logged) == len(got) == 2
    # oldest first: the feed order of one poll is kept
    assert [a["entry"]["title"] for a in logged] == [MISSILE, "Missiles again"]
    for line, req in zip(logged, got, strict=True):
        assert req.method == "POST" and req.path == HOOK_PATH
        assert json.loads(req.body) == line  # the same object, the same id, in both sinks
        assert req.headers["x-feedwatch-delivery"] == line["id"]
        assert req.headers["content-type"] == "application/json"
        assert req.headers["authorization"] == f"Bearer {HOOK_TOKEN}"
        assert verify_signature(HOOK_SECRET, req.body, req.headers["x-feedwatch-signature-256"])
        assert not verify_signature("wrong", req.body, req.headers["x-feedwatch-signature-256"])
        assert line["id"] in r.stdout
    assert fw.sinks() == {"hook": counts(delivered=2), "log": counts(delivered=2)}
    fw.assert_no_secrets()


def test_receiver_down_then_failing_then_back_delivers_each_alert_exactly_once(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    up = Receiver().start()
    port = up.port
    try:
        feed_server.set("/news.xml", rss([entry(1, title=MISSILE)]))
        cfg = write_config(
            tmp_path,
            webhook_sink(up) + jsonl_sink(tmp_path) + feed_block(feed_server, ["hook", "log"]),
        )
        fw = FW(cfg)
        up.stop()  # the receiver is down: connection refused

        r = fw.ok("check", code=1)
        assert "delivery failed hook" in r.stderr
        assert fw.sinks(real=True) == {"hook": counts(pending=1), "log": counts(delivered=1)}

        # up again but failing, asking for an hour's peace; and there is more news
        up = Receiver(port=port).start()
        up.script(status=503, retry_after="3600")
        feed_server.set("/news.xml", rss([entry(1, title=MISSILE), entry(2, title="Missile test")]))
        r = fw.ok("check", code=1)
        assert "HTTP 503" in r.stderr
        assert len(up.received()) == 1  # the oldest failed: the newer one waits behind it
        assert fw.sinks() == {"hook": counts(pending=2), "log": counts(delivered=2)}

        up.script(status=200)
        fw.ok("check")  # `check` retries every pending delivery, whatever the backoff says
        got = up.received()
        ids = [a["id"] for a in lines(tmp_path / "log.jsonl")]
        assert [q.headers["x-feedwatch-delivery"] for q in got] == [ids[0], *ids]
        assert got[0].body == got[1].body  # a retry sends the very same bytes
        assert fw.sinks() == {"hook": counts(delivered=2), "log": counts(delivered=2)}
        fw.ok("check")
        assert len(up.received()) == 3  # nothing more, ever
        assert len(lines(tmp_path / "log.jsonl")) == 2
        fw.assert_no_secrets()
    finally:
        up.stop()


# --------------------------------------------------------------------------
# Crash between sending and marking delivered
# --------------------------------------------------------------------------

RECORDER = r"""
import json, os, pathlib, sys, time
alert = json.load(sys.stdin)
log, release = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with log.open("a") as f:
    f.write(f"{alert['id']} {os.environ['FEEDWATCH_ALERT_ID']} {os.getpid()}\n")
deadline = time.monotonic() + 30
while not release.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def test_kill_9_between_send_and_mark_resends_the_same_id_once(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    record, release = tmp_path / "record.txt", tmp_path / "release"
    feed_server.set("/news.xml", rss([entry(1, title=MISSILE), entry(2, title="Missile test")]))
    cfg = write_config(
        tmp_path,
        f"""
[sinks.script]
type = "command"
argv = [{json.dumps(sys.executable)}, "{script}", "{record}", "{release}"]
timeout = "60s"
"""
        + jsonl_sink(tmp_path)
        + feed_block(feed_server, ["script", "log"]),
    )
    fw = FW(cfg)
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedwatch", "-c", str(cfg), "check"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=fw.full_env(),
    )
    try:
        wait_until(lambda: record.exists() and record.read_text().count("\n") == 1, what="send")
    finally:
        proc.send_signal(signal.SIGKILL)  # the program got the alert; feedwatch never hears back
        out, err = proc.communicate(timeout=30)
    fw.outputs += [out, err]
    assert proc.returncode == -signal.SIGKILL
    (first,) = record.read_text().splitlines()
    alert_id, env_id, orphan = first.split()
    assert alert_id == env_id
    release.touch()  # lets the orphaned program finish
    wait_until(lambda: _gone(int(orphan)), what="the orphaned program to exit")

    # the poll was committed before the crash: both alerts are safe in the outbox
    sinks = fw.sinks()
    assert sinks["script"] == counts(pending=2)
    fw.ok("check")  # recovers: re-sends the one in flight (same id), then the other
    ids = [line.split()[0] for line in record.read_text().splitlines()]
    # the alerts, in order, as the killed run announced them before delivering
    announced = [x.split()[1] for x in out.splitlines() if x.startswith("alert ")]
    assert len(announced) == 2
    assert ids == [alert_id, alert_id, announced[1]]
    assert alert_id == announced[0]
    fw.ok("check")
    assert len(record.read_text().splitlines()) == 3  # nothing more, ever
    assert fw.sinks()["script"] == counts(delivered=2)


# --------------------------------------------------------------------------
# Permanent failures, dead deliveries, redeliver
# --------------------------------------------------------------------------


def test_permanent_failures_go_dead_at_once_and_redeliver_brings_them_back(
    tmp_path: Path,
    feed_server: FeedServer,
    webhook_receiver: Receiver,
    smtp_server: Callable[..., SMTPServer],
) -> None:
    smtp = smtp_server("none", auth=True)
    webhook_receiver.script(status=404, body=b"no such hook")
    out = tmp_path / "out.jsonl"
    feed_server.set("/news.xml", rss([entry(1, title=MISSILE), entry(2, title="Missile test")]))

    def config(program: str) -> Path:
        return write_config(
            tmp_path,
            webhook_sink(webhook_receiver)
            + email_sink(smtp)
            + f"""
[sinks.script]
type = "command"
argv = [{json.dumps(program)}, "-c", "import sys; open({str(out)!r}, 'ab').write(sys.stdin.buffer.read())"]
"""
            + feed_block(feed_server, ["hook", "mail", "script"]),
        )

    cfg = config(str(tmp_path / "no-such-program"))
    fw = FW(cfg, env={"FW_SMTP_PASSWORD": "wrong-password-x"})
    r = fw.ok("check", code=1)
    # both alerts, all three sinks: dead at once (one attempt each, no retry schedule)
    assert len(webhook_receiver.received()) == 2
    assert smtp.messages == []
    dead = {"hook": counts(dead=2), "mail": counts(dead=2), "script": counts(dead=2)}
    assert fw.sinks() == dead
    assert "HTTP 404" in r.stderr and "535" in r.stderr and "no such program" in r.stderr
    assert fw.sinks(real=True) == dead
    assert fw("status", "--check").returncode == 1

    # fix the receiver; put that sink's dead deliveries back
    webhook_receiver.script(status=200)
    assert fw.ok("redeliver", "--sink", "hook").stdout.startswith("2 ")
    assert fw.sinks()["hook"] == counts(pending=2)
    fw.ok("check", code=0)  # the others stay dead: a later check does not retry them
    assert len(webhook_receiver.received()) == 4
    assert smtp.messages == [] and not out.exists()
    assert fw.sinks() == {**dead, "hook": counts(delivered=2)}

    # fix the password and the program; put everything back
    fw.env = {}
    fw.cfg = config(sys.executable)
    assert fw.ok("redeliver", "--feed", "news").stdout.startswith("4 ")
    fw.ok("check")
    assert len(smtp.messages) == 1 + 1 and len(out.read_text().splitlines()) == 2
    delivered = counts(delivered=2)
    assert fw.sinks() == {"hook": delivered, "mail": delivered, "script": delivered}
    assert fw("status", "--check").returncode == 0
    assert len(webhook_receiver.received()) == 4  # the webhook got nothing twice
    r = fw("redeliver", "--feed", "nope")
    assert r.returncode == 2 and "unknown feed 'nope'" in r.stderr
    fw.assert_no_secrets((*SECRETS, "wrong-password-x"), status=True)


def test_an_email_recipient_refused_while_another_takes_it_is_dead_and_redelivered_to_it_alone(
    tmp_path: Path, feed_server: FeedServer, smtp_server: Callable[..., SMTPServer]
) -> None:
    """SPEC 6: a 5xx refusal is permanent, also of one recipient of two: the delivery
    is dead (status, `status --check`, `alerts`), not delivered with a log line; the
    other recipient has it once, and `redeliver` sends to the refused one alone."""
    smtp = smtp_server("none", auth=True)
    smtp.handler.rcpt_replies["ops@example.net"] = "550 5.1.1 User unknown"
    feed_server.set("/news.xml", rss([entry(1, title=MISSILE)]))
    fw = FW(write_config(tmp_path, email_sink(smtp) + feed_block(feed_server, ["mail"])))
    r = fw.ok("check", code=1)
    assert "ops@example.net: 550 5.1.1 User unknown" in r.stderr
    assert [m.rcpt_tos for m in smtp.messages] == [("me@example.org",)]
    assert fw.sinks(real=True) == {"mail": counts(dead=1)}
    r = fw("status", "--check")
    assert r.returncode == 1, r.stdout + r.stderr
    shown = fw.ok("alerts").stdout
    assert "DEAD" in shown and "ops@example.net" in shown
    assert "for ops@example.net alone" in shown and "me@example.org" not in shown
    (row,) = [json.loads(x) for x in fw.ok("alerts", "--json").stdout.splitlines()]
    assert [(d["status"], d["recipients_left"]) for d in row["deliveries"]] == [
        ("dead", ["ops@example.net"])
    ]
    fw.ok("check", code=0)  # dead stays dead: nothing sent again
    assert len(smtp.messages) == 1

    smtp.handler.rcpt_replies.clear()  # the mailbox was made
    assert fw.ok("redeliver", "--sink", "mail").stdout.startswith("1 ")
    fw.ok("check")
    assert [m.rcpt_tos for m in smtp.messages] == [("me@example.org",), ("ops@example.net",)]
    assert smtp.messages[0].data == smtp.messages[1].data  # the very same message
    assert fw.sinks() == {"mail": counts(delivered=1)}
    assert fw("status", "--check").returncode == 0
    fw.assert_no_secrets()


# --------------------------------------------------------------------------
# Digest
# --------------------------------------------------------------------------


def test_digest_webhook_is_held_by_check_then_sent_as_one_request(
    tmp_path: Path, feed_server: FeedServer, webhook_receiver: Receiver
) -> None:
    titles = [MISSILE, "Missile test", "Hypersonic glide vehicle"]
    feed_server.set("/news.xml", rss([entry(i, title=t) for i, t in enumerate(titles)]))
    cfg = write_config(
        tmp_path,
        webhook_sink(webhook_receiver, extra='digest = "1h"')
        + jsonl_sink(tmp_path)
        + feed_block(feed_server, ["hook", "log"]),
    )
    fw = FW(cfg)
    r = fw.ok("check")
    assert "3 held" in r.stderr
    assert webhook_receiver.received() == []  # held: the oldest is not an hour old yet
    assert fw.sinks()["hook"] == counts(pending=3)

    # an hour later (the daemon's dispatcher, on the same state file)
    config = load_config(cfg, env=fw.full_env())
    store = SqliteStore(config.state)
    clock = FakeClock(datetime.now(timezone.utc) + timedelta(minutes=59))
    try:
        report = _dispatch_once(config, store, clock)
        assert report.waiting == 3 and webhook_receiver.received() == []
        clock.advance(minutes=2)
        report = _dispatch_once(config, store, clock)
        assert report.delivered == 3
    finally:
        store.close()
    (req,) = webhook_receiver.received()
    body = json.loads(req.body)
    assert body == {"version": 1, "kind": "digest", "alerts": lines(tmp_path / "log.jsonl")}
    assert req.headers["x-feedwatch-digest"] == "3"
    assert verify_signature(HOOK_SECRET, req.body, req.headers["x-feedwatch-signature-256"])
    fw.ok("check")
    assert len(webhook_receiver.received()) == 1
    assert fw.sinks()["hook"] == counts(delivered=3)
    fw.assert_no_secrets()


def _dispatch_once(config: Any, store: Any, clock: FakeClock) -> Any:
    """One run of the daemon's dispatcher over the state, at ``clock``'s time."""

    async def go() -> Any:
        sinks = {name: build_sink(sc) for name, sc in config.sinks.items()}
        dispatcher = Dispatcher(config, store, sinks, clock=clock)
        try:
            return await dispatcher.run_once()
        finally:
            await dispatcher.aclose()

    return asyncio.run(go())


def test_a_digest_holding_one_alert_is_sent_as_a_digest(
    tmp_path: Path,
    feed_server: FeedServer,
    webhook_receiver: Receiver,
    smtp_server: Callable[..., SMTPServer],
) -> None:
    """A digest due with one alert in it went out as a plain alert: a receiver reading
    `kind == "digest"` and a mail filter on `X-Feedwatch-Kind: digest` missed it."""
    smtp = smtp_server("none", auth=True)
    feed_server.set("/news.xml", rss([entry(1, title=MISSILE)]))
    cfg = write_config(
        tmp_path,
        webhook_sink(webhook_receiver, extra='digest = "1h"')
        + email_sink(smtp, extra='digest = "1h"')
        + jsonl_sink(tmp_path)
        + feed_block(feed_server, ["hook", "mail", "log"]),
    )
    fw = FW(cfg)
    assert "2 held" in fw.ok("check").stderr
    config = load_config(cfg, env=fw.full_env())
    store = SqliteStore(config.state)
    clock = FakeClock(datetime.now(timezone.utc) + timedelta(minutes=61))
    try:
        assert _dispatch_once(config, store, clock).delivered == 2
    finally:
        store.close()
    [alert] = lines(tmp_path / "log.jsonl")
    (req,) = webhook_receiver.received()
    assert json.loads(req.body) == {"version": 1, "kind": "digest", "alerts": [alert]}
    assert req.headers["x-feedwatch-digest"] == "1"
    digest_id = "digest-" + hashlib.sha256(alert["id"].encode()).hexdigest()[:32]
    assert req.headers["x-feedwatch-delivery"] == digest_id
    (got,) = smtp.messages
    mail = parse_mail(got.data)
    assert mail["X-Feedwatch-Kind"] == "digest" and mail["X-Feedwatch-Alert-Count"] == "1"
    assert mail["X-Feedwatch-Alert-Id"] is None
    assert mail["Subject"] == "[feedwatch] 1 alert: news"
    assert mail["Message-ID"].startswith("<digest-")

    # test-sink still bypasses the digest: one sample alert, sent as an alert
    fw.ok("test-sink", "mail")
    sample = parse_mail(smtp.messages[-1].data)
    assert sample["X-Feedwatch-Kind"] == "updated" and sample["X-Feedwatch-Alert-Count"] is None


def long_reads(count: int, chars: int) -> bytes:
    """An RSS body of ``count`` matching items, each with ``chars`` characters of
    ``content:encoded`` (a site that puts its whole stories in its feed)."""
    items = []
    for n in range(count):
        words = " ".join(f"word{n}x{i}" for i in range(chars // 8))[:chars]
        items.append(
            f"<item><guid>urn:story:{n}</guid><title>Missile story {n}</title>"
            f"<link>https://example.org/story/{n}</link>"
            f"<content:encoded><![CDATA[<p>{words}</p>]]></content:encoded></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>'
        "<title>News</title><link>https://example.org/</link><description>d</description>"
        + "".join(items)
        + "</channel></rss>"
    ).encode()


def test_a_big_digest_reaches_receivers_with_size_limits_every_alert_once(
    tmp_path: Path,
    feed_server: FeedServer,
    webhook_receiver: Receiver,
    smtp_server: Callable[..., SMTPServer],
) -> None:
    """130 long reads held by a digest: the email was one 13 MB message, which a server
    with Postfix's default message_size_limit (10,240,000) refused for good, and the
    `json` digest one body of several MB, which nginx's default client_max_body_size
    (1 MiB) answered 413: every alert dead, and `redeliver` rebuilt the same message.
    Now each receiver gets digests it takes, every alert exactly once."""
    smtp = smtp_server("none", auth=True, data_size_limit=10_240_000)
    webhook_receiver.max_body = 1024 * 1024
    feed_server.set("/news.xml", long_reads(130, 40_000))
    cfg = write_config(
        tmp_path,
        # (a window the first check ends well within, also on a loaded machine)
        email_sink(smtp, extra='digest = "6s"')
        + webhook_sink(webhook_receiver, extra='digest = "6s"')
        + feed_block(feed_server, ["mail", "hook"], extra="flood_limit = 1000"),
    )
    fw = FW(cfg)
    assert "260 held" in fw.ok("check").stderr
    store = SqliteStore(load_config(cfg, env=fw.full_env()).state)
    try:
        oldest = min(d.created_at for d in store.pending(sink="mail") + store.pending(sink="hook"))
    finally:
        store.close()
    due = (oldest + timedelta(seconds=6.2) - datetime.now(timezone.utc)).total_seconds()
    time.sleep(max(0.0, due))  # until the digests are due (check sends only then)
    r = fw.ok("check")
    assert "260 sent, 0 to retry, 0 dead" in r.stderr
    assert fw.sinks() == {"mail": counts(delivered=130), "hook": counts(delivered=130)}

    mailed: list[str] = []
    for m in smtp.messages:
        assert len(m.data) <= 10_000_000
        text = parse_mail(m.data).get_body(("plain",)).get_content()  # type: ignore[union-attr]
        mailed += re.findall(r"^-- feedwatch new alert (\w+)\r?$", text, flags=re.M)
    posted: list[str] = []
    for req in webhook_receiver.received():
        assert req.status == 200 and len(req.body) <= 1_000_000
        alerts = json.loads(req.body)["alerts"]
        assert req.headers["x-feedwatch-digest"] == str(len(alerts))
        assert all(len(a["entry"]["content"]) > 30_000 for a in alerts)  # whole, as ever
        posted += [a["id"] for a in alerts]
    assert len(webhook_receiver.received()) > 1
    assert len(mailed) == len(set(mailed)) == 130
    assert posted == mailed  # each oldest first
    fw.assert_no_secrets()


# --------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------


def test_rule_sinks_route_matches_and_one_alert_goes_once_to_each_sink(
    tmp_path: Path, feed_server: FeedServer, webhook_receiver: Receiver
) -> None:
    feed_server.set(
        "/news.xml",
        rss(
            [
                entry(1, title=MISSILE),  # missiles + dnipro -> hook and city
                entry(2, title="Markets open"),  # markets (no sinks) -> the feed's: log
                entry(3, title="Missile test"),  # missiles -> hook
                entry(4, title="Weather"),  # nothing
            ]
        ),
    )
    cfg = write_config(
        tmp_path,
        """
[rules.missiles2]
any = ["missile*"]
sinks = ["hook"]

[rules.dnipro]
any = ["Dnipro"]
sinks = ["hook", "city"]

[rules.markets]
any = ["market*"]
"""
        + webhook_sink(webhook_receiver)
        + jsonl_sink(tmp_path, "log")
        + jsonl_sink(tmp_path, "city")
        + f"""
[[feeds]]
name = "news"
url = "{feed_server.url("/news.xml")}"
match = ["missiles2", "dnipro", "markets"]
sinks = ["log"]
""",
    )
    fw = FW(cfg)
    r = fw.ok("check")
    assert len([x for x in r.stdout.splitlines() if x.startswith("alert ")]) == 3
    log, city = lines(tmp_path / "log.jsonl"), lines(tmp_path / "city.jsonl")
    hook = [json.loads(q.body) for q in webhook_receiver.received()]
    assert [a["entry"]["title"] for a in log] == ["Markets open"]
    assert [a["entry"]["title"] for a in city] == [MISSILE]
    assert [a["entry"]["title"] for a in hook] == [MISSILE, "Missile test"]
    assert hook[0] == city[0]  # one alert, the same id and payload for both sinks
    assert {m["rule"] for m in hook[0]["matched"]} == {"missiles2", "dnipro"}
    assert fw.sinks() == {
        "hook": counts(delivered=2),
        "log": counts(delivered=1),
        "city": counts(delivered=1),
    }
    fw.assert_no_secrets()


# --------------------------------------------------------------------------
# test-sink
# --------------------------------------------------------------------------


def test_test_sink_exit_codes(
    tmp_path: Path, feed_server: FeedServer, webhook_receiver: Receiver
) -> None:
    feed_server.set("/news.xml", rss([]))
    cfg = write_config(
        tmp_path,
        webhook_sink(webhook_receiver, extra='digest = "1h"') + feed_block(feed_server, ["hook"]),
    )
    fw = FW(cfg)
    r = fw.ok("test-sink", "hook")  # digest bypassed: sent now
    assert "ok" in r.stdout
    (req,) = webhook_receiver.received()
    sample = json.loads(req.body)
    assert sample["kind"] == "updated" and req.headers["x-feedwatch-delivery"] == sample["id"]
    assert verify_signature(HOOK_SECRET, req.body, req.headers["x-feedwatch-signature-256"])

    webhook_receiver.script(status=500)
    r = fw.ok("test-sink", "hook", code=1)
    assert "HTTP 500" in r.stdout and "transient" in r.stdout
    r = fw.ok("test-sink", "nope", code=2)
    assert "unknown sink 'nope'" in r.stderr
    r = fw.ok("redeliver", "--sink", "nope", code=2)
    assert "unknown sink 'nope' (configured: hook)" in r.stderr
    assert fw.ok("redeliver").stdout.startswith("0 ")
    assert not (tmp_path / "state.db").exists()  # neither touches the state
    fw.assert_no_secrets()


def test_test_sink_to_a_closed_port_says_connection_refused(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """As a feed on that port says it (not httpx's "All connection attempts failed")."""
    feed_server.set("/news.xml", rss([]))
    closed = Receiver(port=free_port())  # never started: nothing listens there
    cfg = write_config(tmp_path, webhook_sink(closed) + feed_block(feed_server, ["hook"]))
    r = FW(cfg).ok("test-sink", "hook", code=1)
    assert "webhook request failed: connection refused" in r.stdout, r.stdout
    assert "All connection attempts failed" not in r.stdout + r.stderr


def test_a_command_that_prints_a_secret_does_not_leak_it(
    tmp_path: Path, feed_server: FeedServer, webhook_receiver: Receiver
) -> None:
    """A program's stderr reaches logs and `check`'s report: configured secrets are masked."""
    feed_server.set("/news.xml", rss([entry(1, title=MISSILE)]))
    leak = 'import os, sys; print("token", os.environ["HOOK_TOKEN"], file=sys.stderr); sys.exit(3)'
    cfg = write_config(
        tmp_path,
        webhook_sink(webhook_receiver)
        + f"""
[sinks.script]
type = "command"
argv = [{json.dumps(sys.executable)}, "-c", {json.dumps(leak)}]
"""
        + feed_block(feed_server, ["script", "hook"]),
    )
    fw = FW(cfg)
    r = fw.ok("check", code=1)
    assert "exited 3" in r.stderr and "token ***" in r.stderr
    r = fw.ok("test-sink", "script", code=1)
    assert "token ***" in r.stdout
    with SqliteStore(tmp_path / "state.db") as store:
        (rec,) = store.alerts_for("news")
    errors = [d.last_error for d in rec.deliveries if d.sink == "script"]
    assert errors == ["sink script: command exited 3: token ***"]
    fw.assert_no_secrets()


def test_bad_receivers_fail_alone_each_with_a_clear_reason(
    tmp_path: Path, feed_server: FeedServer, webhook_receiver: Receiver
) -> None:
    """Unreachable SMTP, a redirecting webhook, an HTML error page, a hanging command."""
    webhook_receiver.script(status=301, location="https://elsewhere.example/hook")
    html = Receiver().start()
    html.script(status=502, body=b"<html><body><h1>502 Bad Gateway</h1></body></html>")
    try:
        feed_server.set("/news.xml", rss([entry(1, title=MISSILE)]))
        hang = "import time; time.sleep(60)"
        cfg = write_config(
            tmp_path,
            f"""
[sinks.mail]
type = "email"
host = "127.0.0.1"
port = {free_port()}
security = "none"
from = "alerts@example.org"
to = ["me@example.org"]
timeout = "2s"

[sinks.slow]
type = "command"
argv = [{json.dumps(sys.executable)}, "-c", {json.dumps(hang)}]
timeout = "1s"
"""
            + webhook_sink(webhook_receiver, "moved")
            + webhook_sink(html, "proxy")
            + jsonl_sink(tmp_path)
            + feed_block(feed_server, ["mail", "slow", "moved", "proxy", "log"]),
        )
        fw = FW(cfg)
        started = time.monotonic()
        r = fw.ok("check", code=1)
        assert time.monotonic() - started < 20
        assert len(lines(tmp_path / "log.jsonl")) == 1  # the healthy sink got it
        assert fw.sinks() == {
            "mail": counts(pending=1),
            "slow": counts(pending=1),
            "moved": counts(dead=1),
            "proxy": counts(pending=1),
            "log": counts(delivered=1),
        }
        with SqliteStore(tmp_path / "state.db") as store:
            (rec,) = store.alerts_for("news")
        errors = {d.sink: d.last_error or "" for d in rec.deliveries}
        assert "Connect call failed" in errors["mail"] or "connect" in errors["mail"].lower()
        assert errors["slow"] == "sink slow: command timed out after 1s and was killed"
        assert errors["moved"] == (
            "sink moved: webhook answered a redirect (301): point the sink at the final URL"
        )
        assert errors["proxy"] == "sink proxy: webhook answered HTTP 502 Bad Gateway"
        for name, error in errors.items():
            if name != "log":
                assert f"delivery failed {name}: {error}" in r.stderr
        assert len(html.received()) == 1 and len(webhook_receiver.received()) == 1
        fw.assert_no_secrets()
    finally:
        html.stop()
