"""Writing a prepared dataset: the output folder checked first, removed on failure, and shared through the cache.

Every task's data preparation (images: :mod:`tlops.data.prepare`, text: :mod:`tlops.data.text.prepare`) writes the
same three files and goes through the same flow: nothing is read before the output folder is checked, nothing is
left half-written when it fails, and with a :class:`~tlops.data.prepared_cache.PreparedCache` the preflight of
``tlops run`` and the prepare-data step read the data once. A task supplies how it prepares one source into one
folder (a :data:`PrepareTo`); this module does the rest.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from tlops.data.config import SplitConfig
from tlops.data.fingerprint import fingerprint_covers, source_fingerprint
from tlops.data.prepared import MANIFEST_FILE, REPORT_FILE, SUMMARY_FILE, PreparedData
from tlops.data.prepared_cache import PreparedCache, cache_key
from tlops.data.sources import check_data_argument, check_output_apart
from tlops.errors import TlopsError
from tlops.io.paths import check_writable_dir
from tlops.io.storage import S3Client

EXTRACTED_DIR = "files"  # an archive source is extracted here, inside the output directory
ROW_ANCHOR = re.compile(r"#row=\d+$")  # a table row's uri is its file's, then #row=N (1-based data row)

PrepareTo = Callable[[str, Path, SplitConfig, "S3Client | None"], tuple[PreparedData, list[str]]]
"""Prepare a source into a checked output folder; return the summary and the files read that are not from an archive."""


def write_outputs(manifest: pd.DataFrame, prepared: PreparedData, report: str, output_dir: Path) -> None:
    """Write the manifest, the report and, last (its presence marks a complete output), the summary."""
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(output_dir / MANIFEST_FILE, index=False)
    (output_dir / REPORT_FILE).write_text(report)
    prepared.write(output_dir)


@contextmanager
def removed_on_failure(output_dir: Path) -> Iterator[None]:
    """Remove ``output_dir`` when the ``with`` body fails, if it did not exist before."""
    created = not output_dir.exists()
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(output_dir, ignore_errors=True)
        raise


def prepare_output(
    source: str,
    output_dir: Path,
    config: SplitConfig,
    s3: S3Client | None,
    cache: PreparedCache | None,
    fingerprint: str | None,
    prepare_to: PrepareTo,
    log: logging.Logger,
    spared: str = "image decoded",
) -> PreparedData:
    """Check the arguments and the output folder, then prepare ``source`` into it, through ``cache`` when given.

    Args:
        source: The dataset as the user gave it.
        output_dir: Where the three files go.
        config: The split settings.
        s3: S3 client, needed for s3:// sources.
        cache: Where prepared datasets are kept, or ``None``.
        fingerprint: The source's fingerprint when the caller has it.
        prepare_to: How the task prepares a source into a folder.
        log: The caller's logger (what is reused or not cached is logged there).
        spared: What reusing a cache entry spares, for the log (``image decoded``).

    Raises:
        TlopsError: when the source argument is empty, ``output_dir`` cannot be written, or it and a local source
            lie one inside the other; and whatever ``prepare_to`` raises.
    """
    check_data_argument(source)
    output_dir = Path(output_dir).resolve()
    check_writable_dir(output_dir)
    check_output_apart(source, output_dir)
    keyed = usable_cache_key(source, config, s3, cache, fingerprint, log)
    if cache is not None and keyed is not None:
        with prepared_entry(source, config, s3, cache, *keyed, prepare_to, log, spared) as entry:
            return copy_prepared(entry, output_dir)
    return prepare_to(source, output_dir, config, s3)[0]


def usable_cache_key(
    source: str,
    config: SplitConfig,
    s3: S3Client | None,
    cache: PreparedCache | None,
    fingerprint: str | None,
    log: logging.Logger,
) -> tuple[str, str] | None:
    """The cache key of ``source`` and its fingerprint; ``None`` without a usable cache or a listable source.

    A cache that cannot be written or lies inside a local dataset is skipped with a warning. A source that
    cannot be fingerprinted (missing, empty, refused) is prepared without the cache, which then fails with the
    usual message.
    """
    if cache is None:
        return None
    try:
        check_writable_dir(cache.root, "the prepared-dataset cache")
        check_output_apart(source, cache.root)
    except TlopsError as error:
        log.warning("not using the prepared-dataset cache %s: %s", cache.root, error)
        return None
    try:
        fingerprint = fingerprint or source_fingerprint(source, s3)
    except TlopsError:
        return None
    return cache_key(source, fingerprint, config), fingerprint


@contextmanager
def prepared_entry(
    source: str,
    config: SplitConfig,
    s3: S3Client | None,
    cache: PreparedCache,
    key: str,
    fingerprint: str,
    prepare_to: PrepareTo,
    log: logging.Logger,
    spared: str = "image decoded",
) -> Iterator[Path]:
    """A complete prepared output of ``source`` for the time of the ``with``: the cache's, made first if missing.

    A result that read files the fingerprint does not cover (a CSV naming s3:// objects elsewhere) is not
    cached: it is yielded from a scratch folder, removed afterwards.
    """
    entry = cache.entry(key)
    if entry is not None:
        log.info("reusing the prepared dataset of %s (fingerprint %s): no %s", key, fingerprint, spared)
        yield entry
        return
    with cache.scratch() as scratch:
        folder = scratch / key
        read = prepare_to(source, folder, config, s3)[1]
        if fingerprint_covers(source, read):
            yield cache.publish(key, folder)
        else:
            log.info("not caching the prepared dataset of %s: it reads files outside the listed source", source)
            yield folder


def copy_prepared(entry: Path, output_dir: Path) -> PreparedData:
    """Copy a prepared output to ``output_dir`` (checked), its summary last and pointing at ``output_dir``.

    Extracted archive files are hard-linked where the file system allows (they are never written again);
    the manifest and report are copied, so that editing them in ``output_dir`` cannot change the cache.
    """
    extracted = entry / EXTRACTED_DIR

    def link_or_copy(src: str, dst: str) -> None:
        Path(dst).unlink(missing_ok=True)  # a new file: never write through an old link into the cache
        if Path(src).is_relative_to(extracted):
            try:
                os.link(src, dst)
                return
            except OSError:
                pass  # another file system, or no hard links: copy
        shutil.copy2(src, dst)

    with removed_on_failure(output_dir):
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / SUMMARY_FILE).unlink(missing_ok=True)  # until the copy is complete, no output is
        shutil.copytree(
            entry,
            output_dir,
            dirs_exist_ok=True,
            copy_function=link_or_copy,
            ignore=lambda folder, _names: [SUMMARY_FILE] if Path(folder) == entry else [],
        )
        prepared = PreparedData.read(entry)
        prepared.output_dir = str(output_dir)
        prepared.write(output_dir)  # last: its presence marks a complete output
    return prepared


def relative_extracted(manifest: pd.DataFrame, read: list[str], extracted: Path | None, output_dir: Path) -> list[str]:
    """Make the manifest's uris of files extracted into ``output_dir`` relative to it (they travel with it).

    Returns:
        The files of ``read`` that are not from the archive (what the fingerprint must cover).
    """
    if extracted is None:
        return read

    def relative(uri: str) -> str:
        path, anchor = _split_anchor(uri)
        return Path(path).relative_to(output_dir).as_posix() + anchor if Path(path).is_relative_to(extracted) else uri

    manifest["uri"] = [relative(uri) for uri in manifest["uri"]]
    return [uri for uri in read if not Path(_split_anchor(uri)[0]).is_relative_to(extracted)]


def _split_anchor(uri: str) -> tuple[str, str]:
    """A table row's uri (``FILE#row=N``) as the file and ``#row=N``; any other uri as itself and ``""``."""
    match = ROW_ANCHOR.search(uri)
    return (uri[: match.start()], match.group()) if match else (uri, "")
