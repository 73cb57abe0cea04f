"""The compiled pipeline IR, and the whole pipeline run through kfp.local against real S3 and MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from repository import REPO
from tlops.pipeline.compile import PIPELINE_FILE, compile_all

STEPS = {
    "fingerprint-data",
    "prepare-data",
    "plan-extraction",
    "extract-shard",
    "score-backbone",
    "score-baseline",
    "select-backbone",
    "extract-features",
    "audit",
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


def _step_tasks(spec: dict, exit_handler: bool = False) -> dict[str, dict]:
    """Every task that runs a container, inside loops too (a ParallelFor is a task whose component is a DAG).

    The exit handler's task is left out unless ``exit_handler``.
    """
    found, pending = {}, list(spec["root"]["dag"]["tasks"].items())
    while pending:
        name, task = pending.pop()
        component = spec["components"][task["componentRef"]["name"]]
        if "dag" in component:
            pending += component["dag"]["tasks"].items()
        elif exit_handler or name != "record-pipeline-status":
            found[name] = task
    return found


def _dag_holding(spec: dict, task: str) -> dict:
    """The DAG component whose tasks include ``task``."""
    return next(c["dag"] for c in spec["components"].values() if task in c.get("dag", {}).get("tasks", {}))


def _loop_name(spec: dict) -> str:
    """The task name kfp gave the ParallelFor over the backbones."""
    tasks = _dag_holding(spec, "select-backbone")["tasks"]
    return next(name for name, task in tasks.items() if "candidates" in str(task.get("parameterIterator")))


def _reference(parameter: str) -> str:
    """How kfp writes a pipeline parameter into a step's resources: a placeholder for the task input it adds."""
    return f"{{{{$.inputs.parameters['pipelinechannel--{parameter}']}}}}"


def _with_default_parameters(spec: dict, value):
    """``value`` with each pipeline-parameter placeholder in it replaced by the parameter's default, as a run would."""
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    if isinstance(value, dict):
        return {key: _with_default_parameters(spec, item) for key, item in value.items()}
    name = next((name for name in parameters if value == _reference(name)), None)
    if name is None:
        return value
    default = parameters[name]["defaultValue"]
    return str(int(default)) if parameters[name]["parameterType"] == "NUMBER_INTEGER" else str(default)


def _tolerations(spec: dict, settings: dict) -> list[dict]:
    """A step's tolerations, those bound to a pipeline parameter read from the parameter's default."""
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    found = []
    for toleration in settings.get("tolerations", []):
        if "tolerationJson" in toleration:
            name = toleration["tolerationJson"]["componentInputParameter"].removeprefix("pipelinechannel--")
            found += parameters[name]["defaultValue"]
        else:
            found.append(toleration)
    return found


def test_checked_in_yaml_matches_a_fresh_compile(compiled: Path):
    # The YAMLs and the component docs generated from them (components/*.md).
    fresh = sorted(p.relative_to(compiled) for p in compiled.rglob("*") if p.suffix in (".yaml", ".md"))
    checked_in = sorted(
        p.relative_to(REPO)
        for folder in ("pipelines", "components")
        for p in (REPO / folder).glob("*")
        if p.suffix in (".yaml", ".md")
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
    # Candidates are scored in parallel (a ParallelFor over the candidates prepare-data resolved for the recognised
    # task from the backbones parameter), gathered by select-backbone.
    loop = _dag_holding(spec, "select-backbone")["tasks"][_loop_name(spec)]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--prepare-data-candidates"
    assert loop["iteratorPolicy"]["parallelismLimit"] >= 2
    gathered = tasks["select-backbone"]["inputs"]["artifacts"]["scores"]["taskOutputArtifact"]
    assert gathered["producerTask"] == _loop_name(spec)
    assert tasks["select-backbone"]["inputs"]["artifacts"]["baseline"]["taskOutputArtifact"]["producerTask"] == (
        "score-baseline"
    )
    feature_cache = tasks["extract-features"]["inputs"]["parameters"]["feature_cache"]["componentInputParameter"]
    assert _pipeline_parameter(spec, "extract-features", feature_cache) == "feature_cache"
    assert tasks["fine-tune"]["inputs"]["artifacts"]["probe"]["taskOutputArtifact"]["producerTask"] == (
        "extract-features"
    )
    assert tasks["register"]["inputs"]["artifacts"]["evaluation"]["taskOutputArtifact"]["producerTask"] == "evaluate"
    assert tasks["extract-features"]["inputs"]["parameters"]["backbone"]["taskOutputParameter"]["producerTask"] == (
        "select-backbone"
    )
    # prepare-data is keyed by the source's fingerprint, which a never-cached first step lists.
    fingerprint = tasks["prepare-data"]["inputs"]["parameters"]["source_fingerprint"]["taskOutputParameter"]
    assert fingerprint == {"producerTask": "fingerprint-data", "outputParameterKey": "Output"}
    outputs = {
        name: spec["components"][f"comp-{name}"]["outputDefinitions"]["artifacts"] for name in ("evaluate", "fine-tune")
    }
    assert outputs["evaluate"]["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    assert outputs["evaluate"]["confusion"]["artifactType"]["schemaTitle"] == "system.ClassificationMetrics"
    assert outputs["fine-tune"]["model"]["artifactType"]["schemaTitle"] == "system.Model"
    assert outputs["evaluate"]["gate_report"]["artifactType"]["schemaTitle"] == "system.Markdown"


def test_the_gate_thresholds_are_pipeline_parameters_and_register_records_the_kfp_run(compiled: Path):
    from tlops.promotion.gate import GateConfig
    from tlops.settings import to_mapping

    spec = _documents(compiled / "pipelines" / PIPELINE_FILE)[0]
    tasks = _step_tasks(spec)
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    bound = tasks["evaluate"]["inputs"]["parameters"]["gate_settings"]["componentInputParameter"]
    assert _pipeline_parameter(spec, "evaluate", bound) == "gate_settings"
    assert parameters["gate_settings"]["defaultValue"] == to_mapping(GateConfig())
    register = tasks["register"]["inputs"]["parameters"]
    assert register["kfp_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert register["kfp_run_name"]["runtimeValue"]["constant"] == "{{$.pipeline_job_name}}"
    assert register["kfp_pipeline_name"]["runtimeValue"]["constant"] == "tlops-transfer-learning"


def test_fine_tune_runs_on_a_gpu_node_pool_with_pinned_images(compiled: Path):
    spec, platform = _documents(compiled / "pipelines" / PIPELINE_FILE)
    executors = spec["deploymentSpec"]["executors"]
    fine_tune = executors["exec-fine-tune"]["container"]
    accelerator = _with_default_parameters(spec, fine_tune["resources"]["accelerator"])  # with the default gpu_*
    assert accelerator == {"resourceType": "nvidia.com/gpu", "resourceCount": "1"}
    assert "tlops-gpu:" in fine_tune["image"]
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-fine-tune"]
    assert _tolerations(spec, kubernetes)[0]["key"] == "nvidia.com/gpu"
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


def test_missing_features_fan_out_over_the_planner_shards_before_scoring(compiled: Path):
    from tlops.pipeline.pipeline import MAX_PARALLEL_EXTRACTION

    spec = _documents(compiled / "pipelines" / PIPELINE_FILE)[0]
    tasks = _step_tasks(spec)
    dag = _dag_holding(spec, "plan-extraction")["tasks"]
    # A ParallelFor over the planner's list output, one extract-shard per item, each reading the plan artifact.
    (loop_name,) = (name for name, task in dag.items() if "plan-extraction" in str(task.get("parameterIterator")))
    loop = dag[loop_name]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--plan-extraction-Output"
    assert loop["iteratorPolicy"]["parallelismLimit"] == MAX_PARALLEL_EXTRACTION
    assert _holder(spec, "extract-shard") == loop["componentRef"]["name"]
    shard = tasks["extract-shard"]["inputs"]
    assert shard["artifacts"]["plan"]["componentInputArtifact"] == "pipelinechannel--plan-extraction-plan"
    assert shard["parameters"]["shard"]["componentInputParameter"].endswith("-loop-item")
    # The planner plans the candidates' features with the shard size parameter; scoring waits for every shard.
    plan_inputs = tasks["plan-extraction"]["inputs"]["parameters"]
    assert plan_inputs["backbones"]["taskOutputParameter"]["outputParameterKey"] == "candidates"
    size = plan_inputs["extraction_shard_size"]["componentInputParameter"]
    assert _pipeline_parameter(spec, "plan-extraction", size) == "extraction_shard_size"
    assert loop_name in dag[_loop_name(spec)]["dependentTasks"]


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
    assert gpu_tasks == GPU_STEPS
    for task, executor in executor_of.items():
        # The GPU steps' settings are pipeline parameters (gpu_*): checked here with their defaults.
        resources = _with_default_parameters(spec, executors[executor]["container"]["resources"])
        settings = kubernetes.get(executor, {})
        tolerations = {(t["key"], t.get("effect")) for t in _tolerations(spec, settings)}
        shm = [m for m in settings.get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
        # Every step asks for CPU and memory, with limits above the requests.
        assert float(resources["resourceCpuRequest"]) >= 1, task
        assert float(resources["resourceCpuLimit"]) > float(resources["resourceCpuRequest"]), task
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
    loaders = {"extract-shard", "score-backbone", "score-baseline", "extract-features", "fine-tune", "evaluate"}
    with_shm = {
        task
        for task, executor in executor_of.items()
        if any(m["mountPath"] == "/dev/shm" for m in kubernetes.get(executor, {}).get("emptyDirMounts", []))
    }
    assert with_shm == loaders


def test_tlops_run_scores_candidates_one_at_a_time_and_a_cluster_in_parallel() -> None:
    from tlops.pipeline.pipeline import MAX_PARALLEL_SCORING, build_pipeline, transfer_learning_pipeline

    def limit(pipeline) -> int:
        (dag,) = (c.dag for c in pipeline.pipeline_spec.components.values() if "select-backbone" in c.dag.tasks)
        (loop,) = (task for task in dag.tasks.values() if "candidates" in task.parameter_iterator.items.input_parameter)
        return loop.iterator_policy.parallelism_limit

    assert limit(build_pipeline(scoring_parallelism=1)) == 1  # kfp.local: one after the other on this machine
    assert limit(transfer_learning_pipeline) == MAX_PARALLEL_SCORING > 1


GPU_STEPS = {"extract-shard", "score-backbone", "extract-features", "fine-tune"}
GPU_RESOURCE_PARAMETERS = (
    "gpu_accelerator_type",
    "gpu_count",
    "gpu_cpu_request",
    "gpu_cpu_limit",
    "gpu_memory_request",
    "gpu_memory_limit",
)


def _executor(spec: dict, task: dict) -> str:
    return spec["components"][task["componentRef"]["name"]]["executorLabel"]


def _holder(spec: dict, task: str) -> str | None:
    """The name of the DAG component whose tasks include ``task`` (``None``: the pipeline's root DAG)."""
    if task in spec["root"]["dag"]["tasks"]:
        return None
    return next(name for name, c in spec["components"].items() if task in c.get("dag", {}).get("tasks", {}))


def _pipeline_parameter(spec: dict, step: str, component_input: str) -> str:
    """The pipeline parameter that ``component_input`` of the DAG around ``step`` is (each enclosing DAG passes it on).

    Every DAG on the way must both declare the input and get it from the one around it: kfp 2.17 leaves out the
    parameters a step inside a loop uses only in its resources unless the step registers them.
    """
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    holder = _holder(spec, step)
    while holder is not None:
        assert component_input in spec["components"][holder]["inputDefinitions"]["parameters"], (step, holder)
        dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
        name, task = next(
            (name, task)
            for dag in dags
            for name, task in dag["tasks"].items()
            if task["componentRef"]["name"] == holder
        )
        component_input = task["inputs"]["parameters"][component_input]["componentInputParameter"]
        holder = _holder(spec, name)
    assert component_input in parameters, (step, component_input)
    return component_input


def _paths_to(value, text: str, path: tuple = ()) -> list[tuple]:
    """Where in a YAML document a string containing ``text`` is."""
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _paths_to(item, text, (*path, key))]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in _paths_to(item, text, (*path, index))]
    return [path] if isinstance(value, str) and text in value else []


def test_gpu_steps_resources_are_the_gpu_pipeline_parameters(compiled: Path):
    spec = _documents(compiled / "pipelines" / PIPELINE_FILE)[0]
    executors = spec["deploymentSpec"]["executors"]
    tasks = _step_tasks(spec)
    for step in GPU_STEPS:
        assert executors[_executor(spec, tasks[step])]["container"]["resources"] == {
            "accelerator": {
                "resourceType": _reference("gpu_accelerator_type"),
                "resourceCount": _reference("gpu_count"),
            },
            "resourceCpuRequest": _reference("gpu_cpu_request"),
            "resourceCpuLimit": _reference("gpu_cpu_limit"),
            "resourceMemoryRequest": _reference("gpu_memory_request"),
            "resourceMemoryLimit": _reference("gpu_memory_limit"),
        }, step
        # Each placeholder names a task input that is the pipeline parameter (through the loop for score-backbone).
        inputs = tasks[step]["inputs"]["parameters"]
        for parameter in GPU_RESOURCE_PARAMETERS:
            bound = inputs[f"pipelinechannel--{parameter}"]["componentInputParameter"]
            assert _pipeline_parameter(spec, step, bound) == parameter, (step, parameter)


def test_gpu_steps_node_selector_and_tolerations_are_the_gpu_pipeline_parameters(compiled: Path):
    spec, platform = _documents(compiled / "pipelines" / PIPELINE_FILE)
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step, task in _step_tasks(spec).items():
        settings = kubernetes.get(_executor(spec, task), {})
        if step not in GPU_STEPS:
            assert "nodeSelector" not in settings and "tolerations" not in settings, step
            continue
        # One selector and one toleration entry, each a reference to a pipeline input: no constant label or taint.
        ((selector_kind, selector),) = settings["nodeSelector"].items()
        assert selector_kind == "nodeSelectorJson" and list(selector) == ["componentInputParameter"], step
        assert _pipeline_parameter(spec, step, selector["componentInputParameter"]) == "gpu_node_selector", step
        (toleration,) = settings["tolerations"]
        assert list(toleration) == ["tolerationJson"] and list(toleration["tolerationJson"]) == [
            "componentInputParameter"
        ], step
        bound = toleration["tolerationJson"]["componentInputParameter"]
        assert _pipeline_parameter(spec, step, bound) == "gpu_tolerations", step


NETWORK_STEPS = {
    "fingerprint-data",
    "prepare-data",
    "plan-extraction",
    "score-baseline",
    "audit",
    "evaluate",
    "register",
}


def test_steps_on_the_network_or_a_gpu_retry_with_exponential_backoff(compiled: Path):
    from tlops.pipeline.pipeline import GPU_STEP_RETRIES, NETWORK_STEP_RETRIES

    spec = _documents(compiled / "pipelines" / PIPELINE_FILE)[0]
    tasks = _step_tasks(spec, exit_handler=True)
    assert GPU_STEP_RETRIES >= 1 and NETWORK_STEP_RETRIES >= 1
    for step in GPU_STEPS:  # a spot node can be reclaimed mid-step: retry after 60 s, 120 s, ...
        assert tasks[step]["retryPolicy"] == {
            "maxRetryCount": GPU_STEP_RETRIES,
            "backoffDuration": "60s",
            "backoffFactor": 2.0,
            "backoffMaxDuration": "3600s",
        }, step
    # S3 and MLflow: a restarted server or a dropped connection; register is safe to retry (it registers once).
    for step in NETWORK_STEPS | {"record-pipeline-status"}:
        assert tasks[step]["retryPolicy"] == {
            "maxRetryCount": NETWORK_STEP_RETRIES,
            "backoffDuration": "30s",
            "backoffFactor": 2.0,
            "backoffMaxDuration": "600s",
        }, step
    assert set(tasks) - GPU_STEPS - NETWORK_STEPS == {"select-backbone", "record-pipeline-status"}
    assert "retryPolicy" not in tasks["select-backbone"]  # reads its inputs' files: a failure would repeat


def test_tlops_run_builds_the_pipeline_without_retries(tmp_path: Path):
    """kfp.local honours retries: on one machine a failed step fails again, after minutes of backoff."""
    from kfp import compiler

    from tlops.pipeline.pipeline import build_pipeline

    compiler.Compiler().compile(build_pipeline(scoring_parallelism=1, retries=False), str(tmp_path / "local.yaml"))
    spec = _documents(tmp_path / "local.yaml")[0]
    assert not [name for name, task in _step_tasks(spec, exit_handler=True).items() if "retryPolicy" in task]


def test_caching_is_on_where_the_inputs_decide_the_result_and_off_where_the_world_does(compiled: Path):
    spec = _documents(compiled / "pipelines" / PIPELINE_FILE)[0]
    tasks = _step_tasks(spec, exit_handler=True)
    cached = {"prepare-data", "score-backbone", "score-baseline", "select-backbone", "extract-features", "audit"}
    cached |= {"fine-tune"}
    for step in cached:
        assert tasks[step]["cachingOptions"] == {"enableCache": True}, step
    # The listing (new files), the champion the gate compares with, the registration, the outcome: never cached.
    for step in set(tasks) - cached:
        assert tasks[step]["cachingOptions"] == {}, step
    # The extraction plan and its shards: what the feature cache holds now.
    assert set(tasks) - cached == {
        "fingerprint-data",
        "plan-extraction",
        "extract-shard",
        "evaluate",
        "register",
        "record-pipeline-status",
    }


def test_an_exit_handler_records_a_failed_run_in_mlflow_and_finished_runs_expire(compiled: Path):
    from tlops.pipeline.pipeline import FINISHED_RUN_TTL_S

    spec, platform = _documents(compiled / "pipelines" / PIPELINE_FILE)
    root = spec["root"]["dag"]["tasks"]
    (group,) = (name for name in root if name != "record-pipeline-status")
    exit_task = root["record-pipeline-status"]
    assert exit_task["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert exit_task["dependentTasks"] == [group]
    inputs = exit_task["inputs"]["parameters"]
    assert inputs["status"] == {"taskFinalStatus": {"producerTask": group}}
    assert inputs["tracking_uri"] == {"componentInputParameter": "tracking_uri"}
    assert inputs["experiment"] == {"componentInputParameter": "experiment"}
    assert inputs["kfp_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    # Every step runs inside the group the handler watches.
    assert set(_step_tasks({**spec, "root": {"dag": {"tasks": {group: root[group]}}}})) == STEPS
    executor = spec["components"][exit_task["componentRef"]["name"]]["executorLabel"]
    kubernetes = platform["platforms"]["kubernetes"]
    assert kubernetes["deploymentSpec"]["executors"][executor]["secretAsEnv"][0]["optional"] is True  # MLflow auth
    assert kubernetes["pipelineConfig"] == {"resourceTtlOnCompletion": FINISHED_RUN_TTL_S}
    assert 24 * 3600 <= FINISHED_RUN_TTL_S <= 30 * 24 * 3600


def test_gpu_pipeline_parameters_default_to_the_defaults(compiled: Path):
    from tlops.steps.config import ResourcesConfig

    defaults = ResourcesConfig()
    parameters = _documents(compiled / "pipelines" / PIPELINE_FILE)[0]["root"]["inputDefinitions"]["parameters"]
    kinds = {
        "gpu_accelerator_type": "STRING",
        "gpu_count": "NUMBER_INTEGER",
        "gpu_node_selector": "STRUCT",
        "gpu_tolerations": "LIST",
        "gpu_cpu_request": "STRING",
        "gpu_cpu_limit": "STRING",
        "gpu_memory_request": "STRING",
        "gpu_memory_limit": "STRING",
    }
    assert {name for name in parameters if name.startswith("gpu_")} == set(kinds)
    for name, kind in kinds.items():
        assert parameters[name]["parameterType"] == kind, name
        assert parameters[name]["defaultValue"] == getattr(defaults, name), name
    assert defaults.gpu_accelerator_type == "nvidia.com/gpu" and defaults.gpu_node_selector == {}
    assert defaults.gpu_tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_another_gpu_node_pool_is_only_other_parameter_values(compiled: Path, tmp_path: Path):
    from kfp import compiler

    from tlops.pipeline.pipeline import transfer_learning_pipeline

    default_spec, default_platform = _documents(compiled / "pipelines" / PIPELINE_FILE)
    # With the defaults, "nvidia.com/gpu" is only in the defaults of the two parameters: no step has it as a constant.
    assert _paths_to(default_spec, "nvidia.com/gpu") == [
        ("root", "inputDefinitions", "parameters", "gpu_accelerator_type", "defaultValue"),
        ("root", "inputDefinitions", "parameters", "gpu_tolerations", "defaultValue", 0, "key"),
    ]
    assert _paths_to(default_platform, "nvidia.com/gpu") == []
    overrides = {
        "gpu_accelerator_type": "amd.com/gpu",
        "gpu_count": 2,
        "gpu_node_selector": {"cloud.google.com/gke-spot": "true", "node.kubernetes.io/instance-type": "mi300x"},
        "gpu_tolerations": [
            {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
        ],
        "gpu_cpu_request": "8",
        "gpu_cpu_limit": "12",
        "gpu_memory_request": "48G",
        "gpu_memory_limit": "64G",
    }
    path = tmp_path / "amd.yaml"
    compiler.Compiler().compile(transfer_learning_pipeline, str(path), pipeline_parameters=overrides)
    assert "nvidia.com/gpu" not in path.read_text()
    spec, platform = _documents(path)
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert {name: parameters[name]["defaultValue"] for name in overrides} == overrides
    # The steps and their Kubernetes settings are unchanged: only the values the run gets differ.
    assert spec["root"]["dag"] == default_spec["root"]["dag"]
    assert spec["components"] == default_spec["components"]
    assert spec["deploymentSpec"] == default_spec["deploymentSpec"]
    assert platform == default_platform
    fine_tune = _with_default_parameters(spec, spec["deploymentSpec"]["executors"]["exec-fine-tune"]["container"])
    assert fine_tune["resources"] == {
        "accelerator": {"resourceType": "amd.com/gpu", "resourceCount": "2"},
        "resourceCpuRequest": "8",
        "resourceCpuLimit": "12",
        "resourceMemoryRequest": "48G",
        "resourceMemoryLimit": "64G",
    }
    assert (
        _tolerations(spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-fine-tune"])
        == (overrides["gpu_tolerations"])
    )


def test_the_audit_reads_extract_features_output_and_feeds_fine_tune_and_register(compiled: Path) -> None:
    spec = _documents(compiled / "pipelines" / PIPELINE_FILE)[0]
    tasks = _step_tasks(spec)
    audit = tasks["audit"]["inputs"]
    assert audit["artifacts"]["features"]["taskOutputArtifact"] == {
        "outputArtifactKey": "features",
        "producerTask": "extract-features",
    }
    assert audit["parameters"]["backbone"]["taskOutputParameter"]["producerTask"] == "select-backbone"
    for step in ("fine-tune", "register"):
        assert tasks[step]["inputs"]["artifacts"]["audit"]["taskOutputArtifact"] == {
            "outputArtifactKey": "audit",
            "producerTask": "audit",
        }, step
    exclude = tasks["fine-tune"]["inputs"]["parameters"]["exclude_suspected_label_errors"]
    assert _pipeline_parameter(spec, "fine-tune", exclude["componentInputParameter"]) == (
        "exclude_suspected_label_errors"
    )
    assert spec["root"]["inputDefinitions"]["parameters"]["exclude_suspected_label_errors"]["defaultValue"] is False
    # Its ranked tables show in the KFP UI.
    outputs = spec["components"]["comp-audit"]["outputDefinitions"]["artifacts"]
    assert outputs["report"]["artifactType"]["schemaTitle"] == "system.Markdown"
