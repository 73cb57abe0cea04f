"""Where and under which name a model is registered: :class:`RegistryConfig`, and the check of a model name.

Nothing here imports MLflow at import time (the CLI reads the defaults).
"""

from __future__ import annotations

from dataclasses import dataclass

from tlops.errors import TlopsError


@dataclass(frozen=True)
class RegistryConfig:
    """Where and under which name a model is registered.

    Attributes:
        tracking_uri: MLflow tracking URI (server or local store).
        experiment: MLflow experiment of the run.
        model_name: Registered model name.
    """

    tracking_uri: str
    experiment: str = "tlops"
    model_name: str = "tlops-classifier"


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
