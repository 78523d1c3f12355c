/*
 * sknitro/_vnni.c: exact integer products on AVX-512 VNNI (see the header of _vnni.c).
 */
#ifndef SKNITRO_VNNI_H
#define SKNITRO_VNNI_H

#include <stddef.h>
#include <stdint.h>

/* 1 when this CPU runs the VNNI kernels (AVX-512 F, BW, VL and VNNI), else 0. */
int vnni_supported(void);

/* The multiply-and-shift form of a divisor d in [1, 2**31), shared with _fused.c. */
typedef struct {
    uint32_t multiplier;
    int shift;
} divisor_t;

/* Weights past int16 in a weight's pair form (which saturates them): the flat index of each
 * (row * k + column, ascending) and what saturation cut off, w - clip(w, -32768, 32767).
 * `count` may exceed `capacity`; the list then holds only the first `capacity`. */
typedef struct {
    int32_t *index;
    int32_t *residual;
    ptrdiff_t capacity;
    ptrdiff_t count;
} outliers_t;

/* units[i, k] = (x, 256 x) for int8 x of shape (rows, cols), and pairs[i, k] = x as int16
 * unless pairs is NULL; returns max_i sum_k |x[i, k]|. */
int64_t vnni_input_units(const int8_t *x, int32_t *units, int16_t *pairs, ptrdiff_t rows, ptrdiff_t cols);

/* units[i] = (a & 255, a >> 8) for |a| < 2**23. */
void vnni_split_units(const int32_t *a, int32_t *units, ptrdiff_t n);

/* pairs = a saturated to int16, and the outliers of a (n, k) matrix a. */
void vnni_pair_form(const int32_t *a, int16_t *pairs, ptrdiff_t n, ptrdiff_t k, outliers_t *outliers);

/* z[i, j] = sum_k x[i, k] * w[j, k] saturated to the int32 range, from x (m, k) and w (n, k)
 * both as rows of `units` int32 units: input units and split units (one integer each), or
 * int16 pairs (two each; then `outliers`, with x itself, add back what w's pair form cut off;
 * else NULL). Exact (before saturation) when every partial sum over `chunk` consecutive
 * units fits int32 (VPDPWSSD wraps modulo 2**32); the chunks add up in int64. -1 when out of
 * memory, else 0. */
int vnni_product(const int32_t *x_units, const int32_t *w_units, int32_t *z, ptrdiff_t m, ptrdiff_t n,
                 ptrdiff_t units, ptrdiff_t chunk, const int8_t *x, const outliers_t *outliers);

/* IntegerSGD on w (n, k) with G = delta^T x, delta int32 (batch, n) with |delta| < 2**23 and
 * x given as input units (batch, k): w -= tdiv(G, lr) (+ tdiv(w, decay) when decays). Writes
 * the new w's split units to w_units, or (w_units NULL) its pair form to w_pairs and its
 * outliers. Exact when every true |G| < 2**31; returns max|w|, or -1 when out of memory. */
int64_t vnni_sgd_update(const int32_t *delta, const int32_t *x_units, int32_t *w, int32_t *w_units,
                        int16_t *w_pairs, outliers_t *outliers, ptrdiff_t n, ptrdiff_t batch, ptrdiff_t k,
                        divisor_t lr, int decays, divisor_t decay);

#endif
