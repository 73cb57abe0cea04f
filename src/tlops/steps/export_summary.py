"""The export's lines at the end of ``tlops run``: the verdict, where it is registered, sizes and latencies."""

from __future__ import annotations

from typing import Any


def export_lines(export: dict[str, Any] | None) -> list[str]:
    """The summary lines of an export outcome (none without an export)."""
    if not export:
        return []
    registered = export.get("registered")
    if registered:
        head = (
            f"  export     {export['format']} registered as {registered['registered_model']} version "
            f"{registered['version']} [{', '.join(registered['aliases'])}]  ({registered['model_uri']})"
        )
    else:
        head = f"  export     {export['format']} refused: nothing of it registered"
    lines = [head, f"             {export['reason']}"]
    rows = export.get("sizes_latency") or []
    if rows:
        lines.append(f"             {'':8} {'size MB':>8} {'batch 1 ms':>11} {'batch 32 ms':>12}")
        lines += [
            f"             {row['format']:<8} {row['size_mb']:>8.1f} {row['latency_ms_batch1']:>11.2f} "
            f"{row['latency_ms_batch32']:>12.1f}"
            for row in rows
        ]
    return lines
