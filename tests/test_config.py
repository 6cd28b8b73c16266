"""The TOML config loader: values, every kind of problem with its path and line, secrets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedwatch import DEFAULT_USER_AGENT
from feedwatch.config import (
    MAX_DURATION,
    ConfigError,
    Problem,
    default_state_path,
    find_config_path,
    format_duration,
    load_config,
    parse_duration,
    parse_duration_arg,
    parse_jitter,
    parse_size,
    rule_warnings,
)
from feedwatch.model import Config, Jitter, Secret
from feedwatch.redact import (
    clear_secrets,
    mask,
    redact,
    redact_cut,
    redact_refused_url,
    redact_url,
    register_secret,
    secrets_in,
)
from tests.helpers import bare_env, run_feedwatch

ROOT = Path(__file__).resolve().parent.parent
BASE_ENV = {"HOME": "/home/tester"}


@pytest.fixture(autouse=True)
def _fresh_secrets() -> Iterator[None]:
    clear_secrets()
    yield
    clear_secrets()


def write(tmp_path: Path, text: str, name: str = "feedwatch.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), env={**BASE_ENV, **(env or {})})


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    lines = str(info.value).splitlines()
    assert lines == [str(p) for p in info.value.problems]
    return lines


def strip_dir(lines: list[str], tmp_path: Path) -> list[str]:
    return [line.replace(str(tmp_path) + os.sep, "") for line in lines]


FEED = """
[[feeds]]
name = "f"
url = "https://example.org/feed"
"""

# --------------------------------------------------------------------------
# durations, sizes, jitter
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (90, 90.0),
        ("90s", 90.0),
        ("15m", 900.0),
        ("1h30m", 5400.0),
        ("7d", 604800.0),
        ("1d2h3m4s", 93784.0),
        ("1h 30m", 5400.0),
        ("0s", 0.0),
        ("1.5h", 5400.0),
    ],
)
def test_parse_duration(value: int | str, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("90", "has no unit"),
        ("15x", 'invalid duration "15x"'),
        ("", "invalid duration"),
        ("m15", "invalid duration"),
        ("15M", "invalid duration"),
        (-5, "non-negative"),
        (True, "got a boolean"),
        ([1], "got an array"),
        ("36501d", "at most 36500d"),
        ("99999999999d", "at most 36500d"),
        (36500 * 86400 + 1, "at most 36500d"),
    ],
)
def test_parse_duration_errors(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_duration(value)  # type: ignore[arg-type]


@settings(max_examples=150)
@given(st.integers(min_value=0, max_value=10**9))
def test_duration_round_trip(seconds: int) -> None:
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    assert parse_duration(seconds) == seconds


@settings(max_examples=100)
@given(st.lists(st.tuples(st.integers(0, 10**5), st.sampled_from("smhd")), min_size=1, max_size=4))
def test_duration_parts_add_up(parts: list[tuple[int, str]]) -> None:
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = "".join(f"{n}{u}" for n, u in parts)
    total = sum(n * unit[u] for n, u in parts)
    if total <= MAX_DURATION:
        assert parse_duration(text) == total
    else:
        with pytest.raises(ValueError, match="at most 36500d"):
            parse_duration(text)


def test_durations_too_long_for_a_date_are_refused_at_validate(tmp_path: Path) -> None:
    """An interval or retention of millions of days passed validate, then every poll
    failed with "internal error: date value out of range"."""
    lines = problems(
        tmp_path,
        '[feedwatch]\nretention = "3000000d"\n[[feeds]]\nname = "f"\n'
        'url = "https://example.org/f"\ninterval = "9999999d"\n',
    )
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:2: feedwatch.retention: a duration must be at most 36500d (100 years)",
        "feedwatch.toml:6: feeds[0].interval: a duration must be at most 36500d (100 years)",
    ]


def test_a_bare_number_on_the_command_line_is_seconds() -> None:
    assert parse_duration_arg("30") == 30.0 and parse_duration_arg(" 1.5 ") == 1.5
    assert parse_duration_arg("2h") == 7200.0
    with pytest.raises(ValueError, match="at most"):
        parse_duration_arg("9999999999")


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1234, 1234),
        ("100B", 100),
        ("512KiB", 512 * 1024),
        ("10MiB", 10 * 1024 * 1024),
        ("5MB", 5_000_000),
        ("1GiB", 1024**3),
        ("2kb", 2000),
        ("1.5KiB", 1536),
        ("10 MiB", 10 * 1024 * 1024),
    ],
)
def test_parse_size(value: int | str, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("10", "has no unit"),
        ("10XB", 'invalid size unit "XB"'),
        ("MiB", "invalid size"),
        (-1, "negative"),
        (1.5, "got a float"),
    ],
)
def test_parse_size_errors(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_size(value)  # type: ignore[arg-type]


@settings(max_examples=150)
@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["B", "KB", "MB", "GB", "KiB", "MiB", "GiB", "TiB"]),
)
def test_size_round_trip(n: int, unit: str) -> None:
    mult = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}.get(unit) or 1024 ** (
        ["KiB", "MiB", "GiB", "TiB"].index(unit) + 1
    )
    assert parse_size(f"{n}{unit}") == n * mult


def test_parse_jitter() -> None:
    assert parse_jitter("10%") == Jitter(ratio=0.10)
    assert parse_jitter("30s") == Jitter(seconds=30.0)
    assert parse_jitter(5) == Jitter(seconds=5.0)
    assert parse_jitter("10%").amount(900) == pytest.approx(90.0)
    with pytest.raises(ValueError, match="between 0% and 100%"):
        parse_jitter("150%")
    with pytest.raises(ValueError, match='"10%"'):
        parse_jitter("ten")


# --------------------------------------------------------------------------
# problems: format, line numbers, key paths
# --------------------------------------------------------------------------


def test_problem_format() -> None:
    assert str(Problem("a.toml", 3, "feeds[0].url", "missing")) == "a.toml:3: feeds[0].url: missing"
    assert str(Problem("a.toml", None, "sinks.x", "bad")) == "a.toml: sinks.x: bad"
    err = ConfigError([Problem("a", 1, "x", "one"), Problem("a", 2, "y", "two")])
    assert str(err) == "a:1: x: one\na:2: y: two"


def test_syntax_error_has_its_line(tmp_path: Path) -> None:
    lines = problems(tmp_path, '[feedwatch]\ninterval = "5m"\nconcurrency = = 3\n')
    assert len(lines) == 1
    assert lines[0].startswith(f"{tmp_path / 'feedwatch.toml'}:3: TOML syntax error: ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml", env=BASE_ENV)
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: cannot read: No such file or directory"


def test_unknown_keys_with_did_you_mean_and_lines(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        """
        [feedwatch]
        intervall = "5m"
        shiny = 1

        [rules.r]
        anyy = ["x"]

        [sinks.s]
        type = "jsonl"
        path = "-"
        paht = "x"

        [[feeds]]
        url = "https://example.org/a"
        tagz = ["x"]

        [feedz]
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        'feedwatch.toml:2: feedwatch.intervall: unknown key (did you mean "interval"?)',
        "feedwatch.toml:3: feedwatch.shiny: unknown key",
        'feedwatch.toml:6: rules.r.anyy: unknown key (did you mean "any"?)',
        'feedwatch.toml:11: sinks.s.paht: unknown key (did you mean "path"?)',
        'feedwatch.toml:15: feeds[0].tagz: unknown key (did you mean "tags"?)',
        'feedwatch.toml:17: feedz: unknown key (did you mean "feeds"?)',
    ]


def test_top_level_setting_is_pointed_at_feedwatch_table(tmp_path: Path) -> None:
    lines = problems(tmp_path, 'interval = "5m"\n')
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:1: interval: a [feedwatch] key at the top level: move it under [feedwatch]"
    ]


def test_wrong_types_name_path_and_line(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        """
        [rules.missiles]
        any = [
            "hypersonic",
            42,
            "/(unclosed/",
        ]

        [sinks.me]
        type = "email"
        host = "smtp.example.org"
        port = "587"
        from = "a@example.org"
        to = ["b@example.org"]

        [[feeds]]
        url = "https://example.org/one"

        [[feeds]]
        url = "https://example.org/two"
        interval = true
        enabled = "yes"
        headers = { X-Token = 5 }
        """,
    )
    got = strip_dir(lines, tmp_path)
    assert got[0] == "feedwatch.toml:4: rules.missiles.any[1]: expected a string, got an integer"
    assert got[1].startswith("feedwatch.toml:5: rules.missiles.any[2]: ")
    assert "regular expression" in got[1]
    assert got[2:] == [
        "feedwatch.toml:11: sinks.me.port: expected an integer, got a string",
        "feedwatch.toml:20: feeds[1].interval: expected a duration (seconds as an integer, "
        'or a string like "15m" or "1h30m"), got a boolean',
        "feedwatch.toml:21: feeds[1].enabled: expected true or false, got a string",
        "feedwatch.toml:22: feeds[1].headers.X-Token: expected a string, got an integer",
    ]


def test_lines_survive_tricky_toml(tmp_path: Path) -> None:
    # A multi-line string holding a fake header, quoted keys and dotted keys.
    lines = problems(
        tmp_path,
        '''
        [rules."odd name"]
        any = ["""
        [[feeds]]
        still a string
        """]
        case_sensitive = "no"

        [sinks]
        log.type = "jsonl"
        log.path = 3
        ''',
    )
    assert strip_dir(lines, tmp_path) == [
        'feedwatch.toml:6: rules."odd name".case_sensitive: expected true or false, got a string',
        "feedwatch.toml:10: sinks.log.path: expected a string, got an integer",
    ]


def test_all_problems_of_a_file_are_collected(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        """
        [feedwatch]
        concurrency = 0
        per_host = -1
        first_poll = "alerts"
        notify_on = ["new", "changed"]
        log_level = "verbose"
        log_format = "xml"
        metrics_listen = "9464"
        interval = "0s"
        max_entries = 0
        max_body = "10"
        updates = "timestamps"
        id_policy = "uid"
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:2: feedwatch.concurrency: must be >= 1, got 0",
        "feedwatch.toml:3: feedwatch.per_host: must be >= 1, got -1",
        'feedwatch.toml:4: feedwatch.first_poll: "alerts" is not one of baseline, alert '
        '(did you mean "alert"?)',
        'feedwatch.toml:5: feedwatch.notify_on[1]: "changed" is not one of new, updated',
        'feedwatch.toml:6: feedwatch.log_level: "verbose" is not one of debug, info, warning, error',
        'feedwatch.toml:7: feedwatch.log_format: "xml" is not one of auto, console, json',
        'feedwatch.toml:8: feedwatch.metrics_listen: expected "host:port" (e.g. "127.0.0.1:9464") '
        'or "", got "9464"',
        "feedwatch.toml:9: feedwatch.interval: must be at least 1s",
        "feedwatch.toml:10: feedwatch.max_entries: must be >= 1, got 0",
        'feedwatch.toml:11: feedwatch.max_body: size "10" has no unit: write e.g. "10B" or "10KiB"',
        'feedwatch.toml:12: feedwatch.updates: "timestamps" is not one of any, content, timestamp '
        '(did you mean "timestamp"?)',
        'feedwatch.toml:13: feedwatch.id_policy: "uid" is not one of auto, guid, link, content '
        '(did you mean "guid"?)',
    ]


def test_unknown_names_and_empty_rule(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        """
        [feedwatch]
        default_sinks = ["logg"]

        [rules.r]
        any = ["x"]
        fields = ["title", "body"]
        sinks = ["nope"]

        [sinks.log]
        type = "jsonl"
        path = "-"

        [[feeds]]
        url = "https://example.org/a"
        match = ["r", "rr"]
        sinks = ["log", "mail"]
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        'feedwatch.toml:2: feedwatch.default_sinks[0]: unknown sink "logg" (did you mean "log"?'
        " configured: log)",
        'feedwatch.toml:6: rules.r.fields[1]: "body" is not one of title, summary, content, '
        "tags, author, link",
        'feedwatch.toml:7: rules.r.sinks[0]: unknown sink "nope" (configured: log)',
        'feedwatch.toml:15: feeds[0].match[1]: unknown rule "rr" (did you mean "r"? configured: r)',
        'feedwatch.toml:16: feeds[0].sinks[1]: unknown sink "mail" (configured: log)',
    ]


def test_feed_url_checks(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        """
        [[feeds]]
        name = "a"
        url = "ftp://example.org/feed"

        [[feeds]]
        name = "b"
        url = "https:///nohost"

        [[feeds]]
        name = "c"
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:3: feeds[0].url: must be an http:// or https:// URL",
        "feedwatch.toml:7: feeds[1].url: the URL has no host",
        "feedwatch.toml:9: feeds[2]: missing key url",
    ]


# --------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------


def test_give_up_after_0s_is_retry_for_ever(tmp_path: Path) -> None:
    config = load(tmp_path, '[feedwatch]\ngive_up_after = "0s"\n' + FEED)
    assert config.give_up_after == 0.0


def test_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, FEED)
    assert config.state == "/home/tester/.local/state/feedwatch/state.db"
    assert config.defaults.user_agent == DEFAULT_USER_AGENT
    assert config.defaults.interval == 900.0
    assert config.defaults.jitter == Jitter(ratio=0.1)
    assert config.defaults.max_body == 10 * 1024 * 1024
    assert config.defaults.retention == 90 * 86400
    assert (config.concurrency, config.per_host) == (16, 2)
    assert (config.give_up_after, config.shutdown_timeout) == (3 * 86400, 10.0)
    assert (config.log_format, config.log_level, config.metrics_listen) == ("auto", "info", "")
    (feed,) = config.feeds
    assert feed.settings == config.defaults
    assert (feed.rules, feed.sinks, feed.enabled, feed.allow_private) == ((), (), True, False)


def test_feed_settings_merge(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [feedwatch]
        interval = "1h"
        jitter = "30s"
        first_poll = "alert"
        notify_on = ["updated", "new", "new"]
        log_level = "DEBUG"
        metrics_listen = "[::1]:9464"

        [[feeds]]
        name = "own"
        url = "https://example.org/a"
        interval = 120
        timeout = "5s"
        max_body = "1MiB"
        notify_on = ["new"]
        user_agent = "custom/1"
        updates = "content"
        id_policy = "link"
        retention = "7d"
        flood_limit = 10
        stale_after = "2d"
        max_age = "1d"
        max_entries = 100
        duplicates = "skip"

        [[feeds]]
        name = "inherits"
        url = "https://example.org/b"
        """,
    )
    own, inherits = config.feeds
    assert own.settings.interval == 120.0
    assert own.settings.jitter == Jitter(seconds=30.0)
    assert own.settings.first_poll == "alert"
    assert own.settings.timeout == 5.0
    assert own.settings.max_body == 1024 * 1024
    assert own.settings.notify_on == ("new",)
    assert own.settings.user_agent == "custom/1"
    assert (own.settings.updates, own.settings.id_policy) == ("content", "link")
    assert (own.settings.duplicates, inherits.settings.duplicates) == ("skip", "alert")
    assert (own.settings.retention, own.settings.stale_after, own.settings.max_age) == (
        7 * 86400,
        2 * 86400,
        86400,
    )
    assert (own.settings.flood_limit, own.settings.max_entries) == (10, 100)
    assert inherits.settings == config.defaults
    assert config.defaults.interval == 3600.0
    assert config.defaults.notify_on == ("new", "updated")
    assert config.log_level == "debug"
    assert config.metrics_listen == "[::1]:9464"


def test_state_path(tmp_path: Path) -> None:
    assert load(tmp_path, '[feedwatch]\nstate = "~/s.db"\n').state == "/home/tester/s.db"
    assert load(tmp_path, '[feedwatch]\nstate = "rel/s.db"\n').state == str(tmp_path / "rel/s.db")
    url = "postgresql://fw:pw1234@db.example/feedwatch"
    assert load(tmp_path, f'[feedwatch]\nstate = "{url}"\n').state == url
    assert redact(f"connecting to {url}") == "connecting to postgresql://***@db.example/feedwatch"
    path = write(tmp_path, '[feedwatch]\nstate = "/x.db"\n')
    assert load_config(path, env=BASE_ENV, state_override="~/o.db").state == "/home/tester/o.db"
    systemd = {**BASE_ENV, "STATE_DIRECTORY": "/var/lib/feedwatch:/var/lib/other"}
    assert load(tmp_path, FEED, systemd).state == "/var/lib/feedwatch/state.db"


def test_default_state_path() -> None:
    assert default_state_path({"STATE_DIRECTORY": "/var/lib/fw"}) == "/var/lib/fw/state.db"
    assert default_state_path({"STATE_DIRECTORY": "/a:/b", "HOME": "/h"}) == "/a/state.db"
    assert default_state_path({"XDG_STATE_HOME": "/x", "HOME": "/h"}) == "/x/feedwatch/state.db"
    assert default_state_path({"HOME": "/h"}) == "/h/.local/state/feedwatch/state.db"


def test_feed_name_default_and_uniqueness(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [[feeds]]
        url = "https://WWW.Example.org/rss/news/"

        [[feeds]]
        url = "http://example.org:8080/feed.xml?x=1"
        """,
    )
    assert [f.name for f in config.feeds] == [
        "www.example.org/rss/news",
        "example.org:8080/feed.xml",
    ]

    lines = problems(
        tmp_path,
        """
        [[feeds]]
        name = "news"
        url = "https://example.org/a"

        [[feeds]]
        name = "news"
        url = "https://example.org/b"

        [[feeds]]
        url = "https://example.org/c"

        [[feeds]]
        url = "https://example.org/c/"
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        'feedwatch.toml:6: feeds[1].name: duplicate feed name "news": also feeds[0] at '
        "feedwatch.toml:1",
        'feedwatch.toml:12: feeds[3]: duplicate feed name "example.org/c": also feeds[2] at '
        "feedwatch.toml:9 (a name defaults to the URL's host and path: set name = ... on one)",
    ]


def test_a_duplicate_name_is_reported_beside_the_first_feed_s_own_problems(
    tmp_path: Path,
) -> None:
    """A feed with a problem still holds its name: its duplicate is in the same report,
    not in the next one after the first problem is fixed."""
    lines = problems(
        tmp_path,
        """
        [[feeds]]
        name = "news"
        url = "ftp://example.org/a"

        [[feeds]]
        name = "news"
        url = "https://example.org/b"
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:3: feeds[0].url: must be an http:// or https:// URL",
        'feedwatch.toml:6: feeds[1].name: duplicate feed name "news": also feeds[0] at '
        "feedwatch.toml:1",
    ]


def test_sinks_and_rules_resolution(tmp_path: Path) -> None:
    text = """
        {fw}
        [rules.r1]
        any = ["missile*"]
        case_sensitive = true
        fields = ["title", "link"]

        [rules.r2]
        all = ["NATO"]
        not = ["sport"]
        sinks = ["b"]

        [sinks.a]
        type = "jsonl"
        path = "-"

        [sinks.b]
        type = "console"

        [[feeds]]
        name = "own"
        url = "https://example.org/a"
        sinks = ["b"]
        match = ["r2", "r1"]
        keywords = ["Dnipro"]
        exclude = ["video game"]

        [[feeds]]
        name = "default"
        url = "https://example.org/b"
        exclude = ["x"]
        """
    config = load(tmp_path, text.format(fw=""))
    own, default = config.feeds
    assert own.sinks == ("b",)
    assert default.sinks == ("a", "b")
    assert [r.name for r in own.rules] == ["r2", "r1", "keywords"]
    assert own.rules[1].fields == ("title", "link") and own.rules[1].case_sensitive
    assert own.rules[0].not_ == ("sport",) and own.rules[0].sinks == ("b",)
    kw = own.rules[2]
    assert (kw.any, kw.not_, kw.case_sensitive) == (("Dnipro",), ("video game",), False)
    assert default.rules[0].any == () and default.rules[0].not_ == ("x",)
    assert list(config.rules) == ["r1", "r2"]

    config = load(tmp_path, text.format(fw='[feedwatch]\ndefault_sinks = ["a"]'))
    assert config.feeds[1].sinks == ("a",)
    assert config.default_sinks == ("a",)


# --------------------------------------------------------------------------
# ${VAR} and secrets
# --------------------------------------------------------------------------


def test_env_expansion(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [rules.r]
        any = ["cost $$5", "${WORD}", "/a$/"]

        [[feeds]]
        name = "f-${SUFFIX}"
        url = "https://example.org/feed"
        headers = { Authorization = "Basic ${MT_AUTH}", Accept = "text/xml" }
        """,
        {"WORD": "hypersonic", "SUFFIX": "one", "MT_AUTH": "dXNlcjpwYXNz"},
    )
    assert config.rules["r"].any == ("cost $5", "hypersonic", "/a$/")
    (feed,) = config.feeds
    assert feed.name == "f-one"
    headers = dict(feed.headers)
    assert headers["Accept"] == "text/xml"
    assert isinstance(headers["Authorization"], Secret)
    assert headers["Authorization"].reveal() == "Basic dXNlcjpwYXNz"
    assert "dXNlcjpwYXNz" not in repr(config)
    # every expanded value is now a registered secret
    assert redact("auth dXNlcjpwYXNz and hypersonic") == "auth *** and ***"


def test_env_missing_and_malformed(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        """
        [[feeds]]
        name = "f"
        url = "https://${HOST}/feed"
        tags = ["${}", "${OPEN"]
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:3: feeds[0].url: environment variable HOST is not set",
        "feedwatch.toml:4: feeds[0].tags[0]: invalid variable name in ${} "
        "(write $$ for a literal $)",
        "feedwatch.toml:4: feeds[0].tags[1]: unterminated ${ (write $$ for a literal $)",
    ]


def test_an_unknown_key_is_reported_even_when_its_variable_is_not_set(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        """
        [[feeds]]
        name = "f"
        url = "https://example.org/feed"
        user_agnet = "bot ${CONTACT}"
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:4: feeds[0].user_agnet: environment variable CONTACT is not set",
        'feedwatch.toml:4: feeds[0].user_agnet: unknown key (did you mean "user_agent"?)',
    ]


SECRETS_TOML = """
[feedwatch]
state = "postgresql://fw:${DB_PASSWORD}@db.example/fw"

[sinks.mail]
type = "email"
host = "smtp.example.org"
username = "alerts@example.org"
password_env = "SMTP_PW"
from = "a@example.org"
to = ["b@example.org"]

[sinks.hook]
type = "webhook"
url = "https://hooks.example.org/T000/${HOOK_PATH}"
headers = { Authorization = "Bearer ${HOOK_TOKEN}" }
secret_env = "HOOK_SECRET"

[[feeds]]
name = "f"
url = "https://example.org/feed"
headers = { Authorization = "Basic ${MT_AUTH}" }
"""
SECRET_ENV = {
    "DB_PASSWORD": "db-pass-1",
    "SMTP_PW": "smtp-pass-2",
    "HOOK_PATH": "hook-path-3",
    "HOOK_TOKEN": "hook-token-4",
    "HOOK_SECRET": "hook-secret-5",
    "MT_AUTH": "mt-auth-6",
}


def test_a_bad_term_in_a_feeds_own_keywords_names_that_feed(tmp_path: Path) -> None:
    """A control character in a feed's own `keywords` (or `exclude`) was named `rule
    "keywords"` (no such table to look in) and said once for all the feeds with it."""
    config = load(
        tmp_path,
        r"""
        [[feeds]]
        name = "defense-news"
        url = "https://example.org/a"
        keywords = ["/\bICBMs?\b/"]

        [[feeds]]
        name = "war-zone"
        url = "https://example.org/b"
        keywords = ["/\bICBMs?\b/"]
        exclude = ["/a\fb/"]
        """,
    )
    assert [w.split(": term")[0] for w in rule_warnings(config)] == [
        'keywords of feed "defense-news"',
        'keywords of feed "war-zone"',
        'exclude of feed "war-zone"',
    ]


def test_validate_masks_a_secret_in_a_feed_name_in_its_warnings(tmp_path: Path) -> None:
    """`validate` printed the rule warnings as written, a `${VAR}` in a feed's name
    expanded: a tenant or token on the terminal and in CI logs (SPEC 2)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[sinks.log]\ntype = "jsonl"\npath = "out.jsonl"\n'
        '[[feeds]]\nname = "client ${CLIENT}"\nurl = "https://example.org/feed.xml"\n'
        'ignore_text = ["/Points:\\b\\\\d+/"]\nnotify_on = []\nkeywords = ["/\\bx/"]\n'
    )
    r = run_feedwatch("-c", str(cfg), "validate", env=bare_env(tmp_path, CLIENT="acme-secret-42"))
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == 3, r.stderr
    assert all('feed "client ***"' in line for line in warned), r.stderr
    assert "acme-secret-42" not in r.stderr + r.stdout


def test_secrets_never_in_repr_of_config(tmp_path: Path) -> None:
    config = load(tmp_path, SECRETS_TOML, SECRET_ENV)
    mail, hook = config.sinks["mail"].options, config.sinks["hook"].options
    assert mail["password"] == Secret("smtp-pass-2")
    assert hook["url"].reveal() == "https://hooks.example.org/T000/hook-path-3"
    assert hook["secret"] == Secret("hook-secret-5")
    assert hook["headers"] == (("Authorization", Secret("Bearer hook-token-4")),)
    text = repr(config) + str(config)
    for secret in SECRET_ENV.values():
        if secret != "db-pass-1":  # Config.state is a plain str: redact() covers it in logs
            assert secret not in text
        assert secret not in redact(text)
    assert "hooks.example.org/T000" not in redact(f"POST {hook['url'].reveal()}")


def test_secrets_never_in_config_error(tmp_path: Path) -> None:
    bad = (
        SECRETS_TOML
        + '\n[[feeds]]\nname = "g"\nurl = "ftp://u:${MT_AUTH}@x/"\ninterval = "${SMTP_PW}"\n'
    )
    bad = bad.replace('type = "webhook"', 'type = "webhook"\nformat = "${HOOK_SECRET}"')
    lines = problems(tmp_path, bad, SECRET_ENV)
    text = "\n".join(lines)
    assert "sinks.hook.format" in text and "feeds[1].interval" in text and "feeds[1].url" in text
    for secret in SECRET_ENV.values():
        assert secret not in text
    with pytest.raises(ConfigError) as info:
        load(tmp_path, bad, SECRET_ENV)
    assert all(s not in repr(info.value.problems) for s in SECRET_ENV.values())


def test_feed_url_password_is_a_secret(tmp_path: Path) -> None:
    load(tmp_path, '[[feeds]]\nname = "f"\nurl = "https://user:hunter22@example.org/feed"\n')
    assert redact("password hunter22 leaked") == "password *** leaked"


def test_redact() -> None:
    register_secret("x")  # one character: cannot be told from ordinary text
    register_secret("topsecret")
    register_secret("topsecret-longer")
    assert redact("x topsecret topsecret-longer") == "x *** ***"
    assert redact("host TopSecret.invalid") == "host ***.invalid"  # a host comes back lower-cased
    assert redact("see https://bob:pw@example.org/x and ftp://anon@h/") == (
        "see https://***@example.org/x and ftp://***@h/"
    )
    assert redact("https://medium.com/@user/post") == "https://medium.com/@user/post"
    assert redact_url("https://u:p@example.org/topsecret") == "https://***@example.org/***"
    clear_secrets()
    assert redact("topsecret") == "topsecret"


def test_redact_refused_url() -> None:
    """A refused URL's user-info up to its last "@", where a "/", "#" or white space in a
    password hides it from ``redact_url``; with no scheme too."""
    for url in (
        "https://bob:pa/ss99@example.net/b.xml",
        "https://bob:pa ss99@example.net/b.xml",
        "https://bob:pa#ss99@example.net/b.xml",
    ):
        assert "ss99" in redact_url(url)  # a valid URL's path may hold "@": /@user
        assert redact_refused_url(url) == "https://***@example.net/b.xml"
    assert redact_refused_url("bob:pa/ss99@example.net/b.xml") == "***@example.net/b.xml"
    assert redact_refused_url("gopher://example.org/feed") == "gopher://example.org/feed"
    register_secret("topsecret")
    assert redact_refused_url("ftp://example.org/topsecret") == "ftp://example.org/***"
    clear_secrets()
    assert redact("topsecret") == "topsecret"


def test_a_short_secret_is_masked_as_a_whole_part_of_a_url() -> None:
    """A 2-3 character ${VAR} value (a short API key, a tenant) is masked where it is a
    URL's part (a query value, a path segment, user-info, a port), not in other text:
    "ok" masked anywhere made a log line's "result": "ok" read "***"."""
    register_secret("Zq9")
    register_secret("ok")
    try:
        assert redact("GET /feed.xml?k=Zq9&page=2 /Zq9/x") == "GET /feed.xml?k=***&page=2 /***/x"
        assert redact("Zq9x aZq9 Zq99 (Zq9)") == "Zq9x aZq9 Zq99 (Zq9)"
        assert redact('{"result": "ok", "url": "https://h/f?k=ok"}') == (
            '{"result": "ok", "url": "https://h/f?k=***"}'
        )
        # the first label of a host an error quotes: a ${TENANT} of two letters
        assert redact("DNS lookup failed for host ok.example.invalid") == (
            "DNS lookup failed for host ***.example.invalid"
        )
    finally:
        clear_secrets()


def test_a_secret_a_cut_falls_inside_is_not_shown_in_part() -> None:
    """A piece cut from a longer text (a program's last 8 KiB) can begin with a
    secret's last part or end with its first part: dropped, and whole ones masked."""
    register_secret("Hunter2-Password")
    try:
        assert redact_cut("2-Password rest Hunter2-Password", start=True) == " rest ***"
        assert redact_cut("Hunter2-Password rest", start=True) == "*** rest"  # whole: masked
        assert redact_cut("d rest", start=True) == " rest"
        assert redact_cut("2-password rest", start=True) == " rest"  # in any case
        assert redact_cut("rest Hunter2-Pa", end=True) == "rest "
        assert redact_cut("Password rest Hunt", start=True, end=True) == " rest "
        assert redact_cut("ter2-Pass", start=True, end=True) == "***"  # inside one
        assert redact_cut("2-Password rest") == "2-Password rest"  # no cut: nothing dropped
        assert redact_cut("plain rest", start=True, end=True) == "plain rest"
    finally:
        clear_secrets()


def test_a_secret_is_masked_in_the_forms_str_lower_and_upper_make_of_it() -> None:
    """str.lower() makes a capital dotted İ "i" and a combining dot, str.upper() ß "SS":
    re.IGNORECASE takes neither for the secret (a ${TENANT} of "İzmirHaber" in a host
    showed as i̇zmirhaber). The other masks (secrets_in, a cut piece) agree."""
    register_secret("İzmirHaber")
    register_secret("Straße")
    lowered = "İzmirHaber".lower()
    assert len(lowered) == 11  # i, U+0307, zmirhaber
    try:
        for form in ("İzmirHaber", lowered, "İZMIRHABER", "izmirhaber", "IZMIRHABER"):
            assert redact(f"host {form}.invalid") == "host ***.invalid", form
        assert redact("STRASSE strasse STRAßE straße") == "*** *** *** ***"
        from feedwatch.redact import case_forms

        assert case_forms("plain Secret") == ["plain Secret"]  # IGNORECASE covers it
        assert secrets_in(f"http://{lowered}.invalid/") == [lowered]
        assert secrets_in("http://izmirhaber.invalid/") == ["İzmirHaber"]  # as redact: İ ~ i
        url = f"https://{lowered}.invalid/a"
        assert mask(url, secrets_in(url)) == "https://***.invalid/a"
        # a cut piece that begins with a lower-cased form's end, or ends with its start
        assert redact_cut(lowered[1:] + ".invalid: refused", start=True) == ".invalid: refused"
        assert redact_cut(f"for host {lowered[:4]}", end=True) == "for host "
        assert redact_cut("for host izmi", end=True) == "for host "  # İ ~ i, as redact
        assert redact_cut("ZMIRHAB", start=True, end=True) == "***"  # inside one
    finally:
        clear_secrets()


def test_a_short_expanded_value_in_a_feed_url_is_masked(tmp_path: Path) -> None:
    try:
        config = load(
            tmp_path,
            '[[feeds]]\nname = "f"\nurl = "https://example.org/feed?k=${SHORT_KEY}"\n',
            env={"SHORT_KEY": "Zq9"},
        )
        assert config.feeds[0].url == "https://example.org/feed?k=Zq9"
        assert redact(config.feeds[0].url) == "https://example.org/feed?k=***"
    finally:
        clear_secrets()


# --------------------------------------------------------------------------
# sinks
# --------------------------------------------------------------------------


def test_email_sink(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [sinks.a]
        type = "email"
        host = "smtp.example.org"
        from = "feedwatch <alerts@example.org>"
        to = ["me@example.org", "you@example.org"]
        digest = "1h"

        [sinks.b]
        type = "email"
        host = "smtp.example.org"
        security = "tls"
        from = "a@example.org"
        to = "me@example.org"
        timeout = "10s"

        [sinks.c]
        type = "email"
        host = "localhost"
        port = 2525
        security = "none"
        from = "a@example.org"
        to = ["me@example.org"]
        """,
    )
    a, b, c = (config.sinks[n] for n in "abc")
    assert a.type == "email" and a.digest == 3600.0
    assert dict(a.options) == {
        "host": "smtp.example.org",
        "port": 587,
        "security": "starttls",
        "username": None,
        "password": None,
        "from_": "feedwatch <alerts@example.org>",
        "to": ("me@example.org", "you@example.org"),
        "timeout": 30.0,
    }
    assert (b.options["port"], b.options["to"], b.options["timeout"]) == (
        465,
        ("me@example.org",),
        10.0,
    )
    assert (c.options["port"], c.options["security"]) == (2525, "none")


def test_email_sink_errors(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        """
        [sinks.a]
        type = "email"
        security = "ssl"
        to = []
        username = "u"

        [sinks.b]
        type = "email"
        host = "h"
        from = "nobody"
        to = ["x@y", "z"]
        username = "u"
        password_env = "NOPE"
        password_file = "pw"
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:1: sinks.a: missing key host (the SMTP server)",
        "feedwatch.toml:1: sinks.a: username is set but no password_env or password_file",
        'feedwatch.toml:1: sinks.a: missing key from (e.g. "feedwatch <alerts@example.org>")',
        'feedwatch.toml:3: sinks.a.security: "ssl" is not one of starttls, tls, none',
        "feedwatch.toml:4: sinks.a.to: must name at least one address",
        "feedwatch.toml:10: sinks.b.from: not an email address (no @)",
        "feedwatch.toml:11: sinks.b.to[1]: not an email address (no @)",
        "feedwatch.toml:14: sinks.b.password_file: give password_env or password_file, not both",
    ]


def test_email_addresses_one_per_entry_and_names_with_commas(tmp_path: Path) -> None:
    text = """
        [sinks.m]
        type = "email"
        host = "h"
        from = "Alerts, Feedwatch <alerts@example.org>"
        to = ["Doe, Jane <jane@example.org>", {bad}]
        """
    config = load(tmp_path, text.format(bad='"bob@example.org"'))
    assert config.sinks["m"].options["to"][0] == "Doe, Jane <jane@example.org>"
    lines = problems(tmp_path, text.format(bad='"jane@example.org, bob@example.org"'))
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:5: sinks.m.to[1]: more than one address: give each its own string"
        ' (to = ["a@example.org", "b@example.org"])'
    ]
    assert load(tmp_path, text.format(bad="'\"john.doe\"@example.org'"))  # a quoted local part
    # the forms that worked before stay accepted: a comment, a quoted name with <>
    config = load(
        tmp_path,
        text.format(bad="'jane@example.org (Jane Doe)', '\"Jane <work>\" <jw@example.org>'"),
    )
    assert config.sinks["m"].options["to"][1:] == (
        "jane@example.org (Jane Doe)",
        '"Jane <work>" <jw@example.org>',
    )
    lines = problems(tmp_path, text.format(bad='"a@b@c.org"'))
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:5: sinks.m.to[1]: not an email address: 'a@b@c.org' (user@domain)"
    ]
    lines = problems(tmp_path, text.format(bad='"Bob <bob@example.org"'))
    assert strip_dir(lines, tmp_path) == [
        'feedwatch.toml:5: sinks.m.to[1]: not one email address: write "Name <user@example.org>"'
    ]


def test_email_addresses_in_ascii_or_an_international_domain(tmp_path: Path) -> None:
    """A non-ASCII local part passed validate, then every delivery failed with a
    traceback (feedwatch does not use SMTPUTF8); an international domain is sent
    in punycode."""
    text = """
        [sinks.m]
        type = "email"
        host = "h"
        from = {sender}
        to = ["me@bücher.example", {to}]
        """
    config = load(tmp_path, text.format(sender='"Jörg <a@bücher.example>"', to='"b@example.org"'))
    assert config.sinks["m"].options["to"][0] == "me@bücher.example"
    lines = problems(tmp_path, text.format(sender='"jörg@example.org"', to='"Zoë <zoë@x.org>"'))
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:4: sinks.m.from: 'jörg@example.org': a non-ASCII local part (before"
        " the @) cannot be sent: feedwatch does not use SMTPUTF8",
        "feedwatch.toml:5: sinks.m.to[1]: 'zoë@x.org': a non-ASCII local part (before"
        " the @) cannot be sent: feedwatch does not use SMTPUTF8",
    ]
    long_label = "ü" * 70
    lines = problems(tmp_path, text.format(sender='"a@x.org"', to=f'"b@{long_label}.org"'))
    assert strip_dir(lines, tmp_path) == [
        f"feedwatch.toml:5: sinks.m.to[1]: not a domain name (IDNA refuses it): '{long_label}.org'"
    ]


def test_password_file(tmp_path: Path) -> None:
    text = """
        [sinks.m]
        type = "email"
        host = "h"
        username = "u"
        password_file = "{name}"
        from = "a@example.org"
        to = ["b@example.org"]
        """
    (tmp_path / "pw").write_text("beside-config\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "pw").write_text("from-credentials\r\n")
    (tmp_path / "abs").write_text("absolute-one")

    config = load(tmp_path, text.format(name="pw"))
    assert config.sinks["m"].options["password"] == Secret("beside-config")
    config = load(tmp_path, text.format(name="pw"), {"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.sinks["m"].options["password"] == Secret("from-credentials")
    config = load(
        tmp_path, text.format(name=tmp_path / "abs"), {"CREDENTIALS_DIRECTORY": str(creds)}
    )
    assert config.sinks["m"].options["password"] == Secret("absolute-one")
    assert redact("from-credentials") == "***"

    lines = problems(tmp_path, text.format(name="missing"), {"CREDENTIALS_DIRECTORY": str(creds)})
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:5: sinks.m.password_file: cannot read creds/missing: No such file or directory"
    ]
    (tmp_path / "empty").write_text("\n")
    lines = problems(tmp_path, text.format(name="empty"))
    assert strip_dir(lines, tmp_path) == ["feedwatch.toml:5: sinks.m.password_file: empty is empty"]


def test_webhook_secret_file(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "hook-secret").write_text("hmac-key-123\n")
    text = """
        [sinks.chat]
        type = "webhook"
        url = "https://hooks.example.org/x"
        secret_file = "hook-secret"
        """
    config = load(tmp_path, text, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.sinks["chat"].options["secret"] == Secret("hmac-key-123")
    both = text + 'secret_env = "X"\n'
    lines = problems(tmp_path, both, {"CREDENTIALS_DIRECTORY": str(creds), "X": "y"})
    assert any("give secret_env or secret_file, not both" in x for x in lines)


def test_password_env(tmp_path: Path) -> None:
    text = """
        [sinks.m]
        type = "email"
        host = "h"
        username = "u"
        password_env = "SMTP_PW"
        from = "a@example.org"
        to = ["b@example.org"]
        """
    config = load(tmp_path, text, {"SMTP_PW": "pw-value"})
    assert config.sinks["m"].options["password"] == Secret("pw-value")
    assert strip_dir(problems(tmp_path, text), tmp_path) == [
        "feedwatch.toml:5: sinks.m.password_env: environment variable SMTP_PW is not set"
    ]


def test_webhook_sink(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [sinks.w]
        type = "webhook"
        url = "https://hooks.example.org/abc"
        format = "slack"
        headers = { X-Env = "plain" }
        digest = "15m"
        timeout = 5
        """,
    )
    w = config.sinks["w"]
    assert w.digest == 900.0
    assert w.options == {
        "url": Secret("https://hooks.example.org/abc"),
        "format": "slack",
        "headers": (("X-Env", "plain"),),
        "secret": None,
        "timeout": 5.0,
    }
    assert redact("posting to https://hooks.example.org/abc") == "posting to ***"

    lines = problems(
        tmp_path,
        """
        [sinks.w]
        type = "webhook"
        url = "mailto:x@example.org"
        format = "slak"
        secret_env = "NO_SECRET"
        headers = { "Bad Header" = "x", X-Ok = "a\\nb", X-Team = "Équipe rouge", X-Ctl = "a\\u0001b" }

        [sinks.v]
        type = "webhook"
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:3: sinks.w.url: must be an http:// or https:// URL",
        'feedwatch.toml:4: sinks.w.format: "slak" is not one of json, slack, discord, ntfy, teams '
        '(did you mean "slack"?)',
        "feedwatch.toml:5: sinks.w.secret_env: environment variable NO_SECRET is not set",
        'feedwatch.toml:6: sinks.w.headers."Bad Header": not a valid HTTP header name',
        *(
            f"feedwatch.toml:6: sinks.w.headers.{name}: a header value must be printable ASCII:"
            " no line breaks, control characters or letters beyond ASCII (it could never be sent)"
            for name in ("X-Ok", "X-Team", "X-Ctl")
        ),
        "feedwatch.toml:8: sinks.v: missing key url",
    ]


def test_a_user_agent_beyond_ascii_is_refused_where_it_is_written(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        """
        [feedwatch]
        user_agent = "feedwatch (+mailto:josé@example.org)"
        """
        + FEED
        + """
        user_agent = "ok/1\\u0007"
        """,
    )
    why = (
        "must be printable ASCII: no control characters or letters beyond ASCII"
        " (it is sent as an HTTP header)"
    )
    assert strip_dir(lines, tmp_path) == [
        f"feedwatch.toml:2: feedwatch.user_agent: {why}",
        f"feedwatch.toml:8: feeds[0].user_agent: {why}",
    ]


def test_command_jsonl_console_sinks(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [sinks.cmd]
        type = "command"
        argv = ["/usr/local/bin/on-alert", "--quiet"]
        timeout = "1m"

        [sinks.out]
        type = "jsonl"
        path = "-"

        [sinks.file]
        type = "jsonl"
        path = "logs/alerts.jsonl"

        [sinks.home]
        type = "jsonl"
        path = "~/alerts.jsonl"

        [sinks.con]
        type = "console"
        """,
    )
    assert config.sinks["cmd"].options == {
        "argv": ("/usr/local/bin/on-alert", "--quiet"),
        "timeout": 60.0,
    }
    assert config.sinks["out"].options == {"path": "-"}
    assert config.sinks["file"].options == {"path": str(tmp_path / "logs/alerts.jsonl")}
    assert config.sinks["home"].options == {"path": "/home/tester/alerts.jsonl"}
    assert config.sinks["con"].type == "console" and config.sinks["con"].options == {}
    assert list(config.sinks) == ["cmd", "out", "file", "home", "con"]

    lines = problems(
        tmp_path,
        """
        [sinks.cmd]
        type = "command"
        argv = []
        digest = "1h"

        [sinks.cmd2]
        type = "command"

        [sinks.out]
        type = "jsonl"
        digest = "1h"

        [sinks.con]
        type = "console"
        path = "-"

        [sinks.x]
        type = "mail"

        [sinks.y]
        host = "h"
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:3: sinks.cmd.argv: must not be empty",
        "feedwatch.toml:4: sinks.cmd.digest: digest is only for email and webhook sinks, not command",
        "feedwatch.toml:6: sinks.cmd2: missing key argv (the program and its arguments, as an array)",
        'feedwatch.toml:9: sinks.out: missing key path (a file, or "-" for stdout)',
        "feedwatch.toml:11: sinks.out.digest: digest is only for email and webhook sinks, not jsonl",
        "feedwatch.toml:15: sinks.con.path: unknown key",
        'feedwatch.toml:18: sinks.x.type: "mail" is not one of email, webhook, command, jsonl, '
        'console (did you mean "email"?)',
        "feedwatch.toml:20: sinks.y: missing key type (one of email, webhook, command, jsonl, "
        "console)",
    ]


# --------------------------------------------------------------------------
# include
# --------------------------------------------------------------------------


def test_include(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        [sinks.extra]
        type = "jsonl"
        path = "x.jsonl"

        [rules.r2]
        any = ["b"]

        [[feeds]]
        name = "second"
        url = "https://example.org/2"
        match = ["r1", "r2"]
        """,
        "conf.d/20-b.toml",
    )
    write(
        tmp_path,
        """
        [[feeds]]
        name = "first"
        url = "https://example.org/1"
        """,
        "conf.d/10-a.toml",
    )
    write(tmp_path, "this is not toml", "conf.d/ignored.txt")
    config = load(
        tmp_path,
        """
        [feedwatch]
        include = ["conf.d/*.toml"]

        [rules.r1]
        any = ["a"]

        [sinks.main]
        type = "console"

        [[feeds]]
        name = "zero"
        url = "https://example.org/0"
        """,
    )
    assert [f.name for f in config.feeds] == ["zero", "first", "second"]
    assert [r.name for r in config.feeds[2].rules] == ["r1", "r2"]
    assert list(config.sinks) == ["main", "extra"]
    assert config.feeds[0].sinks == ("main", "extra")
    # a relative path in an included file is relative to that file
    assert config.sinks["extra"].options["path"] == str(tmp_path / "conf.d" / "x.jsonl")
    assert config.includes == (tmp_path / "conf.d/10-a.toml", tmp_path / "conf.d/20-b.toml")


def test_include_problems_name_the_included_file(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        [feedwatch]
        interval = "5m"

        [rules.dup]
        any = ["x"]

        [sinks.s]
        type = "jsonl"
        path = "-"

        [[feeds]]
        name = "a"
        url = "https://example.org/a"
        intervall = "1m"
        """,
        "conf.d/a.toml",
    )
    write(tmp_path, "[[feeds]]\nname = = 1\n", "conf.d/b.toml")
    lines = problems(
        tmp_path,
        """
        [feedwatch]
        include = ["conf.d/*.toml", "missing.toml"]

        [rules.dup]
        any = ["y"]

        [sinks.s]
        type = "console"

        [[feeds]]
        name = "a"
        url = "https://example.org/other"
        """,
    )
    got = strip_dir(lines, tmp_path)
    assert got[:1] == ["feedwatch.toml:2: feedwatch.include[1]: no such file: missing.toml"]
    assert got[1:6] == [
        "conf.d/a.toml:1: feedwatch: an included file may hold only [[feeds]], [rules.*] and "
        "[sinks.*]",
        'conf.d/a.toml:4: rules.dup: duplicate rule "dup" (first defined at feedwatch.toml:4)',
        'conf.d/a.toml:7: sinks.s: duplicate sink "s" (first defined at feedwatch.toml:7)',
        'conf.d/a.toml:12: feeds[0].name: duplicate feed name "a": also feeds[0] at '
        "feedwatch.toml:10",
        'conf.d/a.toml:14: feeds[0].intervall: unknown key (did you mean "interval"?)',
    ]
    assert got[6].startswith("conf.d/b.toml:2: TOML syntax error: ")
    assert len(got) == 7


INCLUDE_MAIN = """
[feedwatch]
include = ["conf.d/*.toml", "extra.toml"]

[[feeds]]
name = "main"
url = "https://example.org/main"
"""


def _include_tree(tmp_path: Path) -> Path:
    write(
        tmp_path, '[[feeds]]\nname = "inc"\nurl = "https://example.org/inc"\n', "conf.d/news.toml"
    )
    write(tmp_path, '[[feeds]]\nname = "extra"\nurl = "https://example.org/extra"\n', "extra.toml")
    return write(tmp_path, INCLUDE_MAIN)


def test_include_dangling_symlink_or_directory_is_an_error(tmp_path: Path) -> None:
    """A glob match that is a symlink to nothing, or a named include that is a directory,
    was skipped without a word: its feeds and sinks silently stopped."""
    _include_tree(tmp_path)
    (tmp_path / "conf.d/news.toml").unlink()
    (tmp_path / "conf.d/news.toml").symlink_to(tmp_path / "moved.toml")
    (tmp_path / "extra.toml").unlink()
    (tmp_path / "extra.toml").mkdir()
    got = strip_dir(problems(tmp_path, INCLUDE_MAIN), tmp_path)
    assert got == [
        "feedwatch.toml:2: feedwatch.include[0]: conf.d/news.toml: a symlink to a file that "
        "does not exist",
        "feedwatch.toml:2: feedwatch.include[1]: extra.toml: a directory, not a config file",
    ]
    # a directory a glob matches is not a config file it names: passed over, as before
    (tmp_path / "extra.toml").rmdir()
    write(tmp_path, '[[feeds]]\nname = "extra"\nurl = "https://example.org/extra"\n', "extra.toml")
    (tmp_path / "conf.d/news.toml").unlink()
    write(
        tmp_path, '[[feeds]]\nname = "inc"\nurl = "https://example.org/inc"\n', "conf.d/news.toml"
    )
    (tmp_path / "conf.d/old.toml").mkdir()
    assert [f.name for f in load(tmp_path, INCLUDE_MAIN).feeds] == ["main", "inc", "extra"]


def test_include_glob_in_a_missing_directory_matches_nothing(tmp_path: Path) -> None:
    write(tmp_path, '[[feeds]]\nname = "extra"\nurl = "https://example.org/extra"\n', "extra.toml")
    assert [f.name for f in load(tmp_path, INCLUDE_MAIN).feeds] == ["main", "extra"]


def _unprivileged() -> list[str]:
    """A prefix that runs a command without root's power to read any file (tests run as
    root here): without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"running as root and cannot drop CAP_DAC_*: {probe.stderr!r}")
    return prefix


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        # chmod 000: glob.glob() found nothing and the feed and sink in it silently stopped
        (
            0o000,
            "{cfg}:2: feedwatch.include[0]: {d}/conf.d: cannot read the directory: "
            "Permission denied",
        ),
        # chmod 644 (listed, not entered): a PermissionError traceback, exit 1
        (0o644, "{d}/conf.d/news.toml: cannot read: Permission denied"),
    ],
)
def test_include_directory_that_cannot_be_read_is_a_config_error(
    tmp_path: Path, mode: int, expected: str
) -> None:
    prefix = _unprivileged()
    cfg = _include_tree(tmp_path)
    conf_d = tmp_path / "conf.d"
    conf_d.chmod(mode)
    try:
        runs = {
            cmd: subprocess.run(
                [*prefix, sys.executable, "-m", "feedwatch", "-c", str(cfg), cmd],
                capture_output=True,
                text=True,
                timeout=60,
                env=bare_env(tmp_path),
            )
            for cmd in ("validate", "status")
        }
    finally:
        conf_d.chmod(0o755)
    for cmd, r in runs.items():
        assert "Traceback" not in r.stderr, (cmd, r.stderr)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert expected.format(cfg=cfg, d=tmp_path) in r.stderr.splitlines(), (cmd, r.stderr)


# --------------------------------------------------------------------------
# the example file and finding the config
# --------------------------------------------------------------------------

SPEC_KEYS = {
    "feedwatch": "state include interval jitter timeout concurrency per_host user_agent max_body "
    "max_entries max_age first_poll notify_on updates id_policy retention give_up_after "
    "flood_limit stale_after default_sinks metrics_listen shutdown_timeout log_format log_level",
    "rules": "any all not fields case_sensitive sinks",
    "email": "type host port security username password_env password_file from to digest",
    "webhook": "type url format headers secret_env secret_file digest",
    "command": "type argv timeout",
    "jsonl": "type path",
    "feeds": "name url tags sinks match keywords exclude headers allow_private enabled",
}


def test_example_config_loads_and_documents_every_key(tmp_path: Path) -> None:
    example = ROOT / "config.example.toml"
    config = load_config(example, env={})
    assert len(config.feeds) >= 2 and config.rules and config.sinks
    assert any(s.type == "jsonl" for s in config.sinks.values())
    assert config.state.endswith("/.local/state/feedwatch/state.db")
    text = example.read_text()
    for section, keys in SPEC_KEYS.items():
        for key in keys.split():
            pattern = rf"^[ \t]*(#[ \t]*)?(\[sinks\.\w+\][ \t]*)?{re.escape(key)}[ \t]*="
            assert re.search(pattern, text, re.M), f"{section}.{key} missing from the example"
    # the commented-out sinks are valid once uncommented and given their secrets
    uncommented = re.sub(r"^# (?=\[sinks|[a-z_]+ *=)", "", text, flags=re.M)
    uncommented = re.sub(r"^(password|secret)_file = .*$", "", uncommented, flags=re.M)
    uncommented = uncommented.replace(
        'sinks = ["log"]', 'sinks = ["log", "me", "chat", "script", "screen"]'
    )
    path = write(tmp_path, uncommented)
    env = {"FEEDWATCH_SMTP_PASSWORD": "pw12", "HOOK_TOKEN": "tok1", "FEEDWATCH_HOOK_SECRET": "s3cr"}
    full = load_config(path, env=env)
    assert list(full.sinks) == ["log", "me", "chat", "script", "screen"]


def test_the_example_config_names_every_key_the_loader_knows() -> None:
    """README says config.example.toml lists every key, but the webhook's secret_file
    (and the console sink type) were missing: the loader's own tables are the list."""
    from feedwatch import config as c

    text = (ROOT / "config.example.toml").read_text()
    sections: dict[str, tuple[str, ...]] = {
        "feedwatch": (*c._GLOBAL_KEYS, *c._SETTING_KEYS),
        "rules": c._RULE_KEYS,
        "feeds": c._FEED_KEYS,
    }
    for kind, keys in c._SINK_KEYS.items():
        sections[kind] = ("type", *keys, *(("digest",) if kind in c._DIGEST_TYPES else ()))
        assert re.search(rf'^(# )?type = "{kind}"', text, re.M), f"no {kind} sink in the example"
    for section, keys in sections.items():
        for key in keys:
            pattern = rf"^[ \t]*(#[ \t]*)?{re.escape(key)}[ \t]*="
            assert re.search(pattern, text, re.M), f"{section}.{key} missing from the example"


def test_find_config_path_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    xdg = tmp_path / "xdg"
    home = tmp_path / "home"
    for d in (cwd, xdg / "feedwatch", home / ".config" / "feedwatch"):
        d.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(xdg), "FEEDWATCH_CONFIG": "/from/env.toml"}

    assert find_config_path("/explicit.toml", env) == Path("/explicit.toml")
    assert find_config_path(None, env) == Path("/from/env.toml")
    del env["FEEDWATCH_CONFIG"]

    etc = Path("/etc/feedwatch/config.toml")
    if not etc.exists():
        with pytest.raises(ConfigError) as info:
            find_config_path(None, env)
        message = str(info.value)
        assert "no config file found" in message
        for place in ("feedwatch.toml", str(xdg / "feedwatch/config.toml"), str(etc)):
            assert place in message

    (home / ".config/feedwatch/config.toml").write_text("")
    without_xdg = {"HOME": str(home)}
    assert find_config_path(None, without_xdg) == home / ".config/feedwatch/config.toml"
    (xdg / "feedwatch/config.toml").write_text("")
    assert find_config_path(None, env) == xdg / "feedwatch/config.toml"
    (cwd / "feedwatch.toml").write_text("")
    assert find_config_path(None, env) == Path("feedwatch.toml")


def test_a_byte_order_mark_is_not_an_error(tmp_path: Path) -> None:
    """Windows' Notepad starts a UTF-8 file with one; it was "TOML syntax error:
    Invalid statement" on line 1. Lines and columns are counted as an editor shows them."""
    path = tmp_path / "feedwatch.toml"
    path.write_bytes('\ufeff[[feeds]]\nname = "é"\nurl = "https://example.org/feed"\n'.encode())
    config = load_config(path, env=BASE_ENV)
    assert [f.name for f in config.feeds] == ["é"]
    path.write_bytes("\ufeff[[feeds]]\nname = 1 2\n".encode())
    with pytest.raises(ConfigError) as info:
        load_config(path, env=BASE_ENV)
    assert str(info.value).startswith(f"{path}:2: TOML syntax error")


def test_an_unset_variable_is_the_one_problem_of_its_key(tmp_path: Path) -> None:
    """recipes.md's Discord example with the variable unset also said "must be an
    http:// or https:// URL" of the text left unexpanded."""
    lines = problems(
        tmp_path,
        '[sinks.discord]\ntype = "webhook"\nformat = "discord"\nurl = "${DISCORD_WEBHOOK_URL}"\n',
    )
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:4: sinks.discord.url: environment variable DISCORD_WEBHOOK_URL is not set"
    ]


def test_an_unknown_dotted_key_is_reported_at_its_own_line(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        '# my config\n[feedwatch]\ninterval = "15m"\njitter = "10%"\n\nlog.level = "debug"\n'
        '[sinks."my sink"]\ntype = "jsonl"\npath = "a.jsonl"\nextra.key = 1\n',
    )
    assert [line.split(": ", 1)[0] for line in strip_dir(lines, tmp_path)] == [
        "feedwatch.toml:6",
        "feedwatch.toml:10",
    ]


def test_a_rule_named_keywords_clashes_with_a_feeds_inline_keywords(tmp_path: Path) -> None:
    """Its alerts went to the inline rule's sinks (the feed's), not the named rule's."""
    text = (
        '[rules.keywords]\nany = ["hypersonic"]\nsinks = ["phone"]\n'
        '[sinks.phone]\ntype = "jsonl"\npath = "p.jsonl"\n'
        '[[feeds]]\nname = "f"\nurl = "https://example.org/f"\nmatch = ["keywords"]\n{extra}'
    )
    assert load(tmp_path, text.format(extra="")).feeds[0].rules[0].sinks == ("phone",)
    lines = problems(tmp_path, text.format(extra='keywords = ["Dnipro"]\n'))
    assert strip_dir(lines, tmp_path) == [
        'feedwatch.toml:10: feeds[0].match: names the rule "keywords", and this feed\'s'
        " keywords/exclude make an inline rule of that name: rename [rules.keywords]"
    ]


def test_a_term_of_invisible_characters_only_is_a_config_error(tmp_path: Path) -> None:
    """A keyword or ignore_text term of a zero-width space or a soft hyphen alone passed
    the empty-term check (made before text loses such characters), then crashed
    validate, check and preview with an IndexError."""
    lines = problems(
        tmp_path,
        '[[feeds]]\nname = "f"\nurl = "https://example.org/f"\n'
        'keywords = ["\\u200b"]\nignore_text = ["\\u00ad"]\n',
    )
    text = "\n".join(strip_dir(lines, tmp_path))
    assert "feedwatch.toml:4: feeds[0].keywords" in text, text
    assert "feedwatch.toml:5: feeds[0].ignore_text" in text, text
    assert text.count("holds only invisible characters") == 2


# --------------------------------------------------------------------------
# a new user's mistakes: each said plainly, where it is
# --------------------------------------------------------------------------


def test_a_toml_escape_in_a_term_is_named_with_the_fix(tmp_path: Path) -> None:
    """`"/\\bICBMs?\\b/"` with one backslash: in a TOML basic string `\\b` is a backspace
    (U+0008), so the regex never hit, and validate said ok. A control character in a
    /regex/ term (a rule's, keywords/exclude, ignore_text) is a warning naming it and
    the fix: not an error, so that a config that ran before the upgrade still runs. In
    a plain term it was always an error, which now says the same. A tab or a line
    break is white space in a plain term and the same in a regex as the regex's own
    escape: nothing said."""
    config = load(
        tmp_path,
        r"""
        [rules.missiles]
        any = ["hypersonic", "/\bICBMs?\b/"]
        not = ["/a\fb/", "a\fb"]

        [[feeds]]
        name = "f"
        url = "https://example.org/f"
        match = ["missiles"]
        ignore_text = ["/Points:\r[0-9]+/"]
        """,
    )
    assert rule_warnings(config) == [
        "rule \"missiles\": term '/\\x08ICBMs?\\x08/' holds U+0008"
        ' (a backspace: in TOML "\\b" is one; write \\\\b for a regex\'s \\b, or use a'
        " literal string '/\\bICBMs?\\b/')",
        "rule \"missiles\": term '/a\\x0cb/' holds U+000C (a form feed:"
        ' in TOML "\\f" is one; write \\\\f for a regex\'s \\f, or use a literal string'
        " '/a\\fb/')",
        "ignore_text of feed \"f\": term '/Points:\\r[0-9]+/' holds U+000D"
        ' (a carriage return: in TOML "\\r" is one; write \\\\r for a regex\'s \\r, or use'
        " a literal string '/Points:\\r[0-9]+/')",
    ]
    lines = problems(
        tmp_path,
        r"""
        [[feeds]]
        name = "f"
        url = "https://example.org/f"
        keywords = ["x\u0001y", "missile\bstrike"]
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:4: feeds[0].keywords[0]: term 'x\\x01y' holds U+0001 (a control"
        " character: remove it)",
        "feedwatch.toml:4: feeds[0].keywords[1]: term 'missile\\x08strike' holds U+0008 (a"
        ' backspace: in TOML "\\b" is one; write \\\\b for a regex\'s \\b, or use a literal'
        " string 'missile\\bstrike')",
    ]
    config = load(
        tmp_path,
        r"""
        [rules.r]
        any = ["/\\bICBMs?\\b/", '/\bICBMs?\b/', "drone\tstrike", "/a\nb/"]
        """,
    )
    assert config.rules["r"].any == (r"/\bICBMs?\b/", r"/\bICBMs?\b/", "drone\tstrike", "/a\nb/")
    assert rule_warnings(config) == []


def test_a_rule_of_empty_lists_is_an_empty_rule(tmp_path: Path) -> None:
    """`any = []` passed validate silently and then matched every entry, while
    `[rules.x]` alone was refused: an empty list is no term either. A warning (a config
    that ran before the upgrade still runs); `[rules.x]` alone stays an error."""
    empty = "an empty rule (it would match every entry): give at least one term in any, all or not"
    lines = problems(tmp_path, "[rules.a]\n")
    assert strip_dir(lines, tmp_path) == [f"feedwatch.toml:1: rules.a: {empty}"]
    config = load(
        tmp_path,
        """
        [rules.b]
        any = []

        [rules.c]
        any = []
        all = []
        not = []
        """,
    )
    assert rule_warnings(config) == [f'rule "b": {empty}', f'rule "c": {empty}']
    # one list with a term is a rule (the example config's `all = []` beside it)
    config = load(tmp_path, '[rules.r]\nany = []\nall = []\nnot = ["video game"]\n')
    assert config.rules["r"].not_ == ("video game",)
    assert rule_warnings(config) == []
    # a term that is wrong is reported for itself, not as an empty rule too
    lines = problems(tmp_path, '[rules.r]\nany = ["/(unclosed/"]\n')
    assert len(lines) == 1 and "invalid regular expression" in lines[0]


def test_an_emptied_keywords_or_match_list_is_named(tmp_path: Path) -> None:
    """`keywords = []` (or `match = []`) passed validate silently, and the feed alerted
    on every entry, as one with no such key does: most likely a list emptied by
    mistake. Still valid (a config that ran before the upgrade still runs), but a
    warning names the feed, its file and line, and how to say "every entry" on purpose.
    A list beside a rule that is left (`match = []` with keywords, `keywords = []` with
    exclude: "everything but") is no warning, nor is a feed with no such key."""
    (tmp_path / "more.toml").write_text(
        '[[feeds]]\nname = "m"\nurl = "https://example.org/m"\nexclude = []\n'
    )
    config = load(
        tmp_path,
        """
        [feedwatch]
        include = ["more.toml"]

        [[feeds]]
        name = "a"
        url = "https://example.org/a"
        keywords = []

        [[feeds]]
        name = "b"
        url = "https://example.org/b"
        match = []
        keywords = []

        [[feeds]]
        name = "c"
        url = "https://example.org/c"
        match = []
        keywords = ["missile"]

        [[feeds]]
        name = "d"
        url = "https://example.org/d"
        keywords = []
        exclude = ["sponsored"]

        [[feeds]]
        name = "e"
        url = "https://example.org/e"
        """,
    )
    assert [f.rules for f in config.feeds if f.name in ("a", "b", "m")] == [(), (), ()]
    fix = (
        "; to say that on purpose, remove the key{} (a feed without match, keywords or"
        " exclude alerts on every entry)"
    )
    assert strip_dir(rule_warnings(config), tmp_path) == [
        'feedwatch.toml:7: feeds[0].keywords: feed "a": keywords = [] is no rule, so it'
        f" alerts on every entry{fix.format('')}",
        'feedwatch.toml:12: feeds[1].match: feed "b": match = [] and keywords = [] are no'
        f" rule, so it alerts on every entry{fix.format('s')}",
        'more.toml:4: feeds[0].exclude: feed "m": exclude = [] is no rule, so it alerts on'
        f" every entry{fix.format('')}",
    ]


def test_ignore_text_of_feedwatch_is_named_there(tmp_path: Path) -> None:
    """A control character in an ignore_text term of [feedwatch] was named as the first
    feed's ("ignore_text of feed "a""), a table that does not hold it. A term from
    [feedwatch] is named there, once; a feed's own ignore_text (it replaces
    [feedwatch]'s) is named as that feed's."""
    config = load(
        tmp_path,
        r"""
        [feedwatch]
        ignore_text = ["/Points:\r[0-9]+/"]

        [[feeds]]
        name = "a"
        url = "https://example.org/a"

        [[feeds]]
        name = "b"
        url = "https://example.org/b"
        interval = "1h"

        [[feeds]]
        name = "c"
        url = "https://example.org/c"
        ignore_text = ["/Views:\r[0-9]+/"]
        """,
    )
    problem = (
        "term '/{0}:\\r[0-9]+/' holds U+000D (a carriage return: in TOML \"\\r\" is one;"
        " write \\\\r for a regex's \\r, or use a literal string '/{0}:\\r[0-9]+/')"
    )
    assert rule_warnings(config) == [
        f"ignore_text of [feedwatch]: {problem.format('Points')}",
        f'ignore_text of feed "c": {problem.format("Views")}',
    ]


def test_a_misspelled_section_has_its_line(tmp_path: Path) -> None:
    """`[sink.log]` and `[rule.x]` were reported with no line, `[[feed]]` with one."""
    (tmp_path / "more.toml").write_text('\n[rule.y]\nany = ["x"]\n')
    lines = problems(
        tmp_path,
        """
        [feedwatch]
        include = ["more.toml"]

        [sink.log]
        type = "jsonl"

        [rule.x]
        any = ["x"]

        [[feed]]
        url = "https://example.org/f"

        [feedwatch.log.x]
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        'feedwatch.toml:4: sink: unknown key (did you mean "sinks"?)',
        'feedwatch.toml:7: rule: unknown key (did you mean "rules"?)',
        'feedwatch.toml:10: feed: unknown key (did you mean "feeds"?)',
        "feedwatch.toml:13: feedwatch.log: unknown key",
        "more.toml:2: rule: an included file may hold only [[feeds]], [rules.*] and [sinks.*]"
        ' (did you mean "rules"?)',
    ]


def test_a_command_argv_written_as_a_string_is_one_error_with_the_array_form(
    tmp_path: Path,
) -> None:
    """`argv = "/usr/bin/logger feedwatch"` was both "missing key argv" and "expected
    an array of strings"."""
    lines = problems(
        tmp_path,
        """
        [sinks.cmd]
        type = "command"
        argv = "/usr/bin/logger -t 'feed watch'"

        [sinks.cmd2]
        type = "command"
        argv = 42
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:3: sinks.cmd.argv: expected an array of strings, got a string"
        ' (no shell splits it: write argv = ["/usr/bin/logger", "-t", "feed watch"])',
        "feedwatch.toml:7: sinks.cmd2.argv: expected an array of strings, got an integer",
    ]


def test_a_global_key_in_a_feed_is_pointed_at_feedwatch(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        """
        [[feeds]]
        url = "https://example.org/f"
        concurrency = 4
        default_sinks = []
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:3: feeds[0].concurrency: a [feedwatch] key (for the whole daemon,"
        " not one feed): move it under [feedwatch]",
        "feedwatch.toml:4: feeds[0].default_sinks: a [feedwatch] key (for the whole daemon,"
        " not one feed): move it under [feedwatch]",
    ]


def test_two_addresses_in_from_get_a_hint_for_from(tmp_path: Path) -> None:
    """The hint was `(to = [...])`, though `from` holds the one sender."""
    lines = problems(
        tmp_path,
        """
        [sinks.m]
        type = "email"
        host = "h"
        from = "a@example.org, b@example.org"
        to = ["c@example.org"]
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:4: sinks.m.from: more than one address: from is the one sender"
        ' (from = "feedwatch <alerts@example.org>"); the recipients go in to'
    ]


def test_an_unknown_sink_or_rule_lists_those_that_exist(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        """
        [rules.missiles]
        any = ["x"]
        sinks = ["pager"]

        [rules.drones]
        any = ["y"]

        [sinks.log]
        type = "jsonl"
        path = "-"

        [sinks.mail]
        type = "console"

        [[feeds]]
        url = "https://example.org/f"
        match = ["missile", "shells"]
        sinks = ["logg"]
        """,
    )
    assert strip_dir(lines, tmp_path) == [
        'feedwatch.toml:3: rules.missiles.sinks[0]: unknown sink "pager" (configured: log, mail)',
        'feedwatch.toml:17: feeds[0].match[0]: unknown rule "missile" (did you mean'
        ' "missiles"? configured: missiles, drones)',
        'feedwatch.toml:17: feeds[0].match[1]: unknown rule "shells" (configured:'
        " missiles, drones)",
        'feedwatch.toml:18: feeds[0].sinks[0]: unknown sink "logg" (did you mean "log"?'
        " configured: log, mail)",
    ]
    lines = problems(tmp_path, '[[feeds]]\nurl = "https://example.org/f"\nmatch = ["x"]\n')
    assert strip_dir(lines, tmp_path) == [
        'feedwatch.toml:3: feeds[0].match[0]: unknown rule "x" (there are no [rules.*])'
    ]
    many = "".join(f'[sinks.s{i:02}]\ntype = "console"\n' for i in range(15))
    lines = problems(tmp_path, many + '[rules.r]\nany = ["x"]\nsinks = ["t"]\n')
    assert lines[0].endswith(
        'unknown sink "t" (configured: s00, s01, s02, s03, s04, s05, s06, s07, s08, s09 and 5 more)'
    )


def test_a_relative_command_program_is_relative_to_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`argv = ["./script"]` was run from the current directory: next to the config
    validate passed, under systemd (cwd /) every delivery went dead. A program with a
    slash in it is relative to the config's directory, as a jsonl path is; a bare name
    is still looked up on PATH."""
    monkeypatch.chdir("/")
    config = load(
        tmp_path,
        """
        [sinks.a]
        type = "command"
        argv = ["./bin/notify", "./arg"]

        [sinks.b]
        type = "command"
        argv = ["logger", "x"]

        [sinks.c]
        type = "command"
        argv = ["/usr/bin/logger"]

        [sinks.d]
        type = "command"
        argv = ["~/bin/notify"]
        """,
    )
    argv = {name: sink.options["argv"] for name, sink in config.sinks.items()}
    assert argv == {
        "a": (str(tmp_path / "bin" / "notify"), "./arg"),
        "b": ("logger", "x"),
        "c": ("/usr/bin/logger",),
        "d": ("/home/tester/bin/notify",),
    }


def test_a_postgresql_state_without_its_driver_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """validate said ok, then check failed (exit 1) for the missing psycopg."""
    import importlib.util

    text = '[feedwatch]\nstate = "postgresql://feedwatch@db.example.org/feeds"\n'
    assert load(tmp_path, text).state.startswith("postgresql://")  # (installed here)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.partition(".")[0] == "psycopg_pool" else real(name, *a),
    )
    lines = problems(tmp_path, text)
    assert strip_dir(lines, tmp_path) == [
        "feedwatch.toml:2: feedwatch.state: PostgreSQL state needs the psycopg driver,"
        " which is not installed: pip install 'feedwatch[postgres]' (psycopg[binary] and"
        " psycopg-pool)"
    ]
    # a SQLite --state in its place needs no driver
    config = load_config(write(tmp_path, text), env=BASE_ENV, state_override=str(tmp_path / "s.db"))
    assert config.state == str(tmp_path / "s.db")


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pieces(secret: str) -> list[str]:
    """Every part of ``secret`` 3 characters long or more."""
    n = len(secret)
    return [secret[i:j] for i in range(n) for j in range(i + 3, n + 1)]


# libpq takes the first two as written; the last two it would misread (a "%e9" it
# decodes to a byte that is no UTF-8, an "@" ends its user-info): a config error
_PG_PASSWORDS = {"pw[abc]defgh": True, "Xk9]q7Lm": True, "Ab9%e9Xyz": False, "p@ss@word": False}


@pytest.mark.parametrize("password", list(_PG_PASSWORDS))
def test_a_postgresql_state_password_with_brackets_or_an_at_never_shows(
    tmp_path: Path, password: str
) -> None:
    """A password holding "[" or "]" (which libpq takes as written) made `validate`,
    `status` and `check` die with urlsplit's traceback, quoting a piece of it ("'abc'
    does not appear to be an IPv4 or IPv6 address"); one with a "%e9" passed
    `validate` and then crashed `status` (psycopg's UnicodeDecodeError); one with a
    raw "@" showed a piece in libpq's error ("failed to resolve host 'ss@***@...'")."""
    port = _closed_port()
    url = f"postgresql://u2:{password}@127.0.0.1:{port}/fw3"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[feedwatch]\nstate = "postgresql://u2:${PGPW}@127.0.0.1:' + str(port) + '/fw3"\n'
        '[sinks.log]\ntype = "jsonl"\npath = "out.jsonl"\n'
        '[[feeds]]\nurl = "http://127.0.0.1:9/feed.xml"\n'
    )
    valid = _PG_PASSWORDS[password]
    env = bare_env(tmp_path, PGPW=password)
    runs = {
        cmd: run_feedwatch("-c", str(cfg), cmd, env=env) for cmd in ("validate", "status", "check")
    }
    runs["--state"] = run_feedwatch("-c", str(cfg), "--state", url, "status", env=env)
    for how, r in runs.items():
        out = r.stdout + r.stderr
        assert "Traceback" not in out, (how, out)
        assert not [p for p in _pieces(password) if p in out], (how, out)
        if how == "validate" and valid:
            assert r.returncode == 0 and "ok: 1 feeds" in r.stdout, out
        elif valid:  # read as written: nothing listens on the port
            assert r.returncode == 1, (how, out)
            assert f"PostgreSQL state postgresql://***@127.0.0.1:{port}/fw3" in out, (how, out)
        else:
            assert r.returncode == 2, (how, out)
            where = "--state" if how == "--state" else f"{cfg}:2: feedwatch.state"
            assert r.stderr.startswith(f"{where}: not a valid PostgreSQL URL: "), (how, out)


@pytest.mark.parametrize(
    "password",
    ["pw[abc]defgh", "Xk9]q7Lm", "a#b?c:d", "x%40y%2Fz", "Ab9%e9Xyz", "p@ss@word", "a/bcd", "b%zz"],
)
def test_pgurl_reads_a_password_as_libpq_does_or_refuses_the_url(password: str) -> None:
    """feedwatch read a state URL's password with urlsplit, which raises at a "[" or
    "]" in one (and `run`'s parse cache directory did too); libpq takes them as written,
    and splits at the first "@" (a raw "@" or "/" in a password it misreads)."""
    from urllib.parse import unquote

    from psycopg.conninfo import conninfo_to_dict

    from feedwatch import parsecache, pgurl

    url = f"postgresql://u2:{password}@127.0.0.1:5432/fw3"
    assert password in pgurl.secrets(url)
    assert parsecache.directory(url, env={})  # (urlsplit raised)
    try:
        libpq = conninfo_to_dict(url)
    except Exception:  # psycopg.ProgrammingError; UnicodeDecodeError for the %e9
        libpq = None
    if pgurl.problem(url) is None:
        assert libpq == {
            "user": "u2",
            "password": unquote(password),
            "host": "127.0.0.1",
            "port": "5432",
            "dbname": "fw3",
        }
        assert pgurl.password(url) == password
    else:  # refused: libpq reads it otherwise, or not at all
        assert libpq is None or libpq.get("password") != unquote(password)


def test_a_term_that_looks_like_a_regex_or_a_list_but_is_not_is_warned(tmp_path: Path) -> None:
    """`"/missile/i"` (a flag after the closing slash) was silently the plain text
    "/missile/i", which never hits, and `keywords = ["hypersonic,glide*"]` one prefix
    term "hypersonic,glide" (while `preview -k 'hypersonic,glide*'` splits at the
    comma and hits): validate said ok. Each is a warning with its file, line, key and
    the fix. A regex with white space around it (`"/ICBM/ "`, `" /oreshnik/"`) was a
    plain term too: it is now the regex it looks like, no warning needed."""
    from feedwatch.match import compile_rules, evaluate
    from feedwatch.model import EntrySnapshot, Rule

    def snap(title: str) -> EntrySnapshot:
        return EntrySnapshot(entry_id="id", title=title)

    config = load(
        tmp_path,
        """
        [rules.missiles]
        any = ["/missile/i", "/ICBM/ ", " /oreshnik/", "/r/worldnews"]
        not = ["/drone/gs"]

        [rules.acronyms]
        any = ["/US/i", "sport/"]
        case_sensitive = true

        [[feeds]]
        name = "f"
        url = "https://example.org/f"
        match = ["missiles", "acronyms"]
        keywords = ["hypersonic,glide*", "Washington, D.C.", "1,000 troops", "/[a,b]/"]
        """,
    )
    assert config.rules["missiles"].any[1:3] == ("/ICBM/ ", " /oreshnik/")  # as written
    flag = (
        "term {!r} is the plain text {!r}, not a /regex/: nothing may follow its closing"
        ' "/"; write {!r} (a flag goes inside it, as (?s) at its start; terms ignore'
        " case unless the rule is case_sensitive)"
    )
    slash = 'term {!r} {} with "/" but is no /regex/ (that starts and ends with "/"): it hits the text {!r}'
    assert strip_dir(rule_warnings(config), tmp_path) == [
        'feedwatch.toml:2: rules.missiles.any[0]: rule "missiles": '
        + flag.format("/missile/i", "/missile/i", "/missile/"),
        'feedwatch.toml:2: rules.missiles.any[3]: rule "missiles": '
        + slash.format("/r/worldnews", "starts", "/r/worldnews"),
        'feedwatch.toml:3: rules.missiles.not[0]: rule "missiles": '
        + flag.format("/drone/gs", "/drone/gs", "/(?s)drone/"),
        'feedwatch.toml:6: rules.acronyms.any[0]: rule "acronyms": '
        + flag.format("/US/i", "/US/i", "/(?i)US/"),
        'feedwatch.toml:6: rules.acronyms.any[1]: rule "acronyms": '
        + slash.format("sport/", "ends", "sport/"),
        'feedwatch.toml:13: feeds[0].keywords[0]: keywords of feed "f": term'
        " 'hypersonic,glide*' is one term, its comma included: for several, write each"
        ' apart, ["hypersonic", "glide*"]',
    ]
    # what the fixes say hits, and a regex with white space around it is one
    for term, text in [
        ("/missile/", "MISSILE"),
        ("/(?s)drone/", "Drone"),
        ("/ICBM/ ", "icbm test"),
        (" /oreshnik/", "Oreshnik launched"),
    ]:
        assert evaluate(compile_rules([Rule("r", any=(term,))]), snap(text))[0], term
    rule = compile_rules([Rule("r", any=("/(?i)US/",), case_sensitive=True)])
    assert evaluate(rule, snap("us"))[0]
    # `validate` prints them; `run` and `check` log them at their start
    from structlog.testing import capture_logs

    from feedwatch.config_warnings import log_config_warnings

    with capture_logs() as logs:
        log_config_warnings(config)
    logged = [e["problem"] for e in logs if e["event"] == "config.rule_warning"]
    assert strip_dir(logged, tmp_path) == strip_dir(rule_warnings(config), tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[sinks.log]\ntype = "jsonl"\npath = "out.jsonl"\n'
        '[[feeds]]\nname = "f"\nurl = "https://example.org/feed.xml"\n'
        'keywords = ["/missile/i", "hypersonic,glide*"]\n'
    )
    r = run_feedwatch("-c", str(cfg), "validate", env=bare_env(tmp_path))
    assert r.returncode == 0 and r.stdout.startswith("ok:"), r.stderr
    assert (
        f"warning: {cfg}:7: feeds[0].keywords[0]: keywords of feed \"f\": term '/missile/i'"
        in r.stderr
    )
    assert f'warning: {cfg}:7: feeds[0].keywords[1]: keywords of feed "f": term' in r.stderr
