/* The inner loops of the MATLAB-parity image stages, in C.
 *
 * Each loop computes the same float64 products and sums, in the same order,
 * as the expression its Python caller documents, so the results are the
 * same bits: compiled without contraction into fused multiply-adds
 * (-ffp-contract=off) and without reassociation (no -ffast-math). Arrays
 * are addressed by byte strides, so numpy views (crops, interleaved
 * channels, planes) are read and written where they are.
 *
 * Loaded by srcnn_theano/image/loops.py with ctypes, which releases the GIL
 * around each call: the threads of the upscale pipeline run these side by
 * side with the network.
 */
#include <stdint.h>
#include <string.h>

#define AT(base, type, offset) (*(type *)((char *)(base) + (offset)))

/* Each exported loop is compiled twice on x86-64, for AVX2 and for the
 * baseline, and the loader picks the one the CPU runs (GCC's function
 * multiversioning): one library serves every machine that shares the cache
 * folder. Vectors change no result here: every lane does the same IEEE
 * operations as the scalar code (and no FMA: -ffp-contract=off).
 * -DCLONED= builds the baseline alone (the tests compare the two). */
#ifndef CLONED
#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define CLONED __attribute__((target_clones("avx2", "default")))
#endif
#endif
#endif
#ifndef CLONED
#define CLONED
#endif

/* Resampling along the rows of contiguous float64 planes (C, H, W):
 *   out[p, i, x] = w[i, 0] * in[p, idx[i, 0], x] + w[i, 1] * in[p, idx[i, 1], x] + ...
 * taps summed one after another; out is (C, n_out, W), contiguous. */
CLONED void resize_rows(const double *in, double *out, long planes, long in_rows, long cols,
                 const double *w, const int64_t *idx, long n_out, long taps)
{
    for (long p = 0; p < planes; p++) {
        const double *src = in + p * in_rows * cols;
        for (long i = 0; i < n_out; i++) {
            double *dst = out + (p * n_out + i) * cols;
            const double w0 = w[i * taps];
            const double *r0 = src + idx[i * taps] * cols;
            for (long x = 0; x < cols; x++)
                dst[x] = r0[x] * w0;
            for (long j = 1; j < taps; j++) {
                const double wj = w[i * taps + j];
                const double *rj = src + idx[i * taps + j] * cols;
                for (long x = 0; x < cols; x++)
                    dst[x] = dst[x] + rj[x] * wj;
            }
        }
    }
}

/* Resampling along the columns of contiguous float64 rows (R, W):
 *   out[r, i] = w[i, 0] * in[r, idx[i, 0]] + w[i, 1] * in[r, idx[i, 1]] + ...
 * out is (R, n_out), contiguous. */
static inline void cols_taps(const double *src, double *dst, long n_out, const double *w,
                             const int64_t *idx, long taps)
{
    for (long i = 0; i < n_out; i++) {
        const double *wi = w + i * taps;
        const int64_t *ii = idx + i * taps;
        double acc = src[ii[0]] * wi[0];
        for (long j = 1; j < taps; j++)
            acc = acc + src[ii[j]] * wi[j];
        dst[i] = acc;
    }
}

CLONED void resize_cols(const double *in, double *out, long rows, long in_cols,
                 const double *w, const int64_t *idx, long n_out, long taps)
{
    for (long r = 0; r < rows; r++) {
        /* A constant tap count (4: every enlargement) unrolls the sum. */
        if (taps == 4)
            cols_taps(in + r * in_cols, out + r * n_out, n_out, w, idx, 4);
        else
            cols_taps(in + r * in_cols, out + r * n_out, n_out, w, idx, taps);
    }
}

/* Three linear combinations of three float64 channels (rgb2ycbcr, ycbcr2rgb):
 *   out_p = t[3p] * c0 + t[3p + 1] * c1 + t[3p + 2] * c2 + off[p]
 * summed left to right. Channel k of pixel (y, x) is at
 * in + k * ics + y * irs + x * ixs (bytes); out likewise. */
CLONED void lincomb3(long h, long w, const double *in, long ics, long irs, long ixs,
              double *out, long ocs, long ors, long oxs, const double *t, const double *off)
{
    for (long y = 0; y < h; y++) {
        const char *row = (const char *)in + y * irs;
        char *orow = (char *)out + y * ors;
        if (ixs == sizeof(double) && oxs == sizeof(double)) {   /* planes: vectorized */
            const double *c0 = (const double *)row, *c1 = (const double *)(row + ics),
                         *c2 = (const double *)(row + 2 * ics);
            for (int p = 0; p < 3; p++) {
                double *o = (double *)(orow + p * ocs);
                const double t0 = t[3 * p], t1 = t[3 * p + 1], t2 = t[3 * p + 2], d = off[p];
                for (long x = 0; x < w; x++)
                    o[x] = c0[x] * t0 + c1[x] * t1 + c2[x] * t2 + d;
            }
            continue;
        }
        for (long x = 0; x < w; x++) {
            const long i = x * ixs, o = x * oxs;
            const double c0 = AT(row, double, i), c1 = AT(row, double, i + ics),
                         c2 = AT(row, double, i + 2 * ics);
            for (int p = 0; p < 3; p++)
                AT(orow, double, o + p * ocs) = c0 * t[3 * p] + c1 * t[3 * p + 1]
                                                + c2 * t[3 * p + 2] + off[p];
        }
    }
}

/* Float -> unsigned integer samples (im2uint8 / im2uint16), element (a, b, c) at
 * in + a * is0 + b * is1 + c * is2 (bytes), out likewise:
 *   v = min(max(x, 0), 1) * peak;  out = floor(v) + (v - floor(v) >= 0.5)
 * in the input's float type (NaN gives 0). v >= 0, so floor(v) is the
 * truncation to an integer, exactly. Rows are converted through a small
 * contiguous buffer, so that the arithmetic runs on vectors whatever the
 * strides. */
#define CHUNK 512
#define FROM_FLOAT(NAME, FLOAT, UINT)                                                    \
static inline __attribute__((always_inline)) void                                      \
NAME##_row(long n, const char *in, long is, char *out, long os, FLOAT peak)             \
{                                                                                        \
    FLOAT x[CHUNK];                                                                      \
    UINT q[CHUNK];                                                                       \
    for (long c0 = 0; c0 < n; c0 += CHUNK) {                                             \
        const long m = n - c0 < CHUNK ? n - c0 : CHUNK;                                  \
        if (is == (long)sizeof(FLOAT))                                                   \
            memcpy(x, in + c0 * is, m * sizeof(FLOAT));                                  \
        else                                                                             \
            for (long k = 0; k < m; k++)                                                 \
                x[k] = *(const FLOAT *)(in + (c0 + k) * is);                             \
        for (long k = 0; k < m; k++) {                                                   \
            FLOAT v = x[k] > 0 ? x[k] : 0;   /* NaN -> 0 */                              \
            v = (v < 1 ? v : 1) * peak;                                                  \
            const int whole = (int)v;                                                    \
            q[k] = (UINT)(whole + (v - (FLOAT)whole >= (FLOAT)0.5));                     \
        }                                                                                \
        if (os == (long)sizeof(UINT))                                                    \
            memcpy(out + c0 * os, q, m * sizeof(UINT));                                  \
        else                                                                             \
            for (long k = 0; k < m; k++)                                                 \
                *(UINT *)(out + (c0 + k) * os) = q[k];                                   \
    }                                                                                    \
}                                                                                        \
CLONED void NAME(long n0, long n1, long n2, const FLOAT *in, long is0, long is1, long is2,      \
          void *out, long os0, long os1, long os2, FLOAT peak)                           \
{                                                                                        \
    for (long a = 0; a < n0; a++)                                                        \
        for (long b = 0; b < n1; b++)                                                    \
            NAME##_row(n2, (const char *)in + a * is0 + b * is1, is2,                    \
                       (char *)out + a * os0 + b * os1, os2, peak);                      \
}

FROM_FLOAT(float64_to_uint8, double, uint8_t)
FROM_FLOAT(float64_to_uint16, double, uint16_t)
FROM_FLOAT(float32_to_uint8, float, uint8_t)
FROM_FLOAT(float32_to_uint16, float, uint16_t)
