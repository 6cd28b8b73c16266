"""Sinks: each turns queued deliveries into a message somewhere (SPEC sections 5 and 6).

``build_sink`` is the one place a sink type name becomes an object; the
dispatcher only knows the ``Sink`` protocol of ``feedwatch.sinks.base``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from feedwatch import PROJECT_URL
from feedwatch.model import Config, SinkConfig
from feedwatch.store.base import Delivery

if TYPE_CHECKING:
    import httpx

    from feedwatch.sinks.base import Sink

SINK_TYPES = ("email", "webhook", "command", "jsonl", "console")


def build_sink(
    cfg: SinkConfig,
    *,
    http_client: httpx.AsyncClient | None = None,
    stdout: TextIO | None = None,
    tls_context: Any = None,
) -> Sink:
    """The sink for one ``[sinks.NAME]`` table. ``stdout`` serves jsonl ``-`` and the console."""
    if cfg.type == "webhook":
        from feedwatch.sinks.webhook import WebhookSink

        return WebhookSink(cfg, client=http_client)
    if cfg.type == "command":
        from feedwatch.sinks.command import CommandSink

        return CommandSink(cfg)
    if cfg.type == "jsonl":
        from feedwatch.sinks.jsonl import JsonlSink

        return JsonlSink(cfg, stdout=stdout)
    if cfg.type == "console":
        from feedwatch.sinks.console import ConsoleSink

        return ConsoleSink(cfg, stream=stdout)
    if cfg.type == "email":
        from feedwatch.sinks.email import EmailSink

        return EmailSink(cfg, tls_context=tls_context)
    raise ValueError(
        f"sink {cfg.name}: unknown type {cfg.type!r} (one of: {', '.join(SINK_TYPES)})"
    )


def machine_problem(cfg: SinkConfig) -> str | None:
    """What on this machine keeps the sink from working, if anything can be told
    without sending: a command's program that is not there (its alerts would go dead
    at once), a jsonl file's missing directory, a jsonl path that is a directory. Not
    a config error: the config may be meant for another machine, or a sandbox with
    another PATH."""
    if cfg.type == "command":
        argv = cfg.options.get("argv") or ()
        program = str(argv[0]) if argv else ""
        if not program:
            return None
        if os.sep in program:
            if not os.path.isfile(program):
                return f"sink {cfg.name}: program {program} does not exist"
            if not os.access(program, os.X_OK):
                return f"sink {cfg.name}: program {program} is not executable"
        elif shutil.which(program) is None:
            return f"sink {cfg.name}: program {program!r} is not on PATH ({os.environ.get('PATH', '')})"
    if cfg.type == "jsonl":
        from feedwatch.sinks.jsonl import file_path, missing_directory

        path = file_path(cfg)
        directory = missing_directory(path) if path != "-" else None
        if directory is not None:
            return f"sink {cfg.name}: directory {directory} of {path} does not exist"
        if path != "-" and os.path.isdir(path):
            return f"sink {cfg.name}: path {path} is a directory, not a file"
    return None


NO_SINK = (
    "no sink is configured: alerts are recorded in the state but sent nowhere, and"
    " a sink added later does not get them (add a [sinks.NAME] table)"
)


def no_sink_problem(config: Config) -> str | None:
    """A config with feeds and no sink: valid, but its alerts go nowhere, for good (a
    delivery is queued for the sinks an alert has when it is made)."""
    return NO_SINK if config.feeds and not config.sinks else None


def _utc(now: datetime) -> str:
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def sample_delivery(sink_name: str, now: datetime) -> Delivery:
    """A realistic `updated` alert for ``feedwatch test-sink``: every field of SPEC section 5 set.

    Its id is fresh for each call time, so a receiver that drops repeated ids
    still shows every test.
    """
    stamp = _utc(now)
    alert_id = hashlib.sha256(f"feedwatch-test-sink\0{sink_name}\0{stamp}".encode()).hexdigest()[
        :32
    ]
    published = "2024-11-22T10:40:17Z"
    payload: dict[str, Any] = {
        "version": 1,
        "id": alert_id,
        "kind": "updated",
        "detected_at": stamp,
        "feed": {
            "name": "feedwatch-test",
            "url": PROJECT_URL,
            "title": "feedwatch test feed",
            "tags": ["test"],
        },
        "entry": {
            "id": f"{PROJECT_URL}#test-alert",
            "title": f"Test alert from feedwatch for sink {sink_name!r}",
            "link": PROJECT_URL,
            "author": "feedwatch",
            "published": published,
            "updated": stamp,
            "summary": (
                "This is a sample alert sent by `feedwatch test-sink`. If you can read it, "
                f"the sink {sink_name!r} works."
            ),
            "content": (
                "This is a sample alert sent by `feedwatch test-sink`.\n\n"
                "Real alerts carry the entry's text here, with HTML removed."
            ),
            "tags": ["test"],
            "enclosures": [],
        },
        "changes": {
            "updated": {"old": published, "new": stamp},
            "summary": {
                "old": "This is a sample alert sent by `feedwatch test-sink`.",
                "new": (
                    "This is a sample alert sent by `feedwatch test-sink`. If you can read it, "
                    f"the sink {sink_name!r} works."
                ),
            },
        },
        "matched": [{"rule": "keywords", "terms": ["test"]}],
        "message": None,
    }
    return Delivery(
        alert_id=alert_id,
        sink=sink_name,
        feed="feedwatch-test",
        kind="updated",
        payload=payload,
        thread_id=None,
        created_at=now,
    )


__all__ = ["SINK_TYPES", "build_sink", "sample_delivery"]
