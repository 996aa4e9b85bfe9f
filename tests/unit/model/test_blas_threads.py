"""The daemon scores on one thread: TensorFlow's pools and the BLAS the fused scorer calls."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import json, numpy
from threadpoolctl import threadpool_info
before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
from streamvae.model import configure_threads
configure_threads(1)
import gc; gc.collect()  # the limit must outlive the object that set it
after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
print(json.dumps({"before": before, "after": after}))
"""


def test_configure_threads_pins_blas_to_one_thread() -> None:
    env = {"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}  # a 2-thread pool to begin with
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["before"] and all(n == 2 for n in got["before"]), got
    assert got["after"] and all(n == 1 for n in got["after"]), got
