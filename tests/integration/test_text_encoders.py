"""Text encoders: loading by name (bundled, local folder, hf: cache, refusals) and embedding texts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tlops.errors import TlopsError
from tlops.models.extraction import weights_checksum
from tlops.models.text_embedding import embed_texts, length_sorted_batches, tokenize
from tlops.models.text_encoders import TEXT_LOADERS, load_text_encoder, model_folder
from tlops.models.text_names import TEXT_ENCODER_KINDS, TFIDF_BASELINE, check_text_encoder_name, text_encoder_kind

TEXTS = [
    "short",
    "a much longer sentence about transfer learning, encoders and the classification of texts " * 3,
    "medium length text about cats",
    "",
    "word " * 400,  # longer than MiniLM's 256 tokens: truncated
    "Ünïcödé text, with accents — and a dash",
    "medium length text about dogs",
]


def test_the_bundled_encoder_loads_with_sentence_transformers_length(minilm: Any) -> None:
    assert minilm.name == "minilm" and minilm.num_features == 384 and minilm.pooling == "mean"
    assert minilm.max_length == 256  # sentence_bert_config.json caps BERT's 512 positions
    assert not minilm.model.training
    assert set(minilm.preprocessing()) == {"max_length", "pooling", "tokenizer_sha256"}
    assert len(minilm.preprocessing()["tokenizer_sha256"]) == 64


def test_a_copied_folder_and_the_alias_load_the_same_weights(minilm: Any, tmp_path: Path) -> None:
    folder = shutil.copytree(model_folder("minilm"), tmp_path / "copy")
    copy = load_text_encoder(str(folder), max_length=64)
    assert text_encoder_kind(str(folder)) == "folder" and copy.max_length == 64
    assert weights_checksum(copy.model) == weights_checksum(minilm.model)
    assert copy.tokenizer_sha256 == minilm.tokenizer_sha256
    assert copy.preprocessing() != minilm.preprocessing()  # another length: another cache key
    assert load_text_encoder("all-minilm-l6-v2").max_length == 256


def test_a_length_beyond_the_position_embeddings_is_refused() -> None:
    with pytest.raises(TlopsError, match=r"max length 1000 is longer than .* \(512 positions\)"):
        load_text_encoder("minilm", max_length=1000)


def test_a_model_missing_from_the_hugging_face_cache_names_what_to_mirror() -> None:
    with pytest.raises(TlopsError) as error:
        load_text_encoder("hf:tlops-tests/no-such-encoder")
    message = str(error.value)
    assert "\n" not in message and "not in the local Hugging Face cache" in message
    assert "mirror tlops-tests/no-such-encoder" in message and "s3:// prefix or a local folder" in message


def test_a_folder_without_config_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(TlopsError, match=r"has no config.json, so it is not a Hugging Face model folder"):
        load_text_encoder(str(tmp_path))


def test_damaged_weights_are_refused_in_one_line(tmp_path: Path) -> None:
    folder = shutil.copytree(model_folder("minilm"), tmp_path / "damaged")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(TlopsError, match=r"does not load") as error:
        load_text_encoder(str(folder))
    assert "\n" not in str(error.value)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    folder = shutil.copytree(model_folder("minilm"), tmp_path / "deeper")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 7}))
    with pytest.raises(TlopsError, match=r"its weights do not fit its config.json \(\d+ missing"):
        load_text_encoder(str(folder))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("minlm", r"unknown text encoder 'minlm' for --backbones: did you mean minilm\?; or give"),
        ("bert", r"unknown text encoder 'bert' .*choose one of minilm; or give .*hf:NAME"),
        (TFIDF_BASELINE, r"is the no-transfer baseline"),
        ("./no-such-folder", r"text encoder folder ./no-such-folder does not exist"),
        ("hf:", r"names no model"),
    ],
)
def test_bad_names_are_refused_with_the_fix(name: str, message: str) -> None:
    with pytest.raises(TlopsError, match=message):
        check_text_encoder_name(name) if name != "./no-such-folder" else load_text_encoder(name)


def test_every_name_kind_has_a_loader() -> None:
    assert set(TEXT_LOADERS.names()) == set(TEXT_ENCODER_KINDS.names())
    for _, kind in TEXT_ENCODER_KINDS:
        assert text_encoder_kind(kind.example) == kind.name


def test_an_s3_name_without_a_client_is_refused() -> None:
    with pytest.raises(TlopsError, match="no S3 client is configured"):
        load_text_encoder("s3://bucket/encoders/minilm")


def test_embeddings_come_back_in_input_order_and_match_one_text_at_a_time(minilm: Any) -> None:
    ids = tokenize(minilm, TEXTS)
    batches = length_sorted_batches(ids, 3)
    assert [row for batch in batches for row in batch] != list(range(len(TEXTS)))  # sorting does reorder
    assert max(len(row) for row in ids) == 256
    batched = embed_texts(minilm, TEXTS, torch.device("cpu"), batch_size=3)
    singles = torch.cat([embed_texts(minilm, [text], torch.device("cpu"), batch_size=1) for text in TEXTS])
    assert batched.dtype == torch.float32 and batched.shape == (len(TEXTS), 384)
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=0)
    assert not torch.allclose(batched[2], batched[6])  # cats and dogs differ


def test_embeddings_are_deterministic_and_mean_pooled(minilm: Any) -> None:
    first = embed_texts(minilm, TEXTS, torch.device("cpu"), batch_size=4)
    assert torch.equal(first, embed_texts(minilm, TEXTS, torch.device("cpu"), batch_size=4))
    encoded = minilm.tokenizer(["medium length text about cats"], return_tensors="pt")
    with torch.inference_mode():
        hidden = minilm.model(**encoded).last_hidden_state
    torch.testing.assert_close(first[2], hidden[0].mean(dim=0), atol=1e-5, rtol=0)
    assert embed_texts(minilm, [], torch.device("cpu")).shape == (0, 384)
