/*
 * sknitro/_vnni.c: the pair products of _pairs.h on AVX-512 VNNI: VPDPWSSD does a whole
 * acc += a0 * b0 + a1 * b1 in each of 16 int32 lanes. Compiled for AVX-512 VNNI only;
 * vnni_kernels.supported() says whether the CPU runs them.
 */
#include "_pairs.h"

#include <stdlib.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define HAVE_VNNI_BUILD 1
#include <immintrin.h>
#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#else
#define HAVE_VNNI_BUILD 0
#endif

#if HAVE_VNNI_BUILD

static int vnni_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}

/* acc += pairwise products of a and b. Inline assembly, because GCC copies the accumulator
 * of the intrinsic to a new register at every step, which halves the throughput. */
#define DP(acc, a, b) __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))
#define DP4(r, a, b0, b1, b2, b3) DP(r##0, a, b0); DP(r##1, a, b1); DP(r##2, a, b2); DP(r##3, a, b3)

/* 16 vectors -> one vector of their horizontal sums: lane i is the sum of v[i]'s lanes. */
VNNI_TARGET static inline __m512i horizontal_sums(const __m512i v[16])
{
    __m512i s8[8], s4[4], s2[2];
    for (int i = 0; i < 8; i++)
        s8[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]),
                                 _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; i++)
        s4[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(s8[2 * i], s8[2 * i + 1]),
                                 _mm512_unpackhi_epi64(s8[2 * i], s8[2 * i + 1]));
    for (int i = 0; i < 2; i++)
        s2[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(s4[2 * i], s4[2 * i + 1], 0x88),
                                 _mm512_shuffle_i32x4(s4[2 * i], s4[2 * i + 1], 0xDD));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(s2[0], s2[1], 0x88), _mm512_shuffle_i32x4(s2[0], s2[1], 0xDD));
}

/* 16 lanes of x from its int8 row p, at unit o: int16 pairs (x[2o..2o+31], pairs) or input
 * units (x[o..o+15]); `left` units remain in the row (fewer than 16: the end, masked). */
VNNI_TARGET static inline __m512i load_x(const int8_t *p, ptrdiff_t o, const int pairs, ptrdiff_t left)
{
    if (pairs) {
        __m256i bytes = left >= 16 ? _mm256_loadu_si256((const __m256i *)(p + 2 * o))
                                   : _mm256_maskz_loadu_epi8((__mmask32)((1ull << (2 * left)) - 1), p + 2 * o);
        return _mm512_cvtepi8_epi16(bytes);
    }
    __m128i bytes = left >= 16 ? _mm_loadu_si128((const __m128i *)(p + o))
                               : _mm_maskz_loadu_epi8((__mmask16)((1u << left) - 1), p + o);
    __m512i v = _mm512_cvtepi8_epi32(bytes); /* input_unit: (x & 0xFFFF) | (256 x) << 16 */
    return _mm512_or_si512(_mm512_and_si512(v, _mm512_set1_epi32(0xFFFF)), _mm512_slli_epi32(v, 24));
}

/* The 16 dot products of int8 rows x[0..3] and unit rows w[0..3] over units [start, end), in
 * int32 lanes (sums[4 r + c] for x[r] . w[c]). Its own function (one per form of x), with the
 * accumulators in locals only, so that the compiler keeps all 16 in registers. */
VNNI_TARGET static inline __attribute__((always_inline)) void dot_4x4(const int8_t *const x[4],
                                                                      const int32_t *const w[4], ptrdiff_t start,
                                                                      ptrdiff_t end, __m512i *sums, const int pairs)
{
    const int8_t *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];
    const int32_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0,
            c0 = a0, c1 = a0, c2 = a0, c3 = a0, d0 = a0, d1 = a0, d2 = a0, d3 = a0;
/* One step of 16 units at offset o; LOAD(p) reads 16 int32 of w at p (whole, or masked at the end). */
#define DOT_STEP(LOAD, LEFT)                                                                       \
    do {                                                                                           \
        __m512i W0 = LOAD(w0 + o), W1 = LOAD(w1 + o), W2 = LOAD(w2 + o), W3 = LOAD(w3 + o);       \
        __m512i X = load_x(x0, o, pairs, LEFT);                                                    \
        DP4(a, X, W0, W1, W2, W3);                                                                 \
        X = load_x(x1, o, pairs, LEFT);                                                            \
        DP4(b, X, W0, W1, W2, W3);                                                                 \
        X = load_x(x2, o, pairs, LEFT);                                                            \
        DP4(c, X, W0, W1, W2, W3);                                                                 \
        X = load_x(x3, o, pairs, LEFT);                                                            \
        DP4(d, X, W0, W1, W2, W3);                                                                 \
    } while (0)
#define LOAD_WHOLE(p) _mm512_loadu_si512(p)
#define LOAD_MASKED(p) _mm512_maskz_loadu_epi32(mask, p)
    ptrdiff_t o = start;
    for (; o + 16 <= end; o += 16)
        DOT_STEP(LOAD_WHOLE, 16);
    if (o < end) {
        __mmask16 mask = (__mmask16)((1u << (end - o)) - 1);
        DOT_STEP(LOAD_MASKED, end - o);
    }
#undef DOT_STEP
    sums[0] = a0, sums[1] = a1, sums[2] = a2, sums[3] = a3, sums[4] = b0, sums[5] = b1, sums[6] = b2, sums[7] = b3;
    sums[8] = c0, sums[9] = c1, sums[10] = c2, sums[11] = c3, sums[12] = d0, sums[13] = d1, sums[14] = d2, sums[15] = d3;
}

VNNI_TARGET __attribute__((noinline)) static void dot_4x4_pairs(const int8_t *const x[4], const int32_t *const w[4],
                                                                ptrdiff_t start, ptrdiff_t end, __m512i *sums)
{
    dot_4x4(x, w, start, end, sums, 1);
}

VNNI_TARGET __attribute__((noinline)) static void dot_4x4_units(const int8_t *const x[4], const int32_t *const w[4],
                                                                ptrdiff_t start, ptrdiff_t end, __m512i *sums)
{
    dot_4x4(x, w, start, end, sums, 0);
}

/* One 4 x 4 tile of z: rows i0.. of x against rows j0.. of w, both contiguous along k. The
 * int32 lanes hold partial sums over `chunk` units at a time (the caller proves that those
 * fit int32); the chunks add up in int64, and z saturates to the int32 range. */
VNNI_TARGET static void product_tile(const int8_t *x, const int32_t *w_units, const product_out_t *out, ptrdiff_t m,
                                     ptrdiff_t n, ptrdiff_t k, ptrdiff_t chunk, ptrdiff_t i0, ptrdiff_t j0, int pairs,
                                     const outliers_t *outliers, const ptrdiff_t *row_start)
{
    ptrdiff_t row = pairs ? 2 * k : k; /* int8 values per row of x */
    const int8_t *const xs[4] = {x + clamp_row(i0, m) * row, x + clamp_row(i0 + 1, m) * row,
                                 x + clamp_row(i0 + 2, m) * row, x + clamp_row(i0 + 3, m) * row};
    const int32_t *const ws[4] = {w_units + clamp_row(j0, n) * k, w_units + clamp_row(j0 + 1, n) * k,
                                  w_units + clamp_row(j0 + 2, n) * k, w_units + clamp_row(j0 + 3, n) * k};
    __m512i lanes[16];
    if (chunk >= k && i0 + 3 < m && j0 + 3 < n && !(row_start && row_start[j0] < row_start[j0 + 4])) {
        /* the common tile: whole rows in int32, no outliers, all 16 sums inside z: they are z */
        if (pairs)
            dot_4x4_pairs(xs, ws, 0, k, lanes);
        else
            dot_4x4_units(xs, ws, 0, k, lanes);
        __m512i sums = horizontal_sums(lanes);
        int32_t *z = out->z + (i0 - out->row0) * n + j0;
        _mm_storeu_si128((__m128i *)z, _mm512_castsi512_si128(sums));
        _mm_storeu_si128((__m128i *)(z + n), _mm512_extracti32x4_epi32(sums, 1));
        _mm_storeu_si128((__m128i *)(z + 2 * n), _mm512_extracti32x4_epi32(sums, 2));
        _mm_storeu_si128((__m128i *)(z + 3 * n), _mm512_extracti32x4_epi32(sums, 3));
        return;
    }
    __m512i total_low = _mm512_setzero_si512(), total_high = total_low; /* int64 sums of tiles 0-7, 8-15 */
    for (ptrdiff_t start = 0; start < k; start += chunk) {
        ptrdiff_t end = start + chunk < k ? start + chunk : k;
        if (pairs)
            dot_4x4_pairs(xs, ws, start, end, lanes);
        else
            dot_4x4_units(xs, ws, start, end, lanes);
        __m512i sums = horizontal_sums(lanes); /* lane 4 r + c: z[i0 + r, j0 + c] over this chunk */
        total_low = _mm512_add_epi64(total_low, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(sums)));
        total_high = _mm512_add_epi64(total_high, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(sums, 1)));
    }
    if (row_start && row_start[j0] < row_start[j0 + 4 < n ? j0 + 4 : n]) {
        int64_t totals[16];
        _mm512_storeu_si512((void *)totals, total_low);
        _mm512_storeu_si512((void *)(totals + 8), total_high);
        pairs_add_outliers(totals, 4, x, row, outliers, row_start, m, n, i0, j0);
        total_low = _mm512_loadu_si512((const void *)totals);
        total_high = _mm512_loadu_si512((const void *)(totals + 8));
    }
    int32_t sums[16];
    _mm256_storeu_si256((__m256i *)sums, _mm512_cvtsepi64_epi32(total_low)); /* saturating */
    _mm256_storeu_si256((__m256i *)(sums + 8), _mm512_cvtsepi64_epi32(total_high));
    __mmask8 columns = (__mmask8)(n - j0 >= 4 ? 0xF : (1u << (n - j0)) - 1);
    for (int r = 0; r < 4 && i0 + r < m; r++)
        _mm_mask_storeu_epi32(out->z + (i0 + r - out->row0) * n + j0, columns,
                              _mm_loadu_si128((const __m128i *)(sums + 4 * r)));
}

/* tdiv(v, d) in each lane for |v| < 2**31: the multiply and shift of _fused.c, on the even
 * and the odd lanes in turn (VPMULUDQ multiplies the low halves of 64-bit lanes). */
VNNI_TARGET static inline __m512i tdiv_lanes(__m512i v, divisor_t d)
{
    const __m512i multiplier = _mm512_set1_epi64(d.multiplier);
    const __m128i shift = _mm_cvtsi32_si128(d.shift);
    __m512i magnitude = _mm512_abs_epi32(v);
    __m512i even = _mm512_srl_epi64(_mm512_mul_epu32(magnitude, multiplier), shift);
    __m512i odd = _mm512_srl_epi64(_mm512_mul_epu32(_mm512_srli_epi64(magnitude, 32), multiplier), shift);
    __m512i quotient = _mm512_mask_blend_epi32((__mmask16)0xAAAA, even, _mm512_slli_epi64(odd, 32));
    const __m512i zero = _mm512_setzero_si512();
    return _mm512_mask_sub_epi32(quotient, _mm512_cmplt_epi32_mask(v, zero), zero, quotient);
}

#define UPDATE_COLUMNS 64 /* columns of w per tile of the update */

/* Applies the update to 16 columns of a row of w (starting at flat index `at`) from their
 * gradient g, and writes the new values' split units, or their pair form and outliers;
 * returns the lanes' |w| for the running maximum. */
VNNI_TARGET static inline __m512i update_lanes(int32_t *w, int32_t *w_units, int16_t *w_pairs,
                                               outliers_t *outliers, ptrdiff_t at, __mmask16 mask, __m512i g,
                                               divisor_t lr, int decays, divisor_t decay)
{
    __m512i old = _mm512_maskz_loadu_epi32(mask, w + at);
    __m512i step = tdiv_lanes(g, lr);
    /* the decay term is 0 where |w| < decay: most vectors skip its division */
    if (decays && _mm512_cmpge_epu32_mask(_mm512_abs_epi32(old), _mm512_set1_epi32((int32_t)decay.d)))
        step = _mm512_add_epi32(step, tdiv_lanes(old, decay));
    __m512i updated = _mm512_sub_epi32(old, step);
    _mm512_mask_storeu_epi32(w + at, mask, updated);
    if (w_units) {
        __m512i units = _mm512_or_si512(_mm512_and_si512(updated, _mm512_set1_epi32(0xFF)),
                                        _mm512_slli_epi32(_mm512_srai_epi32(updated, 8), 16));
        _mm512_mask_storeu_epi32(w_units + at, mask, units);
    } else {
        __m256i pairs = _mm512_cvtsepi32_epi16(updated); /* saturating */
        _mm256_mask_storeu_epi16(w_pairs + at, mask, pairs);
        __mmask16 cut = _mm512_mask_cmpneq_epi32_mask(mask, updated, _mm512_cvtepi16_epi32(pairs));
        if (cut) { /* rare: a weight past int16 */
            int32_t values[16];
            _mm512_storeu_si512((void *)values, updated);
            for (int lane = 0; lane < 16; lane++)
                if (cut >> lane & 1)
                    pairs_add_outlier(outliers, at + lane, values[lane]);
        }
    }
    return _mm512_maskz_abs_epi32(mask, updated);
}

/* The lanes of the first `left` of 64 columns, 16 per vector. */
static inline void column_masks(ptrdiff_t left, __mmask16 mask[4])
{
    for (int c = 0; c < 4; c++, left -= 16)
        mask[c] = left >= 16 ? (__mmask16)0xFFFF : (left <= 0 ? 0 : (__mmask16)((1u << left) - 1));
}

/* Prefetches the `columns` int32 (and, where written, the split units' or pair form's) from
 * flat index `at` of w. */
VNNI_TARGET static inline void prefetch_row(const tile_update_t *t, ptrdiff_t at, int columns)
{
    for (int c = 0; c < columns; c += 16) {
        _mm_prefetch((const char *)(t->w + at + c), _MM_HINT_T0);
        if (t->w_units)
            _mm_prefetch((const char *)(t->w_units + at + c), _MM_HINT_T0);
        else if (c % 32 == 0)
            _mm_prefetch((const char *)(t->w_pairs + at + c), _MM_HINT_T0);
    }
}

VNNI_TARGET static void gradient_tile(const int32_t *delta_units, ptrdiff_t stride, const int32_t *x_tile,
                                      int32_t *g, ptrdiff_t n, ptrdiff_t first, ptrdiff_t last, tile_update_t *apply)
{
    const __m512i zero = _mm512_setzero_si512();
    __m512i largest = zero;
    __mmask16 mask[4];
    if (apply)
        column_masks(apply->k - apply->k0, mask);
    for (ptrdiff_t j0 = 0; j0 < n; j0 += 4) {
        const int32_t *e = delta_units + j0; /* e[row * stride + r]: delta's unit (row, j0 + r) */
        int32_t *g0 = g + j0 * UPDATE_COLUMNS, *g1 = g0 + UPDATE_COLUMNS, *g2 = g1 + UPDATE_COLUMNS,
                *g3 = g2 + UPDATE_COLUMNS;
#define LOAD4(r, p) __m512i r##0 = apply ? zero : _mm512_loadu_si512(p), \
                            r##1 = apply ? zero : _mm512_loadu_si512(p + 16), \
                            r##2 = apply ? zero : _mm512_loadu_si512(p + 32), \
                            r##3 = apply ? zero : _mm512_loadu_si512(p + 48)
#define STORE4(r, p) _mm512_storeu_si512(p, r##0); _mm512_storeu_si512(p + 16, r##1); \
                     _mm512_storeu_si512(p + 32, r##2); _mm512_storeu_si512(p + 48, r##3)
#define APPLY4(r, i) if (j0 + i < n) { \
            ptrdiff_t at = (apply->first_row + j0 + i) * apply->k + apply->k0; \
            largest = _mm512_max_epu32(largest, update_lanes(apply->w, apply->w_units, apply->w_pairs, \
                apply->outliers, at, mask[0], r##0, apply->lr, apply->decays, apply->decay)); \
            largest = _mm512_max_epu32(largest, update_lanes(apply->w, apply->w_units, apply->w_pairs, \
                apply->outliers, at + 16, mask[1], r##1, apply->lr, apply->decays, apply->decay)); \
            largest = _mm512_max_epu32(largest, update_lanes(apply->w, apply->w_units, apply->w_pairs, \
                apply->outliers, at + 32, mask[2], r##2, apply->lr, apply->decays, apply->decay)); \
            largest = _mm512_max_epu32(largest, update_lanes(apply->w, apply->w_units, apply->w_pairs, \
                apply->outliers, at + 48, mask[3], r##3, apply->lr, apply->decays, apply->decay)); }
        if (apply) /* these 4 rows of w in the next tile, while this one is summed */
            for (ptrdiff_t i = j0; i < j0 + 4 && i < n; i++)
                prefetch_row(apply, (apply->first_row + i) * apply->k + apply->k0 + UPDATE_COLUMNS, UPDATE_COLUMNS);
        LOAD4(a, g0);
        LOAD4(b, g1);
        LOAD4(c, g2);
        LOAD4(d, g3);
        const int32_t *x = x_tile;
        for (ptrdiff_t row = first; row < last; row++, x += UPDATE_COLUMNS) {
            __m512i X0 = _mm512_loadu_si512(x), X1 = _mm512_loadu_si512(x + 16), X2 = _mm512_loadu_si512(x + 32),
                    X3 = _mm512_loadu_si512(x + 48);
            DP4(a, _mm512_set1_epi32(e[row * stride + 0]), X0, X1, X2, X3);
            DP4(b, _mm512_set1_epi32(e[row * stride + 1]), X0, X1, X2, X3);
            DP4(c, _mm512_set1_epi32(e[row * stride + 2]), X0, X1, X2, X3);
            DP4(d, _mm512_set1_epi32(e[row * stride + 3]), X0, X1, X2, X3);
        }
        if (apply) {
            APPLY4(a, 0);
            APPLY4(b, 1);
            APPLY4(c, 2);
            APPLY4(d, 3);
        } else {
            STORE4(a, g0);
            STORE4(b, g1);
            STORE4(c, g2);
            STORE4(d, g3);
        }
#undef LOAD4
#undef STORE4
#undef APPLY4
    }
    if (apply)
        apply->largest = (int64_t)(uint32_t)_mm512_reduce_max_epu32(largest);
}

VNNI_TARGET static int64_t update_tile(const int32_t *g, int32_t *w, int32_t *w_units, int16_t *w_pairs,
                                       outliers_t *outliers, ptrdiff_t n, ptrdiff_t k, ptrdiff_t k0, divisor_t lr,
                                       int decays, divisor_t decay)
{
    __m512i largest = _mm512_setzero_si512();
    __mmask16 mask[4];
    column_masks(k - k0, mask);
    for (ptrdiff_t j = 0; j < n; j++)
        for (int c = 0; c < 4 && mask[c]; c++)
            largest = _mm512_max_epu32(largest, update_lanes(w, w_units, w_pairs, outliers, j * k + k0 + 16 * c,
                                                             mask[c], _mm512_loadu_si512(g + j * UPDATE_COLUMNS + 16 * c),
                                                             lr, decays, decay));
    return (int64_t)(uint32_t)_mm512_reduce_max_epu32(largest);
}

/* input_unit of each value, 16 lanes at a time (load_x), zero past `width`. */
VNNI_TARGET static void pack_units(const int8_t *values, int32_t *packed, ptrdiff_t width, ptrdiff_t columns)
{
    for (ptrdiff_t c = 0; c < columns; c += 16)
        _mm512_storeu_si512(packed + c, c < width ? load_x(values, c, 0, width - c) : _mm512_setzero_si512());
}

/* The narrow kernels (_pairs.h): outputs in the lanes, one broadcast input unit per step. */
VNNI_TARGET static void narrow_product(const int32_t *x_units, ptrdiff_t kpad, const int32_t *wt, ptrdiff_t npad,
                                       int32_t *z, ptrdiff_t rows, ptrdiff_t n, ptrdiff_t k, const divisor_t *scale,
                                       int8_t *scaled)
{
    for (ptrdiff_t j = 0; j < n; j += 16) {
        __m512i acc[NARROW_ROWS];
        for (int r = 0; r < NARROW_ROWS; r++)
            acc[r] = _mm512_setzero_si512();
        for (ptrdiff_t c = 0; c < k; c++) {
            __m512i W = _mm512_loadu_si512(wt + c * npad + j);
            for (int r = 0; r < NARROW_ROWS; r++) /* rows past `rows`: never stored */
                DP(acc[r], _mm512_set1_epi32(x_units[r * kpad + c]), W);
        }
        __mmask16 mask = (__mmask16)(n - j >= 16 ? 0xFFFF : (1u << (n - j)) - 1);
        for (ptrdiff_t r = 0; r < rows; r++) {
            if (!scale) {
                _mm512_mask_storeu_epi32(z + r * n + j, mask, acc[r]);
                continue;
            }
            /* nitro_scale32: tdiv, then the int8 clip to +-127 */
            __m512i q = _mm512_min_epi32(_mm512_max_epi32(tdiv_lanes(acc[r], *scale), _mm512_set1_epi32(-127)),
                                         _mm512_set1_epi32(127));
            _mm_mask_storeu_epi8(scaled + r * n + j, mask, _mm512_cvtepi32_epi8(q));
        }
    }
}

VNNI_TARGET static void narrow_gradient(const int32_t *delta, ptrdiff_t n, const int32_t *x_units, ptrdiff_t kpad,
                                        ptrdiff_t rows, uint32_t *gt, ptrdiff_t npad, int paired)
{
    for (ptrdiff_t j = 0; j < n; j += 16) {
        __mmask16 mask = (__mmask16)(n - j >= 16 ? 0xFFFF : (1u << (n - j)) - 1);
        for (ptrdiff_t c0 = 0; c0 < kpad; c0 += NARROW_K_BLOCK) {
            __m512i acc[NARROW_K_BLOCK];
            for (int c = 0; c < NARROW_K_BLOCK; c++)
                acc[c] = _mm512_setzero_si512();
            for (ptrdiff_t r = 0; r < rows; r++) {
                __m512i d = _mm512_maskz_loadu_epi32(mask, delta + r * n + j);
                __m512i units = paired ? d /* else split_unit, lane by lane */
                    : _mm512_or_si512(_mm512_and_si512(d, _mm512_set1_epi32(0xFF)),
                                      _mm512_slli_epi32(_mm512_srai_epi32(d, 8), 16));
                const int32_t *x_row = x_units + r * kpad + c0;
                for (int c = 0; c < NARROW_K_BLOCK; c++)
                    DP(acc[c], units, _mm512_set1_epi32(x_row[c]));
            }
            for (int c = 0; c < NARROW_K_BLOCK; c++) {
                uint32_t *g = gt + (c0 + c) * npad + j;
                _mm512_storeu_si512(g, _mm512_add_epi32(_mm512_loadu_si512(g), acc[c]));
            }
        }
    }
}

VNNI_TARGET static int vnni_product(const int8_t *x, const int32_t *w_units, const product_out_t *out, ptrdiff_t m,
                                    ptrdiff_t n, ptrdiff_t units, ptrdiff_t chunk, int pairs,
                                    const outliers_t *outliers)
{
    if (!pairs && units < NARROW_UNITS && chunk >= units)
        return pairs_run_narrow_product(narrow_product, pack_units, 16, x, w_units, out, m, n, units);
    return pairs_run_product(product_tile, 4, x, w_units, out, m, n, units, chunk, pairs, outliers);
}

VNNI_TARGET static int64_t vnni_sgd_update(const int32_t *delta, const int8_t *x, int32_t *w,
                                           int32_t *w_units, int16_t *w_pairs, outliers_t *outliers, ptrdiff_t n,
                                           ptrdiff_t batch, ptrdiff_t k, divisor_t lr, int decays, divisor_t decay,
                                           int sums_fit_int32)
{
    if (k < NARROW_UNITS) /* checks its own sums */
        return pairs_run_narrow_update(narrow_gradient, pack_units, 16, delta, x, w, w_units, w_pairs, outliers, n,
                                       batch, k, lr, decays, decay);
    return pairs_run_sgd_update(gradient_tile, update_tile, pack_units, UPDATE_COLUMNS, delta, x, w, w_units, w_pairs, outliers,
                            n, batch, k, lr, decays, decay, sums_fit_int32);
}

const pair_kernels_t vnni_kernels = {"vnni", vnni_supported, vnni_product, vnni_sgd_update};

#else /* no VNNI build: the kernels say the CPU cannot run them, and are never called */

static int vnni_unsupported(void)
{
    return 0;
}

const pair_kernels_t vnni_kernels = {"vnni", vnni_unsupported, NULL, NULL};

#endif
