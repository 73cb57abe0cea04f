"""Detectors on tlops backbones: built from the bundled weights, trained a few steps, weights loaded from files and
S3, a torchvision detector checkpoint loaded past its class-specific predictor, saved and rebuilt exactly."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from tlops.errors import TlopsError
from tlops.models.detector import (
    backbone_blocks,
    build_detector,
    detector_parts,
    load_detector_weights,
    set_inference_limits,
)
from tlops.models.detector_checkpoint import DetectorConfig, load_detector, save_detector

SIZE = 128


def synthetic() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two small images, each a bright rectangle on noise, and their boxes (class 1 and class 2)."""
    generator = torch.Generator().manual_seed(0)
    images, targets = [], []
    for label, (height, width), box in ((1, (96, 128), (20, 16, 70, 60)), (2, (120, 100), (30, 40, 90, 100))):
        image = torch.rand(3, height, width, generator=generator) * 0.3
        x1, y1, x2, y2 = box
        image[:, y1:y2, x1:x2] = 0.9
        images.append(image)
        targets.append({"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([label])})
    return images, targets


@pytest.mark.parametrize("architecture", ["fasterrcnn", "fcos"])
def test_a_bundled_backbone_detector_trains_and_detects(architecture: str) -> None:
    torch.manual_seed(0)
    model = build_detector("efficientnet_lite0", 2, architecture=architecture, image_size=SIZE)
    assert model.transform.min_size == (SIZE,) and model.transform.max_size == SIZE
    assert model.transform.image_mean == pytest.approx([0.485, 0.456, 0.406])
    images, targets = synthetic()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.005, momentum=0.9)
    totals = []
    model.train()
    for _ in range(5):
        losses = model(images, targets)
        assert all(torch.isfinite(loss) for loss in losses.values()), losses
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        totals.append(total.item())
    assert totals == sorted(totals, reverse=True) and totals[-1] < 0.9 * totals[0], totals
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for output, image in zip(outputs, images, strict=True):
        assert set(output) == {"boxes", "labels", "scores"}
        boxes = output["boxes"]
        assert boxes.shape[1] == 4 and len(output["labels"]) == len(output["scores"]) == len(boxes)
        assert (boxes[:, 2] <= image.shape[2] + 1e-3).all() and (boxes[:, 3] <= image.shape[1] + 1e-3).all()
        assert set(output["labels"].tolist()) <= {1, 2}


def test_the_body_stages_and_parts_cover_the_model() -> None:
    model = build_detector("efficientnet_lite0", 3, image_size=SIZE, pretrained=False)
    body, rest = detector_parts(model)
    blocks = backbone_blocks(model)
    assert len(blocks) == 8  # the stem, then timm's 7 block stages
    in_blocks = {id(p) for block in blocks for p in block.parameters()}
    assert in_blocks == {id(p) for p in body.parameters()}
    everything = {id(p) for p in body.parameters()} | {id(p) for part in rest for p in part.parameters()}
    assert everything == {id(p) for p in model.parameters()}
    # The body's batch norms are frozen: no batch statistics from a detection batch of a few images.
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())


def test_backbone_weights_load_from_a_file_and_from_s3(tmp_path: Path, s3_client, bucket: str) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = {k: v.contiguous() for k, v in classifier.state_dict().items()}
    path = tmp_path / "lite0.safetensors"
    save_file(state, str(path))
    s3_client.upload_file(str(path), bucket, "weights/lite0.safetensors")
    for uri, s3 in ((str(path), None), (f"s3://{bucket}/weights/lite0.safetensors", s3_client)):
        model = build_detector(f"timm:tf_efficientnet_lite0@{uri}", 2, image_size=SIZE, s3=s3, cache_dir=tmp_path)
        inner = model.backbone.body.model
        assert torch.equal(inner.conv_stem.weight, state["conv_stem.weight"])
        assert torch.equal(inner.blocks[6][0].conv_pwl.weight, state["blocks.6.0.conv_pwl.weight"])
        assert torch.equal(inner.bn1.running_var, state["bn1.running_var"])  # frozen after loading


def torchvision_coco_layout(num_classes: int = 91) -> torch.nn.Module:
    """torchvision's own Faster R-CNN layout (as fasterrcnn_resnet50_fpn), on resnet18 to stay small."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    torch.manual_seed(5)
    return FasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None), num_classes=num_classes)


def test_a_torchvision_detector_checkpoint_loads_all_but_its_predictor(tmp_path: Path, caplog) -> None:
    reference = torchvision_coco_layout().state_dict()
    path = tmp_path / "coco.pth"
    torch.save(reference, path)
    with caplog.at_level(logging.INFO, logger="tlops.models.detector"):
        model = build_detector("torchvision:resnet18", 4, image_size=SIZE, detector_weights=str(path))
    predictor = [
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.cls_score.bias",
        "roi_heads.box_predictor.bbox_pred.weight",
        "roi_heads.box_predictor.bbox_pred.bias",
    ]
    assert "4 skipped" in caplog.text and all(name in caplog.text for name in predictor)
    own = model.state_dict()
    for key, tensor in reference.items():
        if key in predictor or key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(own[key], tensor), key
    assert own["roi_heads.box_predictor.cls_score.weight"].shape == (5, 1024)
    report = load_detector_weights(model, str(path))
    assert sorted(report.skipped) == sorted(predictor) and not report.missing
    assert {key for key in report.unexpected} == {k for k in reference if k.endswith("num_batches_tracked")}


def test_detector_weights_load_from_s3(tmp_path: Path, s3_client, bucket: str) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(7)
    source = build_detector("efficientnet_lite0", 5, architecture="fcos", image_size=SIZE, pretrained=False)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "fcos.safetensors"))
    s3_client.upload_file(str(tmp_path / "fcos.safetensors"), bucket, "fcos.safetensors")
    model = build_detector(
        "efficientnet_lite0",
        2,
        architecture="fcos",
        image_size=SIZE,
        s3=s3_client,
        cache_dir=tmp_path / "cache",
        detector_weights=f"s3://{bucket}/fcos.safetensors",
    )
    report = load_detector_weights(model, f"s3://{bucket}/fcos.safetensors", s3=s3_client, cache_dir=tmp_path)
    assert set(report.skipped) == {
        "head.classification_head.cls_logits.weight",
        "head.classification_head.cls_logits.bias",
    }
    assert torch.equal(model.head.regression_head.bbox_reg.weight, source.head.regression_head.bbox_reg.weight)


@pytest.mark.parametrize("architecture", ["fasterrcnn", "fcos"])
def test_a_saved_detector_rebuilds_with_identical_outputs(tmp_path: Path, architecture: str) -> None:
    torch.manual_seed(11)
    model = build_detector("efficientnet_lite0", 2, architecture=architecture, image_size=SIZE).eval()
    config = DetectorConfig.of(model, architecture, "efficientnet_lite0", ["cat", "dog"])
    folder = save_detector(model, tmp_path / "detector", config)
    assert {p.name for p in folder.iterdir()} == {"detector.safetensors", "detector.json"}
    rebuilt, read = load_detector(folder)
    assert read == config and read.num_classes == 2 and read.image_size == SIZE
    images, _ = synthetic()
    for network in (model, rebuilt):
        set_inference_limits(network, 0.0, 100)
    with torch.no_grad():
        expected, got = model(images), rebuilt(images)
    assert len(expected[0]["boxes"]) > 0
    for want, have in zip(expected, got, strict=True):
        for key in ("boxes", "labels", "scores"):
            assert torch.equal(want[key], have[key]), key


def test_bad_names_are_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(TlopsError, match=r"unknown detector architecture 'retina'.*fasterrcnn, fcos"):
        build_detector("efficientnet_lite0", 2, architecture="retina")
    with pytest.raises(TlopsError, match=r"cannot give multi-scale feature maps.*use a convolutional backbone"):
        build_detector("timm:vit_tiny_patch16_224", 2, pretrained=False)
    with pytest.raises(TlopsError, match="unknown backbone 'efficientnet_lite9'"):
        build_detector("efficientnet_lite9", 2)
    with pytest.raises(TlopsError, match=r"holds no detector\.json"):
        load_detector(tmp_path)
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"something.else": torch.zeros(3)}, unrelated)
    with pytest.raises(TlopsError, match="fit none of the model's tensors"):
        build_detector("efficientnet_lite0", 2, image_size=SIZE, detector_weights=str(unrelated))


@pytest.mark.parametrize("architecture", ["fasterrcnn", "fcos"])
def test_an_images_detections_do_not_depend_on_its_batch(architecture: str) -> None:
    torch.manual_seed(13)
    model = build_detector("efficientnet_lite0", 2, architecture=architecture, image_size=SIZE, pretrained=False)
    set_inference_limits(model.eval(), 0.0, 20)
    wide, tall = torch.rand(3, 60, 128), torch.rand(3, 128, 60)  # resized 60x128 alone, padded with a 128x60
    with torch.no_grad():
        together, alone = model([wide, tall]), model([wide])
    assert len(alone[0]["boxes"]) > 0
    assert torch.allclose(together[0]["boxes"], alone[0]["boxes"], atol=1e-4)
    assert torch.allclose(together[0]["scores"], alone[0]["scores"], atol=1e-5)
