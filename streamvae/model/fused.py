"""The fused scorer: :class:`~streamvae.model.score.GraphScorer`'s computation in NumPy
float32 with one-thread BLAS, and :func:`make_scorer`, which picks it for relu networks.

-log reconstruction probability; higher means more anomalous. The formula, the shared
eps draws and the missing-cell rule are those of streamvae/model/score.py; this module
only lays the same computation out for a CPU (see :class:`FusedScorer`; the computation
itself is streamvae/model/kernel.py), and binds the C extension.
"""

from __future__ import annotations

import ctypes
import importlib
from types import ModuleType

import numpy as np
import numpy.typing as npt

from streamvae.model.kernel import Cells, Kernel
from streamvae.model.score import MAX_BUCKET, GraphScorer
from streamvae.model.vae import VAE, ScoreOutput


def _load_tail() -> ModuleType | None:
    """The C tail (streamvae/model/_tail.c), or None where it was not built: installing
    builds it where a C compiler is found, and the NumPy tail computes the same without."""
    try:
        return importlib.import_module("streamvae.model._tail")
    except ImportError:
        return None


def _bind_sgemm(tail: ModuleType | None) -> bool:
    """Hand NumPy's own OpenBLAS ``cblas_sgemm`` to the C forward pass (``_tail.forward``).

    threadpoolctl names the library file NumPy loaded (and limits its threads, see
    :func:`streamvae.model.configure_threads`); a ``64_`` suffix marks its 64-bit-integer
    interface. False where there is no C tail or no OpenBLAS with a CBLAS sgemm: then the
    NumPy pass scores, with the same results."""
    if tail is None or not hasattr(tail, "set_sgemm"):
        return False
    from threadpoolctl import threadpool_info

    for info in threadpool_info():
        if info.get("internal_api") != "openblas":
            continue
        try:
            lib = ctypes.CDLL(info["filepath"])
        except OSError:
            continue
        for name, ilp64 in (("scipy_cblas_sgemm64_", True), ("cblas_sgemm64_", True), ("scipy_cblas_sgemm", False), ("cblas_sgemm", False)):
            fn = getattr(lib, name, None)
            if fn is not None:
                tail.set_sgemm(ctypes.cast(fn, ctypes.c_void_p).value, ilp64)
                return True
    return False


TAIL = _load_tail()
FORWARD = _bind_sgemm(TAIL)  # the whole scores-only pass in C, without the GIL
# Windows per pass, at most: ~22 MB of NumPy work arrays per thread at W*F=256, L=10, ~15
# for the C pass. Chosen for the NumPy pass (fewer GIL waits beside the pipeline's main
# thread: the worker took 40.1 us of wall time per window at 128, 37.5 at 256, 35.4 at
# 512); with the C pass, 256 scores ~5% faster alone and the offline pipeline ~1%.
CHUNK = 512


class FusedScorer(GraphScorer):
    """:class:`GraphScorer`'s computation in NumPy float32 with one-thread BLAS.

    -log reconstruction probability; higher means more anomalous. The same scores, shares
    and ablation as the graph, to float32 rounding; the graph's methods stay available as
    the reference (``GraphScorer.__call__(scorer, x)``).

    What makes it cheaper than the graph (scripts/bench_model.py's network, batch 256, one
    thread, AMD EPYC: the graph takes ~10.5 ms, about half of it outside its matmuls; this
    ~6.3 ms with the C tail, ~8.3 ms with the NumPy one; of either, the matmuls ~4.7 ms,
    ~90% of the matmul peak):

    - activations are columns ending in a row of ones: each Dense layer is one matmul
      with its bias folded in, then one in-place relu; the decoder's mean and variance
      heads are one matmul;
    - the elementwise tail, from the decoder's output to each sample's likelihood, reads
      each cell once in C (streamvae/model/_tail.c, ~0.8 ms): vectorised float32 exp and
      log polynomials, softplus computed the exact way, and sum_d log var_d as the log of
      a product of 8 variances' mantissas plus their exponents, one log per 8 cells;
    - where the C tail was not built (no compiler at install) or ``native=False``, NumPy
      does it in ~10 passes (~3.3 ms): min_var + softplus(r) as log(e^m + e^(r + m)),
      m = min_var, one exp and one log per cell (softplus alone is an exp and a log1p, and
      NumPy's float32 log1p is ~10x slower than its log), exact to ~2e-7 / min_var; and
      sum_d log var_d as the log of products of 8 variances;
    - no op dispatch, no float64 pass over the (L, B, D) cells, work arrays reused, and
      the windows go through in chunks of ``chunk`` so those arrays stay in cache;
    - a scores-only call (``detail=False``, and :meth:`scores`, the pipeline's every
      window) runs each chunk as ONE C call that holds no GIL from the scaling of the raw
      windows to the last score (:attr:`whole_pass`, _tail.c's ``forward``, with NumPy's
      own OpenBLAS sgemm): the NumPy pass is ~40 calls, and beside the pipeline's main
      thread each one that lets the GIL go waited to win it back (the offline pipeline's
      worker: 38.7 us of wall time per window for 32.7 us of CPU; now 27-29 for 27-29).
      The same numbers, bit for bit: both draw z the same way, and the NumPy pass takes
      the posterior's sd as e^x in float64 rounded once, as C does.

    A window whose likelihood comes out not finite (a variance of inf or NaN in C; in
    NumPy, also the exp or a product overflowed; or the window itself is absurd) is
    computed again the exact NumPy way: softplus by ``logaddexp``, one log per cell. So is
    every window when ``min_var < 1/16`` and the C tail is not in use.

    The weights are read once, here: build a new scorer after changing them
    (:meth:`VAEDetector.fit` does). Relu networks only (the default); the detector
    scores other activations with :class:`GraphScorer`.
    """

    def __init__(self, vae: VAE, n_samples: int | None = None, seed: int | None = None, chunk: int = CHUNK,
                 native: bool = True, whole_pass: bool = True) -> None:
        super().__init__(vae, n_samples, seed)
        if vae.cfg.activation != "relu":
            raise ValueError(f"FusedScorer computes relu networks only; this one uses {vae.cfg.activation!r} (use GraphScorer)")
        self.chunk = int(chunk)
        self.native = bool(native)
        self._kernel = Kernel(vae, self.eps, self.chunk, TAIL if self.native else None, FORWARD and bool(whole_pass))

    @property
    def tail(self) -> str:
        """Which elementwise tail scores: ``"C"`` (_tail.c) or ``"NumPy"`` (``native=False``,
        or the extension was not built)."""
        return "NumPy" if self._kernel.tail is None else "C"

    @property
    def whole_pass(self) -> bool:
        """Whether a scores-only call runs as one C call without the GIL (_tail.c's
        ``forward``): the C tail is in use, NumPy's OpenBLAS was found, and
        ``whole_pass=False`` was not asked for (that runs the NumPy pass with the C tail)."""
        return self._kernel.forward

    def __call__(self, x: np.ndarray, detail: bool = True) -> ScoreOutput:
        """Score flattened scaled windows (B, W*F), NaN = missing; see :meth:`GraphScorer.__call__`."""
        return self._kernel.score(x, detail)

    def scores(self, x: np.ndarray, cells: Cells) -> npt.NDArray[np.float64]:
        """Scores alone of flattened RAW windows (B, W*F), scaled first per cell by
        ``cells`` (:data:`Cells`): the same numbers as ``self(scaled, detail=False).score``.
        With :attr:`whole_pass` the scaling happens inside the C pass, so the caller's
        thread runs no NumPy pass of its own over the windows."""
        return self._kernel.scores(x, cells)

    def warmup(self, max_batch: int = MAX_BUCKET) -> None:
        """Allocate this thread's work arrays and touch them once, for ``max_batch``
        windows (at most ``chunk``), scores alone and with detail: the daemon's main
        thread scores small polls and the flagged windows' detail, and its memory should
        not depend on how many windows a feed gets flagged (scripts/bench_memory.py)."""
        x = np.zeros((min(max(max_batch, 1), self.chunk), self.vae.cfg.input_dim), np.float32)
        self(x, detail=False)
        self(x)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decoder mean at z = E[q(z|x)], in scaled units (B, W*F)."""
        return self._kernel.reconstruct(x)


def make_scorer(vae: VAE) -> GraphScorer:
    """The scorer the detector uses: :class:`FusedScorer` for relu networks, else the graph.

    It lives here, not in score.py, because it names both classes: fused.py builds on
    score.py's GraphScorer, and the import goes that one way."""
    return FusedScorer(vae) if vae.cfg.activation == "relu" else GraphScorer(vae)
