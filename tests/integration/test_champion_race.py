"""The gate without a race, against the real MLflow server: register moves ``champion`` only while the champion
is still the version the gate compared against."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tlops.errors import TlopsError
from tlops.promotion.aliases import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION
from tlops.promotion.registry import RegistryConfig
from tlops.steps.outputs import Comparison, RunSummary
from tlops.steps.register import register

pytestmark = pytest.mark.integration

TLOPS = str(Path(sys.executable).parent / "tlops")


@pytest.fixture
def config(mlflow_uri: str) -> RegistryConfig:
    return RegistryConfig(tracking_uri=mlflow_uri, experiment="tlops-tests", model_name=f"race-{uuid.uuid4().hex[:8]}")


def _evaluation(
    trained_model: dict[str, Path], tmp_path: Path, promote: bool, champion: int | None, registry: tuple[str, str]
) -> Path:
    """The evaluate step's output with the gate's verdict set: ``promote`` against ``champion`` in ``registry``."""
    folder = tmp_path / f"evaluation-{uuid.uuid4().hex[:6]}"
    shutil.copytree(trained_model["evaluation"], folder)
    reasons = [f"constructed verdict: {'promote' if promote else 'keep'} against {champion}"]
    Comparison(promote, champion, reasons, tracking_uri=registry[0], model_name=registry[1]).write(folder)
    return folder


def _register(trained_model: dict[str, Path], evaluation: Path, config: RegistryConfig) -> RunSummary:
    return register(trained_model["data"], trained_model["model"], evaluation, config)


def _aliases(config: RegistryConfig) -> dict[str, int]:
    from mlflow import MlflowClient

    registered = MlflowClient(config.tracking_uri).get_registered_model(config.model_name)
    return {alias: int(version) for alias, version in registered.aliases.items()}


def test_a_manual_promotion_after_the_gate_keeps_the_champion(trained_model, tmp_path, config):
    registry = (config.tracking_uri, config.model_name)
    first = _register(trained_model, _evaluation(trained_model, tmp_path, True, None, registry), config)
    second = _register(trained_model, _evaluation(trained_model, tmp_path, False, 1, registry), config)
    assert (first.aliases, second.aliases) == ([CHALLENGER, CHAMPION], [CHALLENGER])
    # The gate of a third run passes against version 1; before it registers, a person promotes version 2, which the
    # gate refused: that takes --force and a reason.
    gated = _evaluation(trained_model, tmp_path, True, 1, registry)
    command = [TLOPS, "promote", "--model-name", config.model_name, "--version", "2"]
    command += ["--tracking-uri", config.tracking_uri]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "tlops: error: version 2 was refused by the gate (constructed verdict: keep against 1); pass --force "
        "--reason TEXT to override"
    ]
    assert _aliases(config) == {CHAMPION: 1, CHALLENGER: 2}
    forced = [*command, "--force", "--reason", "the night shift needs it"]
    promoted = subprocess.run(forced, capture_output=True, text=True, timeout=120, check=False)
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.strip().endswith("; forced: the night shift needs it")
    assert _aliases(config) == {CHAMPION: 2, PREVIOUS_CHAMPION: 1, CHALLENGER: 2}

    third = _register(trained_model, gated, config)

    assert third.version == 3 and third.aliases == [CHALLENGER]
    assert _aliases(config) == {CHAMPION: 2, PREVIOUS_CHAMPION: 1, CHALLENGER: 3}
    assert third.champion["version"] == 2
    assert third.champion["reason"].startswith(
        "the champion changed after the gate compared against version 1: it is version 2 now, left alone; "
    )
    assert third.gate == {
        "promote": True,
        "champion_version": 1,
        "reasons": ["constructed verdict: promote against 1"],
        "thresholds": None,  # a constructed verdict records no thresholds
    }


def test_a_verdict_that_still_holds_moves_the_champion(trained_model, tmp_path, config):
    registry = (config.tracking_uri, config.model_name)
    _register(trained_model, _evaluation(trained_model, tmp_path, True, None, registry), config)

    second = _register(trained_model, _evaluation(trained_model, tmp_path, True, 1, registry), config)

    assert second.aliases == [CHALLENGER, CHAMPION]
    assert second.champion == {
        "version": 2,
        "reason": f"the gate passed against version 1: the new version replaces it ({PREVIOUS_CHAMPION})",
    }
    assert _aliases(config) == {CHAMPION: 2, PREVIOUS_CHAMPION: 1, CHALLENGER: 2}


def test_two_first_runs_the_second_to_register_does_not_take_the_champion(trained_model, tmp_path, config):
    registry = (config.tracking_uri, config.model_name)
    # Both gates ran while the model had no champion; the first to register becomes it.
    evaluations = [_evaluation(trained_model, tmp_path, True, None, registry) for _ in range(2)]
    first = _register(trained_model, evaluations[0], config)
    second = _register(trained_model, evaluations[1], config)

    assert first.champion == {"version": 1, "reason": "no champion yet: the new version becomes it"}
    assert second.aliases == [CHALLENGER] and second.champion["version"] == 1
    assert second.champion["reason"].startswith(
        "the champion changed after the gate compared against no champion: it is version 1 now, left alone"
    )
    assert _aliases(config) == {CHAMPION: 1, CHALLENGER: 2}


def test_a_verdict_from_another_registry_does_not_move_the_champion(trained_model, tmp_path, config):
    ours = (config.tracking_uri, config.model_name)
    _register(trained_model, _evaluation(trained_model, tmp_path, True, None, ours), config)
    # A gate that passed against "version 1" of another model name says nothing about this champion.
    elsewhere = _evaluation(trained_model, tmp_path, True, 1, (config.tracking_uri, "another-model"))

    second = _register(trained_model, elsewhere, config)

    assert second.aliases == [CHALLENGER]
    assert second.champion == {
        "version": 1,
        "reason": "no gate compared against this registry's champion: version 1 stays",
    }
    assert _aliases(config) == {CHAMPION: 1, CHALLENGER: 2}


def test_two_runs_registering_at_once_lose_no_update(trained_model, tmp_path, config):
    import json

    registry = (config.tracking_uri, config.model_name)
    first = _register(trained_model, _evaluation(trained_model, tmp_path, True, None, registry), config)
    assert first.version == 1
    # Two pipelines' gates both passed against version 1; their register steps (processes) run at the same time.
    gated = [_evaluation(trained_model, tmp_path, True, 1, registry) for _ in range(2)]
    register = [TLOPS, "register", "--dataset", str(trained_model["data"]), "--model", str(trained_model["model"])]
    target = ["--tracking-uri", config.tracking_uri, "--model-name", config.model_name]
    commands = [[*register, "--evaluation", str(evaluation), *target] for evaluation in gated]
    processes = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    outputs = [process.communicate(timeout=600) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    summaries = [json.loads(out[out.index("{") :]) for out, _ in outputs]

    assert sorted(s["version"] for s in summaries) == [2, 3]  # both versions exist
    (winner,) = [s for s in summaries if CHAMPION in s["aliases"]]  # exactly one took the champion ...
    (loser,) = [s for s in summaries if s is not winner]
    assert winner["champion"]["reason"].startswith("the gate passed against version 1")
    # ... and the other saw that its verdict was stale, instead of overwriting the winner.
    assert loser["champion"] == {
        "version": winner["version"],
        "reason": f"the champion changed after the gate compared against version 1: it is version "
        f"{winner['version']} now, left alone; evaluate again, or promote by hand (tlops promote --version "
        f"{loser['version']})",
    }
    aliases = _aliases(config)
    assert aliases[CHAMPION] == winner["version"] and aliases[PREVIOUS_CHAMPION] == 1


def test_the_champion_lock_serializes_and_takes_over_a_dead_claim(mlflow_uri, config):
    import threading
    import time

    from mlflow import MlflowClient

    from tlops.promotion.aliases import LOCK_TAG, champion_lock

    client = MlflowClient(mlflow_uri)
    client.create_registered_model(config.model_name)
    inside, overlaps = [], []

    def critical_section() -> None:
        with champion_lock(client, config.model_name, settle=0.3):
            inside.append(threading.get_ident())
            if len(inside) > 1:
                overlaps.append(list(inside))
            time.sleep(0.2)
            inside.remove(threading.get_ident())

    threads = [threading.Thread(target=critical_section) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert overlaps == [] and LOCK_TAG not in client.get_registered_model(config.model_name).tags
    # A claim left by a process that died (older than the lease) does not block; a live one does, then times out.
    client.set_registered_model_tag(config.model_name, LOCK_TAG, f"dead@{time.time() - 3600:.3f}")
    with champion_lock(client, config.model_name, settle=0.1):
        pass
    client.set_registered_model_tag(config.model_name, LOCK_TAG, f"alive@{time.time():.3f}")
    lock = champion_lock(client, config.model_name, settle=0.1, wait=0.5)
    with pytest.raises(TlopsError, match="another run has held the champion lock"), lock:
        pass
