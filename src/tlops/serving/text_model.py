"""The served text classifier: strings in, label and calibrated probabilities out.

:class:`TextClassifierModel` is an MLflow ``PythonModel`` loaded from code (``served_text_model.py``), never
unpickled. Its artifacts are the network folder (``network/``, see :mod:`tlops.serving.text_networks`: a
self-contained Hugging Face encoder and tokenizer plus the head, or the TF-IDF model's folder) and
``text_serving.json`` (:class:`TextServingConfig`: classes, kind, temperature, max_length, pooling).

Input: a DataFrame with a ``text`` column of strings (or a list or Series of strings, in process).
Output: the image model's columns (:mod:`tlops.serving.outputs`): ``label``, ``probability``, ``probabilities``
(class -> calibrated probability), ``top_k`` and ``error``. A null, non-string, empty or whitespace-only cell gets
its own ``error``; the other rows are still answered, in the order given.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

from tlops.serving.outputs import answer_row, calibrated, error_row, output_frame
from tlops.serving.text_networks import TextLogits, TfidfLoader, TransformerLogits, load_tfidf

TEXT_COLUMN = "text"
NETWORK_ARTIFACT = "network"
CONFIG_ARTIFACT = "config"
NETWORK_DIR = "network"
CONFIG_FILE = "text_serving.json"
KINDS = ("transformer", "tfidf")


@dataclass(frozen=True)
class TextServingConfig:
    """What the served text model needs besides the network.

    Attributes:
        classes: Class names in the order of the network's outputs.
        kind: ``"transformer"`` (encoder, pooling, head) or ``"tfidf"`` (the TF-IDF baseline).
        temperature: Temperature the logits are divided by before the softmax (fitted on the validation split).
        max_length: Tokens kept of each text (transformer only).
        pooling: How token embeddings become one (transformer only; ``"mean"``).
        top_k: How many classes ``top_k`` lists.
        batch_size: Texts per forward pass (transformer only).
    """

    classes: list[str]
    kind: str = "transformer"
    temperature: float = 1.0
    max_length: int = 256
    pooling: str = "mean"
    top_k: int = 5
    batch_size: int = 32

    def __post_init__(self) -> None:
        """Refuse a configuration the served model could not run."""
        if self.kind not in KINDS:
            raise ValueError(f"unknown text model kind {self.kind!r}: use one of {', '.join(KINDS)}")
        if not self.classes:
            raise ValueError("a served text model needs its class names: pass the classes in the logits' order")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.max_length < 1 or self.top_k < 1 or self.batch_size < 1:
            raise ValueError("max_length, top_k and batch_size must be at least 1")

    def write(self, path: Path) -> Path:
        """Write as JSON."""
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, path: Path | str) -> TextServingConfig:
        """Read what :meth:`write` wrote."""
        return cls(**json.loads(Path(path).read_text()))


def load_network(folder: Path, config: TextServingConfig, tfidf_load: TfidfLoader = load_tfidf) -> TextLogits:
    """The network saved in ``folder`` as ``config.kind`` says; ``tfidf_load(folder)`` reads a TF-IDF model."""
    if config.kind == "tfidf":
        return tfidf_load(Path(folder))
    return TransformerLogits.load(Path(folder), config.max_length, config.batch_size, config.pooling)


class TextClassifierModel(PythonModel):
    """MLflow ``PythonModel`` over a text network (:class:`~tlops.serving.text_networks.TextLogits`).

    Args:
        tfidf_load: Reads a TF-IDF model from its folder (the real baseline's ``load`` unless given).
    """

    # The signature's ``text`` column is nullable; each cell is checked here, row by row.
    _skip_type_hint_validation = True

    def __init__(self, tfidf_load: TfidfLoader = load_tfidf) -> None:
        self.tfidf_load = tfidf_load

    def load_context(self, context: Any) -> None:
        """Load the network and the configuration from the model's artifacts."""
        self.config = TextServingConfig.read(context.artifacts[CONFIG_ARTIFACT])
        self.network = load_network(Path(context.artifacts[NETWORK_ARTIFACT]), self.config, self.tfidf_load)

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Classify each text of ``model_input``; a row with no usable text gets an ``error`` instead.

        Args:
            context: MLflow's model context (unused: :meth:`load_context` read the artifacts).
            model_input: DataFrame with a ``text`` column, or a list or Series of strings.
            params: Unused.

        Raises:
            ValueError: The input has no ``text`` column, or the network's logits do not match the classes.
        """
        texts = _texts_of(model_input)
        rows: list[dict[str, Any]] = [{}] * len(texts)
        good: list[int] = []
        for index, text in enumerate(texts):
            problem = text_problem(text)
            if problem is None:
                good.append(index)
            else:
                rows[index] = error_row(problem)
        if good:
            logits = self.network.logits([texts[i] for i in good])
            if logits.shape != (len(good), len(self.config.classes)):
                raise ValueError(
                    f"the network gave logits of shape {logits.shape} for {len(good)} texts and "
                    f"{len(self.config.classes)} classes: log the model with the classes of its outputs"
                )
            for index, row in zip(good, calibrated(logits, self.config.temperature), strict=True):
                rows[index] = answer_row(row, self.config.classes, self.config.top_k)
        return output_frame(rows)


def text_problem(text: Any) -> str | None:
    """Why a cell cannot be classified (null, not a string, empty or only whitespace), or ``None`` if it can."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return "the row has no text (null): send a non-empty string"
    if not isinstance(text, str):
        return f"the row's text is a {type(text).__name__}, not a string: send the text as a string"
    if not text.strip():
        return "the row's text is empty or only whitespace: send a non-empty string"
    return None


def _texts_of(model_input: Any) -> list[Any]:
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN not in model_input.columns:
            raise ValueError(f"the input has no {TEXT_COLUMN!r} column (columns: {list(model_input.columns)})")
        return list(model_input[TEXT_COLUMN])
    if isinstance(model_input, list | tuple | pd.Series):
        return list(model_input)
    raise ValueError(
        f"cannot read texts from {type(model_input).__name__}: pass a DataFrame with a {TEXT_COLUMN!r} column "
        "of strings"
    )
