"""Multi-node fine-tuning as a Kubeflow Trainer v2 TrainJob: the manifest, and a launcher that waits for it.

The TrainJob (``trainer.kubeflow.org/v1alpha1``, Trainer v2.3) runs ``numNodes`` pods of the ``torch-distributed``
ClusterTrainingRuntime; the runtime injects the ``PET_*`` variables torchrun reads, so the command starts with
``torchrun``. Pod settings the TrainJob API has no field for (node selector, tolerations, affinity, pod labels) go
through one ``spec.runtimePatches`` entry for the replicated job ``node``. The Trainer names the JobSet after the
TrainJob, so its node pods carry ``jobset.sigs.k8s.io/jobset-name=<name>`` and
``jobset.sigs.k8s.io/replicatedjob-name=node``; node 0 is the one with ``batch.kubernetes.io/job-completion-index=0``.

The ``kubernetes`` client is imported inside the functions, and :func:`launch_and_wait` takes an ``ApiClient``, so
tests point it at a fake API server. The environment is read only by the edge helpers
(:func:`load_kubernetes_client`, :func:`service_account_namespace`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tlops.errors import TlopsError

logger = logging.getLogger(__name__)

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
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
_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_STARTED_PHASES = {"Running", "Succeeded", "Failed"}


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


def launch_and_wait(
    spec: TrainJobSpec,
    api_client: Any,
    *,
    timeout_s: float,
    poll_s: float = 15.0,
    start_timeout_s: float = 1800.0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Create the TrainJob of ``spec`` and wait until it completes, streaming node 0's log.

    A TrainJob of the same name that a previous attempt of the same task created (KFP retries the task, and
    :func:`trainjob_name` gives every attempt the same name) is taken over: its spec digest must match; if it is
    running or complete, this waits on it; if it failed, it is deleted (with its pods) and created again. Every
    timeout deletes the job, so no node pods outlive the launcher's wait.

    Args:
        spec: The job to run.
        api_client: A ``kubernetes.client.ApiClient`` (see :func:`load_kubernetes_client`).
        timeout_s: Longest wait from creation (or take-over) to completion.
        poll_s: Seconds between two looks at the job, its pods and node 0's log.
        start_timeout_s: Longest wait for a node pod to run (image pull, scheduling, quota, Kueue admission).
        log: Receives node 0's log lines as they appear (default: this module's logger at INFO).

    Returns:
        The completed TrainJob object.

    Raises:
        TlopsError: The API refused (RBAC, CRD not installed, webhook), the job failed (with its condition and
            the last lines of node 0's log), never started, or ran past ``timeout_s``.
    """
    from kubernetes import client

    if min(timeout_s, poll_s, start_timeout_s) <= 0:
        raise TlopsError("timeout_s, poll_s and start_timeout_s must be positive: fix the launcher's settings")
    jobs = _Jobs(client.CustomObjectsApi(api_client), spec, api_client.configuration.host)
    core = client.CoreV1Api(api_client)
    try:
        jobs.create_or_take_over(start_timeout_s)
    except _TransientError as exc:
        raise TlopsError(f"{exc}: check that the API server is up and reachable, then retry") from None
    node_log = _NodeLog(core, spec.namespace, log or (lambda line: logger.info("%s", line)))
    started_at, started, failures = time.monotonic(), False, 0
    while True:
        try:
            job = jobs.get()
            pods = _node_pods(core, spec, jobs.host)
            failures = 0
        except _TransientError as exc:
            failures += 1
            if failures > MAX_TRANSIENT_ERRORS:
                raise TlopsError(f"the Kubernetes API kept failing while waiting for {jobs.ref}: {exc}") from None
            logger.warning(
                "Kubernetes API error while waiting for %s (%d/%d): %s", jobs.ref, failures, MAX_TRANSIENT_ERRORS, exc
            )
            time.sleep(poll_s)
            continue
        node0 = _node_zero(pods)
        if not started and any(_phase(p) in _STARTED_PHASES for p in pods):
            started = True
            logger.info("TrainJob %s is running (%d node pods)", jobs.ref, len(pods))
        if node0 is not None and _phase(node0) in _STARTED_PHASES:
            node_log.follow(node0["metadata"]["name"])
        outcome = _terminal(job)
        if outcome is not None and outcome.get("type") == "Complete":
            logger.info("TrainJob %s completed: %s", jobs.ref, outcome.get("message") or outcome.get("reason", ""))
            return job
        if outcome is not None:
            raise TlopsError(_failure_message(jobs.ref, outcome, node_log))
        waited = time.monotonic() - started_at
        if not started and waited > start_timeout_s:
            deleted = jobs.delete()
            raise TlopsError(_not_started_message(spec, jobs.ref, job, pods, start_timeout_s, deleted))
        if waited > timeout_s:
            raise TlopsError(
                f"TrainJob {jobs.ref} ran past the {timeout_s:.0f} s timeout and {jobs.delete()}: "
                "raise the timeout or shorten the training"
            )
        time.sleep(poll_s)


class _TransientError(Exception):
    """A 429, 5xx or connection error: worth another look at the next poll."""


class _Jobs:
    """The TrainJob of one spec, through the custom objects API, with the API's errors made one-line TlopsErrors."""

    def __init__(self, api: Any, spec: TrainJobSpec, host: str) -> None:
        self.api, self.spec, self.host = api, spec, host
        self.manifest = trainjob_manifest(spec)
        self.ref = f"{spec.namespace}/{spec.name}"
        self._where = {"group": GROUP, "version": VERSION, "namespace": spec.namespace, "plural": PLURAL}

    def create_or_take_over(self, gone_timeout_s: float) -> None:
        """Create the job; take over a previous attempt's job of the same name (see :func:`launch_and_wait`)."""
        existing = self._create()
        if existing is None:
            logger.info("Created TrainJob %s (%d nodes, runtime %s)", self.ref, self.spec.num_nodes, self.spec.runtime)
            return
        theirs = (existing.get("metadata", {}).get("annotations") or {}).get(DIGEST_ANNOTATION)
        ours = self.manifest["metadata"]["annotations"][DIGEST_ANNOTATION]
        if theirs != ours:
            raise TlopsError(
                f"a different TrainJob {self.ref} already exists (spec digest {theirs}, ours {ours}): "
                f"delete it (kubectl delete trainjob -n {self.spec.namespace} {self.spec.name}) or pick another name"
            )
        outcome = _terminal(existing)
        if outcome is None or outcome.get("type") == "Complete":
            logger.info("Taking over TrainJob %s from a previous attempt of this task", self.ref)
            return
        logger.info(
            "The previous attempt's TrainJob %s failed (%s): deleting it and starting again",
            self.ref,
            outcome.get("reason"),
        )
        self.delete()
        self._wait_gone(gone_timeout_s)
        if self._create() is not None:
            raise TlopsError(f"TrainJob {self.ref} was created again by someone else: let one launcher run it")

    def _create(self) -> dict[str, Any] | None:
        """POST the manifest; the existing object instead on a 409 (already exists)."""
        try:
            self._call("create", self.api.create_namespaced_custom_object, body=self.manifest)
            return None
        except _Conflict:
            return self.get()

    def get(self) -> dict[str, Any]:
        """The job as the API has it now."""
        return self._call("get", self.api.get_namespaced_custom_object, name=self.spec.name)

    def delete(self) -> str:
        """Delete the job and, in the foreground, its JobSet and pods; say how that went, for an error message."""
        try:
            self._call(
                "delete", self.api.delete_namespaced_custom_object, name=self.spec.name, propagation_policy="Foreground"
            )
        except _Gone:
            return "is gone"
        except (TlopsError, _TransientError) as exc:
            logger.warning("Could not delete TrainJob %s: %s", self.ref, exc)
            return f"could not be deleted ({exc}; kubectl delete trainjob -n {self.spec.namespace} {self.spec.name})"
        return "was deleted"

    def _wait_gone(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.get()
            except _Gone:
                return
            time.sleep(min(1.0, timeout_s / 10))
        raise TlopsError(
            f"the previous TrainJob {self.ref} is still being deleted after {timeout_s:.0f} s: retry later"
        )

    def _call(self, verb: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(**self._where, **kwargs)
        except ApiException as exc:
            raise _api_error(exc, verb, f"{PLURAL}.{GROUP}", self.spec, self.ref) from None
        except HTTPError as exc:
            raise _TransientError(f"cannot reach the Kubernetes API at {self.host}: {exc}") from None


class _Conflict(TlopsError):
    """409: the object already exists."""


class _Gone(TlopsError):
    """404 on an object whose type exists."""


def _api_error(exc: Any, verb: str, resource: str, spec: TrainJobSpec, ref: str) -> Exception:
    """The exception for an ``ApiException``: one line that names the cause and the fix."""
    status, (message, kind) = exc.status, _status_of(exc)
    if status == 409 and verb == "create":
        return _Conflict(message)
    if status == 403 and "admission webhook" in message:
        return TlopsError(f"the Trainer rejected TrainJob {ref}: {message}: is runtime {spec.runtime!r} installed?")
    if status == 403:
        return TlopsError(
            f"the pipeline's service account may not {verb} {resource} in namespace {spec.namespace}: grant it "
            f"{verb} on {resource} with a Role and RoleBinding ({message})"
        )
    if status == 401:
        return TlopsError(f"the Kubernetes API rejected the credentials ({message}): check the token or kubeconfig")
    if status == 404 and kind == "namespaces":
        return TlopsError(f"namespace {spec.namespace} does not exist: create it or pass another namespace")
    if status == 404 and verb == "create":
        return TlopsError(
            f"the TrainJob CRD is not installed ({resource}/{VERSION}: {message}): install Kubeflow Trainer v2 "
            "(kubectl apply --server-side -k 'https://github.com/kubeflow/trainer.git/manifests/overlays/manager"
            "?ref=v2.3.0') and its runtimes"
        )
    if status == 404:
        return _Gone(f"{resource} of TrainJob {ref} not found ({message}): was the job or the Trainer CRD deleted?")
    if status in (400, 422):
        return TlopsError(f"the API rejected TrainJob {ref} ({status}): {message}: fix the job's settings")
    if status in (0, 429) or status >= 500:
        return _TransientError(f"{status} from the Kubernetes API on {verb} {resource}: {message}")
    return TlopsError(f"{status} from the Kubernetes API on {verb} {resource} in namespace {spec.namespace}: {message}")


def _status_of(exc: Any) -> tuple[str, str]:
    """``(message, details.kind)`` of the Status the API answered with (the raw body if not one), on one line."""
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or exc.reason or "")
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return " ".join(body.split()), ""
    kind = (parsed.get("details") or {}).get("kind", "")
    return " ".join(str(parsed.get("message", body)).split()), str(kind)


def _node_pods(core: Any, spec: TrainJobSpec, host: str) -> list[dict[str, Any]]:
    """The node pods of the job, as dicts (name, labels, annotations, phase, conditions, container states)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    selector = f"{JOBSET_NAME_LABEL}={spec.name},{REPLICATED_JOB_LABEL}={NODE_JOB}"
    try:
        listed = core.list_namespaced_pod(spec.namespace, label_selector=selector)
    except ApiException as exc:
        raise _api_error(exc, "list", "pods", spec, f"{spec.namespace}/{spec.name}") from None
    except HTTPError as exc:
        raise _TransientError(f"cannot reach the Kubernetes API at {host}: {exc}") from None
    return [core.api_client.sanitize_for_serialization(pod) for pod in listed.items]


def _phase(pod: Mapping[str, Any]) -> str:
    return str(pod.get("status", {}).get("phase", ""))


def _node_zero(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest pod with completion index 0 (a restarted JobSet makes new ones)."""

    def index(pod: Mapping[str, Any]) -> str | None:
        metadata = pod.get("metadata", {})
        return (metadata.get("labels") or {}).get(COMPLETION_INDEX_KEY) or (metadata.get("annotations") or {}).get(
            COMPLETION_INDEX_KEY
        )

    zeros = [p for p in pods if index(p) == "0"]
    return max(zeros, key=lambda p: str(p["metadata"].get("creationTimestamp", "")), default=None)


def _terminal(job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The job's ``Complete`` or ``Failed`` condition when it holds (status ``True``), else ``None``."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition
    return None


def _last_condition(job: Mapping[str, Any]) -> str:
    conditions = (job.get("status") or {}).get("conditions") or []
    if not conditions:
        return "no conditions yet"
    last = conditions[-1]
    return f"{last.get('type')}={last.get('status')} {last.get('reason', '')}: {last.get('message', '')}".strip()


def _failure_message(ref: str, condition: Mapping[str, Any], node_log: _NodeLog) -> str:
    tail = " | ".join(line[:300] for line in node_log.tail) or "(no log lines from node 0)"
    return (
        f"TrainJob {ref} failed: {condition.get('reason', '')}: {condition.get('message', '')}; "
        f"fix the training from node 0's last {len(node_log.tail)} log lines: {tail}"
    )


def _not_started_message(
    spec: TrainJobSpec,
    ref: str,
    job: Mapping[str, Any],
    pods: list[dict[str, Any]],
    start_timeout_s: float,
    deleted: str,
) -> str:
    phases = ", ".join(sorted(f"{p['metadata']['name']} {_phase(p) or 'Unknown'}" for p in pods)) or "no node pods"
    problems = "; ".join(filter(None, (_pod_problem(p) for p in pods)))
    return (
        f"TrainJob {ref} did not start within {start_timeout_s:.0f} s and {deleted} ({phases}"
        f"{'; ' + problems if problems else ''}; last condition: {_last_condition(job)}): check that the "
        f"{spec.runtime_kind} {spec.runtime!r} is installed, that the namespace quota fits {spec.num_nodes} x "
        f"{dict(spec.resources_per_node)}, and that nodes match node selector {dict(spec.node_selector)} and the "
        "tolerations"
    )


def _pod_problem(pod: Mapping[str, Any]) -> str:
    """Why a pod is not running: its unschedulable condition or a waiting container's reason."""
    status = pod.get("status", {})
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason', 'Unschedulable')}: {condition.get('message', '')}"
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
            return f"{waiting.get('reason')}: {waiting.get('message', '')}"
    return ""


class _NodeLog:
    """Node 0's log, read with timestamps every poll, each line passed on once; keeps the last lines for errors.

    The first read of a pod takes its whole log; each later one asks for the seconds since the previous read
    (plus :data:`LOG_OVERLAP_S`) and drops the lines whose timestamp it has passed on already. A new node-0 pod
    (the JobSet restarted) is read from its start.
    """

    def __init__(self, core: Any, namespace: str, emit: Callable[[str], None]) -> None:
        self.core, self.namespace, self.emit = core, namespace, emit
        self.tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self.pod: str | None = None
        self._read_at: float | None = None
        self._last: tuple[int, int] | None = None
        self._seen_at_last: set[str] = set()
        self._warned = False

    def follow(self, pod: str) -> None:
        """Pass on the lines of ``pod`` written since the last call."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        if pod != self.pod:
            logger.info("Following the log of node 0 (pod %s)", pod)
            self.pod, self._read_at, self._last, self._seen_at_last = pod, None, None, set()
        options: dict[str, Any] = {"container": NODE_JOB, "timestamps": True, "_preload_content": False}
        if self._read_at is not None:
            options["since_seconds"] = math.ceil(time.monotonic() - self._read_at) + LOG_OVERLAP_S
        read_at = time.monotonic()
        try:
            response = self.core.read_namespaced_pod_log(pod, self.namespace, **options)
            text = response.data.decode("utf-8", errors="replace")
        except (ApiException, HTTPError) as exc:
            if not self._warned:
                self._warned = True
                hint = ": grant the service account get on pods/log" if getattr(exc, "status", None) == 403 else ""
                logger.warning("Cannot read the log of pod %s yet (%s)%s", pod, getattr(exc, "status", exc), hint)
            return
        self._read_at = read_at
        for raw in text.splitlines():
            self._take(raw)

    def _take(self, raw: str) -> None:
        stamp, _, line = raw.partition(" ")
        key = _timestamp_key(stamp)
        if key is None:
            line = raw
        elif self._last is not None and (key < self._last or (key == self._last and raw in self._seen_at_last)):
            return
        elif key != self._last:
            self._last, self._seen_at_last = key, set()
        if key is not None:
            self._seen_at_last.add(raw)
        self.tail.append(line)
        self.emit(line)


def _timestamp_key(token: str) -> tuple[int, int] | None:
    """``(UTC seconds, nanoseconds)`` of an RFC 3339 timestamp, as the kubelet writes them; ``None`` if not one."""
    match = _TIMESTAMP.fullmatch(token)
    if match is None:
        return None
    offset = "+00:00" if match[3] == "Z" else match[3]
    return int(datetime.fromisoformat(match[1] + offset).timestamp()), int((match[2] or "").ljust(9, "0"))
