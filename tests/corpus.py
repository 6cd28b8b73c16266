"""The feedparser test corpus as (path, body, headers) cases.

Each corpus file is one body; HTTP cases name their response headers in the
leading comment as ``Header:      Name: value`` lines (the feedparser suite's
convention). Those lines are data: nothing in them is evaluated.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

__all__ = ["corpus_cases", "corpus_root", "read_headers"]

_HEADER_LINE = re.compile(rb"^Header:[ \t]*([^:\r\n]+?)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.M)
# Header lines live in the comment at the top of a file.
_HEAD_BYTES = 4096


def corpus_root() -> Path:
    """``$FEEDWATCH_CORPUS`` or ``<checkout>/../shared/corpus``, then its ``feedparser`` folder."""
    env = os.environ.get("FEEDWATCH_CORPUS")
    base = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "corpus"
    return base / "feedparser" if (base / "feedparser").is_dir() else base


def read_headers(body: bytes) -> dict[str, str]:
    """The ``Header: Name: value`` lines of a corpus file, names lower-cased."""
    headers: dict[str, str] = {}
    for m in _HEADER_LINE.finditer(body[:_HEAD_BYTES]):
        name = m.group(1).decode("ascii", "replace").strip().lower()
        headers[name] = m.group(2).decode("latin-1").strip()
    return headers


@lru_cache(maxsize=1)
def _cases() -> tuple[tuple[Path, bytes, tuple[tuple[str, str], ...]], ...]:
    root = corpus_root()
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "NOTICE"):
        body = path.read_bytes()
        out.append((path, body, tuple(read_headers(body).items())))
    return tuple(out)


def corpus_cases() -> list[tuple[Path, bytes, dict[str, str]]]:
    """Every corpus file (sorted, NOTICE skipped) with the headers it declares.

    Empty when the corpus is not there; callers decide whether that is a skip.
    """
    return [(path, body, dict(headers)) for path, body, headers in _cases()]
