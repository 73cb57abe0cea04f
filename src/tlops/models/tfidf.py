"""The no-transfer text baseline: TF-IDF of character n-grams and multinomial logistic regression.

It is what a linear model makes of the text itself, with no pretrained weights; an encoder earns its place by
beating it. Saved without pickle (the served model loads it safely): the vocabulary and settings as JSON, the idf
weights, coefficients, intercepts and class ids as safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tlops.errors import TlopsError

MAX_FEATURES = 200_000
"""Most n-grams kept (the most frequent in the training texts): bounds the model's size (~1.6 MB per class)."""

DEFAULT_C = 30.0
"""Inverse L2 penalty of the logistic regression, fixed: measured on two offline text sets (Python docstrings, ~500
texts each, 7-8 topics; 5-fold accuracy by C 3 / 10 / 30 / 100: 0.78 / 0.80 / 0.80 / 0.80 and 0.78 / 0.80 / 0.81 /
0.81), an inner-CV search over 1, 10, 100 gained at most 0.004 over C = 30 at 8-16x the time."""

VECTORIZER_FILE = "tfidf_vectorizer.json"
WEIGHTS_FILE = "tfidf_weights.safetensors"
FORMAT_VERSION = 1


class TfidfClassifier:
    """Character n-gram TF-IDF (``char_wb``, 1-4, sublinear tf) and multinomial logistic regression.

    Args:
        max_features: Most n-grams kept (the most frequent ones), which caps the model's size.
        ngram_range: Smallest and largest n-gram length.

    Attributes:
        classes: The class ids seen in fitting, sorted; column ``j`` of :meth:`logits` is ``classes[j]``.
    """

    def __init__(self, max_features: int = MAX_FEATURES, ngram_range: tuple[int, int] = (1, 4)) -> None:
        self.max_features = max_features
        self.ngram_range = ngram_range
        self.vectorizer: Any = None
        self.coef: np.ndarray | None = None
        self.intercept: np.ndarray | None = None
        self.classes: np.ndarray | None = None

    def _new_vectorizer(self, vocabulary: dict[str, int] | None = None) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=self.ngram_range,
            sublinear_tf=True,
            lowercase=True,
            max_features=self.max_features,
            dtype=np.float64,
            vocabulary=vocabulary,
        )

    def fit(
        self, texts: list[str], y: np.ndarray, C: float = DEFAULT_C, class_weight: str | None = None
    ) -> TfidfClassifier:
        """Fit the vectorizer and the logistic regression on ``texts`` and their class ids ``y``.

        Args:
            texts: Training texts.
            y: ``(N,)`` integer class ids.
            C: Inverse L2 penalty.
            class_weight: ``"balanced"`` weighs classes by inverse frequency; ``None`` weighs texts equally.
        """
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(y)
        if len(np.unique(y)) < 2:
            raise ValueError("the TF-IDF baseline needs texts of at least 2 classes")
        self.vectorizer = self._new_vectorizer()
        features = self.vectorizer.fit_transform(list(texts))
        model = LogisticRegression(C=C, class_weight=class_weight, max_iter=1000, solver="lbfgs")
        model.fit(features, y)
        self.coef, self.intercept, self.classes = model.coef_, model.intercept_, model.classes_
        return self

    def _check_fitted(self) -> None:
        if self.vectorizer is None or self.coef is None or self.intercept is None or self.classes is None:
            raise ValueError("the TF-IDF classifier is not fitted: call fit() or load() first")

    def logits(self, texts: list[str]) -> np.ndarray:
        """``(N, len(classes))`` float64 logits: a softmax of them is the logistic regression's probabilities.

        With two classes the regression has one score ``d``; the logits are ``(0, d)``.
        """
        self._check_fitted()
        assert self.coef is not None and self.intercept is not None
        scores = np.asarray(self.vectorizer.transform(list(texts)) @ self.coef.T) + self.intercept
        if scores.shape[1] == 1:
            scores = np.hstack([np.zeros_like(scores), scores])
        return scores

    def predict(self, texts: list[str]) -> np.ndarray:
        """``(N,)`` predicted class ids."""
        logits = self.logits(texts)
        return np.asarray(self.classes)[logits.argmax(axis=1)]

    def save(self, folder: Path) -> None:
        """Write the classifier to ``folder`` (:data:`VECTORIZER_FILE` and :data:`WEIGHTS_FILE`), without pickle."""
        from safetensors.numpy import save_file

        self._check_fitted()
        folder.mkdir(parents=True, exist_ok=True)
        vocabulary = {term: int(index) for term, index in self.vectorizer.vocabulary_.items()}
        settings = {
            "format_version": FORMAT_VERSION,
            "analyzer": "char_wb",
            "ngram_range": list(self.ngram_range),
            "sublinear_tf": True,
            "lowercase": True,
            "max_features": self.max_features,
            "vocabulary": vocabulary,
        }
        weights = {
            "idf": np.ascontiguousarray(self.vectorizer.idf_, dtype=np.float64),
            "coef": np.ascontiguousarray(self.coef, dtype=np.float64),
            "intercept": np.ascontiguousarray(self.intercept, dtype=np.float64),
            "classes": np.ascontiguousarray(self.classes, dtype=np.int64),
        }
        partial = folder / (WEIGHTS_FILE + ".partial")
        save_file(weights, str(partial))
        (folder / (VECTORIZER_FILE + ".partial")).write_text(json.dumps(settings, ensure_ascii=False))
        partial.replace(folder / WEIGHTS_FILE)
        (folder / (VECTORIZER_FILE + ".partial")).replace(folder / VECTORIZER_FILE)

    @classmethod
    def load(cls, folder: Path) -> TfidfClassifier:
        """Read a classifier :meth:`save` wrote (JSON and safetensors only: no code is loaded).

        Raises:
            TlopsError: when the folder holds no TF-IDF classifier, or a damaged one.
        """
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            settings = json.loads((folder / VECTORIZER_FILE).read_text())
            weights = load_file(str(folder / WEIGHTS_FILE))
        except (OSError, ValueError, SafetensorError) as error:
            raise TlopsError(
                f"{folder} holds no readable TF-IDF classifier ({type(error).__name__}: {str(error)[:120]}); give "
                f"the folder TfidfClassifier.save wrote ({VECTORIZER_FILE}, {WEIGHTS_FILE})"
            ) from None
        if settings.get("format_version") != FORMAT_VERSION:
            raise TlopsError(
                f"{folder / VECTORIZER_FILE} has format version {settings.get('format_version')}, this tlops reads "
                f"{FORMAT_VERSION}; retrain the baseline"
            )
        vocabulary = settings["vocabulary"]
        if len(weights["idf"]) != len(vocabulary) or weights["coef"].shape[1] != len(vocabulary):
            raise TlopsError(f"{folder}: the vocabulary and the weights do not fit; retrain the baseline")
        model = cls(max_features=int(settings["max_features"]), ngram_range=tuple(settings["ngram_range"]))
        model.vectorizer = model._new_vectorizer(vocabulary)
        model.vectorizer.idf_ = weights["idf"]
        model.coef, model.intercept, model.classes = weights["coef"], weights["intercept"], weights["classes"]
        return model
