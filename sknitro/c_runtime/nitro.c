/*
 * nitro.c: the integer-only NITRO-D runtime of an exported sknitro model (see nitro.h).
 *
 * One sample at a time: inference keeps two maps of the path; training stores each block's
 * pre-activations s for the batch (int8) and rebuilds every other value from them, so that a
 * batch needs little more memory than its s. Gradients G are summed over the batch in int64,
 * exactly, and every layer is updated once per step, as the engine does on whole batches.
 */
#include "nitro.h"

#include "nitro_rules.h" /* the engine's elementwise rules, shared with sknitro's C kernels */

#define INT32_LIMIT 2147483647

/* ---- the rules --------------------------------------------------------------------------- */

/* NITRO scaling: clip(tdiv(z, scale), -127, 127), C99 `/` truncating toward zero. */
static int8_t nitro_scale(int64_t z, int64_t scale)
{
    int64_t q = z / scale;
    return clip_int8((int32_t)(q > 128 ? 128 : (q < -128 ? -128 : q)));
}

/* Weight i as exported (in the smallest type holding the matrix). */
static int32_t exported_weight(const nitro_matrix *m, int64_t i)
{
    switch (m->bytes) {
    case 1:
        return ((const int8_t *)m->data)[i];
    case 2:
        return ((const int16_t *)m->data)[i];
    default:
        return ((const int32_t *)m->data)[i];
    }
}

/* Weight i as it is now: trained (in RAM) or exported. */
static int32_t weight_at(const nitro_matrix *m, int64_t i)
{
    return m->ram != NULL ? m->ram[i] : exported_weight(m, i);
}

/* Whether terms products of |x| <= x_bound and |w| <= w_bound sum exactly in int32 (x_bound
 * and terms below 2**31: their product fits int64). */
static int sum_fits_int32(int64_t x_bound, int64_t w_bound, int64_t terms)
{
    return x_bound == 0 || terms == 0 || w_bound <= INT32_LIMIT / (x_bound * terms);
}

/* Row `row` of m times x (m->cols values), in int32 when `narrow` (sum_fits_int32 proved it
 * exact for every row: the caller tests once per matrix). */
#define DOT(WEIGHT, SUM)                                                                    \
    do {                                                                                    \
        const WEIGHT *w = (const WEIGHT *)base + (ptrdiff_t)row * m->cols;                  \
        SUM sum = 0;                                                                        \
        for (int32_t k = 0; k < m->cols; k++)                                               \
            sum += (SUM)w[k] * x[k];                                                        \
        return sum;                                                                         \
    } while (0)

static int64_t dot_row(const nitro_matrix *m, int32_t row, const int16_t *x, int narrow)
{
    const void *base = m->ram != NULL ? (const void *)m->ram : m->data;
    int bytes = m->ram != NULL ? 4 : m->bytes;
    if (narrow) {
        if (bytes == 1)
            DOT(int8_t, int32_t);
        if (bytes == 2)
            DOT(int16_t, int32_t);
        DOT(int32_t, int32_t);
    }
    if (bytes == 1)
        DOT(int8_t, int64_t);
    if (bytes == 2)
        DOT(int16_t, int64_t);
    DOT(int32_t, int64_t);
}

/* ---- forward layers --------------------------------------------------------------------- */

static void dense_forward(const nitro_matrix *m, int64_t scale, const int16_t *x, int32_t x_bound, int8_t *s)
{
    int narrow = sum_fits_int32(x_bound, m->bound, m->cols);
    for (int32_t j = 0; j < m->rows; j++)
        s[j] = nitro_scale(dot_row(m, j, x, narrow), scale);
}

/* One output channel f of a 3x3 convolution (stride 1, zero padding 1) summed into acc[h * w],
 * one kernel position at a time over the whole plane. */
#define CONV_CHANNEL(SUM, acc)                                                                 \
    do {                                                                                       \
        for (int32_t p = 0; p < plane; p++)                                                    \
            acc[p] = 0;                                                                        \
        for (int32_t c = 0; c < channels; c++)                                                 \
            for (int32_t u = 0; u < 3; u++)                                                    \
                for (int32_t v = 0; v < 3; v++) {                                              \
                    SUM weight = weight_at(&st->layer, ((int64_t)f * channels + c) * 9 + u * 3 + v); \
                    int32_t di = u - 1, dj = v - 1;                                            \
                    int32_t i0 = di < 0 ? 1 : 0, i1 = di > 0 ? h - 1 : h;                      \
                    int32_t j0 = dj < 0 ? 1 : 0, j1 = dj > 0 ? w - 1 : w;                      \
                    if (weight == 0)                                                           \
                        continue;                                                              \
                    for (int32_t i = i0; i < i1; i++) {                                        \
                        const int16_t *row = x + ((int64_t)c * h + i + di) * w + dj;           \
                        SUM *out = acc + (int64_t)i * w;                                       \
                        for (int32_t j = j0; j < j1; j++)                                      \
                            out[j] += weight * row[j];                                         \
                    }                                                                          \
                }                                                                              \
        for (int32_t p = 0; p < plane; p++)                                                    \
            s[(int64_t)f * plane + p] = nitro_scale(acc[p], st->scale);                        \
    } while (0)

/* 3x3 convolution: x (C, H, W) -> s (F, H, W); int32 sums where |x| <= input_bound proves
 * them exact (a quarter fewer instructions on a Cortex-M3). */
static void conv_forward(const nitro_stage *st, const int16_t *x, int8_t *s, int64_t *acc64, int32_t *acc32)
{
    const int32_t channels = st->in_c, h = st->in_h, w = st->in_w, plane = h * w;
    int narrow = sum_fits_int32(st->input_bound, st->layer.bound, (int64_t)channels * 9);
    for (int32_t f = 0; f < st->out_c; f++) {
        if (narrow)
            CONV_CHANNEL(int32_t, acc32);
        else
            CONV_CHANNEL(int64_t, acc64);
    }
}

/* The value of window position (di, dj) of window (oi, oj), and whether it is padding. */
static int pool_position(const nitro_pool *p, int32_t oi, int32_t oj, int32_t di, int32_t dj, int32_t *at)
{
    int32_t i = oi * p->kh + di - p->ph, j = oj * p->kw + dj - p->pw;
    *at = i * p->w + j;
    return i >= 0 && i < p->h && j >= 0 && j < p->w;
}

/* The window position holding the maximum (the first one on ties), padding -128. */
static int32_t window_argmax(const nitro_pool *p, const int16_t *plane, int32_t oi, int32_t oj)
{
    int32_t best_k = 0, at, k = 0;
    int32_t best = 0;
    for (int32_t di = 0; di < p->kh; di++)
        for (int32_t dj = 0; dj < p->kw; dj++, k++) {
            int32_t value = pool_position(p, oi, oj, di, dj, &at) ? plane[at] : -128;
            if (k == 0 || value > best) {
                best = value;
                best_k = k;
            }
        }
    return best_k;
}

static void pool_forward(const nitro_pool *p, const int16_t *x, int16_t *out)
{
    for (int32_t c = 0; c < p->c; c++) {
        const int16_t *plane = x + (int64_t)c * p->h * p->w;
        for (int32_t oi = 0; oi < p->oh; oi++)
            for (int32_t oj = 0; oj < p->ow; oj++) {
                int32_t at, value;
                if (p->kind == NITRO_POOL_MAX) {
                    int32_t k = window_argmax(p, plane, oi, oj);
                    value = pool_position(p, oi, oj, k / p->kw, k % p->kw, &at) ? plane[at] : -128;
                } else {
                    int32_t sum = 0;
                    for (int32_t di = 0; di < p->kh; di++)
                        for (int32_t dj = 0; dj < p->kw; dj++)
                            if (pool_position(p, oi, oj, di, dj, &at))
                                sum += plane[at];
                    value = sum / (p->kh * p->kw);
                }
                out[((int64_t)c * p->oh + oi) * p->ow + oj] = (int16_t)value;
            }
    }
}

/* ---- one sample through the path ---------------------------------------------------------- */

static int is_block(const nitro_stage *st)
{
    return st->kind == NITRO_DENSE_BLOCK || st->kind == NITRO_CONV_BLOCK;
}

static int32_t stage_output_size(const nitro_stage *st)
{
    return st->out_c * st->out_h * st->out_w;
}

static void block_forward(const nitro_model *model, const nitro_stage *st, const int16_t *x, int8_t *s)
{
    if (st->kind == NITRO_CONV_BLOCK)
        conv_forward(st, x, s, model->buffers.acc, model->buffers.acc32);
    else
        dense_forward(&st->layer, st->scale, x, st->input_bound, s);
}

static void activate(const nitro_stage *st, const int8_t *s, int16_t *out)
{
    int32_t size = stage_output_size(st);
    for (int32_t i = 0; i < size; i++)
        out[i] = st->activation->forward[s[i] + 128];
}

/* A counter-based draw in [0, 100): dropout's masks depend only on (seed, step, stage,
 * sample, value), so the step can rebuild them in any order. (Not NumPy's stream: runs with
 * dropout are reproducible here, but differ from the engine's.) */
static uint32_t percent_draw(uint64_t seed, uint64_t step, int32_t stage, int32_t sample, int32_t index)
{
    uint64_t keys[4] = {step, (uint64_t)stage, (uint64_t)sample, (uint64_t)index};
    uint64_t z = seed;
    for (int i = 0; i < 4; i++) { /* splitmix64 of the running state and each key */
        z += keys[i] + UINT64_C(0x9E3779B97F4A7C15);
        z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
        z ^= z >> 31;
    }
    return (uint32_t)(z % 100u);
}

static void dropout_forward(const nitro_stage *st, int32_t index, int16_t *map, int32_t sample, uint64_t seed,
                            uint64_t step)
{
    int32_t size = st->in_c * st->in_h * st->in_w;
    for (int32_t i = 0; i < size; i++)
        map[i] = percent_draw(seed, step, index, sample, i) < (uint32_t)st->keep_percent
                     ? (int16_t)((int32_t)map[i] * st->rescale / 1000)
                     : 0;
}

void nitro_encode(const nitro_model *model, const uint8_t *row, int8_t *out)
{
    for (int32_t p = 0; p < model->input_size; p++)
        out[p] = model->input_uint8 ? model->tables[(p / model->values_per_table) * 256 + row[p]] : (int8_t)row[p];
}

static void widen(const int8_t *x, int16_t *out, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
        out[i] = x[i];
}

static int32_t argmax_scores(const int8_t *scores, int32_t n)
{
    int32_t best = 0;
    for (int32_t c = 1; c < n; c++)
        if (scores[c] > scores[best])
            best = c;
    return best;
}

int32_t nitro_predict(const nitro_model *model, const int8_t *x, int8_t *scores)
{
    const nitro_buffers *b = &model->buffers;
    int16_t *map = b->map_a, *other = b->map_b, *swap;
    widen(x, map, model->input_size);
    for (int32_t k = 0; k < model->n_stages; k++) {
        const nitro_stage *st = &model->stages[k];
        if (is_block(st)) {
            block_forward(model, st, map, b->pre_activation);
            activate(st, b->pre_activation, other);
        } else if (st->kind == NITRO_FEATURE_POOL) {
            pool_forward(&st->pool, map, other);
        } else {
            continue; /* dropout: the identity at inference */
        }
        swap = map, map = other, other = swap;
    }
    dense_forward(&model->output.dense, model->output.scale, map, 127, scores);
    return argmax_scores(scores, model->n_classes);
}

/* ---- training ----------------------------------------------------------------------------- */

int32_t nitro_batch_size(const nitro_model *model, int64_t n)
{
    if (model->batch_size > 0)
        return model->batch_size;
    int64_t size = n / 10 > model->auto_batch_min ? n / 10 : model->auto_batch_min;
    return (int32_t)(size < model->auto_batch_max ? size : model->auto_batch_max);
}

/* The input of stage `k` (k == n_stages: of the output layer) for sample `n` of the batch,
 * rebuilt from the last block's stored s before it (or the batch's input) through the
 * pooling and dropout between. */
static const int16_t *replay(const nitro_model *model, int32_t k, int32_t n, uint64_t seed, uint64_t step)
{
    const nitro_buffers *b = &model->buffers;
    int16_t *map = b->map_a, *other = b->map_b, *swap;
    int32_t start = k - 1;
    while (start >= 0 && !is_block(&model->stages[start]))
        start--;
    if (start < 0) {
        widen(b->batch_x + (int64_t)n * model->input_size, map, model->input_size);
    } else {
        const nitro_stage *block = &model->stages[start];
        activate(block, block->batch_s + (int64_t)n * stage_output_size(block), map);
    }
    for (int32_t i = start + 1; i < k; i++) {
        const nitro_stage *st = &model->stages[i];
        if (st->kind == NITRO_FEATURE_POOL) {
            pool_forward(&st->pool, map, other);
            swap = map, map = other, other = swap;
        } else if (st->kind == NITRO_DROPOUT) {
            dropout_forward(st, i, map, n, seed, step);
        }
    }
    return map;
}

/* The forward pass of sample n, storing each block's s in its batch_s. */
static void forward_store(const nitro_model *model, int32_t n, uint64_t seed, uint64_t step)
{
    for (int32_t k = 0; k < model->n_stages; k++) {
        const nitro_stage *st = &model->stages[k];
        if (is_block(st))
            block_forward(model, st, replay(model, k, n, seed, step), st->batch_s + (int64_t)n * stage_output_size(st));
    }
}

/* One sample through a head: yhat, e = yhat - target; G += e x^T; input_grad = e @ W (the
 * weights before the update), unless NULL. */
static void head_sample(const nitro_model *model, const nitro_head *head, const int16_t *x, int32_t x_bound,
                        int32_t label, int64_t *grad, int64_t *input_grad)
{
    const nitro_matrix *m = &head->dense;
    int16_t error[256];
    int narrow = sum_fits_int32(x_bound, m->bound, m->cols);
    for (int32_t c = 0; c < m->rows; c++) {
        int32_t yhat = nitro_scale(dot_row(m, c, x, narrow), head->scale);
        error[c] = (int16_t)(yhat - (c == label ? model->target_value : 0));
        int64_t *g = grad + (int64_t)c * m->cols;
        for (int32_t k = 0; k < m->cols; k++)
            g[k] += (int64_t)error[c] * x[k];
    }
    if (input_grad == NULL)
        return;
    for (int32_t k = 0; k < m->cols; k++)
        input_grad[k] = 0;
    for (int32_t c = 0; c < m->rows; c++)
        for (int32_t k = 0; k < m->cols; k++)
            input_grad[k] += (int64_t)error[c] * weight_at(m, (int64_t)c * m->cols + k);
}

/* The head pooling's backward: the gradient of the pooled map spread over the block's output
 * map (max: to each window's first maximum; avg: tdiv(delta, kh * kw) to each position). */
static void pool_backward(const nitro_pool *p, const int64_t *grad, const int16_t *x, int64_t *out)
{
    int32_t at;
    for (int64_t i = 0; i < (int64_t)p->c * p->h * p->w; i++)
        out[i] = 0;
    for (int32_t c = 0; c < p->c; c++) {
        const int16_t *plane = x + (int64_t)c * p->h * p->w;
        int64_t *target = out + (int64_t)c * p->h * p->w;
        for (int32_t oi = 0; oi < p->oh; oi++)
            for (int32_t oj = 0; oj < p->ow; oj++) {
                int64_t d = grad[((int64_t)c * p->oh + oi) * p->ow + oj];
                if (p->kind == NITRO_POOL_MAX) {
                    int32_t k = window_argmax(p, plane, oi, oj);
                    if (pool_position(p, oi, oj, k / p->kw, k % p->kw, &at))
                        target[at] = d;
                    continue;
                }
                for (int32_t di = 0; di < p->kh; di++)
                    for (int32_t dj = 0; dj < p->kw; dj++)
                        if (pool_position(p, oi, oj, di, dj, &at))
                            target[at] = d / (p->kh * p->kw);
            }
    }
}

/* G += a conv layer's weight gradient for one sample: delta (F, H, W) and x its input (C, H, W). */
static void conv_grad(const nitro_stage *st, const int64_t *delta, const int16_t *x, int64_t *grad)
{
    const int32_t h = st->in_h, w = st->in_w, plane = h * w;
    for (int32_t f = 0; f < st->out_c; f++)
        for (int32_t c = 0; c < st->in_c; c++)
            for (int32_t u = 0; u < 3; u++)
                for (int32_t v = 0; v < 3; v++) {
                    int32_t di = u - 1, dj = v - 1;
                    int32_t i0 = di < 0 ? 1 : 0, i1 = di > 0 ? h - 1 : h;
                    int32_t j0 = dj < 0 ? 1 : 0, j1 = dj > 0 ? w - 1 : w;
                    int64_t sum = 0;
                    for (int32_t i = i0; i < i1; i++) {
                        const int64_t *d = delta + (int64_t)f * plane + (int64_t)i * w;
                        const int16_t *row = x + ((int64_t)c * h + i + di) * w + dj;
                        for (int32_t j = j0; j < j1; j++)
                            sum += d[j] * row[j];
                    }
                    grad[((int64_t)f * st->in_c + c) * 9 + u * 3 + v] += sum;
                }
}

static void clear(int64_t *a, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        a[i] = 0;
}

/* lr_inv * amp, saturated: past any |G| the quotient is 0 anyway. */
static int64_t step_divisor(int64_t lr_inv, int64_t amp)
{
    return lr_inv > INT64_MAX / amp ? INT64_MAX : lr_inv * amp;
}

/* IntegerSGD on `count` values of a matrix from `first` on: w -= tdiv(G, divisor) +
 * tdiv(w, decay_inv) (no decay when decay_inv is 0); raises *bound to max |w|. They are left
 * unchanged when one would leave int32. */
static int sgd_values(nitro_matrix *m, int64_t first, int64_t count, const int64_t *grad, int64_t divisor,
                      int64_t decay_inv, int64_t *bound)
{
    int32_t *w = m->ram + first;
    for (int pass = 0; pass < 2; pass++)
        for (int64_t i = 0; i < count; i++) {
            int64_t updated = w[i] - grad[i] / divisor - (decay_inv > 0 ? w[i] / decay_inv : 0);
            if (pass == 0 && magnitude64(updated) > INT32_LIMIT)
                return NITRO_OVERFLOW;
            if (pass == 1) {
                w[i] = (int32_t)updated;
                *bound = magnitude64(updated) > *bound ? magnitude64(updated) : *bound;
            }
        }
    return NITRO_OK;
}

/* IntegerSGD on a whole matrix from its G (unchanged when a weight would leave int32). */
static int sgd_update(nitro_matrix *m, const int64_t *grad, int64_t divisor, int64_t decay_inv)
{
    int64_t bound = 0;
    int rc = sgd_values(m, 0, (int64_t)m->rows * m->cols, grad, divisor, decay_inv, &bound);
    if (rc == NITRO_OK)
        m->bound = (int32_t)bound;
    return rc;
}

/* IntegerSGD on a dense block's layer from the batch's deltas (n x rows) and inputs
 * (n x cols), one row of G at a time: no G of the whole matrix is ever stored. A row that
 * would leave int32 stops the update there (the rows before it are updated). */
static int dense_update(const nitro_model *model, nitro_stage *st, int32_t n)
{
    const nitro_buffers *b = &model->buffers;
    nitro_matrix *m = &st->layer;
    int64_t bound = 0, divisor = step_divisor(model->lr_inv, model->lr_amp);
    for (int32_t j = 0; j < m->rows; j++) {
        int64_t *g = b->grad_layer;
        clear(g, m->cols);
        for (int32_t i = 0; i < n; i++) {
            int64_t d = b->batch_delta[(int64_t)i * m->rows + j];
            const int16_t *x = b->batch_input + (int64_t)i * m->cols;
            for (int32_t k = 0; d != 0 && k < m->cols; k++)
                g[k] += d * x[k];
        }
        int rc = sgd_values(m, (int64_t)j * m->cols, m->cols, g, divisor, model->fwd_decay_inv, &bound);
        if (rc != NITRO_OK)
            return rc;
    }
    m->bound = (int32_t)bound;
    return NITRO_OK;
}

/* Adds max|delta| * max|x| * positions to `bound` (a bound of every |G| of the layer after
 * this sample); 0 when the sum could leave int64, where G would not be exact. */
static int grad_bound_add(int64_t *bound, int64_t max_delta, const nitro_stage *st)
{
    int64_t per_delta = (int64_t)st->input_bound * (st->kind == NITRO_CONV_BLOCK ? (int64_t)st->in_h * st->in_w : 1);
    if (max_delta > (INT64_MAX - *bound) / per_delta)
        return 0;
    *bound += max_delta * per_delta;
    return 1;
}

static int block_learn(const nitro_model *model, nitro_stage *st, int32_t k, int32_t n, uint64_t seed,
                       uint64_t step)
{
    const nitro_buffers *b = &model->buffers;
    nitro_head *head = &st->head;
    int32_t size = stage_output_size(st);
    int64_t bound = 0;
    clear(b->grad_head, (int64_t)head->dense.rows * head->dense.cols);
    if (st->kind == NITRO_CONV_BLOCK)
        clear(b->grad_layer, (int64_t)st->layer.rows * st->layer.cols);
    for (int32_t i = 0; i < n; i++) {
        const int8_t *s = st->batch_s + (int64_t)i * size;
        activate(st, s, b->block_out);
        const int16_t *head_in = b->block_out;
        if (head->pool.kind != NITRO_POOL_NONE) {
            pool_forward(&head->pool, b->block_out, b->head_in);
            head_in = b->head_in;
        }
        head_sample(model, head, head_in, 127, b->batch_labels[i], b->grad_head, b->head_grad);
        if (head->pool.kind != NITRO_POOL_NONE)
            pool_backward(&head->pool, b->head_grad, b->block_out, b->delta);
        else
            for (int32_t j = 0; j < size; j++)
                b->delta[j] = b->head_grad[j];
        int64_t max_delta = 0;
        for (int32_t j = 0; j < size; j++) { /* the activation's backward; scaling's is the identity */
            b->delta[j] = b->delta[j] * st->activation->multiplier[s[j] + 128] / st->activation->divisor;
            max_delta = magnitude64(b->delta[j]) > max_delta ? magnitude64(b->delta[j]) : max_delta;
        }
        if (!grad_bound_add(&bound, max_delta, st))
            return NITRO_OVERFLOW;
        const int16_t *x = replay(model, k, i, seed, step);
        if (st->kind == NITRO_CONV_BLOCK) {
            conv_grad(st, b->delta, x, b->grad_layer);
        } else { /* kept for dense_update: a dense layer's G is never stored whole */
            for (int32_t j = 0; j < size; j++)
                b->batch_delta[(int64_t)i * size + j] = b->delta[j];
            for (int32_t j = 0; j < st->layer.cols; j++)
                b->batch_input[(int64_t)i * st->layer.cols + j] = x[j];
        }
    }
    int rc = sgd_update(&head->dense, b->grad_head, model->lr_inv, model->head_decay_inv);
    if (rc == NITRO_OK && st->kind == NITRO_CONV_BLOCK)
        rc = sgd_update(&st->layer, b->grad_layer, step_divisor(model->lr_inv, model->lr_amp), model->fwd_decay_inv);
    else if (rc == NITRO_OK)
        rc = dense_update(model, st, n);
    return rc;
}

int nitro_train_step(nitro_model *model, int32_t n, uint64_t seed, uint64_t step)
{
    const nitro_buffers *b = &model->buffers;
    if (n < 1 || n > model->max_batch || model->output.dense.ram == NULL)
        return NITRO_BAD_ARGUMENT;
    for (int32_t i = 0; i < n; i++)
        if (b->batch_labels[i] >= model->n_classes)
            return NITRO_BAD_ARGUMENT;
    for (int32_t i = 0; i < n; i++)
        forward_store(model, i, seed, step);
    /* the output layer, then every block (each from the same forward pass) */
    nitro_head *output = &model->output;
    clear(b->grad_head, (int64_t)output->dense.rows * output->dense.cols);
    for (int32_t i = 0; i < n; i++)
        head_sample(model, output, replay(model, model->n_stages, i, seed, step), model->output_input_bound,
                    b->batch_labels[i], b->grad_head, NULL);
    int rc = sgd_update(&output->dense, b->grad_head, model->lr_inv, model->head_decay_inv);
    for (int32_t k = 0; k < model->n_stages && rc == NITRO_OK; k++) {
        nitro_stage *st = &model->stages[k];
        for (int32_t r = 0; is_block(st) && r < st->updates_per_step && rc == NITRO_OK; r++)
            rc = block_learn(model, st, k, n, seed, step);
    }
    return rc;
}

static void copy_to_ram(nitro_matrix *m)
{
    for (int64_t i = 0; i < (int64_t)m->rows * m->cols; i++)
        m->ram[i] = exported_weight(m, i);
}

int32_t nitro_weight_matrices(nitro_model *model, nitro_matrix **out, int32_t capacity)
{
    int32_t count = 0;
    for (int32_t k = 0; k < model->n_stages && count < capacity; k++) /* weights_: the blocks' layers, */
        if (is_block(&model->stages[k]))
            out[count++] = &model->stages[k].layer;
    if (count < capacity) /* the output layer, */
        out[count++] = &model->output.dense;
    for (int32_t k = 0; k < model->n_stages && count < capacity; k++) /* then head_weights_ */
        if (is_block(&model->stages[k]))
            out[count++] = &model->stages[k].head.dense;
    return count;
}

void nitro_training_init(nitro_model *model)
{
    copy_to_ram(&model->output.dense);
    for (int32_t k = 0; k < model->n_stages; k++)
        if (is_block(&model->stages[k])) {
            copy_to_ram(&model->stages[k].layer);
            copy_to_ram(&model->stages[k].head.dense);
        }
}
