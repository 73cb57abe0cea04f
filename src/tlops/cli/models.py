"""``tlops models``: the versions of a registered model, their aliases, test metrics, gate decision and lineage."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

COLUMNS = ("version", "aliases", "created", "accuracy", "macro-F1", "ECE", "gate", "digest", "backbone", "strategy")
DIGEST_SHOWN = 12


def command_models(args: argparse.Namespace) -> int:
    """``tlops models``: print the versions of a registered model as a table or JSON, newest first."""
    from mlflow import MlflowClient

    from tlops.promotion.tracking import check_tracking_server, redact_uri, registry_uri
    from tlops.promotion.versions import list_versions

    uri = registry_uri(args.tracking_uri, Path.cwd())
    if not args.tracking_uri:  # say which store was taken when none was named
        logger.info("registry: %s", redact_uri(uri))
    check_tracking_server(uri, local_store=False)  # the registry is only where the URI says
    rows = list_versions(MlflowClient(uri), args.model_name)
    if args.json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
    elif not rows:
        print(f"{args.model_name}: no versions")
    else:
        print(format_table(rows))
    return 0


def format_table(rows: list) -> str:
    """The rows (:class:`tlops.promotion.versions.VersionRow`) as aligned plain-text columns under a header."""
    cells = [COLUMNS, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join(_line(line, widths) for line in cells)


def _line(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def _cells(row) -> tuple[str, ...]:
    gate = row.gate or "-"
    return (
        str(row.version),
        ",".join(row.aliases) or "-",
        row.created.replace("+00:00", "Z") or "-",
        _number(row.test_accuracy),
        _number(row.test_macro_f1),
        _number(row.test_ece),
        f"{gate} (forced)" if row.forced else gate,
        row.dataset_digest[:DIGEST_SHOWN] or "-",
        row.backbone or "-",
        row.strategy or "-",
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
