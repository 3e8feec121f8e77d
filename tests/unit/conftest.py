"""Unit tests do no I/O: a test here that opens a socket, a database or a process fails at once.

That keeps the folder fast (seconds) and honest: a test that needs a real peer belongs in
tests/integration.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from typing import Any, NoReturn

import pytest


def _refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise AssertionError("a unit test does no I/O; move it to tests/integration")


@pytest.fixture(autouse=True)
def _no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, _refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse)
    monkeypatch.setattr(sqlite3, "connect", _refuse)
