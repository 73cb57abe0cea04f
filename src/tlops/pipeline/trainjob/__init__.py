"""Multi-node fine-tuning as a Kubeflow Trainer v2 TrainJob (Trainer v2.2 or later), for the pipeline's launcher.

The manifest is built in :mod:`.manifest`; :mod:`.wait` launches it and waits for it.

Why not the Kubeflow SDK's ``kubeflow.trainer.TrainerClient`` (``kubeflow`` 0.5 on PyPI): it can create a TrainJob
from an image with a command (``CustomTrainerContainer`` and the ``TrainerCommand`` option) and placement
(``RuntimePatch``), wait for a status and read node 0's log, but it does not fit the launcher. It reads the
training runtime before it creates the job (the pipeline's service account would need get on the cluster-scoped
ClusterTrainingRuntimes), sets the same quantities as requests and limits, has no processes per node, wraps every
API refusal in a bare ``RuntimeError("Failed to create TrainJob ...")`` that drops the API's reason, has no start
timeout or diagnosis of pending pods, cannot take over the job of a retried task, and follows the log with a
blocking watch instead of between looks at the job. It would also add ``kubeflow``, ``kubeflow-trainer-api`` and
``kubeflow-katib-api`` to the CPU image for what is here a few hundred lines over the ``kubernetes`` client.
"""

from tlops.pipeline.trainjob.manifest import (
    MIN_TRAINER_VERSION,
    TrainJobSpec,
    load_kubernetes_client,
    service_account_namespace,
    split_env,
    trainjob_manifest,
    trainjob_name,
)
from tlops.pipeline.trainjob.wait import launch_and_wait

__all__ = [
    "MIN_TRAINER_VERSION",
    "TrainJobSpec",
    "launch_and_wait",
    "load_kubernetes_client",
    "service_account_namespace",
    "split_env",
    "trainjob_manifest",
    "trainjob_name",
]
