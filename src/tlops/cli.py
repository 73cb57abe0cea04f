"""The ``tlops`` command line: run the pipeline locally, compile it, or run one step."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tlops import __version__
from tlops.errors import TlopsError

DEMO_IMAGE_SIZE = 128
EPILOG = """\
examples:
  tlops run                                  train on the built-in demo data (scikit-learn digits)
  tlops run --data ./photos --epochs 5       an ImageFolder: one subfolder per class
  tlops run --data s3://bucket/dataset       S3 or SeaweedFS (AWS_ENDPOINT_URL, AWS credentials)
  tlops run --strategy linear-probe          --strategy: linear-probe (frozen backbone), full (LP-FT) or auto
  MLFLOW_TRACKING_URI=http://mlflow:5000 tlops run --data ...   track and register on a server
  tlops compile                              rewrite components/*.yaml and pipelines/*.yaml
  tlops schedule --host http://kfp:8080 --data s3://bucket/ds --tracking-uri http://mlflow:5000 --cron '0 0 3 * * *'
  tlops promote --version 3                  make version 3 the champion (tlops promote --rollback undoes it)
"""


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        help="dataset: a folder, s3://bucket/prefix, .zip/.tar(.gz) archive or .csv manifest (path,label[,split]); "
        "one subfolder per class, or train/ val/ test/ subfolders kept as given (default: built-in demo data)",
    )
    parser.add_argument("--output", type=Path, default=Path("tlops-run"), help="run directory (default: %(default)s)")
    parser.add_argument(
        "--backbones",
        default="efficientnet_lite0",
        help="comma-separated candidate backbones: efficientnet_lite0/1/2 (bundled), timm:NAME, torchvision:NAME, "
        "hub:OWNER/REPO:ENTRY, NAME@s3://weights (default: %(default)s)",
    )
    parser.add_argument(
        "--strategy",
        default="auto",
        choices=["auto", "linear-probe", "full"],
        help="linear-probe: frozen backbone + head on cached features; full: fine-tune all layers from the probe "
        "head (LP-FT); auto: freeze when the features already fit or data is small, else fine-tune, never keeping "
        "a model that validates worse than the probe (default: %(default)s)",
    )
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="fine-tuning batch size (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-4, help="fine-tuning learning rate (default: %(default)s)")
    parser.add_argument(
        "--image-size",
        type=int,
        help=f"input size (default: the backbone's own; {DEMO_IMAGE_SIZE} for the 8x8 demo digits)",
    )
    parser.add_argument("--experiment", default="tlops", help="MLflow experiment (default: %(default)s)")
    parser.add_argument("--model-name", default="tlops-classifier", help="registered model name (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, sampling and training")
    parser.add_argument(
        "--val-fraction", type=float, default=0.15, help="share of each class held out for validation (%(default)s)"
    )
    parser.add_argument(
        "--test-fraction", type=float, default=0.15, help="share of each class held out for the test (%(default)s)"
    )
    parser.add_argument(
        "--class-weighted",
        action="store_true",
        help="weight each class's loss inversely to its frequency (probe and fine-tuning), for imbalanced data",
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite under --output)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="tlops",
        description="Transfer learning as a Kubeflow pipeline: a pretrained vision backbone becomes a registered, "
        "evaluated image classifier in MLflow.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tlops {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the whole pipeline locally through kfp.local",
        description="Run prepare-data -> select-backbone -> extract-features -> fine-tune -> evaluate -> register "
        "on this machine through kfp.local, then write OUTPUT/run_summary.json.",
    )
    _add_run_arguments(run)

    compile_ = commands.add_parser("compile", help="write components/*.yaml and pipelines/*.yaml")
    compile_.add_argument("--root", type=Path, default=Path("."), help="repository root (default: current dir)")

    prepare = commands.add_parser("prepare-data", help="validate, split and write the manifest of a dataset")
    prepare.add_argument(
        "--data", required=True, help="folder, s3://bucket/prefix, .zip/.tar(.gz) archive or .csv manifest"
    )
    prepare.add_argument("--output", type=Path, required=True, help="directory for the manifest and report")
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument("--val-fraction", type=float, default=0.15)
    prepare.add_argument("--test-fraction", type=float, default=0.15)

    select = commands.add_parser("select-backbone", help="rank candidate backbones on a prepared dataset")
    select.add_argument("--dataset", type=Path, required=True, help="prepare-data output directory")
    select.add_argument("--backbones", required=True, help="comma-separated candidates")
    select.add_argument("--output", type=Path, required=True)
    select.add_argument("--image-size", type=int)
    select.add_argument("--seed", type=int, default=0)

    extract = commands.add_parser("extract-features", help="cache backbone features and fit the linear probe")
    extract.add_argument("--dataset", type=Path, required=True, help="prepare-data output directory")
    extract.add_argument("--backbone", default="efficientnet_lite0")
    extract.add_argument("--output", type=Path, required=True, help="gets features/ and probe/ subdirectories")
    extract.add_argument("--image-size", type=int)
    extract.add_argument("--seed", type=int, default=0)
    extract.add_argument("--class-weighted", action="store_true", help="balanced class weights for the probe")

    tune = commands.add_parser("fine-tune", help="train the classifier from the probe with a strategy")
    tune.add_argument("--dataset", type=Path, required=True)
    tune.add_argument("--probe", type=Path, required=True, help="extract-features output's probe/ directory")
    tune.add_argument("--output", type=Path, required=True)
    tune.add_argument("--strategy", default="auto", choices=["auto", "linear-probe", "full"])
    tune.add_argument("--epochs", type=int, default=3)
    tune.add_argument("--batch-size", type=int, default=32)
    tune.add_argument("--lr", type=float, default=1e-4)
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--class-weighted", action="store_true", help="balanced class weights in the loss")

    evaluate = commands.add_parser("evaluate", help="evaluate a trained model on the test split")
    evaluate.add_argument("--dataset", type=Path, required=True)
    evaluate.add_argument("--model", type=Path, required=True)
    evaluate.add_argument("--output", type=Path, required=True)

    register = commands.add_parser("register", help="log and register a trained model in MLflow")
    register.add_argument("--dataset", type=Path, required=True)
    register.add_argument("--model", type=Path, required=True)
    register.add_argument("--evaluation", type=Path, required=True)
    register.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"), required=False)
    register.add_argument("--experiment", default="tlops")
    register.add_argument("--model-name", default="tlops-classifier")

    submit = commands.add_parser(
        "submit",
        help="run the pipeline once on a Kubeflow Pipelines server",
        description="Compile the pipeline and start one run of it on Kubeflow Pipelines.",
    )
    _add_run_arguments(submit)
    submit.add_argument("--host", default=os.environ.get("KFP_HOST"), help="KFP API URL (default: $KFP_HOST)")
    submit.add_argument("--run-name", default="tlops", help="name of the run (default: %(default)s)")

    schedule = commands.add_parser(
        "schedule",
        help="retrain on a schedule: a recurring run on Kubeflow Pipelines",
        description="Compile the pipeline and create a recurring run (no catch-up of missed runs). "
        "Each run registers a new challenger; the champion moves only by the registry's rules or tlops promote.",
    )
    _add_run_arguments(schedule)
    schedule.add_argument("--host", default=os.environ.get("KFP_HOST"), help="KFP API URL (default: $KFP_HOST)")
    schedule.add_argument("--cron", required=True, help="6-field cron, seconds first, e.g. '0 0 3 * * *' (03:00 daily)")
    schedule.add_argument("--job-name", default="tlops-retrain", help="recurring run name (default: %(default)s)")
    schedule.add_argument("--max-concurrency", type=int, default=1, help="runs at a time (default: %(default)s)")

    promote = commands.add_parser(
        "promote",
        help="make a model version the champion (or roll back to the previous champion)",
        description="Move the 'champion' alias of a registered model. The replaced version keeps the alias "
        "'previous-champion', so --rollback undoes the last promotion.",
    )
    promote.add_argument("--model-name", default="tlops-classifier", help="registered model (default: %(default)s)")
    target = promote.add_mutually_exclusive_group()
    target.add_argument("--version", type=int, help="version to promote (default: the current challenger)")
    target.add_argument("--rollback", action="store_true", help="make the previous champion the champion again")
    promote.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)",
    )

    demo = commands.add_parser("demo-data", help="write the built-in demo dataset as an ImageFolder")
    demo.add_argument("--output", type=Path, required=True)
    return parser


def _backbone_list(text: str) -> list[str]:
    from tlops.models.names import check_backbone_name

    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise TlopsError("--backbones is empty; name at least one, e.g. efficientnet_lite0")
    for name in names:
        check_backbone_name(name)
    return names


def _check_positive(**values: int | float | None) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            raise TlopsError(f"--{name.replace('_', '-')} must be positive, got {value}")


def _pipeline_parameters(
    args: argparse.Namespace, data_uri: str, tracking_uri: str, backbones: list[str], image_size: int | None
) -> dict:
    """The pipeline's parameters from the run options shared by ``run``, ``submit`` and ``schedule``."""
    parameters = {
        "data_uri": data_uri,
        "tracking_uri": tracking_uri,
        "backbones": backbones,
        "strategy": args.strategy,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "image_size": image_size or 0,
        "seed": args.seed,
        "class_weighted": args.class_weighted,
        "val_fraction": args.val_fraction,
        "test_fraction": args.test_fraction,
        "experiment": args.experiment,
        "model_name": args.model_name,
    }
    return parameters


def command_remote(args: argparse.Namespace) -> int:
    """``tlops submit`` / ``tlops schedule``: compile the pipeline and create a run or recurring run on KFP."""
    import tempfile

    from tlops.pipeline.compile import compile_pipeline
    from tlops.pipeline.remote import check_cron, schedule_run, submit_run

    _check_positive(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, image_size=args.image_size)
    if not args.host:
        raise TlopsError("no Kubeflow Pipelines host: pass --host URL or set KFP_HOST")
    if not args.data:
        raise TlopsError("--data is required: an s3:// URI (or a path mounted in the pipeline's pods)")
    if not args.tracking_uri or not args.tracking_uri.startswith(("http://", "https://")):
        raise TlopsError("--tracking-uri must be an MLflow server URL the cluster can reach (http://...)")
    if args.command == "schedule":
        check_cron(args.cron)
    parameters = _pipeline_parameters(
        args, args.data, args.tracking_uri, _backbone_list(args.backbones), args.image_size
    )
    with tempfile.TemporaryDirectory() as folder:
        package = compile_pipeline(Path(folder) / "pipeline.yaml")
        if args.command == "submit":
            created = submit_run(args.host, package, parameters, args.experiment, args.run_name)
        else:
            created = schedule_run(
                args.host, package, parameters, args.experiment, args.job_name, args.cron, args.max_concurrency
            )
    print(f"created {created.kind} {created.id} in experiment {created.experiment!r}: {created.url}")
    return 0


def command_run(args: argparse.Namespace) -> int:
    """``tlops run``: preflight the inputs, run the pipeline locally, print and write the summary."""
    from tlops.data.demo import write_digits_imagefolder
    from tlops.data.prepare import SplitConfig, check_dataset
    from tlops.io.storage import make_s3_client
    from tlops.promotion.tracking import check_tracking_server, resolve_tracking_uri
    from tlops.steps.summary import format_summary

    _check_positive(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, image_size=args.image_size)
    backbones = _backbone_list(args.backbones)
    output = args.output.resolve()
    image_size = args.image_size
    if args.data is None:
        data_uri = str(write_digits_imagefolder(output / "demo-data"))
        image_size = image_size or DEMO_IMAGE_SIZE
        print(f"no --data given: using the built-in demo data (scikit-learn digits) in {data_uri}")
    else:
        data_uri = args.data if args.data.startswith("s3://") else str(Path(args.data).resolve())
    # Preflight: fail in one line before any step runs or anything is registered.
    s3 = make_s3_client() if data_uri.startswith("s3://") else None
    listed = check_dataset(data_uri, SplitConfig(args.val_fraction, args.test_fraction, args.seed), s3)
    tracking_uri = resolve_tracking_uri(args.tracking_uri, output)
    check_tracking_server(tracking_uri)

    from tlops.pipeline.local import PipelineFailed, run_locally

    output.mkdir(parents=True, exist_ok=True)
    parameters = _pipeline_parameters(args, data_uri, tracking_uri, backbones, image_size)
    print(f"running the tlops pipeline locally ({len(listed.files)} images, tracking at {tracking_uri})", flush=True)
    try:
        summary = run_locally(parameters, output)
    except PipelineFailed as error:
        print(f"tlops: error: the pipeline failed: {error} (the step's log is above)", file=sys.stderr)
        return 1
    (output / "run_summary.json").write_text(json.dumps(summary, indent=2))
    print(format_summary(summary))
    print(f"  summary    {output / 'run_summary.json'}")
    return 0


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


def command_step(args: argparse.Namespace) -> int:
    """Run one step of the pipeline in this process."""
    from tlops.steps.runtime import runtime_from_environment

    runtime = runtime_from_environment(os.environ)
    if args.command == "prepare-data":
        from tlops.data.prepare import SplitConfig, prepare_data

        config = SplitConfig(args.val_fraction, args.test_fraction, args.seed)
        result = prepare_data(args.data, args.output, config, runtime.s3)
        print(
            json.dumps(
                {
                    "digest": result.digest,
                    "classes": result.classes,
                    "images": result.num_images,
                    "quarantined": len(result.quarantined),
                },
                indent=2,
            )
        )
    elif args.command == "select-backbone":
        from tlops.steps.select_backbone import select_backbone

        selection = select_backbone(
            args.dataset,
            _backbone_list(args.backbones),
            args.output,
            runtime,
            image_size=args.image_size,
            seed=args.seed,
        )
        print(json.dumps(selection.ranking, indent=2))
    elif args.command == "extract-features":
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
        )
        print(json.dumps(summary, indent=2))
    elif args.command == "fine-tune":
        from tlops.steps.fine_tune import fine_tune
        from tlops.train.finetune import TrainConfig

        config = TrainConfig(
            strategy=args.strategy,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            class_weighted=args.class_weighted,
        )
        summary = fine_tune(args.dataset, args.probe, args.output, config, runtime)
        print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))
    elif args.command == "evaluate":
        from tlops.steps.evaluate import evaluate

        print(json.dumps(evaluate(args.dataset, args.model, args.output, runtime)["metrics"], indent=2))
    elif args.command == "register":
        from tlops.promotion.registry import RegistryConfig, register_model, registration_dict
        from tlops.promotion.tracking import resolve_tracking_uri

        uri = resolve_tracking_uri(args.tracking_uri, Path.cwd())
        config = RegistryConfig(tracking_uri=uri, experiment=args.experiment, model_name=args.model_name)
        print(
            json.dumps(registration_dict(register_model(args.dataset, args.model, args.evaluation, config)), indent=2)
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tlops`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return command_run(args)
        if args.command == "compile":
            from tlops.pipeline.compile import compile_all

            for path in compile_all(args.root):
                print(f"wrote {path}")
            return 0
        if args.command in ("submit", "schedule"):
            return command_remote(args)
        if args.command == "promote":
            return command_promote(args)
        if args.command == "demo-data":
            from tlops.data.demo import write_digits_imagefolder

            print(write_digits_imagefolder(args.output))
            return 0
        return command_step(args)
    except TlopsError as error:
        print(f"tlops: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tlops: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
