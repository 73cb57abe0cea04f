"""``tlops promote``: move the champion alias, roll back, or copy a version into another registered model."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tlops.errors import TlopsError

logger = logging.getLogger(__name__)


def command_promote(args: argparse.Namespace) -> int:
    """``tlops promote``: move the champion alias to a version, roll back, or copy a version (``--copy-to``)."""
    from mlflow import MlflowClient

    from tlops.promotion.aliases import promote
    from tlops.promotion.tracking import check_tracking_server, redact_uri, registry_uri

    if args.copy_to is not None and args.rollback:
        raise TlopsError(
            "--copy-to copies --version N or the champion, not a rollback; to roll back the target, run "
            f"tlops promote --model-name {args.copy_to} --rollback"
        )
    uri = registry_uri(args.tracking_uri, Path.cwd())
    if not args.tracking_uri:  # say which store was taken when none was named
        logger.info("registry: %s", redact_uri(uri))
    check_tracking_server(uri, local_store=False)  # the registry is only where the URI says
    client = MlflowClient(uri)
    if args.copy_to is not None:
        return _copy(client, args)
    result = promote(client, args.model_name, args.version, args.rollback, force=args.force, reason=args.reason)
    previous = f" (was version {result.previous})" if result.previous not in (None, result.champion) else ""
    print(f"{result.registered_model}: champion is version {result.champion}{previous}{_why(result)}")
    return 0


def _copy(client, args: argparse.Namespace) -> int:
    from tlops.promotion.versions import copy_to

    result = copy_to(client, args.model_name, args.version, args.copy_to, args.reason, force=args.force)
    previous = f" (was version {result.previous})" if result.previous is not None else ""
    print(
        f"copied {result.source_model} version {result.source_version} to {result.registered_model} as version "
        f"{result.champion}: champion of {result.registered_model}{previous}{_why(result)}"
    )
    return 0


def _why(result) -> str:
    """``; forced: REASON`` or ``; reason: REASON`` for a manual move with a reason (empty without one)."""
    if result.forced:
        return f"; forced: {result.reason}"
    return f"; reason: {result.reason}" if result.reason else ""
