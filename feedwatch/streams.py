"""The streams feedwatch prints to, in an encoding it does not choose.

A cron job or a terminal under a legacy locale (``LANG=en_US.ISO-8859-1``, or
``PYTHONIOENCODING=ascii``) gives stdout and stderr an encoding in which a feed's
Cyrillic title or an emoji cannot be written: Python raises at the first one, and
`check` stopped there, before delivering its alerts, at every run. Text that cannot
be encoded is written escaped instead, and JSON escapes every non-ASCII character
(``\\u0420``), which any JSON reader reads back as it was.
"""

from __future__ import annotations

import codecs
from typing import Any


def tolerant(stream: Any) -> None:
    """A character ``stream`` cannot encode is written as ``\\u0420`` from now on,
    not an exception (a text stream with strict errors; anything else is left)."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None and getattr(stream, "errors", None) == "strict":
        reconfigure(errors="backslashreplace")


def ascii_json(stream: Any) -> bool:
    """Whether JSON written to ``stream`` must escape non-ASCII characters: it does not
    encode as UTF-8 (one without an encoding, a StringIO, holds any text)."""
    encoding = getattr(stream, "encoding", None)
    if not encoding:
        return False
    try:
        return codecs.lookup(encoding).name != "utf-8"
    except LookupError:
        return True
