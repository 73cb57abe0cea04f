"""One subcommand per pipeline step, each calling the same step function as its KFP component."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from tlops.cli.checks import archive_limits, backbone_list, check_positive
from tlops.cli.staging import staged_folders, upload_output
from tlops.errors import TlopsError
from tlops.steps.config import GATE_OPTIONS, gate_config


def command_step(args: argparse.Namespace) -> int:
    """Run one step of the pipeline in this process: the same function its KFP component calls.

    The arguments are checked before the step starts; a failing step leaves no ``--output`` folder it created.
    """
    from tlops.io.paths import check_writable_dir

    with staged_folders(args) as output_uri:
        if output_uri and getattr(args, "checkpoint_uri", None) == "":
            args.checkpoint_uri = f"{output_uri.rstrip('/')}/checkpoints"  # pods share no disk: resume from S3
        _check_step_arguments(args)
        output = args.output
        if output is not None:
            check_writable_dir(output)
        created = output is not None and not output.exists()
        try:
            result = _run_step(args)
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


def _check_step_arguments(args: argparse.Namespace) -> None:
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
        from tlops.steps.config import check_selection_options  # light: no torch

        args.backbones = backbone_list(args.backbones)
        check_selection_options(args.selection_metric, args.max_params, args.max_latency_ms)
    elif args.command == "score-backbone":
        from tlops.models.names import PIXELS_BASELINE

        if args.backbone != PIXELS_BASELINE and len(backbone_list(args.backbone)) != 1:
            raise TlopsError("--backbone takes one name; score several with tlops select-backbone --backbones A,B")
    elif args.command == "extract-features":
        if len(backbone_list(args.backbone)) != 1:
            raise TlopsError("--backbone takes one name; rank several with tlops select-backbone --backbones A,B")
    elif args.command == "fine-tune":
        check_positive(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    if getattr(args, "image_size", None) is not None:
        check_positive(image_size=args.image_size or None)
    if args.command == "evaluate":
        args.gate = gate_config(**{name: getattr(args, name) for name in GATE_OPTIONS})
    if args.command in ("evaluate", "register"):
        from tlops.promotion.config import check_model_name

        check_model_name(args.model_name)
        args.tracking_uri = resolve_tracking_uri(args.tracking_uri, Path.cwd())
        check_tracking_server(args.tracking_uri)


def _run_step(args: argparse.Namespace) -> object:
    """Call the step's function; returns what the command prints (as JSON)."""
    if args.command == "prepare-data":  # needs no torch: only S3
        from tlops.data.prepare import SplitConfig, prepare_data
        from tlops.io.storage import make_s3_client

        config = SplitConfig(args.val_fraction, args.test_fraction, args.seed, archive_limits=archive_limits())
        result = prepare_data(args.data, args.output, config, make_s3_client())
        return {
            "digest": result.digest,
            "classes": result.classes,
            "images": result.num_images,
            "quarantined": len(result.quarantined),
        }
    from tlops.steps.runtime import runtime_from_environment

    runtime = runtime_from_environment(os.environ)
    scoring = {
        option: getattr(args, option, None)
        for option in ("image_size", "feature_cache", "scoring_images_per_class", "class_weighted", "seed")
    }
    if args.command == "score-backbone":
        from tlops.steps.score_backbone import score_backbone

        return score_backbone(args.dataset, args.backbone, args.output, runtime, **scoring).to_dict()
    if args.command == "select-backbone":
        from tlops.steps.select_backbone import select_backbone, selection_table

        selection = select_backbone(
            args.dataset,
            args.backbones,
            args.output,
            runtime,
            **scoring,
            metric=args.selection_metric,
            max_params=args.max_params,
            max_latency_ms=args.max_latency_ms,
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
            image_size=args.image_size,
            seed=args.seed,
            class_weighted=args.class_weighted,
            feature_cache=args.feature_cache,
        )
        return summary.to_dict()
    if args.command == "fine-tune":
        from tlops.cli.checks import distributed_from_environment, train_config
        from tlops.steps.fine_tune import fine_tune

        features = args.features
        if features is None and (args.probe.parent / "features").is_dir():
            features = args.probe.parent / "features"
        checkpoint_uri = args.checkpoint_uri or str(args.output / "checkpoints")
        distributed = distributed_from_environment(os.environ)
        if distributed.world_size > 1 and runtime.device.type == "cuda":  # torchrun: one GPU per process
            import torch

            runtime.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(runtime.device)
        training = fine_tune(
            args.dataset,
            args.probe,
            args.output,
            train_config(args),
            runtime,
            features_dir=features,
            selection_dir=args.selection,
            checkpoint_uri=checkpoint_uri,
            distributed=distributed,
        )
        return {k: v for k, v in training.to_dict().items() if k != "history"} if training else {}
    if args.command == "evaluate":
        from tlops.steps.evaluate import evaluate

        evaluated = evaluate(
            args.dataset,
            args.model,
            args.output,
            runtime,
            tracking_uri=args.tracking_uri,
            model_name=args.model_name,
            gate=args.gate,
        )
        return evaluated.evaluation.metrics
    from tlops.promotion.config import RegistryConfig
    from tlops.steps.register import register

    config = RegistryConfig(tracking_uri=args.tracking_uri, experiment=args.experiment, model_name=args.model_name)
    summary = register(
        args.dataset,
        args.model,
        args.evaluation,
        config,
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
