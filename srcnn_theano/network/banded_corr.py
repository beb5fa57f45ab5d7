"""Pixel-major correlations in cache-sized bands: the CPU ops of :mod:`srcnn_theano.network.model`.

Both ops work on pixel-major (NHWC) float32 arrays, channels contiguous, and
on a ``k x k`` kernel stored as a matrix ``w`` of shape ``(k*k*C, O)`` whose
row ``(dy*k + dx)*C + c`` holds the weights of input channel ``c`` at tap
``(dy, dx)``. With ``Ho = H + 2*pad - k + 1`` (``pad = k // 2``: same size;
``0``: valid)::

    y[n, i, j, o] = act(b[o] + sum_{dy, dx, c} w[(dy*k+dx)*C + c, o]
                                 * x[n, i + dy - pad, j + dx - pad, c])

``BandedCorr(k, pad, edge, relu, strategy)``: x ``(N, H, W, C)``, w, b
    ``(O,)`` -> y ``(N, Ho, Wo, O)``. Outside the image x is 0, or the
    nearest edge pixel when ``edge`` (the authors' ``replicate`` rule);
    ``act`` is ``max(0, .)`` when ``relu``, else the identity.
``BandedCorrGradW(k, pad, strategy)``: x, g ``(N, Ho, Wo, O)`` -> the
    gradient ``(k*k*C, O)`` of ``sum(y * g)`` with respect to ``w``
    (zero padding, no activation).

Why this shape of work: a 64-channel activation of a 512x512 image is 67 MB,
far more than a core's cache, and one matrix product over the whole image
is bound by memory, not by arithmetic. Each op walks the image in bands of
output rows sized to stay in the L2 cache (:data:`BAND_BYTES`): it copies the
band's input rows, padded, into a scratch block ``S`` of ``(rows + k - 1)``
rows of ``Wp = Wo + k - 1`` pixels, runs the BLAS on it, and adds the bias
and the ReLU while the band is still in the cache. In a pixel-major block a
shift of the image by ``(dy, dx)`` is a pointer offset, ``S + (dy*Wp +
dx)*C``, with rows ``C`` floats apart: a plain matrix for the BLAS, no copy.
The products are pixel-major (``(pixels, K) x (K, O)``), the orientation
in which both OpenBLAS and MKL run SRCNN's thin channel counts fastest.

Strategies (``strategy``; ``'auto'``: ``dot`` for k = 1, ``im2col`` for C < 8, ``tapsum``
for O < 8 (forward only), else ``shift``; measured fastest on SRCNN's layers):

``dot``     ``k = 1``: one product per band, ``(pixels, C) x (C, O)``.
``im2col``  few input channels (conv1, C = 1): the band's ``k*k*C`` shifted
            values of each pixel side by side, one ``(pixels, k*k*C) x
            (k*k*C, O)`` product.
``shift``   many channels both ways (conv2): ``k*k`` products of the shifted
            block, ``(rows*Wp, C) x (C, O)``, added up by the BLAS
            (``beta = 1``); the ``k - 1`` columns at the right of each row
            are computed and dropped.
``tapsum``  few output channels (conv3, O = 1): one product ``(pixels of S,
            C) x (C, k*k*O)`` gives every tap's contribution at every pixel,
            then each output adds its ``k*k`` shifted terms.

The gradient of ``y`` with respect to ``x`` is again a ``BandedCorr`` (the
kernel flipped and transposed, ``pad -> k - 1 - pad``); the one with
respect to ``w`` is :class:`BandedCorrGradW` (im2col, shift or tapsum, the
products' transposes accumulated over bands). For ``edge`` padding both
come from the same graph with the padding made explicit.

The C code calls the ``sgemm_`` Theano links (``blas__ldflags``, chosen by
:mod:`srcnn_theano.blas`), whose own threads share each product; scratch
blocks are 64-byte aligned, so a product's operands have the same
alignment and strides on every call and in every process (results do not
depend on where numpy put the arrays: resumed trainings stay bit-exact).
The plain memory loops release the GIL.
"""
import hashlib
import pathlib

import numpy as np

from srcnn_theano.backend import T, theano

__all__ = ["BandedCorr", "BandedCorrGradW", "weight_matrix", "BAND_BYTES"]

#: Bytes of scratch a band may use (input block + product): within a core's L2.
BAND_BYTES = 1 << 20
STRATEGIES = ("auto", "dot", "im2col", "shift", "tapsum")


def weight_matrix(W):
    """Symbolic ``(O, C, k, k)`` correlation kernels -> the ops' ``(k*k*C, O)`` matrix."""
    o, c, k = W.shape[0], W.shape[1], W.shape[2]
    return W.dimshuffle(2, 3, 1, 0).reshape((k * k * c, o))


def _flipped_transposed(w, k, c, o):
    """``(k*k*C, O)`` -> ``(k*k*O, C)``: the kernel of the gradient with respect to x."""
    return w.reshape((k, k, c, o))[::-1, ::-1].dimshuffle(0, 1, 3, 2).reshape((k * k * o, c))


def _pad_edge_nhwc(x, p):
    """Symbolic edge replication of ``p`` pixels on both spatial axes of an NHWC tensor."""
    if p == 0:
        return x
    rows = T.concatenate([x[:, :1]] * p + [x] + [x[:, -1:]] * p, axis=1)
    return T.concatenate([rows[:, :, :1]] * p + [rows] + [rows[:, :, -1:]] * p, axis=2)


_SUPPORT_C = r"""
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#define SRCNN_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SRCNN_MAX(a, b) ((a) > (b) ? (a) : (b))

static float* srcnn_alloc(size_t n) {
    void* p = NULL;
    if (posix_memalign(&p, 64, (n > 0 ? n : 1) * sizeof(float))) return NULL;
    return (float*)p;
}

/* Row-major C (M x N) = A (M x K, lda) B (K x N, ldb) + beta C (ldc). */
static void srcnn_gemm_nn(int M, int N, int K, const float* A, int lda, const float* B,
                          int ldb, float beta, float* C, int ldc) {
    char t = 'N'; float one = 1.0f;
    if (M <= 0 || N <= 0) return;
    sgemm_(&t, &t, &N, &M, &K, &one, B, &ldb, A, &lda, &beta, C, &ldc);
}

/* Row-major C (M x N) = A^T B + beta C, A (K x M, lda), B (K x N, ldb). */
static void srcnn_gemm_tn(int M, int N, int K, const float* A, int lda, const float* B,
                          int ldb, float beta, float* C, int ldc) {
    char tn = 'N', tt = 'T'; float one = 1.0f;
    if (M <= 0 || N <= 0 || K <= 0) return;
    sgemm_(&tn, &tt, &N, &M, &K, &one, B, &ldb, A, &lda, &beta, C, &ldc);
}

/* Rows y0 - pad .. y0 - pad + nrows - 1 of image x (H x W x C, row stride W*C), each
   padded by `pad` pixels left and right to Wp = W + 2*pad - ... : S row j, pixel q holds
   x[y0 - pad + j, q - pad] (zero, or the nearest edge pixel when edge, outside). */
static void srcnn_fill_block(float* S, const float* x, int H, int W, int C, int Wp,
                             int y0, int nrows, int pad, int edge) {
    for (int j = 0; j < nrows; ++j) {
        float* srow = S + (size_t)j * Wp * C;
        int sy = y0 - pad + j;
        if (sy < 0 || sy >= H) {
            if (!edge) { memset(srow, 0, (size_t)Wp * C * sizeof(float)); continue; }
            sy = sy < 0 ? 0 : H - 1;
        }
        const float* xrow = x + (size_t)sy * W * C;
        int q0 = pad, q1 = SRCNN_MIN(Wp, pad + W);  /* pixels q0..q1-1 come from the row */
        for (int q = 0; q < q0; ++q) {
            if (edge) memcpy(srow + (size_t)q * C, xrow, C * sizeof(float));
            else memset(srow + (size_t)q * C, 0, C * sizeof(float));
        }
        memcpy(srow + (size_t)q0 * C, xrow, (size_t)(q1 - q0) * C * sizeof(float));
        for (int q = q1; q < Wp; ++q) {
            if (edge) memcpy(srow + (size_t)q * C, xrow + (size_t)(W - 1) * C, C * sizeof(float));
            else memset(srow + (size_t)q * C, 0, C * sizeof(float));
        }
    }
}

/* colsT (k*k*C x R*Wo), the transposed im2col: row (dy*k + dx)*C + c holds, for every
   output pixel m = r*Wo + j of the band, S[(r+dy)*Wp + j + dx, c]. For one channel each
   row piece is a contiguous copy of a row of S. */
static void srcnn_im2col_t(float* colsT, const float* S, int R, int Wo, int Wp, int C, int k) {
    const size_t M = (size_t)R * Wo;
    for (int dy = 0; dy < k; ++dy)
    for (int dx = 0; dx < k; ++dx)
    for (int c = 0; c < C; ++c) {
        float* dst = colsT + ((size_t)(dy * k + dx) * C + c) * M;
        for (int r = 0; r < R; ++r) {
            const float* src = S + ((size_t)(r + dy) * Wp + dx) * C + c;
            float* d = dst + (size_t)r * Wo;
            if (C == 1) memcpy(d, src, (size_t)Wo * sizeof(float));
            else for (int j = 0; j < Wo; ++j) d[j] = src[(size_t)j * C];
        }
    }
}

/* cols (R*Wo x k*k*C), pixel-major im2col: pixel (r, j)'s values S[(r+dy)*Wp + j + dx, c]
   in (dy, dx, c) order; for fixed dy the k*C values are contiguous in S (one copy). */
static void srcnn_im2col(float* cols, const float* S, int R, int Wo, int Wp, int C, int k) {
    const size_t KC = (size_t)k * C, KK = (size_t)k * k * C;
    for (int r = 0; r < R; ++r)
    for (int j = 0; j < Wo; ++j) {
        float* dst = cols + ((size_t)r * Wo + j) * KK;
        for (int dy = 0; dy < k; ++dy)
            memcpy(dst + dy * KC, S + ((size_t)(r + dy) * Wp + j) * C, KC * sizeof(float));
    }
}

/* 0 dot, 1 im2col (transposed), 2 shift, 3 tapsum, 4 im2col (pixel-major); grad: the
   weight-gradient op's choice. */
static int srcnn_mode(const char* strategy, int K, int C, int O, int grad) {
    if (!strcmp(strategy, "auto")) {
        if (K == 1) return 0;
        if (C < 8) return 1;
        if (!grad && O < 8) return 3;
        return 2;
    }
    if (!strcmp(strategy, "dot")) return K == 1 ? 0 : 1;
    if (!strcmp(strategy, "im2col")) return C < 8 ? 1 : 4;
    if (!strcmp(strategy, "shift")) return 2;
    return 3;
}

/* Row-major C (M x N) = A B^T + beta C, A (M x K, lda), B (N x K, ldb). */
static void srcnn_gemm_nt(int M, int N, int K, const float* A, int lda, const float* B,
                          int ldb, float beta, float* C, int ldc) {
    char tn = 'N', tt = 'T'; float one = 1.0f;
    if (M <= 0 || N <= 0) return;
    sgemm_(&tt, &tn, &N, &M, &K, &one, B, &ldb, A, &lda, &beta, C, &ldc);
}

/* Rows of output per band: as many as keep `per_row` bytes a row (plus `fixed`) in budget. */
static int srcnn_band_rows(long budget, long fixed, long per_row, int Ho) {
    long r = per_row > 0 ? (budget - fixed) / per_row : Ho;
    if (r < 1) r = 1;
    if (r > Ho) r = Ho;
    return (int)r;
}
"""

_SUPPORT_C += r"""
/* ---- thread-local BLAS threads: our threads each run single-threaded products ---- */
/* MKL's C name (mkl_service.h); its lower-case symbol is the Fortran one, taking int*. */
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));
extern "C" int scipy_openblas_set_num_threads_local(int) __attribute__((weak));
extern "C" int openblas_set_num_threads_local(int) __attribute__((weak));

/* The number of threads the ops may use: OpenMP's, when the BLAS lets each of them run
   single-threaded products; otherwise 1 (the BLAS's own threads share each product). */
static int srcnn_threads(void) {
    if (!MKL_Set_Num_Threads_Local && !scipy_openblas_set_num_threads_local
        && !openblas_set_num_threads_local) return 1;
    int n = omp_get_max_threads();
    return n > 0 ? n : 1;
}

/* Set this thread's BLAS threads (0: back to the global setting); returns the previous. */
static int srcnn_blas_local(int n) {
    if (MKL_Set_Num_Threads_Local) return MKL_Set_Num_Threads_Local(n);
    if (scipy_openblas_set_num_threads_local) return scipy_openblas_set_num_threads_local(n > 0 ? n : 0);
    if (openblas_set_num_threads_local) return openblas_set_num_threads_local(n > 0 ? n : 0);
    return 0;
}

typedef struct {
    int N, H, W, C, K, P, O, Ho, Wo, Wp, R, mode, edge, relu;
    const float *x, *w, *b, *wt;
    float* y;
} srcnn_fwd_t;

/* Scratch floats one thread needs for the forward op: S block, product, one row. */
static void srcnn_fwd_sizes(const srcnn_fwd_t* a, size_t* s_len, size_t* z_len) {
    const int R = a->R, K = a->K, C = a->C, O = a->O, Wp = a->Wp, Wo = a->Wo;
    const size_t KK = (size_t)K * K * C;
    *s_len = (size_t)(R + K - 1) * Wp * C + (size_t)K * C;
    if (a->mode == 0) { *s_len = 0; *z_len = 0; }
    else if (a->mode == 1 || a->mode == 4) *z_len = (size_t)R * Wo * KK;
    else if (a->mode == 2) *z_len = (size_t)R * Wp * O;
    else *z_len = (size_t)((R + K - 1) * Wp + K) * K * K * O + Wo;
}

/* Output rows y0 .. y0 + rows - 1 of image n. */
static void srcnn_fwd_band(const srcnn_fwd_t* a, int n, int y0, float* S, float* Z) {
    const int H = a->H, W = a->W, C = a->C, K = a->K, P = a->P, O = a->O;
    const int Ho = a->Ho, Wo = a->Wo, Wp = a->Wp, mode = a->mode;
    const int rows = SRCNN_MIN(a->R, Ho - y0);
    const long KK = (long)K * K * C;
    const float* xn = a->x + (size_t)n * H * W * C;
    float* yb = a->y + ((size_t)n * Ho + y0) * Wo * O;
    if (mode == 0) {
        srcnn_gemm_nn(rows * Wo, O, C, xn + (size_t)y0 * W * C, C, a->w, O, 0.0f, yb, O);
    } else {
        srcnn_fill_block(S, xn, H, W, C, Wp, y0, rows + K - 1, P, a->edge);
        memset(S + (size_t)(rows + K - 1) * Wp * C, 0, (size_t)K * C * sizeof(float));
        if (mode == 1) {
            srcnn_im2col_t(Z, S, rows, Wo, Wp, C, K);
            srcnn_gemm_tn(rows * Wo, O, KK, Z, rows * Wo, a->w, O, 0.0f, yb, O);
        } else if (mode == 4) {
            srcnn_im2col(Z, S, rows, Wo, Wp, C, K);
            srcnn_gemm_nn(rows * Wo, O, KK, Z, KK, a->w, O, 0.0f, yb, O);
        } else if (mode == 2) {
            for (int t = 0; t < K * K; ++t) {
                const int dy = t / K, dx = t % K;
                srcnn_gemm_nn(rows * Wp, O, C, S + ((size_t)dy * Wp + dx) * C, C,
                              a->w + (size_t)t * C * O, O, t ? 1.0f : 0.0f, Z, O);
            }
            for (int r = 0; r < rows; ++r)
                memcpy(yb + (size_t)r * Wo * O, Z + (size_t)r * Wp * O, (size_t)Wo * O * sizeof(float));
        } else {
            /* Zt (k*k*O x pixels of S) = wt S^T: each tap's contribution as planes, then
               every output row adds its k*k shifted plane rows. */
            const int TO = K * K * O, Ps = (rows + K - 1) * Wp + K;
            float* acc = Z + (size_t)((a->R + K - 1) * Wp + K) * TO;
            srcnn_gemm_nt(TO, Ps, C, a->wt, C, S, C, 0.0f, Z, Ps);
            for (int o = 0; o < O; ++o)
            for (int r = 0; r < rows; ++r) {
                for (int j = 0; j < Wo; ++j) acc[j] = 0.0f;
                for (int dy = 0; dy < K; ++dy)
                for (int dx = 0; dx < K; ++dx) {
                    const float* zr = Z + (size_t)((dy * K + dx) * O + o) * Ps + (size_t)(r + dy) * Wp + dx;
                    for (int j = 0; j < Wo; ++j) acc[j] += zr[j];
                }
                float* yo = yb + (size_t)r * Wo * O + o;
                if (O == 1) memcpy(yo, acc, (size_t)Wo * sizeof(float));
                else for (int j = 0; j < Wo; ++j) yo[(size_t)j * O] = acc[j];
            }
        }
    }
    /* bias and ReLU while the band is in the cache */
    if (a->b != NULL || a->relu) {
        const size_t cnt = (size_t)rows * Wo;
        const float* bd = a->b;
        for (size_t i = 0; i < cnt; ++i) {
            float* v = yb + i * O;
            if (bd != NULL) for (int o = 0; o < O; ++o) v[o] += bd[o];
            if (a->relu) for (int o = 0; o < O; ++o) v[o] = v[o] > 0.0f ? v[o] : 0.0f;
        }
    }
}

/* Runs every band of the forward op, on srcnn_threads() threads; 0, or -1 out of memory. */
static int srcnn_fwd_run(const srcnn_fwd_t* a) {
    const int nb = (a->Ho + a->R - 1) / a->R, units = a->N * nb;
    size_t s_len, z_len;
    srcnn_fwd_sizes(a, &s_len, &z_len);
    int nth = srcnn_threads();
    if (nth > units) nth = units > 0 ? units : 1;
    int err = 0;
    #pragma omp parallel num_threads(nth) if(nth > 1)
    {
        const int many = omp_get_num_threads() > 1;
        const int prev = many ? srcnn_blas_local(1) : 0;
        float* S = s_len ? srcnn_alloc(s_len) : NULL;
        float* Z = z_len ? srcnn_alloc(z_len) : NULL;
        const int ok = !((s_len && S == NULL) || (z_len && Z == NULL));
        if (!ok) {
            #pragma omp atomic write
            err = -1;
        }
        #pragma omp for schedule(static)
        for (int u = 0; u < units; ++u)
            if (ok) srcnn_fwd_band(a, u / nb, (u % nb) * a->R, S, Z);
        free(S); free(Z);
        if (many) srcnn_blas_local(prev);
    }
    return err;
}

typedef struct {
    int N, H, W, C, K, P, O, Ho, Wo, Wp, R, mode;
    const float *x, *g;
} srcnn_gw_t;

static void srcnn_gw_sizes(const srcnn_gw_t* a, size_t* s_len, size_t* z_len, size_t* g_len) {
    const int R = a->R, K = a->K, C = a->C, O = a->O, Wp = a->Wp, Wo = a->Wo;
    const size_t KK = (size_t)K * K * C, TO = (size_t)K * K * O;
    *s_len = (size_t)(R + K - 1) * Wp * C + (size_t)K * C;
    *z_len = 0; *g_len = 0;
    if (a->mode == 0) *s_len = 0;
    else if (a->mode == 1 || a->mode == 4) *z_len = (size_t)R * Wo * KK;
    else if (a->mode == 2) *g_len = (size_t)R * Wp * O;
    else { *g_len = (size_t)((R + K - 1) * Wp + K) * TO; *z_len = (size_t)C * TO; }
}

/* Adds band (n, y0)'s terms to dw (k*k*C x O; for tapsum Z, k*k*O x C) and acc (O). */
static void srcnn_gw_band(const srcnn_gw_t* a, int n, int y0, float* S, float* Z, float* G,
                          float* dw, double* acc) {
    const int H = a->H, W = a->W, C = a->C, K = a->K, P = a->P, O = a->O;
    const int Ho = a->Ho, Wo = a->Wo, Wp = a->Wp, mode = a->mode;
    const int rows = SRCNN_MIN(a->R, Ho - y0);
    const long KK = (long)K * K * C;
    const int TO = K * K * O;
    const float* xn = a->x + (size_t)n * H * W * C;
    const float* gb = a->g + ((size_t)n * Ho + y0) * Wo * O;
    {   /* the bias's gradient: this band's sum in float, added in double */
        float part[64];
        for (int o0 = 0; o0 < O; o0 += 64) {
            const int no = SRCNN_MIN(64, O - o0);
            for (int o = 0; o < no; ++o) part[o] = 0.0f;
            for (size_t i = 0; i < (size_t)rows * Wo; ++i)
                for (int o = 0; o < no; ++o) part[o] += gb[i * O + o0 + o];
            for (int o = 0; o < no; ++o) acc[o0 + o] += part[o];
        }
    }
    if (mode == 0) {  /* dw += x^T g */
        srcnn_gemm_tn(C, O, rows * Wo, xn + (size_t)y0 * W * C, C, gb, O, 1.0f, dw, O);
        return;
    }
    srcnn_fill_block(S, xn, H, W, C, Wp, y0, rows + K - 1, P, 0);
    memset(S + (size_t)(rows + K - 1) * Wp * C, 0, (size_t)K * C * sizeof(float));
    if (mode == 4) {
        srcnn_im2col(Z, S, rows, Wo, Wp, C, K);
        srcnn_gemm_tn(KK, O, rows * Wo, Z, KK, gb, O, 1.0f, dw, O);
    } else if (mode == 1) {
        srcnn_im2col_t(Z, S, rows, Wo, Wp, C, K);
        srcnn_gemm_nn(KK, O, rows * Wo, Z, rows * Wo, gb, O, 1.0f, dw, O);
    } else if (mode == 2) {
        /* g on the Wp-wide grid (zero in the dropped columns); per tap dw_t += S_shift^T G */
        for (int r = 0; r < rows; ++r) {
            memcpy(G + (size_t)r * Wp * O, gb + (size_t)r * Wo * O, (size_t)Wo * O * sizeof(float));
            memset(G + ((size_t)r * Wp + Wo) * O, 0, (size_t)(Wp - Wo) * O * sizeof(float));
        }
        for (int t = 0; t < K * K; ++t) {
            const int dy = t / K, dx = t % K;
            srcnn_gemm_tn(C, O, rows * Wp, S + ((size_t)dy * Wp + dx) * C, C, G, O, 1.0f,
                          dw + (size_t)t * C * O, O);
        }
    } else {
        /* planes Gst[t*O + o, q] = g[o] at the output pixel q - shift_t (on S's grid);
           Zt (k*k*O x C) += Gst S */
        const int Ps = (rows + K - 1) * Wp + K;
        memset(G, 0, (size_t)Ps * TO * sizeof(float));
        for (int t = 0; t < K * K; ++t)
        for (int o = 0; o < O; ++o) {
            const int dy = t / K, dx = t % K;
            float* plane = G + (size_t)(t * O + o) * Ps + (size_t)dy * Wp + dx;
            for (int r = 0; r < rows; ++r) {
                float* d = plane + (size_t)r * Wp;
                const float* gv = gb + (size_t)r * Wo * O + o;
                if (O == 1) memcpy(d, gv, (size_t)Wo * sizeof(float));
                else for (int j = 0; j < Wo; ++j) d[j] = gv[(size_t)j * O];
            }
        }
        srcnn_gemm_nn(TO, C, Ps, G, Ps, S, C, 1.0f, Z, C);
    }
}

/* Every band of the weight gradient, each thread adding into its own sums, which are then
   added in thread order (the same order in every run: the result is deterministic). */
static int srcnn_gw_run(const srcnn_gw_t* a, float* dwd, float* dbd) {
    const int nb = (a->Ho + a->R - 1) / a->R, units = a->N * nb;
    const int K = a->K, C = a->C, O = a->O;
    const size_t KK = (size_t)K * K * C, out_len = KK * O;
    size_t s_len, z_len, g_len;
    srcnn_gw_sizes(a, &s_len, &z_len, &g_len);
    int nth = srcnn_threads();
    if (nth > units) nth = units > 0 ? units : 1;
    float* sums = srcnn_alloc(out_len * nth);
    double* accs = (double*)calloc((size_t)O * nth + 1, sizeof(double));
    if (sums == NULL || accs == NULL) { free(sums); free(accs); return -1; }
    memset(sums, 0, out_len * nth * sizeof(float));
    int err = 0;
    #pragma omp parallel num_threads(nth) if(nth > 1)
    {
        const int tid = omp_get_thread_num(), many = omp_get_num_threads() > 1;
        const int prev = many ? srcnn_blas_local(1) : 0;
        float* S = s_len ? srcnn_alloc(s_len) : NULL;
        float* Z = z_len ? srcnn_alloc(z_len) : NULL;
        float* G = g_len ? srcnn_alloc(g_len) : NULL;
        const int ok = !((s_len && S == NULL) || (z_len && Z == NULL) || (g_len && G == NULL));
        if (!ok) {
            #pragma omp atomic write
            err = -1;
        }
        float* mine = sums + out_len * tid;
        if (ok && a->mode == 3) memset(Z, 0, z_len * sizeof(float));
        #pragma omp for schedule(static)
        for (int u = 0; u < units; ++u)
            if (ok) srcnn_gw_band(a, u / nb, (u % nb) * a->R, S, Z, G, mine, accs + (size_t)O * tid);
        if (ok && a->mode == 3) {  /* dw[t*C + c, o] = Zt[t*O + o, c] */
            for (int t = 0; t < K * K; ++t)
            for (int c = 0; c < C; ++c)
            for (int o = 0; o < O; ++o) mine[((size_t)t * C + c) * O + o] = Z[((size_t)t * O + o) * C + c];
        }
        free(S); free(Z); free(G);
        if (many) srcnn_blas_local(prev);
    }
    if (err == 0) {
        memcpy(dwd, sums, out_len * sizeof(float));
        for (int t = 1; t < nth; ++t)
            for (size_t i = 0; i < out_len; ++i) dwd[i] += sums[out_len * t + i];
        for (int o = 0; o < O; ++o) {
            double s = 0.0;
            for (int t = 0; t < nth; ++t) s += accs[(size_t)O * t + o];
            dbd[o] = (float)s;
        }
    }
    free(sums); free(accs);
    return err;
}
"""


#: C: rows per band (``a_.R``) for the scratch each strategy keeps (shared by both ops).
_BAND_ROWS_C = f"""a_.R = (a_.mode == 1 || a_.mode == 4)
            ? srcnn_band_rows({BAND_BYTES}, (K - 1) * Wp * C * 4, Wp * C * 4 + Wo * KK * 4, a_.Ho)
            : a_.mode == 2 ? srcnn_band_rows({BAND_BYTES}, (K - 1) * Wp * C * 4, Wp * (C + O) * 4, a_.Ho)
            : srcnn_band_rows({BAND_BYTES}, (K - 1) * Wp * (C + TO) * 4, Wp * (C + TO) * 4, a_.Ho);"""



#: Theano's module-cache version of both ops: a digest of the C code they share (with the
#: ``c_code`` bodies in this file), so editing any of it compiles anew instead of loading
#: a stale module.
_C_VERSION = (6, hashlib.sha256(pathlib.Path(__file__).read_bytes()).hexdigest()[:16])

class _BandedOp(theano.graph.op.COp):
    """What both ops share: BLAS linkage, the scratch helpers, the checks."""

    def _check(self):
        if self.k < 1 or not 0 <= self.pad <= self.k - 1:
            raise ValueError(f"need k >= 1 and 0 <= pad <= k - 1, got k={self.k}, pad={self.pad}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {self.strategy!r}")

    def perform(self, node, inputs, outputs):
        raise NotImplementedError(f"{type(self).__name__} runs as C code only (Theano needs a C compiler)")

    def c_support_code(self, **kwargs):
        from theano.tensor import blas_headers

        return blas_headers.blas_header_text() + _SUPPORT_C

    def c_libraries(self, **kwargs):
        from theano.tensor.blas import ldflags

        return ldflags()

    def c_compile_args(self, **kwargs):
        from theano.tensor.blas import ldflags

        return ldflags(libs=False, flags=True) + ["-O3", "-fopenmp"]

    def c_lib_dirs(self, **kwargs):
        from theano.tensor.blas import ldflags

        return ldflags(libs=False, libs_dir=True)

    def c_header_dirs(self, **kwargs):
        from theano.tensor.blas import ldflags

        return ldflags(libs=False, include_dir=True)

    @staticmethod
    def _as_float4(v, what):
        v = T.as_tensor_variable(v)
        if v.ndim != 4 or v.dtype != "float32":
            raise TypeError(f"{what} must be a 4-d float32 tensor (N, H, W, C), got {v.type}")
        return v

    @staticmethod
    def _contiguous(name, var, nd, fail):
        """C: ``name`` = a C-contiguous float32 array (new reference) of input ``var``."""
        return (f"{name} = (PyArrayObject*)PyArray_FromAny((PyObject*){var}, "
                f"PyArray_DescrFromType(NPY_FLOAT32), {nd}, {nd}, "
                f"NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED, NULL); if ({name} == NULL) {{ {fail} }}")

    @staticmethod
    def _alloc_code(out, dims, nd, fail):
        return f"""
        {{
            npy_intp odims_[{nd}] = {{{dims}}};
            int same_ = {out} != NULL && PyArray_IS_C_CONTIGUOUS({out})
                        && PyArray_TYPE({out}) == NPY_FLOAT32 && PyArray_NDIM({out}) == {nd};
            for (int i_ = 0; same_ && i_ < {nd}; ++i_) same_ = PyArray_DIMS({out})[i_] == odims_[i_];
            if (!same_) {{
                Py_XDECREF({out});
                {out} = (PyArrayObject*)PyArray_EMPTY({nd}, odims_, NPY_FLOAT32, 0);
                if ({out} == NULL) {{ {fail} }}
            }}
        }}
        """


class BandedCorr(_BandedOp):
    """Correlation + bias (+ ReLU) of an NHWC batch in cache-sized bands; see the module docstring.

    Parameters
    ----------
    k : int
        Kernel side.
    pad : int
        Pixels of padding on each side, ``0 <= pad <= k - 1``.
    edge : bool
        Pad with the nearest edge pixel instead of zeros.
    relu : bool
        Apply ``max(0, .)`` to the result.
    strategy : {'auto', 'dot', 'im2col', 'shift', 'tapsum'}
    has_bias : bool
        Whether a third input ``b`` is given.
    """

    __props__ = ("k", "pad", "edge", "relu", "strategy", "has_bias")

    def __init__(self, k, pad, edge=False, relu=False, strategy="auto", has_bias=True):
        self.k, self.pad, self.edge, self.relu = int(k), int(pad), bool(edge), bool(relu)
        self.strategy, self.has_bias = str(strategy), bool(has_bias)
        self._check()
        if self.k == 1 and self.strategy not in ("auto", "dot"):
            raise ValueError("a 1x1 kernel uses strategy 'dot'")

    def make_node(self, x, w, b=None):
        x = self._as_float4(x, "x")
        w = T.as_tensor_variable(w)
        if w.ndim != 2 or w.dtype != "float32":
            raise TypeError(f"w must be a float32 matrix (k*k*C, O), got {w.type}")
        inputs = [x, w]
        if self.has_bias:
            b = T.as_tensor_variable(b)
            if b.ndim != 1 or b.dtype != "float32":
                raise TypeError(f"b must be a float32 vector (O,), got {b.type}")
            inputs.append(b)
        elif b is not None:
            raise TypeError("this BandedCorr has no bias input")
        out = T.TensorType("float32", (x.broadcastable[0], False, False, False))()
        return theano.graph.basic.Apply(self, inputs, [out])

    def infer_shape(self, fgraph, node, shapes):
        n, h, w, _ = shapes[0]
        grow = 2 * self.pad - self.k + 1
        return [(n, h + grow, w + grow, shapes[1][1])]

    def grad(self, inputs, grads):
        x, w = inputs[0], inputs[1]
        (g,) = grads
        k, p = self.k, self.pad
        if self.relu:
            g = T.switch(T.gt(self(*inputs), 0), g, 0)
        if self.edge:
            # The same result with the padding made explicit: zero-pad gradients.
            xp = _pad_edge_nhwc(x, p)
            plain = BandedCorr(k, 0, False, False, self.strategy, self.has_bias)(xp, *inputs[1:])
            return theano.grad(None, inputs, known_grads={plain: g})
        c, o = x.shape[3], w.shape[1]
        back = BandedCorr(k, k - 1 - p, False, False, "auto", has_bias=False)
        gx = back(g, _flipped_transposed(w, k, c, o))
        gw, gb = BandedCorrGradW(k, p)(x, g)
        return [gx, gw, gb] if self.has_bias else [gx, gw]

    def c_code_cache_version(self):
        return _C_VERSION

    def c_code(self, node, name, inputs, outputs, sub):
        x, w = inputs[0], inputs[1]
        b = inputs[2] if self.has_bias else None
        (y,) = outputs
        fail = sub["fail"]
        cleanup = "Py_XDECREF(xc_); Py_XDECREF(wc_); Py_XDECREF(bc_); free(wt_);"
        failc = cleanup + fail
        get_b = (f"bc_ = (PyArrayObject*)PyArray_FromAny((PyObject*){b}, PyArray_DescrFromType("
                 f"NPY_FLOAT32), 1, 1, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED, NULL);"
                 f" if (bc_ == NULL) {{ {failc} }}") if b else ""
        return f"""{{
        PyArrayObject *xc_ = NULL, *wc_ = NULL, *bc_ = NULL;
        float* wt_ = NULL;
        {{
        {self._contiguous("xc_", x, 4, failc)}
        {self._contiguous("wc_", w, 2, failc)}
        {get_b}
        srcnn_fwd_t a_;
        a_.N = PyArray_DIMS(xc_)[0]; a_.H = PyArray_DIMS(xc_)[1];
        a_.W = PyArray_DIMS(xc_)[2]; a_.C = PyArray_DIMS(xc_)[3];
        a_.K = {self.k}; a_.P = {self.pad}; a_.O = PyArray_DIMS(wc_)[1];
        a_.edge = {int(self.edge)}; a_.relu = {int(self.relu)};
        const int K = a_.K, C = a_.C, O = a_.O;
        a_.Ho = a_.H + 2 * a_.P - K + 1; a_.Wo = a_.W + 2 * a_.P - K + 1; a_.Wp = a_.Wo + K - 1;
        if (PyArray_DIMS(wc_)[0] != K * K * C) {{
            PyErr_Format(PyExc_ValueError, "BandedCorr: w has %ld rows, need k*k*C = %d",
                         (long)PyArray_DIMS(wc_)[0], K * K * C);
            {failc}
        }}
        if (bc_ != NULL && PyArray_DIMS(bc_)[0] != O) {{
            PyErr_Format(PyExc_ValueError, "BandedCorr: b has %ld values, need %d",
                         (long)PyArray_DIMS(bc_)[0], O);
            {failc}
        }}
        if (a_.Ho < 1 || a_.Wo < 1) {{
            PyErr_Format(PyExc_ValueError, "BandedCorr: image %dx%d too small for a %dx%d kernel",
                         a_.H, a_.W, K, K);
            {failc}
        }}
        {self._alloc_code(y, "a_.N, a_.Ho, a_.Wo, O", 4, failc)}
        a_.mode = srcnn_mode("{self.strategy}", K, C, O, 0);
        const long Wp = a_.Wp, Wo = a_.Wo, KK = (long)K * K * C, TO = (long)K * K * O;
        if (a_.mode == 0) a_.R = srcnn_band_rows({BAND_BYTES}, 0, Wo * (C + O) * 4, a_.Ho);
        else {{ {_BAND_ROWS_C} }}
        a_.x = (const float*)PyArray_DATA(xc_); a_.w = (const float*)PyArray_DATA(wc_);
        a_.b = bc_ ? (const float*)PyArray_DATA(bc_) : NULL; a_.y = (float*)PyArray_DATA({y});
        if (a_.mode == 3) {{  /* wt[t*O + o, c] = w[t*C + c, o] */
            wt_ = srcnn_alloc((size_t)C * TO);
            if (wt_ == NULL) {{ PyErr_NoMemory(); {failc} }}
            for (int t = 0; t < K * K; ++t)
            for (int c = 0; c < C; ++c)
            for (int o = 0; o < O; ++o) wt_[((size_t)t * O + o) * C + c] = a_.w[((size_t)t * C + c) * O + o];
        }}
        a_.wt = wt_;
        int err_;
        Py_BEGIN_ALLOW_THREADS
        err_ = srcnn_fwd_run(&a_);
        Py_END_ALLOW_THREADS
        if (err_) {{ PyErr_NoMemory(); {failc} }}
        {cleanup}
        }}
        }}"""


class BandedCorrGradW(_BandedOp):
    """Gradient of a zero-padded :class:`BandedCorr` with respect to its kernel matrix.

    Inputs x ``(N, H, W, C)`` and g ``(N, Ho, Wo, O)`` (the gradient of the
    correlation's output, before bias and activation); outputs the kernel's
    gradient ``(k*k*C, O)``: ``sum over n, i, j of x[n, i+dy-pad, j+dx-pad, c] *
    g[n, i, j, o]`` in row ``(dy*k + dx)*C + c``, and the bias's ``(O,)``,
    ``sum over n, i, j of g[n, i, j, o]`` (summed while each band of g is in
    the cache). Bands as in the forward op; each band's products are added
    into the result (``beta = 1``).
    """

    __props__ = ("k", "pad", "strategy")

    def __init__(self, k, pad, strategy="auto"):
        self.k, self.pad, self.strategy = int(k), int(pad), str(strategy)
        self._check()

    def make_node(self, x, g):
        x = self._as_float4(x, "x")
        g = self._as_float4(g, "g")
        return theano.graph.basic.Apply(self, [x, g], [T.matrix(dtype="float32"),
                                                       T.vector(dtype="float32")])

    def infer_shape(self, fgraph, node, shapes):
        return [(self.k * self.k * shapes[0][3], shapes[1][3]), (shapes[1][3],)]

    def grad(self, inputs, grads):
        raise NotImplementedError("BandedCorrGradW has no gradient (no second derivatives)")

    def c_code_cache_version(self):
        return _C_VERSION

    def c_code(self, node, name, inputs, outputs, sub):
        x, g = inputs
        dw, db = outputs
        fail = sub["fail"]
        cleanup = "Py_XDECREF(xc_); Py_XDECREF(gc_);"
        failc = cleanup + fail
        return f"""{{
        PyArrayObject *xc_ = NULL, *gc_ = NULL;
        {{
        {self._contiguous("xc_", x, 4, failc)}
        {self._contiguous("gc_", g, 4, failc)}
        srcnn_gw_t a_;
        a_.N = PyArray_DIMS(xc_)[0]; a_.H = PyArray_DIMS(xc_)[1];
        a_.W = PyArray_DIMS(xc_)[2]; a_.C = PyArray_DIMS(xc_)[3];
        a_.K = {self.k}; a_.P = {self.pad}; a_.O = PyArray_DIMS(gc_)[3];
        const int K = a_.K, C = a_.C, O = a_.O;
        a_.Ho = a_.H + 2 * a_.P - K + 1; a_.Wo = a_.W + 2 * a_.P - K + 1; a_.Wp = a_.Wo + K - 1;
        if (PyArray_DIMS(gc_)[0] != a_.N || PyArray_DIMS(gc_)[1] != a_.Ho
            || PyArray_DIMS(gc_)[2] != a_.Wo) {{
            PyErr_Format(PyExc_ValueError, "BandedCorrGradW: g is %ldx%ldx%ld, need %dx%dx%d",
                         (long)PyArray_DIMS(gc_)[0], (long)PyArray_DIMS(gc_)[1],
                         (long)PyArray_DIMS(gc_)[2], a_.N, a_.Ho, a_.Wo);
            {failc}
        }}
        {self._alloc_code(dw, "(npy_intp)K * K * C, O", 2, failc)}
        {self._alloc_code(db, "O", 1, failc)}
        a_.mode = srcnn_mode("{self.strategy}", K, C, O, 1);
        const long Wp = a_.Wp, Wo = a_.Wo, KK = (long)K * K * C, TO = (long)K * K * O;
        if (a_.mode == 0) a_.R = a_.Ho;
        else {{ {_BAND_ROWS_C} }}
        a_.x = (const float*)PyArray_DATA(xc_); a_.g = (const float*)PyArray_DATA(gc_);
        int err_;
        float* dwd_ = (float*)PyArray_DATA({dw});
        float* dbd_ = (float*)PyArray_DATA({db});
        Py_BEGIN_ALLOW_THREADS
        err_ = srcnn_gw_run(&a_, dwd_, dbd_);
        Py_END_ALLOW_THREADS
        if (err_) {{ PyErr_NoMemory(); {failc} }}
        {cleanup}
        }}
        }}"""
