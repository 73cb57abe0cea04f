"""Object detection: images with boxes (COCO, Pascal VOC, YOLO, KITTI), a detector on a pretrained backbone, mAP."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlops.data.prepared import OBJECT_DETECTION
from tlops.models.names import PIXELS_BASELINE
from tlops.tasks.protocol import TASKS

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from tlops.data.config import SplitConfig
    from tlops.data.prepared import PreparedData
    from tlops.data.prepared_cache import PreparedCache
    from tlops.io.storage import S3Client


class ObjectDetection:
    """The third task: boxes and their classes per image; FasterRCNN or FCOS on a backbone with an FPN.

    Candidates are ranked on the crops of the labelled boxes (:mod:`tlops.steps.box_crops`), against the raw-pixel
    baseline as the no-transfer row; the detector is trained by the fine-tune step and measured by COCO mAP.
    """

    name = OBJECT_DETECTION
    summary = "boxes and classes per image: a COCO, Pascal VOC, YOLO or KITTI export; served from image bytes"
    default_backbones = ("efficientnet_lite0",)
    baseline = PIXELS_BASELINE
    ships_baseline = False

    def recognises(self, source: str, s3: S3Client | None) -> bool:
        """Whether the source holds the annotations of a detection format (a few file heads are read)."""
        from tlops.data.detection.recognise import recognises

        return recognises(source, s3)

    def check_backbone(self, name: str) -> None:
        """:func:`tlops.models.names.check_backbone_name` (the detector takes the image backbones)."""
        from tlops.models.names import check_backbone_name

        check_backbone_name(name)

    def prepare(
        self,
        source: str,
        output: Path,
        config: SplitConfig,
        s3: S3Client | None,
        cache: PreparedCache | None = None,
        fingerprint: str | None = None,
    ) -> PreparedData:
        """:func:`tlops.data.detection.prepare.prepare_detection_data`."""
        from tlops.data.detection.prepare import prepare_detection_data

        return prepare_detection_data(source, output, config, s3, cache, fingerprint)

    def preflight(
        self, source: str, config: SplitConfig, s3: S3Client | None, cache: PreparedCache | None
    ) -> PreparedData:
        """Prepare into the cache (or a scratch folder): every annotation parsed and every image checked."""
        with tempfile.TemporaryDirectory(prefix="tlops-preflight-") as scratch:
            return self.prepare(source, Path(scratch) / "prepared", config, s3, cache)

    def build_model(self, backbone: Any, num_classes: int, head: nn.Module | None = None) -> nn.Module:
        """Not used: the detection fine-tune step builds the detector (:func:`tlops.models.detector.build_detector`).

        Raises:
            NotImplementedError: always; a detector is not a backbone with a classification head.
        """
        raise NotImplementedError("a detector is built by tlops.models.detector.build_detector")

    def metrics(self, targets: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict[str, float]:
        """The classification metrics of the box crops (what selection scores); the detector's are COCO mAP."""
        from tlops.evaluation.metrics import compute_metrics

        return compute_metrics(probabilities, targets, classes).metrics

    def gate_statistic(self, targets: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """Whether each box crop is classified correctly (selection only; the gate pairs per-image AP)."""
        return probabilities.argmax(axis=1) == targets

    def serving_signature(self, classes: list[str]) -> Any:
        """One column ``image`` (bytes) in; boxes, labels and scores out."""
        from tlops.serving.detection_package import served_detection_signature

        return served_detection_signature()


TASKS.add(ObjectDetection.name, ObjectDetection())
