"""The systemd units: required keys always; systemd-analyze verify/security when the tool is there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_UNIT = ROOT / "systemd" / "feedwatch.service"
USER_UNIT = ROOT / "systemd" / "feedwatch-user.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None or not sys.platform.startswith("linux"),
    reason="systemd-analyze not installed (apt-get install systemd): verify/security not run",
)


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections -> [(key, value)] in order; repeated keys kept (systemd accumulates many)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}:{number}: key outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not KEY=value: {line!r}"
        assert not line.endswith("\\"), f"{path.name}:{number}: keep lines unwrapped"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    got = values(unit, section, key)
    assert len(got) == 1, f"[{section}] {key}= expected once, found {got}"
    return got[0]


COMMON = {
    "Type": "notify",
    "NotifyAccess": "main",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "Restart": "on-failure",
    "WatchdogSec": "60",
    "StateDirectory": "feedwatch",
    "CacheDirectory": "feedwatch",  # the parse cache of a PostgreSQL state
    "ConfigurationDirectory": "feedwatch",
    "UMask": "0077",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "PrivateTmp": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectHostname": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
}

SYSTEM_ONLY = {
    "ExecStart": "/usr/local/bin/feedwatch run",
    "DynamicUser": "yes",
    "Environment": "FEEDWATCH_CONFIG=/etc/feedwatch/config.toml",
    "ProtectHome": "yes",
    "PrivateDevices": "yes",
    "ProtectClock": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ProcSubset": "pid",
    "ProtectProc": "invisible",
}


@pytest.mark.parametrize("path", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
def test_common_keys(path):
    unit = parse_unit(path)
    for key, expected in COMMON.items():
        assert expected in values(unit, "Service", key), f"{path.name}: [Service] {key}={expected}"
    assert values(unit, "Service", "SystemCallFilter") == [
        "@system-service",
        "~@privileged @resources",
    ]
    assert not values(unit, "Service", "IPAddressDeny"), "feeds are anywhere: no IP deny list"
    # systemd's default soft limit (1024) ran out: polls failed "could not connect";
    # the sandbox (~@resources) keeps feedwatch from raising it (docs/systemd.md)
    assert int(one(unit, "Service", "LimitNOFILE")) >= 8192
    assert "network-online.target" in one(unit, "Unit", "After")
    assert one(unit, "Install", "WantedBy")


def test_system_unit_keys():
    unit = parse_unit(SYSTEM_UNIT)
    for key, expected in SYSTEM_ONLY.items():
        assert expected in values(unit, "Service", key), f"[Service] {key}={expected}"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    text = SYSTEM_UNIT.read_text()
    # the credential example is there, commented, named as its file (docs/systemd.md)
    assert re.search(r"^#LoadCredential=smtp-password:/etc/feedwatch/smtp-password$", text, re.M)
    assert 'password_file = "smtp-password"' in text


def test_user_unit_keys():
    unit = parse_unit(USER_UNIT)
    assert one(unit, "Service", "ExecStart") == "%h/.local/bin/feedwatch run"
    assert "FEEDWATCH_CONFIG=%E/feedwatch/config.toml" in values(unit, "Service", "Environment")
    assert one(unit, "Service", "PrivateUsers") == "yes"  # what makes namespacing work unprivileged
    assert one(unit, "Service", "ProtectHome") == "read-only"
    for key in ("DynamicUser", "User", "CapabilityBoundingSet", "AmbientCapabilities"):
        assert not values(unit, "Service", key), f"{key}= makes no sense in a user unit"
    assert one(unit, "Install", "WantedBy") == "default.target"


def _seconds(value: str) -> float:
    """A systemd time span of the forms the units use: "30s", "1min 30s", "90"."""
    units = {"": 1.0, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


@pytest.mark.parametrize("path", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
def test_stop_signals_the_daemon_only_and_leaves_it_its_shutdown_timeout(path):
    """KillMode=control-group (the default) sent SIGTERM to every process of the unit,
    so a command sink's program was killed mid-send, which docs/systemd.md says
    finishes. mixed: SIGTERM to feedwatch alone (which stops its own children), SIGKILL
    to whatever is left at the end; and the stop waits longer than feedwatch does."""
    from dataclasses import fields

    from feedwatch.model import Config

    unit = parse_unit(path)
    assert one(unit, "Service", "KillMode") == "mixed"
    default = next(f.default for f in fields(Config) if f.name == "shutdown_timeout")
    assert isinstance(default, float)
    for stop in values(unit, "Service", "TimeoutStopSec"):
        assert _seconds(stop) >= default + 10, f"TimeoutStopSec={stop}"


# -- systemd-analyze -----------------------------------------------------------


def _user_env(tmp_path: Path) -> dict[str, str]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(home)}


def _stubbed_copy(unit: Path, tmp_path: Path) -> Path:
    """The unit with ExecStart= pointed at an executable stub (feedwatch need not be installed)."""
    stub = tmp_path / "feedwatch"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={stub}", unit.read_text(), flags=re.M)
    out = tmp_path / "units" / unit.name
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    return out


@needs_analyze
@pytest.mark.parametrize(
    ("path", "scope"), [(SYSTEM_UNIT, []), (USER_UNIT, ["--user"])], ids=["system", "user"]
)
def test_systemd_analyze_verify(path, scope, tmp_path):
    copy = _stubbed_copy(path, tmp_path)
    proc = subprocess.run(
        [str(ANALYZE), *scope, "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_user_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert copy.name not in proc.stderr, proc.stderr  # no warnings about our unit either


@needs_analyze
@pytest.mark.parametrize(
    ("path", "scope"), [(SYSTEM_UNIT, []), (USER_UNIT, ["--user"])], ids=["system", "user"]
)
def test_systemd_analyze_security_rates_ok_or_better(path, scope, tmp_path):
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    proc = subprocess.run(
        [str(ANALYZE), *scope, "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_user_env(tmp_path),
    )
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("systemd-analyze too old for --offline (needs systemd >= 250)")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    exposure, rating = float(m.group(1)), m.group(2)
    assert rating in ("PERFECT", "SAFE", "OK"), f"{path.name}: {exposure} {rating}"
    if not scope:
        # the system unit is the one docs/systemd.md quotes; keep it well inside "OK"
        assert exposure <= 2.0, f"{path.name}: exposure {exposure} {rating}"
