"""Multi-node fine-tuning as a Kubeflow Trainer v2 TrainJob.

The manifest is built in :mod:`.manifest`; :mod:`.wait` launches it and waits for it.
"""

from tlops.train.trainjob.manifest import (
    TrainJobSpec,
    load_kubernetes_client,
    service_account_namespace,
    split_env,
    trainjob_manifest,
    trainjob_name,
)
from tlops.train.trainjob.wait import launch_and_wait

__all__ = [
    "TrainJobSpec",
    "launch_and_wait",
    "load_kubernetes_client",
    "service_account_namespace",
    "split_env",
    "trainjob_manifest",
    "trainjob_name",
]
