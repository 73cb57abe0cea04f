"""A fake Kubeflow Pipelines API server (v2beta1): just what ``kfp.Client`` calls for submit and schedule.

It serves, over plain HTTP on 127.0.0.1 and with the JSON shapes of the real API server (snake_case fields,
RFC 3339 times, int64 as strings, enums by name, empty lists left out, errors as ``{error, code, message,
details}`` with the gRPC code):

- ``GET /apis/v2beta1/healthz``;
- ``POST /apis/v2beta1/pipelines/upload`` and ``/pipelines/upload_version`` (multipart ``uploadfile``; the pipeline
  upload also creates a first version named like the pipeline, as the real server does; 409 for a name taken);
- ``GET /apis/v2beta1/pipelines`` (``filter`` on ``display_name``/``name`` as kfp sends it, paging),
  ``/pipelines/{id}``, ``/pipelines/names/{name}``, ``/pipelines/{id}/versions`` (filter, paging) and
  ``/pipelines/{id}/versions/{version_id}``;
- experiments: ``POST /apis/v2beta1/experiments``, ``GET`` list (filter, ``namespace``) and get; the ``Default``
  experiment exists from the start;
- runs: ``POST /apis/v2beta1/runs`` (the version must exist and the parameters must be the pipeline's inputs:
  unknown or missing required ones get a 400, as the real server refuses to start them), ``GET`` get and list;
- recurring runs: ``POST /apis/v2beta1/recurringruns`` (6-field cron, max concurrency 1 to 10), ``GET`` list and
  get, ``POST .../{id}:disable`` and ``:enable``, ``DELETE``.

Authentication, as a multi-user deployment does it: with :attr:`FakeKfp.token` set, a request without that bearer
token gets 401 (the gateway's check, healthz included); a request with :attr:`FakeKfp.forbidden_token` passes the
gateway (healthz answers) but gets 403 from every API call (the API server's access review).

A created run reports :attr:`FakeKfp.run_states` one after the other on successive GETs, the last one from then
on; a FAILED run has, in ``run_details.task_details``, a task named :attr:`FakeKfp.failed_task` whose state is
FAILED and whose ``error`` holds :attr:`FakeKfp.task_error`. Every request is kept in :attr:`FakeKfp.requests`
(method, path, query, JSON body or multipart fields, Authorization header).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

import loopback
from loopback import LoopbackServer, QuietHandler

API = "/apis/v2beta1"
HEALTHZ = f"{API}/healthz"
TERMINAL = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED")
GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 409: 6}
DEFAULT_EXPERIMENT = "Default"


@dataclass
class Request(loopback.Request):
    """One request the fake received, with its ``Authorization`` header and the file name of each multipart field."""

    authorization: str | None
    files: dict[str, str] = field(default_factory=dict)  # multipart field -> file name


class ApiError(Exception):
    """An error answer: HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _id() -> str:
    return str(uuid.uuid4())


def error_body(status: int, message: str) -> dict[str, Any]:
    """An error answer as grpc-gateway writes it."""
    return {"error": message, "code": GRPC_CODES.get(status, 2), "message": message, "details": []}


def _matches(item: dict[str, Any], filter_text: str | None) -> bool:
    """Whether ``item`` passes a v2beta1 ``filter`` (a JSON Filter: EQUALS / NOT_EQUALS predicates on strings)."""
    if not filter_text:
        return True
    try:
        predicates = json.loads(filter_text).get("predicates", [])
    except (json.JSONDecodeError, AttributeError):
        raise ApiError(400, f"Invalid input error: failed to parse the filter {filter_text!r}") from None
    for predicate in predicates:
        operation = predicate.get("operation")
        value = predicate.get("string_value", predicate.get("stringValue"))
        key = predicate.get("key")
        found = item.get(key)
        if operation in (1, "EQUALS"):
            if found != value:
                return False
        elif operation in (2, "NOT_EQUALS"):
            if found == value:
                return False
        else:
            raise ApiError(400, f"Invalid input error: the fake does not support the filter operation {operation!r}")
    return True


def _page(items: list[dict[str, Any]], query: dict[str, str], key: str) -> dict[str, Any]:
    """A list answer with ``page_size``/``page_token`` paging (the token is the next offset)."""
    offset = int(query.get("page_token") or 0)
    size = int(query.get("page_size") or 20)
    page = items[offset : offset + size]
    answer: dict[str, Any] = {"total_size": len(items)}
    if page:
        answer[key] = copy.deepcopy(page)
    if offset + size < len(items):
        answer["next_page_token"] = str(offset + size)
    return answer


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str, bytes]]:
    """The fields of a multipart/form-data body: name -> (file name, bytes)."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = (part.get_filename() or "", part.get_payload(decode=True))
    return fields


class FakeKfp(LoopbackServer):
    """The fake API server; use as a context manager, or :meth:`start` and :meth:`stop`."""

    def __init__(self, token: str | None = None, forbidden_token: str | None = None, multi_user: bool = False):
        self.token = token
        self.forbidden_token = forbidden_token
        self.multi_user = multi_user
        self.run_states: list[str] = ["PENDING", "RUNNING", "SUCCEEDED"]
        self.failed_task = "fine-tune"
        self.task_error = "exit status 1: RuntimeError: CUDA out of memory"
        self.requests: list[Request] = []
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, Any]] = {}  # version id -> version
        self.packages: dict[str, str] = {}  # version id -> the uploaded YAML
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.recurring_runs: dict[str, dict[str, Any]] = {}
        self._scripts: dict[str, list[str]] = {}
        self._gets: dict[str, int] = {}
        self._lock = threading.RLock()
        self._add_experiment(DEFAULT_EXPERIMENT, "All runs created without specifying an experiment.", "")
        self._serve(_handler(self), "fake-kfp")

    # --- reading back --------------------------------------------------------------------------------------------

    def requests_to(self, method: str, fragment: str = "") -> list[Request]:
        """The requests received with ``method`` whose path contains ``fragment``."""
        with self._lock:
            return [r for r in self.requests if r.method == method and fragment in r.path]

    def api_requests(self) -> list[Request]:
        """Every request but the health checks."""
        with self._lock:
            return [r for r in self.requests if r.path != HEALTHZ]

    def versions_of(self, pipeline_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(v) for v in self.versions.values() if v["pipeline_id"] == pipeline_id]

    # --- serving -------------------------------------------------------------------------------------------------

    def handle(self, request: Request, uploads: dict[str, tuple[str, bytes]]) -> tuple[int, Any]:
        """The status and JSON body of one request."""
        with self._lock:
            self.requests.append(request)
            try:
                self._authorize(request)
                return 200, self._route(request, uploads)
            except ApiError as error:
                return error.status, error_body(error.status, error.message)

    def _authorize(self, request: Request) -> None:
        if self.token is None and self.forbidden_token is None:
            return
        if self.forbidden_token and request.authorization == f"Bearer {self.forbidden_token}":
            if request.path != HEALTHZ:
                raise ApiError(
                    403,
                    "Failed to authorize with API: PermissionDenied: User 'system:serviceaccount:other:default' is "
                    "not authorized with reason:  (request: &ResourceAttributes{Namespace:team-a,Verb:create,"
                    "Group:pipelines.kubeflow.org,Resource:pipelines})",
                )
            return
        if request.authorization != f"Bearer {self.token}":
            raise ApiError(401, "Jwt verification fails")

    def _route(self, request: Request, uploads: dict[str, tuple[str, bytes]]) -> Any:
        method, path, query, body = request.method, request.path, request.query, request.body
        if not path.startswith(API + "/"):
            raise ApiError(404, "Not Found")
        route = path[len(API) :]
        if route == "/healthz" and method == "GET":
            return {"multi_user": self.multi_user, "pipeline_store": "database"}
        if route == "/pipelines/upload" and method == "POST":
            return self._upload(query, uploads)
        if route == "/pipelines/upload_version" and method == "POST":
            return self._upload_version(query, uploads)
        if route == "/pipelines" and method == "GET":
            return self._list(self.pipelines.values(), query, "pipelines")
        if (match := re.fullmatch(r"/pipelines/names/([^/]+)", route)) and method == "GET":
            return self._pipeline_by_name(match[1])
        if (match := re.fullmatch(r"/pipelines/([^/:]+)", route)) and method == "GET":
            return copy.deepcopy(self._get(self.pipelines, match[1], "Pipeline"))
        if (match := re.fullmatch(r"/pipelines/([^/]+)/versions", route)) and method == "GET":
            self._get(self.pipelines, match[1], "Pipeline")
            versions = [v for v in self.versions.values() if v["pipeline_id"] == match[1]]
            return self._list(versions, query, "pipeline_versions")
        if (match := re.fullmatch(r"/pipelines/([^/]+)/versions/([^/]+)", route)) and method == "GET":
            version = self._get(self.versions, match[2], "PipelineVersion")
            if version["pipeline_id"] != match[1]:
                raise ApiError(404, f"PipelineVersion {match[2]} not found in pipeline {match[1]}")
            return copy.deepcopy(version)
        if route == "/experiments":
            if method == "POST":
                return self._add_experiment(
                    body.get("display_name", ""), body.get("description", ""), body.get("namespace", "")
                )
            if method == "GET":
                return self._list(self.experiments.values(), query, "experiments")
        if (match := re.fullmatch(r"/experiments/([^/:]+)", route)) and method == "GET":
            return copy.deepcopy(self._get(self.experiments, match[1], "Experiment"))
        if route == "/runs":
            if method == "POST":
                return self._create_run(body)
            if method == "GET":
                return self._list(self.runs.values(), query, "runs")
        if (match := re.fullmatch(r"/runs/([^/:]+)", route)) and method == "GET":
            return self._get_run(match[1])
        if route == "/recurringruns":
            if method == "POST":
                return self._create_recurring_run(body)
            if method == "GET":
                # The one camelCase field of the API: ListRecurringRunsResponse's proto field is recurringRuns.
                return self._list(self.recurring_runs.values(), query, "recurringRuns")
        if match := re.fullmatch(r"/recurringruns/([^/:]+)(:enable|:disable)?", route):
            job = self._get(self.recurring_runs, match[1], "RecurringRun")
            if method == "GET" and not match[2]:
                return copy.deepcopy(job)
            if method == "DELETE" and not match[2]:
                del self.recurring_runs[match[1]]
                return {}
            if method == "POST" and match[2]:
                enable = match[2] == ":enable"
                job |= {"mode": "ENABLE" if enable else "DISABLE", "status": "ENABLED" if enable else "DISABLED"}
                job["updated_at"] = _now()
                return {}
        raise ApiError(404, f"Not Found: {method} {path}")

    def _get(self, store: dict[str, dict[str, Any]], key: str, kind: str) -> dict[str, Any]:
        if key not in store:
            raise ApiError(404, f"{kind} {key} not found")
        return store[key]

    def _list(self, items: Any, query: dict[str, str], key: str) -> dict[str, Any]:
        selected = [item for item in items if _matches(item, query.get("filter"))]
        for name in ("namespace", "experiment_id"):
            if query.get(name):
                selected = [item for item in selected if item.get(name, "") == query[name]]
        return _page(selected, query, key)

    def _pipeline_by_name(self, name: str) -> dict[str, Any]:
        for pipeline in self.pipelines.values():
            if pipeline["name"] == name:
                return copy.deepcopy(pipeline)
        raise ApiError(404, f"Pipeline {name} not found")

    def _package(self, uploads: dict[str, tuple[str, bytes]]) -> tuple[str, dict[str, Any]]:
        if "uploadfile" not in uploads:
            raise ApiError(400, "Invalid input error: failed to read the uploadfile of the multipart form")
        text = uploads["uploadfile"][1].decode()
        try:
            spec = next(yaml.safe_load_all(text))
        except yaml.YAMLError as error:
            raise ApiError(400, f"Invalid input error: the pipeline spec is not YAML: {error}") from None
        if not isinstance(spec, dict) or "root" not in spec or "pipelineInfo" not in spec:
            raise ApiError(400, "Invalid input error: the file is not a compiled KFP v2 pipeline spec")
        return text, spec

    def _add_version(self, pipeline_id: str, name: str, description: str, text: str, spec: dict[str, Any]) -> dict:
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": _id(),
            "display_name": name,
            "name": name,
            "description": description,
            "created_at": _now(),
            "pipeline_spec": spec,
        }
        self.versions[version["pipeline_version_id"]] = version
        self.packages[version["pipeline_version_id"]] = text
        return version

    def _upload(self, query: dict[str, str], uploads: dict[str, tuple[str, bytes]]) -> dict[str, Any]:
        text, spec = self._package(uploads)
        name = query.get("display_name") or query.get("name") or spec["pipelineInfo"]["name"]
        namespace = query.get("namespace", "")
        if any(p["name"] == name and p.get("namespace", "") == namespace for p in self.pipelines.values()):
            raise ApiError(409, f"Already exist error: failed to create a new pipeline: the name {name} already exist")
        pipeline = {
            "pipeline_id": _id(),
            "display_name": name,
            "name": name,
            "description": query.get("description", ""),
            "created_at": _now(),
        } | ({"namespace": namespace} if namespace else {})
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        self._add_version(pipeline["pipeline_id"], name, pipeline["description"], text, spec)
        return copy.deepcopy(pipeline)

    def _upload_version(self, query: dict[str, str], uploads: dict[str, tuple[str, bytes]]) -> dict[str, Any]:
        pipeline_id = query.get("pipelineid", "")
        self._get(self.pipelines, pipeline_id, "Pipeline")
        text, spec = self._package(uploads)
        name = query.get("display_name") or query.get("name") or spec["pipelineInfo"]["name"]
        if any(v["name"] == name for v in self.versions.values() if v["pipeline_id"] == pipeline_id):
            raise ApiError(409, f"Already exist error: the pipeline version name {name} already exist")
        return copy.deepcopy(self._add_version(pipeline_id, name, query.get("description", ""), text, spec))

    def _add_experiment(self, name: str, description: str, namespace: str) -> dict[str, Any]:
        if not name:
            raise ApiError(400, "Invalid input error: experiment name is empty")
        if any(e["display_name"] == name and e.get("namespace", "") == namespace for e in self.experiments.values()):
            raise ApiError(409, f"Already exist error: experiment {name} already exists")
        experiment = {
            "experiment_id": _id(),
            "display_name": name,
            "description": description,
            "created_at": _now(),
            "storage_state": "AVAILABLE",
        } | ({"namespace": namespace} if namespace else {})
        self.experiments[experiment["experiment_id"]] = experiment
        return copy.deepcopy(experiment)

    def _check_job(self, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The experiment and pipeline version a run or recurring run names, its parameters checked against them."""
        if not body.get("display_name"):
            raise ApiError(400, "Invalid input error: the name is empty")
        experiment = self._get(self.experiments, body.get("experiment_id") or "", "Experiment")
        reference = body.get("pipeline_version_reference") or {}
        version = self._get(self.versions, reference.get("pipeline_version_id") or "", "PipelineVersion")
        if version["pipeline_id"] != reference.get("pipeline_id"):
            raise ApiError(400, "Invalid input error: the pipeline version is not a version of that pipeline")
        inputs = version["pipeline_spec"]["root"].get("inputDefinitions", {}).get("parameters", {})
        given = (body.get("runtime_config") or {}).get("parameters") or {}
        unknown = sorted(set(given) - set(inputs))
        missing = sorted(name for name, spec in inputs.items() if not spec.get("isOptional") and name not in given)
        if unknown or missing:
            raise ApiError(400, f"Invalid input error: unknown parameters {unknown}, missing parameters {missing}")
        return experiment, version

    def _create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        experiment, _version = self._check_job(body)
        now = _now()
        run = {
            "experiment_id": experiment["experiment_id"],
            "run_id": _id(),
            "display_name": body["display_name"],
            "storage_state": "AVAILABLE",
            "pipeline_version_reference": body["pipeline_version_reference"],
            "runtime_config": body.get("runtime_config") or {},
            "service_account": body.get("service_account") or "pipeline-runner",
            "created_at": now,
            "scheduled_at": now,
            "finished_at": "1970-01-01T00:00:00Z",
            "state": self.run_states[0],
            "state_history": [{"update_time": now, "state": self.run_states[0]}],
        }
        if experiment.get("namespace"):
            run["namespace"] = experiment["namespace"]
        self.runs[run["run_id"]] = run
        self._scripts[run["run_id"]] = list(self.run_states)
        self._gets[run["run_id"]] = 0
        return copy.deepcopy(run)

    def _get_run(self, run_id: str) -> dict[str, Any]:
        run = self._get(self.runs, run_id, "Run")
        script = self._scripts[run_id]
        state = script[min(self._gets[run_id], len(script) - 1)]
        self._gets[run_id] += 1
        if state != run["state"]:
            run["state"] = state
            run["state_history"].append({"update_time": _now(), "state": state})
            if state in TERMINAL:
                run["finished_at"] = _now()
        run["run_details"] = {"task_details": self._tasks(run)}
        return copy.deepcopy(run)

    def _tasks(self, run: dict[str, Any]) -> list[dict[str, Any]]:
        """Task details as the real server lists them: the root DAG, its driver, the steps so far."""
        state = run["state"]
        if state == "PENDING":
            return []
        last = state

        def task(name: str, task_state: str) -> dict[str, Any]:
            stamp = _now()
            detail = {
                "run_id": run["run_id"],
                "task_id": _id(),
                "display_name": name,
                "create_time": run["created_at"],
                "start_time": stamp,
                "end_time": stamp if task_state in TERMINAL else "1970-01-01T00:00:00Z",
                "state": task_state,
                "state_history": [{"update_time": stamp, "state": task_state}],
            }
            if task_state == "FAILED" and name == self.failed_task:
                detail["error"] = {"code": 2, "message": self.task_error, "details": []}
            return detail

        return [
            task("root", last),
            task("root-driver", "SUCCEEDED"),
            task("prepare-data", "SUCCEEDED"),
            task(f"{self.failed_task}-driver", "SUCCEEDED"),
            task(self.failed_task, last),
        ]

    def _create_recurring_run(self, body: dict[str, Any]) -> dict[str, Any]:
        experiment, _version = self._check_job(body)
        concurrency = int(body.get("max_concurrency") or 0)
        if not 1 <= concurrency <= 10:
            raise ApiError(
                400,
                f"Invalid input error: Max concurrency of a recurring run must be at leas 1 and at most 10. "
                f"Received {concurrency}",
            )
        cron = ((body.get("trigger") or {}).get("cron_schedule") or {}).get("cron", "")
        if len(cron.split()) != 6:
            raise ApiError(400, f"Invalid input error: Schedule cron is not a supported format: {cron!r}")
        now = _now()
        enabled = body.get("mode") == "ENABLE"
        job = {
            "recurring_run_id": _id(),
            "display_name": body["display_name"],
            "description": body.get("description") or "",
            "pipeline_version_reference": body["pipeline_version_reference"],
            "runtime_config": body.get("runtime_config") or {},
            "service_account": body.get("service_account") or "pipeline-runner",
            "max_concurrency": str(concurrency),
            "trigger": {"cron_schedule": {"cron": cron}},
            "mode": "ENABLE" if enabled else "DISABLE",
            "created_at": now,
            "updated_at": now,
            "status": "ENABLED" if enabled else "DISABLED",
            "no_catchup": bool(body.get("no_catchup")),
            "experiment_id": experiment["experiment_id"],
        } | ({"namespace": experiment["namespace"]} if experiment.get("namespace") else {})
        self.recurring_runs[job["recurring_run_id"]] = job
        return copy.deepcopy(job)


def _handler(fake: FakeKfp) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            raw = self.read_body()
            content_type = self.headers.get("Content-Type") or ""
            uploads: dict[str, tuple[str, bytes]] = {}
            body: Any = None
            if content_type.startswith("multipart/form-data"):
                uploads = _multipart(content_type, raw)
            elif raw:
                body = json.loads(raw)
            request = Request(
                self.command,
                parts.path,
                dict(parse_qsl(parts.query)),
                body,
                self.headers.get("Authorization"),
                {name: filename for name, (filename, _data) in uploads.items()},
            )
            status, answer = fake.handle(request, uploads)
            self.send(status, json.dumps(answer).encode(), "application/json")

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    return Handler
