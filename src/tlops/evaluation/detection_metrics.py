"""Evaluation of an object detector: COCO metrics, a per-image statistic for the promotion gate, a paired bootstrap.

Boxes are ``x1, y1, x2, y2`` in pixels of the ORIGINAL images (the manifest's); class ids are 0-based
(``classes[i]``; the detectors' label is ``i + 1``). Ground truth and predictions are lists with one dict per image,
in the same order: ``{"boxes": (N, 4), "labels": (N,)}``, predictions with ``"scores": (N,)`` too.

The COCO metrics are pycocotools' (``COCOeval``, bbox, area ranges and ``maxDets`` 1/10/100 as COCO's), the COCO
objects built in memory. A metric COCO cannot compute (``-1``: no ground-truth box of that size, no box at all) is
left out of :attr:`DetectionMetrics.metrics`, never reported as a number.

The per-image statistic of the gate is the F1 score of the image's detections with ``score >= score_threshold``
(0.3 by default, the served model's default threshold), matched to its ground truth at IoU >= 0.5 within the same
class as COCO matches (by descending score, each box once): ``F1 = 2 TP / (2 TP + FP + FN)``. Unlike a per-image
AP it is defined for every image: a negative image (no box) scores 1 without detections and 0 with any; an image
whose boxes are all missed scores 0.

The paired bootstrap resamples images (the same resample for both models) and recomputes mAP50 from the matches
of each image at IoU 0.5, computed once: the matching of an image does not depend on which other images are drawn,
so the bootstrap's mAP50 of the full set equals COCOeval's AP50 (checked by the tests).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from tlops.errors import TlopsError
from tlops.io.progress import progress
from tlops.models.device import autocast

Detections = dict[str, Any]

DEFAULT_SCORE_THRESHOLD = 0.3
GATE_IOU = 0.5
_MAX_DETECTIONS = 100  # COCO's largest maxDets: detections kept per image and class
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's recall thresholds
# COCOeval.stats positions of the reported metrics (AP at IoU .5:.95 unless named otherwise).
_STATS = {"map": 0, "map50": 1, "map75": 2, "map_small": 3, "map_medium": 4, "map_large": 5, "mar_100": 8}


@dataclass
class DetectionMetrics:
    """Detection results on one split.

    Attributes:
        metrics: ``map``, ``map50``, ``map75``, ``map_small``, ``map_medium``, ``map_large``, ``mar_100`` (COCO's;
            absent when COCO cannot compute one), and at ``score_threshold``: ``precision``, ``recall``, ``f1``
            of the matched detections over all images, and ``mean_image_f1``.
        per_class_ap: AP at IoU .5:.95 per class with ground truth.
        per_class_ap50: AP at IoU .5 per class with ground truth.
        pr_curves: Per class with ground truth: ``(recall, precision)`` at IoU .5 (COCO's 101 recall points,
            interpolated precision; 0 beyond the largest recall reached).
        image_f1: The gate's per-image statistic (see the module), in image order.
        score_threshold: The score threshold of the F1 statistics.
    """

    metrics: dict[str, float]
    per_class_ap: dict[str, float] = field(default_factory=dict)
    per_class_ap50: dict[str, float] = field(default_factory=dict)
    pr_curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    image_f1: np.ndarray = field(default_factory=lambda: np.zeros(0))
    score_threshold: float = DEFAULT_SCORE_THRESHOLD


@dataclass(frozen=True)
class BootstrapDifference:
    """A paired bootstrap of the mAP50 difference (new - old) over images.

    Attributes:
        observed: The difference on the images as they are.
        mean: Mean difference over the resamples.
        low: Lower bound of the percentile interval.
        high: Upper bound.
        confidence: Level of the interval.
        resamples: Resamples drawn.
    """

    observed: float
    mean: float
    low: float
    high: float
    confidence: float
    resamples: int


def manifest_ground_truth(rows: pd.DataFrame, classes: list[str]) -> list[Detections]:
    """Ground truth of manifest rows (their ``boxes`` JSON), in row order.

    Raises:
        TlopsError: for a box whose class is not in ``classes``.
    """
    index = {name: i for i, name in enumerate(classes)}
    truth = []
    for uri, text in zip(rows["uri"], rows["boxes"], strict=True):
        items = json.loads(text or "[]")
        unknown = sorted({item["label"] for item in items if item["label"] not in index})
        if unknown:
            raise TlopsError(
                f"{uri} has boxes of {', '.join(map(repr, unknown))}, not among the classes: prepare again"
            )
        truth.append(
            {
                "boxes": np.array([item["box"] for item in items], dtype=np.float64).reshape(-1, 4),
                "labels": np.array([index[item["label"]] for item in items], dtype=np.int64),
            }
        )
    return truth


@torch.inference_mode()
def predict_detections(model: nn.Module, loader: DataLoader, device: torch.device) -> list[Detections]:
    """Detections for every image of a loader, in the manifest's original pixels, ordered by ``image_id``.

    Args:
        model: A torchvision detection model.
        loader: Batches ``(images, targets)`` whose targets carry ``image_id`` and ``orig_size`` (height, width of
            the original image), as :class:`tlops.train.detection_data.DetectionDataset` gives them.
        device: Where to run.

    Returns:
        Per image: ``boxes`` (float64 ``(N, 4)``), ``labels`` (0-based class ids), ``scores``, ``image_id``.
    """
    model.eval().to(device)
    found: list[Detections] = []
    for images, targets in progress(loader, "detecting", unit="batch"):
        with autocast(device):
            outputs = model([image.to(device) for image in images])
        for image, target, output in zip(images, targets, outputs, strict=True):
            height, width = (int(v) for v in target["orig_size"])
            scale = np.array([width / image.shape[-1], height / image.shape[-2]] * 2)
            boxes = output["boxes"].float().cpu().numpy().astype(np.float64) * scale
            found.append(
                {
                    "image_id": int(target["image_id"]),
                    "boxes": boxes.reshape(-1, 4),
                    "labels": output["labels"].cpu().numpy().astype(np.int64) - 1,
                    "scores": output["scores"].float().cpu().numpy().astype(np.float64),
                }
            )
    return sorted(found, key=lambda item: item["image_id"])


def _arrays(item: Detections, scored: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.asarray(item["boxes"], dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(item["labels"], dtype=np.int64).reshape(-1)
    scores = np.asarray(item["scores"], dtype=np.float64).reshape(-1) if scored else np.ones(len(labels))
    if not len(boxes) == len(labels) == len(scores):
        raise TlopsError(f"detections of {len(boxes)} boxes with {len(labels)} labels and {len(scores)} scores")
    return boxes, labels, scores


def _check(ground_truth: Sequence[Detections], predictions: Sequence[Detections], classes: list[str]) -> None:
    if len(ground_truth) != len(predictions):
        raise TlopsError(
            f"{len(predictions)} images with predictions for {len(ground_truth)} images of ground truth: predict "
            "every image of the split, in manifest order"
        )
    for name, items, scored in (("ground truth", ground_truth, False), ("predictions", predictions, True)):
        for item in items:
            labels = _arrays(item, scored)[1]
            if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
                raise TlopsError(f"{name} have class ids outside 0..{len(classes) - 1} (0-based, classes[i])")


def _coco_objects(ground_truth: Sequence[Detections], predictions: Sequence[Detections], num_classes: int):
    from pycocotools.coco import COCO

    images = [{"id": i + 1} for i in range(len(ground_truth))]
    categories = [{"id": k + 1} for k in range(num_classes)]

    def annotations(items: Sequence[Detections], scored: bool) -> list[dict]:
        result = []
        for image, item in enumerate(items):
            boxes, labels, scores = _arrays(item, scored)
            for box, label, score in zip(boxes, labels, scores, strict=True):
                width, height = float(box[2] - box[0]), float(box[3] - box[1])
                annotation = {
                    "id": len(result) + 1,
                    "image_id": image + 1,
                    "category_id": int(label) + 1,
                    "bbox": [float(box[0]), float(box[1]), width, height],
                    "area": width * height,
                    "iscrowd": 0,
                }
                if scored:
                    annotation["score"] = float(score)
                result.append(annotation)
        return result

    cocos = []
    for items, scored in ((ground_truth, False), (predictions, True)):
        coco = COCO()
        coco.dataset = {"images": images, "categories": categories, "annotations": annotations(items, scored)}
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        cocos.append(coco)
    return cocos


def detection_metrics(
    ground_truth: Sequence[Detections],
    predictions: Sequence[Detections],
    classes: list[str],
    *,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
) -> DetectionMetrics:
    """COCO metrics, per-class AP and precision-recall curves, and the gate's per-image F1.

    Args:
        ground_truth: Per image: ``boxes`` and 0-based ``labels`` (:func:`manifest_ground_truth`).
        predictions: Per image, in the same order: ``boxes``, ``labels``, ``scores`` (:func:`predict_detections`).
        classes: Class names, by class id.
        score_threshold: Lowest score of a detection counted by the F1 statistics.

    Raises:
        TlopsError: when the two lists differ in length, or a class id is out of range.
    """
    from pycocotools.cocoeval import COCOeval

    _check(ground_truth, predictions, classes)
    result = DetectionMetrics(metrics={}, score_threshold=score_threshold)
    if any(len(_arrays(item, False)[1]) for item in ground_truth):
        truth, detected = _coco_objects(ground_truth, predictions, len(classes))
        evaluation = COCOeval(truth, detected, iouType="bbox")
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        result.metrics = {name: float(evaluation.stats[i]) for name, i in _STATS.items() if evaluation.stats[i] >= 0}
        precision = evaluation.eval["precision"]  # [IoU threshold, recall point, class, area range, maxDets]
        for k, name in enumerate(classes):
            curves = precision[:, :, k, 0, -1]
            if (curves > -1).any():
                result.per_class_ap[name] = float(curves[curves > -1].mean())
                result.per_class_ap50[name] = float(curves[0].mean())
                result.pr_curves[name] = (np.asarray(evaluation.params.recThrs), curves[0].copy())
    tp, fp, fn = _threshold_counts(ground_truth, predictions, score_threshold)
    result.image_f1 = _f1(tp, fp, fn)
    result.metrics["precision"] = float(tp.sum() / max(1, tp.sum() + fp.sum()))
    result.metrics["recall"] = float(tp.sum() / max(1, tp.sum() + fn.sum()))
    result.metrics["f1"] = float(_f1(tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True))[0])
    result.metrics["mean_image_f1"] = float(result.image_f1.mean()) if len(result.image_f1) else float("nan")
    return result


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """``2 TP / (2 TP + FP + FN)``, 1 where there is nothing to find and nothing found."""
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 1.0)


def _iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU matrix of ``(N, 4)`` and ``(M, 4)`` xyxy boxes (COCO's: no +1 on widths)."""
    low = np.maximum(boxes[:, None, :2], others[None, :, :2])
    high = np.minimum(boxes[:, None, 2:], others[None, :, 2:])
    width, height = np.moveaxis(np.clip(high - low, 0, None), -1, 0)
    inter = width * height
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    other_area = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area[:, None] + other_area[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _match(truth: np.ndarray, detections: np.ndarray, threshold: float) -> np.ndarray:
    """Whether each detection (sorted by descending score) matches a box, as COCOeval matches one class."""
    matched = np.zeros(len(detections), dtype=bool)
    if not len(truth) or not len(detections):
        return matched
    ious = _iou(detections, truth)
    taken = np.zeros(len(truth), dtype=bool)
    for d in range(len(detections)):
        best, chosen = min(threshold, 1 - 1e-10), -1
        for g in range(len(truth)):
            if taken[g] or ious[d, g] < best:
                continue
            best, chosen = ious[d, g], g
        if chosen >= 0:
            taken[chosen], matched[d] = True, True
    return matched


def _image_matches(truth: Detections, predicted: Detections, *, min_score: float = -np.inf, limit: int | None = None):
    """Per class present in the image: (scores sorted descending, matched flags, ground-truth boxes)."""
    gt_boxes, gt_labels, _ = _arrays(truth, False)
    boxes, labels, scores = _arrays(predicted, True)
    keep = scores >= min_score
    boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
    result = {}
    for k in np.union1d(gt_labels, labels):
        order = np.argsort(-scores[labels == k], kind="mergesort")[:limit]
        class_scores = scores[labels == k][order]
        flags = _match(gt_boxes[gt_labels == k], boxes[labels == k][order], GATE_IOU)
        result[int(k)] = (class_scores, flags, int((gt_labels == k).sum()))
    return result


def _threshold_counts(
    ground_truth: Sequence[Detections], predictions: Sequence[Detections], score_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: matched detections, unmatched detections, missed boxes (IoU .5, ``score >= threshold``)."""
    counts = np.zeros((3, len(ground_truth)))
    for i, (truth, predicted) in enumerate(zip(ground_truth, predictions, strict=True)):
        for _, flags, boxes in _image_matches(truth, predicted, min_score=score_threshold).values():
            counts[:, i] += (flags.sum(), (~flags).sum(), boxes - flags.sum())
    return counts[0], counts[1], counts[2]


@dataclass
class _ClassMatches:
    """One class's detections over all images (image order, then descending score) and boxes per image."""

    scores: np.ndarray
    matched: np.ndarray
    image: np.ndarray
    boxes: np.ndarray


def _class_matches(
    ground_truth: Sequence[Detections], predictions: Sequence[Detections], num_classes: int
) -> list[_ClassMatches]:
    parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(num_classes)]
    boxes = np.zeros((num_classes, len(ground_truth)))
    for i, (truth, predicted) in enumerate(zip(ground_truth, predictions, strict=True)):
        for k, (scores, flags, count) in _image_matches(truth, predicted, limit=_MAX_DETECTIONS).items():
            parts[k].append((scores, flags, np.full(len(scores), i)))
            boxes[k, i] = count
    result = []
    for k in range(num_classes):
        joined = [np.concatenate(column) if parts[k] else np.zeros(0) for column in zip(*parts[k], strict=True)]
        scores, flags, image = joined if joined else (np.zeros(0), np.zeros(0), np.zeros(0))
        result.append(_ClassMatches(scores, flags.astype(bool), image.astype(np.int64), boxes[k]))
    return result


def _average_precision(matches: _ClassMatches, weights: np.ndarray) -> float:
    """COCO's 101-point interpolated AP of one class with each image counted ``weights[i]`` times (NaN: no box)."""
    positives = float(weights @ matches.boxes)
    if positives == 0:
        return float("nan")
    repeats = weights[matches.image]
    scores, flags = np.repeat(matches.scores, repeats), np.repeat(matches.matched, repeats)
    if not len(scores):
        return 0.0
    flags = flags[np.argsort(-scores, kind="mergesort")]
    tp, fp = np.cumsum(flags), np.cumsum(~flags)
    recall = tp / positives
    precision = np.maximum.accumulate((tp / (tp + fp + np.spacing(1)))[::-1])[::-1]
    where = np.searchsorted(recall, _RECALL_POINTS, side="left")
    return float(np.where(where < len(precision), precision[np.minimum(where, len(precision) - 1)], 0.0).mean())


def _map50(matches: list[_ClassMatches], weights: np.ndarray) -> float:
    values = [_average_precision(m, weights) for m in matches]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def map50(ground_truth: Sequence[Detections], predictions: Sequence[Detections], classes: list[str]) -> float:
    """MAP at IoU .5 (COCOeval's AP50) from the per-image matches (NaN without any ground-truth box)."""
    _check(ground_truth, predictions, classes)
    return _map50(_class_matches(ground_truth, predictions, len(classes)), np.ones(len(ground_truth), np.int64))


def paired_bootstrap_map_difference(
    ground_truth: Sequence[Detections],
    preds_new: Sequence[Detections],
    preds_old: Sequence[Detections],
    classes: list[str],
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapDifference:
    """Paired bootstrap over images of the mAP50 difference ``new - old``.

    Each resample draws as many images as there are, with replacement, the same for both models, and recomputes
    both mAP50s (a class none of whose boxes is drawn is left out of that resample's mean, as COCO leaves out a
    class without ground truth; a resample without any box is dropped).

    Args:
        ground_truth: Per image: ``boxes``, ``labels``.
        preds_new: The challenger's detections, per image in the same order.
        preds_old: The champion's detections.
        classes: Class names, by class id.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling (the same seed gives the same interval).
        confidence: Level of the percentile interval.

    Raises:
        TlopsError: when the lists differ in length, a class id is out of range, or no image has a box.
    """
    for predictions in (preds_new, preds_old):
        _check(ground_truth, predictions, classes)
    new = _class_matches(ground_truth, preds_new, len(classes))
    old = _class_matches(ground_truth, preds_old, len(classes))
    images = len(ground_truth)
    ones = np.ones(images, dtype=np.int64)
    observed = _map50(new, ones) - _map50(old, ones)
    if np.isnan(observed):
        raise TlopsError("no ground-truth box among the images: mAP50 is undefined, so is its difference")
    rng = np.random.default_rng(seed)
    differences = np.array(
        [
            _map50(new, weights) - _map50(old, weights)
            for weights in (np.bincount(rng.integers(0, images, images), minlength=images) for _ in range(resamples))
        ]
    )
    differences = differences[~np.isnan(differences)]
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(differences, [tail, 100 - tail]) if len(differences) else (observed, observed)
    return BootstrapDifference(
        observed=float(observed),
        mean=float(differences.mean()) if len(differences) else float(observed),
        low=float(low),
        high=float(high),
        confidence=confidence,
        resamples=resamples,
    )
