# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""sknitro._fused: the Python side of the compiled kernels (see sknitro/nn/kernels.py).

Each function takes its arrays as typed memoryviews (Cython checks dtype, number of
dimensions, C-contiguity and writability), checks that their shapes agree and its integer
arguments' ranges, and then runs a kernel with the GIL released:

    scale_to_int8        s = clip(tdiv(z, SF), -127, 127), a = table[s]  (scaling, activation)
    activation_backward  d = tdiv(g * multiplier[s], D)                  (the activation's backward)
    sgd_update           W -= tdiv(G, lr_inv * amp) + tdiv(W, decay_inv), returning max|W|
    head_step            a learning head's whole update, in int32 loops (no float at all)
    lookup_uint8         out = table[x] for uint8 x                      (the image encoder)
    dropout_mask         draw < keep for NumPy's integers(0, 100, dtype=int8) (dropout)
    dropout_apply        tdiv(x * R, 1000) where kept, else 0            (dropout)
    max_pool, max_unpool max pooling of int8 maps and its gradient        (conv blocks)
    im2col               the patches of int8 maps                         (conv layers)

from the loops of _portable.c and _passes.c, and the pair products of _pairs.h (row_l1,
split_units, pair_form, units_product, pairs_product, units_sgd_update), which replace
float64 BLAS where the CPU has AVX2 or AVX-512 VNNI. The rules themselves (tdiv, the int8
clip, the SGD update) are written once, in _rules.h. The caller proves before each call that
every integer fits the types used here (|G| < 2**31 and the like). Nothing is written when a
call raises.
"""

from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, INT32_MAX
from libc.stdlib cimport free, malloc


cdef extern from "_rules.h" nogil:
    ctypedef struct divisor_t:
        pass
    divisor_t make_divisor(int64_t d)

cdef extern from "_portable.h" nogil:
    const char *portable_target
    int64_t update_loop(int32_t *w, const double *g, double *mirror, ptrdiff_t n, divisor_t lr, int decays,
                        divisor_t decay)
    ptrdiff_t head_scratch_size(ptrdiff_t classes, ptrdiff_t features)
    int64_t head_loop(const int8_t *x, int32_t *w, const int8_t *target, int8_t *yhat, int32_t *input_grad,
                      int32_t *scratch, int16_t *error, ptrdiff_t batch, ptrdiff_t classes, ptrdiff_t features,
                      divisor_t scale, int32_t limit, divisor_t lr, int decays, divisor_t decay,
                      int64_t *squared_error)
    void lookup_loop(const int8_t *table, const uint8_t *x, int8_t *out, ptrdiff_t n)

cdef extern from "_passes.h" nogil:
    void pass_scale_int32(const int32_t *z, int8_t *out, const int8_t *table, int8_t *activated, ptrdiff_t n,
                          int64_t scale)
    void pass_scale_float64(const double *z, int8_t *out, const int8_t *table, int8_t *activated, ptrdiff_t n,
                            int64_t scale)
    int64_t pass_activation_backward(const int32_t *g, const int8_t *pre, const int32_t *table, int64_t divisor,
                                     int32_t *out, ptrdiff_t rows, ptrdiff_t cols, int64_t *largest_magnitude)
    void pass_max_pool(const int8_t *x, int8_t *best, uint8_t *argmax, ptrdiff_t n, ptrdiff_t h, ptrdiff_t w,
                       ptrdiff_t c, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t ph, ptrdiff_t pw)
    void pass_max_unpool(const int32_t *delta, const uint8_t *argmax, int32_t *out, ptrdiff_t n, ptrdiff_t h,
                         ptrdiff_t w, ptrdiff_t c, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t ph, ptrdiff_t pw)
    void pass_im2col(const int8_t *x, int8_t *out, ptrdiff_t n, ptrdiff_t h, ptrdiff_t w, ptrdiff_t c, ptrdiff_t k,
                     ptrdiff_t pad)
    int pass_dropout_apply(const int8_t *x, const uint8_t *mask, int8_t *out8, int16_t *out16, ptrdiff_t n,
                           ptrdiff_t positions, ptrdiff_t channels, int32_t rescale)
    ctypedef struct numpy_bitgen_t:
        pass
    void pass_dropout_mask(numpy_bitgen_t *bitgen, uint8_t *mask, ptrdiff_t n, int keep_percent)

cdef extern from "_pairs.h" nogil:
    enum: PAIRS_DELTA_TOO_WIDE
    ctypedef struct outliers_t:
        int32_t *index
        int32_t *residual
        ptrdiff_t capacity
        ptrdiff_t count
    ctypedef struct product_out_t:
        int32_t *z
        ptrdiff_t row0
        divisor_t scale
        int8_t *scaled
        const int8_t *table
        int8_t *activated
    ctypedef struct pair_kernels_t:
        const char *name
        int (*supported)() noexcept nogil
        int (*product)(const int8_t *x, const int32_t *w_units, const product_out_t *out, ptrdiff_t m,
                       ptrdiff_t n, ptrdiff_t units, ptrdiff_t chunk, int pairs,
                       const outliers_t *outliers) noexcept nogil
        int64_t (*sgd_update)(const int32_t *delta, const int8_t *x, int32_t *w, int32_t *w_units,
                              int16_t *w_pairs, outliers_t *outliers, ptrdiff_t n, ptrdiff_t batch, ptrdiff_t k,
                              divisor_t lr, int decays, divisor_t decay, int sums_fit_int32) noexcept nogil
    const pair_kernels_t avx2_kernels
    const pair_kernels_t vnni_kernels
    int64_t pairs_row_l1(const int8_t *x, ptrdiff_t rows, ptrdiff_t cols)
    void pairs_split_units(const int32_t *a, int32_t *units, ptrdiff_t n)
    void pairs_pair_form(const int32_t *a, int16_t *pairs, ptrdiff_t n, ptrdiff_t k, outliers_t *outliers)


# -- checks ------------------------------------------------------------------------------

cdef int check_shape(str name, tuple got, tuple expected) except -1:
    if got != expected:
        raise ValueError(f"{name}: expected shape {expected}, got {got}")
    return 0


cdef int check_not_empty(str name, tuple shape) except -1:
    if 0 in shape:
        raise ValueError(f"{name}: shape {shape} is empty")
    return 0


cdef int check_divisor(str name, long long d) except -1:
    if not 1 <= d < 2**31:
        raise ValueError(f"{name} must be in [1, 2**31), got {d}")
    return 0


cdef int check_scale(long long scale) except -1:
    if not 1 <= scale < 2**24:
        raise ValueError(f"scale must be in [1, 2**24) (128 * scale < 2**31), got {scale}")
    return 0


cdef int check_decay(long long decay_inv) except -1:
    """decay_inv 0: no decay."""
    if decay_inv != 0:
        check_divisor("decay_inv", decay_inv)
    return 0


cdef object uint8_buffer(object obj, str name):
    """``obj``, refused when it is a bool array: a buffer of format '?', which Cython's
    memoryviews take for uint8."""
    if obj is not None and memoryview(obj).format == "?":
        raise ValueError(f"{name}: Buffer dtype mismatch, expected 'uint8_t' but got 'bool'")
    return obj


cdef outliers_t outlier_list(const int32_t[::1] index, const int32_t[::1] residual) except *:
    """An empty outlier list over two int32 buffers of the same capacity (const here: the
    entry points that write the list take them writable)."""
    if index.shape[0] != residual.shape[0]:
        raise ValueError("index and residual: int32 buffers of one size expected")
    cdef outliers_t outliers
    outliers.index = <int32_t *>&index[0] if index.shape[0] else NULL
    outliers.residual = <int32_t *>&residual[0] if residual.shape[0] else NULL
    outliers.capacity = index.shape[0]
    outliers.count = 0
    return outliers


cdef int check_outlier_indices_fit(str name, ptrdiff_t n, ptrdiff_t k) except -1:
    """The flat indices of an (n, k) matrix fit the outlier list's int32."""
    if n * k > INT32_MAX:
        raise ValueError(f"{name}: shape {(n, k)} is too large for int32 outlier indices")
    return 0


cdef int check_activation_table(object table, object activated) except -1:
    """An activation table (int8, 256 entries) goes with an array for its output."""
    if (table is None) != (activated is None):
        raise ValueError("table and activated go together")
    if table is not None:
        check_shape("table", (len(table),), (256,))
    return 0


# -- elementwise passes ------------------------------------------------------------------

def scale_to_int8(z not None, long long scale, int8_t[::1] out not None, const int8_t[::1] table=None,
                  int8_t[::1] activated=None):
    """scale_to_int8(z, scale, out, table=None, activated=None)

    out[i] = clip(tdiv(z[i], scale), -127, 127) for 1-D int32 z, or float64 z holding
    integers; 1-D int8 out; 128 * scale must be below 2**31. With an int8 table of 256
    entries, also activated[i] = table[out[i] as uint8] (an activation looked up by bit
    pattern)."""
    cdef const int32_t[::1] narrow
    cdef const double[::1] wide
    cdef bint is_wide = False
    try:
        narrow = z
    except (ValueError, TypeError):
        try:
            wide = z
            is_wide = True
        except (ValueError, TypeError) as error:
            raise ValueError("z: expected a C-contiguous 1-D int32 or float64 array") from error
    check_activation_table(table, activated)
    check_scale(scale)
    cdef ptrdiff_t n = out.shape[0]
    check_shape("z", (wide.shape[0] if is_wide else narrow.shape[0],), (n,))
    cdef const int8_t *table_data = NULL
    cdef int8_t *activated_data = NULL
    if table is not None:
        check_shape("activated", (activated.shape[0],), (n,))
        table_data, activated_data = &table[0], (&activated[0] if n else NULL)
    if n == 0:
        return
    with nogil:
        if is_wide:
            pass_scale_float64(&wide[0], &out[0], table_data, activated_data, n, scale)
        else:
            pass_scale_int32(&narrow[0], &out[0], table_data, activated_data, n, scale)


def activation_backward(const int32_t[:, ::1] g not None, const int8_t[:, ::1] pre not None,
                        const int32_t[::1] table not None, long long divisor, int32_t[:, ::1] out not None):
    """activation_backward(g, pre, table, divisor, out) -> (int, int)

    out = tdiv(g * table[pre], divisor) for int32 g and out and int8 pre, all (rows, cols),
    and an int32 table of 256 entries in [0, divisor] indexed by the bit pattern of pre;
    exact for every int32 g. Returns max_j sum_i |out[i, j]| and max |out| (the bounds of the
    weight gradient and of out that the update's proofs read)."""
    cdef ptrdiff_t rows = pre.shape[0], cols = pre.shape[1]
    check_shape("g", (g.shape[0], g.shape[1]), (rows, cols))
    check_shape("out", (out.shape[0], out.shape[1]), (rows, cols))
    check_shape("table", (table.shape[0],), (256,))
    check_divisor("divisor", divisor)
    cdef int i
    for i in range(256):  # the exactness for every int32 g rests on it
        if not 0 <= table[i] <= divisor:
            raise ValueError(f"table[{i}] = {table[i]} is outside [0, divisor = {divisor}]")
    if rows == 0 or cols == 0:
        return 0, 0
    cdef int64_t column_l1, largest = 0
    with nogil:
        column_l1 = pass_activation_backward(&g[0, 0], &pre[0, 0], &table[0], divisor, &out[0, 0], rows, cols,
                                             &largest)
    if column_l1 < 0:
        raise MemoryError()
    return column_l1, largest


def sgd_update(int32_t[:, ::1] w not None, const double[:, ::1] g not None, long long divisor, long long decay_inv,
               double[:, ::1] mirror):
    """sgd_update(w, g, divisor, decay_inv, mirror) -> int

    In place w -= tdiv(g, divisor) + (tdiv(w, decay_inv) if decay_inv else 0) for int32 w
    and float64 g holding integers with |g| < 2**31, both (n, k); writes float64(w) to mirror
    unless it is None and returns max|w| after the update. The caller proves that the new w
    fits int32."""
    shape = (w.shape[0], w.shape[1])
    check_shape("g", (g.shape[0], g.shape[1]), shape)
    if mirror is not None:
        check_shape("mirror", (mirror.shape[0], mirror.shape[1]), shape)
    check_divisor("divisor", divisor)
    check_decay(decay_inv)
    cdef ptrdiff_t n = w.shape[0] * w.shape[1]
    if n == 0:
        return 0
    cdef divisor_t lr = make_divisor(divisor), decay = make_divisor(decay_inv if decay_inv > 0 else 1)
    cdef double *mirror_data = &mirror[0, 0] if mirror is not None else NULL
    cdef int64_t largest
    with nogil:
        largest = update_loop(&w[0, 0], &g[0, 0], mirror_data, n, lr, decay_inv > 0, decay)
    return largest


def head_step(const int8_t[:, ::1] x not None, int32_t[:, ::1] w not None, const int8_t[:, ::1] target not None,
              long long scale, long long divisor, long long decay_inv, int8_t[:, ::1] yhat not None,
              int32_t[:, ::1] input_grad):
    """head_step(x, w, target, scale, divisor, decay_inv, yhat, input_grad) -> (squared_error, max_w)

    One update of a learning head on its local loss, in int32: for int8 x (batch, features),
    int32 w (classes, features), int8 target (batch, classes): yhat = clip(tdiv(x w^T, scale)),
    e = yhat - target, input_grad = e w (before the update; skipped when None), then
    w -= tdiv(e^T x, divisor) + tdiv(w, decay_inv). Returns sum(e**2) and max|w| after the
    update. Every sum must fit int32, and the new w too: ValueError (nothing written) unless
    max|w| proves it (the loops' int32 arithmetic would overflow)."""
    cdef ptrdiff_t batch = x.shape[0], features = x.shape[1], classes = w.shape[0]
    check_scale(scale)
    check_not_empty("x", (batch, features))
    check_not_empty("w", (classes, features))
    check_shape("w", (w.shape[0], w.shape[1]), (classes, features))
    check_shape("target", (target.shape[0], target.shape[1]), (batch, classes))
    check_shape("yhat", (yhat.shape[0], yhat.shape[1]), (batch, classes))
    if input_grad is not None:
        check_shape("input_grad", (input_grad.shape[0], input_grad.shape[1]), (batch, features))
    check_divisor("divisor", divisor)
    check_decay(decay_inv)
    cdef int64_t w_bound = 0, value
    cdef const int32_t *w_data = &w[0, 0]
    cdef ptrdiff_t i
    with nogil:
        for i in range(classes * features):
            value = w_data[i]
            w_bound = max(w_bound, -value if value < 0 else value)
    # |yhat - target| <= 255: the scores, the input gradient and G, and the new w (the bounds of
    # sknitro.nn.kernels, in Python integers)
    bound, rows = int(w_bound), int(batch)
    g_bound = 255 * 128 * rows
    decay_term = bound // decay_inv if 0 < decay_inv <= bound else 0
    if max(128 * bound * int(features), 255 * bound * int(classes), g_bound) > INT32_MAX or \
            bound + g_bound // divisor + decay_term > INT32_MAX:
        raise ValueError(f"head_step: with max|w| = {bound} and {rows} rows its int32 sums or the new w "
                         "could overflow")
    cdef int32_t *scratch = <int32_t *>malloc(head_scratch_size(classes, features) * sizeof(int32_t))
    cdef int16_t *error = <int16_t *>malloc(batch * classes * sizeof(int16_t))
    cdef divisor_t d_scale = make_divisor(scale), lr = make_divisor(divisor)
    cdef divisor_t decay = make_divisor(decay_inv if decay_inv > 0 else 1)
    cdef int32_t *grad_data = &input_grad[0, 0] if input_grad is not None else NULL
    cdef int64_t squares = 0, largest = 0
    try:
        if scratch == NULL or error == NULL:
            raise MemoryError()
        with nogil:
            largest = head_loop(&x[0, 0], &w[0, 0], &target[0, 0], &yhat[0, 0], grad_data, scratch, error, batch,
                                classes, features, d_scale, <int32_t>(128 * scale), lr, decay_inv > 0, decay,
                                &squares)
    finally:
        free(scratch)
        free(error)
    return squares, largest


def lookup_uint8(const int8_t[::1] table not None, x not None, int8_t[::1] out not None):
    """lookup_uint8(table, x, out)

    out[i] = table[x[i]] for an int8 table of 256 entries, 1-D uint8 x and int8 out (the
    image encoder's lookup: one pass, where numpy.take goes through a generic gather)."""
    cdef const uint8_t[::1] values = uint8_buffer(x, "x")
    check_shape("table", (table.shape[0],), (256,))
    check_shape("out", (out.shape[0],), (values.shape[0],))
    cdef ptrdiff_t n = values.shape[0]
    if n == 0:
        return
    with nogil:
        lookup_loop(&table[0], &values[0], &out[0], n)


def dropout_mask(bit_generator not None, uint8_t[::1] mask not None, int keep_percent):
    """dropout_mask(bit_generator, mask, keep_percent)

    mask[i] = draw_i < keep_percent (a uint8 or bool mask), for the draws NumPy's
    ``Generator.integers(0, 100, size=len(mask), dtype=np.int8)`` makes from ``bit_generator``
    (a numpy.random.BitGenerator), which it advances as that call would. Holds the bit
    generator's lock while it draws."""
    capsule = bit_generator.capsule
    if not PyCapsule_IsValid(capsule, "BitGenerator"):
        raise TypeError("bit_generator must be a numpy.random.BitGenerator")
    if not 0 <= keep_percent <= 100:
        raise ValueError(f"keep_percent must be in [0, 100], got {keep_percent}")
    cdef numpy_bitgen_t *bitgen = <numpy_bitgen_t *>PyCapsule_GetPointer(capsule, "BitGenerator")
    cdef ptrdiff_t n = mask.shape[0]
    if n == 0:
        return
    with bit_generator.lock, nogil:
        pass_dropout_mask(bitgen, &mask[0], n, keep_percent)


def dropout_apply(const int8_t[:, :, ::1] x not None, const uint8_t[:, :, ::1] mask not None, long long rescale,
                  int8_t[:, :, ::1] out8 not None, int16_t[:, :, ::1] out16 not None):
    """dropout_apply(x, mask, rescale, out8, out16) -> 8 or 16

    Dropout's output for maps x of shape (n, positions, channels) and a keep mask of 0s and 1s
    (uint8 or bool) of shape (n, channels, positions), the maps' logical order:
    tdiv(x * rescale, 1000) where the mask is 1, else 0. Written to out8 when every kept value
    of x fits int8 (returns 8), else to out16 (returns 16); both of x's shape.
    1 <= rescale < 2**23."""
    check_shape("mask", (mask.shape[0], mask.shape[1], mask.shape[2]), (x.shape[0], x.shape[2], x.shape[1]))
    check_shape("out8", (out8.shape[0], out8.shape[1], out8.shape[2]), (x.shape[0], x.shape[1], x.shape[2]))
    check_shape("out16", (out16.shape[0], out16.shape[1], out16.shape[2]), (x.shape[0], x.shape[1], x.shape[2]))
    if not 1 <= rescale < 2**23:
        raise ValueError(f"rescale must be in [1, 2**23), got {rescale}")
    if x.shape[0] * x.shape[1] * x.shape[2] == 0:
        return 8
    cdef int written
    with nogil:
        written = pass_dropout_apply(&x[0, 0, 0], &mask[0, 0, 0], &out8[0, 0, 0], &out16[0, 0, 0], x.shape[0],
                                     x.shape[1], x.shape[2], <int32_t>rescale)
    return written


# -- pooling and patches -----------------------------------------------------------------

cdef tuple pooled_shape(tuple maps, object kh, object kw, object ph, object pw):
    """The pooled shape of maps (n, h, w, c) by windows (kh, kw) with (ph, pw) padding, which
    must fit them, at most 256 positions (uint8 arg-max). (Python integers: kh * kw of
    C integers could wrap, and pass the check.)"""
    n, h, w, c = maps
    if min(maps) < 1 or not (0 <= ph < kh and 0 <= pw < kw) or kh > h + 2 * ph or kw > w + 2 * pw \
            or kh * kw > 256:
        raise ValueError(f"maps {maps}, window ({kh}, {kw}) and padding ({ph}, {pw}) do not make a pooling")
    return (n, (h + 2 * ph) // kh, (w + 2 * pw) // kw, c)


def max_pool(const int8_t[:, :, :, ::1] x not None, ptrdiff_t kh, ptrdiff_t kw, int8_t[:, :, :, ::1] best not None,
             argmax not None, ptrdiff_t ph=0, ptrdiff_t pw=0):
    """max_pool(x, kh, kw, best, argmax, ph=0, pw=0)

    Max pooling of int8 maps x (n, h, w, c) with windows (kh, kw), stride = window, ph (pw)
    rows (columns) of padding on both sides (-128: it never beats a later position), floor
    mode: int8 best and uint8 argmax (the window position di * kw + dj of the first maximum),
    both (n, (h + 2 ph) // kh, (w + 2 pw) // kw, c)."""
    cdef uint8_t[:, :, :, ::1] positions = uint8_buffer(argmax, "argmax")
    cdef ptrdiff_t n = x.shape[0], h = x.shape[1], w = x.shape[2], c = x.shape[3]
    pooled = pooled_shape((n, h, w, c), kh, kw, ph, pw)
    check_shape("best", (best.shape[0], best.shape[1], best.shape[2], best.shape[3]), pooled)
    check_shape("argmax", (positions.shape[0], positions.shape[1], positions.shape[2], positions.shape[3]), pooled)
    with nogil:
        pass_max_pool(&x[0, 0, 0, 0], &best[0, 0, 0, 0], &positions[0, 0, 0, 0], n, h, w, c, kh, kw, ph, pw)


def max_unpool(const int32_t[:, :, :, ::1] delta not None, argmax not None,
               ptrdiff_t kh, ptrdiff_t kw, int32_t[:, :, :, ::1] out not None, ptrdiff_t ph=0, ptrdiff_t pw=0):
    """max_unpool(delta, argmax, kh, kw, out, ph=0, pw=0)

    The gradient through max_pool: int32 out (n, h, w, c) gets each window's int32 delta
    (max_pool's pooled shape) at the window's uint8 argmax (same shape) and 0 everywhere
    else, the positions no window covers included (the rows and columns past the last whole
    window; the padding is dropped), so out need not be zeroed first."""
    cdef const uint8_t[:, :, :, ::1] positions = uint8_buffer(argmax, "argmax")
    cdef ptrdiff_t n = out.shape[0], h = out.shape[1], w = out.shape[2], c = out.shape[3]
    pooled = pooled_shape((n, h, w, c), kh, kw, ph, pw)
    check_shape("delta", (delta.shape[0], delta.shape[1], delta.shape[2], delta.shape[3]), pooled)
    check_shape("argmax", (positions.shape[0], positions.shape[1], positions.shape[2], positions.shape[3]), pooled)
    with nogil:
        pass_max_unpool(&delta[0, 0, 0, 0], &positions[0, 0, 0, 0], &out[0, 0, 0, 0], n, h, w, c, kh, kw, ph, pw)


def im2col(const int8_t[:, :, :, ::1] x not None, ptrdiff_t k, ptrdiff_t pad, int8_t[:, ::1] out not None):
    """im2col(x, k, pad, out)

    The im2col patches of int8 maps x (n, h, w, c), k x k windows (k <= 64), stride 1, pad
    zeros on every side: int8 out (n * ho * wo, k * k * c), ho = h + 2 pad - k + 1 (wo
    likewise), each row ordered (kernel row, kernel column, channel)."""
    cdef ptrdiff_t n = x.shape[0], h = x.shape[1], w = x.shape[2], c = x.shape[3]
    if min(n, h, w, c) < 1 or not (1 <= k <= 64 and 0 <= pad < k) or k > h + 2 * pad or k > w + 2 * pad:
        raise ValueError(f"maps {(n, h, w, c)}, window {k} and padding {pad} do not make patches")
    cdef ptrdiff_t ho = h + 2 * pad - k + 1, wo = w + 2 * pad - k + 1
    check_shape("out", (out.shape[0], out.shape[1]), (n * ho * wo, k * k * c))
    with nogil:
        pass_im2col(&x[0, 0, 0, 0], &out[0, 0], n, h, w, c, k, pad)


# -- the pair products (sknitro/_pairs.h) ------------------------------------------------

# The pair products of each instruction set, fastest first.
cdef enum:
    N_PAIR_KERNELS = 2
cdef const pair_kernels_t *PAIR_KERNELS[N_PAIR_KERNELS]
PAIR_KERNELS[0], PAIR_KERNELS[1] = &vnni_kernels, &avx2_kernels
ISAS = tuple(PAIR_KERNELS[i].name.decode() for i in range(N_PAIR_KERNELS))
# What the portable loops (heads, scaling, the activation's backward, ...) were compiled for:
# GCC target strings, one per build the loader picks from.
PORTABLE_TARGETS = tuple(target.strip() for target in portable_target.decode().split(","))


cdef product_out_t z_out(int32_t[:, ::1] z, ptrdiff_t m, ptrdiff_t n) except *:
    """A product's output into int32 z (m, n)."""
    check_shape("z", (z.shape[0], z.shape[1]), (m, n))
    cdef product_out_t out
    out.z, out.row0, out.scaled, out.table, out.activated = &z[0, 0], 0, NULL, NULL, NULL
    return out


cdef product_out_t scaled_out(long long scale, int8_t[:, ::1] scaled, object table, int8_t[:, ::1] activated,
                              ptrdiff_t m, ptrdiff_t n) except *:
    """A product's output NITRO-scaled into int8 scaled (m, n), and with a table (int8, 256
    entries), activated = table[scaled] (m, n)."""
    check_shape("scaled", (scaled.shape[0], scaled.shape[1]), (m, n))
    check_scale(scale)
    check_activation_table(table, activated)
    cdef const int8_t[::1] entries
    cdef product_out_t out
    out.z, out.row0, out.scale, out.scaled = NULL, 0, make_divisor(scale), &scaled[0, 0]
    out.table, out.activated = NULL, NULL
    if table is not None:
        entries = table
        check_shape("activated", (activated.shape[0], activated.shape[1]), (m, n))
        out.table, out.activated = &entries[0], &activated[0, 0]
    return out


cdef const pair_kernels_t *pair_kernels(str isa) except NULL:
    """The pair kernels named ``isa``, which this CPU must run."""
    if isa not in ISAS:
        raise ValueError(f"isa must be {' or '.join(map(repr, ISAS))}, got {isa!r}")
    cdef const pair_kernels_t *kernels = PAIR_KERNELS[ISAS.index(isa)]
    if not kernels.supported():
        raise RuntimeError(f"this CPU does not run the {isa!r} pair products")
    return kernels


def pair_isas():
    """pair_isas() -> tuple

    The instruction sets of the pair products this CPU runs, fastest first: 'vnni' (AVX-512
    F, BW, VL and VNNI) and 'avx2'."""
    return tuple(isa for i, isa in enumerate(ISAS) if PAIR_KERNELS[i].supported())


def row_l1(const int8_t[:, ::1] x not None):
    """row_l1(x) -> int

    The largest row L1 norm max_i sum_k |x[i, k]| of int8 x (rows, cols); 0 without rows."""
    cdef ptrdiff_t rows = x.shape[0], cols = x.shape[1]
    if rows == 0 or cols == 0:
        return 0
    cdef int64_t largest
    with nogil:
        largest = pairs_row_l1(&x[0, 0], rows, cols)
    return largest


def split_units(const int32_t[:, ::1] a not None, int32_t[:, ::1] units not None):
    """split_units(a, units)

    units = (a & 255, a >> 8) as a pair of int16 for int32 a (n, k) with |a| < 2**23."""
    check_shape("units", (units.shape[0], units.shape[1]), (a.shape[0], a.shape[1]))
    cdef ptrdiff_t n = a.shape[0] * a.shape[1]
    if n == 0:
        return
    with nogil:
        pairs_split_units(&a[0, 0], &units[0, 0], n)


def pair_form(const int32_t[:, ::1] a not None, int16_t[:, ::1] pairs not None, int32_t[::1] index not None,
              int32_t[::1] residual not None):
    """pair_form(a, pairs, index, residual) -> int

    pairs = a saturated to int16 for int32 a (n, k), and its outliers (the flat index of each
    value past int16, ascending, and what saturation cut off) written to the int32 buffers
    index and residual; returns their count, which may exceed the buffers' capacity (then the
    lists are incomplete)."""
    cdef ptrdiff_t n = a.shape[0], k = a.shape[1]
    check_not_empty("a", (n, k))
    check_shape("pairs", (pairs.shape[0], pairs.shape[1]), (n, k))
    check_outlier_indices_fit("a", n, k)
    cdef outliers_t outliers = outlier_list(index, residual)
    with nogil:
        pairs_pair_form(&a[0, 0], &pairs[0, 0], n, k, &outliers)
    return outliers.count


def units_product(str isa not None, const int8_t[:, ::1] x not None, const int32_t[:, ::1] w_units not None,
                  ptrdiff_t chunk, int32_t[:, ::1] z not None):
    """units_product(isa, x, w_units, chunk, z)

    z = x w^T saturated to int32, (m, n), from int8 x (m, k) and the split units of w (n, k).
    Exact (before saturation) when every partial sum over chunk consecutive k (chunk < 1: all
    k) fits int32, which the caller proves; the chunks add up in int64."""
    cdef const pair_kernels_t *kernels = pair_kernels(isa)
    cdef ptrdiff_t m = x.shape[0], k = x.shape[1], n = w_units.shape[0]
    check_not_empty("x", (m, k))
    check_not_empty("w_units", (n, k))
    check_shape("w_units", (w_units.shape[0], w_units.shape[1]), (n, k))
    cdef product_out_t out = z_out(z, m, n)
    cdef int status
    with nogil:
        status = kernels.product(&x[0, 0], &w_units[0, 0], &out, m, n, k, chunk if chunk >= 1 else k, 0, NULL)
    if status < 0:
        raise MemoryError()


# the narrow layers' kernels (_pairs.h: NARROW_UNITS)
NARROW_UNITS = 64


def narrow_scaled_product(str isa not None, const int8_t[:, ::1] x not None, const int32_t[:, ::1] w_units not None,
                          long long scale, int8_t[:, ::1] scaled not None, const int8_t[::1] table=None,
                          int8_t[:, ::1] activated=None):
    """narrow_scaled_product(isa, x, w_units, scale, scaled, table=None, activated=None)

    The scaled forward of a narrow layer, with no z in memory: scaled = clip(tdiv(x w^T,
    scale), -127, 127) (m, n) from int8 x (m, k), k < 64, and the split units of w (n, k);
    128 * scale must be below 2**31. With an int8 table of 256 entries, also activated =
    table[scaled] by bit pattern (m, n). The caller proves that every row's sum fits int32."""
    cdef const pair_kernels_t *kernels = pair_kernels(isa)
    cdef ptrdiff_t m = x.shape[0], k = x.shape[1], n = w_units.shape[0]
    check_not_empty("x", (m, k))
    check_not_empty("w_units", (n, k))
    if k >= NARROW_UNITS:
        raise ValueError(f"x: {k} inputs; the narrow kernels take fewer than {NARROW_UNITS}")
    check_shape("w_units", (w_units.shape[0], w_units.shape[1]), (n, k))
    cdef product_out_t out = scaled_out(scale, scaled, table, activated, m, n)
    cdef int status
    with nogil:  # whole rows in one chunk: the narrow kernels
        status = kernels.product(&x[0, 0], &w_units[0, 0], &out, m, n, k, k, 0, NULL)
    if status < 0:
        raise MemoryError()


cdef outliers_t pair_form_outliers(const int32_t[::1] index, const int32_t[::1] residual, ptrdiff_t count,
                                   ptrdiff_t n, ptrdiff_t k) except *:
    """The first `count` outliers of a pair form of w (n, k), checked: the product groups
    them by row through their indices (ascending, inside w), and only reads them."""
    cdef outliers_t outliers = outlier_list(index, residual)
    if not 0 <= count <= outliers.capacity:
        raise ValueError(f"count must be in [0, {outliers.capacity}], got {count}")
    cdef ptrdiff_t i
    for i in range(count):
        if not 0 <= index[i] < n * k or (i > 0 and index[i] <= index[i - 1]):
            raise ValueError(f"outlier index {index[i]} at {i} is outside [0, {n * k}) or not ascending")
    outliers.count = count
    return outliers


cdef int pair_form_product(str isa, const int8_t[:, ::1] x, const int16_t[:, ::1] w_pairs,
                           const int32_t[::1] index, const int32_t[::1] residual, ptrdiff_t count,
                           ptrdiff_t chunk, const product_out_t *out) except -1:
    """The product of x and a pair form of w, stored as `out` says (its shapes checked)."""
    cdef const pair_kernels_t *kernels = pair_kernels(isa)
    cdef ptrdiff_t m = x.shape[0], k = x.shape[1], n = w_pairs.shape[0]
    cdef outliers_t outliers = pair_form_outliers(index, residual, count, n, k)
    cdef int status
    with nogil:
        status = kernels.product(&x[0, 0], <const int32_t *>&w_pairs[0, 0], out, m, n, k // 2,
                                 chunk if chunk >= 1 else k // 2, 1, &outliers)
    if status < 0:
        raise MemoryError()
    return 0


cdef int check_pair_form_operands(const int8_t[:, ::1] x, const int16_t[:, ::1] w_pairs) except -1:
    cdef ptrdiff_t m = x.shape[0], k = x.shape[1], n = w_pairs.shape[0]
    check_not_empty("x", (m, k))
    check_not_empty("w_pairs", (n, k))
    if k % 2:
        raise ValueError(f"x: k must be even, got {k}")
    check_shape("w_pairs", (w_pairs.shape[0], w_pairs.shape[1]), (n, k))
    return 0


def pairs_product(str isa not None, const int8_t[:, ::1] x not None, const int16_t[:, ::1] w_pairs not None,
                  const int32_t[::1] index not None, const int32_t[::1] residual not None, ptrdiff_t count,
                  ptrdiff_t chunk, int32_t[:, ::1] z not None):
    """pairs_product(isa, x, w_pairs, index, residual, count, chunk, z)

    z = x w^T saturated to int32, (m, n), from int8 x (m, k) and the pair form of w (n, k),
    k even, with its first count outliers (index, residual; see pair_form). Exact (before
    saturation) when every partial sum over chunk consecutive pairs of k (chunk < 1: all)
    fits int32, which the caller proves; the chunks and the outliers add up in int64."""
    check_pair_form_operands(x, w_pairs)
    cdef product_out_t out = z_out(z, x.shape[0], w_pairs.shape[0])
    pair_form_product(isa, x, w_pairs, index, residual, count, chunk, &out)


def pairs_scaled_product(str isa not None, const int8_t[:, ::1] x not None, const int16_t[:, ::1] w_pairs not None,
                         const int32_t[::1] index not None, const int32_t[::1] residual not None, ptrdiff_t count,
                         ptrdiff_t chunk, long long scale, int8_t[:, ::1] scaled not None,
                         const int8_t[::1] table=None, int8_t[:, ::1] activated=None):
    """pairs_scaled_product(isa, x, w_pairs, index, residual, count, chunk, scale, scaled,
    table=None, activated=None)

    pairs_product's z, NITRO-scaled in the product's tiles: scaled = clip(tdiv(z, scale),
    -127, 127) (m, n), int8, with 128 * scale below 2**31, and with an int8 table of 256
    entries also activated = table[scaled] by bit pattern (m, n); no z is written. The same
    proofs as pairs_product (z past +-128 * scale scales to +-127 whatever its exact value)."""
    check_pair_form_operands(x, w_pairs)
    cdef product_out_t out = scaled_out(scale, scaled, table, activated, x.shape[0], w_pairs.shape[0])
    pair_form_product(isa, x, w_pairs, index, residual, count, chunk, &out)


def units_sgd_update(str isa not None, const int32_t[:, ::1] delta not None, const int8_t[:, ::1] x not None,
                     int32_t[:, ::1] w not None, mirror not None, long long divisor, long long decay_inv,
                     int32_t[::1] index=None, int32_t[::1] residual=None, bint sums_fit_int32=True):
    """units_sgd_update(isa, delta, x, w, mirror, divisor, decay_inv, index=None, residual=None,
                        sums_fit_int32=True)

    IntegerSGD with G = delta^T x on the pair products of isa ('vnni' or 'avx2'): for int32
    delta (batch, n) with |delta| < 2**23, int8 x (batch, k) and int32 w (n, k), in place
    w -= tdiv(G, divisor) + (tdiv(w, decay_inv) if decay_inv else 0). Writes to mirror (n, k)
    the new w's split units (int32), or, given the outlier buffers index and residual, its
    pair form (int16) and outliers (see pair_form). Returns (max|w|, outlier count). Exact
    for any G: with sums_fit_int32 the caller proves every sum of G (|G| < 2**31, which
    spares the kernel the checks and the int64 sums of a G that may pass it). The caller
    proves that the new w fits int32."""
    cdef bint pairs = index is not None
    if pairs != (residual is not None):
        raise ValueError("index and residual go together")
    cdef int32_t[:, ::1] units
    cdef int16_t[:, ::1] pair_values
    try:
        if pairs:
            pair_values = mirror
        else:
            units = mirror
    except (ValueError, TypeError) as error:
        raise ValueError("mirror: expected a writable C-contiguous 2-D array, int16 with index and residual "
                         "(the pair form), int32 without (the split units)") from error
    cdef const pair_kernels_t *kernels = pair_kernels(isa)
    cdef ptrdiff_t batch = delta.shape[0], n = delta.shape[1], k = x.shape[1]
    check_not_empty("delta", (batch, n))
    check_not_empty("x", (x.shape[0], k))
    check_shape("x", (x.shape[0], x.shape[1]), (batch, k))
    check_shape("w", (w.shape[0], w.shape[1]), (n, k))
    check_shape("mirror", (pair_values.shape[0], pair_values.shape[1]) if pairs else (units.shape[0], units.shape[1]), (n, k))
    check_divisor("divisor", divisor)
    check_decay(decay_inv)
    cdef outliers_t outliers
    outliers.index = outliers.residual = NULL
    outliers.capacity = outliers.count = 0
    if pairs:
        check_outlier_indices_fit("w", n, k)
        outliers = outlier_list(index, residual)
    cdef divisor_t lr = make_divisor(divisor), decay = make_divisor(decay_inv if decay_inv > 0 else 1)
    cdef int32_t *units_data = NULL if pairs else &units[0, 0]
    cdef int16_t *pairs_data = &pair_values[0, 0] if pairs else NULL
    cdef int64_t largest
    with nogil:
        largest = kernels.sgd_update(&delta[0, 0], &x[0, 0], &w[0, 0], units_data, pairs_data, &outliers, n, batch,
                                     k, lr, decay_inv > 0, decay, sums_fit_int32)
    if largest == PAIRS_DELTA_TOO_WIDE:
        raise ValueError("delta: values must be in [-2**23, 2**23) (a split unit's range); nothing was written")
    if largest < 0:
        raise MemoryError()
    return largest, outliers.count
