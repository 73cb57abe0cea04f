"""Launching a TrainJob and waiting for it: create (or take over a retry's), follow node 0's log, fail with the job.

The ``kubernetes`` client comes in as an ``ApiClient``, so tests point it at a fake API server.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from tlops.errors import TlopsError
from tlops.pipeline.trainjob.manifest import (
    COMPLETION_INDEX_KEY,
    CRD_NAME,
    DIGEST_ANNOTATION,
    GROUP,
    INSTALL_TRAINER,
    JOBSET_NAME_LABEL,
    LOG_OVERLAP_S,
    LOG_TAIL_LINES,
    MAX_TRANSIENT_ERRORS,
    MIN_TRAINER_VERSION,
    NODE_JOB,
    PLURAL,
    REPLICATED_JOB_LABEL,
    STARTED_PHASES,
    TIMESTAMP,
    VERSION,
    TrainJobSpec,
    trainjob_manifest,
)

logger = logging.getLogger(__name__)


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
        TlopsError: The API refused (RBAC, CRD not installed or older than Trainer v2.2, webhook), the job failed
            (with its condition and the last lines of node 0's log), never started, or ran past ``timeout_s``.
    """
    from kubernetes import client

    if min(timeout_s, poll_s, start_timeout_s) <= 0:
        raise TlopsError("timeout_s, poll_s and start_timeout_s must be positive: fix the launcher's settings")
    jobs = _Jobs(client.CustomObjectsApi(api_client), spec, api_client.configuration.host)
    core = client.CoreV1Api(api_client)
    try:
        check_trainer_version(api_client, spec)
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
        if not started and any(_phase(p) in STARTED_PHASES for p in pods):
            started = True
            logger.info("TrainJob %s is running (%d node pods)", jobs.ref, len(pods))
        if node0 is not None and _phase(node0) in STARTED_PHASES:
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


def check_trainer_version(api_client: Any, spec: TrainJobSpec) -> None:
    """Refuse a Kubeflow Trainer older than v2.2: its TrainJob CRD has no ``spec.runtimePatches``.

    The API server prunes fields a CRD's schema does not name, so an older Trainer would run the job without its
    node selector, tolerations, affinity and pod labels. A service account that may not read CRDs (they are
    cluster-scoped) skips the check with a warning.

    Args:
        api_client: A ``kubernetes.client.ApiClient``.
        spec: The job (for the error messages).

    Raises:
        TlopsError: The TrainJob CRD is not installed, or lacks ``spec.runtimePatches`` or version ``v1alpha1``.
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = client.ApiextensionsV1Api(api_client)
    try:
        crd = json.loads(api.read_custom_resource_definition(CRD_NAME, _preload_content=False).data)
    except ApiException as exc:
        if exc.status in (401, 403):
            logger.warning(
                "Cannot read the TrainJob CRD to check the Trainer version (%s); it must be %s or later",
                exc.status,
                MIN_TRAINER_VERSION,
            )
            return
        if exc.status == 404:
            raise _crd_missing(_status_of(exc)[0]) from None
        raise _api_error(exc, "get", "customresourcedefinitions", spec, CRD_NAME) from None
    except HTTPError as exc:
        raise _TransientError(f"cannot reach the Kubernetes API at {api_client.configuration.host}: {exc}") from None
    versions = {version.get("name"): version for version in crd.get("spec", {}).get("versions") or []}
    if not versions.get(VERSION, {}).get("served"):
        raise TlopsError(
            f"the installed Kubeflow Trainer does not serve TrainJob {VERSION} (CRD {CRD_NAME} serves "
            f"{sorted(v for v in versions if versions[v].get('served'))}): install Trainer {MIN_TRAINER_VERSION} or "
            f"later ({INSTALL_TRAINER})"
        )
    schema = (versions[VERSION].get("schema") or {}).get("openAPIV3Schema") or {}
    spec_schema = (schema.get("properties") or {}).get("spec") or {}
    if "runtimePatches" not in (spec_schema.get("properties") or {}):
        raise TlopsError(
            f"the installed Kubeflow Trainer is older than {MIN_TRAINER_VERSION}: its TrainJob CRD has no "
            f"spec.runtimePatches, so the job's node selector, tolerations, affinity and pod labels would be dropped; "
            f"upgrade Kubeflow Trainer to {MIN_TRAINER_VERSION} or later ({INSTALL_TRAINER})"
        )


def _crd_missing(message: str) -> TlopsError:
    return TlopsError(
        f"the TrainJob CRD is not installed ({PLURAL}.{GROUP}/{VERSION}: {message}): install Kubeflow Trainer "
        f"{MIN_TRAINER_VERSION} or later ({INSTALL_TRAINER}) and its runtimes"
    )


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
        return _crd_missing(message)
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
    match = TIMESTAMP.fullmatch(token)
    if match is None:
        return None
    offset = "+00:00" if match[3] == "Z" else match[3]
    return int(datetime.fromisoformat(match[1] + offset).timestamp()), int((match[2] or "").ljust(9, "0"))
