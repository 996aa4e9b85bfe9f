"""The only package that imports TensorFlow / Keras."""

from __future__ import annotations

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's retracing heuristics warn when one process builds many models (SKAB trains
# 34); streamvae's tf.functions have fixed input signatures, so the warning is noise.
logging.getLogger("tensorflow").setLevel(logging.ERROR)


def configure_threads(n: int) -> None:
    """Pin TensorFlow to ``n`` intra-op and 1 inter-op threads, and the BLAS NumPy calls
    (the fused scorer's matmuls) to ``n`` threads.

    Must run before TensorFlow executes its first op. Scoring runs on one thread: on this
    2-core machine inference set to 2 threads collapses as soon as the other core is busy
    (consumer, producer, retrain), see scripts/bench_model.py. OpenBLAS's idle threads
    also spin after every call: with its default two threads the daemon took 0.69 of a
    core at 200 records/s, against ~0.1 with one (scripts/bench_e2e.py, (f)).
    """
    import numpy  # noqa: F401  (threadpoolctl limits the BLAS libraries already loaded: load NumPy's)
    from threadpoolctl import threadpool_limits

    threadpool_limits(n, user_api="blas")  # process-wide, for the process's life
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised: keep what is in force
        pass
