"""The compiled pipeline IR, and the whole pipeline run through kfp.local against real S3 and MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tlops.pipeline.compile import PIPELINE_FILE, compile_all

REPO = Path(__file__).resolve().parents[1]
STEPS = {
    "prepare-data",
    "score-backbone",
    "score-baseline",
    "select-backbone",
    "extract-features",
    "fine-tune",
    "evaluate",
    "register",
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compiled")
    compile_all(root)
    return root


def _documents(path: Path) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text()))


def _step_tasks(spec: dict) -> dict[str, dict]:
    """Every task that runs a container, inside loops too (a ParallelFor is a task whose component is a DAG)."""
    found, pending = {}, list(spec["root"]["dag"]["tasks"].items())
    while pending:
        name, task = pending.pop()
        component = spec["components"][task["componentRef"]["name"]]
        if "dag" in component:
            pending += component["dag"]["tasks"].items()
        else:
            found[name] = task
    return found


def test_checked_in_yaml_matches_a_fresh_compile(compiled: Path):
    fresh = sorted(p.relative_to(compiled) for p in compiled.rglob("*.yaml"))
    checked_in = sorted(
        p.relative_to(REPO) for folder in ("pipelines", "components") for p in (REPO / folder).glob("*.yaml")
    )
    assert fresh == checked_in, "run `tlops compile` and commit the result"
    for relative in fresh:
        assert (compiled / relative).read_text() == (REPO / relative).read_text(), (
            f"{relative} is stale: run `tlops compile` and commit the result"
        )


def test_pipeline_steps_are_wired_by_artifacts(compiled: Path):
    spec = _documents(compiled / "pipelines" / PIPELINE_FILE)[0]
    tasks = _step_tasks(spec)
    assert set(tasks) == STEPS
    # Candidates are scored in parallel (a ParallelFor over the backbones parameter), gathered by select-backbone.
    loop = spec["root"]["dag"]["tasks"]["for-loop-1"]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--backbones"
    assert loop["iteratorPolicy"]["parallelismLimit"] >= 2
    gathered = tasks["select-backbone"]["inputs"]["artifacts"]["scores"]["taskOutputArtifact"]
    assert gathered["producerTask"] == "for-loop-1"
    assert tasks["select-backbone"]["inputs"]["artifacts"]["baseline"]["taskOutputArtifact"]["producerTask"] == (
        "score-baseline"
    )
    assert tasks["extract-features"]["inputs"]["parameters"]["feature_cache"]["componentInputParameter"] == (
        "feature_cache"
    )
    assert tasks["fine-tune"]["inputs"]["artifacts"]["probe"]["taskOutputArtifact"]["producerTask"] == (
        "extract-features"
    )
    assert tasks["register"]["inputs"]["artifacts"]["evaluation"]["taskOutputArtifact"]["producerTask"] == "evaluate"
    assert tasks["extract-features"]["inputs"]["parameters"]["backbone"]["taskOutputParameter"]["producerTask"] == (
        "select-backbone"
    )
    assert tasks["register"]["cachingOptions"] == {}  # caching disabled: registering must always happen
    outputs = {
        name: spec["components"][f"comp-{name}"]["outputDefinitions"]["artifacts"] for name in ("evaluate", "fine-tune")
    }
    assert outputs["evaluate"]["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    assert outputs["evaluate"]["confusion"]["artifactType"]["schemaTitle"] == "system.ClassificationMetrics"
    assert outputs["fine-tune"]["model"]["artifactType"]["schemaTitle"] == "system.Model"


def test_fine_tune_runs_on_a_gpu_node_pool_with_pinned_images(compiled: Path):
    spec, platform = _documents(compiled / "pipelines" / PIPELINE_FILE)
    executors = spec["deploymentSpec"]["executors"]
    fine_tune = executors["exec-fine-tune"]["container"]
    assert fine_tune["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert fine_tune["resources"]["accelerator"]["resourceCount"] == "1"
    assert "tlops-gpu:" in fine_tune["image"]
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-fine-tune"]
    assert kubernetes["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert kubernetes["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    for name, settings in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items():
        secret = settings["secretAsEnv"][0]
        assert secret["optional"] is True, name
        assert {pair["envVar"] for pair in secret["keyToEnv"]} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    for executor in executors.values():
        image = executor["container"]["image"]
        assert image.startswith("ghcr.io/tlops/") and not image.endswith(":latest")
        assert "pip install" not in " ".join(executor["container"]["command"]), "no installs at run time"


def _memory_bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 1e3, "M": 1e6, "G": 1e9}
    unit = next((u for u in sorted(units, key=len, reverse=True) if quantity.endswith(u)), "")
    return float(quantity.removesuffix(unit)) * units.get(unit, 1)


def test_tasks_on_the_gpu_image_and_only_they_get_the_gpu_node_pool(compiled: Path):
    from tlops.pipeline.image import CPU_IMAGE, GPU_IMAGE

    spec, platform = _documents(compiled / "pipelines" / PIPELINE_FILE)
    executors = spec["deploymentSpec"]["executors"]
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    executor_of = {
        task: spec["components"][settings["componentRef"]["name"]]["executorLabel"]
        for task, settings in _step_tasks(spec).items()
    }
    images = {task: executors[executor]["container"]["image"] for task, executor in executor_of.items()}
    assert set(images.values()) == {CPU_IMAGE, GPU_IMAGE}
    gpu_tasks = {task for task, image in images.items() if image == GPU_IMAGE}
    assert gpu_tasks == {"score-backbone", "extract-features", "fine-tune"}
    for task, executor in executor_of.items():
        resources = executors[executor]["container"]["resources"]
        settings = kubernetes.get(executor, {})
        tolerations = {(t["key"], t.get("effect")) for t in settings.get("tolerations", [])}
        shm = [m for m in settings.get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
        # Every step asks for CPU and memory, with a memory limit above the request.
        assert float(resources["resourceCpuRequest"]) >= 1, task
        assert _memory_bytes(resources["resourceMemoryLimit"]) > _memory_bytes(resources["resourceMemoryRequest"])
        if task in gpu_tasks:
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu", task
            assert resources["accelerator"]["resourceCount"] == "1", task
            assert ("nvidia.com/gpu", "NoSchedule") in tolerations, task
            assert len(shm) == 1 and shm[0]["medium"] == "Memory", task
        else:
            assert "accelerator" not in resources, task
            assert not any(key == "nvidia.com/gpu" for key, _ in tolerations), task
        for mount in shm:  # a memory-backed /dev/shm counts against the memory limit: bounded, and within it
            assert _memory_bytes(mount["sizeLimit"]) < _memory_bytes(resources["resourceMemoryLimit"]), task
    # The steps whose data loaders run workers share batches through /dev/shm, on either image.
    loaders = {"score-backbone", "score-baseline", "extract-features", "fine-tune", "evaluate"}
    with_shm = {
        task
        for task, executor in executor_of.items()
        if any(m["mountPath"] == "/dev/shm" for m in kubernetes.get(executor, {}).get("emptyDirMounts", []))
    }
    assert with_shm == loaders


@pytest.mark.integration
@pytest.mark.pipeline
def test_tlops_run_executes_the_pipeline_from_s3_to_the_mlflow_server(
    small_imagefolder: Path, s3_env, s3_client, bucket: str, mlflow_uri: str, tmp_path: Path
):
    from mlflow import MlflowClient

    from tlops.steps.outputs import read_predictions

    # A pre-split layout (train/ val/ test/ ImageFolders) on S3: the pipeline must keep the splits as given.
    given = {"train": 0, "val": 0, "test": 0}
    for class_dir in sorted(p for p in small_imagefolder.iterdir() if p.is_dir()):
        for index, path in enumerate(sorted(class_dir.glob("*.png"))):
            split = "train" if index < 5 else "val" if index < 7 else "test"
            given[split] += 1
            s3_client.upload_file(str(path), bucket, f"digits/{split}/{class_dir.name}/{path.name}")
    model_name = f"pipeline-{uuid.uuid4().hex[:8]}"
    output = tmp_path / "run"
    command = [
        sys.executable, "-m", "tlops.cli", "run", "--data", f"s3://{bucket}/digits", "--output", str(output),
        "--image-size", "64", "--epochs", "1", "--strategy", "full", "--backbones", "efficientnet_lite0",
        "--model-name", model_name, "--tracking-uri", mlflow_uri,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    summary = json.loads((output / "run_summary.json").read_text())
    dataset = summary["dataset"]
    assert (dataset["num_train"], dataset["num_val"], dataset["num_test"]) == (
        given["train"],
        given["val"],
        given["test"],
    )
    assert dataset["layout"] == "pre-split"
    assert len(summary["dataset"]["digest"]) == 64
    assert summary["backbone"] == "efficientnet_lite0"
    assert summary["strategy"] == "full"
    # The accuracy is the evaluate step's predictions' accuracy, recomputed here on its output artifact.
    predictions = list((output / "pipeline_root").rglob("predictions.safetensors"))
    assert len(predictions) == 1, predictions
    probabilities, targets = read_predictions(predictions[0].parent)
    assert len(targets) == given["test"]
    assert summary["metrics"]["test_accuracy"] == pytest.approx(float((probabilities.argmax(1) == targets).mean()))
    assert summary["version"] == 1
    assert sorted(summary["aliases"]) == ["challenger", "champion"]
    assert summary["gate"] == {
        "promote": True,
        "champion_version": None,
        "reasons": ["no champion yet: the first becomes it"],
    }
    assert summary["tracking_uri"] == mlflow_uri
    assert f"accuracy {summary['metrics']['test_accuracy']:.4f}" in result.stdout

    version = MlflowClient(mlflow_uri).get_model_version_by_alias(model_name, "champion")
    assert version.version == "1"
    assert version.tags["dataset_digest"] == summary["dataset"]["digest"]
    run_root = next((output / "pipeline_root").iterdir())
    task_dirs = {p.name for p in run_root.iterdir()}
    assert task_dirs == STEPS - {"score-backbone"} | {"for-loop-1-iteration-0"}  # one candidate: one iteration
    assert (run_root / "for-loop-1-iteration-0" / "score-backbone" / "score" / "score.json").is_file()


def test_tlops_run_scores_candidates_one_at_a_time_and_a_cluster_in_parallel() -> None:
    from tlops.pipeline.pipeline import MAX_PARALLEL_SCORING, build_pipeline, transfer_learning_pipeline

    def limit(pipeline) -> int:
        return pipeline.pipeline_spec.root.dag.tasks["for-loop-1"].iterator_policy.parallelism_limit

    assert limit(build_pipeline(scoring_parallelism=1)) == 1  # kfp.local: one after the other on this machine
    assert limit(transfer_learning_pipeline) == MAX_PARALLEL_SCORING > 1
