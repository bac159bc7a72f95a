/* The table program: forward() and backward() for any tape, walking a table of groups, one
   row of ROW numbers per group. The tape's sizes are arguments, so this program is the same
   for every tape: pip builds it with chainrule (_tables.c includes it), else the C compiler
   builds it once, the first time a long tape needs it (compiler/native.py, table_program()).

   A row is (forward kernel, start, count, inputs, offset in idx, backward kernel, kind): the
   kernels by their numbers in ops_kernels.h's FORWARD_KERNELS and BACKWARD_KERNELS (or
   LAYER_KERNEL), and kind a layer's number of neurons, -1 for a run of one-input nodes whose
   inputs lie one after the other (UNARY in kernels.c), else 0. */
#include "kernels.c"

#define ROW 7

/* forward: walk the table of groups; a layer's row has its number of neurons last */
int forward(double *d, const idx_t *idx, const int64_t *t, long n_groups, long first, long size) {
    int bad = 0;
    for (long i = 0; i < n_groups; i++, t += ROW) {
        switch (t[0]) {
#define FORWARD_CASE(code, name) \
        case code: bad |= f_##name(d, idx + t[4], t[1], t[2], t[3]); break;
#define FORWARD_RUN_CASE(code, name) \
        case code: bad |= (t[6] < 0 ? fr_##name(d, idx[t[4]], t[1], t[2]) : f_##name(d, idx + t[4], t[1], t[2], t[3])); break;
        FORWARD_KERNELS(FORWARD_CASE, FORWARD_RUN_CASE)
        case LAYER_KERNEL: bad |= f_layer_row(d, idx + t[4], t[1], t[2], t[3], t[6]); break;
        }
    }
    return bad || !all_finite(d, first, size);
}

/* backward: the same table from its last row; a row's last number is its backward kernel */
int backward(const double *d, double *gr, const idx_t *idx, const unsigned char *needed,
             const int64_t *t, long n_groups, long first, long size) {
    for (long i = n_groups - 1; i >= 0; i--) {
        const int64_t *row = t + ROW * i;
        switch (row[5]) {
#define BACKWARD_CASE(code, name) \
        case code: b_##name(d, gr, idx + row[4], row[1], row[2], row[3], needed); break;
#define BACKWARD_RUN_CASE(code, name) \
        case code: { if (row[6] < 0) br_##name(d, gr, idx[row[4]], row[1], row[2], needed); \
                     else b_##name(d, gr, idx + row[4], row[1], row[2], row[3], needed); } break;
        BACKWARD_KERNELS(BACKWARD_CASE, BACKWARD_RUN_CASE)
        case LAYER_KERNEL: b_layer_row(d, gr, idx + row[4], row[1], row[2], row[3], row[6], needed); break;
        }
    }
    (void)first;
    return !all_finite(gr, 0, size);
}
