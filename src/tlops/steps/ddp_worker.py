"""The fine-tune step in one process of a torchrun group: ``python -m tlops.steps.ddp_worker REQUEST``.

``REQUEST`` is one JSON document (:func:`tlops.steps.fine_tune.worker_request`): the step's folders and the whole run
config, so every process trains with exactly the settings of the step that started it. torchrun sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; each process joins the process group (NCCL with CUDA, gloo otherwise), takes its
GPU, and rank 0 writes the outputs. This module is an edge: it reads the environment.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from tlops.errors import TlopsError
from tlops.train.finetune import Distributed


def distributed_from_environment(environ: Mapping[str, str]) -> Distributed:
    """Rank and world size under torchrun (``RANK``, ``WORLD_SIZE``); joins the process group when there are more.

    The backend is NCCL when CUDA is present, gloo otherwise.
    """
    world_size = int(environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size())


def run_worker(request: str, environ: Mapping[str, str]) -> None:
    """Fine-tune as this process's rank of the group, with the request's folders and config.

    Raises:
        TlopsError: for a request that is not the worker's JSON, or as the fine-tune step does.
    """
    from tlops.steps.config import RunConfig
    from tlops.steps.fine_tune import fine_tune
    from tlops.steps.runtime import runtime_from_environment

    try:
        folders = json.loads(request)
        config = RunConfig.from_mapping(folders.pop("config"))
    except (json.JSONDecodeError, KeyError, AttributeError):
        raise TlopsError("the fine-tune worker takes one JSON request (tlops.steps.fine_tune.worker_request)") from None
    runtime = runtime_from_environment(environ)
    distributed = distributed_from_environment(environ)
    if distributed.world_size > 1 and runtime.device.type == "cuda":  # one GPU per process
        import torch

        runtime.device = torch.device("cuda", int(environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(runtime.device)
    path = {name: Path(value) if value else None for name, value in folders.items()}
    fine_tune(
        path["dataset"],
        path["probe"],
        path["output"],
        config.train,
        runtime,
        features_dir=path["features"],
        selection_dir=path["selection"],
        checkpoint_uri=config.storage.checkpoint_uri,
        distributed=distributed,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line on stderr and exit status 2 for a :class:`TlopsError`."""
    from tlops.io.logs import configure_logging

    arguments = sys.argv[1:] if argv is None else argv
    configure_logging()
    try:
        if len(arguments) != 1:
            raise TlopsError("usage: python -m tlops.steps.ddp_worker REQUEST (one JSON argument)")
        run_worker(arguments[0], os.environ)
    except TlopsError as error:
        print(f"tlops: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
