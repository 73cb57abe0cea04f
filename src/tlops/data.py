"""Data preparation: list an ImageFolder (local or S3), decode-check every file, split, write a manifest."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tlops.errors import TlopsError
from tlops.images import IMAGE_EXTENSIONS, decode_image
from tlops.storage import S3Client, is_s3_uri, iter_objects, parse_s3_uri, read_bytes

SPLITS = ("train", "val", "test")
MANIFEST_FILE = "manifest.csv"
SUMMARY_FILE = "prepare_summary.json"
REPORT_FILE = "report.md"


@dataclass(frozen=True)
class SplitConfig:
    """How the dataset is split; the split is deterministic for a seed.

    Attributes:
        val_fraction: Fraction of each class held out for validation.
        test_fraction: Fraction of each class held out for the final test.
        seed: Seed of the per-class shuffle.
        workers: Files read and decoded in parallel.
    """

    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    workers: int = 8

    def __post_init__(self) -> None:
        """Reject fractions that leave nothing to train on."""
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1):
            raise TlopsError("val and test fractions must each lie strictly between 0 and 1")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise TlopsError("val + test fractions must leave at least 10% for training; lower them")


@dataclass(frozen=True)
class SourceFile:
    """One candidate image file: where it is, its path relative to the dataset root, and its class."""

    uri: str
    relpath: str
    label: str


@dataclass
class PreparedData:
    """What the prepare-data step produced.

    Attributes:
        digest: sha256 over the sorted manifest rows; the same data gives the same digest.
        classes: Sorted class names; a label's index in this list is its class id.
        counts: Images per split and class.
        quarantined: Files that failed validation, with the reason.
        source: The dataset URI or path that was read.
        output_dir: Directory holding the manifest, summary and report.
    """

    digest: str
    classes: list[str]
    counts: dict[str, dict[str, int]]
    quarantined: list[dict[str, str]] = field(default_factory=list)
    duplicates_removed: int = 0
    source: str = ""
    output_dir: str = ""

    @property
    def num_images(self) -> dict[str, int]:
        """Images per split."""
        return {split: sum(per_class.values()) for split, per_class in self.counts.items()}


def list_image_folder(source: str, s3: S3Client | None = None) -> list[SourceFile]:
    """List the images of an ImageFolder (one subfolder per class) in a local directory or under an s3:// prefix.

    Files directly under the root, hidden files and files without an image extension are skipped; symlinks
    that leave the root are not followed.

    Raises:
        TlopsError: when the source does not exist or cannot be listed.
    """
    if is_s3_uri(source):
        if s3 is None:
            raise TlopsError(f"{source} is on S3 but no S3 client was configured")
        prefix = parse_s3_uri(source)
        root = prefix.key.rstrip("/")
        files = []
        for key, _size in iter_objects(s3, source):
            relative = PurePosixPath(key[len(root) :].lstrip("/")) if root else PurePosixPath(key)
            if _is_candidate(relative):
                files.append(SourceFile(f"s3://{prefix.bucket}/{key}", relative.as_posix(), relative.parts[0]))
        return sorted(files, key=lambda f: f.relpath)

    root_path = Path(source)
    if not root_path.exists():
        raise TlopsError(f"dataset path {source!r} does not exist; pass --data an ImageFolder dir or s3:// URI")
    if not root_path.is_dir():
        raise TlopsError(f"dataset path {source!r} is not a directory; pass an ImageFolder (one folder per class)")
    resolved_root = root_path.resolve()
    files = []
    for path in sorted(root_path.rglob("*")):
        relative = PurePosixPath(path.relative_to(root_path).as_posix())
        if not _is_candidate(relative) or not path.is_file():
            continue
        if not path.resolve().is_relative_to(resolved_root):
            continue  # a symlink that leaves the dataset root
        files.append(SourceFile(str(path.resolve()), relative.as_posix(), relative.parts[0]))
    return files


def _is_candidate(relative: PurePosixPath) -> bool:
    return (
        len(relative.parts) >= 2
        and not any(part.startswith(".") for part in relative.parts)
        and relative.suffix.lower() in IMAGE_EXTENSIONS
    )


def check_class_sizes(counts: dict[str, int], config: SplitConfig, source: str) -> None:
    """Check that the classes can support a train/val/test split.

    Raises:
        TlopsError: when there are no images, a single class, or classes too small to split.
    """
    if not counts:
        raise TlopsError(
            f"no images found in {source!r}; expected one subfolder per class holding "
            f"{'/'.join(sorted(IMAGE_EXTENSIONS))} files"
        )
    if len(counts) < 2:
        only = next(iter(counts))
        raise TlopsError(
            f"only one class ({only!r}) found in {source!r}; a classifier needs at least two class subfolders"
        )
    minimum = len(SPLITS)
    small = {label: n for label, n in sorted(counts.items()) if n < minimum}
    if small:
        listed = ", ".join(f"{label!r} has {n}" for label, n in small.items())
        raise TlopsError(
            f"classes too small to split in {source!r}: {listed}; each class needs at least {minimum} valid "
            "images (one each for train, val and test): add images or remove the class"
        )


def split_counts(n: int, config: SplitConfig) -> dict[str, int]:
    """How many of ``n`` images of one class go to each split (at least one each when ``n >= 3``)."""
    n_test = max(1, round(n * config.test_fraction))
    n_val = max(1, round(n * config.val_fraction))
    while n_val + n_test > n - 1 and max(n_val, n_test) > 1:  # keep at least one image for training
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def assign_splits(rows: pd.DataFrame, config: SplitConfig) -> pd.Series:
    """Assign each row a split, stratified by label and deterministic for ``config.seed``.

    Rows are ordered by content hash before the seeded shuffle, so the split does not depend on listing order.
    """
    splits = pd.Series("", index=rows.index, dtype=object)
    rng = np.random.default_rng(config.seed)
    for _label, group in rows.sort_values(["label", "sha256", "relpath"]).groupby("label", sort=True):
        order = group.index.to_numpy()[rng.permutation(len(group))]
        sizes = split_counts(len(group), config)
        start = 0
        for split in SPLITS:
            splits.loc[order[start : start + sizes[split]]] = split
            start += sizes[split]
    return splits


def dataset_digest(manifest: pd.DataFrame) -> str:
    """sha256 over the sorted (relpath, sha256, label, split) rows of a manifest."""
    digest = hashlib.sha256()
    for row in manifest.sort_values("relpath")[["relpath", "sha256", "label", "split"]].itertuples(index=False):
        digest.update("\t".join(map(str, row)).encode() + b"\n")
    return digest.hexdigest()


def _inspect(file: SourceFile, s3: S3Client | None) -> dict[str, object]:
    try:
        data = read_bytes(file.uri, s3)
        decoded = decode_image(data)
    except (ValueError, OSError) as error:
        return {"uri": file.uri, "relpath": file.relpath, "error": str(error)}
    return {
        "uri": file.uri,
        "relpath": file.relpath,
        "label": file.label,
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": decoded.width,
        "height": decoded.height,
    }


def prepare_data(
    source: str, output_dir: Path, config: SplitConfig | None = None, s3: S3Client | None = None
) -> PreparedData:
    """Validate an ImageFolder dataset, split it and write the manifest, summary and report.

    Every file is read and fully decoded; files that fail go to the quarantine list with the reason. Exact
    duplicates (same content) within a class are collapsed to one file so none straddles two splits.

    Args:
        source: Local directory or s3://bucket/prefix holding one subfolder per class.
        output_dir: Where ``manifest.csv``, ``prepare_summary.json`` and ``report.md`` are written.
        config: Split fractions, seed and read parallelism.
        s3: S3 client, needed when ``source`` is an s3:// URI.

    Returns:
        The digest, classes, per-split counts and quarantine list.

    Raises:
        TlopsError: when the source is missing, empty, has one class or classes too small to split.
    """
    config = config or SplitConfig()
    files = list_image_folder(source, s3)
    check_class_sizes(Counter(f.label for f in files), config, source)

    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        inspected = list(
            tqdm(
                pool.map(lambda f: _inspect(f, s3), files),
                total=len(files),
                desc="checking images",
                unit="img",
                mininterval=1.0,
            )
        )
    quarantined = [{"path": r["relpath"], "reason": r["error"]} for r in inspected if "error" in r]
    rows = pd.DataFrame([r for r in inspected if "error" not in r])
    if rows.empty:
        raise TlopsError(f"none of the {len(files)} image files in {source!r} could be decoded; see the files")
    before = len(rows)
    rows = rows.sort_values("relpath").drop_duplicates(["label", "sha256"]).reset_index(drop=True)
    # Every listed class counts, so a class whose files were all quarantined is named rather than dropped.
    valid = {label: 0 for label in sorted({f.label for f in files})} | rows["label"].value_counts().to_dict()
    check_class_sizes(valid, config, source)

    rows["split"] = assign_splits(rows, config)
    manifest = rows[["uri", "relpath", "sha256", "label", "split", "width", "height"]].sort_values("relpath")
    classes = sorted(manifest["label"].unique())
    counts = {
        split: {label: int(((manifest["split"] == split) & (manifest["label"] == label)).sum()) for label in classes}
        for split in SPLITS
    }
    prepared = PreparedData(
        digest=dataset_digest(manifest),
        classes=classes,
        counts=counts,
        quarantined=quarantined,
        duplicates_removed=before - len(rows),
        source=source,
        output_dir=str(output_dir),
    )
    _write_outputs(manifest, prepared, Path(output_dir))
    return prepared


def _write_outputs(manifest: pd.DataFrame, prepared: PreparedData, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(output_dir / MANIFEST_FILE, index=False)
    (output_dir / SUMMARY_FILE).write_text(json.dumps(asdict(prepared), indent=2))
    (output_dir / REPORT_FILE).write_text(render_report(prepared))


def render_report(prepared: PreparedData) -> str:
    """A Markdown report of the prepared dataset: counts per class and split, and quarantined files."""
    lines = [
        "# Dataset report",
        "",
        f"- source: `{prepared.source}`",
        f"- digest: `{prepared.digest}`",
        f"- classes: {len(prepared.classes)}",
        "- images: " + ", ".join(f"{split} {n}" for split, n in prepared.num_images.items()),
        f"- duplicates removed: {prepared.duplicates_removed}",
        f"- quarantined: {len(prepared.quarantined)}",
        "",
        "| class | " + " | ".join(SPLITS) + " |",
        "|---|" + "---:|" * len(SPLITS),
    ]
    lines += [
        f"| {label} | " + " | ".join(str(prepared.counts[s][label]) for s in SPLITS) + " |"
        for label in prepared.classes
    ]
    if prepared.quarantined:
        lines += ["", "## Quarantined files", "", "| file | reason |", "|---|---|"]
        lines += [f"| `{q['path']}` | {q['reason']} |" for q in prepared.quarantined]
    return "\n".join(lines) + "\n"


def load_prepared(data_dir: Path) -> tuple[pd.DataFrame, PreparedData]:
    """Read back the manifest and summary that :func:`prepare_data` wrote."""
    data_dir = Path(data_dir)
    manifest = pd.read_csv(data_dir / MANIFEST_FILE, dtype={"label": str})
    prepared = PreparedData(**json.loads((data_dir / SUMMARY_FILE).read_text()))
    return manifest, prepared
