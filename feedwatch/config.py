"""TOML config -> a validated ``feedwatch.model.Config`` (SPEC section 3).

One entry point, ``load_config``. It reads the main file and its includes,
expands ``${VAR}``, and checks everything, collecting *every* problem of
every file before raising one ``ConfigError``: a person fixing a config
wants the whole list at once, each as ``FILE:LINE: key.path: message``.

``tomllib`` reports no positions for values, so ``_scan_lines`` walks the
source once more, just far enough to map each key path to its line.
"""

from __future__ import annotations

import bisect
import contextlib
import difflib
import glob
import importlib.util
import json
import math
import os
import re
import shlex
import stat
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

from feedwatch import DEFAULT_USER_AGENT, pgurl
from feedwatch.mailbox import SeveralAddresses, parse_mailbox
from feedwatch.model import (
    RULE_FIELDS,
    Config,
    FeedConfig,
    FeedSettings,
    Jitter,
    Rule,
    Secret,
    SinkConfig,
)
from feedwatch.redact import redact, register_secret

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "Problem",
    "default_state_path",
    "find_config_path",
    "format_duration",
    "load_config",
    "parse_duration",
    "parse_jitter",
    "parse_size",
]

T = TypeVar("T")
KeyPath = tuple[str | int, ...]
_SinkType = Literal["email", "webhook", "command", "jsonl", "console"]
_LogFormat = Literal["auto", "console", "json"]

# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config, located as precisely as we can."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if where and self.line is not None:
            where = f"{where}:{self.line}"
        parts = [p for p in (where, self.path, self.message) if p]
        return redact(": ".join(parts))


class ConfigError(Exception):
    """The config cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


# --------------------------------------------------------------------------
# Durations, sizes, jitter
# --------------------------------------------------------------------------

_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"(?:\s*\d+(?:\.\d+)?\s*[smhd])+\s*", re.ASCII)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])", re.ASCII)
_NUMBER_RE = re.compile(r"\s*\d+(?:\.\d+)?\s*", re.ASCII)

_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", re.ASCII)


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


MAX_DURATION = 36500 * 86400.0
"""100 years: a longer interval or retention is "never", and a date that far on would
overflow (an interval of 9999999d failed every poll with "date value out of range")."""


def parse_duration(value: int | float | str) -> float:
    """Seconds from ``90``, ``"90s"``, ``"15m"``, ``"1h30m"`` or ``"7d"``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(
            f'expected a duration (seconds as an integer, or a string like "15m" or "1h30m"), '
            f"got {_type_name(value)}"
        )
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"a duration must be a non-negative number of seconds, got {value}")
        return _at_most(float(value))
    if _NUMBER_RE.fullmatch(value):
        raise ValueError(
            f'duration "{value}" has no unit: write e.g. "{value.strip()}s" '
            "(units: s, m, h, d) or an integer number of seconds"
        )
    if not _DURATION_RE.fullmatch(value):
        raise ValueError(
            f'invalid duration "{value}": use <n><unit> parts with units s, m, h, d '
            '(e.g. "90s", "15m", "1h30m", "7d")'
        )
    return _at_most(
        float(sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(value)))
    )


def parse_duration_arg(text: str) -> float:
    """``parse_duration`` of a command-line argument, where a bare number is seconds
    (the config's TOML tells ``30`` from ``"30"``; a shell does not)."""
    if _NUMBER_RE.fullmatch(text):
        return _at_most(float(text))
    return parse_duration(text)


def _at_most(seconds: float) -> float:
    if seconds > MAX_DURATION:
        raise ValueError(f"a duration must be at most {format_duration(MAX_DURATION)} (100 years)")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest ``parse_duration`` string for a whole number of seconds (``5400`` -> ``1h30m``)."""
    total = int(seconds)
    if total != seconds or total < 0:
        return f"{seconds}s"
    if total == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, total = divmod(total, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def parse_size(value: int | str) -> int:
    """Bytes from ``1024``, ``"100B"``, ``"512KiB"``, ``"10MiB"``, ``"5MB"``, ``"1GiB"``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(
            f'expected a size (bytes as an integer, or a string like "10MiB"), got {_type_name(value)}'
        )
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    m = _SIZE_RE.fullmatch(value)
    if not m:
        raise ValueError(f'invalid size "{value}": write e.g. "512KiB", "10MiB", "5MB" or bytes')
    number, unit = m.groups()
    if not unit:
        raise ValueError(f'size "{value}" has no unit: write e.g. "{number}B" or "{number}KiB"')
    mult = _SIZE_UNITS.get(unit.lower())
    if mult is None:
        raise ValueError(
            f'invalid size unit "{unit}" in "{value}": use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB'
        )
    return int(round(float(number) * mult))


def parse_jitter(value: int | float | str) -> Jitter:
    """``"10%"`` (of the interval, 0-100%) or a duration."""
    if isinstance(value, str) and value.strip().endswith("%"):
        text = value.strip()[:-1].strip()
        try:
            pct = float(text)
        except ValueError:
            raise ValueError(f'invalid jitter "{value}": write e.g. "10%" or "30s"') from None
        if not math.isfinite(pct) or not 0 <= pct <= 100:
            raise ValueError(f'jitter "{value}" must be between 0% and 100%')
        return Jitter(ratio=pct / 100.0)
    try:
        return Jitter(seconds=parse_duration(value))
    except ValueError as e:
        raise ValueError(f'{e} (or a percentage of the interval like "10%")') from None


# --------------------------------------------------------------------------
# Where the config and the state live
# --------------------------------------------------------------------------


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME")
    return Path(home) if home else Path.home()


def _expanduser(path: str, env: Mapping[str, str]) -> str:
    if path == "~" or path.startswith("~/"):
        return str(_home(env)) + path[1:]
    if path.startswith("~"):
        return os.path.expanduser(path)
    return path


def _xdg(env: Mapping[str, str], var: str, fallback: str) -> Path:
    value = env.get(var, "")
    # The XDG spec says relative values are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return _home(env) / fallback


def find_config_path(explicit: str | None, env: Mapping[str, str] = os.environ) -> Path:
    """The config file to load: ``-c``, ``$FEEDWATCH_CONFIG``, then the first that exists of
    ``./feedwatch.toml``, ``$XDG_CONFIG_HOME/feedwatch/config.toml``, ``/etc/feedwatch/config.toml``.

    A path the user named (``-c`` or the variable) is returned as is, so that a
    typo in it is reported by ``load_config`` instead of silently falling through.
    """
    if explicit:
        return Path(_expanduser(explicit, env))
    named = env.get("FEEDWATCH_CONFIG", "")
    if named:
        return Path(_expanduser(named, env))
    candidates = [
        Path("feedwatch.toml"),
        _xdg(env, "XDG_CONFIG_HOME", ".config") / "feedwatch" / "config.toml",
        Path("/etc/feedwatch/config.toml"),
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise ConfigError(
        [
            Problem(
                "",
                None,
                "",
                f"no config file found (looked for {looked}); "
                "pass -c FILE or set $FEEDWATCH_CONFIG, or start from `feedwatch init`",
            )
        ]
    )


def problem_at(path: Path | None, key: KeyPath, message: str) -> Problem:
    """A problem of a valid config that only a comparison finds (a reload's with the
    running config), located as ``load_config`` locates its own: ``FILE:LINE: key.path:
    message``, the line of the key (else of its table) as the file reads now."""
    f = _File(path=Path(path or ""), display=str(path or ""), index=0)
    if path is not None and key:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            f.text = f.path.read_bytes().decode("utf-8-sig")
    return Problem(f.display, f.line_of(key) if f.text else None, _format_path(key), message)


def default_state_path(env: Mapping[str, str] = os.environ) -> str:
    """``$STATE_DIRECTORY/state.db`` under systemd, else ``$XDG_STATE_HOME/feedwatch/state.db``."""
    state_dir = env.get("STATE_DIRECTORY", "")
    if state_dir:
        return str(Path(state_dir.split(":")[0]) / "state.db")
    return str(_xdg(env, "XDG_STATE_HOME", ".local/state") / "feedwatch" / "state.db")


# --------------------------------------------------------------------------
# Source positions
# --------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class _ScanError(Exception):
    pass


class _LineScanner:
    """Maps key paths to the line that defines them, for an already-valid TOML text.

    Array-of-tables elements get their index (``("feeds", 2, "url")``), array
    values their element index, matching the paths the validator reports.
    """

    def __init__(self, text: str) -> None:
        self.t = text
        self.n = len(text)
        self.pos = 0
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.lines: dict[KeyPath, int] = {}
        self.aot: dict[KeyPath, int] = {}

    def line(self, pos: int) -> int:
        return bisect.bisect_right(self.starts, pos)

    def run(self) -> dict[KeyPath, int]:
        try:
            self._document()
        except (_ScanError, IndexError, tomllib.TOMLDecodeError):
            pass  # best effort: keep what was mapped so far
        return self.lines

    def _skip(self, newlines: bool) -> None:
        t, n = self.t, self.n
        while self.pos < n:
            c = t[self.pos]
            if c in " \t" or (newlines and c in "\r\n"):
                self.pos += 1
            elif c == "#":
                end = t.find("\n", self.pos)
                self.pos = n if end < 0 else end
            else:
                return

    def _expect(self, s: str) -> None:
        if not self.t.startswith(s, self.pos):
            raise _ScanError(s)
        self.pos += len(s)

    def _resolve(self, keys: tuple[str, ...]) -> KeyPath:
        out: KeyPath = ()
        for k in keys:
            out += (k,)
            if out in self.aot:
                out += (self.aot[out],)
        return out

    def _document(self) -> None:
        table: KeyPath = ()
        while True:
            self._skip(newlines=True)
            if self.pos >= self.n:
                return
            start = self.pos
            if self.t.startswith("[[", self.pos):
                self.pos += 2
                keys = self._key()
                self._expect("]]")
                parent = self._resolve(keys[:-1]) + (keys[-1],)
                index = self.aot.get(parent, -1) + 1
                self.aot[parent] = index
                table = parent + (index,)
                self._header(parent, start)
                self.lines[table] = self.line(start)
            elif self.t[self.pos] == "[":
                self.pos += 1
                keys = self._key()
                self._expect("]")
                table = self._resolve(keys)
                self._header(table, start)
            else:
                keys = self._key()
                self._expect("=")
                path = table + keys
                self.lines[path] = self.line(start)
                for end in range(len(table) + 1, len(path)):  # `log.level = ...`: `log`
                    self.lines.setdefault(path[:end], self.line(start))
                self._skip(newlines=False)
                self._value(path)
            self._skip(newlines=False)
            if self.pos < self.n and self.t[self.pos] not in "\r\n":
                raise _ScanError("junk after value")

    def _header(self, table: KeyPath, start: int) -> None:
        """A table header's line, also for the tables it names on its way (``[sink.log]``
        makes ``sink``: an unknown key of that line) that no line of their own defines."""
        for end in range(1, len(table) + 1):
            self.lines.setdefault(table[:end], self.line(start))

    def _key(self) -> tuple[str, ...]:
        keys: list[str] = []
        while True:
            self._skip(newlines=False)
            c = self.t[self.pos]
            if c in "\"'":
                start = self.pos
                self._string()
                raw = self.t[start : self.pos]
                keys.append(tomllib.loads(f"k = {raw}")["k"])
            else:
                m = _BARE_KEY.match(self.t, self.pos)
                if not m:
                    raise _ScanError("key")
                keys.append(m.group())
                self.pos = m.end()
            self._skip(newlines=False)
            if self.pos < self.n and self.t[self.pos] == ".":
                self.pos += 1
                continue
            return tuple(keys)

    def _value(self, path: KeyPath) -> None:
        t = self.t
        c = t[self.pos]
        if c == "[":
            self.pos += 1
            index = 0
            while True:
                self._skip(newlines=True)
                if t[self.pos] == "]":
                    self.pos += 1
                    return
                self.lines[path + (index,)] = self.line(self.pos)
                self._value(path + (index,))
                self._skip(newlines=True)
                if t[self.pos] == ",":
                    self.pos += 1
                    index += 1
                elif t[self.pos] != "]":
                    raise _ScanError("array")
        elif c == "{":
            self.pos += 1
            while True:
                self._skip(newlines=True)
                if t[self.pos] == "}":
                    self.pos += 1
                    return
                start = self.pos
                keys = self._key()
                self._expect("=")
                self._skip(newlines=False)
                self.lines[path + keys] = self.line(start)
                self._value(path + keys)
                self._skip(newlines=True)
                if t[self.pos] == ",":
                    self.pos += 1
        elif c in "\"'":
            self._string()
        else:
            start = self.pos
            while self.pos < self.n and t[self.pos] not in ",]}\r\n#":
                self.pos += 1
            if self.pos == start:
                raise _ScanError("value")

    def _string(self) -> None:
        t = self.t
        if t.startswith('"""', self.pos) or t.startswith("'''", self.pos):
            quote = t[self.pos : self.pos + 3]
            i = self.pos + 3
            while True:
                j = t.find(quote, i)
                if j < 0:
                    raise _ScanError("string")
                if quote == '"""':
                    k = j - 1
                    while t[k] == "\\":
                        k -= 1
                    if (j - 1 - k) % 2:
                        i = j + 1
                        continue
                end = j + 3
                while end < self.n and t[end] == quote[0] and end - j < 5:
                    end += 1
                self.pos = end
                return
        q = t[self.pos]
        i = self.pos + 1
        while True:
            c = t[i]
            if c == "\\" and q == '"':
                i += 2
            elif c == q:
                self.pos = i + 1
                return
            elif c == "\n":
                raise _ScanError("string")
            else:
                i += 1


def _scan_lines(text: str) -> dict[KeyPath, int]:
    return _LineScanner(text).run()


def _format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
            out += ("." if out else "") + key
    return out


# --------------------------------------------------------------------------
# ${VAR} expansion
# --------------------------------------------------------------------------


class _Expanded(str):
    """A string value that had ``${VAR}`` in it (so it holds a secret)."""

    __slots__ = ()


_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand_string(value: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """``value`` with ``${VAR}`` and ``$$`` replaced; the list holds the problems."""
    if "$" not in value:
        return value, []
    out: list[str] = []
    errors: list[str] = []
    expanded = False
    i = 0
    while True:
        j = value.find("$", i)
        if j < 0:
            out.append(value[i:])
            break
        out.append(value[i:j])
        nxt = value[j + 1 : j + 2]
        if nxt == "$":
            out.append("$")
            i = j + 2
        elif nxt == "{":
            k = value.find("}", j + 2)
            if k < 0:
                errors.append("unterminated ${ (write $$ for a literal $)")
                break
            name = value[j + 2 : k]
            i = k + 1
            if not _VAR_NAME.fullmatch(name):
                errors.append(f"invalid variable name in ${{{name}}} (write $$ for a literal $)")
            elif name not in env:
                errors.append(f"environment variable {name} is not set")
            else:
                register_secret(env[name])
                out.append(env[name])
                expanded = True
        else:
            out.append("$")
            i = j + 1
    if errors:
        return value, errors  # keep the original (its checks are not reported: _File)
    text = "".join(out)
    return (_Expanded(text) if expanded else text), errors


# --------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------


@dataclass
class _File:
    path: Path
    display: str
    index: int
    data: dict[str, Any] = field(default_factory=dict)
    text: str = ""  # scanned for line numbers only when a problem needs one
    problems: list[tuple[int, int, Problem]] = field(default_factory=list)
    # keys whose ${VAR} could not be expanded: that is their problem, and the checks of
    # the text left unexpanded ("must be an http:// URL") would only add noise
    unexpanded: set[KeyPath] = field(default_factory=set)
    _lines: dict[KeyPath, int] | None = None

    @property
    def lines(self) -> dict[KeyPath, int]:
        if self._lines is None:  # a valid file never pays for the scan (~35 us a feed)
            self._lines = _scan_lines(self.text)
        return self._lines

    def line_of(self, path: KeyPath) -> int | None:
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def err(self, path: KeyPath, message: str) -> None:
        if path in self.unexpanded:
            return
        self.report(path, message)

    def report(self, path: KeyPath, message: str) -> None:
        """A problem whatever the key's value: an unknown key is one, expanded or not."""
        line = self.line_of(path)
        problem = Problem(self.display, line, _format_path(path), message)
        self.problems.append((self.index, line if line is not None else 0, problem))


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _check_keys(f: _File, table: Mapping[str, Any], allowed: Iterable[str], path: KeyPath) -> None:
    allowed = list(allowed)
    for key in table:
        if key not in allowed:
            f.report(path + (key,), f"unknown key{_suggest(key, allowed)}")


def _expand_tree(f: _File, value: Any, path: KeyPath, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        text, errors = _expand_string(value, env)
        for message in errors:
            f.err(path, message)
        if errors:
            f.unexpanded.add(path)
        return text
    if isinstance(value, dict):
        return {k: _expand_tree(f, v, path + (k,), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_tree(f, v, path + (i,), env) for i, v in enumerate(value)]
    return value


_FAILED: Any = object()


def _take(
    f: _File, table: Mapping[str, Any], key: str, path: KeyPath, conv: Callable[[Any], T]
) -> T | Any:
    """``conv(table[key])``, or ``_FAILED`` (problem recorded), or None when absent."""
    if key not in table:
        return None
    try:
        return conv(table[key])
    except ValueError as e:
        f.err(path + (key,), str(e))
        return _FAILED


def _ok(value: Any) -> bool:
    return value is not None and value is not _FAILED


def c_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_type_name(value)}")
    return str(value)  # a plain str, also for an _Expanded one


def c_text(value: Any) -> str:
    """A non-empty single-line string (it may end up in a header or on a command line)."""
    text = c_str(value)
    if not text.strip():
        raise ValueError("must not be empty")
    if any(ch in text for ch in "\r\n\0"):
        raise ValueError("must not contain line breaks or NUL")
    return text


def c_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_type_name(value)}")
    return value


def c_int(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def conv(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_type_name(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ValueError(f"must be {bound}, got {value}")
        return value

    return conv


def c_duration(minimum: float = 0.0, positive: bool = False) -> Callable[[Any], float]:
    def conv(value: Any) -> float:
        seconds = parse_duration(value)
        if positive and seconds <= 0:
            raise ValueError("must be greater than 0")
        if seconds < minimum:
            raise ValueError(f"must be at least {format_duration(minimum)}")
        return seconds

    return conv


def c_size(value: Any) -> int:
    size = parse_size(value)
    if size < 1:
        raise ValueError("must be at least 1 byte")
    return size


def c_enum(*choices: str, lower: bool = False) -> Callable[[Any], str]:
    def conv(value: Any) -> str:
        text = c_str(value)
        if lower:
            text = text.lower()
        if text not in choices:
            options = ", ".join(choices)
            raise ValueError(f'"{value}" is not one of {options}{_suggest(text, choices)}')
        return text

    return conv


def _str_list(
    f: _File,
    table: Mapping[str, Any],
    key: str,
    path: KeyPath,
    item: Callable[[Any], str] = c_text,
) -> tuple[str, ...] | None:
    """A list of strings, each element checked (and reported) on its own path."""
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, list):
        f.err(path + (key,), f"expected an array of strings, got {_type_name(value)}")
        return None
    out: list[str] = []
    for i, element in enumerate(value):
        try:
            out.append(item(element))
        except ValueError as e:
            f.err(path + (key, i), str(e))
    return tuple(out)


def _names(
    f: _File,
    table: Mapping[str, Any],
    key: str,
    path: KeyPath,
    known: Mapping[str, Any],
    what: str,
) -> tuple[str, ...] | None:
    """A list of names that must exist in ``known``; duplicates dropped."""
    names = _str_list(f, table, key, path, c_str)
    if names is None:
        return None
    out: list[str] = []
    for i, name in enumerate(names):
        if name not in known:
            f.err(path + (key, i), f'unknown {what} "{name}" ({_configured(name, known, what)})')
        elif name not in out:
            out.append(name)
    return tuple(out)


_LISTED = 10


def _configured(name: str, known: Mapping[str, Any], what: str) -> str:
    """What a name of an unknown ``what`` could have been: the closest, and those that
    are configured (as the command line's errors list them; the first ten)."""
    if not known:
        return f"there are no [{what}s.*]"
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    names = list(known)
    listed = ", ".join(names[:_LISTED])
    if len(names) > _LISTED:
        listed += f" and {len(names) - _LISTED} more"
    return (f'did you mean "{close[0]}"? ' if close else "") + f"configured: {listed}"


# The control characters a TOML basic string's escapes make, most often out of a
# regex's own escape typed with one backslash ("/\bICBM\b/": two backspaces).
_TOML_ESCAPES = {
    "\b": ("b", "a backspace"),
    "\f": ("f", "a form feed"),
    "\r": ("r", "a carriage return"),
}
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
# in a plain term the others are white space, as in the text it searches
_CONTROL_NOT_SPACE = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x9f]")


def control_character(term: str) -> str | None:
    """What is wrong with a term holding a control character, naming it and what to
    write; None for none. A tab and a line break are white space in a plain term, and
    in a /regex/ what its own \\t and \\n are: those are kept. In a plain term any
    other is an error (it always was); in a /regex/ or ignore_text a warning: such a
    term hits nothing (or only that character), and a config that ran before the
    upgrade must go on running after it."""
    from feedwatch.match import is_regex_term

    m = (_CONTROL if is_regex_term(term) else _CONTROL_NOT_SPACE).search(term)
    if m is None:
        return None
    ch = m.group()
    escape = _TOML_ESCAPES.get(ch)
    if escape is None:
        how = "a control character: remove it"
    else:
        letter, name = escape
        how = f'{name}: in TOML "\\{letter}" is one; write \\\\{letter} for a regex\'s \\{letter}'
        literal = "".join(f"\\{_TOML_ESCAPES[c][0]}" if c in _TOML_ESCAPES else c for c in term)
        if "'" not in literal and not _CONTROL.search(literal) and "\n" not in literal:
            how += f", or use a literal string '{literal}'"
    return f"term {term!r} holds U+{ord(ch):04X} ({how})"


# /missile/i: JavaScript's or Perl's flags (not /r/worldnews: a path)
_FLAGGED = re.compile(r"/(.+)/([gimsuxyGIMSUXY]{1,4})", re.S)
_LIST_COMMA = re.compile(r",(?!\s)(?<!\d,(?=\d))")  # a comma as in a list: "hypersonic,glide*"


def misread_term(term: str, case_sensitive: bool) -> str | None:
    """What is most likely meant otherwise by a valid term that looks like a /regex/ and
    is not one (a flag after its closing slash, one slash only), or like a list of terms
    (a comma with no space after it, as `preview --keywords` takes a list, but "1,000"),
    naming the fix; None for none. A term is what it is written: only a warning."""
    from feedwatch.match import is_regex_term

    if is_regex_term(term):
        return None
    text = term.strip()
    m = _FLAGGED.fullmatch(text)
    if m:
        body, flags = m.groups()
        keep = "".join(
            dict.fromkeys(c for c in flags.lower() if c in "msx" or (c == "i" and case_sensitive))
        )
        fixed = f"/(?{keep}){body}/" if keep else f"/{body}/"
        return (
            f"term {term!r} is the plain text {text!r}, not a /regex/: nothing may follow its"
            f' closing "/"; write {fixed!r} (a flag goes inside it, as (?s) at its start;'
            " terms ignore case unless the rule is case_sensitive)"
        )
    if text.startswith("/") or text.endswith("/"):
        end = "starts" if text.startswith("/") else "ends"
        return (
            f'term {term!r} {end} with "/" but is no /regex/ (that starts and ends with "/"):'
            f" it hits the text {text!r}"
        )
    if _LIST_COMMA.search(text):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        return (
            f"term {term!r} is one term, its comma included: for several, write each apart,"
            f" {json.dumps(parts, ensure_ascii=False)}"
        )
    return None


def _validate_term(term: str, case_sensitive: bool) -> None:
    """Ask feedwatch.match; until it exists, at least compile ``/regex/`` terms."""
    try:
        from feedwatch.match import validate_term
    except ImportError:
        if len(term) >= 2 and term.startswith("/") and term.endswith("/"):
            try:
                re.compile(term[1:-1])
            except re.error as e:
                raise ValueError(f"invalid regular expression: {e}") from None
        return
    validate_term(term, case_sensitive)


def _terms(
    f: _File,
    table: Mapping[str, Any],
    key: str,
    path: KeyPath,
    case_sensitive: bool,
    where: str,
    warnings: list[str],
) -> tuple[str, ...]:
    """A rule's list of terms; ``warnings`` gets "FILE:LINE: key: WHERE: ..." for a term
    most likely meant otherwise (``misread_term``)."""

    def conv(value: Any) -> str:
        term = c_str(value)
        if not term.strip():
            raise ValueError("a term must not be empty")
        from feedwatch.match import is_regex_term

        problem = None if is_regex_term(term) else control_character(term)
        if problem:
            raise ValueError(problem)
        _validate_term(term, case_sensitive)
        return term

    terms = _str_list(f, table, key, path, conv) or ()
    if isinstance(table.get(key), list) and len(terms) == len(table[key]):  # all valid
        for i, term in enumerate(terms):
            problem = misread_term(term, case_sensitive)
            if problem:
                at = path + (key, i)
                warnings.append(
                    str(Problem(f.display, f.line_of(at), _format_path(at), f"{where}: {problem}"))
                )
    return terms


def _ignore_term(value: Any) -> str:
    from feedwatch.ignore_text import validate

    term = c_str(value)
    validate(term)
    return term


HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# What an HTTP header value may not hold: controls but the tab, and (ASCII only here,
# as httpx sends it) anything beyond ASCII.
HEADER_VALUE_BAD = re.compile(r"[^\t\x20-\x7e]")


def c_header_text(value: Any) -> str:
    """``c_text`` that can also be sent as a header value (``user_agent``)."""
    text = c_text(value)
    if HEADER_VALUE_BAD.search(text):
        raise ValueError(
            "must be printable ASCII: no control characters or letters beyond ASCII"
            " (it is sent as an HTTP header)"
        )
    return text


def _headers(
    f: _File, table: Mapping[str, Any], path: KeyPath
) -> tuple[tuple[str, str | Secret], ...]:
    if "headers" not in table:
        return ()
    value = table["headers"]
    if not isinstance(value, dict):
        f.err(path + ("headers",), f"expected a table of strings, got {_type_name(value)}")
        return ()
    out: list[tuple[str, str | Secret]] = []
    for name, raw in value.items():
        where = path + ("headers", name)
        if not HEADER_NAME.fullmatch(name):
            f.err(where, "not a valid HTTP header name")
            continue
        if not isinstance(raw, str):
            f.err(where, f"expected a string, got {_type_name(raw)}")
            continue
        if HEADER_VALUE_BAD.search(raw):
            # (the value itself is never quoted: it may be a token)
            f.err(
                where,
                "a header value must be printable ASCII: no line breaks, control"
                " characters or letters beyond ASCII (it could never be sent)",
            )
            continue
        out.append((name, Secret(str(raw)) if isinstance(raw, _Expanded) else raw))
    return tuple(out)


_WHITE_SPACE = re.compile(r"\s")


def _http_url(value: Any) -> str:
    url = c_str(value).strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    if _WHITE_SPACE.search(url):  # \s is str.isspace, code point for code point
        raise ValueError("a URL must not contain white space")
    return url


def _relative_to(base: Path, value: str, env: Mapping[str, str]) -> str:
    expanded = _expanduser(value, env)
    if os.path.isabs(expanded):
        return expanded
    return str(base / expanded)


# --------------------------------------------------------------------------
# The sections
# --------------------------------------------------------------------------

_SETTING_KEYS: dict[str, Callable[[Any], Any]] = {
    "interval": c_duration(minimum=1.0),
    "jitter": parse_jitter,
    "timeout": c_duration(positive=True),
    "user_agent": c_header_text,
    "max_body": c_size,
    "max_entries": c_int(1),
    "max_age": c_duration(),
    "first_poll": c_enum("baseline", "alert"),
    "notify_on": lambda v: v,  # checked element by element below
    "updates": c_enum("any", "content", "timestamp"),
    "id_policy": c_enum("auto", "guid", "link", "content"),
    "retention": c_duration(positive=True),
    "flood_limit": c_int(1),
    "stale_after": c_duration(),
    "duplicates": c_enum("alert", "skip"),
    "ignore_text": lambda v: v,  # checked element by element below
}

_GLOBAL_KEYS = tuple(
    "state include concurrency per_host give_up_after default_sinks metrics_listen"
    " shutdown_timeout log_format log_level parse_workers".split()
)
_FEED_KEYS = tuple(
    "name url tags sinks match keywords exclude headers allow_private enabled".split()
)
_RULE_KEYS = ("any", "all", "not", "fields", "case_sensitive", "sinks")

_SINK_TYPES = ("email", "webhook", "command", "jsonl", "console")
_SINK_KEYS = {
    "email": tuple(
        "host port security username password_env password_file from to timeout".split()
    ),
    "webhook": ("url", "format", "headers", "secret_env", "secret_file", "timeout"),
    "command": ("argv", "timeout"),
    "jsonl": ("path",),
    "console": (),
}
_DIGEST_TYPES = ("email", "webhook")
_SMTP_PORTS = {"starttls": 587, "tls": 465, "none": 25}


def _settings(
    f: _File, table: Mapping[str, Any], path: KeyPath, base: FeedSettings
) -> FeedSettings:
    changes: dict[str, Any] = {}
    for key, conv in _SETTING_KEYS.items():
        if key == "notify_on":
            kinds = _str_list(f, table, key, path, c_enum("new", "updated"))
            if kinds is not None:
                changes[key] = tuple(k for k in ("new", "updated") if k in kinds)
            continue
        if key == "ignore_text":
            terms = _str_list(f, table, key, path, _ignore_term)
            if terms is not None:
                changes[key] = tuple(dict.fromkeys(terms))
            continue
        value = _take(f, table, key, path, conv)
        if _ok(value):
            changes[key] = value
    return replace(base, **changes) if changes else base  # most feeds set none


def _table(f: _File, data: Mapping[str, Any], key: str, path: KeyPath) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        f.err(path + (key,), f"expected a table, got {_type_name(value)}")
        return {}
    return value


def _parse_workers(value: Any) -> int:
    """``"auto"`` (-1: one per CPU, at most 4), 0 (parse in a thread) or a process count."""
    if value == "auto":
        return -1
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'expected "auto" or an integer, got {_type_name(value)}')
    if not 0 <= value <= 64:
        raise ValueError(f'must be "auto" or between 0 and 64, got {value}')
    return value


def _metrics_listen(value: Any) -> str:
    text = c_str(value).strip()
    if not text:
        return ""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f'expected "host:port" (e.g. "127.0.0.1:9464") or "", got "{text}"')
    return text


@dataclass
class _Defined:
    """Where a named rule/sink/feed was defined, for duplicate messages."""

    file: _File
    path: KeyPath

    def where(self) -> str:
        line = self.file.line_of(self.path)
        return f"{self.file.display}:{line}" if line is not None else self.file.display


class _Loader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.files: list[_File] = []
        self.emptied_rules: dict[str, str] = {}  # Config.emptied_rules
        self.jitter_places: dict[str, str] = {}  # Config.jitter_places
        self.term_warnings: list[str] = []  # Config.term_warnings

    # -- files --------------------------------------------------------------

    def read(self, path: Path) -> _File:
        f = _File(path=path, display=str(path), index=len(self.files))
        self.files.append(f)
        try:
            # utf-8-sig: a byte-order mark (Windows' Notepad writes one) is not an error
            text = path.read_bytes().decode("utf-8-sig")
        except OSError as e:
            f.err((), f"cannot read: {e.strerror or e}")
            return f
        except UnicodeDecodeError as e:
            f.err((), f"not UTF-8 text (byte {e.start})")
            return f
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            message = str(e)
            m = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", message)
            line = None
            if m:
                line = int(m.group(1))
                message = message[: m.start()] + f" (column {m.group(2)})"
            elif m := re.search(r"\s*\(at end of document\)\s*$", message):
                line = max(1, len(text.splitlines()))
                message = message[: m.start()] + " (at end of file)"
            f.problems.append(
                (f.index, line or 0, Problem(f.display, line, "", f"TOML syntax error: {message}"))
            )
            return f
        f.text = text
        f.data = _expand_tree(f, data, (), self.env)
        return f

    def problems(self) -> list[Problem]:
        collected = [p for f in self.files for p in f.problems]
        collected.sort(key=lambda item: (item[0], item[1]))
        return [replace(p, message=redact(p.message)) for _, _, p in collected]

    # -- [rules.*] ---------------------------------------------------------

    def rule(self, f: _File, name: str, table: Any, sinks: Mapping[str, Any]) -> Rule | None:
        path: KeyPath = ("rules", name)
        if not isinstance(table, dict):
            f.err(path, f"expected a table ([rules.{name}]), got {_type_name(table)}")
            return None
        _check_keys(f, table, _RULE_KEYS, path)
        case = _take(f, table, "case_sensitive", path, c_bool)
        case_sensitive = bool(case) if _ok(case) else False
        where, notes = f'rule "{name}"', self.term_warnings
        any_ = _terms(f, table, "any", path, case_sensitive, where, notes)
        all_ = _terms(f, table, "all", path, case_sensitive, where, notes)
        not_ = _terms(f, table, "not", path, case_sensitive, where, notes)
        typo = any(k not in _RULE_KEYS for k in table)  # "anyy": that message is enough
        if not typo and not any(k in table for k in ("any", "all", "not")):
            f.err(
                path,
                "an empty rule (it would match every entry): give at least one term in"
                " any, all or not",
            )
        fields = _str_list(f, table, "fields", path, c_enum(*RULE_FIELDS))
        if table.get("fields") == []:
            f.err(path + ("fields",), f"must not be empty (of: {' '.join(RULE_FIELDS)})")
        rule_sinks = _names(f, table, "sinks", path, sinks, "sink") or ()
        kwargs: dict[str, Any] = {}
        if fields:
            kwargs["fields"] = tuple(dict.fromkeys(fields))
        return Rule(
            name=name,
            any=any_,
            all=all_,
            not_=not_,
            case_sensitive=case_sensitive,
            sinks=rule_sinks,
            **kwargs,
        )

    # -- [sinks.*] ---------------------------------------------------------

    def sink(self, f: _File, name: str, table: Any) -> SinkConfig | None:
        path: KeyPath = ("sinks", name)
        if not isinstance(table, dict):
            f.err(path, f"expected a table ([sinks.{name}]), got {_type_name(table)}")
            return None
        if "type" not in table:
            f.err(path, f"missing key type (one of {', '.join(_SINK_TYPES)})")
            return None
        kind = _take(f, table, "type", path, c_enum(*_SINK_TYPES))
        if not _ok(kind):
            return None
        allowed = ("type", *_SINK_KEYS[kind])
        digest = 0.0
        if "digest" in table:
            if kind in _DIGEST_TYPES:
                value = _take(f, table, "digest", path, c_duration())
                digest = value if _ok(value) else 0.0
            else:
                f.err(path + ("digest",), f"digest is only for email and webhook sinks, not {kind}")
        _check_keys(f, {k: v for k, v in table.items() if k != "digest"}, allowed, path)
        timeout = _take(f, table, "timeout", path, c_duration(positive=True))
        timeout = timeout if _ok(timeout) else 30.0
        options: dict[str, Any]
        if kind == "email":
            options = self.email(f, table, path, timeout)
        elif kind == "webhook":
            options = self.webhook(f, table, path, timeout)
        elif kind == "command":
            argv = self.argv(f, table, path)
            options = {"argv": argv or (), "timeout": timeout}
        elif kind == "jsonl":
            target = _take(f, table, "path", path, c_text)
            if target is None:
                f.err(path, 'missing key path (a file, or "-" for stdout)')
            if _ok(target) and target != "-":
                target = _relative_to(f.path.parent, target, self.env)
            options = {"path": target if _ok(target) else ""}
        else:
            options = {}
        return SinkConfig(name=name, type=cast(_SinkType, kind), digest=digest, options=options)

    def argv(self, f: _File, table: Mapping[str, Any], path: KeyPath) -> tuple[str, ...] | None:
        """A command sink's argv; a program with a slash in it relative to the config
        file's directory (as a jsonl path is: not to wherever the daemon was started,
        ``/`` under systemd; when it is not there but is in the working directory, where
        releases before looked, that one), a bare name looked up on PATH when it runs."""
        if "argv" not in table:
            f.err(path, "missing key argv (the program and its arguments, as an array)")
            return None
        raw = table["argv"]
        if isinstance(raw, str):
            try:
                words = shlex.split(raw) or ["program", "argument"]
            except ValueError:  # an unclosed quote
                words = ["program", "argument"]
            array = ", ".join(json.dumps(w, ensure_ascii=False) for w in words)
            f.err(
                path + ("argv",),
                f"expected an array of strings, got a string (no shell splits it: write"
                f" argv = [{array}])",
            )
            return None
        argv = _str_list(f, table, "argv", path, c_str)
        if argv is None:
            return None
        if not argv and not raw:
            f.err(path + ("argv",), "must not be empty")
        elif argv and not argv[0].strip():
            f.err(path + ("argv", 0), "the program must not be empty")
        elif argv and "/" in argv[0]:
            program = _relative_to(f.path.parent.absolute(), argv[0], self.env)
            if not os.path.exists(program) and os.path.exists(argv[0]):
                # where releases before looked (the working directory): a cron line that
                # runs from the program's directory goes on working after the upgrade
                program = os.path.abspath(argv[0])
            argv = (program, *argv[1:])
        return argv

    def _env_secret(
        self, f: _File, table: Mapping[str, Any], key: str, path: KeyPath
    ) -> Secret | None:
        var = _take(f, table, key, path, c_text)
        if not _ok(var):
            return None
        if var not in self.env:
            f.err(path + (key,), f"environment variable {var} is not set")
            return None
        value = self.env[var]
        if not value:
            f.err(path + (key,), f"environment variable {var} is empty")
            return None
        register_secret(value)
        return Secret(value)

    def _file_secret(
        self, f: _File, table: Mapping[str, Any], key: str, path: KeyPath
    ) -> Secret | None:
        name = _take(f, table, key, path, c_text)
        if not _ok(name):
            return None
        expanded = _expanduser(name, self.env)
        if os.path.isabs(expanded):
            target = Path(expanded)
        elif self.env.get("CREDENTIALS_DIRECTORY"):
            target = Path(self.env["CREDENTIALS_DIRECTORY"]) / expanded
        else:
            target = f.path.parent / expanded
        try:
            value = target.read_text(encoding="utf-8")
        except OSError as e:
            f.err(path + (key,), f"cannot read {target}: {e.strerror or e}")
            return None
        except UnicodeDecodeError:
            f.err(path + (key,), f"{target} is not UTF-8 text")
            return None
        if value.endswith("\n"):
            value = value[:-1]
            if value.endswith("\r"):
                value = value[:-1]
        if not value:
            f.err(path + (key,), f"{target} is empty")
            return None
        register_secret(value)
        return Secret(value)

    def email(
        self, f: _File, table: Mapping[str, Any], path: KeyPath, timeout: float
    ) -> dict[str, Any]:
        host = _take(f, table, "host", path, c_text)
        if host is None:
            f.err(path, "missing key host (the SMTP server)")
        security = _take(f, table, "security", path, c_enum("starttls", "tls", "none"))
        security = security if _ok(security) else "starttls"
        port = _take(f, table, "port", path, c_int(1, 65535))
        port = port if _ok(port) else _SMTP_PORTS[security]
        username = _take(f, table, "username", path, c_text)
        password: Secret | None = None
        if "password_env" in table and "password_file" in table:
            f.err(path + ("password_file",), "give password_env or password_file, not both")
        elif "password_env" in table:
            password = self._env_secret(f, table, "password_env", path)
        elif "password_file" in table:
            password = self._file_secret(f, table, "password_file", path)
        has_password = "password_env" in table or "password_file" in table
        if has_password and username is None:
            f.err(path, "a password needs a username")
        if username is not None and not has_password:
            f.err(path, "username is set but no password_env or password_file")
        sender = _take(f, table, "from", path, c_text)
        if sender is None:
            f.err(path, 'missing key from (e.g. "feedwatch <alerts@example.org>")')
        elif _ok(sender):
            try:
                parse_mailbox(sender)
            except SeveralAddresses:
                f.err(
                    path + ("from",),
                    'more than one address: from is the one sender (from = "feedwatch'
                    ' <alerts@example.org>"); the recipients go in to',
                )
            except ValueError as exc:
                f.err(path + ("from",), str(exc))
        to: tuple[str, ...] = ()
        if "to" not in table:
            f.err(path, "missing key to (an array of addresses)")
        else:
            raw = table["to"]
            if isinstance(raw, str):
                raw = [raw]
            checked = _str_list(f, {"to": raw}, "to", path) or ()
            for i, address in enumerate(checked):
                try:
                    parse_mailbox(address)
                except ValueError as exc:
                    f.err(path + ("to", i), str(exc))
            if isinstance(raw, list) and not raw:
                f.err(path + ("to",), "must name at least one address")
            to = checked
        return {
            "host": host if _ok(host) else "",
            "port": port,
            "security": security,
            "username": username if _ok(username) else None,
            "password": password,
            "from_": sender if _ok(sender) else "",
            "to": to,
            "timeout": timeout,
        }

    def webhook(
        self, f: _File, table: Mapping[str, Any], path: KeyPath, timeout: float
    ) -> dict[str, Any]:
        url = _take(f, table, "url", path, _http_url)
        if url is None:
            f.err(path, "missing key url")
        if _ok(url):
            register_secret(url)
        fmt = _take(f, table, "format", path, c_enum("json", "slack", "discord", "ntfy", "teams"))
        if "secret_env" in table and "secret_file" in table:
            f.err(path + ("secret_file",), "give secret_env or secret_file, not both")
            secret = None
        elif "secret_file" in table:
            secret = self._file_secret(f, table, "secret_file", path)
        else:
            secret = (
                self._env_secret(f, table, "secret_env", path) if "secret_env" in table else None
            )
        return {
            "url": Secret(url if _ok(url) else ""),
            "format": fmt if _ok(fmt) else "json",
            "headers": _headers(f, table, path),
            "secret": secret,
            "timeout": timeout,
        }

    # -- [[feeds]] ---------------------------------------------------------

    def feed(
        self,
        f: _File,
        index: int,
        table: Any,
        defaults: FeedSettings,
        rules: Mapping[str, Rule],
        sinks: Mapping[str, SinkConfig],
        default_sinks: tuple[str, ...],
    ) -> tuple[FeedConfig, bool] | None:
        """The feed, and whether its name was defaulted from the URL."""
        path: KeyPath = ("feeds", index)
        if not isinstance(table, dict):
            f.err(path, f"expected a table ([[feeds]]), got {_type_name(table)}")
            return None
        for key in table:
            if key in _GLOBAL_KEYS:
                f.report(
                    path + (key,),
                    "a [feedwatch] key (for the whole daemon, not one feed): move it under"
                    " [feedwatch]",
                )
        own_keys = {k: v for k, v in table.items() if k not in _GLOBAL_KEYS}
        _check_keys(f, own_keys, (*_FEED_KEYS, *_SETTING_KEYS), path)
        url = _take(f, table, "url", path, _http_url)
        if url is None:
            f.err(path, "missing key url")
        if _ok(url) and "@" in url:  # no user-info without one
            password = urlsplit(url).password
            if password:
                register_secret(password)
        name = _take(f, table, "name", path, c_text)
        defaulted = name is None
        if name is None and _ok(url):
            name = _default_feed_name(url)
        elif _ok(name) and name != name.strip():
            f.err(path + ("name",), "must not start or end with white space")
        settings = _settings(f, table, path, defaults)
        if settings.jitter.longer_than(settings.interval) and _ok(name):
            # the feed's own key that makes it (config.jitter_over_interval says it)
            own = "jitter" if settings.jitter != defaults.jitter else "interval"
            if own in table:
                self.jitter_places[name] = _place(f, path + (own,))
        tags = _str_list(f, table, "tags", path) or ()
        own_sinks = _names(f, table, "sinks", path, sinks, "sink")
        match = _names(f, table, "match", path, rules, "rule") or ()
        notes = self.term_warnings
        keywords = _terms(f, table, "keywords", path, False, f'keywords of feed "{name}"', notes)
        exclude = _terms(f, table, "exclude", path, False, f'exclude of feed "{name}"', notes)
        feed_rules = [rules[r] for r in match]
        if keywords or exclude:
            if "keywords" in match:
                # both would be "keywords" in `matched`, and routing by rule name would
                # take the inline one's sinks (none) for the named one's
                f.err(
                    path + ("match",),
                    'names the rule "keywords", and this feed\'s keywords/exclude make an'
                    " inline rule of that name: rename [rules.keywords]",
                )
            feed_rules.append(Rule(name="keywords", any=keywords, not_=exclude))
        allow_private = _take(f, table, "allow_private", path, c_bool)
        enabled = _take(f, table, "enabled", path, c_bool)
        if own_sinks:
            resolved = own_sinks
        elif default_sinks:
            resolved = default_sinks
        else:
            resolved = tuple(sinks)
        if not _ok(url) or not _ok(name):
            return None
        emptied = [k for k in ("match", "keywords", "exclude") if table.get(k) == []]
        if emptied and not feed_rules:
            # as if not given: every entry alerts. Most likely a list emptied by mistake;
            # a warning, not an error (a config that ran before the upgrade still runs)
            lists = [f"{k} = []" for k in emptied]
            said = f"{', '.join(lists[:-1])} and {lists[-1]} are" if lists[1:] else f"{lists[0]} is"
            key = path + (emptied[0],)
            self.emptied_rules[name] = str(
                Problem(
                    f.display,
                    f.line_of(key),
                    _format_path(key),
                    f'feed "{name}": {said} no rule, so it alerts on every entry; to say'
                    f" that on purpose, remove the key{'s' if lists[1:] else ''} (a feed"
                    " without match, keywords or exclude alerts on every entry)",
                )
            )
        feed = FeedConfig(
            name=name,
            url=url,
            settings=settings,
            tags=tags,
            sinks=resolved,
            rules=tuple(feed_rules),
            headers=_headers(f, table, path),
            allow_private=allow_private if _ok(allow_private) else False,
            enabled=enabled if _ok(enabled) else True,
        )
        return feed, defaulted


def _default_feed_name(url: str) -> str:
    """``https://www.example.org/rss/news/`` -> ``www.example.org/rss/news``."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.port:
        host = f"{host}:{parts.port}"
    return host + parts.path.rstrip("/")


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------

_INCLUDED_SECTIONS = ("feeds", "rules", "sinks")


def _has_magic(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _include_problem(match: str, *, named: bool) -> str | None:
    """What is wrong with an include ``match`` (a path named, or a glob's match), None if
    nothing is seen here (a file it cannot stat is read, and says why it cannot be), ""
    for a directory a glob matched (passed over)."""
    try:
        st = os.stat(match)
    except FileNotFoundError:
        if os.path.islink(match):
            return f"{match}: a symlink to a file that does not exist"
        return f"no such file: {match}" if named else None
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return f"{match}: a directory, not a config file" if named else ""
    if not stat.S_ISREG(st.st_mode):
        return f"{match}: not a regular file"
    return None


def _unreadable_glob_dirs(pattern: str) -> list[tuple[str, str]]:
    """The directories ``glob`` had to read for ``pattern`` and could not (it passes over
    them without a word, as if they held nothing), with why: (directory, reason). One that
    does not exist is not among them: the glob matches nothing there. A directory it
    lists but cannot enter, at the end of the pattern, is not among them either: its
    matches are read, and say why they cannot be."""
    parts = Path(pattern).parts
    found: dict[str, str] = {}
    looked: set[tuple[str, str, bool]] = set()
    first_magic = next((j for j, part in enumerate(parts) if _has_magic(part)), len(parts))
    for j in range(first_magic, len(parts)):
        part = parts[j]
        magic = _has_magic(part)
        # glob lists a directory for a wildcard, and goes into what it found there when
        # more of the pattern follows (or below it, for a "**", which reads every level)
        enter = part == "**" or j < len(parts) - 1
        upto = parts[: j + 1] if part == "**" else parts[:j]
        prefix = os.path.join(*upto) if upto else os.curdir
        dirs = (
            glob.glob(os.path.join(prefix, ""), recursive=True) if _has_magic(prefix) else [prefix]
        )
        for d in dirs:
            d = d.rstrip(os.sep) or d
            key = (d, "" if magic else part, enter)
            if key in looked:
                continue
            looked.add(key)
            try:
                if not magic:
                    os.lstat(os.path.join(d, part))
                    continue
                with os.scandir(d) as entries:
                    for _ in entries:
                        pass
                if enter:
                    os.stat(os.path.join(d, os.curdir))  # can go into it (mode x)
            except (FileNotFoundError, NotADirectoryError):
                pass
            except OSError as e:
                found.setdefault(d, e.strerror or str(e))
    return list(found.items())


def load_config(
    path: Path | str,
    *,
    env: Mapping[str, str] = os.environ,
    state_override: str | None = None,
) -> Config:
    """Read, expand and check ``path`` and its includes; raise ``ConfigError`` with every problem."""
    path = Path(path)
    loader = _Loader(env)
    main = loader.read(path)
    data = main.data
    if main.problems and not data:
        raise ConfigError(loader.problems())

    for key in data:
        if key in _SETTING_KEYS or key in _GLOBAL_KEYS:
            main.err((key,), "a [feedwatch] key at the top level: move it under [feedwatch]")
        elif key not in ("feedwatch", *_INCLUDED_SECTIONS):
            main.err((key,), "unknown key" + _suggest(key, ("feedwatch", *_INCLUDED_SECTIONS)))
    fw = _table(main, data, "feedwatch", ())
    fw_path: KeyPath = ("feedwatch",)
    _check_keys(main, fw, (*_GLOBAL_KEYS, *_SETTING_KEYS), fw_path)

    # Includes first: rules and sinks from every file are known before anything refers to them.
    includes: list[Path] = []
    patterns = _str_list(main, fw, "include", fw_path) or ()
    seen = {path.resolve()}
    for i, pattern in enumerate(patterns):
        full = _relative_to(path.parent, pattern, env)
        is_glob = _has_magic(pattern)
        if is_glob:
            matches = sorted(glob.glob(full, recursive=True))
            for directory, reason in _unreadable_glob_dirs(full):
                main.err(
                    fw_path + ("include", i), f"{directory}: cannot read the directory: {reason}"
                )
        else:
            matches = [full]
        for match in matches:
            problem = _include_problem(match, named=not is_glob)
            if problem == "":  # a directory a glob matched: not a config file it names
                continue
            if problem is not None:
                main.err(fw_path + ("include", i), problem)
                continue
            resolved = Path(match).resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            includes.append(Path(match))
    files = [main] + [loader.read(p) for p in includes]
    for f in files[1:]:
        for key in f.data:
            if key not in _INCLUDED_SECTIONS:
                f.err(
                    (key,),
                    "an included file may hold only [[feeds]], [rules.*] and [sinks.*]"
                    + _suggest(key, _INCLUDED_SECTIONS),
                )

    # Sinks, from every file, in order.
    sinks: dict[str, SinkConfig] = {}
    sink_where: dict[str, _Defined] = {}
    for f in files:
        for name, table in _table(f, f.data, "sinks", ()).items():
            if name in sink_where:
                f.err(
                    ("sinks", name),
                    f'duplicate sink "{name}" (first defined at {sink_where[name].where()})',
                )
                continue
            sink_where[name] = _Defined(f, ("sinks", name))
            sink = loader.sink(f, name, table)
            if sink is not None:
                sinks[name] = sink
    # A sink that failed validation still exists as a name: don't cascade "unknown sink".
    known_sinks: dict[str, Any] = dict.fromkeys(sink_where)

    # Rules, from every file.
    rules: dict[str, Rule] = {}
    rule_where: dict[str, _Defined] = {}
    for f in files:
        for name, table in _table(f, f.data, "rules", ()).items():
            if name in rule_where:
                f.err(
                    ("rules", name),
                    f'duplicate rule "{name}" (first defined at {rule_where[name].where()})',
                )
                continue
            rule_where[name] = _Defined(f, ("rules", name))
            rule = loader.rule(f, name, table, known_sinks)
            if rule is not None:
                rules[name] = rule

    # [feedwatch]
    defaults = _settings(main, fw, fw_path, FeedSettings(user_agent=DEFAULT_USER_AGENT))
    state = _take(main, fw, "state", fw_path, c_text)
    if state_override:
        state = _expanduser(state_override, env)
        if re.match(r"(?i)postgres(ql)?://", state):
            for secret in pgurl.secrets(state):
                register_secret(secret)
            why = pgurl.problem(state)
            if why:
                message = f"not a valid PostgreSQL URL: {why}"
                main.problems.append((main.index, 0, Problem("", None, "--state", message)))
    elif _ok(state):
        if re.match(r"(?i)postgres(ql)?://", state):
            for secret in pgurl.secrets(state):  # first: nothing may quote it before
                register_secret(secret)
            why = pgurl.problem(state)
            if why:
                main.err(fw_path + ("state",), f"not a valid PostgreSQL URL: {why}")
            # (asked, not imported: psycopg takes 70 ms to import)
            if any(importlib.util.find_spec(m) is None for m in ("psycopg", "psycopg_pool")):
                main.err(
                    fw_path + ("state",),
                    "PostgreSQL state needs the psycopg driver, which is not installed:"
                    " pip install 'feedwatch[postgres]' (psycopg[binary] and psycopg-pool)",
                )
        else:
            state = _relative_to(path.parent, state, env)
    else:
        state = default_state_path(env)
    default_sinks = _names(main, fw, "default_sinks", fw_path, known_sinks, "sink") or ()
    concurrency = _take(main, fw, "concurrency", fw_path, c_int(1))
    per_host = _take(main, fw, "per_host", fw_path, c_int(1))
    # "0s": never give up (pacing.is_given_up), as docs/alerts.md says
    give_up_after = _take(main, fw, "give_up_after", fw_path, c_duration())
    metrics_listen = _take(main, fw, "metrics_listen", fw_path, _metrics_listen)
    parse_workers = _take(main, fw, "parse_workers", fw_path, _parse_workers)
    shutdown_timeout = _take(main, fw, "shutdown_timeout", fw_path, c_duration())
    log_format = _take(main, fw, "log_format", fw_path, c_enum("auto", "console", "json"))
    log_level = _take(
        main, fw, "log_level", fw_path, c_enum("debug", "info", "warning", "error", lower=True)
    )

    # Feeds, from every file.
    feeds: list[FeedConfig] = []
    feed_where: dict[str, tuple[_Defined, bool]] = {}
    for f in files:
        raw_feeds = f.data.get("feeds", [])
        if not isinstance(raw_feeds, list):
            f.err(("feeds",), "must be an array of tables: write [[feeds]], not [feeds]")
            continue
        for index, table in enumerate(raw_feeds):
            built = loader.feed(f, index, table, defaults, rules, sinks, default_sinks or ())
            if built is not None:
                name, defaulted = built[0].name, built[1]
            else:
                # a feed with other problems still holds the name it gives, so that a
                # duplicate of it is reported in the same run ("every problem at once")
                given = table.get("name") if isinstance(table, dict) else None
                if not (isinstance(given, str) and given and given == given.strip()):
                    continue
                name, defaulted = given, False
            if name in feed_where:
                first, first_defaulted = feed_where[name]
                hint = ""
                if defaulted or first_defaulted:
                    hint = " (a name defaults to the URL's host and path: set name = ... on one)"
                f.err(
                    ("feeds", index, "name") if not defaulted else ("feeds", index),
                    f'duplicate feed name "{name}": also {_format_path(first.path)} '
                    f"at {first.where()}{hint}",
                )
                continue
            feed_where[name] = (_Defined(f, ("feeds", index)), defaulted)
            if built is not None:
                feeds.append(built[0])

    problems = loader.problems()
    if problems:
        raise ConfigError(problems)
    if "jitter" in fw and any(
        feed.settings.jitter == defaults.jitter
        and feed.settings.jitter.longer_than(feed.settings.interval)
        for feed in feeds
    ):
        loader.jitter_places[""] = _place(main, fw_path + ("jitter",))
    return Config(
        path=path,
        state=state,
        feeds=tuple(feeds),
        rules=rules,
        sinks=sinks,
        defaults=defaults,
        concurrency=concurrency if _ok(concurrency) else 16,
        per_host=per_host if _ok(per_host) else 2,
        give_up_after=give_up_after if _ok(give_up_after) else 3 * 86400.0,
        default_sinks=default_sinks,
        metrics_listen=metrics_listen if _ok(metrics_listen) else "",
        parse_workers=parse_workers if _ok(parse_workers) else -1,
        shutdown_timeout=shutdown_timeout if _ok(shutdown_timeout) else 10.0,
        log_format=cast(_LogFormat, log_format if _ok(log_format) else "auto"),
        log_level=log_level if _ok(log_level) else "info",
        includes=tuple(includes),
        emptied_rules=loader.emptied_rules,
        jitter_places=loader.jitter_places,
        term_warnings=tuple(loader.term_warnings),
    )


def _place(f: _File, key: KeyPath) -> str:
    """``FILE:LINE: key`` of a key, as a problem there starts."""
    return str(Problem(f.display, f.line_of(key), _format_path(key), ""))


def jitter_over_interval(config: Config) -> list[str]:
    """Warnings (not errors) for enabled feeds whose jitter is a duration longer than
    their interval: it is cut to the interval. Often a global ``jitter`` that suits the
    other feeds, so it is legitimate, but the feed's polls land anywhere from at once
    to two intervals apart. Each is said once, where it comes from (``FILE:LINE`` from
    ``Config.jitter_places``): [feedwatch]'s jitter over [feedwatch]'s interval is one
    warning at that jitter key for every feed it concerns; a feed's own jitter, at that
    key; [feedwatch]'s jitter over a feed's own shorter interval, at that interval."""
    places = config.jitter_places

    def at(key: str, text: str) -> str:
        return f"{places[key]}: {text}" if key in places else text

    out: list[str] = []
    inherited: list[str] = []  # feeds on [feedwatch]'s jitter and interval
    defaults = config.defaults
    for feed in config.feeds:
        s = feed.settings
        if not (feed.enabled and s.jitter.longer_than(s.interval)):
            continue
        jitter, interval = format_duration(s.jitter.seconds), format_duration(s.interval)
        if s.jitter != defaults.jitter:
            out.append(
                at(
                    feed.name,
                    f'feed "{feed.name}": its jitter {jitter} is longer than its interval'
                    f" {interval}; it is cut to the interval (set a shorter jitter, or a"
                    " percentage, on the feed)",
                )
            )
        elif s.interval != defaults.interval:
            out.append(
                at(
                    feed.name,
                    f'feed "{feed.name}": its interval {interval} is shorter than the jitter'
                    f" {jitter} it takes from [feedwatch]; the jitter is cut to the interval"
                    " (set a shorter jitter, or a percentage, on the feed or in [feedwatch])",
                )
            )
        else:
            inherited.append(feed.name)
    if inherited:
        quoted = [f'"{name}"' for name in inherited]
        if len(quoted) == 1:
            which = f"feed {quoted[0]}"
        elif len(quoted) <= 5:
            which = f"feeds {', '.join(quoted[:-1])} and {quoted[-1]}"
        else:
            which = f"{len(quoted)} feeds ({', '.join(quoted[:3])} and {len(quoted) - 3} more)"
        jitter = format_duration(defaults.jitter.seconds)
        interval = format_duration(defaults.interval)
        out.insert(
            0,
            at(
                "",
                f"jitter {jitter} is longer than the interval {interval} of {which}; it is"
                " cut to the interval for them (set a shorter jitter, or a percentage such"
                ' as "10%", in [feedwatch], or one on those feeds)',
            ),
        )
    return out


def same_url_feeds(config: Config) -> list[str]:
    """Warnings (not errors) for enabled feeds that poll one URL (tracking parameters,
    the case of the host and http/https aside): each alerts every story, and the server
    is asked twice. Often an OPML import over a hand-written config; on purpose, two
    feeds of one URL differ in rules or sinks, and ``duplicates = "skip"`` on both
    says so (then nothing is said)."""
    from feedwatch.identity import loose_link, normalize_link

    first: dict[str | None, FeedConfig] = {}
    out: list[str] = []
    for feed in config.feeds:
        if not feed.enabled:
            continue
        key = loose_link(normalize_link(feed.url))
        other = first.setdefault(key, feed)
        if other is feed:
            continue
        if feed.settings.duplicates == "skip" and other.settings.duplicates == "skip":
            continue
        out.append(
            f'feeds "{other.name}" and "{feed.name}" poll the same URL'
            f" ({redact(feed.url)}): each alerts every story it carries; remove one,"
            ' or set duplicates = "skip" on both if they differ on purpose'
        )
    return out


def rule_warnings(config: Config) -> list[str]:
    """Warnings (not errors) for feeds whose rules or ``notify_on`` cannot do what was
    most likely meant: ``exclude`` without ``keywords`` beside ``match`` rules (the
    inline rule it makes has only ``not`` terms, so every entry without them matches
    it; alone, that is the documented "everything but": not warned), ``notify_on
    = []`` (no new or updated entry ever alerts), a rule of empty lists (``any =
    []``: it matches every entry; an error would stop at the upgrade a config that ran
    before), a feed's ``keywords = []`` (or ``match``, ``exclude``) that leaves it no
    rule (it alerts on every entry, as without the key: ``Config.emptied_rules``), and
    a term holding a control character (TOML's ``"\\b"`` in a regex: it hits
    nothing), named where it is written: [feedwatch]'s ignore_text, not a feed's; and a
    term that looks like a /regex/ or a list of terms and is not (``misread_term``:
    ``Config.term_warnings``)."""
    out: list[str] = []
    for name, rule in config.rules.items():
        if not (rule.any or rule.all or rule.not_):  # `any = []`: `[rules.x]` alone is an error
            out.append(
                f'rule "{name}": an empty rule (it would match every entry): give at least one'
                " term in any, all or not"
            )
    seen: set[tuple[str, str]] = set()
    # where a term is written: a [rules.NAME] table, or a feed's own keywords/exclude
    # (its inline rule, named "keywords" like no table the user wrote)
    placed = [(rule, None) for rule in config.rules.values()] + [
        (rule, feed.name)
        for feed in config.feeds
        for rule in feed.rules
        if rule is not config.rules.get(rule.name)
    ]
    for rule, feed_name in placed:
        for key, terms in (("keywords", (*rule.any, *rule.all)), ("exclude", rule.not_)):
            where = f'rule "{rule.name}"' if feed_name is None else f'{key} of feed "{feed_name}"'
            for term in terms:
                problem = control_character(term)
                if problem and (where, term) not in seen:
                    seen.add((where, term))
                    out.append(f"{where}: {problem}")
    for term in config.defaults.ignore_text:
        problem = control_character(term)
        if problem:
            out.append(f"ignore_text of [feedwatch]: {problem}")
    for feed in config.feeds:
        # a feed's own ignore_text replaces [feedwatch]'s; without one, the feed holds
        # [feedwatch]'s tuple itself (_settings), named above
        if feed.settings.ignore_text is not config.defaults.ignore_text:
            for term in feed.settings.ignore_text:
                problem = control_character(term)
                if problem:
                    out.append(f'ignore_text of feed "{feed.name}": {problem}')
        inline = feed.rules[-1] if feed.rules else None
        if (
            inline is not None
            and len(feed.rules) > 1
            and inline.name == "keywords"
            and inline is not config.rules.get("keywords")  # the feed's keywords/exclude
            and not inline.any
            and inline.not_
        ):
            out.append(
                f'feed "{feed.name}": exclude without keywords is a rule of its own with only'
                " `not` terms: every entry without those words matches it, whatever the match"
                " rules say (put the words in the match rules' `not`, or add keywords)"
            )
        if not feed.settings.notify_on:
            out.append(
                f'feed "{feed.name}": notify_on = [] alerts no new or updated entry (only'
                ' flood and stale notices): add "new", "updated" or both'
            )
        emptied = config.emptied_rules.get(feed.name)
        if emptied:
            out.append(emptied)
    out.extend(config.term_warnings)
    return out
