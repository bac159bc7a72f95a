/* The layout of a tape, in C, for speed only: rewriting.layout() is the reference.

   chainrule.compile works without this file. When it is built (pip builds it if it finds a C
   compiler), tape.py asks it, instead of rewriting.layout(), where everything a trace made
   goes on the tape. It does the same steps, with the same result, index for index:

   1. count how many times each node and leaf is used, and drop the nodes nothing needs;
   2. fold chains of + into sums, and a sum of products b + w1*x1 + ... into one dot node;
   3. group the nodes by (depth, op, number of inputs), the groups in order of depth;
   4. give every leaf and node its position: the inputs, the constants, the Values made
      before the trace (externals), then each group's nodes, and read off each node's inputs.

   It reads the Values' children and _rule slots and compares pointers. One step runs Python
   code: asking the set of constants whether it holds a leaf runs the leaf's __hash__ and __eq__,
   which a subclass of Value may write, and which may rewire the graph (replace a node's
   children, so that a leaf only they held is freed). So every object numbered, and every op,
   is held with a reference of its own until the layout is done. Anything unusual (a children
   attribute that is not a tuple of Values, a node listed twice) makes it return None, and
   tape.py then runs the Python version, which reports it as it always has.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <structmember.h>

#include "../_slots.h" /* SLOT, slot_offset and claim_value_type, shared with _graph.c */

static PyTypeObject *value_type; /* engine.Value */
static Py_ssize_t at_children, at_rule;

/* ---------------------------------------------------------------------------------------------
   Growing arrays of Py_ssize_t. */

typedef struct {
    Py_ssize_t *at, n, capacity;
} Array;

static int grow(Array *a) {
    Py_ssize_t capacity = a->capacity ? 2 * a->capacity : 64;
    Py_ssize_t *at = PyMem_Realloc(a->at, capacity * sizeof(Py_ssize_t));
    if (at == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    a->at = at;
    a->capacity = capacity;
    return 0;
}

static inline int push(Array *a, Py_ssize_t x) {
    if (a->n == a->capacity && grow(a) < 0)
        return -1;
    a->at[a->n++] = x;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
   A hash table from (depth, op, number of inputs) to a group's index. */

typedef struct {
    uintptr_t key[3];
    Py_ssize_t index; /* -1: empty */
} Entry;

typedef struct {
    Entry *entries;
    size_t mask, used;
} Table;

static size_t hash(const uintptr_t key[3]) {
    uint64_t h = (uint64_t)key[0] * 0x9E3779B97F4A7C15u ^ (uint64_t)key[1] * 0xC2B2AE3D27D4EB4Fu ^
                 (uint64_t)key[2] * 0x165667B19E3779F9u;
    h ^= h >> 30; /* then splitmix64's finalizer, so that every bit of the key reaches the low bits */
    h *= 0xBF58476D1CE4E5B9u;
    h ^= h >> 27;
    h *= 0x94D049BB133111EBu;
    return (size_t)(h ^ (h >> 31));
}

static int table_grow(Table *t) {
    size_t size = t->entries ? 2 * (t->mask + 1) : 1024;
    Entry *old = t->entries, *entries = PyMem_Malloc(size * sizeof(Entry));
    if (entries == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < size; i++)
        entries[i].index = -1;
    size_t old_size = old ? t->mask + 1 : 0;
    t->entries = entries;
    t->mask = size - 1;
    for (size_t i = 0; i < old_size; i++)
        if (old[i].index >= 0) {
            size_t j = hash(old[i].key) & t->mask;
            while (entries[j].index >= 0)
                j = (j + 1) & t->mask;
            entries[j] = old[i];
        }
    PyMem_Free(old);
    return 0;
}

/* The index stored for key, or -1. */
static Py_ssize_t find(Table *t, uintptr_t a, uintptr_t b, uintptr_t c) {
    uintptr_t key[3] = {a, b, c};
    if (t->entries == NULL)
        return -1;
    for (size_t j = hash(key) & t->mask; t->entries[j].index >= 0; j = (j + 1) & t->mask)
        if (memcmp(t->entries[j].key, key, sizeof key) == 0)
            return t->entries[j].index;
    return -1;
}

/* The index stored for key; or, if there is none, store `fresh` and return it (-2: no memory). */
static Py_ssize_t find_or_add(Table *t, uintptr_t a, uintptr_t b, uintptr_t c, Py_ssize_t fresh) {
    Py_ssize_t found = find(t, a, b, c);
    if (found >= 0)
        return found;
    if (2 * (t->used + 1) > (t->entries ? t->mask + 1 : 0) && table_grow(t) < 0)
        return -2;
    uintptr_t key[3] = {a, b, c};
    size_t j = hash(key) & t->mask;
    while (t->entries[j].index >= 0)
        j = (j + 1) & t->mask;
    memcpy(t->entries[j].key, key, sizeof key);
    t->entries[j].index = fresh;
    t->used++;
    return fresh;
}

/* ---------------------------------------------------------------------------------------------
   Everything the trace made, numbered: first the recorded nodes (in the order made), then the
   leaves in the order of their first use, then any input not used.

   Finding an object's number must be fast: there are hundreds of thousands of look-ups. A
   hash table keyed by the object's address (open addressing, kept at most half full) finds it
   without running any Python code (no __hash__ of a subclass). */

typedef struct {
    Array object;                        /* number -> the object (a strong reference) */
    Py_ssize_t *table;                   /* number + 1 of the object hashed there, 0 for none */
    size_t mask;                         /* the table's size - 1 (a power of 2), or 0 before any */
    Array uses, depth, position;         /* per number */
    Array child_start, child;            /* node i's children: child[child_start[i] .. child_start[i+1]] */
    Array output, input;                 /* the outputs' and the inputs' numbers */
    char *folded;                        /* per recorded node */
    Py_ssize_t n_nodes;
} Graph;

static size_t slot_for(Graph *g, PyObject *object) {
    size_t h = (size_t)(((uintptr_t)object >> 4) * 0x9E3779B97F4A7C15ull) & g->mask;
    while (g->table[h] != 0 && g->object.at[g->table[h] - 1] != (Py_ssize_t)object)
        h = (h + 1) & g->mask;
    return h;
}

/* The number `object` carries, or -1 if it has none yet. */
static Py_ssize_t number_carried(Graph *g, PyObject *object) {
    if (g->table == NULL)
        return -1;
    return g->table[slot_for(g, object)] - 1;
}

/* Make room for one more object in the table: 0, or -1 when out of memory. */
static int table_room(Graph *g) {
    size_t size = g->table == NULL ? 0 : g->mask + 1;
    if (2 * (size_t)(g->object.n + 1) <= size)
        return 0;
    size_t bigger = size ? 2 * size : 1024;
    Py_ssize_t *old = g->table;
    g->table = PyMem_Calloc(bigger, sizeof(Py_ssize_t));
    if (g->table == NULL) {
        g->table = old;
        PyErr_NoMemory();
        return -1;
    }
    g->mask = bigger - 1;
    for (Py_ssize_t i = 0; i < g->object.n; i++)
        g->table[slot_for(g, (PyObject *)g->object.at[i])] = i + 1;
    PyMem_Free(old);
    return 0;
}

/* The number of `object`, giving it the next one if it has none (-2: no memory). */
static Py_ssize_t number_of(Graph *g, PyObject *object) {
    Py_ssize_t i = number_carried(g, object);
    if (i >= 0)
        return i;
    i = g->object.n;
    if (table_room(g) < 0 || push(&g->object, (Py_ssize_t)object) < 0 || push(&g->uses, 0) < 0) {
        g->object.n = i; /* not numbered after all */
        return -2;
    }
    g->table[slot_for(g, object)] = i + 1;
    Py_INCREF(object); /* released by layout(), at the end */
    return i;
}

static PyObject *rule_of(Graph *g, Py_ssize_t i) { return SLOT((PyObject *)g->object.at[i], at_rule); }

static int count_children_and_outputs(Graph *g, PyObject *created, PyObject *outputs, PyObject *inputs);

/* Step 1. Returns 1 when something is unusual, -1 on error. */
static int count_uses(Graph *g, PyObject *created, PyObject *outputs, PyObject *inputs) {
    int status = 0;
    for (Py_ssize_t i = 0; i < g->n_nodes && status == 0; i++) {
        PyObject *node = PyList_GET_ITEM(created, i);
        if (!PyObject_TypeCheck(node, value_type) || number_carried(g, node) >= 0 || SLOT(node, at_rule) == NULL)
            status = 1; /* not a Value, recorded twice, or its op deleted */
        else if (number_of(g, node) < 0)
            status = -1;
    }
    if (status == 0)
        status = count_children_and_outputs(g, created, outputs, inputs);
    return status;
}

static int count_children_and_outputs(Graph *g, PyObject *created, PyObject *outputs, PyObject *inputs) {
    if (push(&g->child_start, 0) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < g->n_nodes; i++) {
        PyObject *children = SLOT(PyList_GET_ITEM(created, i), at_children);
        if (children == NULL || !PyTuple_CheckExact(children))
            return 1;
        for (Py_ssize_t c = 0; c < PyTuple_GET_SIZE(children); c++) {
            PyObject *child = PyTuple_GET_ITEM(children, c);
            if (!PyObject_TypeCheck(child, value_type))
                return 1;
            Py_ssize_t k = number_of(g, child);
            if (k < 0 || push(&g->child, k) < 0)
                return -1;
            g->uses.at[k]++;
        }
        if (push(&g->child_start, g->child.n) < 0)
            return -1;
    }
    for (Py_ssize_t o = 0; o < PyList_GET_SIZE(outputs); o++) {
        if (!PyObject_TypeCheck(PyList_GET_ITEM(outputs, o), value_type))
            return 1;
        Py_ssize_t k = number_of(g, PyList_GET_ITEM(outputs, o));
        if (k < 0 || push(&g->output, k) < 0)
            return -1;
        g->uses.at[k]++;
    }
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(inputs); k++) {
        PyObject *input = PyList_GET_ITEM(inputs, k);
        Py_ssize_t i = PyObject_TypeCheck(input, value_type) ? number_of(g, input) : -3;
        if (i == -3)
            return 1;
        if (i < 0 || push(&g->input, i) < 0)
            return -1;
    }
    /* A node nothing uses is not needed, and then neither are its uses of its children. */
    for (Py_ssize_t i = g->n_nodes - 1; i >= 0; i--)
        if (g->uses.at[i] == 0) {
            g->folded[i] = 1; /* left out, as a folded node is */
            for (Py_ssize_t c = g->child_start.at[i]; c < g->child_start.at[i + 1]; c++)
                g->uses.at[g->child.at[c]]--;
        }
    return 0;
}

/* Step 2. The tape's nodes, users last: for each, its number, op and children (numbers). */
typedef struct {
    Array node, rule, child_start, child;
} Members;

typedef struct {
    PyObject *add, *sum, *mul, *dot;
} Rules;

static int foldable(Graph *g, Py_ssize_t k, PyObject *rule) {
    return k < g->n_nodes && !g->folded[k] && g->uses.at[k] == 1 && rule_of(g, k) == rule;
}

static int is_sum(Graph *g, Rules *r, Py_ssize_t k) { return foldable(g, k, r->add) || foldable(g, k, r->sum); }

static int rewrite(Graph *g, Rules *r, Members *m) {
    Array expanded = {0}, stack = {0};
    int status = -1;
    for (Py_ssize_t i = g->n_nodes - 1; i >= 0; i--) { /* users first, as in rewriting._rewrite */
        if (g->folded[i])
            continue;
        PyObject *rule = rule_of(g, i);
        Py_ssize_t first = g->child_start.at[i], end = g->child_start.at[i + 1];
        expanded.n = 0;
        if (rule == r->add || rule == r->sum) {
            /* Replace each child that is a sum used only here by its own children, depth first. */
            for (Py_ssize_t c = end - 1; c >= first; c--)
                if (push(&stack, g->child.at[c]) < 0)
                    goto done;
            while (stack.n) {
                Py_ssize_t k = stack.at[--stack.n];
                if (is_sum(g, r, k)) {
                    g->folded[k] = 1;
                    for (Py_ssize_t c = g->child_start.at[k + 1] - 1; c >= g->child_start.at[k]; c--)
                        if (push(&stack, g->child.at[c]) < 0)
                            goto done;
                } else if (push(&expanded, k) < 0)
                    goto done;
            }
            Py_ssize_t terms = 0, other = -1;
            for (Py_ssize_t c = 0; c < expanded.n; c++) {
                Py_ssize_t k = expanded.at[c];
                if (foldable(g, k, r->mul)) {
                    if (g->child_start.at[k + 1] - g->child_start.at[k] != 2) {
                        status = 1; /* a product that is not of two: unusual */
                        goto done;
                    }
                    terms++;
                } else
                    other = k;
            }
            if (terms >= 2 && expanded.n - terms == 1) {
                /* b + w1*x1 + ... + wn*xn: the dot node (w1..wn, x1..xn, b) */
                rule = r->dot;
                if (push(&m->node, i) < 0 || push(&m->rule, (Py_ssize_t)rule) < 0)
                    goto done;
                for (int side = 0; side < 2; side++)
                    for (Py_ssize_t c = 0; c < expanded.n; c++) {
                        Py_ssize_t k = expanded.at[c];
                        if (k != other && push(&m->child, g->child.at[g->child_start.at[k] + side]) < 0)
                            goto done;
                    }
                for (Py_ssize_t c = 0; c < expanded.n; c++)
                    if (expanded.at[c] != other)
                        g->folded[expanded.at[c]] = 1;
                if (push(&m->child, other) < 0 || push(&m->child_start, m->child.n) < 0)
                    goto done;
                continue;
            }
            if (expanded.n != 2 || rule == r->sum)
                rule = r->sum;
        } else
            for (Py_ssize_t c = first; c < end; c++)
                if (push(&expanded, g->child.at[c]) < 0)
                    goto done;
        if (push(&m->node, i) < 0 || push(&m->rule, (Py_ssize_t)rule) < 0)
            goto done;
        for (Py_ssize_t c = 0; c < expanded.n; c++)
            if (push(&m->child, expanded.at[c]) < 0)
                goto done;
        if (push(&m->child_start, m->child.n) < 0)
            goto done;
    }
    status = 0;
done:
    PyMem_Free(expanded.at);
    PyMem_Free(stack.at);
    return status;
}

/* Steps 3 and 4, into the Python result (see layout below). */
typedef struct {
    Py_ssize_t depth, first_seen, width, count, first; /* first: where its members start in `order` */
    PyObject *rule;
} Group;

static int by_depth(const void *a, const void *b) {
    const Group *x = a, *y = b;
    if (x->depth != y->depth)
        return x->depth < y->depth ? -1 : 1;
    return x->first_seen < y->first_seen ? -1 : x->first_seen > y->first_seen;
}

/* The leaves' positions: after the inputs, the constants, then the externals, each in the order of
   their first use. Returns the next free position, or -1 on error. */
static Py_ssize_t place_leaves(Graph *g, PyObject *constants, PyObject *constant_leaves,
                               PyObject *externals) {
    Py_ssize_t next = g->input.n;
    for (Py_ssize_t k = 0; k < next; k++)
        g->position.at[g->input.at[k]] = k;
    for (int pass = 0; pass < 2; pass++)
        for (Py_ssize_t i = g->n_nodes; i < g->object.n; i++) {
            if (g->uses.at[i] <= 0 || g->position.at[i] >= 0)
                continue; /* unused, an input, or placed in the first pass */
            PyObject *leaf = (PyObject *)g->object.at[i];
            int is_constant = PySet_Contains(constants, leaf);
            if (is_constant < 0)
                return -1;
            if (is_constant == (pass == 0)) {
                g->position.at[i] = next++;
                if (PyList_Append(is_constant ? constant_leaves : externals, leaf) < 0)
                    return -1;
            }
        }
    return next;
}

/* The groups by (depth, op, number of inputs), sorted by depth, ties in the order first seen;
   `order` lists the members group after group. Returns the number of groups, or -1. */
static Py_ssize_t make_groups(Graph *g, Members *m, Group **groups_out, Py_ssize_t **order_out) {
    Py_ssize_t n_members = m->node.n, n_groups = 0;
    Table group_of = {0};
    Group *all = NULL;
    Py_ssize_t capacity = 0;
    Py_ssize_t *group = PyMem_Malloc((n_members ? n_members : 1) * sizeof(Py_ssize_t));
    Py_ssize_t *order = PyMem_Malloc((n_members ? n_members : 1) * sizeof(Py_ssize_t)), *slot = NULL;
    if (group == NULL || order == NULL) {
        PyErr_NoMemory();
        goto failed;
    }
    for (Py_ssize_t e = n_members - 1; e >= 0; e--) { /* rewrite() listed users first: reverse */
        Py_ssize_t i = m->node.at[e], d = 0, width = m->child_start.at[e + 1] - m->child_start.at[e];
        for (Py_ssize_t c = m->child_start.at[e]; c < m->child_start.at[e + 1]; c++)
            if (g->depth.at[m->child.at[c]] > d)
                d = g->depth.at[m->child.at[c]];
        g->depth.at[i] = ++d;
        Py_ssize_t k = find_or_add(&group_of, (uintptr_t)d, (uintptr_t)m->rule.at[e], (uintptr_t)width, n_groups);
        if (k == -2)
            goto failed;
        if (k == n_groups) {
            if (n_groups == capacity) {
                capacity = capacity ? 2 * capacity : 64;
                Group *grown = PyMem_Realloc(all, capacity * sizeof(Group));
                if (grown == NULL) {
                    PyErr_NoMemory();
                    goto failed;
                }
                all = grown;
            }
            all[n_groups++] = (Group){d, k, width, 0, 0, (PyObject *)m->rule.at[e]};
        }
        all[k].count++;
        group[e] = k;
    }
    qsort(all, n_groups, sizeof(Group), by_depth);
    slot = PyMem_Malloc((n_groups ? n_groups : 1) * sizeof(Py_ssize_t)); /* first_seen -> its place now */
    if (slot == NULL) {
        PyErr_NoMemory();
        goto failed;
    }
    for (Py_ssize_t k = 0, first = 0; k < n_groups; first += all[k++].count) {
        all[k].first = first;
        slot[all[k].first_seen] = first;
    }
    for (Py_ssize_t e = n_members - 1; e >= 0; e--)
        order[slot[group[e]]++] = e;
    PyMem_Free(slot);
    PyMem_Free(group);
    PyMem_Free(group_of.entries);
    *groups_out = all;
    *order_out = order;
    return n_groups;
failed:
    PyMem_Free(group);
    PyMem_Free(order);
    PyMem_Free(group_of.entries);
    PyMem_Free(all);
    return -1;
}

/* For a group of dot nodes (rows of w1..wn, x1..xn, b): the n-vectors starting at `offset` in
   each row, numbered in the order first seen, so that tape.py can see a layer applied to a batch
   (U weight vectors paired with each of V input vectors). A bytearray of `count` ssize_t. */
static PyObject *vector_ids(const Py_ssize_t *rows, Py_ssize_t count, Py_ssize_t width, Py_ssize_t offset) {
    Py_ssize_t n = (width - 1) / 2, next_id = 0;
    size_t size = 16;
    while (size < 2 * (size_t)count)
        size *= 2;
    Py_ssize_t *first_row = PyMem_Malloc(size * sizeof(Py_ssize_t)); /* slot -> a row with that vector */
    PyObject *ids = PyByteArray_FromStringAndSize(NULL, count * sizeof(Py_ssize_t));
    if (first_row == NULL || ids == NULL) {
        PyMem_Free(first_row);
        Py_XDECREF(ids);
        return first_row == NULL ? PyErr_NoMemory() : NULL;
    }
    Py_ssize_t *id = (Py_ssize_t *)PyByteArray_AS_STRING(ids);
    for (size_t j = 0; j < size; j++)
        first_row[j] = -1;
    for (Py_ssize_t r = 0; r < count; r++) {
        const Py_ssize_t *vector = rows + r * width + offset;
        uintptr_t key[3] = {0, 0, (uintptr_t)n};
        for (Py_ssize_t k = 0; k < n; k++)
            key[k & 1] = key[k & 1] * 0x100000001B3u + (uintptr_t)vector[k];
        size_t j = hash(key) & (size - 1);
        for (; first_row[j] >= 0; j = (j + 1) & (size - 1))
            if (memcmp(rows + first_row[j] * width + offset, vector, n * sizeof(Py_ssize_t)) == 0)
                break;
        if (first_row[j] < 0) {
            first_row[j] = r;
            id[r] = next_id++;
        } else
            id[r] = id[first_row[j]];
    }
    PyMem_Free(first_row);
    return ids;
}

static PyObject *place(Graph *g, Members *m, Rules *r, PyObject *constants) {
    PyObject *result = NULL, *constant_leaves = PyList_New(0), *externals = PyList_New(0);
    PyObject *groups_out = PyList_New(0), *output_positions = NULL;
    Group *groups = NULL;
    Py_ssize_t *order = NULL, n_groups = 0, next;
    for (Py_ssize_t e = 0; e < m->node.n; e++) /* place_leaves runs Python code, which may drop an op */
        Py_INCREF((PyObject *)m->rule.at[e]);
    if (constant_leaves == NULL || externals == NULL || groups_out == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < g->object.n; i++)
        if (push(&g->depth, 0) < 0 || push(&g->position, -1) < 0)
            goto done;
    next = place_leaves(g, constants, constant_leaves, externals);
    if (next < 0 || (n_groups = make_groups(g, m, &groups, &order)) < 0)
        goto done;
    /* Positions, group after group; then each node's inputs by position, a row a node. */
    for (Py_ssize_t k = 0; k < n_groups; k++) {
        Group *group = &groups[k];
        Py_ssize_t *members = order + group->first;
        for (Py_ssize_t j = 0; j < group->count; j++)
            g->position.at[m->node.at[members[j]]] = next++;
        PyObject *rows = PyByteArray_FromStringAndSize(NULL, group->count * group->width * sizeof(Py_ssize_t));
        if (rows == NULL)
            goto done;
        Py_ssize_t *row = (Py_ssize_t *)PyByteArray_AS_STRING(rows);
        for (Py_ssize_t j = 0; j < group->count; j++)
            for (Py_ssize_t c = m->child_start.at[members[j]]; c < m->child_start.at[members[j] + 1]; c++)
                *row++ = g->position.at[m->child.at[c]];
        PyObject *vectors = Py_NewRef(Py_None);
        if (group->rule == r->dot && group->width % 2 == 1) {
            const Py_ssize_t *all_rows = (const Py_ssize_t *)PyByteArray_AS_STRING(rows);
            Py_ssize_t n = (group->width - 1) / 2;
            Py_SETREF(vectors, Py_BuildValue("(NN)", vector_ids(all_rows, group->count, group->width, 0),
                                             vector_ids(all_rows, group->count, group->width, n)));
        }
        if (vectors == NULL) {
            Py_DECREF(rows);
            goto done;
        }
        PyObject *entry = Py_BuildValue("(OnnNN)", group->rule, group->count, group->width, rows, vectors);
        if (entry == NULL || PyList_Append(groups_out, entry) < 0) {
            Py_XDECREF(entry);
            goto done;
        }
        Py_DECREF(entry);
    }
    output_positions = PyList_New(g->output.n);
    if (output_positions == NULL)
        goto done;
    for (Py_ssize_t o = 0; o < g->output.n; o++) {
        PyObject *p = PyLong_FromSsize_t(g->position.at[g->output.at[o]]);
        if (p == NULL)
            goto done;
        PyList_SET_ITEM(output_positions, o, p);
    }
    result = PyTuple_Pack(4, constant_leaves, externals, groups_out, output_positions);
done:
    for (Py_ssize_t e = 0; e < m->node.n; e++)
        Py_DECREF((PyObject *)m->rule.at[e]);
    PyMem_Free(groups);
    PyMem_Free(order);
    Py_XDECREF(constant_leaves);
    Py_XDECREF(externals);
    Py_XDECREF(groups_out);
    Py_XDECREF(output_positions);
    return result;
}

/* layout(inputs, constants, outputs, created, (ADD, SUM, MUL, DOT)): rewriting.layout, or None
   when something is unusual. */
static PyObject *layout(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyList_CheckExact(args[0]) || !PyAnySet_Check(args[1]) || !PyList_CheckExact(args[2]) ||
        !PyList_CheckExact(args[3]) || !PyTuple_CheckExact(args[4]) || PyTuple_GET_SIZE(args[4]) != 4) {
        PyErr_SetString(PyExc_TypeError, "_layout.layout(inputs, constants, outputs, created, (add, sum, mul, dot))");
        return NULL;
    }
    if (value_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_layout: call setup(Value) first");
        return NULL;
    }
    PyObject *created = args[3], *result = NULL;
    Rules rules = {PyTuple_GET_ITEM(args[4], 0), PyTuple_GET_ITEM(args[4], 1), PyTuple_GET_ITEM(args[4], 2),
                   PyTuple_GET_ITEM(args[4], 3)};
    Graph g = {.n_nodes = PyList_GET_SIZE(created)};
    Members m = {0};
    Array *arrays[] = {&g.object, &g.uses, &g.depth,       &g.position, &g.child_start, &g.child,
                       &g.output, &g.input, &m.node, &m.rule, &m.child_start, &m.child};
    int status = -1;
    g.folded = PyMem_Calloc(g.n_nodes ? g.n_nodes : 1, 1);
    if (g.folded == NULL)
        PyErr_NoMemory();
    else
        status = count_uses(&g, created, args[2], args[0]);
    if (status == 0)
        status = push(&m.child_start, 0) < 0 ? -1 : rewrite(&g, &rules, &m);
    if (status == 0)
        result = place(&g, &m, &rules, args[1]);
    else if (status == 1)
        result = Py_NewRef(Py_None);
    for (Py_ssize_t i = 0; i < g.object.n; i++) /* the references number_of took */
        Py_DECREF((PyObject *)g.object.at[i]);
    for (size_t k = 0; k < sizeof arrays / sizeof *arrays; k++)
        PyMem_Free(arrays[k]->at);
    PyMem_Free(g.folded);
    PyMem_Free(g.table);
    return result;
}

static PyObject *setup(PyObject *module, PyObject *type) {
    Py_ssize_t children, rule;
    if (!PyType_Check(type) || slot_offset("_layout.setup", (PyTypeObject *)type, "children", &children) < 0 ||
        slot_offset("_layout.setup", (PyTypeObject *)type, "_rule", &rule) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "_layout.setup(Value)");
        return NULL;
    }
    if (!claim_value_type(&value_type, (PyTypeObject *)type))
        Py_RETURN_FALSE; /* the Value of a second copy of engine.py, which runs on Python (../_slots.h) */
    at_children = children, at_rule = rule;
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_O, "setup(Value): True, or False when it serves another Value class"},
    {"layout", (PyCFunction)(void (*)(void))layout, METH_FASTCALL,
     "rewriting.layout(inputs, constants, outputs, created), or None when unusual"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_layout", "rewriting.layout in C", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__layout(void) { return PyModule_Create(&module); }
