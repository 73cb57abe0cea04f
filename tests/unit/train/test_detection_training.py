import pytest
import torch
from torch.utils.data import DataLoader

from tiny_detector import square_images, tiny_detector
from tlops.errors import TlopsError
from tlops.train.detection_data import DetectionDataset, collate_detections
from tlops.train.detection_finetune import (
    DetectionTrainConfig,
    detection_throughput,
    train_detector,
    trained_block_indices,
)
from tlops.train.resume import CHECKPOINT_FILE

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    rows = square_images(tmp_path_factory.mktemp("squares"))
    dataset = DetectionDataset(rows, ["square"], max_side=128, train=True)
    return DataLoader(dataset, batch_size=1, shuffle=True, collate_fn=collate_detections,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip


def _config(**changes):
    return DetectionTrainConfig(**{"epochs": 3, "lr": 1e-2, "batch_size": 1, "max_side": 128, **changes})


def _snapshot(modules):
    return [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]


def _changed(before, modules):
    return [any(not torch.equal(before[i][k], v) for k, v in m.state_dict().items()) for i, m in enumerate(modules)]


def test_full_training_lowers_the_loss_keeps_the_best_epoch_and_checkpoints(loader, tmp_path):
    model, blocks = tiny_detector(1)
    scores = iter([0.2, 0.5, 0.1])
    kept = {}

    def evaluate(model, val_loader, device):
        score = next(scores)
        kept[score] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"map": score / 2, "map50": score}

    history = train_detector(model, loader, loader, _config(), CPU, strategy="full", blocks=blocks,
                             checkpoint_dir=str(tmp_path), evaluate=evaluate, progress=False)  # fmt: skip
    losses = [record.train_loss for record in history.epochs]
    assert [r.epoch for r in history.epochs] == [1, 2, 3]
    assert losses[-1] < losses[0], losses
    objectness = [record.loss_terms["loss_objectness"] for record in history.epochs]
    assert objectness[-1] < objectness[0], objectness
    terms = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert set(history.epochs[0].loss_terms) == terms
    assert history.epochs[1].val == {"map": 0.25, "map50": 0.5}
    assert history.best_epoch == 2
    assert all(torch.equal(v, kept[0.5][k]) for k, v in model.state_dict().items())
    assert not model.training
    saved = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert saved["epoch"] == 3 and {"model", "optimizer", "scheduler"} <= saved.keys()


def test_resume_continues_after_the_saved_epoch_as_if_uninterrupted(loader, tmp_path):
    config = _config(epochs=2)
    model, blocks = tiny_detector(1)
    uninterrupted = train_detector(model, loader, None, config, CPU, strategy="full", blocks=blocks, progress=False)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    def crash_in_epoch_2(model, val_loader, device):
        if crash_in_epoch_2.calls == 1:
            raise KeyboardInterrupt
        crash_in_epoch_2.calls += 1
        return {"map50": 0.1}

    crash_in_epoch_2.calls = 0
    model, blocks = tiny_detector(1)
    with pytest.raises(KeyboardInterrupt):
        train_detector(model, loader, loader, config, CPU, strategy="full", blocks=blocks,
                       checkpoint_dir=str(tmp_path), evaluate=crash_in_epoch_2, progress=False)  # fmt: skip
    assert torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)["epoch"] == 1

    model, blocks = tiny_detector(1, seed=1)  # other initial weights: the checkpoint's must replace them
    history = train_detector(model, loader, loader, config, CPU, strategy="full", blocks=blocks,
                             checkpoint_dir=str(tmp_path), resume=True, progress=False,
                             evaluate=lambda *_: {"map50": 0.2})  # fmt: skip
    assert history.resumed_from == 1 and history.best_epoch == 2
    assert [r.epoch for r in history.epochs] == [1, 2]
    assert history.epochs[1].train_loss == pytest.approx(uninterrupted.epochs[1].train_loss, rel=1e-5)
    assert all(torch.allclose(v.float(), expected[k].float(), atol=1e-5) for k, v in model.state_dict().items())


def test_a_checkpoint_of_other_settings_is_refused(loader, tmp_path):
    model, blocks = tiny_detector(1)
    train_detector(model, loader, None, _config(epochs=1), CPU, strategy="frozen", blocks=blocks,
                   checkpoint_dir=str(tmp_path), progress=False)  # fmt: skip
    with pytest.raises(TlopsError, match="another training run"):
        train_detector(model, loader, None, _config(epochs=1), CPU, strategy="full", blocks=blocks,
                       checkpoint_dir=str(tmp_path), resume=True, progress=False)  # fmt: skip


@pytest.mark.parametrize(("strategy", "expected"), [("frozen", [False] * 4), ("partial", [False, False, True, True])])
def test_strategies_train_only_their_blocks(loader, strategy, expected):
    model, blocks = tiny_detector(1)
    before, rest_before = _snapshot(blocks), _snapshot([model.roi_heads, model.backbone.fpn])
    history = train_detector(model, loader, None, _config(epochs=1, trainable_blocks=2), CPU, strategy=strategy,
                             blocks=blocks, progress=False)  # fmt: skip
    assert _changed(before, blocks) == expected  # parameters and BatchNorm statistics alike
    assert _changed(rest_before, [model.roi_heads, model.backbone.fpn]) == [True, True]
    assert history.trained_blocks == [i for i, trains in enumerate(expected) if trains]


def test_block_choice_is_checked():
    assert trained_block_indices("full", 3, 1) == [0, 1, 2]
    assert trained_block_indices("partial", 3, 1) == [2]
    with pytest.raises(TlopsError, match="at most 3"):
        trained_block_indices("partial", 3, 4)
    with pytest.raises(TlopsError, match="not one for object detection"):
        trained_block_indices("lp-ft", 3, 1)


def test_throughput_measures_both_rates_and_leaves_the_weights(loader):
    model, _ = tiny_detector(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    many = DataLoader(torch.utils.data.ConcatDataset([loader.dataset] * 2), batch_size=2,
                      collate_fn=collate_detections)  # fmt: skip
    result = detection_throughput(model, many, CPU, batches=2, warmup=1)
    assert result.training > 0 and result.forward_backward > 0 and result.batch_size == 2
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_validation_with_the_coco_metrics(loader):
    from tlops.evaluation.detection_metrics import detection_metrics, predict_detections

    rows = loader.dataset
    truth = [{"boxes": b.numpy().astype("float64"), "labels": (lab - 1).numpy()} for b, lab in rows.annotations]

    def evaluate(model, val_loader, device):
        return detection_metrics(truth, predict_detections(model, val_loader, device), ["square"]).metrics

    model, blocks = tiny_detector(1)
    val = DataLoader(rows, batch_size=2, collate_fn=collate_detections)
    history = train_detector(model, loader, val, _config(epochs=1), CPU, strategy="full", blocks=blocks,
                             evaluate=evaluate, progress=False)  # fmt: skip
    assert 0.0 <= history.epochs[0].val["map50"] <= 1.0 and "mean_image_f1" in history.epochs[0].val
