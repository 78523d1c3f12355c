/*
 * train.c: go on training the exported model, as the estimator's partial_fit does.
 *
 *   ./train [train.bin [weights.bin [seed]]]
 *
 * train.bin holds n samples (rows as for predict) followed by their n class indices (uint8,
 * into classes_). The samples are used in order, in batches of the model's batch size, at
 * its current lr_inv: partial_fit(X, y) with shuffle=False gives the same weights (dropout
 * off; dropout's masks here come from `seed`, not NumPy's generator). Then every weight
 * matrix -- each block's layer, the output layer, each block's head (weights_, then
 * head_weights_) -- is written to weights.bin as little-endian int32. The Cortex-M3 build
 * (NITRO_MCU) also prints "# instructions per training sample: N" (see mcu.c).
 */
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

#ifdef NITRO_MCU
#include "mcu.h"
#endif

#ifndef NITRO_FIRST_ARGUMENT
#define NITRO_FIRST_ARGUMENT 1 /* 2 under QEMU semihosting, where argv[1] is the program file */
#endif

static uint8_t row[NITRO_INPUT_SIZE];

static int fail(const char *message, const char *path)
{
    fprintf(stderr, "train: %s%s\n", message, path);
    return 1;
}

static int read_batch(FILE *file, long n, long start, int32_t count)
{
    nitro_buffers *b = &NITRO_MODEL.buffers;
    if (fseek(file, start * (long)NITRO_INPUT_SIZE, SEEK_SET) != 0)
        return 0;
    for (int32_t i = 0; i < count; i++) {
        if (fread(row, 1, NITRO_INPUT_SIZE, file) != NITRO_INPUT_SIZE)
            return 0;
        nitro_encode(&NITRO_MODEL, row, b->batch_x + (long)i * NITRO_INPUT_SIZE);
    }
    return fseek(file, n * (long)NITRO_INPUT_SIZE + start, SEEK_SET) == 0
           && fread(b->batch_labels, 1, (size_t)count, file) == (size_t)count;
}

static int write_weights(FILE *out)
{
    nitro_matrix *matrices[NITRO_N_MATRICES];
    int32_t count = nitro_weight_matrices(&NITRO_MODEL, matrices, NITRO_N_MATRICES);
    for (int32_t m = 0; m < count; m++)
        for (long i = 0; i < (long)matrices[m]->rows * matrices[m]->cols; i++) {
            uint32_t v = (uint32_t)matrices[m]->ram[i];
            unsigned char bytes[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                                      (unsigned char)(v >> 24)};
            if (fwrite(bytes, 1, 4, out) != 4)
                return 0;
        }
    return 1;
}

int main(int argc, char **argv)
{
    const int first = NITRO_FIRST_ARGUMENT;
    const char *in_path = argc > first ? argv[first] : "train.bin";
    const char *out_path = argc > first + 1 ? argv[first + 1] : "weights.bin";
    uint64_t seed = argc > first + 2 ? (uint64_t)strtoul(argv[first + 2], NULL, 10) : 0;
    FILE *file = fopen(in_path, "rb");
    if (file == NULL)
        return fail("cannot open ", in_path);
    if (fseek(file, 0, SEEK_END) != 0)
        return fail("cannot read the size of ", in_path);
    long size = ftell(file);
    if (size <= 0 || size % (NITRO_INPUT_SIZE + 1) != 0)
        return fail("the size of a training file is a multiple of (row bytes + 1); not so for ", in_path);
    long n = size / (NITRO_INPUT_SIZE + 1);
    int32_t batch = nitro_batch_size(&NITRO_MODEL, n);
    nitro_training_init(&NITRO_MODEL);
#ifdef NITRO_MCU
    uint64_t ticks = 0;
    mcu_ticks_start();
#endif
    for (long start = 0, step = 0; start < n; start += batch, step++) {
        int32_t count = (int32_t)(n - start < batch ? n - start : batch);
        if (!read_batch(file, n, start, count))
            return fail("cannot read a batch of ", in_path);
#ifdef NITRO_MCU
        uint64_t started = mcu_ticks();
#endif
        int rc = nitro_train_step(&NITRO_MODEL, count, seed, (uint64_t)step);
#ifdef NITRO_MCU
        ticks += mcu_ticks() - started;
#endif
        if (rc == NITRO_BAD_ARGUMENT)
            return fail("a class index past the model's classes, or a batch past its buffers, in ", in_path);
        if (rc == NITRO_OVERFLOW)
            return fail("a weight would leave int32, or a gradient int64 (lower the learning rate); stopped on ", in_path);
    }
    fclose(file);
    FILE *out = fopen(out_path, "wb");
    if (out == NULL || !write_weights(out))
        return fail("cannot write ", out_path);
    fclose(out);
    printf("trained on %ld samples; weights in %s\n", n, out_path);
#ifdef NITRO_MCU
    printf("# instructions per training sample: %lu\n", (unsigned long)(ticks * MCU_INSTRUCTIONS_PER_TICK / (uint64_t)n));
#endif
    return 0;
}
