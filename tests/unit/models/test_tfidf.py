"""The TF-IDF baseline model: fitted, saved without pickle, loaded back to the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tlops.errors import TlopsError
from tlops.models.tfidf import VECTORIZER_FILE, WEIGHTS_FILE, TfidfClassifier

TEXTS = [
    "a wonderful, moving film",
    "great acting and a lovely story",
    "terrible plot, awful dialogue",
    "boring and far too long",
    "the stock market fell sharply",
    "shares rose after the earnings report",
] * 3
LABELS = np.array([0, 0, 1, 1, 2, 2] * 3)
QUERIES = ["a lovely film", "awful and boring", "the market rose", "nothing in the vocabulary: zzzz"]


@pytest.mark.parametrize("labels", [LABELS, (LABELS > 0).astype(int)], ids=["three classes", "two classes"])
def test_a_saved_classifier_loads_back_to_the_same_logits(tmp_path: Path, labels: np.ndarray) -> None:
    model = TfidfClassifier().fit(TEXTS, labels, C=10.0)
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([VECTORIZER_FILE, WEIGHTS_FILE])  # no pickle
    loaded = TfidfClassifier.load(tmp_path)
    logits = model.logits(QUERIES)
    assert logits.shape == (len(QUERIES), len(np.unique(labels)))
    np.testing.assert_allclose(loaded.logits(QUERIES), logits, rtol=0, atol=1e-12)
    assert list(loaded.predict(QUERIES[:3])) == list(labels[[1, 3, 5]])


def test_the_vocabulary_is_capped(tmp_path: Path) -> None:
    model = TfidfClassifier(max_features=50).fit(TEXTS, LABELS)
    assert len(model.vectorizer.vocabulary_) == 50
    model.save(tmp_path)
    assert len(json.loads((tmp_path / VECTORIZER_FILE).read_text())["vocabulary"]) == 50
    assert TfidfClassifier.load(tmp_path).max_features == 50


def test_a_damaged_or_missing_classifier_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TlopsError, match="holds no readable TF-IDF classifier"):
        TfidfClassifier.load(tmp_path)
    TfidfClassifier().fit(TEXTS, LABELS).save(tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"truncated")
    with pytest.raises(TlopsError, match="holds no readable TF-IDF classifier"):
        TfidfClassifier.load(tmp_path)


def test_an_unfitted_classifier_says_so() -> None:
    with pytest.raises(ValueError, match="not fitted"):
        TfidfClassifier().logits(["text"])
