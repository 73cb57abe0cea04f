"""Object detectors on tlops backbones: torchvision Faster R-CNN or FCOS over a feature pyramid of the backbone.

The backbone names are those of :mod:`tlops.models.backbones`; the detector takes the body's last stages (strides
8, 16 and 32) into a :class:`torchvision.ops.FeaturePyramidNetwork`. A ``torchvision:`` backbone under Faster R-CNN
takes strides 4 to 32 instead, exactly as torchvision's own ``fasterrcnn_*_fpn`` do, so that their COCO
checkpoints (``detector_weights``) fit tensor for tensor; under FCOS strides 8 to 32, as ``fcos_resnet50_fpn``.

The body's batch norms are frozen (running statistics and affine parameters fixed, as in torchvision's detectors):
detection batches are a few images, too few for batch statistics. Normalisation with the backbone's mean and std
and resizing to ``image_size`` happen inside the model (its ``transform``); boxes come back in the pixels of the
images given. Every resized image is padded to the same square, so that an image's detections do not depend on the
other images of its batch.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign

from tlops.data.preprocessing import DataConfig
from tlops.errors import TlopsError
from tlops.io.paths import default_cache_dir
from tlops.io.storage import S3Client
from tlops.models.backbones import _check_checkpoint, _fetch_weights, _load_state_file, bundled_weights_file
from tlops.models.names import BUNDLED, DETECTORS, NAMES_HELP, did_you_mean, split_backbone_name

logger = logging.getLogger(__name__)

ARCHITECTURES = DETECTORS
ROI_SAMPLES_PER_IMAGE = 128
"""Proposals a Faster R-CNN box head trains on per image (torchvision's default: 512). Images of a few objects
give few positives either way; 128 made a training step of 8 images at 160 pixels 3x faster on a CPU (4 s against
12-16 s), the box head's fully connected layers being most of the cost."""
FPN_CHANNELS = 256
STRIDES = (8, 16, 32)
TORCHVISION_RCNN_STRIDES = (4, 8, 16, 32)
_STAGE_CONTAINERS = ("blocks", "features", "stages", "trunk_output", "layers")


class PyramidBackbone(nn.Module):
    """A multi-scale body and a feature pyramid on it, laid out as torchvision's ``BackboneWithFPN``.

    Args:
        body: Maps ``(N, 3, H, W)`` to an ordered dict of feature maps, finest first.
        in_channels: Channels of each of those maps.
        extra_blocks: Extra pyramid levels (``LastLevelMaxPool`` or ``LastLevelP6P7``).
    """

    def __init__(self, body: nn.Module, in_channels: list[int], extra_blocks: nn.Module) -> None:
        from torchvision.ops import FeaturePyramidNetwork

        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels, FPN_CHANNELS, extra_blocks=extra_blocks)
        self.out_channels = FPN_CHANNELS

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """The pyramid's feature maps of a normalised batch."""
        return self.fpn(self.body(images))


class _ListToDict(nn.Module):
    """Names the feature maps of a timm ``features_only`` model ``"0"``, ``"1"``, ... as the pyramid expects."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((str(i), feature) for i, feature in enumerate(self.model(images)))


@dataclass
class WeightsReport:
    """What loading a detector checkpoint did.

    Attributes:
        loaded: Tensors loaded.
        skipped: Tensors of the checkpoint whose shape differs from the model's (the class-specific predictor).
        missing: Tensors of the model the checkpoint lacks (they keep their initial values).
        unexpected: Tensors of the checkpoint the model lacks.
    """

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def build_detector(
    backbone: str,
    num_classes: int,
    *,
    architecture: str = "fasterrcnn",
    image_size: int = 512,
    pretrained: bool = True,
    s3: S3Client | None = None,
    cache_dir: Path | None = None,
    detector_weights: str | None = None,
) -> nn.Module:
    """Build a detector of ``num_classes`` object classes on a pretrained backbone.

    Args:
        backbone: A backbone name (:mod:`tlops.models.backbones`) whose body gives multi-scale feature maps.
        num_classes: Object classes K; the model predicts labels 1..K (0 is the background).
        architecture: ``"fasterrcnn"`` or ``"fcos"``.
        image_size: Images are resized so that their sides fit ``image_size`` (min_size = max_size).
        pretrained: Load the backbone's pretrained weights; ``False`` builds the bare network (to load a checkpoint).
        s3: S3 client for ``@s3://`` backbone weights and s3:// detector weights.
        cache_dir: Cache for converted and downloaded weights.
        detector_weights: A torchvision detector checkpoint (local path or s3:// URI; e.g. COCO
            ``fasterrcnn_resnet50_fpn``) loaded over the built model, skipping tensors whose shapes differ; the
            backbone's own pretrained weights are then not fetched (the checkpoint holds the body's).

    Returns:
        A torchvision ``FasterRCNN`` or ``FCOS`` in train mode.

    Raises:
        TlopsError: for an unknown architecture, a backbone without multi-scale features, or unusable weights.
    """
    if architecture not in ARCHITECTURES:
        raise TlopsError(
            f"unknown detector architecture {architecture!r}{did_you_mean(architecture, list(ARCHITECTURES))}; "
            f"use one of {', '.join(ARCHITECTURES)}"
        )
    if num_classes < 1:
        raise TlopsError(f"a detector needs at least 1 object class, got {num_classes}; check the dataset's classes")
    cache_dir = cache_dir or default_cache_dir()
    family, _arch, _weights = split_backbone_name(backbone)
    strides = TORCHVISION_RCNN_STRIDES if family == "torchvision" and architecture == "fasterrcnn" else STRIDES
    # A detector checkpoint holds the body's weights too: the backbone's own are not fetched under it.
    body, channels, data_config = _multiscale_body(
        backbone, strides, pretrained and not detector_weights, s3, cache_dir
    )
    _freeze_batch_norm(body)
    model = _assemble(architecture, body, channels, num_classes, image_size, data_config)
    if detector_weights:
        report = load_detector_weights(model, detector_weights, s3=s3, cache_dir=cache_dir)
        logger.info(
            "detector weights %s: %d tensors loaded, %d skipped (shape differs: %s), %d missing",
            detector_weights,
            len(report.loaded),
            len(report.skipped),
            ", ".join(report.skipped) or "none",
            len(report.missing),
        )
    return model


def detector_parts(model: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    """``(backbone body, the rest)``: the body to freeze, and the pyramid and heads that always train."""
    rest = [model.backbone.fpn] + [
        module for name, module in model.named_children() if name not in ("backbone", "transform")
    ]
    return model.backbone.body, [module for module in rest if any(True for _ in module.parameters())]


def backbone_blocks(model: nn.Module) -> list[nn.Module]:
    """The body's stages from input to output (the stem's layers grouped as one), for partial fine-tuning."""
    body = model.backbone.body
    if isinstance(body, _ListToDict):
        body = body.model
    blocks: list[nn.Module] = []
    loose: list[nn.Module] = []
    for name, child in body.named_children():
        children = list(child.children()) if name in _STAGE_CONTAINERS else [child]
        for module in children:
            if isinstance(module, nn.Sequential | nn.ModuleList) or type(module) is nn.Module:
                if loose:
                    blocks.append(nn.Sequential(*loose))
                    loose = []
                blocks.append(module)
            else:
                loose.append(module)
    if loose:
        blocks.append(nn.Sequential(*loose))
    return [block for block in blocks if any(True for _ in block.parameters())]


def set_inference_limits(model: nn.Module, score_threshold: float, max_detections: int) -> None:
    """Keep detections scoring at least ``score_threshold``, at most ``max_detections`` per image (eval mode)."""
    target = model.roi_heads if hasattr(model, "roi_heads") else model
    target.score_thresh = float(score_threshold)
    target.detections_per_img = int(max_detections)


def load_detector_weights(
    model: nn.Module, uri: str, *, s3: S3Client | None = None, cache_dir: Path | None = None
) -> WeightsReport:
    """Load a detector checkpoint's tensors that fit ``model``; skip those whose shapes differ.

    Args:
        model: The detector to load into.
        uri: A safetensors file or torch state dict, local path or s3:// URI.
        s3: S3 client for s3:// URIs.
        cache_dir: Where an s3:// checkpoint is downloaded to.

    Raises:
        TlopsError: The file is no checkpoint, or none of its tensors fits the model.
    """
    path = _fetch_weights(uri, s3, cache_dir or default_cache_dir())
    _check_checkpoint(path)
    state = _load_state_file(path)
    own = model.state_dict()
    report = WeightsReport()
    fitting = {}
    for key, tensor in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != tensor.shape:
            report.skipped.append(key)
        else:
            fitting[key] = tensor
            report.loaded.append(key)
    report.missing = [key for key in own if key not in state]
    if not fitting:
        raise TlopsError(
            f"detector weights {uri} fit none of the model's tensors; give a checkpoint of a torchvision "
            f"{type(model).__name__} on the same backbone (e.g. fasterrcnn_resnet50_fpn with torchvision:resnet50)"
        )
    model.load_state_dict(fitting, strict=False)
    return report


def _assemble(
    architecture: str,
    body: nn.Module,
    channels: list[int],
    num_classes: int,
    image_size: int,
    data_config: DataConfig,
) -> nn.Module:
    from torchvision.models.detection import FCOS, FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

    common = {
        "num_classes": num_classes + 1,
        "min_size": image_size,
        "max_size": image_size,
        "image_mean": list(data_config.mean),
        "image_std": list(data_config.std),
    }
    if architecture == "fcos":
        backbone = PyramidBackbone(body, channels, LastLevelP6P7(FPN_CHANNELS, FPN_CHANNELS))
        return _pad_to_square(FCOS(backbone, **common), image_size)
    backbone = PyramidBackbone(body, channels, LastLevelMaxPool())
    levels = len(channels) + 1  # the max-pooled level on top
    anchors = AnchorGenerator(tuple((32 * 2**i,) for i in range(levels)), ((0.5, 1.0, 2.0),) * levels)
    pool = SquareRoIAlign([str(i) for i in range(len(channels))], padded_size(image_size))
    model = FasterRCNN(
        backbone,
        rpn_anchor_generator=anchors,
        box_roi_pool=pool,
        box_batch_size_per_image=ROI_SAMPLES_PER_IMAGE,
        **common,
    )
    return _pad_to_square(model, image_size)


def _pad_to_square(model: nn.Module, image_size: int) -> nn.Module:
    """Pad every resized image to the same square (a multiple of 32), whatever the other images of its batch.

    torchvision pads a batch to its largest image: an image's detections would depend on the images batched with
    it (in serving, on the other rows of a request). Resized, no side exceeds ``image_size``, so one square fits all.
    """
    model.transform.size_divisible = padded_size(image_size)
    return model


def padded_size(image_size: int) -> int:
    """The side of the square every resized image is padded to: ``image_size`` rounded up to a multiple of 32."""
    return -(-image_size // 32) * 32


class SquareRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (7x7, sampling ratio 2) told the padded square's size.

    torchvision infers each level's scale from the largest image *height* of the batch: a wide image alone in
    its batch (resized to 128x85 and padded to 128x128) would get the wrong scale and its boxes pooled from the
    wrong places. Every image is padded to the same square here, so that square is the size the scales come from.
    """

    def __init__(self, featmap_names: list[str], padded: int) -> None:
        super().__init__(featmap_names, output_size=7, sampling_ratio=2)
        self.padded = padded

    def forward(
        self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        """Pool each box's 7x7 features from its pyramid level."""
        return super().forward(x, boxes, [(self.padded, self.padded)] * len(image_shapes))


def _multiscale_body(
    name: str, strides: tuple[int, ...], pretrained: bool, s3: S3Client | None, cache_dir: Path
) -> tuple[nn.Module, list[int], DataConfig]:
    family, arch, weights_uri = split_backbone_name(name)
    if name in BUNDLED:
        return _bundled_body(name, strides, pretrained, cache_dir)
    if family == "timm" and arch:
        weights = _fetch_weights(weights_uri, s3, cache_dir) if weights_uri and pretrained else None
        return _timm_body(name, arch, strides, pretrained, weights)
    if family in ("torchvision", "hub") and arch:
        from tlops.models.backbones import load_backbone

        backbone = load_backbone(name, pretrained=pretrained, s3=s3, cache_dir=cache_dir)
        body, channels = _graph_body(name, backbone.model, strides)
        return body, channels, backbone.data_config
    raise TlopsError(f"unknown backbone {name!r}{did_you_mean(name, list(BUNDLED))}; use {NAMES_HELP}")


def _timm_features(name: str, arch: str, strides: tuple[int, ...], **kwargs: object) -> nn.Module:
    import timm

    if not timm.is_model(arch):
        raise TlopsError(f"timm has no model {arch!r}{did_you_mean(arch, timm.list_models())}; see timm.list_models()")
    try:
        probe = timm.create_model(arch, pretrained=False, features_only=True)
    except (RuntimeError, ValueError, AssertionError, TypeError) as error:
        raise _no_pyramid(name, str(error)) from None
    reductions = probe.feature_info.reduction()
    missing = [s for s in strides if s not in reductions]
    if missing:
        raise _no_pyramid(name, f"its feature maps have strides {reductions}, not {list(strides)}")
    indices = tuple(len(reductions) - 1 - reductions[::-1].index(s) for s in strides)
    return timm.create_model(arch, features_only=True, out_indices=indices, **kwargs)


def _bundled_body(
    name: str, strides: tuple[int, ...], pretrained: bool, cache_dir: Path
) -> tuple[nn.Module, list[int], DataConfig]:
    model = _timm_features(name, f"tf_{name}", strides, pretrained=False)
    if pretrained:
        from safetensors.torch import load_file

        state = load_file(str(bundled_weights_file(name, cache_dir)))
        result = model.load_state_dict(state, strict=False)
        head = ("conv_head.", "bn2.", "classifier.")
        stray = [k for k in result.unexpected_keys if not k.startswith(head)]
        if result.missing_keys or stray:
            raise TlopsError(
                f"bundled weights of {name!r} do not fit timm's feature extractor (missing {result.missing_keys[:3]}, "
                f"unexpected {stray[:3]}); reinstall timm at the version tlops pins"
            )
    # The EfficientNet-PyTorch checkpoints expect ImageNet mean/std, as for classification.
    _package, _class, size = BUNDLED[name]
    config = DataConfig(input_size=size, interpolation="bicubic", crop_pct=0.875)
    return _ListToDict(model), list(model.feature_info.channels()), config


def _timm_body(
    name: str, arch: str, strides: tuple[int, ...], pretrained: bool, weights: Path | None
) -> tuple[nn.Module, list[int], DataConfig]:
    import timm

    if weights is not None:
        _check_checkpoint(weights)
    overlay = {"file": str(weights)} if weights else None
    try:
        model = _timm_features(name, arch, strides, pretrained=pretrained, pretrained_cfg_overlay=overlay)
    except (OSError, RuntimeError) as error:
        raise TlopsError(
            f"cannot load pretrained weights for {name!r} ({type(error).__name__}: {str(error)[:200]}); "
            "without network access give a weights file: timm:NAME@/path/or/s3/weights.safetensors"
        ) from None
    resolved = timm.data.resolve_model_data_config(model)
    config = DataConfig(
        input_size=int(resolved["input_size"][-1]), mean=tuple(resolved["mean"]), std=tuple(resolved["std"])
    )
    return _ListToDict(model), list(model.feature_info.channels()), config


def _graph_body(name: str, model: nn.Module, strides: tuple[int, ...]) -> tuple[nn.Module, list[int]]:
    """The modules of a classifier that last output each stride's feature map, as a feature extractor."""
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.feature_extraction import create_feature_extractor

    nodes = _stage_outputs(model, strides)
    if nodes is None:
        raise _no_pyramid(name, f"no modules of it output feature maps at strides {list(strides)}")
    return_nodes = {node: str(i) for i, (node, _) in enumerate(nodes)}
    top = dict(model.named_children())
    if all(node in top for node in return_nodes):
        body: nn.Module = IntermediateLayerGetter(model, return_nodes)
    else:
        try:
            body = create_feature_extractor(model, return_nodes=return_nodes)
        except Exception as error:  # torch.fx raises whatever tracing the model's forward raises
            raise _no_pyramid(name, f"torch.fx cannot trace it ({type(error).__name__})") from None
    return body, [channels for _, channels in nodes]


def _stage_outputs(model: nn.Module, strides: tuple[int, ...]) -> list[tuple[str, int]] | None:
    """``(module name, channels)`` of the stage finishing last at each stride in one forward pass, or ``None``.

    The stages are the model's children, a sequential child's (``features``, ``trunk_output``) expanded into its
    own: the chain a classifier's image passes through, stage after stage.
    """
    size = 256
    finished: dict[str, tuple[int, int, int]] = {}
    calls: dict[str, int] = {}
    order = [0]

    def hook(name: str):
        def record(_module: nn.Module, _inputs: object, output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] > 0:
                order[0] += 1
                finished[name] = (order[0], size // output.shape[-1], output.shape[1])

        return record

    stages: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential | nn.ModuleList) and len(child) > 1:
            stages.extend((f"{name}.{sub}", module) for sub, module in child.named_children())
        else:
            stages.append((name, child))
    handles = [module.register_forward_hook(hook(name)) for name, module in stages]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size))
    except Exception:  # a model that cannot run a plain image batch has no usable pyramid
        return None
    finally:
        for handle in handles:
            handle.remove()
    chosen = []
    for stride in strides:
        candidates = [(t, n, c) for n, (t, s, c) in finished.items() if s == stride and calls[n] == 1]
        if not candidates:
            return None
        _t, node, channels = max(candidates)
        chosen.append((node, int(channels)))
    return chosen


def _freeze_batch_norm(body: nn.Module) -> None:
    from timm.layers import freeze_batch_norm_2d

    for name, child in list(body.named_children()):
        frozen = freeze_batch_norm_2d(child)
        if frozen is not child:
            setattr(body, name, frozen)


def _no_pyramid(name: str, why: str) -> TlopsError:
    return TlopsError(
        f"backbone {name!r} cannot give multi-scale feature maps for detection ({why}); use a convolutional "
        "backbone such as efficientnet_lite0, timm:resnet50 or torchvision:resnet50"
    )
