"""A content-addressed cache of prepared datasets, so that a ``tlops run`` decodes every image once, not twice.

The preflight of ``tlops run`` prepares the dataset for real into this cache; the pipeline's prepare-data step then
finds the same entry and copies it instead of reading and decoding every image again (on S3, the slow pass).

An entry is ``<root>/<key>/``, the complete output of :func:`tlops.data.prepare.prepare_data`. Its key is a sha256
over everything the output depends on: the source as given, the source's fingerprint
(:func:`tlops.data.fingerprint.source_fingerprint`: every file's path, size and ETag or modification time, so a
changed, added or removed file changes the key), the split settings (fractions, seed, archive limits), the summary's
schema version, the tlops version and a digest of the ``tlops.data`` source code (so an edited validation rule in a
development install never reuses an entry that older code wrote). Entries are written in a scratch folder beside
them and renamed into place, so an entry that exists is complete: a killed run leaves at most a hidden
``.partial-*`` folder, never looked up and swept after a day.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import tlops
from tlops.data.config import SplitConfig
from tlops.data.prepared import SUMMARY_FILE, PreparedData

CACHE_SUBDIR = "prepared"  # the prepared-dataset cache's folder inside the runtime cache dir
_PARTIAL_PREFIX = ".partial-"
_STALE_PARTIAL_SECONDS = 24 * 3600  # a scratch folder this old belongs to a run that was killed


@functools.cache
def _code_digest() -> str:
    """sha256 over the source files of ``tlops.data``: what decides how a dataset is validated and split."""
    digest = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):  # the text subpackage too
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cache_key(source: str, fingerprint: str, config: SplitConfig) -> str:
    """The key of the prepared dataset of ``source`` with ``fingerprint`` under ``config``.

    ``config.workers`` is left out: it changes how fast the files are read, not what is written.

    Args:
        source: The dataset as given to ``prepare_data`` (folder, archive, CSV or s3:// URI).
        fingerprint: The source's fingerprint (from its listing).
        config: The split settings.

    Returns:
        32 hex digits.
    """
    payload = {
        "source": source,
        "fingerprint": fingerprint,
        "val_fraction": config.val_fraction,
        "test_fraction": config.test_fraction,
        "seed": config.seed,
        "archive_limits": asdict(config.archive_limits),
        "summary_schema": PreparedData.expected_version(),
        "tlops": tlops.__version__,
        "code": _code_digest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class PreparedCache:
    """Prepared datasets by key, in a local folder.

    Attributes:
        root: The folder holding one sub-folder per entry (usually ``<runtime cache dir>/prepared``).
    """

    root: Path

    @classmethod
    def in_cache_dir(cls, cache_dir: Path) -> PreparedCache:
        """The cache in its usual place inside a runtime cache dir (``TLOPS_CACHE_DIR``, read by the caller)."""
        return cls(Path(cache_dir) / CACHE_SUBDIR)

    def entry(self, key: str) -> Path | None:
        """The complete entry of ``key``, or ``None`` when there is none."""
        folder = self.root / key
        return folder if (folder / SUMMARY_FILE).is_file() else None

    @contextmanager
    def scratch(self) -> Iterator[Path]:
        """A fresh hidden folder inside the cache (so an entry can be renamed from it), removed on exit.

        Scratch folders that a killed run left more than a day ago are removed first.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep_partials()
        folder = Path(tempfile.mkdtemp(prefix=_PARTIAL_PREFIX, dir=self.root))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, key: str, folder: Path) -> Path:
        """Move a complete prepared output (in a :meth:`scratch` folder) into place as the entry of ``key``.

        One rename, so the entry appears whole or not at all. When a concurrent run published the same key
        first, its entry is kept (the same inputs give the same output) and ``folder`` is left to the scratch.

        Returns:
            The entry.
        """
        target = self.root / key
        try:
            os.rename(folder, target)
        except OSError:
            if self.entry(key) is None:
                raise
        return target

    def _sweep_partials(self) -> None:
        cutoff = time.time() - _STALE_PARTIAL_SECONDS
        for partial in self.root.glob(f"{_PARTIAL_PREFIX}*"):
            try:
                if partial.stat().st_mtime < cutoff:
                    shutil.rmtree(partial, ignore_errors=True)
            except OSError:
                continue  # removed by another run meanwhile
