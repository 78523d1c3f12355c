/*
 * sknitro/_portable.h: the portable loops of the "c" kernels (_portable.c), in C99 with the
 * rules of _rules.h. Every loop computes what the NumPy reference computes, integer for
 * integer; the caller proves that the integers fit the types named here.
 */
#ifndef SKNITRO_PORTABLE_H
#define SKNITRO_PORTABLE_H

#include <stddef.h>
#include <stdint.h>

#include "_rules.h"

/* Whether the loops below are compiled once per x86-64 level (GCC's target_clones, on Linux;
 * see _portable.c), and for which targets: "default" where not. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && defined(__linux__)
#define HAVE_MULTIVERSION 1
#else
#define HAVE_MULTIVERSION 0
#endif
extern const char *const portable_target;

/* out = nitro_scale(z) for a float64 product z holding integers, clamped first to +-limit
 * (= 128 * SF, where the result saturates anyway; 128 * SF < 2**31). */
void scale_loop(const double *restrict z, int8_t *restrict out, ptrdiff_t n, double limit, divisor_t d);

/* out = nitro_scale(z) for an int32 product z. */
void scale_loop_int32(const int32_t *restrict z, int8_t *restrict out, ptrdiff_t n, divisor_t d);

/* out = tdiv(g * table[pre as uint8], d) for any int32 g and 0 <= table <= d. */
void backward_loop(const int32_t *restrict g, const int8_t *restrict pre, const int32_t *restrict table,
                   int32_t *restrict out, ptrdiff_t n, int64_t d, divisor_t divisor);

/* The column sums of |a| for an int32 matrix (rows, cols), in `sums` (cols of them);
 * returns max |a[i, j]|. */
int64_t column_magnitudes(const int32_t *restrict a, int64_t *restrict sums, ptrdiff_t rows, ptrdiff_t cols);

/* w = sgd_rule(w, g) for a float64 gradient g holding integers (|g| < 2**31), the new w also
 * as float64 in mirror (unless NULL); returns max|w|. */
int64_t update_loop(int32_t *restrict w, const double *restrict g, double *restrict mirror, ptrdiff_t n,
                    divisor_t lr, int decays, divisor_t decay);

/* The int32 scratch space of head_loop: W transposed with its classes padded to whole
 * vectors of HEAD_LANES (of either width its loops take), later one row of G. */
#define HEAD_LANES 16
static inline ptrdiff_t head_padded_classes(ptrdiff_t classes)
{
    return (classes + HEAD_LANES - 1) / HEAD_LANES * HEAD_LANES;
}

static inline ptrdiff_t head_scratch_size(ptrdiff_t classes, ptrdiff_t features)
{
    return features * head_padded_classes(classes);
}

/* A learning head, whole (see _portable.c); returns max|w| after the update. head_loop runs
 * the loops in the vector width of this CPU: head_loop_lanes16 on x86-64 with AVX-512 (built
 * where HAVE_HEAD_LOOP_LANES16: by GCC, for Linux), else head_loop_lanes8. */
#if HAVE_MULTIVERSION && !defined(SKNITRO_PORTABLE_ARCH)
#define HAVE_HEAD_LOOP_LANES16 1
#else
#define HAVE_HEAD_LOOP_LANES16 0
#endif
int64_t head_loop(const int8_t *restrict x, int32_t *restrict w, const int8_t *restrict target,
                  int8_t *restrict yhat, int32_t *restrict input_grad, int32_t *restrict scratch,
                  int16_t *restrict error, ptrdiff_t batch, ptrdiff_t classes, ptrdiff_t features,
                  divisor_t scale, int32_t limit, divisor_t lr, int decays, divisor_t decay,
                  int64_t *squared_error);
int64_t head_loop_lanes8(const int8_t *restrict x, int32_t *restrict w, const int8_t *restrict target,
                         int8_t *restrict yhat, int32_t *restrict input_grad, int32_t *restrict scratch,
                         int16_t *restrict error, ptrdiff_t batch, ptrdiff_t classes, ptrdiff_t features,
                         divisor_t scale, int32_t limit, divisor_t lr, int decays, divisor_t decay,
                         int64_t *squared_error);
int64_t head_loop_lanes16(const int8_t *restrict x, int32_t *restrict w, const int8_t *restrict target,
                          int8_t *restrict yhat, int32_t *restrict input_grad, int32_t *restrict scratch,
                          int16_t *restrict error, ptrdiff_t batch, ptrdiff_t classes, ptrdiff_t features,
                          divisor_t scale, int32_t limit, divisor_t lr, int decays, divisor_t decay,
                          int64_t *squared_error);

/* out = table[x] for uint8 x (the image encoder), and for int8 x by its bit pattern. */
void lookup_loop(const int8_t *restrict table, const uint8_t *restrict x, int8_t *restrict out, ptrdiff_t n);
void lookup_int8(const int8_t *restrict table, const int8_t *restrict x, int8_t *restrict out, ptrdiff_t n);

/* Max pooling of (n, h, w, c) int8 maps, (ph, pw) padding, output rows [first, last), and its
 * gradient. */
void max_pool_rows(const int8_t *restrict x, int8_t *restrict best, uint8_t *restrict argmax, ptrdiff_t first,
                   ptrdiff_t last, ptrdiff_t h, ptrdiff_t w, ptrdiff_t c, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t ph,
                   ptrdiff_t pw);
void max_unpool_rows(const int32_t *restrict delta, const uint8_t *restrict argmax, int32_t *restrict out,
                     ptrdiff_t first, ptrdiff_t last, ptrdiff_t h, ptrdiff_t w, ptrdiff_t c, ptrdiff_t kh,
                     ptrdiff_t kw, ptrdiff_t ph, ptrdiff_t pw);

/* The range of int8 values, and dropout's output rows (n, positions, channels) into int8 or
 * int16, from a mask of (n, channels, positions). */
void int8_range(const int8_t *restrict x, ptrdiff_t n, int8_t *lowest, int8_t *highest);
void dropout_rows_int8(const int8_t *restrict x, const uint8_t *restrict mask, int8_t *restrict out, ptrdiff_t first,
                       ptrdiff_t end, ptrdiff_t positions, ptrdiff_t channels, int32_t rescale);
void dropout_rows_int16(const int8_t *restrict x, const uint8_t *restrict mask, int16_t *restrict out,
                        ptrdiff_t first, ptrdiff_t end, ptrdiff_t positions, ptrdiff_t channels, int32_t rescale);

/* The im2col patches of (n, h, w, c) int8 maps, k x k windows, `pad` zeros: rows [first, last). */
void im2col_rows(const int8_t *restrict x, int8_t *restrict out, ptrdiff_t first, ptrdiff_t last, ptrdiff_t h,
                 ptrdiff_t w, ptrdiff_t c, ptrdiff_t k, ptrdiff_t pad);

#endif
