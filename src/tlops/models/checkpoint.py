"""The trained-model artifact: classifier weights as safetensors plus the config that rebuilds it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from tlops.data.preprocessing import DataConfig
from tlops.models.backbones import build_classifier, load_backbone

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"


def save_classifier(
    model: nn.Module,
    output_dir: Path,
    *,
    backbone: str,
    classes: list[str],
    data_config: DataConfig,
    extra: dict | None = None,
) -> None:
    """Write the classifier's weights and the config needed to rebuild it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(output_dir / WEIGHTS_FILE))
    config = {"backbone": backbone, "classes": classes, "data_config": asdict(data_config)} | (extra or {})
    (output_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))


def read_model_config(model_dir: Path) -> dict:
    """The config saved beside the weights."""
    return json.loads((Path(model_dir) / CONFIG_FILE).read_text())


def load_classifier(model_dir: Path) -> tuple[nn.Module, dict]:
    """Rebuild a saved classifier (architecture without downloading weights) and load its weights."""
    config = read_model_config(model_dir)
    data_config = DataConfig.from_dict(config["data_config"])
    backbone = load_backbone(config["backbone"], image_size=data_config.input_size, pretrained=False)
    backbone.data_config = data_config
    model = build_classifier(backbone, len(config["classes"]))
    model.load_state_dict(load_file(str(Path(model_dir) / WEIGHTS_FILE)))
    return model.eval(), config
