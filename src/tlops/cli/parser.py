"""The argument parser of ``tlops`` and its subcommands; every default comes from :mod:`tlops.steps.config`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tlops import __version__
from tlops.cli.settings import add_config_file, add_settings
from tlops.cli.staging import path_or_s3
from tlops.pipeline.image import IMAGE_REPOSITORY
from tlops.promotion.config import RegistryConfig

# What scoring one candidate reads.
SCORING_SETTINGS = ("seed", "selection.image_size", "selection.scoring_images_per_class", "storage.feature_cache",
                    "train.class_weighted")  # fmt: skip
DEMO_IMAGE_SIZE = 128
DEMOS = ("digits", "text", "detection")
# The detection demo's training length, where the user left it at its default (a few minutes on a CPU).
DEMO_DETECTION = {"detection_epochs": 6}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Keep at most this many demo images per class (all 1,797 digits when unset); tests use it to shrink the demo.
DEMO_IMAGES_PER_CLASS_ENV = "TLOPS_DEMO_IMAGES_PER_CLASS"
EPILOG = """\
examples:
  tlops run                                  train on the built-in demo data (scikit-learn digits)
  tlops run --data ./photos --epochs 5       an ImageFolder: one subfolder per class
  tlops run --data s3://bucket/dataset       S3 or SeaweedFS (AWS_ENDPOINT_URL, AWS credentials)
  tlops run --strategy partial               linear-probe, mlp-probe, partial, surgical, lp-ft, gradual, auto
  MLFLOW_TRACKING_URI=http://mlflow:5000 tlops run --data ...   track and register on a server
  tlops compile                              rewrite components/*.yaml, their docs and pipelines/*.yaml
  tlops schedule --host http://kfp:8080 --data s3://bucket/ds --tracking-uri http://mlflow:5000 --cron '0 0 3 * * *'
  tlops promote --version 3                  make version 3 the champion (tlops promote --rollback undoes it)
  tlops models                               list the registered versions, their metrics and gate decisions
"""


def _add_run_arguments(parser: argparse.ArgumentParser, local: bool) -> None:
    """The dataset, the tracking server and every setting: ``run`` (``local``), ``submit`` and ``schedule``."""
    if local:
        parser.add_argument(
            "--data",
            help="dataset: a folder, s3://bucket/prefix, .zip/.tar(.gz) archive or .csv manifest (path,label[,split]); "
            "one subfolder per class, or train/ val/ test/ subfolders kept as given; for text, a .csv/.tsv/.jsonl/"
            ".parquet table (text,label[,split]) or class folders of .txt files (default: the built-in demo data, "
            "see --demo)",
        )
        parser.add_argument(
            "--demo",
            choices=DEMOS,
            default="digits",
            help="the built-in demo data used when --data is not given: digits (scikit-learn's 8x8 digits at "
            f"--image-size {DEMO_IMAGE_SIZE}), text (docstrings of installed libraries, labelled by library) or "
            "detection (circles, squares and triangles drawn on scikit-image's photos, a COCO export) "
            "(default: %(default)s)",
        )
        parser.add_argument(
            "--output", type=Path, default=Path("tlops-run"), help="run directory (default: %(default)s)"
        )
        tracking_fallback = "else sqlite under --output"
    else:
        parser.add_argument(
            "--data", help="dataset the pipeline's pods can read: an s3:// URI (or a path mounted in the pods)"
        )
        tracking_fallback = "an MLflow server URL the cluster can reach"
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI, {tracking_fallback})",
    )
    add_config_file(parser)
    add_settings(parser)


def _add_step_settings(parser: argparse.ArgumentParser, *paths: str) -> None:
    """A step command's settings flags (``section.*``: a whole section) and ``--config``."""
    add_config_file(parser)
    add_settings(parser, paths)


def _add_tracking_argument(parser: argparse.ArgumentParser, fallback: str) -> None:
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else {fallback})",
    )


def _add_registry_uri_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./tlops-run/mlflow.db, the store tlops run "
        "writes without one)",
    )


def _add_model_name_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-name",
        default=RegistryConfig.model_name,
        help="registered model name (default: %(default)s)",
    )


def _add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """The images the compiled components name: ``REPOSITORY/tlops:TAG`` and ``REPOSITORY/tlops-gpu:TAG``."""
    images = parser.add_argument_group("images")
    images.add_argument(
        "--image-repository",
        default=IMAGE_REPOSITORY,
        help="registry and path of the images the components run (default: %(default)s)",
    )
    images.add_argument(
        "--image-tag",
        help=f"tag of both images (default: the version, {__version__}, plus -$TLOPS_GIT_COMMIT when that is set)",
    )


def _add_kfp_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the Kubeflow Pipelines API is, how to authenticate, and what a submission adds to the run."""
    _add_image_arguments(parser)
    kfp = parser.add_argument_group("Kubeflow Pipelines")
    kfp.add_argument("--host", default=os.environ.get("KFP_HOST"), help="KFP API URL (default: $KFP_HOST)")
    kfp.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="file with the bearer token multi-user Kubeflow needs (default: $KFP_TOKEN, else the pod's "
        "service-account token when run in the cluster, else none)",
    )
    kfp.add_argument(
        "--namespace",
        default=os.environ.get("KFP_NAMESPACE"),
        help="your Kubeflow profile's namespace on multi-user Kubeflow (default: $KFP_NAMESPACE)",
    )
    kfp.add_argument(
        "--kfp-experiment",
        default="tlops",
        help="the Kubeflow Pipelines experiment the run is filed under (the MLflow experiment is --experiment) "
        "(default: %(default)s)",
    )
    kfp.add_argument(
        "--service-account",
        metavar="NAME",
        help="Kubernetes service account the run's pods use (default: the namespace's pipeline runner); the "
        "TrainJob launcher needs one allowed to create, get and delete trainjobs",
    )
    kfp.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a pipeline parameter directly (repeatable), e.g. --param credentials_secret=my-secret; numbers, "
        "booleans, lists and dicts as JSON; refused for a name the pipeline does not have",
    )
    kfp.add_argument(
        "--pipeline-root",
        metavar="URI",
        help="where the run's artifacts go, e.g. s3://bucket/kfp (default: the server's)",
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
    _add_run_arguments(run, local=True)

    compile_ = commands.add_parser(
        "compile",
        help="write components/*.yaml (and their .md docs) and pipelines/*.yaml",
        description="Compile the pipeline and each component. The YAMLs name the images "
        "REPOSITORY/tlops:TAG and REPOSITORY/tlops-gpu:TAG; the checked-in ones name the release tag, since a file "
        "cannot name the commit that contains it (docker/README.md: build, push, then compile with the same tag).",
    )
    compile_.add_argument("--root", type=Path, default=Path("."), help="repository root (default: current dir)")
    _add_image_arguments(compile_)

    fingerprint = commands.add_parser(
        "fingerprint-data",
        help="print a dataset source's fingerprint (its listing: paths, sizes, ETags or modification times)",
        description="Print the fingerprint the pipeline's first step computes: it changes when a file behind --data "
        "is added, removed or changed, and keys the prepare-data step's cache on Kubeflow Pipelines.",
    )
    fingerprint.add_argument("--data", required=True, help="folder, s3://bucket/prefix, archive or .csv manifest")

    status = commands.add_parser(
        "record-status",
        help="the pipeline's exit handler: mark the MLflow run of a pipeline run that did not succeed FAILED",
        description="Unless --state is SUCCEEDED, mark the MLflow run tagged tlops.kfp_run_id=--kfp-run-id FAILED, "
        "or create a FAILED run named after the pipeline run when no step reached MLflow, with the state and error.",
    )
    status.add_argument("--state", required=True, help="the pipeline run's final state, e.g. FAILED or SUCCEEDED")
    status.add_argument("--kfp-run-id", default="", help="the KFP run's id")
    status.add_argument("--kfp-run-name", default="", help="the KFP run's name")
    status.add_argument("--error", default="", help="the failed task's error message")
    _add_tracking_argument(status, "sqlite:///./mlflow.db")
    status.add_argument(
        "--experiment", default=RegistryConfig.experiment, help="MLflow experiment (default: %(default)s)"
    )

    _add_step_commands(commands)

    submit = commands.add_parser(
        "submit",
        help="run the pipeline once on a Kubeflow Pipelines server (--wait: follow it to its end)",
        description="Compile the pipeline and start one run of it on Kubeflow Pipelines. The pipeline "
        "(tlops-transfer-learning) is uploaded once; each code gets a version named after the tlops version and the "
        "compiled spec's hash, reused when submitted again. Prints the run's URL; with --wait, each state of the "
        "run, and exits 0 only when it succeeded (1 otherwise, naming the failed step).",
    )
    _add_run_arguments(submit, local=False)
    _add_kfp_arguments(submit)
    submit.add_argument("--run-name", default="tlops", help="name of the run (default: %(default)s)")
    submit.add_argument("--wait", action="store_true", help="follow the run to its end; exit 0 only when it succeeded")
    submit.add_argument(
        "--poll-interval", type=float, default=5.0, help="seconds between checks with --wait (default: %(default)s)"
    )
    submit.add_argument(
        "--timeout", type=float, default=0.0, help="with --wait: give up after this many seconds (default: 0, none)"
    )

    schedule = commands.add_parser(
        "schedule",
        help="retrain on a schedule: a recurring run on Kubeflow Pipelines (--list, --delete NAME)",
        description="Compile the pipeline and create the recurring run --job-name, replacing the one of that name "
        "if there is one; missed runs are not caught up unless --catchup. Each run registers a new challenger; the "
        "champion moves only by the promotion gate or tlops promote. --list shows the recurring runs and --delete "
        "NAME deletes one; neither needs --data, --tracking-uri or --cron.",
    )
    _add_run_arguments(schedule, local=False)
    _add_kfp_arguments(schedule)
    schedule.add_argument(
        "--cron", help="6-field cron, seconds first, e.g. '0 0 3 * * *' (03:00 daily); required to create"
    )
    schedule.add_argument(
        "--job-name",
        default="tlops-retrain",
        help="name of the recurring run, created or replaced (default: %(default)s)",
    )
    schedule.add_argument("--max-concurrency", type=int, default=1, help="runs at a time, 1 to 10 (default: 1)")
    schedule.add_argument(
        "--catchup",
        action="store_true",
        help="also start the runs missed while paused or behind (default: only the latest)",
    )
    manage = schedule.add_mutually_exclusive_group()
    manage.add_argument(
        "--list", action="store_true", help="list the recurring runs: name, cron, enabled, max concurrency, id, created"
    )
    manage.add_argument("--delete", metavar="NAME", help="delete the recurring run NAME")

    promote = commands.add_parser(
        "promote",
        help="make a model version the champion (or roll back, or copy it into another registered model)",
        description="Move the 'champion' alias of a registered model. The replaced version keeps the alias "
        "'previous-champion', so --rollback undoes the last promotion. Each move is recorded on the promoted "
        "version as the tags promotion.by, promotion.reason, promotion.forced and promotion.time.",
    )
    _add_model_name_argument(promote)
    target = promote.add_mutually_exclusive_group()
    target.add_argument(
        "--version", type=int, help="version to promote (default: the current challenger; with --copy-to: the champion)"
    )
    target.add_argument("--rollback", action="store_true", help="make the previous champion the champion again")
    promote.add_argument(
        "--force",
        action="store_true",
        help="promote a version the promotion gate refused (its tag gate.decision is 'keep'); needs --reason",
    )
    promote.add_argument(
        "--reason", metavar="TEXT", help="why it is promoted by hand, recorded on the version (promotion.reason)"
    )
    promote.add_argument(
        "--copy-to",
        metavar="NAME",
        help="copy the version (--version N; default: the current champion) into registered model NAME, e.g. "
        "from staging to prod, and make it that model's champion (its champion stays as previous-champion); "
        "refused when NAME's champion predicts other classes",
    )
    _add_registry_uri_argument(promote)

    models = commands.add_parser(
        "models",
        help="list the versions of a registered model: aliases, test metrics, gate decision, lineage",
        description="List the versions of a registered model, newest first. Columns: version; aliases "
        "(champion, challenger, previous-champion); created (UTC); accuracy, macro-F1 and ECE on the test split; "
        "gate: the promotion gate's decision (promote, keep: refused, first: no champion to compare with; "
        "'(forced)': promoted by hand against it); digest: the training data's digest (first 12 characters); "
        "backbone; strategy. --json prints every field, with the full digest, the gate metric and the run id.",
    )
    _add_model_name_argument(models)
    _add_registry_uri_argument(models)
    models.add_argument("--json", action="store_true", help="print a JSON list of versions instead of a table")

    listing = commands.add_parser(
        "list",
        help="list the registered strategies, backbone families or tasks, one line each",
        description="List what tlops can use: transfer strategies (--strategy), backbone families (--backbones "
        "names) or tasks.",
    )
    listing.add_argument("what", choices=("strategies", "backbones", "tasks"), help="what to list")

    demo = commands.add_parser("demo-data", help="write the built-in demo dataset as an ImageFolder")
    demo.add_argument("--output", type=Path, required=True)
    _add_stack_parser(commands)
    return parser


def _add_step_commands(commands: argparse._SubParsersAction) -> None:
    """One command per pipeline step, generated from its entry (:data:`tlops.steps.entries.STEPS`)."""
    from tlops.steps.entries import STEPS

    for name, entry in STEPS:
        command = commands.add_parser(name, help=entry.help, description=entry.help[0].upper() + entry.help[1:] + ".")
        if name in ("prepare-data", "audit"):
            command.add_argument("--data", required=name == "prepare-data", help=entry.arguments[0].help)
        for folder in entry.folders:
            suffix = " (or its s3:// prefix)" if folder.s3 else ""
            command.add_argument(
                f"--{folder.name}",
                type=path_or_s3 if folder.s3 else Path,
                required=folder.required,
                help=folder.help + suffix + ("" if folder.required else " (optional)"),
            )
        output_type = path_or_s3 if name == "fine-tune" else Path
        command.add_argument("--output", type=output_type, required=name != "register", help=entry.output_help)
        for argument in entry.arguments:
            if argument.name == "tracking_uri":
                _add_tracking_argument(command, "sqlite:///./mlflow.db")
            elif argument.name != "data":
                command.add_argument(
                    f"--{argument.name}", default=argument.default, help=f"{argument.help} (default: %(default)s)"
                )
        _add_step_settings(command, *entry.settings)


def _add_stack_parser(commands: argparse._SubParsersAction) -> None:
    """``tlops stack up|down|status``: a local SeaweedFS S3 gateway and MLflow server."""
    from tlops.stack.config import BUCKET, DEFAULT_DIR, DEFAULT_MLFLOW_PORT, DEFAULT_S3_PORT

    stack = commands.add_parser(
        "stack",
        help="a local S3 (SeaweedFS) and MLflow server like the cluster's: up, status, down",
        description="A local copy of the cluster's services, bound to 127.0.0.1: a SeaweedFS S3 gateway and an "
        f"MLflow tracking server (a sqlite store, artifacts proxied to the S3 bucket {BUCKET}). Their data, logs, "
        f"process records and credentials live in a folder (--dir DIR, default {DEFAULT_DIR}); the processes "
        "outlive the command. tlops stack up [--s3-port PORT] [--mlflow-port PORT] starts them and prints the "
        "export lines that point tlops run at them (also written to DIR/env.sh); tlops stack status shows whether "
        "they answer; tlops stack down stops them and keeps the data.",
    )
    actions = stack.add_subparsers(dest="stack_command", required=True, metavar="ACTION")

    def add_dir(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--dir",
            type=Path,
            default=DEFAULT_DIR,
            help="the stack's folder: data, logs, process records, credentials (default: %(default)s)",
        )

    up = actions.add_parser(
        "up",
        help="start the stack (or report the running one) and print its environment",
        description="Start SeaweedFS (S3) and an MLflow server on 127.0.0.1 in their own session, wait until both "
        "answer, and print the export lines (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_DEFAULT_REGION, MLFLOW_TRACKING_URI), also written to DIR/env.sh (mode 0600). The S3 credentials are "
        "generated once per folder and reused. Every port is checked before anything starts. When the folder's "
        "stack already runs, says so and prints its environment again.",
    )
    add_dir(up)
    up.add_argument(
        "--s3-port",
        type=int,
        default=DEFAULT_S3_PORT,
        metavar="PORT",
        help="the S3 gateway's port; SeaweedFS's master, volume and filer servers take the 3 ports above it, and "
        "each of the 4 also that port + 10000 for gRPC (default: %(default)s)",
    )
    up.add_argument(
        "--mlflow-port",
        type=int,
        default=DEFAULT_MLFLOW_PORT,
        metavar="PORT",
        help="the MLflow server's port, also its UI's (default: %(default)s)",
    )
    down = actions.add_parser(
        "down",
        help="stop the stack; its data stays",
        description="Stop exactly the processes tlops stack up started from the folder (SIGTERM, SIGKILL after a "
        "grace period); the data (S3 objects, MLflow experiments, runs and models) stays for the next up. With "
        "nothing running it says so and exits 0, so it can always be run.",
    )
    add_dir(down)
    status = actions.add_parser(
        "status",
        help="show each service's pid, URL and whether it answers (exit status 3 unless all do)",
        description="Show each service of the folder's stack with its pid, URL and whether it answers. Exit "
        "status 0 when both answer, 3 otherwise.",
    )
    add_dir(status)
