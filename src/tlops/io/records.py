"""JSON records: a dataclass stored as one JSON file in a step's output folder, versioned and checked on read.

Each record class names its file (``FILE``) and the ``tlops`` command that writes it (``STEP``), so that a reader
given the wrong folder says which command to run. ``tlops.steps.outputs`` owns every record of the pipeline.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Self

from tlops.errors import TlopsError


@dataclass
class JsonRecord:
    """Base of a dataclass written as ``<folder>/<FILE>`` with a ``schema_version``.

    A subclass sets ``FILE`` and ``STEP`` (and ``HINT`` for a message more precise than "run tlops STEP
    first"); it bumps its schema by redeclaring ``schema_version`` with a higher default.

    Attributes:
        schema_version: The layout of the file; :meth:`read` accepts only the version this code writes.
    """

    FILE: ClassVar[str] = ""
    STEP: ClassVar[str] = ""
    HINT: ClassVar[str] = ""

    schema_version: int = field(default=1, kw_only=True)

    @classmethod
    def expected_version(cls) -> int:
        """The schema version this code writes and reads."""
        return next(f.default for f in fields(cls) if f.name == "schema_version")

    @classmethod
    def check_folder(cls, folder: Path) -> Path:
        """The record's path in ``folder``, after checking that ``folder`` is an output of ``STEP``.

        Raises:
            TlopsError: when the folder does not exist, is a file, or lacks the record's file.
        """
        folder = Path(folder)
        if not folder.exists():
            problem = "no such folder"
        elif not folder.is_dir():
            problem = "a file, not a folder"
        elif not (folder / cls.FILE).is_file():
            problem = f"no {cls.FILE}"
        else:
            return folder / cls.FILE
        article = "an" if cls.STEP[:1] in "aeiou" else "a"
        hint = cls.HINT or f"run tlops {cls.STEP} first"
        raise TlopsError(f"{folder} is not {article} {cls.STEP} output ({problem}): {hint}")

    @classmethod
    def read(cls, folder: Path) -> Self:
        """Read the record from ``folder``.

        Raises:
            TlopsError: when ``folder`` is not an output of ``STEP``, or the file is damaged or of another schema
                version.
        """
        path = cls.check_folder(folder)
        try:
            payload = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise TlopsError(f"{path} cannot be read ({error}): run tlops {cls.STEP} again") from None
        version = payload.get("schema_version") if isinstance(payload, dict) else None
        if version != cls.expected_version():
            raise TlopsError(
                f"{path} has schema version {version}, this tlops reads version {cls.expected_version()}: "
                f"run tlops {cls.STEP} again with this version"
            )
        try:
            return cls(**payload)
        except TypeError as error:
            raise TlopsError(f"{path} does not match its schema ({error}): run tlops {cls.STEP} again") from None

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        return asdict(self)

    def write(self, folder: Path) -> Path:
        """Write the record into ``folder`` (created if needed), atomically: a reader sees all of it or nothing.

        Returns:
            The written file.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.FILE
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{self.FILE}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as file:
                json.dump(self.to_dict(), file, indent=2)
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path
