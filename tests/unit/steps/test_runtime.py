"""The runtime decides the DataLoader workers and pinned memory of every step, from one place."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from tlops.data.loading import make_loader
from tlops.steps.runtime import MAX_DEFAULT_WORKERS, Runtime, available_cpus, default_workers, runtime_from_environment
from tlops.train.finetune import TrainConfig

SRC = Path(__file__).resolve().parents[3] / "src" / "tlops"


@pytest.mark.parametrize(("cpus", "workers"), [(1, 1), (2, 2), (8, 8), (9, 8), (96, 8)])
def test_default_workers_are_the_usable_cpus_capped_at_eight(cpus: int, workers: int) -> None:
    assert MAX_DEFAULT_WORKERS == 8
    assert default_workers(cpus) == workers


def test_workers_from_the_environment(tmp_path: Path) -> None:
    environ = {"TLOPS_DEVICE": "cpu", "TLOPS_CACHE_DIR": str(tmp_path)}
    assert runtime_from_environment(environ).workers == min(available_cpus(), 8)
    assert runtime_from_environment(environ | {"TLOPS_WORKERS": "3"}).workers == 3
    assert runtime_from_environment(environ | {"TLOPS_WORKERS": "0"}).workers == 0


def test_pinned_memory_only_for_a_cuda_device(tmp_path: Path) -> None:
    assert Runtime(device=torch.device("cpu"), cache_dir=tmp_path).pin_memory is False
    assert Runtime(device=torch.device("cuda"), cache_dir=tmp_path).pin_memory is True  # constructing needs no GPU


def test_make_loader_takes_workers_and_pinned_memory() -> None:
    dataset = TensorDataset(torch.arange(10.0), torch.arange(10))
    loader = make_loader(dataset, 4, workers=2, pin_memory=True)
    assert (loader.num_workers, loader.pin_memory, loader.persistent_workers) == (2, True, True)
    plain = make_loader(dataset, 4)
    assert (plain.num_workers, plain.pin_memory, plain.persistent_workers) == (0, False, False)
    assert [batch[1].tolist() for batch in plain] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_every_step_loader_takes_its_workers_from_the_runtime() -> None:
    assert "workers" not in {f.name for f in dataclasses.fields(TrainConfig)}  # one source: the runtime
    calls = [
        (path.name, node)
        for path in sorted((SRC / "steps").glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "make_loader"
    ]
    assert {name for name, _ in calls} >= {"image_packs.py", "evaluate.py", "fine_tune.py"}
    for name, call in calls:
        keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
        assert keywords.get("workers") == "runtime.workers", (name, call.lineno)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where no GPU is visible")
def test_cuda_requested_where_none_exists_is_a_clear_error(tmp_path: Path) -> None:
    from tlops.errors import TlopsError

    environ = {"TLOPS_CACHE_DIR": str(tmp_path)}
    with pytest.raises(TlopsError, match=r"TLOPS_DEVICE='cuda' asks for CUDA but 0 CUDA devices are visible"):
        runtime_from_environment(environ | {"TLOPS_DEVICE": "cuda"})
    with pytest.raises(TlopsError, match=r"TLOPS_DEVICE='gpu0' is not a device: use auto, cpu, cuda or cuda:N"):
        runtime_from_environment(environ | {"TLOPS_DEVICE": "gpu0"})
    assert runtime_from_environment(environ | {"TLOPS_DEVICE": "auto"}).device == torch.device("cpu")


@pytest.mark.parametrize(
    ("cache", "needles"),
    [
        ("a-file", ["TLOPS_CACHE_DIR", "a-file is an existing file", "set TLOPS_CACHE_DIR to a folder you can write"]),
        ("a-file/cache", ["TLOPS_CACHE_DIR", "is a file, not a folder", "set TLOPS_CACHE_DIR"]),
        (
            "/proc/tlops-cache",
            ["TLOPS_CACHE_DIR /proc/tlops-cache cannot be created or written", "set TLOPS_CACHE_DIR"],
        ),
    ],
)
def test_an_unusable_cache_dir_fails_in_one_line_naming_the_variable(
    tmp_path: Path, cache: str, needles: list[str]
) -> None:
    from tlops.errors import TlopsError
    from tlops.io.paths import check_cache_dir

    (tmp_path / "a-file").write_text("x")
    environ = {"TLOPS_DEVICE": "cpu", "TLOPS_CACHE_DIR": str(tmp_path / cache)}

    for check in (check_cache_dir, runtime_from_environment):
        with pytest.raises(TlopsError) as error:
            check(environ)
        message = str(error.value)
        assert "\n" not in message and all(needle in message for needle in needles), message


def test_the_cache_dir_is_checked_without_being_left_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tlops.io.paths import check_cache_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert check_cache_dir({"TLOPS_CACHE_DIR": str(tmp_path / "new" / "cache")}) == tmp_path / "new" / "cache"
    assert check_cache_dir({}) == tmp_path / "home" / ".cache" / "tlops"
    assert runtime_from_environment({"TLOPS_DEVICE": "cpu", "TLOPS_CACHE_DIR": " "}).cache_dir == check_cache_dir({})
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bad_workers_fail_in_one_line(tmp_path: Path) -> None:
    from tlops.errors import TlopsError

    with pytest.raises(TlopsError, match="TLOPS_WORKERS='many' is not a whole number"):
        runtime_from_environment({"TLOPS_DEVICE": "cpu", "TLOPS_CACHE_DIR": str(tmp_path), "TLOPS_WORKERS": "many"})


def test_a_step_command_refuses_a_cache_dir_that_is_a_file(
    small_imagefolder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tlops.cli import main
    from tlops.data.prepare import SplitConfig, prepare_data

    prepare_data(str(small_imagefolder), tmp_path / "dataset", SplitConfig(workers=1))
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("TLOPS_CACHE_DIR", str(tmp_path / "a-file"))
    args = ["score-backbone", "--dataset", str(tmp_path / "dataset"), "--backbone", "efficientnet_lite0"]

    status = main([*args, "--output", str(tmp_path / "out")])

    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tlops: error: TLOPS_CACHE_DIR "), lines
