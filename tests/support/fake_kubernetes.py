"""A fake Kubernetes API server: just what the TrainJob launcher calls, scriptable from a test.

It serves, over plain HTTP on 127.0.0.1, with the JSON the real API server answers:

- ``POST/GET/DELETE /apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs[/{name}]`` (409 on a
  duplicate, 404 for an unknown job, plain-text ``404 page not found`` while the CRD is "not installed");
- ``GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions/trainjobs.trainer.kubeflow.org``: the TrainJob
  CRD, :attr:`FakeKubernetes.crd` (a Trainer v2.2+ one by default; :func:`trainjob_crd` makes an older one);
- ``GET /api/v1/namespaces/{ns}/pods?labelSelector=k=v,...`` (equality selectors);
- ``GET /api/v1/namespaces/{ns}/pods/{name}/log`` with ``timestamps`` and ``sinceSeconds``.

A test scripts the cluster with :meth:`FakeKubernetes.on_get` (run an action when the n-th GET of a TrainJob
comes), :meth:`add_pod`, :meth:`write_log` and :meth:`set_condition`, injects errors with :meth:`fail`, and reads
every request back from :attr:`FakeKubernetes.requests`. :meth:`FakeKubernetes.client` gives a real
``kubernetes.client.ApiClient`` pointed at it.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from loopback import LoopbackServer, QuietHandler, Request

TRAINJOBS = re.compile(r"/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs(?:/([^/]+))?")
CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/trainjobs.trainer.kubeflow.org"
PODS = re.compile(r"/api/v1/namespaces/([^/]+)/pods")
POD_LOG = re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log")


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: Any
    times: int | None


@dataclass
class _LogLine:
    time_ns: int
    text: str


@dataclass
class _State:
    trainjobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    logs: dict[tuple[str, str], list[_LogLine]] = field(default_factory=dict)
    gets: dict[tuple[str, str], int] = field(default_factory=dict)


def rfc3339_nano(time_ns: int) -> str:
    """A timestamp as Go's RFC3339Nano writes it (trailing zeros of the fraction dropped)."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    fraction = f"{nanos:09d}".rstrip("0")
    return (
        datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"
    )


def trainjob_crd(runtime_patches: bool = True) -> dict[str, Any]:
    """The TrainJob CRD as the API server returns it, cut to what matters.

    Args:
        runtime_patches: Trainer v2.2 or later; ``False``: v2.0/v2.1, whose TrainJob spec has
            ``podTemplateOverrides`` instead of ``runtimePatches``.
    """
    spec_fields: dict[str, Any] = {
        "runtimeRef": {"type": "object"},
        "trainer": {"type": "object"},
        "suspend": {"type": "boolean"},
        "managedBy": {"type": "string"},
    }
    spec_fields["runtimePatches" if runtime_patches else "podTemplateOverrides"] = {"type": "array"}
    schema = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {"type": "object", "properties": spec_fields, "required": ["runtimeRef"]},
            "status": {"type": "object"},
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "trainjobs.trainer.kubeflow.org", "resourceVersion": "1"},
        "spec": {
            "group": "trainer.kubeflow.org",
            "names": {"kind": "TrainJob", "plural": "trainjobs", "singular": "trainjob", "listKind": "TrainJobList"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                }
            ],
        },
    }


def status_body(code: int, reason: str, message: str, kind: str = "") -> dict[str, Any]:
    """A ``metav1.Status`` like the API server's error answers."""
    details = {"kind": kind} if kind else {}
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason} | (
        {"details": details, "code": code} if details else {"code": code}
    )


class FakeKubernetes(LoopbackServer):
    """The fake API server; use as a context manager, or :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.crd_installed = True
        self.crd = trainjob_crd()
        self._state = _State()
        self._failures: list[_Failure] = []
        self._actions: dict[tuple[str, str], dict[int, list[Callable[[FakeKubernetes], None]]]] = {}
        self._lock = threading.RLock()
        self._serve(_handler(self), "fake-kubernetes")

    def client(self) -> Any:
        """A real ``kubernetes.client.ApiClient`` talking to this server."""
        from kubernetes import client

        return client.ApiClient(client.Configuration(host=self.url))

    # --- scripting ---------------------------------------------------------------------------------------------

    def trainjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored TrainJob (a copy), or ``None``."""
        with self._lock:
            job = self._state.trainjobs.get((namespace, name))
            return copy.deepcopy(job)

    def put_trainjob(self, body: dict[str, Any]) -> None:
        """Store a TrainJob as if someone had created it earlier (a previous attempt)."""
        with self._lock:
            self._state.trainjobs[(body["metadata"]["namespace"], body["metadata"]["name"])] = _stored(body)

    def on_get(self, namespace: str, name: str, nth: int, action: Callable[[FakeKubernetes], None]) -> None:
        """Run ``action(self)`` just before the ``nth`` (1-based) GET of that TrainJob is answered."""
        with self._lock:
            self._actions.setdefault((namespace, name), {}).setdefault(nth, []).append(action)

    def set_condition(
        self, namespace: str, name: str, type_: str, status: str = "True", reason: str = "", message: str = ""
    ) -> None:
        """Add or replace one condition of the job's status."""
        with self._lock:
            job = self._state.trainjobs[(namespace, name)]
            conditions = [c for c in job.setdefault("status", {}).setdefault("conditions", []) if c["type"] != type_]
            stamp = rfc3339_nano(time.time_ns()).split(".")[0].rstrip("Z") + "Z"
            conditions.append(
                {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": stamp}
            )
            job["status"]["conditions"] = conditions

    def add_pod(
        self,
        namespace: str,
        job: str,
        index: int = 0,
        phase: str = "Running",
        replicated_job: str = "node",
        name: str | None = None,
        status: dict[str, Any] | None = None,
    ) -> str:
        """Add a pod of the job's JobSet, labelled as JobSet and the Job controller label them; its name."""
        name = name or f"{job}-{replicated_job}-0-{index}-{uuid.uuid4().hex[:5]}"
        labels = {
            "jobset.sigs.k8s.io/jobset-name": job,
            "jobset.sigs.k8s.io/replicatedjob-name": replicated_job,
            "jobset.sigs.k8s.io/job-index": "0",
            "batch.kubernetes.io/job-completion-index": str(index),
        }
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
                "creationTimestamp": created,
                "uid": str(uuid.uuid4()),
            },
            "spec": {"containers": [{"name": "node", "image": "trainer"}]},
            "status": {"phase": phase, **(status or {})},
        }
        with self._lock:
            self._state.pods[(namespace, name)] = pod
            self._state.logs.setdefault((namespace, name), [])
        return name

    def set_pod_phase(self, namespace: str, pod: str, phase: str) -> None:
        with self._lock:
            self._state.pods[(namespace, pod)]["status"]["phase"] = phase

    def write_log(self, namespace: str, pod: str, *lines: str) -> None:
        """Append lines to the pod's log, each stamped now (nanoseconds, strictly increasing)."""
        with self._lock:
            log = self._state.logs.setdefault((namespace, pod), [])
            for text in lines:
                stamp = max(time.time_ns(), log[-1].time_ns + 1 if log else 0)
                log.append(_LogLine(stamp, text))

    def fail(
        self, method: str, path_pattern: str, status: int, message: str = "", times: int | None = 1, body: Any = None
    ) -> None:
        """Answer the next ``times`` (``None``: all) matching requests with ``status``.

        ``body`` is sent as is (a str as text/plain); by default a Status with ``message``.
        """
        reason = {403: "Forbidden", 404: "NotFound", 409: "AlreadyExists", 503: "ServiceUnavailable"}.get(status, "")
        with self._lock:
            self._failures.append(
                _Failure(method, re.compile(path_pattern), status, body or status_body(status, reason, message), times)
            )

    def forbid(self, method: str, resource: str, namespace: str, verb: str) -> None:
        """Answer every ``method`` on ``resource`` (``trainjobs`` or ``pods``) with RBAC's 403."""
        group = "trainer.kubeflow.org" if resource == "trainjobs" else ""
        message = (
            f'{resource}{"." + group if group else ""} is forbidden: User "system:serviceaccount:{namespace}:'
            f'pipeline-runner" cannot {verb} resource "{resource}" in API group "{group}" '
            f'in the namespace "{namespace}"'
        )
        self.fail(method, rf"/{resource}", 403, message, times=None)

    def requests_to(self, method: str, fragment: str = "") -> list[Request]:
        """The requests received with ``method`` whose path contains ``fragment``."""
        with self._lock:
            return [r for r in self.requests if r.method == method and fragment in r.path]

    # --- serving -----------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """The status and body (dict: JSON; str: text) of one request."""
        with self._lock:
            self.requests.append(Request(method, path, query, body))
            for failure in self._failures:
                if failure.method == method and failure.pattern.search(path) and failure.times != 0:
                    if failure.times is not None:
                        failure.times -= 1
                    return failure.status, failure.body
            if match := TRAINJOBS.fullmatch(path):
                if not self.crd_installed:
                    return 404, "404 page not found\n"
                return self._trainjobs(method, match[1], match[2], body)
            if path == CRD and method == "GET":
                if not self.crd_installed:
                    message = f'customresourcedefinitions.apiextensions.k8s.io "{CRD.rsplit("/", 1)[1]}" not found'
                    return 404, status_body(404, "NotFound", message, "customresourcedefinitions")
                return 200, self.crd
            if (match := POD_LOG.fullmatch(path)) and method == "GET":
                return self._log(match[1], match[2], query)
            if (match := PODS.fullmatch(path)) and method == "GET":
                return 200, self._pods(match[1], query.get("labelSelector", ""))
            return 404, "404 page not found\n"

    def _trainjobs(self, method: str, namespace: str, name: str | None, body: Any) -> tuple[int, Any]:
        state = self._state
        if method == "POST" and name is None:
            key = (namespace, body["metadata"]["name"])
            if key in state.trainjobs:
                message = f'trainjobs.trainer.kubeflow.org "{key[1]}" already exists'
                return 409, status_body(409, "AlreadyExists", message, "trainjobs")
            state.trainjobs[key] = _stored(body, namespace)
            return 201, state.trainjobs[key]
        key = (namespace, name or "")
        if method == "GET":
            state.gets[key] = state.gets.get(key, 0) + 1
            for action in self._actions.get(key, {}).pop(state.gets[key], []):
                action(self)
        if key not in state.trainjobs:
            return 404, status_body(404, "NotFound", f'trainjobs.trainer.kubeflow.org "{name}" not found', "trainjobs")
        if method == "GET":
            return 200, state.trainjobs[key]
        if method == "DELETE":
            del state.trainjobs[key]
            for pod_key in [k for k, p in state.pods.items() if _owned(p, namespace, name or "")]:
                del state.pods[pod_key]
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return 405, status_body(405, "MethodNotAllowed", f"{method} is not supported")

    def _pods(self, namespace: str, selector: str) -> dict[str, Any]:
        wanted = dict(part.split("=", 1) for part in selector.split(",") if part)
        items = [
            pod
            for (ns, _), pod in self._state.pods.items()
            if ns == namespace and all(pod["metadata"]["labels"].get(k) == v for k, v in wanted.items())
        ]
        return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}

    def _log(self, namespace: str, pod: str, query: dict[str, str]) -> tuple[int, Any]:
        if (namespace, pod) not in self._state.pods:
            return 404, status_body(404, "NotFound", f'pods "{pod}" not found', "pods")
        lines = self._state.logs.get((namespace, pod), [])
        if "sinceSeconds" in query:
            cutoff = time.time_ns() - int(query["sinceSeconds"]) * 1_000_000_000
            lines = [line for line in lines if line.time_ns >= cutoff]
        stamped = query.get("timestamps") in ("1", "t", "T", "true", "True", "TRUE")  # Go's strconv.ParseBool
        return 200, "".join(
            f"{rfc3339_nano(line.time_ns)} {line.text}\n" if stamped else f"{line.text}\n" for line in lines
        )


def _stored(body: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    """The object as the API server keeps it: with namespace, uid, resourceVersion, creationTimestamp."""
    stored = copy.deepcopy(body)
    metadata = stored.setdefault("metadata", {})
    metadata.setdefault("namespace", namespace)
    metadata |= {
        "uid": str(uuid.uuid4()),
        "resourceVersion": "1",
        "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return stored


def _owned(pod: dict[str, Any], namespace: str, job: str) -> bool:
    return (
        pod["metadata"]["namespace"] == namespace
        and pod["metadata"]["labels"].get("jobset.sigs.k8s.io/jobset-name") == job
    )


def _handler(fake: FakeKubernetes) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            raw = self.read_body()
            body = json.loads(raw) if raw else None
            status, answer = fake.handle(self.command, parts.path, dict(parse_qsl(parts.query)), body)
            if isinstance(answer, str):
                data, content_type = answer.encode(), "text/plain; charset=utf-8"
            else:
                data, content_type = json.dumps(answer).encode(), "application/json"
            self.send(status, data, content_type)

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    return Handler
