"""feedwatch.log: the lines of the libraries that log through the standard library."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from feedwatch import log
from feedwatch.redact import clear_secrets, register_secret


@pytest.fixture
def configured() -> Iterator[io.StringIO]:
    """``log.configure`` to a buffer, in JSON; structlog and the root logger as they
    were afterwards."""
    before = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    try:
        log.configure(level="info", fmt="json", stream=out)
        yield out
    finally:
        structlog.configure(**before)
        root.handlers[:] = handlers
        root.setLevel(level)
        clear_secrets()


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(x) for x in out.getvalue().splitlines()]


def test_a_library_warning_is_a_json_line_and_redacted(configured: io.StringIO) -> None:
    register_secret("hunter2-token")
    logging.getLogger("apscheduler.scheduler").warning("job failed with %s", "hunter2-token")
    structlog.get_logger("feedwatch.test").warning("ours", detail="hunter2-token")
    got = lines(configured)
    assert [(x["event"], x["level"]) for x in got] == [
        ("job failed with ***", "warning"),
        ("ours", "warning"),
    ]
    assert got[0]["logger"] == "apscheduler.scheduler"
    assert got[1]["detail"] == "***"
    assert "timestamp" in got[0]
    assert "hunter2" not in configured.getvalue()


def test_a_library_exception_keeps_its_traceback_in_the_line(configured: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    (line,) = lines(configured)
    assert line["level"] == "error"
    assert "RuntimeError: boom" in line["exception"]


def test_library_info_chatter_stays_out_and_configure_again_replaces(
    configured: io.StringIO,
) -> None:
    logging.getLogger("apscheduler.scheduler").info('Added job "x" to job store "default"')
    assert configured.getvalue() == ""
    again = io.StringIO()
    log.configure(level="error", fmt="json", stream=again)
    logging.getLogger("aiohttp").warning("a warning below the level asked for")
    logging.getLogger("aiohttp").error("an error")
    assert configured.getvalue() == ""  # the first handler was replaced, not kept
    assert [x["event"] for x in lines(again)] == ["an error"]


# what acts on a terminal: the C0 controls but the newline, DEL, C1, the line and
# paragraph separators and the bidi controls
ACTING = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# a title drawing a line of its own on a terminal: ESC E a new line, ESC [C a space
FORGING = "t\x1bE2026-01-01T00:00:00Z\x1b[C[error\x1b[C\x1b[C]\x1b[Cdelivery.dead\u202e"


def test_a_console_line_escapes_a_title_s_control_characters(configured: io.StringIO) -> None:
    """structlog's console renderer quotes a value only when it holds a space, a quote,
    `=`, a tab or a line break: a title's escape sequences went to the terminal as they
    were, and drew a log line of the feed's making (ESC E a new line, ESC [C a space).
    Each is written as Python writes it; so is a library's message, and a traceback's
    text (its line breaks kept)."""
    out = io.StringIO()
    log.configure(level="info", fmt="console", stream=out)
    structlog.get_logger("feedwatch.test").warning(
        "poll.entry",
        feed="news",
        title=FORGING,
        spaced="a \u009b2J b",
        plain="Markets",
        family="\x1b \U0001f468\u200d\U0001f469 C:\\tmp 'q'",
    )
    logging.getLogger("aiohttp.client").warning("header %s", "x\nforged\x1b[2J")
    try:
        raise ValueError("bad \x1b]0;title\x07 entry")
    except ValueError:
        structlog.get_logger("feedwatch.test").exception("feed.poll_crashed", feed="news")
    text = out.getvalue()
    assert not ACTING.search(text), repr(text)
    first, second, third, *traceback = text.splitlines()
    assert f"title={FORGING!r}" in first and "spaced='a \\x9b2J b'" in first, first
    assert "plain=Markets" in first, first
    # what acts on the terminal only: an emoji's joiner and a backslash as they are
    assert "family='\\x1b \U0001f468\u200d\U0001f469 C:\\tmp \\'q\\''" in first, first
    assert "header x\\nforged\\x1b[2J" in second, second
    assert "feed.poll_crashed" in third and traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == "ValueError: bad \\x1b]0;title\\x07 entry", traceback


def test_a_json_line_keeps_a_title_as_one_value(configured: io.StringIO) -> None:
    """JSON needs no such escaping: it writes every C0 control (the line breaks, ESC)
    as an escape, so a title stays one value of one line, read back as it was."""
    title = FORGING + '\r\n{"event": "forged"}\n'
    structlog.get_logger("feedwatch.test").warning("poll.entry", title=title)
    (line,) = lines(configured)
    assert line["title"] == title
    assert "\x1b" not in configured.getvalue() and configured.getvalue().count("\n") == 1


FORKED_WRITERS = """
import os, sys
import structlog
from feedwatch import log
log.configure(level="info", fmt="json", stream=sys.stderr)
pids = []
for i in range(4):
    pid = os.fork()
    if pid == 0:
        logger = structlog.get_logger("t")
        for n in range(2000):
            logger.info("line", writer=i, n=n)
        os._exit(0)
    pids.append(pid)
for p in pids:
    os.waitpid(p, 0)
"""


def test_processes_sharing_stderr_never_run_two_lines_together(tmp_path: Path) -> None:
    """A `check`'s body workers log to its stderr too. print() wrote a line and its
    newline apart, so lines of two processes ran together (a third of them, here),
    and a JSON reader lost both: the hostile-feed test missed a `feed.failed` now and
    then. Each line is one write now."""
    with (tmp_path / "stderr.txt").open("w") as err:
        subprocess.run([sys.executable, "-c", FORKED_WRITERS], stderr=err, check=True, timeout=60)
    text = (tmp_path / "stderr.txt").read_text()
    seen = {(e["writer"], e["n"]) for e in map(json.loads, text.splitlines())}
    assert seen == {(i, n) for i in range(4) for n in range(2000)}


JOURNAL_WRITER = """
import logging, os, sys
import structlog
from feedwatch import log
if sys.argv[1] == "match":
    st = os.fstat(2)
    os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
elif sys.argv[1] == "other":
    st = os.fstat(0)
    os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
log.configure(level="debug", fmt=sys.argv[2])
logger = structlog.get_logger("t")
logger.debug("a.debug")
logger.info("a.info")
logger.warning("a.warning")
logger.error("a.error")
logger.critical("a.critical")
logging.getLogger("apscheduler").warning("a library warning")
"""


def _journal_lines(tmp_path: Path, journal: str, fmt: str = "json") -> list[str]:
    err = tmp_path / f"stderr-{journal}-{fmt}.txt"
    with err.open("w") as f, (tmp_path / "stdin.txt").open("w+") as stdin:
        subprocess.run(
            [sys.executable, "-c", JOURNAL_WRITER, journal, fmt],
            stdin=stdin,
            stderr=f,
            check=True,
            timeout=60,
        )
    return err.read_text().splitlines()


def test_lines_to_the_journal_carry_their_syslog_priority(tmp_path: Path) -> None:
    """journald stored every line at info: `journalctl -p warning` showed nothing.
    Each line written to the journal's stream now starts with its priority (which
    journald strips), and the rest of the line is the same JSON."""
    got = _journal_lines(tmp_path, "match")
    prefixes = [line[: line.index(">") + 1] for line in got]
    assert prefixes == ["<7>", "<6>", "<4>", "<3>", "<2>", "<4>"]
    events = [json.loads(line[3:])["event"] for line in got]
    assert events[:5] == ["a.debug", "a.info", "a.warning", "a.error", "a.critical"]
    console = _journal_lines(tmp_path, "match", "console")
    assert [line[:3] for line in console] == ["<7>", "<6>", "<4>", "<3>", "<2>", "<4>"]


@pytest.mark.parametrize("journal", ["unset", "other"])
def test_lines_to_a_file_or_another_stream_carry_no_prefix(tmp_path: Path, journal: str) -> None:
    """No $JOURNAL_STREAM, or one naming another file (inherited by a process whose
    stderr was redirected): pure JSON lines."""
    got = _journal_lines(tmp_path, journal)
    assert [json.loads(line)["level"] for line in got] == [
        "debug",
        "info",
        "warning",
        "error",
        "critical",
        "warning",
    ]
