"""The C tail (streamvae/model/_tail.c): built where it can be, and the same numbers as
the NumPy tail and the float64 definition; and the whole scores-only pass in C (its
``forward``): the same numbers as the NumPy pass, bit for bit, with no GIL held.

test_score_equivalence.py runs every fused check with both tails; here: that the build
happened (a fresh clone + scripts/setup must compile it wherever there is a compiler, or
the fast path would silently never run), the batch sizes and min_var values on either
side of FAST_MIN_VAR, and the kernel itself against float64 NumPy, special values too.
"""

from __future__ import annotations

import platform
import shutil
import sysconfig
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import tiny_config
from streamvae.model.detector import VAEDetector
from streamvae.model.fused import TAIL, FusedScorer
from streamvae.model.kernel import FAST_MIN_VAR, Kernel
from streamvae.model.score import GraphScorer
from streamvae.model.vae import VAE
from test_score_equivalence import RTOL, reference, windows

needs_tail = pytest.mark.skipif(TAIL is None, reason="streamvae.model._tail is not built (see the first test)")


def _compiler() -> str | None:
    """The C compiler setuptools would build with, if it is on PATH."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    return shutil.which(cc[0]) if cc else None


def test_the_c_tail_is_built_where_a_compiler_is() -> None:
    if _compiler() is None:
        pytest.skip("no C compiler: this install scores with the NumPy tail")
    assert TAIL is not None, "a C compiler is here but streamvae.model._tail is not built: run `.venv/bin/pip install -e .`"


@needs_tail
def test_the_kernel_runs_the_avx2_build_where_the_cpu_has_it() -> None:
    """The module picks its AVX2 + FMA build by the CPU's features (gcc's target_clones
    with arch=haswell picks by model name and gave this AMD EPYC the baseline build)."""
    assert TAIL is not None
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() != "x86_64" or not cpuinfo.exists():
        pytest.skip("the AVX2 build is for x86-64 Linux")
    flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
    assert TAIL.isa == ("avx2+fma" if {"avx2", "fma"} <= flags else "baseline")


@needs_tail
def test_the_detector_scores_with_the_c_tail(detector: VAEDetector) -> None:
    scorer = detector._fitted()[1]
    assert isinstance(scorer, FusedScorer) and scorer.tail == "C"
    assert FusedScorer(scorer.vae, native=False).tail == "NumPy"


@needs_tail
@pytest.mark.parametrize("min_var", [0.01, 0.5], ids=["below FAST_MIN_VAR", "above"])
@pytest.mark.parametrize("batch", [1, 7, 128, 300])
def test_c_tail_scores_as_the_graph_numpy_and_the_reference(batch: int, min_var: float) -> None:
    assert 0.01 < FAST_MIN_VAR < 0.5  # the NumPy tail's exact form on one side, its fast form on the other
    vae = VAE(tiny_config(min_var=min_var))
    c, numpy_tail, graph = FusedScorer(vae), FusedScorer(vae, native=False), GraphScorer(vae)
    x = windows(vae.cfg, max(batch, 8), seed=batch)[:batch]
    x[0, 3] = np.nan  # a missing cell in every batch, batch 1 too
    want, want_shares, want_mse = reference(vae, graph.eps, x)
    got = c(x)
    assert got.shares is not None and got.mse is not None
    np.testing.assert_allclose(got.score, want, rtol=RTOL)
    np.testing.assert_allclose(got.score, graph(x, detail=False).score, rtol=RTOL)
    np.testing.assert_allclose(got.score, numpy_tail(x, detail=False).score, rtol=RTOL)
    finite = np.isfinite(want)
    np.testing.assert_allclose(got.shares[finite], want_shares[finite], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.mse, want_mse, rtol=RTOL)
    np.testing.assert_array_equal(c(x, detail=False).score, got.score)


# -- the kernel alone, against float64 ------------------------------------------------

RAW = [-1e30, -200.0, -87.5, -30.0, -5.0, -1e-3, -1e-30, 0.0, 1e-30, 1e-3, 0.7, 5.0, 30.0, 200.0, 1e30]


def _kernel_case(d: int, n_samples: int, b: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """o (2d, L*b) with every raw value of RAW and random ones, x0 and a mask (d, b)."""
    rng = np.random.default_rng(seed)
    n = n_samples * b
    o = np.empty((2 * d, n), np.float32)
    o[:d] = 2.0 * rng.standard_normal((d, n))
    raw = 6.0 * rng.standard_normal((d, n))
    raw.flat[: len(RAW)] = RAW
    o[d:] = raw
    x0 = rng.standard_normal((d, b)).astype(np.float32)
    mask = (rng.random((d, b)) > 0.2).astype(np.float32)
    return o, x0, mask


def _nll64(o: np.ndarray, x0: np.ndarray, mask: np.ndarray | None, min_var: float) -> tuple[np.ndarray, np.ndarray]:
    d, b = x0.shape
    o64 = o.astype(np.float64)
    var = np.float64(np.float32(min_var)) + np.logaddexp(0.0, o64[d:])
    diff = o64[:d] - np.tile(x0.astype(np.float64), o.shape[1] // b)
    if mask is not None:
        m = np.tile(mask.astype(np.float64), o.shape[1] // b)
        diff, var = diff * m, var * m + (1.0 - m)
    sq = diff**2 / var
    return (sq + np.log(var)).sum(axis=0), sq


# the build the CPU gets (AVX2 + FMA here), and the baseline build, which CPUs without
# AVX2 run and this one would not run otherwise
BUILDS = pytest.mark.parametrize("baseline", [False, True], ids=["picked build", "baseline build"])


@needs_tail
@BUILDS
@pytest.mark.parametrize("min_var", [1e-30, 0.01, 0.5, 7.0])
@pytest.mark.parametrize("masked", [False, True])
def test_the_kernel_matches_float64(min_var: float, masked: bool, baseline: bool) -> None:
    assert TAIL is not None
    d, n_samples, b = 21, 3, 37  # odd sizes: vector remainders, a group of variances cut short
    o, x0, mask = _kernel_case(d, n_samples, b, seed=int(masked))
    m = mask if masked else None
    total, sq = np.empty(n_samples * b), np.empty((d, n_samples * b), np.float32)
    TAIL.nll(o, x0, m, total, sq, min_var, baseline=baseline)
    want, want_sq = _nll64(o, x0, m, min_var)
    # 1e30 / min_var and its log: ~10 significant digits of headroom over float32 rounding
    np.testing.assert_allclose(total, want, rtol=2e-6, atol=1e-4)
    np.testing.assert_allclose(sq, want_sq, rtol=1e-6, atol=1e-30)
    lean = np.empty_like(total)
    TAIL.nll(o, x0, m, lean, None, min_var, baseline=baseline)
    np.testing.assert_array_equal(lean, total)  # writing sq changes nothing


@needs_tail
@BUILDS
def test_the_kernel_marks_what_the_exact_form_must_redo(baseline: bool) -> None:
    """A variance of inf or NaN makes the column's total NaN (the caller redoes that
    window the exact NumPy way); a squared difference past float32 gives inf, as in NumPy."""
    assert TAIL is not None
    d, b = 4, 5
    o = np.zeros((2 * d, b), np.float32)
    x0 = np.zeros((d, b), np.float32)
    o[d, 1], o[d, 2], o[1, 3] = np.inf, np.nan, 1e20
    o[d + 2, 4] = -np.inf  # softplus(-inf) = 0: the variance is min_var, all finite
    total = np.empty(b)
    TAIL.nll(o, x0, None, total, None, 0.5, baseline=baseline)
    assert np.isnan(total[1]) and np.isnan(total[2]) and np.isposinf(total[3])
    finite = [0, 4]
    np.testing.assert_allclose(total[finite], _nll64(o[:, finite], x0[:, finite], None, 0.5)[0], rtol=1e-6)


@needs_tail
def test_the_kernel_refuses_what_it_cannot_read() -> None:
    assert TAIL is not None
    o, x0 = np.zeros((8, 6), np.float32), np.zeros((4, 3), np.float32)
    total = np.empty(6)
    with pytest.raises(TypeError, match="float32"):
        TAIL.nll(o.astype(np.float64), x0, None, total, None, 0.5)
    with pytest.raises(ValueError, match="shapes"):
        TAIL.nll(o[:6], x0, None, total, None, 0.5)
    with pytest.raises(ValueError, match="min_var"):
        TAIL.nll(o, x0, None, total, None, 0.0)
    with pytest.raises((BufferError, ValueError)):  # a strided view is not C-contiguous
        TAIL.nll(o[:, ::2].copy()[:, :3], np.zeros((4, 6), np.float32)[:, ::2], None, np.empty(3), None, 0.5)
    with pytest.raises((BufferError, TypeError)):
        TAIL.nll(o, x0, None, np.empty(6).view(np.int64), None, 0.5)
    TAIL.nll(o, x0, None, total, None, 0.5)
    np.testing.assert_allclose(total, 4 * np.log(0.5 + np.log(2.0)), rtol=1e-6)


# -- the whole pass in C (forward) ----------------------------------------------------


def _openblas_loaded() -> bool:
    from threadpoolctl import threadpool_info

    return any(i.get("internal_api") == "openblas" for i in threadpool_info())


@needs_tail
def test_the_c_pass_scores_where_numpy_has_openblas(detector: VAEDetector) -> None:
    """Without it the pipeline's worker waits for the GIL between ~40 NumPy calls a pass;
    a silent fallback would cost the offline pipeline ~20% (scripts/bench_e2e.py)."""
    if not _openblas_loaded():
        pytest.skip("NumPy was built without OpenBLAS: scores-only calls run the NumPy pass")
    scorer = detector._fitted()[1]
    assert isinstance(scorer, FusedScorer) and scorer.whole_pass
    assert not FusedScorer(scorer.vae, whole_pass=False).whole_pass
    assert not FusedScorer(scorer.vae, native=False).whole_pass


@needs_tail
@pytest.mark.parametrize("min_var", [0.01, 0.5], ids=["below FAST_MIN_VAR", "above"])
@pytest.mark.parametrize("batch", [1, 7, 128, 300, 1100])
def test_the_c_pass_scores_as_the_numpy_pass_bit_for_bit(batch: int, min_var: float) -> None:
    """Missing cells, a window with nothing observed (NaN), absurd values whose likelihood
    overflows (redone the exact way), and batches across the 512-window chunks."""
    vae = VAE(tiny_config(min_var=min_var))
    whole, numpy_pass = FusedScorer(vae), FusedScorer(vae, whole_pass=False)
    x = windows(vae.cfg, max(batch, 8), seed=batch)[:batch]
    x[0, 3] = np.nan
    if batch > 6:
        x[5, 2], x[6, 0] = 3.0e38, -1.0e20
    got = whole(x, detail=False).score
    np.testing.assert_array_equal(got, numpy_pass(x, detail=False).score)
    np.testing.assert_array_equal(got, whole(x).score)  # detail=True runs the NumPy pass
    if batch > 6:  # nothing observed: NaN; the absurd ones as the NumPy pass has them (checked above)
        assert np.isnan(got[2]) and np.isfinite(got[[0, 1, 3]]).all()


@needs_tail
def test_raw_windows_scaled_in_the_c_pass_score_as_scaled_ones(detector: VAEDetector, heldout_windows: np.ndarray) -> None:
    """VAEDetector.score hands raw windows to the C pass, which scales them as
    Scaler.transform does: in float64, clipped to float32 (inf becomes the largest value,
    not a missing one), NaN missing."""
    assert detector.scaler_ is not None
    scaler, scorer = detector._fitted()
    x = heldout_windows[:40].astype(np.float32)
    x[1, 3, 0], x[2, 5, 1], x[3, 0, 0], x[4, 7, 1] = np.nan, np.inf, -np.inf, 3.0e38
    got = detector.score(x, detail=False).score
    want = scorer(scaler.transform(x).reshape(len(x), -1), detail=False).score
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, detector.score(x).score)
    assert isinstance(scorer, FusedScorer)
    slow = FusedScorer(scorer.vae, whole_pass=False)
    np.testing.assert_array_equal(slow.scores(x.reshape(len(x), -1), detector._cells(scaler)), got)


@needs_tail
def test_the_c_pass_holds_no_gil_while_it_runs() -> None:
    """The main thread runs Python while a worker thread is inside one forward call."""
    assert TAIL is not None
    if not _openblas_loaded():
        pytest.skip("no OpenBLAS: no C pass")
    vae = VAE(tiny_config(window=60, encoder=(128, 64), latent=16))
    kernel = Kernel(vae, FusedScorer(vae).eps, chunk=512, tail=TAIL, whole_pass=True)
    x = windows(vae.cfg, 512, seed=5)
    args = (x, kernel._layers, len(kernel._net.enc), kernel._epsT, vae.cfg.min_var, kernel._forward_work(512),
            np.empty(512), np.empty(512, np.uint8))
    inside: list[float] = []

    def call() -> None:
        for _ in range(5):
            t0 = time.perf_counter()
            TAIL.forward(*args)
            inside.append(time.perf_counter() - t0)
            inside.append(t0)

    ticks: list[float] = []
    worker = threading.Thread(target=call)
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
    worker.join()
    spans = [(inside[i + 1], inside[i + 1] + inside[i]) for i in range(0, len(inside), 2)]
    # with the GIL held, no tick could fall in the middle half of a call
    during = [t for a, b in spans for t in ticks if a + (b - a) / 4 < t < b - (b - a) / 4]
    assert len(during) > 100


@needs_tail
def test_the_c_pass_refuses_what_it_cannot_read() -> None:
    assert TAIL is not None
    if not _openblas_loaded():
        pytest.skip("no OpenBLAS: no C pass")
    vae = VAE(tiny_config())
    kernel = Kernel(vae, FusedScorer(vae).eps, chunk=8, tail=TAIL, whole_pass=True)
    d = vae.cfg.input_dim
    x, work = np.zeros((8, d), np.float32), kernel._forward_work(8)
    layers, n_enc, eps = kernel._layers, len(kernel._net.enc), kernel._epsT
    score, bad = np.empty(8), np.empty(8, np.uint8)
    TAIL.forward(x, layers, n_enc, eps, 0.5, work, score, bad)
    with pytest.raises(ValueError, match="chain"):
        TAIL.forward(np.zeros((8, d + 1), np.float32), layers, n_enc, eps, 0.5, work, score, bad)
    with pytest.raises(ValueError, match="chain"):
        TAIL.forward(x, layers[::-1], n_enc, eps, 0.5, work, score, bad)
    with pytest.raises(ValueError, match="need"):
        TAIL.forward(x, layers, n_enc, eps, 0.5, work[:100], score, bad)
    with pytest.raises(ValueError, match="per window"):
        TAIL.forward(x, layers, n_enc, eps, 0.5, work, score[:7], bad)
    with pytest.raises(ValueError, match="together"):
        TAIL.forward(x, layers, n_enc, eps, 0.5, work, score, bad, np.zeros(d))
    with pytest.raises(ValueError, match="per cell"):
        TAIL.forward(x, layers, n_enc, eps, 0.5, work, score, bad, np.zeros(d - 1), np.ones(d - 1))
    with pytest.raises(ValueError, match="min_var"):
        TAIL.forward(x, layers, n_enc, eps, 0.0, work, score, bad)
    with pytest.raises(TypeError, match="float32"):
        TAIL.forward(x.astype(np.float64), layers, n_enc, eps, 0.5, work, score, bad)
