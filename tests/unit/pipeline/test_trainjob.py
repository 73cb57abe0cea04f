"""The TrainJob launcher against a fake Kubernetes API server, and its KFP component."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fake_kubernetes import FakeKubernetes, trainjob_crd
from tlops.errors import TlopsError
from tlops.pipeline.trainjob import (
    TrainJobSpec,
    launch_and_wait,
    load_kubernetes_client,
    service_account_namespace,
    split_env,
    trainjob_manifest,
    trainjob_name,
)

NS = "team-a"
NAME = "tlops-ft-0123456789ab"
FAST = {"poll_s": 0.01, "start_timeout_s": 5.0, "timeout_s": 10.0}
TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
COMMAND = ["torchrun", "-m", "tlops.train.ddp", "--epochs", "3"]


def _spec(**overrides: Any) -> TrainJobSpec:
    settings: dict[str, Any] = {
        "name": NAME,
        "namespace": NS,
        "image": "ghcr.io/tlops/tlops-gpu:0.1.0",
        "command": COMMAND,
        "num_nodes": 2,
        "processes_per_node": 1,
        "resources_per_node": {"limits": {"nvidia.com/gpu": 1, "cpu": "8", "memory": "32Gi"}},
        "env": {"PYTHONUNBUFFERED": "1"},
        "node_selector": {"pool": "gpu"},
        "tolerations": [TOLERATION],
    }
    return TrainJobSpec(**(settings | overrides))


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    with FakeKubernetes() as server:
        yield server


@pytest.fixture
def api(fake: FakeKubernetes) -> Iterator[Any]:
    client = fake.client()
    yield client
    client.close()


def _start(fake: FakeKubernetes, nth: int = 2, *lines: str) -> None:
    """At the ``nth`` GET, two node pods run and node 0 has written ``lines``."""

    def action(server: FakeKubernetes) -> None:
        node0 = server.add_pod(NS, NAME, index=0, name=f"{NAME}-node-0-0-aaaaa")
        server.add_pod(NS, NAME, index=1, name=f"{NAME}-node-0-1-bbbbb")
        server.write_log(NS, f"{NAME}-node-0-1-bbbbb", "node 1 must not be streamed")
        server.write_log(NS, node0, *lines)

    fake.on_get(NS, NAME, nth, action)


def _at(fake: FakeKubernetes, nth: int, *lines: str, condition: tuple[str, str, str] | None = None) -> None:
    """At the ``nth`` GET, node 0 writes ``lines``, then the job gets ``condition`` (type, reason, message)."""

    def action(server: FakeKubernetes) -> None:
        server.write_log(NS, f"{NAME}-node-0-0-aaaaa", *lines)
        if condition:
            server.set_condition(NS, NAME, condition[0], reason=condition[1], message=condition[2])

    fake.on_get(NS, NAME, nth, action)


# --- the manifest --------------------------------------------------------------------------------------------------


def test_the_manifest_is_the_trainjob_the_trainer_expects() -> None:
    manifest = trainjob_manifest(_spec(labels={"team": "vision"}, affinity={"nodeAffinity": {}}))
    digest = manifest["metadata"].pop("annotations")["tlops/spec-digest"]
    assert len(digest) == 16
    assert manifest == {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {
            "name": NAME,
            "namespace": NS,
            "labels": {"app.kubernetes.io/managed-by": "tlops", "team": "vision"},
        },
        "spec": {
            "runtimeRef": {
                "name": "torch-distributed",
                "apiGroup": "trainer.kubeflow.org",
                "kind": "ClusterTrainingRuntime",
            },
            "trainer": {
                "image": "ghcr.io/tlops/tlops-gpu:0.1.0",
                "command": COMMAND,
                "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
                "numNodes": 2,
                "numProcPerNode": 1,
                "resourcesPerNode": {"limits": {"nvidia.com/gpu": "1", "cpu": "8", "memory": "32Gi"}},
            },
            "runtimePatches": [
                {
                    "manager": "tlops/launcher",
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": "node",
                                        "template": {
                                            "spec": {
                                                "template": {
                                                    "metadata": {"labels": {"team": "vision"}},
                                                    "spec": {
                                                        "nodeSelector": {"pool": "gpu"},
                                                        "affinity": {"nodeAffinity": {}},
                                                        "tolerations": [TOLERATION],
                                                    },
                                                }
                                            }
                                        },
                                    }
                                ]
                            }
                        }
                    },
                }
            ],
        },
    }


def test_a_plain_job_has_no_patches_and_leaves_the_process_count_to_the_runtime() -> None:
    spec = _spec(processes_per_node=None, node_selector={}, tolerations=[], resources_per_node={}, env={})
    body = trainjob_manifest(spec)["spec"]
    assert body["trainer"] == {"image": spec.image, "command": COMMAND, "numNodes": 2}
    assert "runtimePatches" not in body


def test_secret_variables_go_with_the_plain_ones() -> None:
    secret = {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret"}}}
    env, refs = split_env([{"name": "A", "value": "1"}, secret, {"name": "EMPTY"}])
    assert (env, refs) == ({"A": "1", "EMPTY": ""}, [secret])
    trainer = trainjob_manifest(_spec(env=env, env_refs=refs))["spec"]["trainer"]
    assert trainer["env"] == [{"name": "A", "value": "1"}, {"name": "EMPTY", "value": ""}, secret]


def test_the_digest_follows_the_spec() -> None:
    def digest(spec: TrainJobSpec) -> str:
        return trainjob_manifest(spec)["metadata"]["annotations"]["tlops/spec-digest"]

    assert digest(_spec()) == digest(_spec())
    assert digest(_spec()) != digest(_spec(num_nodes=3))


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"name": "Fine_Tune"}, "RFC 1035"),
        ({"name": "9lives"}, "RFC 1035"),
        ({"name": "a" * 58}, "must fit in 63"),
        ({"namespace": "Team A"}, "DNS-1123"),
        ({"num_nodes": 0}, "num_nodes is 0"),
        ({"processes_per_node": 0}, "processes_per_node is 0"),
        ({"command": "torchrun train.py"}, "non-empty list of strings"),
        ({"command": []}, "non-empty list of strings"),
        ({"image": ""}, "image is empty"),
        ({"env": {"PET_NNODES": "4"}}, "set by the Trainer runtime"),
        ({"resources_per_node": {"limit": {"cpu": "1"}}}, "use only 'limits' and 'requests'"),
        ({"tolerations": [{"key": "a", "effects": "NoSchedule"}]}, "is not a Kubernetes toleration"),
        ({"node_selector": {"pool": 1}}, "node_selector must map"),
        ({"labels": {"team": "a b"}}, "is not a Kubernetes label"),
        ({"runtime": ""}, "runtime is empty"),
    ],
)
def test_a_bad_spec_is_refused_with_the_fix(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(TlopsError, match=fragment) as caught:
        _spec(**overrides)
    assert "\n" not in str(caught.value)


def test_the_job_name_is_the_same_for_every_attempt_of_a_task() -> None:
    name = trainjob_name("run-1", "task-7")
    assert name == trainjob_name("run-1", "task-7")
    assert name != trainjob_name("run-1", "task-8") != trainjob_name("run-2", "task-7")
    assert _spec(name=name).name.startswith("tlops-ft-")
    with pytest.raises(TlopsError, match="run id and the task id"):
        trainjob_name("", "task-7")


# --- waiting -------------------------------------------------------------------------------------------------------


def test_the_job_is_created_and_node_zero_is_streamed_until_complete(fake: FakeKubernetes, api: Any) -> None:
    _start(fake, 2, "loading data", "epoch 1 loss 0.9")
    _at(fake, 4, "epoch 2 loss 0.5")
    _at(fake, 6, "saved model", condition=("Complete", "JobsCompleted", "TrainJob is completed"))
    lines: list[str] = []
    job = launch_and_wait(_spec(), api, log=lines.append, **FAST)
    assert lines == ["loading data", "epoch 1 loss 0.9", "epoch 2 loss 0.5", "saved model"]
    assert job["status"]["conditions"][-1]["type"] == "Complete"
    (post,) = fake.requests_to("POST")
    assert post.path == f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs"
    assert post.body == trainjob_manifest(_spec())
    pod_lists = fake.requests_to("GET", f"/api/v1/namespaces/{NS}/pods")
    selector = f"jobset.sigs.k8s.io/jobset-name={NAME},jobset.sigs.k8s.io/replicatedjob-name=node"
    assert {r.query.get("labelSelector") for r in pod_lists if not r.path.endswith("/log")} == {selector}
    reads = fake.requests_to("GET", "/log")
    assert {r.path for r in reads} == {f"/api/v1/namespaces/{NS}/pods/{NAME}-node-0-0-aaaaa/log"}
    assert reads[0].query == {"container": "node", "timestamps": "True"}
    assert all("sinceSeconds" in r.query for r in reads[1:])
    assert not fake.requests_to("DELETE")


def test_a_failed_job_raises_with_its_reason_message_and_log_tail(fake: FakeKubernetes, api: Any) -> None:
    _start(fake, 1, *(f"step {i}" for i in range(1, 26)))
    _at(fake, 3, "CUDA out of memory", condition=("Failed", "JobsFailed", "jobset node failed: backoff limit"))
    lines: list[str] = []
    with pytest.raises(TlopsError) as caught:
        launch_and_wait(_spec(), api, log=lines.append, **FAST)
    message = str(caught.value)
    assert "\n" not in message
    assert f"TrainJob {NS}/{NAME} failed: JobsFailed: jobset node failed: backoff limit" in message
    assert "step 7 | step 8 |" in message and message.endswith("step 25 | CUDA out of memory")
    assert "step 6 " not in message
    assert lines[-1] == "CUDA out of memory" and len(lines) == 26
    assert fake.trainjob(NS, NAME) is not None  # kept for a look; a retry replaces it


def test_a_job_whose_pods_never_run_is_deleted_with_what_to_check(fake: FakeKubernetes, api: Any) -> None:
    unschedulable = {
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
            }
        ]
    }
    fake.on_get(NS, NAME, 1, lambda s: s.add_pod(NS, NAME, phase="Pending", status=unschedulable))
    fake.on_get(NS, NAME, 1, lambda s: s.set_condition(NS, NAME, "Suspended", "False", "Resumed", "resumed"))
    with pytest.raises(TlopsError) as caught:
        launch_and_wait(_spec(), api, **FAST | {"start_timeout_s": 0.3})
    message = str(caught.value)
    assert f"TrainJob {NS}/{NAME} did not start within 0 s and was deleted" in message
    assert "Pending" in message and "didn't match Pod's node affinity/selector" in message
    assert "last condition: Suspended=False Resumed: resumed" in message
    assert "ClusterTrainingRuntime 'torch-distributed' is installed" in message
    assert "quota" in message and "{'pool': 'gpu'}" in message
    (delete,) = fake.requests_to("DELETE")
    assert delete.path.endswith(f"/trainjobs/{NAME}")
    assert fake.trainjob(NS, NAME) is None


def test_a_job_without_any_pod_says_so(fake: FakeKubernetes, api: Any) -> None:
    with pytest.raises(TlopsError, match=r"no node pods; last condition: no conditions yet\): check that"):
        launch_and_wait(_spec(), api, **FAST | {"start_timeout_s": 0.2})


def test_a_job_past_its_timeout_is_deleted(fake: FakeKubernetes, api: Any) -> None:
    _start(fake, 1, "epoch 1")
    with pytest.raises(TlopsError, match=r"ran past the 0 s timeout and was deleted: raise the timeout"):
        launch_and_wait(_spec(), api, **FAST | {"timeout_s": 0.3})
    (delete,) = fake.requests_to("DELETE")
    assert delete.query["propagationPolicy"] == "Foreground"
    assert fake.trainjob(NS, NAME) is None


def test_a_restarted_node_zero_is_followed_from_its_start(fake: FakeKubernetes, api: Any) -> None:
    _start(fake, 1, "first pod")

    def restart(server: FakeKubernetes) -> None:
        server.set_pod_phase(NS, f"{NAME}-node-0-0-aaaaa", "Failed")
        time.sleep(0.01)  # a later creationTimestamp
        new = server.add_pod(NS, NAME, index=0, name=f"{NAME}-node-0-0-ccccc")
        server.write_log(NS, new, "second pod")

    fake.on_get(NS, NAME, 3, restart)
    _at(fake, 5, condition=("Complete", "JobsCompleted", "done"))
    lines: list[str] = []
    launch_and_wait(_spec(), api, log=lines.append, **FAST)
    assert lines == ["first pod", "second pod"]


def test_a_log_the_launcher_may_not_read_does_not_stop_the_wait(
    fake: FakeKubernetes, api: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.getLogger("tlops"), "propagate", True)  # to caplog, whoever configured it before
    fake.forbid("GET", "pods/[^/]+/log", NS, "get")
    _start(fake, 1, "hidden")
    _at(fake, 3, condition=("Complete", "JobsCompleted", "done"))
    lines: list[str] = []
    with caplog.at_level(logging.WARNING, logger="tlops"):
        launch_and_wait(_spec(), api, log=lines.append, **FAST)
    assert lines == []
    # A set: in the whole suite another test's logging set-up can hand caplog the same record twice.
    assert {r.getMessage() for r in caplog.records if r.levelno == logging.WARNING} == {
        f"Cannot read the log of pod {NAME}-node-0-0-aaaaa yet (403): grant the service account get on pods/log"
    }


def test_a_job_the_launcher_may_not_delete_is_named_for_deletion_by_hand(fake: FakeKubernetes, api: Any) -> None:
    fake.forbid("DELETE", "trainjobs", NS, "delete")
    with pytest.raises(
        TlopsError, match=rf"timeout and could not be deleted \(.*kubectl delete trainjob -n {NS} {NAME}\)"
    ):
        launch_and_wait(_spec(), api, **FAST | {"timeout_s": 0.05, "start_timeout_s": 5.0})
    assert fake.trainjob(NS, NAME) is not None


def test_a_few_api_errors_while_waiting_are_ridden_out(fake: FakeKubernetes, api: Any) -> None:
    fake.fail("GET", r"/trainjobs/", 503, "etcdserver: leader changed", times=2)
    _start(fake, 1, "hello")
    _at(fake, 2, condition=("Complete", "JobsCompleted", "done"))
    lines: list[str] = []
    launch_and_wait(_spec(), api, log=lines.append, **FAST)
    assert lines == ["hello"]


def test_an_api_that_keeps_failing_gives_up(fake: FakeKubernetes, api: Any) -> None:
    fake.fail("GET", r"/trainjobs/", 503, "etcdserver: leader changed", times=None)
    with pytest.raises(TlopsError, match=r"kept failing .* 503 .* leader changed"):
        launch_and_wait(_spec(), api, **FAST)


# --- API errors ----------------------------------------------------------------------------------------------------


def test_rbac_refusal_names_the_permission(fake: FakeKubernetes, api: Any) -> None:
    fake.forbid("POST", "trainjobs", NS, "create")
    with pytest.raises(TlopsError) as caught:
        launch_and_wait(_spec(), api, **FAST)
    message = str(caught.value)
    assert message.startswith(
        f"the pipeline's service account may not create trainjobs.trainer.kubeflow.org in namespace {NS}: "
        "grant it create on trainjobs.trainer.kubeflow.org"
    )
    assert "cannot create resource" in message and "\n" not in message


def test_listing_pods_needs_permission_too(fake: FakeKubernetes, api: Any) -> None:
    fake.forbid("GET", "pods", NS, "list")
    with pytest.raises(TlopsError, match=f"may not list pods in namespace {NS}: grant it list on pods"):
        launch_and_wait(_spec(), api, **FAST)


def test_a_missing_crd_says_to_install_the_trainer(fake: FakeKubernetes, api: Any) -> None:
    fake.crd_installed = False
    with pytest.raises(TlopsError) as caught:
        launch_and_wait(_spec(), api, **FAST)
    assert str(caught.value).startswith("the TrainJob CRD is not installed (trainjobs.trainer.kubeflow.org/v1alpha1")
    assert "install Kubeflow Trainer v2" in str(caught.value)


def test_a_trainer_older_than_v2_2_is_refused_before_anything_is_created(fake: FakeKubernetes, api: Any) -> None:
    fake.crd = trainjob_crd(runtime_patches=False)  # Trainer v2.0/v2.1: runtimePatches would be pruned silently
    with pytest.raises(TlopsError) as caught:
        launch_and_wait(_spec(), api, **FAST)
    message = str(caught.value)
    assert message.startswith("the installed Kubeflow Trainer is older than v2.2: its TrainJob CRD has no ")
    assert "upgrade Kubeflow Trainer to v2.2 or later" in message and "\n" not in message
    assert not fake.requests_to("POST")
    fake.crd["spec"]["versions"][0]["name"] = "v1beta1"
    with pytest.raises(TlopsError, match=r"does not serve TrainJob v1alpha1 .* serves \['v1beta1'\]\): install"):
        launch_and_wait(_spec(), api, **FAST)


def test_a_service_account_that_may_not_read_crds_skips_the_version_check(
    fake: FakeKubernetes, api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail("GET", "/customresourcedefinitions/", 403, "customresourcedefinitions is forbidden", times=None)
    fake.on_get(NS, NAME, 1, lambda s: s.set_condition(NS, NAME, "Complete", reason="JobsCompleted"))
    with caplog.at_level(logging.WARNING):
        launch_and_wait(_spec(), api, **FAST)
    assert "Cannot read the TrainJob CRD to check the Trainer version (403); it must be v2.2 or later" in caplog.text
    assert fake.requests_to("POST")
    fake.crd_installed = False  # and the CRD is gone: the create says so
    with pytest.raises(TlopsError, match=r"^the TrainJob CRD is not installed .*: install Kubeflow Trainer v2.2"):
        launch_and_wait(_spec(name="tlops-ft-other"), api, **FAST)


def test_a_missing_namespace_is_named(fake: FakeKubernetes, api: Any) -> None:
    fake.fail("POST", "/trainjobs", 404, f'namespaces "{NS}" not found')
    fake._failures[-1].body["details"] = {"name": NS, "kind": "namespaces"}
    with pytest.raises(TlopsError, match=f"namespace {NS} does not exist"):
        launch_and_wait(_spec(), api, **FAST)


def test_the_trainer_webhook_refusal_is_passed_on(fake: FakeKubernetes, api: Any) -> None:
    denial = (
        'admission webhook "validator.trainjob.trainer.kubeflow.org" denied the request: '
        "unsupported runtime: ClusterTrainingRuntime.trainer.kubeflow.org"
    )
    fake.fail("POST", "/trainjobs", 403, denial)
    with pytest.raises(TlopsError, match=r"the Trainer rejected TrainJob .*unsupported runtime.*is runtime 'torch"):
        launch_and_wait(_spec(), api, **FAST)


def test_the_job_deleted_by_someone_else_is_reported(fake: FakeKubernetes, api: Any) -> None:
    _start(fake, 1, "hi")
    fake.on_get(NS, NAME, 3, lambda s: s._state.trainjobs.pop((NS, NAME)))
    with pytest.raises(TlopsError, match=r"not found .*was the job or the Trainer CRD deleted"):
        launch_and_wait(_spec(), api, **FAST)


# --- retries of the task -------------------------------------------------------------------------------------------


def test_the_job_of_a_previous_attempt_is_taken_over(fake: FakeKubernetes, api: Any) -> None:
    fake.put_trainjob(trainjob_manifest(_spec()))
    _start(fake, 2, "epoch 7 of the first attempt")  # GET 1 answers the 409
    _at(fake, 3, condition=("Complete", "JobsCompleted", "done"))
    lines: list[str] = []
    launch_and_wait(_spec(), api, log=lines.append, **FAST)
    assert lines == ["epoch 7 of the first attempt"]
    (post,) = fake.requests_to("POST")
    assert post.body == trainjob_manifest(_spec())
    assert not fake.requests_to("DELETE")


def test_a_completed_job_of_a_previous_attempt_returns_at_once(fake: FakeKubernetes, api: Any) -> None:
    fake.put_trainjob(trainjob_manifest(_spec()))
    fake.set_condition(NS, NAME, "Complete", reason="JobsCompleted", message="done")
    job = launch_and_wait(_spec(), api, **FAST)
    assert job["status"]["conditions"][0]["type"] == "Complete"
    assert len(fake.requests_to("GET", "/trainjobs/")) == 2


def test_a_failed_job_of_a_previous_attempt_is_replaced(fake: FakeKubernetes, api: Any) -> None:
    fake.put_trainjob(trainjob_manifest(_spec()))
    fake.set_condition(NS, NAME, "Failed", reason="JobsFailed", message="spot node reclaimed")
    _start(fake, 3, "second attempt")  # GET 1: the 409's look, GET 2: gone after the delete
    _at(fake, 4, condition=("Complete", "JobsCompleted", "done"))
    lines: list[str] = []
    launch_and_wait(_spec(), api, log=lines.append, **FAST)
    assert lines == ["second attempt"]
    assert [r.method for r in fake.requests if r.method != "GET"] == ["POST", "DELETE", "POST"]


def test_a_different_job_of_the_same_name_is_not_touched(fake: FakeKubernetes, api: Any) -> None:
    fake.put_trainjob(trainjob_manifest(_spec(image="someone/else:1")))
    with pytest.raises(TlopsError, match=r"a different TrainJob team-a/tlops-ft-0123456789ab already exists"):
        launch_and_wait(_spec(), api, **FAST)
    assert not fake.requests_to("DELETE")


# --- edges ---------------------------------------------------------------------------------------------------------


def _kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "runner", "user": {"token": "secret-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "runner"}}],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_client_comes_from_the_kubeconfig_outside_a_cluster(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "config", "http://127.0.0.1:6443")
    with load_kubernetes_client({"KUBECONFIG": str(path)}) as client:
        assert client.configuration.host == "http://127.0.0.1:6443"
    with pytest.raises(TlopsError, match=r"no Kubernetes credentials .*set KUBECONFIG"):
        load_kubernetes_client({"KUBECONFIG": str(tmp_path / "missing")})


def test_the_client_uses_the_service_account_in_a_pod(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("pod-token")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "namespace").write_text("team-b\n")
    environ = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with load_kubernetes_client(environ, service_account_dir=tmp_path) as client:
        assert client.configuration.host == "https://10.0.0.1:443"
        assert client.configuration.api_key["authorization"] == "bearer pod-token"
    assert service_account_namespace(tmp_path) == "team-b"
    with pytest.raises(TlopsError, match=r"cannot tell the namespace .*pass the namespace"):
        service_account_namespace(tmp_path / "absent")


# --- the KFP component ---------------------------------------------------------------------------------------------


def test_the_component_compiles_with_the_task_config_passthroughs(tmp_path: Path) -> None:
    from kfp import compiler, dsl

    from tlops.pipeline.launcher import launch_trainjob

    @dsl.pipeline(name="launch")
    def pipeline():
        task = launch_trainjob(
            image="trainer:1",
            command=["torchrun", "train.py"],
            num_nodes=2,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            task_id=dsl.PIPELINE_TASK_ID_PLACEHOLDER,
        )
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1).set_cpu_limit("8")

    package = tmp_path / "launch.yaml"
    compiler.Compiler().compile(pipeline, str(package))
    spec = next(yaml.safe_load_all(package.read_text()))
    component = spec["components"]["comp-launch-trainjob"]
    assert component["taskConfigPassthroughs"] == [
        {"field": "RESOURCES"},
        {"field": "KUBERNETES_NODE_SELECTOR"},
        {"field": "KUBERNETES_TOLERATIONS"},
        {"field": "KUBERNETES_AFFINITY"},
        {"field": "ENV", "applyToTask": True},
    ]
    assert component["inputDefinitions"]["parameters"]["task_config"]["parameterType"] == "TASK_CONFIG"
    inputs = spec["root"]["dag"]["tasks"]["launch-trainjob"]["inputs"]["parameters"]
    assert inputs["run_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
    assert inputs["task_id"] == {"runtimeValue": {"constant": "{{$.pipeline_task_uuid}}"}}
    resources = spec["deploymentSpec"]["executors"]["exec-launch-trainjob"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """The component body configures the ``tlops`` logger; put it back as the other tests expect it."""
    logger = logging.getLogger("tlops")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.mark.usefixtures("restored_logging")
def test_the_component_body_forwards_the_task_config(
    fake: FakeKubernetes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kfp import dsl

    from tlops.pipeline.launcher import launch_trainjob

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "config", fake.url)))
    name = trainjob_name("run-1", "task-1")
    fake.on_get(NS, name, 1, lambda s: s.set_condition(NS, name, "Complete", reason="JobsCompleted"))
    secret = {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret"}}}
    task_config = dsl.TaskConfig(
        resources={"limits": {"nvidia.com/gpu": "1", "cpu": "8"}, "requests": {"memory": "32Gi"}},
        node_selector={"pool": "gpu"},
        tolerations=[TOLERATION],
        env=[{"name": "TLOPS_LOG_LEVEL", "value": "INFO"}, secret],
    )
    returned = launch_trainjob.python_func(
        image="trainer:1",
        command=["torchrun", "train.py"],
        num_nodes=2,
        run_id="run-1",
        task_id="task-1",
        task_config=task_config,
        namespace=NS,
        poll_seconds=0.01,
    )
    assert returned == name
    (post,) = fake.requests_to("POST")
    trainer = post.body["spec"]["trainer"]
    assert trainer["resourcesPerNode"] == task_config.resources
    assert trainer["env"] == [{"name": "TLOPS_LOG_LEVEL", "value": "INFO"}, secret]
    assert trainer["numNodes"] == 2 and "numProcPerNode" not in trainer
    pod = post.body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert pod["template"]["spec"]["template"]["spec"] == {"nodeSelector": {"pool": "gpu"}, "tolerations": [TOLERATION]}
