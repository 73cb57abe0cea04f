"""Assertions on a refusal: a ``TlopsError`` of one line, or a command's one ``tlops: error:`` line."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from tlops.errors import TlopsError


def one_line(error: pytest.ExceptionInfo[TlopsError], *needles: str) -> str:
    """The message of ``error``: one line, holding each of ``needles``."""
    message = str(error.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def one_error_line(result: subprocess.CompletedProcess[str] | SimpleNamespace, *needles: str) -> str:
    """Exit status 2 and stderr one ``tlops: error:`` line holding each of ``needles``; returns that line."""
    assert result.returncode == 2, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tlops: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def only_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    """As :func:`one_error_line`, and nothing else printed: no traceback, nothing on stdout."""
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tlops: error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == "", result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
