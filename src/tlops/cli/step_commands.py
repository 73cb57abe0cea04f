"""One subcommand per pipeline step, each calling the same step function as its KFP component."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

from tlops.cli.checks import archive_limits, backbone_list
from tlops.cli.settings import resolve_config
from tlops.cli.staging import staged_folders, upload_output
from tlops.errors import TlopsError
from tlops.steps.config import RunConfig


def command_step(args: argparse.Namespace) -> int:
    """Run one step of the pipeline in this process: the same function its KFP component calls.

    The arguments are checked before the step starts; a failing step leaves no ``--output`` folder it created.
    """
    from tlops.io.paths import check_writable_dir

    with staged_folders(args) as output_uri:
        config = resolve_config(args)
        if output_uri and args.command == "fine-tune" and not config.storage.checkpoint_uri:
            checkpoints = f"{output_uri.rstrip('/')}/checkpoints"  # pods share no disk: resume from S3
            config = replace(config, storage=replace(config.storage, checkpoint_uri=checkpoints))
        _check_step_arguments(args, config)
        output = args.output
        if output is not None:
            check_writable_dir(output)
        created = output is not None and not output.exists()
        try:
            result = _run_step(args, config)
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


def _check_step_arguments(args: argparse.Namespace, config: RunConfig) -> None:
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
    if args.command == "select-backbone":
        backbone_list(",".join(config.selection.backbones))
    elif args.command == "score-backbone":
        from tlops.models.names import PIXELS_BASELINE

        if args.backbone != PIXELS_BASELINE and len(backbone_list(args.backbone)) != 1:
            raise TlopsError("--backbone takes one name; score several with tlops select-backbone --backbones A,B")
    elif args.command == "extract-features" and len(backbone_list(args.backbone)) != 1:
        raise TlopsError("--backbone takes one name; rank several with tlops select-backbone --backbones A,B")
    if args.command in ("score-backbone", "select-backbone", "extract-features"):
        from tlops.models.names import check_image_size

        check_image_size(config.selection.image_size or None)
    if args.command in ("evaluate", "register"):
        from tlops.promotion.config import check_model_name

        check_model_name(config.tracking.model_name)
        args.tracking_uri = resolve_tracking_uri(args.tracking_uri, Path.cwd())
        check_tracking_server(args.tracking_uri)


def _run_step(args: argparse.Namespace, config: RunConfig) -> object:
    """Call the step's function; returns what the command prints (as JSON)."""
    if args.command == "prepare-data":  # needs no torch: only S3
        from tlops.data.prepare import prepare_data
        from tlops.io.storage import make_s3_client

        split = replace(config.split, archive_limits=archive_limits())
        result = prepare_data(args.data, args.output, split, make_s3_client())
        return {
            "digest": result.digest,
            "classes": result.classes,
            "images": result.num_images,
            "quarantined": len(result.quarantined),
        }
    from tlops.steps.runtime import runtime_from_environment

    runtime = runtime_from_environment(os.environ)
    scoring = {
        "image_size": config.selection.image_size,
        "feature_cache": config.storage.feature_cache,
        "scoring_images_per_class": config.selection.scoring_images_per_class,
        "class_weighted": config.train.class_weighted,
        "seed": config.seed,
    }
    if args.command == "score-backbone":
        from tlops.steps.score_backbone import score_backbone

        return score_backbone(args.dataset, args.backbone, args.output, runtime, **scoring).to_dict()
    if args.command == "select-backbone":
        from tlops.steps.select_backbone import select_backbone, selection_table

        selection = select_backbone(
            args.dataset,
            list(config.selection.backbones),
            args.output,
            runtime,
            **scoring,
            metric=config.selection.metric,
            max_params=config.selection.max_params,
            max_latency_ms=config.selection.max_latency_ms,
        )
        print(selection_table(selection))
        return selection.ranking
    if args.command == "extract-features":
        from tlops.steps.extract_features import extract_and_probe

        summary = extract_and_probe(
            args.dataset,
            args.backbone,
            args.output / "features",
            args.output / "probe",
            runtime,
            image_size=config.selection.image_size,
            seed=config.seed,
            class_weighted=config.train.class_weighted,
            feature_cache=config.storage.feature_cache,
        )
        return summary.to_dict()
    if args.command == "fine-tune":
        from tlops.steps.fine_tune import fine_tune_on_processes

        features = args.features
        if features is None and (args.probe.parent / "features").is_dir():
            features = args.probe.parent / "features"
        if not config.storage.checkpoint_uri:
            config = replace(config, storage=replace(config.storage, checkpoint_uri=str(args.output / "checkpoints")))
        inputs = {"features_dir": features, "selection_dir": args.selection}
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one rank of a torchrun group (a TrainJob node)
            from tlops.steps.ddp_worker import run_worker
            from tlops.steps.fine_tune import worker_request

            run_worker(worker_request(args.dataset, args.probe, args.output, config, **inputs), os.environ)
            if os.environ.get("RANK", "0") != "0":
                return {}
            from tlops.steps.outputs import Training

            training = Training.read(args.output)
        else:
            training = fine_tune_on_processes(args.dataset, args.probe, args.output, config, runtime, **inputs)
        return {k: v for k, v in training.to_dict().items() if k != "history"}
    if args.command == "evaluate":
        from tlops.steps.evaluate import evaluate

        evaluated = evaluate(
            args.dataset,
            args.model,
            args.output,
            runtime,
            tracking_uri=args.tracking_uri,
            model_name=config.tracking.model_name,
            gate=config.gate,
        )
        return evaluated.evaluation.metrics
    from tlops.steps.register import register

    summary = register(
        args.dataset,
        args.model,
        args.evaluation,
        replace(config.tracking, tracking_uri=args.tracking_uri),
        output_dir=args.output,
        selection_dir=args.selection,
        lineage={"git_commit": os.environ.get("TLOPS_GIT_COMMIT", "")},  # set in images built from a commit
    )
    return summary.to_dict()


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
