"""Fits with one torch thread and one BLAS / OpenMP thread: reproducible, and faster on 2 cores."""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def single_threaded():
    """One torch thread and one BLAS / OpenMP thread inside the block (restored after)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)
