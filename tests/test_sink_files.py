"""The jsonl and console sinks, the sink factory and the test-sink sample alert."""

from __future__ import annotations

import array
import asyncio
import fcntl
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import termios
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from feedwatch.model import Secret, SinkConfig
from feedwatch.sinks import build_sink, formats, machine_problem, sample_delivery
from feedwatch.sinks.base import SendResult
from feedwatch.sinks.command import CommandSink
from feedwatch.sinks.console import ConsoleSink, render_console
from feedwatch.sinks.jsonl import JsonlSink
from feedwatch.sinks.webhook import WebhookSink
from feedwatch.store.base import Delivery
from feedwatch.testing import entry, rss
from tests.feedserver import FeedServer, feed_server  # noqa: F401
from tests.helpers import wait_for
from tests.receivers import UPDATE_CHANGES, make_delivery, make_payload


def _send(sink: Any, deliveries: Sequence[Delivery]) -> SendResult:
    return asyncio.run(sink.send(list(deliveries)))


def _jsonl(path: str, **kw: Any) -> JsonlSink:
    return JsonlSink(SinkConfig(name="log", type="jsonl", options={"path": path}), **kw)


def test_jsonl_appends_parseable_lines(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_text('{"earlier": true}\n')
    p1 = make_payload(alert_id="a" * 32, title="line\nbreak \u2028 separator")
    p2 = make_payload(kind="updated", alert_id="b" * 32, changes=UPDATE_CHANGES)
    sink = _jsonl(str(path))
    assert _send(sink, [make_delivery(p1)]).ok
    assert _send(sink, [make_delivery(p2)]).ok
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert [json.loads(line) for line in lines[:-1]] == [{"earlier": True}, p1, p2]
    assert lines[1] == formats.payload_json(p1)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3  # U+2028 does not split a line


def test_jsonl_missing_directory_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "alerts.jsonl"
    result = _send(_jsonl(str(path)), [make_delivery(make_payload())])
    assert not result.ok and not result.permanent
    assert "does not exist" in (result.error or "") and str(tmp_path / "nope") in (
        result.error or ""
    )
    assert not path.parent.exists()


def test_jsonl_path_that_is_a_directory_is_dead_at_once(tmp_path: Path) -> None:
    """A `path` naming a directory was retried for days as transient ("cannot open
    logs: Is a directory"), though only a config change can mend it."""
    (tmp_path / "logs").mkdir()
    result = _send(_jsonl(str(tmp_path / "logs")), [make_delivery(make_payload())])
    assert not result.ok and result.permanent
    assert result.error == (
        f"sink log: cannot write to {tmp_path}/logs: it is a directory;"
        " point path at a file (in it, or elsewhere)"
    )
    assert list((tmp_path / "logs").iterdir()) == []
    cfg = SinkConfig(name="log", type="jsonl", options={"path": str(tmp_path / "logs")})
    assert machine_problem(cfg) == f"sink log: path {tmp_path}/logs is a directory, not a file"


_PARTLY_WRITTEN = """
import asyncio, resource, sys
from feedwatch.model import SinkConfig
from feedwatch.sinks.jsonl import JsonlSink
from tests.receivers import make_delivery, make_payload

sink = JsonlSink(SinkConfig(name="log", type="jsonl", options={"path": sys.argv[1]}))
batch = [make_delivery(make_payload(alert_id=f"{i:032x}", title="t" * 300)) for i in range(8)]
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (3000, hard))  # the disk fills after ~3 lines
first = asyncio.run(sink.send(batch))
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space again: the retry
second = asyncio.run(sink.send(batch))
print(first.ok, first.permanent, first.error, "|", second.ok)
"""


def test_jsonl_send_that_fails_part_way_leaves_no_line_of_it(tmp_path: Path) -> None:
    """A full disk mid-write: the retry must neither repeat lines nor follow half a one."""
    path = tmp_path / "alerts.jsonl"
    path.write_bytes(b'{"earlier": true}\n')
    done = subprocess.run(
        [sys.executable, "-c", _PARTLY_WRITTEN, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("False False sink log: cannot write to ")
    assert "File too large" in done.stdout and done.stdout.strip().endswith("| True")
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    ids = [json.loads(line).get("id") for line in lines[:-1]]  # every line whole
    assert ids == [None] + [f"{i:032x}" for i in range(8)]  # each alert once


def test_jsonl_file_without_final_newline_gets_one(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_bytes(b'{"cut": "off by a cra')
    payload = make_payload()
    assert _send(_jsonl(str(path)), [make_delivery(payload)]).ok
    lines = path.read_bytes().split(b"\n")
    assert lines[0] == b'{"cut": "off by a cra' and json.loads(lines[1]) == payload
    assert lines[2:] == [b""]


def test_jsonl_to_a_fifo_or_device_is_delivered_once(tmp_path: Path) -> None:
    """fsync refuses a pipe or a device (EINVAL) after the line went through: that is
    not a failure, or every retry would write the alert again."""
    fifo = tmp_path / "alerts.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        payload = make_payload()
        result = _send(_jsonl(str(fifo)), [make_delivery(payload)])
        assert result.ok, result.error
        assert os.read(reader, 65536) == formats.payload_json(payload) + b"\n"
    finally:
        os.close(reader)
    result = _send(_jsonl(os.devnull), [make_delivery(make_payload())])
    assert result.ok, result.error


def test_jsonl_to_a_fifo_nobody_reads_fails_at_once_naming_it(tmp_path: Path) -> None:
    """open() of a FIFO for writing waits for a reader: `check` hung on it for ever."""
    fifo = tmp_path / "alerts.fifo"
    os.mkfifo(fifo)
    results: list[SendResult] = []
    sending = threading.Thread(
        target=lambda: results.append(_send(_jsonl(str(fifo)), [make_delivery(make_payload())]))
    )
    sending.start()
    sending.join(5)
    if sending.is_alive():  # the old code: let its open() have its reader, then fail
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        sending.join(5)
        pytest.fail("the send waited for a reader of the FIFO")
    [result] = results
    assert not result.ok and not result.permanent
    assert result.error == f"sink log: cannot open {fifo}: no process has the FIFO open for reading"


def test_jsonl_to_dev_stderr_that_is_a_socket_is_delivered(
    tmp_path: Path,
    feed_server: FeedServer,  # noqa: F811
) -> None:
    """Under systemd stderr is the journal's stream socket, and Linux refuses to open
    /dev/stderr then (ENXIO): every alert stayed pending."""
    feed_server.set("/f.xml", rss([entry("g1", title="Over the socket")]))
    config = tmp_path / "feedwatch.toml"
    config.write_text(
        f'[feedwatch]\nstate = "{tmp_path / "state.db"}"\nfirst_poll = "alert"\n'
        '[sinks.log]\ntype = "jsonl"\npath = "/dev/stderr"\n'
        f'[[feeds]]\nname = "f"\nurl = "{feed_server.url("/f.xml")}"\n'
    )
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(iter(lambda: ours.recv(65536), b"")))
    reader.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "feedwatch", "-c", str(config), "check"],
            stdout=subprocess.PIPE,
            stderr=theirs,
            env={**os.environ, "HOME": str(tmp_path)},
            timeout=60,
        )
    finally:
        theirs.close()
        reader.join(10)
        ours.close()
    err = b"".join(got).decode()
    lines = [json.loads(line) for line in err.splitlines() if line.startswith('{"version"')]
    assert [line["entry"]["title"] for line in lines] == ["Over the socket"], err
    assert done.returncode == 0, err


def test_jsonl_to_dev_stdout_on_a_non_blocking_pipe_waits_for_the_reader(
    tmp_path: Path,
    feed_server: FeedServer,  # noqa: F811
) -> None:
    """A pipe another program set non-blocking: /dev/stdout is opened anew (blocking)
    and each line goes whole, as before; written through a copy of the descriptor, the
    write failed with EAGAIN half way, leaving a cut line and every alert pending."""
    big = "".join(f"word{i} " for i in range(2000))
    feed_server.set("/f.xml", rss([entry(f"g{i}", summary=big) for i in range(20)]))
    config = tmp_path / "feedwatch.toml"
    config.write_text(
        f'[feedwatch]\nstate = "{tmp_path / "state.db"}"\nfirst_poll = "alert"\n'
        '[sinks.log]\ntype = "jsonl"\npath = "/dev/stdout"\n'
        f'[[feeds]]\nname = "f"\nurl = "{feed_server.url("/f.xml")}"\n'
    )
    r, w = os.pipe()
    os.set_blocking(w, False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedwatch", "-c", str(config), "check"],
        stdout=w,
        stderr=subprocess.PIPE,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    os.close(w)

    def queued() -> int:
        buf = array.array("i", [0])
        fcntl.ioctl(r, termios.FIONREAD, buf)
        return buf[0]

    # the reader comes only once the pipe is full (or the run is over)
    wait_for(lambda: queued() >= 60_000 or proc.poll() is not None, what="a full pipe")
    chunks = list(iter(lambda: os.read(r, 65536), b""))
    os.close(r)
    _, err = proc.communicate(timeout=60)
    lines = [x for x in b"".join(chunks).decode().splitlines() if x.startswith("{")]
    assert len(lines) == 20 and all(json.loads(x)["kind"] == "new" for x in lines), err
    assert proc.returncode == 0, err


@pytest.mark.parametrize("path", ["alerts.jsonl", "-", "/dev/stdout"])
def test_check_with_stdout_closed(
    tmp_path: Path,
    feed_server: FeedServer,  # noqa: F811
    path: str,
) -> None:
    """`feedwatch check >&-` (some cron and init setups): it ended in a traceback
    (sys.stdout is None). A file sink delivers; a sink on stdout fails, its alerts
    pending, and never writes into a file that took descriptor 1 (the state's)."""
    feed_server.set("/f.xml", rss([entry("g1", title="Closed")]))
    config = tmp_path / "feedwatch.toml"
    target = str(tmp_path / path) if path == "alerts.jsonl" else path
    config.write_text(
        f'[feedwatch]\nstate = "{tmp_path / "state.db"}"\nfirst_poll = "alert"\n'
        f'[sinks.log]\ntype = "jsonl"\npath = "{target}"\n'
        f'[[feeds]]\nname = "f"\nurl = "{feed_server.url("/f.xml")}"\n'
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "feedwatch", "-c", str(config), "check"]
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *cmd],
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    err = done.stderr.decode()
    assert "Traceback" not in err, err
    status = json.loads(
        subprocess.run(
            [*cmd[:-1], "status", "--json"], capture_output=True, env=env, cwd=tmp_path, timeout=60
        ).stdout
    )
    (sink,) = status["sinks"]
    if path == "alerts.jsonl":
        assert done.returncode == 0, err
        assert (sink["delivered"], sink["pending"]) == (1, 0)
    else:
        assert done.returncode == 1 and "closed" in err, err
        assert (sink["delivered"], sink["pending"]) == (0, 1)
    db = sqlite3.connect(tmp_path / "state.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


def test_jsonl_dash_writes_to_given_stream() -> None:
    stream = io.StringIO()
    payload = make_payload(title="Ünïcödé")
    assert _send(_jsonl("-", stdout=stream), [make_delivery(payload)]).ok
    assert stream.getvalue().endswith("\n")
    assert json.loads(stream.getvalue()) == payload


def test_console_renders_update_old_and_new() -> None:
    changes: dict[str, dict[str, str | None]] = {
        **UPDATE_CHANGES,
        "title": {"old": "Old headline", "new": "New headline " + "z" * 500},
    }
    payload = make_payload(kind="updated", title="New headline", changes=changes)
    text = render_console(payload)
    assert "UPDATED" in text and "moscow-times" in text
    assert payload["entry"]["link"] in text
    assert "title: Old headline -> New headline zzz" in text
    assert "summary: Officials will meet. -> Officials met in Brussels." in text
    assert "updated: 2024-11-22 10:40:17 UTC -> 2024-11-22 15:56:45 UTC" in text
    assert "z" * 200 not in text  # long texts shortened
    stream = io.StringIO()
    sink = ConsoleSink(SinkConfig(name="console", type="console"), stream=stream)
    assert _send(sink, [make_delivery(payload)]).ok
    assert stream.getvalue().startswith(text)


def test_console_new_and_notice_and_escapes() -> None:
    text = render_console(make_payload(title="Evil \x1b[31mred\x1b[0m title", link="javascript:x"))
    assert "NEW" in text and "\x1b" not in text and "javascript" not in text
    text = render_console(make_payload(kind="flood", message="73 new entries in one poll"))
    assert "FLOOD" in text and "73 new entries in one poll" in text


def test_build_sink_every_type(tmp_path: Path) -> None:
    webhook = build_sink(
        SinkConfig(
            name="w",
            type="webhook",
            options={"url": Secret("https://h.example/x"), "format": "slack"},
        )
    )
    assert isinstance(webhook, WebhookSink) and webhook.supports_digest
    command = build_sink(SinkConfig(name="c", type="command", options={"argv": ("true",)}))
    assert isinstance(command, CommandSink) and not command.supports_digest
    stream = io.StringIO()
    jsonl = build_sink(SinkConfig(name="j", type="jsonl", options={"path": "-"}), stdout=stream)
    assert isinstance(jsonl, JsonlSink)
    console = build_sink(SinkConfig(name="k", type="console"), stdout=stream)
    assert isinstance(console, ConsoleSink)
    email = build_sink(
        SinkConfig(
            name="m",
            type="email",
            options={
                "host": "127.0.0.1",
                "port": 2525,
                "security": "none",
                "username": None,
                "password": None,
                "from_": "feedwatch <a@example.org>",
                "to": ("b@example.org",),
                "timeout": 5.0,
            },
        )
    )
    assert email.type == "email" and email.name == "m"
    with pytest.raises(ValueError, match="unknown type"):
        build_sink(SinkConfig(name="x", type="pager", options={}))  # type: ignore[arg-type]


def test_sample_delivery_is_a_full_alert() -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    d = sample_delivery("chat", now)
    p = d.payload
    assert list(p) == [
        "version",
        "id",
        "kind",
        "detected_at",
        "feed",
        "entry",
        "changes",
        "matched",
        "message",
    ]
    assert p["detected_at"] == "2025-01-02T03:04:05Z" and d.created_at == now
    assert d.alert_id == p["id"] and len(d.alert_id) == 32 and d.sink == "chat"
    assert p["kind"] == "updated" and set(p["changes"]) == {"updated", "summary"}
    assert sample_delivery("chat", now).alert_id == d.alert_id
    assert (
        sample_delivery("chat", datetime(2025, 1, 2, 3, 4, 6, tzinfo=timezone.utc)).alert_id
        != d.alert_id
    )
    for render in (formats.slack, formats.discord, formats.teams, formats.ntfy):
        assert render([p])
    assert "chat" in render_console(p)
