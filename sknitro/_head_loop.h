/*
 * sknitro/_head_loop.h: the loops of a learning head (head_loop in _portable.c), written once
 * for every vector width. _portable.c includes this file once per width, after defining
 * HEAD_LOOP (the function's name), HEAD_WIDTH (int32 lanes per vector), HEAD_VECTOR (a name
 * for their vector type) and HEAD_TARGET (its compile attributes). A vector of the
 * compilers' extension wider than the target's registers is split into several and spills
 * (16 lanes ran at a third of the speed of 8 on AVX2), so each CPU runs the loops in its own
 * width.
 */
typedef int32_t HEAD_VECTOR __attribute__((vector_size(HEAD_WIDTH * sizeof(int32_t))));

HEAD_TARGET
int64_t HEAD_LOOP(const int8_t *restrict x, int32_t *restrict w, const int8_t *restrict target,
                  int8_t *restrict yhat, int32_t *restrict input_grad, int32_t *restrict scratch,
                  int16_t *restrict error, ptrdiff_t batch, ptrdiff_t classes, ptrdiff_t features,
                  divisor_t scale, int32_t limit, divisor_t lr, int decays, divisor_t decay,
                  int64_t *squared_error)
{
    /* z with the classes in the lanes, HEAD_WIDTH at a time: each input broadcast along a row
     * of W transposed */
    ptrdiff_t padded = head_padded_classes(classes); /* a whole number of vectors of either width */
    int32_t *restrict wt = scratch;
    for (ptrdiff_t n = 0; n < features; n++)
        for (ptrdiff_t c = 0; c < padded; c++)
            wt[n * padded + c] = c < classes ? w[c * features + n] : 0;
    int64_t squares = 0;
    for (ptrdiff_t c0 = 0; c0 < classes; c0 += HEAD_WIDTH)
        for (ptrdiff_t b0 = 0; b0 < batch; b0 += HEAD_ROWS) {
            /* HEAD_ROWS rows of x at a time: independent sums, one load of W per input (rows
             * past the batch repeat the last one, and are dropped) */
            const int8_t *rows[HEAD_ROWS];
            HEAD_VECTOR sums[HEAD_ROWS];
            for (int r = 0; r < HEAD_ROWS; r++) {
                rows[r] = x + (b0 + r < batch ? b0 + r : batch - 1) * features;
                sums[r] = (HEAD_VECTOR){0};
            }
            for (ptrdiff_t n = 0; n < features; n++) {
                HEAD_VECTOR lanes;
                memcpy(&lanes, wt + n * padded + c0, sizeof lanes);
                for (int r = 0; r < HEAD_ROWS; r++)
                    sums[r] += (int32_t)rows[r][n] * lanes;
            }
            for (ptrdiff_t b = b0; b < batch && b < b0 + HEAD_ROWS; b++) {
                int32_t z[HEAD_WIDTH];
                memcpy(z, &sums[b - b0], sizeof z);
                for (ptrdiff_t c = c0; c < classes && c < c0 + HEAD_WIDTH; c++) {
                    int32_t clipped = z[c - c0] > limit ? limit : (z[c - c0] < -limit ? -limit : z[c - c0]);
                    int8_t score = nitro_scale32(clipped, scale);
                    yhat[b * classes + c] = score;
                    int16_t e = (int16_t)(score - target[b * classes + c]);
                    error[b * classes + c] = e;
                    squares += (int64_t)e * e;
                }
            }
        }
    if (input_grad) /* the features in the lanes, HEAD_ROWS rows of e per load of W */
        for (ptrdiff_t b0 = 0; b0 < batch; b0 += HEAD_ROWS)
            for (ptrdiff_t n0 = 0; n0 < features; n0 += HEAD_WIDTH) {
                const int16_t *errors[HEAD_ROWS]; /* rows past the batch repeat the last one, and are dropped */
                HEAD_VECTOR sums[HEAD_ROWS];
                for (int r = 0; r < HEAD_ROWS; r++) {
                    errors[r] = error + (b0 + r < batch ? b0 + r : batch - 1) * classes;
                    sums[r] = (HEAD_VECTOR){0};
                }
                for (ptrdiff_t c = 0; c < classes; c++) {
                    HEAD_VECTOR lanes;
                    HEAD_LOAD(lanes, w + c * features + n0, features - n0);
                    for (int r = 0; r < HEAD_ROWS; r++)
                        sums[r] += (int32_t)errors[r][c] * lanes;
                }
                for (ptrdiff_t b = b0; b < batch && b < b0 + HEAD_ROWS; b++)
                    HEAD_STORE(input_grad + b * features + n0, sums[b - b0], features - n0);
            }
    int64_t largest = 0;
    int32_t *row = scratch; /* a row of G */
    for (ptrdiff_t c = 0; c < classes; c++) {
        for (ptrdiff_t n = 0; n < features; n++)
            row[n] = 0;
        for (ptrdiff_t b = 0; b < batch; b++) {
            int32_t e = error[b * classes + c];
            const int8_t *x_row = x + b * features;
            for (ptrdiff_t n = 0; n < features; n++)
                row[n] += e * (int32_t)x_row[n];
        }
        int32_t *w_row = w + c * features;
        for (ptrdiff_t n = 0; n < features; n++) {
            int64_t value = sgd_rule(w_row[n], row[n], lr, decays, decay);
            w_row[n] = (int32_t)value;
            largest = magnitude64(value) > largest ? magnitude64(value) : largest;
        }
    }
    *squared_error = squares;
    return largest;
}

