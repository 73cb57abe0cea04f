"""Thread limits for the small linear-algebra problems of probes and scores."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def single_blas_thread() -> Iterator[None]:
    """Run the block with one BLAS thread.

    Probe and score fits multiply matrices of a few thousand rows, where BLAS threads gain nothing; after a
    PyTorch forward pass, whose OpenMP threads keep spinning, a multi-threaded BLAS contends with them: a
    logistic-regression fit on 1,259 x 1,280 features measured 95 s with the default threads on this 2-core
    machine and 3.5 s with one.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
