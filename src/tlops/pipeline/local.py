"""Running the same @dsl.pipeline on this machine through kfp.local (no cluster, no server)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from tlops.errors import TlopsError


class PipelineFailed(RuntimeError):
    """A step of a local pipeline run failed (its log was printed above)."""


def run_locally(parameters: dict[str, Any], output_dir: Path) -> dict:
    """Execute the transfer-learning pipeline with kfp.local's SubprocessRunner in this Python environment.

    Args:
        parameters: Pipeline parameters (``data_uri``, ``tracking_uri``, ...).
        output_dir: Run directory; artifacts go to ``output_dir/pipeline_root``.

    Returns:
        The registration summary the pipeline produced.

    Raises:
        PipelineFailed: when a step fails.
    """
    from kfp import local

    from tlops.pipeline.pipeline import transfer_learning_pipeline

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str((output_dir / "pipeline_root").resolve()),
        raise_on_error=True,
    )
    try:
        with warnings.catch_warnings():
            # kfp.local warns that images and Kubernetes settings are ignored locally: expected here.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"kfp\.local")
            warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"kfp\.local")
            task = transfer_learning_pipeline(**parameters)
    except RuntimeError as error:
        raise PipelineFailed(str(error).strip().splitlines()[-1] if str(error).strip() else "a step failed") from None
    artifact = task.output
    path = Path(getattr(artifact, "path", "") or "")
    if not path.is_file():
        raise TlopsError(f"the pipeline finished but wrote no registration summary at {path}")
    return json.loads(path.read_text())
