"""Where the repository's checked-in files are: its root and the component YAMLs with their pages."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = REPO / "components"
