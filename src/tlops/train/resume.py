"""Preemption-safe training checkpoints: written atomically each epoch, read back by the restarted step.

A checkpoint holds everything that makes the rest of the run identical to an uninterrupted one: model,
optimizer, scheduler, AMP scaler and SWA states, every RNG state, the epoch (the data order of each epoch is a
function of the seed and the epoch), the best epoch's weights and the history. It carries a fingerprint (backbone,
classes, dataset, strategy and config); a checkpoint with another fingerprint is refused, never loaded.

Local checkpoints are written to a temporary file and renamed into place; on S3 the object is uploaded whole (an
S3 PUT is atomic), so a reader never sees half a checkpoint.
"""

from __future__ import annotations

import io
import logging
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlops.errors import TlopsError
from tlops.io.storage import S3Client, is_s3_uri, parse_s3_uri, read_bytes, s3_errors, upload_file

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "fine-tune-checkpoint.pt"
CHECKPOINT_SCHEMA = 1


@dataclass
class CheckpointStore:
    """Where one fine-tune step keeps its checkpoint: a local folder or an ``s3://`` prefix.

    Attributes:
        uri: The folder or prefix (the file is :data:`CHECKPOINT_FILE` inside it).
        s3: The S3 client, for ``s3://`` URIs.
    """

    uri: str
    s3: S3Client | None = None

    @property
    def location(self) -> str:
        """The checkpoint file's path or URI."""
        return f"{self.uri.rstrip('/')}/{CHECKPOINT_FILE}"

    def _read(self) -> dict[str, Any] | None:
        """The saved state as written, or ``None`` when there is none.

        Raises:
            TlopsError: when the checkpoint is unreadable.
        """
        try:
            data = read_bytes(self.location, self.s3)
        except FileNotFoundError:
            return None
        except TlopsError as error:
            if str(error).startswith("S3 object "):  # NoSuchKey: no checkpoint yet
                return None
            raise
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as error:
            raise TlopsError(
                f"the checkpoint {self.location} is unreadable ({type(error).__name__}): delete it to start over"
            ) from None

    def load(self, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
        """The saved state, or ``None`` when there is none.

        Raises:
            TlopsError: when the checkpoint was written for another run (fingerprint), or is unreadable.
        """
        state = self._read()
        if state is None:
            return None
        theirs = state.get("fingerprint", {})
        if state.get("schema") != CHECKPOINT_SCHEMA or theirs != fingerprint:
            differs = sorted(k for k in fingerprint.keys() | theirs.keys() if fingerprint.get(k) != theirs.get(k))
            raise TlopsError(
                f"the checkpoint {self.location} belongs to another training run (different {', '.join(differs)}): "
                "delete it, or give this run its own --checkpoint-uri"
            )
        return state

    def saved_settings(self) -> dict[str, Any] | None:
        """The training settings the checkpoint was written with (its fingerprint's), or ``None`` without one.

        For a preflight: a re-run with other settings would be refused only when fine-tuning starts.

        Raises:
            TlopsError: when the checkpoint is unreadable.
        """
        state = self._read()
        return None if state is None else dict(state.get("fingerprint", {}).get("config", {}))

    def save(self, state: dict[str, Any], fingerprint: dict[str, Any]) -> None:
        """Write the state atomically (temporary file + rename, or one S3 PUT)."""
        payload = {"schema": CHECKPOINT_SCHEMA, "fingerprint": fingerprint, **state}
        if is_s3_uri(self.uri):
            if self.s3 is None:
                raise TlopsError(f"--checkpoint-uri {self.uri} is on S3 but no S3 client is configured")
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / CHECKPOINT_FILE
                torch.save(payload, path)
                upload_file(path, self.location, self.s3)
            return
        folder = Path(self.uri)
        folder.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=folder, prefix=f".{CHECKPOINT_FILE}.", suffix=".partial")
        try:
            with os.fdopen(handle, "wb") as stream:
                torch.save(payload, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(partial, folder / CHECKPOINT_FILE)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)

    def remove(self) -> None:
        """Delete the checkpoint once the step's outputs are written (a later run starts afresh)."""
        if is_s3_uri(self.uri):
            location = parse_s3_uri(self.location)
            try:
                assert self.s3 is not None
                self.s3.delete_object(Bucket=location.bucket, Key=location.key)
            except s3_errors() as error:
                logger.warning("could not delete the checkpoint %s: %s", self.location, error)
            return
        Path(self.location).unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """Every RNG state a training step draws from (torch CPU and CUDA, numpy, Python)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
