"""bench/strategies.py runs as bench/README.md shows it, at a tiny size, and reports every strategy and auto's verdict.

The command is taken from bench/README.md through test_readme's contract (``@covers`` + ``readme_command``), so a
change to the shown command fails here rather than going stale.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from test_readme import REPO, SHORT_TIMEOUT_S, covers, readme_command, run, succeeded

STRATEGIES_BENCH = (
    "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TLOPS_WORKERS=0 python bench/strategies.py "
    "--workdir /tmp/tlops-bench-strategies --json /tmp/tlops-bench-strategies/strategies.json"
)
# Instead of three datasets of 40 a class at 64 px, 3 epochs, every strategy: the digits, 15 a class (11 training
# images a class: enough for auto to fine-tune, then check the result against the probes), 32 px, one epoch.
TINY = ["--datasets", "digits", "--per-class", "15", "--image-size", "32", "--epochs", "1"]
TINY += ["--strategies", "linear-probe,mlp-probe,partial,auto"]
HEADER = "| strategy | applied | val acc | test acc ± SE | train img/s | fine-tune s |"


@covers(STRATEGIES_BENCH)
def test_bench_strategies(tmp_path: Path) -> None:
    command = readme_command(STRATEGIES_BENCH, {"/tmp/tlops-bench-strategies": str(tmp_path / "bench")})
    assert command.env == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TLOPS_WORKERS": "0"}
    command.argv += TINY
    stdout = succeeded(run(command, REPO, timeout=SHORT_TIMEOUT_S))

    # The Markdown: one table for the dataset with a row per strategy, auto's line, and the summary table.
    lines = stdout.splitlines()
    assert lines[0].startswith("### digits (10 classes; train / val / test = ")
    table = lines[lines.index(HEADER) :]
    assert [row.split(" | ")[0].strip("| ") for row in table[2:6]] == ["linear-probe", "mlp-probe", "partial", "auto"]
    assert table[6] == ""
    assert table[7].startswith("auto decided **") and "within one SE of the best strategy's" in table[7]
    assert "### auto" in lines
    summary = lines[lines.index("### auto") + 2 :]
    assert summary[0].startswith("| dataset | auto decided | auto kept |") and summary[2].startswith("| digits | ")

    report = json.loads((tmp_path / "bench" / "strategies.json").read_text())
    assert (report["epochs"], report["image_size"], report["per_class"], report["workers"]) == (1, 32, 15, 0)
    [dataset] = report["datasets"]
    assert dataset["dataset"] == "digits" and dataset["classes"] == 10
    assert sum(dataset["counts"].values()) == 150
    rows = {row["strategy"]: row for row in dataset["strategies"]}
    assert list(rows) == ["linear-probe", "mlp-probe", "partial", "auto"]
    for name, row in rows.items():
        assert 0 <= row["val_accuracy"] <= 1 and 0 <= row["test_accuracy"] <= 1
        assert row["test_images"] == dataset["counts"]["test"]
        p, n = row["test_accuracy"], row["test_images"]
        assert math.isclose(row["test_std_error"], math.sqrt(p * (1 - p) / n))
        assert row["seconds"] >= 0
        if name in ("linear-probe", "mlp-probe"):
            assert row["applied"] == name and row["images_per_second"] is None and row["epochs_trained"] == 0
    assert rows["partial"]["applied"] == "partial" and rows["partial"]["epochs_trained"] == 1
    assert rows["partial"]["images_per_second"] > 0

    # auto's decision is reported: the rule's choice, what it kept, and both checks of its promise.
    verdict = dataset["auto"]
    assert verdict["decided"] in ("linear-probe", "mlp-probe", "partial", "lp-ft")
    assert verdict["kept"] in ("linear-probe", "mlp-probe", verdict["decided"])
    assert verdict["kept"] == rows["auto"]["applied"]
    assert verdict["val_at_least_best_probe"] is True  # by construction: a fine-tuned model must beat the probes
    probes_val = max(rows["linear-probe"]["val_accuracy"], rows["mlp-probe"]["val_accuracy"])
    assert verdict["best_probe_val_accuracy"] >= probes_val
    assert verdict["best_strategy"] in ("linear-probe", "mlp-probe", "partial")
    assert isinstance(verdict["test_within_one_se_of_best"], bool)
    assert f"auto decided **{verdict['decided']}**, kept **{verdict['kept']}**" in stdout
