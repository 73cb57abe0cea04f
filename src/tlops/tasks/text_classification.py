"""Text classification: texts with labels (a table or folders of .txt files), a pretrained encoder, a head."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.data.prepared import TEXT_CLASSIFICATION
from tlops.models.names import TFIDF_BASELINE
from tlops.tasks.protocol import TASKS

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from tlops.data.config import SplitConfig
    from tlops.data.prepared import PreparedData
    from tlops.data.prepared_cache import PreparedCache
    from tlops.io.storage import S3Client


class TextClassification:
    """The second task: one label per text; a frozen or fine-tuned encoder, or the TF-IDF baseline; strings in."""

    name = TEXT_CLASSIFICATION
    summary = "one label per text: a CSV/TSV/JSONL/Parquet table (text, label[, split]) or class folders of .txt"
    default_backbones = ("minilm",)
    baseline = TFIDF_BASELINE
    ships_baseline = True

    def recognises(self, source: str, s3: S3Client | None) -> bool:
        """:func:`tlops.data.text.detect.is_text_source`: a table with a text column, or class folders of .txt."""
        from tlops.data.text.detect import is_text_source

        return is_text_source(source, s3)

    def check_backbone(self, name: str) -> None:
        """:func:`tlops.models.text_names.check_text_encoder_name`."""
        from tlops.models.text_names import check_text_encoder_name

        check_text_encoder_name(name)

    def prepare(
        self,
        source: str,
        output: Path,
        config: SplitConfig,
        s3: S3Client | None,
        cache: PreparedCache | None = None,
        fingerprint: str | None = None,
    ) -> PreparedData:
        """:func:`tlops.data.text.prepare.prepare_text_data`."""
        from tlops.data.text.prepare import prepare_text_data

        return prepare_text_data(source, output, config, s3, cache, fingerprint)

    def preflight(
        self, source: str, config: SplitConfig, s3: S3Client | None, cache: PreparedCache | None
    ) -> PreparedData:
        """Prepare into a scratch folder (reading texts is cheap): every check the prepare-data step makes."""
        with tempfile.TemporaryDirectory(prefix="tlops-preflight-") as scratch:
            return self.prepare(source, Path(scratch) / "prepared", config, s3)

    def build_model(self, backbone: Any, num_classes: int, head: nn.Module | None = None) -> nn.Module:
        """:class:`tlops.models.text_classifier.TextClassifier` on the encoder, with a linear (or given) head."""
        from torch import nn

        from tlops.models.text_classifier import TextClassifier

        return TextClassifier(
            backbone.model, head if head is not None else nn.Linear(backbone.num_features, num_classes)
        )

    def metrics(self, targets: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict[str, float]:
        """:func:`tlops.evaluation.metrics.compute_metrics` (the same metrics as images)."""
        from tlops.evaluation.metrics import compute_metrics

        return compute_metrics(probabilities, targets, classes).metrics

    def gate_statistic(self, targets: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """Whether each test text is classified correctly (the gate pairs these for accuracy and McNemar)."""
        return probabilities.argmax(axis=1) == targets

    def serving_signature(self, classes: list[str]) -> Any:
        """One string column ``text`` in; label and probabilities out."""
        from tlops.serving.text_package import served_text_signature

        return served_text_signature()


TASKS.add(TextClassification.name, TextClassification())
