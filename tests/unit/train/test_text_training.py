"""Text fine-tuning without an encoder: length batches, layer-wise rates, and which strategies and settings apply."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tlops.errors import TlopsError
from tlops.settings import SettingError
from tlops.train.config import FINE_TUNING_STRATEGIES, TrainConfig
from tlops.train.strategies import IMAGE_CLASSIFICATION, STRATEGIES, TEXT_CLASSIFICATION, strategies_for
from tlops.train.text_batches import EncodedTexts, collate, length_batches, sorted_batches, token_limit
from tlops.train.text_finetune import check_text_settings
from tlops.train.text_optim import encoder_layers, text_parameter_groups

LENGTHS = [(index * 7) % 23 + 2 for index in range(40)]


def test_length_batches_cover_every_text_once_in_a_seeded_order_with_little_padding() -> None:
    batches = length_batches(LENGTHS, 4, seed=0, epoch=1, pool_batches=5)
    assert sorted(i for batch in batches for i in batch) == list(range(40))
    assert all(1 <= len(batch) <= 4 for batch in batches)
    assert batches == length_batches(LENGTHS, 4, seed=0, epoch=1, pool_batches=5)  # a resumed run sees these
    assert batches != length_batches(LENGTHS, 4, seed=0, epoch=2, pool_batches=5)
    assert batches != length_batches(LENGTHS, 4, seed=1, epoch=1, pool_batches=5)

    def padding(groups: list[list[int]]) -> int:
        return sum(max(LENGTHS[i] for i in group) - LENGTHS[i] for group in groups for i in group)

    unsorted = [list(range(start, start + 4)) for start in range(0, 40, 4)]
    assert padding(batches) < padding(unsorted) / 3
    evaluation = sorted_batches(LENGTHS, 16)
    flat = [i for batch in evaluation for i in batch]
    assert [len(b) for b in evaluation] == [16, 16, 8] and sorted(flat) == list(range(40))
    assert [LENGTHS[i] for i in flat] == sorted(LENGTHS)


def test_collate_pads_each_batch_to_its_longest_text() -> None:
    encoded = EncodedTexts([[101, 7, 102], [101, 102], [101, 5, 6, 7, 102]], [2, 0, 1], pad_id=0)
    input_ids, mask, targets = collate(encoded, [0, 1], torch.device("cpu"))
    assert input_ids.tolist() == [[101, 7, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]] and targets.tolist() == [2, 0]


def test_the_token_limit_is_the_setting_capped_by_the_tokenizers_own() -> None:
    class Tokenizer:
        model_max_length = 128

    assert token_limit(Tokenizer(), 256) == 128 and token_limit(Tokenizer(), 64) == 64
    Tokenizer.model_max_length = int(1e30)  # what transformers says when the model states none
    assert token_limit(Tokenizer(), 256) == 256


class _Encoder(nn.Module):
    """BERT's parameter names (``embeddings``, ``encoder.layer.N``, ``pooler``) on small linear layers."""

    def __init__(self, layers: int = 3) -> None:
        super().__init__()
        self.embeddings = nn.Linear(4, 4)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(nn.Linear(4, 4) for _ in range(layers))
        self.pooler = nn.Linear(4, 4)


def test_text_rates_decay_from_the_head_down_to_the_embeddings() -> None:
    model = nn.Module()
    model.encoder, model.head = _Encoder(), nn.Linear(4, 2)
    model.encoder.pooler.requires_grad_(False)  # frozen parameters are left out
    groups = text_parameter_groups(model, TrainConfig(lr=1.0, layer_decay=0.5, weight_decay=0.1))
    rates = {group["name"]: group["lr"] for group in groups}
    assert rates == {f"{name}.{kind}": rate for name, rate in (("head", 1.0), ("layer2", 0.5), ("layer1", 0.25),
                     ("layer0", 0.125), ("embeddings", 0.0625)) for kind in ("decay", "no_decay")}  # fmt: skip
    assert all(group["weight_decay"] == (0.1 if group["name"].endswith(".decay") else 0.0) for group in groups)
    trained = {id(p) for group in groups for p in group["params"]}
    assert trained == {id(p) for p in model.parameters() if p.requires_grad}
    assert encoder_layers(model) == 3
    with pytest.raises(TlopsError, match=r"has no layer\.N parameters: fine-tuning text needs a BERT-like encoder"):
        encoder_layers(nn.Sequential(nn.Linear(2, 2)))


def test_strategies_say_their_task_and_lora_is_for_text_only() -> None:
    assert strategies_for(TEXT_CLASSIFICATION) == ("auto", "linear-probe", "mlp-probe", "lp-ft", "lora")
    assert "lora" not in strategies_for(IMAGE_CLASSIFICATION) and "lora" not in FINE_TUNING_STRATEGIES
    assert TrainConfig(strategy="lora").strategy == "lora"  # a choice of --strategy
    with pytest.raises(SettingError, match=r"^--strategy lora is for text-classification runs, not image-class"):
        STRATEGIES.get("lora").check_task(IMAGE_CLASSIFICATION)
    STRATEGIES.get("lp-ft").check_task(TEXT_CLASSIFICATION)  # no error: both tasks
    assert check_text_settings("full", TrainConfig()) == "lp-ft"
    refused = r"--strategy partial is for image-classification and object-detection runs, not text-.*lora$"
    with pytest.raises(SettingError, match=refused):
        check_text_settings("partial", TrainConfig())
    with pytest.raises(SettingError, match="linear-probe fits a head on cached embeddings"):
        check_text_settings("linear-probe", TrainConfig())
    with pytest.raises(SettingError, match=r"^--mixup applies to images only: leave it at 0 for text$"):
        check_text_settings("lora", TrainConfig(mixup=0.2))


def test_the_image_loop_refuses_a_text_strategy_before_it_starts() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from tlops.train.finetune import train_classifier

    data = TensorDataset(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(SettingError, match=r"^--strategy lora is for text-classification runs, not image-class"):
        train_classifier(nn.Sequential(), data, DataLoader(data), TrainConfig(strategy="lora"), torch.device("cpu"),
                         strategy="lora", blocks=[["w"]], num_classes=2)  # fmt: skip
