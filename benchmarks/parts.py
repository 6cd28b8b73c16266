"""Where a changed feed's CPU goes, part by part, counted in each process.

    python benchmarks/parts.py [--n 1000] [--runs 3] [--latency 0] [--parts SPEC,...]

Runs the benchmark's changed and unchanged rounds (as benchmarks/run.py does, from a
saved state) alternately, ``feedwatch check`` as a whole process under
benchmarks/parts_wrap.py, which counts the CPU time of named functions in the main
process and in each body worker (``time.thread_time``, so neither a profiler's own
cost nor a process waiting for a core is counted). Prints, per run and as medians:

- the whole CPU of each round, and the benchmark's measure of a changed feed (the
  changed round less the unchanged one, over the changed bodies);
- each counted part in ms per changed body (``handle_body`` calls), by process role.

Counters are inclusive: ``parse_cached`` includes ``parse_xml_detail``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import Server, refresh_base, run_process, say  # noqa: E402
from tools import Feedwatch  # noqa: E402

DEFAULT_PARTS = [
    # in a body worker
    "feedwatch.poll:Poller.handle_body",
    "feedwatch.partial:parse_cached",
    "feedwatch.partial:parse_xml_detail",
    "feedwatch.partial:split_items",
    "feedwatch.poll:Poller._after_parse",
    "feedwatch.store.rows:SharedReads.entries_matching",
    "feedwatch.poll:diff",
    "feedwatch.poll:Poller._alerts",
    "feedwatch.store.sqlite:SqliteStore.commit_poll",
    # in the main process
    "feedwatch.fetch:_Decoder.feed",
    "feedwatch.poll:body_hash",
    "feedwatch.bodyworkers:BodyWorkers._dispatch",
    "feedwatch.bodyworkers:BodyWorkers._readable",
    "feedwatch.store.sqlite:SqliteStore.record_unchanged",
    "feedwatch.store.sqlite:SqliteStore.mark_delivered",
]


def one_run(
    fw: Feedwatch, server: Server, scenario: str, latency: int, parts: str
) -> dict[str, Any]:
    if fw.base_is_stale():
        refresh_base(fw, server)
    server.ctl(round=1 if scenario == "changed" else 0, latency_ms=latency, reset=1)
    fw.fresh_run_dir(from_base=True)
    out = fw.run_dir / "parts.jsonl"
    env = {**fw.env(), "PARTS": parts, "PARTS_OUT": str(out)}
    cmd = [str(fw.python), str(HERE / "parts_wrap.py"), "-c", str(fw.config_path), "check"]
    res = run_process(cmd, env=env, cwd=fw.run_dir, timeout=900)
    if res["exit"] != 0:
        raise SystemExit(f"{scenario}: feedwatch exited {res['exit']}")
    procs = [json.loads(line) for line in out.read_text().splitlines()]
    bodies = sum(p["parts"].get("feedwatch.poll:Poller.handle_body", [0, 0])[0] for p in procs)
    main_cpu = sum(p["cpu"] for p in procs if p["role"] == "main")
    workers_cpu = sum(p["cpu"] for p in procs if p["role"] == "worker")
    totals: dict[str, list[float]] = {}
    for p in procs:
        for name, (calls, secs) in p["parts"].items():
            t = totals.setdefault(f"{p['role']:6s} {name.partition(':')[2]}", [0, 0.0])
            t[0] += calls
            t[1] += secs
    return {
        "scenario": scenario,
        "wall": res["wall"],
        "cpu": res["cpu"],
        "main_cpu": main_cpu,
        "workers_cpu": workers_cpu,
        "bodies": bodies,
        "parts": totals,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--latency", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--parts", default=",".join(DEFAULT_PARTS), help="module:qualname,...")
    p.add_argument("--work", type=Path, default=HERE / "results" / "parts-work")
    a = p.parse_args()

    server = Server(a.n, a.seed)
    try:
        fw = Feedwatch(a.work, server.port, a.n, a.concurrency)
        fw.configure()
        server.ctl(round=0, latency_ms=0, reset=1)
        fw.fresh_run_dir(from_base=False)
        run_process(fw.command(), env=fw.env(), cwd=fw.run_dir, timeout=1800)  # cold
        fw.save_base()
        runs: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for i in range(a.runs):
            changed = one_run(fw, server, "changed", a.latency, a.parts)
            unchanged = one_run(fw, server, "unchanged", a.latency, a.parts)
            runs.append((changed, unchanged))
            per_body = (changed["cpu"] - unchanged["cpu"]) / max(1, changed["bodies"]) * 1000
            say(
                f"run {i + 1}: changed {changed['cpu']:.2f} s CPU (main {changed['main_cpu']:.2f},"
                f" workers {changed['workers_cpu']:.2f}), unchanged {unchanged['cpu']:.2f} s;"
                f" {changed['bodies']} bodies: {per_body:.2f} ms of CPU a changed feed"
            )
    finally:
        server.close()

    bodies = runs[0][0]["bodies"] or 1
    names = sorted({k for c, _ in runs for k in c["parts"]})
    print(f"\nms per changed body ({bodies} bodies), run by run and the median:")
    rows = []
    for name in names:
        values = [c["parts"].get(name, [0, 0.0])[1] / bodies * 1000 for c, _ in runs]
        rows.append((statistics.median(values), name, values))
    for med, name, values in sorted(rows, reverse=True):
        runs_s = " / ".join(f"{v:.3f}" for v in values)
        print(f"  {name:55s} {runs_s:30s} median {med:.3f}")
    measure = [(c["cpu"] - u["cpu"]) / max(1, c["bodies"]) * 1000 for c, u in runs]
    print(
        f"\nCPU a changed feed (changed less unchanged, over the bodies): "
        f"{' / '.join(f'{m:.2f}' for m in measure)} ms, median {statistics.median(measure):.2f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
