"""The TrainJob of multi-node fine-tuning: its spec, checked, and the manifest (Kubeflow Trainer v2).

The TrainJob (``trainer.kubeflow.org/v1alpha1``, Trainer v2.3) runs ``numNodes`` pods of the ``torch-distributed``
ClusterTrainingRuntime; the runtime injects the ``PET_*`` variables torchrun reads, so the command starts with
``torchrun``. Pod settings the TrainJob API has no field for (node selector, tolerations, affinity, pod labels) go
through one ``spec.runtimePatches`` entry for the replicated job ``node``. Trainer v2.0 and v2.1 have no such field
and their API server drops it without a word, so the launcher refuses a Trainer older than
:data:`MIN_TRAINER_VERSION`. The Trainer names the JobSet after the TrainJob, so its node pods carry
``jobset.sigs.k8s.io/jobset-name=<name>`` and ``jobset.sigs.k8s.io/replicatedjob-name=node``; node 0 is the one with
``batch.kubernetes.io/job-completion-index=0``.

The ``kubernetes`` client is imported inside the functions. The environment is read only by the edge helpers
(:func:`load_kubernetes_client`, :func:`service_account_namespace`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlops.errors import TlopsError

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
CRD_NAME = f"{PLURAL}.{GROUP}"
MIN_TRAINER_VERSION = "v2.2"  # the first Trainer whose TrainJob has spec.runtimePatches; older ones prune it silently
INSTALL_TRAINER = (
    "kubectl apply --server-side -k 'https://github.com/kubeflow/trainer.git/manifests/overlays/manager?ref=v2.3.0'"
)
DEFAULT_RUNTIME = "torch-distributed"
NODE_JOB = "node"  # the replicated job, and its container, that runs the trainer in the torch runtimes
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
COMPLETION_INDEX_KEY = "batch.kubernetes.io/job-completion-index"
PATCH_MANAGER = "tlops/launcher"
DIGEST_ANNOTATION = "tlops/spec-digest"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
RESERVED_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")
LOG_TAIL_LINES = 20
LOG_OVERLAP_S = 2  # extra seconds each log read looks back; lines already seen are dropped by their timestamp
MAX_TRANSIENT_ERRORS = 5  # consecutive 429/5xx/connection errors tolerated while waiting
_RFC1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
STARTED_PHASES = {"Running", "Succeeded", "Failed"}


@dataclass(frozen=True)
class TrainJobSpec:
    """What to run as a TrainJob, checked on construction.

    Attributes:
        name: TrainJob name (RFC 1035 label); node pods are named after it.
        namespace: Namespace of the TrainJob.
        image: Trainer container image.
        command: Entrypoint of every node (e.g. ``["torchrun", "-m", "tlops.train.ddp"]``).
        num_nodes: Training nodes (pods).
        processes_per_node: Processes per node; ``None`` leaves the runtime's default (``auto``: one per GPU).
        resources_per_node: Kubernetes ResourceRequirements of each node
            (``{"limits": {"nvidia.com/gpu": 1, "cpu": "8", "memory": "32Gi"}}``).
        env: Plain environment variables of the trainer container.
        env_refs: Further Kubernetes EnvVar objects, as dicts (``valueFrom`` secrets and the like).
        node_selector: Node labels the node pods must match.
        tolerations: Kubernetes tolerations of the node pods, as dicts.
        affinity: Kubernetes affinity of the node pods, as a dict.
        runtime: Name of the training runtime.
        runtime_kind: ``ClusterTrainingRuntime`` or the namespaced ``TrainingRuntime``.
        labels: Labels of the TrainJob and of its node pods.
    """

    name: str
    namespace: str
    image: str
    command: Sequence[str]
    num_nodes: int = 1
    processes_per_node: int | None = None
    resources_per_node: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    env_refs: Sequence[Mapping[str, Any]] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    affinity: Mapping[str, Any] = field(default_factory=dict)
    runtime: str = DEFAULT_RUNTIME
    runtime_kind: str = "ClusterTrainingRuntime"
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_workload(self)
        _check_identity(self)
        _check_placement(self)


def _check_identity(spec: TrainJobSpec) -> None:
    """Name, namespace, runtime and labels."""
    if len(spec.name) > 63 or not _RFC1035.fullmatch(spec.name):
        raise TlopsError(
            f"TrainJob name {spec.name!r} is not an RFC 1035 label: use <= 63 of a-z, 0-9, '-', a letter first"
        )
    hostname = f"{spec.name}-{NODE_JOB}-0-{spec.num_nodes - 1}"
    if len(hostname) > 63:
        raise TlopsError(
            f"TrainJob name {spec.name!r} is too long: node pod hostnames ({hostname}) must fit in 63 chars"
        )
    if len(spec.namespace) > 63 or not _DNS1123.fullmatch(spec.namespace):
        raise TlopsError(f"namespace {spec.namespace!r} is not a DNS-1123 label: give the namespace the job runs in")
    if not spec.runtime:
        raise TlopsError(f"the training runtime is empty: name a ClusterTrainingRuntime such as {DEFAULT_RUNTIME!r}")
    if spec.runtime_kind not in ("ClusterTrainingRuntime", "TrainingRuntime"):
        raise TlopsError(f"runtime_kind {spec.runtime_kind!r}: use ClusterTrainingRuntime or TrainingRuntime")
    for key, value in spec.labels.items():
        if not _LABEL_KEY.fullmatch(str(key)) or not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
            raise TlopsError(f"label {key}={value!r} is not a Kubernetes label: use <= 63 alphanumerics, '-', '_', '.'")
        if len(value) > 63:
            raise TlopsError(f"label {key} is longer than 63 characters: shorten its value")


def _check_workload(spec: TrainJobSpec) -> None:
    """Image, command, sizes, resources and environment."""
    if not spec.image or not isinstance(spec.image, str):
        raise TlopsError("the TrainJob image is empty: give the trainer container image")
    if isinstance(spec.command, str) or not spec.command or not all(isinstance(a, str) for a in spec.command):
        raise TlopsError(
            f"the command must be a non-empty list of strings, got {spec.command!r}: e.g. ['torchrun', ...]"
        )
    if not isinstance(spec.num_nodes, int) or isinstance(spec.num_nodes, bool) or spec.num_nodes < 1:
        raise TlopsError(f"num_nodes is {spec.num_nodes!r}: use a whole number >= 1")
    per_node = spec.processes_per_node
    if per_node is not None and (not isinstance(per_node, int) or isinstance(per_node, bool) or per_node < 1):
        raise TlopsError(f"processes_per_node is {per_node!r}: use a whole number >= 1, or None for one per GPU")
    unknown = set(spec.resources_per_node) - {"limits", "requests", "claims"}
    if unknown:
        raise TlopsError(f"resources_per_node has {sorted(unknown)}: use only 'limits' and 'requests' (and 'claims')")
    for kind in ("limits", "requests"):
        quantities = spec.resources_per_node.get(kind, {})
        if not isinstance(quantities, Mapping) or not all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in quantities.values()
        ):
            raise TlopsError(f"resources_per_node[{kind!r}] must map resource names to quantities, e.g. {{'cpu': '8'}}")
    names = [str(n) for n in spec.env] + [str(e.get("name", "")) for e in spec.env_refs]
    if any(not n or "=" in n for n in names) or not all(isinstance(v, str) for v in spec.env.values()):
        raise TlopsError("environment variables need non-empty names without '=' and string values: fix env")
    reserved = sorted(set(names) & set(RESERVED_ENV))
    if reserved:
        raise TlopsError(f"{reserved} are set by the Trainer runtime: drop them and use num_nodes/processes_per_node")


def _check_placement(spec: TrainJobSpec) -> None:
    """Node selector, tolerations and affinity."""
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in spec.node_selector.items()):
        raise TlopsError(f"node_selector must map label names to strings, got {dict(spec.node_selector)!r}")
    for toleration in spec.tolerations:
        if not isinstance(toleration, Mapping) or set(toleration) - _TOLERATION_KEYS:
            raise TlopsError(
                f"toleration {toleration!r} is not a Kubernetes toleration: use keys {sorted(_TOLERATION_KEYS)}"
            )
    if not isinstance(spec.affinity, Mapping):
        raise TlopsError(f"affinity must be a Kubernetes Affinity dict, got {spec.affinity!r}")


def trainjob_manifest(spec: TrainJobSpec) -> dict[str, Any]:
    """The TrainJob object to create for ``spec``.

    Args:
        spec: The checked job description.

    Returns:
        The TrainJob body. ``metadata.annotations`` carries a digest of ``spec`` (:data:`DIGEST_ANNOTATION`), by
        which :func:`launch_and_wait` recognises the job of a previous attempt.
    """
    trainer: dict[str, Any] = {"image": spec.image, "command": list(spec.command)}
    env = [{"name": name, "value": value} for name, value in spec.env.items()] + [dict(e) for e in spec.env_refs]
    if env:
        trainer["env"] = env
    trainer["numNodes"] = spec.num_nodes
    if spec.processes_per_node is not None:
        trainer["numProcPerNode"] = spec.processes_per_node
    resources = {
        kind: {name: str(value) for name, value in values.items()} if kind != "claims" else list(values)
        for kind, values in spec.resources_per_node.items()
        if values
    }
    if resources:
        trainer["resourcesPerNode"] = resources
    body: dict[str, Any] = {
        "runtimeRef": {"name": spec.runtime, "apiGroup": GROUP, "kind": spec.runtime_kind},
        "trainer": trainer,
    }
    patch = _node_patch(spec)
    if patch:
        body["runtimePatches"] = [patch]
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": {MANAGED_BY_LABEL: "tlops", **spec.labels},
            "annotations": {DIGEST_ANNOTATION: digest},
        },
        "spec": body,
    }


def _node_patch(spec: TrainJobSpec) -> dict[str, Any] | None:
    """The runtimePatches entry that puts the node pods' labels and scheduling settings on the ``node`` job."""
    pod_spec: dict[str, Any] = {}
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.affinity:
        pod_spec["affinity"] = dict(spec.affinity)
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.tolerations]
    pod_template: dict[str, Any] = {}
    if spec.labels:
        pod_template["metadata"] = {"labels": dict(spec.labels)}
    if pod_spec:
        pod_template["spec"] = pod_spec
    if not pod_template:
        return None
    job = {"name": NODE_JOB, "template": {"spec": {"template": pod_template}}}
    return {"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job]}}}}


def trainjob_name(run_id: str, task_id: str, prefix: str = "tlops-ft") -> str:
    """A TrainJob name that is the same for every attempt of one pipeline task, and differs between tasks.

    Args:
        run_id: The pipeline run's id (``dsl.PIPELINE_JOB_ID_PLACEHOLDER``).
        task_id: The task's id (``dsl.PIPELINE_TASK_ID_PLACEHOLDER``).
        prefix: Start of the name (a letter first).

    Returns:
        ``<prefix>-<12 hex digits of a digest of both ids>``.
    """
    if not run_id or not task_id:
        raise TlopsError("the TrainJob name needs the run id and the task id: pass the KFP run and task placeholders")
    return f"{prefix}-{hashlib.sha256(f'{run_id}/{task_id}'.encode()).hexdigest()[:12]}"


def split_env(env: Sequence[Mapping[str, Any]] | None) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Split Kubernetes EnvVar dicts into plain ``name: value`` pairs and the rest (``valueFrom``).

    Args:
        env: EnvVar dicts, e.g. a KFP task config's ``env``; ``None`` for none.

    Returns:
        ``(env, env_refs)`` for :class:`TrainJobSpec`.
    """
    plain: dict[str, str] = {}
    refs: list[dict[str, Any]] = []
    for variable in env or ():
        if "valueFrom" in variable:
            refs.append(dict(variable))
        else:
            plain[str(variable["name"])] = str(variable.get("value", ""))
    return plain, refs


def service_account_namespace(service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> str:
    """The namespace of the pod this runs in, from its service account files.

    Raises:
        TlopsError: Not in a pod (no namespace file).
    """
    try:
        return (service_account_dir / "namespace").read_text().strip()
    except OSError as exc:
        raise TlopsError(
            f"cannot tell the namespace ({service_account_dir / 'namespace'}: {exc.strerror}): pass the namespace"
        ) from exc


def load_kubernetes_client(environ: Mapping[str, str], service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> Any:
    """A ``kubernetes.client.ApiClient``: the pod's service account in a cluster, else the kubeconfig.

    Args:
        environ: The environment: ``KUBERNETES_SERVICE_HOST`` (set in every pod) selects the in-cluster
            configuration; otherwise ``KUBECONFIG`` (default ``~/.kube/config``) is read.
        service_account_dir: Where the pod's token and CA certificate are mounted.

    Raises:
        TlopsError: Neither configuration can be loaded.
    """
    from kubernetes import client
    from kubernetes.config import ConfigException
    from kubernetes.config.incluster_config import InClusterConfigLoader
    from kubernetes.config.kube_config import load_kube_config

    configuration = client.Configuration()
    try:
        if environ.get("KUBERNETES_SERVICE_HOST"):
            loader = InClusterConfigLoader(
                str(service_account_dir / "token"), str(service_account_dir / "ca.crt"), environ=environ
            )
            loader.load_and_set(configuration)
        else:
            config_file = environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
            load_kube_config(config_file=config_file, client_configuration=configuration, persist_config=False)
    except (ConfigException, OSError) as exc:
        raise TlopsError(f"no Kubernetes credentials ({exc}): run in a pod, or set KUBECONFIG") from exc
    return client.ApiClient(configuration)
