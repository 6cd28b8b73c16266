"""Runs ``feedwatch`` with CPU counters around named functions, in every process.

    PARTS="module:Qual.name,..." PARTS_OUT=FILE python benchmarks/parts_wrap.py -c CFG check

Used by benchmarks/parts.py. Each named function is replaced by one that adds the
calling thread's CPU time (``time.thread_time``: what this thread ran, not what it
waited for a core) and a call to its counter. A process writes one JSON line to
PARTS_OUT as it ends: ``{"pid", "role": "main"|"worker", "cpu", "parts": {name:
[calls, seconds]}}``. The body workers are forked from the main process: their
counters start from zero at the fork and are written from ``os._exit``, which is
how they end. Counters are inclusive (a counted function that calls another counted
one counts its time too).
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import runpy
import sys
import time
from collections.abc import Callable
from typing import Any

_counts: dict[str, list[float]] = {}
_role = ["main"]


def _counted(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            c = _counts.setdefault(name, [0, 0.0])
            c[0] += 1
            c[1] += time.thread_time() - start

    return counted


def _patch(spec: str) -> None:
    module_name, _, qualname = spec.partition(":")
    owner: Any = importlib.import_module(module_name)
    *path, attr = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    raw = owner.__dict__.get(attr) if isinstance(owner, type) else None
    fn = getattr(owner, attr)
    wrapped: Any = _counted(fn, spec)
    if isinstance(raw, staticmethod):
        wrapped = staticmethod(wrapped)
    setattr(owner, attr, wrapped)


def _write() -> None:
    t = os.times()
    line = {
        "pid": os.getpid(),
        "role": _role[0],
        "cpu": t.user + t.system,
        "parts": {k: [int(v[0]), round(v[1], 6)] for k, v in _counts.items()},
    }
    with open(os.environ["PARTS_OUT"], "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def _write_if_main() -> None:
    if _role[0] == "main":  # a worker writes from os._exit, where atexit does not run
        _write()


def _in_child() -> None:
    _counts.clear()
    _role[0] = "worker"


_real_exit = os._exit


def _exit(code: int) -> None:
    try:
        _write()
    finally:
        _real_exit(code)


def main() -> None:
    for spec in filter(None, os.environ.get("PARTS", "").split(",")):
        _patch(spec.strip())
    os.register_at_fork(after_in_child=_in_child)
    os._exit = _exit  # type: ignore[assignment]
    atexit.register(_write_if_main)
    sys.argv = ["feedwatch", *sys.argv[1:]]
    runpy.run_module("feedwatch", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
