/*
 * sknitro/_rules.h: the elementwise integer rules of the engine, written once in C.
 *
 * The NumPy engine (sknitro/nn/functional.py, layers.py, optim.py) is the readable reference;
 * every C loop of the extension -- the portable kernels of _fused.c, the scalar parts of the
 * pair products (_pairs.c) and the AVX2 and VNNI kernels -- uses these functions, and the
 * vector code of _avx2.c and _vnni.c computes the same rules lane by lane (the tests hold
 * every kernel to the NumPy reference, integer for integer). Plain C99 with 64-bit integers:
 * the aarch64 test (tests/c/test_rules.c) builds it for another architecture too.
 *
 * Truncated division by a run-time constant is a multiply and a shift (Granlund and
 * Montgomery, 1994): for 0 <= n < 2**31 and 1 <= d < 2**31, with l = ceil(log2 d) and
 * m = ceil(2**(31 + l) / d), floor(n / d) == (n * m) >> (31 + l). Compilers vectorize that;
 * they cannot vectorize a division instruction.
 */
#ifndef SKNITRO_RULES_H
#define SKNITRO_RULES_H

#include <stddef.h>
#include <stdint.h>

/* The multiply-and-shift form of a divisor d in [1, 2**31). */
typedef struct {
    uint32_t multiplier; /* < 2**32 for every d < 2**31 */
    int shift;
    uint32_t d; /* the divisor itself: tdiv(n, d) = 0 wherever |n| < d */
} divisor_t;

/* The magic multiplier of d, 1 <= d < 2**31: m = ceil(2**(31 + l) / d) by long division in
 * 64 bits (2**(31 + l) < 2**62). */
static inline divisor_t make_divisor(int64_t d)
{
    int l = 0;
    while (((int64_t)1 << l) < d)
        l++;
    uint64_t numerator = (uint64_t)1 << (31 + l);
    divisor_t out;
    out.multiplier = (uint32_t)((numerator + (uint64_t)d - 1) / (uint64_t)d);
    out.shift = 31 + l;
    out.d = (uint32_t)d;
    return out;
}

/* tdiv(n, d) for |n| < 2**31, rounding toward zero (functional.tdiv). */
static inline int32_t tdiv32(int32_t n, divisor_t d)
{
    uint32_t magnitude = (uint32_t)(n < 0 ? -(int64_t)n : n);
    int32_t q = (int32_t)(((uint64_t)magnitude * d.multiplier) >> d.shift);
    return n < 0 ? -q : q;
}

/* The int8 clip of NITRO scaling and of every activation: [-127, 127] (functional.to_int8). */
static inline int8_t clip_int8(int32_t q)
{
    return (int8_t)(q > 127 ? 127 : (q < -127 ? -127 : q));
}

/* NITRO scaling of an exact int32 pre-activation z (layers.nitro_scale). */
static inline int8_t nitro_scale32(int32_t z, divisor_t scale)
{
    return clip_int8(tdiv32(z, scale));
}

/* A value dropout keeps (layers.IntegerDropout.reference_forward): tdiv(x * R, 1000) for int8 x
 * and the rescale R = 100000 // keep_percent, 1 <= R < 2**23 (so |x * R| < 2**30). C's integer
 * division truncates toward zero, as tdiv does, and by a constant compiles to a multiply. */
static inline int32_t dropout_kept(int8_t x, int32_t rescale)
{
    return (int32_t)x * rescale / 1000;
}

/* IntegerSGD on one weight (optim.integer_sgd_step): w - tdiv(g, lr) - tdiv(w, decay), with
 * the decay term only when `decays`. |g| < 2**31; the caller proves the result fits int32. */
static inline int64_t sgd_rule(int32_t w, int32_t g, divisor_t lr, int decays, divisor_t decay)
{
    int64_t step = tdiv32(g, lr);
    if (decays)
        step += tdiv32(w, decay);
    return (int64_t)w - step;
}

/* tdiv(n, d) for any int64 n: C's division truncates toward zero, as tdiv does (a division
 * instruction: for the few values past int32, where the multiply and shift does not reach). */
static inline int64_t tdiv64(int64_t n, divisor_t d)
{
    return n / (int64_t)d.d;
}

/* sgd_rule for any int64 g: the same rule, its gradient term divided in 64 bits. */
static inline int64_t sgd_rule_wide(int32_t w, int64_t g, divisor_t lr, int decays, divisor_t decay)
{
    return sgd_rule(w, 0, lr, decays, decay) - tdiv64(g, lr);
}

static inline int64_t magnitude64(int64_t v)
{
    return v < 0 ? -v : v;
}

/* Row r of a matrix with `count` rows, the last row standing in for those past the end (the
 * edge tiles of the pair products and the heads' blocks of rows compute them and drop the
 * result). */
static inline ptrdiff_t clamp_row(ptrdiff_t r, ptrdiff_t count)
{
    return r < count ? r : count - 1;
}

/* ---- the int16 pair forms of the pair products (_pairs.c, _avx2.c, _vnni.c) ------------- */

static inline int16_t saturate_int16(int32_t v)
{
    return (int16_t)(v > 32767 ? 32767 : (v < -32768 ? -32768 : v));
}

/* The input unit (x, 256 x) of an int8 x, as one int32 (low half first). */
static inline int32_t input_unit(int8_t x)
{
    return (int32_t)(((uint32_t)x & 0xFFFFu) | ((uint32_t)(x * 256) << 16));
}

/* The split unit (a & 255, a >> 8) of |a| < 2**23, as one int32: a pair of int16 whose
 * pairwise product with an input unit is x * (a & 255) + 256 x * (a >> 8) = x * a. (It holds
 * -2**23 <= a < 2**23: the integers of at most SPLIT_UNIT_BITS bits besides the sign.) */
#define SPLIT_UNIT_BITS 23
static inline int32_t split_unit(int32_t a)
{
    return (int32_t)(((uint32_t)a & 0xFFu) | ((uint32_t)(a >> 8) << 16));
}

/* The row pair (a, b) of two int16, as one int32 (low half first): its pairwise product with
 * another row pair (c, d) is a c + b d. The weight gradient pairs two batch rows of delta and
 * x this way where every delta of both fits int16: one product per delta * x, where split and
 * input units take two. */
static inline int32_t row_pair(int16_t a, int16_t b)
{
    return (int32_t)((uint32_t)(uint16_t)a | ((uint32_t)(uint16_t)b << 16));
}

#endif
