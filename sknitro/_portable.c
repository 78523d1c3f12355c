/*
 * sknitro/_portable.c: the elementwise passes of the CPU training step, in portable C99
 * (and the vector extension that GCC and Clang share, for the heads' sums).
 *
 * On the CPU the "c" kernels' matrix products run on float64 BLAS when a bound proves them
 * exact (algorithm.md section 9), so they arrive here as float64 arrays holding integers.
 * NumPy would need one pass per operation to convert, divide (truncated division is four
 * passes), clip, update and scan them; these loops do each job in one pass. The learning
 * heads, whose products are tiny, run whole in int32 loops instead. Every loop computes
 * exactly what the NumPy reference computes, integer for integer, with the rules of
 * _rules.h; tests/c/test_portable.c holds them to naive int64 arithmetic, on x86-64 and on
 * aarch64 (under QEMU).
 */
#include "_portable.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Each hot loop is compiled for AVX-512 and AVX2 too; the loader picks the best the CPU has.
 * A build with SKNITRO_PORTABLE_ARCH defined (an x86-64 level, say
 * -DSKNITRO_PORTABLE_ARCH=x86-64-v3) compiles them for that level only: the loops a CPU of
 * that level runs, on any CPU that runs them (benchmarks/bench_kernels.py times the AVX2
 * kernels so on an AVX-512 CPU). */
#define STRINGIFY_(tokens) #tokens
#define STRINGIFY(tokens) STRINGIFY_(tokens)
#if defined(SKNITRO_PORTABLE_ARCH)
#define PORTABLE_TARGET "arch=" STRINGIFY(SKNITRO_PORTABLE_ARCH)
#define MULTIVERSION __attribute__((target(PORTABLE_TARGET)))
#elif HAVE_MULTIVERSION
#define PORTABLE_TARGET "arch=x86-64-v4,arch=x86-64-v3,default" /* one string: GCC splits it at the commas */
#define MULTIVERSION __attribute__((target_clones(PORTABLE_TARGET)))
#else
#define PORTABLE_TARGET "default"
#define MULTIVERSION
#endif

const char *const portable_target = PORTABLE_TARGET;

MULTIVERSION
void scale_loop(const double *restrict z, int8_t *restrict out, ptrdiff_t n, double limit, divisor_t d)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        /* |z| >= 128 * SF saturates anyway: clamping first keeps the division in 32 bits */
        double v = z[i] > limit ? limit : (z[i] < -limit ? -limit : z[i]);
        out[i] = nitro_scale32((int32_t)v, d);
    }
}

MULTIVERSION
void scale_loop_int32(const int32_t *restrict z, int8_t *restrict out, ptrdiff_t n, divisor_t d)
{
    for (ptrdiff_t i = 0; i < n; i++)
        out[i] = nitro_scale32(z[i], d);
}

/* out = tdiv(g * table[pre], d) for any int32 g and 0 <= table <= d: a vectorized pass in
 * 32 bits, and a second, exact pass in 64 bits in the rare batch where some product left
 * int32 (then |out| <= |g| still fits). */
MULTIVERSION
void backward_loop(const int32_t *restrict g, const int8_t *restrict pre, const int32_t *restrict table,
                   int32_t *restrict out, ptrdiff_t n, int64_t d, divisor_t divisor)
{
    int64_t largest = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        int64_t product = (int64_t)g[i] * table[(uint8_t)pre[i]];
        largest = magnitude64(product) > largest ? magnitude64(product) : largest;
        out[i] = tdiv32((int32_t)product, divisor);
    }
    if (largest > INT32_MAX)
        for (ptrdiff_t i = 0; i < n; i++)
            out[i] = (int32_t)(((int64_t)g[i] * table[(uint8_t)pre[i]]) / d); /* C division truncates */
}

/* The column sums of |a| for an int32 matrix (rows, cols), in `sums` (cols of them);
 * returns max |a[i, j]|. */
MULTIVERSION
int64_t column_magnitudes(const int32_t *restrict a, int64_t *restrict sums, ptrdiff_t rows, ptrdiff_t cols)
{
    for (ptrdiff_t j = 0; j < cols; j++)
        sums[j] = 0;
    int64_t largest = 0;
    for (ptrdiff_t i = 0; i < rows; i++)
        for (ptrdiff_t j = 0; j < cols; j++) {
            int64_t magnitude = magnitude64(a[i * cols + j]);
            sums[j] += magnitude;
            largest = magnitude > largest ? magnitude : largest;
        }
    return largest;
}

MULTIVERSION
int64_t update_loop(int32_t *restrict w, const double *restrict g, double *restrict mirror, ptrdiff_t n,
                    divisor_t lr, int decays, divisor_t decay)
{
    int64_t largest = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        int64_t value = sgd_rule(w[i], (int32_t)g[i], lr, decays, decay);
        w[i] = (int32_t)value;
        if (mirror)
            mirror[i] = (double)value;
        largest = magnitude64(value) > largest ? magnitude64(value) : largest;
    }
    return largest;
}

/* A learning head, whole: z = x W^T, yhat = clip(tdiv(z, SF)), e = yhat - target,
 * input_grad = e W (the weights before the update), G = e^T x, W -= tdiv(G, lr) + decay.
 * Heads have few outputs (the classes), so their products are small enough that plain
 * int32 loops beat a round trip through float64 BLAS; the caller proves that every sum fits
 * int32. z sums HEAD_ROWS rows of x at a time with the classes in the lanes (W transposed in
 * `scratch`, zero past the classes), the input gradient HEAD_ROWS rows of e with the features
 * in the lanes: dot products along a head's short rows spent their time on horizontal sums
 * and remainders. The loops are in _head_loop.h, once per vector width. */
#define HEAD_ROWS 4
/* The work (batch * classes * features) from which a head's loops run on the OpenMP threads:
 * a compact CNN's heads, 64 x 10 x 1024, take about 60 microseconds on one thread. */
#define HEAD_PARALLEL_WORK ((int64_t)1 << 18)

/* `count` int32 from p into the vector v (all of it when count fills it: one load), zero
 * past them; and the first `count` lanes of v back to p. */
#define HEAD_LOAD(v, p, count)                                                                     \
    do {                                                                                           \
        if ((size_t)(count) * sizeof(int32_t) >= sizeof(v)) {                                      \
            memcpy(&(v), (p), sizeof(v));                                                          \
        } else {                                                                                   \
            memset(&(v), 0, sizeof(v));                                                            \
            memcpy(&(v), (p), (size_t)(count) * sizeof(int32_t));                                  \
        }                                                                                          \
    } while (0)
#define HEAD_STORE(p, v, count)                                                                    \
    memcpy((p), &(v), (size_t)(count) * sizeof(int32_t) >= sizeof(v) ? sizeof(v) : (size_t)(count) * sizeof(int32_t))

#define HEAD_LOOP head_loop_lanes8
#define HEAD_WIDTH 8
#define HEAD_VECTOR head_lanes8_t
#define HEAD_TARGET MULTIVERSION
#include "_head_loop.h"
#undef HEAD_LOOP
#undef HEAD_WIDTH
#undef HEAD_VECTOR
#undef HEAD_TARGET

#if HAVE_HEAD_LOOP_LANES16
#define HEAD_LOOP head_loop_lanes16
#define HEAD_WIDTH 16
#define HEAD_VECTOR head_lanes16_t
#define HEAD_TARGET __attribute__((target("arch=x86-64-v4")))
#include "_head_loop.h"
#undef HEAD_LOOP
#undef HEAD_WIDTH
#undef HEAD_VECTOR
#undef HEAD_TARGET
#endif

int64_t head_loop(const int8_t *restrict x, int32_t *restrict w, const int8_t *restrict target,
                  int8_t *restrict yhat, int32_t *restrict input_grad, int32_t *restrict scratch,
                  int16_t *restrict error, ptrdiff_t batch, ptrdiff_t classes, ptrdiff_t features,
                  divisor_t scale, int32_t limit, divisor_t lr, int decays, divisor_t decay,
                  int64_t *squared_error)
{
#if HAVE_HEAD_LOOP_LANES16
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) /* AVX-512: 16 lanes in one register */
        return head_loop_lanes16(x, w, target, yhat, input_grad, scratch, error, batch, classes, features, scale,
                                 limit, lr, decays, decay, squared_error);
#endif
    return head_loop_lanes8(x, w, target, yhat, input_grad, scratch, error, batch, classes, features, scale, limit,
                            lr, decays, decay, squared_error);
}

MULTIVERSION
void lookup_loop(const int8_t *restrict table, const uint8_t *restrict x, int8_t *restrict out, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        out[i] = table[x[i]];
}

MULTIVERSION
void lookup_int8(const int8_t *restrict table, const int8_t *restrict x, int8_t *restrict out, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        out[i] = table[(uint8_t)x[i]];
}

/* One window position v of c channels against the running maxima b, recording position k in
 * a where v wins (strictly: the first maximum wins ties). Blocks of 16 channels of fixed
 * length, which compilers vectorize whatever the target's vector width (a map has 32 or 64
 * channels: one loop over c would not fill an AVX-512 vector). */
static inline void pool_position(const int8_t *restrict v, int8_t *restrict b, uint8_t *restrict a, ptrdiff_t c,
                                 uint8_t k)
{
    ptrdiff_t ch = 0;
    for (; ch + 16 <= c; ch += 16) {
        int8_t vv[16], bb[16];
        uint8_t aa[16];
        memcpy(vv, v + ch, 16);
        memcpy(bb, b + ch, 16);
        memcpy(aa, a + ch, 16);
        for (int t = 0; t < 16; t++) {
            uint8_t better = (uint8_t)-(vv[t] > bb[t]); /* all ones where v wins */
            aa[t] = (uint8_t)((aa[t] & ~better) | (k & better));
            bb[t] = vv[t] > bb[t] ? vv[t] : bb[t];
        }
        memcpy(b + ch, bb, 16);
        memcpy(a + ch, aa, 16);
    }
    for (; ch < c; ch++) {
        int better = v[ch] > b[ch];
        b[ch] = better ? v[ch] : b[ch];
        a[ch] = better ? k : a[ch];
    }
}

/* Max pooling (conv.MaxPool2d) of int8 maps laid out (n, h, w, c), windows kh x kw with
 * stride = window, ph (pw) rows (columns) of padding on both sides, floor mode: output rows
 * [first, last) of the n * ho rows (ho = (h + 2 ph) / kh, wo likewise), `best` (n, ho, wo, c)
 * and `argmax`, the window position di * kw + dj of the first maximum. Padding holds -128,
 * which a later position never beats: only at position 0 does it count (as the reference's). */
MULTIVERSION
void max_pool_rows(const int8_t *restrict x, int8_t *restrict best, uint8_t *restrict argmax, ptrdiff_t first,
                   ptrdiff_t last, ptrdiff_t h, ptrdiff_t w, ptrdiff_t c, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t ph,
                   ptrdiff_t pw)
{
    ptrdiff_t ho = (h + 2 * ph) / kh, wo = (w + 2 * pw) / kw;
    for (ptrdiff_t row = first; row < last; row++) {
        ptrdiff_t top = row % ho * kh - ph; /* the window's first row (maybe padding) */
        const int8_t *map = x + row / ho * h * w * c;
        for (ptrdiff_t j = 0; j < wo; j++) {
            ptrdiff_t left = j * kw - pw;
            int8_t *b = best + (row * wo + j) * c;
            uint8_t *a = argmax + (row * wo + j) * c;
            for (ptrdiff_t ch = 0; ch < c; ch++) {
                b[ch] = top >= 0 && left >= 0 ? map[(top * w + left) * c + ch] : INT8_MIN;
                a[ch] = 0;
            }
            for (ptrdiff_t di = 0; di < kh; di++)
                for (ptrdiff_t dj = di == 0; dj < kw; dj++)
                    if (top + di >= 0 && top + di < h && left + dj >= 0 && left + dj < w)
                        pool_position(map + ((top + di) * w + left + dj) * c, b, a, c, (uint8_t)(di * kw + dj));
        }
    }
}

/* The gradient through max_pool_rows for its rows [first, last): each window's delta at its
 * arg-max, 0 everywhere else in the rows of `out` (n, h, w, c) those windows span, and in the
 * rows below an image's last window (floor mode: no window covers them). So the rows of every
 * image are written whole, by the threads that own them. */
MULTIVERSION
void max_unpool_rows(const int32_t *restrict delta, const uint8_t *restrict argmax, int32_t *restrict out,
                     ptrdiff_t first, ptrdiff_t last, ptrdiff_t h, ptrdiff_t w, ptrdiff_t c, ptrdiff_t kh,
                     ptrdiff_t kw, ptrdiff_t ph, ptrdiff_t pw)
{
    ptrdiff_t ho = (h + 2 * ph) / kh, wo = (w + 2 * pw) / kw;
    for (ptrdiff_t row = first; row < last; row++) {
        ptrdiff_t image = row / ho, top = row % ho * kh - ph;
        /* the window row's span of map rows (and the rows below, after the last), zero first */
        ptrdiff_t from = top < 0 ? 0 : top, to = row % ho == ho - 1 ? h : (top + kh < h ? top + kh : h);
        if (from < to)
            memset(out + (image * h + from) * w * c, 0, (size_t)((to - from) * w * c) * sizeof(int32_t));
        for (ptrdiff_t j = 0; j < wo; j++) {
            ptrdiff_t left = j * kw - pw;
            const int32_t *d = delta + (row * wo + j) * c;
            const uint8_t *a = argmax + (row * wo + j) * c;
            for (ptrdiff_t k = 0; k < kh * kw; k++) {
                ptrdiff_t i = top + k / kw, jj = left + k % kw;
                if (i < 0 || i >= h || jj < 0 || jj >= w)
                    continue;
                int32_t *o = out + ((image * h + i) * w + jj) * c;
                for (ptrdiff_t ch = 0; ch < c; ch++)
                    o[ch] = a[ch] == k ? d[ch] : 0;
            }
        }
    }
}

/* The im2col patches (functional.im2col) of int8 maps laid out (n, h, w, c), k x k windows,
 * stride 1, `pad` zeros on every side: rows [first, last) of the n * ho * wo rows (ho = h +
 * 2 pad - k + 1), each k * k * c values in the order (kernel row, kernel column, channel). */
MULTIVERSION
void im2col_rows(const int8_t *restrict x, int8_t *restrict out, ptrdiff_t first, ptrdiff_t last, ptrdiff_t h,
                 ptrdiff_t w, ptrdiff_t c, ptrdiff_t k, ptrdiff_t pad)
{
    ptrdiff_t ho = h + 2 * pad - k + 1, wo = w + 2 * pad - k + 1;
    for (ptrdiff_t row = first; row < last; row++) {
        ptrdiff_t image = row / (ho * wo), i = row / wo % ho, j = row % wo;
        int8_t *dst = out + row * k * k * c;
        for (ptrdiff_t di = 0; di < k; di++, dst += k * c) {
            ptrdiff_t si = i + di - pad, sj = j - pad; /* the window row's first column */
            const int8_t *src = x + ((image * h + si) * w + sj) * c;
            if (si < 0 || si >= h) {
                memset(dst, 0, (size_t)(k * c));
            } else if (sj >= 0 && sj + k <= w) { /* the whole window row inside: k * c contiguous values */
                if (k * c >= 16)
                    memcpy(dst, src, (size_t)(k * c));
                else
                    for (ptrdiff_t t = 0; t < k * c; t++)
                        dst[t] = src[t];
            } else {
                for (ptrdiff_t dj = 0; dj < k; dj++)
                    for (ptrdiff_t ch = 0; ch < c; ch++)
                        dst[dj * c + ch] = sj + dj >= 0 && sj + dj < w ? src[dj * c + ch] : 0;
            }
        }
    }
}

/* The smallest and the largest of n int8 values (0 and 0 when n is 0). */
MULTIVERSION
void int8_range(const int8_t *restrict x, ptrdiff_t n, int8_t *lowest, int8_t *highest)
{
    int8_t low = n > 0 ? x[0] : 0, high = low;
    for (ptrdiff_t i = 0; i < n; i++) {
        low = x[i] < low ? x[i] : low;
        high = x[i] > high ? x[i] : high;
    }
    *lowest = low;
    *highest = high;
}

/* Dropout's output for the samples [first, end) of maps x laid out (n, positions, channels),
 * with a keep mask (0 or 1) in the maps' logical order (n, channels, positions): a sample's
 * mask, a few KiB, stays in cache while its positions read across it. The caller has checked
 * that every kept value fits the output (int8 or int16). */
#define DROPOUT_ROWS(name, out_t)                                                                                   \
    MULTIVERSION                                                                                                   \
    void name(const int8_t *restrict x, const uint8_t *restrict mask, out_t *restrict out, ptrdiff_t first,         \
              ptrdiff_t end, ptrdiff_t positions, ptrdiff_t channels, int32_t rescale)                             \
    {                                                                                                              \
        ptrdiff_t size = positions * channels;                                                                     \
        for (ptrdiff_t b = first; b < end; b++) {                                                                  \
            const int8_t *xb = x + b * size;                                                                       \
            const uint8_t *mb = mask + b * size;                                                                   \
            out_t *ob = out + b * size;                                                                            \
            if (channels == 1) /* both in one order */                                                             \
                for (ptrdiff_t i = 0; i < size; i++)                                                               \
                    ob[i] = (out_t)(dropout_kept(xb[i], rescale) * mb[i]);                                         \
            else                                                                                                   \
                for (ptrdiff_t p = 0; p < positions; p++)                                                          \
                    for (ptrdiff_t c = 0; c < channels; c++)                                                       \
                        ob[p * channels + c] = (out_t)(dropout_kept(xb[p * channels + c], rescale)                 \
                                                       * mb[c * positions + p]);                                   \
        }                                                                                                          \
    }
DROPOUT_ROWS(dropout_rows_int8, int8_t)
DROPOUT_ROWS(dropout_rows_int16, int16_t)
