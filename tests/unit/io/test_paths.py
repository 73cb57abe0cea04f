"""Local output folders: the writability check is race-free, so ranks of a distributed run can check at once."""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tlops.errors import TlopsError
from tlops.io.paths import check_writable_dir

RANKS = 8

TRIALS = 25


def _check_after(barrier: threading.Barrier, path: Path) -> str | None:
    barrier.wait()
    try:
        check_writable_dir(path)
    except TlopsError as error:
        return str(error)
    return None


def test_ranks_checking_a_fresh_output_at_once_all_pass(tmp_path: Path) -> None:
    """Before the fix, ``mkdir`` without ``exist_ok`` failed one rank in about half of the trials."""
    errors = []
    with ThreadPoolExecutor(RANKS) as pool:
        for trial in range(TRIALS):
            barrier = threading.Barrier(RANKS)
            path = tmp_path / f"trial-{trial}" / "run" / "out"
            errors += [e for e in pool.map(_check_after, [barrier] * RANKS, [path] * RANKS) if e]
            assert not (tmp_path / f"trial-{trial}").exists()  # nothing left behind
    assert errors == []


def _rank(path: str, barrier: multiprocessing.synchronize.Barrier, create: bool) -> None:
    barrier.wait()
    check_writable_dir(Path(path))  # raises (and the process exits non-zero) on a failed check
    if create:  # the rank that then writes: another rank's check must never remove its folder
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "written").write_text("x")


def test_processes_checking_and_creating_the_same_output_at_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for trial in range(5):
        path = tmp_path / f"trial-{trial}" / "out"
        barrier = context.Barrier(RANKS)
        ranks = [context.Process(target=_rank, args=(str(path), barrier, rank == 0)) for rank in range(RANKS)]
        for process in ranks:
            process.start()
        for process in ranks:
            process.join(60)
        assert [process.exitcode for process in ranks] == [0] * RANKS
        assert (path / "written").read_text() == "x"
        assert sorted(os.listdir(path)) == ["written"]  # no probe or scratch folder left


def test_existing_folder_is_probed_in_place_and_left_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "keep").write_text("x")

    check_writable_dir(tmp_path)

    assert sorted(os.listdir(tmp_path)) == ["keep"]


@pytest.mark.parametrize(
    ("relative", "needles"),
    [("a-file", ["is an existing file"]), ("a-file/out", ["cannot be created", "is a file"])],
)
def test_a_file_in_the_way_is_named(tmp_path: Path, relative: str, needles: list[str]) -> None:
    (tmp_path / "a-file").write_text("x")

    with pytest.raises(TlopsError) as error:
        check_writable_dir(tmp_path / relative)

    assert all(needle in str(error.value) for needle in needles), error.value


def test_a_name_the_file_system_refuses_is_caught_and_nothing_left(tmp_path: Path) -> None:
    with pytest.raises(TlopsError, match="cannot be created or written"):
        check_writable_dir(tmp_path / "ok" / ("x" * 300))

    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_parent_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(TlopsError, match="cannot be created or written"):
            check_writable_dir(tmp_path / "out")
    finally:
        tmp_path.chmod(0o755)
