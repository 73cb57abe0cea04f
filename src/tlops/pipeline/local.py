"""Running the same @dsl.pipeline on this machine through kfp.local (no cluster, no server)."""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.errors import TlopsError
from tlops.pipeline.local_output import kfp_output_to_stderr

if TYPE_CHECKING:
    from tlops.steps.outputs import RunSummary

logger = logging.getLogger(__name__)

PIPELINE_ROOT = "pipeline_root"
RUNS_DIR = "runs"  # OUTPUT/runs/<time>-<run id>/run_summary.json: every run's summary, kept
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (kfp.local colours task names and statuses)."""
    return _ANSI.sub("", text)


class PipelineFailed(RuntimeError):
    """A step of a local pipeline run failed (its log was printed above)."""


def run_locally(parameters: dict[str, Any], output_dir: Path) -> RunSummary:
    """Execute the transfer-learning pipeline with kfp.local's SubprocessRunner in this Python environment.

    A run that fails (or is interrupted) leaves nothing in ``output_dir/pipeline_root``: its partial folder is
    removed, and so is ``pipeline_root`` when this run created it. Nothing goes to stdout: the steps' log lines
    and tracebacks go to stderr, and the rest of kfp.local's output (the executor's input JSON, its task records)
    too when this module's logger is enabled for DEBUG (``tlops -v``); see :mod:`tlops.pipeline.local_output`.
    kfp.local's colours are off when stderr is no terminal.

    Args:
        parameters: Pipeline parameters (``data_uri``, ``tracking_uri``, ...).
        output_dir: Run directory; artifacts go to ``output_dir/pipeline_root``.

    Returns:
        The registration summary the pipeline produced.

    Raises:
        PipelineFailed: when a step fails (the message is one line, without colour codes).
    """
    from kfp import local

    from tlops.pipeline.pipeline import build_pipeline
    from tlops.steps.outputs import RunSummary

    root = (output_dir / PIPELINE_ROOT).resolve()
    existed = root.is_dir()
    before = set(root.iterdir()) if existed else set()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    try:
        try:
            verbose = logger.isEnabledFor(logging.DEBUG)
            with warnings.catch_warnings(), _plain_kfp_logs(), kfp_output_to_stderr(verbose):
                # kfp.local warns that images and Kubernetes settings are ignored locally: expected here.
                warnings.filterwarnings("ignore", category=UserWarning, module=r"kfp\.local")
                warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"kfp\.local")
                build_pipeline(
                    scoring_parallelism=1, retries=False, candidates_from_data=False, extraction_parallelism=1
                )(**parameters)
        except RuntimeError as error:
            text = strip_ansi(str(error)).strip()
            raise PipelineFailed(text.splitlines()[-1] if text else "a step failed") from None
        # The register step's folder holds the summary (a pipeline has no outputs from inside an exit handler).
        summaries = [path for entry in set(root.iterdir()) - before for path in entry.rglob(RunSummary.FILE)]
        if len(summaries) != 1:
            raise TlopsError(f"the pipeline finished but wrote {len(summaries)} registration summaries under {root}")
        return RunSummary.read(summaries[0].parent)
    except BaseException:
        _remove_partial_run(root, existed, before)
        raise


@contextmanager
def _plain_kfp_logs() -> Iterator[None]:
    """Turn kfp.local's ANSI colours off while it runs, unless stderr is a terminal."""
    if sys.stderr.isatty():
        yield
        return
    from kfp.local import logging_utils

    original = logging_utils.color_text
    logging_utils.color_text = lambda text, _color: text
    try:
        yield
    finally:
        logging_utils.color_text = original


def _remove_partial_run(root: Path, existed: bool, before: set[Path]) -> None:
    """Remove what a failed run added under ``root``; ``root`` itself when the run created it."""
    if not root.is_dir():
        return
    for entry in sorted(set(root.iterdir()) - before):
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        logger.info("removed the failed run's partial outputs %s", entry)
    if not existed and not any(root.iterdir()):
        root.rmdir()


def keep_run_summary(summary: RunSummary, output_dir: Path) -> tuple[Path, Path, str]:
    """Write a run's summary as ``OUTPUT/run_summary.json`` (the latest) and ``OUTPUT/runs/<time>-<run>/``.

    Each run's summary is kept under ``runs/``; the latest is also at the top. A summary at the top that no
    ``runs/`` folder holds (written by an older tlops) is moved there first, so nothing is lost.

    Returns:
        The latest summary's path, this run's kept copy, and a note on the summary it replaced (``""`` if none).
    """
    latest = Path(output_dir) / summary.FILE
    runs = Path(output_dir) / RUNS_DIR
    note = ""
    if latest.is_file():
        previous = _json_or_empty(latest)
        note = (
            f"replaces the previous run's (version {previous.get('version', '?')}, MLflow run "
            f"{str(previous.get('run_id', '?'))[:8]})"
        )
        kept = [path for path in runs.glob(f"*/{summary.FILE}") if path.read_bytes() == latest.read_bytes()]
        if not kept:  # from a tlops that did not keep runs: keep it now, under its own time
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(latest.stat().st_mtime))
            folder = runs / f"{stamp}-{str(previous.get('run_id', 'earlier'))[:8]}"
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(latest, folder / summary.FILE)
        note += f"; every run's summary is kept in {runs}"
    copy = summary.write(runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{summary.run_id[:8]}")
    shutil.copyfile(copy, latest.with_suffix(".json.tmp"))
    latest.with_suffix(".json.tmp").replace(latest)
    return latest, copy, note


def _json_or_empty(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}
