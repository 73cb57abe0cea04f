"""``--exclude-suspected-label-errors``: exactly the audit's flagged training rows leave the manifest and features."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from tlops.data.outputs import write_outputs
from tlops.data.prepare import load_prepared
from tlops.data.prepared import PreparedData
from tlops.errors import TlopsError
from tlops.steps.audit_report import AuditRecord, write_audit
from tlops.steps.audit_summary import audit_files, audit_metrics, audit_summary
from tlops.steps.exclusion import exclude_flagged
from tlops.steps.outputs import Training, read_features, write_features

SPLITS = {"train": 6, "val": 2, "test": 2}


def _dataset(root: Path) -> tuple[Path, Path, pd.DataFrame]:
    rows = [
        {"uri": f"{split}/{label}/{i}.png", "sha256": f"{split}-{label}-{i}", "split": split, "label": label}
        for split, n in SPLITS.items()
        for label in ("cat", "dog")
        for i in range(n // 2)
    ]
    manifest = pd.DataFrame(rows)
    counts = {s: {lab: int(n) for lab, n in g["label"].value_counts().items()} for s, g in manifest.groupby("split")}
    write_outputs(manifest, PreparedData("digest", ["cat", "dog"], counts), "# report\n", root / "data")
    splits = {}
    for split in SPLITS:
        part = manifest[manifest["split"] == split]
        # Each row's feature is its position in the manifest, so the kept rows can be read back.
        splits[split] = (torch.tensor(part.index, dtype=torch.float32)[:, None], torch.tensor((part["label"] == "dog")
                         .to_numpy(), dtype=torch.long))  # fmt: skip
    write_features(root / "features", splits)
    return root / "data", root / "features", manifest


def _audit(root: Path, flagged: list[tuple[str, str]]) -> Path:
    issues = [{"sha256": sha, "split": split, "item": sha, "given": "cat", "suggested": "dog", "confidence": 0.1,
               "suggested_confidence": 0.9} for sha, split in flagged]  # fmt: skip
    record = AuditRecord("image-classification", "b", ["cat", "dog"], "prune_by_noise_rate", 5, 16, 20, issues, 0.98, 3)
    write_audit(root / "audit", record, [])
    return root / "audit"


def test_only_the_flagged_training_rows_are_dropped_never_val_or_test(tmp_path: Path) -> None:
    data, features, manifest = _dataset(tmp_path)
    flagged = [("train-cat-0", "train"), ("train-dog-2", "train"), ("val-cat-0", "val")]
    excluded = exclude_flagged(data, features, _audit(tmp_path, flagged), tmp_path / "work")
    assert excluded.dropped == ("train-cat-0", "train-dog-2")
    reduced, prepared = load_prepared(excluded.data_dir)
    assert set(manifest["sha256"]) - set(reduced["sha256"]) == {"train-cat-0", "train-dog-2"}
    assert prepared.num_images == {"train": 4, "val": 2, "test": 2}
    assert Path(reduced["uri"].iloc[0]).is_absolute()  # the reduced copy still finds the original files
    splits = read_features(excluded.features_dir)
    kept_train = manifest[(manifest["split"] == "train") & ~manifest["sha256"].isin(excluded.dropped)]
    assert splits["train"][0][:, 0].tolist() == [float(i) for i in kept_train.index]
    for split in ("val", "test"):
        assert len(splits[split][0]) == SPLITS[split]
    # The originals are untouched.
    assert len(load_prepared(data)[0]) == len(manifest) and len(read_features(features)["train"][0]) == 6


def test_nothing_flagged_in_train_keeps_the_inputs(tmp_path: Path) -> None:
    data, features, _ = _dataset(tmp_path)
    excluded = exclude_flagged(data, features, _audit(tmp_path, [("test-dog-0", "test")]), tmp_path / "work")
    assert excluded == type(excluded)(data, features, ())


def test_an_audit_of_other_data_or_one_emptying_a_class_is_refused(tmp_path: Path) -> None:
    data, features, _ = _dataset(tmp_path)
    with pytest.raises(TlopsError, match="does not have: audit this prepared dataset"):
        exclude_flagged(data, features, _audit(tmp_path, [("elsewhere", "train")]), tmp_path / "work")
    every_cat = [(f"train-cat-{i}", "train") for i in range(3)]
    with pytest.raises(TlopsError, match="leaves no training example of cat"):
        exclude_flagged(data, features, _audit(tmp_path, every_cat), tmp_path / "work2")


def test_register_gets_the_audit_files_metrics_and_summary_line(tmp_path: Path) -> None:
    audit_dir = _audit(tmp_path, [("train-cat-0", "train"), ("val-cat-0", "val")])
    record = AuditRecord.read(audit_dir)
    training = Training("linear-probe", "auto", [], 0, 0.9, 0.9, [], {}, excluded_label_errors=1)
    assert [folder for _, folder in audit_files(audit_dir)] == ["audit", "audit"]  # audit.md, audit.json
    assert audit_metrics(record, training) == {
        "audit_label_issues": 2.0,
        "audit_excluded_from_training": 1.0,
        "audit_near_duplicate_pairs": 3.0,
        "audit_outliers": 0.0,
    }
    assert audit_summary(record, training)["line"] == (
        "2 suspected label errors (1 excluded from training), 3 near-duplicate pairs, 0 outliers; see audit.md"
    )
