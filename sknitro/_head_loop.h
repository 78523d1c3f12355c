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

/* The steps of HEAD_LOOP, each on the part of the work one thread takes: functions with
 * restrict parameters, which the loops need to vectorize as well inside the OpenMP region as
 * outside it (its variables reach the threads through a shared struct). */
#define HEAD_STEP_(loop, step) loop##_##step
#define HEAD_STEP(loop, step) HEAD_STEP_(loop, step)

/* z of rows [b0, b0 + HEAD_ROWS) with the classes in the lanes, HEAD_WIDTH at a time: each
 * input broadcast along a row of W transposed (wt, zero past the classes); then yhat and e.
 * Returns their sum of e**2. */
HEAD_TARGET static int64_t
HEAD_STEP(HEAD_LOOP, scores)(const int8_t *restrict x, const int32_t *restrict wt, const int8_t *restrict target,
                             int8_t *restrict yhat, int16_t *restrict error, ptrdiff_t b0, ptrdiff_t batch,
                             ptrdiff_t classes, ptrdiff_t padded, ptrdiff_t features, divisor_t scale, int32_t limit)
{
    int64_t squares = 0;
    for (ptrdiff_t c0 = 0; c0 < classes; c0 += HEAD_WIDTH) {
        /* HEAD_ROWS rows of x at a time: independent sums, one load of W per input (rows past
         * the batch repeat the last one, and are dropped) */
        const int8_t *rows[HEAD_ROWS];
        HEAD_VECTOR sums[HEAD_ROWS];
        for (int r = 0; r < HEAD_ROWS; r++) {
            rows[r] = x + clamp_row(b0 + r, batch) * features;
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
    return squares;
}

/* The input gradient e W of rows [b0, b0 + HEAD_ROWS): the features in the lanes, HEAD_ROWS
 * rows of e per load of W (rows past the batch repeat the last one, and are dropped). */
HEAD_TARGET static void
HEAD_STEP(HEAD_LOOP, input_grad)(const int16_t *restrict error, const int32_t *restrict w,
                                 int32_t *restrict input_grad, ptrdiff_t b0, ptrdiff_t batch, ptrdiff_t classes,
                                 ptrdiff_t features)
{
    for (ptrdiff_t n0 = 0; n0 < features; n0 += HEAD_WIDTH) {
        const int16_t *errors[HEAD_ROWS];
        HEAD_VECTOR sums[HEAD_ROWS];
        for (int r = 0; r < HEAD_ROWS; r++) {
            errors[r] = error + clamp_row(b0 + r, batch) * classes;
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
}

/* G = e^T x and the update for the features [n0, end), G's rows in `row` (end - n0 of them);
 * returns the largest |w| of them after the update. */
HEAD_TARGET static int64_t
HEAD_STEP(HEAD_LOOP, update)(const int8_t *restrict x, const int16_t *restrict error, int32_t *restrict w,
                             int32_t *restrict row, ptrdiff_t n0, ptrdiff_t end, ptrdiff_t batch, ptrdiff_t classes,
                             ptrdiff_t features, divisor_t lr, int decays, divisor_t decay)
{
    int64_t largest = 0;
    for (ptrdiff_t c = 0; c < classes; c++) {
        for (ptrdiff_t n = 0; n < end - n0; n++)
            row[n] = 0;
        for (ptrdiff_t b = 0; b < batch; b++) {
            int32_t e = error[b * classes + c];
            const int8_t *x_row = x + b * features + n0;
            for (ptrdiff_t n = 0; n < end - n0; n++)
                row[n] += e * (int32_t)x_row[n];
        }
        int32_t *w_row = w + c * features + n0;
        for (ptrdiff_t n = 0; n < end - n0; n++) {
            int64_t value = sgd_rule(w_row[n], row[n], lr, decays, decay);
            w_row[n] = (int32_t)value;
            largest = magnitude64(value) > largest ? magnitude64(value) : largest;
        }
    }
    return largest;
}

HEAD_TARGET
int64_t HEAD_LOOP(const int8_t *restrict x, int32_t *restrict w, const int8_t *restrict target,
                  int8_t *restrict yhat, int32_t *restrict input_grad, int32_t *restrict scratch,
                  int16_t *restrict error, ptrdiff_t batch, ptrdiff_t classes, ptrdiff_t features,
                  divisor_t scale, int32_t limit, divisor_t lr, int decays, divisor_t decay,
                  int64_t *squared_error)
{
    ptrdiff_t padded = head_padded_classes(classes); /* a whole number of vectors of either width */
    int64_t squares = 0, largest = 0;
    /* Three steps, each split over the threads, each reading what the one before wrote: W
     * transposed (in scratch); by rows of the batch, z, e and the input gradient (from the
     * weights before the update); G and the update, by blocks of features (their part of a
     * row of G in scratch, which W transposed no longer needs). Each integer is summed in
     * the same order whatever the threads. */
#pragma omp parallel if ((int64_t)batch * classes * features >= HEAD_PARALLEL_WORK) \
    reduction(+ : squares) reduction(max : largest)
    {
#pragma omp for schedule(static)
        for (ptrdiff_t n = 0; n < features; n++)
            for (ptrdiff_t c = 0; c < padded; c++)
                scratch[n * padded + c] = c < classes ? w[c * features + n] : 0;
#pragma omp for schedule(static)
        for (ptrdiff_t b0 = 0; b0 < batch; b0 += HEAD_ROWS) {
            squares += HEAD_STEP(HEAD_LOOP, scores)(x, scratch, target, yhat, error, b0, batch, classes, padded,
                                                   features, scale, limit);
            if (input_grad)
                HEAD_STEP(HEAD_LOOP, input_grad)(error, w, input_grad, b0, batch, classes, features);
        }
        /* one block of features per thread: shorter rows cost more than they save in cache */
        ptrdiff_t block = features;
#ifdef _OPENMP
        block = (features + omp_get_num_threads() - 1) / omp_get_num_threads();
#endif
#pragma omp for schedule(static)
        for (ptrdiff_t n0 = 0; n0 < features; n0 += block) {
            ptrdiff_t end = n0 + block < features ? n0 + block : features;
            int64_t block_largest = HEAD_STEP(HEAD_LOOP, update)(x, error, w, scratch + n0, n0, end, batch, classes,
                                                                 features, lr, decays, decay);
            largest = block_largest > largest ? block_largest : largest;
        }
    }
    *squared_error = squares;
    return largest;
}
