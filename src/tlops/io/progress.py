"""Progress of long loops: a tqdm bar on a terminal, a log line per interval everywhere else.

A bar redraws itself with carriage returns, which a terminal shows in place but a log (a pipe, a file, a KFP
pod's log, ``kfp.local``'s captured output) keeps as hundreds of lines. So when stderr is not a terminal,
:func:`progress` logs one line (``logging``, INFO) at most every ``TLOPS_PROGRESS_INTERVAL`` seconds
(default 30; read by :func:`tlops.io.logs.configure_logging` at the edges) and a closing line with the
totals; a loop shorter than the interval logs nothing.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TextIO, TypeVar

from tqdm import tqdm

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 30.0
INTERVAL_ENV = "TLOPS_PROGRESS_INTERVAL"

T = TypeVar("T")


_interval = PROGRESS_INTERVAL_S


def parse_interval(text: str | None) -> float:
    """Seconds from a ``TLOPS_PROGRESS_INTERVAL`` value: 30 when unset or not a number, never negative."""
    try:
        return max(0.0, float(text)) if text else PROGRESS_INTERVAL_S
    except ValueError:
        return PROGRESS_INTERVAL_S


def set_default_interval(seconds: float) -> None:
    """Set the seconds between progress lines for this process (the edges call it, from the environment)."""
    global _interval
    _interval = max(0.0, seconds)


def default_interval() -> float:
    """Seconds between progress lines when stderr is not a terminal (30 unless set by the edge)."""
    return _interval


class LoggedProgress(Generic[T]):
    """Iterates over ``iterable``, logging one line at most every ``interval`` seconds and a closing line.

    Args:
        iterable: What to iterate over.
        desc: What the loop does (``"fine-tune epoch 1/3"``).
        total: Number of items, when known.
        unit: Name of one item (``"batch"``).
        interval: Minimum seconds between two lines.
        clock: Monotonic clock in seconds (tests pass a fake one).
    """

    def __init__(
        self,
        iterable: Iterable[T],
        desc: str,
        total: int | None = None,
        unit: str = "it",
        interval: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.iterable = iterable
        self.desc = desc
        self.total = total
        self.unit = unit
        self.interval = interval
        self.clock = clock
        self.postfix = ""

    def set_postfix(self, **values: object) -> None:
        """Values shown at the end of the next line, e.g. ``loss=0.412``."""
        self.postfix = ", ".join(f"{name}={value}" for name, value in values.items())

    def __iter__(self) -> Iterator[T]:
        start = last = self.clock()
        count, logged = 0, 0
        for item in self.iterable:
            yield item
            count += 1
            now = self.clock()
            if now - last >= self.interval:
                logger.info(self.line(count, now - start))
                last, logged = now, count
        if logged and logged != count:
            logger.info(self.line(count, self.clock() - start))

    def line(self, count: int, elapsed: float) -> str:
        """The progress line after ``count`` items and ``elapsed`` seconds."""
        rate = count / elapsed if elapsed > 0 else 0.0
        done = f"{count}/{self.total}" if self.total else str(count)
        percent = f" ({100 * count / self.total:.0f}%)" if self.total else ""
        remaining = ""
        if self.total and rate > 0 and count < self.total:
            remaining = f", {tqdm.format_interval((self.total - count) / rate)} left"
        postfix = f", {self.postfix}" if self.postfix else ""
        return (
            f"{self.desc}: {done} {self.unit}{percent} in {tqdm.format_interval(elapsed)} "
            f"({rate:.3g} {self.unit}/s{remaining}{postfix})"
        )


class _Bar(Generic[T]):
    """A tqdm bar behind the same interface as :class:`LoggedProgress`."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def set_postfix(self, **values: object) -> None:
        self.bar.set_postfix(values, refresh=False)

    def __iter__(self) -> Iterator[T]:
        return iter(self.bar)


def progress(
    iterable: Iterable[T],
    desc: str,
    total: int | None = None,
    unit: str = "it",
    *,
    stream: TextIO | None = None,
    interval: float | None = None,
) -> LoggedProgress[T] | _Bar[T]:
    """Wrap a long loop to report its progress: a bar on a terminal, else a log line per interval.

    Args:
        iterable: What the loop iterates over.
        desc: What the loop does, shown first.
        total: Number of items (default: ``len(iterable)`` when it has one).
        unit: Name of one item.
        stream: The stream a bar would be drawn on (default: ``sys.stderr``); decides terminal or not.
        interval: Seconds between log lines (default: :func:`default_interval`).

    Returns:
        An iterable with ``set_postfix(**values)`` for values such as a running loss.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    stream = stream if stream is not None else sys.stderr
    if _is_terminal(stream):
        return _Bar(tqdm(iterable, desc=desc, total=total, unit=unit, file=stream, mininterval=1.0, dynamic_ncols=True))
    return LoggedProgress(iterable, desc, total, unit, default_interval() if interval is None else interval)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
