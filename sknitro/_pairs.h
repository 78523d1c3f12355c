/*
 * sknitro/_pairs.h: exact integer products of the dense and conv layers on int16 pair
 * instructions -- AVX2 (_avx2.c: VPMADDWD + VPADDD) and AVX-512 VNNI (_vnni.c: VPDPWSSD) --
 * and the scalar code both share (_pairs.c).
 *
 * Both instructions multiply pairs of int16 and add both products to an int32 lane:
 *   acc += a0 * b0 + a1 * b1
 * (VPDPWSSD in one instruction, VPMADDWD then VPADDD in two; both wrap modulo 2**32, and
 * VPMADDWD's one overflowing case, all four operands -32768, never occurs in the forms
 * below). So the two ISAs compute the same integers, and the callers' proofs
 * (sknitro/nn/kernels.py) hold for both.
 *
 * The forward product takes x (int8) and the weights as plain int16, two products per lane:
 * the weights' "pair form" saturates them to int16, and the few past it (their "outliers")
 * are added back from a list, in int64. The weight gradient's delta is wider (it reaches
 * 2**19), so each of its integers travels as a "unit", a pair of int16 that the instruction
 * recombines (see _rules.h):
 *   input units   (x, 256 x)            for int8 x
 *   split units   (a & 255, a >> 8)     for |a| < 2**23
 * and (x, 256 x) . (a & 255, a >> 8) = x * a exactly, one product per lane. The batch rows
 * whose every delta fits int16 (most of them; the kernel looks) go two by two as "row pairs"
 * instead, (delta[b], delta[b']) . (x[b], x[b']): two batch rows per lane, half the
 * instructions. (The forward falls back to split units of W when the pair form has too many
 * outliers, or x an odd width.) A sum is exact whenever its true value fits int32: the
 * caller proves that for the forward; the weight gradient's sums move to int64 wherever a
 * bound of max|delta| per row says their int32 ones could overflow (unless the caller proves
 * they cannot).
 *
 * The kernels use the OpenMP threads the user allows (OMP_NUM_THREADS, threadpoolctl); each
 * output integer is computed by one thread in one fixed order, or (a G summed in parts) as
 * an exact sum of the threads' parts, and the outlier lists are sorted, so the results
 * are the same for any number of threads. (Only a list past its
 * capacity, which the engine never reads, may hold other outliers from run to run.)
 */
#ifndef SKNITRO_PAIRS_H
#define SKNITRO_PAIRS_H

#include <stddef.h>
#include <stdint.h>

#include "_rules.h"

/* Weights past int16 in a weight's pair form (which saturates them): the flat index of each
 * (row * k + column, ascending) and what saturation cut off, w - clip(w, -32768, 32767).
 * `count` may exceed `capacity`; the list then holds only the first `capacity`. */
typedef struct {
    int32_t *index;
    int32_t *residual;
    ptrdiff_t capacity;
    ptrdiff_t count;
} outliers_t;

/* ---- _pairs.c: portable ------------------------------------------------------------- */

/* max_i sum_k |x[i, k]| for int8 x of shape (rows, cols): it bounds the forward's partial sums. */
int64_t pairs_row_l1(const int8_t *x, ptrdiff_t rows, ptrdiff_t cols);

/* units[i] = split_unit(a[i]) for |a| < 2**23. */
void pairs_split_units(const int32_t *a, int32_t *units, ptrdiff_t n);

/* pairs = a saturated to int16, and the outliers of a (n, k) matrix a. */
void pairs_pair_form(const int32_t *a, int16_t *pairs, ptrdiff_t n, ptrdiff_t k, outliers_t *outliers);

/* Records the outlier of value v (past int16) at flat index `index` (thread-safe). */
void pairs_add_outlier(outliers_t *outliers, ptrdiff_t index, int32_t v);

/* Sorts the recorded outliers by index (an update finds them in tile order). */
void pairs_sort_outliers(outliers_t *outliers);

/* The outliers of row j of an (n, k) matrix: [row_start[j], row_start[j + 1]); a calloc'ed
 * array of n + 1 (the caller frees it), or NULL when there are none (*failed: out of memory). */
ptrdiff_t *pairs_outlier_rows(const outliers_t *outliers, ptrdiff_t n, ptrdiff_t k, int *failed);

/* What the pair form of w cut off, added to a tile's int64 totals: totals[4 r + c] is
 * z[i0 + r, j0 + c] for r < tile_rows and c < 4; x is int8 (m, k). */
void pairs_add_outliers(int64_t *totals, int tile_rows, const int8_t *x, ptrdiff_t k,
                        const outliers_t *outliers, const ptrdiff_t *row_start, ptrdiff_t m, ptrdiff_t n,
                        ptrdiff_t i0, ptrdiff_t j0);

/* Saturates an int64 total to the int32 range (a product's z). */
static inline int32_t saturate_int32(int64_t v)
{
    return (int32_t)(v > INT32_MAX ? INT32_MAX : (v < INT32_MIN ? INT32_MIN : v));
}

/* Where a product puts z = x w^T: in `z` (int32, saturated; its rows from `row0` on), or, with
 * `scaled` set, NITRO scaling of it (nitro_scale32 of the saturated z) in `scaled`, and with a
 * `table`, also table[scaled] by bit pattern in `activated`. A scaled forward never writes its
 * whole z: the driver gives the tiles a block of rows at a time, in cache, and scales it. */
typedef struct {
    int32_t *z;
    ptrdiff_t row0;
    divisor_t scale;
    int8_t *scaled;
    const int8_t *table;
    int8_t *activated;
} product_out_t;

/* ---- the drivers: loops, threads and memory around one ISA's tiles ------------------- */

/* A tile of the product z = x w^T: rows i0.. of x against rows j0..j0+3 of w, into out->z
 * (row i of z at out->z + (i - out->row0) * n; see `product` below; row_start:
 * pairs_outlier_rows, or NULL). */
typedef void (*product_tile_t)(const int8_t *x, const int32_t *w_units, const product_out_t *out, ptrdiff_t m,
                               ptrdiff_t n, ptrdiff_t units, ptrdiff_t chunk, ptrdiff_t i0, ptrdiff_t j0, int pairs,
                               const outliers_t *outliers, const ptrdiff_t *row_start);

/* What a gradient tile applies at once when its rows are the whole batch: sgd_rule on
 * columns [k0, k0 + columns) of rows first_row.. of w (n, k), the new values' split units or
 * pair form and outliers (as update_tile_t); the tile leaves the largest |w| it wrote in
 * `largest`. */
typedef struct {
    int32_t *w;
    int32_t *w_units;
    int16_t *w_pairs;
    outliers_t *outliers;
    ptrdiff_t k, k0, first_row;
    divisor_t lr;
    int decays;
    divisor_t decay;
    int64_t largest;
} tile_update_t;

/* Adds delta^T x over rows of units [first, last) to the G of a tile of `columns` columns of
 * w: delta_units holds delta's units row by row (split units of one batch row, or the row
 * pairs of two), `stride` (n rounded up to 4, zero past n) per row; x_tile
 * holds those rows of x as the matching units (input units, or row pairs), `columns` per row
 * (packed by the driver: contiguous, zero past the last column); g is n + 3 rows of `columns`
 * int32 (rows past n are scratch); int32 lanes wrap. With `apply` (g NULL) the rows are the
 * whole batch and the n rows of G those of w from apply->first_row (delta_units starting at
 * that row): each 4 rows of G are summed from zero in registers and go straight into the
 * update, which prefetches the same rows of w in the next tile meanwhile, so G never goes to
 * memory. */
typedef void (*gradient_tile_t)(const int32_t *delta_units, ptrdiff_t stride, const int32_t *x_tile, int32_t *g,
                                ptrdiff_t n, ptrdiff_t first, ptrdiff_t last, tile_update_t *apply);

/* Applies sgd_rule to columns [k0, k0 + columns) of w from their G (g, as above) and writes
 * the new values' split units, or their pair form and outliers; returns their largest |w|. */
typedef int64_t (*update_tile_t)(const int32_t *g, int32_t *w, int32_t *w_units, int16_t *w_pairs,
                                 outliers_t *outliers, ptrdiff_t n, ptrdiff_t k, ptrdiff_t k0, divisor_t lr,
                                 int decays, divisor_t decay);

/* The product of `pair_kernels_t` from an ISA's tile of tile_rows x 4. */
int pairs_run_product(product_tile_t tile, ptrdiff_t tile_rows, const int8_t *x, const int32_t *w_units,
                      const product_out_t *out, ptrdiff_t m, ptrdiff_t n, ptrdiff_t units, ptrdiff_t chunk, int pairs,
                      const outliers_t *outliers);

/* Packs the first `width` int8 values of a row of x as input units into `packed`, zero up to
 * `columns` (the x_tile rows of gradient_tile_t). */
typedef void (*pack_units_t)(const int8_t *values, int32_t *packed, ptrdiff_t width, ptrdiff_t columns);

/* The update of `pair_kernels_t` from an ISA's tiles of `columns` columns. */
int64_t pairs_run_sgd_update(gradient_tile_t gradient, update_tile_t update, pack_units_t pack, ptrdiff_t columns,
                             const int32_t *delta, const int8_t *x, int32_t *w, int32_t *w_units, int16_t *w_pairs,
                             outliers_t *outliers, ptrdiff_t n, ptrdiff_t batch, ptrdiff_t k, divisor_t lr,
                             int decays, divisor_t decay, int sums_fit_int32);

/* ---- narrow layers: fewer than NARROW_UNITS inputs (a first conv layer's 9 or 27) ------
 * Their rows are too short for tiles along k; these kernels put the outputs in the lanes and
 * broadcast each input unit instead: w's split units go transposed, wt (k x npad, npad: n
 * rounded up to whole vectors, zero past n), and x's rows as input units (kpad per row, kpad:
 * k rounded up to NARROW_K_BLOCK, zero past k). */
#define NARROW_UNITS 64
#define NARROW_ROWS 8     /* rows of z per call of a product kernel */
#define NARROW_K_BLOCK 16 /* inputs per sweep of a gradient kernel */

/* z[r, j] = sum_k x[r, k] w[j, k] for rows r < rows (<= NARROW_ROWS) of x_units, in int32
 * lanes (the caller proves that whole rows fit int32); z's rows are n apart. With a `scale`
 * (else NULL) the tile writes nitro_scale32(z, scale) to the int8 `scaled` instead (z unused):
 * a first conv layer's z is the largest array of its step, and it is never needed whole. */
typedef void (*narrow_product_t)(const int32_t *x_units, ptrdiff_t kpad, const int32_t *wt, ptrdiff_t npad,
                                 int32_t *z, ptrdiff_t rows, ptrdiff_t n, ptrdiff_t k, const divisor_t *scale,
                                 int8_t *scaled);

/* gt[k][j] += sum_r x[r, k] delta[r, j] over `rows` rows of delta (n per row) and x_units; gt
 * is kpad x npad, lanes wrap. delta is int32, split in registers, and x_units input units; or
 * (`paired`) both are row pairs already (each row of units: two rows of the batch). */
typedef void (*narrow_gradient_t)(const int32_t *delta, ptrdiff_t n, const int32_t *x_units, ptrdiff_t kpad,
                                  ptrdiff_t rows, uint32_t *gt, ptrdiff_t npad, int paired);

/* `product` of pair_kernels_t for split units and k < NARROW_UNITS, whole rows in int32: the
 * outputs in the lanes, scaled there when `out` asks. */
int pairs_run_narrow_product(narrow_product_t product, pack_units_t pack, ptrdiff_t lanes, const int8_t *x,
                             const int32_t *w_units, const product_out_t *out, ptrdiff_t m, ptrdiff_t n,
                             ptrdiff_t k);

/* `sgd_update` of pair_kernels_t for k < NARROW_UNITS: G from the narrow gradient kernel,
 * exact in int64 (G may pass int32), then sgd_rule weight by weight (n * k of them: a few
 * hundred). */
int64_t pairs_run_narrow_update(narrow_gradient_t gradient, pack_units_t pack, ptrdiff_t lanes,
                                const int32_t *delta, const int8_t *x, int32_t *w, int32_t *w_units,
                                int16_t *w_pairs, outliers_t *outliers, ptrdiff_t n, ptrdiff_t batch, ptrdiff_t k,
                                divisor_t lr, int decays, divisor_t decay);

/* ---- one ISA's kernels (_avx2.c, _vnni.c) -------------------------------------------- */

typedef struct {
    const char *name;

    /* 1 when this CPU runs the kernels, else 0. */
    int (*supported)(void);

    /* z[i, j] = sum_k x[i, k] * w[j, k], stored as `out` says (saturated to the int32 range, or
     * NITRO-scaled), for int8 x (m, k) and w (n, k) as rows of `units` int32 units: with
     * `pairs`, w's pair form (k = 2 units; x is read as int16 pairs, and `outliers` add back
     * what the pair form cut off), else w's split units (k = units; x is read as input units;
     * outliers NULL). Exact (before saturation) when every partial sum over `chunk`
     * consecutive units fits int32; the chunks add up in int64. Split units with k <
     * NARROW_UNITS and whole rows in one chunk take the narrow kernels. x's forms are made in
     * registers: no copy of x is ever written. -1 when out of memory. */
    int (*product)(const int8_t *x, const int32_t *w_units, const product_out_t *out, ptrdiff_t m, ptrdiff_t n,
                   ptrdiff_t units, ptrdiff_t chunk, int pairs, const outliers_t *outliers);

    /* IntegerSGD on w (n, k) with G = delta^T x, delta int32 (batch, n) with |delta| < 2**23
     * and int8 x (batch, k): w = sgd_rule(w, G). Writes the new w's split units
     * to w_units, or (w_units NULL) its pair form to w_pairs and its outliers. Exact for any
     * G; `sums_fit_int32` says the caller proved every sum of G (and of a part of it) within
     * int32, which spares the checks and the int64 sums of a G that may pass it. Returns
     * max|w|, -1 when out of memory, or PAIRS_DELTA_TOO_WIDE, having written nothing, when a
     * delta is past -2**23 <= delta < 2**23. */
    int64_t (*sgd_update)(const int32_t *delta, const int8_t *x, int32_t *w, int32_t *w_units,
                          int16_t *w_pairs, outliers_t *outliers, ptrdiff_t n, ptrdiff_t batch, ptrdiff_t k,
                          divisor_t lr, int decays, divisor_t decay, int sums_fit_int32);
} pair_kernels_t;

extern const pair_kernels_t avx2_kernels, vnni_kernels;

/* What an update returns for a delta that no split unit holds (see sgd_update). */
#define PAIRS_DELTA_TOO_WIDE (-2)

/* Products of at least this many int16 pairs run on several threads (smaller ones: one). */
#define PARALLEL_WORK ((int64_t)1 << 20)
/* Rows of x per sweep of the product over w: they stay in L1. */
#define PRODUCT_ROW_BLOCK 8
/* Rows of units per sweep of the gradient over the outputs: they stay in L1 (a conv
 * layer's batch is every position of every image: tens of thousands of rows). */
#define GRADIENT_ROW_BLOCK 256
/* Bytes of G one thread accumulates at a time (the tiles of a sweep over the batch): they
 * stay in L2, and delta is read once per sweep instead of once per tile. */
#define GRADIENT_G_BYTES ((ptrdiff_t)512 * 1024)
/* Rows of w per panel of a whole-batch update: a panel's rows are updated tile after tile
 * along them, so each page of w is finished before the next (a sweep down all n rows per
 * tile touched a page per row, and missed the TLB at every one). */
#define UPDATE_PANEL_ROWS 16

#endif
