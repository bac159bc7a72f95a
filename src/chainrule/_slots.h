/* What the C extensions that read engine.Value's slots share: _graph.c and compiler/_layout.c.

   A Value keeps its parts in __slots__, so each part sits at a fixed offset inside the object,
   which Python records in the slot's descriptor. setup(Value) finds the offsets once, and the
   loops then read a part with SLOT(value, offset), without a Python attribute look-up.

   setup serves one Value class per process: the first it is given. A second copy of engine.py
   (a module run twice, as importing a file by its path can do) has its own Value class, whose
   objects these loops must never make or read as the first one's; so setup says no to it
   (claim_value_type returns 0), and that copy runs on its Python loops. Calling setup again
   with the same class is harmless: the offsets are the same.
*/
#ifndef CHAINRULE_SLOTS_H
#define CHAINRULE_SLOTS_H

#include <Python.h>
#include <structmember.h>

/* The part of `value` at offset `at`: a borrowed reference, NULL if the slot is empty. */
#define SLOT(value, at) (*(PyObject **)((char *)(value) + (at)))

/* The offset of the slot `name` of `type`, into *at; -1 and a TypeError naming `where` (the
   setup function) when `type` has no such slot. */
static int slot_offset(const char *where, PyTypeObject *type, const char *name, Py_ssize_t *at) {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *dict = PyType_GetDict(type); /* a built-in type's tp_dict is NULL from Python 3.12 */
#else
    PyObject *dict = Py_XNewRef(type->tp_dict);
#endif
    PyObject *descriptor = dict == NULL ? NULL : PyDict_GetItemString(dict, name); /* str keys */
    int found = descriptor != NULL && Py_IS_TYPE(descriptor, &PyMemberDescr_Type);
    if (found)
        *at = ((PyMemberDescrObject *)descriptor)->d_member->offset;
    Py_XDECREF(dict); /* the type keeps the descriptor alive */
    if (!found) {
        PyErr_Format(PyExc_TypeError, "%s: %s.%s is not a slot", where, type->tp_name, name);
        return -1;
    }
    return 0;
}

/* Whether these loops may serve `type`: 1 when *served is NULL (then it becomes `type`, with a
   reference of its own) or already `type`; 0 when they serve another class. */
static int claim_value_type(PyTypeObject **served, PyTypeObject *type) {
    if (*served != NULL)
        return *served == type;
    *served = (PyTypeObject *)Py_NewRef(type);
    return 1;
}

#endif
