/*
 * nitro.h: the integer-only NITRO-D runtime of an exported sknitro model (C99).
 *
 * Written by sknitro.export.export_c, which copies this runtime unchanged next to the model's
 * data (model.c). Everything here is int8 / int16 / int32 / int64 arithmetic: no float, no
 * double, no libm, no malloc (model.c holds every buffer, sized for its model). Division is
 * C99 `/`, which truncates toward zero: the engine's tdiv.
 *
 * The network is the engine's graph (sknitro.nn.graph): a path of stages (local-loss blocks,
 * 2x2 max pooling, dropout) and an output layer. A block is a dense layer or a 3x3 conv,
 * NITRO scaling s = clip(z / scale, -127, 127), and an activation table[s + 128]; its head
 * pools (conv blocks), scores, and learns from e = yhat - target; the block learns from the
 * head's e @ W through the pooling's and the activation's backward (algorithm.md sections 3-5).
 *
 * The functions work in the model's own buffers: one call at a time per model (on a
 * microcontroller's single thread, as anywhere else; a second thread needs a second model).
 */
#ifndef NITRO_H
#define NITRO_H

#include <stddef.h>
#include <stdint.h>

/* Return codes of the runtime's functions. */
enum {
    NITRO_OK = 0,
    NITRO_BAD_ARGUMENT = 1, /* a size, label or batch the model's buffers do not hold */
    NITRO_OVERFLOW = 2      /* a weight would leave int32, or a gradient int64: lower the learning rate */
};

/* A weight matrix (rows, cols), row-major. Inference reads `data`, the exported weights in
 * the smallest integer type holding them (`bytes` = 1, 2 or 4); training builds (`ram` not
 * NULL) copy them into `ram` as int32 and update them there. A conv's weights (F, C, 3, 3)
 * are the matrix (F, C * 9). `bound` is max |w|, kept by the updates: it proves when an int32
 * accumulator is exact. */
typedef struct {
    const void *data;
    int32_t *ram;
    int32_t rows, cols;
    int32_t bound;
    uint8_t bytes;
} nitro_matrix;

/* An activation over s in [-128, 127], index s + 128: forward table[s]; backward
 * delta * multiplier[s] / divisor. */
typedef struct {
    const int8_t *forward;
    const int32_t *multiplier;
    int32_t divisor;
} nitro_activation;

enum { NITRO_POOL_NONE = 0, NITRO_POOL_MAX = 1, NITRO_POOL_AVG = 2 };

/* Pooling with stride = window, `ph`/`pw` rows/columns of padding on both sides (max pads with
 * -128, avg with 0), floor mode: maps (c, h, w) -> (c, oh, ow). */
typedef struct {
    uint8_t kind;
    int32_t kh, kw, ph, pw;
    int32_t c, h, w, oh, ow;
} nitro_pool;

/* A learning head or the output layer: optional pooling, a dense layer, NITRO scaling. */
typedef struct {
    nitro_pool pool;
    nitro_matrix dense;
    int64_t scale;
} nitro_head;

enum { NITRO_DENSE_BLOCK = 1, NITRO_CONV_BLOCK = 2, NITRO_FEATURE_POOL = 3, NITRO_DROPOUT = 4 };

/* A stage of the path: its input (in_c, in_h, in_w) and output shapes (a dense stage's are
 * (features, 1, 1)); `input_bound` bounds |input|: 127, more after dropout's rescale. */
typedef struct {
    uint8_t kind;
    int32_t in_c, in_h, in_w, out_c, out_h, out_w;
    int32_t input_bound;
    /* blocks */
    nitro_matrix layer;
    int64_t scale;
    const nitro_activation *activation;
    nitro_head head;
    int32_t updates_per_step;
    int8_t *batch_s; /* training: the batch's pre-activations s, batch x out values */
    /* feature pooling */
    nitro_pool pool;
    /* dropout (training only) */
    int32_t keep_percent, rescale;
} nitro_stage;

/* Scratch buffers, sized by the export for its model. */
typedef struct {
    int16_t *map_a, *map_b; /* max_map values each */
    int8_t *pre_activation; /* a block's s: max block size */
    int64_t *acc;           /* a conv output channel: max h * w */
    int32_t *acc32;         /* the same, where int32 sums are exact */
    /* training only (NULL in inference builds) */
    int8_t *batch_x;        /* max_batch x input_size */
    uint8_t *batch_labels;  /* max_batch */
    int16_t *block_out;     /* a block's output: max block size */
    int16_t *head_in;       /* a head's (or the output layer's) input: max head input */
    int64_t *head_grad;     /* e @ W of a head: max head input */
    int64_t *delta;         /* the gradient at a block's output: max block size */
    int64_t *grad_head;     /* G of a head or of the output layer: n_classes x max head input */
    int64_t *grad_layer;    /* G of a conv layer (max conv layer size), or one row of a dense one's */
    int64_t *batch_delta;   /* a dense block's deltas for the batch: max_batch x max dense width */
    int16_t *batch_input;   /* its inputs for the batch: max_batch x max dense input */
} nitro_buffers;

typedef struct {
    int32_t n_stages;
    nitro_stage *stages;
    nitro_head output;
    int32_t in_c, in_h, in_w, input_size, n_classes;
    int32_t output_input_bound; /* bounds |input| of the output layer in training (dropout) */
    /* input encoding: uint8 pixels through `tables` (n_tables x 256; table p / values_per_table
     * encodes value p of a sample), or (input_uint8 == 0) already-encoded int8 features */
    uint8_t input_uint8;
    const int8_t *tables;
    int32_t values_per_table;
    /* training: IntegerSGD and the batches of partial_fit */
    int64_t lr_inv, lr_amp, fwd_decay_inv, head_decay_inv;
    int32_t batch_size;      /* 0: "auto", min(auto_max, max(auto_min, n / 10)) */
    int32_t auto_batch_max, auto_batch_min, max_batch;
    int32_t target_value;
    nitro_buffers buffers;
} nitro_model;

/* The int8 encoding of one sample: uint8 pixels through the tables, or int8 as is. */
void nitro_encode(const nitro_model *model, const uint8_t *row, int8_t *out);

/* The class scores (int8, n_classes) of one encoded sample, and the predicted class index
 * (the first of the highest scores). */
int32_t nitro_predict(const nitro_model *model, const int8_t *x, int8_t *scores);

/* Training: copy the exported weights into the RAM arrays (once, before any step). */
void nitro_training_init(nitro_model *model);

/* The batch size partial_fit uses for n samples. */
int32_t nitro_batch_size(const nitro_model *model, int64_t n);

/* One training step on the batch held in buffers.batch_x / batch_labels (n samples):
 * forward, then the output layer and every block learn (dropout masks from `seed` and
 * `step`). Returns NITRO_OK, NITRO_BAD_ARGUMENT or NITRO_OVERFLOW (the step stopped part-way:
 * some layers are updated and others not; reload the weights). */
int nitro_train_step(nitro_model *model, int32_t n, uint64_t seed, uint64_t step);

/* Every trainable matrix, in the estimator's order: each block's layer (weights_), the
 * output layer, then each block's head (head_weights_). Returns their count. */
int32_t nitro_weight_matrices(nitro_model *model, nitro_matrix **out, int32_t capacity);

#endif
