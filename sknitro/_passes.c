/*
 * sknitro/_passes.c: the whole-array passes of _passes.h, each split into chunks of whole
 * rows spread over the OpenMP threads (one thread for a small array).
 */
#include "_passes.h"

#include <stdlib.h>

#include "_portable.h"

/* Chunks of about this many items (a dense layer's 64 x 1024 activations make two: a
 * 64 KiB chunk is a few tens of microseconds of work, the threads' start a few). */
#define CHUNK_ITEMS ((ptrdiff_t)1 << 15)

/* `rows` rows of `items_per_row` items (>= 1) in chunks of whole rows, at least one row each. */
typedef struct {
    ptrdiff_t rows, chunk_rows, chunks;
} chunks_t;

static chunks_t row_chunks(ptrdiff_t rows, ptrdiff_t items_per_row)
{
    ptrdiff_t chunk_rows = CHUNK_ITEMS / items_per_row > 0 ? CHUNK_ITEMS / items_per_row : 1;
    return (chunks_t){rows, chunk_rows, (rows + chunk_rows - 1) / chunk_rows};
}

/* The first row of chunk `chunk`, and the end of its rows. */
static ptrdiff_t chunk_first(const chunks_t *c, ptrdiff_t chunk)
{
    return chunk * c->chunk_rows;
}

static ptrdiff_t chunk_end(const chunks_t *c, ptrdiff_t chunk)
{
    return (chunk + 1) * c->chunk_rows < c->rows ? (chunk + 1) * c->chunk_rows : c->rows;
}

/* z is int32 when `wide` is NULL, else float64 */
static void scale_pass(const int32_t *z, const double *wide, int8_t *out, const int8_t *table, int8_t *activated,
                       ptrdiff_t n, int64_t scale)
{
    divisor_t d = make_divisor(scale);
    chunks_t chunks = row_chunks(n, 1);
#pragma omp parallel for schedule(static) if (chunks.chunks > 1)
    for (ptrdiff_t chunk = 0; chunk < chunks.chunks; chunk++) {
        ptrdiff_t start = chunk_first(&chunks, chunk), count = chunk_end(&chunks, chunk) - start;
        if (wide == NULL)
            scale_loop_int32(z + start, out + start, count, d);
        else
            scale_loop(wide + start, out + start, count, 128.0 * (double)scale, d);
        if (table != NULL)
            lookup_int8(table, out + start, activated + start, count);
    }
}

void pass_scale_int32(const int32_t *z, int8_t *out, const int8_t *table, int8_t *activated, ptrdiff_t n,
                      int64_t scale)
{
    scale_pass(z, NULL, out, table, activated, n, scale);
}

void pass_scale_float64(const double *z, int8_t *out, const int8_t *table, int8_t *activated, ptrdiff_t n,
                        int64_t scale)
{
    scale_pass(NULL, z, out, table, activated, n, scale);
}

int64_t pass_activation_backward(const int32_t *g, const int8_t *pre, const int32_t *table, int64_t divisor,
                                 int32_t *out, ptrdiff_t rows, ptrdiff_t cols, int64_t *largest_magnitude)
{
    /* chunks of whole rows, each with its own column sums (exact in int64: any order) and
     * largest |out| */
    chunks_t chunks = row_chunks(rows, cols);
    size_t count = (size_t)(chunks.chunks > 0 ? chunks.chunks : 1);
    int64_t *sums = calloc(count * (size_t)cols, sizeof(int64_t));
    int64_t *largest = calloc(count, sizeof(int64_t));
    if (sums == NULL || largest == NULL) {
        free(sums);
        free(largest);
        return -1;
    }
    divisor_t d = make_divisor(divisor);
#pragma omp parallel for schedule(static) if (chunks.chunks > 1)
    for (ptrdiff_t chunk = 0; chunk < chunks.chunks; chunk++) {
        ptrdiff_t first = chunk_first(&chunks, chunk), count = chunk_end(&chunks, chunk) - first;
        backward_loop(g + first * cols, pre + first * cols, table, out + first * cols, count * cols, divisor, d);
        largest[chunk] = column_magnitudes(out + first * cols, sums + chunk * cols, count, cols);
    }
    int64_t column_l1 = 0;
    for (ptrdiff_t j = 0; j < cols; j++) {
        int64_t total = 0;
        for (ptrdiff_t chunk = 0; chunk < chunks.chunks; chunk++)
            total += sums[chunk * cols + j];
        column_l1 = total > column_l1 ? total : column_l1;
    }
    *largest_magnitude = 0;
    for (ptrdiff_t chunk = 0; chunk < chunks.chunks; chunk++)
        *largest_magnitude = largest[chunk] > *largest_magnitude ? largest[chunk] : *largest_magnitude;
    free(sums);
    free(largest);
    return column_l1;
}

void pass_max_pool(const int8_t *x, int8_t *best, uint8_t *argmax, ptrdiff_t n, ptrdiff_t h, ptrdiff_t w,
                   ptrdiff_t c, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t ph, ptrdiff_t pw)
{
    chunks_t rows = row_chunks(n * ((h + 2 * ph) / kh), kh * w * c); /* output rows, by the input they read */
#pragma omp parallel for schedule(static) if (rows.chunks > 1)
    for (ptrdiff_t chunk = 0; chunk < rows.chunks; chunk++)
        max_pool_rows(x, best, argmax, chunk_first(&rows, chunk), chunk_end(&rows, chunk), h, w, c, kh, kw, ph, pw);
}

void pass_max_unpool(const int32_t *delta, const uint8_t *argmax, int32_t *out, ptrdiff_t n, ptrdiff_t h,
                     ptrdiff_t w, ptrdiff_t c, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t ph, ptrdiff_t pw)
{
    chunks_t rows = row_chunks(n * ((h + 2 * ph) / kh), kh * w * c);
#pragma omp parallel for schedule(static) if (rows.chunks > 1)
    for (ptrdiff_t chunk = 0; chunk < rows.chunks; chunk++)
        max_unpool_rows(delta, argmax, out, chunk_first(&rows, chunk), chunk_end(&rows, chunk), h, w, c, kh, kw, ph,
                        pw);
}

void pass_im2col(const int8_t *x, int8_t *out, ptrdiff_t n, ptrdiff_t h, ptrdiff_t w, ptrdiff_t c, ptrdiff_t k,
                 ptrdiff_t pad)
{
    ptrdiff_t ho = h + 2 * pad - k + 1, wo = w + 2 * pad - k + 1;
    chunks_t chunks = row_chunks(n * ho * wo, k * k * c);
#pragma omp parallel for schedule(static) if (chunks.chunks > 1)
    for (ptrdiff_t chunk = 0; chunk < chunks.chunks; chunk++)
        im2col_rows(x, out, chunk_first(&chunks, chunk), chunk_end(&chunks, chunk), h, w, c, k, pad);
}

int pass_dropout_apply(const int8_t *x, const uint8_t *mask, int8_t *out8, int16_t *out16, ptrdiff_t n,
                       ptrdiff_t positions, ptrdiff_t channels, int32_t rescale)
{
    int8_t lowest, highest;
    int8_range(x, n * positions * channels, &lowest, &highest);
    /* the kept value grows with x: its extremes are those of x's extremes */
    int narrow = dropout_kept(lowest, rescale) >= -128 && dropout_kept(highest, rescale) <= 127;
    chunks_t chunks = row_chunks(n, positions * channels);
#pragma omp parallel for schedule(static) if (chunks.chunks > 1)
    for (ptrdiff_t chunk = 0; chunk < chunks.chunks; chunk++) {
        ptrdiff_t first = chunk_first(&chunks, chunk), end = chunk_end(&chunks, chunk);
        if (narrow)
            dropout_rows_int8(x, mask, out8, first, end, positions, channels, rescale);
        else
            dropout_rows_int16(x, mask, out16, first, end, positions, channels, rescale);
    }
    return narrow ? 8 : 16;
}

/* NumPy draws an integer in [0, 100) from one byte of a 32-bit draw (four bytes per draw, low
 * byte first; the bytes left over at the end are dropped) by Lemire's method: m = byte * 100
 * gives the value m >> 8, unless its low byte falls below 256 % 100 = 56, which would bias
 * the result: that byte is rejected, and the next one tried. */
enum { DRAW_RANGE = 100, DRAW_REJECT_BELOW = 256 % DRAW_RANGE };

void pass_dropout_mask(numpy_bitgen_t *bitgen, uint8_t *mask, ptrdiff_t n, int keep_percent)
{
    ptrdiff_t j = 0;
    /* While four more values fit, a draw's bytes go in without a branch: each writes mask[j],
     * and only an accepted one moves j on (22 % of them are rejected, at random). */
    while (n - j >= 4) {
        uint32_t bits = bitgen->next_uint32(bitgen->state);
        for (int b = 0; b < 4; b++) {
            uint16_t m = (uint16_t)((uint8_t)(bits >> (8 * b)) * DRAW_RANGE);
            mask[j] = (m >> 8) < keep_percent;
            j += (uint8_t)m >= DRAW_REJECT_BELOW;
        }
    }
    while (j < n) {
        uint32_t bits = bitgen->next_uint32(bitgen->state);
        for (int b = 0; b < 4 && j < n; b++) {
            uint16_t m = (uint16_t)((uint8_t)(bits >> (8 * b)) * DRAW_RANGE);
            if ((uint8_t)m >= DRAW_REJECT_BELOW)
                mask[j++] = (m >> 8) < keep_percent;
        }
    }
}
