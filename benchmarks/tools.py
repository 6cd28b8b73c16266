"""The tools under test, each run as a whole process from a saved state.

A ``Tool`` knows how to configure itself for N feeds on the benchmark server, which
files hold its state (copied before every run), how to run once, and how to read
back what it alerted (so the harness can compare with the server's record).

- ``Feedwatch``: ``feedwatch check`` with a generated config (a jsonl sink,
  ``first_poll = "alert"``, ``concurrency`` and ``per_host`` stated).
- ``Rss2email``: ``r2e run`` with ``email-protocol = maildir`` (no network).
- ``Feed2exec``: ``feed2exec fetch`` with the ``maildir`` output plugin.

The peers live in their own virtualenv (``benchmarks/.peers/venv``), created by
``ensure_peers_venv``; a peer that cannot be installed is reported, not fatal.
"""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import subprocess
import sys
import time
import venv
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / ".peers"
VENV = PEERS_DIR / "venv"
PEER_PACKAGES = {"rss2email": "rss2email==3.14", "feed2exec": "feed2exec==0.23.0"}
EXTRA_PACKAGES = ["aiohttp"]  # for the aiohttp fetch floor only; never a feedwatch dependency


FW_VENV = PEERS_DIR / "feedwatch-venv"
REPO = HERE.parent


def venv_python() -> Path:
    return VENV / "bin" / "python"


def own_env(python: str | Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment to run ``python`` in: ``env`` (None: this process's) as it is for
    this interpreter; for another, without PYTHONPATH, so that it uses its own install."""
    env = dict(os.environ if env is None else env)
    if str(python) != sys.executable:
        env.pop("PYTHONPATH", None)
    return env


def ensure_feedwatch_venv(log: list[str]) -> Path | None:
    """This checkout installed as a user installs it (``pip install .``) into a venv of
    its own, as the peers are; returns its python, or None (with the reason logged)
    if it cannot be made.

    Why not the interpreter running the benchmark: a development environment carries
    packages feedwatch never asks for that still cost it start-up time (here httpx
    imports its command line's click and pygments when they are present, and an
    editable install adds a finder to every start: ~60 ms of the ~0.27 s of
    imports). The checkout is installed again on every run (``--force-reinstall
    --no-deps``: its own code, compiled by pip), so what is measured is this tree."""
    py = FW_VENV / "bin" / "python"
    try:
        if not py.exists():
            log.append(f"creating {FW_VENV}")
            venv.EnvBuilder(with_pip=True, clear=True).create(FW_VENV)
        for extra in ([], ["--force-reinstall", "--no-deps"]):
            r = subprocess.run(
                [str(py), "-m", "pip", "install", "-q", *extra, str(REPO)],
                capture_output=True,
                text=True,
                timeout=900,
            )
            if r.returncode != 0:
                log.append(f"could not install feedwatch into {FW_VENV}: {r.stderr[-800:]}")
                return None
    except (OSError, subprocess.SubprocessError) as exc:
        log.append(f"could not make {FW_VENV}: {exc}")
        return None
    return py


def ensure_peers_venv(log: list[str]) -> dict[str, str | None]:
    """Create the peers' venv and install them; returns {package: version or None}."""
    if not venv_python().exists():
        log.append(f"creating {VENV}")
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    versions: dict[str, str | None] = {}
    for name, spec in [*PEER_PACKAGES.items(), *((p, p) for p in EXTRA_PACKAGES)]:
        v = _installed_version(name)
        if v is None:
            log.append(f"installing {spec} into {VENV}")
            r = subprocess.run(
                [str(venv_python()), "-m", "pip", "install", "-q", spec],
                capture_output=True,
                text=True,
                timeout=900,
            )
            if r.returncode != 0:
                log.append(f"could not install {spec}: {r.stderr.strip()[-800:]}")
            v = _installed_version(name)
        versions[name] = v
    return versions


def _installed_version(name: str) -> str | None:
    if not venv_python().exists():
        return None
    r = subprocess.run(
        [
            str(venv_python()),
            "-c",
            f"import importlib.metadata as m; print(m.version({name!r}))",
        ],
        capture_output=True,
        text=True,
    )
    return r.stdout.strip() if r.returncode == 0 else None


def _copy(src: Path, dst: Path) -> None:
    """A state file or directory, if there is one."""
    if src.is_dir():
        shutil.copytree(src, dst)
    elif src.exists():
        shutil.copy2(src, dst)


@dataclass
class Alerts:
    """What one run alerted: links of new and updated entries (None = unknown kind)."""

    total: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    links_new: list[str] = field(default_factory=list)
    links_updated: list[str] = field(default_factory=list)
    links_any: list[str] = field(default_factory=list)  # peers: a message, kind unknown


class Tool:
    name = ""
    state_files: tuple[str, ...] = ()

    def __init__(self, root: Path, port: int, n: int, concurrency: int) -> None:
        self.root = root  # <results>/work/N<n>/<tool>
        self.run_dir = root / "run"
        self.base_dir = root / "base"
        self.port = port
        self.n = n
        self.concurrency = concurrency
        self.base_hour: int | None = None  # the clock hour save_base() ran in
        root.mkdir(parents=True, exist_ok=True)

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.port}/f/{i:05d}"

    def feed_name(self, i: int) -> str:
        return f"f{i:05d}"

    def configure(self) -> None:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HOME"] = str(self.run_dir / "home")
        env["XDG_CONFIG_HOME"] = str(self.run_dir / "home" / ".config")
        env["XDG_DATA_HOME"] = str(self.run_dir / "home" / ".local" / "share")
        env["XDG_CACHE_HOME"] = str(self.run_dir / "home" / ".cache")
        env["XDG_STATE_HOME"] = str(self.run_dir / "home" / ".local" / "state")
        return env

    def fresh_run_dir(self, from_base: bool) -> None:
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        (self.run_dir / "home").mkdir(parents=True)
        (self.run_dir / "Maildir").mkdir()  # rss2email creates the mailbox, not its parent
        if from_base:
            for f in self.state_files:
                _copy(self.base_dir / f, self.run_dir / f)

    def save_base(self) -> None:
        if self.base_dir.exists():
            shutil.rmtree(self.base_dir)
        self.base_dir.mkdir(parents=True)
        for f in self.state_files:
            _copy(self.run_dir / f, self.base_dir / f)
        self.base_hour = int(time.time() // 3600)

    def base_is_stale(self) -> bool:
        """Whether the base state's last poll is in an earlier clock hour than now.

        feedwatch moves the ``last_seen`` of entries it only sees again once per clock
        hour (feedwatch.store.seen): a run from a base saved in an earlier hour does
        that hourly write for every feed. With a 15-minute interval one poll in four
        does; the cells measure the other three, from a base polled within the hour.
        """
        return self.base_hour is not None and self.base_hour != int(time.time() // 3600)

    def alerts(self) -> Alerts:
        raise NotImplementedError


class Feedwatch(Tool):
    name = "feedwatch"
    # the interpreter that runs `feedwatch check`: run.py sets the one of
    # ensure_feedwatch_venv; with another, PYTHONPATH is dropped (its own install is used)
    python: str = sys.executable
    # the parse cache (feedwatch.parsecache) sits beside the state: a saved state keeps it
    state_files = ("state.db", "state.db-wal", "state.db-shm", "state.db.parse-cache")

    def configure(self) -> None:
        lines = [
            "# generated by benchmarks/run.py",
            "[feedwatch]",
            f'state = "{self.run_dir / "state.db"}"',
            f"concurrency = {self.concurrency}",
            f"per_host = {self.concurrency}  # every synthetic feed is on one loopback host",
            'first_poll = "alert"',
            'timeout = "60s"',
            "",
            "[sinks.log]",
            'type = "jsonl"',
            f'path = "{self.run_dir / "alerts.jsonl"}"',
            "",
        ]
        for i in range(self.n):
            lines += [
                "[[feeds]]",
                f'name = "{self.feed_name(i)}"',
                f'url = "{self.url(i)}"',
                "",
            ]
        self.config_path = self.root / "feedwatch.toml"
        self.config_path.write_text("\n".join(lines))
        from feedwatch.config import load_config  # the config must be valid as written

        cfg = load_config(self.config_path)
        assert len(cfg.feeds) == self.n and cfg.concurrency == self.concurrency

    def command(self) -> list[str]:
        return [str(self.python), "-m", "feedwatch", "-c", str(self.config_path), "check"]

    def env(self) -> dict[str, str]:
        return own_env(self.python, super().env())

    def alerts(self) -> Alerts:
        out = Alerts()
        path = self.run_dir / "alerts.jsonl"
        if not path.exists():
            return out
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                p = json.loads(line)
                kind = p.get("kind", "?")
                out.total += 1
                out.by_kind[kind] = out.by_kind.get(kind, 0) + 1
                link = (p.get("entry") or {}).get("link")
                if link and kind == "new":
                    out.links_new.append(link)
                elif link and kind == "updated":
                    out.links_updated.append(link)
        return out


def _maildir_links(maildir: Path, header: str) -> Alerts:
    out = Alerts()
    parser = email.parser.BytesHeaderParser()
    for sub in ("new", "cur"):
        d = maildir / sub
        if not d.is_dir():
            continue
        for f in d.iterdir():
            with f.open("rb") as fh:
                msg = parser.parse(fh)
            out.total += 1
            link = msg.get(header)
            if link:
                out.links_any.append(str(link).strip().strip("<>"))
    out.by_kind["message"] = out.total
    return out


class Rss2email(Tool):
    name = "rss2email"
    state_files = ("r2e.json",)

    def configure(self) -> None:
        lines = [
            "[DEFAULT]",
            "to = bench@example.invalid",
            "from = bench@example.invalid",
            "email-protocol = maildir",
            f"maildir-path = {self.run_dir / 'Maildir'}",
            "maildir-mailbox = INBOX",
            "verbose = warning",
            "",
        ]
        for i in range(self.n):
            lines += [f"[feed.{self.feed_name(i)}]", f"url = {self.url(i)}", ""]
        self.config_path = self.root / "r2e.cfg"
        self.config_path.write_text("\n".join(lines))

    def command(self) -> list[str]:
        return [
            str(VENV / "bin" / "r2e"),
            "-c",
            str(self.config_path),
            "-d",
            str(self.run_dir / "r2e.json"),
            "run",
        ]

    def alerts(self) -> Alerts:
        return _maildir_links(self.run_dir / "Maildir" / "INBOX", "X-RSS-URL")


class Feed2exec(Tool):
    name = "feed2exec"
    state_files = ("f2e.db",)

    def __init__(self, *a: object, parallel: bool = False, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.parallel = parallel

    def configure(self) -> None:
        lines = []
        for i in range(self.n):
            lines += [
                f"[{self.feed_name(i)}]",
                f"url = {self.url(i)}",
                "output = feed2exec.plugins.maildir",
                f"mailbox = {self.run_dir / 'Maildir'}",
                "folder = INBOX",
                "args = bench@example.invalid",
                "",
            ]
        self.config_path = self.root / "feed2exec.ini"
        self.config_path.write_text("\n".join(lines))

    def command(self) -> list[str]:
        cmd = [
            str(VENV / "bin" / "feed2exec"),
            "--config",
            str(self.config_path),
            "--database",
            str(self.run_dir / "f2e.db"),
            "fetch",
        ]
        if self.parallel:
            cmd.append("--parallel")
        return cmd

    def alerts(self) -> Alerts:
        return _maildir_links(self.run_dir / "Maildir" / "INBOX", "Archived-At")
