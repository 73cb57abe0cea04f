"""The task axis: a run's task recognised from its data, and each task's candidates and baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlops.cli.checks import backbone_list
from tlops.errors import TlopsError
from tlops.tasks import DETECT_TASK, TASKS, detect_task, task_of


def _texts(folder: Path) -> Path:
    path = folder / "texts.csv"
    path.write_text("text,label\n" + "".join(f"document number {i},{'ab'[i % 2]}\n" for i in range(20)))
    return path


def _images(folder: Path) -> Path:
    for label in ("cat", "dog"):
        (folder / "images" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(folder / "images" / label / f"{i}.png")
    return folder / "images"


def test_auto_recognises_texts_and_images_and_a_named_task_is_taken_as_given(tmp_path: Path) -> None:
    assert detect_task(DETECT_TASK, str(_texts(tmp_path)), None).name == "text-classification"
    assert detect_task(DETECT_TASK, str(_images(tmp_path)), None).name == "image-classification"
    assert detect_task("image-classification", str(tmp_path / "texts.csv"), None).name == "image-classification"


def test_each_task_has_its_own_candidates_and_baseline_and_checks_names_for_itself() -> None:
    text, image = task_of("text-classification"), task_of("image-classification")
    assert (text.default_backbones, text.baseline) == (("minilm",), "tfidf")
    assert (image.default_backbones, image.baseline) == (("efficientnet_lite0",), "pixels")
    assert backbone_list("", text) == ["minilm"] and backbone_list("", image) == ["efficientnet_lite0"]
    assert backbone_list("minilm,efficientnet_lite0") == ["minilm", "efficientnet_lite0"]  # task not known yet
    with pytest.raises(TlopsError, match="unknown text encoder 'efficientnet_lite0'"):
        backbone_list("efficientnet_lite0", text)
    with pytest.raises(TlopsError, match="'tfidf' is the no-transfer baseline"):
        backbone_list("tfidf", text)
    with pytest.raises(TlopsError, match="unknown"):
        backbone_list("no_such_model")
    assert set(TASKS.names()) == {"image-classification", "object-detection", "text-classification"}
