"""The fine-tune step's probe: cross-validated and refitted on small data, compared on a large validation split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tlops.steps.outputs import ProbeSummary, write_features, write_probe
from tlops.steps.probes import choose_probe
from tlops.train.config import TrainConfig
from tlops.train.probe import fit_linear_head

CLASSES = ["a", "b", "c"]


def _folders(tmp_path: Path, train: int, val: int) -> tuple[Path, Path]:
    """Features of 3 overlapping Gaussian classes (16 dims), ``train`` and ``val`` a class, and their probe."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16)) * 0.6

    def split(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.concatenate([c + rng.normal(size=(per_class, 16)) for c in centers])
        return torch.from_numpy(x).float(), torch.from_numpy(np.repeat(np.arange(3), per_class))

    splits = {"train": split(train), "val": split(val), "test": split(5)}
    write_features(tmp_path / "features", splits)
    probe = fit_linear_head(splits["train"], splits["val"], 3)
    summary = ProbeSummary("efficientnet_lite0", CLASSES, probe.C, probe.val_accuracy, probe.train_accuracy, 64, 16)
    write_probe(tmp_path / "probe", probe.head, summary)
    return tmp_path / "features", tmp_path / "probe"


@pytest.mark.parametrize(("strategy", "families"), [("auto", {"linear", "MLP"}), ("linear-probe", {"linear"}),
                                                   ("mlp-probe", {"MLP"})])  # fmt: skip
def test_small_data_cross_validates_the_allowed_probes_and_refits_on_train_and_val(
    tmp_path: Path, strategy: str, families: set[str]
) -> None:
    features, probe = _folders(tmp_path, train=8, val=2)
    fit = choose_probe(probe, features, TrainConfig(strategy=strategy, mlp_hidden=16), 3, None, val_images=6)
    assert fit.cross_validation is not None
    assert {label.split()[0] for label in fit.cross_validation["candidates"]} == families
    assert fit.basis == "3 x 5-fold CV on 30 train+val images"
    assert fit.accuracy == pytest.approx(fit.cross_validation["chosen_accuracy"]) and fit.std_error > 0
    assert fit.reasons[0].startswith("probe chosen by cross-validation") and fit.reasons[-1].endswith(
        "30 train+val images"
    )
    logits, targets = fit.calibration
    assert logits.shape == (30, 3) and list(targets) == [0] * 8 + [1] * 8 + [2] * 8 + [0] * 2 + [1] * 2 + [2] * 2
    # The head was refitted on train+val; the one compared with a fine-tuned model saw the training split only.
    correct = fit.validation_correct()
    assert correct.shape == (6,) and correct.dtype == bool


def test_a_large_validation_split_chooses_on_it_and_keeps_it_for_calibration(tmp_path: Path) -> None:
    features, probe = _folders(tmp_path, train=20, val=10)
    config = TrainConfig(strategy="auto", mlp_hidden=16, cross_validate_below=30)  # 30 val images: not below
    fit = choose_probe(probe, features, config, 3, None, val_images=30)
    assert fit.cross_validation is None and fit.calibration is None
    assert fit.basis == "30 validation images"
    assert "MLP - linear" in fit.reasons[-1] and "standard error" in fit.reasons[-1], fit.reasons


def test_no_cached_features_or_a_fine_tuning_strategy_use_the_linear_probe_of_extract_features(
    tmp_path: Path,
) -> None:
    features, probe = _folders(tmp_path, train=8, val=2)
    summary = ProbeSummary.read(probe)
    for fit in (
        choose_probe(probe, None, TrainConfig(strategy="auto"), 3, None, val_images=6),
        choose_probe(probe, features, TrainConfig(strategy="lp-ft"), 3, None, val_images=6),
    ):
        assert fit.strategy == "linear-probe" and fit.accuracy == summary.val_accuracy
        assert fit.calibration is None and fit.basis == "6 validation images"
