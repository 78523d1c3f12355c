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

/* units[i, k] = (x, 256 x) for int8 x of shape (rows, cols); returns max_i sum_k |x[i, k]|. */
int64_t vnni_input_units(const int8_t *x, int32_t *units, ptrdiff_t rows, ptrdiff_t cols);

/* units[i] = (a & 255, a >> 8) for |a| < 2**23. */
void vnni_split_units(const int32_t *a, int32_t *units, ptrdiff_t n);

/* z[i, j] = sum_k x[i, k] * w[j, k] saturated to the int32 range, from x's input units (m, k)
 * and w's split units (n, k). Exact (before saturation) when every partial sum over `chunk`
 * consecutive k fits int32 (VPDPWSSD wraps modulo 2**32); the chunks add up in int64. */
void vnni_product(const int32_t *x_units, const int32_t *w_units, int32_t *z, ptrdiff_t m,
                  ptrdiff_t n, ptrdiff_t k, ptrdiff_t chunk);

/* IntegerSGD on w (n, k) with G = delta^T x, delta int32 (batch, n) with |delta| < 2**23 and
 * x given as input units (batch, k): w -= tdiv(G, lr) (+ tdiv(w, decay) when decays), and
 * w_units = split units of the new w. Exact when every true |G| < 2**31; returns max|w|.
 * Returns -1 when out of memory. */
int64_t vnni_sgd_update(const int32_t *delta, const int32_t *x_units, int32_t *w, int32_t *w_units,
                        ptrdiff_t n, ptrdiff_t batch, ptrdiff_t k, divisor_t lr, int decays,
                        divisor_t decay);

#endif
