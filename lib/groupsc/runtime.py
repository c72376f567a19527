"""The number of CPU threads, set in one place for torch and numpy's BLAS.

Every entry point (training, evaluation, restore, spot checks, benchmarks, notebooks) calls
:func:`set_threads` with its ``threads`` setting, so that a 1-thread evaluation beside a
1-thread training does not oversubscribe the cores through a BLAS or OpenMP pool.
"""

from __future__ import annotations

import torch


def set_threads(n: int) -> int:
    """Use ``n`` (>= 1) threads for torch's intra-op pool and numpy's BLAS; returns ``n``."""
    if int(n) < 1:
        raise ValueError(f"threads must be a whole number >= 1, got {n}")
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(int(n))
    threadpool_limits(int(n))  # numpy / scipy BLAS (and OpenMP pools) for the process
    return int(n)
