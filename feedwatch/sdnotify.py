"""The systemd notify protocol (sd_notify(3)) in a few lines, without libsystemd.

``Type=notify`` units wait for ``READY=1`` before they count as started, and
``WatchdogSec=`` expects ``WATCHDOG=1`` at least every WATCHDOG_USEC. The
protocol is one datagram of newline-separated ``KEY=value`` lines sent to the
AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or an abstract socket when
it starts with ``@``). Outside systemd the variable is unset and every call is
a quiet no-op returning False, so the daemon calls these unconditionally.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("feedwatch.sdnotify")

_warned: set[str] = set()


def _address(raw: str) -> str | None:
    if raw.startswith("@"):
        return "\0" + raw[1:]  # Linux abstract namespace
    if raw.startswith("/"):
        return raw
    return None  # vsock:... and other transports are not supported


def notify(*lines: str, env: Mapping[str, str] = os.environ) -> bool:
    """Send ``lines`` as one notification; True when it was sent.

    Failures are logged once per socket and never raised: losing a status
    update must not take the daemon down (systemd notices a missing READY or
    watchdog ping on its own).
    """
    raw = env.get("NOTIFY_SOCKET", "")
    if not raw or not lines:
        return False
    addr = _address(raw)
    if addr is None:
        if raw not in _warned:
            _warned.add(raw)
            log.warning("sdnotify.unsupported_socket", socket=raw)
        return False
    message = "\n".join(line.replace("\n", " ") for line in lines).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            sock.sendall(message)
    except OSError as exc:
        if raw not in _warned:
            _warned.add(raw)
            log.warning("sdnotify.send_failed", socket=raw, error=str(exc))
        return False
    return True


def _monotonic_usec() -> int:
    clock = getattr(time, "CLOCK_MONOTONIC", None)
    if clock is not None:
        return time.clock_gettime_ns(clock) // 1000
    return time.monotonic_ns() // 1000


def ready(status: str | None = None, *, env: Mapping[str, str] = os.environ) -> bool:
    """Startup finished: systemd now considers the unit active."""
    lines = ["READY=1"]
    if status:
        lines.append(f"STATUS={status}")
    return notify(*lines, env=env)


def reloading(*, env: Mapping[str, str] = os.environ) -> bool:
    """A reload started (SIGHUP). Send ``ready()`` when it is done.

    MONOTONIC_USEC lets systemd (253+, ``Type=notify-reload``) tell this reload
    from an earlier one; older versions ignore it.
    """
    return notify("RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}", env=env)


def stopping(*, env: Mapping[str, str] = os.environ) -> bool:
    """Shutdown started: systemd shows "deactivating" instead of a hung service."""
    return notify("STOPPING=1", env=env)


def status(text: str, *, env: Mapping[str, str] = os.environ) -> bool:
    """One line for ``systemctl status``."""
    return notify(f"STATUS={text}", env=env)


def watchdog(*, env: Mapping[str, str] = os.environ) -> bool:
    """Keep-alive ping for ``WatchdogSec=``."""
    return notify("WATCHDOG=1", env=env)


def watchdog_interval(env: Mapping[str, str] = os.environ) -> float | None:
    """How often to call ``watchdog()``, in seconds: half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises.

    None when no watchdog is configured, or when WATCHDOG_PID names another
    process (the variable was inherited, the watchdog is not ours).
    """
    raw = env.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000
