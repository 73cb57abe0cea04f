"""Choosing a backbone from scores: the metric, near-ties to the cheaper model, budgets, the raw-pixel baseline;
and scoring on real data, where a second run reads the feature cache and runs no backbone."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tlops.errors import TlopsError
from tlops.steps.outputs import SELECTION_TABLE_FILE, BackboneScore, Selection
from tlops.steps.select_backbone import choose_backbone

BASE = BackboneScore(
    name="x",
    probe_accuracy=0.8,
    probe_std_error=0.02,
    knn_accuracy=0.7,
    knn_std_error=0.03,
    knn_k=5,
    logme=0.1,
    params=5_000_000,
    flops=1_000_000_000,
    latency_ms=20.0,
    device="cpu",
    num_features=1280,
    input_size=224,
    images=100,
    folds=5,
    scoring_seconds=1.0,
    feature_seconds=10.0,
    extraction_seconds=10.0,
    cache_hit=False,
    cache_entry="/cache/x",
)


def _scored(tmp_path: Path, *scores: BackboneScore) -> list[Path]:
    folders = []
    for score in scores:
        folder = tmp_path / "scores" / score.name
        score.write(folder)
        folders.append(folder)
    return folders


def test_the_best_probe_accuracy_wins_and_the_table_lists_every_row(tmp_path: Path) -> None:
    folders = _scored(
        tmp_path,
        replace(BASE, name="small", probe_accuracy=0.70, flops=10**8),
        replace(BASE, name="large", probe_accuracy=0.90, flops=10**10),
    )
    baseline = _scored(tmp_path, replace(BASE, name="pixels", probe_accuracy=0.5, params=0, flops=0))[0]
    selection = choose_backbone(folders, tmp_path / "out", baseline_dir=baseline)
    assert selection.chosen == "large"
    assert [row["name"] for row in selection.ranking] == ["large", "small"]
    assert [row["status"] for row in selection.ranking] == ["chosen", "ranked"]
    assert selection.transfer_helps is True
    assert "best cross-validated linear-probe accuracy: 0.900" in selection.reasons[0]
    table = (tmp_path / "out" / SELECTION_TABLE_FILE).read_text()
    assert "| 1 | large | 0.900 ± 0.020 |" in table and "raw 32x32 pixels (no transfer)" in table
    assert Selection.read(tmp_path / "out") == selection


def test_a_near_tie_within_one_standard_error_goes_to_the_cheaper_backbone(tmp_path: Path) -> None:
    folders = _scored(
        tmp_path,
        replace(BASE, name="big", probe_accuracy=0.85, probe_std_error=0.03, flops=4 * 10**9),
        replace(BASE, name="cheap", probe_accuracy=0.83, flops=10**9),
        replace(BASE, name="cheapest-but-worse", probe_accuracy=0.70, flops=10**8),
    )
    selection = choose_backbone(folders, tmp_path / "out")
    assert selection.chosen == "cheap"
    assert "within one standard error" in selection.reasons[0] and "cheaper" in selection.reasons[0]
    assert selection.transfer_helps is None  # no baseline scored


@pytest.mark.parametrize(("metric", "winner"), [("knn", "b"), ("logme", "c"), ("probe", "a")])
def test_the_ranking_metric_is_configurable(tmp_path: Path, metric: str, winner: str) -> None:
    folders = _scored(
        tmp_path,
        replace(BASE, name="a", probe_accuracy=0.95, probe_std_error=0.0, knn_accuracy=0.5, knn_std_error=0.0),
        replace(BASE, name="b", probe_accuracy=0.60, knn_accuracy=0.9, knn_std_error=0.0, logme=-1.0),
        replace(BASE, name="c", probe_accuracy=0.50, knn_accuracy=0.4, logme=2.0),
    )
    assert choose_backbone(folders, tmp_path / "out", metric=metric).chosen == winner


def test_budgets_exclude_candidates_and_say_why(tmp_path: Path) -> None:
    folders = _scored(
        tmp_path,
        replace(BASE, name="huge", probe_accuracy=0.99, params=80_000_000),
        replace(BASE, name="slow", probe_accuracy=0.95, latency_ms=200.0),
        replace(BASE, name="fits", probe_accuracy=0.80),
    )
    selection = choose_backbone(folders, tmp_path / "out", max_params=10_000_000, max_latency_ms=50)
    assert selection.chosen == "fits"
    status = {row["name"]: row["status"] for row in selection.ranking}
    assert status["huge"].startswith("over budget: 80.0M parameters")
    assert status["slow"].startswith("over budget: 200.0 ms per image")
    with pytest.raises(TlopsError, match=r"no candidate fits the budget .*raise --max-params"):
        choose_backbone(folders, tmp_path / "none", max_params=1000)
    assert not (tmp_path / "none").exists()


def test_raw_pixels_that_beat_every_backbone_are_the_model_chosen(tmp_path: Path) -> None:
    folders = _scored(tmp_path, replace(BASE, name="imagenet", probe_accuracy=0.76))
    baseline = _scored(tmp_path, replace(BASE, name="pixels", probe_accuracy=0.91, params=0, flops=0))[0]
    selection = choose_backbone(folders, tmp_path / "out", baseline_dir=baseline)
    assert selection.transfer_helps is False
    assert any(reason.startswith("transfer does not help here") for reason in selection.reasons)
    assert selection.chosen == "pixels"
    assert selection.baseline is not None and selection.baseline["status"] == "chosen"
    assert selection.reasons[-1].startswith("shipping the no-transfer baseline")
    assert "| raw 32x32 pixels (no transfer) |" in (tmp_path / "out" / SELECTION_TABLE_FILE).read_text()


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"ship_baseline": False}, "--no-ship-baseline keeps the backbone"),
        ({"strategy": "lp-ft"}, "strategy 'lp-ft' fine-tunes a backbone, so imagenet is kept"),
        ({"strategy": "full"}, "strategy 'full' fine-tunes a backbone"),
    ],
)
def test_the_baseline_is_not_shipped_when_turned_off_or_a_backbone_must_be_fine_tuned(
    tmp_path: Path, options: dict, why: str
) -> None:
    folders = _scored(tmp_path, replace(BASE, name="imagenet", probe_accuracy=0.76))
    baseline = _scored(tmp_path, replace(BASE, name="pixels", probe_accuracy=0.91, params=0, flops=0))[0]
    selection = choose_backbone(folders, tmp_path / "out", baseline_dir=baseline, **options)
    assert selection.chosen == "imagenet"
    assert selection.baseline is not None and selection.baseline["status"] == "baseline"
    assert why in selection.reasons[-1]


def test_the_baseline_is_compared_fold_by_fold(tmp_path: Path) -> None:
    # Folds vary a lot (unpaired, the difference is noise), but pixels win on every fold by 0.02: beyond noise.
    folds = [0.60, 0.90, 0.70, 0.95, 0.85]
    backbone = replace(BASE, name="imagenet", probe_accuracy=0.80, probe_std_error=0.06, probe_fold_accuracies=folds)
    pixels = replace(
        BASE, name="pixels", probe_accuracy=0.82, probe_std_error=0.06, probe_fold_accuracies=[f + 0.02 for f in folds]
    )
    baseline = _scored(tmp_path, pixels)[0]
    selection = choose_backbone(_scored(tmp_path, backbone), tmp_path / "out", baseline_dir=baseline)
    assert selection.transfer_helps is False
    assert "pixels - backbone +0.020 ± 0.000 (5-fold CV on 100 training images, paired by fold)" in selection.reasons[1]
    assert selection.chosen == "pixels"


@pytest.mark.parametrize(
    ("ours", "theirs", "error", "helps", "start"),
    [
        (1.0, 1.0, 0.0, None, "transfer and raw 32x32 pixels score alike here"),  # a tie is no verdict against transfer
        (0.90, 0.92, 0.02, None, "transfer and raw 32x32 pixels score alike here"),  # within the noise
        (0.90, 0.9001, 0.0, False, "transfer does not help here"),  # strictly better, no noise measured
        (0.80, 0.95, 0.02, False, "transfer does not help here"),
        (0.95, 0.80, 0.02, True, "transfer helps"),
    ],
)
def test_transfer_does_not_help_only_when_the_baseline_is_better_beyond_noise(
    tmp_path: Path, ours: float, theirs: float, error: float, helps: bool | None, start: str
) -> None:
    folders = _scored(tmp_path, replace(BASE, name="imagenet", probe_accuracy=ours, probe_std_error=error))
    baseline = _scored(
        tmp_path, replace(BASE, name="pixels", probe_accuracy=theirs, probe_std_error=error, params=0, flops=0)
    )[0]

    selection = choose_backbone(folders, tmp_path / "out", baseline_dir=baseline)

    assert selection.transfer_helps is helps
    (reason,) = [r for r in selection.reasons if "raw" in r]
    assert reason.startswith(start), reason
    assert f"{ours:.3f}" in reason and f"{theirs:.3f}" in reason
    if helps is not None:
        assert "pixels - backbone" in reason or "backbone - pixels" in reason, reason  # the difference and its noise
    assert reason in (tmp_path / "out" / "selection.md").read_text()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"metric": "accuracy"}, "--selection-metric must be one of probe, knn, logme, got 'accuracy'"),
        ({"max_params": -1}, "--max-params must be >= 0, got -1"),
    ],
)
def test_bad_ranking_options_are_refused(tmp_path: Path, options: dict, message: str) -> None:
    from tlops.settings import SettingError
    from tlops.steps.config import cli_name

    folders = _scored(tmp_path, BASE)
    with pytest.raises(SettingError) as error:  # a setting: each edge names it its way
        choose_backbone(folders, tmp_path / "out", **options)
    assert error.value.render(cli_name) == message


def test_a_folder_without_a_score_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TlopsError, match="run tlops score-backbone"):
        choose_backbone([tmp_path], tmp_path / "out")


# --- scoring real images -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(small_imagefolder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tlops.data.prepare import prepare_data

    folder = tmp_path_factory.mktemp("prepared")
    prepare_data(str(small_imagefolder), folder)
    return folder


def test_scoring_twice_reads_the_cache_and_runs_no_backbone(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tlops.steps import image_packs
    from tlops.steps.runtime import Runtime
    from tlops.steps.score_backbone import score_backbone

    runtime = Runtime(cache_dir=tmp_path / "cache")
    first = score_backbone(prepared, "efficientnet_lite0", tmp_path / "first", runtime, image_size=64)
    assert not first.cache_hit and first.extraction_seconds > 0
    assert 0.0 <= first.probe_accuracy <= 1.0 and first.knn_k >= 1 and first.images == 70
    assert first.params > 3_000_000 and first.flops > 0 and first.latency_ms > 0

    def no_backbone(*args, **kwargs):
        raise AssertionError("a backbone ran although its features are cached")

    monkeypatch.setattr(image_packs, "iter_features", no_backbone)
    second = score_backbone(prepared, "efficientnet_lite0", tmp_path / "second", runtime, image_size=64)
    assert second.cache_hit and second.cache_entry == first.cache_entry
    assert (second.probe_accuracy, second.knn_accuracy, second.logme) == (
        first.probe_accuracy,
        first.knn_accuracy,
        first.logme,
    )
    assert second.extraction_seconds == first.extraction_seconds  # the time the hit saved
    with pytest.raises(AssertionError, match="a backbone ran"):  # another input size is another key
        score_backbone(prepared, "efficientnet_lite0", tmp_path / "third", runtime, image_size=96)


def test_the_raw_pixel_baseline_scores_like_a_backbone(prepared: Path, tmp_path: Path) -> None:
    from tlops.steps.runtime import Runtime
    from tlops.steps.score_backbone import score_backbone

    score = score_backbone(prepared, "pixels", tmp_path / "pixels", Runtime(cache_dir=tmp_path / "cache"))
    assert score.num_features == 3 * 32 * 32 and score.input_size == 32 and score.params == 0
    assert score.probe_accuracy > 0.5  # digits are easy from pixels (10 classes: chance is 0.1)
    assert json.loads((tmp_path / "pixels" / "score.json").read_text())["name"] == "pixels"


def test_more_scoring_images_than_the_split_has_is_refused(prepared: Path, tmp_path: Path) -> None:
    from tlops.steps.runtime import Runtime
    from tlops.steps.score_backbone import score_backbone

    with pytest.raises(TlopsError, match=r"asks for more images than the training split has: class .* has \d+"):
        score_backbone(
            prepared, "pixels", tmp_path / "out", Runtime(cache_dir=tmp_path / "c"), scoring_images_per_class=500
        )
    assert not (tmp_path / "out").exists() and not (tmp_path / "c").exists()


def test_pixels_is_not_a_candidate_and_unknown_names_suggest_close_ones() -> None:
    from tlops.models.names import check_backbone_name

    with pytest.raises(TlopsError, match="no-transfer baseline"):
        check_backbone_name("pixels")
    with pytest.raises(
        TlopsError, match=r"did you mean efficientnet_lite\d, efficientnet_lite\d, efficientnet_lite\d\?"
    ):
        check_backbone_name("efficientnet_lite")


def test_a_tfidf_baseline_that_beats_the_encoder_is_the_text_model_shipped_and_named_so(tmp_path: Path) -> None:
    folders = _scored(tmp_path, replace(BASE, name="minilm", probe_accuracy=0.70))
    baseline = _scored(tmp_path, replace(BASE, name="tfidf", probe_accuracy=0.90, params=0, flops=0))[0]
    selection = choose_backbone(folders, tmp_path / "out", baseline_dir=baseline)
    assert selection.chosen == "tfidf"
    assert "char n-gram TF-IDF" in selection.reasons[1] and "training texts" in selection.reasons[1]
    assert selection.reasons[-1].startswith("shipping the no-transfer baseline (logistic regression on character")
    assert "| char n-gram TF-IDF (no transfer) |" in (tmp_path / "out" / SELECTION_TABLE_FILE).read_text()
    lora = choose_backbone(folders, tmp_path / "lora", baseline_dir=baseline, strategy="lora")
    assert lora.chosen == "minilm" and "strategy 'lora' fine-tunes a backbone" in lora.reasons[-1]


def test_an_exact_tie_keeps_the_backbone_despite_rounding_in_the_fold_differences(tmp_path: Path) -> None:
    # Equal sums whose fold-by-fold differences average to 4e-17, not 0 (a cell of bench/text_transfer.py).
    baseline_folds = [0.803921568627451, 0.803921568627451, 0.7843137254901961, 0.7745098039215687, 0.7745098039215687]
    encoder_folds = [0.803921568627451, 0.7941176470588235, 0.7647058823529411, 0.7647058823529411, 0.8137254901960784]
    mean = sum(encoder_folds) / 5
    folders = _scored(tmp_path, replace(BASE, name="minilm", probe_accuracy=mean, probe_fold_accuracies=encoder_folds))
    baseline = _scored(
        tmp_path, replace(BASE, name="tfidf", probe_accuracy=mean, probe_fold_accuracies=baseline_folds)
    )[0]
    assert choose_backbone(folders, tmp_path / "out", baseline_dir=baseline).chosen == "minilm"
