"""`feedwatch init`: a commented starter config that validates as is, with no env vars set."""

from __future__ import annotations

import subprocess
from pathlib import Path

from feedwatch.config import load_config
from feedwatch.init import starter_config
from tests.helpers import bare_env, run_feedwatch

ROOT = Path(__file__).resolve().parent.parent


def fw(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_feedwatch(*args, env=bare_env(tmp), cwd=tmp)


def test_init_output_validates_as_is(tmp_path):
    r = fw(tmp_path, "init")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # not a terminal: no hint
    cfg = tmp_path / ".config" / "feedwatch" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(r.stdout, encoding="utf-8")
    # found where the starter says to put it, without -c
    v = fw(tmp_path, "validate")
    assert v.returncode == 0, v.stderr
    assert v.stdout.strip() == "ok: 1 feeds, 1 sinks, 2 rules"
    assert r.stdout == starter_config()
    assert not (tmp_path / ".local").exists()  # validate created no state


def test_starter_config_content(tmp_path):
    text = starter_config()
    assert text.startswith("# feedwatch configuration")
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert len(comments) > len(text.splitlines()) / 2  # it explains itself
    for hint in ("feedwatch validate", "feedwatch preview", "import-opml", "test-sink"):
        assert hint in text
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path, env={"HOME": str(tmp_path)})
    (feed,) = config.feeds
    assert [r.name for r in feed.rules] == ["example", "keywords"]
    assert feed.sinks == ("log",)
    assert config.sinks["log"].options["path"] == str(tmp_path / "feedwatch-alerts.jsonl")
    assert config.state == str(tmp_path / ".local/state/feedwatch/state.db")


def test_commented_out_sinks_validate_when_uncommented(tmp_path):
    """The email and webhook examples in the starter are valid once uncommented."""
    lines = starter_config().splitlines()
    # uncomment the blocks that start with "# [sinks." up to the next blank line
    text, active = [], False
    for line in lines:
        if line.startswith("# [sinks."):
            active = True
        elif not line.strip():
            active = False
        text.append(line[2:] if active and line.startswith("# ") else line)
    path = tmp_path / "c.toml"
    path.write_text("\n".join(text), encoding="utf-8")
    config = load_config(path, env={"HOME": str(tmp_path), "FEEDWATCH_SMTP_PASSWORD": "hunter22"})
    assert set(config.sinks) == {"log", "mail", "chat"}
    assert config.sinks["chat"].options["format"] == "ntfy"


def test_starter_is_package_data():
    assert (ROOT / "feedwatch" / "starter.toml").read_text(encoding="utf-8") == starter_config()
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"*.toml"' in pyproject  # shipped in the wheel
