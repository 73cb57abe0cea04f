"""Typed step outputs: one module names every file a step writes; records are versioned and checked on read."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tlops.data.demo import write_digits_imagefolder
from tlops.data.prepare import prepare_data, read_manifest
from tlops.errors import TlopsError
from tlops.steps import outputs
from tlops.steps.evaluate import evaluate
from tlops.steps.extract_features import extract_and_probe
from tlops.steps.fine_tune import fine_tune
from tlops.steps.outputs import (
    BackboneScore,
    Comparison,
    Evaluation,
    ModelConfig,
    PreparedData,
    ProbeSummary,
    RunSummary,
    Selection,
    Training,
    load_prepared,
)
from tlops.steps.runtime import Runtime
from tlops.train.config import TrainConfig

SRC = Path(__file__).resolve().parents[3] / "src" / "tlops"

RECORDS = [
    PreparedData("d" * 64, ["a", "b"], {"train": {"a": 1, "b": 1}, "val": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}}),
    Selection("efficientnet_lite0", [{"name": "efficientnet_lite0"}], ["the only candidate"], "probe", None, None),
    BackboneScore("efficientnet_lite0", 0.9, 0.01, 0.8, 0.02, 5, 0.1, 3_400_000, 770_000_000, 18.8, "cpu", 1280,
                  224, 140, 5, 0.7, 6.7, 6.7, False, "/cache/36/3652"),
    ProbeSummary("efficientnet_lite0", ["a", "b"], 0.1, 0.9, 1.0, 64, 1280, class_weighted=True),
    ModelConfig("efficientnet_lite0", ["a", "b"], {"input_size": 64, "mean": (0.5, 0.5, 0.5)}, "full"),
    Training("full", "auto", ["why"], 1, 0.9, 0.8, [{"epoch": 0, "val_accuracy": 0.8}], {"epochs": 1}),
    Evaluation({"test_accuracy": 0.5}, {"a": {"support": 1}}, [[1, 0], [1, 0]], ["a", "b"], "timm:x", "full"),
    Comparison(True, None, ["no champion yet: the first becomes it"], tracking_uri="sqlite:///x.db", model_name="m"),
    RunSummary({"digest": "d"}, "efficientnet_lite0", "full", [], {"test_accuracy": 0.5}, "sqlite:///x.db", "tlops",
               "run", "m", 1, "models:/m/1", "models:/m-1", ["challenger", "champion"], None,
               {"version": 1, "reason": "no champion yet: the new version becomes it"}),
]  # fmt: skip


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_each_record_round_trips_with_its_schema_version(record, tmp_path: Path) -> None:
    path = record.write(tmp_path)

    assert path == tmp_path / record.FILE
    assert json.loads(path.read_text())["schema_version"] == type(record).expected_version()
    assert type(record).read(tmp_path) == record
    assert [p.name for p in tmp_path.iterdir()] == [record.FILE]  # no temporary file left


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_reading_a_folder_that_is_not_the_step_output_names_the_step(record, tmp_path: Path) -> None:
    step = record.STEP
    article = "an" if step[0] in "aeiou" else "a"
    missing, empty, file = tmp_path / "x", tmp_path / "empty", tmp_path / "file"
    empty.mkdir()
    file.write_text("")
    for folder, problem in ((missing, "no such folder"), (empty, f"no {record.FILE}"), (file, "a file, not a folder")):
        with pytest.raises(TlopsError) as raised:
            type(record).read(folder)
        assert str(raised.value).startswith(f"{folder} is not {article} {step} output ({problem}): ")


def test_the_prepare_data_message_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(TlopsError) as raised:
        load_prepared(tmp_path / "x")
    assert str(raised.value) == (
        f"{tmp_path / 'x'} is not a prepare-data output (no such folder): run tlops prepare-data first"
    )


def test_another_schema_version_or_a_damaged_file_is_refused(tmp_path: Path) -> None:
    record = RECORDS[1]
    record.write(tmp_path)
    path = tmp_path / record.FILE
    payload = json.loads(path.read_text())
    path.write_text(json.dumps(payload | {"schema_version": 3}))
    with pytest.raises(TlopsError, match=r"has schema version 3, this tlops reads version 2: run tlops select-backbo"):
        Selection.read(tmp_path)
    path.write_text(json.dumps({k: v for k, v in payload.items() if k != "schema_version"}))
    with pytest.raises(TlopsError, match=r"has schema version None"):
        Selection.read(tmp_path)
    path.write_text(json.dumps(payload | {"unexpected": 1}))
    with pytest.raises(TlopsError, match=r"does not match its schema"):
        Selection.read(tmp_path)
    path.write_text("{not json")
    with pytest.raises(TlopsError, match=r"cannot be read"):
        Selection.read(tmp_path)


def test_json_file_names_are_written_only_in_the_outputs_module() -> None:
    # The data layer cannot import tlops.steps, so the prepare-data step's summary is named in data/prepared.py.
    # The feature cache's index.json, the served model's preprocessing.json and the local stack's state files are
    # their own formats, not step outputs.
    allowed = {SRC / "steps" / "outputs.py", SRC / "data" / "prepared.py", SRC / "models" / "feature_cache.py"}
    allowed |= {SRC / "serving" / "model.py", SRC / "stack" / "config.py"}
    detection = SRC / "data" / "detection"  # names other tools' annotation files, to recognise and read them
    allowed |= {detection / "sniff.py", detection / "coco.py", detection / "exports.py", detection / "demo.py"}
    allowed |= {SRC / "models" / "detector_checkpoint.py"}  # the detector's own config, beside its weights
    allowed |= {SRC / "data" / "sources.py", SRC / "data" / "text" / "tables.py"}  # users' JSON-lines tables
    allowed |= {SRC / "serving" / "text_model.py"}  # the served text model's own settings file
    allowed |= {SRC / "models" / "text_encoders.py", SRC / "models" / "text_names.py"}  # Hugging Face files
    allowed |= {SRC / "models" / "tfidf.py"}  # the TF-IDF model's own format
    allowed |= {SRC / "models" / "feature_packs.py"}  # the feature cache's pack indexes
    named = {
        path
        for path in SRC.rglob("*.py")
        for line in path.read_text().splitlines()
        if re.search(r"""\.json["']""", line)
    }
    assert named <= allowed, sorted(map(str, named - allowed))
    every_file = {getattr(outputs, name) for name in outputs.__all__ if name.endswith("_FILE")}
    # 3 of prepare-data, plan and shard, score, selection (2), features, probe (2), model (5), evaluate (5 + 2 of
    # detection), summary, export, audit
    assert len(every_file) == 26


def test_a_manifest_keeps_class_names_pandas_would_read_as_missing(tmp_path: Path) -> None:
    rows = "uri,relpath,sha256,label,split,width,height\n" + "".join(
        f"/x/{name}.png,{name}/1.png,{name},{name},train,8,8\n" for name in ("NA", "null", "nan", "None", "")
    )
    (tmp_path / outputs.MANIFEST_FILE).write_text(rows)
    manifest = read_manifest(tmp_path)
    assert list(manifest["label"]) == ["NA", "null", "nan", "None", ""]
    assert list(manifest["sha256"]) == ["NA", "null", "nan", "None", ""]
    assert list(manifest["width"]) == [8] * 5


NA_CLASSES = ["NA", "None", "nan", "null"]


def test_classes_named_like_missing_values_survive_every_step(tmp_path: Path) -> None:
    digits = write_digits_imagefolder(tmp_path / "digits", per_class=6)
    images = tmp_path / "images"
    for name, source in zip(NA_CLASSES, sorted(digits.iterdir()), strict=False):
        shutil.copytree(source, images / name)
    runtime = Runtime(cache_dir=tmp_path / "cache")
    data, features, probe, model, evaluation = (tmp_path / n for n in ("data", "features", "probe", "model", "eval"))

    prepared = prepare_data(str(images), data)
    summary = extract_and_probe(data, "efficientnet_lite0", features, probe, runtime, image_size=32)
    training = fine_tune(data, probe, model, TrainConfig(strategy="lp-ft", epochs=1, batch_size=8), runtime)
    evaluated = evaluate(data, model, evaluation, runtime, tracking_uri=f"sqlite:///{tmp_path / 'none.db'}")

    assert prepared.classes == NA_CLASSES
    manifest, loaded = load_prepared(data)
    assert sorted(manifest["label"].unique()) == NA_CLASSES and loaded.classes == NA_CLASSES
    assert summary.num_features == 1280 and training.strategy == "lp-ft"
    assert ModelConfig.read(model).classes == NA_CLASSES
    assert evaluated.evaluation.classes == NA_CLASSES
    assert set(evaluated.evaluation.report) >= set(NA_CLASSES)
    assert sum(map(sum, evaluated.evaluation.confusion)) == evaluated.evaluation.metrics["test_images"] == 4
    assert evaluated.comparison.champion_version is None
    assert not (tmp_path / "none.db").exists()  # the gate creates no registry to look into
