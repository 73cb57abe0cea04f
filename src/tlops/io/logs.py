"""Logging for tlops's own records: one concise line each, on stderr.

The library only logs (``logger = logging.getLogger(__name__)`` per module); the edges configure: the CLI
(``tlops -v``/``--log-level``) and each KFP component body, which calls :func:`configure_logging` first. The
level is ``TLOPS_LOG_LEVEL`` when not given, so ``tlops --log-level`` reaches the steps ``tlops run`` starts.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

from tlops.io.progress import INTERVAL_ENV, parse_interval, set_default_interval

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LEVEL_ENV = "TLOPS_LOG_LEVEL"
_HANDLER_NAME = "tlops"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (test runners and notebooks replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(
    level: int | str | None = None, stream: TextIO | None = None, environ: Mapping[str, str] | None = None
) -> None:
    """Send the ``tlops`` loggers' records at ``level`` and above to ``stream`` (stderr), one line each.

    Only the ``tlops`` logger tree is configured, with its own handler and no propagation to the root logger:
    the records look the same whether the root logger is unset (the CLI) or set by someone else (KFP's executor
    configures it for its own lines). Calling it again replaces the handler instead of adding a second one.

    Args:
        level: A logging level or its name (``"DEBUG"``, ``"INFO"``, ...); default: ``TLOPS_LOG_LEVEL``, else
            INFO (also for a name logging does not know).
        stream: Where to write (default: ``sys.stderr``, whatever it is when a record comes).
        environ: The environment, for ``TLOPS_LOG_LEVEL`` and ``TLOPS_PROGRESS_INTERVAL`` (default: ``os.environ``;
            only the edges call this function).
    """
    environ = os.environ if environ is None else environ
    set_default_interval(parse_interval(environ.get(INTERVAL_ENV)))
    if level is None:
        level = environ.get(LEVEL_ENV) or logging.INFO
    if isinstance(level, str):
        known = logging.getLevelName(level.strip().upper())
        level = known if isinstance(known, int) else logging.INFO
    logger = logging.getLogger("tlops")
    for handler in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
