"""The console sink: alerts rendered for a person reading a terminal (``feedwatch demo``).

Feed text is stripped of control characters first, so a title cannot carry
terminal escape sequences.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from feedwatch.model import SinkConfig
from feedwatch.sinks import formats
from feedwatch.sinks.base import SendResult
from feedwatch.store.base import Delivery

TEXT_WIDTH = 100  # a changed text field is shortened to this on each side


def render_console(payload: formats.Payload) -> str:
    """A few indented lines: kind and feed, title, link, dates, and what changed."""
    label = formats.kind_label(payload).upper()
    lines = [f"== {label} · {formats.feed_display(payload)} =="]
    if formats.is_notice(payload):
        lines.append(f"  {formats.message_of(payload) or '(no message)'}")
    else:
        lines.append(f"  {formats.shorten(formats.entry_title(payload), 300)}")
        link = formats.entry_link(payload)
        if link:
            lines.append(f"  {link}")
        if formats.dates_text(payload):
            lines.append(f"  {formats.dates_text(payload)}")
        changes = formats.changed_fields(payload)
        if changes:
            lines.append("  changed:")
            for key, old, new in changes:
                lines.append(
                    f"    {key}: {formats.shorten(old, TEXT_WIDTH)}"
                    f" -> {formats.shorten(new, TEXT_WIDTH)}"
                )
        else:
            summary = formats.entry_summary(payload)
            if summary:
                lines.append(f"  {formats.shorten(summary, 2 * TEXT_WIDTH)}")
        if formats.matched_text(payload):
            lines.append(f"  matched: {formats.matched_text(payload)}")
    detected = payload.get("detected_at")
    if detected:
        lines.append(f"  detected {formats.human_time(detected)}")
    return formats.clean("\n".join(lines)) + "\n"


class ConsoleSink:
    type = "console"
    supports_digest = False

    def __init__(self, cfg: SinkConfig, *, stream: TextIO | None = None) -> None:
        self.name = cfg.name
        self._stream = stream

    async def send(self, deliveries: Sequence[Delivery]) -> SendResult:
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            for d in deliveries:
                stream.write(render_console(d.payload) + "\n")
            stream.flush()
        except (OSError, ValueError) as exc:
            return SendResult.transient(f"sink {self.name}: cannot write to the console: {exc}")
        return SendResult.success()

    async def aclose(self) -> None:
        return None
