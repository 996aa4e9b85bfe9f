"""The fused scorer's computation (:class:`Kernel`): the network's weights laid out for a
CPU, per-thread work arrays, the NumPy pass (with the C tail or NumPy's) and the whole
scores-only pass in C (_tail.c's ``forward``). :class:`~streamvae.model.fused.FusedScorer`
is its public face and says why it is laid out this way.
"""

from __future__ import annotations

import math
import threading
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from streamvae.core.scaler import standardise
from streamvae.model.score import ALIGN, aligned
from streamvae.model.vae import LOG_2PI, VAE, ScoreOutput

F32 = npt.NDArray[np.float32]
REDO = 64  # windows per exact-form pass after the C pass (absurd windows; rare)
FAST_MIN_VAR = 1.0 / 16  # the fast variance form is exact to ~2e-7 / min_var (relative); below this, the exact form


# A scaler as the C pass takes it: per cell of a flattened window, mean and scale
# (float64, (W*F,)); the window is scaled as (x - mean) / scale in float64, clipped to
# float32's range (core/scaler.py's standardise).
Cells = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]


def _aligned(x: F32) -> F32:
    """``x`` with copies of its last window appended, up to a multiple of ALIGN windows.

    OpenBLAS's sgemm takes a column (a window, here) through other code (edge and
    small-matrix kernels) depending on how many columns there are and where the column
    sits, and the last float32 bit of its result moves with it. A window's score then
    depended on the batch it came in: one scored again after a restart, in a batch of
    another size, could come out one ulp away, and its repeated alert differed from the
    first (tests/integration/test_proof.py caught it). In whole blocks of 16 columns, every
    window goes through the same kernel, and its score, shares and mse are the same bits
    in any batch: measured with NumPy's OpenBLAS 0.3.31 (SkylakeX kernels; blocks of 8
    were not enough), and tests/unit/model/test_score_equivalence.py checks it wherever
    the suite runs. The cost is at small batches: scoring 1 window costs as much as 16
    (~45 against 11 us at the proof's small model, 16 windows of 4 features, L = 10;
    0.40 against 0.12 ms at scripts/bench_model.py's, whose batch-1 row shows it).
    """
    extra = aligned(len(x)) - len(x)
    return np.concatenate([x, np.repeat(x[-1:], extra, axis=0)]) if extra else x


def _augment(kernel: npt.NDArray[Any], bias: npt.NDArray[Any]) -> F32:
    """(out, in + 1): a Dense layer's kernel transposed, with its bias as the last column.

    The fused scorer keeps activations as columns (one per window, or per sample of z)
    that end in a row of ones, so ``W^T h + b`` is one matmul and no bias pass."""
    return np.ascontiguousarray(np.concatenate([kernel, bias[None, :]]).T, dtype=np.float32)


class _Net:
    """The VAE's weights in the fused layout, copied once when the scorer is built.

    ``out`` stacks the decoder's mean head over its variance head (one matmul for both);
    with ``fold_min_var`` the variance head's bias also carries ``+ min_var`` (see
    :meth:`_Kernel._variance`)."""

    def __init__(self, vae: VAE, fold_min_var: bool) -> None:
        cfg = vae.cfg
        w = vae.get_weights()
        self.enc = [_augment(w[f"enc_{i}.kernel"], w[f"enc_{i}.bias"]) for i in range(len(cfg.encoder))]
        self.head = np.concatenate([_augment(w["z_mean.kernel"], w["z_mean.bias"]), _augment(w["z_logvar.kernel"], w["z_logvar.bias"])])
        self.dec = [_augment(w[f"dec_{i}.kernel"], w[f"dec_{i}.bias"]) for i in range(len(cfg.decoder_units))]
        shift = np.float32(cfg.min_var if fold_min_var else 0.0)
        if cfg.decoder_var == "z":
            var = _augment(w["x_var_raw.kernel"], w["x_var_raw.bias"] + shift)
        else:  # one learned value per dimension: a zero kernel and the value as the bias
            var = _augment(np.zeros_like(w["x_mean.kernel"]), w["x_var_raw.value"] + shift)
        self.out = np.concatenate([_augment(w["x_mean.kernel"], w["x_mean.bias"]), var])


class _Work:
    """One thread's work arrays, allocated for ``chunk`` windows. A pass over ``b``
    windows takes the first ``rows * columns`` elements of each as a C-contiguous
    (rows, columns) array, so every size up to ``chunk`` reuses the same memory."""

    def __init__(self, net: _Net, d: int, latent: int, n_samples: int, chunk: int) -> None:
        self.chunk = chunk
        n = chunk * n_samples  # decoder columns
        sizes = {"inp": (2 * d + 1) * chunk, "z": (latent + 1) * n, "out": 2 * d * n, "sq": d * n, "prod": (d + 1) // 2 * n}
        sizes.update({f"enc{i}": (w.shape[0] + 1) * chunk for i, w in enumerate(net.enc)})
        sizes.update({f"dec{i}": (w.shape[0] + 1) * n for i, w in enumerate(net.dec)})
        self.flat = {k: np.empty(v, np.float32) for k, v in sizes.items()}
        self.total = np.empty(n, np.float64)  # the C tail's per-column sums

    def view(self, name: str, rows: int, cols: int) -> F32:
        return self.flat[name][: rows * cols].reshape(rows, cols)


def _dense_relu(w: F32, h: F32, out: F32) -> F32:
    """``out[:-1] = relu(w @ h)``, ``out[-1] = 1``: the next layer's input, bias row included."""
    act = out[:-1]
    np.matmul(w, h, out=act)
    np.maximum(act, 0.0, out=act)
    out[-1] = 1.0
    return out


class Kernel:
    """The fused computation for one network: weights, eps and per-thread work arrays.
    Every pass covers a multiple of ALIGN windows (see _aligned); ``chunk`` is rounded up
    to one."""

    def __init__(self, vae: VAE, eps: np.ndarray, chunk: int, tail: ModuleType | None, whole_pass: bool) -> None:
        cfg = self.cfg = vae.cfg
        self.n_samples = len(eps)
        self.chunk = aligned(max(chunk, 1))
        f32 = np.finfo(np.float32)
        # The C tail takes min_var as a normal float32 (it reads each variance's exponent bits).
        self.tail = tail if f32.tiny <= cfg.min_var <= f32.max else None
        # The NumPy fast form needs + min_var in the variance head's bias; the C tail and
        # the exact form take the head as it is.
        self.folded = self.tail is None and cfg.min_var >= FAST_MIN_VAR
        self.forward = self.tail is not None and whole_pass  # scores-only passes in one C call (needs sgemm bound)
        self.exact = self.tail is None and not self.folded  # the exact NumPy form from the first pass
        self._net = _Net(vae, fold_min_var=self.folded)
        self._epsT = np.ascontiguousarray(eps.T, dtype=np.float32)  # (latent, L)
        self._exp_min_var = np.float32(math.exp(cfg.min_var))
        self._ones = np.ones(cfg.input_dim, np.float32)
        self._local = threading.local()
        net = self._net
        self._layers = (*net.enc, net.head, *net.dec, net.out)

    def _capacity(self, b: int) -> int:
        """Windows a thread's work arrays are allocated for, to pass over ``b``: the next
        power of two, at most ``chunk``. Sized by need, not at ``chunk`` at once: the
        pipeline's worker runs the C pass and redoes only absurd windows the exact way,
        REDO at a time, in a few MB, not ~22 (scripts/bench_memory.py compares a feed
        with such windows against one without)."""
        return min(self.chunk, 1 << max(b - 1, 0).bit_length())

    def _work(self, b: int) -> _Work:
        """This thread's work arrays for the NumPy pass over ``b`` windows (at most ``chunk``)."""
        work: _Work | None = getattr(self._local, "work", None)
        if work is None or work.chunk < b:
            cfg = self.cfg
            work = self._local.work = _Work(self._net, cfg.input_dim, cfg.latent, self.n_samples, self._capacity(b))
        return work

    def _forward_work(self, b: int) -> F32:
        """This thread's work array for :meth:`_forward` over ``b`` windows (at most ``chunk``)."""
        held: tuple[int, F32] | None = getattr(self._local, "forward", None)
        if held is None or held[0] < b:
            assert self.tail is not None
            cap = self._capacity(b)
            size = self.tail.forward_work(self._layers, len(self._net.enc), self._epsT, self.cfg.input_dim, cap)
            held = self._local.forward = (cap, np.empty(size, np.float32))
        return held[1]

    def _forward(self, x: F32, score: npt.NDArray[np.float64], cells: Cells | None) -> None:
        """Scores of at most ``chunk`` windows in one C call (_tail.c's forward), scaling
        them first with ``cells``; the windows whose likelihood came out not finite go
        again through the exact form."""
        assert self.tail is not None
        b, x = len(x), _aligned(x)
        out = score if len(x) == b else np.empty(len(x))
        bad = np.empty(len(x), np.uint8)
        mean, scale = cells if cells is not None else (None, None)
        self.tail.forward(x, self._layers, len(self._net.enc), self._epsT, self.cfg.min_var, self._forward_work(len(x)),
                          out, bad, mean, scale)
        if out is not score:
            score[:] = out[:b]
        # in parts of REDO windows: the thread's NumPy work arrays stay small (see _capacity)
        redo = np.flatnonzero(bad[:b])
        for lo in range(0, len(redo), REDO):
            part = redo[lo : lo + REDO]
            again = np.empty(len(part))
            xr = x[part] if cells is None else standardise(x[part], *cells)
            with np.errstate(all="ignore"):
                self._chunk(xr, True, again, None, None)
            score[part] = again

    def scores(self, x: np.ndarray, cells: Cells | None = None) -> npt.NDArray[np.float64]:
        """Scores alone; ``cells``: x is raw, to be scaled per cell first (see :data:`Cells`)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.forward:
            return self.score(x if cells is None else standardise(x, *cells), detail=False).score
        score = np.empty(len(x))
        for lo in range(0, len(x), self.chunk):
            self._forward(x[lo : lo + self.chunk], score[lo : lo + self.chunk], cells)
        return score

    def score(self, x: np.ndarray, detail: bool) -> ScoreOutput:
        x = np.ascontiguousarray(x, dtype=np.float32)
        b, f = len(x), self.cfg.n_features
        if self.forward and not detail:
            return ScoreOutput(self.scores(x), None, None)
        score = np.empty(b)
        shares = np.empty((b, f), np.float32) if detail else None
        mse = np.empty(b) if detail else None
        with np.errstate(all="ignore"):  # overflow is expected in the fast form and redone exactly
            for lo in range(0, b, self.chunk):
                hi = min(lo + self.chunk, b)
                self._chunk(x[lo:hi], self.exact, score[lo:hi], None if shares is None else shares[lo:hi],
                            None if mse is None else mse[lo:hi])
        return ScoreOutput(score, shares, mse)

    def _chunk(self, x: F32, exact: bool, score: npt.NDArray[np.float64], shares: F32 | None,
               mse: npt.NDArray[np.float64] | None) -> None:
        """Fill ``score`` (and ``shares``, ``mse``) for at most ``chunk`` windows.

        ``exact``: the NumPy tail's exact form, which the windows that the fast one (C or
        NumPy) left non-finite go through again."""
        if len(x) % ALIGN:  # in whole blocks (see _aligned), into outputs of that size
            b, xa = len(x), _aligned(x)
            s = np.empty(len(xa))
            sh = None if shares is None else np.empty((len(xa), shares.shape[1]), np.float32)
            m = None if mse is None else np.empty(len(xa))
            self._chunk(xa, exact, s, sh, m)
            score[:] = s[:b]
            if shares is not None and sh is not None:
                shares[:] = sh[:b]
            if mse is not None and m is not None:
                mse[:] = m[:b]
            return
        cfg = self.cfg
        L, D, F = self.n_samples, cfg.input_dim, cfg.n_features
        work = self._work(len(x))
        x0T, maskf, n_obs, muT, sigT = self._encode(x, work)
        detailed = shares is not None and mse is not None
        lp, sq = self._log_px(x0T, maskf, n_obs, muT, sigT, work, exact, detailed)  # (L, b) float64, (D, L, b) d^2/var
        top = lp.max(axis=0)
        top = np.where(np.isfinite(top), top, 0.0)
        lse = np.log(np.exp(lp - top).sum(axis=0)) + top
        # Rescaled to the full window's dimension count (see GraphScorer._score_of). Rounded to
        # float32, as the graph returns it: the likelihoods are float32, and digits beyond
        # would be rounding noise that moves with the batch (BLAS blocks by shape and position).
        score[:] = np.where(n_obs > 0, -(lse - math.log(L)) * D / np.maximum(n_obs, 1.0), np.nan).astype(np.float32)
        if shares is not None and mse is not None and sq is not None:
            # As GraphScorer._score_graph: the cells' 0.5 (x - mean)^2 / var, weighted by softmax_l(log p(x|z_l)).
            w = np.exp(lp - top - (lse - top)).astype(np.float32)  # (L, b)
            cell = np.einsum("dlb,lb->db", sq, w) * np.float32(0.5)
            per_feature = cell.reshape(D // F, F, -1).sum(axis=0)  # (F, b)
            shares[:] = (per_feature / np.maximum(per_feature.sum(axis=0), np.float32(1e-12))).T
            m0 = self._decode_mean(muT, work)  # the ablation: decoder mean at the posterior mean
            err = np.square(x0T - m0)
            if maskf is not None:
                err *= maskf
            mse[:] = (err.sum(axis=0, dtype=np.float64) / np.maximum(n_obs, 1.0)).astype(np.float32)
        bad = ~np.isfinite(lp).all(axis=0)
        if not exact and bad.any():  # redone the exact way (the work arrays are free again)
            redo = np.flatnonzero(bad)
            s2 = np.empty(len(redo))
            sh2 = None if shares is None else np.empty((len(redo), F), np.float32)
            mse2 = None if mse is None else np.empty(len(redo))
            self._chunk(x[redo], True, s2, sh2, mse2)
            score[redo] = s2
            if shares is not None and sh2 is not None:
                shares[redo] = sh2
            if mse is not None and mse2 is not None:
                mse[redo] = mse2

    def _encode(self, x: F32, work: _Work) -> tuple[F32, F32 | None, npt.NDArray[np.float64], F32, F32]:
        """x0 (D, b) with missing cells 0, the float mask (None when nothing is missing),
        the observed-cell counts, and q(z|x)'s mean and sd (latent, b)."""
        D, K = self.cfg.input_dim, self.cfg.latent
        b = len(x)
        inp = work.view("inp", 2 * D + 1, b)  # [x0; mask; 1]
        x0T = inp[:D]
        np.copyto(x0T, x.T)
        mask = np.isfinite(x0T)
        maskf: F32 | None = None
        if mask.all():
            inp[D:] = 1.0
            n_obs = np.full(b, float(D))
        else:
            np.copyto(x0T, 0.0, where=~mask)
            maskf = inp[D : 2 * D]
            np.copyto(maskf, mask)
            inp[2 * D] = 1.0
            n_obs = mask.sum(axis=0, dtype=np.float64)
        h = inp
        for i, w in enumerate(self._net.enc):
            h = _dense_relu(w, h, work.view(f"enc{i}", w.shape[0] + 1, b))
        head = self._net.head @ h  # (2 latent, b)
        # sd in float64, rounded once: NumPy's float32 exp is not correctly rounded and
        # libm's is, so the C pass (_tail.c's forward) draws bit-identical z.
        sd = np.exp(np.float32(0.5) * head[K:], dtype=np.float64).astype(np.float32)
        return x0T, maskf, n_obs, head[:K], sd

    def _decode(self, z: F32, work: _Work, rows: int) -> F32:
        """The first ``rows`` rows of [mean; var head] for latent columns ``z`` (latent + 1, n)."""
        g = z
        n = z.shape[1]
        for i, w in enumerate(self._net.dec):
            g = _dense_relu(w, g, work.view(f"dec{i}", w.shape[0] + 1, n))
        o = work.view("out", rows, n)
        np.matmul(self._net.out[:rows], g, out=o)
        return o

    def _decode_mean(self, muT: F32, work: _Work) -> F32:
        K = self.cfg.latent
        z = work.view("z", K + 1, muT.shape[1])
        z[:K] = muT
        z[K] = 1.0
        return self._decode(z, work, self.cfg.input_dim)

    def _log_px(self, x0T: F32, maskf: F32 | None, n_obs: npt.NDArray[np.float64], muT: F32, sigT: F32,
                work: _Work, exact: bool, detail: bool) -> tuple[npt.NDArray[np.float64], F32 | None]:
        """log p(x_obs | z_l), (L, b), and the cells' (x - mean)^2 / var, (D, L, b) (the C
        tail writes them only for ``detail``). The C tail unless ``exact``.

        Decoder columns are sample-major: column l * b + j is sample l of window j."""
        cfg = self.cfg
        L, D, K = self.n_samples, cfg.input_dim, cfg.latent
        b = muT.shape[1]
        n = L * b
        z = work.view("z", K + 1, n)
        z3 = z[:K].reshape(K, L, b)
        np.multiply(sigT[:, None, :], self._epsT[:, :, None], out=z3)
        z3 += muT[:, None, :]
        z[K] = 1.0
        o = self._decode(z, work, 2 * D)
        sq = work.view("sq", D, n)
        if self.tail is not None and not exact:  # the same computation, each cell read once (_tail.c)
            total: npt.NDArray[np.floating[Any]] = work.total[:n]
            self.tail.nll(o, x0T, maskf, total, sq if detail else None, cfg.min_var)
        else:
            total = self._numpy_tail(o, x0T, maskf, sq, work, exact)
        lp = -0.5 * (total.reshape(L, b) + LOG_2PI * n_obs)  # float64, a float32 total too
        return lp, sq.reshape(D, L, b) if detail else None

    def _numpy_tail(self, o: F32, x0T: F32, maskf: F32 | None, sq: F32, work: _Work, exact: bool) -> F32:
        """sum_d (x - mean)^2 / var + log var per decoder column, (n,), and the cells'
        (x - mean)^2 / var into ``sq``: what _tail.c computes, in ~10 NumPy passes.
        Overwrites the decoder output ``o``."""
        D, b = x0T.shape
        L = o.shape[1] // b
        diff, var = o[:D], self._variance(o[D:], exact)
        diff3, var3 = diff.reshape(D, L, b), var.reshape(D, L, b)
        np.subtract(diff3, x0T[:, None, :], out=diff3)
        if maskf is not None:  # a missing cell: difference 0 and variance 1, so it adds 0 and log 1
            diff3 *= maskf[:, None, :]
            var3 *= maskf[:, None, :]
            var3 += (1.0 - maskf)[:, None, :]
        np.square(diff, out=sq)  # squared first, as the graph does: the same overflow to inf
        sq /= var
        total: F32 = self._ones @ sq  # (n,) sum_d (x - mean)^2 / var
        total += self._sum_log(var, work, exact)
        return total

    def _variance(self, r: F32, exact: bool) -> F32:
        """min_var + softplus(raw), in place over the variance head's rows ``r``.

        Fast: r holds raw + m (folded into the bias), and m + log(1 + e^raw) = log(e^m +
        e^(raw + m)): an exp, an add and a log. Its error is that of e^m + e^(raw + m) in
        float32, ~2e-7 absolute, so ~2e-7 / m relative: hence FAST_MIN_VAR. An overflow
        (raw + m > 88) makes the window's likelihood infinite, and it is redone exactly."""
        m = self.cfg.min_var
        if exact:
            if self.folded:
                r -= np.float32(m)  # the bias carries + m
            np.logaddexp(np.float32(0.0), r, out=r)
            r += np.float32(m)
            return r
        np.exp(r, out=r)
        r += self._exp_min_var
        np.log(r, out=r)
        return r

    def _sum_log(self, var: F32, work: _Work, exact: bool) -> F32:
        """sum_d log var_d per column, (n,). Fast: log of products of up to 8 variances
        (three halvings), one log per 8 cells; exact: one log per cell (in place)."""
        if exact:
            np.log(var, out=var)
            return self._ones @ var
        p, rows = var, var.shape[0]
        for _ in range(3):
            if rows == 1:
                break
            half, keep = rows // 2, rows - rows // 2  # rows half..keep-1 (the middle one, if odd) stay
            dst = work.view("prod", keep, var.shape[1]) if p is var else p[:keep]
            np.multiply(p[:half], p[keep:rows], out=dst[:half])
            if p is var and keep > half:
                dst[half] = var[half]
            p, rows = dst, keep
        np.log(p, out=p)
        return self._ones[:rows] @ p

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decoder mean at z = E[q(z|x)], in scaled units (B, W*F)."""
        x = np.asarray(x, dtype=np.float32)
        out = np.empty(x.shape, np.float32)
        work = self._work(min(len(x), self.chunk))
        with np.errstate(all="ignore"):
            for lo in range(0, len(x), self.chunk):
                _, _, _, muT, _ = self._encode(x[lo : lo + self.chunk], work)
                out[lo : lo + self.chunk] = self._decode_mean(muT, work).T
        return out
