"""Step folders on S3: a step command given ``s3://`` prefixes reads and writes them through local copies.

Pods of a multi-node TrainJob share no disk: they run ``tlops fine-tune`` on the ``s3://`` prefixes of the
upstream steps' outputs, and rank 0 uploads the model folder.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tlops.io.storage import is_s3_uri

INPUT_FOLDERS = ("dataset", "probe", "features", "selection")


def path_or_s3(text: str) -> Path | str:
    """An argparse type: ``s3://`` URIs stay strings (a ``Path`` would turn ``s3://`` into ``s3:/``)."""
    return text if is_s3_uri(text) else Path(text)


@contextlib.contextmanager
def staged_folders(args: argparse.Namespace) -> Iterator[str | None]:
    """Download the ``s3://`` input folders of a step command, and point ``--output`` at a local folder.

    Yields:
        The ``s3://`` output prefix to upload ``args.output`` to once the step succeeded, or ``None``.
    """
    options = [name for name in (*INPUT_FOLDERS, "output") if isinstance(getattr(args, name, None), str)]
    if not options:
        yield None
        return
    from tlops.io.storage import download_prefix, make_s3_client

    s3 = make_s3_client()
    with tempfile.TemporaryDirectory(prefix="tlops-staged-") as folder:
        output_uri = None
        for name in options:
            uri = getattr(args, name)
            if name == "output":
                output_uri = uri
                setattr(args, name, Path(folder) / "output")
            else:
                setattr(args, name, download_prefix(uri, Path(folder) / name, s3))
        yield output_uri


def upload_output(folder: Path, uri: str) -> None:
    """Upload a step's output folder to its ``s3://`` prefix."""
    from tlops.io.storage import make_s3_client, upload_folder

    upload_folder(folder, uri, make_s3_client())
