"""The commands of SPEC section 2, and the wiring of the app in one place.

Exit status: 0 success; 1 a run-time failure (a feed or a delivery failed, the
state is locked, corrupt or too new, or older and the command is not one of the two
that upgrade it, `check` and `run`); 2 a usage or config error (nothing was polled,
sent or written); `check` stopped by SIGTERM, SIGINT or SIGHUP: 128 + the signal's number
(the sends under way ended and were marked, the rest waits: feedwatch.stopsignals).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

import structlog

from feedwatch import __version__, streams
from feedwatch import log as logsetup
from feedwatch.clock import system_clock
from feedwatch.config import ConfigError, Problem, find_config_path, load_config
from feedwatch.model import Config, FeedConfig
from feedwatch.payload import payload_line
from feedwatch.present import show
from feedwatch.redact import MASK, redact
from feedwatch.stopsignals import CheckStop
from feedwatch.store import (
    StateError,
    drop_removed_feeds,
    is_postgres_url,
    no_state_at,
    nothing_polled,
    open_store,
    prune_alerts,
)
from feedwatch.store.base import FeedRecord, Store
from feedwatch.text import escaped, escaped_lines

if TYPE_CHECKING:
    from feedwatch.bodyworkers import BodyWorkers
    from feedwatch.deliver import DispatchReport

log = structlog.get_logger("feedwatch.cli")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

# Commands that live in a module of their own. Each module has
#   add_arguments(parser: argparse.ArgumentParser) -> None
#   run(args: argparse.Namespace, out: TextIO, load: Callable[[], Config]) -> int
# (`load` finds, loads and validates the config; commands that need none never call it).
COMMAND_MODULES: list[tuple[str, str, str]] = [
    # (name, module, help)
    ("preview", "feedwatch.preview", "fetch one feed: its entries, keyword hits, diagnostics"),
    ("explain", "feedwatch.explain", "why an entry did or did not alert"),
    ("alerts", "feedwatch.history", "the alerts recorded, newest first, and where each went"),
    ("init", "feedwatch.init", "print a commented starter config"),
    ("import-opml", "feedwatch.opml", "print [[feeds]] blocks for an OPML file's feeds"),
    ("run", "feedwatch.daemon", "run as a daemon: poll every feed on schedule, deliver alerts"),
    ("migrate-state", "feedwatch.migrate", "copy an SQLite state file into PostgreSQL"),
]


_BUILTIN_COMMANDS = ("check", "validate", "status", "test-sink", "redeliver", "forget", "demo")

# Only `check` and `run` upgrade an older state, under its lock (feedwatch.store.open_store)
_OLDER_STATE = "A state from an older feedwatch is refused until `check` or `run` upgrades it."


class UsageError(Exception):
    pass


def _build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """``only``: the command being run, so other commands' modules need not be imported."""
    loudness = argparse.ArgumentParser(add_help=False)  # every command's, demo's too
    verbosity = loudness.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    verbosity.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)
    common = argparse.ArgumentParser(add_help=False, parents=[loudness])
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, help="config file")
    common.add_argument(
        "--state", default=argparse.SUPPRESS, help="state file (overrides the config)"
    )

    p = argparse.ArgumentParser(
        prog="feedwatch",
        description="Watch feeds for new and updated entries that match your rules, and alert.",
        parents=[common],
    )
    p.add_argument("--version", action="version", version=f"feedwatch {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    c = sub.add_parser(
        "check",
        parents=[common],
        help="poll feeds once, deliver alerts, exit",
        description="Poll the feeds once now, deliver the alerts and retry every pending"
        " delivery, then exit. A state from an older feedwatch is upgraded first (with a"
        " .bak-vN copy), unless --dry-run. SIGTERM, SIGINT or SIGHUP stop it as they stop the"
        " daemon: the polls and sends under way end (within shutdown_timeout), the rest"
        " waits for the next check; exit 128 + the signal's number.",
    )
    c.add_argument(
        "--feed", action="append", default=[], metavar="NAME", help="only this feed (repeatable)"
    )
    c.add_argument("--dry-run", action="store_true", help="send nothing, change no state")
    c.add_argument("--json", action="store_true", help="print the alerts as JSON lines")

    sub.add_parser(
        "validate",
        parents=[common],
        help="check the config",
        description="Load and check the config (and its includes): print `ok: N feeds, M"
        " sinks, K rules`, or every problem found as FILE:LINE: key.path: message (exit 2)."
        " Warnings on stderr name what is valid but will not work as meant. Touches no state.",
    )

    s = sub.add_parser(
        "status",
        parents=[common],
        help="feeds and sinks as the state file sees them",
        description="How every feed and sink is doing, from the config and the state,"
        f" which it only reads. {_OLDER_STATE}",
    )
    s.add_argument("--json", action="store_true", help="print it as one JSON object")
    s.add_argument(
        "--check", action="store_true", help="exit 1 if a feed is failing or a delivery is dead"
    )

    t = sub.add_parser(
        "test-sink",
        parents=[common],
        help="send a sample alert to a sink",
        description="Send one sample alert to the sink NAME now (a digest is bypassed) and"
        " print the outcome: exit 1 if it failed, 2 for an unknown sink. Touches no state.",
    )
    t.add_argument("name")

    r = sub.add_parser(
        "redeliver",
        parents=[common],
        help="queue dead deliveries again",
        description=f"Put dead deliveries back in the queue. {_OLDER_STATE}",
    )
    r.add_argument("--sink", metavar="NAME", help="only this sink's dead deliveries")
    r.add_argument("--feed", metavar="NAME", help="only the dead deliveries of this feed's alerts")

    f = sub.add_parser(
        "forget",
        parents=[common],
        help="drop a feed's entries: next poll is a baseline",
        description="Drop a feed's stored entries and HTTP state: its next poll records a"
        " baseline. With no state file yet there is nothing to forget (exit 0)."
        f" {_OLDER_STATE}",
    )
    f.add_argument("feed")

    sub.add_parser(
        "demo",
        parents=[loudness],  # no -c/--state: its own feed, a temporary state
        help="see a new and an updated entry detected, offline",
        description="Serve a feed on 127.0.0.1 and watch it with a console sink: a baseline,"
        " then a new entry alerted, then the same entry updated. Needs no config and no"
        " network (it reads no config file and no state: -c/--config and --state do not"
        " apply), and leaves nothing behind.",
    )
    for name, module, help_text in COMMAND_MODULES:
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a command whose module is not built in
            if exc.name != module:
                raise
            continue
        sp = sub.add_parser(name, parents=[common], help=help_text)
        mod.add_arguments(sp)
    return p


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    streams.guard_standard_descriptors()
    out: TextIO = stdout or sys.stdout or cast(TextIO, streams.ClosedStdout())
    for stream in (out, sys.stderr):
        streams.tolerant(stream)
    if sys.stderr is not None:
        sys.stderr = streams.lasting(sys.stderr)
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the module of the command being run (the daemon's pulls in APScheduler).
    names = {name for name, _m, _h in COMMAND_MODULES}
    chosen = next((a for a in argv if a in names), None)
    builtin = next((a for a in argv if a in _BUILTIN_COMMANDS), None)
    parser = _build_parser(chosen or builtin)
    args = parser.parse_args(argv)
    level = (
        "warning"
        if getattr(args, "quiet", False)
        else ("debug" if getattr(args, "verbose", False) else "info")
    )
    logsetup.configure(level=level)
    try:
        if args.command == "demo":
            from feedwatch.demo import main as demo_main

            if hasattr(args, "config") or hasattr(args, "state"):  # given before `demo`
                print(
                    "feedwatch: demo ignores -c/--config and --state (it watches its own"
                    " feed, with a temporary state)",
                    file=sys.stderr,
                )
            logsetup.configure(level="debug" if getattr(args, "verbose", False) else "warning")
            return demo_main(out)
        return _dispatch(args, out)
    except UsageError as exc:
        print(f"feedwatch: {escaped(redact(str(exc)))}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        # a feed's or sink's name as written may hold a terminal's escape sequence
        _say_start_failed(args.command, str(exc), escaped_lines(str(exc)))
        return EXIT_USAGE
    except StateError as exc:
        message = redact(str(exc))
        _say_start_failed(args.command, message, f"feedwatch: {message}")
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `feedwatch alerts | head -1`: the reader has what it wanted (`check` goes
        # on delivering, and says so, in its own handler)
        _discard_output(out)
        return EXIT_OK


def _say_start_failed(command: str, message: str, plain: str) -> None:
    """Why a command could not begin. The daemon's stderr is its log (the journal,
    read as JSON lines): one log event there; another command's gets ``plain``, as
    the rest of its output."""
    if command == "run":
        log.error("daemon.start_failed", error=message)
    else:
        print(plain, file=sys.stderr)


def _load(args: argparse.Namespace, path: Path | None = None) -> Config:
    """The config of ``path``, else of the file found now (``find_config_path``)."""
    explicit = getattr(args, "config", None)
    if path is None:
        path = find_config_path(explicit)
    try:
        config = load_config(path, state_override=getattr(args, "state", None))
    except ConfigError as exc:
        if explicit or not os.environ.get("FEEDWATCH_CONFIG"):
            raise
        # a file the user did not name on this command line: say where its name came from
        raise ConfigError([_from_variable(p, str(path)) for p in exc.problems]) from None
    if not getattr(args, "quiet", False) and not getattr(args, "verbose", False):
        logsetup.configure(level=config.log_level, fmt=config.log_format)
    else:
        logsetup.configure(
            level="warning" if getattr(args, "quiet", False) else "debug", fmt=config.log_format
        )
    return config


def _from_variable(problem: Problem, path: str) -> Problem:
    """A problem with the whole file ``path`` (it cannot be read, say), its name
    followed by where it came from: $FEEDWATCH_CONFIG."""
    if problem.file != path or problem.line is not None or problem.path:
        return problem
    return replace(problem, file=f"{path} (from $FEEDWATCH_CONFIG)")


def _loader(args: argparse.Namespace) -> Callable[[], Config]:
    """A command module's ``load``. The daemon's loads its config again at each reload:
    the file found at its start, by its absolute path, and never another one that
    appeared since (a feedwatch.toml made later in its directory silently replaced the
    feeds). Not resolved: a symlink swapped for a new version is followed at a reload."""
    if args.command != "run":
        return lambda: _load(args)
    path = find_config_path(getattr(args, "config", None)).absolute()
    return lambda: _load(args, path)


def _dispatch(args: argparse.Namespace, out: TextIO) -> int:
    for name, module, _help in COMMAND_MODULES:
        if args.command == name:
            run: Callable[..., int] = importlib.import_module(module).run
            return run(args, out, _loader(args))
    if args.command == "validate":
        from feedwatch.config import jitter_over_interval, rule_warnings, same_url_feeds
        from feedwatch.fetch import environment_problems
        from feedwatch.sinks import machine_problem, no_sink_problem

        config = _load(args)
        rules = len({r.name for f in config.feeds for r in f.rules} | set(config.rules))
        print(f"ok: {len(config.feeds)} feeds, {len(config.sinks)} sinks, {rules} rules", file=out)
        for sink in config.sinks.values():  # valid, but will not work here
            problem = machine_problem(sink)
            if problem:
                print(f"warning: {show(problem)}", file=sys.stderr)
        # valid, but `check` and `run` would refuse to start in this environment
        tls = any(_uses_tls(f.url) for f in config.feeds)
        for problem in (
            [p for p in (no_sink_problem(config),) if p]
            + environment_problems(tls=tls)
            + same_url_feeds(config)
            + jitter_over_interval(config)
            + rule_warnings(config)
        ):
            # a feed's name may hold a ${VAR}'s value: masked, as the log's lines are; and
            # a control character or a bidi override: escaped (``show``), as status's are
            print(f"warning: {show(problem)}", file=sys.stderr)
        return EXIT_OK
    config = _load(args)
    if args.command == "check":
        return _check(config, args, out)
    if args.command == "status":
        from feedwatch.status import status_command

        return status_command(config, out, as_json=args.json, check=args.check)
    if args.command == "test-sink":
        if args.name not in config.sinks:
            raise UsageError(f"unknown sink {args.name!r} (configured: {_names(config.sinks)})")
        return asyncio.run(_test_sink(config, args.name, out))
    if args.command == "redeliver":
        if args.sink and args.sink not in config.sinks:
            raise UsageError(f"unknown sink {args.sink!r} (configured: {_names(config.sinks)})")
        # no state: nothing is dead, write nothing. An older schema is not upgraded
        # here: a daemon of the older release may be running on it (no lock is taken)
        store = open_store(config.state, create=False, upgrade=False)
        try:
            if args.feed and config.feed(args.feed) is None:
                # a removed feed's alerts outlive its row (retention drops the row first)
                if store is None or not store.knows_feed(args.feed):
                    raise UsageError(f"unknown feed {args.feed!r}")
            n = (
                0
                if store is None
                else store.redeliver(system_clock(), sink=args.sink, feed=args.feed)
            )
        finally:
            if store is not None:
                store.close()
        if store is None:
            print(nothing_polled(config.state), file=sys.stderr)
        print(f"{n} dead deliveries queued again", file=out)
        return EXIT_OK
    if args.command == "forget":
        existing = open_store(config.state, create=False, upgrade=False)  # (as redeliver)
        if existing is None:
            # nothing was polled: nothing to forget (as `status` and `explain` read no
            # state as every feed new), unless the name is a typo
            if config.feed(args.feed) is None:
                raise _unknown_feed(args.feed, config)
            print(
                f"nothing to forget: {no_state_at(config.state)} yet (nothing was polled)", file=out
            )
            return EXIT_OK
        try:
            record = existing.feed(args.feed)
            known = existing.forget(args.feed)
        finally:
            existing.close()
        from feedwatch import parsecache

        parsecache.remove(parsecache.file_for(parsecache.directory(config.state), args.feed))
        if config.feed(args.feed) is None:
            if not known:
                raise _unknown_feed(args.feed, config)
            # (no next poll: a feed out of the config is not polled.) Named as the state
            # shows it: its ${VAR} values are no longer known for secrets
            shown = record.shown_name if record is not None else MASK
            print(
                f"forgot {show(shown)}: it is not in the config, so nothing polls it;"
                " added back, its first poll records a new baseline",
                file=out,
            )
            return EXIT_OK
        print(f"forgot {show(args.feed)}: its next poll records a new baseline", file=out)
        return EXIT_OK
    raise UsageError(f"unknown command {args.command}")


def _names(sinks: Mapping[str, object]) -> str:
    """The configured sinks' names for a message: ``show``n (a TOML key may hold a
    control character), or "none"."""
    return ", ".join(map(show, sinks)) or "none"


def _open(config: Config) -> Store:
    store = open_store(config.state)
    assert store is not None
    return store


def _unknown_feed(name: str, config: Config) -> UsageError:
    """A feed name in neither the config nor the state: the configured ones listed
    (as `explain` and `alerts` do)."""
    from feedwatch.present import unknown_feed

    return UsageError(unknown_feed(name, (f.name for f in config.feeds)))


def _select_feeds(config: Config, names: Sequence[str]) -> list[FeedConfig]:
    if not names:
        return [f for f in config.feeds if f.enabled]
    feeds: list[FeedConfig] = []
    for name in names:
        feed = config.feed(name)
        if feed is None:
            raise _unknown_feed(name, config)
        if feed not in feeds:
            feeds.append(feed)
    return feeds


def _check(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    from feedwatch.fetch import check_environment, preload_ssl_context

    feeds = _select_feeds(config, args.feed)
    # with an https feed, the CA bundle loads beside the state's opening and reading;
    # with none, only a redirect to https would load it (Fetcher's tls_on_demand)
    tls = any(_uses_tls(f.url) for f in feeds)
    tls_ready = preload_ssl_context() if tls else None
    try:
        # before the state opens: an exit 2 writes nothing, not even an empty state
        # (an SSL_CERT_FILE set waits for the CA load here, to see that it can be read)
        check_environment(tls=tls)
        # SIGTERM/SIGINT/SIGHUP: a stop as the daemon's, not a kill mid-send
        with CheckStop(config.shutdown_timeout) as stop:
            return _check_with(config, args, out, feeds, tls_ready, stop)
    finally:
        if tls_ready is not None:
            # on every way out, a refused state included: a thread still in OpenSSL
            # when the interpreter exits can crash it (seen: 1 exit in 150 a segfault)
            tls_ready()


def _check_with(
    config: Config,
    args: argparse.Namespace,
    out: TextIO,
    feeds: list[FeedConfig],
    tls_ready: Callable[[], None] | None,
    stop: CheckStop,
) -> int:
    """`check` itself; ``tls_ready`` waits for the CA load, None: no feed needs TLS.
    ``stop``: a signal stops it as the daemon stops (feedwatch.stopsignals): the polls
    and sends under way end, nothing new starts, exit 128 + the signal's number."""
    from feedwatch.config_warnings import log_config_warnings
    from feedwatch.deliver import DispatchReport
    from feedwatch.store.lock import acquire_lock

    sink = _stdout_sink(config)
    if args.json and sink is not None:
        raise UsageError(
            f"sink {sink!r} writes JSON lines to stdout"
            f' (path = "{config.sinks[sink].options.get("path")}"); '
            "it cannot be combined with --json"
        )
    console = next((s.name for s in config.sinks.values() if s.type == "console"), None)
    if args.json and console is not None:  # its text would break the JSON lines (`| jq`)
        raise UsageError(
            f'sink {console!r} (type = "console") prints alerts as text on stdout;'
            " it cannot be combined with --json"
        )
    log_config_warnings(config, scheduled=False)  # a single poll has no jitter to cut
    quiet = getattr(args, "quiet", False)  # -q: only warnings and errors on stderr
    lock = None
    tmpdir = None
    if args.dry_run:  # reads, never writes: not even an older schema's upgrade
        store = open_store(config.state, create=False, upgrade=False)
        if store is None:
            tmpdir = tempfile.TemporaryDirectory(prefix="feedwatch-dry-run-")
            store = open_store(str(Path(tmpdir.name) / "state.db"))
            assert store is not None
    else:
        if not is_postgres_url(config.state):
            lock = acquire_lock(config.state)
        store = _open(config)
    stop.store = store
    workers = None
    stdout_lost = False
    try:
        to_poll, records, skipped = _due(store, feeds, args)
        if tls_ready is not None:
            tls_ready()  # before _body_workers forks (a fork copies only this thread)
        polled = None
        if not stop.requested():
            workers = _body_workers(config, args, len(to_poll))
            polled = asyncio.run(
                stop.guard(
                    _poll_here(
                        config,
                        args,
                        store,
                        to_poll,
                        records,
                        skipped=skipped,
                        body_workers=workers,
                        tls=tls_ready is not None,
                        ascii_json=streams.ascii_json(out),
                        stop=stop,
                    )
                )
            )
        if workers is not None:
            workers.stop()  # they end beside the delivery; reaped below
        if polled is None:  # stopped before the polls, or cut short in them
            reports: list[Any] = []
            shown = _AlertLines(json_lines=args.json, dry_run=args.dry_run)
        else:
            reports, shown = polled
        failed = any(r.result == "error" for r in reports)

        for r in reports:
            if r.result == "error":
                print(f"error {show(r.feed)}: {show(r.error or 'failed')}", file=sys.stderr)
        # a jsonl sink on stdout (`check | jq`): stdout holds its JSON lines only
        lines_to = sys.stderr if sink is not None and not args.dry_run else out
        try:
            if quiet and lines_to is sys.stderr:  # (they are info, not warnings)
                shown.discard()
            else:
                shown.write_to(lines_to)
                lines_to.flush()
        except OSError as exc:  # a pipe whose reader left (`| head`), a hung-up terminal
            stdout_lost = True  # the alerts are stored: their delivery goes on
            log.warning(
                "check.stdout_closed",
                error=exc.strerror or str(exc),
                hint="the alert lines were not printed; the alerts still go to their sinks",
            )

        delivery_ok = True
        report: DispatchReport | None = None
        if stop.requested():  # no send starts: the alerts wait in the outbox
            return _stopped(stop, store, len(to_poll), len(reports), None)
        if not args.dry_run:
            # counted as it goes: a second signal, or shutdown_timeout over, may cut it
            # short (guard: None), and what was sent and marked until then is in it
            report = DispatchReport()
            asyncio.run(stop.guard(_deliver(config, store, out, report, stop)))
            delivery_ok = report.ok
            for failure in report.failures:
                print(f"delivery failed {show(failure)}", file=sys.stderr)
            if stop.requested():
                return _stopped(stop, store, len(to_poll), len(reports), report)
            _upkeep(config, store)
            summary = (
                f"{len(reports)} feeds polled ({sum(r.result != 'error' for r in reports)} ok, "
                f"{sum(r.result == 'error' for r in reports)} failed), "
                f"{sum(r.new for r in reports if r.baseline and _baselines(config, r.feed))} baselined, "
                f"{sum(r.new for r in reports if not (r.baseline and _baselines(config, r.feed)))} new, "
                f"{sum(r.updated for r in reports)} updated, {shown.count} alerts; "
                f"deliveries: {report.delivered} sent, {report.retried} to retry, "
                f"{report.dead} dead, {report.waiting} held"
                + (f", {report.unmarked} sent but not marked" if report.unmarked else "")
            )
        else:
            summary = f"dry run: {len(reports)} feeds polled, {shown.count} alerts would be sent"
        if not args.json and not quiet:
            print(summary, file=sys.stderr)
        if stop.signalled:  # (it came once every send had ended)
            return _stopped(stop, store, len(to_poll), len(reports), report)
        return EXIT_FAIL if failed or not delivery_ok else EXIT_OK
    finally:
        if stdout_lost:
            _discard_output(out)
        if workers is not None:
            workers.close()  # before ours closes: the state's last closer checkpoints
        store.close()
        if lock is not None:
            lock.release()
        if tmpdir is not None:
            tmpdir.cleanup()


def _stopped(
    stop: CheckStop, store: Store, feeds: int, polled: int, report: DispatchReport | None
) -> int:
    """A signal stopped `check`: one log line for what was done and what is left (the
    next check polls the feeds not polled and sends what waits); exit 128 + its number."""
    pending: int | None
    try:
        pending = sum(c.pending for c in store.sink_counts().values())
    except StateError:
        pending = None
    log.warning(
        "check.stopped",
        signal=stop.signal.name if stop.signal is not None else None,
        feeds_polled=polled,
        feeds_not_polled=feeds - polled,
        deliveries_sent=report.delivered if report is not None else 0,
        deliveries_pending=pending,
        cut_short=stop.cut_short,
        hint="the next check polls the feeds not polled and sends what is pending",
    )
    return stop.exit_code


def _upkeep(config: Config, store: Store) -> None:
    """What the daemon's hourly upkeep does, after each `check` (cron has no daemon):
    delivered and dead alerts older than the global `retention` go, then the state of
    feeds out of the config for that long (an index search and a few rows read: cheap).
    A failure here fails nothing that was done."""
    now = system_clock()
    try:
        prune_alerts(store, config, now)
    except StateError as exc:
        log.warning("state.alerts_not_pruned", error=str(exc))
    try:
        drop_removed_feeds(store, config, now)
    except StateError as exc:
        log.warning("state.removed_feeds_not_dropped", error=str(exc))


def _stdout_sink(config: Config) -> str | None:
    """The name of a jsonl sink that writes to stdout, if there is one."""
    from feedwatch.sinks.jsonl import writes_to_stdout

    for s in config.sinks.values():
        if s.type == "jsonl" and writes_to_stdout(str(s.options.get("path"))):
            return s.name
    return None


def _discard_output(out: TextIO) -> None:
    """What is still buffered for a closed stdout goes nowhere, so that the interpreter's
    last flush does not fail again ("Exception ignored ... BrokenPipeError", exit 120).
    Only once the alerts are delivered: a jsonl sink on stdout must fail, not vanish."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)


def _uses_tls(url: str) -> bool:
    return url[:6].lower() == "https:"


def _due(
    store: Store, feeds: Sequence[FeedConfig], args: argparse.Namespace
) -> tuple[list[FeedConfig], dict[str, FeedRecord], list[FeedConfig]]:
    """The feeds to poll: not those a server asked to be left alone, nor gone ones
    (unless named); their records as they are now (for their polls); and the feeds
    skipped for either reason (not polled, yet judged for staleness)."""
    now = system_clock()
    records = store.feeds()
    to_poll: list[FeedConfig] = []
    skipped: list[FeedConfig] = []
    for feed in feeds:
        rec = records.get(feed.name)
        until = rec.retry_after_at(feed.url) if rec is not None else None  # (not another url's)
        if until is not None and until > now:
            print(
                f"skipped {show(feed.name)}: the server asked to be left alone until "
                f"{until:%Y-%m-%d %H:%M:%SZ} (Retry-After)",
                file=sys.stderr,
            )
            skipped.append(feed)
            continue
        if rec is not None and rec.gone_at(feed.url):  # (another url is polled)
            if not args.feed:
                print(
                    f"skipped {show(feed.name)}: gone (HTTP 410);"
                    f" `check --feed {show(feed.name)}` polls it again",
                    file=sys.stderr,
                )
                skipped.append(feed)
                continue
            if not args.dry_run:
                store.clear_gone(feed.name)
                del records[feed.name]  # changed: its poll reads it again
        to_poll.append(feed)
    return to_poll, records, skipped


def _body_workers(config: Config, args: argparse.Namespace, feeds: int) -> BodyWorkers | None:
    """Forked processes that handle the fetched bodies (feedwatch.bodyworkers), or None:
    the parse pool instead."""
    from feedwatch.bodyworkers import MIN_FEEDS, BodyWorkers
    from feedwatch.parsepool import worker_count
    from feedwatch.poll import Poller

    workers = worker_count(config.parse_workers)
    if workers < 1 or feeds < MIN_FEEDS or args.dry_run or is_postgres_url(config.state):
        return None

    def make_poller() -> Poller:  # in a worker
        return Poller(config, _open(config), None, prune_cache=False)

    pool = BodyWorkers.start(workers, make_poller)
    if pool is not None:
        log.info("check.body_workers", workers=pool.alive, feeds=feeds)
    return pool


START_BATCH = 16
"""Polls `check` starts before the event loop turns (see ``_poll_here``)."""


async def _poll_here(
    config: Config,
    args: argparse.Namespace,
    store: Store,
    feeds: Sequence[FeedConfig],
    records: dict[str, FeedRecord],
    *,
    skipped: Sequence[FeedConfig] = (),
    body_workers: BodyWorkers | None = None,
    tls: bool = True,
    ascii_json: bool = False,
    stop: CheckStop | None = None,
) -> tuple[list[Any], _AlertLines]:
    """``skipped``: feeds not polled (a Retry-After holds, or 410 Gone), whose `stale`
    notice may be due.
    ``tls``: whether a feed's URL is https (else the CA bundle loads only if a
    redirect leads to one). ``ascii_json``: --json lines escape non-ASCII characters
    (stdout is not UTF-8)."""
    from feedwatch.fetch import Fetcher
    from feedwatch.parsepool import ParsePool, worker_count
    from feedwatch.poll import Poller

    shown = _AlertLines(json_lines=args.json, dry_run=args.dry_run, ascii_only=ascii_json)
    async with Fetcher(
        concurrency=config.concurrency, per_host=config.per_host, tls_on_demand=not tls
    ) as fetcher:
        # bodies go to the body workers, or are parsed in worker processes: off the
        # event loop (parsing never eats into other requests' timeouts) and on every core
        pool = ParsePool(0 if body_workers is not None else worker_count(config.parse_workers))
        if body_workers is not None:
            body_workers.fetching = lambda: fetcher.requests > 0
        poller = Poller(
            config,
            store,
            fetcher,
            dry_run=args.dry_run,
            parse_executor=pool,
            body_workers=body_workers,
            records=records,
        )

        if stop is not None:
            stop.on_stop(fetcher.stop_new_requests)

        async def poll(index: int, feed: FeedConfig) -> Any:
            # the alerts' lines now, the alerts themselves dropped: a cold check can
            # alert on every entry of every feed, and their payloads would all be kept
            try:
                r = await poller.poll(feed)
            except asyncio.CancelledError:
                if stop is None or not stop.signalled:
                    raise
                # a stop: this poll had no request out yet; it committed nothing
                log.info("feed.poll_abandoned", feed=feed.name)
                return None
            if r.alerts:
                shown.add(index, r.alerts)
                r = replace(r, alerts=[])
            return r

        tasks: list[asyncio.Task[Any]] = []
        try:
            # Started a few at a time, the loop turning between batches: a poll's
            # first step (its request, its URL parsed) is ~50 us, so starting all of
            # them at once kept the first response, and the body workers' first body,
            # waiting ~55 ms for 1,000 feeds (~35 ms now). Every poll still starts
            # within a few ms, and the fetcher's semaphores still decide the order.
            for i, f in enumerate(feeds):
                tasks.append(asyncio.ensure_future(poll(i, f)))
                if len(tasks) % START_BATCH == 0:
                    await asyncio.sleep(0)
            reports = [r for r in await asyncio.gather(*tasks) if r is not None]
        except BaseException:
            for t in tasks:
                t.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)  # the workers' memory goes back before delivery
        if stop is not None and stop.signalled:
            skipped = ()  # their `stale` notices are judged by the next check
        for i, f in enumerate(skipped, start=len(feeds)):
            if notices := await poller.stale_check(f):
                shown.add(i, notices)
    return reports, shown


async def _deliver(
    config: Config,
    store: Store,
    out: TextIO,
    report: DispatchReport | None = None,
    stop: CheckStop | None = None,
) -> DispatchReport:
    """The deliveries of `check`, counted into ``report`` as they go."""
    from feedwatch.deliver import Dispatcher
    from feedwatch.sinks import build_sink

    sinks: dict[str, Any] = {
        name: build_sink(cfg, stdout=out) for name, cfg in config.sinks.items()
    }
    dispatcher = Dispatcher(config, store, sinks)
    if stop is not None:
        stop.on_stop(dispatcher.stop)  # the sends under way end and are marked
    try:
        report = await dispatcher.run_once(force=True, report=report)
        if report.unmarked:  # no next round: the marks the state did not take, once more
            await dispatcher.store_unmarked(report)
        return report
    finally:
        await dispatcher.aclose()


class _AlertLines:
    """What `check` prints of its alerts, rendered as each feed's poll ends and written
    out in the feeds' order once all are polled. Beyond a few MB (a cold start's alerts,
    with --json their whole payloads) the lines wait in a temporary file, not in memory."""

    SPOOL_MAX = 8 << 20  # bytes kept in memory before the temporary file

    def __init__(self, *, json_lines: bool, dry_run: bool, ascii_only: bool = False) -> None:
        self.json_lines = json_lines
        self.ascii_only = ascii_only
        self.prefix = "would alert" if dry_run else "alert"
        self.count = 0
        self._file = tempfile.SpooledTemporaryFile(max_size=self.SPOOL_MAX)
        self._parts: dict[int, tuple[int, int]] = {}

    def add(self, index: int, alerts: Sequence[Any]) -> None:
        data = "".join(self._line(a) for a in alerts).encode("utf-8", "surrogatepass")
        offset = self._file.seek(0, 2)
        self._file.write(data)
        self._parts[index] = (offset, len(data))
        self.count += len(alerts)

    def _line(self, a: Any) -> str:
        if self.json_lines:
            return payload_line(a.payload, ascii_only=self.ascii_only)
        entry = a.payload.get("entry")
        if entry:  # as the email and chat messages name an entry without a title
            title = str(entry.get("title") or "")
            title = title if title.strip() else "(untitled)"
        else:
            title = a.payload.get("message") or ""
        return f"{self.prefix} {a.id} {a.kind} {show(a.feed)}: {show(title)} -> {', '.join(a.sinks) or '(no sink)'}\n"

    def write_to(self, out: TextIO) -> None:
        for index in sorted(self._parts):
            offset, size = self._parts[index]
            self._file.seek(offset)
            out.write(self._file.read(size).decode("utf-8", "surrogatepass"))
        self._file.close()

    def discard(self) -> None:
        self._file.close()


def _baselines(config: Config, feed: str) -> bool:
    f = config.feed(feed)
    return f is None or f.settings.first_poll == "baseline"


async def _test_sink(config: Config, name: str, out: TextIO) -> int:
    from feedwatch.redact import redact
    from feedwatch.sinks import build_sink, sample_delivery

    cfg = replace(config.sinks[name], digest=0.0)
    sink = build_sink(cfg, stdout=out)
    try:
        result = await sink.send([sample_delivery(name, system_clock())])
    finally:
        await sink.aclose()
    if result.ok:
        print(f"ok: sample alert delivered to sink {name!r}", file=out)
        return EXIT_OK
    kind = "permanent" if result.permanent else "transient"
    print(f"failed ({kind}): {redact(result.error or 'failed')}", file=out)
    return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
