"""LoRA on a text classifier's encoder: low-rank adapters on each attention query and value, merged when trained.

peft wraps the encoder; the head stays a plain module that trains beside the adapters. Merging folds the adapters
into the query and value weights (``merge_and_unload``), so the trained classifier is a plain encoder again: the
same module, files and serving code as the other strategies.
"""

from __future__ import annotations

from torch import nn

from tlops.errors import TlopsError
from tlops.train.config import TrainConfig

TARGET_MODULES: tuple[str, ...] = ("query", "value")


def add_lora(model: nn.Module, config: TrainConfig) -> nn.Module:
    """Wrap ``model.encoder`` with LoRA adapters (its own weights frozen), the head trainable; in place.

    The adapters start as a zero update (peft's ``lora_B`` is zero), so the model's outputs do not change.

    Args:
        model: A :class:`~tlops.models.text_classifier.TextClassifier`.
        config: ``lora_rank``, ``lora_alpha``, ``lora_dropout``.

    Raises:
        TlopsError: when the encoder has no ``query``/``value`` modules to adapt.
    """
    from peft import LoraConfig, get_peft_model

    settings = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(TARGET_MODULES),
    )
    try:
        model.encoder = get_peft_model(model.encoder, settings)
    except ValueError as error:
        raise TlopsError(
            f"--strategy lora adapts the encoder's {' and '.join(TARGET_MODULES)} modules, which "
            f"{type(model.encoder).__name__} lacks ({error}): use --strategy lp-ft"
        ) from None
    for parameter in model.head.parameters():
        parameter.requires_grad_(True)
    return model


def has_lora(model: nn.Module) -> bool:
    """Whether the model's encoder carries LoRA adapters (not merged yet)."""
    from peft import PeftModel

    return isinstance(getattr(model, "encoder", None), PeftModel)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the encoder's weights and drop the wrapper (in place); every parameter trainable again."""
    model.encoder = model.encoder.merge_and_unload()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model
