"""The ``tlops`` command line: run the pipeline locally or on Kubeflow, compile it, run one step, promote.

The command line is an edge: it reads the environment, configures logging and turns :class:`TlopsError` into
one line on stderr and exit status 2.
"""

from __future__ import annotations

import os
import sys

from tlops.cli.parser import build_parser
from tlops.errors import TlopsError
from tlops.settings import SettingError

__all__ = ["build_parser", "main"]


def setup_logging(level: str) -> None:
    """Log tlops's progress and decisions on stderr at ``level``, also in the steps that ``tlops run`` starts.

    The command's result (a summary, JSON) is printed on stdout; log lines never go there.
    """
    from tlops.io.logs import LEVEL_ENV, configure_logging

    os.environ[LEVEL_ENV] = level  # inherited by the kfp.local step processes, whose components configure it
    configure_logging(level)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tlops`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.command == "run":
            from tlops.cli.pipeline_commands import command_run

            return command_run(args)
        if args.command == "compile":
            from tlops.cli.pipeline_commands import image_tag
            from tlops.pipeline.compile import compile_all

            for path in compile_all(args.root, image_repository=args.image_repository, image_tag=image_tag(args)):
                print(f"wrote {path}")
            return 0
        if args.command in ("submit", "schedule"):
            from tlops.cli.pipeline_commands import command_remote

            return command_remote(args)
        if args.command == "promote":
            from tlops.cli.promote import command_promote

            return command_promote(args)
        if args.command == "models":
            from tlops.cli.models import command_models

            return command_models(args)
        if args.command == "stack":
            from tlops.cli.stack import command_stack

            return command_stack(args)
        if args.command == "fingerprint-data":
            from tlops.cli.step_commands import command_fingerprint

            return command_fingerprint(args)
        if args.command == "record-status":
            from tlops.cli.step_commands import command_record_status

            return command_record_status(args)
        if args.command == "list":
            from tlops.cli.listing import command_list

            return command_list(args)
        if args.command == "demo-data":
            from tlops.data.demo import write_digits_imagefolder

            print(write_digits_imagefolder(args.output))
            return 0
        from tlops.cli.step_commands import command_step

        return command_step(args)
    except SettingError as error:  # a setting, named by its flag
        from tlops.steps.config import cli_name

        print(f"tlops: error: {error.render(cli_name)}", file=sys.stderr)
        return 2
    except TlopsError as error:
        print(f"tlops: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tlops: interrupted", file=sys.stderr)
        return 130
