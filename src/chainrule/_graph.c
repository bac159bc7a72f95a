/* The engine's hottest loops in C, for speed only: engine.py is the reference.

   chainrule works without this file. When it is built (pip builds it if it finds a C compiler),
   engine.py swaps in these versions of three of its own functions, each doing exactly what the
   Python one does, number for number:

   node(data, rule, children, local)   engine._node: a computed Value of the fast ops.
   depth_first(roots)                  engine._depth_first: every node after its children.
   propagate_numbers(order, seed, add) engine._propagate_numbers: the first-order backward loop.

   and loops over many parameters at once, for chainrule.compile, the optimizers and zero_grad:
   read_data and read_grads (into a float64 array), write_data, add_to_grads and fill_grads.

   engine.Parameter keeps its number and gradient in its group's flat arrays, not in Value's
   slots: parameter_data, parameter_grad and their setters are its .data and .grad, and every
   loop here reads and writes a Parameter's entries there (setup_parameters tells where).

   For chainrule.compile's trace (compiler/tracing.py), so that a traced function runs on the
   fast ops as eager code does: record(nodes, constants) makes node() note, in this thread,
   every node and constant it makes; watched(...) is the check on Value.data and Value.grad
   that the trace puts in place of the plain slots, as a C descriptor.

   The gain is partly the loops and mostly the garbage collector. Python's cyclic collector
   walks every object that can hold others, again and again while a graph grows: that was three
   quarters of the time of a GPT step on scalars. A graph made by the fast ops cannot hold a
   cycle (a node only points at older nodes), so node() leaves the new Value, and its tuples,
   outside the collector's watch. The one way the engine itself makes a cycle,
   backward(create_graph=True) (a gradient's graph can point back at the node), first hands the
   graph back to the collector with watch(). Reference counting frees nodes as before.

   Anything unusual (a children attribute that is not a tuple of Values, say) makes a function
   return None, and engine.py then runs its Python version, which reports it as it always has.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000 /* for running_code(), below */
#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE
#define READ_RUNNING_CODE 1
#endif

static PyTypeObject *value_type;   /* engine.Value */
static PyObject *child_gradients;  /* engine._child_gradients, for nodes without stored local gradients */
static PyObject *zero, *empty_label;
static Py_ssize_t at_data, at_grad, at_label, at_children, at_rule, at_local, at_pending;

/* A Value's slots, by the offsets Python gave them. */
#define SLOT(value, at) (*(PyObject **)((char *)(value) + (at)))

static void set_slot(PyObject *value, Py_ssize_t at, PyObject *new_reference) {
    PyObject *old = SLOT(value, at);
    SLOT(value, at) = new_reference;
    Py_XDECREF(old);
}

static int is_value(PyObject *object) { return PyObject_TypeCheck(object, value_type); }

/* engine.Parameter and engine.Parameters (its group), once setup_parameters has run. */
static PyTypeObject *parameter_type, *group_type;
static Py_ssize_t at_place, at_group_data, at_group_grad, at_group_objects;
static PyObject *set_data_in_python, *set_grad_in_python; /* engine's setters, for anything but a float */

static int is_parameter(PyObject *object) {
    return parameter_type != NULL && PyObject_TypeCheck(object, parameter_type);
}

/* The address of Parameter p's number (at = at_data, the slot a plain Value keeps it in) or
   gradient (at_grad) in its group's array, or NULL with an error set when p's place is not
   (a group, an index in it). The address stays good until Python code runs. */
static double *entry(PyObject *p, Py_ssize_t at) {
    if (!is_parameter(p)) {
        PyErr_SetString(PyExc_TypeError, "_graph: expected a Parameter");
        return NULL;
    }
    PyObject *place = SLOT(p, at_place);
    if (place == NULL || !PyTuple_CheckExact(place) || PyTuple_GET_SIZE(place) != 2 ||
        !PyObject_TypeCheck(PyTuple_GET_ITEM(place, 0), group_type) || !PyLong_CheckExact(PyTuple_GET_ITEM(place, 1))) {
        PyErr_SetString(PyExc_TypeError, "a Parameter's place must be (its Parameters, an index)");
        return NULL;
    }
    PyObject *numbers = SLOT(PyTuple_GET_ITEM(place, 0), at == at_data ? at_group_data : at_group_grad);
    Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(place, 1));
    if (i == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        i = -1;  /* too large for an index: reported as outside the array, below */
    }
    Py_buffer view;
    if (numbers == NULL || PyObject_GetBuffer(numbers, &view, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "a Parameters group's numbers must be a writable array('d')");
        return NULL;
    }
    int fits = view.format != NULL && strcmp(view.format, "d") == 0 && i >= 0 && i < view.len / (Py_ssize_t)sizeof(double);
    double *address = (double *)view.buf + i;
    PyBuffer_Release(&view);
    if (!fits) {
        PyErr_SetString(PyExc_IndexError, "a Parameter's index is outside its group's array('d')");
        return NULL;
    }
    return address;
}

/* The gradient object of Parameter p (None or a Value), as a borrowed reference, or NULL when
   its gradient is the number in the array. */
static PyObject *grad_object(PyObject *p) {
    PyObject *group = PyTuple_GET_ITEM(SLOT(p, at_place), 0), *objects = SLOT(group, at_group_objects);
    if (objects == NULL || !PyDict_CheckExact(objects) || PyDict_GET_SIZE(objects) == 0)
        return NULL;
    return PyDict_GetItem(objects, PyTuple_GET_ITEM(SLOT(p, at_place), 1));
}

/* p.data and p.grad of a Parameter, as new references. The float last made for p.data is kept
   in Value's data slot (a Parameter has no other use for it) and given out again while the
   entry holds the same number, bit for bit: every node that reads a weight would otherwise
   hold a float of its own, a third more memory in an MLP's graph. */
static PyObject *parameter_data(PyObject *module, PyObject *p) {
    double *at = entry(p, at_data);
    if (at == NULL)
        return NULL;
    PyObject *made = SLOT(p, at_data);
    if (made != NULL && PyFloat_CheckExact(made) && memcmp(&((PyFloatObject *)made)->ob_fval, at, sizeof(double)) == 0)
        return Py_NewRef(made);
    made = PyFloat_FromDouble(*at);
    if (made != NULL)
        set_slot(p, at_data, Py_NewRef(made));
    return made;
}

static PyObject *parameter_grad(PyObject *module, PyObject *p) {
    double *at = entry(p, at_grad);
    if (at == NULL)
        return NULL;
    PyObject *object = grad_object(p);
    return object != NULL ? Py_NewRef(object) : PyFloat_FromDouble(*at);
}

/* p.data = x and p.grad = g: a float is stored here in one step; anything else goes to
   engine's setter, which converts or refuses it. */
static PyObject *set_parameter_data(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || parameter_type == NULL) {
        PyErr_SetString(PyExc_TypeError, "_graph.set_parameter_data(parameter, x)");
        return NULL;
    }
    if (!PyFloat_CheckExact(args[1]))
        return PyObject_Vectorcall(set_data_in_python, args, 2, NULL);
    double *at = entry(args[0], at_data);
    if (at == NULL)
        return NULL;
    *at = PyFloat_AS_DOUBLE(args[1]);
    Py_RETURN_NONE;
}

static PyObject *set_parameter_grad(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || parameter_type == NULL) {
        PyErr_SetString(PyExc_TypeError, "_graph.set_parameter_grad(parameter, g)");
        return NULL;
    }
    if (!PyFloat_CheckExact(args[1]))
        return PyObject_Vectorcall(set_grad_in_python, args, 2, NULL);
    double *at = entry(args[0], at_grad);
    if (at == NULL)
        return NULL;
    if (grad_object(args[0]) != NULL)  /* it replaces an object: engine's setter drops that */
        return PyObject_Vectorcall(set_grad_in_python, args, 2, NULL);
    *at = PyFloat_AS_DOUBLE(args[1]);
    Py_RETURN_NONE;
}

/* Parameter.data and Parameter.grad themselves: a descriptor that reads and writes the entry
   with the functions above, as a property over them would, without its Python-level call. */
typedef struct {
    PyObject_HEAD
    int grad; /* 0: .data, 1: .grad */
} Number;

static PyObject *number_get(PyObject *self, PyObject *p, PyObject *type) {
    if (p == NULL)
        return Py_NewRef(self);  /* read from the class */
    return ((Number *)self)->grad ? parameter_grad(NULL, p) : parameter_data(NULL, p);
}

static int number_set(PyObject *self, PyObject *p, PyObject *x) {
    if (x == NULL) {
        PyErr_SetString(PyExc_AttributeError, "a Parameter's data and grad cannot be deleted");
        return -1;
    }
    PyObject *args[2] = {p, x};
    PyObject *done = ((Number *)self)->grad ? set_parameter_grad(NULL, args, 2) : set_parameter_data(NULL, args, 2);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

static PyTypeObject number_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "chainrule._graph.number",
    .tp_basicsize = sizeof(Number),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A Parameter's data or grad: its entry in its group's array",
    .tp_descr_get = number_get,
    .tp_descr_set = number_set,
};

/* number(grad): the descriptor for .data (grad False) or .grad (grad True). */
static PyObject *number(PyObject *module, PyObject *grad) {
    int which = PyObject_IsTrue(grad);
    if (which < 0)
        return NULL;
    Number *made = PyObject_New(Number, &number_type);
    if (made != NULL)
        made->grad = which;
    return (PyObject *)made;
}

/* engine._read_data: a Value's number, from its slot or, for a Parameter, its group's array. */
static PyObject *data_of(PyObject *module, PyObject *value) {
    if (is_parameter(value))
        return parameter_data(module, value);
    PyObject *data = is_value(value) ? SLOT(value, at_data) : NULL;
    if (data == NULL)
        return PyObject_GetAttrString(value, "data");  /* which raises the usual error */
    return Py_NewRef(data);
}

/* Release the references in an array of n (some may be NULL), and free it. */
static void release_all(PyObject **objects, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        Py_XDECREF(objects[i]);
    PyMem_Free(objects);
}

/* Every function but setup() needs engine.Value's layout first. */
#define NEEDS_SETUP(result)                                                              \
    if (value_type == NULL) {                                                            \
        PyErr_SetString(PyExc_RuntimeError, "_graph: call setup(Value, child_gradients) first"); \
        return result;                                                                   \
    }

static int slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *at) {
    PyObject *descriptor = PyDict_GetItemString(type->tp_dict, name);
    if (descriptor == NULL || !Py_IS_TYPE(descriptor, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "_graph.setup: %s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    *at = ((PyMemberDescrObject *)descriptor)->d_member->offset;
    return 0;
}

static PyObject *setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyType_Check(args[0]) || !PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_graph.setup(Value, child_gradients)");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)args[0];
    if (slot_offset(type, "data", &at_data) || slot_offset(type, "grad", &at_grad) ||
        slot_offset(type, "label", &at_label) || slot_offset(type, "children", &at_children) ||
        slot_offset(type, "_rule", &at_rule) || slot_offset(type, "_local", &at_local) ||
        slot_offset(type, "_pending", &at_pending))
        return NULL;
    Py_XSETREF(value_type, (PyTypeObject *)Py_NewRef(type));
    Py_XSETREF(child_gradients, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

static PyObject *setup_parameters(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyType_Check(args[0]) || !PyType_Check(args[1]) || !PyCallable_Check(args[2]) ||
        !PyCallable_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "_graph.setup_parameters(Parameter, Parameters, set_data, set_grad)");
        return NULL;
    }
    NEEDS_SETUP(NULL)
    PyTypeObject *parameter = (PyTypeObject *)args[0], *group = (PyTypeObject *)args[1];
    if (!PyType_IsSubtype(parameter, value_type) || slot_offset(parameter, "_at", &at_place) ||
        slot_offset(group, "_data", &at_group_data) || slot_offset(group, "_grad", &at_group_grad) ||
        slot_offset(group, "grad_objects", &at_group_objects))
        return PyErr_Occurred() ? NULL : (PyErr_SetString(PyExc_TypeError, "Parameter must be a Value"), NULL);
    Py_XSETREF(parameter_type, (PyTypeObject *)Py_NewRef(parameter));
    Py_XSETREF(group_type, (PyTypeObject *)Py_NewRef(group));
    Py_XSETREF(set_data_in_python, Py_NewRef(args[2]));
    Py_XSETREF(set_grad_in_python, Py_NewRef(args[3]));
    Py_RETURN_NONE;
}

static void unwatch(PyObject *object) {
    if (PyTuple_CheckExact(object) && PyObject_GC_IsTracked(object))
        PyObject_GC_UnTrack(object);
}

/* While chainrule.compile traces in this thread, the list and the set that node() adds what it
   makes to: a computed node to the list, a constant (a leaf, rule None) to the set. A trace
   runs in one thread from start to end, so a thread-local is the right scope. */
static _Thread_local PyObject *recorded_nodes, *recorded_constants;

/* While some thread traces, the set of the ids of the Values that threads not tracing make
   (engine._made_in_other_threads): a trace cannot record them, so it refuses to use one. */
static PyObject *untraced_ids;

static int note_untraced(PyObject *value) {
    PyObject *id = PyLong_FromVoidPtr(value);
    if (id == NULL)
        return -1;
    int failed = PySet_Add(untraced_ids, id);
    Py_DECREF(id);
    return failed;
}

/* engine._node: a Value with these parts, grad 0.0 and no label, unwatched by the collector. */
static PyObject *node(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "_graph.node(data, rule, children, local)");
        return NULL;
    }
    NEEDS_SETUP(NULL)
    PyObject *value = value_type->tp_alloc(value_type, 0);
    if (value == NULL)
        return NULL;
    PyObject_GC_UnTrack(value);
    SLOT(value, at_data) = Py_NewRef(args[0]);
    SLOT(value, at_grad) = Py_NewRef(zero);
    SLOT(value, at_label) = Py_NewRef(empty_label);
    SLOT(value, at_rule) = Py_NewRef(args[1]);
    SLOT(value, at_children) = Py_NewRef(args[2]);
    SLOT(value, at_local) = Py_NewRef(args[3]);
    unwatch(args[2]);
    unwatch(args[3]);
    int failed = recorded_nodes != NULL
                     ? (args[1] == Py_None ? PySet_Add(recorded_constants, value)
                                           : PyList_Append(recorded_nodes, value))
                     : untraced_ids != NULL && note_untraced(value);
    if (failed) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

/* watch_other_threads(ids): node() adds the id of every Value it makes in a thread that is not
   tracing to the set ids; watch_other_threads(None) stops. */
static PyObject *watch_other_threads(PyObject *module, PyObject *ids) {
    if (ids != Py_None && !PySet_CheckExact(ids)) {
        PyErr_SetString(PyExc_TypeError, "_graph.watch_other_threads(ids: set), or (None)");
        return NULL;
    }
    Py_XSETREF(untraced_ids, ids == Py_None ? NULL : Py_NewRef(ids));
    Py_RETURN_NONE;
}

/* record(nodes, constants) starts recording in this thread; record(None, None) stops it. Either
   returns the pair recorded into before, so that a caller can put it back. */
static PyObject *record(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    int stop = nargs == 2 && args[0] == Py_None && args[1] == Py_None;
    if (nargs != 2 || !(stop || (PyList_CheckExact(args[0]) && PySet_CheckExact(args[1])))) {
        PyErr_SetString(PyExc_TypeError, "_graph.record(nodes: list, constants: set), or (None, None)");
        return NULL;
    }
    PyObject *before = recorded_nodes == NULL ? Py_BuildValue("(OO)", Py_None, Py_None)
                                              : PyTuple_Pack(2, recorded_nodes, recorded_constants);
    if (before == NULL)
        return NULL;
    Py_CLEAR(recorded_nodes);
    Py_CLEAR(recorded_constants);
    if (!stop) {
        recorded_nodes = Py_NewRef(args[0]);
        recorded_constants = Py_NewRef(args[1]);
    }
    return before;
}

/* watched(slot, name, quiet, touched): a descriptor over one of Value's slots (data or grad)
   that reads and writes it as the slot does, but first shows every read and write to
   touched(value, frame, name, writing), except those by the code objects in the tuple quiet.
   tracing._watched is the same in Python; tracing.py says what is shown and why. */
typedef struct {
    PyObject_HEAD
    PyObject *slot, *name, *quiet, *touched;
    PyObject *last_quiet; /* the entry of quiet that matched last (a borrowed reference): checked first */
} Watched;

/* The code object of the Python function running now (the one reading or writing), or NULL.
   PyEval_GetFrame() would tell too, but it makes a frame object for the function the first time
   it is asked, at every op while tracing: a tenth of a trace's time. Python 3.11 and 3.12 let
   us read the code from the interpreter's own record of the running function instead. */
static PyCodeObject *running_code(void) {
#ifdef READ_RUNNING_CODE
    _PyInterpreterFrame *running = PyThreadState_Get()->cframe->current_frame;
    return running == NULL ? NULL : running->f_code;
#else
    PyFrameObject *frame = PyEval_GetFrame();
    if (frame == NULL)
        return NULL;
    PyCodeObject *code = PyFrame_GetCode(frame);
    Py_DECREF(code); /* only its address is compared; the frame keeps it alive */
    return code;
#endif
}

static int show(Watched *self, PyObject *value, int writing) {
    PyCodeObject *code = running_code();
    if (code == NULL || (PyObject *)code == self->last_quiet)
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(self->quiet); i++)
        if (PyTuple_GET_ITEM(self->quiet, i) == (PyObject *)code) {
            self->last_quiet = (PyObject *)code;
            return 0;
        }
    PyFrameObject *frame = PyEval_GetFrame(); /* for touched(): who it was, and where */
    if (frame == NULL)
        return 0;
    PyObject *result = PyObject_CallFunctionObjArgs(self->touched, value, (PyObject *)frame, self->name,
                                                    writing ? Py_True : Py_False, NULL);
    Py_XDECREF(result);
    return result == NULL ? -1 : 0;
}

static PyObject *watched_get(PyObject *self, PyObject *value, PyObject *type) {
    if (value == NULL || value == Py_None)
        return Py_NewRef(self);
    Watched *watched = (Watched *)self;
    if (show(watched, value, 0) < 0)
        return NULL;
    return Py_TYPE(watched->slot)->tp_descr_get(watched->slot, value, type);
}

static int watched_set(PyObject *self, PyObject *value, PyObject *x) {
    Watched *watched = (Watched *)self;
    if (show(watched, value, 1) < 0)
        return -1;
    return Py_TYPE(watched->slot)->tp_descr_set(watched->slot, value, x);
}

static void watched_dealloc(PyObject *self) {
    Watched *watched = (Watched *)self;
    Py_XDECREF(watched->slot);
    Py_XDECREF(watched->name);
    Py_XDECREF(watched->quiet);
    Py_XDECREF(watched->touched);
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject watched_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "chainrule._graph.watched",
    .tp_basicsize = sizeof(Watched),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Value.data or Value.grad while chainrule.compile traces",
    .tp_dealloc = watched_dealloc,
    .tp_descr_get = watched_get,
    .tp_descr_set = watched_set,
};

static PyObject *watched(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || Py_TYPE(args[0])->tp_descr_get == NULL || Py_TYPE(args[0])->tp_descr_set == NULL ||
        !PyUnicode_Check(args[1]) || !PyTuple_CheckExact(args[2]) || !PyCallable_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "_graph.watched(slot, name, quiet: tuple of code, touched)");
        return NULL;
    }
    Watched *self = PyObject_New(Watched, &watched_type);
    if (self == NULL)
        return NULL;
    self->slot = Py_NewRef(args[0]);
    self->name = Py_NewRef(args[1]);
    self->quiet = Py_NewRef(args[2]);
    self->touched = Py_NewRef(args[3]);
    self->last_quiet = NULL;
    return (PyObject *)self;
}

/* engine._depth_first: the same walk, with an explicit stack so that any depth works.

   Looking a node up in `visited` runs its __hash__ and __eq__, which a subclass of Value may
   write in Python, and that code can do anything: replace the children of a node on the stack,
   drop the last reference to a child. So every frame owns its node and the tuple of children
   it walks (read once, when the node is pushed, as Python's `for child in node.children`
   does), and a child is held while it is looked up. */
typedef struct {
    PyObject *node, *children; /* strong references */
    Py_ssize_t next_child;
} Frame;

/* Push `node` (a Value) with its children tuple: 0, 1 when its children are unusual (not a
   tuple), -1 on error. Takes no reference from the caller. */
static int push_frame(Frame **stack, Py_ssize_t *depth, Py_ssize_t *capacity, PyObject *node) {
    PyObject *children = SLOT(node, at_children);
    if (children == NULL || !PyTuple_CheckExact(children))
        return 1;
    if (*depth == *capacity) {
        Frame *bigger = PyMem_Realloc(*stack, 2 * *capacity * sizeof(Frame));
        if (bigger == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        *stack = bigger;
        *capacity *= 2;
    }
    (*stack)[(*depth)++] = (Frame){Py_NewRef(node), Py_NewRef(children), 0};
    return 0;
}

/* Whether `node` was seen before, adding it to `visited` if not: 1, 0, or -1 on error. */
static int seen_before(PyObject *visited, PyObject *node) {
    Py_INCREF(node); /* its __hash__ may drop every other reference to it */
    int seen = PySet_Contains(visited, node);
    if (seen == 0 && PySet_Add(visited, node) < 0)
        seen = -1;
    Py_DECREF(node);
    return seen;
}

static PyObject *depth_first(PyObject *module, PyObject *roots) {
    NEEDS_SETUP(NULL)
    if (!PyTuple_CheckExact(roots))
        Py_RETURN_NONE;
    PyObject *order = PyList_New(0), *visited = PySet_New(NULL);
    Py_ssize_t capacity = 64, depth = 0;
    Frame *stack = PyMem_Malloc(capacity * sizeof(Frame));
    PyObject *result = NULL;
    int status = -1; /* 0: done, 1: unusual, -1: error */
    if (order == NULL || visited == NULL || stack == NULL) {
        if (stack == NULL)
            PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t r = 0; r < PyTuple_GET_SIZE(roots); r++) {
        PyObject *root = PyTuple_GET_ITEM(roots, r); /* held by the caller's tuple */
        if (!is_value(root)) {
            status = 1;
            goto done;
        }
        int seen = seen_before(visited, root);
        if (seen < 0) {
            status = -1;
            goto done;
        }
        if (seen)
            continue;
        if ((status = push_frame(&stack, &depth, &capacity, root)) != 0)
            goto done;
        while (depth > 0) {
            Frame *top = &stack[depth - 1];
            if (top->next_child >= PyTuple_GET_SIZE(top->children)) { /* all its children are placed */
                status = PyList_Append(order, top->node) < 0 ? -1 : 0;
                depth--;
                Py_DECREF(top->node);
                Py_DECREF(top->children);
                if (status < 0)
                    goto done;
                continue;
            }
            PyObject *child = PyTuple_GET_ITEM(top->children, top->next_child++); /* held by the tuple */
            if (!is_value(child)) {
                status = 1;
                goto done;
            }
            Py_INCREF(child); /* top may move: the stack can grow below */
            seen = seen_before(visited, child);
            if (seen == 0)
                status = push_frame(&stack, &depth, &capacity, child);
            Py_DECREF(child); /* visited holds it now */
            if (seen < 0)
                status = -1;
            if (status != 0)
                goto done;
        }
    }
    status = 0;
done:
    while (depth > 0) { /* what an error or an unusual node left on the stack */
        depth--;
        Py_DECREF(stack[depth].node);
        Py_DECREF(stack[depth].children);
    }
    PyMem_Free(stack);
    if (status == 0)
        result = Py_NewRef(order);
    else if (status == 1)
        result = Py_NewRef(Py_None);
    Py_XDECREF(order);
    Py_XDECREF(visited);
    return result;
}

/* a + b, as Python computes it; a float's plain double arithmetic when both are floats. */
static PyObject *add(PyObject *a, PyObject *b) {
    if (PyFloat_CheckExact(a) && PyFloat_CheckExact(b))
        return PyFloat_FromDouble(PyFloat_AS_DOUBLE(a) + PyFloat_AS_DOUBLE(b));
    return PyNumber_Add(a, b);
}

/* A slot of `node` that the pass reads, as a new reference; or NULL with an AttributeError when
   it is empty: a lecture-style _backward closure (or a __del__, or a gc callback) may have run
   `del node._pending` while the pass was on its way. */
static int slot_deleted(PyObject *node, const char *name) {
    PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s': the graph changed during backward",
                 Py_TYPE(node)->tp_name, name);
    return -1;
}

static PyObject *read_slot(PyObject *node, Py_ssize_t at, const char *name) {
    PyObject *object = SLOT(node, at);
    if (object == NULL) {
        slot_deleted(node, name);
        return NULL;
    }
    return Py_NewRef(object);
}

/* node._pending += share */
static int add_share(PyObject *node, PyObject *share) {
    PyObject *pending = read_slot(node, at_pending, "_pending"); /* held: the addition may run Python code */
    if (pending == NULL)
        return -1;
    PyObject *total = add(pending, share);
    Py_DECREF(pending);
    if (total == NULL)
        return -1;
    set_slot(node, at_pending, total);
    return 0;
}

/* A node's stored local gradients: child._pending += d * g for each child. Everything read is
   held first: a multiplication may run Python code (a number type's __mul__), which may replace
   the node's children or its _pending. */
static int pass_stored(PyObject *node, PyObject *local) {
    PyObject *children = SLOT(node, at_children);
    if (children == NULL || !PyTuple_CheckExact(children)) {
        PyErr_SetString(PyExc_TypeError, "a Value's children were replaced during backward");
        return -1;  /* only a lecture-style _backward closure could have done it */
    }
    PyObject *g = read_slot(node, at_pending, "_pending");
    if (g == NULL)
        return -1;
    Py_INCREF(children);
    Py_INCREF(local);
    Py_ssize_t n = Py_MIN(PyTuple_GET_SIZE(children), PyTuple_GET_SIZE(local));  /* as zip() */
    int status = 0;
    for (Py_ssize_t k = 0; k < n && status == 0; k++) {
        PyObject *d = PyTuple_GET_ITEM(local, k), *share;
        if (PyFloat_CheckExact(d) && PyFloat_CheckExact(g))
            share = PyFloat_FromDouble(PyFloat_AS_DOUBLE(d) * PyFloat_AS_DOUBLE(g));
        else
            share = PyNumber_Multiply(d, g);
        PyObject *child = PyTuple_GET_ITEM(children, k);
        if (share == NULL)
            status = -1;
        else if (!is_value(child)) {
            PyErr_SetString(PyExc_TypeError, "a child of a Value must be a Value");
            Py_DECREF(share);
            status = -1;
        } else {
            status = add_share(child, share);
            Py_DECREF(share);
        }
    }
    Py_DECREF(g);
    Py_DECREF(local);
    Py_DECREF(children);
    return status;
}

/* Any other op: engine._child_gradients(node, g, False) gives (child, share) pairs. */
static int pass_by_rule(PyObject *node) {
    PyObject *g = read_slot(node, at_pending, "_pending");
    if (g == NULL)
        return -1;
    PyObject *pairs = PyObject_CallFunctionObjArgs(child_gradients, node, g, Py_False, NULL);
    Py_DECREF(g);
    if (pairs == NULL)
        return -1;
    PyObject *iterator = PyObject_GetIter(pairs), *pair;
    Py_DECREF(pairs);
    if (iterator == NULL)
        return -1;
    int status = 0;
    while (status == 0 && (pair = PyIter_Next(iterator)) != NULL) {
        PyObject *child, *share;
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "_child_gradients must give (child, gradient) pairs");
            status = -1;
        } else {
            child = PyTuple_GET_ITEM(pair, 0), share = PyTuple_GET_ITEM(pair, 1);
            if (share != Py_None) {
                if (is_value(child))
                    status = add_share(child, share);
                else {
                    PyErr_SetString(PyExc_TypeError, "a child of a Value must be a Value");
                    status = -1;
                }
            }
        }
        Py_DECREF(pair);
    }
    Py_DECREF(iterator);
    return (status == 0 && PyErr_Occurred()) ? -1 : status;
}

/* One node's step of the walk: its share passed on to its children. */
static int pass_on(PyObject *node) {
    PyObject *local = SLOT(node, at_local), *rule;
    if (local == NULL) /* as engine.py's `node._local` raises */
        return slot_deleted(node, "_local");
    if (PyTuple_CheckExact(local))
        return pass_stored(node, local);
    if ((rule = SLOT(node, at_rule)) == NULL)
        return slot_deleted(node, "_rule");
    return rule == Py_None ? 0 : pass_by_rule(node);
}

/* node._pending += node.grad, once every share has been gathered (see _propagate_numbers). */
static int add_grad(PyObject *node) {
    PyObject *grad = is_parameter(node) ? parameter_grad(NULL, node) : read_slot(node, at_grad, "grad");
    if (grad == NULL)
        return -1;
    int status = add_share(node, grad);
    Py_DECREF(grad);
    return status;
}

/* engine._propagate_numbers(order, seed, add_to_grad). The walk runs Python code (closures, a
   rule's backward, a number type's arithmetic, a __del__ when a slot is replaced), which could
   change the list: so it walks a tuple of the nodes, made first, that holds every one. */
static PyObject *propagate_numbers(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_graph.propagate_numbers(order, seed, add_to_grad)");
        return NULL;
    }
    NEEDS_SETUP(NULL)
    PyObject *seed = args[1];
    int add_to_grad = PyObject_IsTrue(args[2]);
    if (add_to_grad < 0)
        return NULL;
    if (!PyList_CheckExact(args[0]) || PyList_GET_SIZE(args[0]) == 0)
        Py_RETURN_NONE;
    PyObject *nodes = PyList_AsTuple(args[0]);
    if (nodes == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(nodes);
    for (Py_ssize_t i = 0; i < n; i++) {  /* look before touching anything */
        PyObject *node = PyTuple_GET_ITEM(nodes, i);
        if (!is_value(node) || SLOT(node, at_children) == NULL || !PyTuple_CheckExact(SLOT(node, at_children))) {
            Py_DECREF(nodes);
            Py_RETURN_NONE;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++)
        set_slot(PyTuple_GET_ITEM(nodes, i), at_pending, Py_NewRef(zero));
    set_slot(PyTuple_GET_ITEM(nodes, n - 1), at_pending, Py_NewRef(seed));
    int status = 0;
    for (Py_ssize_t i = n - 1; i >= 0 && status == 0; i--)
        status = pass_on(PyTuple_GET_ITEM(nodes, i));
    for (Py_ssize_t i = 0; i < n && status == 0 && add_to_grad; i++)
        status = add_grad(PyTuple_GET_ITEM(nodes, i));
    Py_DECREF(nodes);
    if (status < 0)
        return NULL;
    Py_RETURN_TRUE;
}

/* Hand these nodes (and their tuples) back to the collector, before they can join a cycle. */
static PyObject *watch(PyObject *module, PyObject *nodes) {
    NEEDS_SETUP(NULL)
    PyObject *iterator = PyObject_GetIter(nodes), *node;
    if (iterator == NULL)
        return NULL;
    while ((node = PyIter_Next(iterator)) != NULL) {
        if (is_value(node)) {
            PyObject *parts[2] = {SLOT(node, at_children), SLOT(node, at_local)};
            for (int k = 0; k < 2; k++)
                if (parts[k] != NULL && PyTuple_CheckExact(parts[k]) && !PyObject_GC_IsTracked(parts[k]))
                    PyObject_GC_Track(parts[k]);
            if (!PyObject_GC_IsTracked(node))
                PyObject_GC_Track(node);
        }
        Py_DECREF(node);
    }
    Py_DECREF(iterator);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* The buffer of doubles that `numbers` exposes, if it holds exactly `n` of them, else -1. */
static int double_buffer(PyObject *numbers, Py_ssize_t n, Py_buffer *view, int writable) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(numbers, view, flags) < 0)
        return -1;
    if (view->itemsize != sizeof(double) || view->format == NULL || strcmp(view->format, "d") != 0 ||
        view->len != n * (Py_ssize_t)sizeof(double)) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "_graph: expected a contiguous float64 buffer of one number a Value");
        return -1;
    }
    return 0;
}

/* The arguments (values, numbers) of the functions below: a list or tuple of Values and a
   float64 buffer with one number a Value. 0 when they are right, else -1 with an error set. */
static int values_and_numbers(PyObject *const *args, Py_ssize_t nargs, const char *usage, int writable,
                              PyObject **values, Py_ssize_t *n, Py_buffer *view) {
    if (nargs != 2 || !(PyList_CheckExact(args[0]) || PyTuple_CheckExact(args[0]))) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    NEEDS_SETUP(-1)
    *values = args[0];
    *n = PySequence_Fast_GET_SIZE(args[0]);
    return double_buffer(args[1], *n, view, writable);
}

/* values[i].<slot> = objects[i] for every i, taking over those references; then the old
   objects are released and the array freed. The release comes after the loop because it may
   run Python code, which must not see the stores half done. */
static void store_all(PyObject *values, Py_ssize_t at, PyObject **objects, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value = PySequence_Fast_GET_ITEM(values, i);
        if (is_parameter(value)) {  /* checked by can_store: a float, into a good entry */
            *entry(value, at) = PyFloat_AS_DOUBLE(objects[i]);
            continue;
        }
        PyObject *old = SLOT(value, at);
        SLOT(value, at) = objects[i];
        objects[i] = old;
    }
    release_all(objects, n);
}

/* Whether store_all can store into values[i].<slot> for every i: 1 if so, 0 if engine.py's
   loop must (something is not a Value, or a Parameter's gradient is an object), -1 on error. */
static int can_store(PyObject *values, Py_ssize_t n, Py_ssize_t at) {
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value = PySequence_Fast_GET_ITEM(values, i);
        if (is_parameter(value)) {
            if (entry(value, at) == NULL)
                return -1;
            if (at == at_grad && grad_object(value) != NULL)
                return 0;
        } else if (!is_value(value)) {
            return 0;
        }
    }
    return 1;
}

/* out[i] = values[i].<slot> for every i, where every one is a float; else None (and nothing
   promised about `out`), and engine.py's reading runs instead and reports what it finds. */
static PyObject *read_floats(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t at, const char *usage) {
    PyObject *values;
    Py_ssize_t n;
    Py_buffer view;
    if (values_and_numbers(args, nargs, usage, 1, &values, &n, &view) < 0)
        return NULL;
    double *out = view.buf;
    PyObject *result = Py_True;
    for (Py_ssize_t i = 0; i < n && result == Py_True; i++) {
        PyObject *value = PySequence_Fast_GET_ITEM(values, i), *number;
        if (is_parameter(value)) {
            double *address = entry(value, at);
            if (address == NULL)
                result = NULL;
            else if (at == at_grad && grad_object(value) != NULL)
                result = Py_None;
            else
                out[i] = *address;
        } else if (!is_value(value) || (number = SLOT(value, at)) == NULL || !PyFloat_CheckExact(number)) {
            result = Py_None;
        } else {
            out[i] = PyFloat_AS_DOUBLE(number);
        }
    }
    if (result == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    PyBuffer_Release(&view);
    return Py_NewRef(result);
}

/* How a compiled call reads its parameters, and an optimizer its parameters and gradients. */
static PyObject *read_data(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    return read_floats(args, nargs, at_data, "_graph.read_data(values, out)");
}

static PyObject *read_grads(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    return read_floats(args, nargs, at_grad, "_graph.read_grads(values, out)");
}

/* values[i].data = numbers[i] for every i: an optimizer's update. Nothing can fail once the
   new floats are made, so it is all or nothing. */
static PyObject *write_data(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *values;
    Py_ssize_t n;
    Py_buffer view;
    if (values_and_numbers(args, nargs, "_graph.write_data(values, numbers)", 0, &values, &n, &view) < 0)
        return NULL;
    int storable = can_store(values, n, at_data);
    if (storable <= 0) {
        PyBuffer_Release(&view);
        return storable < 0 ? NULL : Py_NewRef(Py_None);
    }
    const double *numbers = view.buf;
    PyObject **made = PyMem_Calloc(n > 0 ? n : 1, sizeof(PyObject *));
    int failed = made == NULL;
    for (Py_ssize_t i = 0; i < n && !failed; i++)
        failed = (made[i] = PyFloat_FromDouble(numbers[i])) == NULL;
    PyBuffer_Release(&view);
    if (failed) {
        if (made != NULL)
            release_all(made, n);
        return PyErr_NoMemory();
    }
    store_all(values, at_data, made, n);
    Py_RETURN_TRUE;
}

/* values[i].grad = number for every i: zero_grad. None (and nothing changed) unless all are
   Values. */
static PyObject *fill_grads(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !(PyList_CheckExact(args[0]) || PyTuple_CheckExact(args[0]))) {
        PyErr_SetString(PyExc_TypeError, "_graph.fill_grads(values, number)");
        return NULL;
    }
    NEEDS_SETUP(NULL)
    PyObject *values = args[0], *number = args[1];
    Py_ssize_t n = PySequence_Fast_GET_SIZE(values);
    int storable = can_store(values, n, at_grad);
    if (storable <= 0)
        return storable < 0 ? NULL : Py_NewRef(Py_None);
    if (!PyFloat_CheckExact(number))  /* a Parameter's entry takes only a float */
        for (Py_ssize_t i = 0; i < n; i++)
            if (is_parameter(PySequence_Fast_GET_ITEM(values, i)))
                Py_RETURN_NONE;
    PyObject **filled = PyMem_Calloc(n > 0 ? n : 1, sizeof(PyObject *));
    if (filled == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++)
        filled[i] = Py_NewRef(number);
    store_all(values, at_grad, filled, n);
    Py_RETURN_TRUE;
}

/* values[i].grad += shares[i] for every i, all or nothing: how a compiled result's backward
   hands its gradients to the parameters. None (and nothing changed) when some grad is not a
   float or an int; engine.py's accumulation then runs and says what is wrong. */
static PyObject *add_to_grads(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *values;
    Py_ssize_t n;
    Py_buffer view;
    if (values_and_numbers(args, nargs, "_graph.add_to_grads(values, shares)", 0, &values, &n, &view) < 0)
        return NULL;
    const double *shares = view.buf;
    PyObject **totals = PyMem_Calloc(n > 0 ? n : 1, sizeof(PyObject *));
    PyObject *result = Py_True;
    if (totals == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n && result == Py_True; i++) {  /* the new totals, first */
        PyObject *value = PySequence_Fast_GET_ITEM(values, i), *grad;
        double now = 0.0, *address;
        if (is_parameter(value)) {
            if ((address = entry(value, at_grad)) == NULL)
                result = NULL;
            else if (grad_object(value) != NULL)
                result = Py_None;
            else
                now = *address;
        } else if (!is_value(value) || (grad = SLOT(value, at_grad)) == NULL) {
            result = Py_None;
        } else if (PyFloat_CheckExact(grad)) {
            now = PyFloat_AS_DOUBLE(grad);
        } else if (PyLong_CheckExact(grad)) {  /* an int, as Python's int + float converts it */
            now = PyLong_AsDouble(grad);
            if (now == -1.0 && PyErr_Occurred()) {
                PyErr_Clear();  /* too large: engine.py raises the OverflowError itself */
                result = Py_None;
            }
        } else {
            result = Py_None;
        }
        if (result == Py_True && (totals[i] = PyFloat_FromDouble(now + shares[i])) == NULL)
            result = NULL;
    }
    PyBuffer_Release(&view);
    if (result == Py_True)
        store_all(values, at_grad, totals, n);  /* then stored, where nothing can fail */
    else
        release_all(totals, n);
    return result == NULL ? NULL : Py_NewRef(result);
}

static PyMethodDef methods[] = {
    {"setup", (PyCFunction)(void (*)(void))setup, METH_FASTCALL, "setup(Value, child_gradients)"},
    {"setup_parameters", (PyCFunction)(void (*)(void))setup_parameters, METH_FASTCALL,
     "setup_parameters(Parameter, Parameters, set_data, set_grad)"},
    {"parameter_data", parameter_data, METH_O, "a Parameter's .data"},
    {"parameter_grad", parameter_grad, METH_O, "a Parameter's .grad"},
    {"set_parameter_data", (PyCFunction)(void (*)(void))set_parameter_data, METH_FASTCALL, "parameter.data = x"},
    {"set_parameter_grad", (PyCFunction)(void (*)(void))set_parameter_grad, METH_FASTCALL, "parameter.grad = g"},
    {"data_of", data_of, METH_O, "engine._read_data: a Value's number"},
    {"number", number, METH_O, "number(grad): the descriptor of Parameter.data (False) or .grad (True)"},
    {"node", (PyCFunction)(void (*)(void))node, METH_FASTCALL, "engine._node, unwatched by the collector"},
    {"depth_first", depth_first, METH_O, "engine._depth_first(roots), or None when unusual"},
    {"propagate_numbers", (PyCFunction)(void (*)(void))propagate_numbers, METH_FASTCALL,
     "engine._propagate_numbers(order, seed, add_to_grad), or None when unusual"},
    {"watch", watch, METH_O, "hand these nodes back to the garbage collector"},
    {"watch_other_threads", watch_other_threads, METH_O,
     "watch_other_threads(ids): node() adds to the set ids every Value made in a thread not tracing"},
    {"record", (PyCFunction)(void (*)(void))record, METH_FASTCALL,
     "record(nodes, constants): node() adds what it makes to them, in this thread; (None, None) stops"},
    {"watched", (PyCFunction)(void (*)(void))watched, METH_FASTCALL,
     "watched(slot, name, quiet, touched): a slot that shows reads and writes to touched"},
    {"read_data", (PyCFunction)(void (*)(void))read_data, METH_FASTCALL,
     "out[i] = values[i].data, or None when some data is not a float"},
    {"read_grads", (PyCFunction)(void (*)(void))read_grads, METH_FASTCALL,
     "out[i] = values[i].grad, or None when some grad is not a float"},
    {"write_data", (PyCFunction)(void (*)(void))write_data, METH_FASTCALL, "values[i].data = numbers[i]"},
    {"fill_grads", (PyCFunction)(void (*)(void))fill_grads, METH_FASTCALL, "values[i].grad = number"},
    {"add_to_grads", (PyCFunction)(void (*)(void))add_to_grads, METH_FASTCALL,
     "values[i].grad += shares[i], all or nothing, or None when some grad is not a number"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_graph", "engine.py's hottest loops in C", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__graph(void) {
    zero = PyFloat_FromDouble(0.0);
    empty_label = PyUnicode_FromString("");
    if (zero == NULL || empty_label == NULL || PyType_Ready(&watched_type) < 0 || PyType_Ready(&number_type) < 0)
        return NULL;
    return PyModule_Create(&module);
}
