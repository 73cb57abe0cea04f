"""The KFP component that runs multi-node fine-tuning as a Kubeflow Trainer v2 TrainJob and waits for it.

No ``from __future__ import annotations`` here: KFP reads the annotations at decoration time. The body is shipped
into the container as source, so its imports sit inside it.

The component's pod only launches and watches: the task's resources, node selector, tolerations and affinity are
passed through to the TrainJob's nodes (``task_config_passthroughs`` without ``apply_to_task``), so the launcher
pod itself stays small on the CPU image; the task's environment goes to both. Wire it as::

    launch_trainjob(
        image=GPU_IMAGE, num_nodes=2,
        command=["torchrun", "-m", "tlops.cli", "fine-tune", "--dataset", "s3://b/run/data", "--probe",
                 "s3://b/run/probe", "--features", "s3://b/run/features", "--output", "s3://b/run/model"],
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, task_id=dsl.PIPELINE_TASK_ID_PLACEHOLDER,
    ).set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)

torchrun reads the node count, rank and rendezvous from the ``PET_*`` variables the runtime sets; the nodes share no
disk, so every folder is an ``s3://`` prefix (``tlops fine-tune`` downloads the inputs, rank 0 uploads the model,
and the per-epoch checkpoint goes to ``<output>/checkpoints`` on S3, so a restarted job resumes).

The run and task ids name the TrainJob, so a retry of the task finds and resumes the job of its previous attempt.
The pipeline's service account needs create/get/delete on ``trainjobs.trainer.kubeflow.org``, list on ``pods``
and get on ``pods/log`` in the namespace, and, for the check of the Trainer version (v2.2 or later), get on
``customresourcedefinitions.apiextensions.k8s.io`` (without it the check is skipped with a warning).
"""

from kfp import dsl

from tlops.pipeline.image import CPU_IMAGE

PASSTHROUGHS = [
    dsl.TaskConfigField.RESOURCES,
    dsl.TaskConfigField.KUBERNETES_NODE_SELECTOR,
    dsl.TaskConfigField.KUBERNETES_TOLERATIONS,
    dsl.TaskConfigField.KUBERNETES_AFFINITY,
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=True),
]


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False, task_config_passthroughs=PASSTHROUGHS)
def launch_trainjob(
    image: str,
    command: list,
    num_nodes: int,
    run_id: str,
    task_id: str,
    task_config: dsl.TaskConfig,
    processes_per_node: int = 0,
    namespace: str = "",
    runtime: str = "torch-distributed",
    timeout_minutes: float = 1440.0,
    start_timeout_minutes: float = 30.0,
    poll_seconds: float = 15.0,
) -> str:
    """Run ``command`` on ``num_nodes`` nodes as a TrainJob with the task's resources; return the TrainJob's name.

    ``processes_per_node`` 0 is the runtime's default (one per GPU); ``namespace`` "" is the pod's own. Needs
    Kubeflow Trainer v2.2 or later: the node selector, tolerations, affinity and pod labels travel in the TrainJob's
    ``runtimePatches``, which v2.0 and v2.1 drop without a word, so the component refuses an older TrainJob CRD.
    """
    import os

    from tlops.io.logs import configure_logging
    from tlops.pipeline.trainjob import (
        TrainJobSpec,
        launch_and_wait,
        load_kubernetes_client,
        service_account_namespace,
        split_env,
        trainjob_name,
    )

    configure_logging()
    env, env_refs = split_env(task_config.env)
    spec = TrainJobSpec(
        name=trainjob_name(run_id, task_id),
        namespace=namespace or service_account_namespace(),
        image=image,
        command=[str(part) for part in command],
        num_nodes=num_nodes,
        processes_per_node=processes_per_node or None,
        resources_per_node=task_config.resources or {},
        env=env,
        env_refs=env_refs,
        node_selector=task_config.node_selector or {},
        tolerations=task_config.tolerations or [],
        affinity=task_config.affinity or {},
        runtime=runtime,
    )
    with load_kubernetes_client(os.environ) as api_client:
        launch_and_wait(
            spec,
            api_client,
            timeout_s=timeout_minutes * 60,
            poll_s=poll_seconds,
            start_timeout_s=start_timeout_minutes * 60,
        )
    return spec.name
