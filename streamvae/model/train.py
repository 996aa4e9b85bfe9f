"""Retraining in a child process, so the scoring loop keeps its core.

The daemon scores on one TensorFlow thread. A retrain in a thread of the same process
would take the GIL and TensorFlow's thread pools from it, so the retrain runs in a child
``python -m streamvae.model.train JOB_DIR`` with one TensorFlow thread and a lower CPU
priority: on 2 cores scoring keeps one (scripts/bench_retrain.py measures the ratio).

Parent and child talk through files only, never pickle: the parent writes ``job.json``
(and ``windows.npy`` when it was given an array), the child writes a model artifact
(:mod:`streamvae.model.artifact`) to ``out_dir`` and ``result.json``, or ``error.json``
when training failed. The parent raises :class:`TrainingFailed` for a failure, a crash,
a timeout or a stop request; it never waits longer than ``timeout``.

Examples
--------
>>> result = train_in_child(windows, VAEConfig(window=32, n_features=8), "models/candidate")  # doctest: +SKIP
>>> det = artifact.load(result.path)                                                      # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from streamvae.errors import StreamvaeError
from streamvae.model.vae import VAEConfig

log = logging.getLogger(__name__)

NICE = 10  # the child's priority below the daemon's: the scheduler favours scoring when both want a core
POLL_S = 0.2  # how often the parent checks the child for exit, timeout and stop


class TrainingFailed(StreamvaeError):
    """The training child failed, crashed, ran past its timeout or was stopped.

    ``child_error`` is the child's exception type (``"DataError"``, ``"timeout"``,
    ``"stopped"``, ``"crashed"``), ``child_traceback`` its traceback or its stderr tail.
    """

    def __init__(self, message: str, child_error: str, child_traceback: str = "") -> None:
        super().__init__(message)
        self.child_error = child_error
        self.child_traceback = child_traceback


@dataclass(frozen=True, slots=True)
class TrainResult:
    """A finished training child: the artifact at ``path`` is ready for ``artifact.load``.

    wall_s : the child's lifetime seen by the parent (start-up, training, scoring, saving).
    fit_s : the training and threshold scoring alone, measured in the child.
    fit : the fit summary (best_epoch, epochs_run, best_val_loss, n_train, n_val).
    """

    path: Path
    version: str
    wall_s: float
    fit_s: float
    fit: dict[str, Any]
    fit_started: float  # time.time() in the child when training started
    fit_ended: float


def train_in_child(
    windows: np.ndarray | str | Path,
    config: VAEConfig,
    out_dir: str | Path,
    *,
    feature_names: Sequence[str] | None = None,
    init: str | Path | None = None,
    epochs: int | None = None,
    version: str | None = None,
    timeout: float = 3600.0,
    stop: threading.Event | None = None,
    threads: int = 1,
    nice: int = NICE,
) -> TrainResult:
    """Fit a VAEDetector on ``windows`` in a child process and save it to ``out_dir``.

    Parameters
    ----------
    windows : (M, W, F) raw windows, or the path of a ``.npy`` file holding them.
    config : the model settings (``epochs`` replaced by ``epochs`` when given).
    out_dir : where the child saves the artifact (must not exist, or be empty).
    feature_names : the F feature names stored in the artifact.
    init : artifact directory of the serving model to warm-start from: its scaler and
        weights are the starting point (the architecture must match ``config``).
    version : the artifact's version id (default: a new time-sortable id).
    timeout : seconds before the child is killed and :class:`TrainingFailed` raised.
    stop : when set (daemon shutdown), the child is killed and TrainingFailed raised.
    threads, nice : TensorFlow intra-op threads in the child, and its added niceness.

    Blocks until the child ends; call it from the retrain worker thread, never from the
    scoring loop. Raises TrainingFailed with the child's error type and message.
    """
    if epochs is not None:
        config = replace(config, epochs=epochs)
    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="streamvae-train-") as tmp:
        job_dir = Path(tmp)
        if isinstance(windows, (str, Path)):
            windows_path = Path(windows).resolve()
        else:
            windows_path = job_dir / "windows.npy"
            np.save(windows_path, np.asarray(windows, dtype=np.float32), allow_pickle=False)
        job = {
            "config": config.to_dict(),
            "windows": str(windows_path),
            "out": str(out.resolve()),
            "feature_names": None if feature_names is None else list(feature_names),
            "init": None if init is None else str(Path(init).resolve()),
            "version": version,
            "threads": threads,
            "nice": nice,
            "parent_pid": os.getpid(),
        }
        (job_dir / "job.json").write_text(json.dumps(job))
        return _run_child(job_dir, timeout, stop)


def _run_child(job_dir: Path, timeout: float, stop: threading.Event | None) -> TrainResult:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"  # NumPy's BLAS in the child: one thread too
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    stderr_path = job_dir / "stderr.txt"
    t0 = time.perf_counter()
    with stderr_path.open("wb") as stderr:
        # A file, not a pipe: a chatty child cannot fill a pipe nobody reads and hang.
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamvae.model.train", str(job_dir)],
            stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, env=env,
        )
        log.info("training child pid=%d started, job=%s", proc.pid, job_dir)
        try:
            why = _wait(proc, t0 + timeout, stop)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wall = time.perf_counter() - t0
    tail = stderr_path.read_text(errors="replace")[-4000:]
    if why == "timeout":
        raise TrainingFailed(f"training child ran past its timeout of {timeout:.0f} s and was killed; "
                             "raise retrain.timeout or train on fewer windows", "timeout", tail)
    if why == "stopped":
        raise TrainingFailed("training child was stopped (shutdown) before it finished", "stopped", tail)
    error_file = job_dir / "error.json"
    if error_file.is_file():
        err = json.loads(error_file.read_text())
        raise TrainingFailed(f"training failed in the child: {err['type']}: {err['message']}", err["type"], err["traceback"])
    result_file = job_dir / "result.json"
    if proc.returncode != 0 or not result_file.is_file():
        raise TrainingFailed(f"training child crashed with exit code {proc.returncode} and no result "
                             f"(killed for memory?); its last output: {tail[-500:]!r}", "crashed", tail)
    res = json.loads(result_file.read_text())
    log.info("training child pid=%d finished in %.1f s: %s", proc.pid, wall, res["path"])
    return TrainResult(Path(res["path"]), res["version"], wall, res["fit_s"], res["fit"], res["fit_started"], res["fit_ended"])


def _wait(proc: subprocess.Popen[bytes], deadline: float, stop: threading.Event | None) -> str:
    """"exited", "timeout" or "stopped"."""
    while True:
        try:
            proc.wait(timeout=POLL_S)
            return "exited"
        except subprocess.TimeoutExpired:
            pass
        if stop is not None and stop.is_set():
            return "stopped"
        if time.perf_counter() >= deadline:
            return "timeout"


# -- the child ---------------------------------------------------------------------------
def _child(job_dir: Path) -> None:
    job = json.loads((job_dir / "job.json").read_text())
    os.nice(int(job["nice"]))
    _exit_with_parent(int(job["parent_pid"]))

    from streamvae.model import configure_threads

    configure_threads(int(job["threads"]))  # before TensorFlow runs its first op
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() != int(job["threads"]):
        raise RuntimeError("TensorFlow started before configure_threads in the training child; "
                           "an import above it ran an op")

    from streamvae.model import artifact
    from streamvae.model.detector import VAEDetector

    config = VAEConfig.from_dict(job["config"])
    windows = np.load(job["windows"], allow_pickle=False)
    scaler, init = None, None
    if job["init"] is not None:
        current = artifact.load(job["init"])
        assert current.scaler_ is not None and current.vae_ is not None
        scaler, init = current.scaler_, current.vae_.get_weights()
    started = time.time()
    t0 = time.perf_counter()
    det = VAEDetector(config, job["feature_names"]).fit(windows, scaler=scaler, init=init)
    fit_s = time.perf_counter() - t0
    ended = time.time()
    path = artifact.save(det, job["out"], version=job["version"])
    version = artifact.read_manifest(path)["version"]
    fit = {k: v for k, v in det.fit_info_.items() if k != "history"}
    result = {"path": str(path), "version": version, "fit_s": fit_s, "fit": fit, "fit_started": started, "fit_ended": ended}
    (job_dir / "result.json").write_text(json.dumps(result))


def _exit_with_parent(parent_pid: int) -> None:
    """Exit when the parent dies: an orphaned retrain would only burn the scoring core."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m streamvae.model.train JOB_DIR (run by train_in_child)", file=sys.stderr)
        return 2
    job_dir = Path(args[0])
    try:
        _child(job_dir)
    except BaseException as e:  # everything goes back to the parent as error.json
        err = {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
        (job_dir / "error.json").write_text(json.dumps(err))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
