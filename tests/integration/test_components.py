"""Every component YAML is reusable alone: loaded with ``kfp.components.load_component_from_file`` into a pipeline
of its own (its input artifacts from ``dsl.importer``), compiled, and run by kfp.local on a tiny dataset.

The pipelines are the examples of the generated ``components/<name>.md`` pages, run as written (from a folder
where ``components/`` is the checked-in one), so the docs' examples are checked too. kfp 2.17's local runner
supports ``dsl.importer`` (``kfp.local.importer_handler``), also with a URI that is a pipeline parameter or a
``dsl.ParallelFor`` item, so each component runs exactly as in another pipeline on a cluster, with local paths as
URIs. The components run one after another on each other's outputs (each fixture is one component run alone, its
inputs imported from the run before), so the data is prepared once, by prepare-data itself. Those runs are marked
``pipeline`` (90 s to 3 minutes on 2 busy cores, most of it the step processes importing torch and MLflow; pytest's
``--durations`` shows each fixture's run). Each YAML compiled alone is checked in
tests/unit/pipeline/test_component_yamls.py.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from component_pages import load_example as _load_example
from repository import COMPONENTS, REPO
from tlops.promotion.config import RegistryConfig

BACKBONE = "efficientnet_lite0"
IMAGE_SIZE = 32
CLASSES = ("red", "green", "blue")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder whose ``components/`` is the checked-in one, the current directory while this module runs."""
    folder = tmp_path_factory.mktemp("components")
    (folder / "components").symlink_to(COMPONENTS)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        # What the step processes read: the CPU, no DataLoader workers (tiny data), no downloads.
        for name, value in {"TLOPS_DEVICE": "cpu", "TLOPS_WORKERS": "0", "HF_HUB_OFFLINE": "1"}.items():
            patch.setenv(name, value)
        for name in ("AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI", "KUBERNETES_SERVICE_HOST"):
            patch.delenv(name, raising=False)
        yield folder


def run_alone(workdir: Path, name: str, pipeline: Callable | None = None, **arguments: Any) -> Path:
    """Run the example pipeline of component ``name`` (or ``pipeline``) through kfp.local; return its task's folder.

    Raises:
        RuntimeError: when a task fails (kfp.local's ``raise_on_error``).
    """
    from kfp import local

    pipeline = pipeline or _load_example(name, workdir)
    root = workdir / "pipeline_root" / pipeline.name
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    with warnings.catch_warnings():  # images and Kubernetes settings are ignored locally: expected
        warnings.simplefilter("ignore")
        pipeline(**arguments)
    (run,) = root.iterdir()
    return run / name.replace("_", "-")


def output_parameter(task: Path, name: str = "Output") -> Any:
    return json.loads((task / "executor_output.json").read_text())["parameterValues"][name]


def output_metadata(task: Path, name: str) -> dict[str, Any]:
    return json.loads((task / "executor_output.json").read_text())["artifacts"][name]["artifacts"][0]["metadata"]


# --- 2: each component run alone by kfp.local ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(workdir: Path) -> Path:
    """An ImageFolder of 3 classes x 6 small PNGs: noise tinted by the class colour."""
    root = workdir / "images"
    rng = np.random.default_rng(0)
    for index, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        tint = np.zeros(3)
        tint[index] = 255
        for number in range(6):
            pixels = 0.5 * rng.normal(128, 40, (24, 24, 3)) + 0.5 * tint
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"{name}-{number}.png")
    return root


@pytest.fixture(scope="module")
def tracking(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


SCORING: dict = {}  # every setting input has its default


@pytest.fixture(scope="module")
def prepared(workdir: Path, images: Path) -> Path:
    return run_alone(
        workdir, "prepare_data", data_uri=str(images), split_settings={"val_fraction": 0.2, "test_fraction": 0.2}
    )


@pytest.fixture(scope="module")
def scored(workdir: Path, prepared: Path) -> Path:
    dataset = str(prepared / "dataset")
    return run_alone(
        workdir, "score_backbone", dataset_uri=dataset, backbone=BACKBONE, image_size=IMAGE_SIZE, **SCORING
    )


@pytest.fixture(scope="module")
def baseline(workdir: Path, prepared: Path) -> Path:
    return run_alone(workdir, "score_baseline", dataset_uri=str(prepared / "dataset"), **SCORING)


@pytest.fixture(scope="module")
def selected(workdir: Path, scored: Path, baseline: Path) -> Path:
    return run_alone(
        workdir,
        "select_backbone",
        scores_uris=[str(scored / "score")],
        baseline_uri=str(baseline / "score"),
    )


@pytest.fixture(scope="module")
def extracted(workdir: Path, prepared: Path) -> Path:
    return run_alone(
        workdir,
        "extract_features",
        dataset_uri=str(prepared / "dataset"),
        backbone=BACKBONE,
        image_size=IMAGE_SIZE,
    )


@pytest.fixture(scope="module")
def audited(workdir: Path, prepared: Path, extracted: Path) -> Path:
    return run_alone(
        workdir,
        "audit",
        dataset_uri=str(prepared / "dataset"),
        features_uri=str(extracted / "features"),
        backbone=BACKBONE,
        image_size=IMAGE_SIZE,
    )


@pytest.fixture(scope="module")
def tuned(workdir: Path, prepared: Path, extracted: Path, selected: Path, audited: Path) -> Path:
    return run_alone(
        workdir,
        "fine_tune",
        dataset_uri=str(prepared / "dataset"),
        probe_uri=str(extracted / "probe"),
        features_uri=str(extracted / "features"),
        selection_uri=str(selected / "selection"),
        audit_uri=str(audited / "audit"),
        strategy="linear-probe",
        epochs=1,
    )


@pytest.fixture(scope="module")
def evaluated(workdir: Path, prepared: Path, tuned: Path, tracking: str) -> Path:
    return run_alone(
        workdir,
        "evaluate",
        dataset_uri=str(prepared / "dataset"),
        model_uri=str(tuned / "model"),
        tracking_uri=tracking,
    )


@pytest.mark.pipeline
def test_fingerprint_data_alone(workdir: Path, images: Path) -> None:
    task = run_alone(workdir, "fingerprint_data", data_uri=str(images))
    fingerprint = output_parameter(task)
    assert isinstance(fingerprint, str) and fingerprint


@pytest.mark.pipeline
def test_prepare_data_alone(prepared: Path) -> None:
    assert (prepared / "dataset" / "manifest.csv").is_file()
    assert "red" in (prepared / "report").read_text()
    metadata = output_metadata(prepared, "dataset")
    assert metadata["classes"] == sorted(CLASSES) and metadata["train"] + metadata["val"] + metadata["test"] == 18


@pytest.mark.pipeline
def test_score_backbone_alone(scored: Path) -> None:
    assert any((scored / "score").iterdir())
    assert output_metadata(scored, "score")["name"] == BACKBONE


@pytest.mark.pipeline
def test_score_baseline_alone(baseline: Path) -> None:
    assert any((baseline / "score").iterdir())
    assert output_metadata(baseline, "score")["name"] == "pixels"


@pytest.mark.pipeline
def test_select_backbone_alone(selected: Path) -> None:
    assert output_parameter(selected) == BACKBONE  # the only candidate
    assert BACKBONE in (selected / "table").read_text()
    assert (selected / "selection" / "selection.json").is_file()


@pytest.mark.pipeline
def test_extract_features_alone(extracted: Path) -> None:
    assert any((extracted / "features").iterdir()) and any((extracted / "probe").iterdir())
    assert output_metadata(extracted, "probe")["backbone"] == BACKBONE


@pytest.mark.pipeline
def test_fine_tune_alone(tuned: Path) -> None:
    assert output_parameter(tuned) == "linear-probe"
    assert any((tuned / "model").iterdir())
    assert "<html" in (tuned / "learning_curves").read_text().lower()


@pytest.mark.pipeline
def test_evaluate_alone(evaluated: Path) -> None:
    assert any((evaluated / "evaluation").iterdir())
    assert output_metadata(evaluated, "evaluation")["promote"] is True  # no champion yet
    assert "test_accuracy" in output_metadata(evaluated, "metrics")
    assert (evaluated / "gate_report").read_text().strip()


@pytest.mark.pipeline
def test_register_alone(
    workdir: Path, prepared: Path, tuned: Path, evaluated: Path, selected: Path, audited: Path, tracking: str
) -> None:
    task = run_alone(
        workdir,
        "register",
        dataset_uri=str(prepared / "dataset"),
        model_uri=str(tuned / "model"),
        evaluation_uri=str(evaluated / "evaluation"),
        selection_uri=str(selected / "selection"),
        audit_uri=str(audited / "audit"),
        tracking_uri=tracking,
        experiment="components-alone",
        model_name=RegistryConfig.model_name,
    )
    assert output_parameter(task, "version") == 1
    assert output_parameter(task, "model_uri").startswith("models:/")
    assert (task / "registration" / "run_summary.json").is_file()


@pytest.mark.pipeline
def test_record_pipeline_status_alone(workdir: Path, images: Path) -> None:
    tracking = f"sqlite:///{workdir / 'status.db'}"
    task = run_alone(workdir, "record_pipeline_status", tracking_uri=tracking, experiment="x", guarded_uri=str(images))
    assert task.is_dir()
    assert not (workdir / "status.db").exists(), "a pipeline that succeeded is not recorded as failed"


@pytest.mark.pipeline
def test_record_pipeline_status_alone_records_a_failed_pipeline(workdir: Path, tracking: str) -> None:
    from kfp import components, dsl
    from mlflow import MlflowClient

    record = components.load_component_from_file("components/record_pipeline_status.yaml")
    fingerprint = components.load_component_from_file("components/fingerprint_data.yaml")

    @dsl.pipeline(name="with-record-pipeline-status-failing")
    def failing():
        exit_task = record(tracking_uri=tracking, experiment="failed", kfp_run_id="run-9", kfp_run_name="failing")
        with dsl.ExitHandler(exit_task):
            fingerprint(data_uri=str(workdir / "missing"))  # fails: no such folder

    with pytest.raises(RuntimeError):
        run_alone(workdir, "record_pipeline_status", failing)
    client = MlflowClient(tracking)
    (run,) = client.search_runs([client.get_experiment_by_name("failed").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["tlops.pipeline_state"] == "FAILED"
    assert run.data.tags["tlops.kfp_run_name"] == "failing"


def _launch_pipeline() -> Callable:
    """The example's pipeline, with the namespace (outside a pod there is no service account to read it from)."""
    from kfp import components, dsl

    launch_trainjob = components.load_component_from_file("components/launch_trainjob.yaml")

    @dsl.pipeline(name="with-launch-trainjob")
    def with_launch_trainjob():
        launch_trainjob(
            image="trainer:1",
            command=["torchrun", "train.py"],
            num_nodes=2,
            run_id="run-1",
            task_id="task-1",
            namespace="team-a",
            poll_seconds=0.01,
        )

    return with_launch_trainjob


@pytest.mark.pipeline
def test_launch_trainjob_alone(workdir: Path, tmp_path: Path) -> None:
    from fake_kubernetes import FakeKubernetes
    from tlops.pipeline.trainjob import trainjob_name

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": ""}}],
        "users": [{"name": "runner", "user": {"token": "token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "runner"}}],
        "current-context": "fake",
    }
    with FakeKubernetes() as fake, pytest.MonkeyPatch.context() as patch:
        config["clusters"][0]["cluster"]["server"] = fake.url
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
        patch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        name = trainjob_name("run-1", "task-1")
        fake.on_get("team-a", name, 1, lambda s: s.set_condition("team-a", name, "Complete", reason="JobsCompleted"))
        task = run_alone(workdir, "launch_trainjob", _launch_pipeline())
    assert output_parameter(task) == name
    (post,) = fake.requests_to("POST")
    assert post.body["spec"]["trainer"]["numNodes"] == 2


def test_the_examples_left_nothing_in_the_repository() -> None:
    assert not list(REPO.glob("with_*.yaml"))


@pytest.mark.pipeline
def test_a_fixed_backbone_pipeline_built_from_the_component_yamls_compiles_and_runs(
    workdir: Path, images: Path
) -> None:
    """As a Kubeflow user would: load four YAMLs, wire them without selection, give only what has no default."""
    from kfp import compiler, components, dsl

    def load(name: str) -> Any:
        return components.load_component_from_file(f"components/{name}.yaml")

    prepare, extract, tune, evaluate = map(load, ("prepare_data", "extract_features", "fine_tune", "evaluate"))

    def steps(data_uri: str, tracking_uri: str):
        data = prepare(data_uri=data_uri)
        features = extract(dataset=data.outputs["dataset"], backbone=BACKBONE, image_size=IMAGE_SIZE)
        model = tune(dataset=data.outputs["dataset"], probe=features.outputs["probe"], strategy="linear-probe")
        evaluate(dataset=data.outputs["dataset"], model=model.outputs["model"], tracking_uri=tracking_uri)

    steps.__annotations__ = {"data_uri": str, "tracking_uri": str}  # KFP reads types, not this module's strings
    fixed_backbone = dsl.pipeline(name="fixed-backbone")(steps)

    compiler.Compiler().compile(fixed_backbone, str(workdir / "fixed_backbone.yaml"))
    task = run_alone(
        workdir,
        "evaluate",
        fixed_backbone,
        data_uri=str(images),
        tracking_uri=f"sqlite:///{workdir / 'fixed.db'}",
    )
    evaluation = json.loads((task / "evaluation" / "evaluation.json").read_text())
    assert 0.0 <= evaluation["metrics"]["test_accuracy"] <= 1.0
    training = json.loads((task.parent / "fine-tune" / "model" / "training.json").read_text())
    assert training["strategy"] == "linear-probe" and training["config"]["epochs"] == 3  # the default
