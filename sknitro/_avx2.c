/*
 * sknitro/_avx2.c: the pair products of _pairs.h on AVX2: VPMADDWD multiplies the int16
 * pairs of 8 int32 lanes and adds each pair's two products, VPADDD accumulates -- the same
 * integers as VNNI's VPDPWSSD, in two instructions on 8 lanes instead of one on 16.
 * AVX2 has 16 vector registers (AVX-512: 32), so the tiles are half the VNNI ones: 2 x 4
 * dot products in the forward, 4 rows x 16 columns of G in the update. Compiled for AVX2
 * only; avx2_kernels.supported() says whether the CPU runs them.
 */
#include "_pairs.h"

#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define HAVE_AVX2_BUILD 1
#include <immintrin.h>
#define AVX2_TARGET __attribute__((target("avx2")))
#else
#define HAVE_AVX2_BUILD 0
#endif

#if HAVE_AVX2_BUILD

static int avx2_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

/* acc += pairwise products of a and b (VPMADDWD, VPADDD). */
#define MADD(acc, a, b) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))

/* The first `left` lanes (all for left >= 8), as a mask of VPMASKMOVD. */
AVX2_TARGET static inline __m256i lanes_mask(ptrdiff_t left)
{
    int count = left >= 8 ? 8 : (left <= 0 ? 0 : (int)left);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* 8 vectors -> one vector of their horizontal sums: lane i is the sum of v[i]'s lanes. */
AVX2_TARGET static inline __m256i horizontal_sums(const __m256i v[8])
{
    __m256i s0123 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    __m256i s4567 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(s0123, s4567, 0x20),
                            _mm256_permute2x128_si256(s0123, s4567, 0x31));
}

/* PSHUFB indices that move bytes s..15 of a vector down to 0..15-s, zero above: the 16 from
 * shift_down + s. */
static const int8_t shift_down[32] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                      -128, -128, -128, -128, -128, -128, -128, -128,
                                      -128, -128, -128, -128, -128, -128, -128, -128};

/* 8 lanes of x from its int8 row p, at unit o: int16 pairs (x[2o..2o+15], pairs) or input
 * units (x[o..o+7]); `left` units remain in the row (fewer than 8: the end, zero past it). */
AVX2_TARGET static inline __m256i load_x(const int8_t *p, ptrdiff_t o, const int pairs, ptrdiff_t left)
{
    __m128i bytes;
    if (left >= 8) {
        bytes = pairs ? _mm_loadu_si128((const __m128i *)(p + 2 * o)) : _mm_loadl_epi64((const __m128i *)(p + o));
    } else if (o + left >= 8) {
        /* AVX2 has no masked byte load: the vector that ends where the values end, read
         * backwards (it starts inside the row), its last bytes moved to the front */
        ptrdiff_t count = pairs ? 2 * left : left, end = pairs ? 2 * (o + left) : o + left;
        __m128i last = pairs ? _mm_loadu_si128((const __m128i *)(p + end - 16))
                             : _mm_loadl_epi64((const __m128i *)(p + end - 8));
        bytes = _mm_shuffle_epi8(last, _mm_loadu_si128((const __m128i *)(shift_down + (pairs ? 16 : 8) - count)));
    } else { /* a row of fewer than 8 units */
        int8_t rest[16] = {0};
        memcpy(rest, pairs ? p + 2 * o : p + o, (size_t)(pairs ? 2 * left : left));
        bytes = _mm_loadu_si128((const __m128i *)rest);
    }
    if (pairs)
        return _mm256_cvtepi8_epi16(bytes);
    __m256i v = _mm256_cvtepi8_epi32(bytes); /* input_unit: (x & 0xFFFF) | (256 x) << 16 */
    return _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(v, 24));
}

/* The 8 dot products of int8 rows x[0..1] and unit rows w[0..3] over units [start, end), in
 * int32 lanes (sums[4 r + c] for x[r] . w[c]); the accumulators stay in registers. */
AVX2_TARGET static inline __attribute__((always_inline)) void dot_2x4(const int8_t *const x[2],
                                                                      const int32_t *const w[4], ptrdiff_t start,
                                                                      ptrdiff_t end, __m256i *sums, const int pairs)
{
    const int8_t *x0 = x[0], *x1 = x[1];
    const int32_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
#define DOT_STEP(LOAD, LEFT)                                                                       \
    do {                                                                                           \
        __m256i W0 = LOAD(w0 + o), W1 = LOAD(w1 + o), W2 = LOAD(w2 + o), W3 = LOAD(w3 + o);       \
        __m256i X = load_x(x0, o, pairs, LEFT);                                                    \
        MADD(a0, X, W0); MADD(a1, X, W1); MADD(a2, X, W2); MADD(a3, X, W3);                       \
        X = load_x(x1, o, pairs, LEFT);                                                            \
        MADD(b0, X, W0); MADD(b1, X, W1); MADD(b2, X, W2); MADD(b3, X, W3);                       \
    } while (0)
#define LOAD_WHOLE(p) _mm256_loadu_si256((const __m256i *)(p))
#define LOAD_MASKED(p) _mm256_maskload_epi32((const int *)(p), mask)
    ptrdiff_t o = start;
    for (; o + 8 <= end; o += 8)
        DOT_STEP(LOAD_WHOLE, 8);
    if (o < end) {
        __m256i mask = lanes_mask(end - o);
        DOT_STEP(LOAD_MASKED, end - o);
    }
#undef DOT_STEP
    sums[0] = a0, sums[1] = a1, sums[2] = a2, sums[3] = a3, sums[4] = b0, sums[5] = b1, sums[6] = b2, sums[7] = b3;
}

/* One 2 x 4 tile of z: rows i0.. of x against rows j0.. of w (see vnni.c's product_tile). */
AVX2_TARGET static void product_tile(const int8_t *x, const int32_t *w_units, const product_out_t *out, ptrdiff_t m,
                                     ptrdiff_t n, ptrdiff_t k, ptrdiff_t chunk, ptrdiff_t i0, ptrdiff_t j0, int pairs,
                                     const outliers_t *outliers, const ptrdiff_t *row_start)
{
    ptrdiff_t row = pairs ? 2 * k : k; /* int8 values per row of x */
    const int8_t *const xs[2] = {x + clamp_row(i0, m) * row, x + clamp_row(i0 + 1, m) * row};
    const int32_t *const ws[4] = {w_units + clamp_row(j0, n) * k, w_units + clamp_row(j0 + 1, n) * k,
                                  w_units + clamp_row(j0 + 2, n) * k, w_units + clamp_row(j0 + 3, n) * k};
    __m256i lanes[8];
    if (chunk >= k && i0 + 1 < m && j0 + 3 < n && !(row_start && row_start[j0] < row_start[j0 + 4])) {
        /* the common tile: whole rows in int32, no outliers, all 8 sums inside z: they are z
         * (2 stores of 4; the general epilogue's int64 and saturation cost as much as a fifth
         * of a first layer's forward) */
        if (pairs) /* one inlined copy per form of x (a call per tile cost a tenth of a forward) */
            dot_2x4(xs, ws, 0, k, lanes, 1);
        else
            dot_2x4(xs, ws, 0, k, lanes, 0);
        __m256i sums = horizontal_sums(lanes);
        int32_t *z = out->z + (i0 - out->row0) * n + j0;
        _mm_storeu_si128((__m128i *)z, _mm256_castsi256_si128(sums));
        _mm_storeu_si128((__m128i *)(z + n), _mm256_extracti128_si256(sums, 1));
        return;
    }
    __m256i total_low = _mm256_setzero_si256(), total_high = total_low; /* int64 sums of lanes 0-3, 4-7 */
    for (ptrdiff_t start = 0; start < k; start += chunk) {
        ptrdiff_t end = start + chunk < k ? start + chunk : k;
        if (pairs)
            dot_2x4(xs, ws, start, end, lanes, 1);
        else
            dot_2x4(xs, ws, start, end, lanes, 0);
        __m256i sums = horizontal_sums(lanes); /* lane 4 r + c: z[i0 + r, j0 + c] over this chunk */
        total_low = _mm256_add_epi64(total_low, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(sums)));
        total_high = _mm256_add_epi64(total_high, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(sums, 1)));
    }
    int64_t totals[8];
    _mm256_storeu_si256((__m256i *)totals, total_low);
    _mm256_storeu_si256((__m256i *)(totals + 4), total_high);
    if (row_start && row_start[j0] < row_start[j0 + 4 < n ? j0 + 4 : n])
        pairs_add_outliers(totals, 2, x, row, outliers, row_start, m, n, i0, j0);
    for (int r = 0; r < 2 && i0 + r < m; r++)
        for (int c = 0; c < 4 && j0 + c < n; c++)
            out->z[(i0 + r - out->row0) * n + j0 + c] = saturate_int32(totals[4 * r + c]);
}

/* tdiv(v, d) in each lane for |v| < 2**31 (tdiv32 of _rules.h): the multiply and shift on
 * the even and the odd lanes in turn (VPMULUDQ multiplies the low halves of 64-bit lanes). */
AVX2_TARGET static inline __m256i tdiv_lanes(__m256i v, divisor_t d)
{
    const __m256i multiplier = _mm256_set1_epi64x(d.multiplier);
    const __m128i shift = _mm_cvtsi32_si128(d.shift);
    __m256i magnitude = _mm256_abs_epi32(v);
    __m256i even = _mm256_srl_epi64(_mm256_mul_epu32(magnitude, multiplier), shift);
    __m256i odd = _mm256_srl_epi64(_mm256_mul_epu32(_mm256_srli_epi64(magnitude, 32), multiplier), shift);
    __m256i quotient = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    return _mm256_sign_epi32(quotient, v); /* -q where v < 0 (and q = 0 where v = 0) */
}

/* sgd_rule in each lane: old - tdiv(g, lr) - tdiv(old, decay) (the decay term only when
 * `decays`; it is 0 where |old| < decay, and most vectors skip its division). */
AVX2_TARGET static inline __m256i sgd_lanes(__m256i old, __m256i g, divisor_t lr, int decays, divisor_t decay)
{
    __m256i step = tdiv_lanes(g, lr);
    if (decays) {
        __m256i magnitude = _mm256_abs_epi32(old), threshold = _mm256_set1_epi32((int32_t)decay.d);
        __m256i reached = _mm256_cmpeq_epi32(_mm256_max_epu32(magnitude, threshold), magnitude);
        if (!_mm256_testz_si256(reached, reached))
            step = _mm256_add_epi32(step, tdiv_lanes(old, decay));
    }
    return _mm256_sub_epi32(old, step);
}

#define UPDATE_COLUMNS 16 /* columns of w per tile of the update */

/* sgd_rule on the first `count` of 8 columns of w from flat index `at`, with gradient g; writes
 * the new values' split units, or their pair form and outliers; returns the lanes' |w|. */
AVX2_TARGET static inline __m256i update_lanes(int32_t *w, int32_t *w_units, int16_t *w_pairs,
                                               outliers_t *outliers, ptrdiff_t at, ptrdiff_t count, __m256i g,
                                               divisor_t lr, int decays, divisor_t decay)
{
    __m256i mask = lanes_mask(count);
    __m256i updated = sgd_lanes(_mm256_maskload_epi32((const int *)(w + at), mask), g, lr, decays, decay);
    _mm256_maskstore_epi32((int *)(w + at), mask, updated);
    if (w_units) {
        __m256i units = _mm256_or_si256(_mm256_and_si256(updated, _mm256_set1_epi32(0xFF)),
                                        _mm256_slli_epi32(_mm256_srai_epi32(updated, 8), 16));
        _mm256_maskstore_epi32((int *)(w_units + at), mask, units);
    } else {
        /* saturate to int16 (VPACKSSDW packs within 128-bit halves: gather the two halves) */
        __m128i pairs = _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packs_epi32(updated, updated), 0x08));
        if (count >= 8) {
            _mm_storeu_si128((__m128i *)(w_pairs + at), pairs);
        } else {
            int16_t values[8];
            _mm_storeu_si128((__m128i *)values, pairs);
            for (ptrdiff_t lane = 0; lane < count; lane++)
                w_pairs[at + lane] = values[lane];
        }
        __m256i kept = _mm256_cmpeq_epi32(updated, _mm256_cvtepi16_epi32(pairs));
        int cut = ~_mm256_movemask_ps(_mm256_castsi256_ps(kept)) & _mm256_movemask_ps(_mm256_castsi256_ps(mask));
        if (cut) { /* rare: a weight past int16 */
            int32_t values[8];
            _mm256_storeu_si256((__m256i *)values, updated);
            for (int lane = 0; lane < 8; lane++)
                if (cut >> lane & 1)
                    pairs_add_outlier(outliers, at + lane, values[lane]);
        }
    }
    return _mm256_and_si256(_mm256_abs_epi32(updated), mask);
}

/* update_lanes for 8 whole lanes written to the pair form (the tiles of a dense layer's
 * update but the last along k): plain loads and stores, which cost less than masked ones
 * (on some CPUs much less), and one test of |w| > INT16_MAX for outliers, on the |w| the
 * maximum needs anyway (it also flags -32768, which the scalar check then keeps). */
AVX2_TARGET static inline __attribute__((always_inline)) __m256i update_pair_lanes(
    int32_t *w, int16_t *w_pairs, outliers_t *outliers, ptrdiff_t at, __m256i g, divisor_t lr, int decays,
    divisor_t decay)
{
    __m256i updated = sgd_lanes(_mm256_loadu_si256((const __m256i *)(w + at)), g, lr, decays, decay);
    _mm256_storeu_si256((__m256i *)(w + at), updated);
    __m128i pairs = _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packs_epi32(updated, updated), 0x08));
    _mm_storeu_si128((__m128i *)(w_pairs + at), pairs);
    __m256i magnitude = _mm256_abs_epi32(updated); /* unsigned: |INT32_MIN| = 2**31 */
    __m256i within = _mm256_cmpeq_epi32(_mm256_min_epu32(magnitude, _mm256_set1_epi32(INT16_MAX)), magnitude);
    if (!_mm256_testc_si256(within, _mm256_set1_epi32(-1))) { /* rare: a weight past int16 */
        int32_t values[8];
        _mm256_storeu_si256((__m256i *)values, updated);
        for (int lane = 0; lane < 8; lane++)
            if (values[lane] != saturate_int16(values[lane]))
                pairs_add_outlier(outliers, at + lane, values[lane]);
    }
    return magnitude;
}

/* The largest of 8 unsigned lanes (update_lanes's |w|). */
AVX2_TARGET static inline int64_t largest_lane(__m256i v)
{
    uint32_t lanes[8], top = 0;
    _mm256_storeu_si256((__m256i *)lanes, v);
    for (int lane = 0; lane < 8; lane++)
        top = lanes[lane] > top ? lanes[lane] : top;
    return (int64_t)top;
}

/* Prefetches a row of the tile's 16 columns of w (and, where written, of its split units or
 * pair form) from flat index `at`. */
AVX2_TARGET static inline void prefetch_row(const tile_update_t *t, ptrdiff_t at)
{
    _mm_prefetch((const char *)(t->w + at), _MM_HINT_T0);
    _mm_prefetch((const char *)(t->w_units ? t->w_units + at : (const int32_t *)(t->w_pairs + at)), _MM_HINT_T0);
}

AVX2_TARGET static void gradient_tile(const int32_t *delta_units, ptrdiff_t stride, const int32_t *x_tile,
                                      int32_t *g, ptrdiff_t n, ptrdiff_t first, ptrdiff_t last, tile_update_t *apply)
{
    const __m256i zero = _mm256_setzero_si256();
    __m256i largest = zero;
    for (ptrdiff_t j0 = 0; j0 < n; j0 += 4) {
        const int32_t *e = delta_units + j0; /* e[row * stride + r]: delta's unit (row, j0 + r) */
        __m256i *rows = apply ? NULL : (__m256i *)(g + j0 * UPDATE_COLUMNS); /* rows j0..j0+3 of G: 2 vectors each */
#define LOAD(i) (apply ? zero : _mm256_loadu_si256(rows + i))
        __m256i a0 = LOAD(0), a1 = LOAD(1), b0 = LOAD(2), b1 = LOAD(3), c0 = LOAD(4), c1 = LOAD(5), d0 = LOAD(6),
                d1 = LOAD(7);
#undef LOAD
        if (apply) /* these 4 rows of w in the next tile, while this one is summed */
            for (ptrdiff_t i = j0; i < j0 + 4 && i < n; i++)
                prefetch_row(apply, (apply->first_row + i) * apply->k + apply->k0 + UPDATE_COLUMNS);
        const int32_t *x = x_tile;
        for (ptrdiff_t row = first; row < last; row++, x += UPDATE_COLUMNS) {
            __m256i X0 = _mm256_loadu_si256((const __m256i *)x), X1 = _mm256_loadu_si256((const __m256i *)(x + 8));
            __m256i E = _mm256_set1_epi32(e[row * stride + 0]);
            MADD(a0, E, X0); MADD(a1, E, X1);
            E = _mm256_set1_epi32(e[row * stride + 1]);
            MADD(b0, E, X0); MADD(b1, E, X1);
            E = _mm256_set1_epi32(e[row * stride + 2]);
            MADD(c0, E, X0); MADD(c1, E, X1);
            E = _mm256_set1_epi32(e[row * stride + 3]);
            MADD(d0, E, X0); MADD(d1, E, X1);
        }
        if (apply && !apply->w_units && apply->k - apply->k0 >= UPDATE_COLUMNS) {
            /* whole vectors to the pair form, the common case, in its own code; the tile's
             * fields in locals, not read again through `apply` after every store to w */
            int32_t *w = apply->w;
            int16_t *w_pairs = apply->w_pairs;
            outliers_t *outliers = apply->outliers;
            ptrdiff_t k = apply->k, at = (apply->first_row + j0) * k + apply->k0;
            divisor_t lr = apply->lr, decay = apply->decay;
            int decays = apply->decays;
#define APPLY_PAIRS(r, i) if (j0 + i < n) { \
            largest = _mm256_max_epu32(largest, update_pair_lanes(w, w_pairs, outliers, at + i * k, r##0, lr, \
                                                                  decays, decay)); \
            largest = _mm256_max_epu32(largest, update_pair_lanes(w, w_pairs, outliers, at + i * k + 8, r##1, lr, \
                                                                  decays, decay)); }
            APPLY_PAIRS(a, 0);
            APPLY_PAIRS(b, 1);
            APPLY_PAIRS(c, 2);
            APPLY_PAIRS(d, 3);
#undef APPLY_PAIRS
        } else if (apply) {
            ptrdiff_t left = apply->k - apply->k0;
#define APPLY2(r, i) if (j0 + i < n) { \
            ptrdiff_t at = (apply->first_row + j0 + i) * apply->k + apply->k0; \
            largest = _mm256_max_epu32(largest, update_lanes(apply->w, apply->w_units, apply->w_pairs, \
                apply->outliers, at, left, r##0, apply->lr, apply->decays, apply->decay)); \
            if (left > 8) \
                largest = _mm256_max_epu32(largest, update_lanes(apply->w, apply->w_units, apply->w_pairs, \
                    apply->outliers, at + 8, left - 8, r##1, apply->lr, apply->decays, apply->decay)); }
            APPLY2(a, 0);
            APPLY2(b, 1);
            APPLY2(c, 2);
            APPLY2(d, 3);
#undef APPLY2
        } else {
            _mm256_storeu_si256(rows, a0), _mm256_storeu_si256(rows + 1, a1);
            _mm256_storeu_si256(rows + 2, b0), _mm256_storeu_si256(rows + 3, b1);
            _mm256_storeu_si256(rows + 4, c0), _mm256_storeu_si256(rows + 5, c1);
            _mm256_storeu_si256(rows + 6, d0), _mm256_storeu_si256(rows + 7, d1);
        }
    }
    if (apply)
        apply->largest = largest_lane(largest);
}

AVX2_TARGET static int64_t update_tile(const int32_t *g, int32_t *w, int32_t *w_units, int16_t *w_pairs,
                                       outliers_t *outliers, ptrdiff_t n, ptrdiff_t k, ptrdiff_t k0, divisor_t lr,
                                       int decays, divisor_t decay)
{
    __m256i largest = _mm256_setzero_si256();
    for (ptrdiff_t j = 0; j < n; j++)
        for (int c = 0; c < 2 && k - k0 - 8 * c > 0; c++) {
            __m256i grad = _mm256_loadu_si256((const __m256i *)(g + j * UPDATE_COLUMNS + 8 * c));
            largest = _mm256_max_epu32(largest, update_lanes(w, w_units, w_pairs, outliers, j * k + k0 + 8 * c,
                                                             k - k0 - 8 * c, grad, lr, decays, decay));
        }
    return largest_lane(largest);
}

/* input_unit of each value, 8 lanes at a time (load_x), zero past `width`. */
AVX2_TARGET static void pack_units(const int8_t *values, int32_t *packed, ptrdiff_t width, ptrdiff_t columns)
{
    for (ptrdiff_t c = 0; c < columns; c += 8)
        _mm256_storeu_si256((__m256i *)(packed + c),
                            c < width ? load_x(values, c, 0, width - c) : _mm256_setzero_si256());
}

/* The narrow kernels (_pairs.h): outputs in the lanes, one broadcast input unit per step. */
AVX2_TARGET static void narrow_product(const int32_t *x_units, ptrdiff_t kpad, const int32_t *wt, ptrdiff_t npad,
                                       int32_t *z, ptrdiff_t rows, ptrdiff_t n, ptrdiff_t k, const divisor_t *scale,
                                       int8_t *scaled)
{
    for (ptrdiff_t j = 0; j < n; j += 8) {
        __m256i acc[NARROW_ROWS];
        for (int r = 0; r < NARROW_ROWS; r++)
            acc[r] = _mm256_setzero_si256();
        for (ptrdiff_t c = 0; c < k; c++) {
            __m256i W = _mm256_loadu_si256((const __m256i *)(wt + c * npad + j));
            for (int r = 0; r < NARROW_ROWS; r++) /* rows past `rows`: never stored */
                MADD(acc[r], _mm256_set1_epi32(x_units[r * kpad + c]), W);
        }
        __m256i mask = lanes_mask(n - j);
        for (ptrdiff_t r = 0; r < rows; r++) {
            if (!scale) {
                _mm256_maskstore_epi32(z + r * n + j, mask, acc[r]);
                continue;
            }
            /* nitro_scale32: tdiv, then the int8 clip to +-127 (the packs saturate no further) */
            __m256i q = _mm256_min_epi32(_mm256_max_epi32(tdiv_lanes(acc[r], *scale), _mm256_set1_epi32(-127)),
                                         _mm256_set1_epi32(127));
            __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
            int8_t bytes[16];
            _mm_storeu_si128((__m128i *)bytes, _mm_packs_epi16(words, words));
            memcpy(scaled + r * n + j, bytes, (size_t)(n - j < 8 ? n - j : 8));
        }
    }
}

/* 8 inputs per sweep (16 would not fit AVX2's 16 registers) */
AVX2_TARGET static void narrow_gradient(const int32_t *delta, ptrdiff_t n, const int32_t *x_units, ptrdiff_t kpad,
                                        ptrdiff_t rows, uint32_t *gt, ptrdiff_t npad, int paired)
{
    for (ptrdiff_t j = 0; j < n; j += 8) {
        __m256i mask = lanes_mask(n - j);
        for (ptrdiff_t c0 = 0; c0 < kpad; c0 += 8) {
            __m256i acc[8];
            for (int c = 0; c < 8; c++)
                acc[c] = _mm256_setzero_si256();
            for (ptrdiff_t r = 0; r < rows; r++) {
                __m256i d = _mm256_maskload_epi32(delta + r * n + j, mask);
                __m256i units = paired ? d /* else split_unit, lane by lane */
                    : _mm256_or_si256(_mm256_and_si256(d, _mm256_set1_epi32(0xFF)),
                                      _mm256_slli_epi32(_mm256_srai_epi32(d, 8), 16));
                const int32_t *x_row = x_units + r * kpad + c0;
                for (int c = 0; c < 8; c++)
                    MADD(acc[c], units, _mm256_set1_epi32(x_row[c]));
            }
            for (int c = 0; c < 8; c++) {
                __m256i *g = (__m256i *)(gt + (c0 + c) * npad + j);
                _mm256_storeu_si256(g, _mm256_add_epi32(_mm256_loadu_si256(g), acc[c]));
            }
        }
    }
}

AVX2_TARGET static int avx2_product(const int8_t *x, const int32_t *w_units, const product_out_t *out, ptrdiff_t m,
                                    ptrdiff_t n, ptrdiff_t units, ptrdiff_t chunk, int pairs,
                                    const outliers_t *outliers)
{
    if (!pairs && units < NARROW_UNITS && chunk >= units)
        return pairs_run_narrow_product(narrow_product, pack_units, 8, x, w_units, out, m, n, units);
    return pairs_run_product(product_tile, 2, x, w_units, out, m, n, units, chunk, pairs, outliers);
}

AVX2_TARGET static int64_t avx2_sgd_update(const int32_t *delta, const int8_t *x, int32_t *w,
                                           int32_t *w_units, int16_t *w_pairs, outliers_t *outliers, ptrdiff_t n,
                                           ptrdiff_t batch, ptrdiff_t k, divisor_t lr, int decays, divisor_t decay,
                                           int sums_fit_int32)
{
    if (k < NARROW_UNITS) /* checks its own sums */
        return pairs_run_narrow_update(narrow_gradient, pack_units, 8, delta, x, w, w_units, w_pairs, outliers, n,
                                       batch, k, lr, decays, decay);
    return pairs_run_sgd_update(gradient_tile, update_tile, pack_units, UPDATE_COLUMNS, delta, x, w, w_units, w_pairs, outliers,
                            n, batch, k, lr, decays, decay, sums_fit_int32);
}

const pair_kernels_t avx2_kernels = {"avx2", avx2_supported, avx2_product, avx2_sgd_update};

#else /* no AVX2 build: the kernels say the CPU cannot run them, and are never called */

static int avx2_unsupported(void)
{
    return 0;
}

const pair_kernels_t avx2_kernels = {"avx2", avx2_unsupported, NULL, NULL};

#endif
