"""kfp.local's output during ``tlops run``: the steps' log lines on stderr, kfp's own lines only at DEBUG.

kfp.local writes everything to stdout: its own records (``Executing task ...``, each task's outputs), and each step
subprocess's output (stdout and stderr merged), which holds the KFP executor's lines (the executor input as JSON,
``Wrote executor output file ...``) and the step's tlops log records. :func:`kfp_output_to_stderr` puts a
:class:`StepOutputFilter` in stdout's place while the pipeline runs, so the command's stdout keeps only its results.
The filter passes on the tlops records (one line each) and every traceback; the rest only when ``verbose``
(``tlops -v run``), unchanged.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

# The first line of each kind of record in kfp.local's stdout (a step's lines are indented by 4 spaces).
_TLOPS_RECORD = re.compile(r"^ {0,4}\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) tlops[.:]")
_TRACEBACK = re.compile(r"^ {0,4}Traceback \(most recent call last\):")
_KFP_LOCAL_PROBLEM = re.compile(r"^\d\d:\d\d:\d\d\.\d+ - (WARNING|ERROR|CRITICAL) - ")
_STEP_INDENT = "    "


class StepOutputFilter(io.TextIOBase):
    """A text stream that passes kfp.local's output on to ``target``, line by line, keeping what the user reads.

    Kept: tlops log records, tracebacks (up to the exception's line), and kfp.local's own warnings and errors; a
    step's 4-space indent is removed from them. Dropped unless ``verbose``: the KFP executor's lines (its input
    JSON among them), kfp.local's INFO records, other libraries' output in the steps (MLflow's notes, progress
    bars, warnings) and the blank separators.

    Args:
        target: Where kept lines go (stderr).
        verbose: Pass on every line as kfp.local wrote it.
    """

    def __init__(self, target: TextIO, verbose: bool) -> None:
        super().__init__()
        self.target, self.verbose = target, verbose
        self._partial = ""
        self._in_traceback = False
        self._lock = threading.Lock()

    def writable(self) -> bool:
        """Always: this is an output stream."""
        return True

    def write(self, text: str) -> int:
        """Take ``text``; pass on (or drop) each line it completes."""
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            for line in lines:
                self._line(line)
        return len(text)

    def flush(self) -> None:
        """Flush the target (a partial line waits for its end)."""
        with self._lock:
            self.target.flush()

    def close_partial(self) -> None:
        """Pass on a last line that no newline ended."""
        with self._lock:
            if self._partial:
                self._line(self._partial)
                self._partial = ""
            self.target.flush()

    def _line(self, line: str) -> None:
        if self.verbose:
            self.target.write(line + "\n")
            return
        text = line.removeprefix(_STEP_INDENT)
        if self._in_traceback:
            self.target.write(text + "\n")
            # The frames are indented; the exception's own line is not, and ends the traceback.
            self._in_traceback = not text.strip() or text.startswith((" ", "\t"))
        elif _TRACEBACK.match(line):
            self._in_traceback = True
            self.target.write(text + "\n")
        elif _TLOPS_RECORD.match(line) or _KFP_LOCAL_PROBLEM.match(line):
            self.target.write(text + "\n")


@contextlib.contextmanager
def kfp_output_to_stderr(verbose: bool, stderr: TextIO | None = None) -> Iterator[StepOutputFilter]:
    """Replace ``sys.stdout`` with a :class:`StepOutputFilter` onto stderr while the block runs.

    Args:
        verbose: Keep all of kfp.local's output (still on stderr).
        stderr: Where to write (default: ``sys.stderr`` as it is on entry).
    """
    output = StepOutputFilter(stderr or sys.stderr, verbose)
    try:
        with contextlib.redirect_stdout(output):  # type: ignore[type-var]
            yield output
    finally:
        output.close_partial()
