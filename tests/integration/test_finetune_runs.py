"""The fine-tuning engine: blocks per strategy, parameter groups, the shared loop, checkpoints, resume, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from probes import SMALL_SIZE as SIZE
from probes import probe_small
from tlops.errors import TlopsError
from tlops.models.backbones import load_backbone
from tlops.steps.outputs import WEIGHTS_FILE
from tlops.train.resume import CheckpointStore


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small digits probed once for this module, with a feature cache of their own."""
    return probe_small(tmp_path_factory.mktemp("engine"))


# --- checkpoints ---------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_checkpoints_on_s3(s3_client, bucket: str) -> None:
    s3 = s3_client
    store = CheckpointStore(f"s3://{bucket}/checkpoints/run-1", s3)
    assert store.load({"k": 1}) is None
    store.save({"epoch": 2, "weights": torch.ones(3)}, {"k": 1})
    loaded = store.load({"k": 1})
    assert loaded["epoch"] == 2 and torch.equal(loaded["weights"], torch.ones(3))
    store.remove()
    assert store.load({"k": 1}) is None


# --- the step: resume after SIGKILL, DDP against one process -------------------------------------------------------


def _environment(probed: dict[str, Path]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TLOPS_", "AWS_", "MLFLOW_"))}
    return env | {"TLOPS_DEVICE": "cpu", "TLOPS_CACHE_DIR": str(probed["cache"]), "TLOPS_WORKERS": "0",
                  "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip


def _fine_tune_command(probed: dict[str, Path], output: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "tlops.cli", "fine-tune", "--dataset", str(probed["data"]), "--probe",
            str(probed["probe"]), "--output", str(output), "--strategy", "lp-ft", *options]  # fmt: skip


def test_sigkill_mid_epoch_then_the_same_command_resumes_bit_identically(
    probed: dict[str, Path], tmp_path: Path
) -> None:
    options = ("--epochs", "2", "--batch-size", "4")
    env = _environment(probed)
    reference = subprocess.run(_fine_tune_command(probed, tmp_path / "reference", *options), env=env,
                               capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert reference.returncode == 0, reference.stderr[-3000:]

    output = tmp_path / "interrupted"
    command = _fine_tune_command(probed, output, *options)
    checkpoint = output / "checkpoints" / "fine-tune-checkpoint.pt"
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into epoch 2 (of 2)
    assert process.poll() is None, "training ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from epoch 1 of 2" in resumed.stderr
    assert json.loads(resumed.stdout)["resumed_from"] == 1
    expected, actual = load_file(str(tmp_path / "reference" / WEIGHTS_FILE)), load_file(str(output / WEIGHTS_FILE))
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    assert not checkpoint.exists()  # removed once the model is written: a later run starts afresh


def test_two_gloo_processes_train_what_one_process_trains(probed: dict[str, Path], tmp_path: Path) -> None:
    options = ("--epochs", "1", "--batch-size", "8", "--checkpoint-uri", str(tmp_path / "ckpt"))
    env = _environment(probed)
    single = subprocess.run(_fine_tune_command(probed, tmp_path / "single", *options), env=env,
                            capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                *_fine_tune_command(probed, tmp_path / "ddp", *options)[2:]]  # fmt: skip
    ddp = subprocess.run(torchrun, env=env | {"GLOO_SOCKET_IFNAME": "lo"}, capture_output=True, text=True,
                         timeout=600, check=False)  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = load_file(str(tmp_path / "single" / WEIGHTS_FILE)), load_file(str(tmp_path / "ddp" / WEIGHTS_FILE))
    pretrained = load_backbone("efficientnet_lite0", image_size=SIZE).model.state_dict()
    assert not torch.equal(one["1.conv_stem.weight"], pretrained["conv_stem.weight"])  # lp-ft trained the stem
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5)
    assert json.loads((tmp_path / "ddp" / "training.json").read_text())["history"][1]["epoch"] == 1


@pytest.mark.integration
def test_fine_tune_reads_and_writes_step_folders_on_s3(probed: dict[str, Path], services, s3_client, bucket) -> None:
    """As the pods of a multi-node TrainJob do: every folder an s3:// prefix, the checkpoint on S3 too."""
    from tlops.io.storage import upload_folder

    base = f"s3://{bucket}/run-1"
    for name in ("data", "probe", "features"):
        upload_folder(probed[name], f"{base}/{name}", s3_client)
    command = [sys.executable, "-m", "tlops.cli", "fine-tune", "--dataset", f"{base}/data", "--probe",
               f"{base}/probe", "--features", f"{base}/features", "--output", f"{base}/model", "--strategy",
               "partial", "--epochs", "1", "--batch-size", "8"]  # fmt: skip
    env = _environment(probed) | services.env()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    keys = {item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket, Prefix="run-1/model/")["Contents"]}
    assert {"run-1/model/model.safetensors", "run-1/model/model_config.json", "run-1/model/training.json"} <= keys
    assert not any("checkpoint" in key for key in keys)  # written to run-1/model/checkpoints/, removed at the end
    assert json.loads(result.stdout)["strategy"] == "partial"

    from tlops.io.storage import download_prefix

    with pytest.raises(TlopsError, match=rf"^s3://{bucket}/nothing holds no object: give the s3:// prefix of a step"):
        download_prefix(f"s3://{bucket}/nothing", probed["data"].parent / "nothing", s3_client)


def test_fine_tune_bad_input_is_one_line_and_leaves_nothing(probed: dict[str, Path], tmp_path: Path) -> None:
    env = _environment(probed)
    unfreeze = (
        "tlops: error: --unfreeze-blocks 20 is more than the backbone's 8 blocks: use at most 8 "
        "(or --strategy lp-ft to train every block)"
    )
    # An unknown strategy and TLOPS_DEVICE=cuda without CUDA: in-process, below and in test_runtime.py.
    cases = [(("--strategy", "partial", "--unfreeze-blocks", "20"), {}, unfreeze)]
    for options, extra, message in cases:
        output = tmp_path / "out"
        command = _fine_tune_command(probed, output)
        command = command[: command.index("--strategy")] + list(options)
        result = subprocess.run(command, env=env | extra, capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 2, result.stderr[-2000:]
        assert message in result.stderr.strip().splitlines()[-1], result.stderr[-2000:]
        assert "Traceback" not in result.stderr and not output.exists()

    # A checkpoint written for another run in the output's checkpoint folder: refused, kept, nothing else written.
    output = tmp_path / "resumed"
    CheckpointStore(str(output / "checkpoints")).save({"epoch": 1}, {"backbone": "resnet50", "classes": ["a"]})
    result = subprocess.run(_fine_tune_command(probed, output, "--epochs", "1"), env=env, capture_output=True,
                            text=True, timeout=600, check=False)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"tlops: error: the checkpoint {output / 'checkpoints' / 'fine-tune-checkpoint.pt'} belongs to another "
        "training run (different backbone, classes, config, dataset, strategy): delete it, or give this run its own "
        "--checkpoint-uri"
    )
    assert sorted(p.name for p in output.rglob("*")) == ["checkpoints", "fine-tune-checkpoint.pt"]
