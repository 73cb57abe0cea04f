"""Bad detection input at the command line (docs/detection.md, "Checks and quarantine"): one ``tlops: error:``
line, exit status 2, nothing registered and nothing written, before any step runs.

Every case runs the installed ``tlops`` console script in a subprocess, all started at once by one fixture; each
fails in the preflight (seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from refusals import one_error_line

TLOPS = Path(sys.executable).parent / "tlops"
CLI_TIMEOUT_S = 180


@dataclass(frozen=True)
class Case:
    """``tlops run`` arguments (``{root}`` is the scratch folder) and what the error line must name."""

    args: tuple[str, ...]
    needles: tuple[str, ...]


CASES: dict[str, Case] = {
    # The export's only annotation file is empty: named, with what to do.
    "empty-annotations": Case(("--data", "{root}/empty_export"), ("_annotations.coco.json", "empty")),
    # COCO and Pascal VOC annotations in one folder: both named.
    "mixed-formats": Case(("--data", "{root}/mixed"), ("COCO", "Pascal VOC")),
    # Every annotated image is missing: nothing usable is left.
    "missing-images": Case(("--data", "{root}/missing_images"), ("a.png", "missing")),
    # A strategy of classification only.
    "classification-strategy": Case(
        ("--data", "{root}/coco", "--strategy", "linear-probe"),
        ("--strategy linear-probe is for image-classification and text-classification runs, not object-detection",),
    ),
    # A training setting of image classification only: refused before any step runs.
    "classification-setting": Case(
        ("--data", "{root}/coco", "--mixup", "0.2"),
        ("--mixup applies to image classification only", "leave it at 0 for detection"),
    ),
    "unknown-detector": Case(("--data", "{root}/coco", "--detector", "yolov8"), ("--detector", "fasterrcnn, fcos")),
}


def _coco(folder: Path, images: dict[str, tuple[int, int] | None]) -> None:
    """A COCO export: ``images`` maps a file name to its size (``None``: named in the JSON but not written)."""
    folder.mkdir(parents=True)
    entries, annotations = [], []
    for number, (name, size) in enumerate(images.items(), start=1):
        width, height = size or (32, 32)
        if size is not None:
            Image.new("RGB", size, (number * 20, 80, 120)).save(folder / name)
        entries.append({"id": number, "file_name": name, "width": width, "height": height})
        for category in (1, 2):
            annotations.append(
                {"id": len(annotations) + 1, "image_id": number, "category_id": category, "bbox": [2, 2, 10, 10]}
            )
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    payload = {"images": entries, "annotations": annotations, "categories": categories}
    (folder / "_annotations.coco.json").write_text(json.dumps(payload))


def _write_inputs(root: Path) -> None:
    _coco(root / "coco", {f"{i}.png": (32, 32) for i in range(12)})
    (root / "empty_export").mkdir()
    Image.new("RGB", (32, 32)).save(root / "empty_export" / "a.png")
    (root / "empty_export" / "_annotations.coco.json").write_text("")
    _coco(root / "mixed", {f"{i}.png": (32, 32) for i in range(6)})
    (root / "mixed" / "0.xml").write_text(
        "<annotation><filename>0.png</filename><object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"
    )
    _coco(root / "missing_images", {"a.png": None, "b.png": None})


def _env(root: Path) -> dict[str, str]:
    """This environment without tracking or S3 settings, its caches in the scratch folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    return env | {"TLOPS_DEVICE": "cpu", "TLOPS_CACHE_DIR": str(root / "cache")}


def _run(case: Case, root: Path, name: str) -> subprocess.CompletedProcess[str]:
    args = [arg.replace("{root}", str(root)) for arg in case.args]
    output = ["--output", str(root / f"out-{name}")]
    try:
        return subprocess.run(
            [str(TLOPS), "run", *args, *output], cwd=root, env=_env(root), capture_output=True, text=True,
            timeout=CLI_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired as error:
        return subprocess.CompletedProcess(error.cmd, -9, str(error.stdout), f"timed out: {error.stderr}")


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, subprocess.CompletedProcess[str]], Path]:
    """Every case's result, and the scratch folder they ran in."""
    root = tmp_path_factory.mktemp("detection-bad-input")
    _write_inputs(root)
    with ThreadPoolExecutor(max_workers=max(2, min(6, os.cpu_count() or 2))) as pool:
        results = dict(zip(CASES, pool.map(lambda item: _run(item[1], root, item[0]), CASES.items()), strict=True))
    return results, root


@pytest.mark.parametrize("name", list(CASES))
def test_bad_detection_input_is_one_line(
    cli: tuple[dict[str, subprocess.CompletedProcess[str]], Path], name: str
) -> None:
    results, root = cli
    one_error_line(results[name], *CASES[name].needles)
    assert not (root / f"out-{name}").exists(), sorted(p.name for p in (root / f"out-{name}").iterdir())
    assert not (root / "mlflow.db").exists() and not (root / "mlruns").exists()  # nothing tracked or registered
