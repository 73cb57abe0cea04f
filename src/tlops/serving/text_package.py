"""Packaging a trained text classifier as the served MLflow model: artifacts, signature, example, and logging.

The served model is the pyfunc of :mod:`tlops.serving.text_model` (strings in, labels and calibrated
probabilities out), loaded from code with the network saved as files (no pickle): a transformer as a
self-contained Hugging Face folder plus its head, the TF-IDF baseline as its own ``save(folder)`` wrote it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from tlops.serving.packaging import (
    SERVED_MODEL_NAME,
    LoggedModels,
    copy_code,
    output_schema,
    package_dir,
    pinned_requirements,
)
from tlops.serving.text_model import (
    CONFIG_ARTIFACT,
    CONFIG_FILE,
    NETWORK_ARTIFACT,
    NETWORK_DIR,
    TEXT_COLUMN,
    TextServingConfig,
)
from tlops.serving.text_networks import TransformerLogits

# What each kind of served text model imports (pinned as installed).
REQUIREMENTS = {
    "transformer": ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas"),
    "tfidf": ("mlflow", "numpy", "pandas", "scikit-learn"),
}
EXAMPLE_TEXTS = ("A short example sentence.", "Another, slightly longer example text to classify.")


def served_text_signature() -> Any:
    """Input: one nullable string column ``text``; output: the columns every served classifier answers in.

    Nullable, so that a null cell reaches the model and gets its own ``error`` (MLflow hands other JSON values of
    the column over as they are, and the model answers those rows with an ``error`` too).
    """
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import ColSpec, Schema

    inputs = Schema([ColSpec(DataType.string, TEXT_COLUMN, required=False)])
    return ModelSignature(inputs=inputs, outputs=output_schema())


def example_texts() -> Any:
    """A DataFrame of two strings: the input example logged with the model."""
    import pandas as pd

    return pd.DataFrame({TEXT_COLUMN: list(EXAMPLE_TEXTS)})


def served_text_requirements(kind: str) -> list[str]:
    """What a served text model of ``kind`` imports, pinned as installed."""
    return pinned_requirements(REQUIREMENTS[kind])


def save_network(model: Any, tokenizer: Any | None, config: TextServingConfig, folder: Path) -> Path:
    """Write the network's files into ``folder``, as :func:`tlops.serving.text_model.load_network` reads them.

    Args:
        model: A :class:`~tlops.models.text_classifier.TextClassifier` (kind ``transformer``), or the TF-IDF model
            (kind ``tfidf``: anything with ``save(folder)``).
        tokenizer: The encoder's tokenizer (transformer); ``None`` for TF-IDF.
        config: The served model's configuration (its ``kind`` says which of the two ``model`` is).
        folder: Where to write; created.

    Raises:
        ValueError: A tokenizer is missing for a transformer, or given for TF-IDF.
    """
    if config.kind == "transformer":
        if tokenizer is None:
            raise ValueError("a transformer text model is served with its tokenizer: pass the encoder's tokenizer")
        return TransformerLogits(model, tokenizer, config.max_length, config.batch_size).save(folder)
    if tokenizer is not None:
        raise ValueError("a TF-IDF model has no tokenizer to serve: pass tokenizer=None for kind 'tfidf'")
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder)
    return folder


def log_served_text_model(
    model: Any, tokenizer: Any | None, config: TextServingConfig, metadata: dict[str, Any]
) -> LoggedModels:
    """Log the served text pyfunc into the active MLflow run.

    Args:
        model: The trained :class:`~tlops.models.text_classifier.TextClassifier` (``config.kind == "transformer"``;
            LoRA adapters are merged into the saved copy), or the TF-IDF model (``"tfidf"``, saved by its
            ``save(folder)``).
        tokenizer: The encoder's Hugging Face tokenizer; ``None`` for TF-IDF.
        config: Classes, kind, temperature, max_length and pooling of the served model.
        metadata: Stored in the model's ``MLmodel`` (classes, encoder, lineage).

    Returns:
        The ``ModelInfo`` of the served model (``tensors`` is ``None``: no tensor model is logged for text).
    """
    import mlflow

    with tempfile.TemporaryDirectory(prefix="tlops-text-serving-") as scratch:
        network = save_network(model, tokenizer, config, Path(scratch) / NETWORK_DIR)
        settings = config.write(Path(scratch) / CONFIG_FILE)
        info = mlflow.pyfunc.log_model(
            name=SERVED_MODEL_NAME,
            python_model=str(package_dir() / "serving" / "served_text_model.py"),
            artifacts={NETWORK_ARTIFACT: str(network), CONFIG_ARTIFACT: str(settings)},
            code_paths=[str(copy_code(Path(scratch)))],
            signature=served_text_signature(),
            input_example=example_texts(),
            pip_requirements=served_text_requirements(config.kind),
            metadata=metadata,
        )
    return LoggedModels(info, None)
