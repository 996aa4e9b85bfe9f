"""The daemon scores on one thread: TensorFlow's pools and the BLAS the fused scorer calls."""

from __future__ import annotations

import json
import subprocess
import sys

# As `streamvae run` does it: configure_threads before anything imported NumPy.
CODE = """
import json, sys
assert "numpy" not in sys.modules
from streamvae.model import configure_threads
configure_threads(1)
import gc; gc.collect()  # the limit must outlive the object that set it
import numpy
from threadpoolctl import threadpool_info
print(json.dumps([p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]))
"""


def test_configure_threads_pins_blas_to_one_thread() -> None:
    env = {"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}  # a 2-thread pool to begin with
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got and all(n == 1 for n in got), got
