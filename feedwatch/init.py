"""`feedwatch init`: print a commented starter config that `feedwatch validate` accepts as is."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib.resources import files
from typing import TextIO

from feedwatch.model import Config

TEMPLATE = "starter.toml"


def starter_config() -> str:
    """The starter config text (package data ``feedwatch/starter.toml``)."""
    return files("feedwatch").joinpath(TEMPLATE).read_text(encoding="utf-8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Print a commented starter config on stdout, e.g. "
        "`mkdir -p ~/.config/feedwatch && feedwatch init > ~/.config/feedwatch/config.toml`."
    )


def run(args: argparse.Namespace, out: TextIO, load: Callable[[], Config]) -> int:
    out.write(starter_config())
    out.flush()
    isatty = getattr(out, "isatty", None)
    if callable(isatty) and isatty():
        print(
            "\n(to use it: mkdir -p ~/.config/feedwatch && "
            "feedwatch init > ~/.config/feedwatch/config.toml)",
            file=sys.stderr,
        )
    return 0
