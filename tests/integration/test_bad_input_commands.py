"""Bad input found by a new user (issue 6), the cases that run ``tlops`` or read S3: each is one ``tlops: error:``
line and exit status 2, or works as documented, and nothing is left half-written.

CLI cases run the installed ``tlops`` console script in subprocesses (all started at once by one fixture, as
each is a fresh Python); S3 cases read a bucket on the suite's SeaweedFS.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bad_input import check_mislabelled as _check_mislabelled
from bad_input import deflated_zip as _zip
from bad_input import folder as _folder
from bad_input import image as _image
from bad_input import mislabelled_tree as _mislabelled_tree
from splits import split_config as _config
from tlops.data.prepare import prepare_data

TLOPS = Path(sys.executable).parent / "tlops"
CLI_TIMEOUT_S = 180
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ")
ANSI = "\x1b["


def _env(**extra: str) -> dict[str, str]:
    """This environment without tracking or S3 settings, offline for the hubs, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "HF_"))}
    return env | {"TLOPS_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"} | extra


def _error_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit status 2 and one ``tlops: error:`` line, last on stderr, naming the problem: no traceback, no colour."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert ANSI not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("tlops: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert all(LOG_LINE.match(line) for line in lines[:-1]), result.stderr  # anything else is a log record
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


# --- the CLI cases, run at once ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A command line (``{root}`` is the scratch folder), its environment, and what the error line must name."""

    args: tuple[str, ...]
    needles: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


RUN = ("run", "--strategy", "linear-probe")
SYS_DIR = "/sys/tlops-bad-input-test"
CASES: dict[str, Case] = {
    # 1. an --output that cannot be created is named before any image is read (the data here is also bad)
    "run-output-file": Case(
        (*RUN, "--data", "{root}/broken", "--output", "{root}/a-file"), ("a-file", "existing file")
    ),
    "prep-output-file": Case(
        ("prepare-data", "--data", "{root}/broken", "--output", "{root}/a-file"), ("a-file", "existing file")
    ),
    "run-output-under-file": Case(
        (*RUN, "--data", "{root}/broken", "--output", "{root}/a-file/out"), ("cannot be created", "is a file")
    ),
    "run-output-proc": Case(
        (*RUN, "--data", "{root}/broken", "--output", "/proc/tlops-bad-input/out"), ("/proc/tlops-bad-input/out",)
    ),
    "prep-output-sys": Case(("prepare-data", "--data", "{root}/broken", "--output", SYS_DIR), (SYS_DIR,)),
    # 2. MLflow's filesystem backend, refused in the preflight wherever a tracking URI is taken
    "run-file-tracking": Case(
        (*RUN, "--data", "{root}/valid", "--output", "{root}/out", "--tracking-uri", "file://{root}/mlruns"),
        ("filesystem backend", "maintenance mode", "sqlite:///", "http://"),
    ),
    "run-file-tracking-env": Case(
        (*RUN, "--data", "{root}/valid", "--output", "{root}/out"),
        ("filesystem backend", "sqlite:///"),
        (("MLFLOW_TRACKING_URI", "file://{root}/mlruns"),),
    ),
    "promote-file-tracking": Case(("promote", "--tracking-uri", "{root}/mlruns"), ("filesystem backend",)),
    # 3. a class whose files are all broken: caught by the preflight, which decodes every image
    "run-broken-class": Case(
        (*RUN, "--data", "{root}/broken", "--output", "{root}/out"), ("'bad' has 0", "4 quarantined", "bad/")
    ),
    # 5. an empty --data (an unset $DATA) is not the current folder
    "run-empty-data": Case((*RUN, "--data", "", "--output", "{root}/out"), ("--data is empty",)),
    "prep-empty-data": Case(("prepare-data", "--data", "", "--output", "{root}/out"), ("--data is empty",)),
    "submit-empty-data": Case(
        ("submit", "--host", "http://127.0.0.1:9", "--data", " ", "--tracking-uri", "http://127.0.0.1:9"),
        ("--data is empty",),
    ),
    "schedule-empty-data": Case(
        (
            "schedule",
            "--host",
            "http://127.0.0.1:9",
            "--data",
            "",
            "--tracking-uri",
            "http://127.0.0.1:9",
            "--cron",
            "0 0 3 * * *",
        ),
        ("--data is empty",),
    ),
    # 6. an archive bomb
    "run-bomb-total": Case(
        (*RUN, "--data", "{root}/bomb.zip", "--output", "{root}/out"),
        ("bomb.zip", "more than 1.0 MiB", "TLOPS_ARCHIVE_MAX_BYTES"),
        (("TLOPS_ARCHIVE_MAX_BYTES", str(2**20)), ("TLOPS_ARCHIVE_MAX_RATIO", "10000")),
    ),
    # 7. output and data one inside the other
    "run-output-in-data": Case(
        (*RUN, "--data", "{root}/valid", "--output", "{root}/valid/run"), ("inside the dataset folder",)
    ),
    "prep-output-is-csv-folder": Case(
        ("prepare-data", "--data", "{root}/csv/labels.csv", "--output", "{root}/csv"), ("is the dataset folder",)
    ),
    "run-data-in-output": Case(
        (*RUN, "--data", "{root}/outer/data", "--output", "{root}/outer"), ("is inside --output",)
    ),
    # 8. one class: what was found and what to pass
    "run-one-class-nested": Case(
        (*RUN, "--data", "{root}/nested", "--output", "{root}/out"),
        ("only one class ('images'", "subfolders (cats, dogs)", "pass --data {root}/nested/images"),
    ),
    "run-one-class-flat": Case(
        (*RUN, "--data", "{root}/flat", "--output", "{root}/out"),
        ("only one class ('cats', 6 files)", "at least two classes", "{root}/flat/<class>/<image>"),
    ),
    # 10. backbones checked against the library's registry and the local weight cache; a minimum image size
    "run-timm-offline": Case(
        (*RUN, "--data", "{root}/valid", "--output", "{root}/out", "--backbones", "timm:resnet18"),
        (
            "timm:resnet18: its pretrained weights are not in the local Hugging Face cache and the hub cannot be "
            "reached; download them first or pass timm:resnet18@/path/weights.safetensors",
        ),
        (("HF_HOME", "{root}/hf"), ("TORCH_HOME", "{root}/torch")),
    ),
    "run-timm-unknown": Case(
        (*RUN, "--data", "{root}/valid", "--output", "{root}/out", "--backbones", "timm:no_such_arch"),
        ("timm:no_such_arch", "timm has no model 'no_such_arch'"),
    ),
    "run-torchvision-unknown": Case(
        (*RUN, "--data", "{root}/valid", "--output", "{root}/out", "--backbones", "torchvision:resnet1800"),
        ("torchvision has no model 'resnet1800'", "did you mean"),
    ),
    "run-image-size-1": Case(
        (*RUN, "--data", "{root}/valid", "--output", "{root}/out", "--image-size", "1"),
        ("--image-size 1 is too small", "at least 32"),
    ),
    # and: a negative epoch count
    "run-epochs-negative": Case(
        (*RUN, "--data", "{root}/valid", "--output", "{root}/out", "--epochs", "-1"), ("--epochs must be positive",)
    ),
    # a registered model name MLflow refuses: before any training, not at the register step
    "run-model-name": Case(
        (*RUN, "--data", "{root}/valid", "--output", "{root}/out", "--model-name", "team/classifier"),
        ("--model-name 'team/classifier' is not a name MLflow accepts", "cannot contain '/' or ':'"),
    ),
    # a gate threshold out of range, before any work
    "run-gate-alpha": Case(
        (*RUN, "--data", "{root}/valid", "--output", "{root}/out", "--gate-alpha", "1.5"),
        ("--gate-alpha must be in (0, 1), got 1.5",),
    ),
}


def _write_inputs(root: Path) -> None:
    _folder(root / "valid", {"cats": 4, "dogs": 4})
    _folder(root / "broken", {"cats": 4, "dogs": 4})
    (root / "broken" / "bad").mkdir()
    for i in range(4):
        (root / "broken" / "bad" / f"{i}.png").write_bytes(_image(100 + i)[:40])  # truncated
    (root / "a-file").write_text("not a folder\n")
    _zip(root / "bomb.zip", {"a/zeros.png": b"\0" * (20 * 2**20)} | {f"b/{i}.png": _image(200 + i) for i in range(3)})
    _folder(root / "csv", {"img": 6})
    (root / "csv" / "labels.csv").write_text(
        "path,label\n" + "".join(f"img/{i:03d}.png,{'ab'[i % 2]}\n" for i in range(6))
    )
    _folder(root / "outer" / "data", {"cats": 4, "dogs": 4})
    _folder(root / "nested" / "images", {"cats": 4, "dogs": 4})
    (root / "nested" / "README.txt").write_text("my photos\n")  # a loose file: the folder is no mere wrapper
    _folder(root / "flat", {"cats": 6})


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Every CLI case's result and scratch folder."""
    root = tmp_path_factory.mktemp("bad-input")
    _write_inputs(root)

    def run(case: Case) -> subprocess.CompletedProcess[str]:
        args = [arg.replace("{root}", str(root)) for arg in case.args]
        env = _env(**{k: v.replace("{root}", str(root)) for k, v in case.env})
        try:
            return subprocess.run(
                [str(TLOPS), *args], cwd=root, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S
            )
        except subprocess.TimeoutExpired as error:
            return subprocess.CompletedProcess(error.cmd, -9, str(error.stdout), f"timed out: {error.stderr}")

    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
        results = dict(zip(CASES, pool.map(run, CASES.values()), strict=True))
    return {name: (result, root) for name, result in results.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_cli_bad_input_is_one_line(cli: dict[str, tuple[subprocess.CompletedProcess[str], Path]], name: str) -> None:
    result, root = cli[name]
    _error_line(result, *(needle.replace("{root}", str(root)) for needle in CASES[name].needles))
    assert not (root / "out").exists()  # nothing half-written, nothing registered
    assert not (root / "mlruns").exists()
    assert not Path(SYS_DIR).exists() and not Path("/proc/tlops-bad-input").exists()
    assert (root / "a-file").read_text() == "not a folder\n"
    assert sorted(p.name for p in (root / "valid").iterdir()) == ["cats", "dogs"]
    assert sorted(p.name for p in (root / "csv").iterdir()) == ["img", "labels.csv"]
    assert sorted(p.name for p in (root / "outer").iterdir()) == ["data"]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no partial extraction


def test_output_checked_before_any_image_is_read(cli: dict[str, tuple[subprocess.CompletedProcess[str], Path]]) -> None:
    # The data of these cases is bad too (a broken class): the output is what the line names.
    for name in ("run-output-file", "prep-output-file", "run-output-proc", "prep-output-sys"):
        line = _error_line(cli[name][0])
        assert "--output" in line and "'bad'" not in line, line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data", {"cats": 4, "dogs": 4})
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for command in ("run", "prepare-data"):
            result = subprocess.run(
                [str(TLOPS), command, "--data", str(data), "--output", str(locked / "out")],
                env=_env(), capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
            )  # fmt: skip
            _error_line(result, str(locked / "out"), "cannot be created or written")
    finally:
        locked.chmod(0o755)
    assert list(locked.iterdir()) == []


# --- 4. files are judged by content, not by extension ---------------------------------------------------------


@pytest.mark.integration
def test_files_judged_by_content_on_s3(s3_env: Any, s3_client: Any, bucket: str, tmp_path: Path) -> None:
    from tlops.io.storage import make_s3_client

    root = _mislabelled_tree(tmp_path / "tree")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        s3_client.upload_file(str(path), bucket, f"datasets/x/{path.relative_to(root).as_posix()}")
    from_s3 = prepare_data(f"s3://{bucket}/datasets/x", tmp_path / "from-s3", _config(), make_s3_client())
    _check_mislabelled(tmp_path / "from-s3")
    assert from_s3.digest == prepare_data(str(root), tmp_path / "from-folder", _config()).digest


# --- 8. wrapper folders stripped alike for folders, archives and S3 ---------------------------------------------


@pytest.mark.integration
def test_wrapped_s3_prefix(s3_env: Any, s3_client: Any, bucket: str, tmp_path: Path) -> None:
    from tlops.io.storage import make_s3_client

    root = _folder(tmp_path / "root" / "wrap" / "images", {"cats": 4, "dogs": 4}).parent.parent
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        s3_client.upload_file(str(path), bucket, f"ds/{path.relative_to(root).as_posix()}")
    from_s3 = prepare_data(f"s3://{bucket}/ds", tmp_path / "a", _config(), make_s3_client())
    assert from_s3.classes == ["cats", "dogs"]
    assert from_s3.digest == prepare_data(str(root), tmp_path / "b", _config()).digest


# --- and: S3 without credentials, for run and prepare-data ----------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("command", ["run", "prepare-data"])
def test_s3_without_credentials(s3_env: Any, bucket: str, tmp_path: Path, command: str) -> None:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    env = _env(
        AWS_ENDPOINT_URL=endpoint,
        AWS_DEFAULT_REGION=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    output = tmp_path / "out"
    result = subprocess.run(
        [str(TLOPS), command, "--data", f"s3://{bucket}/datasets/x", "--output", str(output)],
        env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
    )  # fmt: skip
    _error_line(result, "no S3 credentials", "AWS_ACCESS_KEY_ID")
    assert not output.exists()
