/* The fused scorer's elementwise tail: per decoder column, the Gaussian negative
 * log-likelihood's data part, sum_d (x_d - mean_d)^2 / var_d + log var_d, with
 * var = min_var + softplus(raw).
 *
 * Why C: in NumPy these are ~10 passes over the (D, n) cells, with NumPy's exp and log:
 * ~3.3 ms of the ~8.3 ms a batch of 256 windows takes (the matmuls ~5.0 ms). Here each
 * cell is read once, e^x and log are short branch-free float32 polynomials (Cephes')
 * that gcc vectorises along the columns, and sum_d log var_d takes one log per 8 cells:
 * ~0.9 ms (scripts/bench_model.py's network, AMD EPYC, AVX2).
 *
 * Semantics are those of streamvae/model/fused.py's NumPy tail in its exact form:
 * softplus as max(r, 0) + log1p(e^-|r|), which cannot overflow; a missing cell (mask 0)
 * has difference 0 and variance 1, so it adds 0 and log 1; the difference is squared
 * before the division (an overflow gives inf, as in NumPy). A column with a variance of
 * inf or NaN gets a NaN total, and the caller computes that window again in NumPy.
 * No -ffast-math: it would let the compiler assume that there is no NaN to see.
 *
 * Layout (all C-contiguous): o (2D, n) float32, mean rows then raw-variance rows; the
 * n = L * b columns are sample-major (column l * b + j is sample l of window j); x0 and
 * mask (D, b) float32; total (n,) float64, written; sq (D, n) float32, optional, gets
 * each cell's (x - mean)^2 / var for the attribution.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

INLINE float as_float(int32_t i) { float f; memcpy(&f, &i, sizeof f); return f; }
INLINE int32_t as_int(float f) { int32_t i; memcpy(&i, &f, sizeof i); return i; }

/* e^x for x <= 0 (Cephes expf). Below -87 the argument is held at -87 (e^-87 = 1.6e-38,
 * still a normal float): softplus then adds ~1e-38 to min_var, which float32 cannot see.
 * The polynomials here go by Estrin's scheme, not Horner's: a shorter chain of dependent
 * multiply-adds, so the CPU overlaps more columns. */
INLINE float exp_nonpos(float x) {
    x = x >= -87.0f ? x : -87.0f; /* NaN too: its result is replaced, and NaN -> int would be undefined */
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding and taking it away rounds to an integer */
    float n = (x * 1.44269504088896341f + magic) - magic;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float r2 = r * r, r4 = r2 * r2;
    float p = (5.0000001201e-1f + 1.6666665459e-1f * r) + r2 * (4.1665795894e-2f + 8.3334519073e-3f * r) +
              r4 * (1.3981999507e-3f + 1.9875691500e-4f * r);
    float y = p * r2 + r + 1.0f;
    return y * as_float(((int32_t)n + 127) << 23);
}

/* log v for a positive, finite, normal v (Cephes logf). */
INLINE float log_normal(float v) {
    int32_t i = as_int(v);
    float e = (float)((i >> 23) - 126);
    float m = as_float((i & 0x007fffff) | 0x3f000000); /* v = m * 2^e, m in [0.5, 1) */
    int below = m < 0.707106781186547524f;
    e = below ? e - 1.0f : e;
    float x = (below ? m + m : m) - 1.0f; /* in [sqrt(1/2) - 1, sqrt(2) - 1) */
    float z = x * x, x4 = z * z, x8 = x4 * x4;
    float y = ((3.3333331174e-1f - 2.4999993993e-1f * x) + z * (2.0000714765e-1f - 1.6668057665e-1f * x)) +
              x4 * ((1.4249322787e-1f - 1.2420140846e-1f * x) + z * (1.1676998740e-1f - 1.1514610310e-1f * x)) +
              x8 * 7.0376836292e-2f;
    y = y * x * z;
    y = y + e * -2.12194440e-4f;
    y = y - 0.5f * z;
    return (x + y) + e * 0.693359375f;
}

/* log1p(u) for u in [0, 1] = 2 atanh(s), s = u / (2 + u) in [0, 1/3]: the series
 * 2 (s + s^3/3 + ... + s^13/13), whose first left-out term is under 2e-8 of the sum. No
 * exponent to take apart, one division, and a polynomial in s^2 <= 1/9. */
INLINE float log1p_unit(float u) {
    float s = u / (2.0f + u);
    float t = s * s, t2 = t * t, t4 = t2 * t2;
    float p = ((1.0f / 3 + t * (1.0f / 5)) + t2 * (1.0f / 7 + t * (1.0f / 9))) +
              t4 * ((1.0f / 11 + t * (1.0f / 13)));
    return 2.0f * s + (2.0f * s) * t * p;
}

enum { GROUP = 8 }; /* variances per column multiplied before one log: their mantissas, each in [1, 2), stay below 2^8 */

/* What each column carries from row to row, over the current GROUP rows: sums, the sum
 * of its (x - mean)^2 / var and of its variances' exponents (times log 2), and the
 * product of its variances' mantissas; and one row's variances. */
typedef struct {
    float *sums, *mant, *var;
} columns;

/* The variances of one row of n columns, into var. Two passes (e^-|r|, then the rest),
 * and the cells in a third (cells()): in one pass, the chain of dependent operations per
 * column is too long for the CPU to overlap many columns (it took ~1.4x as long). */
INLINE void variances(const float *restrict raw, float *restrict var, Py_ssize_t n, float min_var) {
    for (Py_ssize_t c = 0; c < n; c++)
        var[c] = exp_nonpos(-fabsf(raw[c]));
    for (Py_ssize_t c = 0; c < n; c++) {
        float r = raw[c];
        var[c] = min_var + (r != r ? r : (r > 0.0f ? r : 0.0f) + log1p_unit(var[c]));
    }
}

/* One row's cells of one sample (b columns from column c): add them to the group sums. */
INLINE void cells(const float *restrict mean, const float *restrict x, const float *restrict mask,
                  float *restrict sq, columns g, Py_ssize_t c, Py_ssize_t b) {
    const float *restrict v = g.var + c;
    float *restrict sums = g.sums + c, *restrict mant = g.mant + c;
    for (Py_ssize_t j = 0; j < b; j++) {
        float var = v[j];
        float diff = mean[j] - x[j];
        if (mask) { /* the same rule, in the same order, as the NumPy tail */
            diff *= mask[j];
            var = var * mask[j] + (1.0f - mask[j]);
        }
        float q = diff * diff / var; /* squared first, as NumPy does: the same overflow to inf */
        if (sq)
            sq[j] = q;
        /* log var = log(1.f) + e log 2, var = 1.f * 2^e (a normal float, as min_var >= FLT_MIN,
         * checked). var - var is NaN where var is inf or NaN: the column's total is then
         * NaN, and the caller computes that window again the exact NumPy way. */
        int32_t bits = as_int(var);
        mant[j] *= as_float((bits & 0x007fffff) | 0x3f800000);
        sums[j] += q + (var - var) + (float)((bits >> 23) - 127) * 0.693147180559945309f;
    }
}

/* total += the group's sums and the log of its mantissa product; then a new group. */
INLINE void flush(double *restrict total, columns g, Py_ssize_t n) {
    float *restrict sums = g.sums, *restrict mant = g.mant;
    for (Py_ssize_t c = 0; c < n; c++) {
        total[c] += (double)sums[c] + (double)log_normal(mant[c]);
        sums[c] = 0.0f;
        mant[c] = 1.0f;
    }
}

/* The four variants (mask or not, sq or not) are spelled out so that each inner loop
 * is compiled without a test per cell. */
INLINE void tail(const float *o, const float *x0, const float *mask, double *total, float *sq, columns g,
                 Py_ssize_t D, Py_ssize_t L, Py_ssize_t b, float min_var) {
    Py_ssize_t n = L * b;
    for (Py_ssize_t c = 0; c < n; c++) {
        total[c] = 0.0;
        g.sums[c] = 0.0f;
        g.mant[c] = 1.0f;
    }
    for (Py_ssize_t d = 0; d < D; d++) {
        const float *m = o + d * n, *x = x0 + d * b, *k = mask ? mask + d * b : NULL;
        float *s = sq ? sq + d * n : NULL;
        variances(o + (D + d) * n, g.var, n, min_var);
        for (Py_ssize_t c = 0; c < n; c += b) {
            if (mask && sq)
                cells(m + c, x, k, s + c, g, c, b);
            else if (mask)
                cells(m + c, x, k, NULL, g, c, b);
            else if (sq)
                cells(m + c, x, NULL, s + c, g, c, b);
            else
                cells(m + c, x, NULL, NULL, g, c, b);
        }
        if (d % GROUP == GROUP - 1 || d == D - 1)
            flush(total, g, n);
    }
}

/* One build for every x86-64 CPU: the kernel is compiled twice, for AVX2 + FMA and for
 * the baseline, and the module picks one when it loads, so a wheel is not tied to the
 * machine that built it. (gcc's target_clones("arch=haswell") would dispatch on the CPU's
 * model name, not its features, and give an AMD EPYC the baseline.) */
typedef void kernel_fn(const float *, const float *, const float *, double *, float *, columns, Py_ssize_t,
                       Py_ssize_t, Py_ssize_t, float);

static void tail_base(const float *o, const float *x0, const float *mask, double *total, float *sq, columns g,
                      Py_ssize_t D, Py_ssize_t L, Py_ssize_t b, float min_var) {
    tail(o, x0, mask, total, sq, g, D, L, b, min_var);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(NO_AVX2)
#define HAVE_AVX2_BUILD 1
__attribute__((target("avx2,fma"))) static void tail_avx2(const float *o, const float *x0, const float *mask,
                                                           double *total, float *sq, columns g, Py_ssize_t D,
                                                           Py_ssize_t L, Py_ssize_t b, float min_var) {
    tail(o, x0, mask, total, sq, g, D, L, b, min_var);
}
#endif

static kernel_fn *kernel = tail_base;
static const char *kernel_name = "baseline";

/* -- The whole forward pass, for the pipeline's scores-only call -------------------
 *
 * fused.py's _Kernel._chunk (detail=False) in one call that holds no GIL from the first
 * matmul to the last score. In NumPy the pass is ~40 calls; each that lets the GIL go
 * must win it back, and beside the pipeline's main thread (decoding, windows) each win
 * waited: the offline pipeline's worker took 38.7 us of wall time per window for 32.7 us
 * of CPU. The matmuls are NumPy's own OpenBLAS sgemm, found by fused.py through
 * threadpoolctl and handed over once (set_sgemm); without it the NumPy pass runs.
 *
 * Steps and layout as in fused.py: activations are columns (one per window, or per
 * sample of z, sample-major) ending in a row of ones, each layer's kernel transposed
 * with its bias as the last column. */

enum { ROW_MAJOR = 101, NO_TRANS = 111 };
typedef void sgemm64_fn(int, int, int, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *,
                        int64_t, float, float *, int64_t);
typedef void sgemm32_fn(int, int, int, int32_t, int32_t, int32_t, float, const float *, int32_t, const float *,
                        int32_t, float, float *, int32_t);
static void *sgemm_ptr = NULL;
static int sgemm_ilp64 = 0;

/* c (m, n) = a (m, k) @ b (k, n), all row-major and contiguous. */
static void matmul(const float *a, const float *b, float *c, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k) {
    if (sgemm_ilp64)
        ((sgemm64_fn *)sgemm_ptr)(ROW_MAJOR, NO_TRANS, NO_TRANS, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
    else
        ((sgemm32_fn *)sgemm_ptr)(ROW_MAJOR, NO_TRANS, NO_TRANS, (int32_t)m, (int32_t)n, (int32_t)k, 1.0f, a,
                                  (int32_t)k, b, (int32_t)n, 0.0f, c, (int32_t)n);
}

/* out[:-1] = relu(w @ h) for w (rows, cols), h (cols, n); out[-1] = 1. */
static void dense_relu(const float *w, Py_ssize_t rows, Py_ssize_t cols, const float *h, float *out, Py_ssize_t n) {
    matmul(w, h, out, rows, n, cols);
    Py_ssize_t cells = rows * n;
    for (Py_ssize_t i = 0; i < cells; i++)
        out[i] = out[i] < 0.0f ? 0.0f : out[i]; /* a NaN stays NaN, as in np.maximum */
    for (Py_ssize_t j = 0; j < n; j++)
        out[cells + j] = 1.0f;
}

typedef struct {
    const float *w;
    Py_ssize_t rows, cols;
} layer;

enum { MAX_LAYERS = 16 };

typedef struct {
    layer enc[MAX_LAYERS], dec[MAX_LAYERS], head, out;
    int n_enc, n_dec;
    const float *eps; /* (K, L) */
    Py_ssize_t D, K, L;
    float min_var;
} net;

/* One sample's z row: mean + sd * eps, the product rounded before the sum as in NumPy's
 * two passes (no fused multiply-add), so both paths draw the same z. */
__attribute__((optimize("fp-contract=off"))) static void sample_z(float *restrict z, const float *restrict mean,
                                                                  const float *restrict sd, float eps, Py_ssize_t b) {
    for (Py_ssize_t j = 0; j < b; j++)
        z[j] = sd[j] * eps + mean[j];
}

/* Floats of work a pass over b windows takes (each piece rounded up to 16 floats, 64 bytes). */
static Py_ssize_t round16(Py_ssize_t v) { return (v + 15) / 16 * 16; }
static Py_ssize_t work_floats(const net *m, Py_ssize_t b) {
    Py_ssize_t n = m->L * b, total = round16((2 * m->D + 1) * b) + round16(2 * m->K * b) + round16(2 * b);
    for (int i = 0; i < m->n_enc; i++)
        total += round16((m->enc[i].rows + 1) * b);
    total += round16((m->K + 1) * n);
    for (int i = 0; i < m->n_dec; i++)
        total += round16((m->dec[i].rows + 1) * n);
    total += round16(2 * m->D * n) + 3 * round16(n) + round16(2 * n);
    return total;
}

/* Scores of b windows x (b, D) into score; bad[j] = 1 where a sample's likelihood came out
 * not finite (the caller redoes those windows the exact NumPy way). */
static void forward_pass(const net *m, const float *x, const double *mean, const double *scale, Py_ssize_t b,
                         float *work, double *score, uint8_t *bad) {
    const Py_ssize_t D = m->D, K = m->K, L = m->L, n = L * b;
    float *p = work;
    float *inp = p; p += round16((2 * D + 1) * b);
    float *head = p; p += round16(2 * K * b);
    double *n_obs = (double *)p; p += round16(2 * b);
    /* [x0; mask; 1]: x transposed, a missing (non-finite) cell 0 with mask 0. With mean
     * and scale, x is raw and scaled first as core/scaler.py's Scaler.transform does: in
     * float64, clipped to float32's range (an infinite reading becomes the largest value,
     * not a missing one), rounded once. */
    int missing = 0;
    for (Py_ssize_t j = 0; j < b; j++)
        n_obs[j] = 0.0;
    for (Py_ssize_t d = 0; d < D; d++) {
        float *x0 = inp + d * b, *mk = inp + (D + d) * b;
        for (Py_ssize_t j = 0; j < b; j++) {
            float v = x[j * D + d];
            if (mean) {
                double z = ((double)v - mean[d]) / scale[d];
                v = (float)(z < -FLT_MAX ? -FLT_MAX : z > FLT_MAX ? FLT_MAX : z);
            }
            int ok = isfinite(v);
            x0[j] = ok ? v : 0.0f;
            mk[j] = ok ? 1.0f : 0.0f;
            n_obs[j] += ok;
            missing |= !ok;
        }
    }
    for (Py_ssize_t j = 0; j < b; j++)
        inp[2 * D * b + j] = 1.0f;
    const float *h = inp;
    for (int i = 0; i < m->n_enc; i++) {
        float *o = p; p += round16((m->enc[i].rows + 1) * b);
        dense_relu(m->enc[i].w, m->enc[i].rows, m->enc[i].cols, h, o, b);
        h = o;
    }
    matmul(m->head.w, h, head, 2 * K, b, m->head.cols);
    /* z = mean + sd * eps_l, sd = e^(logvar / 2) */
    float *z = p; p += round16((K + 1) * n);
    for (Py_ssize_t k = 0; k < K; k++) {
        float *sd = head + (K + k) * b;
        for (Py_ssize_t j = 0; j < b; j++)
            sd[j] = (float)exp((double)(0.5f * sd[j])); /* as fused.py: e^ in float64, rounded once */
        for (Py_ssize_t l = 0; l < L; l++)
            sample_z(z + k * n + l * b, head + k * b, sd, m->eps[k * L + l], b);
    }
    for (Py_ssize_t c = 0; c < n; c++)
        z[K * n + c] = 1.0f;
    const float *g = z;
    for (int i = 0; i < m->n_dec; i++) {
        float *o = p; p += round16((m->dec[i].rows + 1) * n);
        dense_relu(m->dec[i].w, m->dec[i].rows, m->dec[i].cols, g, o, n);
        g = o;
    }
    float *out = p; p += round16(2 * D * n);
    matmul(m->out.w, g, out, 2 * D, n, m->out.cols);
    columns cols = {p, p + round16(n), p + 2 * round16(n)};
    p += 3 * round16(n);
    double *total = (double *)p;
    kernel(out, inp, missing ? inp + D * b : NULL, total, NULL, cols, D, L, b, m->min_var);
    /* log p(x_obs | z_l) = -(total + log(2 pi) n_obs) / 2; the score is -log mean_l of its
     * exp, rescaled to the full window's D cells, rounded to float32 as the graph returns it */
    const double log_2pi = 1.8378770664093453, log_L = log((double)L);
    for (Py_ssize_t j = 0; j < b; j++) {
        double top = -INFINITY;
        int finite = 1, has_nan = 0;
        for (Py_ssize_t l = 0; l < L; l++) {
            double lp = -0.5 * (total[l * b + j] + log_2pi * n_obs[j]);
            finite &= isfinite(lp);
            has_nan |= isnan(lp);
            top = lp > top ? lp : top;
        }
        if (has_nan || !isfinite(top))
            top = 0.0;
        double sum = 0.0;
        for (Py_ssize_t l = 0; l < L; l++)
            sum += exp(-0.5 * (total[l * b + j] + log_2pi * n_obs[j]) - top);
        double lse = log(sum) + top;
        score[j] = n_obs[j] > 0 ? (double)(float)(-(lse - log_L) * (double)D / n_obs[j]) : NAN;
        bad[j] = !finite;
    }
}

/* -- Python binding: buffers in, checked for type, shape and contiguity ------------- */

static int get(PyObject *obj, Py_buffer *view, int writable, char type, int ndim, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    size_t len = strlen(f);
    int native = len == 1 || (len == 2 && (f[0] == '=' || f[0] == '@' || f[0] == (PY_LITTLE_ENDIAN ? '<' : '>')));
    if (!native || f[len - 1] != type || view->ndim != ndim) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous %d-D array of %s; got format %s with %d dims", name,
                     ndim, type == 'f' ? "float32" : type == 'd' ? "float64" : "uint8", f, view->ndim);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(nll_doc,
             "nll(o, x0, mask, total, sq, min_var, baseline=False)\n--\n\n"
             "Per decoder column, sum_d (x_d - mean_d)^2 / var_d + log var_d into total (n,) float64,\n"
             "var = min_var + softplus(raw). o (2D, n), x0 and mask (D, b) float32, mask None when\n"
             "nothing is missing; sq (D, n) float32 or None gets each cell's (x - mean)^2 / var.\n"
             "n must be a multiple of b (L samples per window, sample-major). A column with a\n"
             "variance of inf or NaN gets a NaN total: redo that window the exact NumPy way.\n"
             "baseline: run the baseline build even where the AVX2 one is picked (for tests).");

static PyObject *nll(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs) {
    PyObject *o_obj, *x_obj, *mask_obj, *total_obj, *sq_obj;
    float min_var;
    int baseline = 0;
    static char *keywords[] = {"o", "x0", "mask", "total", "sq", "min_var", "baseline", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOf|p:nll", keywords, &o_obj, &x_obj, &mask_obj, &total_obj,
                                     &sq_obj, &min_var, &baseline))
        return NULL;
    Py_buffer o, x, mask, total, sq;
    int has_mask = mask_obj != Py_None, has_sq = sq_obj != Py_None;
    PyObject *result = NULL;
    if (get(o_obj, &o, 0, 'f', 2, "o") < 0)
        return NULL;
    if (get(x_obj, &x, 0, 'f', 2, "x0") < 0)
        goto release_o;
    if (has_mask && get(mask_obj, &mask, 0, 'f', 2, "mask") < 0)
        goto release_x;
    if (get(total_obj, &total, 1, 'd', 1, "total") < 0)
        goto release_mask;
    if (has_sq && get(sq_obj, &sq, 1, 'f', 2, "sq") < 0)
        goto release_total;
    Py_ssize_t D = x.shape[0], b = x.shape[1], n = o.shape[1];
    if (o.shape[0] != 2 * D || b == 0 || n % b != 0 || total.shape[0] != n ||
        (has_mask && (mask.shape[0] != D || mask.shape[1] != b)) || (has_sq && (sq.shape[0] != D || sq.shape[1] != n))) {
        PyErr_SetString(PyExc_ValueError, "nll: shapes must be o (2D, L*b), x0 and mask (D, b), total (L*b,), sq (D, L*b)");
        goto release_sq;
    }
    if (!(min_var >= FLT_MIN && min_var <= FLT_MAX)) {
        PyErr_Format(PyExc_ValueError, "nll: min_var must be a normal float32; got %g", (double)min_var);
        goto release_sq;
    }
    float *scratch = PyMem_RawMalloc((size_t)n * 3 * sizeof(float));
    if (!scratch) {
        PyErr_NoMemory();
        goto release_sq;
    }
    columns g = {scratch, scratch + n, scratch + 2 * n};
    Py_BEGIN_ALLOW_THREADS
    (baseline ? tail_base : kernel)(o.buf, x.buf, has_mask ? mask.buf : NULL, total.buf, has_sq ? sq.buf : NULL, g, D, n / b, b, min_var);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
    result = Py_NewRef(Py_None);
release_sq:
    if (has_sq)
        PyBuffer_Release(&sq);
release_total:
    PyBuffer_Release(&total);
release_mask:
    if (has_mask)
        PyBuffer_Release(&mask);
release_x:
    PyBuffer_Release(&x);
release_o:
    PyBuffer_Release(&o);
    return result;
}

/* The network from Python: (layers, n_enc, eps, min_var), layers the enc kernels, the
 * head, the dec kernels and the output heads, each (out, in + 1) float32; eps (K, L). */
typedef struct {
    net m;
    Py_buffer views[2 * MAX_LAYERS + 3];
    int n_views;
} held_net;

static void release_net(held_net *h) {
    for (int i = 0; i < h->n_views; i++)
        PyBuffer_Release(&h->views[i]);
    h->n_views = 0;
}

static int hold_net(held_net *h, PyObject *layers, int n_enc, PyObject *eps_obj, float min_var, Py_ssize_t D) {
    h->n_views = 0;
    if (!PyTuple_Check(layers)) {
        PyErr_SetString(PyExc_TypeError, "forward: layers must be a tuple of float32 arrays");
        return -1;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(layers);
    int n_dec = (int)count - n_enc - 2;
    if (n_enc < 0 || n_dec < 0 || n_enc > MAX_LAYERS || n_dec > MAX_LAYERS) {
        PyErr_SetString(PyExc_ValueError, "forward: layers must be enc..., head, dec..., out (at most 16 of each)");
        return -1;
    }
    net *m = &h->m;
    m->n_enc = n_enc;
    m->n_dec = n_dec;
    m->D = D;
    m->min_var = min_var;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_buffer *v = &h->views[h->n_views];
        if (get(PyTuple_GET_ITEM(layers, i), v, 0, 'f', 2, "a layer") < 0)
            goto fail;
        h->n_views++;
        layer ly = {v->buf, v->shape[0], v->shape[1]};
        if (i < n_enc)
            m->enc[i] = ly;
        else if (i == n_enc)
            m->head = ly;
        else if (i < count - 1)
            m->dec[i - n_enc - 1] = ly;
        else
            m->out = ly;
    }
    Py_buffer *e = &h->views[h->n_views];
    if (get(eps_obj, e, 0, 'f', 2, "eps") < 0)
        goto fail;
    h->n_views++;
    m->eps = e->buf;
    m->K = e->shape[0];
    m->L = e->shape[1];
    /* each layer takes the one before it, plus the row of ones */
    Py_ssize_t in = 2 * D + 1;
    for (int i = 0; i < n_enc; in = m->enc[i].rows + 1, i++)
        if (m->enc[i].cols != in)
            goto shapes;
    if (m->head.cols != in || m->head.rows != 2 * m->K)
        goto shapes;
    in = m->K + 1;
    for (int i = 0; i < n_dec; in = m->dec[i].rows + 1, i++)
        if (m->dec[i].cols != in)
            goto shapes;
    if (m->out.cols != in || m->out.rows != 2 * D || m->L < 1)
        goto shapes;
    if (!(min_var >= FLT_MIN && min_var <= FLT_MAX)) {
        PyErr_Format(PyExc_ValueError, "forward: min_var must be a normal float32; got %g", (double)min_var);
        goto fail;
    }
    return 0;
shapes:
    PyErr_SetString(PyExc_ValueError, "forward: the layers' shapes do not chain (each (out, in + 1), head (2K, .), out (2D, .))");
fail:
    release_net(h);
    return -1;
}

PyDoc_STRVAR(forward_doc,
             "forward(x, layers, n_enc, eps, min_var, work, score, bad, mean=None, scale=None)\n--\n\n"
             "Scores of windows x (b, D) float32 (non-finite = missing) into score (b,) float64,\n"
             "x scaled first, (x - mean) / scale in float64 clipped to float32, where mean and\n"
             "scale (D,) float64 are given;\n"
             "with bad (b,) uint8 set where a sample's likelihood was not finite (redo those the\n"
             "exact NumPy way). layers: the enc kernels, the head, the dec kernels and the output\n"
             "heads in fused.py's layout; eps (K, L) float32; work float32 of at least\n"
             "forward_work(layers, n_enc, eps, D, b) elements. No GIL is held while it runs.\n"
             "Needs set_sgemm first.");

static PyObject *forward(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs) {
    PyObject *x_obj, *layers, *eps_obj, *work_obj, *score_obj, *bad_obj, *mean_obj = Py_None, *scale_obj = Py_None;
    int n_enc;
    float min_var;
    static char *keywords[] = {"x", "layers", "n_enc", "eps", "min_var", "work", "score", "bad", "mean", "scale", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOiOfOOO|OO:forward", keywords, &x_obj, &layers, &n_enc, &eps_obj,
                                     &min_var, &work_obj, &score_obj, &bad_obj, &mean_obj, &scale_obj))
        return NULL;
    if ((mean_obj == Py_None) != (scale_obj == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "forward: mean and scale go together");
        return NULL;
    }
    int scaled = mean_obj != Py_None;
    if (!sgemm_ptr) {
        PyErr_SetString(PyExc_RuntimeError, "forward: no sgemm (call set_sgemm first)");
        return NULL;
    }
    Py_buffer x, work, score, bad, mean, scale;
    held_net h;
    PyObject *result = NULL;
    if (get(x_obj, &x, 0, 'f', 2, "x") < 0)
        return NULL;
    if (hold_net(&h, layers, n_enc, eps_obj, min_var, x.shape[1]) < 0)
        goto release_x;
    if (get(work_obj, &work, 1, 'f', 1, "work") < 0)
        goto release_net;
    if (get(score_obj, &score, 1, 'd', 1, "score") < 0)
        goto release_work;
    if (get(bad_obj, &bad, 1, 'B', 1, "bad") < 0)
        goto release_score;
    if (scaled && get(mean_obj, &mean, 0, 'd', 1, "mean") < 0)
        goto release_bad;
    if (scaled && get(scale_obj, &scale, 0, 'd', 1, "scale") < 0)
        goto release_mean;
    Py_ssize_t b = x.shape[0];
    if (score.shape[0] != b || bad.shape[0] != b) {
        PyErr_SetString(PyExc_ValueError, "forward: score and bad must have one element per window");
        goto release_scale;
    }
    if (scaled && (mean.shape[0] != h.m.D || scale.shape[0] != h.m.D)) {
        PyErr_SetString(PyExc_ValueError, "forward: mean and scale must have one element per cell of a window");
        goto release_scale;
    }
    if (work.shape[0] < work_floats(&h.m, b)) {
        PyErr_Format(PyExc_ValueError, "forward: work has %zd floats; %zd windows need %zd", work.shape[0], b,
                     work_floats(&h.m, b));
        goto release_scale;
    }
    if (b > 0) {
        Py_BEGIN_ALLOW_THREADS
        forward_pass(&h.m, x.buf, scaled ? mean.buf : NULL, scaled ? scale.buf : NULL, b, work.buf, score.buf, bad.buf);
        Py_END_ALLOW_THREADS
    }
    result = Py_NewRef(Py_None);
release_scale:
    if (scaled)
        PyBuffer_Release(&scale);
release_mean:
    if (scaled)
        PyBuffer_Release(&mean);
release_bad:
    PyBuffer_Release(&bad);
release_score:
    PyBuffer_Release(&score);
release_work:
    PyBuffer_Release(&work);
release_net:
    release_net(&h);
release_x:
    PyBuffer_Release(&x);
    return result;
}

PyDoc_STRVAR(forward_work_doc, "forward_work(layers, n_enc, eps, D, b)\n--\n\n"
                               "Floats of work forward() takes for b windows of D cells.");

static PyObject *forward_work(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *layers, *eps_obj;
    int n_enc;
    Py_ssize_t D, b;
    if (!PyArg_ParseTuple(args, "OiOnn:forward_work", &layers, &n_enc, &eps_obj, &D, &b))
        return NULL;
    held_net h;
    if (hold_net(&h, layers, n_enc, eps_obj, 1.0f, D) < 0)
        return NULL;
    Py_ssize_t floats = work_floats(&h.m, b);
    release_net(&h);
    return PyLong_FromSsize_t(floats);
}

PyDoc_STRVAR(set_sgemm_doc, "set_sgemm(address, ilp64)\n--\n\n"
                            "The address of a cblas_sgemm (64-bit integers if ilp64) for forward().");

static PyObject *set_sgemm(PyObject *Py_UNUSED(module), PyObject *args) {
    unsigned long long address;
    int ilp64;
    if (!PyArg_ParseTuple(args, "Kp:set_sgemm", &address, &ilp64))
        return NULL;
    if (!address) {
        PyErr_SetString(PyExc_ValueError, "set_sgemm: a null address");
        return NULL;
    }
    sgemm_ptr = (void *)(uintptr_t)address;
    sgemm_ilp64 = ilp64;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"nll", (PyCFunction)(void (*)(void))nll, METH_VARARGS | METH_KEYWORDS, nll_doc},
    {"forward", (PyCFunction)(void (*)(void))forward, METH_VARARGS | METH_KEYWORDS, forward_doc},
    {"forward_work", forward_work, METH_VARARGS, forward_work_doc},
    {"set_sgemm", set_sgemm, METH_VARARGS, set_sgemm_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_tail",
    .m_doc = "The fused scorer's elementwise tail in C (streamvae/model/_tail.c); optional: fused.py falls back to NumPy.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__tail(void) {
#ifdef HAVE_AVX2_BUILD
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        kernel = tail_avx2;
        kernel_name = "avx2+fma";
    }
#endif
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddStringConstant(m, "isa", kernel_name) < 0)
        Py_CLEAR(m);
    return m;
}
