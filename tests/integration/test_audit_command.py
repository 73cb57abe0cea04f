"""``tlops audit``: injected label flips in real digit images are found; input it cannot audit is refused in one line.

Each command runs as a user runs it (``python -m tlops.cli`` in a subprocess, CPU, a feature cache of its own).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from support.commands import clean_env, tlops_module
from test_readme import covers, readme_command
from tlops.data.demo import write_digits_imagefolder
from tlops.steps.audit_report import AUDIT_REPORT_FILE, CONTACT_SHEET_FILE, AuditRecord

# (from class, to class): the first two images of each are moved into the other class's folder.
AUDIT = "tlops audit --data ./photos --output audit-report"  # README.md and docs/audit.md
FLIPS = (("one", "seven"), ("three", "eight"), ("zero", "six"), ("four", "nine"))


def _env(root: Path) -> dict[str, str]:
    return clean_env() | {"TLOPS_CACHE_DIR": str(root / "cache")}


@pytest.fixture(scope="module")
def flipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """30 digit images per class with 8 moved into a wrong class folder, and the moved files' new paths."""
    root = tmp_path_factory.mktemp("audit")
    images = write_digits_imagefolder(root / "digits", per_class=30)
    moved = set()
    for source, target in FLIPS:
        for path in sorted((images / source).iterdir())[:2]:
            shutil.move(path, images / target / f"flip_{path.name}")
            moved.add(f"{target}/flip_{path.name}")
    return images, moved


@covers(AUDIT)
def test_audit_finds_the_injected_label_flips(flipped: tuple[Path, set[str]], tmp_path: Path) -> None:
    images, moved = flipped
    output = tmp_path / "audit"
    command = readme_command(AUDIT, {"./photos": str(images), "audit-report": f"{output} --image-size 64"})
    result = tlops_module(*command.argv[1:], cwd=tmp_path, env=_env(tmp_path))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    record = AuditRecord.read(output)
    assert printed["label_issues"] == len(record.label_issues) > 0
    flagged = {issue["item"]: issue for issue in record.label_issues}
    manifest = (output / "data" / "manifest.csv").read_text()
    audited = {item for item in moved if any(f"{item}," in line and ",test" not in line for line in
                                             manifest.splitlines())}  # fmt: skip
    assert audited, "some flips are in train or val"
    assert audited <= set(flagged), f"missed {audited - set(flagged)}"
    sources = {item: next(s for s, t in FLIPS if item.startswith(f"{t}/")) for item in audited}
    assert all(flagged[item]["given"] == item.split("/")[0] for item in audited)
    # the suggested label is mostly the class the image was taken from (the probe on 8x8 digits is no oracle)
    assert sum(flagged[item]["suggested"] == source for item, source in sources.items()) >= len(audited) / 2
    report = (output / AUDIT_REPORT_FILE).read_text()
    assert "| rank | example | split | given | suggested | confidence (given) |" in report
    assert record.label_issues[0]["item"] in report
    assert (output / CONTACT_SHEET_FILE).read_bytes().startswith(b"\x89PNG")


def test_audit_refuses_detection_data_in_one_line(tmp_path: Path) -> None:
    from tlops.data.detection.demo import write_detection_demo

    data = write_detection_demo(tmp_path / "shapes", images=12, image_size=64)
    output = tmp_path / "audit"
    result = tlops_module("audit", "--data", str(data), "--output", str(output), cwd=tmp_path, env=_env(tmp_path))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("tlops: error: the audit needs image or text")
    assert "Traceback" not in result.stderr
    assert not output.exists()


@pytest.mark.parametrize("baseline", ["pixels", "tfidf"])
def test_audit_refuses_a_baseline_without_features(baseline: str, tmp_path: Path) -> None:
    from tlops.data.text.demo import write_text_demo

    data = write_text_demo(tmp_path / "texts", per_class=10)
    output = tmp_path / "audit"
    result = tlops_module(
        "audit", "--data", str(data), "--backbone", baseline, "--output", str(output), cwd=tmp_path,
        env=_env(tmp_path),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "tlops: error: the audit needs image or text classification data with a feature backbone, not the "
        f"{baseline} baseline: pass --backbone with an image backbone or encoder\n"
    )
    assert not output.exists()


def test_audit_takes_data_or_dataset(tmp_path: Path) -> None:
    result = tlops_module("audit", "--output", str(tmp_path / "audit"), cwd=tmp_path, env=_env(tmp_path))
    assert result.returncode == 2
    assert "tlops: error: tlops audit takes one of --data" in result.stderr
