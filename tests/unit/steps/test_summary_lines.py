"""The run summary's selection lines, from the rows the summary keeps (not the whole scores)."""

from __future__ import annotations

from tlops.steps.summary import _selection_lines

ROW = {"rank": 1, "status": "ranked", "probe_accuracy": 0.7, "probe_std_error": 0.05, "knn_accuracy": 0.65,
       "logme": -0.3, "params": 22_700_000, "flops": 0}  # fmt: skip


def test_the_encoder_row_shows_knn_and_logme_and_the_tfidf_row_dashes() -> None:
    selection = {
        "ranking": [ROW | {"name": "minilm"}, ROW | {"name": "tfidf", "rank": None, "status": "chosen", "params": 0}],
        "reasons": ["shipping the no-transfer baseline"],
        "feature_cache": {"hits": 0, "scored": 1, "extraction_seconds": 8.0, "saved_seconds": 0.0},
    }
    lines = _selection_lines(selection)
    encoder = next(line for line in lines if "minilm" in line)
    baseline = next(line for line in lines if "char n-gram TF-IDF" in line)
    assert "0.650" in encoder and "-0.300" in encoder
    assert "0.650" not in baseline and " - " in baseline and baseline.rstrip().endswith("chosen")
