/* The C code of srcnn_theano/network/banded_corr.py (see its docstring): bands, scratch
   blocks, the products' strategies and the threads over bands. Theano compiles it into
   each op's module after its BLAS declarations (sgemm_). */
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

/* 0 dot, 1 im2col (transposed), 2 shift, 3 tapsum, 4 im2col (pixel-major), 5 direct
   (forward only; the weight gradient takes tapsum); grad: the weight-gradient op's choice. */
static int srcnn_mode(const char* strategy, int K, int C, int O, int grad) {
    if (!strcmp(strategy, "auto")) {
        if (K == 1) return 0;
        if (C < 8) return 1;
        if (O < 8) return grad ? 3 : 5;
        return 2;
    }
    if (!strcmp(strategy, "dot")) return K == 1 ? 0 : 1;
    if (!strcmp(strategy, "im2col")) return C < 8 ? 1 : 4;
    if (!strcmp(strategy, "shift")) return 2;
    if (!strcmp(strategy, "direct") && !grad) return 5;
    return 3;
}

/* 16 floats; aligned(4): loads and stores at any float address. The compiler maps it to
   one AVX-512 register, two AVX ones or four SSE ones. */
typedef float srcnn_v16 __attribute__((vector_size(64), aligned(4)));

/* The 16 lanes' sum, halves added pairwise (a tree: 4 dependent adds, not 16). Plain
   arrays, not __builtin_shufflevector (GCC 12 and later only): compilers turn this into
   shuffles. */
static inline float srcnn_hsum(srcnn_v16 v) {
    float a[16], h[8];
    memcpy(a, &v, sizeof a);
    for (int l = 0; l < 8; ++l) h[l] = a[l] + a[l + 8];
    for (int l = 0; l < 4; ++l) h[l] = h[l] + h[l + 4];
    return (h[0] + h[2]) + (h[1] + h[3]);
}

/* Direct (few output channels, conv3): output pixel (r, j), channel o is the sum over dy
   of one dot product of k*C floats, S's window of row r + dy from pixel j (the k pixels
   dx = 0..k-1 of a pixel-major row are adjacent), with the kernel's rows dy*k*C ..
   (wt: O x k*k*C, transposed). SRCNN_DIRECT neighbouring pixels share each kernel load
   and give the FMA units as many independent sums; each pixel's sum is kept in 16
   lanes over all k rows and added up once. */
#define SRCNN_DIRECT 8
static void srcnn_direct_band(const float* S, const float* wt, int rows, int Wo, int Wp,
                              int C, int K, int O, float* yb) {
    const int KC = K * C, V = KC / 16 * 16;
    for (int o = 0; o < O; ++o)
    for (int r = 0; r < rows; ++r) {
        const float* wo = wt + (size_t)o * K * KC;
        float* yr = yb + (size_t)r * Wo * O + o;
        for (int j = 0; j < Wo; j += SRCNN_DIRECT) {
            const int np = SRCNN_MIN(SRCNN_DIRECT, Wo - j);
            srcnn_v16 v[SRCNN_DIRECT];
            float t[SRCNN_DIRECT];
            for (int p = 0; p < SRCNN_DIRECT; ++p) { v[p] = (srcnn_v16){0}; t[p] = 0.0f; }
            for (int dy = 0; dy < K; ++dy) {
                const float* s = S + ((size_t)(r + dy) * Wp + j) * C;
                const float* wd = wo + (size_t)dy * KC;
                if (np == SRCNN_DIRECT) {  /* eight sums in registers, spelled out */
                    srcnn_v16 a0 = v[0], a1 = v[1], a2 = v[2], a3 = v[3];
                    srcnn_v16 a4 = v[4], a5 = v[5], a6 = v[6], a7 = v[7];
                    const float *s0 = s, *s1 = s + C, *s2 = s + 2 * C, *s3 = s + 3 * C;
                    const float *s4 = s + 4 * C, *s5 = s + 5 * C, *s6 = s + 6 * C, *s7 = s + 7 * C;
                    for (int i = 0; i < V; i += 16) {
                        const srcnn_v16 wv = *(const srcnn_v16*)(wd + i);
                        a0 += *(const srcnn_v16*)(s0 + i) * wv; a1 += *(const srcnn_v16*)(s1 + i) * wv;
                        a2 += *(const srcnn_v16*)(s2 + i) * wv; a3 += *(const srcnn_v16*)(s3 + i) * wv;
                        a4 += *(const srcnn_v16*)(s4 + i) * wv; a5 += *(const srcnn_v16*)(s5 + i) * wv;
                        a6 += *(const srcnn_v16*)(s6 + i) * wv; a7 += *(const srcnn_v16*)(s7 + i) * wv;
                    }
                    v[0] = a0; v[1] = a1; v[2] = a2; v[3] = a3;
                    v[4] = a4; v[5] = a5; v[6] = a6; v[7] = a7;
                } else {
                    for (int i = 0; i < V; i += 16) {
                        const srcnn_v16 wv = *(const srcnn_v16*)(wd + i);
                        for (int p = 0; p < np; ++p)
                            v[p] += *(const srcnn_v16*)(s + i + (size_t)p * C) * wv;
                    }
                }
                for (int i = V; i < KC; ++i)
                    for (int p = 0; p < np; ++p) t[p] += s[i + (size_t)p * C] * wd[i];
            }
            for (int p = 0; p < np; ++p) yr[(size_t)(j + p) * O] = srcnn_hsum(v[p]) + t[p];
        }
    }
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
    /* a fused second 1x1 layer (w2 != NULL): y2 = act2(y @ w2 + b2), O2 channels; then
       y is scratch and the op's output is y2 */
    int O2, relu2;
    const float *w2, *b2;
    /* a mask (m != NULL, shaped as y): y = m > 0 ? y : 0 */
    const float* m;
    /* with a fused second layer: where the first layer's output goes too (or NULL) */
    float* y1;
} srcnn_fwd_t;

/* Floats of the product scratch Z one band of the forward op needs. */
static size_t srcnn_fwd_zlen(const srcnn_fwd_t* a) {
    const int R = a->R, K = a->K, C = a->C, O = a->O, Wp = a->Wp, Wo = a->Wo;
    const size_t KK = (size_t)K * K * C;
    if (a->mode == 0) return 0;
    if (a->mode == 1 || a->mode == 4) return (size_t)R * Wo * KK;
    if (a->mode == 2) return (size_t)R * Wp * O;
    if (a->mode == 5) return 0;
    return (size_t)((R + K - 1) * Wp + K) * K * K * O + Wo;
}

/* Scratch floats one thread needs for the forward op: S block; product (and, with a fused
   second layer, the band's first-layer output after it, 64-byte aligned). */
static void srcnn_fwd_sizes(const srcnn_fwd_t* a, size_t* s_len, size_t* z_len) {
    *s_len = a->mode == 0 ? 0 : (size_t)(a->R + a->K - 1) * a->Wp * a->C + (size_t)a->K * a->C;
    *z_len = srcnn_fwd_zlen(a);
    if (a->w2 != NULL) *z_len = (*z_len + 15) / 16 * 16 + (size_t)a->R * a->Wo * a->O;
}

/* v (cnt x O) += b (when given), then max(0, .) when relu. */
static void srcnn_bias_relu(float* v, size_t cnt, int O, const float* b, int relu) {
    if (b == NULL && !relu) return;
    for (size_t i = 0; i < cnt; ++i, v += O) {
        if (b != NULL) for (int o = 0; o < O; ++o) v[o] += b[o];
        if (relu) for (int o = 0; o < O; ++o) v[o] = v[o] > 0.0f ? v[o] : 0.0f;
    }
}

/* Output rows y0 .. y0 + rows - 1 of image n. */
static void srcnn_fwd_band(const srcnn_fwd_t* a, int n, int y0, float* S, float* Z) {
    const int H = a->H, W = a->W, C = a->C, K = a->K, P = a->P, O = a->O;
    const int Ho = a->Ho, Wo = a->Wo, Wp = a->Wp, mode = a->mode;
    const int rows = SRCNN_MIN(a->R, Ho - y0);
    const long KK = (long)K * K * C;
    const float* xn = a->x + (size_t)n * H * W * C;
    float* yb = a->w2 == NULL ? a->y + ((size_t)n * Ho + y0) * Wo * O
                : a->y1 != NULL ? a->y1 + ((size_t)n * Ho + y0) * Wo * O
                : Z + (srcnn_fwd_zlen(a) + 15) / 16 * 16;
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
        } else if (mode == 5) {
            srcnn_direct_band(S, a->wt, rows, Wo, Wp, C, K, O, yb);
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
    /* bias and ReLU while the band is in the cache; then the fused 1x1 layer */
    srcnn_bias_relu(yb, (size_t)rows * Wo, O, a->b, a->relu);
    if (a->m != NULL) {
        const float* mb = a->m + ((size_t)n * Ho + y0) * Wo * O;
        for (size_t i = 0; i < (size_t)rows * Wo * O; ++i) yb[i] = mb[i] > 0.0f ? yb[i] : 0.0f;
    }
    if (a->w2 != NULL) {
        float* y2 = a->y + ((size_t)n * Ho + y0) * Wo * a->O2;
        srcnn_gemm_nn(rows * Wo, a->O2, O, yb, O, a->w2, a->O2, 0.0f, y2, a->O2);
        srcnn_bias_relu(y2, (size_t)rows * Wo, a->O2, a->b2, a->relu2);
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
        /* Dynamic: a thread whose core is busy (upscale's helper threads) takes fewer
           bands. Each band's output depends only on its own products: the same result. */
        #pragma omp for schedule(dynamic, 1)
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

/* acc (O) += the column sums of v (cnt x O): each band's sum in float, added in double. */
static void srcnn_colsum(const float* v, size_t cnt, int O, double* acc) {
    float part[64];
    for (int o0 = 0; o0 < O; o0 += 64) {
        const int no = SRCNN_MIN(64, O - o0);
        for (int o = 0; o < no; ++o) part[o] = 0.0f;
        for (size_t i = 0; i < cnt; ++i)
            for (int o = 0; o < no; ++o) part[o] += v[i * O + o0 + o];
        for (int o = 0; o < no; ++o) acc[o0 + o] += part[o];
    }
}

/* Adds band (n, y0)'s terms, gb its rows of g, to dw (k*k*C x O; for tapsum Z, k*k*O x C)
   and acc (O). */
static void srcnn_gw_band(const srcnn_gw_t* a, int n, int y0, const float* gb, float* S,
                          float* Z, float* G, float* dw, double* acc) {
    const int H = a->H, W = a->W, C = a->C, K = a->K, P = a->P, O = a->O;
    const int Ho = a->Ho, Wo = a->Wo, Wp = a->Wp, mode = a->mode;
    const int rows = SRCNN_MIN(a->R, Ho - y0);
    const long KK = (long)K * K * C;
    const int TO = K * K * O;
    const float* xn = a->x + (size_t)n * H * W * C;
    srcnn_colsum(gb, (size_t)rows * Wo, O, acc);   /* the bias's gradient */
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

/* ---- a 1x1 layer's backward pass and the weight gradient of the layer before it ---- */
typedef struct {
    srcnn_gw_t c1;             /* the first layer's weight gradient (its g unused) */
    const float *y1, *g2, *w2t; /* y1 (N, Ho, Wo, O1) after the ReLU, g2 (N, Ho, Wo, O2),
                                   w2t (O2 x O1): the 1x1 kernel of the input gradient */
    int O2;
} srcnn_bd_t;

/* dw2 (O1 x O2) = y1^T g2 and db2 = sum g2 (the 1x1 layer); g1 = (g2 w2t) where y1 > 0,
   band by band in the cache, and from it dw1, db1 (the first layer, srcnn_gw_band): the
   O1-channel g1 is never written out. Without g2 (O2 = 0): the first layer's weight
   gradient alone, of its own g (srcnn_gw_run). Each thread adds into its own sums, which
   are then added in thread order (the same order in every run: the result is
   deterministic). 0, or -1 out of memory. */
static int srcnn_bd_run(const srcnn_bd_t* a, float* dw1, float* db1, float* dw2, float* db2) {
    const srcnn_gw_t* c1 = &a->c1;
    const int nb = (c1->Ho + c1->R - 1) / c1->R, units = c1->N * nb;
    const int K = c1->K, C = c1->C, O1 = c1->O, O2 = a->O2, Ho = c1->Ho, Wo = c1->Wo;
    const size_t len1 = (size_t)K * K * C * O1, len2 = (size_t)O1 * O2, per = len1 + len2;
    size_t s_len, z_len, g_len;
    srcnn_gw_sizes(c1, &s_len, &z_len, &g_len);
    const size_t b_len = a->g2 != NULL ? (size_t)c1->R * Wo * O1 : 0;
    int nth = srcnn_threads();
    if (nth > units) nth = units > 0 ? units : 1;
    float* sums = srcnn_alloc(per * nth);
    double* accs = (double*)calloc((size_t)(O1 + O2) * nth + 1, sizeof(double));
    if (sums == NULL || accs == NULL) { free(sums); free(accs); return -1; }
    memset(sums, 0, per * nth * sizeof(float));
    int err = 0;
    #pragma omp parallel num_threads(nth) if(nth > 1)
    {
        const int tid = omp_get_thread_num(), many = omp_get_num_threads() > 1;
        const int prev = many ? srcnn_blas_local(1) : 0;
        float* S = s_len ? srcnn_alloc(s_len) : NULL;
        float* Z = z_len ? srcnn_alloc(z_len) : NULL;
        float* G = g_len ? srcnn_alloc(g_len) : NULL;
        float* B = b_len ? srcnn_alloc(b_len) : NULL;
        const int ok = !((s_len && S == NULL) || (z_len && Z == NULL) || (g_len && G == NULL)
                         || (b_len && B == NULL));
        if (!ok) {
            #pragma omp atomic write
            err = -1;
        }
        float *mine1 = sums + per * tid, *mine2 = mine1 + len1;
        double *acc1 = accs + (size_t)(O1 + O2) * tid, *acc2 = acc1 + O1;
        if (ok && c1->mode == 3) memset(Z, 0, z_len * sizeof(float));
        #pragma omp for schedule(static)
        for (int u = 0; u < units; ++u) {
            if (!ok) continue;
            const int n = u / nb, y0 = (u % nb) * c1->R, rows = SRCNN_MIN(c1->R, Ho - y0);
            const size_t off = ((size_t)n * Ho + y0) * Wo, cnt = (size_t)rows * Wo;
            if (a->g2 == NULL) {
                srcnn_gw_band(c1, n, y0, c1->g + off * O1, S, Z, G, mine1, acc1);
                continue;
            }
            const float *gb2 = a->g2 + off * O2, *yb1 = a->y1 + off * O1;
            srcnn_gemm_tn(O1, O2, (int)cnt, yb1, O1, gb2, O2, 1.0f, mine2, O2);
            srcnn_colsum(gb2, cnt, O2, acc2);
            srcnn_gemm_nn((int)cnt, O1, O2, gb2, O2, a->w2t, O1, 0.0f, B, O1);
            for (size_t i = 0; i < cnt * O1; ++i) B[i] = yb1[i] > 0.0f ? B[i] : 0.0f;
            srcnn_gw_band(c1, n, y0, B, S, Z, G, mine1, acc1);
        }
        if (ok && c1->mode == 3) {  /* dw[t*C + c, o] = Zt[t*O + o, c] */
            for (int t = 0; t < K * K; ++t)
            for (int c = 0; c < C; ++c)
            for (int o = 0; o < O1; ++o) mine1[((size_t)t * C + c) * O1 + o] = Z[((size_t)t * O1 + o) * C + c];
        }
        free(S); free(Z); free(G); free(B);
        if (many) srcnn_blas_local(prev);
    }
    if (err == 0) {
        memcpy(dw1, sums, len1 * sizeof(float));
        if (len2) memcpy(dw2, sums + len1, len2 * sizeof(float));
        for (int t = 1; t < nth; ++t) {
            for (size_t i = 0; i < len1; ++i) dw1[i] += sums[per * t + i];
            for (size_t i = 0; i < len2; ++i) dw2[i] += sums[per * t + len1 + i];
        }
        for (int o = 0; o < O1 + O2; ++o) {
            double v = 0.0;
            for (int t = 0; t < nth; ++t) v += accs[(size_t)(O1 + O2) * t + o];
            if (o < O1) db1[o] = (float)v; else db2[o - O1] = (float)v;
        }
    }
    free(sums); free(accs);
    return err;
}

/* The weight gradient of one layer (srcnn_bd_run without a second layer). */
static int srcnn_gw_run(const srcnn_gw_t* a, float* dwd, float* dbd) {
    srcnn_bd_t b;
    b.c1 = *a; b.y1 = NULL; b.g2 = NULL; b.w2t = NULL; b.O2 = 0;
    return srcnn_bd_run(&b, dwd, dbd, NULL, NULL);
}
