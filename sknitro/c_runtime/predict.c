/*
 * predict.c: classify the samples of input.bin with the exported model.
 *
 *   ./predict [--scores] [input.bin]
 *
 * input.bin holds n samples, row-major, NITRO_INPUT_SIZE bytes each: uint8 pixels for a
 * model fitted on uint8 data, otherwise the int8 encoded features that
 * sknitro.export.encode_for_c writes. Prints one line per sample: the class index (into the
 * estimator's classes_), and with --scores the integer class scores after it. The Cortex-M3
 * build (NITRO_MCU) then prints "# instructions per prediction: N" (under QEMU -icount
 * shift=0; see mcu.c).
 */
#include <stdio.h>
#include <string.h>

#include "model.h"

#ifdef NITRO_MCU
#include "mcu.h"
#endif
#ifndef NITRO_FIRST_ARGUMENT
#define NITRO_FIRST_ARGUMENT 1 /* 2 under QEMU semihosting, where argv[1] is the program file */
#endif

static uint8_t row[NITRO_INPUT_SIZE];
static int8_t encoded[NITRO_INPUT_SIZE];
static int8_t scores[NITRO_N_CLASSES];

int main(int argc, char **argv)
{
    const char *path = "input.bin";
    int print_scores = 0;
    for (int i = NITRO_FIRST_ARGUMENT; i < argc; i++) {
        if (strcmp(argv[i], "--scores") == 0)
            print_scores = 1;
        else
            path = argv[i];
    }
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        fprintf(stderr, "predict: cannot open %s\n", path);
        return 1;
    }
    size_t got;
#ifdef NITRO_MCU
    uint64_t ticks = 0, n = 0;
    mcu_ticks_start();
#endif
    while ((got = fread(row, 1, NITRO_INPUT_SIZE, file)) == NITRO_INPUT_SIZE) {
#ifdef NITRO_MCU
        uint64_t start = mcu_ticks();
#endif
        nitro_encode(&NITRO_MODEL, row, encoded);
        long label = (long)nitro_predict(&NITRO_MODEL, encoded, scores);
#ifdef NITRO_MCU
        ticks += mcu_ticks() - start;
        n++;
#endif
        printf("%ld", label);
        for (int c = 0; print_scores && c < NITRO_N_CLASSES; c++)
            printf(" %d", (int)scores[c]);
        printf("\n");
    }
    fclose(file);
#ifdef NITRO_MCU
    if (n > 0)
        printf("# instructions per prediction: %lu\n",
               (unsigned long)(ticks * MCU_INSTRUCTIONS_PER_TICK / n));
#endif
    if (got != 0) {
        fprintf(stderr, "predict: %s ends with a partial sample (%lu of %lu bytes)\n", path, (unsigned long)got,
                (unsigned long)NITRO_INPUT_SIZE);
        return 1;
    }
    return 0;
}
