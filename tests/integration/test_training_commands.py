"""Linear probe, strategy choice, fine-tuning and evaluation, on real features and a real (tiny) dataset.

The end-to-end tests run the steps (prepare data -> extract features and probe -> fine-tune -> evaluate) on
scikit-learn's handwritten digits written as an ImageFolder (10 classes x 10 images), with the bundled
ImageNet-pretrained EfficientNet-Lite0 at 64x64 pixels.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tlops.data.demo import DIGIT_NAMES, write_digits_imagefolder
from tlops.data.prepare import SplitConfig, prepare_data
from tlops.steps.extract_features import extract_and_probe
from tlops.steps.runtime import Runtime

IMAGE_SIZE = 64

PER_CLASS = 10


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    return Runtime(cache_dir=tmp_path_factory.mktemp("cache"), batch_size=32)


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory, runtime: Runtime) -> dict[str, Path]:
    """Digits ImageFolder -> prepared data -> cached features and the probe head (EfficientNet-Lite0 at 64 px)."""
    root = tmp_path_factory.mktemp("e2e")
    images = write_digits_imagefolder(root / "images", per_class=PER_CLASS)
    data_dir, features_dir, probe_dir = root / "data", root / "features", root / "probe"
    prepared = prepare_data(str(images), data_dir, SplitConfig(seed=0, workers=2))
    assert prepared.classes == sorted(DIGIT_NAMES)
    summary = extract_and_probe(data_dir, "efficientnet_lite0", features_dir, probe_dir, runtime, image_size=IMAGE_SIZE)
    assert summary.image_size == IMAGE_SIZE and summary.backbone == "efficientnet_lite0"
    return {"root": root, "data": data_dir, "features": features_dir, "probe": probe_dir}


def test_fine_tune_command_logs_lines_not_progress_bars(
    probed: dict[str, Path], runtime: Runtime, tmp_path: Path
) -> None:
    """As in a pod or under kfp.local, stderr is a pipe: progress is a log line per interval, never a '\r' bar."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TLOPS_", "AWS_", "MLFLOW_"))}
    env |= {"TLOPS_DEVICE": "cpu", "TLOPS_CACHE_DIR": str(runtime.cache_dir), "TLOPS_WORKERS": "0"}
    command = [sys.executable, "-m", "tlops.cli", "fine-tune", "--dataset", str(probed["data"]),
               "--probe", str(probed["probe"]), "--output", str(tmp_path / "model"), "--strategy", "full",
               "--epochs", "2", "--batch-size", "16"]  # fmt: skip
    start = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, timeout=600, check=False)  # bytes: '\r' kept
    elapsed = time.monotonic() - start

    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert b"\r" not in result.stderr and b"\r" not in result.stdout
    stderr = result.stderr.decode()
    logged = [line for line in stderr.splitlines() if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO tlops\.", line)]
    requested = "tlops.steps.fine_tune: strategy lp-ft: strategy 'lp-ft' was requested"
    assert any(line.endswith(requested) for line in logged)
    for epoch in (1, 2):
        trained = f"tlops.train.finetune: epoch {epoch}: 8 blocks trained, train loss "
        assert any(trained in line for line in logged), stderr
    # 2 epochs of 5 batches: at most one progress line per 30 s and loop, plus each loop's closing line.
    progress_lines = [line for line in logged if " tlops.io.progress: " in line]
    assert len(progress_lines) <= 2 * (elapsed // 30 + 1), progress_lines
    assert not re.search(r"\d%\|", stderr), stderr  # no tqdm bar (" 40%|####      | 2/5 [...]") anywhere
    assert json.loads(result.stdout)["strategy"] == "lp-ft"  # stdout holds the result only
