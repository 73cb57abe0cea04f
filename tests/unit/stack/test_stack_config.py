"""``tlops stack up|status|down`` as README.md's "Local stack" shows them, and what they refuse.

The README's commands run as subprocesses of the installed ``tlops`` in a temporary working directory (so the
stack's folder is that directory's ``.tlops-stack``), through :func:`test_readme.readme_command`, exactly as typed
(the default ports; the other tests pick free ones). Every test stops what it started, also when it fails. The tests
that start services are marked ``integration``; those that only check what ``up``, ``down`` and ``status`` refuse
are not.
"""

from __future__ import annotations

from pathlib import Path

from tlops.stack.config import DEFAULT_MLFLOW_PORT, DEFAULT_S3_PORT, Ports


def test_the_defaults_are_the_cluster_ports_and_the_stack_folder() -> None:
    from tlops.cli.parser import build_parser

    args = build_parser().parse_args(["stack", "up"])
    assert (args.dir, args.s3_port, args.mlflow_port) == (Path(".tlops-stack"), 8333, 5000)
    assert (DEFAULT_S3_PORT, DEFAULT_MLFLOW_PORT) == (8333, 5000)
    ports = Ports.derived()
    assert (ports.master, ports.volume, ports.filer, ports.filer_grpc) == (8334, 8335, 8336, 18336)
