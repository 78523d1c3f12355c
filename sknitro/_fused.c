/*
 * sknitro._fused: the Python side of the compiled kernels. Each function checks its own
 * arguments (type, shape, contiguity, ranges: whatever Python passes) and then runs a kernel
 * with the GIL released:
 *
 *   scale_to_int8        s = clip(tdiv(z, SF), -127, 127), a = table[s]  (scaling, activation)
 *   activation_backward  d = tdiv(g * multiplier[s], D)                  (the activation's backward)
 *   sgd_update           W -= tdiv(G, lr_inv * amp) + tdiv(W, decay_inv), returning max|W|
 *   head_step            a learning head's whole update, in int32 loops (no float at all)
 *   lookup_uint8         out = table[x] for uint8 x                      (the image encoder)
 *   max_pool, max_unpool max pooling of int8 maps and its gradient        (conv blocks)
 *   im2col               the patches of int8 maps                         (conv layers)
 *
 * from the portable loops of _portable.c, and the pair products of _pairs.h (row_l1,
 * split_units, pair_form, units_product, pairs_product, units_sgd_update), which replace
 * float64 BLAS where the CPU has AVX2 or AVX-512 VNNI. The rules themselves (tdiv, the int8
 * clip, the SGD update) are written once, in _rules.h.
 *
 * The caller (sknitro/nn/kernels.py) proves before each call that every integer fits the
 * types used here (|G| < 2**31 and the like).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_pairs.h"
#include "_portable.h" /* and _rules.h */

/* ---------------------------------------------------------------------------------- */

/* The passes over a large array go in chunks of about this many items, spread over the
 * OpenMP threads when there are several: each item's result is the same whatever the split. */
#define CHUNK_ITEMS ((Py_ssize_t)1 << 16)

/* `rows` rows of `items_per_row` items (>= 1) in chunks of whole rows, at least one row each. */
typedef struct {
    Py_ssize_t rows, chunk_rows, chunks;
} chunks_t;

static chunks_t row_chunks(Py_ssize_t rows, Py_ssize_t items_per_row)
{
    Py_ssize_t chunk_rows = CHUNK_ITEMS / items_per_row > 0 ? CHUNK_ITEMS / items_per_row : 1;
    return (chunks_t){rows, chunk_rows, (rows + chunk_rows - 1) / chunk_rows};
}

/* The first row of chunk `chunk`, and the end of its rows. */
static Py_ssize_t chunk_first(const chunks_t *c, Py_ssize_t chunk)
{
    return chunk * c->chunk_rows;
}

static Py_ssize_t chunk_end(const chunks_t *c, Py_ssize_t chunk)
{
    return (chunk + 1) * c->chunk_rows < c->rows ? (chunk + 1) * c->chunk_rows : c->rows;
}

static int check_size(Py_buffer *view, Py_ssize_t count, Py_ssize_t itemsize, const char *name)
{
    if (view->len != count * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items of %zd bytes, got %zd bytes",
                     name, count, itemsize, view->len);
        return -1;
    }
    return 0;
}

/* `count` items make whole rows of `cols` (cols >= 1). */
static int check_rows(Py_ssize_t count, Py_ssize_t cols, const char *name)
{
    if (cols < 1 || count % cols != 0) {
        PyErr_Format(PyExc_ValueError, "%s: %zd items do not make rows of %zd", name, count, cols);
        return -1;
    }
    return 0;
}

static int check_divisor(long long d, const char *name)
{
    if (d < 1 || d >= ((long long)1 << 31)) {
        PyErr_Format(PyExc_ValueError, "%s must be in [1, 2**31), got %lld", name, d);
        return -1;
    }
    return 0;
}

/* ---- typed buffers: every array argument is checked here, whatever Python passes --------
 * An "O&" converter per element type: the object must export a C-contiguous buffer of
 * exactly that type (by its format), writable where the kernel writes. Converters release
 * their buffer when a later argument fails (Py_CLEANUP_SUPPORTED). */

static int format_is(const char *format, char kind, Py_ssize_t itemsize)
{
    char found;
    Py_ssize_t size;
    if (format == NULL)
        format = "B";
    if (*format == '@' || *format == '=' || (PY_LITTLE_ENDIAN && *format == '<'))
        format++;
    if (format[0] == '\0' || format[1] != '\0')
        return 0;
    switch (format[0]) {
    case 'b': found = 'i'; size = 1; break;
    case 'B': found = 'u'; size = 1; break;
    case 'h': found = 'i'; size = 2; break;
    case 'i': found = 'i'; size = 4; break;
    case 'l': found = 'i'; size = (Py_ssize_t)sizeof(long); break;
    case 'q': found = 'i'; size = 8; break;
    case 'd': found = 'f'; size = 8; break;
    default: return 0;
    }
    return found == kind && size == itemsize;
}

static int typed_buffer(PyObject *obj, Py_buffer *view, char kind, Py_ssize_t itemsize, int writable,
                        int optional, const char *type_name)
{
    if (obj == NULL) {  /* cleanup: a later argument failed */
        PyBuffer_Release(view);
        return 1;
    }
    view->obj = NULL;
    if (optional && obj == Py_None) {
        view->buf = NULL;
        view->len = 0;
        return Py_CLEANUP_SUPPORTED;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "expected a C-contiguous%s %s array, got %s", writable ? ", writable" : "",
                     type_name, Py_TYPE(obj)->tp_name);
        return 0;
    }
    if (!format_is(view->format, kind, itemsize)) {
        PyErr_Format(PyExc_TypeError, "expected a %s array, got one of buffer format '%s'", type_name,
                     view->format ? view->format : "B");
        PyBuffer_Release(view);
        return 0;
    }
    return Py_CLEANUP_SUPPORTED;
}

#define TYPED_BUFFER(name, kind, itemsize, writable, optional, type_name)            \
    static int name(PyObject *obj, void *view)                                      \
    {                                                                               \
        return typed_buffer(obj, (Py_buffer *)view, kind, itemsize, writable, optional, type_name); \
    }
TYPED_BUFFER(int8_in, 'i', 1, 0, 0, "int8")
TYPED_BUFFER(int8_out, 'i', 1, 1, 0, "int8")
TYPED_BUFFER(int8_out_or_none, 'i', 1, 1, 1, "int8")
TYPED_BUFFER(int8_in_or_none, 'i', 1, 0, 1, "int8")
TYPED_BUFFER(uint8_in, 'u', 1, 0, 0, "uint8")
TYPED_BUFFER(uint8_out, 'u', 1, 1, 0, "uint8")
TYPED_BUFFER(int16_in, 'i', 2, 0, 0, "int16")
TYPED_BUFFER(int16_out, 'i', 2, 1, 0, "int16")
TYPED_BUFFER(int32_in, 'i', 4, 0, 0, "int32")
TYPED_BUFFER(int32_out, 'i', 4, 1, 0, "int32")
TYPED_BUFFER(int32_out_or_none, 'i', 4, 1, 1, "int32")
TYPED_BUFFER(float64_in, 'f', 8, 0, 0, "float64")
TYPED_BUFFER(float64_out_or_none, 'f', 8, 1, 1, "float64")

/* A buffer of either of two element types; the caller tells them apart by view->itemsize. */
static int either_buffer(PyObject *obj, Py_buffer *view, char kind, Py_ssize_t itemsize, char other_kind,
                         Py_ssize_t other_itemsize, int writable, const char *type_name)
{
    int status = typed_buffer(obj, view, kind, itemsize, writable, 0, type_name);
    if (status || obj == NULL)
        return status;
    PyErr_Clear();
    return typed_buffer(obj, view, other_kind, other_itemsize, writable, 0, type_name);
}

/* z of scale_to_int8: int32, or float64 holding integers */
static int int32_or_float64_in(PyObject *obj, void *view)
{
    return either_buffer(obj, (Py_buffer *)view, 'i', 4, 'f', 8, 0, "int32 or float64");
}

/* a mirror of units_sgd_update: int32 split units, or int16 pairs */
static int int32_or_int16_out(PyObject *obj, void *view)
{
    return either_buffer(obj, (Py_buffer *)view, 'i', 4, 'i', 2, 1, "int32 or int16");
}

PyDoc_STRVAR(scale_to_int8_doc,
"scale_to_int8(z, scale, out, table=None, activated=None)\n--\n\n"
"out[i] = clip(tdiv(z[i], scale), -127, 127) for int32 z, or float64 z holding integers;\n"
"int8 out; "
"128 * scale must be below 2**31. With an int8 table of 256 entries, also\n"
"activated[i] = table[out[i] as uint8] (an activation looked up by bit pattern).");

static PyObject *scale_to_int8(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer z, out, table = {0}, activated = {0};
    long long scale;
    if (!PyArg_ParseTuple(args, "O&LO&|O&O&", int32_or_float64_in, &z, &scale, int8_out, &out,
                          int8_in_or_none, &table, int8_out_or_none, &activated))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = out.len;
    int has_table = table.obj != NULL;
    if (has_table != (activated.obj != NULL)) {
        PyErr_SetString(PyExc_ValueError, "table and activated go together");
    } else if (scale < 1 || scale >= ((long long)1 << 24)) {
        PyErr_Format(PyExc_ValueError, "scale must be in [1, 2**24) (128 * scale < 2**31), got %lld", scale);
    } else if (check_size(&z, n, z.itemsize, "z") == 0
               && (!has_table || (check_size(&table, 256, 1, "table") == 0
                                  && check_size(&activated, n, 1, "activated") == 0))) {
        divisor_t d = make_divisor(scale);
        chunks_t chunks = row_chunks(n, 1);
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for schedule(static) if (chunks.chunks > 1)
        for (Py_ssize_t chunk = 0; chunk < chunks.chunks; chunk++) {
            Py_ssize_t start = chunk_first(&chunks, chunk), count = chunk_end(&chunks, chunk) - start;
            int8_t *scaled = (int8_t *)out.buf + start;
            if (z.itemsize == 4)  /* the converter took int32 or float64: the element size tells which */
                scale_loop_int32((const int32_t *)z.buf + start, scaled, count, d);
            else
                scale_loop((const double *)z.buf + start, scaled, count, 128.0 * (double)scale, d);
            if (has_table)
                lookup_int8((const int8_t *)table.buf, scaled, (int8_t *)activated.buf + start, count);
        }
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&table);
    PyBuffer_Release(&activated);
    PyBuffer_Release(&z);
    PyBuffer_Release(&out);
    return result;
}

PyDoc_STRVAR(activation_backward_doc,
"activation_backward(g, pre, table, divisor, out, cols) -> int\n--\n\n"
"out = tdiv(g * table[pre], divisor) for int32 g and out, int8 pre, and an int32 table of\n"
"256 entries in [0, divisor] indexed by the bit pattern of pre; exact for every int32 g.\n"
"Returns max_j sum_i |out[i, j]| for out seen as a matrix of cols columns (the weight\n"
"gradient's bound).");

static PyObject *activation_backward(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer g, pre, table, out;
    long long divisor;
    Py_ssize_t cols;
    if (!PyArg_ParseTuple(args, "O&O&O&LO&n", int32_in, &g, int8_in, &pre, int32_in, &table, &divisor,
                          int32_out, &out, &cols))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = pre.len;
    int64_t *sums = NULL;
    if (check_rows(n, cols, "out") == 0 && check_size(&g, n, 4, "g") == 0 && check_size(&out, n, 4, "out") == 0
        && check_size(&table, 256, 4, "table") == 0 && check_divisor(divisor, "divisor") == 0) {
        /* chunks of whole rows, each with its own column sums (exact in int64: any order) */
        chunks_t chunks = row_chunks(n / cols, cols);
        if ((sums = PyMem_Calloc((size_t)(chunks.chunks > 0 ? chunks.chunks : 1) * (size_t)cols,
                                 sizeof(int64_t))) == NULL) {
            PyErr_NoMemory();
        } else {
            divisor_t d = make_divisor(divisor);
            int64_t largest = 0;
            Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for schedule(static) if (chunks.chunks > 1)
            for (Py_ssize_t chunk = 0; chunk < chunks.chunks; chunk++) {
                Py_ssize_t first = chunk_first(&chunks, chunk), count = chunk_end(&chunks, chunk) - first;
                int32_t *block = (int32_t *)out.buf + first * cols;
                backward_loop((const int32_t *)g.buf + first * cols, (const int8_t *)pre.buf + first * cols,
                              (const int32_t *)table.buf, block, count * cols, divisor, d);
                column_l1_max(block, sums + chunk * cols, count, cols);
            }
            for (Py_ssize_t j = 0; j < cols; j++) {
                int64_t total = 0;
                for (Py_ssize_t chunk = 0; chunk < chunks.chunks; chunk++)
                    total += sums[chunk * cols + j];
                largest = total > largest ? total : largest;
            }
            Py_END_ALLOW_THREADS
            result = PyLong_FromLongLong(largest);
        }
    }
    PyMem_Free(sums);
    PyBuffer_Release(&g);
    PyBuffer_Release(&pre);
    PyBuffer_Release(&table);
    PyBuffer_Release(&out);
    return result;
}

PyDoc_STRVAR(sgd_update_doc,
"sgd_update(w, g, divisor, decay_inv, mirror) -> int\n--\n\n"
"In place w -= tdiv(g, divisor) + (tdiv(w, decay_inv) if decay_inv else 0) for int32 w and\n"
"float64 g holding integers with |g| < 2**31; writes float64(w) to mirror unless it is None\n"
"and returns max|w| after the update. The caller proves that the new w fits int32.");

static PyObject *sgd_update(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer w, g, mirror = {0};
    long long divisor, decay_inv;
    if (!PyArg_ParseTuple(args, "O&O&LLO&", int32_out, &w, float64_in, &g, &divisor, &decay_inv,
                          float64_out_or_none, &mirror))
        return NULL;
    int has_mirror = mirror.obj != NULL;
    PyObject *result = NULL;
    Py_ssize_t n = w.len / 4;
    if (check_size(&w, n, 4, "w") == 0 && check_size(&g, n, 8, "g") == 0
        && (!has_mirror || check_size(&mirror, n, 8, "mirror") == 0)
        && check_divisor(divisor, "divisor") == 0
        && (decay_inv == 0 || check_divisor(decay_inv, "decay_inv") == 0)) {
        divisor_t lr = make_divisor(divisor);
        divisor_t decay = make_divisor(decay_inv > 0 ? decay_inv : 1);
        int64_t largest;
        Py_BEGIN_ALLOW_THREADS
        largest = update_loop((int32_t *)w.buf, (const double *)g.buf,
                              has_mirror ? (double *)mirror.buf : NULL, n, lr, decay_inv > 0, decay);
        Py_END_ALLOW_THREADS
        result = PyLong_FromLongLong(largest);
    }
    PyBuffer_Release(&w);
    PyBuffer_Release(&g);
    PyBuffer_Release(&mirror);
    return result;
}

PyDoc_STRVAR(head_step_doc,
"head_step(x, w, target, batch, scale, divisor, decay_inv, yhat, input_grad) -> (squared_error, max_w)\n--\n\n"
"One update of a learning head on its local loss, in int32: for int8 x (batch, features),\n"
"int32 w (classes, features), int8 target (batch, classes): yhat = clip(tdiv(x w^T, scale)),\n"
"e = yhat - target, input_grad = e w (before the update; skipped when None), then\n"
"w -= tdiv(e^T x, divisor) + tdiv(w, decay_inv). Returns sum(e**2) and max|w| after the\n"
"update. The caller proves that every sum fits int32 and that the new w fits int32.");

static PyObject *head_step(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer x, w, target, yhat, input_grad = {0};
    Py_ssize_t batch;
    long long scale, divisor, decay_inv;
    if (!PyArg_ParseTuple(args, "O&O&O&nLLLO&O&", int8_in, &x, int32_out, &w, int8_in, &target, &batch, &scale,
                          &divisor, &decay_inv, int8_out, &yhat, int32_out_or_none, &input_grad))
        return NULL;
    int propagate = input_grad.obj != NULL;
    PyObject *result = NULL;
    Py_ssize_t features = batch > 0 ? x.len / batch : 0, classes = batch > 0 ? target.len / batch : 0;
    if (scale < 1 || scale >= ((long long)1 << 24)) {
        PyErr_Format(PyExc_ValueError, "scale must be in [1, 2**24), got %lld", scale);
    } else if (batch < 1 || features < 1 || classes < 1) {
        PyErr_Format(PyExc_ValueError, "empty head: batch %zd, %zd features, %zd classes",
                     batch, features, classes);
    } else if (check_size(&x, batch * features, 1, "x") == 0
               && check_size(&target, batch * classes, 1, "target") == 0
               && check_size(&yhat, batch * classes, 1, "yhat") == 0
               && check_size(&w, classes * features, 4, "w") == 0
               && (!propagate || check_size(&input_grad, batch * features, 4, "input_grad") == 0)
               && check_divisor(divisor, "divisor") == 0
               && (decay_inv == 0 || check_divisor(decay_inv, "decay_inv") == 0)) {
        int32_t *row = PyMem_Malloc((size_t)features * sizeof(int32_t));
        int16_t *error = PyMem_Malloc((size_t)(batch * classes) * sizeof(int16_t));
        if (row == NULL || error == NULL) {
            PyErr_NoMemory();
        } else {
            divisor_t d_scale = make_divisor(scale), lr = make_divisor(divisor);
            divisor_t decay = make_divisor(decay_inv > 0 ? decay_inv : 1);
            int64_t squares, largest;
            Py_BEGIN_ALLOW_THREADS
            largest = head_loop((const int8_t *)x.buf, (int32_t *)w.buf, (const int8_t *)target.buf,
                                (int8_t *)yhat.buf, propagate ? (int32_t *)input_grad.buf : NULL,
                                row, error, batch, classes, features, d_scale,
                                (int32_t)(128 * scale), lr, decay_inv > 0, decay, &squares);
            Py_END_ALLOW_THREADS
            result = Py_BuildValue("LL", (long long)squares, (long long)largest);
        }
        PyMem_Free(row);
        PyMem_Free(error);
    }
    PyBuffer_Release(&input_grad);
    PyBuffer_Release(&x);
    PyBuffer_Release(&w);
    PyBuffer_Release(&target);
    PyBuffer_Release(&yhat);
    return result;
}

PyDoc_STRVAR(lookup_uint8_doc,
"lookup_uint8(table, x, out)\n--\n\n"
"out[i] = table[x[i]] for an int8 table of 256 entries, uint8 x and int8 out (the image\n"
"encoder's lookup: one pass, where numpy.take goes through a generic gather).");

static PyObject *lookup_uint8(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer table, x, out;
    if (!PyArg_ParseTuple(args, "O&O&O&", int8_in, &table, uint8_in, &x, int8_out, &out))
        return NULL;
    PyObject *result = NULL;
    if (check_size(&table, 256, 1, "table") == 0 && check_size(&out, x.len, 1, "out") == 0) {
        Py_BEGIN_ALLOW_THREADS
        lookup_loop((const int8_t *)table.buf, (const uint8_t *)x.buf, (int8_t *)out.buf, x.len);
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&table);
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    return result;
}

/* ---- max pooling ------------------------------------------------------------------ */

/* Checks the pooling of n maps (h, w, c) by windows (kh, kw) that fit them, at most 256
 * positions (uint8 arg-max): `maps` must hold the maps (map_itemsize bytes per value), `pooled`
 * and `argmax` the n * (h / kh) * (w / kw) * c pooled values (pooled_itemsize, and 1 byte). */
static int check_pooling(Py_ssize_t n, Py_ssize_t h, Py_ssize_t w, Py_ssize_t c, Py_ssize_t kh, Py_ssize_t kw,
                         Py_buffer *maps, Py_ssize_t map_itemsize, Py_buffer *pooled, Py_ssize_t pooled_itemsize,
                         Py_buffer *argmax)
{
    if (n < 1 || h < 1 || w < 1 || c < 1 || kh < 1 || kw < 1 || kh > h || kw > w || kh * kw > 256) {
        PyErr_Format(PyExc_ValueError, "maps (%zd, %zd, %zd, %zd) and window (%zd, %zd) do not make a pooling",
                     n, h, w, c, kh, kw);
        return -1;
    }
    if (h > PY_SSIZE_T_MAX / 4 / w / c / n) {
        PyErr_SetString(PyExc_ValueError, "maps too large");
        return -1;
    }
    Py_ssize_t values = n * (h / kh) * (w / kw) * c;
    if (check_size(maps, n * h * w * c, map_itemsize, "maps") < 0
        || check_size(pooled, values, pooled_itemsize, "pooled") < 0 || check_size(argmax, values, 1, "argmax") < 0)
        return -1;
    return 0;
}

PyDoc_STRVAR(max_pool_doc,
"max_pool(x, n, h, w, c, kh, kw, best, argmax)\n--\n\n"
"Max pooling of int8 maps x laid out (n, h, w, c) with windows (kh, kw), stride = window, no\n"
"padding, floor mode: int8 best and uint8 argmax (the window position di * kw + dj of the\n"
"first maximum), both laid out (n, h // kh, w // kw, c).");

static PyObject *max_pool(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer x, best, argmax;
    Py_ssize_t n, h, w, c, kh, kw;
    if (!PyArg_ParseTuple(args, "O&nnnnnnO&O&", int8_in, &x, &n, &h, &w, &c, &kh, &kw, int8_out, &best,
                          uint8_out, &argmax))
        return NULL;
    int ok = check_pooling(n, h, w, c, kh, kw, &x, 1, &best, 1, &argmax) == 0;
    if (ok) {
        chunks_t rows = row_chunks(n * (h / kh), kh * w * c); /* output rows, by the input they read */
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for schedule(static) if (rows.chunks > 1)
        for (Py_ssize_t chunk = 0; chunk < rows.chunks; chunk++)
            max_pool_rows((const int8_t *)x.buf, (int8_t *)best.buf, (uint8_t *)argmax.buf,
                          chunk_first(&rows, chunk), chunk_end(&rows, chunk), h, w, c, kh, kw);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&best);
    PyBuffer_Release(&argmax);
    return ok ? Py_NewRef(Py_None) : NULL;
}

PyDoc_STRVAR(max_unpool_doc,
"max_unpool(delta, argmax, n, h, w, c, kh, kw, out)\n--\n\n"
"The gradient through max_pool: int32 out laid out (n, h, w, c) gets each window's int32\n"
"delta at the window's argmax and 0 at its other positions; values no window covers (the\n"
"rows and columns past the last whole window) are left as they are.");

static PyObject *max_unpool(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer delta, argmax, out;
    Py_ssize_t n, h, w, c, kh, kw;
    if (!PyArg_ParseTuple(args, "O&O&nnnnnnO&", int32_in, &delta, uint8_in, &argmax, &n, &h, &w, &c, &kh, &kw,
                          int32_out, &out))
        return NULL;
    int ok = check_pooling(n, h, w, c, kh, kw, &out, 4, &delta, 4, &argmax) == 0;
    if (ok) {
        chunks_t rows = row_chunks(n * (h / kh), kh * w * c);
        Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for schedule(static) if (rows.chunks > 1)
        for (Py_ssize_t chunk = 0; chunk < rows.chunks; chunk++)
            max_unpool_rows((const int32_t *)delta.buf, (const uint8_t *)argmax.buf, (int32_t *)out.buf,
                            chunk_first(&rows, chunk), chunk_end(&rows, chunk), h, w, c, kh, kw);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&delta);
    PyBuffer_Release(&argmax);
    PyBuffer_Release(&out);
    return ok ? Py_NewRef(Py_None) : NULL;
}

/* ---- im2col ------------------------------------------------------------------------ */

PyDoc_STRVAR(im2col_doc,
"im2col(x, n, h, w, c, k, pad, out)\n--\n\n"
"The im2col patches of int8 maps x laid out (n, h, w, c), k x k windows, stride 1, pad zeros\n"
"on every side: int8 out of n * ho * wo rows (ho = h + 2 pad - k + 1) of k * k * c values,\n"
"ordered (kernel row, kernel column, channel).");

static PyObject *im2col(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer x, out;
    Py_ssize_t n, h, w, c, k, pad;
    if (!PyArg_ParseTuple(args, "O&nnnnnnO&", int8_in, &x, &n, &h, &w, &c, &k, &pad, int8_out, &out))
        return NULL;
    int ok = 0;
    if (n < 1 || h < 1 || w < 1 || c < 1 || k < 1 || pad < 0 || pad >= k || k > h + 2 * pad || k > w + 2 * pad
        || h > (1 << 20) || w > (1 << 20) || k > 64
        || c > PY_SSIZE_T_MAX / 4096 / (h + 2 * pad) / (w + 2 * pad) / n) {
        PyErr_Format(PyExc_ValueError, "maps (%zd, %zd, %zd, %zd), window %zd and padding %zd do not make patches",
                     n, h, w, c, k, pad);
    } else {
        Py_ssize_t ho = h + 2 * pad - k + 1, wo = w + 2 * pad - k + 1, rows = n * ho * wo;
        if (check_size(&x, n * h * w * c, 1, "x") == 0 && check_size(&out, rows * k * k * c, 1, "out") == 0) {
            chunks_t chunks = row_chunks(rows, k * k * c);
            Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for schedule(static) if (chunks.chunks > 1)
            for (Py_ssize_t chunk = 0; chunk < chunks.chunks; chunk++)
                im2col_rows((const int8_t *)x.buf, (int8_t *)out.buf, chunk_first(&chunks, chunk),
                            chunk_end(&chunks, chunk), h, w, c, k, pad);
            Py_END_ALLOW_THREADS
            ok = 1;
        }
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    return ok ? Py_NewRef(Py_None) : NULL;
}

/* ---- the pair products (sknitro/_pairs.h) ---------------------------------------- */

/* The pair products of each instruction set, fastest first. */
static const pair_kernels_t *const PAIR_KERNELS[] = {&vnni_kernels, &avx2_kernels};
#define N_PAIR_KERNELS ((Py_ssize_t)(sizeof(PAIR_KERNELS) / sizeof(PAIR_KERNELS[0])))

PyDoc_STRVAR(pair_isas_doc,
"pair_isas() -> tuple\n--\n\n"
"The instruction sets of the pair products this CPU runs, fastest first: 'vnni' (AVX-512 F,\n"
"BW, VL and VNNI) and 'avx2'.");

static PyObject *pair_isas(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(args))
{
    PyObject *names = PyTuple_New(0);
    for (Py_ssize_t i = 0; names && i < N_PAIR_KERNELS; i++)
        if (PAIR_KERNELS[i]->supported()) {
            PyObject *name = PyUnicode_FromString(PAIR_KERNELS[i]->name);
            if (!name || _PyTuple_Resize(&names, PyTuple_GET_SIZE(names) + 1) < 0) {
                Py_XDECREF(name);
                Py_XDECREF(names);
                return NULL;
            }
            PyTuple_SET_ITEM(names, PyTuple_GET_SIZE(names) - 1, name);
        }
    return names;
}

/* The pair kernels named `isa`, which this CPU must run; NULL with an exception otherwise. */
static const pair_kernels_t *pair_kernels(const char *isa)
{
    for (Py_ssize_t i = 0; i < N_PAIR_KERNELS; i++)
        if (strcmp(PAIR_KERNELS[i]->name, isa) == 0) {
            if (PAIR_KERNELS[i]->supported())
                return PAIR_KERNELS[i];
            PyErr_Format(PyExc_RuntimeError, "this CPU does not run the '%s' pair products", isa);
            return NULL;
        }
    PyErr_Format(PyExc_ValueError, "isa must be 'vnni' or 'avx2', got '%s'", isa);
    return NULL;
}

/* A (rows, cols) matrix of `itemsize` bytes per value: shape not empty, byte size without
 * overflow, and the buffer of exactly that size. */
static int check_values(Py_buffer *view, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t itemsize, const char *name)
{
    if (rows < 1 || cols < 1) {
        PyErr_Format(PyExc_ValueError, "%s: shape (%zd, %zd) is empty", name, rows, cols);
        return -1;
    }
    if (rows > PY_SSIZE_T_MAX / itemsize / cols) {
        PyErr_Format(PyExc_ValueError, "%s: shape (%zd, %zd) is too large", name, rows, cols);
        return -1;
    }
    return check_size(view, rows * cols, itemsize, name);
}

/* A matrix of 4-byte values: int32, or a pair of int16. */
static int check_matrix(Py_buffer *view, Py_ssize_t rows, Py_ssize_t cols, const char *name)
{
    return check_values(view, rows, cols, 4, name);
}

PyDoc_STRVAR(row_l1_doc,
"row_l1(x, cols) -> int\n--\n\n"
"The largest row L1 norm max_i sum_k |x[i, k]| of int8 x seen as rows of cols.");

static PyObject *row_l1(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer x;
    Py_ssize_t cols;
    if (!PyArg_ParseTuple(args, "O&n", int8_in, &x, &cols))
        return NULL;
    PyObject *result = NULL;
    if (check_rows(x.len, cols, "x") == 0) {
        int64_t largest;
        Py_BEGIN_ALLOW_THREADS
        largest = pairs_row_l1((const int8_t *)x.buf, x.len / cols, cols);
        Py_END_ALLOW_THREADS
        result = PyLong_FromLongLong(largest);
    }
    PyBuffer_Release(&x);
    return result;
}

PyDoc_STRVAR(split_units_doc,
"split_units(a, units)\n--\n\n"
"units[i] = (a & 255, a >> 8) as a pair of int16 for int32 a with |a| < 2**23.");

static PyObject *split_units(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer a, units;
    if (!PyArg_ParseTuple(args, "O&O&", int32_in, &a, int32_out, &units))
        return NULL;
    PyObject *result = NULL;
    if (check_size(&units, a.len / 4, 4, "units") == 0 && check_size(&a, units.len / 4, 4, "a") == 0) {
        Py_BEGIN_ALLOW_THREADS
        pairs_split_units((const int32_t *)a.buf, (int32_t *)units.buf, a.len / 4);
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&a);
    PyBuffer_Release(&units);
    return result;
}

/* An outlier list over two int32 buffers of the same capacity. */
static int get_outliers(Py_buffer *index, Py_buffer *residual, outliers_t *outliers)
{
    if (index->len != residual->len || index->len % 4 != 0) {
        PyErr_SetString(PyExc_ValueError, "index and residual: int32 buffers of one size expected");
        return -1;
    }
    outliers->index = (int32_t *)index->buf;
    outliers->residual = (int32_t *)residual->buf;
    outliers->capacity = index->len / 4;
    outliers->count = 0;
    return 0;
}

/* The first `count` outliers index a matrix of `size` values, ascending (the product's
   kernel groups them by row through these indices). */
static int check_outlier_indices(const outliers_t *outliers, Py_ssize_t count, Py_ssize_t size)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        int32_t index = outliers->index[i];
        if (index < 0 || index >= size || (i > 0 && index <= outliers->index[i - 1])) {
            PyErr_Format(PyExc_ValueError, "outlier index %d at %zd is outside [0, %zd) or not ascending",
                         (int)index, i, size);
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(pair_form_doc,
"pair_form(a, cols, pairs, index, residual) -> int\n--\n\n"
"pairs = a saturated to int16 for int32 a of cols columns, and its outliers (the flat index\n"
"of each value past int16, ascending, and what saturation cut off) written to the int32\n"
"buffers index and residual; returns their count, which may exceed the buffers' capacity\n"
"(then the lists are incomplete).");

static PyObject *pair_form(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer a, pairs, index, residual;
    Py_ssize_t cols;
    if (!PyArg_ParseTuple(args, "O&nO&O&O&", int32_in, &a, &cols, int16_out, &pairs, int32_out, &index,
                          int32_out, &residual))
        return NULL;
    PyObject *result = NULL;
    outliers_t outliers;
    if (check_size(&a, a.len / 4, 4, "a") == 0 && check_rows(a.len / 4, cols, "a") == 0
        && check_size(&pairs, a.len / 4, 2, "pairs") == 0 && get_outliers(&index, &residual, &outliers) == 0) {
        Py_BEGIN_ALLOW_THREADS
        pairs_pair_form((const int32_t *)a.buf, (int16_t *)pairs.buf, a.len / 4 / cols, cols, &outliers);
        Py_END_ALLOW_THREADS
        result = PyLong_FromSsize_t(outliers.count);
    }
    PyBuffer_Release(&a);
    PyBuffer_Release(&pairs);
    PyBuffer_Release(&index);
    PyBuffer_Release(&residual);
    return result;
}

PyDoc_STRVAR(units_product_doc,
"units_product(isa, x, w_units, m, n, k, chunk, z)\n--\n\n"
"z = x w^T saturated to int32, (m, n), from int8 x (m, k) and the split units of w (n, k).\n"
"Exact (before saturation) when every partial sum over chunk consecutive k fits int32,\n"
"which the caller proves; the chunks add up in int64.");

static PyObject *units_product(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer x, w, z;
    Py_ssize_t m, n, k, chunk;
    const char *isa;
    if (!PyArg_ParseTuple(args, "sO&O&nnnnO&", &isa, int8_in, &x, int32_in, &w, &m, &n, &k, &chunk, int32_out, &z))
        return NULL;
    PyObject *result = NULL;
    const pair_kernels_t *kernels = pair_kernels(isa);
    if (kernels && check_matrix(&w, n, k, "w_units") == 0 && check_values(&x, m, k, 1, "x") == 0
        && check_matrix(&z, m, n, "z") == 0) {
        int status;
        Py_BEGIN_ALLOW_THREADS
        status = kernels->product((const int8_t *)x.buf, (const int32_t *)w.buf, (int32_t *)z.buf, m, n, k,
                                  chunk < 1 ? k : chunk, 0, NULL);
        Py_END_ALLOW_THREADS
        result = status < 0 ? PyErr_NoMemory() : Py_NewRef(Py_None);
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&w);
    PyBuffer_Release(&z);
    return result;
}

PyDoc_STRVAR(pairs_product_doc,
"pairs_product(isa, x, w_pairs, index, residual, count, m, n, k, chunk, z)\n--\n\n"
"z = x w^T saturated to int32, (m, n), from int8 x (m, k) and the pair form of\n"
"w (n, k) with its first count outliers (index, residual; see pair_form); k even. Exact\n"
"(before saturation) when every partial sum over chunk consecutive pairs of k fits int32,\n"
"which the caller proves; the chunks and the outliers add up in int64.");

static PyObject *pairs_product(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer w_pairs, x, index, residual, z;
    Py_ssize_t count, m, n, k, chunk;
    const char *isa;
    const pair_kernels_t *kernels;
    if (!PyArg_ParseTuple(args, "sO&O&O&O&nnnnnO&", &isa, int8_in, &x, int16_in, &w_pairs, int32_in, &index,
                          int32_in, &residual, &count, &m, &n, &k, &chunk, int32_out, &z))
        return NULL;
    PyObject *result = NULL;
    outliers_t outliers;
    if (k % 2 != 0) {
        PyErr_Format(PyExc_ValueError, "k must be even, got %zd", k);
    } else if ((kernels = pair_kernels(isa)) != NULL && check_matrix(&w_pairs, n, k / 2, "w_pairs") == 0
               && check_values(&x, m, k, 1, "x") == 0
               && check_matrix(&z, m, n, "z") == 0 && get_outliers(&index, &residual, &outliers) == 0) {
        if (count < 0 || count > outliers.capacity) {
            PyErr_Format(PyExc_ValueError, "count must be in [0, %zd], got %zd", outliers.capacity, count);
        } else if (check_outlier_indices(&outliers, count, n * k) == 0) {
            int status;
            outliers.count = count;
            Py_BEGIN_ALLOW_THREADS
            status = kernels->product((const int8_t *)x.buf, (const int32_t *)w_pairs.buf, (int32_t *)z.buf, m,
                                      n, k / 2, chunk < 1 ? k / 2 : chunk, 1, &outliers);
            Py_END_ALLOW_THREADS
            result = status < 0 ? PyErr_NoMemory() : Py_NewRef(Py_None);
        }
    }
    PyBuffer_Release(&w_pairs);
    PyBuffer_Release(&x);
    PyBuffer_Release(&index);
    PyBuffer_Release(&residual);
    PyBuffer_Release(&z);
    return result;
}

PyDoc_STRVAR(units_sgd_update_doc,
"units_sgd_update(isa, delta, x, w, mirror, batch, n, k, divisor, decay_inv, index=None,\n"
"                 residual=None)\n"
"--\n\n"
"IntegerSGD with G = delta^T x on the pair products of isa ('vnni' or 'avx2'): for int32\n"
"delta (batch, n) with\n"
"|delta| < 2**23, int8 x (batch, k) and int32 w (n, k), in place\n"
"w -= tdiv(G, divisor) + (tdiv(w, decay_inv) if decay_inv else 0). Writes to mirror the new\n"
"w's split units (int32), or, given the outlier buffers index and residual, its pair form\n"
"(int16) and outliers (see pair_form). Returns (max|w|, outlier count). The caller proves\n"
"|G| < 2**31 and that the new w fits int32.");

static PyObject *units_sgd_update(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer delta, x, w, mirror, index = {0}, residual = {0};
    Py_ssize_t batch, n, k;
    long long divisor, decay_inv;
    const char *isa;
    const pair_kernels_t *kernels;
    if (!PyArg_ParseTuple(args, "sO&O&O&O&nnnLL|O&O&", &isa, int32_in, &delta, int8_in, &x, int32_out, &w,
                          int32_or_int16_out, &mirror, &batch, &n, &k, &divisor, &decay_inv,
                          int32_out_or_none, &index, int32_out_or_none, &residual))
        return NULL;
    PyObject *result = NULL;
    int pairs = index.obj != NULL;
    outliers_t outliers = {0};
    if (pairs != (residual.obj != NULL) || mirror.itemsize != (pairs ? 2 : 4)) {
        PyErr_SetString(PyExc_ValueError, "an int16 mirror goes with index and residual, an int32 one without");
    } else if ((!pairs || get_outliers(&index, &residual, &outliers) == 0) && (kernels = pair_kernels(isa)) != NULL
               && check_matrix(&delta, batch, n, "delta") == 0 && check_values(&x, batch, k, 1, "x") == 0
               && check_matrix(&w, n, k, "w") == 0 && check_size(&mirror, n * k, pairs ? 2 : 4, "mirror") == 0
               && check_divisor(divisor, "divisor") == 0
               && (decay_inv == 0 || check_divisor(decay_inv, "decay_inv") == 0)) {
        divisor_t lr = make_divisor(divisor), decay = make_divisor(decay_inv > 0 ? decay_inv : 1);
        int64_t largest;
        Py_BEGIN_ALLOW_THREADS
        largest = kernels->sgd_update((const int32_t *)delta.buf, (const int8_t *)x.buf, (int32_t *)w.buf,
                                  pairs ? NULL : (int32_t *)mirror.buf, pairs ? (int16_t *)mirror.buf : NULL,
                                  &outliers, n, batch, k, lr, decay_inv > 0, decay);
        Py_END_ALLOW_THREADS
        result = largest < 0 ? PyErr_NoMemory() : Py_BuildValue("Ln", (long long)largest, outliers.count);
    }
    PyBuffer_Release(&index);
    PyBuffer_Release(&residual);
    PyBuffer_Release(&delta);
    PyBuffer_Release(&x);
    PyBuffer_Release(&w);
    PyBuffer_Release(&mirror);
    return result;
}

static PyMethodDef methods[] = {
    {"lookup_uint8", lookup_uint8, METH_VARARGS, lookup_uint8_doc},
    {"max_pool", max_pool, METH_VARARGS, max_pool_doc},
    {"max_unpool", max_unpool, METH_VARARGS, max_unpool_doc},
    {"im2col", im2col, METH_VARARGS, im2col_doc},
    {"head_step", head_step, METH_VARARGS, head_step_doc},
    {"scale_to_int8", scale_to_int8, METH_VARARGS, scale_to_int8_doc},
    {"activation_backward", activation_backward, METH_VARARGS, activation_backward_doc},
    {"sgd_update", sgd_update, METH_VARARGS, sgd_update_doc},
    {"pair_isas", pair_isas, METH_NOARGS, pair_isas_doc},
    {"row_l1", row_l1, METH_VARARGS, row_l1_doc},
    {"split_units", split_units, METH_VARARGS, split_units_doc},
    {"pair_form", pair_form, METH_VARARGS, pair_form_doc},
    {"units_product", units_product, METH_VARARGS, units_product_doc},
    {"pairs_product", pairs_product, METH_VARARGS, pairs_product_doc},
    {"units_sgd_update", units_sgd_update, METH_VARARGS, units_sgd_update_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fused",
    "The compiled integer kernels of the training step (see sknitro/nn/kernels.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fused(void)
{
    return PyModule_Create(&module);
}
