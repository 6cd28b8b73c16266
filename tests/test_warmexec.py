"""The suite's warm `feedwatch` processes (tests/warmexec.py) behave as exec'd ones do.

Each comparison runs the same command both ways, by ``subprocess.run`` of a fresh
interpreter and by ``run_feedwatch``, and needs the same exit status and output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import warmexec
from tests.helpers import bare_env, run_feedwatch

OPML = (
    '<?xml version="1.0"?><opml version="1.0"><body>'
    '<outline text="Caf\u00e9 news" xmlUrl="https://example.org/f.xml"/></body></opml>\n'
)


def _exec(
    *args: str, env: dict[str, str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "feedwatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
        input=stdin,
    )


def _both(
    *args: str, env: dict[str, str], cwd: Path, stdin: str | None = None
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    assert warmexec.warm_enough(env)  # or this compares exec with exec
    return _exec(*args, env=env, cwd=cwd, stdin=stdin), run_feedwatch(
        *args, env=env, cwd=cwd, stdin=stdin
    )


def test_exit_status_and_output_of_a_rejected_config_are_the_same(tmp_path: Path) -> None:
    (tmp_path / "feedwatch.toml").write_text(  # found in the working directory: cwd
        '[feedwatch]\ninterval = "soon"\n[[feeds]]\nname = "a"\nurl = "${NOT_SET}"\n'
    )
    cold, warm = _both("validate", env=bare_env(tmp_path), cwd=tmp_path)
    assert cold.returncode == warm.returncode == 2
    assert "interval" in cold.stderr and "NOT_SET" in cold.stderr
    assert (warm.stdout, warm.stderr) == (cold.stdout, cold.stderr)


def test_stdin_and_non_ascii_output_are_the_same(tmp_path: Path) -> None:
    cold, warm = _both("import-opml", "-", env=bare_env(tmp_path), cwd=tmp_path, stdin=OPML)
    assert cold.returncode == warm.returncode == 0
    assert "Caf\u00e9 news" in cold.stdout
    assert (warm.stdout, warm.stderr) == (cold.stdout, cold.stderr)


@pytest.mark.parametrize("locale", [None, "C.UTF-8"])
def test_a_command_sink_sees_the_same_environment_and_directory(
    tmp_path: Path, locale: str | None
) -> None:
    dump = tmp_path / "dump.txt"
    (tmp_path / "feedwatch.toml").write_text(
        "[[feeds]]\n"
        'name = "a"\nurl = "http://127.0.0.1:9/f.xml"\n'
        "[sinks.cmd]\n"
        'type = "command"\n'
        f'argv = ["sh", "-c", "env | sort > {dump}; pwd >> {dump}"]\n'
    )
    env = bare_env(tmp_path, SECRET_TOKEN="s3cret")
    if locale:
        env["LANG"] = locale
    seen = []
    for run in (_exec, run_feedwatch):
        r = run("test-sink", "cmd", env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        seen.append(
            [
                line
                for line in dump.read_text().splitlines()
                if not line.startswith(("_=", "FEEDWATCH_ALERT_ID="))
            ]
        )
    assert seen[0] == seen[1]
    assert "SECRET_TOKEN=s3cret" in seen[0] and str(tmp_path) in seen[0]


def test_a_call_past_its_timeout_is_killed_and_raises(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[feedwatch]\nstate = "{tmp_path / "s.db"}"\n'
        '[[feeds]]\nname = "a"\nurl = "http://127.0.0.1:9/f.xml"\ninterval = "1h"\n'
        f'[sinks.j]\ntype = "jsonl"\npath = "{tmp_path / "out.jsonl"}"\n'
    )
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as raised:
        run_feedwatch("-c", str(cfg), "run", env=bare_env(tmp_path), timeout=2)
    assert time.monotonic() - started < 10
    assert "daemon.started" in str(raised.value.stderr)
    # the daemon is gone: its lock on the state is free for the next
    r = run_feedwatch("-c", str(cfg), "status", env=bare_env(tmp_path))
    assert r.returncode == 0, r.stderr


def test_an_environment_that_starts_python_otherwise_is_exec_d() -> None:
    assert warmexec.warm_enough({"PATH": "/bin"})
    assert warmexec.warm_enough({"PATH": "/bin", "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8"})
    assert not warmexec.warm_enough({"PATH": "/bin", "PYTHONPATH": "/x"})
    assert not warmexec.warm_enough({"PATH": "/bin", "LC_ALL": "en_US.ISO-8859-1"})
    os.environ["FEEDWATCH_TEST_EXEC"] = "1"
    try:
        assert not warmexec.warm_enough({"PATH": "/bin"})
    finally:
        del os.environ["FEEDWATCH_TEST_EXEC"]
