/*
 * tests/c/test_portable.c: every portable C kernel of sknitro against naive int64 arithmetic,
 * on whatever CPU builds it -- x86-64 natively, aarch64 under QEMU (tests/test_portable_c.py).
 *
 * The references here are the rules of algorithm.md written the plainest way: C99 division
 * (which truncates, like tdiv), explicit clips, int64 sums. Where the CPU runs the pair
 * products (AVX2, VNNI on x86-64), they are held to the same references; elsewhere their
 * stubs must say so. Prints the number of checks and exits 0, or prints the first failure
 * and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>

#include "_pairs.h"
#include "_portable.h"

static long long checks;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        checks++;                                                            \
        if (!(cond)) {                                                       \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                      \
            printf(__VA_ARGS__);                                             \
            printf("\n");                                                    \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

static uint64_t state = 0x9E3779B97F4A7C15u;

static uint64_t next(void) /* xorshift64* */
{
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545F4914F6CDD1Du;
}

/* A uniform integer in [low, high]. */
static int64_t uniform(int64_t low, int64_t high)
{
    return low + (int64_t)(next() % (uint64_t)(high - low + 1));
}

static int64_t clip(int64_t v, int64_t low, int64_t high)
{
    return v < low ? low : (v > high ? high : v);
}

static int64_t naive_scale(int64_t z, int64_t d)
{
    return clip(z / d, -127, 127);
}

static int64_t naive_sgd(int64_t w, int64_t g, int64_t lr, int64_t decay)
{
    return w - g / lr - (decay ? w / decay : 0);
}

/* Divisors: the edges of [1, 2**31), powers of two and their neighbours, and random ones. */
static int64_t divisor_at(int i)
{
    static const int64_t fixed[] = {1, 2, 3, 5, 7, 10, 127, 255, 256, 257, 640, 1536, 65535, 65536, 1 << 20,
                                    (1 << 30) - 1, 1 << 30, (1 << 30) + 1, 2147483646, 2147483647};
    int n = (int)(sizeof(fixed) / sizeof(fixed[0]));
    return i < n ? fixed[i] : uniform(1, i % 2 ? 4096 : 2147483647);
}

static int32_t int32_at(int i)
{
    static const int32_t fixed[] = {0, 1, -1, 2, -2, 127, -127, 128, -128, 65535, -65536, 2147483647, -2147483647};
    int n = (int)(sizeof(fixed) / sizeof(fixed[0]));
    return i < n ? fixed[i] : (int32_t)uniform(-2147483647, 2147483647);
}

static void test_rules(void)
{
    for (int i = 0; i < 200; i++) {
        int64_t d = divisor_at(i);
        divisor_t divisor = make_divisor(d);
        for (int j = 0; j < 400; j++) {
            int32_t n = int32_at(j);
            CHECK(tdiv32(n, divisor) == n / d, "tdiv32(%d, %lld) = %d", n, (long long)d, tdiv32(n, divisor));
            CHECK(nitro_scale32(n, divisor) == naive_scale(n, d), "nitro_scale32(%d, %lld)", n, (long long)d);
        }
    }
    for (int i = 0; i < 100000; i++) {
        int64_t lr = divisor_at(i % 60), decay = i % 3 ? divisor_at((i / 3) % 60) : 0;
        int32_t w = (int32_t)uniform(-(1 << 30), 1 << 30), g = int32_at(i % 500);
        int64_t got = sgd_rule(w, g, make_divisor(lr), decay > 0, make_divisor(decay ? decay : 1));
        CHECK(got == naive_sgd(w, g, lr, decay), "sgd_rule(%d, %d, %lld, %lld)", w, g, (long long)lr,
              (long long)decay);
        /* a gradient past int32 (a narrow layer's G, summed in int64) */
        int64_t wide = (int64_t)g * (int64_t)uniform(1, 1 << 20) + (i % 2 ? INT32_MAX : -(int64_t)INT32_MAX - 1);
        got = sgd_rule_wide(w, wide, make_divisor(lr), decay > 0, make_divisor(decay ? decay : 1));
        CHECK(got == naive_sgd(w, wide, lr, decay), "sgd_rule_wide(%d, %lld, %lld, %lld)", w, (long long)wide,
              (long long)lr, (long long)decay);
    }
    for (int v = -70000; v <= 70000; v += 7)
        CHECK(saturate_int16(v) == clip(v, -32768, 32767), "saturate_int16(%d)", v);
    /* a unit pair times an input unit is one exact product: x (a & 255) + 256 x (a >> 8) = x a */
    for (int x = -128; x <= 127; x++)
        for (int i = 0; i < 300; i++) {
            int32_t a = i < 2 ? (i ? (1 << 23) - 1 : -(1 << 23)) : (int32_t)uniform(-(1 << 23), (1 << 23) - 1);
            int32_t xu = input_unit((int8_t)x), au = split_unit(a);
            int64_t dot = (int64_t)(int16_t)(xu & 0xFFFF) * (int16_t)(au & 0xFFFF)
                        + (int64_t)(int16_t)((uint32_t)xu >> 16) * (int16_t)((uint32_t)au >> 16);
            CHECK(dot == (int64_t)x * a, "unit product %d * %d = %lld", x, a, (long long)dot);
        }
    /* two row pairs' pairwise product: a c + b d, int16's extremes included */
    for (int i = 0; i < 100000; i++) {
        int16_t v[4];
        for (int j = 0; j < 4; j++)
            v[j] = (int16_t)(i < 16 ? ((i >> j & 1) ? 32767 : -32768) : uniform(-32768, 32767));
        int32_t left = row_pair(v[0], v[1]), right = row_pair(v[2], v[3]);
        int64_t dot = (int64_t)(int16_t)(left & 0xFFFF) * (int16_t)(right & 0xFFFF)
                    + (int64_t)(int16_t)((uint32_t)left >> 16) * (int16_t)((uint32_t)right >> 16);
        CHECK(dot == (int64_t)v[0] * v[2] + (int64_t)v[1] * v[3], "row pair product %d %d %d %d", v[0], v[1],
              v[2], v[3]);
    }
}

static void test_loops(void)
{
    enum { N = 4096 };
    static double zf[N], g64[N], mirror[N];
    static int32_t z32[N], g32[N], out32[N], w[N], w0[N], table[256];
    static int8_t out8[N], pre[N], lookup[256], x8[N];
    static uint8_t xu8[N];
    static int64_t sums[N];
    for (int round = 0; round < 40; round++) {
        int64_t d = divisor_at(round % 20 + (round >= 20 ? 0 : 0));
        if (128 * d >= ((int64_t)1 << 31))
            d = uniform(1, (1 << 24) - 1);
        divisor_t divisor = make_divisor(d);
        for (int i = 0; i < N; i++) {
            z32[i] = int32_at(i);
            zf[i] = (double)(int64_t)uniform(-((int64_t)1 << 52), (int64_t)1 << 52);
        }
        scale_loop(zf, out8, N, 128.0 * (double)d, divisor);
        for (int i = 0; i < N; i++)
            CHECK(out8[i] == naive_scale((int64_t)zf[i], d), "scale_loop at %d", i);
        scale_loop_int32(z32, out8, N, divisor);
        for (int i = 0; i < N; i++)
            CHECK(out8[i] == naive_scale(z32[i], d), "scale_loop_int32 at %d", i);

        /* the activation's backward: multipliers in [0, D], any int32 gradient */
        int64_t big_d = uniform(1, 1000);
        for (int i = 0; i < 256; i++)
            table[i] = (int32_t)uniform(0, big_d);
        for (int i = 0; i < N; i++) {
            g32[i] = round % 2 ? int32_at(i) : (int32_t)uniform(-100000, 100000);
            pre[i] = (int8_t)uniform(-128, 127);
        }
        backward_loop(g32, pre, table, out32, N, big_d, make_divisor(big_d));
        for (int i = 0; i < N; i++)
            CHECK(out32[i] == (int64_t)g32[i] * table[(uint8_t)pre[i]] / big_d, "backward_loop at %d", i);
        int64_t largest = column_magnitudes(out32, sums, N / 64, 64), expected = 0;
        for (int j = 0; j < 64; j++) {
            int64_t sum = 0;
            for (int i = 0; i < N / 64; i++) {
                sum += llabs(out32[i * 64 + j]);
                expected = llabs(out32[i * 64 + j]) > expected ? llabs(out32[i * 64 + j]) : expected;
            }
            CHECK(sums[j] == sum, "column_magnitudes' sum of column %d: %lld, expected %lld", j, (long long)sums[j],
                  (long long)sum);
        }
        CHECK(largest == expected, "column_magnitudes %lld, expected %lld", (long long)largest, (long long)expected);

        /* IntegerSGD from a float64 gradient, with the float64 mirror of the new weights (lr >= 4
         * and |w| <= 2**28: the new weights fit int32, which the caller proves) */
        int64_t lr = divisor_at(round), decay = round % 3 ? divisor_at(round + 7) : 0;
        lr = lr < 4 ? 4 : lr;
        for (int i = 0; i < N; i++) {
            w[i] = w0[i] = (int32_t)uniform(-(1 << 28), 1 << 28);
            g64[i] = (double)uniform(-2147483647, 2147483647);
        }
        largest = update_loop(w, g64, mirror, N, make_divisor(lr), decay > 0, make_divisor(decay ? decay : 1));
        expected = 0;
        for (int i = 0; i < N; i++) {
            int64_t v = naive_sgd(w0[i], (int64_t)g64[i], lr, decay);
            CHECK(w[i] == v && mirror[i] == (double)v, "update_loop at %d", i);
            expected = llabs(v) > expected ? llabs(v) : expected;
        }
        CHECK(largest == expected, "update_loop max|w|");

        for (int i = 0; i < 256; i++)
            lookup[i] = (int8_t)uniform(-127, 127);
        for (int i = 0; i < N; i++)
            xu8[i] = (uint8_t)uniform(0, 255), x8[i] = (int8_t)uniform(-128, 127);
        lookup_loop(lookup, xu8, out8, N);
        for (int i = 0; i < N; i++)
            CHECK(out8[i] == lookup[xu8[i]], "lookup_loop at %d", i);
        lookup_int8(lookup, x8, out8, N);
        for (int i = 0; i < N; i++)
            CHECK(out8[i] == lookup[(uint8_t)x8[i]], "lookup_int8 at %d", i);
    }
}

typedef int64_t (*head_loop_t)(const int8_t *, int32_t *, const int8_t *, int8_t *, int32_t *, int32_t *,
                               int16_t *, ptrdiff_t, ptrdiff_t, ptrdiff_t, divisor_t, int32_t, divisor_t, int,
                               divisor_t, int64_t *);

/* A learning head against its naive form (see head_loop in _portable.c), in each vector width
 * this CPU runs: B rows of F features, C classes. */
static void test_head_of(head_loop_t loop, int B, int C, int F, int rounds)
{
    int8_t *x = malloc((size_t)(B * F)), *target = malloc((size_t)(B * C)), *yhat = malloc((size_t)(B * C));
    int32_t *w = malloc(sizeof(int32_t) * (size_t)(C * F)), *w0 = malloc(sizeof(int32_t) * (size_t)(C * F));
    int32_t *input_grad = malloc(sizeof(int32_t) * (size_t)(B * F));
    int32_t *scratch = malloc(sizeof(int32_t) * (size_t)head_scratch_size(C, F));
    int16_t *error = malloc(sizeof(int16_t) * (size_t)(B * C));
    int64_t *e = malloc(sizeof(int64_t) * (size_t)(B * C));
    if (!x || !target || !yhat || !w || !w0 || !input_grad || !scratch || !error || !e) {
        printf("out of memory\n");
        exit(1);
    }
    for (int round = 0; round < rounds; round++) {
        int64_t scale = uniform(1, 1 << 16), lr = uniform(1, 5000), decay = round % 2 ? uniform(1, 5000) : 0;
        for (int i = 0; i < B * F; i++)
            x[i] = (int8_t)uniform(-128, 127);
        for (int i = 0; i < B * C; i++)
            target[i] = (int8_t)uniform(-128, 127);
        for (int i = 0; i < C * F; i++)
            w[i] = w0[i] = (int32_t)uniform(-20000, 20000);
        int64_t squares, limit = 128 * scale;
        CHECK(head_scratch_size(C, F) == F * ((C + HEAD_LANES - 1) / HEAD_LANES) * HEAD_LANES, "head scratch size");
        int64_t largest = loop(x, w, target, yhat, input_grad, scratch, error, B, C, F, make_divisor(scale),
                               (int32_t)limit, make_divisor(lr), decay > 0, make_divisor(decay ? decay : 1), &squares);
        int64_t expected_squares = 0, expected_largest = 0;
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++) {
                int64_t z = 0;
                for (int f = 0; f < F; f++)
                    z += (int64_t)x[b * F + f] * w0[c * F + f];
                int64_t score = naive_scale(z, scale);
                CHECK(yhat[b * C + c] == score, "head yhat[%d, %d]", b, c);
                e[b * C + c] = score - target[b * C + c];
                expected_squares += e[b * C + c] * e[b * C + c];
            }
        CHECK(squares == expected_squares, "head squared error");
        for (int b = 0; b < B; b++)
            for (int f = 0; f < F; f++) {
                int64_t sum = 0;
                for (int c = 0; c < C; c++)
                    sum += e[b * C + c] * w0[c * F + f];
                CHECK(input_grad[b * F + f] == sum, "head input_grad[%d, %d]", b, f);
            }
        for (int c = 0; c < C; c++)
            for (int f = 0; f < F; f++) {
                int64_t g = 0;
                for (int b = 0; b < B; b++)
                    g += e[b * C + c] * x[b * F + f];
                int64_t v = naive_sgd(w0[c * F + f], g, lr, decay);
                CHECK(w[c * F + f] == v, "head w[%d, %d]", c, f);
                expected_largest = llabs(v) > expected_largest ? llabs(v) : expected_largest;
            }
        CHECK(largest == expected_largest, "head max|w|");
    }
    free(x);
    free(target);
    free(yhat);
    free(w);
    free(w0);
    free(input_grad);
    free(scratch);
    free(error);
    free(e);
}

static void test_head(head_loop_t loop)
{
    test_head_of(loop, 13, 21, 37, 50); /* past whole vectors of classes and blocks of rows */
    /* past HEAD_PARALLEL_WORK: on the threads, the features in blocks of HEAD_FEATURE_BLOCK
     * and the last block partial */
    test_head_of(loop, 45, 11, 700, 2);
}

/* The operand forms of the pair products, and the outlier list of a pair form. */
static void test_pools(void)
{
    enum { IMAGES = 3, H = 7, W = 9, C = 5 };
    static int8_t x[IMAGES * H * W * C], best[IMAGES * H * W * C];
    static uint8_t argmax[IMAGES * H * W * C];
    static int32_t delta[IMAGES * H * W * C], out[IMAGES * H * W * C];
    /* kh, kw, ph, pw: windows past the last rows and columns, padding (a head's pool), a
     * window of the whole map, and maps narrower than a window but for their padding */
    const int windows[][4] = {{2, 2, 0, 0}, {3, 2, 0, 0}, {1, 4, 0, 0}, {7, 9, 0, 0}, {4, 2, 2, 0}, {3, 3, 1, 2},
                              {9, 4, 1, 0}};
    for (int round = 0; round < 21; round++) {
        const int *g = windows[round % 7];
        int kh = g[0], kw = g[1], ph = g[2], pw = g[3], ho = (H + 2 * ph) / kh, wo = (W + 2 * pw) / kw;
        int covered[H][W] = {{0}};
        for (int i = 0; i < IMAGES * H * W * C; i++) {
            x[i] = (int8_t)(uniform(0, 4) * 60 - 128); /* few levels: ties, -128 and 112 */
            delta[i] = (int32_t)uniform(-2000000000, 2000000000);
            out[i] = 7; /* written whole: 0 past the last whole window */
        }
        max_pool_rows(x, best, argmax, 0, IMAGES * ho, H, W, C, kh, kw, ph, pw);
        max_unpool_rows(delta, argmax, out, 0, IMAGES * ho, H, W, C, kh, kw, ph, pw);
        for (int n = 0; n < IMAGES; n++)
            for (int i = 0; i < ho; i++)
                for (int j = 0; j < wo; j++)
                    for (int c = 0; c < C; c++) {
                        int top = -129, at = -1; /* padding: -128, first maximum wins */
                        for (int di = 0; di < kh; di++)
                            for (int dj = 0; dj < kw; dj++) {
                                int r = i * kh + di - ph, q = j * kw + dj - pw;
                                int inside = r >= 0 && r < H && q >= 0 && q < W;
                                int v = inside ? x[((n * H + r) * W + q) * C + c] : -128;
                                if (v > top)
                                    top = v, at = di * kw + dj;
                            }
                        int o = ((n * ho + i) * wo + j) * C + c;
                        CHECK(best[o] == top && argmax[o] == at, "max_pool_rows at %d (window %dx%d)", o, kh, kw);
                        for (int di = 0; di < kh; di++)
                            for (int dj = 0; dj < kw; dj++) {
                                int r = i * kh + di - ph, q = j * kw + dj - pw;
                                if (r < 0 || r >= H || q < 0 || q >= W)
                                    continue;
                                covered[r][q] = 1;
                                CHECK(out[((n * H + r) * W + q) * C + c] == (di * kw + dj == at ? delta[o] : 0),
                                      "max_unpool_rows at %d", o);
                            }
                    }
        for (int n = 0; n < IMAGES; n++)
            for (int i = 0; i < H; i++)
                for (int j = 0; j < W; j++)
                    if (!covered[i][j])
                        for (int c = 0; c < C; c++)
                            CHECK(out[((n * H + i) * W + j) * C + c] == 0,
                                  "max_unpool_rows left (%d, %d) past the windows", i, j);
    }
}

static void test_im2col(void)
{
    enum { IMAGES = 2, H = 5, W = 6, C = 7 };
    static int8_t x[IMAGES * H * W * C], out[IMAGES * (H + 4) * (W + 4) * 25 * C];
    const int shapes[][2] = {{3, 1}, {3, 0}, {1, 0}, {5, 2}, {2, 1}}; /* (k, pad) */
    for (int s = 0; s < 5; s++) {
        int k = shapes[s][0], pad = shapes[s][1], ho = H + 2 * pad - k + 1, wo = W + 2 * pad - k + 1;
        for (int c = 1; c <= C; c += 6) { /* one channel (byte copies) and seven (whole window rows) */
            for (int i = 0; i < IMAGES * H * W * c; i++)
                x[i] = (int8_t)uniform(-128, 127);
            im2col_rows(x, out, 0, IMAGES * ho * wo, H, W, c, k, pad);
            for (int n = 0; n < IMAGES; n++)
                for (int i = 0; i < ho; i++)
                    for (int j = 0; j < wo; j++)
                        for (int di = 0; di < k; di++)
                            for (int dj = 0; dj < k; dj++)
                                for (int ch = 0; ch < c; ch++) {
                                    int si = i + di - pad, sj = j + dj - pad;
                                    int expected = si < 0 || si >= H || sj < 0 || sj >= W
                                                       ? 0 : x[((n * H + si) * W + sj) * c + ch];
                                    int got = out[((n * ho + i) * wo + j) * k * k * c + (di * k + dj) * c + ch];
                                    CHECK(got == expected, "im2col_rows (k %d, pad %d, c %d) at %d %d %d", k, pad, c,
                                          n, i, j);
                                }
        }
    }
}

static void test_dropout(void)
{
    enum { N = 3, P = 11, C = 5 };
    static int8_t x[N * P * C], out8[N * P * C];
    static int16_t out16[N * P * C];
    static uint8_t mask[N * P * C];
    const int32_t rescales[] = {1052, 1111, 1333, 1428, 2000, 20000}; /* keep 95, 90, 75, 70, 50, 5 % */
    for (int r = 0; r < 6; r++)
        for (int channels = 1; channels <= C; channels += C - 1) { /* rows, and channels-last maps */
            int positions = P * C / channels;
            for (int i = 0; i < N * P * C; i++) {
                x[i] = (int8_t)uniform(-128, 127);
                mask[i] = (uint8_t)uniform(0, 1);
            }
            dropout_rows_int16(x, mask, out16, 0, N, positions, channels, rescales[r]);
            dropout_rows_int8(x, mask, out8, 1, 2, positions, channels, 1000); /* one sample, x itself */
            for (int n = 0; n < N; n++)
                for (int p = 0; p < positions; p++)
                    for (int c = 0; c < channels; c++) {
                        int at = (n * positions + p) * channels + c, kept = mask[(n * channels + c) * positions + p];
                        CHECK(out16[at] == (kept ? (int64_t)x[at] * rescales[r] / 1000 : 0),
                              "dropout_rows_int16 (rescale %d) at %d", rescales[r], at);
                        if (n == 1)
                            CHECK(out8[at] == (kept ? x[at] : 0), "dropout_rows_int8 at %d", at);
                    }
        }
    int8_t lowest = 1, highest = -1;
    int8_range(x, 0, &lowest, &highest);
    CHECK(lowest == 0 && highest == 0, "int8_range of nothing");
    for (int n = 1; n < N * P * C; n += 7) {
        int low = 127, high = -128;
        for (int i = 0; i < n; i++) {
            low = x[i] < low ? x[i] : low;
            high = x[i] > high ? x[i] : high;
        }
        int8_range(x, n, &lowest, &highest);
        CHECK(lowest == low && highest == high, "int8_range of %d values", n);
    }
}

static void test_pair_forms(void)
{
    enum { R = 9, K = 30 };
    static int8_t x[R * K];
    static int32_t a[R * K], split[R * K], index[8], residual[8];
    static int16_t pairs[R * K];
    for (int i = 0; i < R * K; i++)
        x[i] = (int8_t)(i < K ? -128 : uniform(-128, 127)); /* the first row: the largest norm */
    int64_t largest = pairs_row_l1(x, R, K), expected = 0;
    for (int r = 0; r < R; r++) {
        int64_t l1 = 0;
        for (int k = 0; k < K; k++)
            l1 += llabs(x[r * K + k]);
        expected = l1 > expected ? l1 : expected;
    }
    CHECK(largest == expected && largest == 128 * K, "row L1 norm");
    for (int i = 0; i < R * K; i++)
        a[i] = (int32_t)uniform(-40000, 40000) / (i % 4 ? 4 : 1); /* some past int16 */
    pairs_split_units(a, split, R * K);
    outliers_t outliers = {index, residual, 8, 0};
    pairs_pair_form(a, pairs, R, K, &outliers);
    ptrdiff_t found = 0;
    for (int i = 0; i < R * K; i++) {
        CHECK(split[i] == split_unit(a[i]), "split units");
        CHECK(pairs[i] == clip(a[i], -32768, 32767), "pair form");
        if (pairs[i] != a[i]) {
            if (found < 8)
                CHECK(index[found] == i && residual[found] == a[i] - pairs[i], "outlier %lld", (long long)found);
            found++;
        }
    }
    CHECK(outliers.count == found, "outlier count %lld, expected %lld", (long long)outliers.count, (long long)found);
}

#if defined(__x86_64__)
/* The pair products of each ISA this CPU runs, against naive sums (x86-64 only). */
/* sum_k x[k] w[k] in int64 */
static int64_t naive_dot(const int8_t *x, const int32_t *w, int k)
{
    int64_t sum = 0;
    for (int i = 0; i < k; i++)
        sum += (int64_t)x[i] * w[i];
    return sum;
}

static void test_pair_kernels(const pair_kernels_t *kernels)
{
    enum { M = 11, N = 7, K = 38 }; /* edges of every tile and vector width */
    static int8_t x[M * K];
    static int32_t w[N * K], w0[N * K], w_units[N * K], z[M * N], delta[M * N], index[16], residual[16];
    static int16_t w_pairs[N * K];
    for (int round = 0; round < 30; round++) {
        for (int i = 0; i < M * K; i++)
            x[i] = (int8_t)uniform(-128, 127);
        for (int i = 0; i < N * K; i++)
            w[i] = w0[i] = (int32_t)uniform(-60000, 60000) / (i % 9 ? 8 : 1);
        outliers_t outliers = {index, residual, 16, 0};
        pairs_pair_form(w, w_pairs, N, K, &outliers);
        if (outliers.count > 16)
            continue;
        /* the pair form (x read as int16 pairs), then the split units (x read as input units) */
        pairs_split_units(w, w_units, N * K);
        for (int form = 0; form < 2; form++) {
            product_out_t out = {z, 0, make_divisor(1), NULL, NULL, NULL};
            CHECK(form ? kernels->product(x, w_units, &out, M, N, K, K, 0, NULL) == 0
                       : kernels->product(x, (const int32_t *)w_pairs, &out, M, N, K / 2, K / 2, 1, &outliers) == 0,
                  "%s product", kernels->name);
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    int64_t sum = naive_dot(x + i * K, w + j * K, K);
                    CHECK(z[i * N + j] == sum, "%s product (form %d) z[%d, %d] = %d, expected %lld", kernels->name,
                          form, i, j, z[i * N + j], (long long)sum);
                }
        }
        /* the pair form's product NITRO-scaled in the tiles (no z), and an activation table */
        static int8_t scaled[M * N], activated[M * N], table[256];
        for (int t = 0; t < 256; t++)
            table[t] = (int8_t)(t ^ 0x5A);
        int64_t scale = uniform(1, 1 << 14);
        product_out_t scaled_out = {NULL, 0, make_divisor(scale), scaled, table, activated};
        CHECK(kernels->product(x, (const int32_t *)w_pairs, &scaled_out, M, N, K / 2, K / 2, 1, &outliers) == 0,
              "%s scaled product", kernels->name);
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                int8_t expected = (int8_t)naive_scale(naive_dot(x + i * K, w + j * K, K), scale);
                CHECK(scaled[i * N + j] == expected && activated[i * N + j] == table[(uint8_t)expected],
                      "%s scaled product [%d, %d]", kernels->name, i, j);
            }
        /* the update: G = delta^T x, and the new pair form with its outliers; delta as split
         * units, or (every third round: every delta fits int16) as row pairs of an odd batch,
         * or (every fourth: |delta| up to 2**23 - 1) with a G past int32 */
        int wide = round % 4 == 1;
        int64_t lr = uniform(wide ? 8 : 1, 3000), decay = round % 2 ? uniform(1, 3000) : 0;
        for (int i = 0; i < M * N; i++)
            delta[i] = (int32_t)(wide ? uniform(-(1 << 23) + 1, (1 << 23) - 1)
                                      : round % 3 ? uniform(-(1 << 19), 1 << 19) : uniform(-32768, 32767));
        for (int i = 0; i < M && wide; i++) /* G[0, 0] = (2**23 - 1) sum_i |x[i, 0]|: past int32 */
            delta[i * N] = x[i * K] < 0 ? -(1 << 23) + 1 : (1 << 23) - 1;
        int64_t largest = kernels->sgd_update(delta, x, w, NULL, w_pairs, &outliers, N, M, K, make_divisor(lr),
                                              decay > 0, make_divisor(decay ? decay : 1), !wide);
        int64_t expected = 0;
        ptrdiff_t found = 0; /* a full list is sorted; past its capacity, which ones it holds is open */
        for (int j = 0; j < N; j++)
            for (int k = 0; k < K; k++) {
                int64_t g = 0;
                for (int i = 0; i < M; i++)
                    g += (int64_t)delta[i * N + j] * x[i * K + k];
                int64_t v = naive_sgd(w0[j * K + k], g, lr, decay);
                CHECK(w[j * K + k] == v, "%s update w[%d, %d]", kernels->name, j, k);
                CHECK(!wide || j || k || llabs(g) > INT32_MAX, "%s update's G past int32", kernels->name);
                CHECK(w_pairs[j * K + k] == clip(v, -32768, 32767), "%s update's pair form", kernels->name);
                if (v != clip(v, -32768, 32767)) {
                    if (outliers.count <= 16)
                        CHECK(index[found] == j * K + k, "%s update's outlier %lld", kernels->name, (long long)found);
                    found++;
                }
                expected = llabs(v) > expected ? llabs(v) : expected;
            }
        CHECK(largest == expected && outliers.count == found, "%s update: max|w|, outliers", kernels->name);
    }
}
#endif

int main(void)
{
    test_rules();
    test_loops();
    test_head(head_loop); /* this CPU's width */
    test_head(head_loop_lanes8);
#if HAVE_HEAD_LOOP_LANES16
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4"))
        test_head(head_loop_lanes16);
#endif
    test_pools();
    test_im2col();
    test_dropout();
    test_pair_forms();
    const pair_kernels_t *isas[] = {&avx2_kernels, &vnni_kernels};
    for (int i = 0; i < 2; i++) {
#if defined(__x86_64__)
        if (isas[i]->supported()) {
            test_pair_kernels(isas[i]);
            printf("%s pair products: checked\n", isas[i]->name);
            continue;
        }
#endif
        CHECK(isas[i]->supported() == 0 || isas[i]->product != NULL, "%s", isas[i]->name);
        printf("%s pair products: not run by this CPU\n", isas[i]->name);
    }
    printf("ok: %lld checks\n", checks);
    return 0;
}
