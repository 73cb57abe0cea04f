"""The versions of a registered model, and promotion from one registered model to another (staging -> prod).

:func:`list_versions` reads what ``tlops models`` shows: each version's aliases, test metrics, the promotion gate's
decision and lineage, from the version's tags (the run's metrics where a tag is missing). :func:`copy_to` copies a
version into another registered model and makes the copy that model's champion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from tlops.errors import TlopsError
from tlops.promotion.aliases import (
    CHAMPION,
    Promotion,
    champion_lock,
    check_gate,
    check_override,
    get_version,
    move_champion,
    record_promotion,
    registered_model_exists,
    version_of_alias,
)

METRICS = ("test_accuracy", "test_macro_f1", "test_ece")
COPIED_FROM_TAG = "promotion.copied_from"
_SHOWN_MODELS = 10


@dataclass
class VersionRow:
    """One registered model version, as ``tlops models`` shows it.

    Attributes:
        version: The version number.
        aliases: Its aliases (``champion``, ``challenger``, ``previous-champion``).
        created: When it was registered (ISO 8601, UTC).
        test_accuracy: Test accuracy (tag ``test_accuracy``, else the run's metric; ``None`` when neither).
        test_macro_f1: Test macro-F1 (tag ``test_macro_f1``, else the run's metric).
        test_ece: Test expected calibration error (tag ``test_ece``, else the run's metric).
        gate: The promotion gate's decision (tag ``gate.decision``: ``promote``, ``keep``, ``first``; ``""``).
        gate_metric: The metric the gate decided on (tag ``gate.metric``).
        dataset_digest: The training data's digest (tag ``dataset_digest``).
        backbone: The backbone (tag ``backbone``).
        strategy: The training strategy (tag ``strategy``).
        forced: Whether it was promoted against the gate's refusal (tag ``promotion.forced``).
        run_id: The MLflow run that logged it.
    """

    version: int
    aliases: list[str] = field(default_factory=list)
    created: str = ""
    test_accuracy: float | None = None
    test_macro_f1: float | None = None
    test_ece: float | None = None
    gate: str = ""
    gate_metric: str = ""
    dataset_digest: str = ""
    backbone: str = ""
    strategy: str = ""
    forced: bool = False
    run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The row as a JSON-ready dict."""
        return asdict(self)


@dataclass
class Copied(Promotion):
    """A version copied into another registered model, which made the copy its champion.

    ``registered_model``, ``champion`` and ``previous`` describe the target model.

    Attributes:
        source_model: The registered model the version was copied from.
        source_version: Its version there.
    """

    source_model: str = ""
    source_version: int = 0

    @property
    def source_uri(self) -> str:
        """``models:/NAME/VERSION`` of the source."""
        return f"models:/{self.source_model}/{self.source_version}"


def list_versions(client, model_name: str) -> list[VersionRow]:
    """The versions of a registered model, newest first.

    Args:
        client: ``MlflowClient`` of the registry.
        model_name: Registered model name.

    Raises:
        TlopsError: when the registered model does not exist, naming it and the models that do.
    """
    _check_model_exists(client, model_name)
    aliases: dict[int, list[str]] = {}
    for alias, version in (client.get_registered_model(model_name).aliases or {}).items():
        aliases.setdefault(int(version), []).append(alias)
    versions = sorted(_search_versions(client, model_name), key=lambda v: int(v.version), reverse=True)
    return [_row(client, version, sorted(aliases.get(int(version.version), []))) for version in versions]


def _check_model_exists(client, model_name: str) -> None:
    if registered_model_exists(client, model_name):
        return
    names = [model.name for model in client.search_registered_models(max_results=_SHOWN_MODELS)]
    known = f" (registered models: {', '.join(names)})" if names else " (the registry has no registered models)"
    raise TlopsError(
        f"registered model {model_name!r} does not exist at {client.tracking_uri}{known}; pass --model-name NAME"
    )


def _search_versions(client, model_name: str) -> list:
    quote = '"' if "'" in model_name else "'"
    found, token = [], None
    while True:
        page = client.search_model_versions(f"name={quote}{model_name}{quote}", page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _row(client, model_version, aliases: list[str]) -> VersionRow:
    tags = model_version.tags or {}
    metrics = _metrics(client, tags, model_version.run_id)
    return VersionRow(
        version=int(model_version.version),
        aliases=aliases,
        created=_utc(model_version.creation_timestamp),
        **metrics,
        gate=tags.get("gate.decision", ""),
        gate_metric=tags.get("gate.metric", ""),
        dataset_digest=tags.get("dataset_digest", ""),
        backbone=tags.get("backbone", ""),
        strategy=tags.get("strategy", ""),
        forced=tags.get("promotion.forced") == "true",
        run_id=model_version.run_id or "",
    )


def _metrics(client, tags: dict[str, str], run_id: str | None) -> dict[str, float | None]:
    """The test metrics from the version's tags; the run's metrics fill the missing ones."""
    values = {name: _number(tags.get(name)) for name in METRICS}
    if any(value is None for value in values.values()) and run_id:
        logged = _run_metrics(client, run_id)
        values = {name: value if value is not None else logged.get(name) for name, value in values.items()}
    return values


def _run_metrics(client, run_id: str) -> dict[str, float]:
    """The run's metrics; none when the run was deleted or cannot be read."""
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_run(run_id).data.metrics)
    except MlflowException:
        return {}


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _utc(milliseconds: int | None) -> str:
    if not milliseconds:
        return ""
    return datetime.fromtimestamp(milliseconds / 1000, tz=UTC).isoformat(timespec="seconds")


def copy_to(
    client,
    model_name: str,
    version_or_alias: int | str | None,
    target_name: str,
    reason: str | None = None,
    *,
    force: bool = False,
) -> Copied:
    """Copy a version into registered model ``target_name`` (created if needed) and make the copy its champion.

    The copy keeps the source version's tags and gets ``promotion.copied_from`` (``models:/NAME/VERSION``) and
    the tags of a manual move (see :func:`tlops.promotion.registry.promote`); the target's former champion becomes
    its ``previous-champion``.

    Args:
        client: ``MlflowClient`` of the registry.
        model_name: The registered model to copy from.
        version_or_alias: Its version number, or an alias (``None``: the ``champion``).
        target_name: The registered model to copy into.
        reason: Why it is copied (recorded; required with ``force``).
        force: Copy a version the promotion gate refused.

    Raises:
        TlopsError: when the source version does not exist, the gate refused it without ``force``, the target's
            champion has other classes, or the target name is invalid (nothing is copied).
    """
    reason = check_override(force, reason)
    _check_model_exists(client, model_name)
    source = get_version(client, model_name, _resolve(client, model_name, version_or_alias))
    if target_name == model_name:
        raise TlopsError(f"--copy-to names {model_name!r} itself; promote within it with tlops promote --version N")
    forced = check_gate(source, force)
    existed = registered_model_exists(client, target_name)
    current = version_of_alias(client, target_name, CHAMPION) if existed else None
    if current is not None:
        _check_same_classes(client, (model_name, int(source.version)), (target_name, current))
    if not existed:
        _create_model(client, target_name)
    copy = _copy(client, f"models:/{model_name}/{source.version}", target_name, existed)
    try:
        with champion_lock(client, target_name):
            current = version_of_alias(client, target_name, CHAMPION)  # again: it may have moved meanwhile
            move_champion(client, target_name, int(copy.version), current)
        extra = {COPIED_FROM_TAG: f"models:/{model_name}/{source.version}"}
        record_promotion(client, target_name, int(copy.version), reason, forced, extra)
    except Exception:
        _remove_copy(client, target_name, copy.version, existed)
        raise
    return Copied(target_name, int(copy.version), current, forced, reason, model_name, int(source.version))


def _resolve(client, model_name: str, version_or_alias: int | str | None) -> int:
    """The version number a version or alias names (``None``: the champion)."""
    if version_or_alias is None:
        version_or_alias = CHAMPION
    if isinstance(version_or_alias, int) or str(version_or_alias).isdigit():
        return int(version_or_alias)
    version = version_of_alias(client, model_name, str(version_or_alias))
    if version is None:
        raise TlopsError(f"{model_name!r} has no {version_or_alias!r} alias; pass --version N")
    return version


def _check_same_classes(client, source: tuple[str, int], target: tuple[str, int]) -> None:
    """Refuse a copy whose classes differ from the target champion's (when both versions record them)."""
    source_classes, target_classes = _classes(client, *source), _classes(client, *target)
    if source_classes is None or target_classes is None or source_classes == target_classes:
        return
    raise TlopsError(
        f"the champion of {target[0]!r} (version {target[1]}) has {len(target_classes)} classes and {source[0]!r} "
        f"version {source[1]} has {len(source_classes)}, not the same classes in the same order: the copy would "
        f"change what {target[0]!r} predicts; use another --copy-to name"
    )


def _classes(client, model_name: str, version: int) -> list[str] | None:
    """The ``classes`` in the model's metadata (``None`` when it records none)."""
    import os
    from unittest import mock

    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    with mock.patch.dict(os.environ, {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):  # keep stderr for errors
        metadata = mlflow.models.get_model_info(f"models:/{model_name}/{version}").metadata or {}
    return metadata.get("classes")


def _create_model(client, target_name: str) -> None:
    """Create the target registered model, turning MLflow's refusal of the name into one line."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(target_name)
    except MlflowException as error:
        raise TlopsError(f"cannot create registered model {target_name!r}: {_first_line(error)}") from None


def _copy(client, source_uri: str, target_name: str, existed: bool):
    """Copy the version; on failure remove a target model created for it.

    MLflow's copy creates the target model itself and, finding it created (by :func:`_create_model`, which
    names a refused name in one line), prints "Registered model ... already exists" to stderr, then "Copied
    version ...": both are kept off the terminal, where they contradicted tlops' own line for a new model.
    """
    import contextlib
    import io

    from mlflow.exceptions import MlflowException

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return client.copy_model_version(src_model_uri=source_uri, dst_name=target_name)
    except MlflowException as error:
        if not existed:
            client.delete_registered_model(target_name)
        raise TlopsError(f"copying {source_uri} to {target_name!r} failed: {_first_line(error)}") from None


def _remove_copy(client, target_name: str, version: str, existed: bool) -> None:
    client.delete_model_version(target_name, version)
    if not existed:
        client.delete_registered_model(target_name)


def _first_line(error: Exception) -> str:
    message = str(getattr(error, "message", None) or error).strip()
    return message.splitlines()[0] if message else type(error).__name__
