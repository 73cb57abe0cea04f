"""``tlops models``, and ``tlops promote`` with --force/--reason/--copy-to, against the real MLflow server.

Versions are made without training: a trivial pyfunc model, logged once per class list, registered as often as
a test needs with the tags a registration would set (gate decision, test metrics, lineage).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import datetime

import pytest

from tlops.cli import main
from tlops.cli.models import COLUMNS
from tlops.errors import TlopsError
from tlops.promotion.aliases import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, promote
from tlops.promotion.versions import COPIED_FROM_TAG, copy_to, list_versions

pytestmark = pytest.mark.integration

DIGITS = ["0", "1", "2"]
LETTERS = ["a", "b"]
DIGEST = "d" * 40 + "1234"
RUN_METRICS = {"test_accuracy": 0.5, "test_macro_f1": 0.25, "test_ece": 0.125}
KEEP_REASON = "accuracy 0.5000 vs champion 0.9000: not better"


@pytest.fixture(scope="module")
def logged_models(services) -> dict[str, str]:
    """URIs of two tiny logged pyfunc models (classes 0-2 and a-b), logged in a run with test metrics."""
    import mlflow
    import mlflow.pyfunc

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: list[str], params=None) -> list[str]:
            return model_input

    mlflow.set_tracking_uri(services.mlflow_uri)
    mlflow.set_experiment("tlops-models-tests")
    uris = {}
    for key, classes in (("digits", DIGITS), ("letters", LETTERS)):
        with mlflow.start_run():
            mlflow.log_metrics(RUN_METRICS)
            logged = mlflow.pyfunc.log_model(
                name="model", python_model=Constant(), metadata={"classes": classes}, pip_requirements=[]
            )
        uris[key] = logged.model_uri
    return uris


@pytest.fixture
def client(mlflow_uri: str):
    """An ``MlflowClient`` of the test server (and the global tracking URI set to it)."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(mlflow_uri)
    return MlflowClient(mlflow_uri)


def _name(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _add_version(model_uri: str, name: str, gate: str, reasons: str = "", metrics: bool = True) -> int:
    """Register ``model_uri`` as a new version of ``name`` with a registration's tags; returns its number."""
    import mlflow

    tags = {"gate.decision": gate, "gate.metric": "accuracy", "dataset_digest": DIGEST}
    tags |= {"backbone": "efficientnet_lite0", "strategy": "linear-probe"}
    if reasons:
        tags["gate.reasons"] = reasons
    if metrics:
        tags |= {"test_accuracy": "0.9123", "test_macro_f1": "0.9000", "test_ece": "0.0300"}
    return int(mlflow.register_model(model_uri, name, tags=tags).version)


def _registry(client, logged_models: dict[str, str]) -> str:
    """A model with version 1 (first, champion), 2 (refused by the gate, challenger), 3 (no metric tags)."""
    name = _name()
    _add_version(logged_models["digits"], name, "first")
    _add_version(logged_models["digits"], name, "keep", reasons=f"{KEEP_REASON} | worst class: 0 -0.10")
    _add_version(logged_models["digits"], name, "promote", metrics=False)
    client.set_registered_model_alias(name, CHAMPION, "1")
    client.set_registered_model_alias(name, CHALLENGER, "2")
    return name


def _aliases(client, name: str) -> dict[str, str]:
    return dict(client.get_registered_model(name).aliases)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tlops.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one ``tlops: error:`` line of a failed command (exit status 2, no traceback)."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("tlops: error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def test_models_table_lists_versions_aliases_gate_and_digest(client, logged_models, mlflow_uri):
    name = _registry(client, logged_models)
    done = _cli("models", "--model-name", name, "--tracking-uri", mlflow_uri)
    assert done.returncode == 0, done.stderr
    header, *lines = done.stdout.splitlines()
    assert header.split() == list(COLUMNS)
    assert [line.split()[0] for line in lines] == ["3", "2", "1"]
    by_version = {line.split()[0]: line.split() for line in lines}
    assert by_version["1"][1] == CHAMPION
    assert by_version["2"][1] == CHALLENGER
    assert by_version["2"][3:7] == ["0.9123", "0.9000", "0.0300", "keep"]
    assert by_version["3"][3:7] == ["0.5000", "0.2500", "0.1250", "promote"], "metrics from the run without tags"
    assert by_version["1"][7:] == [DIGEST[:12], "efficientnet_lite0", "linear-probe"]
    assert len({line.index("efficientnet_lite0") for line in lines}) == 1, "columns are aligned"


def test_models_json_lists_every_field(client, logged_models, mlflow_uri, capsys):
    name = _registry(client, logged_models)
    promote(client, name, 2, force=True, reason="the champion's camera broke")
    assert main(["models", "--model-name", name, "--tracking-uri", mlflow_uri, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["version"] for row in rows] == [3, 2, 1]
    second = rows[1]
    assert second["aliases"] == [CHALLENGER, CHAMPION]
    assert second["gate"] == "keep" and second["gate_metric"] == "accuracy" and second["forced"] is True
    assert second["dataset_digest"] == DIGEST and second["run_id"]
    assert second["test_accuracy"] == pytest.approx(0.9123)
    assert rows[2]["aliases"] == [PREVIOUS_CHAMPION] and rows[2]["forced"] is False
    assert datetime.fromisoformat(second["created"]).utcoffset().total_seconds() == 0


def test_promote_of_a_version_the_gate_refused_needs_force(client, logged_models, mlflow_uri):
    name = _registry(client, logged_models)
    before = _aliases(client, name)
    done = _cli("promote", "--model-name", name, "--version", "2", "--tracking-uri", mlflow_uri)
    assert _error_line(done) == (
        f"tlops: error: version 2 was refused by the gate ({KEEP_REASON}); pass --force --reason TEXT to override"
    )
    with pytest.raises(TlopsError, match="was refused by the gate"):
        promote(client, name)  # the challenger is version 2
    assert _aliases(client, name) == before
    assert "promotion.by" not in client.get_model_version(name, "2").tags


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_force_without_a_reason_is_refused_and_moves_nothing(client, logged_models, reason):
    name = _registry(client, logged_models)
    before = _aliases(client, name)
    with pytest.raises(TlopsError, match=r"^--force needs --reason TEXT \(recorded on the version\)$"):
        promote(client, name, 2, force=True, reason=reason)
    assert _aliases(client, name) == before


def test_forced_promotion_moves_the_champion_and_records_it(client, logged_models, mlflow_uri, capsys):
    name = _registry(client, logged_models)
    args = ["promote", "--model-name", name, "--version", "2", "--force", "--reason", "fixes the night images"]
    assert main([*args, "--tracking-uri", mlflow_uri]) == 0
    assert capsys.readouterr().out.strip() == (
        f"{name}: champion is version 2 (was version 1); forced: fixes the night images"
    )
    assert _aliases(client, name) == {CHAMPION: "2", CHALLENGER: "2", PREVIOUS_CHAMPION: "1"}
    tags = client.get_model_version(name, "2").tags
    assert tags["promotion.by"] == "tlops promote"
    assert tags["promotion.reason"] == "fixes the night images"
    assert tags["promotion.forced"] == "true"
    assert datetime.fromisoformat(tags["promotion.time"]).utcoffset().total_seconds() == 0


def test_plain_promotion_records_an_unforced_move_and_rollback_needs_no_force(client, logged_models):
    name = _registry(client, logged_models)
    result = promote(client, name, 3)
    assert (result.champion, result.previous, result.forced, result.reason) == (3, 1, False, "")
    tags = client.get_model_version(name, "3").tags
    assert (tags["promotion.forced"], tags["promotion.reason"]) == ("false", "")
    promote(client, name, 2, force=True, reason="override")
    promote(client, name, 3)  # previous-champion is the refused version 2 now
    assert promote(client, name, rollback=True).champion == 2, "a rollback returns to a former champion"


def test_promote_of_a_missing_version_names_it(client, logged_models):
    name = _registry(client, logged_models)
    with pytest.raises(TlopsError, match=rf"has no version 9; list its versions with tlops models --model-name {name}"):
        promote(client, name, 9)
    with pytest.raises(TlopsError, match="has no version 9"):
        copy_to(client, name, 9, _name("prod"), None)


def test_models_of_an_unknown_model_names_it(client, mlflow_uri):
    name = _name("missing")
    with pytest.raises(TlopsError, match=rf"registered model '{name}' does not exist at .*--model-name"):
        list_versions(client, name)


def test_copy_to_a_new_model_makes_the_copy_its_champion(client, logged_models, mlflow_uri, capsys):
    name, target = _registry(client, logged_models), _name("prod")
    capsys.readouterr()  # what registering the source versions printed
    assert main(["promote", "--model-name", name, "--copy-to", target, "--tracking-uri", mlflow_uri]) == 0
    output = capsys.readouterr()
    assert output.out.strip() == f"copied {name} version 1 to {target} as version 1: champion of {target}"
    # MLflow's own copy messages ("Registered model ... already exists" for a model that did not) stay hidden.
    assert "already exists" not in output.err and "Copied version" not in output.err, output.err
    assert _aliases(client, target) == {CHAMPION: "1"}
    tags = client.get_model_version(target, "1").tags
    assert tags[COPIED_FROM_TAG] == f"models:/{name}/1"
    assert tags["gate.decision"] == "first" and tags["dataset_digest"] == DIGEST, "the source's tags are copied"
    assert tags["promotion.by"] == "tlops promote" and tags["promotion.forced"] == "false"
    assert [row.version for row in list_versions(client, target)] == [1]


def test_copy_to_keeps_the_target_champion_as_previous_and_needs_force_for_a_refused_version(client, logged_models):
    name, target = _registry(client, logged_models), _name("prod")
    copy_to(client, name, None, target, None)
    with pytest.raises(TlopsError, match="version 2 was refused by the gate"):
        copy_to(client, name, 2, target, None)
    result = copy_to(client, name, "challenger", target, "staging looked fine", force=True)
    assert (result.registered_model, result.champion, result.previous, result.forced) == (target, 2, 1, True)
    assert (result.source_model, result.source_version) == (name, 2)
    assert _aliases(client, target) == {CHAMPION: "2", PREVIOUS_CHAMPION: "1"}
    assert client.get_model_version(target, "2").tags["promotion.reason"] == "staging looked fine"


def test_copy_to_a_model_whose_champion_has_other_classes_is_refused(client, logged_models):
    name, target = _registry(client, logged_models), _name("prod")
    _add_version(logged_models["letters"], target, "first")
    client.set_registered_model_alias(target, CHAMPION, "1")
    with pytest.raises(TlopsError, match=r"has 2 classes and .* has 3, not the same.*use another --copy-to name"):
        copy_to(client, name, 1, target, None)
    done = _cli("promote", "--model-name", name, "--copy-to", target, "--tracking-uri", client.tracking_uri)
    assert "use another --copy-to name" in _error_line(done)
    assert [row.version for row in list_versions(client, target)] == [1], "nothing is copied"
    assert _aliases(client, target) == {CHAMPION: "1"}


@pytest.mark.parametrize("target", ["staging/prod", "prod:1"])
def test_copy_to_an_invalid_name_is_refused_in_one_line(client, logged_models, mlflow_uri, target):
    name = _registry(client, logged_models)
    with pytest.raises(TlopsError, match=rf"cannot create registered model '{target}': ") as error:
        copy_to(client, name, 1, target, None)
    assert "\n" not in str(error.value)
    done = _cli("promote", "--model-name", name, "--copy-to", target, "--tracking-uri", mlflow_uri)
    assert _error_line(done) == f"tlops: error: {error.value}"
    assert _aliases(client, name) == {CHAMPION: "1", CHALLENGER: "2"}
