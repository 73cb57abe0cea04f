"""The layered layout of src/tlops, enforced by import-linter's contracts in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from repository import REPO

LAYERS = (
    "io", "data", "models", "serving", "train", "evaluation", "promotion", "tasks", "steps", "pipeline", "stack", "cli",
)  # fmt: skip


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_every_module_sits_in_a_layer():
    package = REPO / "src" / "tlops"
    # Beside the layers, for all of them: the user-facing error, how a setting is declared, named registries, and
    # the paired differences every decision is taken on.
    beside = {"__init__.py", "errors.py", "settings.py", "registry.py", "estimates.py"}
    loose = sorted(p.name for p in package.glob("*.py") if p.name not in beside)
    assert loose == [], f"modules outside the layer packages: {loose}"
    assert sorted(p.name for p in package.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(LAYERS)
