"""What a valid config is warned of when it starts working: `run` logs it at its start
and at each reload, `check` at its start (`validate` prints the same, and what this
machine's environment lacks, as ``warning:`` lines)."""

from __future__ import annotations

import structlog

from feedwatch.config import jitter_over_interval, rule_warnings, same_url_feeds
from feedwatch.model import Config
from feedwatch.sinks import machine_problem, no_sink_problem

log = structlog.get_logger("feedwatch.config")


def log_config_warnings(cfg: Config, *, scheduled: bool = True) -> None:
    """A sink that cannot work on this machine, no sink at all, two feeds on one URL, a
    jitter cut to the interval (``scheduled``: only polls on a schedule have one), rules
    that cannot do what was meant."""
    for sink in cfg.sinks.values():
        problem = machine_problem(sink)
        if problem:
            log.warning("sink.will_fail", sink=sink.name, problem=problem)
    no_sink = no_sink_problem(cfg)
    for event, problems in (
        ("config.no_sinks", [no_sink] if no_sink else []),
        ("config.same_url", same_url_feeds(cfg)),
        ("config.jitter_cut", jitter_over_interval(cfg) if scheduled else []),
        ("config.rule_warning", rule_warnings(cfg)),
    ):
        for problem in problems:
            log.warning(event, problem=problem)
