/* The compiler's group kernels: every op's forward and backward over a group of nodes.

   Read by compiler/native.py (which puts the files it #includes in its place, and adds a
   tape's own forward() and backward(), or table.c's) and built into compiler/_tables by pip.
   Each op's arithmetic comes from ops_kernels.h, written from the records in ops.py: this
   file only says how a group's nodes find their numbers. X(k) is the number of the node's
   k-th input, GX(k) its gradient, OUT the node's own number and G its gradient. Node j of a
   group finds the positions of its inputs in c = idx + j * n (n inputs per node), reads their
   numbers from d (the tape's data array) and writes its own at d[start + j]; backward adds
   local derivative * g into gr at the inputs' positions. Each forward kernel returns 0, or 1
   when an input is out of its domain in a way the arithmetic would not show (only take's
   index). */
#if defined(__GNUC__) && !defined(__clang__)
/* GCC at -O2 vectorizes a loop only when no scalar loop for the leftover numbers is needed (its
   "very cheap" model); the counts here are known only at run time. Clang vectorizes at -O2 as
   it is. Either way no sum is reordered: each number is computed as the scalar code says. */
#pragma GCC optimize("vect-cost-model=cheap")
#endif
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../ops_kernels.h"

typedef int32_t idx_t;
#define FORWARD(name) static int f_##name(double *d, const idx_t *c, long start, long count, long n)
#define BACKWARD(name) static void b_##name(const double *d, double *gr, const idx_t *c, long start, \
                                            long count, long n, const unsigned char *needed)
#define EACH_NODE for (long j = 0; j < count; j++, c += n)
#define EACH_NEEDED_NODE EACH_NODE if (!needed || needed[start + j])
#define X(k) d[c[k]]
#define GX(k) gr[c[k]]
#define OUT d[start + j]
#define G gr[start + j]

/* The ops of two inputs, x and y, each from its functions in ops_kernels.h: its number and
   the gradients it adds to x and to y. An op that shares another's forward (x ** c shares
   x ** y's) gets only its backward. */
#define BINARY_BACKWARD(name)                                                                      \
    BACKWARD(name) { EACH_NEEDED_NODE { double x = X(0), y = X(1), out = OUT, g = G;              \
                                         GX(0) += op_##name##_grad_x(g, out, x, y);              \
                                         GX(1) += op_##name##_grad_y(g, out, x, y); } }
#define BINARY(name)                                                                               \
    FORWARD(name) { EACH_NODE OUT = op_##name##_value(X(0), X(1)); return 0; }                    \
    BINARY_BACKWARD(name)
OPS_BINARY(BINARY)
OPS_BINARY_BACKWARD_ONLY(BINARY_BACKWARD)

/* The ops of one input, each from two expressions: its number, of x, and the gradient it adds
   to x, of x, out and g (its functions in ops_kernels.h, see UNARY_OP below). Besides f_ and
   b_, each gets fr_ and br_ for a run of nodes whose
   inputs lie one after the other from `from` (an activation after a layer): no positions to
   read, and loops the compiler can do several numbers at a time. */
#define UNARY(name, value, gradient)                                                              \
    FORWARD(name) { EACH_NODE { double x = X(0); OUT = value; } return 0; }                      \
    BACKWARD(name) { EACH_NEEDED_NODE { double x = X(0), out = OUT, g = G; (void)x, (void)out;    \
                                         GX(0) += gradient; } }                                 \
    static int fr_##name(double *d, long from, long start, long count) {                          \
        const double *restrict in = d + from;                                                     \
        double *restrict out_ = d + start;                                                        \
        for (long j = 0; j < count; j++) { double x = in[j]; out_[j] = value; }                  \
        return 0;                                                                                 \
    }                                                                                             \
    static void br_##name(const double *d, double *gr, long from, long start, long count,         \
                          const unsigned char *needed) {                                          \
        /* (the inputs' gradients and the outputs' lie apart: restrict lets the loop vectorize) */ \
        const double *in = d + from, *outs = d + start, *restrict gs = gr + start;                \
        double *restrict gin = gr + from;                                                         \
        for (long j = 0; needed == NULL && j < count; j++) { /* (every node: a loop of its own) */ \
            double x = in[j], out = outs[j], g = gs[j]; (void)x, (void)out;                       \
            gin[j] += gradient;                                                                   \
        }                                                                                         \
        for (long j = 0; needed != NULL && j < count; j++) {                                      \
            double x = in[j], out = outs[j], g = gs[j]; (void)x, (void)out;                       \
            if (needed[start + j]) gin[j] += gradient;                                            \
        }                                                                                         \
    }

#define UNARY_OP(name) UNARY(name, op_##name##_value(x), op_##name##_grad(g, out, x))
OPS_UNARY(UNARY_OP)

/* The ops of n inputs all alike (sum, logsumexp): the number from all of them, and each
   input's gradient from its own number. */
#define EACH(name)                                                                                 \
    FORWARD(name) { EACH_NODE OUT = op_##name##_value(d, c, n); return 0; }                       \
    BACKWARD(name) { EACH_NEEDED_NODE { double out = OUT, g = G;                                  \
                                         for (long k = 0; k < n; k++)                             \
                                             GX(k) += op_##name##_grad(g, out, X(k)); } }
OPS_EACH(EACH)

/* w.x + b, its inputs w_1..w_m, x_1..x_m, b */
#define PAIRS(name)                                                                                \
    FORWARD(name) { EACH_NODE OUT = op_##name##_value(d, c, n); return 0; }                       \
    BACKWARD(name) {                                                                              \
        long m = (n - 1) / 2;                                                                     \
        EACH_NEEDED_NODE {                                                                        \
            double out = OUT, g = G;                                                              \
            for (long k = 0; k < m; k++) {                                                        \
                double w = X(k), x = X(m + k);                                                    \
                GX(k) += op_##name##_grad_w(g, out, w, x);                                        \
                GX(m + k) += op_##name##_grad_x(g, out, w, x);                                    \
            }                                                                                     \
            GX(n - 1) += op_##name##_grad_b(g, out);                                              \
        }                                                                                         \
    }
OPS_PAIRS(PAIRS)

/* The rest (take, stop_gradient): a node's forward and backward as functions of its own. */
#define NODES(name)                                                                                \
    FORWARD(name) { EACH_NODE if (op_##name##_forward(d, c, n, &OUT)) return 1; return 0; }        \
    BACKWARD(name) { EACH_NEEDED_NODE op_##name##_backward(gr, d, c, n, OUT, G); }
OPS_NODES(NODES)

/* C[i*N + j] = the sum over k of A(i, k) * B[k*ldb + j], its terms added k = 0, 1, ... in
   turn, as one loop over k would add them. A(i, k) is A[i*ai + k*ak], so A can be read row by
   row (ai = K, ak = 1), column by column (ai = 1, ak = M), or where it lies in the tape.

   With GCC or Clang, the work goes in tiles of six rows by eight columns: their 48 running
   sums are twelve vectors of four numbers, held in registers, and each number read from A
   serves eight sums, each vector read from B six. The columns go eight by eight in the outer
   loop, so that those eight columns of B (K x 8 numbers) stay in the fastest cache while every
   row reads them. The rows left over go one at a time, eight columns a tile; the columns left
   over (an output layer has one) take four rows a vector where A's rows lie side by side, and
   else two rows by two columns of plain numbers (as everything does without GCC or Clang). */
#if defined(__GNUC__)
typedef double four __attribute__((vector_size(32))); /* one AVX2 instruction, or two SSE2 ones */
#define TILE_SUMS(r) four c##r##0 = {0.0, 0.0, 0.0, 0.0}, c##r##1 = c##r##0;
#define TILE_ADD(r) { double a = Ak[r * ai]; c##r##0 += a * b0, c##r##1 += a * b1; }
#define TILE_STORE(r) memcpy(Cij + r * N, &c##r##0, 32), memcpy(Cij + r * N + 4, &c##r##1, 32);
#define ROWS 6
#define COLS 8
#define LANES(v) four s##v = {0.0, 0.0, 0.0, 0.0}, a##v;
#define LANES_ADD(v) memcpy(&a##v, Ak + 4 * v, 32), s##v += a##v * b;
#define LANES_STORE(v) for (int r = 0; r < 4; r++) C[(i + 4 * v + r) * N + j] = s##v[r];
/* With GCC on x86-64 and glibc (whose loader picks the clone): AVX2 where the CPU has it */
#if !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
__attribute__((target_clones("avx2", "default")))
#endif
static void matmul_tiles(const double *A, long ai, long ak, const double *B, long ldb, double *C, long M,
                         long K, long N, long *rows_done, long *columns_done) {
    long j = 0, i = 0;
    for (; j + COLS <= N; j += COLS)
        for (i = 0; i + ROWS <= M; i += ROWS) {
            TILE_SUMS(0) TILE_SUMS(1) TILE_SUMS(2) TILE_SUMS(3) TILE_SUMS(4) TILE_SUMS(5)
            for (long k = 0; k < K; k++) {
                const double *Ak = A + i * ai + k * ak;
                four b0, b1;
                memcpy(&b0, B + k * ldb + j, 32), memcpy(&b1, B + k * ldb + j + 4, 32);
                TILE_ADD(0) TILE_ADD(1) TILE_ADD(2) TILE_ADD(3) TILE_ADD(4) TILE_ADD(5)
            }
            double *Cij = C + i * N + j;
            TILE_STORE(0) TILE_STORE(1) TILE_STORE(2) TILE_STORE(3) TILE_STORE(4) TILE_STORE(5)
        }
    for (i = M - M % ROWS; i < M; i++)  /* the rows left, over the same columns: eight at a time */
        for (j = 0; j + COLS <= N; j += COLS) {
            TILE_SUMS(0)
            for (long k = 0; k < K; k++) {
                const double *Ak = A + i * ai + k * ak;
                four b0, b1;
                memcpy(&b0, B + k * ldb + j, 32), memcpy(&b1, B + k * ldb + j + 4, 32);
                TILE_ADD(0)
            }
            double *Cij = C + i * N + j;
            TILE_STORE(0)
        }
    *columns_done = j, i = 0;
    if (ai == 1)  /* the columns left, sixteen rows (four vectors of sums) at a time */
        for (; i + 16 <= M; i += 16)
            for (j = *columns_done; j < N; j++) {
                LANES(0) LANES(1) LANES(2) LANES(3)
                for (long k = 0; k < K; k++) {
                    const double *Ak = A + i + k * ak, b = B[k * ldb + j];
                    LANES_ADD(0) LANES_ADD(1) LANES_ADD(2) LANES_ADD(3)
                }
                LANES_STORE(0) LANES_STORE(1) LANES_STORE(2) LANES_STORE(3)
            }
    *rows_done = i;  /* the rows whose last columns are done too */
}
#else
static void matmul_tiles(const double *A, long ai, long ak, const double *B, long ldb, double *C, long M,
                         long K, long N, long *rows_done, long *columns_done) {
    *rows_done = *columns_done = 0;
}
#endif

static void matmul(const double *A, long ai, long ak, const double *B, long ldb, double *C, long M, long K,
                   long N) {
    long i, j;  /* every row of the first j columns is done, and the first i rows of the rest */
    matmul_tiles(A, ai, ak, B, ldb, C, M, K, N, &i, &j);
    for (; i + 2 <= M; i += 2)  /* two rows by two columns of sums */
        for (long jj = j; jj < N; jj += 2) {
            long two = jj + 1 < N;  /* 0 for a last single column */
            double s00 = 0.0, s01 = 0.0, s10 = 0.0, s11 = 0.0;
            for (long k = 0; k < K; k++) {
                const double a0 = A[i * ai + k * ak], a1 = A[(i + 1) * ai + k * ak], *b = B + k * ldb + jj;
                s00 += a0 * b[0], s10 += a1 * b[0], s01 += a0 * b[two], s11 += a1 * b[two];
            }
            C[i * N + jj] = s00, C[(i + 1) * N + jj] = s10;
            if (two) C[i * N + jj + 1] = s01, C[(i + 1) * N + jj + 1] = s11;
        }
    for (; i < M; i++)  /* (one row left) */
        for (long jj = j; jj < N; jj++) {
            double s = 0.0;
            for (long k = 0; k < K; k++) s += A[i * ai + k * ak] * B[k * ldb + jj];
            C[i * N + jj] = s;
        }
}

/* A block of positions, rows x cols: listed one by one in idx (`at`), or, where they follow a
   pattern, as a layer's blocks usually do, given by it: position (i, j) is then
   base + i*outer + j*inner, and nothing is read from memory to find it. */
typedef struct { const idx_t *at; long base, outer, inner, cols; } block;
static long place(block p, long i, long j) {
    return p.at ? p.at[i * p.cols + j] : p.base + i * p.outer + j * p.inner;
}

/* A layer applied to a batch (the compiler's matrix-product groups): node v*U + u is the dot
   of weight vector u with input vector v, both m long, plus its own bias. Its part of idx
   says where they are, in three blocks: the weights (k, u), the inputs (k, v) and the biases
   (v, u), element k of each vector. It starts with three patterns (base, outer, inner), base
   -1 for a block listed instead, then the listed blocks in that order. */
static void layer_blocks(const idx_t *c, long U, long V, long m, block *w, block *x, block *b) {
    const idx_t *listed = c + 9;
    block *blocks[3] = {w, x, b};
    long rows[3] = {m, m, V}, cols[3] = {U, V, U};
    for (int k = 0; k < 3; k++) {
        *blocks[k] = (block){NULL, c[3 * k], c[3 * k + 1], c[3 * k + 2], cols[k]};
        if (c[3 * k] < 0) {
            blocks[k]->at = listed;
            listed += rows[k] * cols[k];
        }
    }
}

/* The nodes are one matrix product, X' W + biases, written straight into d: each adds its
   terms k = 0, 1, ... in turn, then its bias, as the one-node-at-a-time dot kernel does. The
   weights are copied into a dense block W[k*U + u]; the inputs too, X[k*V + v], unless they
   follow a pattern, which matmul can read where they are. */
static int f_layer(double *d, const idx_t *c, long start, long U, long V, long m) {
    block w, x, b;
    layer_blocks(c, U, V, m, &w, &x, &b);
    double *W = malloc(sizeof(double) * ((U + V) * m + U) + 1), *X = W + U * m, *bias = X + V * m;
    double *out = d + start;
    if (!W) return 1;  /* no memory: numpy redoes the call */
    for (long k = 0; k < m; k++)
        for (long u = 0; u < U; u++) W[k * U + u] = d[place(w, k, u)];
    if (x.at) {
        for (long k = 0; k < m; k++)
            for (long v = 0; v < V; v++) X[k * V + v] = d[place(x, k, v)];
        matmul(X, 1, V, W, U, out, V, m, U);
    } else {
        matmul(d + x.base, x.inner, x.outer, W, U, out, V, m, U);
    }
    if (!b.at && b.outer == 0) {  /* one bias a neuron: read once, added row by row */
        for (long u = 0; u < U; u++) bias[u] = d[b.base + u * b.inner];
        for (long v = 0; v < V; v++)
            for (long u = 0; u < U; u++) out[v * U + u] += bias[u];
    } else {
        for (long v = 0; v < V; v++)
            for (long u = 0; u < U; u++) out[v * U + u] += d[place(b, v, u)];
    }
    free(W);
    return 0;
}
/* Backward, with g[v*U + u] the nodes' gradients (in place in gr): the weights' gradients are
   the product X g (m x U) and the inputs' are g W' (V x m, W' the weights vector by vector);
   each bias gets its node's gradient (a bias shared by a neuron's nodes, their sum). They are
   added into gr once all are computed, so that a position that is several of them gets every
   share. */
static void b_layer(const double *d, double *gr, const idx_t *c, long start, long U, long V, long m) {
    block w, x, b;
    layer_blocks(c, U, V, m, &w, &x, &b);
    double *W = malloc(sizeof(double) * (2 * (U + V) * m + U) + 1);
    if (!W) { gr[0] = NAN; return; }  /* no memory: numpy redoes the pass */
    double *X = W + U * m, *gW = X + V * m, *gX = gW + U * m, *gb = gX + V * m;
    const double *g = gr + start, *Wt = W, *Xk = X;
    long ldw = m, xk = V, xv = 1;  /* W'(u, k) is Wt[u*ldw + k]; X(k, v) is Xk[k*xk + v*xv] */
    if (!w.at && w.outer == 1) {  /* each weight vector's elements one after the other */
        Wt = d + w.base, ldw = w.inner;
    } else {
        for (long k = 0; k < m; k++)
            for (long u = 0; u < U; u++) W[u * m + k] = d[place(w, k, u)];
    }
    if (!x.at) {
        Xk = d + x.base, xk = x.outer, xv = x.inner;
    } else {
        for (long k = 0; k < m; k++)
            for (long v = 0; v < V; v++) X[k * V + v] = d[place(x, k, v)];
    }
    matmul(Xk, xk, xv, g, U, gW, m, V, U);
    matmul(g, U, 1, Wt, ldw, gX, V, U, m);
    if (!b.at && b.outer == 0) {  /* one bias a neuron */
        double *restrict sums = gb;  /* (scratch, apart from the gradients: the loops vectorize) */
        const double *restrict gv = g;
        for (long u = 0; u < U; u++) sums[u] = 0.0;
        for (long v = 0; v < V; v++)
            for (long u = 0; u < U; u++) sums[u] += gv[v * U + u];
        for (long u = 0; u < U; u++) gr[b.base + u * b.inner] += sums[u];
    } else {
        for (long v = 0; v < V; v++)
            for (long u = 0; u < U; u++) gr[place(b, v, u)] += g[v * U + u];
    }
    for (long k = 0; k < m; k++)
        for (long u = 0; u < U; u++) gr[place(w, k, u)] += gW[k * U + u];
    if (!x.at) {  /* (the same, with the pattern's positions worked out as it goes) */
        double *restrict gx = gr + x.base;
        const double *restrict shares = gX;
        if (x.outer == 1 && x.inner == m)  /* the input vectors one after the other: one run */
            for (long i = 0; i < V * m; i++) gx[i] += shares[i];
        else
            for (long v = 0; v < V; v++)
                for (long k = 0; k < m; k++) gx[k * x.outer + v * x.inner] += shares[v * m + k];
    } else {
        for (long v = 0; v < V; v++)
            for (long k = 0; k < m; k++) gr[place(x, k, v)] += gX[v * m + k];
    }
    free(W);
}

static void b_layer_part(const double *d, double *gr, const idx_t *c, long start, long U, long V, long m,
                         const unsigned char *needed) {
    /* only the nodes marked in `needed`, one by one, as the dot kernel would */
    block w, x, b;
    layer_blocks(c, U, V, m, &w, &x, &b);
    for (long v = 0; v < V; v++)
        for (long u = 0; u < U; u++) {
            long j = v * U + u;
            if (!needed[start + j]) continue;
            double g = gr[start + j];
            for (long k = 0; k < m; k++) {
                gr[place(w, k, u)] += g * d[place(x, k, v)];
                gr[place(x, k, v)] += g * d[place(w, k, u)];
            }
            gr[place(b, v, u)] += g;
        }
}

/* A layer as a row of the table program: count = U*V nodes, m inputs a vector */
static int f_layer_row(double *d, const idx_t *c, long start, long count, long m, long U) {
    return f_layer(d, c, start, U, count / U, m);
}
static void b_layer_row(const double *d, double *gr, const idx_t *c, long start, long count, long m,
                        long U, const unsigned char *needed) {
    if (needed) b_layer_part(d, gr, c, start, U, count / U, m, needed);
    else b_layer(d, gr, c, start, U, count / U, m);
}

/* 0 when every number from `first` to `size` is finite: x * 0 is 0 (or -0) for a finite x and
   nan for an inf or a nan, and a nan stays in a sum. No early exit, and with GCC or Clang
   eight sums side by side in four vectors of two, so that no add waits for the one before. */
static int all_finite(const double *v, long first, long size) {
    long i = first;
    double total = 0.0;
#if defined(__GNUC__)
    typedef double two __attribute__((vector_size(16))); /* one SSE2 register */
    two s0 = {0.0, 0.0}, s1 = s0, s2 = s0, s3 = s0, x0, x1, x2, x3;
    for (; i + 8 <= size; i += 8) {
        memcpy(&x0, v + i, 16), memcpy(&x1, v + i + 2, 16);
        memcpy(&x2, v + i + 4, 16), memcpy(&x3, v + i + 6, 16);
        s0 += x0 * 0.0, s1 += x1 * 0.0, s2 += x2 * 0.0, s3 += x3 * 0.0;
    }
    s0 += s1 + s2 + s3;
    total = s0[0] + s0[1];
#endif
    for (; i < size; i++) total += v[i] * 0.0;
    return total == 0.0;
}
