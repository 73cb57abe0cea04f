"""The fine-tuning engine: blocks per strategy, parameter groups, the shared loop, checkpoints, resume, DDP."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from probes import SMALL_SIZE as SIZE
from probes import probe_small
from tlops.data.sampling import EpochSampler, SeededAugmentation
from tlops.errors import TlopsError
from tlops.models.backbones import build_classifier, load_backbone
from tlops.steps.fine_tune import fine_tune
from tlops.steps.outputs import ModelConfig, load_model
from tlops.steps.runtime import Runtime
from tlops.train.blocks import block_groups, trained_blocks
from tlops.train.config import TrainConfig
from tlops.train.finetune import train_classifier
from tlops.train.mlp import fit_mlp_head
from tlops.train.optim import parameter_groups
from tlops.train.resume import CheckpointStore


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small digits probed once for this module, with a feature cache of their own."""
    return probe_small(tmp_path_factory.mktemp("engine"))


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0", image_size=SIZE, pretrained=False)


def _images(count: int = 16, classes: int = 2, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 3, SIZE, SIZE, generator=generator)
    return TensorDataset(images, torch.arange(count) % classes)


def _train(backbone, strategy: str, epochs: int = 1, **settings):
    torch.manual_seed(0)
    classifier = build_classifier(copy.deepcopy(backbone), 2)  # training changes the backbone in place
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    data = _images()
    config = TrainConfig(strategy=strategy, epochs=epochs, batch_size=8, lr=1e-2, **settings)
    run = train_classifier(
        classifier, data, DataLoader(data, batch_size=16), config, torch.device("cpu"),
        strategy=strategy, blocks=block_groups(backbone.model), num_classes=2,
    )  # fmt: skip
    changed = {k for k, v in run.model.state_dict().items() if not torch.equal(v, before[k])}
    return run, changed


def _changed_blocks(backbone, changed: set[str]) -> list[int]:
    blocks = block_groups(backbone.model)
    return [i for i, names in enumerate(blocks) if any("1." + n in changed for n in names)]


# --- blocks --------------------------------------------------------------------------------------------------------


def test_blocks_follow_the_backbones_stages(lite0) -> None:
    blocks = block_groups(lite0.model)
    assert len(blocks) == 8  # stem, then the 7 stages of EfficientNet-Lite0 (the head conv joins the last)
    assert blocks[0][0] == "conv_stem.weight" and blocks[1][0].startswith("blocks.0.")
    assert blocks[-1][0].startswith("blocks.6.")
    assert sorted(n for b in blocks for n in b) == sorted(n for n, _ in lite0.model.named_parameters())


def test_blocks_of_a_network_without_a_group_matcher() -> None:
    import torchvision

    resnet = torchvision.models.resnet18(weights=None)
    resnet.fc = nn.Identity()
    names = [b[0].split(".")[0] for b in block_groups(resnet)]
    assert names == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
    mobilenet = torchvision.models.mobilenet_v3_small(weights=None).features  # one Sequential: its children
    assert [b[0].split(".")[0] for b in block_groups(nn.Sequential(mobilenet))][:2] == ["0", "0"]
    assert len(block_groups(nn.Sequential(mobilenet))) == len(mobilenet)


def test_each_strategy_trains_its_blocks() -> None:
    config = TrainConfig(unfreeze_blocks=2)
    assert trained_blocks("partial", 8, config) == [6, 7]
    assert trained_blocks("surgical", 8, config) == [0, 1]
    assert trained_blocks("surgical", 8, TrainConfig(surgical_blocks="middle", unfreeze_blocks=2)) == [3, 4]
    assert trained_blocks("surgical", 8, TrainConfig(surgical_blocks="last", unfreeze_blocks=3)) == [5, 6, 7]
    assert trained_blocks("lp-ft", 8, config) == list(range(8))
    assert [trained_blocks("gradual", 8, config, epoch) for epoch in (1, 2, 3)] == [[7], [6, 7], [5, 6, 7]]
    with pytest.raises(TlopsError, match=r"--unfreeze-blocks 9 is more than the backbone's 8 blocks: use at most 8"):
        trained_blocks("partial", 8, TrainConfig(unfreeze_blocks=9))


def test_layer_wise_decay_and_no_weight_decay_on_norms_and_biases(lite0) -> None:
    classifier = build_classifier(lite0, 3)
    blocks = block_groups(lite0.model)
    config = TrainConfig(lr=1e-3, layer_decay=0.5, weight_decay=0.05)
    groups = {g["name"]: g for g in parameter_groups(classifier, blocks, [6, 7], config)}
    assert set(groups) == {"head.decay", "head.no_decay", "block6.decay", "block6.no_decay", "block7.decay",
                           "block7.no_decay"}  # fmt: skip
    assert groups["head.decay"]["lr"] == 1e-3
    assert groups["block7.decay"]["lr"] == pytest.approx(1e-3 * 0.5)
    assert groups["block6.decay"]["lr"] == pytest.approx(1e-3 * 0.25)
    assert all(p.ndim > 1 for p in groups["block7.decay"]["params"]) and groups["block7.decay"]["weight_decay"] == 0.05
    assert all(p.ndim <= 1 for p in groups["block7.no_decay"]["params"])
    assert groups["block7.no_decay"]["weight_decay"] == 0.0


# --- the loop ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "settings", "expected"),
    [
        ("partial", {"unfreeze_blocks": 2}, [6, 7]),
        ("surgical", {"unfreeze_blocks": 1, "surgical_blocks": "first"}, [0]),
        ("lp-ft", {}, list(range(8))),
    ],
)
def test_only_the_strategys_blocks_and_the_head_change(lite0, strategy, settings, expected) -> None:
    run, changed = _train(lite0, strategy, **settings)
    assert _changed_blocks(lite0, changed) == expected
    assert "2.weight" in changed and "2.bias" in changed
    assert not any("running_mean" in k for k in changed)  # BatchNorm statistics stay frozen
    assert [r.epoch for r in run.history] == [0, 1] and run.history[1].blocks == len(expected)


def test_gradual_unfreezes_one_more_block_per_epoch(lite0) -> None:
    run, changed = _train(lite0, "gradual", epochs=3, swa_epochs=1)  # keeps the last epoch, not the best one
    assert [r.blocks for r in run.history[1:4]] == [1, 2, 3]
    assert _changed_blocks(lite0, changed) == [5, 6, 7]


def test_gradient_accumulation_equals_the_whole_batch(lite0) -> None:
    """Two micro-batches of 4 leave the gradient one batch of 8 leaves (compared before the optimizer, which would
    turn float noise on near-zero gradients into whole steps)."""
    from tlops.train.epoch import OptimizerStep, train_epoch

    class Capture(OptimizerStep):
        def __call__(self) -> None:
            self.grads = {n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None}

    data = _images(8)
    gradients = []
    for micro, accumulation in ((8, 1), (4, 2)):
        torch.manual_seed(0)
        classifier = build_classifier(copy.deepcopy(lite0), 2).eval()  # eval: BatchNorm statistics frozen
        optimizer = torch.optim.SGD(classifier.parameters(), lr=0.0)
        step = Capture(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), classifier, accumulation)
        batches = [(data.tensors[0][i : i + micro], data.tensors[1][i : i + micro]) for i in range(0, 8, micro)]
        loader = type("Batches", (list,), {"set_postfix": lambda self, **_: None})(batches)
        train_epoch(classifier, loader, len(batches), nn.CrossEntropyLoss(), step, None, torch.device("cpu"), False)
        gradients.append(step.grads)
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) > 100
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, rtol=1e-4, atol=1e-6)


def test_swa_keeps_the_average_of_the_last_epochs(lite0) -> None:
    run, _ = _train(lite0, "partial", epochs=2, swa_epochs=2)
    assert run.history[-1].swa is True and run.best_epoch == 2
    assert run.history[-1].val_accuracy == run.history[-1].val_accuracy  # evaluated, not NaN


def test_a_batch_larger_than_the_training_split_is_cut_to_it(caplog: pytest.LogCaptureFixture) -> None:
    from tlops.train.finetune import micro_batch_size

    assert micro_batch_size(TrainConfig(batch_size=32), 16, 1) == 16
    assert "--batch-size 32 is larger than the training split (16 images): training with batches of 16" in caplog.text
    assert micro_batch_size(TrainConfig(batch_size=32, grad_accumulation=2), 15, 2) == 3  # 12 = 2 x 2 x 3
    with pytest.raises(TlopsError, match=r"--batch-size 8 does not split over 4 processes x 2 accumulation steps"):
        micro_batch_size(TrainConfig(batch_size=8, grad_accumulation=2), 6, 4)


def test_each_images_augmentation_depends_on_seed_epoch_and_image_only() -> None:
    from torchvision.transforms import v2

    class Noisy(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 10

        def __getitem__(self, index: int):
            return v2.RandomResizedCrop(8)(torch.arange(256.0).view(1, 16, 16)), index

    data = SeededAugmentation(Noisy(), seed=3)
    assert torch.equal(data[(1, 4)][0], data[(1, 4)][0])
    assert not torch.equal(data[(1, 4)][0], data[(2, 4)][0])
    # Two processes take every other image of one permutation: together, the single process's order.
    single = [i for _, i in EpochSampler(10, seed=1)]
    ranks = [[i for _, i in EpochSampler(10, seed=1, num_replicas=2, rank=r)] for r in (0, 1)]
    assert sorted(single) == list(range(10)) and single[0::2] == ranks[0] and single[1::2] == ranks[1]


def test_mlp_head_folds_the_scaling_and_reports_its_accuracy() -> None:
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 20, generator=generator) * 4 + 50  # far from zero: the scaling matters
    labels = torch.arange(150) % 3
    features = centers[labels] + torch.randn(150, 20, generator=generator)
    result = fit_mlp_head((features[:90], labels[:90]), (features[90:], labels[90:]), 3, hidden=32, epochs=30)
    with torch.no_grad():
        predicted = result.head(features[90:]).argmax(1)
    assert result.val_accuracy == pytest.approx(float((predicted == labels[90:]).float().mean()))
    assert result.val_accuracy > 0.9 and 1 <= result.best_epoch <= 30


# --- checkpoints ---------------------------------------------------------------------------------------------------


def test_a_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    store.save({"epoch": 1}, {"backbone": "a", "classes": ["x", "y"]})
    assert store.load({"backbone": "a", "classes": ["x", "y"]})["epoch"] == 1
    with pytest.raises(TlopsError, match=r"belongs to another training run \(different backbone, classes\)"):
        store.load({"backbone": "b", "classes": ["x"]})
    (tmp_path / "fine-tune-checkpoint.pt").write_bytes(b"half a checkpoint")
    with pytest.raises(TlopsError, match=r"is unreadable .*delete it to start over"):
        store.load({})
    store.remove()
    assert store.load({}) is None and not list(tmp_path.iterdir())


# --- the step: resume after SIGKILL, DDP against one process -------------------------------------------------------


def test_mlp_probe_strategy_saves_a_servable_mlp_head(probed: dict[str, Path], tmp_path: Path) -> None:
    runtime = Runtime(cache_dir=probed["cache"], batch_size=32)
    training = fine_tune(probed["data"], probed["probe"], tmp_path, TrainConfig(strategy="mlp-probe"), runtime,
                         features_dir=probed["features"])  # fmt: skip
    assert training.strategy == "mlp-probe" and ModelConfig.read(tmp_path).head_hidden == 512
    model, _ = load_model(tmp_path)  # rebuilt from the config: Linear, ReLU, Dropout, Linear
    assert isinstance(model[2], nn.Sequential) and model[2][0].out_features == 512
    with pytest.raises(TlopsError, match="mlp-probe trains on the cached features: pass --features"):
        fine_tune(probed["data"], probed["probe"], tmp_path / "x", TrainConfig(strategy="mlp-probe"), runtime)


def test_the_torchrun_command_carries_every_setting(tmp_path: Path) -> None:
    """What torchrun and TrainJob pods run parses back to the same settings (no option silently dropped)."""
    import json

    from tlops.steps.config import RunConfig
    from tlops.steps.fine_tune import torchrun_command, worker_request

    train = TrainConfig(
        strategy="surgical", epochs=4, batch_size=16, lr=3e-4, layer_decay=0.8, unfreeze_blocks=3,
        surgical_blocks="middle", swa_epochs=2, hflip=True, trivial_augment=True, mixup=0.2, cutmix=1.0,
        grad_accumulation=2, torch_compile=True, class_weighted=True, crop_scale=0.3, clip_grad_norm=0.5,
        weight_decay=0.05, label_smoothing=0.0, freeze_batchnorm=False, mlp_hidden=64,
    )  # fmt: skip
    config = RunConfig.from_mapping({"seed": 7, "train": RunConfig(train=train).to_mapping()["train"]})
    request = worker_request(tmp_path / "d", tmp_path / "p", tmp_path / "o", config,
                             features_dir=tmp_path / "f", selection_dir=tmp_path / "s")  # fmt: skip
    command = torchrun_command(2, request)
    assert command[:4] == ["torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m"]
    assert command[4] == "tlops.steps.ddp_worker" and len(command) == 6
    sent = json.loads(command[5])
    assert RunConfig.from_mapping(sent["config"]) == config and config.train.seed == 7
    assert (sent["features"], sent["selection"]) == (str(tmp_path / "f"), str(tmp_path / "s"))


def test_an_unknown_strategy_is_refused_before_any_work() -> None:
    from tlops.cli import build_parser
    from tlops.cli.settings import resolve_config
    from tlops.errors import TlopsError

    for command in (["run"], ["fine-tune", "--dataset", "d", "--probe", "p", "--output", "o"]):
        with pytest.raises(TlopsError, match=r"^--strategy must be one of auto, linear-probe, mlp-probe, .*'freeze'"):
            resolve_config(build_parser().parse_args([*command, "--strategy", "freeze"]))
