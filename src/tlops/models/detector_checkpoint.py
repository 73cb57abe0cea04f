"""A trained detector as files: safetensors weights and a JSON config, rebuilt without network access or pickle."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from tlops.errors import TlopsError

WEIGHTS_FILE = "detector.safetensors"
CONFIG_FILE = "detector.json"


@dataclass(frozen=True)
class DetectorConfig:
    """What rebuilding a detector needs besides its weights.

    Attributes:
        architecture: ``"fasterrcnn"`` or ``"fcos"``.
        backbone: The backbone name it was built on.
        classes: Object class names; class ``classes[i]`` is the model's label ``i + 1``.
        image_size: The side images are resized to.
        mean: Per-channel normalisation mean (the backbone's).
        std: Per-channel normalisation standard deviation.
    """

    architecture: str
    backbone: str
    classes: list[str]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        """Object classes K (the model's labels are 1..K)."""
        return len(self.classes)

    @classmethod
    def of(cls, model: nn.Module, architecture: str, backbone: str, classes: list[str]) -> DetectorConfig:
        """The config of a model :func:`~tlops.models.detector.build_detector` built (size, mean, std read off it)."""
        transform = model.transform
        return cls(
            architecture=architecture,
            backbone=backbone,
            classes=list(classes),
            image_size=int(transform.min_size[0]),
            mean=tuple(float(v) for v in transform.image_mean),
            std=tuple(float(v) for v in transform.image_std),
        )


def save_detector(model: nn.Module, folder: Path, config: DetectorConfig) -> Path:
    """Write the detector's weights (safetensors) and config (JSON) into ``folder`` (created); return it."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    payload = asdict(config) | {"num_classes": config.num_classes}
    (folder / CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    return folder


def read_config(folder: Path) -> DetectorConfig:
    """The config :func:`save_detector` wrote into ``folder``.

    Raises:
        TlopsError: The folder holds no detector config.
    """
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise TlopsError(f"{folder} holds no {CONFIG_FILE}; give a folder written by save_detector")
    values = json.loads(path.read_text())
    values.pop("num_classes", None)
    values["mean"], values["std"] = tuple(values["mean"]), tuple(values["std"])
    return DetectorConfig(**values)


def load_detector(folder: Path) -> tuple[nn.Module, DetectorConfig]:
    """Rebuild the detector :func:`save_detector` wrote (no pretrained weights fetched) in eval mode.

    Raises:
        TlopsError: The folder holds no detector, or its weights do not fit the rebuilt network.
    """
    from safetensors.torch import load_file

    from tlops.models.detector import build_detector

    config = read_config(folder)
    model = build_detector(
        config.backbone,
        config.num_classes,
        architecture=config.architecture,
        image_size=config.image_size,
        pretrained=False,
    )
    model.transform.image_mean = list(config.mean)
    model.transform.image_std = list(config.std)
    try:
        model.load_state_dict(load_file(str(Path(folder) / WEIGHTS_FILE)))
    except (RuntimeError, FileNotFoundError) as error:
        raise TlopsError(
            f"detector weights in {folder} do not fit a {config.architecture} on {config.backbone!r} "
            f"({str(error).splitlines()[0][:150]}); give the folder save_detector wrote"
        ) from None
    return model.eval(), config
