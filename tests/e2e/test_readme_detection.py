"""The object-detection commands and snippet of docs/detection.md and README.md, run as a user types them.

Part of the README contract of ``test_readme.py`` (its ``test_every_readme_command_is_run_or_excused`` imports this
module, so one check sees every ``@covers``); a file of its own so that pytest-xdist runs it beside the others.

Two whole detection runs, started together: the built-in demo (a COCO export, shrunk to 10 images a shape) and
``tlops run --data ./my_yolo_export`` on a flat YOLO export of other images (split here), each with its defaults.
The data step alone runs on a Pascal VOC export with a box outside its image and an annotation of a missing image.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from repository import REPO  # noqa: F401  (the e2e folder's path setup)
from test_readme import (
    PARALLEL_RUNS,
    SHORT_TIMEOUT_S,
    _report_wall_times,  # noqa: F401  (prints this module's wall times too)
    base_env,
    covers,
    printed_json,
    readme_command,
    readme_snippet,
    run,
    succeeded,
)
from tlops.data.detection.demo import ANNOTATIONS_FILE, DEMO_CLASSES, write_detection_demo

DEMO_DETECTION = "tlops run --demo detection"
YOLO_RUN = "tlops run --data ./my_yolo_export"
PREPARE_VOC = "tlops prepare-data --data ./my_voc_export --output ./prepared"
DEMO_PER_CLASS = "10"
YOLO_IMAGES = 27

# docs/detection.md, after the demo run: the champion answers boxes for two test images and an error for junk.
SNIPPET = """\
import mlflow
import pandas as pd
from pathlib import Path

mlflow.set_tracking_uri("sqlite:///tlops-run/mlflow.db")
model = mlflow.pyfunc.load_model("models:/tlops-classifier@champion")
images = [p.read_bytes() for p in sorted(Path("tlops-run/demo-data/test").glob("*.png"))[:2]] + [b"not an image"]
answer = model.predict(pd.DataFrame({"image": images}), params={"score_threshold": 0.5})
print(answer[["labels", "scores", "error"]].to_string())
"""
ANSWER = '\nprint("ANSWER " + answer.to_json(orient="records"))\n'


def coco_images(root: Path) -> list[tuple[Path, int, int, list[tuple[str, list[float]]]]]:
    """Every image of a COCO export written by the demo: path, width, height and ``(class, [x, y, w, h])`` boxes."""
    found = []
    for annotation_file in sorted(root.rglob(ANNOTATIONS_FILE)):
        coco = json.loads(annotation_file.read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        boxes: dict[int, list[tuple[str, list[float]]]] = {}
        for a in coco["annotations"]:
            boxes.setdefault(a["image_id"], []).append((names[a["category_id"]], a["bbox"]))
        for image in coco["images"]:
            path = annotation_file.parent / image["file_name"]
            found.append((path, image["width"], image["height"], boxes.get(image["id"], [])))
    return found


def write_yolo_export(root: Path) -> dict[str, int]:
    """A flat YOLO export (``images/``, ``labels/``, ``classes.txt``) of demo images drawn with another seed.

    Returns:
        The boxes written per class.
    """
    demo = write_detection_demo(root.parent / "coco-source", images=YOLO_IMAGES, seed=7)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("\n".join(DEMO_CLASSES) + "\n")
    counts = dict.fromkeys(DEMO_CLASSES, 0)
    for index, (path, width, height, boxes) in enumerate(coco_images(demo)):
        name = f"img{index:03d}"
        (root / "images" / f"{name}.png").write_bytes(path.read_bytes())
        lines = []
        for label, (x, y, w, h) in boxes:
            lines.append(
                f"{DEMO_CLASSES.index(label)} {(x + w / 2) / width} {(y + h / 2) / height} {w / width} {h / height}"
            )
            counts[label] += 1
        (root / "labels" / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    return counts


def write_voc_export(root: Path) -> dict[str, Any]:
    """A Pascal VOC export of demo images, with one box reaching past its image and one XML naming a missing image.

    Returns:
        The images and boxes written per class (the clipped box included).
    """
    demo = write_detection_demo(root.parent / "voc-source", images=24, seed=3)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    counts = dict.fromkeys(DEMO_CLASSES, 0)
    images = 0
    for index, (path, width, height, boxes) in enumerate(coco_images(demo)):
        name = f"{index:04d}"
        (root / "JPEGImages" / f"{name}.png").write_bytes(path.read_bytes())
        objects = []
        for number, (label, (x, y, w, h)) in enumerate(boxes):
            x2 = width + 30 if index == 0 and number == 0 else x + w  # past the right edge: clipped
            objects.append(
                f"<object><name>{label}</name><bndbox><xmin>{x + 1:g}</xmin><ymin>{y + 1:g}</ymin>"
                f"<xmax>{x2:g}</xmax><ymax>{y + h:g}</ymax></bndbox></object>"
            )
            counts[label] += 1
        images += 1
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.png</filename><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size>{''.join(objects)}</annotation>"
        )
    (root / "Annotations" / "lost.xml").write_text(
        "<annotation><filename>lost.png</filename><size><width>160</width><height>160</height><depth>3</depth>"
        "</size><object><name>circle</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax><ymax>20</ymax>"
        "</bndbox></object></annotation>"
    )
    return {"images": images, "boxes": counts}


@dataclass
class DetectionRun:
    cwd: Path
    given: dict[str, int]
    result: subprocess.CompletedProcess[str] | None = None


# test name -> (the command as shown, what it needs in its folder, extra environment)
DETECTION_RUNS = {
    "test_detection_demo_run": (DEMO_DETECTION, lambda cwd: {}, {"TLOPS_DEMO_IMAGES_PER_CLASS": DEMO_PER_CLASS}),
    "test_detection_run_on_a_yolo_export": (YOLO_RUN, lambda cwd: write_yolo_export(cwd / "my_yolo_export"), {}),
}


@pytest.fixture(scope="module")
def detection_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The whole detection runs the selected tests check, started together (PARALLEL_RUNS at a time)."""
    selected = {item.name for item in request.session.items if item.module is sys.modules[__name__]}
    runs: dict[str, DetectionRun] = {}
    jobs = []
    for name, (text, write, env) in DETECTION_RUNS.items():
        if name in selected:
            cwd = tmp_path_factory.mktemp(name.removeprefix("test_"))
            runs[name] = DetectionRun(cwd, write(cwd))
            jobs.append((name, readme_command(text), env))

    def start(job: tuple[str, Any, dict[str, str]]) -> None:
        name, command, env = job
        runs[name].result = run(command, runs[name].cwd, env)

    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        list(pool.map(start, jobs))
    return runs


def check_detection_run(run_: DetectionRun) -> dict[str, Any]:
    """A first detection run into a fresh local registry: version 1, champion, COCO metrics, the crops ranked."""
    stdout = succeeded(run_.result)
    assert "tlops run finished" in stdout
    output = run_.cwd / "tlops-run"
    summary = json.loads((output / "run_summary.json").read_text())
    dataset = summary["dataset"]
    assert dataset["classes"] == sorted(DEMO_CLASSES)
    assert summary["registered_model"] == "tlops-classifier" and summary["version"] == 1
    assert sorted(summary["aliases"]) == ["challenger", "champion"]
    # auto: frozen below 10 training boxes in the rarest class, else partial; the reason names the count.
    assert summary["strategy"] in ("frozen", "partial"), summary["strategy_reasons"]
    assert "training boxes" in summary["strategy_reasons"][0]
    metrics = summary["metrics"]
    for name in ("test_map", "test_map50", "test_map75", "test_mar_100"):
        assert 0 <= metrics[name] <= 1, metrics
    assert metrics["test_map50"] > 0.05, metrics  # a trained detector finds shapes; an untrained one scores ~0
    assert metrics["test_images"] == dataset["num_test"]
    assert f"mAP50 {metrics['test_map50']:.4f}" in stdout
    # Selection on the crops of the boxes: the bundled backbone against raw pixels; a backbone is always shipped.
    ranking = {row["name"]: row for row in summary["selection"]["ranking"]}
    assert set(ranking) == {"efficientnet_lite0", "pixels"}
    assert summary["backbone"] == "efficientnet_lite0" and ranking["efficientnet_lite0"]["status"] == "chosen"
    # MLflow: the plots and the served detector.
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{output / 'mlflow.db'}")
    version = client.get_model_version_by_alias("tlops-classifier", "champion")
    assert int(version.version) == 1
    logged = {a.path for a in client.list_artifacts(version.run_id, "report")}
    for name in ("precision_recall.png", "detection_examples.png", "learning_curves.png", "evaluation.json"):
        assert f"report/{name}" in logged, logged
    return summary


def check_snippet(cwd: Path) -> None:
    """The docs' snippet in the demo run's folder: boxes for the two test images, an error for the junk bytes."""
    result = subprocess.run(
        [sys.executable, "-c", readme_snippet(SNIPPET) + ANSWER],
        cwd=cwd,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=SHORT_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed, answer = result.stdout.split("ANSWER ")
    assert printed.strip().splitlines()[0].split() == ["labels", "scores", "error"], printed
    rows = json.loads(answer)
    assert len(rows) == 3
    for row in rows[:2]:
        assert row["error"] is None, row
        assert len(row["boxes"]) == len(row["labels"]) == len(row["scores"])
        assert all(score >= 0.5 for score in row["scores"]), row  # the request's threshold
        assert set(row["labels"]) <= set(DEMO_CLASSES)
        for x1, y1, x2, y2 in row["boxes"]:
            assert 0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 160, row
    assert any(rows[i]["boxes"] for i in range(2)), rows  # the champion finds shapes
    assert rows[2]["boxes"] is None and rows[2]["error"], rows[2]


@pytest.mark.pipeline
@covers(DEMO_DETECTION, SNIPPET)
def test_detection_demo_run(detection_runs: dict[str, DetectionRun]) -> None:
    demo = detection_runs["test_detection_demo_run"]
    summary = check_detection_run(demo)
    assert "using the built-in detection demo" in demo.result.stdout
    dataset = summary["dataset"]
    assert dataset["layout"] == "pre-split"  # train/, valid/ and test/ as the export has them
    written = coco_images(demo.cwd / "tlops-run" / "demo-data")
    assert len(written) == int(DEMO_PER_CLASS) * len(DEMO_CLASSES)
    assert dataset["num_train"] + dataset["num_val"] + dataset["num_test"] == len(written)
    check_snippet(demo.cwd)


@pytest.mark.pipeline
@covers(YOLO_RUN)
def test_detection_run_on_a_yolo_export(detection_runs: dict[str, DetectionRun]) -> None:
    """A flat YOLO export (no splits): recognised, its boxes read back from normalised centres, split here."""
    yolo = detection_runs["test_detection_run_on_a_yolo_export"]
    summary = check_detection_run(yolo)
    dataset = summary["dataset"]
    assert dataset["layout"] != "pre-split"
    assert dataset["num_train"] + dataset["num_val"] + dataset["num_test"] == YOLO_IMAGES
    assert min(dataset["num_val"], dataset["num_test"]) >= 1
    (prepared,) = (yolo.cwd / "tlops-run" / "pipeline_root").rglob("prepare_summary.json")
    counts = json.loads(prepared.read_text())["counts"]
    boxes = {label: sum(split.get(label, 0) for split in counts.values()) for label in DEMO_CLASSES}
    assert boxes == yolo.given


@covers(PREPARE_VOC)
def test_prepare_data_on_a_voc_export(tmp_path: Path) -> None:
    written = write_voc_export(tmp_path / "my_voc_export")
    result = run(readme_command(PREPARE_VOC), tmp_path, timeout=SHORT_TIMEOUT_S)
    printed = printed_json(succeeded(result))
    assert printed["classes"] == sorted(DEMO_CLASSES) and sum(printed["images"].values()) == written["images"]
    assert printed["quarantined"] == 1
    prepared = json.loads((tmp_path / "prepared" / "prepare_summary.json").read_text())
    assert prepared["task"] == "object-detection" and prepared["classes"] == sorted(DEMO_CLASSES)
    details = prepared["details"]
    assert details["format"] == "Pascal VOC" and details["boxes_clipped"] == 1
    assert sum(details["images"].values()) == written["images"]
    boxes = {label: sum(split.get(label, 0) for split in prepared["counts"].values()) for label in DEMO_CLASSES}
    assert boxes == written["boxes"]
    (lost,) = prepared["quarantined"]
    assert "lost" in lost["path"] and "missing" in lost["reason"], lost
    report = (tmp_path / "prepared" / "report.md").read_text()
    assert "Pascal VOC" in report and "- boxes clipped to their image: 1" in report
    assert f"- boxes: train {sum(prepared['counts']['train'].values())}," in report
    # VOC corners are 1-based: the manifest's are 0-based, exactly the demo's COCO boxes.
    with (tmp_path / "prepared" / "manifest.csv").open() as file:
        import csv

        rows = list(csv.DictReader(file))
    source = coco_images(tmp_path / "voc-source")
    first = json.loads(next(row for row in rows if row["relpath"].endswith("0001.png"))["boxes"])
    expected = [[x, y, x + w, y + h] for _, (x, y, w, h) in source[1][3]]
    assert sorted(entry["box"] for entry in first) == sorted(expected)
