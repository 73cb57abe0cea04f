"""bench/README.md's object-detection benchmark command, run as shown at a tiny size.

Part of the README contract of ``test_readme.py`` (its ``test_every_readme_command_is_run_or_excused`` imports every
test module, so this module's ``@covers`` are counted). The full grid as measured takes over half an hour of CPU and
is excused there in NOT_RUN; its usage form runs here on 8 training images of the shapes set, one epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

from repository import REPO
from test_readme import (
    SHORT_TIMEOUT_S,
    _report_wall_times,  # noqa: F401  (prints this module's wall times too)
    covers,
    readme_command,
    run,
    succeeded,
)

DETECTION_TRANSFER_USAGE = (
    "python bench/detection_transfer.py [--workdir DIR] [--sets shapes,digits] [--sizes 24,64] [--seeds 0] "
    "[--epochs 4] [--arms LIST] [--json FILE]"
)


@covers(DETECTION_TRANSFER_USAGE)
def test_bench_detection_transfer(tmp_path: Path) -> None:
    """Two arms on 8 shapes images for one epoch, the crop probes of the ranking and one timed throughput batch."""
    command = readme_command(
        DETECTION_TRANSFER_USAGE,
        {"[--workdir DIR]": f"--workdir {tmp_path / 'bench'}"}
        | {"[--sets shapes,digits] [--sizes 24,64] [--seeds 0]": "--sets shapes --sizes 8 --seeds 0"}
        | {"[--epochs 4] [--arms LIST]": "--epochs 1 --arms frozen,random --batch-size 4"}
        | {"[--json FILE]": f"--json {tmp_path / 'det.json'} --val-images 3 --test-images 4 --rank none"},
    )
    stdout = succeeded(run(command, REPO, env={"OMP_NUM_THREADS": "1"}, timeout=SHORT_TIMEOUT_S))
    assert "| shapes | 8 |" in stdout
    report = json.loads((tmp_path / "det.json").read_text())
    rows = report["rows"]
    assert [(r["set"], r["size"], r["arm"]) for r in rows] == [("shapes", 8, "frozen"), ("shapes", 8, "random")]
    for row in rows:
        assert 0 <= row["map50"] <= 1 and 0 <= row["map"] <= row["map50"] + 1e-9
        assert (row["train_images"], row["test_images"], row["best_epoch"]) == (8, 4, 1)
        assert len(row["val_map50"]) == 1 and row["images_per_second"] > 0
    # the ranking's no-transfer row and efficientnet_lite0's: crop probes of the training boxes, the grid's mAP50
    ranking = {r["backbone"]: r for r in report["ranking"]}
    assert set(ranking) == {"pixels", "efficientnet_lite0"}
    assert ranking["pixels"]["map50"] == rows[1]["map50"]  # the random backbone's detector
    assert all(0 < r["probe"]["probe_accuracy"] <= 1 and r["probe"]["crops"] > 0 for r in ranking.values())
    # 8 images in batches of 4: one to warm up, one timed each way
    throughput = report["throughput"]
    assert throughput["batches"] == 1 and throughput["training"] > 0 and throughput["forward_backward"] > 0
