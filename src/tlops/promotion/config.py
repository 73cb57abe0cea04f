"""Where and under which name a model is registered: :class:`RegistryConfig` (no MLflow import, for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass


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
