"""The argument parser of ``tlops`` and its subcommands; every default comes from :mod:`tlops.steps.config`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tlops import __version__
from tlops.cli.staging import path_or_s3
from tlops.pipeline.image import IMAGE_REPOSITORY
from tlops.promotion.gate import GATE_METRICS
from tlops.steps.config import DEFAULT_BACKBONE, DEFAULTS, SELECTION_METRICS
from tlops.train.config import ALIASES, STRATEGIES, SURGICAL_BLOCKS

STRATEGY_CHOICES = (*STRATEGIES, *ALIASES)
DEMO_IMAGE_SIZE = 128
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
        choices=STRATEGY_CHOICES,
        metavar="STRATEGY",
        help="linear-probe: frozen backbone + linear head on cached features; mlp-probe: a hidden layer with dropout "
        "on cached features; partial: fine-tune the top --unfreeze-blocks blocks; surgical: only the first, middle "
        "or last blocks; lp-ft (or full): every layer from the probe head; gradual: unfreeze one more block per "
        "epoch from the top; auto: decide from images per class and probe/kNN accuracy, and keep a fine-tuned "
        "model only when it beats the best probe on validation by more than one standard error (default: "
        "%(default)s)",
    )
    _add_selection_arguments(parser)
    _add_training_arguments(parser)
    _add_gate_arguments(parser)
    _add_node_pool_arguments(parser)
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


def _add_feature_cache_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--feature-cache",
        default=DEFAULTS.feature_cache,
        help="where backbone features are cached, keyed by dataset digest, backbone, weights and preprocessing: a "
        "folder or s3://bucket/prefix (default: features/ in $TLOPS_CACHE_DIR or ~/.cache/tlops); a second run on "
        "the same data reads them and runs no backbone",
    )


def _add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    """What scoring one candidate takes: the feature cache and the sample size."""
    _add_feature_cache_argument(parser)
    parser.add_argument(
        "--scoring-images-per-class",
        type=int,
        default=DEFAULTS.scoring_images_per_class,
        help="training images per class the selection scores use (default: 0, all of them)",
    )


def _add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    _add_scoring_arguments(parser)
    parser.add_argument(
        "--selection-metric",
        default=DEFAULTS.selection_metric,
        choices=SELECTION_METRICS,
        help="score that ranks the candidates: probe (cross-validated linear-probe accuracy), knn (cross-validated "
        "cosine kNN accuracy) or logme; near-ties (within one standard error) go to the cheaper backbone "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--max-params",
        type=int,
        default=DEFAULTS.max_params,
        help="budget: largest backbone in parameters, e.g. 10000000 (default: 0, no limit)",
    )
    parser.add_argument(
        "--max-latency-ms",
        type=float,
        default=DEFAULTS.max_latency_ms,
        help="budget: slowest latency per image, measured on this run's device (default: 0, no limit)",
    )


def _add_class_weighted_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--class-weighted", action="store_true", default=DEFAULTS.class_weighted, help="balanced class weights"
    )


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    training = parser.add_argument_group("fine-tuning")
    training.add_argument(
        "--epochs",
        type=int,
        default=DEFAULTS.epochs,
        help="fine-tuning epochs (also auto's budget) (default: %(default)s)",
    )
    training.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULTS.batch_size,
        help="images per optimizer step over all processes (default: %(default)s)",
    )
    training.add_argument(
        "--lr", type=float, default=DEFAULTS.learning_rate, help="peak learning rate of the head (default: %(default)s)"
    )
    training.add_argument(
        "--unfreeze-blocks",
        type=int,
        default=DEFAULTS.unfreeze_blocks,
        help="partial: train the top N blocks of the backbone's stages; surgical: train N blocks "
        "(default: %(default)s)",
    )
    training.add_argument(
        "--surgical-blocks",
        default=DEFAULTS.surgical_blocks,
        choices=SURGICAL_BLOCKS,
        help="surgical: first (input-level shift: colour, blur, sensor), middle (feature-level) or last (output-level) "
        "blocks (default: %(default)s)",
    )
    training.add_argument(
        "--layer-decay",
        type=float,
        default=DEFAULTS.layer_decay,
        help="layer-wise learning-rate decay: block i from the top trains at lr * decay**i; 1 turns it off "
        "(default: %(default)s)",
    )
    training.add_argument(
        "--swa-epochs", type=int, default=DEFAULTS.swa_epochs, help="average the weights of the last N epochs (SWA)"
    )
    training.add_argument(
        "--hflip", action="store_true", help="random horizontal flips (only when a mirrored image keeps its class)"
    )
    training.add_argument("--trivial-augment", action="store_true", help="TrivialAugmentWide on training images")
    training.add_argument("--mixup", type=float, default=DEFAULTS.mixup, help="MixUp alpha (default: 0, off)")
    training.add_argument("--cutmix", type=float, default=DEFAULTS.cutmix, help="CutMix alpha (default: 0, off)")
    training.add_argument(
        "--grad-accumulation",
        type=int,
        default=DEFAULTS.grad_accumulation,
        help="micro-batches per optimizer step, to reach --batch-size on a small GPU (default: %(default)s)",
    )
    training.add_argument(
        "--torch-compile", action="store_true", help="torch.compile the model for fine-tuning (worth it on GPUs)"
    )
    training.add_argument(
        "--checkpoint-uri",
        default=DEFAULTS.checkpoint_uri,
        help="folder or s3:// prefix for the per-epoch checkpoint a restarted fine-tune resumes from (default: "
        "OUTPUT/checkpoints for tlops run and fine-tune; none on Kubeflow unless given)",
    )


def _add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    gate = parser.add_argument_group(
        "promotion gate",
        "The new version replaces the champion only when every check passes: the paired-bootstrap confidence "
        "interval of the score difference clears the margin, the paired test is significant, no class loses more "
        "test images net than allowed, and calibration does not get worse than allowed.",
    )
    gate.add_argument(
        "--gate-metric",
        choices=GATE_METRICS,
        default=DEFAULTS.gate_metric,
        help="the score that must improve; macro-f1 weighs every class equally (default: %(default)s)",
    )
    gate.add_argument(
        "--gate-margin",
        type=float,
        default=DEFAULTS.gate_margin,
        help="gain the interval's lower bound must exceed, e.g. 0.01 for one point (default: %(default)s)",
    )
    gate.add_argument(
        "--gate-confidence",
        type=float,
        default=DEFAULTS.gate_confidence,
        help="level of the paired bootstrap interval (default: %(default)s)",
    )
    gate.add_argument(
        "--gate-alpha",
        type=float,
        default=DEFAULTS.gate_alpha,
        help="significance level of the paired test (McNemar; a randomization test for macro-f1) "
        "(default: %(default)s)",
    )
    gate.add_argument(
        "--gate-max-class-drop",
        type=float,
        default=DEFAULTS.gate_max_class_drop,
        help="largest net recall drop of any class, as a share of its test images (default: %(default)s) ...",
    )
    gate.add_argument(
        "--gate-class-drop-images",
        type=int,
        default=DEFAULTS.gate_class_drop_images,
        help="... but a class may always lose this many images net, so one image does not veto a small class "
        "(default: %(default)s)",
    )
    gate.add_argument(
        "--gate-max-ece-increase",
        type=float,
        default=DEFAULTS.gate_max_ece_increase,
        help="how much higher the new version's expected calibration error may be (default: %(default)s)",
    )


def _json_option(kind: type):
    """An argparse type reading a JSON object or list (``--gpu-node-selector '{"pool": "a100"}'``)."""

    def parse(text: str):
        import json

        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise argparse.ArgumentTypeError(f"not JSON ({error.msg}): {text!r}") from None
        if not isinstance(value, kind):
            raise argparse.ArgumentTypeError(f"expected a JSON {kind.__name__}, got {text!r}")
        return value

    return parse


def _add_node_pool_arguments(parser: argparse.ArgumentParser) -> None:
    pool = parser.add_argument_group("GPU node pool of the GPU steps on Kubeflow (submit, schedule)")
    pool.add_argument(
        "--processes-per-node",
        type=int,
        default=DEFAULTS.processes_per_node,
        help="fine-tuning processes in the fine-tune pod (DistributedDataParallel under torchrun, one per GPU; "
        "default: %(default)s)",
    )
    pool.add_argument(
        "--gpu-accelerator-type",
        default=DEFAULTS.gpu_accelerator_type,
        help="accelerator resource name (default: %(default)s)",
    )
    pool.add_argument(
        "--gpu-count", type=int, default=DEFAULTS.gpu_count, help="accelerators per GPU step (default: 1)"
    )
    pool.add_argument(
        "--gpu-node-selector",
        type=_json_option(dict),
        default=DEFAULTS.gpu_node_selector,
        help='node labels as JSON, e.g. \'{"cloud.google.com/gke-accelerator": "nvidia-l4"}\' (default: any node)',
    )
    pool.add_argument(
        "--gpu-tolerations",
        type=_json_option(list),
        default=DEFAULTS.gpu_tolerations,
        help="tolerations as a JSON list (default: tolerate the nvidia.com/gpu taint)",
    )
    pool.add_argument("--gpu-cpu-request", default=DEFAULTS.gpu_cpu_request, help="(default: %(default)s)")
    pool.add_argument("--gpu-cpu-limit", default=DEFAULTS.gpu_cpu_limit, help="(default: %(default)s)")
    pool.add_argument("--gpu-memory-request", default=DEFAULTS.gpu_memory_request, help="(default: %(default)s)")
    pool.add_argument("--gpu-memory-limit", default=DEFAULTS.gpu_memory_limit, help="(default: %(default)s)")


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


def _add_registry_uri_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)",
    )


def _add_image_size_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image-size", type=int, default=DEFAULTS.image_size, help="input size; 0: the backbone's own (default: 0)"
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
    _add_run_arguments(run)

    compile_ = commands.add_parser(
        "compile",
        help="write components/*.yaml (and their .md docs) and pipelines/*.yaml",
        description="Compile the pipeline and each component. The YAMLs name the images "
        "REPOSITORY/tlops:TAG and REPOSITORY/tlops-gpu:TAG; the checked-in ones name the release tag, since a file "
        "cannot name the commit that contains it (docker/README.md: build, push, then compile with the same tag).",
    )
    compile_.add_argument("--root", type=Path, default=Path("."), help="repository root (default: current dir)")
    _add_image_arguments(compile_)

    prepare = commands.add_parser("prepare-data", help="validate, split and write the manifest of a dataset")
    prepare.add_argument(
        "--data", required=True, help="folder, s3://bucket/prefix, .zip/.tar(.gz) archive or .csv manifest"
    )
    prepare.add_argument("--output", type=Path, required=True, help="directory for the manifest and report")
    _add_seed_argument(prepare)
    _add_split_arguments(prepare)

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
    status.add_argument("--experiment", default=DEFAULTS.experiment, help="MLflow experiment (default: %(default)s)")

    dataset_help = "the prepare-data output folder"
    score = commands.add_parser(
        "score-backbone", help="extract one candidate's features (cached) and score them: probe, kNN, LogME, cost"
    )
    score.add_argument("--dataset", type=Path, required=True, help=dataset_help)
    score.add_argument(
        "--backbone", default=DEFAULT_BACKBONE, help="the candidate, or pixels for the no-transfer baseline"
    )
    score.add_argument("--output", type=Path, required=True, help="folder for the score record")
    _add_scoring_arguments(score)
    _add_image_size_argument(score)
    _add_seed_argument(score)
    _add_class_weighted_argument(score)

    select = commands.add_parser(
        "select-backbone",
        help="score every candidate and the raw-pixel baseline on a prepared dataset, print the table, choose one",
    )
    select.add_argument("--dataset", type=Path, required=True, help=dataset_help)
    select.add_argument(
        "--backbones", default=",".join(DEFAULTS.backbones), help="comma-separated candidates (default: %(default)s)"
    )
    select.add_argument(
        "--output",
        type=Path,
        required=True,
        help="folder for the ranking table (selection.md), its record and each candidate's score (scores/)",
    )
    _add_selection_arguments(select)
    _add_image_size_argument(select)
    _add_seed_argument(select)
    _add_class_weighted_argument(select)

    extract = commands.add_parser("extract-features", help="cache backbone features and fit the linear probe")
    extract.add_argument("--dataset", type=Path, required=True, help=dataset_help)
    extract.add_argument("--backbone", default=DEFAULT_BACKBONE, help="the backbone (default: %(default)s)")
    extract.add_argument("--output", type=Path, required=True, help="gets features/ and probe/ subdirectories")
    _add_feature_cache_argument(extract)
    _add_image_size_argument(extract)
    _add_seed_argument(extract)
    _add_class_weighted_argument(extract)

    tune = commands.add_parser("fine-tune", help="train the classifier from the probe with a strategy")
    tune.add_argument("--dataset", type=path_or_s3, required=True, help=dataset_help + " (or its s3:// prefix)")
    tune.add_argument(
        "--probe", type=path_or_s3, required=True, help="the probe/ folder of extract-features (or its s3:// prefix)"
    )
    tune.add_argument(
        "--output",
        type=path_or_s3,
        required=True,
        help="folder or s3:// prefix for the model and its training record",
    )
    tune.add_argument(
        "--strategy",
        default=DEFAULTS.strategy,
        choices=STRATEGY_CHOICES,
        metavar="STRATEGY",
        help=f"one of {', '.join(STRATEGIES)} (see tlops run --help) (default: %(default)s)",
    )
    tune.add_argument(
        "--features",
        type=path_or_s3,
        help="the features/ folder of extract-features (mlp-probe needs it; default: beside --probe when present)",
    )
    tune.add_argument(
        "--selection", type=path_or_s3, help="the select-backbone output, whose table auto reads (optional)"
    )
    _add_training_arguments(tune)
    _add_seed_argument(tune)
    _add_class_weighted_argument(tune)

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a trained model on the test split, then run the promotion gate against the champion",
    )
    evaluate.add_argument("--dataset", type=Path, required=True, help=dataset_help)
    evaluate.add_argument("--model", type=Path, required=True, help="the fine-tune output folder")
    evaluate.add_argument("--output", type=Path, required=True, help="folder for metrics, plots, the gate")
    _add_tracking_argument(evaluate, "sqlite:///./mlflow.db: the registry whose champion the gate compares against")
    _add_model_name_argument(evaluate)
    _add_gate_arguments(evaluate)

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
        help="run the pipeline once on a Kubeflow Pipelines server (--wait: follow it to its end)",
        description="Compile the pipeline and start one run of it on Kubeflow Pipelines. The pipeline "
        "(tlops-transfer-learning) is uploaded once; each code gets a version named after the tlops version and the "
        "compiled spec's hash, reused when submitted again. Prints the run's URL; with --wait, each state of the "
        "run, and exits 0 only when it succeeded (1 otherwise, naming the failed step).",
    )
    _add_run_arguments(submit)
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
    _add_run_arguments(schedule)
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

    demo = commands.add_parser("demo-data", help="write the built-in demo dataset as an ImageFolder")
    demo.add_argument("--output", type=Path, required=True)
    _add_stack_parser(commands)
    return parser


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
