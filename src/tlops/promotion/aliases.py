"""The registry's aliases: ``champion``, ``challenger`` and ``previous-champion``, moved by a run or by hand.

A run makes its version the ``challenger``, and the ``champion`` only while the gate's verdict still holds (a
compare-then-set). ``tlops promote`` moves the champion by hand, records who, why and when on the version, and
asks for ``--force --reason`` to promote a version the gate refused.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from tlops.errors import TlopsError

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"


def registered_model_exists(client, name: str) -> bool:
    """Whether the registered model exists."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        return False
    return True


@dataclass
class AliasMove:
    """What :func:`assign_aliases` did.

    Attributes:
        aliases: The aliases the new version holds now.
        champion: The champion version now (``None`` when there is none).
        reason: Why the champion is that version.
    """

    aliases: list[str]
    champion: int | None
    reason: str


def assign_aliases(
    client, model_name: str, version: str | int, promote: bool | None = None, compared_champion: int | None = None
) -> AliasMove:
    """Make ``version`` the ``challenger``, and the ``champion`` when the gate's verdict still holds.

    The gate compared the new version with ``compared_champion``. The champion moves only if it is still that
    version (a compare-then-set under :func:`champion_lock`: if a manual promotion or a concurrent run moved it
    meanwhile, the verdict is stale and the champion is left alone).

    Args:
        client: ``MlflowClient`` of the registry.
        model_name: Registered model name.
        version: The new version.
        promote: The promotion gate's verdict; ``None`` when no comparison was made (then only a model without a
            champion gets one).
        compared_champion: The champion version the gate compared against (``None``: there was none).
    """
    version = int(version)
    client.set_registered_model_alias(model_name, CHALLENGER, str(version))
    with champion_lock(client, model_name):
        return _compare_then_set(client, model_name, version, promote, compared_champion)


def _compare_then_set(
    client, model_name: str, version: int, promote: bool | None, compared_champion: int | None
) -> AliasMove:
    current = version_of_alias(client, model_name, CHAMPION)
    if promote is None:
        move = current is None
        reason = (
            "no champion yet: the new version becomes it"
            if move
            else f"no gate compared against this registry's champion: version {current} stays"
        )
    elif current != compared_champion:
        move = False
        reason = (
            f"the champion changed after the gate compared against {_describe(compared_champion)}: it is "
            f"{_describe(current)} now, left alone; evaluate again, or promote by hand (tlops promote --version "
            f"{version})"
        )
    elif promote:
        move = True
        reason = (
            "no champion yet: the new version becomes it"
            if current is None
            else f"the gate passed against version {current}: the new version replaces it ({PREVIOUS_CHAMPION})"
        )
    else:
        move = False
        reason = f"the gate kept version {current}"
    if not move:
        return AliasMove([CHALLENGER], current, reason)
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    if current is not None:
        client.set_registered_model_alias(model_name, PREVIOUS_CHAMPION, str(current))
    return AliasMove([CHALLENGER, CHAMPION], version, reason)


def _describe(version: int | None) -> str:
    return "no champion" if version is None else f"version {version}"


@dataclass
class Promotion:
    """An alias move in the registry: which version is champion now, and which one it replaced.

    Attributes:
        forced: Whether the move overrode the promotion gate's refusal (``--force``).
        reason: Why the version was moved by hand (``--reason``; empty when none was given).
    """

    registered_model: str
    champion: int
    previous: int | None
    forced: bool = False
    reason: str = ""


def version_of_alias(client, model_name: str, alias: str) -> int | None:
    """The version an alias points at; ``None`` when it points nowhere."""
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def promote(
    client,
    model_name: str,
    version: int | None = None,
    rollback: bool = False,
    *,
    force: bool = False,
    reason: str | None = None,
) -> Promotion:
    """Make a version the ``champion``, keeping the one it replaces as ``previous-champion`` for a rollback.

    A move is recorded on the promoted version as the tags ``promotion.by``, ``promotion.reason``,
    ``promotion.forced`` and ``promotion.time``. A version the promotion gate refused (tag ``gate.decision`` is
    ``keep``) needs ``force`` and a ``reason``; a rollback returns to the former champion and needs neither.

    Args:
        client: ``MlflowClient`` of the registry.
        model_name: Registered model name.
        version: Version to promote; ``None`` promotes the current ``challenger``.
        rollback: Promote the ``previous-champion`` instead (``version`` must be ``None``).
        force: Promote a version the gate refused.
        reason: Why the version is promoted by hand (required with ``force``).

    Raises:
        TlopsError: when the model, the version or the alias to promote does not exist, the gate refused the
            version and ``force`` is not set, or ``force`` comes without a reason (nothing is moved).
    """
    reason = check_override(force, reason)
    if not registered_model_exists(client, model_name):
        raise TlopsError(f"registered model {model_name!r} does not exist; check --model-name and the tracking URI")
    if rollback:
        version = version_of_alias(client, model_name, PREVIOUS_CHAMPION)
        if version is None:
            raise TlopsError(f"{model_name!r} has no {PREVIOUS_CHAMPION!r} alias: there is nothing to roll back to")
    elif version is None:
        version = version_of_alias(client, model_name, CHALLENGER)
        if version is None:
            raise TlopsError(f"{model_name!r} has no {CHALLENGER!r}; pass --version N")
    found = get_version(client, model_name, version)
    with champion_lock(client, model_name):
        current = version_of_alias(client, model_name, CHAMPION)
        if current == version:
            return Promotion(model_name, version, version_of_alias(client, model_name, PREVIOUS_CHAMPION))
        forced = False if rollback else check_gate(found, force)
        move_champion(client, model_name, version, current)
    record_promotion(client, model_name, version, reason, forced)
    return Promotion(model_name, version, current, forced, reason)


PROMOTED_BY = "tlops promote"
GATE_DECISION_TAG = "gate.decision"
GATE_REASONS_TAG = "gate.reasons"
GATE_REFUSED = "keep"


def check_override(force: bool, reason: str | None) -> str:
    """The reason of a manual move, stripped; ``--force`` needs one.

    Raises:
        TlopsError: when ``force`` is set and the reason is missing or blank.
    """
    reason = (reason or "").strip()
    if force and not reason:
        raise TlopsError("--force needs --reason TEXT (recorded on the version)")
    return reason


def get_version(client, model_name: str, version: int | str):
    """The registered ``ModelVersion``.

    Raises:
        TlopsError: when the model has no such version, naming the command that lists them.
    """
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(model_name, str(version))
    except MlflowException:
        raise TlopsError(
            f"{model_name!r} has no version {version}; list its versions with tlops models --model-name {model_name}"
        ) from None


def check_gate(model_version, force: bool) -> bool:
    """Whether promoting ``model_version`` overrides the gate's refusal.

    Raises:
        TlopsError: when the gate refused the version (tag ``gate.decision`` is ``keep``) and ``force`` is unset.
    """
    tags = model_version.tags or {}
    if tags.get(GATE_DECISION_TAG) != GATE_REFUSED:
        return False
    if force:
        return True
    first = _first_gate_reason(tags.get(GATE_REASONS_TAG, ""))
    why = f" ({first})" if first else ""
    raise TlopsError(
        f"version {model_version.version} was refused by the gate{why}; pass --force --reason TEXT to override"
    )


def _first_gate_reason(reasons: str) -> str:
    """The first of the gate's reasons, stored as a JSON list or joined by `` | `` or newlines."""
    import json

    text = reasons.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            items = None
        if isinstance(items, list):
            return str(items[0]).strip() if items else ""
    return text.replace("\n", " | ").split(" | ")[0].strip()


def move_champion(client, model_name: str, version: int, current: int | None) -> None:
    """Point ``champion`` at ``version``; the replaced ``current`` becomes ``previous-champion``."""
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    if current is not None:
        client.set_registered_model_alias(model_name, PREVIOUS_CHAMPION, str(current))


def record_promotion(
    client, model_name: str, version: int, reason: str, forced: bool, extra: dict[str, str] | None = None
) -> None:
    """Tag a manual move on the version: ``promotion.by``, ``.reason``, ``.forced``, ``.time`` (UTC) and ``extra``."""
    from datetime import UTC, datetime

    tags = {
        "promotion.by": PROMOTED_BY,
        "promotion.reason": reason,
        "promotion.forced": "true" if forced else "false",
        "promotion.time": datetime.now(UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, value)


LOCK_TAG = "tlops.champion_lock"
LOCK_SETTLE_S = 0.5  # a claim counts once it survived this long: a concurrent claim overwrites it within it
LOCK_LEASE_S = 60.0  # a claim older than this was left by a process that died: ignored
LOCK_WAIT_S = 120.0


@contextlib.contextmanager
def champion_lock(
    client, model_name: str, *, settle: float = LOCK_SETTLE_S, lease: float = LOCK_LEASE_S, wait: float = LOCK_WAIT_S
) -> Iterator[None]:
    """Hold the registered model's champion lock while reading and moving the champion.

    MLflow has no compare-and-set for aliases, so two runs that both read the champion and then both set it
    would lose one update. The lock is a tag on the registered model: a run writes its claim, waits ``settle``
    seconds and reads the tag back; only the last writer sees its own claim, the others wait and try again. A
    claim older than ``lease`` seconds is stale (its process died) and is taken over. The critical section (read
    the champion, set two aliases) takes well under ``settle``.

    Raises:
        TlopsError: when the lock stays held by others for ``wait`` seconds.
    """
    token = f"{uuid.uuid4().hex}@{time.time():.3f}"
    deadline = time.monotonic() + wait
    while True:
        holder = (client.get_registered_model(model_name).tags or {}).get(LOCK_TAG)
        if holder and not _stale(holder, lease):
            if time.monotonic() > deadline:
                raise TlopsError(
                    f"another run has held the champion lock of {model_name!r} for over {wait:.0f} s (tag "
                    f"{LOCK_TAG} = {holder}); retry, or delete the tag if no run is registering"
                )
            time.sleep(settle * (0.5 + random.random()))
            continue
        client.set_registered_model_tag(model_name, LOCK_TAG, token)
        time.sleep(settle)
        if (client.get_registered_model(model_name).tags or {}).get(LOCK_TAG) == token:
            break
    try:
        yield
    finally:
        if (client.get_registered_model(model_name).tags or {}).get(LOCK_TAG) == token:
            client.delete_registered_model_tag(model_name, LOCK_TAG)


def _stale(claim: str, lease: float) -> bool:
    """Whether a lock claim (``token@unix-time``) is older than the lease, or unreadable."""
    try:
        return time.time() - float(claim.rpartition("@")[2]) > lease
    except ValueError:
        return True
