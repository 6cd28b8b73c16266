"""The feedwatch benchmark: feedwatch against rss2email and feed2exec, side by side.

    python benchmarks/run.py --quick      # ~2 minutes: N=60, one run per cell, peers on
                                          # the target cells only
    python benchmarks/run.py              # the full run: N=1,000 with peers, 5,000 alone

What it does (docs/performance.md has the method and the last table):

1. starts the synthetic feed server (benchmarks/server.py, its own process) for N
   feeds, rounds 0 and 1 pre-rendered;
2. configures every tool for the same N feeds (feedwatch: a jsonl sink and
   ``first_poll = "alert"``; the peers: a local Maildir), creating the peers'
   virtualenv in benchmarks/.peers/venv on first use;
3. runs each scenario as a whole process, from a copy of a saved state:
   cold (empty state, round 0), unchanged (round 0 again: all 304), changed
   (round 1), at each latency; the tools take turns run by run;
4. measures the floors on the same feeds: a bare fetch at the same concurrency
   (httpx as feedwatch configures it; httpx split over 8 clients; aiohttp when
   the peers' venv has it), feedparser alone on the bodies from memory (one and
   two processes), and Python start-up plus feedwatch's imports;
5. writes everything to benchmarks/results/<stamp>.json and prints Markdown tables.

The tools' CPU is the child's rusage (user + sys, its waited-for children
included); the server reports its own CPU, which must stay well under one core
for the timings to mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import synth  # noqa: E402
from floors import startup_sample  # noqa: E402
from tools import (  # noqa: E402
    FW_VENV,
    VENV,
    Alerts,
    Feed2exec,
    Feedwatch,
    Rss2email,
    Tool,
    ensure_feedwatch_venv,
    ensure_peers_venv,
    own_env,
    venv_python,
)

SCENARIOS = ("cold", "unchanged", "changed")
# cells the targets of issue 7 are stated on, per peer: they get the full repeats there
TARGET_CELLS = {
    "rss2email": {("changed", 0), ("unchanged", 50), ("cold", 0)},
    "feed2exec": {("changed", 0)},
}


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------
# The server


class Server:
    def __init__(self, n: int, seed: int, rounds: int = 1) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "server.py"), "--n", str(n), "--seed", str(seed)]
            + ["--rounds", str(rounds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError(f"the feed server did not start (said {line!r})")
        self.port = int(line)

    def ctl(self, **q: Any) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/_ctl?{urlencode(q)}"
        with urllib.request.urlopen(url, timeout=30) as r:
            return dict(json.loads(r.read()))

    def record(self, k: int) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/_ctl/record?round={k}"
        with urllib.request.urlopen(url, timeout=30) as r:
            return dict(json.loads(r.read()))

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ----------------------------------------------------------------------
# Running one process


def run_process(
    cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: float
) -> dict[str, Any]:
    out = open(cwd / "stdout.txt", "wb")
    err = open(cwd / "stderr.txt", "wb")
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    try:
        _, status, ru = os.wait4(p.pid, 0)
    finally:
        timer.cancel()
        out.close()
        err.close()
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall": round(wall, 4),
        "cpu": round(ru.ru_utime + ru.ru_stime, 4),
        "user": round(ru.ru_utime, 4),
        "sys": round(ru.ru_stime, 4),
        "maxrss_mb": round(ru.ru_maxrss / 1024, 1),
        "exit": p.returncode,
        "timed_out": wall >= timeout,
    }


def tail(path: Path, n: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# ----------------------------------------------------------------------
# Detection against the server's record


def judge(
    scenario: str, alerts: Alerts, record: dict[str, Any] | None, cold_entries: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"alerts": alerts.total, "by_kind": alerts.by_kind}
    if scenario == "cold":
        got = len(alerts.links_new) + len(alerts.links_any)
        out.update(expected_new=cold_entries, new_detected=got)
    elif scenario == "unchanged":
        out.update(expected_new=0, new_detected=0, spurious=alerts.total)
    else:
        assert record is not None
        new = {link for _, link in record["new"]}
        edited = {link for _, link in record["edited"]}
        if alerts.links_any:  # a peer: one message per alert, kind unknown
            got_new = new & set(alerts.links_any)
            got_edit = edited & set(alerts.links_any)
            spurious = sum(1 for x in alerts.links_any if x not in new and x not in edited)
        else:
            got_new = new & set(alerts.links_new)
            got_edit = edited & set(alerts.links_updated)
            spurious = sum(1 for x in alerts.links_new if x not in new) + sum(
                1 for x in alerts.links_updated if x not in edited
            )
        out.update(
            expected_new=len(new),
            new_detected=len(got_new),
            expected_edited=len(edited),
            edited_detected=len(got_edit),
            spurious=spurious,
        )
    return out


# ----------------------------------------------------------------------
# Floors


def floor(args: list[str], python: Path | str = sys.executable) -> dict[str, Any] | None:
    r = subprocess.run(
        [str(python), str(HERE / "floors.py"), *args],
        capture_output=True,
        text=True,
        env=own_env(python),
    )
    if r.returncode != 0:
        say(f"floor {' '.join(args)} failed: {r.stderr.strip()[-400:]}")
        return None
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def has_aiohttp() -> bool:
    if not venv_python().exists():
        return False
    r = subprocess.run([str(venv_python()), "-c", "import aiohttp"], capture_output=True)
    return r.returncode == 0


def fetch_floors(
    server: Server,
    n: int,
    seed: int,
    conc: int,
    latencies: list[int],
    aiohttp: bool,
    sharded: bool,
) -> list[dict[str, Any]]:
    out = []
    for scenario in SCENARIOS:
        for lat in latencies:
            server.ctl(round=1 if scenario == "changed" else 0, latency_ms=lat, reset=1)
            variants: list[tuple[str, list[str], Path | str]] = [("httpx", [], sys.executable)]
            if sharded:
                variants.append(("httpx-8-clients", ["--shards", "8"], sys.executable))
            if aiohttp:
                variants.append(("aiohttp", ["--client", "aiohttp"], venv_python()))
            for name, extra, py in variants:
                mode = "plain" if scenario == "cold" else "conditional"
                server.ctl(reset=1)
                res = floor(
                    ["fetch", "--port", str(server.port), "--n", str(n), "--seed", str(seed)]
                    + ["--concurrency", str(conc), "--mode", mode, *extra],
                    py,
                )
                st = server.ctl()
                if res is not None:
                    res.update(
                        variant=name,
                        scenario=scenario,
                        latency_ms=lat,
                        server_cpu=st["cpu"],
                        peak_in_flight=st["peak_in_flight"],
                    )
                    out.append(res)
                    say(
                        f"  floor fetch {name:16s} {scenario:9s} {lat:3d} ms: "
                        f"{res['wall']:.2f} s wall, {res['cpu']:.2f} s cpu"
                    )
    server.ctl(round=0, latency_ms=0, reset=1)
    return out


def parse_floors(n: int, seed: int, two_procs: bool) -> list[dict[str, Any]]:
    out = []
    specs = [("all", 0, 1), ("changed", 1, 1), ("changed-items", 1, 1)]
    if two_procs:
        specs += [("all", 0, 2), ("changed", 1, 2)]
    for what, k, workers in specs:
        res = floor(
            ["parse", "--n", str(n), "--seed", str(seed), "--round", str(k)]
            + ["--what", what, "--workers", str(workers)]
        )
        if res is not None:
            res.update(what=what, round=k)
            out.append(res)
            say(
                f"  floor parse {what:13s} x{workers}: {res['bodies']} bodies, "
                f"{res['wall']:.2f} s wall, {res['cpu']:.2f} s cpu"
            )
    return out


# ----------------------------------------------------------------------
# One N


def refresh_base(t: Tool, server: Server) -> None:
    """An unmeasured all-304 check from the base, kept as the new base (see
    ``Tool.base_is_stale``): the measured run's previous poll is then within the hour."""
    server.ctl(round=0, latency_ms=0, reset=1)
    t.fresh_run_dir(from_base=True)
    res = run_process(t.command(), env=t.env(), cwd=t.run_dir, timeout=600)
    t.save_base()
    say(f"  {t.name}: base state re-polled in this clock hour ({res['wall']:.2f} s, not measured)")


def bench_n(
    n: int,
    a: argparse.Namespace,
    peers: dict[str, str | None],
    work: Path,
    with_peers: bool,
) -> dict[str, Any]:
    say(f"N = {n}: rendering feeds and starting the server")
    server = Server(n, a.seed)
    states, _ = synth.rounds(n, a.seed, 0)
    cold_entries = sum(len(f.entries) for f in states[0])
    record = server.record(1)
    say(
        f"  server on port {server.port}; round 1: {len(record['changed_feeds'])} feeds changed, "
        f"{len(record['new'])} new entries, {len(record['edited'])} edited"
    )
    tools: list[Tool] = [Feedwatch(work / f"N{n}" / "feedwatch", server.port, n, a.concurrency)]
    notes: list[str] = []
    if with_peers:
        if peers.get("rss2email"):
            tools.append(Rss2email(work / f"N{n}" / "rss2email", server.port, n, a.concurrency))
        else:
            notes.append("rss2email could not be installed: not run")
        if peers.get("feed2exec"):
            tools.append(
                Feed2exec(
                    work / f"N{n}" / "feed2exec",
                    server.port,
                    n,
                    a.concurrency,
                    parallel=a.feed2exec_parallel,
                )
            )
        else:
            notes.append("feed2exec could not be installed: not run")
    for t in tools:
        t.configure()
    repeats = a.repeats if with_peers else a.alone_repeats
    runs: list[dict[str, Any]] = []
    broken: set[str] = set()
    try:
        for scenario in SCENARIOS:
            for lat in a.latencies:
                server.ctl(round=1 if scenario == "changed" else 0, latency_ms=lat, reset=1)
                for rep in range(max(a.repeats, a.peer_repeats)):
                    for t in tools:
                        if t.name in broken:
                            continue
                        if t.name != "feedwatch":
                            target = (scenario, lat) in TARGET_CELLS.get(t.name, set())
                            if rep >= (a.peer_repeats if target else 1):
                                continue
                            base_run = scenario == "cold" and lat == a.latencies[0]
                            if (a.quick or a.peer_cells == "targets") and not (target or base_run):
                                continue  # the peers run their target cells only
                        elif rep >= repeats:
                            continue
                        if scenario != "cold" and not t.base_dir.exists():
                            continue
                        if scenario != "cold" and t.name == "feedwatch" and t.base_is_stale():
                            refresh_base(t, server)
                            server.ctl(round=1 if scenario == "changed" else 0, latency_ms=lat)
                        t.fresh_run_dir(from_base=scenario != "cold")
                        server.ctl(reset=1)
                        load = os.getloadavg()[0]
                        timeout = 120 + n * (0.5 + lat / 1000 * 3)
                        # an all-304 round's CPU less a start-up measured just before it
                        # (the machine drifts within a run): the CPU per 304 poll
                        paired = (
                            startup_sample(python=Feedwatch.python)[1]
                            if t.name == "feedwatch" and scenario == "unchanged"
                            else None
                        )
                        res = run_process(t.command(), env=t.env(), cwd=t.run_dir, timeout=timeout)
                        st = server.ctl()
                        verdict = judge(scenario, t.alerts(), record, cold_entries)
                        row = {
                            "tool": t.name,
                            "n": n,
                            "scenario": scenario,
                            "latency_ms": lat,
                            "repeat": rep,
                            "loadavg_before": round(load, 2),
                            **res,
                            **({"startup_cpu": round(paired, 4)} if paired is not None else {}),
                            "server": st,
                            "detection": verdict,
                        }
                        if res["exit"] != 0:
                            row["stderr_tail"] = tail(t.run_dir / "stderr.txt")
                        runs.append(row)
                        say(
                            f"  {t.name:9s} {scenario:9s} {lat:3d} ms #{rep}: {res['wall']:7.2f} s wall "
                            f"{res['cpu']:7.2f} s cpu  exit {res['exit']}  req {st['requests']} "
                            f"304 {st['not_modified']} peak {st['peak_in_flight']}  "
                            f"alerts {verdict['alerts']}  server cpu {st['cpu']:.2f} s"
                        )
                        if scenario == "cold" and lat == a.latencies[0] and rep == 0:
                            if res["exit"] != 0 and t.name != "feedwatch":
                                notes.append(
                                    f"{t.name} failed its cold run (exit {res['exit']}): "
                                    f"{row.get('stderr_tail', '')[-200:]!r}; not run further"
                                )
                                broken.add(t.name)
                            t.save_base()
        say(f"N = {n}: floors")
        fetch = (
            fetch_floors(server, n, a.seed, a.concurrency, a.latencies, has_aiohttp(), not a.quick)
            if with_peers or a.floors_alone
            else []
        )
        parse = parse_floors(n, a.seed, not a.quick) if with_peers or a.floors_alone else []
    finally:
        server.close()
    return {
        "n": n,
        "cold_entries": cold_entries,
        "round1": {k: len(v) for k, v in record.items() if isinstance(v, list)},
        "runs": runs,
        "floors": {"fetch": fetch, "parse": parse},
        "notes": notes,
    }


# ----------------------------------------------------------------------
# Summary and tables


def med(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def summarize(result: dict[str, Any], startup: dict[str, Any] | None) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    for block in result["blocks"]:
        n = block["n"]
        for scenario in SCENARIOS:
            for lat in result["config"]["latencies"]:
                cell: dict[str, Any] = {"n": n, "scenario": scenario, "latency_ms": lat}
                for tool in ("feedwatch", "rss2email", "feed2exec"):
                    rs = [
                        r
                        for r in block["runs"]
                        if r["tool"] == tool
                        and r["scenario"] == scenario
                        and r["latency_ms"] == lat
                        and r["exit"] in (0,)
                    ]
                    failed = [
                        r
                        for r in block["runs"]
                        if r["tool"] == tool
                        and r["scenario"] == scenario
                        and r["latency_ms"] == lat
                        and r["exit"] != 0
                    ]
                    if not rs and not failed:
                        continue
                    last = (rs or failed)[0]
                    cell[tool] = {
                        "runs": len(rs),
                        "failed_runs": len(failed),
                        "wall": med([r["wall"] for r in rs]),
                        "cpu": med([r["cpu"] for r in rs]),
                        "maxrss_mb": max([r["maxrss_mb"] for r in rs], default=float("nan")),
                        "requests": last["server"]["requests"],
                        "not_modified": last["server"]["not_modified"],
                        "peak_in_flight": last["server"]["peak_in_flight"],
                        "server_cpu_share": round(
                            max(
                                (r["server"]["cpu"] / r["wall"] for r in rs if r["wall"] > 0),
                                default=0.0,
                            ),
                            3,
                        ),
                        "detection": last["detection"],
                    }
                    pairs = [r["cpu"] - r["startup_cpu"] for r in rs if "startup_cpu" in r]
                    if pairs:  # all-304 rounds, each less the start-up measured before it
                        cell[tool]["cpu_less_startup"] = med(pairs)
                fw = cell.get("feedwatch")
                for peer in ("rss2email", "feed2exec"):
                    p = cell.get(peer)
                    if fw and p and fw["wall"] > 0 and p["runs"]:
                        cell[f"{peer}_ratio"] = round(p["wall"] / fw["wall"], 2)
                ff = {
                    f["variant"]: f
                    for f in block["floors"]["fetch"]
                    if f["scenario"] == scenario and f["latency_ms"] == lat
                }
                cell["floor_fetch"] = {
                    k: {"wall": v["wall"], "cpu": v["cpu"]} for k, v in ff.items()
                }
                pf = block["floors"]["parse"]
                want = {"cold": "all", "changed": "changed"}.get(scenario)
                cell["floor_parse"] = {
                    f"x{f['workers']}": {"wall": f["wall"], "cpu": f["cpu"]}
                    for f in pf
                    if f["what"] == want
                }
                if scenario == "changed":
                    items = [f for f in pf if f["what"] == "changed-items"]
                    if items:
                        cell["floor_parse"]["changed_items_x1"] = {
                            "wall": items[0]["wall"],
                            "cpu": items[0]["cpu"],
                            "bodies": items[0]["bodies"],
                        }
                cells.append(cell)
    # derived per-poll costs
    for cell in cells:
        fw = cell.get("feedwatch")
        if not fw or not startup:
            continue
        base = startup["feedwatch_imports"]["cpu"]
        if cell["scenario"] == "unchanged":
            paired = fw.get("cpu_less_startup")
            if paired is not None:  # each round less the start-up measured right before it
                cell["fw_cpu_ms_per_304"] = round(paired / cell["n"] * 1000, 3)
                cell["fw_cpu_ms_per_304_baseline"] = "paired"
            else:  # results from before the pairing: the start-up of the run's start
                cell["fw_cpu_ms_per_304"] = round((fw["cpu"] - base) / cell["n"] * 1000, 3)
                cell["fw_cpu_ms_per_304_baseline"] = "start of run"
        if cell["scenario"] == "changed":
            un = next(
                (
                    c
                    for c in cells
                    if c["n"] == cell["n"]
                    and c["scenario"] == "unchanged"
                    and c["latency_ms"] == cell["latency_ms"]
                ),
                None,
            )
            items = cell["floor_parse"].get("changed_items_x1")
            if un and un.get("feedwatch") and items:
                per_feed = (fw["cpu"] - un["feedwatch"]["cpu"]) / items["bodies"]
                cell["fw_cpu_ms_per_changed_feed"] = round(per_feed * 1000, 2)
                cell["items_parse_ms_per_changed_feed"] = round(
                    items["cpu"] / items["bodies"] * 1000, 2
                )
    return cells


def fmt_s(x: float | None) -> str:
    if x is None or x != x:
        return "–"
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def tables(cells: list[dict[str, Any]]) -> str:
    out = [
        "| N | scenario | latency | feedwatch s (cpu) | rss2email s (cpu) | × | "
        "feed2exec s (cpu) | × | fetch floor s: httpx / 8 clients / aiohttp | "
        "parse floor s: 1 proc / 2 procs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def tool(c: dict[str, Any], t: str) -> str:
        x = c.get(t)
        if not x:
            return "–"
        if not x["runs"]:
            return f"failed ({x['failed_runs']})"
        return f"{fmt_s(x['wall'])} ({fmt_s(x['cpu'])})"

    for c in cells:
        ff = c["floor_fetch"]
        fetch = " / ".join(
            fmt_s(ff[k]["wall"]) if k in ff else "–"
            for k in ("httpx", "httpx-8-clients", "aiohttp")
        )
        fp = c["floor_parse"]
        parse = " / ".join(fmt_s(fp[k]["wall"]) if k in fp else "–" for k in ("x1", "x2"))
        if c["scenario"] == "unchanged":
            parse = "0 (nothing to parse)"
        elif "changed_items_x1" in fp:
            parse += f"; changed items only {fmt_s(fp['changed_items_x1']['wall'])}"
        out.append(
            f"| {c['n']} | {c['scenario']} | {c['latency_ms']} ms | {tool(c, 'feedwatch')} | "
            f"{tool(c, 'rss2email')} | {c.get('rss2email_ratio', '–')} | "
            f"{tool(c, 'feed2exec')} | {c.get('feed2exec_ratio', '–')} | {fetch} | {parse} |"
        )
    out += [
        "",
        "| N | scenario | latency | tool | runs | requests | 304s | peak in flight | "
        "alerts/messages | new found | edited found | spurious | max RSS MB | server CPU share |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        for t in ("feedwatch", "rss2email", "feed2exec"):
            x = c.get(t)
            if not x:
                continue
            d = x["detection"]
            edited = (
                f"{d['edited_detected']}/{d['expected_edited']}" if "expected_edited" in d else "–"
            )
            out.append(
                f"| {c['n']} | {c['scenario']} | {c['latency_ms']} ms | {t} | {x['runs']} | "
                f"{x['requests']} | {x['not_modified']} | {x['peak_in_flight']} | {d['alerts']} | "
                f"{d.get('new_detected', '–')}/{d.get('expected_new', '–')} | {edited} | "
                f"{d.get('spurious', '–')} | {fmt_s(x['maxrss_mb'])} | {x['server_cpu_share']:.0%} |"
            )
    return "\n".join(out)


def target_lines(cells: list[dict[str, Any]], n: int) -> list[str]:
    def cell(s: str, lat: int) -> dict[str, Any]:
        return next(
            (c for c in cells if c["n"] == n and c["scenario"] == s and c["latency_ms"] == lat),
            {},
        )

    lines = []

    def ratio(s: str, lat: int, peer: str, want: float) -> None:
        r = cell(s, lat).get(f"{peer}_ratio")
        if r is None:  # the peer did not run this cell (--no-peers, or it failed)
            lines.append(f"- {s}, N={n}, {lat} ms: no {peer} run (target ≥ {want}×): not measured")
            return
        ok = "ok" if isinstance(r, (int, float)) and r >= want else "MISSED"
        lines.append(f"- {s}, N={n}, {lat} ms: {r}× {peer} (target ≥ {want}×): {ok}")

    ratio("changed", 0, "rss2email", 10)
    ratio("changed", 0, "feed2exec", 40)
    ratio("unchanged", 50, "rss2email", 20)
    ratio("cold", 0, "rss2email", 4)
    for lat in (0, 50):
        c = cell("unchanged", lat)
        if "fw_cpu_ms_per_304" in c:
            v = c["fw_cpu_ms_per_304"]
            how = c.get("fw_cpu_ms_per_304_baseline", "start of run")
            lines.append(
                f"- CPU per 304 poll ({lat} ms): {v} ms (start-up subtracted: {how}; "
                f"target ≤ 0.5 ms): {'ok' if v <= 0.5 else 'MISSED'}"
            )
    c = cell("changed", 0)
    if "fw_cpu_ms_per_changed_feed" in c:
        v, w = c["fw_cpu_ms_per_changed_feed"], c["items_parse_ms_per_changed_feed"]
        lines.append(
            f"- CPU per changed feed: {v} ms vs {w} ms to parse only its changed items "
            f"(target ≤ 1.5×: ≤ {1.5 * w:.1f} ms): {'ok' if v <= 1.5 * w else 'MISSED'}"
        )
    fw = c.get("feedwatch")
    if fw:
        d = fw["detection"]
        lines.append(
            f"- edited entries detected as updates: {d['edited_detected']}/{d['expected_edited']}"
            f" ({'ok' if d['edited_detected'] == d['expected_edited'] else 'MISSED'})"
        )
    return lines


# ----------------------------------------------------------------------
# The machine


def machine(peers: dict[str, str | None]) -> dict[str, Any]:
    import importlib.metadata as md

    def v(p: str) -> str | None:
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return None

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            p: v(p)
            for p in ("feedwatch", "httpx", "httpcore", "h11", "anyio", "feedparser", "structlog")
        },
        "peers": peers,
        "loadavg_start": os.getloadavg(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="N=60, one run per cell, peers on target cells"
    )
    p.add_argument("--n", type=int, nargs="+", help="N with the peers (default 1000; quick 60)")
    p.add_argument(
        "--n-alone", type=int, nargs="*", help="N for feedwatch alone (default 5000; quick none)"
    )
    p.add_argument("--latencies", type=int, nargs="+", default=[0, 50], help="ms per request")
    p.add_argument("--repeats", type=int, help="runs per cell for feedwatch (default 5; quick 1)")
    p.add_argument(
        "--peer-repeats",
        type=int,
        help="runs per target cell for the peers (default 3; quick 1); other cells: 1",
    )
    p.add_argument(
        "--peer-cells",
        choices=("all", "targets"),
        default="all",
        help="cells the peers run: all (default) or only their target cells and the cold base",
    )
    p.add_argument("--concurrency", type=int, default=32, help="feedwatch concurrency = per_host")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-peers", action="store_true", help="feedwatch and the floors only")
    p.add_argument(
        "--feedwatch-here",
        action="store_true",
        help="run feedwatch with this interpreter (its packages, PYTHONPATH) instead of "
        "installing this checkout into benchmarks/.peers/feedwatch-venv",
    )
    p.add_argument(
        "--feed2exec-parallel", action="store_true", help="run feed2exec with --parallel"
    )
    p.add_argument(
        "--alone-repeats", type=int, default=1, help="runs per cell for --n-alone (default 1)"
    )
    p.add_argument("--floors-alone", action="store_true", help="floors for --n-alone too")
    p.add_argument("--out", type=Path, default=HERE / "results")
    a = p.parse_args()
    if a.n is None:
        a.n = [60] if a.quick else [1000]
    if a.n_alone is None:
        a.n_alone = [] if a.quick else [5000]
    if a.repeats is None:
        # feedwatch's runs are ~10x shorter than the peers': five, for a median that one
        # or two runs caught in a slow second of the machine do not decide
        a.repeats = 1 if a.quick else 5
    if a.peer_repeats is None:
        a.peer_repeats = 1 if a.quick else 3

    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    a.out.mkdir(parents=True, exist_ok=True)
    work = a.out / f"work-{stamp}"
    log: list[str] = []
    peers: dict[str, str | None] = {}
    if not a.no_peers:
        say(f"peers: checking {VENV}")
        peers = ensure_peers_venv(log)
        for line in log:
            say(f"  {line}")
        say(f"  peers: {peers}")
    # feedwatch runs from this checkout installed into a venv of its own, as the peers
    # run from theirs (tools.ensure_feedwatch_venv says why); --feedwatch-here runs it
    # with this interpreter instead
    fw_python: Path | None = None
    if not a.feedwatch_here:
        say(f"feedwatch: installing this checkout into {FW_VENV}")
        fw_log: list[str] = []
        fw_python = ensure_feedwatch_venv(fw_log)
        log += fw_log
        for line in fw_log:
            say(f"  {line}")
    Feedwatch.python = str(fw_python or sys.executable)
    if fw_python is None:
        # An installed feedwatch has its bytecode compiled (pip does it); a checkout run
        # with PYTHONDONTWRITEBYTECODE (as here) would compile every module in every run.
        import compileall

        import feedwatch

        compileall.compile_dir(Path(feedwatch.__file__).parent, quiet=1)
    startup = floor(["startup"], python=Feedwatch.python)
    if startup:
        say(
            f"start-up: python {startup['python']['wall']:.3f} s; with feedwatch's imports "
            f"{startup['feedwatch_imports']['wall']:.3f} s wall, "
            f"{startup['feedwatch_imports']['cpu']:.3f} s cpu"
        )
    result: dict[str, Any] = {
        "stamp": stamp,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {
            "quick": a.quick,
            "n": a.n,
            "n_alone": a.n_alone,
            "latencies": a.latencies,
            "repeats": a.repeats,
            "peer_repeats": a.peer_repeats,
            "concurrency": a.concurrency,
            "peer_cells": a.peer_cells,
            "seed": a.seed,
            "feed2exec_parallel": a.feed2exec_parallel,
            "alone_repeats": a.alone_repeats,
            "feedwatch_python": Feedwatch.python,
            "feedwatch_venv": fw_python is not None,
        },
        "machine": machine(peers),
        "startup": startup,
        "setup_log": log,
        "blocks": [],
    }
    try:
        partial = a.out / f"{stamp}.partial.json"
        for n, with_peers in [(n, not a.no_peers) for n in a.n] + [(n, False) for n in a.n_alone]:
            result["blocks"].append(bench_n(n, a, peers, work, with_peers=with_peers))
            partial.write_text(json.dumps(result, indent=1, default=_json_default))
        partial.unlink(missing_ok=True)
    finally:
        result["machine"]["loadavg_end"] = os.getloadavg()
        result["elapsed"] = round(time.time() - started, 1)
        if result["blocks"]:
            cells = summarize(result, startup)
            result["summary"] = cells
            result["targets"] = [line for n in a.n for line in target_lines(cells, n)]
        path = a.out / f"{stamp}.json"
        path.write_text(json.dumps(result, indent=1, default=_json_default))
        shutil.rmtree(work, ignore_errors=True)
        say(f"results: {path} ({result['elapsed']:.0f} s)")
    m = result["machine"]
    print(
        f"\n## feedwatch benchmark {stamp}\n\n"
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['platform']}, Python {m['python']}; "
        f"load average {m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end.  \n"
        f"Versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}; "
        f"peers: {', '.join(f'{k} {v}' for k, v in m['peers'].items()) or 'not run'}.  \n"
        f"Config: concurrency = per_host = {a.concurrency}; repeats {a.repeats} "
        f"(peers {a.peer_repeats} on their target cells, else 1; feedwatch alone "
        f"{a.alone_repeats}); medians; seed {a.seed}.  \n"
    )
    if startup:
        print(
            f"Start-up floor: `python -c pass` {startup['python']['wall']:.3f} s; importing what "
            f"`feedwatch check` imports {startup['feedwatch_imports']['wall']:.3f} s wall, "
            f"{startup['feedwatch_imports']['cpu']:.3f} s CPU.\n"
        )
    print(tables(result.get("summary", [])))
    if result.get("targets"):
        print("\nTargets (issue 7):\n" + "\n".join(result["targets"]))
    for b in result["blocks"]:
        for note in b["notes"]:
            print(f"\nNote (N={b['n']}): {note}")
    return 0


def _json_default(o: object) -> object:
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)  # type: ignore[call-overload]
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
