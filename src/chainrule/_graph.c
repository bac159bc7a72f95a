/* The engine's hottest loops in C, for speed only: engine.py is the reference.

   chainrule works without this file. When it is built (pip builds it if it finds a C compiler),
   engine.py swaps in these versions of three of its own functions, each doing exactly what the
   Python one does, number for number:

   node(data, rule, children)          engine._node: a computed Value of the fast ops.
   depth_first(roots)                  engine._depth_first: every node after its children.
   propagate_numbers(order, seed, add) engine._propagate_numbers: the first-order backward loop.

   and loops over many parameters at once, for chainrule.compile, the optimizers and zero_grad:
   read_data and read_grads (into a float64 array), write_data, add_to_grads and fill_grads.

   A Parameter (parameters.py) is a Value in every way: these loops read and write its slots as any Value's.

   For the engine's hook (engine._hooked: chainrule.compile's trace), so that a traced function
   runs on the fast ops as eager code does: record(nodes, constants) makes node() add, in this
   thread, every node it makes to the list and every constant to the set; and while some thread
   is hooked, node() notes the Values the other threads make (watch_other_threads).

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
#include <math.h>
#include <stdint.h>
#include <structmember.h>

#include "_slots.h" /* SLOT, slot_offset and claim_value_type, shared with compiler/_layout.c */
#include "ops_kernels.h" /* each op's gradients in C, written from the records in ops.py */


static PyTypeObject *value_type;   /* engine.Value */
static PyObject *child_gradients;  /* engine._child_gradients, for the rules not known here */
static PyObject *zero;
static Py_ssize_t at_data, at_grad, at_children, at_rule;

/* The ops whose backward rule (in ops.py) the backward loop below runs itself, on float data;
   setup() receives them in this order. */
enum { ADD, SUB, MUL, DIV, NEG, EXP, LOG, TANH, SIGMOID, RELU, SUM, DOT, POW_CONSTANT, KNOWN_RULES };
/* Their names in ops.OPS, in the enum's order: setup() finds each op there by its name. */
static const char *const known_names[KNOWN_RULES] = {"+", "-", "*", "/", "neg", "exp", "log",
                                                     "tanh", "sigmoid", "relu", "sum", "dot", "**"};
static PyObject *known_rules[KNOWN_RULES];


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

/* The subclasses of Value whose numbers live elsewhere (engine.py's numbers_elsewhere: the
   parameters inside chainrule.on_device, whose numbers are on a device). Their slots are not
   their numbers, so for these loops they are not Values: each loop returns None on meeting one,
   and engine.py's Python runs instead, reading them through their properties. */
#define MAX_ELSEWHERE 8
static PyTypeObject *elsewhere[MAX_ELSEWHERE];
static int n_elsewhere;

static int is_value(PyObject *object) {
    PyTypeObject *type = Py_TYPE(object);
    if (type == value_type)
        return 1;
    if (value_type == NULL || !PyType_IsSubtype(type, value_type))
        return 0;
    for (int i = 0; i < n_elsewhere; i++)
        if (type == elsewhere[i])
            return 0;
    return 1;
}

static PyObject *numbers_elsewhere(PyObject *module, PyObject *type) {
    NEEDS_SETUP(NULL)
    if (!PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type, value_type)) {
        PyErr_SetString(PyExc_TypeError, "_graph.numbers_elsewhere(a subclass of Value)");
        return NULL;
    }
    for (int i = 0; i < n_elsewhere; i++)
        if ((PyObject *)elsewhere[i] == type)
            Py_RETURN_NONE;
    if (n_elsewhere == MAX_ELSEWHERE) {
        PyErr_SetString(PyExc_RuntimeError, "_graph.numbers_elsewhere: too many such classes");
        return NULL;
    }
    elsewhere[n_elsewhere++] = (PyTypeObject *)Py_NewRef(type); /* kept for the process's life */
    Py_RETURN_NONE;
}

static PyObject *setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyType_Check(args[0]) || !PyCallable_Check(args[1]) || !PyDict_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "_graph.setup(Value, child_gradients, ops.OPS)");
        return NULL;
    }
    PyObject *rules[KNOWN_RULES];
    for (int r = 0; r < KNOWN_RULES; r++)
        if ((rules[r] = PyDict_GetItemString(args[2], known_names[r])) == NULL) { /* str keys: no Python code */
            PyErr_Format(PyExc_TypeError, "_graph.setup: ops.OPS has no op named '%s'", known_names[r]);
            return NULL;
        }
    PyTypeObject *type = (PyTypeObject *)args[0];
    Py_ssize_t data, grad, children, rule;
    if (slot_offset("_graph.setup", type, "_data", &data) || slot_offset("_graph.setup", type, "_grad", &grad) ||
        slot_offset("_graph.setup", type, "children", &children) ||
        slot_offset("_graph.setup", type, "_rule", &rule))
        return NULL;
    if (!claim_value_type(&value_type, type))
        Py_RETURN_FALSE; /* the Value of a second copy of engine.py, which runs on Python (_slots.h) */
    at_data = data, at_grad = grad, at_children = children, at_rule = rule;
    Py_XSETREF(child_gradients, Py_NewRef(args[1]));
    for (int r = 0; r < KNOWN_RULES; r++)
        Py_XSETREF(known_rules[r], Py_NewRef(rules[r]));
    Py_RETURN_TRUE;
}

static void unwatch(PyObject *object) {
    if (PyTuple_CheckExact(object) && PyObject_GC_IsTracked(object))
        PyObject_GC_UnTrack(object);
}

/* While a hook records in this thread, the list and the set that node() adds what it makes to:
   a computed node to the list, a constant (a leaf, rule None) to the set. A hook is installed
   in one thread from start to end, so a thread-local is the right scope. */
static _Thread_local PyObject *recorded_nodes, *recorded_constants;

/* While some thread is hooked, the set of the ids of the Values that threads not recording make
   (engine._made_in_other_threads): the hook was never shown them. */
static PyObject *untraced_ids;

static int note_untraced(PyObject *value) {
    PyObject *id = PyLong_FromVoidPtr(value);
    if (id == NULL)
        return -1;
    int failed = PySet_Add(untraced_ids, id);
    Py_DECREF(id);
    return failed;
}

/* engine._node: a Value with these parts and grad 0.0, unwatched by the collector. Its
   instance dict (for attributes a user sets) is made only when one is set. */
static PyObject *node(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_graph.node(data, rule, children)");
        return NULL;
    }
    NEEDS_SETUP(NULL)
    PyObject *value = value_type->tp_alloc(value_type, 0);
    if (value == NULL)
        return NULL;
    PyObject_GC_UnTrack(value);
    SLOT(value, at_data) = Py_NewRef(args[0]);
    SLOT(value, at_grad) = Py_NewRef(zero);
    SLOT(value, at_rule) = Py_NewRef(args[1]);
    SLOT(value, at_children) = Py_NewRef(args[2]);
    unwatch(args[2]);
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
   recording to the set ids; watch_other_threads(None) stops. */
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

/* engine._propagate_numbers(order, seed, add_to_grad): the first-order backward loop.

   A pass keeps its shares apart, one place per node of `order`: a double, or (rarely: a
   closure that hands back a number that is not a float) a Python object. A node's place is
   found by its address in a small hash table, so no __hash__ of a subclass runs, and a
   backward run by a closure in the middle of the walk has places of its own. The walk runs
   Python code (closures, the rules not known here, a number type's arithmetic), which could
   change the list or the graph: so it walks a tuple of the nodes, made first, that holds every
   one, and holds each node's children while it reads them. */
typedef struct {
    PyObject *nodes;   /* a tuple of the nodes of the pass (a strong reference) */
    Py_ssize_t n;
    double *share;     /* per place */
    PyObject **boxed;  /* per place: the share when it is not a float (then share[] is unused) */
    Py_ssize_t *table; /* place + 1 of the node hashed there, 0 for none */
    size_t mask;
} Pass;

static size_t hash_address(PyObject *node) { return (size_t)(((uintptr_t)node >> 4) * 0x9E3779B97F4A7C15ull); }

/* The place of `node` in the pass, or -1 when it is not one of its nodes. */
static Py_ssize_t place_of(Pass *pass, PyObject *node) {
    for (size_t h = hash_address(node) & pass->mask;; h = (h + 1) & pass->mask) {
        Py_ssize_t entry = pass->table[h];
        if (entry == 0)
            return -1;
        if (PyTuple_GET_ITEM(pass->nodes, entry - 1) == node)
            return entry - 1;
    }
}

static int start_pass(Pass *pass, PyObject *nodes) {
    Py_ssize_t n = PyTuple_GET_SIZE(nodes);
    size_t size = 16;
    while (size < 2 * (size_t)n)
        size *= 2;
    *pass = (Pass){nodes, n, PyMem_Calloc(n, sizeof(double)), PyMem_Calloc(n, sizeof(PyObject *)),
                   PyMem_Calloc(size, sizeof(Py_ssize_t)), size - 1};
    if (pass->share == NULL || pass->boxed == NULL || pass->table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) { /* a node listed twice gets its last place, as a dict does */
        PyObject *node = PyTuple_GET_ITEM(nodes, i);
        size_t h = hash_address(node) & pass->mask;
        while (pass->table[h] != 0 && PyTuple_GET_ITEM(nodes, pass->table[h] - 1) != node)
            h = (h + 1) & pass->mask;
        pass->table[h] = i + 1;
    }
    return 0;
}

static void end_pass(Pass *pass) {
    if (pass->boxed != NULL)
        release_all(pass->boxed, pass->n);
    PyMem_Free(pass->share);
    PyMem_Free(pass->table);
}

/* The share at place i as a new reference. */
static PyObject *share_object(Pass *pass, Py_ssize_t i) {
    return pass->boxed[i] != NULL ? Py_NewRef(pass->boxed[i]) : PyFloat_FromDouble(pass->share[i]);
}

/* share[i] += x, as Python's `+` would add them (double arithmetic when both are floats). */
static int add_object(Pass *pass, Py_ssize_t i, PyObject *x) {
    if (pass->boxed[i] == NULL && PyFloat_CheckExact(x)) {
        pass->share[i] += PyFloat_AS_DOUBLE(x);
        return 0;
    }
    PyObject *now = share_object(pass, i);
    if (now == NULL)
        return -1;
    Py_INCREF(x); /* the addition may run Python code that drops x */
    PyObject *total = PyNumber_Add(now, x);
    Py_DECREF(x);
    Py_DECREF(now);
    if (total == NULL)
        return -1;
    if (PyFloat_CheckExact(total)) { /* back to a plain double */
        pass->share[i] = PyFloat_AS_DOUBLE(total);
        Py_DECREF(total);
        total = NULL;
    }
    Py_XSETREF(pass->boxed[i], total);
    return 0;
}

static int changed_graph(PyObject *node) {
    PyErr_Format(PyExc_RuntimeError, "backward: a child of a %.100s is not in the graph being walked: "
                 "the graph changed during backward", Py_TYPE(node)->tp_name);
    return -1;
}

/* The number of a Value as a double, if it is a float: 1, else 0. */
static int float_data(PyObject *value, double *x) {
    PyObject *data = SLOT(value, at_data);
    if (data == NULL || !PyFloat_CheckExact(data))
        return 0;
    *x = PyFloat_AS_DOUBLE(data);
    return 1;
}

/* The rules of ops.py that this loop runs itself, operation for operation: for a node with a
   known rule, float data and a float share g, out[k] becomes the share of child k (the same
   doubles Python's float arithmetic gives). 1 when done, 0 when the node must
   go to engine._child_gradients (an unknown rule, data that is not a float, a division by 0
   that Python raises for, too many children for `xs`). No Python code runs here. */
#define MAX_INLINE 64
static int known_shares(PyObject *node, PyObject *children, double g, double *out, int *has_share) {
    PyObject *rule = SLOT(node, at_rule);
    int r = 0;
    while (r < KNOWN_RULES && known_rules[r] != rule)
        r++;
    Py_ssize_t m = PyTuple_GET_SIZE(children);
    double xs[MAX_INLINE], y;
    if (r == KNOWN_RULES || m > MAX_INLINE || !float_data(node, &y))
        return 0;
    for (Py_ssize_t k = 0; k < m; k++) {
        PyObject *child = PyTuple_GET_ITEM(children, k);
        if (!is_value(child) || !float_data(child, &xs[k]))
            return 0;
        has_share[k] = 1;
    }
    double out_value = y;
    /* each rule's arithmetic is its function in ops_kernels.h; here only when C may run it */
#define TWO(name) (out[0] = op_##name##_grad_x(g, out_value, xs[0], xs[1]), \
                   out[1] = op_##name##_grad_y(g, out_value, xs[0], xs[1]))
#define ONE(name) (out[0] = op_##name##_grad(g, out_value, xs[0]))
    switch (r) {
    case ADD:
    case SUB:
    case MUL:
    case DIV:
        if (m != 2 || (r == DIV && xs[1] == 0.0)) /* Python raises for a division by 0 */
            return 0;
        switch (r) {
        case ADD: TWO(add); break;
        case SUB: TWO(sub); break;
        case MUL: TWO(mul); break;
        default: TWO(div);
        }
        return 1;
    case NEG:
    case EXP:
    case LOG:
    case TANH:
    case SIGMOID:
    case RELU:
        if (m != 1 || (r == LOG && xs[0] == 0.0))
            return 0;
        switch (r) {
        case NEG: ONE(neg); break;
        case EXP: ONE(exp); break;
        case LOG: ONE(log); break;
        case TANH: ONE(tanh); break;
        case SIGMOID: ONE(sigmoid); break;
        default: ONE(relu); /* selected, not multiplied, as ops.RELU */
        }
        return 1;
    case SUM:
        for (Py_ssize_t k = 0; k < m; k++)
            out[k] = op_sum_grad(g, out_value, xs[k]);
        return 1;
    case DOT: { /* children w_1..w_n, x_1..x_n, b */
        if (m % 2 != 1)
            return 0;
        Py_ssize_t n = m / 2;
        for (Py_ssize_t k = 0; k < n; k++) {
            out[k] = op_dot_grad_w(g, out_value, xs[k], xs[n + k]);
            out[n + k] = op_dot_grad_x(g, out_value, xs[k], xs[n + k]);
        }
        out[m - 1] = op_dot_grad_b(g, out_value);
        return 1;
    }
    case POW_CONSTANT: /* x ** c, for a positive finite x only (ops._pow raises or selects elsewhere) */
        if (m != 2 || !(xs[0] > 0.0) || isinf(xs[0]))
            return 0;
        out[0] = op_pow_constant_grad_x(g, out_value, xs[0], xs[1]);
        has_share[1] = 0; /* the constant exponent gets none */
        return 1;
    }
#undef TWO
#undef ONE
    return 0;
}

/* Any other node: engine._child_gradients(node, g, False) gives (child, share) pairs. */
static int pass_by_rule(Pass *pass, PyObject *node, Py_ssize_t i) {
    PyObject *g = share_object(pass, i);
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
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "_child_gradients must give (child, gradient) pairs");
            status = -1;
        } else if (PyTuple_GET_ITEM(pair, 1) != Py_None) { /* None: a constant by construction */
            Py_ssize_t place = place_of(pass, PyTuple_GET_ITEM(pair, 0));
            status = place < 0 ? changed_graph(node) : add_object(pass, place, PyTuple_GET_ITEM(pair, 1));
        }
        Py_DECREF(pair);
    }
    Py_DECREF(iterator);
    return (status == 0 && PyErr_Occurred()) ? -1 : status;
}

/* One node's step of the walk: its share passed on to its children. */
static int pass_on(Pass *pass, Py_ssize_t i) {
    PyObject *node = PyTuple_GET_ITEM(pass->nodes, i), *rule = SLOT(node, at_rule);
    PyObject *children = SLOT(node, at_children);
    if (rule == NULL || children == NULL) { /* a closure ran `del node._rule` */
        PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s': the graph changed during backward",
                     Py_TYPE(node)->tp_name, rule == NULL ? "_rule" : "children");
        return -1;
    }
    if (rule == Py_None)
        return 0; /* a leaf */
    if (pass->boxed[i] == NULL && PyTuple_CheckExact(children)) {
        double out[MAX_INLINE];
        int has_share[MAX_INLINE];
        if (known_shares(node, children, pass->share[i], out, has_share)) {
            int status = 0;
            Py_INCREF(children); /* an object share's addition may run Python code */
            for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(children) && status == 0; k++) {
                if (!has_share[k])
                    continue;
                Py_ssize_t place = place_of(pass, PyTuple_GET_ITEM(children, k));
                if (place < 0) {
                    status = changed_graph(node);
                } else if (pass->boxed[place] == NULL) {
                    pass->share[place] += out[k];
                } else {
                    PyObject *x = PyFloat_FromDouble(out[k]);
                    status = x == NULL ? -1 : add_object(pass, place, x);
                    Py_XDECREF(x);
                }
            }
            Py_DECREF(children);
            return status;
        }
    }
    return pass_by_rule(pass, node, i);
}

/* share + node.grad for place i, once every share is in: the node's new total. */
static PyObject *total_with_grad(Pass *pass, Py_ssize_t i) {
    PyObject *node = PyTuple_GET_ITEM(pass->nodes, i), *grad = SLOT(node, at_grad);
    if (grad == NULL) {
        PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute 'grad': the graph changed during backward",
                     Py_TYPE(node)->tp_name);
        return NULL;
    }
    if (pass->boxed[i] == NULL && PyFloat_CheckExact(grad))
        return PyFloat_FromDouble(pass->share[i] + PyFloat_AS_DOUBLE(grad));
    PyObject *share = share_object(pass, i);
    if (share == NULL)
        return NULL;
    Py_INCREF(grad);
    PyObject *total = PyNumber_Add(share, grad);
    Py_DECREF(grad);
    Py_DECREF(share);
    return total;
}

/* Every node of the pass is a Value whose children are a tuple: else engine.py's loop runs. */
static int usual_nodes(PyObject *nodes) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(nodes); i++) {
        PyObject *node = PyTuple_GET_ITEM(nodes, i);
        if (!is_value(node) || SLOT(node, at_children) == NULL || !PyTuple_CheckExact(SLOT(node, at_children)))
            return 0;
    }
    return 1;
}

static PyObject *propagate_numbers(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_graph.propagate_numbers(order, seed, add_to_grad)");
        return NULL;
    }
    NEEDS_SETUP(NULL)
    int add_to_grad = PyObject_IsTrue(args[2]);
    if (add_to_grad < 0)
        return NULL;
    if (!PyList_CheckExact(args[0]) || PyList_GET_SIZE(args[0]) == 0)
        Py_RETURN_NONE;
    PyObject *nodes = PyList_AsTuple(args[0]), *result = NULL;
    if (nodes == NULL)
        return NULL;
    if (!usual_nodes(nodes)) {
        Py_DECREF(nodes);
        Py_RETURN_NONE;
    }
    Pass pass;
    Py_ssize_t n = PyTuple_GET_SIZE(nodes);
    int status = start_pass(&pass, nodes);
    if (status == 0) { /* the root's place holds the seed (not 0.0 + seed: a -0.0 stays -0.0) */
        if (PyFloat_CheckExact(args[1]))
            pass.share[n - 1] = PyFloat_AS_DOUBLE(args[1]);
        else
            pass.boxed[n - 1] = Py_NewRef(args[1]);
    }
    for (Py_ssize_t i = n - 1; i >= 0 && status == 0; i--)
        status = pass_on(&pass, i);
    if (status == 0 && (result = PyList_New(n)) != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = add_to_grad ? total_with_grad(&pass, i) : share_object(&pass, i);
            if (item == NULL) {
                Py_CLEAR(result);
                break;
            }
            PyList_SET_ITEM(result, i, item);
        }
    }
    end_pass(&pass);
    Py_DECREF(nodes);
    return result;
}

/* Hand these nodes (and their tuples) back to the collector, before they can join a cycle. */
static PyObject *watch(PyObject *module, PyObject *nodes) {
    NEEDS_SETUP(NULL)
    PyObject *iterator = PyObject_GetIter(nodes), *node;
    if (iterator == NULL)
        return NULL;
    while ((node = PyIter_Next(iterator)) != NULL) {
        if (is_value(node)) {
            PyObject *children = SLOT(node, at_children);
            if (children != NULL && PyTuple_CheckExact(children) && !PyObject_GC_IsTracked(children))
                PyObject_GC_Track(children);
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
        PyObject *old = SLOT(value, at);
        SLOT(value, at) = objects[i];
        objects[i] = old;
    }
    release_all(objects, n);
}

/* Whether store_all can store into values[i].<slot> for every i: 1 if so, 0 if engine.py's
   loop must (something is not a Value). */
static int can_store(PyObject *values, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (!is_value(PySequence_Fast_GET_ITEM(values, i)))
            return 0;
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
        if (!is_value(value) || (number = SLOT(value, at)) == NULL || !PyFloat_CheckExact(number))
            result = Py_None;
        else
            out[i] = PyFloat_AS_DOUBLE(number);
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
    if (!can_store(values, n)) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
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
    if (!can_store(values, n))
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
        double now = 0.0;
        if (!is_value(value) || (grad = SLOT(value, at_grad)) == NULL) {
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
    {"setup", (PyCFunction)(void (*)(void))setup, METH_FASTCALL,
     "setup(Value, child_gradients, rules): True, or False when it serves another Value class"},
    {"numbers_elsewhere", numbers_elsewhere, METH_O,
     "numbers_elsewhere(cls): the loops treat this subclass's objects as unusual (None)"},
    {"node", (PyCFunction)(void (*)(void))node, METH_FASTCALL, "engine._node, unwatched by the collector"},
    {"depth_first", depth_first, METH_O, "engine._depth_first(roots), or None when unusual"},
    {"propagate_numbers", (PyCFunction)(void (*)(void))propagate_numbers, METH_FASTCALL,
     "engine._propagate_numbers(order, seed, add_to_grad), or None when unusual"},
    {"watch", watch, METH_O, "hand these nodes back to the garbage collector"},
    {"watch_other_threads", watch_other_threads, METH_O,
     "watch_other_threads(ids): node() adds to the set ids every Value made in a thread not recording"},
    {"record", (PyCFunction)(void (*)(void))record, METH_FASTCALL,
     "record(nodes, constants): node() adds what it makes to them, in this thread; (None, None) stops"},
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
    if (zero == NULL)
        return NULL;
    return PyModule_Create(&module);
}
