/*
 * sknitro/_passes.h: whole-array passes of the training step, in chunks on the OpenMP
 * threads the user allows (_passes.c), from the loops of _portable.c. Each item's result is
 * the same whatever the split, so any number of threads gives the same integers. The caller
 * (sknitro/_fused.pyx) has checked every size and range.
 */
#ifndef SKNITRO_PASSES_H
#define SKNITRO_PASSES_H

#include <stddef.h>
#include <stdint.h>

#include "_rules.h"

/* out = clip(tdiv(z, scale), -127, 127) for int32 z (or float64 z holding integers), and, with
 * a table (else NULL), activated = table[out as uint8]. 1 <= scale < 2**24. */
void pass_scale_int32(const int32_t *z, int8_t *out, const int8_t *table, int8_t *activated, ptrdiff_t n,
                      int64_t scale);
void pass_scale_float64(const double *z, int8_t *out, const int8_t *table, int8_t *activated, ptrdiff_t n,
                        int64_t scale);

/* out = tdiv(g * table[pre], divisor) for (rows, cols) int32 g and out and int8 pre; returns
 * max_j sum_i |out[i, j]| and writes max |out| to *largest_magnitude, or returns -1 when
 * memory for the column sums ran out. */
int64_t pass_activation_backward(const int32_t *g, const int8_t *pre, const int32_t *table, int64_t divisor,
                                 int32_t *out, ptrdiff_t rows, ptrdiff_t cols, int64_t *largest_magnitude);

/* Max pooling of (n, h, w, c) int8 maps by (kh, kw) windows with (ph, pw) padding (at least
 * one window along each side), and its gradient, which writes the whole of `out`; im2col of
 * the same maps (k x k windows, pad zeros). */
void pass_max_pool(const int8_t *x, int8_t *best, uint8_t *argmax, ptrdiff_t n, ptrdiff_t h, ptrdiff_t w,
                   ptrdiff_t c, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t ph, ptrdiff_t pw);
void pass_max_unpool(const int32_t *delta, const uint8_t *argmax, int32_t *out, ptrdiff_t n, ptrdiff_t h,
                     ptrdiff_t w, ptrdiff_t c, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t ph, ptrdiff_t pw);
void pass_im2col(const int8_t *x, int8_t *out, ptrdiff_t n, ptrdiff_t h, ptrdiff_t w, ptrdiff_t c, ptrdiff_t k,
                 ptrdiff_t pad);

/* Dropout's output (layers.IntegerDropout.reference_forward) for maps x of (n, positions,
 * channels) in memory and a keep mask of (n, channels, positions), the maps' logical order:
 * dropout_kept(x) where mask, else 0, in x's layout. As int8 into out8 when every kept value of
 * x fits int8 (returns 8), else as int16 into out16 (returns 16). 1 <= rescale < 2**23. */
int pass_dropout_apply(const int8_t *x, const uint8_t *mask, int8_t *out8, int16_t *out16, ptrdiff_t n,
                       ptrdiff_t positions, ptrdiff_t channels, int32_t rescale);

/* NumPy's bitgen_t (numpy/random/bitgen.h): the public C interface of its bit generators. */
typedef struct {
    void *state;
    uint64_t (*next_uint64)(void *state);
    uint32_t (*next_uint32)(void *state);
    double (*next_double)(void *state);
    uint64_t (*next_raw)(void *state);
} numpy_bitgen_t;

/* Dropout's keep mask: mask[i] = (draw_i < keep_percent) for the draws of NumPy's
 * Generator.integers(0, 100, size=n, dtype=int8) on the same bit generator, which it leaves in
 * the same state. One thread: a random stream is sequential. */
void pass_dropout_mask(numpy_bitgen_t *bitgen, uint8_t *mask, ptrdiff_t n, int keep_percent);

#endif
