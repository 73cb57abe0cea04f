"""A tracking server that does not answer: the advice fits where the URI came from and what the command needs."""

from __future__ import annotations

import pytest

from tlops.cli import main
from tlops.errors import TlopsError
from tlops.promotion.tracking import check_tracking_server, tracking_uri_source

DOWN = "http://127.0.0.1:9"  # the discard port: nothing listens


def _advice(environ: dict[str, str], **options: object) -> str:
    with pytest.raises(TlopsError) as error:
        check_tracking_server(DOWN, 2.0, environ, **options)  # type: ignore[arg-type]
    message = str(error.value)
    assert message.startswith(f"MLflow server at {DOWN} does not answer") and "\n" not in message, message
    return message.split("; ", 1)[1]


def test_the_source_of_the_uri_is_the_variable_only_when_it_holds_that_uri() -> None:
    assert tracking_uri_source(DOWN, {"MLFLOW_TRACKING_URI": DOWN}) == "MLFLOW_TRACKING_URI"
    assert tracking_uri_source(DOWN, {"MLFLOW_TRACKING_URI": "http://other:5000"}) == "--tracking-uri"
    assert tracking_uri_source(DOWN, {}) == "--tracking-uri"


def test_advice_for_a_command_with_a_local_store() -> None:
    assert _advice({"MLFLOW_TRACKING_URI": DOWN}) == (
        "start it, or unset MLFLOW_TRACKING_URI to track into a local sqlite store"
    )
    assert _advice({}) == "start it, or leave out --tracking-uri to track into a local sqlite store"
    assert _advice({"MLFLOW_TRACKING_URI": "http://other:5000"}) == (
        "start it, or leave out --tracking-uri and unset MLFLOW_TRACKING_URI to track into a local sqlite store"
    )
    assert "leave out --tracking-uri" in _advice({"MLFLOW_TRACKING_URI": DOWN}, source="--tracking-uri")


@pytest.mark.parametrize("environ", [{}, {"MLFLOW_TRACKING_URI": DOWN}])
def test_advice_for_a_command_without_a_local_store_never_says_unset(environ: dict[str, str]) -> None:
    advice = _advice(environ, local_store=False)
    assert "unset" not in advice and "local" not in advice and "holds the registry" in advice, advice


@pytest.mark.parametrize(
    "command", [["models", "--model-name", "m"], ["promote", "--model-name", "m", "--version", "1"]]
)
@pytest.mark.parametrize("from_flag", [True, False])
def test_models_and_promote_never_advise_a_local_store(
    command: list[str], from_flag: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if from_flag:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        command = [*command, "--tracking-uri", DOWN]
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", DOWN)

    status = main(command)

    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tlops: error: MLflow server at {DOWN} does not answer"), lines
    assert "unset" not in lines[0] and "local sqlite" not in lines[0], lines
    assert ("MLFLOW_TRACKING_URI" in lines[0]) != from_flag, lines
