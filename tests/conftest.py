"""Shared pytest setup. Fixtures live beside the servers they start (tests/feedserver.py, ...).

Temporary directories (``tmp_path``) are made under ``/dev/shm`` where it is a writable
file system with room to spare: every SQLite state the tests create is fsynced at its
creation and at its commits, and on a shared virtual disk those fsyncs were most of
the time of the state-heavy tests (the model properties took twice as long on disk).
Same files, same SQLite, same assertions; only the syncs are cheap. A
``PYTEST_DEBUG_TEMPROOT`` or ``--basetemp`` of your own wins;
``PYTEST_DEBUG_TEMPROOT=/tmp`` keeps them on disk.
"""

from __future__ import annotations

import os

import pytest

_FAST_ROOT = "/dev/shm"
_FAST_ROOT_FREE = 2 << 30  # bytes free that it needs (a full run writes ~100 MB)


def _fast_root() -> str | None:
    try:
        st = os.statvfs(_FAST_ROOT)
    except OSError:
        return None
    if st.f_bavail * st.f_frsize < _FAST_ROOT_FREE or not os.access(_FAST_ROOT, os.W_OK | os.X_OK):
        return None
    return _FAST_ROOT


def pytest_configure(config: pytest.Config) -> None:
    # Before the first tmp_path and before xdist starts its workers (which inherit the
    # environment and are handed their directories under the controller's).
    if config.option.basetemp is None and "PYTEST_DEBUG_TEMPROOT" not in os.environ:
        root = _fast_root()
        if root is not None:
            os.environ["PYTEST_DEBUG_TEMPROOT"] = root
