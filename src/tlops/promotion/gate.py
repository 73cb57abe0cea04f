"""The promotion gate: is the challenger measurably better than the champion on the same test images?

A configurable contract (`GateConfig`) over a paired comparison on identical images. The challenger replaces
the champion only when all four checks pass:

- better: the lower bound of a paired bootstrap confidence interval of the score difference (accuracy or
  macro-F1) exceeds the margin;
- significant: a paired test rejects "no difference" and favours the challenger. For accuracy this is
  McNemar's exact test on the discordant pairs; macro-F1 is not a function of the discordant counts (fixing a
  small class can raise it at equal accuracy), so it uses a paired approximate randomization test of the
  macro-F1 difference (swap the two models' predictions per image at random). McNemar's p is reported for both;
- classes: no class loses more images net than it may (a share of its test images, but at least a few);
- calibration: the challenger's ECE exceeds the champion's by at most a tolerance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from tlops.settings import check_ranges, internal, setting

GATE_METRICS = ("accuracy", "macro-f1")

#: Bootstrap or randomization resamples evaluated together (bounds the memory of the index matrix).
_CHUNK_ELEMENTS = 4_000_000
_MCNEMAR = "McNemar exact"
_RANDOMIZATION = "paired randomization test of macro-f1"


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the promotion gate (each field's help text is its documentation)."""

    metric: str = setting(
        "accuracy", "the score that must improve; macro-f1 weighs every class equally", choices=GATE_METRICS
    )
    margin: float = setting(
        0.0, "gain the interval's lower bound must exceed, e.g. 0.01 for one point", minimum=-1, maximum=1
    )
    confidence: float = setting(
        0.95, "level of the paired bootstrap interval", minimum=0, maximum=1, open_min=True, open_max=True
    )
    alpha: float = setting(
        0.05,
        "significance level of the paired test (McNemar; a randomization test for macro-f1)",
        minimum=0,
        maximum=1,
        open_min=True,
        open_max=True,
    )
    max_class_drop: float = setting(
        0.05, "largest net recall drop of any class, as a share of its test images ...", minimum=0, maximum=1
    )
    class_drop_images: int = setting(
        1, "... but a class may always lose this many images net, so one image does not veto a small class", minimum=0
    )
    max_ece_increase: float = setting(
        0.02, "how much higher the new version's expected calibration error may be", minimum=0
    )
    resamples: int = internal(2000)
    seed: int = internal(0)

    def __post_init__(self) -> None:
        """Reject thresholds outside their ranges."""
        check_ranges(self)
        if self.resamples < 1:
            raise ValueError(f"GateConfig.resamples = {self.resamples}: must be >= 1")


@dataclass
class GateResult:
    """The comparison and the verdict.

    Attributes:
        promote: All four checks pass.
        metric: The compared score (``GateConfig.metric``).
        challenger_score: The challenger's score.
        champion_score: The champion's score.
        difference: Challenger score minus champion score.
        ci_low: Lower bound of the paired bootstrap interval of the difference.
        ci_high: Upper bound of that interval.
        mcnemar_p: Two-sided p of McNemar's exact test.
        challenger_only_correct: Images only the challenger classifies correctly.
        champion_only_correct: Images only the champion classifies correctly.
        challenger_accuracy: The challenger's accuracy.
        champion_accuracy: The champion's accuracy.
        worst_class: The class closest to (or furthest beyond) its allowed loss.
        worst_class_regression: That class's recall drop as a share of its images (negative: it improved).
        worst_class_images_lost: Images of that class lost net (champion-only minus challenger-only correct).
        worst_class_images_allowed: Images that class may lose net.
        challenger_ece: The challenger's expected calibration error.
        champion_ece: The champion's.
        reasons: One line per check, each ending with what it needs.
        checks: Pass or fail of ``"better"``, ``"significant"``, ``"classes"`` and ``"calibration"``.
        config: The thresholds used (``dataclasses.asdict`` of the `GateConfig`).
    """

    promote: bool
    metric: str
    challenger_score: float
    champion_score: float
    difference: float
    ci_low: float
    ci_high: float
    mcnemar_p: float
    challenger_only_correct: int
    champion_only_correct: int
    challenger_accuracy: float
    champion_accuracy: float
    worst_class: str
    worst_class_regression: float
    worst_class_images_lost: int
    worst_class_images_allowed: int
    challenger_ece: float
    champion_ece: float
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    config: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _ClassGuard:
    """The per-class check's worst class."""

    name: str
    drop: float
    lost: int
    allowed: int
    images: int

    @property
    def ok(self) -> bool:
        return self.lost <= self.allowed


def describe(config: GateConfig) -> str:
    """A one-line summary of the gate's thresholds, for report headers."""
    return (
        f"promote when {config.metric} improves: {config.confidence:.0%} paired-bootstrap CI lower bound > "
        f"{config.margin:g}, paired test p < {config.alpha:g}, no class loses more than "
        f"max({config.max_class_drop:.0%} of its images, {config.class_drop_images}) net, "
        f"ECE rises by at most {config.max_ece_increase:g} ({config.resamples} resamples, seed {config.seed})"
    )


def _chunks(total: int, images: int) -> list[int]:
    """Sizes of the resample chunks for ``images`` images per resample."""
    size = max(1, _CHUNK_ELEMENTS // max(images, 1))
    return [min(size, total - start) for start in range(0, total, size)]


def _macro_f1(true_positives: np.ndarray, supports: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Macro-F1 over all classes from per-class counts ``(..., C)``; a class without any counts scores 0."""
    denominator = supports + predicted
    f1 = np.divide(2.0 * true_positives, denominator, out=np.zeros(denominator.shape), where=denominator > 0)
    return f1.mean(axis=-1)


def _class_counts(rows: np.ndarray, classes: np.ndarray, weights: np.ndarray | None, shape: tuple) -> np.ndarray:
    """Counts per (resample, class) with `np.bincount`: ``rows`` and ``classes`` index, ``weights`` select."""
    keys = (rows * shape[1] + classes).ravel()
    flat = None if weights is None else weights.ravel().astype(float)
    return np.bincount(keys, weights=flat, minlength=shape[0] * shape[1]).reshape(shape)


def _resampled_macro_f1(predictions: np.ndarray, targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Macro-F1 per row of a ``(R, N)`` matrix of predictions against a matching ``(R, N)`` target matrix."""
    shape = (predictions.shape[0], num_classes)
    rows = np.arange(shape[0])[:, None]
    true_positives = _class_counts(rows, targets, predictions == targets, shape)
    supports = _class_counts(rows, targets, None, shape)
    predicted = _class_counts(rows, predictions, None, shape)
    return _macro_f1(true_positives, supports, predicted)


def _score(metric: str, predictions: np.ndarray, targets: np.ndarray, num_classes: int) -> float:
    """Accuracy or macro-F1 of one prediction vector."""
    from sklearn.metrics import f1_score

    if metric == "accuracy":
        return float((predictions == targets).mean())
    labels = list(range(num_classes))
    return float(f1_score(targets, predictions, labels=labels, average="macro", zero_division=0))


def _bootstrap_differences(
    new: np.ndarray, old: np.ndarray, targets: np.ndarray, num_classes: int, config: GateConfig
) -> np.ndarray:
    """Score differences (challenger - champion) over paired bootstrap resamples of the image indices."""
    rng = np.random.default_rng(config.seed)
    images, differences = len(targets), []
    for size in _chunks(config.resamples, images):
        index = rng.integers(0, images, size=(size, images))
        if config.metric == "accuracy":
            differences.append((new == targets)[index].mean(1) - (old == targets)[index].mean(1))
        else:
            resampled = targets[index]
            differences.append(
                _resampled_macro_f1(new[index], resampled, num_classes)
                - _resampled_macro_f1(old[index], resampled, num_classes)
            )
    return np.concatenate(differences)


def _randomization_p(
    new: np.ndarray, old: np.ndarray, targets: np.ndarray, num_classes: int, config: GateConfig
) -> float:
    """Two-sided p of a paired approximate randomization test of the macro-F1 difference.

    Each resample swaps the two models' predictions on a random half of the images (Yeh 2000); p is the share of
    resamples whose absolute difference reaches the observed one, counting the observed arrangement.
    """
    observed = np.abs(
        _resampled_macro_f1(new[None], targets[None], num_classes)
        - _resampled_macro_f1(old[None], targets[None], num_classes)
    )[0]
    rng = np.random.default_rng(config.seed + 1)
    images, extreme = len(targets), 0
    for size in _chunks(config.resamples, images):
        swap = rng.random((size, images)) < 0.5
        tiled = np.broadcast_to(targets, swap.shape)
        first = _resampled_macro_f1(np.where(swap, old, new), tiled, num_classes)
        second = _resampled_macro_f1(np.where(swap, new, old), tiled, num_classes)
        extreme += int((np.abs(first - second) >= observed - 1e-12).sum())
    return (extreme + 1) / (config.resamples + 1)


def _interval(
    new: np.ndarray, old: np.ndarray, targets: np.ndarray, num_classes: int, config: GateConfig
) -> tuple[float, float]:
    """Percentile bootstrap interval of the score difference; a point when the predictions are identical."""
    difference = _score(config.metric, new, targets, num_classes) - _score(config.metric, old, targets, num_classes)
    if np.array_equal(new, old):
        return difference, difference
    tail = 100 * (1 - config.confidence) / 2
    low, high = np.percentile(_bootstrap_differences(new, old, targets, num_classes, config), [tail, 100 - tail])
    return float(low), float(high)


def _mcnemar(only_new: int, only_old: int) -> float:
    """Two-sided p of McNemar's exact test (binomial test on the discordant pairs)."""
    from scipy import stats

    return float(stats.binomtest(only_new, only_new + only_old).pvalue) if only_new + only_old else 1.0


def _class_guard(
    new_right: np.ndarray, old_right: np.ndarray, targets: np.ndarray, classes: list[str], config: GateConfig
) -> _ClassGuard:
    """The class with the largest net image loss beyond its allowance (ties: the larger recall drop)."""
    guards = []
    for c, name in enumerate(classes):
        mask = targets == c
        images = int(mask.sum())
        if not images:
            continue
        lost = int((old_right & ~new_right & mask).sum() - (new_right & ~old_right & mask).sum())
        allowed = max(math.floor(config.max_class_drop * images + 1e-9), config.class_drop_images)
        guards.append(_ClassGuard(name, lost / images, lost, allowed, images))
    return max(guards, key=lambda g: (g.lost - g.allowed, g.drop))


def _plural(count: int) -> str:
    return f"{count} image" if abs(count) == 1 else f"{count} images"


def _reasons(result: GateResult, guard: _ClassGuard, config: GateConfig, significance: tuple[str, float]) -> list[str]:
    """One line per check, each ending with what it needs."""
    test, p_value = significance
    discordant = (
        f"{_plural(result.challenger_only_correct)} only the challenger gets right, "
        f"{result.champion_only_correct} only the champion"
    )
    if test == _MCNEMAR:
        significant = f"McNemar exact p = {p_value:.4g} ({discordant}; needs p < {config.alpha:g})"
    else:
        significant = (
            f"{test} p = {p_value:.4g} (McNemar exact p = {result.mcnemar_p:.4g}, {discordant}; "
            f"needs p < {config.alpha:g} and a higher {config.metric})"
        )
    ece_change = result.challenger_ece - result.champion_ece
    return [
        f"{config.metric} {result.challenger_score:.4f} vs champion {result.champion_score:.4f} "
        f"(difference {result.difference:+.4f}, {config.confidence:.0%} CI [{result.ci_low:+.4f}, "
        f"{result.ci_high:+.4f}]; needs lower bound > {config.margin:g})",
        significant,
        f"worst class {guard.name!r}: recall {0.0 - guard.drop:+.4f} ({_plural(guard.lost)} lost net, "
        f"allowed {guard.allowed} of {guard.images})",
        f"ECE {result.challenger_ece:.3f} vs champion {result.champion_ece:.3f} ({ece_change:+.3f}; "
        f"allowed +{config.max_ece_increase:g})",
    ]


def _significance(
    result: GateResult, new: np.ndarray, old: np.ndarray, targets: np.ndarray, num_classes: int, config: GateConfig
) -> tuple[str, float]:
    """The paired test of the configured metric: its name and two-sided p."""
    if config.metric == "accuracy":
        return _MCNEMAR, result.mcnemar_p
    if np.array_equal(new, old):
        return _RANDOMIZATION, 1.0
    return _RANDOMIZATION, _randomization_p(new, old, targets, num_classes, config)


def _validate(challenger: np.ndarray, champion: np.ndarray, targets: np.ndarray, classes: list[str]) -> None:
    """Reject inputs that cannot be compared."""
    if challenger.ndim != 2 or challenger.shape != champion.shape or challenger.shape[1] != len(classes):
        raise ValueError(f"probabilities must both be (N, {len(classes)}): {challenger.shape}, {champion.shape}")
    if len(targets) != len(challenger) or not len(targets):
        raise ValueError(f"{len(targets)} targets for {len(challenger)} images: need one per image, at least one")


def compare(
    challenger_probabilities: np.ndarray,
    champion_probabilities: np.ndarray,
    targets: np.ndarray,
    classes: list[str],
    config: GateConfig | None = None,
) -> GateResult:
    """Compare two models on the same test images and decide on promotion.

    Args:
        challenger_probabilities: The challenger's class probabilities ``(N, C)`` (calibrated, if it is).
        champion_probabilities: The champion's, on the same images in the same order.
        targets: True class ids ``(N,)``.
        classes: Class names in class-id order (``C`` of them), for the report.
        config: Thresholds; the defaults of `GateConfig` when ``None``.

    Raises:
        ValueError: The shapes do not match or there are no images.
    """
    from tlops.evaluation.metrics import expected_calibration_error

    config = config or GateConfig()
    challenger_probabilities = np.asarray(challenger_probabilities, dtype=float)
    champion_probabilities = np.asarray(champion_probabilities, dtype=float)
    targets = np.asarray(targets, dtype=np.int64)
    _validate(challenger_probabilities, champion_probabilities, targets, classes)
    num_classes = len(classes)
    new, old = challenger_probabilities.argmax(1), champion_probabilities.argmax(1)
    new_right, old_right = new == targets, old == targets
    only_new, only_old = int((new_right & ~old_right).sum()), int((~new_right & old_right).sum())
    ci_low, ci_high = _interval(new, old, targets, num_classes, config)
    guard = _class_guard(new_right, old_right, targets, classes, config)
    new_score, old_score = (_score(config.metric, p, targets, num_classes) for p in (new, old))
    result = GateResult(
        promote=False,
        metric=config.metric,
        challenger_score=new_score,
        champion_score=old_score,
        difference=new_score - old_score,
        ci_low=ci_low,
        ci_high=ci_high,
        mcnemar_p=_mcnemar(only_new, only_old),
        challenger_only_correct=only_new,
        champion_only_correct=only_old,
        challenger_accuracy=float(new_right.mean()),
        champion_accuracy=float(old_right.mean()),
        worst_class=guard.name,
        worst_class_regression=guard.drop,
        worst_class_images_lost=guard.lost,
        worst_class_images_allowed=guard.allowed,
        challenger_ece=expected_calibration_error(challenger_probabilities, targets),
        champion_ece=expected_calibration_error(champion_probabilities, targets),
        config=asdict(config),
    )
    test, p_value = _significance(result, new, old, targets, num_classes, config)
    result.checks = {
        "better": ci_low > config.margin,
        "significant": p_value < config.alpha and result.difference > 0,
        "classes": guard.ok,
        "calibration": result.challenger_ece - result.champion_ece <= config.max_ece_increase + 1e-12,
    }
    result.promote = all(result.checks.values())
    result.reasons = _reasons(result, guard, config, (test, p_value))
    return result
