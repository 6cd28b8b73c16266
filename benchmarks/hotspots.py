"""Where feedwatch's time goes: py-spy over whole `feedwatch check` processes.

    python benchmarks/hotspots.py [--n 1000] [--latency 0] [--rate 250]

Starts the benchmark server, runs feedwatch's cold, unchanged and changed
scenarios (as benchmarks/run.py does) under ``py-spy record --idle --threads``
(py-spy is installed into the peers' venv, never into the project), and
attributes the samples:

- by component: the leaf-most frame that belongs to a known component
  (feedparser, html_to_text, sqlite, httpx, logging, ...); any frame inside the
  import machinery makes it "import"; an idle main thread is "waiting (I/O)";
- by stage: the outermost feedwatch step (start-up, config, polling, delivery).

Main-thread samples are wall time; samples of other threads (asyncio's
``to_thread`` workers) are listed apart. Raw stacks are kept in
benchmarks/results/profile-<stamp>/ for flame graphs (e.g. speedscope).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import Server, run_process, say  # noqa: E402
from tools import VENV, Feedwatch, ensure_peers_venv  # noqa: E402

PYSPY = VENV / "bin" / "py-spy"

# leaf-most match wins (checked per frame from the leaf up)
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("feedparser", ("feedparser/", "sgmllib", "xml/sax", "expatreader")),
    ("html_to_text", ("feedwatch/text.py",)),
    ("sqlite", ("sqlite3", "feedwatch/store/")),
    (
        "http (aiohttp/yarl/multidict, httpx/httpcore/h11/anyio)",
        ("aiohttp/", "yarl/", "multidict/", "httpx/", "httpcore/", "h11/", "anyio/"),
    ),
    ("fetch.py / transport.py", ("feedwatch/fetch.py", "feedwatch/transport.py")),
    ("logging (structlog)", ("structlog/", "feedwatch/log.py")),
    ("diff/identity", ("feedwatch/diff.py", "feedwatch/identity.py")),
    ("match", ("feedwatch/match.py", "regex/")),
    ("alert build", ("feedwatch/alert.py",)),
    ("parse.py (own code)", ("feedwatch/parse.py",)),
    ("sinks", ("feedwatch/sinks/",)),
    ("deliver.py", ("feedwatch/deliver.py",)),
    ("config", ("feedwatch/config.py", "tomllib")),
    ("json", ("json/",)),
    ("poll.py / cli.py", ("feedwatch/poll.py", "feedwatch/cli.py", "feedwatch/pacing.py")),
    ("asyncio loop", ("asyncio/",)),
]
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("config", ("_load (feedwatch/cli.py",)),
    ("deliver (outbox -> sinks)", ("Dispatcher.", "build_sink")),
    # aiohttp's connection callbacks run from the loop, without Poller's frames
    ("poll (fetch+parse+diff+commit)", ("Poller.", "Fetcher.")),
]


def classify(stack: list[str]) -> str:
    if any("<frozen importlib" in f or "_find_and_load" in f for f in stack):
        return "import"
    if "selectors.py" in stack[-1]:  # the event loop waiting with nothing to do
        return "waiting (I/O, idle loop)"
    for frame in reversed(stack):
        for name, keys in COMPONENTS:
            if any(k in frame for k in keys):
                return name
    return "other"


def stage(stack: list[str]) -> str:
    if any("<frozen importlib" in f or "_find_and_load" in f for f in stack):
        return "start-up (imports)"
    joined = ";".join(stack)
    for name, keys in STAGES:
        if any(k in joined for k in keys):
            return name
    if "selectors.py" in stack[-1]:
        return "waiting (idle event loop)"
    if "asyncio/" in stack[-1]:
        return "event loop (between tasks)"
    return "other (interpreter, argparse, store open, summary)"


def analyse(raw: Path, rate: int) -> dict[str, Any]:
    comp: Counter[str] = Counter()
    stg: Counter[str] = Counter()
    other_threads: Counter[str] = Counter()
    lines = raw.read_text().splitlines()
    # "thread (TID): NAME": the main thread's name is not known to py-spy at first
    main_tid = next(
        (ln.split(")", 1)[0] for ln in lines if ln.split(";", 1)[0].endswith("MainThread")), None
    )
    for line in lines:
        stack_s, _, count_s = line.rpartition(" ")
        if not stack_s:
            continue
        frames = stack_s.split(";")
        thread, frames = frames[0], frames[1:]
        if not frames:
            continue
        n = int(count_s)
        c = classify(frames)
        if main_tid is not None and thread.split(")", 1)[0] == main_tid:
            comp[c] += n
            stg[stage(frames)] += n
        elif c != "waiting (I/O, idle loop)" and "_worker (concurrent" not in frames[-1]:
            other_threads[c] += n

    def sec(cn: Counter[str]) -> dict[str, float]:
        return {k: round(v / rate, 3) for k, v in cn.most_common()}

    return {
        "main_thread_by_component_s": sec(comp),
        "main_thread_by_stage_s": sec(stg),
        "other_threads_active_s": sec(other_threads),
    }


def show(entry: dict[str, Any]) -> None:
    print("    -- main thread, by component (seconds of samples) --")
    for k, v in entry["main_thread_by_component_s"].items():
        print(f"    {k:50s} {v:8.2f}")
    print("    -- main thread, by stage --")
    for k, v in entry["main_thread_by_stage_s"].items():
        print(f"    {k:50s} {v:8.2f}")
    if entry["other_threads_active_s"]:
        print(f"    other threads (active): {entry['other_threads_active_s']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--latency", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--analyse", type=Path, help="only re-read the raw stacks in this directory")
    a = p.parse_args()
    if a.analyse:
        for scenario in ("cold", "unchanged", "changed"):
            raw = a.analyse / f"{scenario}.txt"
            if raw.exists():
                print(f"{scenario}:")
                show(analyse(raw, a.rate))
        return 0
    if not PYSPY.exists():
        log: list[str] = []
        ensure_peers_venv(log)
        subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "py-spy"])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = a.out / f"profile-{stamp}"
    out.mkdir(parents=True)
    server = Server(a.n, a.seed)
    report: dict[str, Any] = {"n": a.n, "latency_ms": a.latency, "rate": a.rate}
    try:
        fw = Feedwatch(out / "feedwatch", server.port, a.n, a.concurrency)
        fw.configure()
        for scenario in ("cold", "unchanged", "changed"):
            server.ctl(round=1 if scenario == "changed" else 0, latency_ms=a.latency, reset=1)
            fw.fresh_run_dir(from_base=scenario != "cold")
            raw = out / f"{scenario}.txt"
            cmd = [str(PYSPY), "record", "--idle", "--threads", "-r", str(a.rate), "-f", "raw"]
            cmd += ["-o", str(raw), "--", *fw.command()]
            res = run_process(cmd, env=fw.env(), cwd=fw.run_dir, timeout=1800)
            st = server.ctl()
            if scenario == "cold":
                fw.save_base()
            alerts = fw.alerts()
            entry = {"run": res, "server": st, "alerts": alerts.by_kind, **analyse(raw, a.rate)}
            report[scenario] = entry
            say(f"{scenario}: {res['wall']:.2f} s wall, {res['cpu']:.2f} s cpu (under py-spy)")
            show(entry)
    finally:
        server.close()
    (out / "report.json").write_text(json.dumps(report, indent=1))
    say(f"raw stacks and report in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
