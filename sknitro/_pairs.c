/*
 * sknitro/_pairs.c: the portable, scalar side of the pair products (see _pairs.h): the unit
 * and pair forms of the operands, and the outlier lists of a weight's pair form.
 */
#include "_pairs.h"
#include "_portable.h"

#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

int64_t pairs_row_l1(const int8_t *x, ptrdiff_t rows, ptrdiff_t cols)
{
    int64_t largest = 0;
    for (ptrdiff_t i = 0; i < rows; i++) {
        int64_t l1 = 0;
        for (ptrdiff_t k = 0; k < cols; k++)
            l1 += magnitude64(x[i * cols + k]);
        largest = l1 > largest ? l1 : largest;
    }
    return largest;
}

void pairs_split_units(const int32_t *a, int32_t *units, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        units[i] = split_unit(a[i]);
}

void pairs_add_outlier(outliers_t *outliers, ptrdiff_t index, int32_t v)
{
    /* rare (weights past 2**15), and found by several threads at once during an update */
#pragma omp critical(sknitro_outliers)
    {
        if (outliers->count < outliers->capacity) {
            outliers->index[outliers->count] = (int32_t)index;
            outliers->residual[outliers->count] = v - saturate_int16(v);
        }
        outliers->count++;
    }
}

void pairs_pair_form(const int32_t *a, int16_t *pairs, ptrdiff_t n, ptrdiff_t k, outliers_t *outliers)
{
    outliers->count = 0;
    for (ptrdiff_t i = 0; i < n * k; i++) {
        pairs[i] = saturate_int16(a[i]);
        if (pairs[i] != a[i])
            pairs_add_outlier(outliers, i, a[i]);
    }
}

void pairs_sort_outliers(outliers_t *outliers)
{
    ptrdiff_t count = outliers->count < outliers->capacity ? outliers->count : outliers->capacity;
    for (ptrdiff_t i = 1; i < count; i++) { /* insertion sort: the list is short */
        int32_t index = outliers->index[i], residual = outliers->residual[i];
        ptrdiff_t j = i;
        for (; j > 0 && outliers->index[j - 1] > index; j--) {
            outliers->index[j] = outliers->index[j - 1];
            outliers->residual[j] = outliers->residual[j - 1];
        }
        outliers->index[j] = index;
        outliers->residual[j] = residual;
    }
}

ptrdiff_t *pairs_outlier_rows(const outliers_t *outliers, ptrdiff_t n, ptrdiff_t k, int *failed)
{
    *failed = 0;
    if (!outliers || outliers->count == 0)
        return NULL;
    ptrdiff_t *row_start = calloc((size_t)(n + 1), sizeof(ptrdiff_t));
    if (!row_start) {
        *failed = 1;
        return NULL;
    }
    ptrdiff_t count = outliers->count < outliers->capacity ? outliers->count : outliers->capacity;
    for (ptrdiff_t o = 0; o < count; o++)
        row_start[outliers->index[o] / k + 1]++;
    for (ptrdiff_t j = 0; j < n; j++)
        row_start[j + 1] += row_start[j];
    return row_start;
}

void pairs_add_outliers(int64_t *totals, int tile_rows, const int8_t *x, ptrdiff_t k,
                        const outliers_t *outliers, const ptrdiff_t *row_start, ptrdiff_t m, ptrdiff_t n,
                        ptrdiff_t i0, ptrdiff_t j0)
{
    ptrdiff_t end = row_start[j0 + 4 < n ? j0 + 4 : n];
    for (ptrdiff_t o = row_start[j0]; o < end; o++) {
        ptrdiff_t column = outliers->index[o] % k, c = outliers->index[o] / k - j0;
        for (ptrdiff_t r = 0; r < tile_rows && i0 + r < m; r++)
            totals[4 * r + c] += (int64_t)x[(i0 + r) * k + column] * outliers->residual[o];
    }
}

int pairs_run_product(product_tile_t tile, ptrdiff_t tile_rows, const int8_t *x, const int32_t *w_units,
                      const product_out_t *out, ptrdiff_t m, ptrdiff_t n, ptrdiff_t units, ptrdiff_t chunk, int pairs,
                      const outliers_t *outliers)
{
    int failed;
    ptrdiff_t *row_start = pairs_outlier_rows(outliers, n, units * 2, &failed);
    if (failed)
        return -1;
#ifdef _OPENMP
    ptrdiff_t threads = (int64_t)m * n * units >= PARALLEL_WORK ? omp_get_max_threads() : 1;
#else
    ptrdiff_t threads = 1;
#endif
    /* a scaled product: each thread's z of one block of rows, scaled once the block is done */
    int32_t *blocks_z = out->scaled ? malloc((size_t)(threads * PRODUCT_ROW_BLOCK * n) * sizeof(int32_t)) : NULL;
    if (out->scaled && !blocks_z) {
        free(row_start);
        return -1;
    }
    ptrdiff_t blocks = (m + PRODUCT_ROW_BLOCK - 1) / PRODUCT_ROW_BLOCK;
#pragma omp parallel for schedule(static) if (threads > 1)
    for (ptrdiff_t block = 0; block < blocks; block++) {
        ptrdiff_t first = block * PRODUCT_ROW_BLOCK;
        ptrdiff_t rows = m - first < PRODUCT_ROW_BLOCK ? m - first : PRODUCT_ROW_BLOCK;
        product_out_t block_out = *out;
        if (out->scaled) {
#ifdef _OPENMP
            block_out.z = blocks_z + omp_get_thread_num() * PRODUCT_ROW_BLOCK * n;
#else
            block_out.z = blocks_z;
#endif
            block_out.row0 = first;
        }
        for (ptrdiff_t j0 = 0; j0 < n; j0 += 4)
            for (ptrdiff_t i0 = first; i0 < first + rows; i0 += tile_rows)
                tile(x, w_units, &block_out, m, n, units, chunk, i0, j0, pairs, outliers, row_start);
        if (out->scaled) {
            scale_loop_int32(block_out.z, out->scaled + first * n, rows * n, out->scale);
            if (out->table)
                lookup_int8(out->table, out->scaled + first * n, out->activated + first * n, rows * n);
        }
    }
    free(blocks_z);
    free(row_start);
    return 0;
}

static ptrdiff_t round_up(ptrdiff_t v, ptrdiff_t step)
{
    return (v + step - 1) / step * step;
}

/* Moves a G of `count` int32 sums (exact: the caller keeps them within int32) to its int64
 * sums, and zeroes it. */
static void move_to_wide(int32_t *g, int64_t *wide, ptrdiff_t count)
{
    for (ptrdiff_t i = 0; i < count; i++) {
        wide[i] += g[i];
        g[i] = 0;
    }
}

/* Room in a G's `count` int32 sums, of which `held` bounds the magnitudes, for a call that adds
 * at most `adding` to each: where the two could pass int32, the sums move to their int64 ones
 * first. Returns the bound after the call. */
static int64_t make_room(int32_t *g, int64_t *wide, ptrdiff_t count, int64_t held, int64_t adding)
{
    if (held + adding > INT32_MAX) {
        move_to_wide(g, wide, count);
        held = 0;
    }
    return held + adding;
}

/* A bound of max |values[j]| for n int32 values, 2**bits, by the bits of every magnitude (less
 * one for negative values) OR-ed together: a loop that vectorizes. Every value fits int16
 * exactly when bits <= 15. */
static int magnitude_bits(const int32_t *values, ptrdiff_t n)
{
    uint32_t ored = 0;
    for (ptrdiff_t j = 0; j < n; j++)
        ored |= (uint32_t)(values[j] < 0 ? ~values[j] : values[j]);
    return ored ? 32 - __builtin_clz(ored) : 0;
}

/* One row of units of an update: the row pair of batch rows `row` and `partner` (-1: a zero
 * row), or the split units of `row`. */
typedef struct {
    ptrdiff_t row, partner;
    int paired;
    int64_t bound; /* of what the row adds to a sum of G: 128 max|delta| of each batch row */
} unit_row_t;

/* One sgd_update's operands, for the two ways of sweeping the batch below. */
typedef struct {
    gradient_tile_t gradient;
    update_tile_t update;
    pack_units_t pack;
    ptrdiff_t columns, tiles;
    const unit_row_t *unit_rows; /* what each row of units holds */
    ptrdiff_t rows;              /* how many */
    const int32_t *delta_units;  /* delta's units, `stride` per row of units */
    ptrdiff_t stride;
    const int8_t *x;
    ptrdiff_t n, batch, k;
    int parallel;
    tile_update_t target; /* w, its copies, the divisors (k0 and largest unused) */
    const int64_t *reach; /* reach[r]: the bounds of rows of units before r, added up */
    int wide;             /* G may pass int32: its sums checked against reach, and moved to int64 */
} update_sweep_t;

/* Row pairs of the first `width` values of two rows of x (`second` NULL: a zero row, the
 * partner of the last of an odd number of rows), zero up to `columns`. */
static void pack_row_pair(const int8_t *first, const int8_t *second, int32_t *packed, ptrdiff_t width,
                          ptrdiff_t columns)
{
    ptrdiff_t c = 0;
    if (second)
        for (; c < width; c++)
            packed[c] = row_pair(first[c], second[c]);
    else
        for (; c < width; c++)
            packed[c] = row_pair(first[c], 0);
    for (; c < columns; c++)
        packed[c] = 0;
}

/* Row pairs of two rows of n int32 that fit int16 (`second` NULL: a zero row). */
static void pair_delta_rows(const int32_t *first, const int32_t *second, int32_t *paired, ptrdiff_t n)
{
    for (ptrdiff_t j = 0; j < n; j++)
        paired[j] = row_pair((int16_t)first[j], second ? (int16_t)second[j] : 0);
}

/* update_tile_t for a G past int32 (int64, `columns` per row of g): sgd_rule_wide weight by
 * weight, for the rare tile whose sums pass int32. */
static int64_t update_tile_wide(const int64_t *g, ptrdiff_t columns, const tile_update_t *t, ptrdiff_t n,
                                ptrdiff_t k0)
{
    int64_t largest = 0;
    ptrdiff_t width = t->k - k0 < columns ? t->k - k0 : columns;
    for (ptrdiff_t j = 0; j < n; j++)
        for (ptrdiff_t c = 0; c < width; c++) {
            ptrdiff_t at = j * t->k + k0 + c;
            int32_t value = (int32_t)sgd_rule_wide(t->w[at], g[j * columns + c], t->lr, t->decays, t->decay);
            t->w[at] = value;
            if (t->w_units) {
                t->w_units[at] = split_unit(value);
            } else {
                t->w_pairs[at] = saturate_int16(value);
                if (t->w_pairs[at] != value)
                    pairs_add_outlier(t->outliers, at, value);
            }
            largest = magnitude64(value) > largest ? magnitude64(value) : largest;
        }
    return largest;
}

/* Rows of units [first, last) of x's columns of `tile`, `columns` per row from `packed`: the
 * input units of one row of x, or the row pairs of two (as unit_rows says). */
static void pack_rows(const update_sweep_t *s, ptrdiff_t tile, ptrdiff_t first, ptrdiff_t last, int32_t *packed)
{
    ptrdiff_t k0 = tile * s->columns, width = s->k - k0 < s->columns ? s->k - k0 : s->columns;
    for (ptrdiff_t r = first; r < last; r++) {
        const unit_row_t *u = &s->unit_rows[r];
        int32_t *out = packed + (r - first) * s->columns;
        if (u->paired)
            pack_row_pair(s->x + u->row * s->k + k0, u->partner < 0 ? NULL : s->x + u->partner * s->k + k0, out,
                          width, s->columns);
        else
            s->pack(s->x + u->row * s->k + k0, out, width, s->columns);
    }
}

/* A batch of at most GRADIENT_ROW_BLOCK rows (a dense layer's): x's units packed once, tile
 * by tile, then panels of w's rows, each updated tile after tile with its G in registers.
 * The largest |w|, or -1 when out of memory. */
static int64_t sweep_whole_batch(const update_sweep_t *s)
{
    ptrdiff_t tile_size = s->rows * s->columns; /* x_units[tile][row][column] */
    int32_t *x_units = malloc((size_t)(s->tiles * tile_size) * sizeof(int32_t));
    if (!x_units)
        return -1;
#pragma omp parallel for schedule(static) if (s->parallel)
    for (ptrdiff_t tile = 0; tile < s->tiles; tile++)
        pack_rows(s, tile, 0, s->rows, x_units + tile * tile_size);
    ptrdiff_t panels = (s->n + UPDATE_PANEL_ROWS - 1) / UPDATE_PANEL_ROWS;
    int64_t largest = 0;
#pragma omp parallel for schedule(static) if (s->parallel) reduction(max : largest)
    for (ptrdiff_t panel = 0; panel < panels; panel++) {
        ptrdiff_t first_row = panel * UPDATE_PANEL_ROWS;
        ptrdiff_t rows = s->n - first_row < UPDATE_PANEL_ROWS ? s->n - first_row : UPDATE_PANEL_ROWS;
        for (ptrdiff_t tile = 0; tile < s->tiles; tile++) {
            tile_update_t apply = s->target;
            apply.k0 = tile * s->columns;
            apply.first_row = first_row;
            apply.largest = 0;
            s->gradient(s->delta_units + first_row, s->stride, x_units + tile * tile_size, NULL, rows, 0, s->rows,
                        &apply);
            largest = apply.largest > largest ? apply.largest : largest;
        }
    }
    free(x_units);
    return largest;
}

/* The update of one tile from its G in int64 (`wide`, n rows of `columns`): through the ISA's
 * update_tile from int32 (into `g`) where every sum fits, else update_tile_wide. */
static int64_t update_from_wide(const update_sweep_t *s, const int64_t *wide, int32_t *g, ptrdiff_t tile)
{
    const tile_update_t *t = &s->target;
    ptrdiff_t count = s->n * s->columns;
    int fits = 1;
    for (ptrdiff_t i = 0; i < count; i++)
        fits &= wide[i] >= -INT32_MAX && wide[i] <= INT32_MAX;
    if (!fits)
        return update_tile_wide(wide, s->columns, t, s->n, tile * s->columns);
    for (ptrdiff_t i = 0; i < count; i++)
        g[i] = (int32_t)wide[i];
    return s->update(g, t->w, t->w_units, t->w_pairs, t->outliers, s->n, s->k, tile * s->columns, t->lr, t->decays,
                     t->decay);
}

/* A larger batch (a conv layer's: every position of every image), or one whose G could pass
 * int32: the tiles go in groups whose G fits GRADIENT_G_BYTES, one sweep over the batch per
 * group. With fewer groups than threads (a small layer: the conv layer 32 -> 64 has 5 tiles of
 * 64 columns, all in one group), the batch is cut into `parts` as well, each summing its own G
 * of the group; the parts' G are added up (modulo 2**32: any cut gives the same integers)
 * before the update. Where the rows' bounds (s->reach) add up past int32, G may pass int32
 * too: each G is moved to int64 sums before its int32 ones could overflow (calls of fewer
 * rows where needed), and added up in int64. The largest |w|, or -1 when out of memory. */
static int64_t sweep_tile_groups(const update_sweep_t *s)
{
    const tile_update_t *t = &s->target;
    ptrdiff_t tiles = s->tiles, tile_g = (s->n + 3) * s->columns;
    ptrdiff_t per_group = GRADIENT_G_BYTES / (tile_g * (ptrdiff_t)sizeof(int32_t));
    per_group = per_group < 1 ? 1 : (per_group < tiles ? per_group : tiles);
#ifdef _OPENMP
    ptrdiff_t threads = s->parallel ? omp_get_max_threads() : 1;
#else
    ptrdiff_t threads = 1;
#endif
    ptrdiff_t groups = (tiles + per_group - 1) / per_group;
    ptrdiff_t parts = groups < threads ? (threads + groups - 1) / groups : 1;
    ptrdiff_t part_rows = (s->rows + parts - 1) / parts, group_g = per_group * tile_g;
    int wide = s->wide;
    /* each thread's x rows packed as units (read n / 4 times per block, they must stay in L1,
     * which rows k apart, often near a power of two, would not) and, with one part, its G of
     * one group at a time; with several, every part's G, kept for the sum; where G may pass
     * int32, every part's G in int64 too. All allocated before any weight is written:
     * running out of memory leaves w as it was. */
    ptrdiff_t per_thread = GRADIENT_ROW_BLOCK * s->columns + (parts > 1 ? 0 : group_g);
    int32_t *scratch = malloc((size_t)(threads * per_thread) * sizeof(int32_t));
    int32_t *sums = parts > 1 ? malloc((size_t)(groups * parts * group_g) * sizeof(int32_t)) : NULL;
    int64_t *wide_sums = wide ? calloc((size_t)(groups * parts * group_g), sizeof(int64_t)) : NULL;
    if (!scratch || (parts > 1 && !sums) || (wide && !wide_sums)) {
        free(scratch);
        free(sums);
        free(wide_sums);
        return -1;
    }
    int64_t largest = 0;
#pragma omp parallel if (s->parallel) reduction(max : largest)
    {
#ifdef _OPENMP
        int32_t *x_tile = scratch + omp_get_thread_num() * per_thread;
#else
        int32_t *x_tile = scratch;
#endif
        int32_t *own = x_tile + GRADIENT_ROW_BLOCK * s->columns;
#pragma omp for schedule(static)
        for (ptrdiff_t item = 0; item < groups * parts; item++) {
            ptrdiff_t group = item / parts, part = item % parts;
            ptrdiff_t first_tile = group * per_group;
            ptrdiff_t last_tile = first_tile + per_group < tiles ? first_tile + per_group : tiles;
            ptrdiff_t begin = part * part_rows, end = begin + part_rows < s->rows ? begin + part_rows : s->rows;
            ptrdiff_t item_g = (last_tile - first_tile) * tile_g;
            int32_t *g = parts > 1 ? sums + item * group_g : own;
            int64_t *g_wide = wide ? wide_sums + item * group_g : NULL;
            int64_t held = 0; /* a bound of |the sums in g| */
            memset(g, 0, (size_t)item_g * sizeof(int32_t));
            for (ptrdiff_t first = begin, last; first < end; first = last) {
                last = first + GRADIENT_ROW_BLOCK < end ? first + GRADIENT_ROW_BLOCK : end;
                if (wide) {
                    while (s->reach[last] - s->reach[first] > INT32_MAX) /* a row's bound < 2**31 */
                        last--;
                    held = make_room(g, g_wide, item_g, held, s->reach[last] - s->reach[first]);
                }
                for (ptrdiff_t tile = first_tile; tile < last_tile; tile++) {
                    pack_rows(s, tile, first, last, x_tile);
                    s->gradient(s->delta_units, s->stride, x_tile, g + (tile - first_tile) * tile_g, s->n, first,
                                last, NULL);
                }
            }
            if (wide)
                move_to_wide(g, g_wide, item_g);
            for (ptrdiff_t tile = first_tile; tile < last_tile && parts == 1; tile++) {
                int32_t *tile_gradient = g + (tile - first_tile) * tile_g;
                int64_t tile_largest =
                    wide ? update_from_wide(s, g_wide + (tile - first_tile) * tile_g, tile_gradient, tile)
                         : s->update(tile_gradient, t->w, t->w_units, t->w_pairs, t->outliers, s->n, s->k,
                                     tile * s->columns, t->lr, t->decays, t->decay);
                largest = tile_largest > largest ? tile_largest : largest;
            }
        }
        if (parts > 1) {
#pragma omp for schedule(static)
            for (ptrdiff_t tile = 0; tile < tiles; tile++) {
                ptrdiff_t group = tile / per_group, at = group * parts * group_g + (tile - group * per_group) * tile_g;
                int64_t tile_largest;
                if (wide) {
                    int64_t *g = wide_sums + at;
                    for (ptrdiff_t part = 1; part < parts; part++)
                        for (ptrdiff_t i = 0; i < tile_g; i++)
                            g[i] += g[part * group_g + i];
                    tile_largest = update_from_wide(s, g, sums + at, tile);
                } else {
                    uint32_t *g = (uint32_t *)(sums + at);
                    for (ptrdiff_t part = 1; part < parts; part++)
                        for (ptrdiff_t i = 0; i < tile_g; i++)
                            g[i] += g[part * group_g + i];
                    tile_largest = s->update((const int32_t *)g, t->w, t->w_units, t->w_pairs, t->outliers, s->n,
                                             s->k, tile * s->columns, t->lr, t->decays, t->decay);
                }
                largest = tile_largest > largest ? tile_largest : largest;
            }
        }
    }
    free(scratch);
    free(sums);
    free(wide_sums);
    return largest;
}

int64_t pairs_run_sgd_update(gradient_tile_t gradient, update_tile_t update, pack_units_t pack, ptrdiff_t columns,
                             const int32_t *delta, const int8_t *x, int32_t *w, int32_t *w_units, int16_t *w_pairs,
                             outliers_t *outliers, ptrdiff_t n, ptrdiff_t batch, ptrdiff_t k, divisor_t lr,
                             int decays, divisor_t decay, int sums_fit_int32)
{
    /* The rows of units: row pairs of the batch rows whose every delta fits int16 (one
     * product per delta * x), in order, the last alone when they are odd in number; then the
     * split units of the others (two products; last row first). Each row of delta_units is
     * padded with zeros to a whole number of the tiles' 4 outputs. */
    ptrdiff_t stride = round_up(n, 4), rows = 0, splits = 0, pending = -1;
    unit_row_t *unit_rows = malloc((size_t)batch * sizeof(unit_row_t) + 1);
    int32_t *delta_units = malloc((size_t)(stride * batch) * sizeof(int32_t) + 1);
    int64_t *reach = malloc((size_t)(batch + 1) * sizeof(int64_t));
    if (!unit_rows || !delta_units || !reach) {
        free(unit_rows);
        free(delta_units);
        free(reach);
        return -1;
    }
    /* one pass over delta: the pairs from the front, the split rows from the back (there is
     * room for both: a pair takes two batch rows), then the split rows moved behind the pairs */
    int64_t pending_bound = 0;
    for (ptrdiff_t b = 0; b < batch; b++) {
        int bits = magnitude_bits(delta + b * n, n); /* |delta| <= 2**bits: 128 * 2**bits bounds its part */
        int64_t bound = (int64_t)128 << bits;
        if (bits > SPLIT_UNIT_BITS) { /* no split unit holds it: nothing written yet */
            free(unit_rows);
            free(delta_units);
            free(reach);
            return PAIRS_DELTA_TOO_WIDE;
        }
        if (bits > 15) {
            unit_rows[batch - 1 - splits++] = (unit_row_t){b, -1, 0, bound};
        } else if (pending < 0) {
            pending = b;
            pending_bound = bound;
        } else {
            unit_rows[rows++] = (unit_row_t){pending, b, 1, pending_bound + bound};
            pending = -1;
        }
    }
    if (pending >= 0)
        unit_rows[rows++] = (unit_row_t){pending, -1, 1, pending_bound};
    memmove(unit_rows + rows, unit_rows + batch - splits, (size_t)splits * sizeof(unit_row_t));
    rows += splits;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const unit_row_t *u = &unit_rows[r];
        const int32_t *top = delta + u->row * n;
        int32_t *out = delta_units + r * stride;
        if (u->paired)
            pair_delta_rows(top, u->partner < 0 ? NULL : delta + u->partner * n, out, n);
        else
            for (ptrdiff_t j = 0; j < n; j++)
                out[j] = split_unit(top[j]);
        for (ptrdiff_t j = n; j < stride; j++)
            out[j] = 0;
    }
    reach[0] = 0;
    for (ptrdiff_t r = 0; r < rows; r++)
        reach[r + 1] = reach[r] + unit_rows[r].bound;
    if (!w_units)
        outliers->count = 0;
    update_sweep_t sweep = {gradient, update, pack, columns, (k + columns - 1) / columns, unit_rows, rows,
                            delta_units, stride, x, n, batch, k, (int64_t)n * batch * k >= PARALLEL_WORK,
                            {w, w_units, w_pairs, outliers, k, 0, 0, lr, decays, decay, 0}, reach,
                            !sums_fit_int32 && reach[rows] > INT32_MAX};
    /* G in registers needs every sum within int32 */
    int64_t largest =
        batch <= GRADIENT_ROW_BLOCK && !sweep.wide ? sweep_whole_batch(&sweep) : sweep_tile_groups(&sweep);
    free(reach);
    free(delta_units);
    free(unit_rows);
    if (largest >= 0 && !w_units)
        pairs_sort_outliers(outliers);
    return largest;
}

/* w's split units transposed (k x npad, zero past n); NULL when out of memory */
static int32_t *transposed_units(const int32_t *w_units, ptrdiff_t n, ptrdiff_t k, ptrdiff_t npad)
{
    int32_t *wt = calloc((size_t)(k * npad), sizeof(int32_t));
    if (wt)
        for (ptrdiff_t j = 0; j < n; j++)
            for (ptrdiff_t c = 0; c < k; c++)
                wt[c * npad + j] = w_units[j * k + c];
    return wt;
}

int pairs_run_narrow_product(narrow_product_t product, pack_units_t pack, ptrdiff_t lanes, const int8_t *x,
                             const int32_t *w_units, const product_out_t *out, ptrdiff_t m, ptrdiff_t n,
                             ptrdiff_t k)
{
    ptrdiff_t npad = round_up(n, lanes), kpad = round_up(k, NARROW_K_BLOCK);
    int32_t *wt = transposed_units(w_units, n, k, npad);
    if (!wt)
        return -1;
    int failed = 0;
    ptrdiff_t blocks = (m + NARROW_ROWS - 1) / NARROW_ROWS;
#pragma omp parallel if ((int64_t)m * n * k >= PARALLEL_WORK) reduction(| : failed)
    {
        int32_t *x_units = calloc((size_t)(NARROW_ROWS * kpad), sizeof(int32_t)); /* read whole: no uninitialised lanes */
        failed |= x_units == NULL;
#pragma omp for schedule(static)
        for (ptrdiff_t block = 0; block < blocks; block++) {
            if (!x_units)
                continue;
            ptrdiff_t i0 = block * NARROW_ROWS, rows = m - i0 < NARROW_ROWS ? m - i0 : NARROW_ROWS;
            for (ptrdiff_t r = 0; r < rows; r++)
                pack(x + (i0 + r) * k, x_units + r * kpad, k, kpad);
            if (!out->scaled) {
                product(x_units, kpad, wt, npad, out->z + i0 * n, rows, n, k, NULL, NULL);
                continue;
            }
            product(x_units, kpad, wt, npad, NULL, rows, n, k, &out->scale, out->scaled + i0 * n);
            if (out->table)
                lookup_int8(out->table, out->scaled + i0 * n, out->activated + i0 * n, rows * n);
        }
        free(x_units);
    }
    free(wt);
    return failed ? -1 : 0;
}

int64_t pairs_run_narrow_update(narrow_gradient_t gradient, pack_units_t pack, ptrdiff_t lanes,
                                const int32_t *delta, const int8_t *x, int32_t *w, int32_t *w_units,
                                int16_t *w_pairs, outliers_t *outliers, ptrdiff_t n, ptrdiff_t batch, ptrdiff_t k,
                                divisor_t lr, int decays, divisor_t decay)
{
    /* The kernel sums G modulo 2**32 in `part`, exact while its sums fit int32: `held` bounds
     * them (128 max|delta| per row), and before a call could pass int32 they go to `sums` in
     * int64. So G itself may pass int32: a first conv layer's sums over every position of
     * every image do on long runs. */
    ptrdiff_t npad = round_up(n, lanes), kpad = round_up(k, NARROW_K_BLOCK);
    int64_t *gt = calloc((size_t)(kpad * npad), sizeof(int64_t)); /* G transposed */
    if (!gt)
        return -1;
    int failed = 0, too_wide = 0;
    ptrdiff_t blocks = (batch + GRADIENT_ROW_BLOCK - 1) / GRADIENT_ROW_BLOCK;
#pragma omp parallel if ((int64_t)n * batch * k >= PARALLEL_WORK) reduction(| : failed, too_wide)
    {
        uint32_t *part = calloc((size_t)(kpad * npad), sizeof(uint32_t));
        int64_t *sums = calloc((size_t)(kpad * npad), sizeof(int64_t)); /* this thread's rows */
        int64_t held = 0;
        int32_t *x_units = malloc((size_t)(GRADIENT_ROW_BLOCK * kpad) * sizeof(int32_t));
        int32_t *delta_pairs = malloc((size_t)(GRADIENT_ROW_BLOCK / 2 * n) * sizeof(int32_t));
        failed |= part == NULL || sums == NULL || x_units == NULL || delta_pairs == NULL;
#pragma omp for schedule(static)
        for (ptrdiff_t block = 0; block < blocks; block++) {
            if (!part || !sums || !x_units || !delta_pairs)
                continue;
            ptrdiff_t first = block * GRADIENT_ROW_BLOCK;
            ptrdiff_t rows = batch - first < GRADIENT_ROW_BLOCK ? batch - first : GRADIENT_ROW_BLOCK;
            const int32_t *block_delta = delta + first * n;
            const int8_t *block_x = x + first * k;
            int bits = magnitude_bits(block_delta, rows * n);
            int64_t row_bound = (int64_t)128 << bits; /* <= 2**30: |delta| < 2**23 */
            if (bits > SPLIT_UNIT_BITS) { /* no split unit holds it: w is written only after the loop */
                too_wide = 1;
                continue;
            }
            if (bits <= 15) {
                /* every delta of the block fits int16: its rows two by two as row pairs, the
                 * last alone with a zero row when they are odd in number (one call:
                 * 256 * 128 * 2**15 < 2**31) */
                ptrdiff_t pairs = (rows + 1) / 2;
                for (ptrdiff_t r = 0; r < pairs; r++) {
                    int second = 2 * r + 1 < rows;
                    pack_row_pair(block_x + 2 * r * k, second ? block_x + (2 * r + 1) * k : NULL, x_units + r * kpad,
                                  k, kpad);
                    pair_delta_rows(block_delta + 2 * r * n, second ? block_delta + (2 * r + 1) * n : NULL,
                                    delta_pairs + r * n, n);
                }
                held = make_room((int32_t *)part, sums, kpad * npad, held, rows * row_bound);
                gradient(delta_pairs, n, x_units, kpad, pairs, part, npad, 1);
            } else {
                for (ptrdiff_t r = 0; r < rows; r++)
                    pack(block_x + r * k, x_units + r * kpad, k, kpad);
                ptrdiff_t step = (ptrdiff_t)(INT32_MAX / row_bound); /* rows per call: at least 1 */
                for (ptrdiff_t r = 0; r < rows; r += step) {
                    ptrdiff_t count = rows - r < step ? rows - r : step;
                    held = make_room((int32_t *)part, sums, kpad * npad, held, count * row_bound);
                    gradient(block_delta + r * n, n, x_units + r * kpad, kpad, count, part, npad, 0);
                }
            }
        }
        if (part && sums)
            move_to_wide((int32_t *)part, sums, kpad * npad);
        if (sums)
#pragma omp critical(sknitro_narrow_gradient)
            for (ptrdiff_t i = 0; i < kpad * npad; i++)
                gt[i] += sums[i];
        free(delta_pairs);
        free(x_units);
        free(sums);
        free(part);
    }
    int64_t largest = too_wide ? PAIRS_DELTA_TOO_WIDE : -1;
    if (!failed && !too_wide) {
        largest = 0;
        for (ptrdiff_t j = 0; j < n; j++)
            for (ptrdiff_t c = 0; c < k; c++) {
                int64_t g = gt[c * npad + j];
                int32_t old = w[j * k + c];
                int64_t value = g > INT32_MAX || g < -INT32_MAX ? sgd_rule_wide(old, g, lr, decays, decay)
                                                                : sgd_rule(old, (int32_t)g, lr, decays, decay);
                w[j * k + c] = (int32_t)value;
                largest = magnitude64(value) > largest ? magnitude64(value) : largest;
            }
        if (w_units)
            pairs_split_units(w, w_units, n * k);
        else
            pairs_pair_form(w, w_pairs, n, k, outliers); /* sorted: found in order */
    }
    free(gt);
    return largest;
}
