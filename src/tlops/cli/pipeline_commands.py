"""``tlops run`` (the pipeline through kfp.local) and ``tlops submit`` / ``schedule`` (on Kubeflow Pipelines)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tlops.cli.checks import archive_limits, backbone_list
from tlops.cli.parser import DEMO_DETECTION, DEMO_IMAGE_SIZE, DEMO_IMAGES_PER_CLASS_ENV
from tlops.cli.settings import resolve_config, write_config
from tlops.errors import TlopsError
from tlops.steps.config import RunConfig, to_parameters
from tlops.train.config import TrainConfig

if TYPE_CHECKING:
    from tlops.pipeline.kfp_api import Connection
    from tlops.pipeline.kfp_auth import Token
    from tlops.pipeline.remote import Submission


def pipeline_parameters(data_uri: str, tracking_uri: str, config: RunConfig) -> dict:
    """The pipeline's arguments for a run: the data, the tracking server and the run config's parameters."""
    return {"data_uri": data_uri, "tracking_uri": tracking_uri, **to_parameters(config)}


def check_checkpoint(config: RunConfig, checkpoint_uri: str) -> None:
    """Refuse, before any work, a checkpoint left by a run with other training settings.

    A re-run with the same command resumes from it; with other settings the fine-tune step would refuse it only
    after every step before it had run.

    Raises:
        TlopsError: naming the settings that differ (as flags, with both values) and the two ways out.
    """
    from dataclasses import asdict

    from tlops.io.storage import make_s3_client
    from tlops.steps.config import cli_name
    from tlops.train.resume import CheckpointStore

    store = CheckpointStore(checkpoint_uri, make_s3_client() if checkpoint_uri.startswith("s3://") else None)
    saved = store.saved_settings()
    if not saved:
        return
    now = asdict(config.train)
    ignored = {"surgical_blocks"} if now["strategy"] == "auto" else set()  # auto sets it for surgical
    differs = [key for key in sorted(saved.keys() & now.keys()) if key not in ignored and saved[key] != now[key]]
    if differs:
        changes = ", ".join(f"{cli_name('train.' + key)} {saved[key]} then, {now[key]} now" for key in differs)
        raise TlopsError(
            f"{store.location} is the checkpoint of an interrupted run with other settings ({changes}): run with "
            f"the same settings to resume it, or delete it to start over"
        )


def _check_settings(config: RunConfig) -> list[str]:
    """Check what the run config cannot check alone (no network): backbone names, image size, model name.

    Returns:
        The candidate backbones.
    """
    from tlops.models.names import check_image_size
    from tlops.promotion.config import check_model_name

    check_image_size(config.selection.image_size or None)
    check_model_name(config.tracking.model_name)
    return backbone_list(",".join(config.selection.backbones))


def command_remote(args: argparse.Namespace) -> int:
    """``tlops submit`` / ``tlops schedule``: run the pipeline on Kubeflow Pipelines, once or on a schedule.

    Everything that can be checked here is, before any request: the options, the cron, the token file, the
    compiled spec and the ``--param`` overrides against its parameters. Then the pipeline and this code's version
    are uploaded unless the server has them, and the run or recurring run is created. ``schedule --list`` and
    ``schedule --delete NAME`` only connect.
    """
    import tempfile

    from tlops.data.sources import check_data_argument
    from tlops.pipeline.compile import compile_pipeline
    from tlops.pipeline.overrides import parse_overrides
    from tlops.pipeline.remote import check_cron, ensure_version, read_package, submit_run
    from tlops.pipeline.schedules import check_max_concurrency, schedule_run
    from tlops.promotion.tracking import check_no_password

    scheduling = args.command == "schedule"
    if scheduling and (args.list or args.delete is not None):
        return _manage_schedules(args)
    config = resolve_config(args)
    _check_settings(config)
    _check_host(args.host)
    if args.data is None:
        raise TlopsError("--data is required: an s3:// URI (or a path mounted in the pipeline's pods)")
    check_data_argument(args.data)
    if not args.tracking_uri or not args.tracking_uri.startswith(("http://", "https://")):
        raise TlopsError("--tracking-uri must be an MLflow server URL the cluster can reach (http://...)")
    check_no_password(args.tracking_uri)  # a run parameter: KFP keeps it in plain text
    if args.pipeline_root is not None and "://" not in args.pipeline_root:
        raise TlopsError(f"--pipeline-root {args.pipeline_root!r}: give a URI, e.g. s3://bucket/pipeline-root")
    if scheduling:
        if not args.cron:
            raise TlopsError("--cron is required to schedule: 6 fields, seconds first, e.g. '0 0 3 * * *'")
        check_cron(args.cron)
        check_max_concurrency(args.max_concurrency)
    elif args.poll_interval <= 0 or args.timeout < 0:
        raise TlopsError("--poll-interval must be positive and --timeout 0 (no limit) or positive")
    token = _token(args)
    parameters = pipeline_parameters(args.data, args.tracking_uri, config)
    with tempfile.TemporaryDirectory() as folder:
        compiled = compile_pipeline(
            Path(folder) / "pipeline.yaml", image_repository=args.image_repository, image_tag=image_tag(args)
        )
        package = read_package(compiled)
        parameters |= parse_overrides(args.param, package.inputs)
        connection = _connect(args, token)
        version = ensure_version(connection, package)
    if version.uploaded_pipeline:
        print(f"uploaded pipeline {package.name!r} ({version.pipeline_id})")
    done = "uploaded" if version.uploaded_version else "reusing (this code was uploaded before)"
    print(f"{done} pipeline version {version.name!r} ({version.version_id})")
    if not scheduling:
        created = submit_run(
            connection, version, parameters, args.kfp_experiment, args.run_name, args.pipeline_root,
            args.service_account,
        )  # fmt: skip
        print(f"created run {created.id} in experiment {created.experiment!r}: {created.url}", flush=True)
        return _follow(connection, created, args.poll_interval, args.timeout) if args.wait else 0
    created, replaced = schedule_run(
        connection, version, parameters, args.kfp_experiment, args.job_name, args.cron, args.max_concurrency,
        args.catchup, args.pipeline_root, args.service_account,
    )  # fmt: skip
    print(f"created recurring run {created.id} in experiment {created.experiment!r}: {created.url}")
    for old in replaced:
        print(f"replaced recurring run {old.name!r} ({old.id}, cron {old.cron!r}): deleted")
    return 0


def _check_host(host: str | None) -> None:
    if not host:
        raise TlopsError("no Kubeflow Pipelines host: pass --host URL or set KFP_HOST")


def _token(args: argparse.Namespace) -> Token | None:
    """The bearer token: --token-file, else $KFP_TOKEN, else the pod's service-account token."""
    from tlops.pipeline.kfp_auth import SERVICE_ACCOUNT_TOKEN, TOKEN_ENV, find_token

    return find_token(args.token_file, os.environ.get(TOKEN_ENV), SERVICE_ACCOUNT_TOKEN)


def _connect(args: argparse.Namespace, token: Token | None) -> Connection:
    from tlops.pipeline.kfp_api import connect

    return connect(args.host, token, args.namespace)


def _follow(connection: Connection, created: Submission, poll_interval: float, timeout: float) -> int:
    """``submit --wait``: print each state of the run; 0 when it succeeded, 1 otherwise."""
    from tlops.pipeline.remote import wait_for_run

    outcome = wait_for_run(
        connection, created.id, poll_interval, timeout, lambda state: print(f"run {created.id}: {state}", flush=True)
    )
    if outcome.state == "SUCCEEDED":
        return 0
    if outcome.timed_out:
        problem = f"is still {outcome.state} after {timeout:g} s (--timeout); follow it at {created.url}"
    elif outcome.failed_task:
        error = outcome.error or "see its log in the Kubeflow Pipelines UI"
        problem = f"ended {outcome.state}: step {outcome.failed_task} failed: {error} ({created.url})"
    else:
        problem = (
            f"ended {outcome.state}: {outcome.error or 'see the run in the Kubeflow Pipelines UI'} ({created.url})"
        )
    print(f"tlops: error: run {created.id} {problem}", file=sys.stderr)
    return 1


def _manage_schedules(args: argparse.Namespace) -> int:
    """``schedule --list`` and ``schedule --delete NAME``: no compile, no --data, --tracking-uri or --cron."""
    from tlops.pipeline.schedules import delete_schedule, format_schedules, list_schedules

    _check_host(args.host)
    connection = _connect(args, _token(args))
    if args.list:
        schedules = list_schedules(connection)
        print(format_schedules(schedules) if schedules else f"no recurring runs on {connection.host}")
        return 0
    for deleted in delete_schedule(connection, args.delete):
        print(f"deleted recurring run {deleted.name!r} ({deleted.id}, cron {deleted.cron!r})")
    return 0


def image_tag(args: argparse.Namespace) -> str:
    """The images' tag: ``--image-tag``, else the version plus ``-$TLOPS_GIT_COMMIT`` when that is set."""
    from tlops.pipeline.image import COMMIT_ENV, default_tag

    return args.image_tag if args.image_tag is not None else default_tag(os.environ.get(COMMIT_ENV))


def _demo_images_per_class() -> int | None:
    value = os.environ.get(DEMO_IMAGES_PER_CLASS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 3:
        raise TlopsError(f"{DEMO_IMAGES_PER_CLASS_ENV}={value!r}: give a whole number of images per class, at least 3")
    return int(value)


def demo_detection_settings(config: RunConfig, given: RunConfig) -> RunConfig:
    """The detection demo's training length (``DEMO_DETECTION``), for the settings the user left at their defaults.

    Its 160-pixel images of simple shapes train a useful detector on a CPU in minutes; the defaults are sized for
    real data on a GPU.
    """
    defaults = TrainConfig()
    changes = {
        name: value for name, value in DEMO_DETECTION.items() if getattr(given.train, name) == getattr(defaults, name)
    }
    return replace(config, train=replace(config.train, **changes))


def command_run(args: argparse.Namespace) -> int:
    """``tlops run``: preflight the inputs, run the pipeline locally, print and write the summary."""
    import shutil

    from tlops.data.demo import write_digits_imagefolder
    from tlops.data.prepare import PreparedCache
    from tlops.data.prepared import OBJECT_DETECTION
    from tlops.data.sources import check_data_argument, check_output_apart
    from tlops.io.paths import check_cache_dir, check_writable_dir
    from tlops.io.storage import check_writable_location, make_s3_client
    from tlops.models.availability import check_backbone_available
    from tlops.promotion.tracking import check_tracking_server, resolve_tracking_uri
    from tlops.tasks import DEFAULT_TASK, detect_task
    from tlops.train.strategies import STRATEGIES

    # Preflight: fail in one line before any step runs, anything is registered or --output is written; the
    # cheap checks first, the data (every image read and decoded) last.
    config = resolve_config(args)
    given = config  # what OUTPUT/config.yaml keeps: the settings as given, before this run's own defaults
    backbones = _check_settings(config)
    split = replace(config.split, archive_limits=archive_limits())
    output = args.output.resolve()
    check_writable_dir(output)
    cache_dir = check_cache_dir(os.environ)
    # A run killed during fine-tuning and started again with the same command resumes from the last epoch.
    config = config.with_checkpoints_in(str(output))
    check_checkpoint(config, config.storage.checkpoint_uri)
    data_uri = None
    if args.data is not None:
        check_data_argument(args.data)
        data_uri = args.data if args.data.startswith("s3://") else str(Path(args.data).resolve())
        check_output_apart(data_uri, output)
    tracking_uri = resolve_tracking_uri(args.tracking_uri, output)
    check_tracking_server(tracking_uri)
    feature_cache = config.storage.feature_cache
    if feature_cache:
        s3_cache = make_s3_client() if feature_cache.startswith("s3://") else None
        check_writable_location(feature_cache, s3_cache, "--feature-cache")
    created = not output.exists()
    try:
        if data_uri is None and args.demo == "text":
            from tlops.data.text.demo import write_text_demo

            per_class = _demo_images_per_class()
            data_uri = str(write_text_demo(output / "demo-data", **({"per_class": per_class} if per_class else {})))
            print(f"no --data given: using the built-in text demo (docstrings of installed libraries) in {data_uri}")
        elif data_uri is None and args.demo == "detection":
            from tlops.data.detection.demo import DEMO_CLASSES, write_detection_demo

            per_class = _demo_images_per_class()  # images with each shape (an image holds several)
            images = {"images": per_class * len(DEMO_CLASSES)} if per_class else {}
            data_uri = str(write_detection_demo(output / "demo-data", **images))
            config = demo_detection_settings(config, given)
            print(f"no --data given: using the built-in detection demo (shapes on photos, COCO boxes) in {data_uri}")
        elif data_uri is None:
            data_uri = str(write_digits_imagefolder(output / "demo-data", per_class=_demo_images_per_class()))
            if not config.selection.image_size:
                config = replace(config, selection=replace(config.selection, image_size=DEMO_IMAGE_SIZE))
            print(f"no --data given: using the built-in demo data (scikit-learn digits) in {data_uri}")
        s3 = make_s3_client() if data_uri.startswith("s3://") else None
        task = detect_task(config.task, data_uri, s3)
        # The steps need not recognise the task again, and kfp.local loops over the candidates given.
        candidates = tuple(backbone_list(",".join(backbones), task))
        config = replace(config, task=task.name, selection=replace(config.selection, backbones=candidates))
        STRATEGIES.get(config.train.strategy).check_task(task.name)
        if config.export.format != "none":
            from tlops.steps.export import check_export_task

            check_export_task(config.export, task.name)
        if task.name == OBJECT_DETECTION:
            from tlops.steps.fine_tune_detection import check_detection_settings  # torch: only for a detection run

            check_detection_settings(config.train)
        elif task.name != DEFAULT_TASK:
            from tlops.train.text_finetune import check_no_image_settings  # torch: only for a text run

            check_no_image_settings(config.train)
        for name in candidates:
            if task.name == DEFAULT_TASK:
                check_backbone_available(name)
        # Prepared for real into the prepared-dataset cache: the prepare-data step copies it, decoding nothing.
        cache = PreparedCache.in_cache_dir(cache_dir)
        prepared = task.preflight(data_uri, split, s3, cache)
    except BaseException:
        if created:
            shutil.rmtree(output, ignore_errors=True)
        raise

    from tlops.pipeline.local import PipelineFailed, keep_run_summary, run_locally
    from tlops.steps.summary import format_summary  # imports torch: not before the preflight has passed

    output.mkdir(parents=True, exist_ok=True)
    written = write_config(given, output)
    parameters = pipeline_parameters(data_uri, tracking_uri, config)
    images = sum(prepared.num_images.values())
    kind = "texts" if task.name not in (DEFAULT_TASK, OBJECT_DETECTION) else "images"
    print(
        f"running the tlops pipeline locally ({images} {kind}, {len(prepared.quarantined)} quarantined; tracking at "
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
    print(f"  settings   {written} (repeat the run with --config {written})")
    print(f"  summary    {path} (this run's is kept as {kept.relative_to(output)}{'; ' if replaced else ''}{replaced})")
    return 0
