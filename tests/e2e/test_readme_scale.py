"""The commands of docs/scale.md and bench/README.md's extraction-plan benchmark, run as shown.

Kept beside test_readme.py and built on its :func:`~test_readme.readme_command` and :func:`~test_readme.covers`
(``test_every_readme_command_is_run_or_excused`` imports this module, so one check sees every ``@covers``).
"""

from __future__ import annotations

import json
from pathlib import Path

from repository import REPO
from test_readme import SHORT_TIMEOUT_S, covers, readme_command, run, succeeded
from tlops.data.demo import write_digits_imagefolder
from tlops.data.prepare import prepare_data

PLAN = "tlops plan-extraction --dataset prepared --output plan --extraction-shard-size 20"
SHARD = "tlops extract-shard --dataset prepared --plan plan --backbone efficientnet_lite0 --shard 0 --output shard-0"
BENCH = "python bench/extraction_plan.py --workdir /tmp/tlops-bench-plan --output /tmp/tlops-bench-plan/plan.json"
BENCH_USAGE = (
    "python bench/extraction_plan.py [--workdir DIR] [--images N] [--cached N] [--shard-size N] [--output FILE]"
)


@covers(PLAN, SHARD)
def test_plan_and_extract_a_shard_as_docs_show(tmp_path: Path) -> None:
    prepare_data(str(write_digits_imagefolder(tmp_path / "digits", per_class=3)), tmp_path / "prepared")
    env = {"TLOPS_CACHE_DIR": str(tmp_path / "cache")}
    planned = json.loads(succeeded(run(readme_command(PLAN), tmp_path, env, timeout=SHORT_TIMEOUT_S)))
    assert [item["images"] for item in planned["items"]] == [20, 10]
    shard = json.loads(succeeded(run(readme_command(SHARD), tmp_path, env, timeout=SHORT_TIMEOUT_S)))
    assert shard["extracted"] == 20
    again = json.loads(succeeded(run(readme_command(PLAN), tmp_path, env, timeout=SHORT_TIMEOUT_S)))
    assert [item["images"] for item in again["items"]] == [10]  # only the shard not extracted yet


@covers(BENCH, BENCH_USAGE)
def test_bench_extraction_plan(tmp_path: Path) -> None:
    """Both forms at 20,000 images (instead of 1,000,000) and 2,000 merged rows."""
    shown = readme_command(BENCH, {"/tmp/tlops-bench-plan": str(tmp_path / "bench")})
    usage = readme_command(
        BENCH_USAGE,
        {"[--workdir DIR]": f"--workdir {tmp_path / 'usage'}", "[--output FILE]": f"--output {tmp_path / 'u.json'}"}
        | {"[--images N] [--cached N] [--shard-size N]": "--images 20000 --cached 10000 --shard-size 3000"},
    )
    shown.argv += ["--images", "20000", "--cached", "10000", "--merge-rows", "2000"]
    usage.argv += ["--merge-rows", "2000"]
    for command, report in ((shown, tmp_path / "bench" / "plan.json"), (usage, tmp_path / "u.json")):
        stdout = succeeded(run(command, REPO, timeout=SHORT_TIMEOUT_S))
        assert "planning_seconds" in stdout
        result = json.loads(report.read_text())
        assert result["images_to_extract"] == 20000 - result["cached"] > 0
    assert result["shards"] == -(-result["images_to_extract"] // 3000)
