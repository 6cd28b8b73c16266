"""The docs tell the truth: every TOML example loads, every matching example matches as
shown, every config key is documented, every message quoted for config errors is the one
`feedwatch validate` prints, and every relative link resolves.

A ```toml block preceded by ``<!-- fragment -->`` is an excerpt (a table without its
required keys): it is validated after those keys are filled in, so every key it does
show must still be right.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from feedwatch import config as config_module
from feedwatch.config import ConfigError, load_config
from feedwatch.match import compile_rule, evaluate
from feedwatch.model import Rule
from feedwatch.opml import toml_string
from feedwatch.testing import entry
from tests.helpers import run_feedwatch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)\s*$")


@dataclass
class Block:
    file: str
    line: int
    lang: str
    text: str
    marker: str | None  # the <!-- ... --> comment just before the fence, if any

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def blocks(path: Path) -> list[Block]:
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m.group("indent"), m.group("lang"), i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        prev = [x.strip() for x in lines[max(0, start - 2) : start] if x.strip()]
        marker = prev[-1] if prev and prev[-1].startswith("<!--") else None
        out.append(Block(path.name, start + 1, lang, "\n".join(body) + "\n", marker))
        i += 1
    return out


DOC_FILES = sorted(DOCS.glob("*.md"))
TOML_BLOCKS = [b for f in DOC_FILES for b in blocks(f) if b.lang == "toml"]


# --------------------------------------------------------------------------
# TOML examples
# --------------------------------------------------------------------------

_REQUIRED = {
    "email": {"host": "smtp.example.org", "from": "a@example.org", "to": ["b@example.org"]},
    "webhook": {"url": "https://hooks.example.org/x"},
    "command": {"argv": ["/bin/true"]},
    "jsonl": {"path": "alerts.jsonl"},
}


def _fill_fragment(data: dict[str, Any]) -> dict[str, Any]:
    for sink in (data.get("sinks") or {}).values():
        for key, value in _REQUIRED.get(sink.get("type", ""), {}).items():
            sink.setdefault(key, value)
    for feed in data.get("feeds") or []:
        feed.setdefault("url", "https://example.org/feed.xml")
    return data


def _dump(data: dict[str, Any]) -> str:
    """Enough of a TOML writer for config examples (tables, arrays of tables, scalars)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return toml_string(v.replace("$", "$$"))
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{toml_string(k)} = {value(x)}" for k, x in v.items()) + "}"
        raise TypeError(type(v))

    def table(prefix: str, t: dict[str, Any], header: str | None) -> list[str]:
        lines = [header] if header else []
        nested: list[tuple[str, Any]] = []
        for k, v in t.items():
            if isinstance(v, dict) and k != "headers":
                nested.append((k, v))
            elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                nested.append((k, v))
            else:
                lines.append(f"{toml_string(k)} = {value(v)}")
        for k, v in nested:
            name = f"{prefix}.{toml_string(k)}" if prefix else toml_string(k)
            if isinstance(v, list):
                for item in v:
                    lines += table(name, item, f"[[{name}]]")
            else:
                lines += table(name, v, f"[{name}]")
        return lines

    return "\n".join(table("", data, None)) + "\n"


def _env_for(text: str) -> dict[str, str]:
    env = {"HOME": "/home/tester"}
    names = re.findall(r'_env\s*=\s*"([A-Za-z_][A-Za-z0-9_]*)"', text)
    names += re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)
    for name in names:
        env[name] = "https://hooks.example.org/secret" if "URL" in name else "s3cret-value"
    return env


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=[b.id for b in TOML_BLOCKS])
def test_toml_examples_load(block: Block, tmp_path: Path) -> None:
    text = block.text
    env = _env_for(text)
    if block.marker is not None and "fragment" in block.marker:
        # Expand ${VAR} the way the loader would before re-serialising (the dump escapes $).
        filled = _fill_fragment(tomllib.loads(text))
        text = re.sub(r"\$\$\{([A-Za-z_]\w*)\}", lambda m: env[m.group(1)], _dump(filled))
    for name in re.findall(r'(?:password|secret)_file\s*=\s*"([^"/]+)"', text):
        (tmp_path / name).write_text("s3cret-value\n", encoding="utf-8")
    path = tmp_path / "example.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path, env=env)
    except ConfigError as exc:
        pytest.fail(f"{block.id}: the example does not validate:\n{exc}")


CREDENTIAL = re.compile(r"^[ \t]*#?LoadCredential=([^:\s]+):(\S+)$", re.M)
UNITS = sorted((ROOT / "systemd").glob("*.service"))


def test_every_credential_is_named_as_the_file_it_loads() -> None:
    """A bare ``password_file`` is looked up in $CREDENTIALS_DIRECTORY by the service
    and next to the config from a shell (`validate`, `status`): a credential named
    otherwise than its file made the page's own admin commands fail."""
    seen = 0
    for path in [*DOC_FILES, *UNITS]:
        for name, source in CREDENTIAL.findall(path.read_text(encoding="utf-8")):
            seen += 1
            assert name == source.rsplit("/", 1)[-1], f"{path.name}: {name}:{source}"
    assert seen >= 6


def test_the_systemd_secrets_example_loads_in_the_service_and_from_a_shell(
    tmp_path: Path,
) -> None:
    text = (DOCS / "systemd.md").read_text(encoding="utf-8")
    section = text[text.index("### Secrets") : text.index("### Reload")]
    credentials = CREDENTIAL.findall(section)
    (example,) = re.findall(r"```toml\n(.*?)```", section, re.S)
    named = re.findall(r'^(?:password|secret)_file\s*=\s*"([^"/]+)"', example, re.M)
    assert named and set(named) <= {name for name, _source in credentials}
    etc, creds = tmp_path / "etc-feedwatch", tmp_path / "credentials"
    etc.mkdir()
    creds.mkdir()
    for name, source in credentials:
        assert source.startswith("/etc/feedwatch/"), source  # beside the config
        (etc / source.rsplit("/", 1)[-1]).write_text("from-etc\n", encoding="utf-8")
        (creds / name).write_text("from-credentials\n", encoding="utf-8")
    (etc / "config.toml").write_text(example, encoding="utf-8")
    shell = load_config(etc / "config.toml", env={"HOME": str(tmp_path)})
    service = load_config(
        etc / "config.toml", env={"HOME": str(tmp_path), "CREDENTIALS_DIRECTORY": str(creds)}
    )
    for config, secret in ((shell, "from-etc"), (service, "from-credentials")):
        assert config.sinks["me"].options["password"].reveal() == secret


def test_there_are_examples_to_check() -> None:
    mine = {"configuration.md", "matching.md", "recipes.md"}
    counts = {f: sum(1 for b in TOML_BLOCKS if b.file == f) for f in mine}
    assert all(n >= 5 for n in counts.values()), counts


# --------------------------------------------------------------------------
# matching.md: the examples table
# --------------------------------------------------------------------------


def matching_examples() -> list[tuple[str, str, bool]]:
    text = (DOCS / "matching.md").read_text(encoding="utf-8")
    start = text.index("<!-- examples: title -->")
    rows = []
    for line in text[start:].splitlines()[3:]:
        if not line.startswith("|"):
            break
        term, title, hits = (c.strip() for c in line.strip("|").split("|"))
        rows.append((term.strip("`"), title, {"yes": True, "no": False}[hits]))
    return rows


@pytest.mark.parametrize("term,title,hits", matching_examples())
def test_matching_examples(term: str, title: str, hits: bool) -> None:
    rule = compile_rule(Rule(name="r", any=(term,)))
    matched, _ = evaluate([rule], entry(1, title=title, summary=""))
    assert matched is hits


# --------------------------------------------------------------------------
# configuration.md: every key
# --------------------------------------------------------------------------


def test_every_config_key_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, re.MULTILINE))
    keys = set(config_module._GLOBAL_KEYS) | set(config_module._SETTING_KEYS)
    keys |= set(config_module._FEED_KEYS) | set(config_module._RULE_KEYS)
    for sink_keys in config_module._SINK_KEYS.values():
        keys |= set(sink_keys)
    keys |= {"digest"}
    assert keys - documented == set()
    assert documented - keys == set()


# --------------------------------------------------------------------------
# troubleshooting.md: the config errors it quotes are the real ones
# --------------------------------------------------------------------------

BROKEN = """\
interval = "15m"
[feedwatch]
intervall = "15m"
timeout = "30"
jitter = "abc"
[rules.missiles]
any = ["/(unclosed/", "missile*s", "/(a+)+$/"]
[sinks.me]
type = "email"
host = "smtp.example.org"
username = "me@example.org"
password_env = "FEEDWATCH_SMTP_PASSWORD"
from = "feedwatch <alerts@example.org>"
to = ["me@example.org"]
[sinks.chat]
type = "webhook"
url = "https://hooks.slack.com/services/${SLACK_HOOK}"
format = "slak"
[[feeds]]
url = "https://example.org/feed.xml"
match = ["missile"]
sinks = ["mee"]
[[feeds]]
url = "https://example.org/feed.xml"
[[feeds]]
name = "x"
url = "example.org/feed"
[sink.log]
type = "jsonl"
[rules.drones]
fields = ["title"]
[sinks.script]
type = "command"
argv = "/usr/bin/logger feedwatch"
[sinks.mail]
type = "email"
host = "smtp.example.org"
from = "me@example.org, you@example.org"
to = ["me@example.org"]
[[feeds]]
url = "https://example.org/other.xml"
concurrency = 8
"""


def test_quoted_config_errors_are_what_validate_prints(tmp_path: Path) -> None:
    text = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    section = text[text.index("## Config errors") : text.index("## A feed fails")]
    quoted = [
        line
        for b in re.findall(r"```text\n(.*?)```", section, re.DOTALL)
        for line in b.splitlines()
    ]
    assert len(quoted) >= 10
    env = {"PATH": os.environ.get("PATH", ""), "HOME": "/home/me"}
    (tmp_path / "config.toml").write_text(BROKEN, encoding="utf-8")
    (tmp_path / "syntax").mkdir()
    (tmp_path / "syntax" / "config.toml").write_text("[feedwatch]\ninterval = 15m\n")
    printed = ""
    for cwd, args in (
        (tmp_path, ["-c", "config.toml", "validate"]),
        (tmp_path / "syntax", ["-c", "config.toml", "validate"]),
        (tmp_path / "syntax", ["validate"]),  # no -c, no config where feedwatch looks
    ):
        r = run_feedwatch(*args, env=env, cwd=cwd)
        assert r.returncode == 2
        printed += r.stderr
    for line in quoted:
        assert line in printed.splitlines(), f"troubleshooting.md quotes {line!r}:\n{printed}"


# --------------------------------------------------------------------------
# Links
# --------------------------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")
MY_DOCS = ["configuration.md", "matching.md", "recipes.md", "troubleshooting.md", "faq.md"]


def _anchors(path: Path) -> set[str]:
    out = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif line.startswith("#") and not in_code:
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("name", MY_DOCS)
def test_relative_links_resolve(name: str) -> None:
    path = DOCS / name
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{name}: link to missing {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{name}: no heading for #{anchor} in {dest.name}"


# --------------------------------------------------------------------------
# Every command and option is described
# --------------------------------------------------------------------------

COMMON_OPTIONS = {"--help", "--config", "--state", "--verbose", "--quiet"}


def test_every_command_has_a_description_and_its_options_are_documented() -> None:
    """`validate --help` and `demo --help` said nothing of what they do, and some
    options (`explain --no-fetch`, `preview --header`, `--version`...) were documented
    only in --help: each option is named in the docs on a line beside its command."""
    import argparse

    from feedwatch.cli import _build_parser

    parser = _build_parser()
    lines = [
        line
        for path in (ROOT / "README.md", *sorted(DOCS.glob("*.md")))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]

    def named(word: str, line: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", line) is not None

    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    undescribed, undocumented = [], []
    for name, sub in commands.choices.items():
        if not sub.description:
            undescribed.append(name)
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option not in COMMON_OPTIONS:
                    if not any(named(name, line) and named(option, line) for line in lines):
                        undocumented.append(f"{name} {option}")
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and option not in COMMON_OPTIONS:
                if not any(named(f"feedwatch {option}", line) for line in lines):
                    undocumented.append(option)
    assert undescribed == []
    assert undocumented == []


def test_demo_does_not_offer_the_config_and_state_it_ignores(tmp_path: Path) -> None:
    """`demo --help` listed -c/--config and --state, which the demo (its own feed, a
    temporary state) silently ignored: not offered after `demo` now (exit 2), and
    given before it (global options), a one-line note on stderr says they are ignored."""
    shown = run_feedwatch("demo", "--help")
    assert shown.returncode == 0
    assert "--config CONFIG" not in shown.stdout and "--state STATE" not in shown.stdout
    assert "--verbose" in shown.stdout
    refused = run_feedwatch("demo", "-c", str(tmp_path / "none.toml"))
    assert refused.returncode == 2 and "unrecognized arguments: -c" in refused.stderr
    before = run_feedwatch(
        "-c", str(tmp_path / "none.toml"), "--state", str(tmp_path / "s.db"), "demo"
    )
    assert before.returncode == 0, before.stderr
    assert "== UPDATED · Demo Wire (demo-wire) ==" in before.stdout
    assert before.stderr.splitlines()[0] == (
        "feedwatch: demo ignores -c/--config and --state (it watches its own feed, with a"
        " temporary state)"
    )
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize(
    ("command", "options"), [("redeliver", ("--sink", "--feed")), ("status", ("--json", "--check"))]
)
def test_every_option_of_a_command_has_help_text(command: str, options: tuple[str, ...]) -> None:
    """`redeliver --help` listed --sink and --feed, `status --help` --json, with no word
    on what they do."""
    shown = run_feedwatch(command, "--help")
    assert shown.returncode == 0
    for option in options:
        line = next(x for x in shown.stdout.splitlines() if x.strip().startswith(option))
        # "  --sink NAME  only ...": the option, its metavar, then words
        assert len(line.split()) > 2, line
