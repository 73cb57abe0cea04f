"""Text encoders on a real S3 (SeaweedFS): a model folder under an s3:// prefix, and cached text embeddings."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from tlops.errors import TlopsError
from tlops.io.storage import upload_folder
from tlops.models.extraction import weights_checksum
from tlops.models.text_encoders import load_text_encoder, model_folder

TEXTS = {
    "train": ["the cat sat on the mat", "a dog barked all night", "kittens purr softly", "puppies love to play"],
    "val": ["my cat sleeps all day", "the dog fetched a stick"],
    "test": ["a cat chased a mouse", "dogs guard the house", "an old tomcat"],
}


def _manifest(labels_swapped: bool = False) -> pd.DataFrame:
    rows = []
    for split, texts in TEXTS.items():
        for text in texts:
            label = "cat" if ("cat" in text or "kitten" in text) else "dog"
            if labels_swapped:
                label = {"cat": "dog", "dog": "cat"}[label]
            digest = hashlib.sha256(text.encode()).hexdigest()
            rows.append(
                {"uri": f"mem://{digest}", "relpath": f"{digest}.txt", "sha256": digest, "label": label,
                 "split": split, "text": text, "chars": len(text)}
            )  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.integration
def test_an_encoder_under_an_s3_prefix_loads_like_the_bundled_one(
    s3_client: Any, bucket: str, tmp_path: Path, minilm: Any
) -> None:
    uri = f"s3://{bucket}/encoders/minilm"
    upload_folder(model_folder("minilm"), uri, s3_client)
    encoder = load_text_encoder(uri, s3=s3_client, cache_dir=tmp_path)
    assert encoder.name == uri and encoder.max_length == 256 and encoder.num_features == 384
    assert weights_checksum(encoder.model) == weights_checksum(minilm.model)
    assert encoder.tokenizer_sha256 == minilm.tokenizer_sha256
    for item in s3_client.list_objects_v2(Bucket=bucket, Prefix="encoders/")["Contents"]:
        s3_client.delete_object(Bucket=bucket, Key=item["Key"])
    again = load_text_encoder(uri, s3=s3_client, cache_dir=tmp_path)  # from the local copy: nothing downloaded
    assert again.folder == encoder.folder
    with pytest.raises(TlopsError, match="holds no object"):
        load_text_encoder(f"s3://{bucket}/encoders/missing", s3=s3_client, cache_dir=tmp_path)


@pytest.mark.integration
def test_text_features_are_read_from_the_cache_the_second_time(
    s3_client: Any, bucket: str, tmp_path: Path, minilm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tlops.steps import text_features
    from tlops.steps.features import open_feature_cache
    from tlops.steps.runtime import Runtime

    runtime = Runtime(s3=s3_client, cache_dir=tmp_path / "cache", batch_size=2)
    cache = open_feature_cache(f"s3://{bucket}/features", runtime)
    classes = ["cat", "dog"]
    first = text_features.text_dataset_features(minilm, _manifest(), classes, runtime, cache)
    assert not first.cache_hit and first.entry.startswith(f"s3://{bucket}/features/")
    assert {split: len(features) for split, (features, _) in first.splits.items()} == {"train": 4, "val": 2, "test": 3}
    assert first.splits["train"][0].shape == (4, 384) and first.splits["train"][1].tolist() == [0, 1, 0, 1]
    assert first.cost["params"] > 20_000_000 and first.cost["latency_ms"] > 0 and first.cost["device"] == "cpu"
    expected = text_features.embed_texts(minilm, TEXTS["test"], torch.device("cpu"))
    torch.testing.assert_close(first.splits["test"][0], expected, atol=1e-5, rtol=0)

    def no_encoder(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise AssertionError("the encoder ran although the embeddings are cached")

    monkeypatch.setattr(text_features, "embed_texts", no_encoder)
    second = text_features.text_dataset_features(minilm, _manifest(labels_swapped=True), classes, runtime, cache)
    assert second.cache_hit and second.entry == first.entry and second.cost == first.cost
    for split, (features, targets) in second.splits.items():
        assert torch.equal(features, first.splits[split][0])
        assert torch.equal(targets, 1 - first.splits[split][1])  # labels come from this manifest, not the cache
    assert second.extraction_seconds == first.extraction_seconds
