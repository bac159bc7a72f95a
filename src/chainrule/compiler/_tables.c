/* The C backend's table program (table.c, with the kernels it includes), built once by pip
   when chainrule is installed, so that any tape replays in C without a C compiler at run
   time (the default backend, "auto", and the numpy backend's thin tapes). Below, its
   forward() and backward() as Python functions on numpy arrays: no ctypes on the way. Each
   takes the tape's arrays as buffers, checks their kinds and sizes, and runs with the GIL
   released, as a ctypes call does. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "table.c"

/* A C-contiguous buffer of `n` items of `itemsize` bytes (n < 0: any number), or -1 with an error */
static int get_buffer(PyObject *o, Py_buffer *view, Py_ssize_t itemsize, Py_ssize_t n, int writable) {
    if (PyObject_GetBuffer(o, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (view->len % itemsize != 0 || (n >= 0 && view->len != n * itemsize)) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "_tables: an array of the wrong size");
        return -1;
    }
    return 0;
}

/* forward(data, idx, table, first): 0, or 1 when numpy must redo the call */
static PyObject *py_forward(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer d, idx, t;
    long first;
    if (nargs != 4 || (first = PyLong_AsLong(args[3])) == -1) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "_tables.forward(data, idx, table, first)");
        return NULL;
    }
    if (get_buffer(args[0], &d, 8, -1, 1) < 0) return NULL;
    if (get_buffer(args[1], &idx, 4, -1, 0) < 0) { PyBuffer_Release(&d); return NULL; }
    if (get_buffer(args[2], &t, 8 * ROW, -1, 0) < 0) {
        PyBuffer_Release(&d);
        PyBuffer_Release(&idx);
        return NULL;
    }
    int bad;
    Py_BEGIN_ALLOW_THREADS
    bad = forward(d.buf, idx.buf, t.buf, t.len / (8 * ROW), first, d.len / 8);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&d);
    PyBuffer_Release(&idx);
    PyBuffer_Release(&t);
    return PyLong_FromLong(bad);
}

/* backward(data, grad, idx, needed, table, first): needed is None or one byte a node */
static PyObject *py_backward(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer d, gr, idx, needed = {0}, t;
    long first;
    if (nargs != 6 || (first = PyLong_AsLong(args[5])) == -1) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "_tables.backward(data, grad, idx, needed, table, first)");
        return NULL;
    }
    if (get_buffer(args[0], &d, 8, -1, 0) < 0) return NULL;
    Py_ssize_t size = d.len / 8;
    int got = 1;  /* how many buffers are held */
    got += get_buffer(args[1], &gr, 8, size, 1) == 0;
    if (got == 2) got += get_buffer(args[2], &idx, 4, -1, 0) == 0;
    if (got == 3) got += args[3] == Py_None || get_buffer(args[3], &needed, 1, size, 0) == 0;
    if (got == 4) got += get_buffer(args[4], &t, 8 * ROW, -1, 0) == 0;
    int bad = 0;
    if (got == 5) {
        Py_BEGIN_ALLOW_THREADS
        bad = backward(d.buf, gr.buf, idx.buf, needed.buf, t.buf, t.len / (8 * ROW), first, size);
        Py_END_ALLOW_THREADS
    }
    Py_buffer *held[] = {&d, &gr, &idx, &needed, &t};
    for (int i = 0; i < got; i++)
        if (held[i]->obj != NULL) PyBuffer_Release(held[i]);
    return got == 5 ? PyLong_FromLong(bad) : NULL;
}

/* A C-contiguous buffer of float64 numbers (numpy's "d"), or -1 with an error: what is copied
   from or added into, number by number, must not be an array of another kind */
static int get_doubles(PyObject *o, Py_buffer *view, int writable) {
    if (PyObject_GetBuffer(o, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (f[0] == '=' || f[0] == '@' || (f[0] == '<' && PY_LITTLE_ENDIAN)) f++;
    if (strcmp(f, "d") != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "_tables: an array that is not of float64 numbers");
        return -1;
    }
    return 0;
}

/* replay(data, pieces, idx, table, first): the numbers of the buffers in the tuple `pieces`
   copied one after the other to the start of data (a compiled call's inputs, constants and
   parameters), then forward(): one call where Python would make one a piece */
static PyObject *py_replay(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_tables.replay(data, pieces, idx, table, first)");
        return NULL;
    }
    Py_buffer d, piece;
    if (get_buffer(args[0], &d, 8, -1, 1) < 0) return NULL;
    char *at = d.buf;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args[1]); i++) {
        if (get_doubles(PyTuple_GET_ITEM(args[1], i), &piece, 0) < 0) break;
        if (piece.len > d.len - (at - (char *)d.buf))
            PyErr_SetString(PyExc_ValueError, "_tables.replay: the pieces are longer than data");
        else
            memcpy(at, piece.buf, piece.len), at += piece.len;
        PyBuffer_Release(&piece);
        if (PyErr_Occurred()) break;
    }
    PyBuffer_Release(&d);
    if (PyErr_Occurred()) return NULL;
    PyObject *rest[4] = {args[0], args[2], args[3], args[4]};
    return py_forward(module, rest, 4);
}

static PyMethodDef methods[] = {
    {"forward", (PyCFunction)(void (*)(void))py_forward, METH_FASTCALL, "forward(data, idx, table, first)"},
    {"backward", (PyCFunction)(void (*)(void))py_backward, METH_FASTCALL,
     "backward(data, grad, idx, needed, table, first)"},
    {"replay", (PyCFunction)(void (*)(void))py_replay, METH_FASTCALL,
     "replay(data, pieces, idx, table, first)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tables", "the C backend's table-walking program", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__tables(void) { return PyModule_Create(&module); }
