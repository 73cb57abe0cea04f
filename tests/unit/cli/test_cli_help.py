"""``tlops --help`` names the training strategies."""

from __future__ import annotations

from pathlib import Path

from commands import tlops_module as _tlops


def test_help_mentions_the_strategies(tmp_path: Path) -> None:
    top = _tlops("--help", cwd=tmp_path)
    run = _tlops("run", "--help", cwd=tmp_path)
    assert top.returncode == 0 and run.returncode == 0
    for strategy in ("linear-probe", "mlp-probe", "partial", "surgical", "lp-ft", "gradual", "auto"):
        assert strategy in top.stdout, top.stdout
        assert strategy in run.stdout, run.stdout
    assert "run" in top.stdout and "prepare-data" in top.stdout
    for flag in ("--data", "--output", "--strategy", "--backbones", "--epochs", "--tracking-uri"):
        assert flag in run.stdout
    for flag in ("--unfreeze-blocks", "--layer-decay", "--swa-epochs", "--checkpoint-uri", "--gpu-node-selector"):
        assert flag in run.stdout
