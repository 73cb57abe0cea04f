"""The ``tlops`` command line: run the pipeline locally, compile it, or run one step."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tlops import __version__
from tlops.errors import TlopsError
from tlops.steps.config import DEFAULT_BACKBONE, DEFAULTS
from tlops.train.config import STRATEGIES

DEMO_IMAGE_SIZE = 128
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Keep at most this many demo images per class (all 1,797 digits when unset); tests use it to shrink the demo.
DEMO_IMAGES_PER_CLASS_ENV = "TLOPS_DEMO_IMAGES_PER_CLASS"
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
        default=",".join(DEFAULTS.backbones),
        help="comma-separated candidate backbones: efficientnet_lite0/1/2 (bundled), timm:NAME, torchvision:NAME, "
        "hub:OWNER/REPO:ENTRY, NAME@s3://weights (default: %(default)s)",
    )
    parser.add_argument(
        "--strategy",
        default=DEFAULTS.strategy,
        choices=STRATEGIES,
        help="linear-probe: frozen backbone + head on cached features; full: fine-tune all layers from the probe "
        "head (LP-FT); auto: freeze when the features already fit or data is small, else fine-tune, never keeping "
        "a model that validates worse than the probe (default: %(default)s)",
    )
    _add_training_arguments(parser)
    parser.add_argument(
        "--image-size",
        type=int,
        default=DEFAULTS.image_size,
        help=f"input size; 0: the backbone's own (default: %(default)s; {DEMO_IMAGE_SIZE} for the 8x8 demo digits)",
    )
    parser.add_argument("--experiment", default=DEFAULTS.experiment, help="MLflow experiment (default: %(default)s)")
    _add_model_name_argument(parser)
    _add_seed_argument(parser)
    _add_split_arguments(parser)
    parser.add_argument(
        "--class-weighted",
        action="store_true",
        default=DEFAULTS.class_weighted,
        help="weight each class's loss inversely to its frequency (probe and fine-tuning), for imbalanced data",
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite under --output)",
    )


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="fine-tuning epochs (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULTS.batch_size, help="fine-tuning batch size (default: %(default)s)"
    )
    parser.add_argument(
        "--lr", type=float, default=DEFAULTS.learning_rate, help="fine-tuning learning rate (default: %(default)s)"
    )


def _add_split_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=DEFAULTS.val_fraction,
        help="share of each class held out for validation (default: %(default)s)",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=DEFAULTS.test_fraction,
        help="share of each class held out for the test (default: %(default)s)",
    )


def _add_seed_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULTS.seed,
        help="seed of the split, sampling and training (default: %(default)s)",
    )


def _add_model_name_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-name", default=DEFAULTS.model_name, help="registered model name (default: %(default)s)"
    )


def _add_tracking_argument(parser: argparse.ArgumentParser, fallback: str) -> None:
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else {fallback})",
    )


def _add_image_size_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image-size", type=int, default=DEFAULTS.image_size, help="input size; 0: the backbone's own (default: 0)"
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
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        help="log progress and decisions of this level and above on stderr; results stay on stdout "
        "(default: %(default)s; give it before the command: tlops --log-level DEBUG run)",
    )
    parser.add_argument(
        "-v", "--verbose", dest="log_level", action="store_const", const="DEBUG", help="--log-level DEBUG"
    )
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
    _add_seed_argument(prepare)
    _add_split_arguments(prepare)

    dataset_help = "the prepare-data output folder"
    select = commands.add_parser("select-backbone", help="rank candidate backbones on a prepared dataset")
    select.add_argument("--dataset", type=Path, required=True, help=dataset_help)
    select.add_argument(
        "--backbones", default=",".join(DEFAULTS.backbones), help="comma-separated candidates (default: %(default)s)"
    )
    select.add_argument("--output", type=Path, required=True, help="folder for the ranking (selection.json)")
    _add_image_size_argument(select)
    _add_seed_argument(select)

    extract = commands.add_parser("extract-features", help="cache backbone features and fit the linear probe")
    extract.add_argument("--dataset", type=Path, required=True, help=dataset_help)
    extract.add_argument("--backbone", default=DEFAULT_BACKBONE, help="the backbone (default: %(default)s)")
    extract.add_argument("--output", type=Path, required=True, help="gets features/ and probe/ subdirectories")
    _add_image_size_argument(extract)
    _add_seed_argument(extract)
    extract.add_argument(
        "--class-weighted", action="store_true", default=DEFAULTS.class_weighted, help="balanced class weights"
    )

    tune = commands.add_parser("fine-tune", help="train the classifier from the probe with a strategy")
    tune.add_argument("--dataset", type=Path, required=True, help=dataset_help)
    tune.add_argument("--probe", type=Path, required=True, help="the probe/ folder of the extract-features output")
    tune.add_argument("--output", type=Path, required=True, help="folder for the model and its training record")
    tune.add_argument("--strategy", default=DEFAULTS.strategy, choices=STRATEGIES, help="(default: %(default)s)")
    _add_training_arguments(tune)
    _add_seed_argument(tune)
    tune.add_argument(
        "--class-weighted", action="store_true", default=DEFAULTS.class_weighted, help="balanced class weights"
    )

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a trained model on the test split, then run the promotion gate against the champion",
    )
    evaluate.add_argument("--dataset", type=Path, required=True, help=dataset_help)
    evaluate.add_argument("--model", type=Path, required=True, help="the fine-tune output folder")
    evaluate.add_argument("--output", type=Path, required=True, help="folder for metrics, plots, the gate")
    _add_tracking_argument(evaluate, "sqlite:///./mlflow.db: the registry whose champion the gate compares against")
    _add_model_name_argument(evaluate)

    register = commands.add_parser(
        "register", help="log and register an evaluated model in MLflow, moving champion as the gate decided"
    )
    register.add_argument("--dataset", type=Path, required=True, help=dataset_help)
    register.add_argument("--model", type=Path, required=True, help="the fine-tune output folder")
    register.add_argument("--evaluation", type=Path, required=True, help="the evaluate output folder")
    register.add_argument("--selection", type=Path, help="the select-backbone output folder, logged with the run")
    register.add_argument("--output", type=Path, help="folder for the run summary (default: only printed)")
    _add_tracking_argument(register, "sqlite:///./mlflow.db")
    register.add_argument("--experiment", default=DEFAULTS.experiment, help="MLflow experiment (default: %(default)s)")
    _add_model_name_argument(register)

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
    _add_model_name_argument(promote)
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
        raise TlopsError(f"--backbones is empty; name at least one, e.g. {DEFAULT_BACKBONE}")
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

    from tlops.data.sources import check_data_argument
    from tlops.models.names import check_image_size
    from tlops.pipeline.compile import compile_pipeline
    from tlops.pipeline.remote import check_cron, schedule_run, submit_run

    _check_positive(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, image_size=args.image_size or None)
    check_image_size(args.image_size or None)
    if not args.host:
        raise TlopsError("no Kubeflow Pipelines host: pass --host URL or set KFP_HOST")
    if args.data is None:
        raise TlopsError("--data is required: an s3:// URI (or a path mounted in the pipeline's pods)")
    check_data_argument(args.data)
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


def _demo_images_per_class() -> int | None:
    value = os.environ.get(DEMO_IMAGES_PER_CLASS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 3:
        raise TlopsError(f"{DEMO_IMAGES_PER_CLASS_ENV}={value!r}: give a whole number of images per class, at least 3")
    return int(value)


def command_run(args: argparse.Namespace) -> int:
    """``tlops run``: preflight the inputs, run the pipeline locally, print and write the summary."""
    import shutil

    from tlops.data.demo import write_digits_imagefolder
    from tlops.data.prepare import SplitConfig, preflight_dataset
    from tlops.data.sources import check_data_argument, check_output_apart
    from tlops.io.paths import check_writable_dir
    from tlops.io.storage import make_s3_client
    from tlops.models.availability import check_backbone_available
    from tlops.models.names import check_image_size
    from tlops.promotion.tracking import check_tracking_server, resolve_tracking_uri

    # Preflight: fail in one line before any step runs, anything is registered or --output is written; the
    # cheap checks first, the data (every image read and decoded) last.
    _check_positive(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, image_size=args.image_size or None)
    check_image_size(args.image_size or None)
    split = SplitConfig(args.val_fraction, args.test_fraction, args.seed, archive_limits=_archive_limits())
    backbones = _backbone_list(args.backbones)
    output = args.output.resolve()
    check_writable_dir(output)
    image_size = args.image_size
    data_uri = None
    if args.data is not None:
        check_data_argument(args.data)
        data_uri = args.data if args.data.startswith("s3://") else str(Path(args.data).resolve())
        check_output_apart(data_uri, output)
    tracking_uri = resolve_tracking_uri(args.tracking_uri, output)
    check_tracking_server(tracking_uri)
    for name in backbones:
        check_backbone_available(name)
    created = not output.exists()
    try:
        if data_uri is None:
            data_uri = str(write_digits_imagefolder(output / "demo-data", per_class=_demo_images_per_class()))
            image_size = image_size or DEMO_IMAGE_SIZE
            print(f"no --data given: using the built-in demo data (scikit-learn digits) in {data_uri}")
        s3 = make_s3_client() if data_uri.startswith("s3://") else None
        prepared = preflight_dataset(data_uri, split, s3)
    except BaseException:
        if created:
            shutil.rmtree(output, ignore_errors=True)
        raise

    from tlops.pipeline.local import PipelineFailed, keep_run_summary, run_locally
    from tlops.steps.summary import format_summary  # imports torch: not before the preflight has passed

    output.mkdir(parents=True, exist_ok=True)
    parameters = _pipeline_parameters(args, data_uri, tracking_uri, backbones, image_size)
    images = sum(prepared.num_images.values())
    print(
        f"running the tlops pipeline locally ({images} images, {len(prepared.quarantined)} quarantined; tracking at "
        f"{tracking_uri})",
        flush=True,
    )
    try:
        summary = run_locally(parameters, output)
    except PipelineFailed as error:
        print(f"tlops: error: the pipeline failed: {error} (the step's log is above)", file=sys.stderr)
        return 1
    path, kept, replaced = keep_run_summary(summary, output)
    print(format_summary(summary))
    print(f"  summary    {path} (this run's is kept as {kept.relative_to(output)}{'; ' if replaced else ''}{replaced})")
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
    """Run one step of the pipeline in this process: the same function its KFP component calls.

    The arguments are checked before the step starts; a failing step leaves no ``--output`` folder it created.
    """
    import shutil

    from tlops.io.paths import check_writable_dir

    _check_step_arguments(args)
    output = args.output
    if output is not None:
        check_writable_dir(output)
    created = output is not None and not output.exists()
    try:
        result = _run_step(args)
    except BaseException:
        if created:
            shutil.rmtree(output, ignore_errors=True)
        raise
    print(json.dumps(result, indent=2))
    return 0


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
        args.backbones = _backbone_list(args.backbones)
    elif args.command == "extract-features":
        if len(_backbone_list(args.backbone)) != 1:
            raise TlopsError("--backbone takes one name; rank several with tlops select-backbone --backbones A,B")
    elif args.command == "fine-tune":
        _check_positive(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    if getattr(args, "image_size", None) is not None:
        _check_positive(image_size=args.image_size or None)
    if args.command in ("evaluate", "register"):
        args.tracking_uri = resolve_tracking_uri(args.tracking_uri, Path.cwd())
        check_tracking_server(args.tracking_uri)


def _run_step(args: argparse.Namespace) -> object:
    """Call the step's function; returns what the command prints (as JSON)."""
    if args.command == "prepare-data":  # needs no torch: only S3
        from tlops.data.prepare import SplitConfig, prepare_data
        from tlops.io.storage import make_s3_client

        config = SplitConfig(args.val_fraction, args.test_fraction, args.seed, archive_limits=_archive_limits())
        result = prepare_data(args.data, args.output, config, make_s3_client())
        return {
            "digest": result.digest,
            "classes": result.classes,
            "images": result.num_images,
            "quarantined": len(result.quarantined),
        }
    from tlops.steps.runtime import runtime_from_environment

    runtime = runtime_from_environment(os.environ)
    if args.command == "select-backbone":
        from tlops.steps.select_backbone import select_backbone

        selection = select_backbone(
            args.dataset, args.backbones, args.output, runtime, image_size=args.image_size, seed=args.seed
        )
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
        )
        return summary.to_dict()
    if args.command == "fine-tune":
        from tlops.steps.fine_tune import fine_tune
        from tlops.train.config import TrainConfig

        config = TrainConfig(
            strategy=args.strategy,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            class_weighted=args.class_weighted,
        )
        training = fine_tune(args.dataset, args.probe, args.output, config, runtime)
        return {k: v for k, v in training.to_dict().items() if k != "history"}
    if args.command == "evaluate":
        from tlops.steps.evaluate import evaluate

        evaluated = evaluate(
            args.dataset, args.model, args.output, runtime, tracking_uri=args.tracking_uri, model_name=args.model_name
        )
        return evaluated.evaluation.metrics
    from tlops.promotion.config import RegistryConfig
    from tlops.steps.register import register

    config = RegistryConfig(tracking_uri=args.tracking_uri, experiment=args.experiment, model_name=args.model_name)
    summary = register(
        args.dataset, args.model, args.evaluation, config, output_dir=args.output, selection_dir=args.selection
    )
    return summary.to_dict()


def setup_logging(level: str) -> None:
    """Log tlops's progress and decisions on stderr at ``level``, also in the steps that ``tlops run`` starts.

    The command's result (a summary, JSON) is printed on stdout; log lines never go there.
    """
    from tlops.io.logs import LEVEL_ENV, configure_logging

    os.environ[LEVEL_ENV] = level  # inherited by the kfp.local step processes, whose components configure it
    configure_logging(level)


def _archive_limits():
    """Archive expansion limits, from ``TLOPS_ARCHIVE_MAX_BYTES`` / ``_MAX_RATIO`` / ``_MAX_MEMBERS`` when set."""
    from tlops.data.archives import ArchiveLimits

    return ArchiveLimits.from_environment(os.environ)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tlops`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
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
