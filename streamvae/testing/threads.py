"""One thread everywhere, for the benchmarks that measure what one core does."""

from __future__ import annotations

import os

BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def one_thread() -> None:
    """The BLAS pools (OpenMP, OpenBLAS, MKL) and TensorFlow (intra- and inter-op) on one thread.

    Call it before NumPy is imported: a BLAS pool reads its size once, when it loads.
    """
    for var in BLAS_THREADS:
        os.environ[var] = "1"
    from streamvae.model import configure_threads

    configure_threads(1)
