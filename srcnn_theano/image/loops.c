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

#define CHUNK 512     /* samples a row is processed in: buffers stay in L1 */
#define INLINE static inline __attribute__((always_inline))

/* The one home of the colour formula: t[0] * c0 + t[1] * c1 + t[2] * c2 + off,
 * summed left to right (rgb2ycbcr, ycbcr2rgb). */
INLINE double lincomb(const double *t, double off, double c0, double c1, double c2)
{
    return c0 * t[0] + c1 * t[1] + c2 * t[2] + off;
}

/* The one home of the rounding to integer levels (im2uint8 / im2uint16):
 *   v = min(max(x, 0), 1) * peak;  level = floor(v) + (v - floor(v) >= 0.5)
 * in the input's float type (NaN gives 0). v >= 0, so floor(v) is the
 * truncation to an integer, exactly. */
#define LEVEL(NAME, FLOAT)                                                  \
INLINE int NAME(FLOAT x, FLOAT peak)                                        \
{                                                                           \
    FLOAT v = x > 0 ? x : 0;   /* NaN -> 0 */                               \
    v = (v < 1 ? v : 1) * peak;                                             \
    const int whole = (int)v;                                               \
    return whole + (v - (FLOAT)whole >= (FLOAT)0.5);                        \
}
LEVEL(level64, double)
LEVEL(level32, float)

/* m samples `stride` bytes apart as a contiguous array: in place when they are,
 * else copied into buf (so that the arithmetic runs on vectors). */
#define CONTIGUOUS(NAME, T)                                                 \
INLINE const T *NAME(const char *p, long stride, long m, T *buf)            \
{                                                                           \
    if (stride == (long)sizeof(T))                                          \
        return (const T *)p;                                                \
    for (long k = 0; k < m; k++)                                            \
        buf[k] = *(const T *)(p + k * stride);                              \
    return buf;                                                             \
}
CONTIGUOUS(contiguous64, double)
CONTIGUOUS(contiguous32, float)

/* m samples from q written `stride` bytes apart. */
#define SCATTER(NAME, T)                                                    \
INLINE void NAME(char *p, long stride, const T *q, long m)                  \
{                                                                           \
    if (stride == (long)sizeof(T))                                          \
        memcpy(p, q, m * sizeof(T));                                        \
    else                                                                    \
        for (long k = 0; k < m; k++)                                        \
            *(T *)(p + k * stride) = q[k];                                  \
}
SCATTER(scatter64, double)
SCATTER(scatter8, uint8_t)
SCATTER(scatter16, uint16_t)

/* Three linear combinations of three float64 channels (rgb2ycbcr, ycbcr2rgb):
 *   out_p = lincomb(t + 3p, off[p], c0, c1, c2)
 * Channel k of pixel (y, x) is at in + k * ics + y * irs + x * ixs (bytes);
 * out likewise. */
CLONED void lincomb3(long h, long w, const double *in, long ics, long irs, long ixs,
                     double *out, long ocs, long ors, long oxs, const double *t,
                     const double *off)
{
    double b0[CHUNK], b1[CHUNK], b2[CHUNK], q[CHUNK];
    for (long y = 0; y < h; y++) {
        const char *row = (const char *)in + y * irs;
        char *orow = (char *)out + y * ors;
        for (long x0 = 0; x0 < w; x0 += CHUNK) {
            const long m = w - x0 < CHUNK ? w - x0 : CHUNK;
            const char *at = row + x0 * ixs;
            const double *c0 = contiguous64(at, ixs, m, b0),
                         *c1 = contiguous64(at + ics, ixs, m, b1),
                         *c2 = contiguous64(at + 2 * ics, ixs, m, b2);
            for (int p = 0; p < 3; p++) {
                for (long k = 0; k < m; k++)
                    q[k] = lincomb(t + 3 * p, off[p], c0[k], c1[k], c2[k]);
                scatter64(orow + p * ocs + x0 * oxs, oxs, q, m);
            }
        }
    }
}

/* lincomb3 then the rounding to levels, in one pass (ycbcr2rgb into an image's
 * pixels): float64 channels in, uint8/uint16 out (strides as for lincomb3). */
#define LINCOMB3_TO(NAME, UINT, SCATTER)                                                 \
CLONED void NAME(long h, long w, const double *in, long ics, long irs, long ixs,         \
                 void *out, long ocs, long ors, long oxs, const double *t,               \
                 const double *off, double peak)                                        \
{                                                                                        \
    double b0[CHUNK], b1[CHUNK], b2[CHUNK];                                              \
    UINT q[CHUNK];                                                                       \
    for (long y = 0; y < h; y++) {                                                       \
        const char *row = (const char *)in + y * irs;                                    \
        char *orow = (char *)out + y * ors;                                              \
        for (long x0 = 0; x0 < w; x0 += CHUNK) {                                         \
            const long m = w - x0 < CHUNK ? w - x0 : CHUNK;                              \
            const char *at = row + x0 * ixs;                                             \
            const double *c0 = contiguous64(at, ixs, m, b0),                             \
                         *c1 = contiguous64(at + ics, ixs, m, b1),                       \
                         *c2 = contiguous64(at + 2 * ics, ixs, m, b2);                   \
            for (int p = 0; p < 3; p++) {                                                \
                for (long k = 0; k < m; k++)                                             \
                    q[k] = (UINT)level64(lincomb(t + 3 * p, off[p], c0[k], c1[k], c2[k]), \
                                         peak);                                          \
                SCATTER(orow + p * ocs + x0 * oxs, oxs, q, m);                           \
            }                                                                            \
        }                                                                                \
    }                                                                                    \
}
LINCOMB3_TO(lincomb3_to_uint8, uint8_t, scatter8)
LINCOMB3_TO(lincomb3_to_uint16, uint16_t, scatter16)

/* Float -> unsigned integer levels (from_float), element (a, b, c) at
 * in + a * is0 + b * is1 + c * is2 (bytes), out likewise. */
#define FROM_FLOAT(NAME, FLOAT, UINT, LEVEL, CONTIGUOUS, SCATTER)                        \
CLONED void NAME(long n0, long n1, long n2, const FLOAT *in, long is0, long is1,         \
                 long is2, void *out, long os0, long os1, long os2, FLOAT peak)          \
{                                                                                        \
    FLOAT b[CHUNK];                                                                      \
    UINT q[CHUNK];                                                                       \
    for (long a = 0; a < n0; a++)                                                        \
        for (long r = 0; r < n1; r++) {                                                  \
            const char *row = (const char *)in + a * is0 + r * is1;                      \
            char *orow = (char *)out + a * os0 + r * os1;                                \
            for (long c0 = 0; c0 < n2; c0 += CHUNK) {                                    \
                const long m = n2 - c0 < CHUNK ? n2 - c0 : CHUNK;                        \
                const FLOAT *x = CONTIGUOUS(row + c0 * is2, is2, m, b);                  \
                for (long k = 0; k < m; k++)                                             \
                    q[k] = (UINT)LEVEL(x[k], peak);                                      \
                SCATTER(orow + c0 * os2, os2, q, m);                                     \
            }                                                                            \
        }                                                                                \
}
FROM_FLOAT(float64_to_uint8, double, uint8_t, level64, contiguous64, scatter8)
FROM_FLOAT(float64_to_uint16, double, uint16_t, level64, contiguous64, scatter16)
FROM_FLOAT(float32_to_uint8, float, uint8_t, level32, contiguous32, scatter8)
FROM_FLOAT(float32_to_uint16, float, uint16_t, level32, contiguous32, scatter16)
