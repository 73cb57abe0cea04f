"""On small data where raw pixels beat the backbone, the shipped model is at least as good as the raw-pixel probe.

Digits at 10 training images a class (8 after the validation carve), in the layout users bring (train/ and test/
folders), through the steps the pipeline runs: select-backbone ships the no-transfer baseline, extract-features
and fine-tune (``auto``) choose its head by cross-validation, evaluate scores it on the test split. The reference
is what a user would fit by hand: the linear probe on the same raw pixels, C chosen on the validation split.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tlops.data.demo import write_digits_imagefolder
from tlops.data.prepare import SplitConfig, prepare_data
from tlops.steps.evaluate import evaluate
from tlops.steps.extract_features import extract_and_probe
from tlops.steps.fine_tune import fine_tune
from tlops.steps.outputs import read_features
from tlops.steps.runtime import Runtime
from tlops.steps.select_backbone import select_backbone
from tlops.train.config import TrainConfig
from tlops.train.probe import fit_linear_head

TRAIN, TEST = 10, 20  # images a class


def _train_and_test_folders(root: Path) -> Path:
    everything = write_digits_imagefolder(root / "all", per_class=TRAIN + TEST)
    for folder in sorted(everything.iterdir()):
        files = sorted(folder.glob("*.png"))
        for split, part in (("train", files[:TRAIN]), ("test", files[TRAIN:])):
            (root / "data" / split / folder.name).mkdir(parents=True)
            for file in part:
                shutil.copy(file, root / "data" / split / folder.name / file.name)
    return root / "data"


@pytest.mark.integration
def test_raw_pixels_that_beat_the_backbone_are_shipped_and_test_at_least_as_well(
    tmp_path: Path, runtime: Runtime
) -> None:
    data = tmp_path / "prepared"
    prepare_data(str(_train_and_test_folders(tmp_path)), data, SplitConfig(seed=0))
    selection = select_backbone(data, ["efficientnet_lite0"], tmp_path / "selection", runtime, image_size=32)
    assert selection.chosen == "pixels", selection.reasons
    assert selection.reasons[-1].startswith("shipping the no-transfer baseline")
    assert "paired by fold" in selection.reasons[-1]  # the estimate and its interval behind the decision

    extract_and_probe(data, selection.chosen, tmp_path / "features", tmp_path / "probe", runtime)
    training = fine_tune(
        data, tmp_path / "probe", tmp_path / "model", TrainConfig(), runtime,
        features_dir=tmp_path / "features", selection_dir=tmp_path / "selection",
    )  # fmt: skip
    assert training.strategy in ("linear-probe", "mlp-probe") and training.best_epoch == 0
    assert "the no-transfer baseline has no backbone to fine-tune" in training.reasons[-1]
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    shipped = evaluate(data, tmp_path / "model", tmp_path / "evaluation", runtime, tracking_uri=tracking)
    assert shipped.evaluation.backbone == "pixels"
    # The head was refitted on train+val: the cross-validation's out-of-fold logits calibrated it.
    assert "out-of-fold train+val" in shipped.evaluation.calibration["reason"]
    assert any(r.startswith("probe chosen by cross-validation") for r in training.reasons), training.reasons
    assert training.val_accuracy == training.evidence["probe_accuracy"]  # the estimate, not an in-sample accuracy

    splits = read_features(tmp_path / "features")
    reference = fit_linear_head(splits["train"], splits["val"], 10).head
    features, targets = splits["test"]
    reference_accuracy = float((reference(features).argmax(1) == targets).float().mean())
    assert len(targets) == 10 * TEST
    shipped_accuracy = shipped.evaluation.metrics["test_accuracy"]
    print(f"shipped {shipped_accuracy:.4f}, raw-pixel probe {reference_accuracy:.4f} on {len(targets)} test images")
    assert shipped_accuracy >= reference_accuracy
