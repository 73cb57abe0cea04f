"""The transfer-learning pipeline: six steps wired with typed artifacts, GPU settings for Kubernetes."""

from kfp import dsl, kubernetes
from kfp.dsl import Artifact

from tlops.pipeline import components

PIPELINE_NAME = "tlops-transfer-learning"
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


def _gpu_node_pool(task: dsl.PipelineTask, gpus: int = 1) -> dsl.PipelineTask:
    """Ask for GPUs, tolerate the GPU taint, and give PyTorch's data loaders a large /dev/shm."""
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
    task.set_cpu_request("4").set_memory_request("16G").set_memory_limit("32G")
    kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
    return task


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Turn a pretrained vision backbone into a registered image classifier: prepare data, select a "
    "backbone, extract features, fine-tune, evaluate, register in MLflow.",
)
def transfer_learning_pipeline(
    data_uri: str,
    tracking_uri: str,
    backbones: list = ["efficientnet_lite0"],  # noqa: B006 - KFP pipeline parameter default
    strategy: str = "auto",
    epochs: int = 3,
    batch_size: int = 32,
    learning_rate: float = 1e-4,
    image_size: int = 0,
    seed: int = 0,
    class_weighted: bool = False,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    experiment: str = "tlops",
    model_name: str = "tlops-classifier",
    credentials_secret: str = "tlops-credentials",
) -> Artifact:
    """Run the six steps; the output is the registration summary (``run_summary.json`` content).

    ``image_size`` 0 means each backbone's own input size (kfp.local cannot take a ``None`` default).
    """
    data = components.prepare_data(
        data_uri=data_uri, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
    ).set_display_name("prepare data")
    selection = components.select_backbone(
        dataset=data.outputs["dataset"], candidates=backbones, image_size=image_size, seed=seed
    ).set_display_name("select backbone")
    features = components.extract_features(
        dataset=data.outputs["dataset"],
        backbone=selection.outputs["Output"],
        image_size=image_size,
        seed=seed,
        class_weighted=class_weighted,
    ).set_display_name("extract features")
    training = components.fine_tune(
        dataset=data.outputs["dataset"],
        probe=features.outputs["probe"],
        strategy=strategy,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        class_weighted=class_weighted,
    ).set_display_name("fine-tune")
    _gpu_node_pool(training)
    evaluation = components.evaluate(
        dataset=data.outputs["dataset"],
        model=training.outputs["model"],
        tracking_uri=tracking_uri,
        model_name=model_name,
    ).set_display_name("evaluate")
    registration = (
        components.register(
            dataset=data.outputs["dataset"],
            model=training.outputs["model"],
            evaluation=evaluation.outputs["evaluation"],
            selection=selection.outputs["selection"],
            tracking_uri=tracking_uri,
            experiment=experiment,
            model_name=model_name,
        )
        .set_display_name("register")
        .set_caching_options(False)
    )
    for task in (data, selection, features, training, evaluation, registration):
        _credentials(task, credentials_secret)
    return registration.outputs["registration"]
