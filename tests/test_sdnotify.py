"""sd_notify against real AF_UNIX datagram sockets (a path and an abstract name), as systemd listens."""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator

import pytest

from feedwatch import sdnotify


class Listener:
    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": env_value}

    def recv(self) -> list[str]:
        data = self.sock.recv(4096)
        return data.decode("utf-8").split("\n")

    def empty(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(5)
        return False


@pytest.fixture
def path_listener() -> Iterator[Listener]:
    # tmp_path can exceed the 108-byte sun_path limit; a short dir cannot.
    with tempfile.TemporaryDirectory(prefix="fw-sd-", dir="/tmp") as d:
        path = os.path.join(d, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(5)
        try:
            yield Listener(sock, path)
        finally:
            sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"feedwatch-test-{secrets.token_hex(8)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        yield Listener(sock, "@" + name)
    finally:
        sock.close()


@pytest.fixture(params=["path", "abstract"])
def listener(request, path_listener, abstract_listener) -> Listener:
    return path_listener if request.param == "path" else abstract_listener


def test_ready(listener):
    assert sdnotify.ready(env=listener.env) is True
    assert listener.recv() == ["READY=1"]


def test_ready_with_status(listener):
    assert sdnotify.ready("watching 3 feeds", env=listener.env)
    assert listener.recv() == ["READY=1", "STATUS=watching 3 feeds"]


def test_reloading_carries_monotonic_usec(listener):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading(env=listener.env)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = listener.recv()
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_stopping_watchdog_status(listener):
    assert sdnotify.stopping(env=listener.env)
    assert listener.recv() == ["STOPPING=1"]
    assert sdnotify.watchdog(env=listener.env)
    assert listener.recv() == ["WATCHDOG=1"]
    assert sdnotify.status("2 feeds failing", env=listener.env)
    assert listener.recv() == ["STATUS=2 feeds failing"]


def test_a_newline_cannot_inject_another_key(listener):
    assert sdnotify.status("evil\nREADY=1", env=listener.env)
    assert listener.recv() == ["STATUS=evil READY=1"]


def test_notify_sends_several_lines_in_one_datagram(listener):
    assert sdnotify.notify("STATUS=a", "EXTEND_TIMEOUT_USEC=5000000", env=listener.env)
    assert listener.recv() == ["STATUS=a", "EXTEND_TIMEOUT_USEC=5000000"]
    assert listener.empty()


def test_default_env_is_the_process_environment(path_listener, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", path_listener.env["NOTIFY_SOCKET"])
    assert sdnotify.watchdog() is True
    assert path_listener.recv() == ["WATCHDOG=1"]


def test_no_socket_is_a_quiet_no_op():
    assert sdnotify.ready(env={}) is False
    assert sdnotify.notify("READY=1", env={"NOTIFY_SOCKET": ""}) is False


def test_nobody_listening_returns_false_without_raising():
    with tempfile.TemporaryDirectory(prefix="fw-sd-", dir="/tmp") as d:
        env = {"NOTIFY_SOCKET": os.path.join(d, "gone")}
        assert sdnotify.ready(env=env) is False
        assert sdnotify.watchdog(env=env) is False  # logged once, still quiet


def test_unsupported_transport_returns_false():
    assert sdnotify.ready(env={"NOTIFY_SOCKET": "vsock:2:1234"}) is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "1000"}, 0.0005),
    ],
)
def test_watchdog_interval(env, expected):
    assert sdnotify.watchdog_interval(env) == expected
