"""One subcommand per pipeline step, each calling the same step function as its KFP component."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from tlops.cli.checks import backbone_list
from tlops.cli.settings import resolve_config
from tlops.cli.staging import staged_folders, upload_output
from tlops.errors import TlopsError
from tlops.steps.config import RunConfig
from tlops.steps.entries import StepEntry


def command_step(args: argparse.Namespace) -> int:
    """Run one step of the pipeline in this process: the same function its KFP component calls.

    The arguments are checked before the step starts; a failing step leaves no ``--output`` folder it created.
    """
    from tlops.io.paths import check_writable_dir
    from tlops.steps.entries import STEPS

    entry = STEPS.get(args.command)
    with staged_folders(args) as output_uri:
        config = resolve_config(args)
        if output_uri and entry.name == "fine-tune":
            config = config.with_checkpoints_in(output_uri)  # pods share no disk: resume from S3
        _check_step_arguments(args, entry, config)
        output = args.output
        if output is not None:
            check_writable_dir(output)
        created = output is not None and not output.exists()
        try:
            result = _run_step(args, entry, config)
        except BaseException:
            if created:
                _remove_output(output)
            raise
        if output_uri and os.environ.get("RANK", "0") == "0":
            upload_output(output, output_uri)
    print(json.dumps(result, indent=2))
    return 0


def _remove_output(output: Path) -> None:
    """Remove a failed step's output folder, except a fine-tune checkpoint (a re-run resumes from it)."""
    import shutil

    keep = output / "checkpoints"
    if not keep.is_dir() or not any(keep.iterdir()):
        shutil.rmtree(output, ignore_errors=True)
        return
    for path in output.iterdir():
        if path != keep:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _check_step_arguments(args: argparse.Namespace, entry: StepEntry, config: RunConfig) -> None:
    """Check a step's options and input folders before it loads anything (the step checks its folders again)."""
    from tlops.promotion.tracking import check_tracking_server, resolve_tracking_uri
    from tlops.steps import outputs

    inputs = {
        "dataset": outputs.PreparedData,
        "probe": outputs.ProbeSummary,
        "model": outputs.ModelConfig,
        "evaluation": outputs.Evaluation,
        "selection": outputs.Selection,
    }
    read = {
        option: record.read(getattr(args, option)) for option, record in inputs.items() if getattr(args, option, None)
    }
    for option in ("probe", "model", "evaluation"):
        if option in read and "dataset" in read and read[option].classes != read["dataset"].classes:
            raise TlopsError(
                f"--{option} {getattr(args, option)} was made for other classes than --dataset {args.dataset} has: "
                "use the outputs of one dataset"
            )
    if entry.name == "select-backbone":
        backbone_list(",".join(config.selection.backbones))
    if entry.name == "audit" and getattr(args, "backbone", None):
        from tlops.steps.audit import check_auditable

        check_auditable("", args.backbone)  # a baseline has no features to audit
    if getattr(args, "backbone", None):  # empty: the task's own candidate
        from tlops.models.names import PIXELS_BASELINE

        allowed = entry.name in ("score-backbone", "extract-features") and args.backbone == PIXELS_BASELINE
        if not allowed and len(backbone_list(args.backbone)) != 1:
            raise TlopsError(
                "--backbone takes one name; score and rank several with tlops select-backbone --backbones A,B"
            )
    if any(path.startswith("selection.image_size") for path in entry.settings):
        from tlops.models.names import check_image_size

        check_image_size(config.selection.image_size or None)
    if any(path.startswith("tracking") for path in entry.settings):
        from tlops.promotion.config import check_model_name

        check_model_name(config.tracking.model_name)
    if hasattr(args, "tracking_uri"):
        args.tracking_uri = resolve_tracking_uri(args.tracking_uri, Path.cwd())
        check_tracking_server(args.tracking_uri)


def _run_step(args: argparse.Namespace, entry: StepEntry, config: RunConfig) -> object:
    """Call the step through its entry (as its KFP component does); returns what the command prints (as JSON)."""
    from tlops.steps.entries import call_step

    folders = {folder.name: getattr(args, folder.name, None) for folder in entry.folders}
    arguments = {argument.name: getattr(args, argument.name, None) for argument in entry.arguments}
    if entry.name == "fine-tune" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _fine_tune_rank(folders, args.output, config)
    result = call_step(
        entry.name, config, os.environ, folders=folders, output=args.output, arguments=arguments,
        lineage={"git_commit": os.environ.get("TLOPS_GIT_COMMIT", "")},  # set in images built from a commit
    )  # fmt: skip
    if entry.name == "select-backbone":
        from tlops.steps.select_backbone import selection_table

        print(selection_table(result))
    return entry.describe(result)


def _fine_tune_rank(folders: dict, output: Path, config: RunConfig) -> object:
    """``tlops fine-tune`` as one rank of a torchrun group (a TrainJob node): the worker's code path."""
    from tlops.steps.ddp_worker import run_worker
    from tlops.steps.fine_tune import worker_request
    from tlops.steps.outputs import Training

    request = worker_request(
        folders["dataset"], folders["probe"], output, config.with_checkpoints_in(str(output)),
        features_dir=folders.get("features"), selection_dir=folders.get("selection"),
    )  # fmt: skip
    run_worker(request, os.environ)
    if os.environ.get("RANK", "0") != "0":
        return {}
    return {k: v for k, v in Training.read(output).to_dict().items() if k != "history"}


def command_fingerprint(args: argparse.Namespace) -> int:
    """``tlops fingerprint-data``: print the fingerprint the pipeline keys the prepare-data cache with."""
    from tlops.data.fingerprint import source_fingerprint
    from tlops.data.sources import check_data_argument
    from tlops.io.storage import make_s3_client

    check_data_argument(args.data)
    s3 = make_s3_client() if args.data.startswith("s3://") else None
    print(json.dumps({"data": args.data, "fingerprint": source_fingerprint(args.data, s3)}, indent=2))
    return 0


def command_record_status(args: argparse.Namespace) -> int:
    """``tlops record-status``: what the exit handler does (mark the MLflow run FAILED unless the run succeeded)."""
    from tlops.promotion.failures import PipelineOutcome
    from tlops.promotion.tracking import resolve_tracking_uri
    from tlops.steps.pipeline_status import record_pipeline_status

    tracking_uri = resolve_tracking_uri(args.tracking_uri, Path.cwd())
    outcome = PipelineOutcome(args.state, args.kfp_run_id, args.kfp_run_name, args.error)
    run_id = record_pipeline_status(tracking_uri, args.experiment, outcome)
    print(json.dumps({"state": args.state, "mlflow_run_id": run_id}, indent=2))
    return 0
