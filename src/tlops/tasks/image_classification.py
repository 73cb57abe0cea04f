"""Image classification: images in class folders (or a CSV, or pre-split), a linear or fine-tuned head."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.data.prepared import IMAGE_CLASSIFICATION
from tlops.models.names import PIXELS_BASELINE
from tlops.tasks.protocol import TASKS

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from tlops.data.config import SplitConfig
    from tlops.data.prepared import PreparedData
    from tlops.data.prepared_cache import PreparedCache
    from tlops.io.storage import S3Client
    from tlops.models.backbones import Backbone


class ImageClassification:
    """The first task: one label per image, accuracy-family metrics, image bytes in, label and probabilities out."""

    name = IMAGE_CLASSIFICATION
    summary = "one label per image: ImageFolder, pre-split train/val/test or a CSV manifest; served from image bytes"
    default_backbones = ("efficientnet_lite0",)
    baseline = PIXELS_BASELINE
    ships_baseline = True

    def recognises(self, source: str, s3: S3Client | None) -> bool:
        """Any source: the default task, asked after the others (its layouts are the most general)."""
        return True

    def check_backbone(self, name: str) -> None:
        """:func:`tlops.models.names.check_backbone_name`."""
        from tlops.models.names import check_backbone_name

        check_backbone_name(name)

    def preflight(
        self, source: str, config: SplitConfig, s3: S3Client | None, cache: PreparedCache | None
    ) -> PreparedData:
        """:func:`tlops.data.prepare.preflight_dataset`: every image decoded once, prepared into ``cache``."""
        from tlops.data.prepare import preflight_dataset

        return preflight_dataset(source, config, s3, cache)

    def prepare(
        self,
        source: str,
        output: Path,
        config: SplitConfig,
        s3: S3Client | None,
        cache: PreparedCache | None = None,
        fingerprint: str | None = None,
    ) -> PreparedData:
        """:func:`tlops.data.prepare.prepare_data` (``cache``: the prepared-dataset cache), stamped with the task."""
        from dataclasses import replace

        from tlops.data.prepare import prepare_data

        prepared = replace(prepare_data(source, output, config, s3, cache, fingerprint), task=self.name)
        prepared.write(output)
        return prepared

    def build_model(self, backbone: Backbone, num_classes: int, head: nn.Module | None = None) -> nn.Module:
        """:func:`tlops.models.backbones.build_classifier`: normalisation, backbone, linear (or given) head."""
        from tlops.models.backbones import build_classifier

        return build_classifier(backbone, num_classes, head=head)

    def metrics(self, targets: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict[str, float]:
        """:func:`tlops.evaluation.metrics.compute_metrics`."""
        from tlops.evaluation.metrics import compute_metrics

        return compute_metrics(probabilities, targets, classes).metrics

    def gate_statistic(self, targets: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """Whether each test image is classified correctly (the gate pairs these for accuracy and McNemar)."""
        return probabilities.argmax(axis=1) == targets

    def serving_signature(self, classes: list[str]) -> Any:
        """:func:`tlops.serving.package.served_signature`: image bytes in, label and probabilities out."""
        from tlops.serving.package import served_signature

        return served_signature(classes)


TASKS.add(ImageClassification.name, ImageClassification())
