"""``tlops promote``: move the champion alias, or roll back."""

from __future__ import annotations

import argparse

from tlops.errors import TlopsError


def command_promote(args: argparse.Namespace) -> int:
    """``tlops promote``: move the champion alias to a version, or roll back."""
    from mlflow import MlflowClient

    from tlops.promotion.registry import promote
    from tlops.promotion.tracking import check_tracking_server

    if not args.tracking_uri:
        raise TlopsError("no registry to promote in: set MLFLOW_TRACKING_URI or pass --tracking-uri")
    check_tracking_server(args.tracking_uri)
    result = promote(MlflowClient(args.tracking_uri), args.model_name, args.version, args.rollback)
    previous = f" (was version {result.previous})" if result.previous not in (None, result.champion) else ""
    print(f"{result.registered_model}: champion is version {result.champion}{previous}")
    return 0
