"""The transfer-learning pipeline: the steps wired with typed artifacts, and how each runs on Kubernetes.

Per step: CPU and memory requests and limits; the GPU node pool for the GPU steps; retries with exponential backoff
for the steps that touch the network (S3, MLflow) or a GPU node; caching on where the inputs determine the result
(the dataset through its source fingerprint, the backbone by name), off where the result depends on the world
(the source listing, the registry's champion, the registration). An exit handler marks the MLflow run FAILED when
any step failed, and finished runs are deleted from the cluster after :data:`FINISHED_RUN_TTL_S`.
"""

import inspect

from kfp import dsl, kubernetes
from kfp.dsl.graph_component import GraphComponent
from kfp.dsl.pipeline_channel import PipelineParameterChannel

from tlops.pipeline import components
from tlops.steps.config import parameter_defaults

PIPELINE_NAME = "tlops-transfer-learning"
# Candidates scored at once on a cluster, each in its own pod on the GPU node pool (kfp.local runs at most two).
MAX_PARALLEL_SCORING = 4
# Shards of the extraction plan extracted at once, each in its own pod on the GPU node pool.
MAX_PARALLEL_EXTRACTION = 16
# Retries of a failed GPU step (a spot node can be reclaimed). A constant: kfp 2.17's set_retry writes num_retries
# into the int field of the task's retry policy at compile time, so it cannot be a pipeline parameter.
GPU_STEP_RETRIES = 2
# Retries of a step that failed talking to S3 or MLflow (a restarted server, a dropped connection). Each step's own
# clients already retry single requests (botocore standard mode); these retry the whole step, after 30 s, 60 s, 120 s.
NETWORK_STEP_RETRIES = 3
NETWORK_BACKOFF = {"backoff_duration": "30s", "backoff_factor": 2.0, "backoff_max_duration": "600s"}
# Finished runs' pods and workflow objects are deleted after a week (their artifacts and logs stay in the pipeline
# root and MLflow).
FINISHED_RUN_TTL_S = 7 * 24 * 3600
CREDENTIAL_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)


def _credentials(task: dsl.PipelineTask, secret_name) -> dsl.PipelineTask:
    """Expose S3 and MLflow credentials from a Kubernetes Secret as environment variables (keys optional)."""
    return kubernetes.use_secret_as_env(
        task, secret_name=secret_name, secret_key_to_env={key: key for key in CREDENTIAL_KEYS}, optional=True
    )


def _shared_memory(task: dsl.PipelineTask, size: str) -> dsl.PipelineTask:
    """Mount a memory-backed /dev/shm of ``size``.

    The DataLoader workers (``Runtime.workers``: one per usable CPU, at most 8) hand their batches over through
    it, and a container's own /dev/shm is 64 MiB.
    """
    return kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=size)


def _gpu_node_pool(
    task: dsl.PipelineTask,
    accelerator_type: PipelineParameterChannel,
    count: PipelineParameterChannel,
    node_selector: PipelineParameterChannel,
    tolerations: PipelineParameterChannel,
    cpu_request: PipelineParameterChannel,
    cpu_limit: PipelineParameterChannel,
    memory_request: PipelineParameterChannel,
    memory_limit: PipelineParameterChannel,
) -> dsl.PipelineTask:
    """Put a step on the GPU node pool the pipeline parameters describe, and give its data loaders a large /dev/shm.

    For the steps on the GPU image (the runtime picks CUDA when a GPU is visible and pins host memory). Every
    setting is a pipeline parameter (``gpu_*``), so one compiled pipeline fits any cluster. The retries are
    :func:`_gpu_retries`.
    """
    task.set_accelerator_type(accelerator_type).set_accelerator_limit(count)
    task.set_cpu_request(cpu_request).set_cpu_limit(cpu_limit)
    task.set_memory_request(memory_request).set_memory_limit(memory_limit)
    # kfp 2.17 turns parameters in resources into task inputs only when it writes the task, after it has chosen the
    # inputs of the DAGs around it: inside the ParallelFor, score-backbone's would then read inputs its loop never
    # gets. Registering them as inputs of the task (as kfp.kubernetes does for its JSON settings) passes them in.
    task.register_pipeline_channels([accelerator_type, count, cpu_request, cpu_limit, memory_request, memory_limit])
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)
    return _shared_memory(task, "8Gi")


def _gpu_retries(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Retry a step on the GPU node pool :data:`GPU_STEP_RETRIES` times, after 60 s, 120 s, ..."""
    return task.set_retry(GPU_STEP_RETRIES, backoff_duration="60s", backoff_factor=2.0, backoff_max_duration="3600s")


def _cpu_node(task: dsl.PipelineTask, cpus: int, memory_gb: int, shared_memory: str | None = None) -> dsl.PipelineTask:
    """Size a step on the CPU image: requests of ``cpus`` CPUs and ``memory_gb`` GB, limits twice those.

    ``shared_memory`` mounts a /dev/shm of that size, for the steps whose data loaders run workers.
    """
    task.set_cpu_request(str(cpus)).set_cpu_limit(str(2 * cpus))
    task.set_memory_request(f"{memory_gb}G").set_memory_limit(f"{2 * memory_gb}G")
    return _shared_memory(task, shared_memory) if shared_memory else task


def _network_retries(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Retry a step that talks to S3 or MLflow :data:`NETWORK_STEP_RETRIES` times with exponential backoff."""
    return task.set_retry(NETWORK_STEP_RETRIES, **NETWORK_BACKOFF)


def pipeline_signature() -> inspect.Signature:
    """The pipeline's parameters: ``data_uri`` and ``tracking_uri`` (required), then the run config's.

    Generated from :class:`~tlops.steps.config.RunConfig` (:func:`~tlops.steps.config.to_parameters`): the common
    settings are parameters of their own, each section's rarely changed ones one dict parameter
    (``train_settings``, ``gate_settings``, ...) whose default lists every key, so the KFP UI shows them.
    """
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [inspect.Parameter(name, keyword, annotation=str) for name in ("data_uri", "tracking_uri")]
    for name, default in parameter_defaults().items():
        kind = {bool: bool, int: int, float: float, str: str, list: list, dict: dict}[type(default)]
        parameters.append(inspect.Parameter(name, keyword, default=default, annotation=kind))
    parameters.append(inspect.Parameter("credentials_secret", keyword, default="tlops-credentials", annotation=str))
    return inspect.Signature(parameters)


def build_pipeline(
    scoring_parallelism: int = MAX_PARALLEL_SCORING,
    retries: bool = True,
    candidates_from_data: bool = True,
    extraction_parallelism: int = MAX_PARALLEL_EXTRACTION,
) -> GraphComponent:
    """The transfer-learning pipeline, scoring at most ``scoring_parallelism`` candidates at once.

    The compiled pipeline scores the candidates prepare-data returns: the ``backbones`` parameter, or when it is
    empty the recognised task's own (EfficientNet-Lite0 for images, MiniLM for texts). kfp.local cannot loop over
    a step's output, so ``tlops run`` (``candidates_from_data=False``) loops over the ``backbones`` parameter,
    which it fills with the task it recognised in its preflight.

    The compiled pipeline scores :data:`MAX_PARALLEL_SCORING` at once, each in its own pod, and retries the steps
    that can fail for a passing reason (a dropped connection, a reclaimed spot node). ``tlops run`` builds the same
    pipeline with a parallelism of 1, so that kfp.local scores the candidates one after the other instead of making
    them share this machine's cores, and without retries: kfp.local honours them, and on one machine a step that
    failed fails again, so retrying would only delay the error by minutes of backoff.

    Before scoring, plan-extraction cuts the candidates' images without cached features into shards and one
    extract-shard pod per shard (``extraction_parallelism`` at once) writes them into the feature cache, so that
    scoring and extract-features assemble their features from it (small data: one shard; nothing missing: none).
    """
    signature = pipeline_signature()

    def transfer_learning_pipeline(*values):
        """Run the steps inside an exit handler; the register step's output folder holds ``run_summary.json``.

        The parameters are :func:`pipeline_signature`'s. ``image_size`` 0 means each backbone's own input size
        (kfp.local cannot take a ``None`` default). The ``gpu_*`` parameters place the score-backbone,
        extract-features and fine-tune steps: accelerator resource and count, node selector (a label dict),
        tolerations (a list of Kubernetes toleration dicts), CPU and memory; kfp.local ignores them.
        """
        given = dict(zip(signature.parameters, values, strict=True))
        data_uri, tracking_uri, credentials_secret = (given.pop(k) for k in ("data_uri", "tracking_uri",
                                                                              "credentials_secret"))  # fmt: skip
        settings = given  # every run config parameter, by name

        def pick(*names: str) -> dict:
            return {name: settings[name] for name in names}

        gpu_pool = {name.removeprefix("gpu_"): settings[name] for name in settings if name.startswith("gpu_")}
        # The exit handler runs however the steps end: it marks the run's MLflow run FAILED when one failed.
        exit_task = components.record_pipeline_status(
            tracking_uri=tracking_uri,
            experiment=settings["experiment"],
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        ).set_display_name("record the outcome in MLflow")
        _credentials(exit_task, credentials_secret)
        _cpu_node(exit_task, cpus=1, memory_gb=1)
        exit_task.set_caching_options(False)
        if retries:
            _network_retries(exit_task)
        with dsl.ExitHandler(exit_task, name="transfer-learning"):
            fingerprint = components.fingerprint_data(data_uri=data_uri).set_display_name("fingerprint data")
            data = components.prepare_data(
                data_uri=data_uri,
                source_fingerprint=fingerprint.output,
                **pick("task", "seed", "split_settings", "backbones"),
            ).set_display_name("prepare data")
            scoring = {
                "dataset": data.outputs["dataset"],
                **pick("seed", "feature_cache", "class_weighted", "selection_settings"),
            }
            candidates = data.outputs["candidates"] if candidates_from_data else settings["backbones"]
            plan = components.plan_extraction(
                dataset=data.outputs["dataset"],
                backbones=candidates,
                **pick("image_size", "feature_cache", "extraction_shard_size"),
            ).set_display_name("plan feature extraction")
            with dsl.ParallelFor(plan.outputs["Output"], parallelism=extraction_parallelism) as shard:
                extracted = components.extract_shard(
                    dataset=data.outputs["dataset"],
                    plan=plan.outputs["plan"],
                    shard=shard,
                    **pick("image_size", "feature_cache"),
                ).set_display_name("extract a shard of features")
                _credentials(extracted, credentials_secret)
                _gpu_node_pool(extracted, **gpu_pool)
                extracted.set_caching_options(False)  # the plan is never cached: a shard is what is missing now
                if retries:
                    _gpu_retries(extracted)
            with dsl.ParallelFor(candidates, parallelism=scoring_parallelism) as candidate:
                scored = components.score_backbone(backbone=candidate, image_size=settings["image_size"], **scoring)
                scored.set_display_name("score backbone").after(extracted)
                _credentials(scored, credentials_secret)
                _gpu_node_pool(scored, **gpu_pool)
                if retries:
                    _gpu_retries(scored)
            baseline = components.score_baseline(**scoring).set_display_name("score the no-transfer baseline")
            selection = components.select_backbone(
                scores=dsl.Collected(scored.outputs["score"]),
                baseline=baseline.outputs["score"],
                **pick("strategy", "selection_settings"),
            ).set_display_name("select backbone")
            features = components.extract_features(
                dataset=data.outputs["dataset"],
                backbone=selection.outputs["Output"],
                **pick("seed", "image_size", "feature_cache", "class_weighted"),
            ).set_display_name("extract features")
            # The audit reads extract-features' features (a linear probe k-fold: seconds) on every run; detection data
            # gets a record saying it does not apply. Its flagged training examples are left out of fine-tuning with
            # exclude_suspected_label_errors.
            audit = components.audit(
                dataset=data.outputs["dataset"],
                features=features.outputs["features"],
                backbone=selection.outputs["Output"],
                **pick("seed", "image_size", "feature_cache", "audit_settings"),
            ).set_display_name("audit the labels")
            training = components.fine_tune(
                dataset=data.outputs["dataset"],
                probe=features.outputs["probe"],
                features=features.outputs["features"],
                selection=selection.outputs["selection"],
                audit=audit.outputs["audit"],
                **pick(
                    "seed",
                    "strategy",
                    "epochs",
                    "class_weighted",
                    "train_settings",
                    "checkpoint_uri",
                    "processes_per_node",
                    "exclude_suspected_label_errors",
                ),
            ).set_display_name("fine-tune")
            evaluation = components.evaluate(
                dataset=data.outputs["dataset"],
                model=training.outputs["model"],
                tracking_uri=tracking_uri,
                **pick("model_name", "gate_settings"),
            ).set_display_name("evaluate")
            registration = components.register(
                dataset=data.outputs["dataset"],
                model=training.outputs["model"],
                evaluation=evaluation.outputs["evaluation"],
                selection=selection.outputs["selection"],
                audit=audit.outputs["audit"],
                tracking_uri=tracking_uri,
                **{name: value for name, value in settings.items() if not name.startswith(("gpu_", "resources"))},
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                kfp_pipeline_name=PIPELINE_NAME,
            ).set_display_name("register")
            for task in (fingerprint, data, plan, baseline, selection, features, audit, training, evaluation,
                         registration):  # fmt: skip
                _credentials(task, credentials_secret)
            # The listing, the champion the gate compares with and the registration change between runs with the same
            # inputs: never cached. The rest is determined by its inputs (the data through its fingerprint).
            for task in (fingerprint, plan, evaluation, registration):  # plan: what the feature cache holds now
                task.set_caching_options(False)
            for task in (data, scored, baseline, selection, features, audit, training):
                task.set_caching_options(True)
            if retries:
                for task in (fingerprint, data, plan, baseline, audit, evaluation, registration):
                    _network_retries(task)
                for task in (features, training):
                    _gpu_retries(task)
            # Where each step runs: the two on the GPU image on the GPU node pool, the others sized for their work.
            _cpu_node(fingerprint, cpus=1, memory_gb=1)  # lists the source
            _cpu_node(data, cpus=2, memory_gb=4)  # decode-checks every image (threads)
            _cpu_node(plan, cpus=1, memory_gb=4)  # loads each candidate for its checksum, reads the pack indexes
            _cpu_node(baseline, cpus=4, memory_gb=8, shared_memory="2Gi")  # decodes every image at 32x32
            _cpu_node(selection, cpus=1, memory_gb=2)  # reads the scores
            _gpu_node_pool(features, **gpu_pool)
            _cpu_node(audit, cpus=2, memory_gb=4)  # a k-fold linear probe and a kNN on the cached features
            _gpu_node_pool(training, **gpu_pool)
            _cpu_node(evaluation, cpus=4, memory_gb=8, shared_memory="2Gi")  # runs the model and the champion
            _cpu_node(registration, cpus=2, memory_gb=4)  # exports and uploads the model

    transfer_learning_pipeline.__signature__ = signature  # what KFP reads as the pipeline's parameters
    return dsl.pipeline(
        name=PIPELINE_NAME,
        description="Turn a pretrained vision backbone into a registered image classifier: prepare data, select a "
        "backbone, extract features, fine-tune, evaluate, register in MLflow.",
        pipeline_config=dsl.PipelineConfig(ttl_seconds_after_finished=FINISHED_RUN_TTL_S),
    )(transfer_learning_pipeline)


transfer_learning_pipeline = build_pipeline()
