"""One definition per setting: the CLI, --config, OUTPUT/config.yaml, the pipeline and the torchrun worker agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_bad_setting_exits_2_in_one_line_before_any_work(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tlops.cli", "run", "--output", str(tmp_path / "out"), "--mixup", "-1"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "tlops: error: --mixup must be >= 0, got -1.0"
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_of_other_settings_is_refused_before_any_work(tmp_path: Path) -> None:
    """A run killed during fine-tuning, started again with another --epochs: one line at once, not after minutes."""
    from dataclasses import asdict

    from tlops.train.config import TrainConfig
    from tlops.train.resume import CheckpointStore

    output = tmp_path / "out"
    store = CheckpointStore(str(output / "checkpoints"))
    store.save({"epoch": 1}, {"backbone": "efficientnet_lite0", "config": asdict(TrainConfig(epochs=3))})
    result = subprocess.run(
        [sys.executable, "-m", "tlops.cli", "run", "--output", str(output), "--epochs", "5", "--mixup", "0.2"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"tlops: error: {store.location} is the checkpoint of an interrupted run with other settings (--epochs 3 "
        "then, 5 now, --mixup 0.0 then, 0.2 now): run with the same settings to resume it, or delete it to start over"
    )
    assert sorted(path.name for path in output.rglob("*")) == ["checkpoints", "fine-tune-checkpoint.pt"]
