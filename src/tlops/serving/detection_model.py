"""The served object detector: raw image bytes in, boxes, class names and scores out.

:class:`ObjectDetector` is an MLflow ``PythonModel`` loaded from code (``served_detection_model.py``), never
unpickled. Its artifact is the detector folder :func:`tlops.models.detector_checkpoint.save_detector` wrote
(safetensors weights and a JSON config); the network is rebuilt from them, offline.

Input: a DataFrame with an ``image`` column, decoded exactly as the image classifier decodes it
(:mod:`tlops.serving.model`: encoded bytes, their base64 text, or ``(H, W, 3)`` uint8 arrays).
Output: one row per image with ``boxes`` (``[x1, y1, x2, y2]`` in the pixels of the image sent), ``labels`` (class
names), ``scores`` (best first) and ``error`` (why a row could not be read; then the other columns are empty).
Params: ``score_threshold`` (default 0.3) and ``max_detections`` (default 100).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

from tlops.serving.model import _images_of, _picture

DETECTOR_ARTIFACT = "detector"
DETECTOR_DIR = "detector"
OUTPUT_COLUMNS = ("boxes", "labels", "scores", "error")
SCORE_THRESHOLD = 0.3
MAX_DETECTIONS = 100
BATCH_SIZE = 8
MAX_PIXELS = 89_478_485


class ObjectDetector(PythonModel):
    """MLflow ``PythonModel`` over a detector saved by :func:`~tlops.models.detector_checkpoint.save_detector`."""

    # The ``image`` column is typed ``Any`` in the signature; each cell is checked here, row by row.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        """Rebuild the detector from the model's artifact folder."""
        self.load(Path(context.artifacts[DETECTOR_ARTIFACT]))

    def load(self, folder: Path) -> None:
        """Rebuild the detector from a folder ``save_detector`` wrote (what :meth:`load_context` does)."""
        from tlops.models.detector_checkpoint import load_detector

        self.network, self.config = load_detector(folder)

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Detect objects in each image of ``model_input``; a row that cannot be read gets an ``error`` instead.

        Args:
            context: MLflow's model context (unused: :meth:`load_context` read the artifact).
            model_input: DataFrame with an ``image`` column, a list of images, or an ``(N, H, W, 3)`` uint8 array.
            params: ``score_threshold`` (0..1) and ``max_detections`` (at least 1).

        Raises:
            ValueError: The input has no ``image`` column, or a param is out of range.
        """
        threshold, limit = _limits(params or {})
        from tlops.models.detector import set_inference_limits

        set_inference_limits(self.network, threshold, limit)
        images = _images_of(model_input)
        rows: list[dict[str, Any]] = [{}] * len(images)
        batch: list[tuple[int, Any]] = []
        for index, image in enumerate(images):
            try:
                batch.append((index, _tensor(_picture(image, MAX_PIXELS))))
            except Exception as error:  # a bad row is reported in its row: never fails the batch
                rows[index] = error_row(error)
            if len(batch) == BATCH_SIZE:
                self._detect(batch, rows, threshold, limit)
                batch = []
        if batch:
            self._detect(batch, rows, threshold, limit)
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS), dtype=object)

    def _detect(self, batch: list[tuple[int, Any]], rows: list[dict[str, Any]], threshold: float, limit: int) -> None:
        import torch

        with torch.inference_mode():
            outputs = self.network([tensor for _, tensor in batch])
        for (index, _), output in zip(batch, outputs, strict=True):
            keep = output["scores"] >= threshold
            order = torch.argsort(output["scores"][keep], descending=True)[:limit]
            boxes, labels, scores = (output[key][keep][order] for key in ("boxes", "labels", "scores"))
            rows[index] = {
                "boxes": [[float(v) for v in box] for box in boxes.tolist()],
                "labels": [self.config.classes[int(label) - 1] for label in labels.tolist()],
                "scores": [float(score) for score in scores.tolist()],
                "error": None,
            }


def error_row(error: Exception | str) -> dict[str, Any]:
    """The answer for a row that could not be read: only ``error`` is set."""
    return {"boxes": None, "labels": None, "scores": None, "error": str(error)}


def _limits(params: dict[str, Any]) -> tuple[float, int]:
    threshold = float(params.get("score_threshold", SCORE_THRESHOLD))
    limit = int(params.get("max_detections", MAX_DETECTIONS))
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"score_threshold must be within 0..1, got {threshold}")
    if limit < 1:
        raise ValueError(f"max_detections must be at least 1, got {limit}")
    return threshold, limit


def _tensor(picture: Any) -> Any:
    """A ``(3, H, W)`` float tensor in 0..1 of an RGB PIL image, at its own size (the detector resizes)."""
    from torchvision.transforms.v2 import functional

    return functional.to_dtype(functional.to_image(picture), scale=True)
