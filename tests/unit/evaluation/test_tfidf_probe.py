"""The TF-IDF baseline's cross-validated accuracy pairs fold by fold with an encoder's linear probe."""

from __future__ import annotations

import numpy as np
import pytest

from tlops.evaluation import tfidf_probe, transferability
from tlops.evaluation.tfidf_probe import tfidf_probe_accuracy
from tlops.evaluation.transferability import probe_accuracy

WORDS = {0: ["cat", "kitten", "purr", "meow"], 1: ["dog", "puppy", "bark", "woof"], 2: ["car", "engine", "road"]}


def _texts(counts: tuple[int, ...], seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, count in enumerate(counts):
        for _ in range(count):
            words = list(rng.choice(WORDS[label], 3)) + list(rng.choice(["the", "a", "and", "of", "big"], 3))
            texts.append(" ".join(rng.permutation(words)))
            labels.append(label)
    return texts, np.array(labels)


@pytest.mark.parametrize("counts", [(12, 9, 7), (6, 6, 3)], ids=["five folds", "folds cut by a small class"])
def test_the_baseline_uses_the_probes_outer_folds(counts: tuple[int, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    texts, y = _texts(counts)
    seen: dict[str, list] = {"probe": [], "tfidf": []}

    def recording(module, name):
        original = module._outer_splits

        def record(*args, **kwargs):
            splits = original(*args, **kwargs)
            seen[name].append(splits)
            return splits

        monkeypatch.setattr(module, "_outer_splits", record)

    recording(transferability, "probe")
    recording(tfidf_probe, "tfidf")
    features = np.random.default_rng(1).normal(size=(len(y), 8)) + y[:, None]
    probe = probe_accuracy(features, y, seed=3)
    baseline = tfidf_probe_accuracy(texts, y, seed=3)
    assert baseline.folds == probe.folds == min(5, min(counts))
    assert len(baseline.fold_scores) == len(probe.fold_scores) == probe.folds
    (probe_splits,), (tfidf_splits,) = seen["probe"], seen["tfidf"]
    for (train_a, test_a), (train_b, test_b) in zip(probe_splits, tfidf_splits, strict=True):
        assert np.array_equal(train_a, train_b) and np.array_equal(test_a, test_b)


def test_the_baseline_learns_words_and_chooses_c_inside_the_folds() -> None:
    texts, y = _texts((10, 10, 10))
    fixed = tfidf_probe_accuracy(texts, y)
    assert fixed.mean > 0.9 and fixed.chosen == tfidf_probe.TFIDF_CS[0]
    # Unbalanced classes: a tiny C leaves the intercept to decide (the majority class), which the inner CV sees.
    texts, y = _texts((20, 8, 8))
    tiny = tfidf_probe_accuracy(texts, y, cs=(1e-4,))
    searched = tfidf_probe_accuracy(texts, y, cs=(1e-4, 10.0))
    assert tiny.mean < 0.7 and searched.chosen == 10.0 and searched.mean > 0.9
    weighted = tfidf_probe_accuracy(texts, y, class_weighted=True)
    assert weighted.mean > 0.9  # balanced accuracy


def test_texts_and_targets_of_other_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="need N texts"):
        tfidf_probe_accuracy(["a", "b"], np.array([0, 1, 1]))
