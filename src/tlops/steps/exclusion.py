"""Training without the suspected label errors: the audit's flagged training rows dropped from a step's inputs.

``--exclude-suspected-label-errors`` gives fine-tune a copy of the prepared dataset whose manifest lacks the
training examples the audit flagged (by ``sha256``), and a copy of extract-features' cached features without their
rows, so that every strategy (the probes on features, partial/full/LP-FT fine-tuning, text fine-tuning, a torchrun
group) trains on the same reduced training split. Validation and test rows are never dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from tlops.data.outputs import write_outputs
from tlops.data.prepare import load_prepared
from tlops.data.prepared import REPORT_FILE
from tlops.errors import TlopsError
from tlops.steps.audit_summary import read_audit
from tlops.steps.outputs import read_features, write_features

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Excluded:
    """The inputs fine-tune reads after the exclusion.

    Attributes:
        data_dir: The prepared dataset without the flagged training rows.
        features_dir: The features without their rows (``None`` when none were given).
        dropped: The ``sha256`` of each dropped training row.
    """

    data_dir: Path
    features_dir: Path | None
    dropped: tuple[str, ...]


def exclude_flagged(data_dir: Path, features_dir: Path | None, audit_dir: Path, work_dir: Path) -> Excluded:
    """Write ``data_dir`` and ``features_dir`` without the audit's flagged training rows into ``work_dir``.

    Args:
        data_dir: Output of the prepare-data step.
        features_dir: The features/ folder of extract-features (``None``: none to filter).
        audit_dir: Output of the audit step.
        work_dir: An empty folder for the reduced copies (``data/`` and ``features/``).

    Returns:
        The reduced inputs and the dropped rows.

    Raises:
        TlopsError: when the audit was of another dataset (a flagged row not in the manifest), or dropping the
            rows would leave a class without training examples.
    """
    flagged = read_audit(audit_dir).flagged_training_rows()
    if not flagged:  # nothing flagged, or the audit did not apply (detection data)
        logger.info("excluded no training examples: the audit flagged none")
        return Excluded(Path(data_dir), features_dir, ())
    manifest, prepared = load_prepared(data_dir)
    train = (manifest["split"] == "train").to_numpy()
    drop = train & manifest["sha256"].isin(flagged).to_numpy()
    if int(drop.sum()) != len(flagged):
        raise TlopsError(
            f"the audit in {audit_dir} flags training examples the dataset in {data_dir} does not have: "
            "audit this prepared dataset (tlops audit --dataset)"
        )
    kept = manifest[~drop]
    empty = sorted(set(prepared.classes) - set(kept[kept["split"] == "train"]["label"]))
    if empty:
        raise TlopsError(
            f"excluding the suspected label errors leaves no training example of {', '.join(empty)}: "
            "review the audit's table, or train without --exclude-suspected-label-errors"
        )
    counts = {
        split: {str(label): int(n) for label, n in rows["label"].value_counts().items()}
        for split, rows in kept.groupby("split")
    }
    data_out = Path(work_dir) / "data"
    write_outputs(kept, replace(prepared, counts=counts), (Path(data_dir) / REPORT_FILE).read_text(), data_out)
    features_out = None
    if features_dir is not None:
        splits = dict(read_features(features_dir))
        train_rows = manifest[train]
        keep = ~train_rows["sha256"].isin(flagged).to_numpy()
        features, labels = splits["train"]
        if len(features) != len(train_rows):
            raise TlopsError(
                f"the features in {features_dir} have {len(features)} training rows, the dataset in {data_dir} "
                f"{len(train_rows)}: extract the features of this dataset"
            )
        splits["train"] = (features[keep], labels[keep])
        features_out = Path(work_dir) / "features"
        write_features(features_out, splits)
    dropped = tuple(manifest.loc[drop, "sha256"])
    logger.info("excluded %d suspected label errors from the %d training examples", len(dropped), int(train.sum()))
    return Excluded(data_out, features_out, dropped)
