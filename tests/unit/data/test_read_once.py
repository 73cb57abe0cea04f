"""Read the data once: the preflight of ``tlops run`` and the prepare-data step share one pass through the cache.

Counts come from :func:`tlops.data.images.decode_count` (every ``decode_image`` call in this process).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import tlops.data.prepare as prepare_module
from decodes import IMAGES
from decodes import decodes as _decodes
from decodes import imagefolder as _imagefolder
from decodes import png16 as _image_bytes
from splits import split_config as _config
from tlops.data.archives import ArchiveLimits
from tlops.data.fingerprint import fingerprint_covers, source_fingerprint
from tlops.data.prepare import (
    MANIFEST_FILE,
    PreparedCache,
    load_prepared,
    preflight_dataset,
    prepare_data,
    read_manifest,
)
from tlops.data.prepared_cache import cache_key
from tlops.errors import TlopsError
from tlops.io.paths import cache_dir_from_environment, default_cache_dir


def _entries(cache: PreparedCache) -> list[str]:
    return sorted(p.name for p in cache.root.iterdir()) if cache.root.exists() else []


@pytest.fixture
def prepare_log() -> Iterator[list[str]]:
    """The messages ``tlops.data.prepare`` logs at INFO and above (whatever configure_logging did before)."""
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("tlops.data.prepare")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_cache_key_changes_with_every_input_but_the_workers() -> None:
    base = cache_key("/data", "12-abc", _config())
    assert base == cache_key("/data", "12-abc", _config()) and len(base) == 32
    assert base == cache_key("/data", "12-abc", _config(workers=7))  # how fast, not what is written
    others = [
        cache_key("/other", "12-abc", _config()),
        cache_key("/data", "12-abd", _config()),
        cache_key("/data", "12-abc", _config(val_fraction=0.2)),
        cache_key("/data", "12-abc", _config(test_fraction=0.2)),
        cache_key("/data", "12-abc", _config(seed=1)),
        cache_key("/data", "12-abc", _config(archive_limits=ArchiveLimits(max_members=10))),
    ]
    assert len({base, *others}) == 1 + len(others)


def test_a_changed_file_changes_the_key(tmp_path: Path) -> None:
    data = _imagefolder(tmp_path / "data")
    key = lambda: cache_key(str(data), source_fingerprint(str(data)), _config())  # noqa: E731
    first = key()
    target = data / "cat" / "00.png"
    stat = target.stat()
    # Same size, other content, the modification time moved on (what an editor or a copy does).
    content = bytearray(target.read_bytes())
    content[-20] ^= 0xFF
    target.write_bytes(bytes(content))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert target.stat().st_size == stat.st_size
    second = key()
    assert second != first
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000))  # touched only
    assert key() not in (first, second)
    (data / "dog" / "extra.png").write_bytes(_image_bytes(99))  # added
    added = key()
    (data / "dog" / "extra.png").unlink()  # removed again
    assert added != key()


def test_fingerprint_covers_only_the_listed_root(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert fingerprint_covers(str(data), [str(data / "a" / "1.png")])
    assert not fingerprint_covers(str(data), [str(tmp_path / "elsewhere.png")])
    assert not fingerprint_covers(str(data), ["s3://bucket/a/1.png"])
    assert fingerprint_covers("s3://bucket/ds", ["s3://bucket/ds/a/1.png"])
    assert not fingerprint_covers("s3://bucket/ds", ["s3://bucket/other/1.png", "s3://bucket/ds/a/1.png"])
    assert fingerprint_covers("s3://bucket/ds/labels.csv", ["s3://bucket/ds/a/1.png"])


def test_cache_dir_from_environment(tmp_path: Path) -> None:
    assert cache_dir_from_environment({"TLOPS_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert cache_dir_from_environment({}) == default_cache_dir() == Path.home() / ".cache" / "tlops"
    assert PreparedCache.in_cache_dir(tmp_path).root == tmp_path / "prepared"


def test_preflight_then_prepare_decodes_each_image_once(tmp_path: Path, prepare_log: list[str]) -> None:
    data = _imagefolder(tmp_path / "data")
    cache = PreparedCache(tmp_path / "cache")
    checked, preflight_decodes = _decodes(preflight_dataset, str(data), _config(), None, cache)
    assert preflight_decodes == IMAGES
    [key] = _entries(cache)
    assert checked.output_dir == str(cache.root / key)

    out = tmp_path / "out"
    prepared, step_decodes = _decodes(prepare_data, str(data), out, _config(), None, cache)
    assert step_decodes == 0
    fingerprint = source_fingerprint(str(data))
    assert f"reusing the prepared dataset of {key} (fingerprint {fingerprint}): no image decoded" in prepare_log

    # The same output as a prepare without the cache, pointing at its own folder.
    plain, plain_decodes = _decodes(prepare_data, str(data), tmp_path / "plain", _config())
    assert plain_decodes == IMAGES
    assert prepared.digest == plain.digest == checked.digest and prepared.counts == plain.counts
    pd.testing.assert_frame_equal(read_manifest(out), read_manifest(tmp_path / "plain"))
    assert (out / "report.md").read_text() == (tmp_path / "plain" / "report.md").read_text()
    assert load_prepared(out)[1].output_dir == str(out.resolve())


def test_second_prepare_with_the_same_key_decodes_nothing(tmp_path: Path) -> None:
    data = _imagefolder(tmp_path / "data")
    cache = PreparedCache(tmp_path / "cache")
    first, decodes = _decodes(prepare_data, str(data), tmp_path / "one", _config(), None, cache)
    assert decodes == IMAGES
    second, decodes = _decodes(prepare_data, str(data), tmp_path / "two", _config(workers=1), None, cache)
    assert decodes == 0 and second.digest == first.digest
    preflight, decodes = _decodes(preflight_dataset, str(data), _config(), None, cache)
    assert decodes == 0 and preflight.digest == first.digest
    # Another seed is another key: prepared again.
    _, decodes = _decodes(prepare_data, str(data), tmp_path / "three", _config(seed=3), None, cache)
    assert decodes == IMAGES and len(_entries(cache)) == 2


def test_a_changed_file_is_prepared_again(tmp_path: Path) -> None:
    data = _imagefolder(tmp_path / "data")
    cache = PreparedCache(tmp_path / "cache")
    first = prepare_data(str(data), tmp_path / "one", _config(), None, cache)
    target = data / "cat" / "00.png"
    mtime = target.stat().st_mtime_ns
    target.write_bytes(_image_bytes(1000))  # another picture under the same name
    os.utime(target, ns=(mtime + 1_000_000, mtime + 1_000_000))
    second, decodes = _decodes(prepare_data, str(data), tmp_path / "two", _config(), None, cache)
    assert decodes == IMAGES and second.digest != first.digest
    assert len(_entries(cache)) == 2
    sha = read_manifest(tmp_path / "two").set_index("relpath").loc["cat/00.png", "sha256"]
    assert sha != read_manifest(tmp_path / "one").set_index("relpath").loc["cat/00.png", "sha256"]


def test_a_stale_fingerprint_passed_in_is_what_keys(tmp_path: Path) -> None:
    """The fingerprint passed in (fingerprint-data's output) is used as given: no second listing."""
    data = _imagefolder(tmp_path / "data")
    cache = PreparedCache(tmp_path / "cache")
    fingerprint = source_fingerprint(str(data))
    prepare_data(str(data), tmp_path / "one", _config(), None, cache, fingerprint)
    _, decodes = _decodes(prepare_data, str(data), tmp_path / "two", _config(), None, cache, fingerprint)
    assert decodes == 0
    _, decodes = _decodes(prepare_data, str(data), tmp_path / "three", _config(), None, cache, "12-other")
    assert decodes == IMAGES


def test_archive_source_reused_and_its_files_travel(tmp_path: Path) -> None:
    folder = _imagefolder(tmp_path / "folder")
    archive = tmp_path / "shared" / "data.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(folder.rglob("*.png")):
            zipped.write(path, path.relative_to(folder).as_posix())
    cache = PreparedCache(tmp_path / "cache")
    first, decodes = _decodes(prepare_data, str(archive), tmp_path / "one", _config(), None, cache)
    assert decodes == IMAGES
    second, decodes = _decodes(prepare_data, str(archive), tmp_path / "two", _config(), None, cache)
    assert decodes == 0 and second.digest == first.digest
    for entry in cache.root.iterdir():
        shutil.rmtree(entry)  # the output does not depend on the cache entry staying
    manifest, _ = load_prepared(tmp_path / "two")
    assert all(Path(uri).is_relative_to((tmp_path / "two" / "files").resolve()) for uri in manifest["uri"])
    assert all(Path(uri).is_file() for uri in manifest["uri"])


def test_editing_the_output_leaves_the_entry_alone(tmp_path: Path) -> None:
    data = _imagefolder(tmp_path / "data")
    cache = PreparedCache(tmp_path / "cache")
    prepare_data(str(data), tmp_path / "one", _config(), None, cache)
    (tmp_path / "one" / MANIFEST_FILE).write_text("edited\n")
    prepare_data(str(data), tmp_path / "one", _config(), None, cache)  # into the same folder again
    assert len(read_manifest(tmp_path / "one")) == IMAGES
    [key] = _entries(cache)
    assert len(read_manifest(cache.root / key)) == IMAGES


def test_an_interrupted_write_leaves_no_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _imagefolder(tmp_path / "data")
    cache = PreparedCache(tmp_path / "cache")
    write_outputs = prepare_module._write_outputs

    def killed_half_way(manifest: pd.DataFrame, prepared: Any, output_dir: Path) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        manifest.to_csv(output_dir / MANIFEST_FILE, index=False)
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module, "_write_outputs", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(str(data), tmp_path / "out", _config(), None, cache)
    with pytest.raises(KeyboardInterrupt):
        preflight_dataset(str(data), _config(), None, cache)
    assert _entries(cache) == [] and not (tmp_path / "out").exists()

    monkeypatch.setattr(prepare_module, "_write_outputs", write_outputs)
    _, decodes = _decodes(prepare_data, str(data), tmp_path / "out", _config(), None, cache)
    assert decodes == IMAGES and len(_entries(cache)) == 1


def test_a_killed_runs_scratch_is_never_an_entry_and_is_swept(tmp_path: Path) -> None:
    data = _imagefolder(tmp_path / "data")
    cache = PreparedCache(tmp_path / "cache")
    prepare_data(str(data), tmp_path / "one", _config(), None, cache)
    [key] = _entries(cache)
    # What a SIGKILL during the write leaves: a complete-looking folder that was never renamed into place.
    partial = cache.root / ".partial-killed"
    (cache.root / key).rename(partial)
    assert cache.entry(key) is None
    _, decodes = _decodes(prepare_data, str(data), tmp_path / "two", _config(), None, cache)
    assert decodes == IMAGES and partial.exists()  # a fresh one: a run may still be writing it
    old = time.time() - 2 * 24 * 3600
    os.utime(partial, (old, old))
    with cache.scratch():
        pass
    assert not partial.exists() and _entries(cache) == [key]


def test_publish_keeps_a_concurrent_runs_entry(tmp_path: Path) -> None:
    data = _imagefolder(tmp_path / "data")
    cache = PreparedCache(tmp_path / "cache")
    prepare_data(str(data), tmp_path / "one", _config(), None, cache)
    [key] = _entries(cache)
    with cache.scratch() as scratch:
        (scratch / key).mkdir()
        (scratch / key / "mine").write_text("x")
        assert cache.publish(key, scratch / key) == cache.root / key
    assert not (cache.root / key / "mine").exists() and cache.entry(key) is not None


def test_errors_are_the_same_with_the_cache(tmp_path: Path) -> None:
    small = _imagefolder(tmp_path / "small", {"cat": 4, "dog": 2})
    cache = PreparedCache(tmp_path / "cache")
    for source in (str(small), str(tmp_path / "missing"), str(_imagefolder(tmp_path / "one", {"cat": 4}))):
        with pytest.raises(TlopsError) as plain:
            preflight_dataset(source, _config())
        with pytest.raises(TlopsError) as cached:
            preflight_dataset(source, _config(), None, cache)
        with pytest.raises(TlopsError) as step:
            prepare_data(source, tmp_path / "out", _config(), None, cache)
        assert str(cached.value) == str(plain.value) == str(step.value)
    assert _entries(cache) == [] and not (tmp_path / "out").exists()


def test_a_cache_inside_the_dataset_is_not_used(tmp_path: Path, prepare_log: list[str]) -> None:
    data = _imagefolder(tmp_path / "data")
    cache = PreparedCache(data / ".cache" / "prepared")
    prepared, decodes = _decodes(prepare_data, str(data), tmp_path / "out", _config(), None, cache)
    assert decodes == IMAGES and len(read_manifest(tmp_path / "out")) == IMAGES and prepared.digest
    assert not (data / ".cache").exists()
    assert any(m.startswith(f"not using the prepared-dataset cache {cache.root}") for m in prepare_log)
