"""kfp.local: missing features fan out over extraction shards, and a re-run after adding images extracts only those."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tlops.data.demo import write_digits_imagefolder
from tlops.io.logs import LEVEL_ENV

PLAN = re.compile(r"extraction plan: (\S+) has (\d+) of (\d+) images cached; (\d+) to extract in (\d+) shard")
SHARD = re.compile(r"extraction shard (\d+) of (\S+): (\d+) images extracted")
PACKS = re.compile(r"feature packs: (\S+) has (\d+) of (\d+) images cached; extracting (\d+)")


def _run(data: Path, cwd: Path, output: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "KFP_"))}
    env |= {LEVEL_ENV: "INFO", "TLOPS_CACHE_DIR": str(cwd / "cache")}
    command = [sys.executable, "-m", "tlops.cli", "run", "--data", str(data), "--epochs", "1", "--output", output]
    command += ["--extraction-shard-size", "20", "--feature-cache", str(cwd / "features"), "--strategy", "linear-probe"]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def _packs_extracted(log: str, backbone: str) -> list[int]:
    """Images the steps after the shards extracted for ``backbone`` (from their pack lookups' log lines)."""
    return [int(count) for name, *_, count in PACKS.findall(log) if name == backbone]


def _checksums(folder: Path) -> set[str]:
    return {hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.rglob("*.png")}


@pytest.mark.pipeline
def test_extraction_fans_out_over_shards_and_a_rerun_extracts_only_new_images(tmp_path: Path) -> None:
    data = write_digits_imagefolder(tmp_path / "digits", per_class=5)
    before = _checksums(data)
    first = _run(data, tmp_path, "first")
    ((backbone, cached, total, missing, shards),) = PLAN.findall(first)
    assert (int(cached), int(total), int(missing)) == (0, len(before), len(before))
    assert int(shards) == -(-len(before) // 20) > 1
    extracted = SHARD.findall(first)
    assert sorted(int(number) for number, _, _ in extracted) == list(range(int(shards)))
    assert sum(int(count) for _, _, count in extracted) == len(before)
    # Scoring and extract-features assemble the planned backbone's features from the shards' packs: it runs no
    # more there (the pixels baseline is not planned: it is computed where it is scored, on the CPU).
    assert _packs_extracted(first, backbone) == [0]  # score-backbone (extract-features then hits its entry)

    write_digits_imagefolder(data, per_class=6)  # one more image per class
    new = _checksums(data) - before
    second = _run(data, tmp_path, "second")
    ((_, cached, total, missing, shards),) = PLAN.findall(second)
    assert (int(cached), int(missing), int(shards)) == (len(before), len(new), 1)
    assert sum(int(count) for _, _, count in SHARD.findall(second)) == len(new) > 0
    assert _packs_extracted(second, backbone) == [0]
    assert backbone == "efficientnet_lite0"
