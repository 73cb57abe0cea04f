"""The promotion gate: is the challenger measurably better than the champion on the same test images?

Paired comparison on identical images: a paired bootstrap confidence interval of the accuracy difference,
McNemar's exact test on the discordant pairs, and a bound on how far any class's recall may drop. The
challenger replaces the champion only when the interval's lower bound clears the margin, the test is
significant, and no class regresses beyond the bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the promotion gate.

    Attributes:
        margin: Accuracy gain the lower confidence bound must exceed.
        confidence: Confidence level of the bootstrap interval.
        alpha: Significance level of McNemar's exact test.
        max_class_regression: Largest drop in any class's recall that is tolerated.
        resamples: Bootstrap resamples.
        seed: Seed of the bootstrap.
    """

    margin: float = 0.0
    confidence: float = 0.95
    alpha: float = 0.05
    max_class_regression: float = 0.05
    resamples: int = 2000
    seed: int = 0


@dataclass
class GateResult:
    """The comparison and the verdict."""

    promote: bool
    challenger_accuracy: float
    champion_accuracy: float
    difference: float
    ci_low: float
    ci_high: float
    mcnemar_p: float
    challenger_only_correct: int
    champion_only_correct: int
    worst_class: str
    worst_class_regression: float
    reasons: list[str] = field(default_factory=list)


def compare(
    challenger_correct: np.ndarray,
    champion_correct: np.ndarray,
    targets: np.ndarray,
    classes: list[str],
    config: GateConfig | None = None,
) -> GateResult:
    """Compare two models' per-image correctness on the same test images and decide on promotion.

    Args:
        challenger_correct: Boolean per test image: the challenger's prediction is right.
        champion_correct: The same for the champion, on the same images in the same order.
        targets: True class ids of the images.
        classes: Class names, for the report.
        config: Thresholds.
    """
    from scipy import stats

    config = config or GateConfig()
    new, old = np.asarray(challenger_correct, bool), np.asarray(champion_correct, bool)
    difference = float(new.mean() - old.mean())
    if np.array_equal(new, old):
        ci_low = ci_high = difference
    else:
        interval = stats.bootstrap(
            (new.astype(float), old.astype(float)),
            lambda a, b, axis: a.mean(axis=axis) - b.mean(axis=axis),
            paired=True,
            vectorized=True,
            n_resamples=config.resamples,
            confidence_level=config.confidence,
            method="percentile",
            rng=np.random.default_rng(config.seed),
        ).confidence_interval
        ci_low, ci_high = float(interval.low), float(interval.high)
    only_new, only_old = int((new & ~old).sum()), int((~new & old).sum())
    p_value = float(stats.binomtest(only_new, only_new + only_old).pvalue) if only_new + only_old else 1.0
    regressions = {
        classes[c]: float(old[targets == c].mean() - new[targets == c].mean())
        for c in range(len(classes))
        if (targets == c).any()
    }
    worst = max(regressions, key=regressions.get)
    better = ci_low > config.margin
    significant = p_value < config.alpha and only_new > only_old
    no_regression = regressions[worst] <= config.max_class_regression
    reasons = [
        f"accuracy {new.mean():.4f} vs champion {old.mean():.4f} (difference {difference:+.4f}, "
        f"{config.confidence:.0%} CI [{ci_low:+.4f}, {ci_high:+.4f}]; needs lower bound > {config.margin})",
        f"McNemar exact p = {p_value:.4g} ({only_new} images only the challenger gets right, {only_old} only the "
        f"champion; needs p < {config.alpha})",
        f"worst class recall change: {worst!r} {-regressions[worst]:+.4f} (allowed drop {config.max_class_regression})",
    ]
    return GateResult(
        promote=better and significant and no_regression,
        challenger_accuracy=float(new.mean()),
        champion_accuracy=float(old.mean()),
        difference=difference,
        ci_low=ci_low,
        ci_high=ci_high,
        mcnemar_p=p_value,
        challenger_only_correct=only_new,
        champion_only_correct=only_old,
        worst_class=worst,
        worst_class_regression=regressions[worst],
        reasons=reasons,
    )
