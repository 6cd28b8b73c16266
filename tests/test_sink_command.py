"""The command sink with real programs: a Python script as argv, no shell anywhere."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from feedwatch.model import SinkConfig
from feedwatch.redact import clear_secrets, register_secret
from feedwatch.sinks import formats
from feedwatch.sinks.base import SendResult
from feedwatch.sinks.command import CommandSink
from feedwatch.testing import entry, rss
from tests.feedserver import FeedServer, feed_server_fixture  # noqa: F401
from tests.helpers import run_feedwatch
from tests.receivers import make_delivery, make_payload

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")

RECORDER = """
import json, os, sys
out = sys.argv[1]
data = sys.stdin.buffer.read()
with open(out + ".stdin", "wb") as f:
    f.write(data)
with open(out + ".env", "w") as f:
    json.dump({k: v for k, v in os.environ.items() if k.startswith("FEEDWATCH_")}, f)
with open(out + ".argv", "w") as f:
    json.dump(sys.argv[1:], f)
"""

FAILER = """
import sys
sys.stdin.read()
print("line one of noise", file=sys.stderr)
print("something broke: disk full", file=sys.stderr)
sys.exit(1)
"""

HANGER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open(sys.argv[1], "w") as f:
    f.write(f"{child.pid}\\n")
time.sleep(120)
"""


def _script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _sink(argv: list[str], timeout: float = 10.0) -> CommandSink:
    return CommandSink(
        SinkConfig(name="script", type="command", options={"argv": tuple(argv), "timeout": timeout})
    )


def _send(sink: CommandSink, payload: dict[str, Any]) -> SendResult:
    return asyncio.run(sink.send([make_delivery(payload)]))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for a reaper counts as dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_payload_arrives_intact_with_env(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    payload = make_payload(kind="updated", title="Ünïcode – “quotes” \u2028 and\nnewline")
    result = _send(
        _sink([sys.executable, _script(tmp_path, "rec.py", RECORDER), out, "--quiet"]), payload
    )
    assert result == SendResult.success()
    data = Path(out + ".stdin").read_bytes()
    assert data == formats.payload_json(payload) + b"\n"
    assert json.loads(data) == payload
    env = json.loads(Path(out + ".env").read_text())
    assert env["FEEDWATCH_ALERT_ID"] == payload["id"]
    assert env["FEEDWATCH_FEED"] == "moscow-times"
    assert env["FEEDWATCH_KIND"] == "updated"
    assert json.loads(Path(out + ".argv").read_text()) == [out, "--quiet"]


def test_shell_metacharacters_are_not_interpreted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "out")
    title = (
        "$(touch pwned1); `touch pwned2`; touch pwned3 && echo x > pwned4 | cat; "
        "'single' \"double\" ${HOME} * ? ~ \\ ; rm -rf /nonexistent"
    )
    payload = make_payload(title=title)
    result = _send(_sink([sys.executable, _script(tmp_path, "rec.py", RECORDER), out]), payload)
    assert result.ok
    assert json.loads(Path(out + ".stdin").read_bytes())["entry"]["title"] == title
    assert not list(tmp_path.glob("pwned*"))


def test_nonzero_exit_is_transient_with_stderr(tmp_path: Path) -> None:
    result = _send(_sink([sys.executable, _script(tmp_path, "fail.py", FAILER)]), make_payload())
    assert not result.ok and not result.permanent
    assert "script" in (result.error or "")
    assert "exited 1" in (result.error or "")
    assert "something broke: disk full" in (result.error or "")


SECRET = "Sm7pPassw0rd-VeryLong-Secret"
LEAKER = """
import sys
sys.stdin.read()
sys.stderr.write(sys.argv[1] + "password=" + sys.argv[2] + sys.argv[3])
sys.exit(1)
"""


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("", " reason=" + "x" * 480),  # the error's last 500 characters
        ("y" * 9000, "\n" * (8 * 1024 - 20) + "xxxx"),  # the 8 KiB kept, then blank lines
    ],
    ids=["500-character cut", "8-KiB tail"],
)
def test_a_secret_a_cut_of_stderr_falls_inside_shows_no_part(
    tmp_path: Path, before: str, after: str
) -> None:
    """stderr was cut (its last 500 characters, its last 8 KiB kept while it runs)
    before the secrets were masked: a secret the cut fell inside showed its end."""
    register_secret(SECRET)
    try:
        script = _script(tmp_path, "leak.py", LEAKER)
        result = _send(_sink([sys.executable, script, before, SECRET, after]), make_payload())
    finally:
        clear_secrets()
    error = result.error or ""
    assert "exited 1" in error and "xxxx" in error
    assert "Secret" not in error, error


ESCAPER = """
import sys
sys.stdin.read()
sys.stderr.write("bad \\x1b]0;pwned-title\\x07 \\x1b[2J cleared \\r overwritten\\n")
sys.exit(1)
"""


def test_terminal_escapes_in_stderr_reach_neither_the_error_nor_checks_stderr(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """The stored error and `check`'s 'delivery failed' line carried the program's ESC,
    BEL and CR: a terminal's title set, its screen cleared."""
    script = _script(tmp_path, "escape.py", ESCAPER)
    result = _send(_sink([sys.executable, script]), make_payload())
    error = result.error or ""
    assert error.startswith("sink script: command exited 1: bad ") and error.isprintable()
    assert error.endswith(" [2J cleared | overwritten")
    feed_server.set("/f", rss([entry(1, title="One")]))
    cfg = tmp_path / "feedwatch.toml"
    cfg.write_text(
        f"""
[feedwatch]
state = "{tmp_path}/state.db"
first_poll = "alert"
[sinks.script]
type = "command"
argv = [{json.dumps(sys.executable)}, "{script}"]
[[feeds]]
name = "f"
url = "{feed_server.url("/f")}"
"""
    )
    r = run_feedwatch("-c", str(cfg), "check", timeout=30)
    assert r.returncode == 1
    [failed] = [line for line in r.stderr.splitlines() if line.startswith("delivery failed")]
    assert failed == f"delivery failed script: {error}"
    assert not any(c in r.stderr for c in "\x1b\x07\r")


def test_stderr_in_error_is_capped(tmp_path: Path) -> None:
    noisy = "import sys\nfor i in range(20000): print('x' * 200, i, file=sys.stderr)\nsys.exit(3)\n"
    result = _send(_sink([sys.executable, _script(tmp_path, "noisy.py", noisy)]), make_payload())
    assert not result.permanent and "exited 3" in (result.error or "")
    assert len(result.error or "") < 700
    assert "19999" in (result.error or "")  # the last lines are the ones kept


def test_hang_is_killed_within_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    sink = _sink([sys.executable, _script(tmp_path, "hang.py", HANGER), str(pidfile)], timeout=1.0)
    started = time.monotonic()
    result = _send(sink, make_payload())
    elapsed = time.monotonic() - started
    assert not result.ok and not result.permanent
    assert "timed out after 1s" in (result.error or "")
    assert elapsed < 5
    child = int(pidfile.read_text().split()[0])
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child), "the command's own child was left running"


def test_missing_program_is_dead(tmp_path: Path) -> None:
    result = _send(_sink([str(tmp_path / "no-such-program")]), make_payload())
    assert result.permanent and "no such program" in (result.error or "")
    result = _send(_sink(["feedwatch-surely-not-on-path-xyz"]), make_payload())
    assert result.permanent


def test_a_script_whose_interpreter_is_missing_is_dead_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was 'no such program', of a program that is there."""
    path = tmp_path / "on-alert"
    path.write_text("#!/nonexistent/interp -x\nexit 0\n")
    path.chmod(0o755)
    want = "its interpreter '/nonexistent/interp' (its #! line) was not found"
    result = _send(_sink([str(path)]), make_payload())
    assert result.permanent
    assert result.error == f"sink script: cannot start {str(path)!r}: {want}"
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    result = _send(_sink(["on-alert"]), make_payload())
    assert result.permanent and result.error == f"sink script: cannot start 'on-alert': {want}"


def test_a_script_with_crlf_line_ends_is_dead_saying_so(tmp_path: Path) -> None:
    """It was "its interpreter '/bin/sh' (its #! line) was not found", of a /bin/sh
    that is there: the system looked for '/bin/sh\\r'."""
    path = tmp_path / "on-alert"
    path.write_bytes(b"#!/bin/sh\r\nexit 0\r\n")
    path.chmod(0o755)
    result = _send(_sink([str(path)]), make_payload())
    assert result.permanent
    assert result.error == (
        f"sink script: cannot start {str(path)!r}: its #! line ends in a carriage return"
        " (CRLF line ends), so its interpreter is '/bin/sh\\r'"
    )


def test_not_executable_is_dead(tmp_path: Path) -> None:
    path = tmp_path / "plain.sh"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    result = _send(_sink([str(path)]), make_payload())
    assert result.permanent and "not executable" in (result.error or "")


def _file(path: Path, text: str | bytes, mode: int = 0o755) -> Path:
    """A file at ``path`` holding ``text``, with ``mode``."""
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    path.chmod(mode)
    return path


def _dead_error(path: Path) -> str | None:
    """The error of a send to the command ``path``, which must be dead (permanent)."""
    result = _send(_sink([str(path)]), make_payload())
    assert result.permanent
    return result.error


def test_a_script_whose_interpreter_is_not_executable_is_dead_naming_it(tmp_path: Path) -> None:
    """It was 'not executable', of a script that is: its interpreter is not."""
    interpreter = _file(tmp_path / "interp", "#!/bin/sh\nexit 0\n", 0o644)
    path = _file(tmp_path / "on-alert", f"#!{interpreter}\nexit 0\n")
    assert _dead_error(path) == (
        f"sink script: cannot start {str(path)!r}:"
        f" its interpreter {str(interpreter)!r} (its #! line) is not executable"
    )


def test_a_script_whose_interpreter_is_a_script_with_a_missing_interpreter_names_that_one(
    tmp_path: Path,
) -> None:
    """It was "its interpreter '.../interp' (its #! line) was not found", of an interp
    that is there: the system follows its own #! line, whose interpreter is missing."""
    interpreter = _file(tmp_path / "interp", "#!/nonexistent/inner\nexit 0\n")
    path = _file(tmp_path / "on-alert", f"#!{interpreter}\nexit 0\n")
    assert _dead_error(path) == (
        f"sink script: cannot start {str(path)!r}: its interpreter {str(interpreter)!r}"
        " (its #! line) is a script whose interpreter '/nonexistent/inner' was not found"
    )
    _file(interpreter, b"#!/bin/sh\r\nexit 0\r\n")  # its own #! line ends in CR LF
    assert _dead_error(path) == (
        f"sink script: cannot start {str(path)!r}: its interpreter {str(interpreter)!r}"
        " (its #! line) is a script whose #! line ends in a carriage return (CRLF line"
        " ends), so its interpreter is '/bin/sh\\r'"
    )


def test_a_script_whose_interpreter_is_a_script_with_a_non_executable_one_names_that_one(
    tmp_path: Path,
) -> None:
    """It was "its interpreter '.../interp' (its #! line) is not executable", of one that is."""
    inner = _file(tmp_path / "inner", "#!/bin/sh\nexit 0\n", 0o644)
    interpreter = _file(tmp_path / "interp", f"#!{inner}\nexit 0\n")
    path = _file(tmp_path / "on-alert", f"#!{interpreter}\nexit 0\n")
    assert _dead_error(path) == (
        f"sink script: cannot start {str(path)!r}: its interpreter {str(interpreter)!r}"
        f" (its #! line) is a script whose interpreter {str(inner)!r} is not executable"
    )


def test_program_ignoring_stdin_exits_zero(tmp_path: Path) -> None:
    big = make_payload(summary="x" * 500_000)
    result = _send(_sink([sys.executable, "-c", "pass"]), big)
    assert result.ok


LEAVER = """
import subprocess, sys
sys.stdin.read()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(sys.argv[1], "w") as f:
    f.write(f"{child.pid}\\n")
print("queued the notification")
print("a warning before the exit", file=sys.stderr)
sys.exit(int(sys.argv[2]))
"""


@pytest.mark.parametrize("code", [0, 4])
def test_a_child_left_holding_the_pipes_does_not_hold_the_delivery(
    tmp_path: Path, code: int
) -> None:
    """A program that exits at once but leaves a child with its stdout and stderr (a
    notifier run in the background): its exit status decides, now, not at the
    timeout (which reported a delivered alert as failed, to be sent again); what it
    wrote before exiting is still read; the child is its own business."""
    pidfile = tmp_path / "pid"
    script = _script(tmp_path, "leave.py", LEAVER)
    sink = _sink([sys.executable, script, str(pidfile), str(code)], timeout=20.0)
    started = time.monotonic()
    result = _send(sink, make_payload())
    elapsed = time.monotonic() - started
    child = int(pidfile.read_text().split()[0])
    try:
        assert elapsed < 10
        if code == 0:
            assert result == SendResult.success()
        else:
            assert not result.ok and not result.permanent
            assert "exited 4: a warning before the exit" in (result.error or "")
        assert _alive(child)
    finally:
        os.kill(child, 9)


def _command_config(cfg: Path, home: Path, program: str) -> dict[str, str]:
    """A config at ``cfg`` of one command sink running ``program`` (its state and HOME
    under ``home``), and the environment to run feedwatch in."""
    cfg.write_text(
        f'[feedwatch]\nstate = "{home}/s.db"\n'
        f'[sinks.cmd]\ntype = "command"\nargv = ["{program}"]\n'
        '[[feeds]]\nurl = "https://example.org/feed"\nsinks = ["cmd"]\n'
    )
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(home)}


def test_a_relative_program_is_the_one_next_to_the_config_from_any_directory(
    tmp_path: Path,
) -> None:
    """`argv = ["./notify.sh"]` ran ./notify.sh of the current directory: validate and
    test-sink passed next to the config, and under systemd (cwd /) every delivery went
    dead. Now it is relative to the config's directory, as a jsonl path is, and
    validate's check of the program is of that file."""
    conf = tmp_path / "conf"
    (conf / "bin").mkdir(parents=True)
    out = tmp_path / "got"
    _file(conf / "bin" / "notify.sh", f'#!/bin/sh\ncat > "{out}"\n')
    _file(conf / "bin" / "plain.sh", "#!/bin/sh\nexit 0\n", mode=0o644)
    cfg = conf / "feedwatch.toml"
    env = _command_config(cfg, tmp_path, "./bin/notify.sh")
    r = run_feedwatch("-c", str(cfg), "validate", env=env, cwd=Path("/"))
    assert (r.returncode, r.stderr) == (0, "")
    r = run_feedwatch("-c", str(cfg), "test-sink", "cmd", env=env, cwd=Path("/"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(out.read_text())["feed"]

    cfg.write_text(cfg.read_text().replace("notify.sh", "plain.sh"))
    r = run_feedwatch("-c", str(cfg), "validate", env=env, cwd=Path("/"))
    assert r.returncode == 0
    assert r.stderr.splitlines() == [
        f"warning: sink cmd: program {conf}/bin/plain.sh is not executable"
    ]


def test_a_relative_program_only_in_the_working_directory_is_still_run(tmp_path: Path) -> None:
    """Releases before ran `./on-alert` from the working directory: a cron line that runs
    from the program's directory with `-c ../conf/fw.toml` went dead at once after the
    upgrade. A program not next to the config but in the working directory is that one;
    next to the config wins."""
    conf, bin_ = tmp_path / "conf", tmp_path / "bin"
    conf.mkdir()
    bin_.mkdir()
    out = tmp_path / "got"
    _file(bin_ / "on-alert", f'#!/bin/sh\ncat > "{out}"\n')
    cfg = conf / "fw.toml"
    env = _command_config(cfg, tmp_path, "./on-alert")
    r = run_feedwatch("-c", "../conf/fw.toml", "test-sink", "cmd", env=env, cwd=bin_)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(out.read_text())["feed"]
    # one next to the config too: that one
    other = tmp_path / "other"
    _file(conf / "on-alert", f'#!/bin/sh\ncat > "{other}"\n')
    r = run_feedwatch("-c", "../conf/fw.toml", "test-sink", "cmd", env=env, cwd=bin_)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(other.read_text())["feed"]
