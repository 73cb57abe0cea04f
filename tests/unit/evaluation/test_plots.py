"""The figures render to real PNG files, and the KFP HTML page embeds them."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlops.evaluation.plots import (
    confusion_matrix_figure,
    html_page,
    learning_curves_figure,
    reliability_figure,
    save_png,
)
from tlops.train.finetune import EpochRecord


def _assert_png(path: Path, min_width: int = 200) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        assert image.width >= min_width and image.height >= 200
        # Something was drawn: not a blank canvas.
        assert len(image.convert("L").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 2


@pytest.fixture
def figures(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    classes = ["cat", "dog", "bird"]
    confusion = [[5, 1, 0], [2, 3, 1], [0, 0, 6]]
    logits = rng.normal(size=(30, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    targets = rng.integers(0, 3, size=30)
    history = [
        EpochRecord(0, None, None, 1.2, 0.6),
        EpochRecord(1, 1.0, 0.65, 0.9, 0.7),
        EpochRecord(2, 0.7, 0.8, 0.8, 0.75),
    ]
    return [
        save_png(confusion_matrix_figure(confusion, classes), tmp_path / "confusion_matrix.png"),
        save_png(reliability_figure(probabilities, targets), tmp_path / "reliability_diagram.png"),
        save_png(learning_curves_figure(history), tmp_path / "learning_curves.png"),
    ]


def test_figures_render_to_png(figures: list[Path]) -> None:
    for path in figures:
        _assert_png(path)
    with Image.open(figures[2]) as curves:
        assert curves.width > curves.height  # two panels side by side


def test_figures_render_for_edge_cases(tmp_path: Path) -> None:
    # Only the probe (no trained epoch), all predictions in one confidence bin, many classes.
    _assert_png(save_png(learning_curves_figure([EpochRecord(0, None, None, 0.5, 0.9)]), tmp_path / "lc.png"))
    probabilities = np.tile([[0.7, 0.2, 0.1]], (10, 1))
    _assert_png(save_png(reliability_figure(probabilities, np.zeros(10, dtype=int)), tmp_path / "rel.png"))
    classes = [f"class_{k}" for k in range(40)]
    confusion = np.diag(np.arange(1, 41)).tolist()
    _assert_png(save_png(confusion_matrix_figure(confusion, classes), tmp_path / "cm.png"))


def test_html_page_embeds_the_pngs(figures: list[Path]) -> None:
    page = html_page("Evaluation", figures, body="<p>reasons</p>")

    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "<title>Evaluation</title>" in page and "<p>reasons</p>" in page
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(figures)
    for data, path in zip(embedded, figures, strict=True):
        assert base64.b64decode(data) == path.read_bytes()
    for heading in ("confusion matrix", "reliability diagram", "learning curves"):
        assert f"<h3>{heading}</h3>" in page
    assert "file:" not in page and str(figures[0].parent) not in page  # self-contained, no links to local files


def test_html_page_without_images() -> None:
    page = html_page("Nothing", [])
    assert "<h2>Nothing</h2>" in page and "<img" not in page
