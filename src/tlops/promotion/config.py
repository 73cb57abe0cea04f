"""Where and under which name a model is registered: :class:`RegistryConfig`, and the check of a model name.

Nothing here imports MLflow at import time (the CLI reads the defaults).
"""

from __future__ import annotations

from dataclasses import dataclass

from tlops.errors import TlopsError
from tlops.settings import internal, setting


@dataclass(frozen=True)
class RegistryConfig:
    """Where and under which name a model is registered.

    ``tracking_uri`` is not a setting of the run config: each edge resolves it (``--tracking-uri``,
    ``$MLFLOW_TRACKING_URI`` or the local store on the CLI; a required parameter on Kubeflow).
    """

    tracking_uri: str = internal("")
    experiment: str = setting("tlops", "MLflow experiment of the run", parameter=True)
    model_name: str = setting("tlops-classifier", "registered model name", parameter=True)


def check_model_name(name: str, flag: str = "--model-name") -> None:
    """Refuse a registered model name MLflow would refuse, before any work (MLflow's own rules).

    Raises:
        TlopsError: naming the flag, the name and the rule.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(name)
    except MlflowException as error:
        raise TlopsError(f"{flag} {name!r} is not a name MLflow accepts: {error.message}") from None
