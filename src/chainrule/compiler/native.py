"""The C backend of chainrule.compile: the tape as C, built with the system's C compiler.

``compile(fn, backend="c")`` replays the same tape as the numpy backend (backends/numpy.py),
but instead of one numpy call per group it runs one C loop per group:

- every op has a forward kernel and a backward kernel below (``f_mul``, ``b_mul``, ...). Node
  ``j`` of a group finds the positions of its inputs in ``c = idx + j * n`` (``n`` inputs per
  node), reads their numbers from ``d`` (the tape's data array) and writes its own at
  ``d[start + j]``; backward adds ``local derivative * g`` into ``gr`` at the inputs' positions;
- two kinds of group need no positions listed: a layer applied to a batch (``f_layer``, one
  matrix product, reading its weights, inputs and biases in place where they follow a
  pattern) and an op of one input on a run of consecutive inputs (``fr_relu``, ...);
- the tape becomes two functions, ``forward`` and ``backward``, that call the kernels group
  by group: one line per group, so a small network reads as a short C program
  (``CompiledFunction.source()`` shows it). Past ``STRAIGHT_LINE_GROUPS`` groups (a long chain
  has one group per node) they walk a table of groups instead, so the source stays small;
- the source is compiled once into a shared library named by its hash, in a cache folder, and
  called through ``ctypes`` on the same float64 arrays the numpy backend uses.

The table-walking program is the same for every tape, so pip builds it with chainrule
(``_tables.c``, written by ``tables_module_source()``): the default backend, ``"auto"``, runs
every tape on it, called straight from Python, and never needs a C compiler at run time.

The kernels do the arithmetic only. When a call meets anything unusual (a nan or inf in the
results, an out-of-range ``take`` index), the C result is dropped and the call is redone by
the numpy backend, which raises eager's error or passes the nan/inf on exactly as eager
does. So the two backends agree on every number and every error; C is just the fast road.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from .. import _settings, ops

STRAIGHT_LINE_GROUPS = 500  # past this many groups, the program walks a table (builds stay under 1 s)


class Unavailable(RuntimeError):
    """The C backend cannot run here (no C compiler, or an op it has no kernel for)."""


# ---------------------------------------------------------------------------------------------
# The kernels. X(k) is the number of the node's k-th input, GX(k) its gradient, OUT the node's
# own number and g its gradient. Each forward kernel returns 0, or 1 when an input is out of
# its domain in a way the arithmetic would not show (only take's index).

KERNELS = r"""
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

static double sigmoid(double x) {  /* exp never overflows: exp(-|x|) is at most 1 */
    double e = exp(-fabs(x));
    return x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}
static double pow_base_grad(double g, double x, double y) {  /* d/dx x**y, 0 at y == 0 even for a nan g */
    return y == 0.0 ? 0.0 : g * (y * pow(x, y - 1.0));
}
static double pow_exponent_grad(double g, double out, double x) {  /* d/dy x**y */
    if (isnan(out)) return g * out;  /* a nan in x or y passes on */
    if (x < 0.0) return NAN;  /* not a real number: numpy's replay raises */
    return x == 0.0 ? 0.0 * g : g * (out * log(x));
}
static double real_pow(double x, double y) {  /* nan for a negative base to a non-integer power
                                                 (inf is none), so that numpy's replay raises */
    return x < 0.0 && (y != floor(y) || isinf(y)) ? NAN : pow(x, y);
}

FORWARD(add) { EACH_NODE OUT = X(0) + X(1); return 0; }
BACKWARD(add) { EACH_NEEDED_NODE { GX(0) += G; GX(1) += G; } }

FORWARD(sub) { EACH_NODE OUT = X(0) - X(1); return 0; }
BACKWARD(sub) { EACH_NEEDED_NODE { GX(0) += G; GX(1) += -G; } }

FORWARD(mul) { EACH_NODE OUT = X(0) * X(1); return 0; }
BACKWARD(mul) { EACH_NEEDED_NODE { GX(0) += G * X(1); GX(1) += G * X(0); } }

FORWARD(div) { EACH_NODE OUT = X(0) / X(1); return 0; }
BACKWARD(div) { EACH_NEEDED_NODE { GX(0) += G / X(1); GX(1) += -G * (OUT / X(1)); } }

FORWARD(pow) { EACH_NODE OUT = real_pow(X(0), X(1)); return 0; }
BACKWARD(pow) {
    EACH_NEEDED_NODE { GX(0) += pow_base_grad(G, X(0), X(1)); GX(1) += pow_exponent_grad(G, OUT, X(0)); }
}
BACKWARD(rpow) { EACH_NEEDED_NODE { GX(0) += 0.0 * G; GX(1) += pow_exponent_grad(G, OUT, X(0)); } }
BACKWARD(pow_constant) { EACH_NEEDED_NODE { GX(0) += pow_base_grad(G, X(0), X(1)); GX(1) += 0.0 * G; } }

/* The ops of one input, each from two expressions: its number, of x, and the gradient it adds
   to x, of x, out and g. Besides f_ and b_, each gets fr_ and br_ for a run of nodes whose
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

UNARY(neg, -x, -g)
UNARY(exp, exp(x), g * out)
UNARY(log, log(x), g / x)
UNARY(tanh, tanh(x), g * (1.0 - out * out))
UNARY(sigmoid, sigmoid(x), g * out * (1.0 - out))
UNARY(relu, x < 0.0 ? 0.0 : x, x <= 0.0 ? 0.0 : g)  /* a nan passes through, and -0.0 */
/* softplus: max(x, 0) + log(1 + e^-|x|) */
UNARY(softplus, (x <= 0.0 ? 0.0 : x) + log1p(exp(-fabs(x))), g * sigmoid(x))

FORWARD(sum) {
    EACH_NODE { double s = 0.0; for (long k = 0; k < n; k++) s += X(k); OUT = s; }
    return 0;
}
BACKWARD(sum) { EACH_NEEDED_NODE for (long k = 0; k < n; k++) GX(k) += G; }

FORWARD(logsumexp) {  /* m + log(sum e^(x - m)), m the largest x */
    EACH_NODE {
        double m = X(0), s = 0.0;
        for (long k = 1; k < n; k++) if (X(k) > m || isnan(X(k))) m = X(k);
        if (isnan(m) || isinf(m)) { OUT = m; continue; }
        for (long k = 0; k < n; k++) s += exp(X(k) - m);
        OUT = m + log(s);
    }
    return 0;
}
BACKWARD(logsumexp) { EACH_NEEDED_NODE for (long k = 0; k < n; k++) GX(k) += G * exp(X(k) - OUT); }

FORWARD(dot) {  /* inputs w_1..w_m, x_1..x_m, b */
    long m = (n - 1) / 2;
    EACH_NODE { double s = 0.0; for (long k = 0; k < m; k++) s += X(k) * X(m + k); OUT = s + X(n - 1); }
    return 0;
}
BACKWARD(dot) {
    long m = (n - 1) / 2;
    EACH_NEEDED_NODE {
        for (long k = 0; k < m; k++) { GX(k) += G * X(m + k); GX(m + k) += G * X(k); }
        GX(n - 1) += G;
    }
}

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

static long picked(const double *d, const idx_t *c, long rows) {  /* take's row, or -1 */
    double index = X(0);
    if (!(index == floor(index)) || index < -rows || index >= rows) return -1;
    return index < 0.0 ? (long)index + rows : (long)index;
}
FORWARD(take) {  /* inputs: the index, then the rows to pick from */
    EACH_NODE { long p = picked(d, c, n - 1); if (p < 0) return 1; OUT = X(1 + p); }
    return 0;
}
BACKWARD(take) { EACH_NEEDED_NODE GX(1 + picked(d, c, n - 1)) += G; }

FORWARD(stop_gradient) { EACH_NODE OUT = X(0); return 0; }
BACKWARD(stop_gradient) { (void)d; (void)gr; (void)c; (void)start; (void)count; (void)n; (void)needed; }

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
"""

# chainrule's op name -> (forward kernel, backward kernel). ** shares pow's forward.
_KERNEL_NAMES = {
    "+": ("add", "add"),
    "-": ("sub", "sub"),
    "*": ("mul", "mul"),
    "/": ("div", "div"),
    "neg": ("neg", "neg"),
    "pow": ("pow", "pow"),
    "rpow": ("pow", "rpow"),
    "**": ("pow", "pow_constant"),
    "exp": ("exp", "exp"),
    "log": ("log", "log"),
    "tanh": ("tanh", "tanh"),
    "sigmoid": ("sigmoid", "sigmoid"),
    "relu": ("relu", "relu"),
    "softplus": ("softplus", "softplus"),
    "sum": ("sum", "sum"),
    "logsumexp": ("logsumexp", "logsumexp"),
    "dot": ("dot", "dot"),
    "take": ("take", "take"),
    "stop_gradient": ("stop_gradient", "stop_gradient"),
}


_FORWARD_KERNELS = sorted({f for f, _ in _KERNEL_NAMES.values()})  # a kernel's number in the table
_BACKWARD_KERNELS = sorted({b for _, b in _KERNEL_NAMES.values()})
_UNARY_KERNELS = set(re.findall(r"^UNARY\((\w+),", KERNELS, re.MULTILINE))  # with fr_ and br_ too
LAYER = max(len(_FORWARD_KERNELS), len(_BACKWARD_KERNELS))  # a layer's kernel number, both ways
ROW = 7  # numbers per row of the table: kernel, start, count, inputs, offset, backward kernel, and
# a layer's number of neurons, or -1 for a run of one-input nodes (see UNARY), else 0


def _kernels_for(rule):
    names = _KERNEL_NAMES.get(rule.name)
    if names is None or ops.OPS.get(rule.name) is not rule:
        raise Unavailable(f"the C backend has no kernel for the op {rule.name!r}")
    return names


# ---------------------------------------------------------------------------------------------
# The program: the kernels, then forward() and backward() for this tape.


def program_source(groups, size: int, first: int) -> str:
    """C source for a tape whose groups are ``(rule, start, count, n_inputs, idx_offset, kind)``.

    ``idx_offset`` is where the group's input positions start in ``idx``, node after node.

    ``kind`` is None; or ``("layer", U, V, m)`` for a layer applied to a batch (a matrix
    product), its positions then at ``idx_offset`` as f_layer reads them; or ``("run", from)``
    for nodes of one input whose inputs lie one after the other from position ``from``.

    ``first`` is the position of the first computed node (the leaves come before it).
    """
    lines = [KERNELS]
    if len(groups) <= STRAIGHT_LINE_GROUPS:
        lines.append("/* forward: one line per group of nodes with the same op and depth */")
        lines.append("int forward(double *d, const idx_t *idx) {")
        lines.append("    int bad = 0;")
        for rule, start, count, n, offset, kind in groups:
            f, _ = _kernels_for(rule)
            if kind is None:
                call = f"f_{f}(d, idx + {offset}, {start}, {count}, {n});  /* {count} x {rule.name} */"
            elif kind[0] == "run":
                call = f"fr_{f}(d, {kind[1]}, {start}, {count});  /* {count} x {rule.name}, in a run */"
            else:
                _, U, V, m = kind
                call = f"f_layer(d, idx + {offset}, {start}, {U}, {V}, {m});  /* {U} neurons x {V} inputs */"
            lines.append(f"    bad |= {call}")
        lines.append(f"    return bad || !all_finite(d, {first}, {size});")
        lines.append("}")
        lines.append("")
        lines.append("/* backward: the same groups in reverse, each adding into its inputs' gradients */")
        lines.append(
            "int backward(const double *d, double *gr, const idx_t *idx, const unsigned char *needed) {"
        )
        for rule, start, count, n, offset, kind in reversed(groups):
            _, b = _kernels_for(rule)
            call = f"b_{b}(d, gr, idx + {offset}, {start}, {count}, {n}, needed);"
            if kind is not None and kind[0] == "run":
                call = f"br_{b}(d, gr, {kind[1]}, {start}, {count}, needed);"
            elif kind is not None:  # with a mask (part of the nodes needed), node by node
                blocks = f"idx + {offset}, {start}, {', '.join(map(str, kind[1:]))}"
                call = f"if (needed) b_layer_part(d, gr, {blocks}, needed); else b_layer(d, gr, {blocks});"
            lines.append(f"    {call}")
        lines.append(f"    return !all_finite(gr, 0, {size});")
        lines.append("}")
        return "\n".join(lines) + "\n"
    # A long program: the groups come as a table, one row per group (see backends/table.py).
    for rule, *_ in groups:
        _kernels_for(rule)
    return table_program()


def table_program() -> str:
    """The program of every long tape: the kernels, and forward() and backward() walking a table
    of groups. The tape's sizes are arguments, so this source is the same for every tape: it is
    built once (by pip, as chainrule/compiler/_tables.c, when chainrule is installed; else
    the first time a long tape needs it, into the cache)."""
    lines = [KERNELS]
    lines.append(
        "/* forward: walk the table of groups; a row is (kernel, start, count, inputs, offset, ...);"
    )
    lines.append("   a layer's row has its number of neurons last */")
    lines.append(
        "int forward(double *d, const idx_t *idx, const int64_t *t, long n_groups, long first, long size) {"
    )
    lines.append("    int bad = 0;")
    lines.append(f"    for (long i = 0; i < n_groups; i++, t += {ROW}) {{")
    lines.append("        switch (t[0]) {")
    for code, name in enumerate(_FORWARD_KERNELS):
        call = f"f_{name}(d, idx + t[4], t[1], t[2], t[3])"
        if name in _UNARY_KERNELS:
            call = f"(t[6] < 0 ? fr_{name}(d, idx[t[4]], t[1], t[2]) : {call})"
        lines.append(f"        case {code}: bad |= {call}; break;")
    lines.append(f"        case {LAYER}: bad |= f_layer_row(d, idx + t[4], t[1], t[2], t[3], t[6]); break;")
    lines.append("        }")
    lines.append("    }")
    lines.append("    return bad || !all_finite(d, first, size);")
    lines.append("}")
    lines.append("")
    lines.append(
        "/* backward: the same table from its last row; a row's last number is its backward kernel */"
    )
    lines.append("int backward(const double *d, double *gr, const idx_t *idx, const unsigned char *needed,")
    lines.append("             const int64_t *t, long n_groups, long first, long size) {")
    lines.append("    for (long i = n_groups - 1; i >= 0; i--) {")
    lines.append(f"        const int64_t *row = t + {ROW} * i;")
    lines.append("        switch (row[5]) {")
    for code, name in enumerate(_BACKWARD_KERNELS):
        call = f"b_{name}(d, gr, idx + row[4], row[1], row[2], row[3], needed)"
        if name in _UNARY_KERNELS:
            call = f"if (row[6] < 0) br_{name}(d, gr, idx[row[4]], row[1], row[2], needed); else {call}"
        lines.append(f"        case {code}: {call}; break;")
    lines.append(
        f"        case {LAYER}: "
        "b_layer_row(d, gr, idx + row[4], row[1], row[2], row[3], row[6], needed); break;"
    )
    lines.append("        }")
    lines.append("    }")
    lines.append("    (void)first;")
    lines.append("    return !all_finite(gr, 0, size);")
    lines.append("}")
    return "\n".join(lines) + "\n"


TABLES_MODULE = Path(__file__).with_name("_tables.c")


# The end of _tables.c: forward() and backward() for Python. Each takes the tape's arrays as
# buffers (numpy arrays), checks their kinds and sizes, and runs with the GIL released, as a
# ctypes call does.
TABLES_MODULE_TAIL = r"""
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
"""


def tables_module_source() -> str:
    """The text of chainrule/compiler/_tables.c: table_program() as a Python extension module, so
    that pip builds it with chainrule. Made by this function; a test checks the file is current."""
    head = (
        "/* Generated by chainrule.compiler.native.tables_module_source(): do not edit; after changing\n"
        "   the kernels or table_program() in native.py, write it afresh with\n"
        '   python -c "from chainrule.compiler import native; native.TABLES_MODULE.write_text('
        'native.tables_module_source())"\n\n'
        "   The C backend's table program (native.table_program()), built once by pip when chainrule\n"
        "   is installed, so that any tape replays in C without a C compiler at run time (the\n"
        '   default backend, "auto", and the numpy backend\'s thin tapes). At the end, its forward()\n'
        "   and backward() as Python functions on numpy arrays: no ctypes on the way. */\n"
        "#define PY_SSIZE_T_CLEAN\n#include <Python.h>\n\n"
    )
    tail = TABLES_MODULE_TAIL.replace("ROW", str(ROW))
    return head + table_program() + tail


@functools.lru_cache(maxsize=1)
def prebuilt_tables():
    """The module pip built from _tables.c (its forward() and backward() take numpy arrays);
    None if it was not built (or CHAINRULE_PURE_PYTHON is set, or its kernels are not the ones
    this file knows)."""
    from .. import engine

    if engine._graph is None:  # no C extensions at all
        return None
    try:
        from . import _tables
    except ImportError:
        return None
    if TABLES_MODULE.exists() and TABLES_MODULE.read_text() != tables_module_source():
        return None  # a checkout whose _tables.c was not rebuilt after native.py changed
    return _tables


# ---------------------------------------------------------------------------------------------
# Building: the system C compiler, a cache folder, ctypes.


def pure_python() -> bool:
    """Whether $CHAINRULE_PURE_PYTHON asks for Python alone: then no C is built or loaded."""
    return _settings.pure_python()


def c_compiler() -> list[str] | None:
    """The command of the C compiler to use: $CC if set, else cc, gcc or clang; None if none."""
    if _settings.c_compiler():
        command = shlex.split(_settings.c_compiler())
        return command if command and shutil.which(command[0]) else None
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def _cache_parts() -> tuple[Path, tuple[str, ...]]:
    """The cache folder as two parts: the folder the user names (or the XDG default), and the
    folders under it that are chainrule's own."""
    if _settings.cache_folder():
        return Path(_settings.cache_folder()), ("c",)
    base = _settings.xdg_cache_home() or Path.home() / ".cache"
    return Path(base), ("chainrule", "c")


def cache_dir() -> Path:
    """Where built programs are kept: $CHAINRULE_CACHE, else $XDG_CACHE_HOME/chainrule, else ~/.cache."""
    base, own = _cache_parts()
    return base.joinpath(*own)


# -O2: a layer's sixteen running sums kept in registers (at -O1 they go through memory, 1.5x
# slower), for about the same build time; no fused multiply-add, so the products round as
# numpy's do. These come after any flags in $CC, and of two contrary flags the last wins: so
# $CC="gcc -ffast-math" cannot let the compiler assume there is never a nan or an inf, which
# would drop the checks that send such a call to numpy (log(-1) must raise eager's ValueError).
FLAGS = [
    "-O2",
    "-ffp-contract=off",
    "-fno-fast-math",
    "-fno-finite-math-only",
    "-fno-unsafe-math-optimizations",
    "-fno-associative-math",
    "-fno-reciprocal-math",
    "-fsigned-zeros",
    "-fPIC",
    "-shared",
]

# Appended to every program of kernels that build() compiles, and run once before the library
# is used: a compiler that ignored the flags above would fail it, and its build is not used.
SELF_TEST = r"""
/* Added by native.build(): 1 when this build still tells a nan and an inf from a number. Flags
   such as -ffast-math let the compiler assume it never meets one and drop the checks that send
   such a call, and so every domain error, to numpy. */
int chainrule_self_test(void) {
    volatile double not_a_number = NAN, infinite = INFINITY, minus_one = -1.0;
    double v[9] = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0};
    int works = all_finite(v, 0, 9);
    v[1] = not_a_number; /* in all_finite's vector loop */
    works &= !all_finite(v, 0, 9) && isnan(v[1]);
    v[1] = 1.0, v[8] = -infinite; /* in its scalar tail */
    works &= !all_finite(v, 0, 9) && isinf(v[8]);
    v[8] = log(minus_one);
    works &= !all_finite(v, 0, 9);
    return works;
}
"""

# The cache's safety rules. Loading a library runs its code (a constructor runs at load), so
# build() loads only libraries this user built, checked:
# - the folders it makes get mode 0700, whatever the umask. chainrule's own folders (``c``, and
#   ``chainrule`` under XDG) must be real folders, not symlinks, owned by this user and not
#   writable by group or others; every folder above them (symlinks resolved) must be owned by
#   this user or root and not writable by group or others, unless it has the sticky bit (as
#   /tmp has: no one else can then rename what is in it). So no one else can swap any folder on
#   the way, and the checked paths stay the checked folders. A folder that breaks a rule is
#   refused: numpy runs (with one warning for backend="c").
# - next to each library, a record of its key and the sha256 of its bytes, written when it was
#   built. A library file is read only if, opened without following a symlink, it is a regular
#   file of this user that no one else can write; and used only if its bytes hash to the
#   record. The bytes that were hashed are the bytes loaded: they are copied to a new private
#   file (a random name, made with O_EXCL), which is loaded and removed. A file cut short or
#   changed after the check can then never be mapped (a library cut short, once mapped, is a
#   SIGBUS when the loader reads past its end).
# - the library must then have the symbols asked for and pass SELF_TEST. Anything that fails a
#   check is built afresh and replaces the entry (a rename, atomic); if that fails, Unavailable.
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH
_MOST_BYTES = 64 * 2**20  # a library larger than this is not one of ours
_loaded: dict[tuple[Path, str], ctypes.CDLL] = {}  # (folder, key) -> loaded in this process


def _program_text(source: str) -> str:
    """What build() compiles for ``source``: a program of kernels gets SELF_TEST."""
    return source + SELF_TEST if "static int all_finite(" in source else source


def _cache_key(compiler: list[str], source: str) -> str:
    return hashlib.sha256("\0".join([*compiler, *FLAGS, _program_text(source)]).encode()).hexdigest()


def library_path(compiler: list[str], source: str) -> Path:
    """Where the library built from ``source`` by ``compiler`` is cached: named by their hash."""
    return cache_dir() / f"tape-{_cache_key(compiler, source)[:24]}.so"


def _make_private(folder: Path) -> None:
    """Make ``folder`` and its missing parents, each with mode 0700 (mkdir's mode goes through
    the umask, which may also take the owner's bits: chmod sets it as asked)."""
    missing = []
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue  # made meanwhile by another process: checked below like any other
        os.chmod(path, 0o700)


def _unsafe(st: os.stat_result, own: bool) -> str | None:
    """Why a folder with this stat breaks the cache's rules (see above), or None."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    owners = {os.getuid()} if own else {os.getuid(), 0}
    if st.st_uid not in owners:
        return f"is owned by another user (uid {st.st_uid})"
    if st.st_mode & _WRITABLE_BY_OTHERS and (own or not st.st_mode & stat.S_ISVTX):
        return "is writable by group or others"
    return None


def _private_folder() -> Path:
    """The cache folder, made if missing and checked (see the rules above); Unavailable, saying
    which folder and why, if it breaks a rule."""
    base, own = _cache_parts()
    folder = base.joinpath(*own)
    try:
        _make_private(folder)
        real = Path(os.path.realpath(base))
        checks = [(path, os.stat(path), False) for path in (real, *real.parents)]
        for name in own:
            real = real / name
            checks.append((real, os.lstat(real), True))
    except OSError as error:
        raise Unavailable(f"cannot make the cache folder {folder}: {error}") from None
    for path, st, is_own in checks:
        reason = _unsafe(st, is_own)
        if reason:
            raise Unavailable(
                f"the cache folder {path} {reason}: not used (see README, the C backend's cache)"
            )
    return real


def _read_checked(folder: Path, name: str) -> bytes | None:
    """The bytes of ``folder/name`` if it is a regular file of this user that no one else can
    write (checked on the opened file, opened without following a symlink); else None."""
    try:
        fd = os.open(folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None  # missing, or a symlink
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & _WRITABLE_BY_OTHERS:
            return None
        chunks, size = [], 0
        while size <= _MOST_BYTES:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        return None
    except OSError:
        return None
    finally:
        os.close(fd)


def _record(key: str, data: bytes) -> bytes:
    """The record kept next to a library: its whole key and the sha256 of its bytes (the key
    too, so that no other entry's record, copied or linked here, can vouch for it)."""
    return f"{key} {hashlib.sha256(data).hexdigest()}\n".encode()


def _load(folder: Path, key: str, data: bytes, symbols) -> ctypes.CDLL:
    """Load ``data``, a library's checked bytes, from a private copy (see the rules above);
    Unavailable if it does not load, lacks one of ``symbols`` or fails SELF_TEST (run when
    ``symbols`` names it)."""
    # The key in the name: the loader takes a name it has loaded before for that library, so
    # a name made again after the copy is removed must be a copy of the same program.
    fd, copy = tempfile.mkstemp(prefix=f".load-{key[:24]}-", suffix=".so", dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        library = ctypes.CDLL(copy)
    except OSError as error:
        raise Unavailable(f"cannot load the library tape-{key[:24]}.so: {error}") from None
    finally:
        os.unlink(copy)  # the loaded library stays mapped
    _check_symbols(library, key, symbols)
    if "chainrule_self_test" in symbols and library.chainrule_self_test() != 1:
        raise Unavailable(
            "the C compiler's flags drop the checks for nan and inf (-ffast-math in $CC?): "
            "its build is not used"
        )
    return library


def _check_symbols(library: ctypes.CDLL, key: str, symbols) -> None:
    missing = [name for name in symbols if not hasattr(library, name)]
    if missing:
        raise Unavailable(f"the library tape-{key[:24]}.so has no {', '.join(missing)}")


def _from_cache(folder: Path, key: str, symbols) -> ctypes.CDLL | None:
    """The library cached for ``key``, checked and loaded; None if there is none that passes."""
    name = f"tape-{key[:24]}"
    data, record = _read_checked(folder, name + ".so"), _read_checked(folder, name + ".sha256")
    if data is None or record != _record(key, data):
        return None
    try:
        return _load(folder, key, data, symbols)
    except Unavailable:
        return None  # built afresh


def _compile(compiler: list[str], folder: Path, text: str) -> bytes:
    """The bytes of the library the C compiler builds from ``text``, in a private scratch folder."""
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as scratch:
            c_file, built = Path(scratch) / "tape.c", Path(scratch) / "tape.so"
            c_file.write_text(text)
            run = subprocess.run(
                [*compiler, *FLAGS, "-o", str(built), str(c_file), "-lm"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if run.returncode != 0:
                lines = run.stderr.strip().splitlines() or ["no message"]
                message = next((line for line in lines if "error" in line), lines[0])
                raise Unavailable(f"the C compiler failed: {message}")
            data = _read_checked(Path(scratch), "tape.so")
    except OSError as error:
        raise Unavailable(f"cannot build in {folder}: {error}") from None
    except subprocess.TimeoutExpired:
        raise Unavailable("the C compiler took over 120 s") from None
    if data is None:
        raise Unavailable("the C compiler wrote no library")
    return data


def _store(folder: Path, key: str, data: bytes) -> None:
    """Keep ``data`` and its record in the cache, each written whole and then renamed into place
    (atomic: another process never sees half a file)."""
    name = f"tape-{key[:24]}"
    for target, content in ((name + ".so", data), (name + ".sha256", _record(key, data))):
        fd, temporary = tempfile.mkstemp(prefix=".store-", dir=folder)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(content)
            os.replace(temporary, folder / target)
        except OSError as error:
            Path(temporary).unlink(missing_ok=True)
            raise Unavailable(f"cannot store {target} in {folder}: {error}") from None


def build(source: str, symbols=("forward", "backward")) -> ctypes.CDLL:
    """The shared library built from ``source``, with the functions ``symbols``: from the cache
    when this user built it before and it passes the checks (see the rules above), else built
    afresh and stored there. Unavailable, with the reason, when it cannot be."""
    if pure_python():
        raise Unavailable("CHAINRULE_PURE_PYTHON is set: no C is built or loaded")
    compiler = c_compiler()
    if compiler is None:
        raise Unavailable("no C compiler found (set CC, or install gcc or clang)")
    key, folder = _cache_key(compiler, source), _private_folder()
    library = _loaded.get((folder, key))
    if library is None:
        text = _program_text(source)
        checks = (*symbols, "chainrule_self_test") if text != source else tuple(symbols)
        library = _from_cache(folder, key, checks)
        if library is None:
            data = _compile(compiler, folder, text)
            library = _load(folder, key, data, checks)
            _store(folder, key, data)
        _loaded[folder, key] = library
    _check_symbols(library, key, symbols)
    return library


def _pattern(np, positions):
    """``(base, outer, inner)`` when every ``positions[i, j]`` is ``base + i*outer + j*inner``,
    else None."""
    rows, cols = positions.shape
    if rows == 0 or cols == 0:
        return None
    base = int(positions[0, 0])
    outer = int(positions[1, 0]) - base if rows > 1 else 0
    inner = int(positions[0, 1]) - base if cols > 1 else 0
    pattern = base + outer * np.arange(rows)[:, None] + inner * np.arange(cols)
    return (base, outer, inner) if np.array_equal(positions, pattern) else None


def _in_a_run(np, group):
    """Whether the group's nodes have one input each, one after the other, and a kernel for that."""
    children = group.children
    if children.shape[0] != 1 or children.shape[1] < 2:
        return False
    try:
        kernel, _ = _kernels_for(group.rule)
    except Unavailable:
        return False  # (which the group's row then reports)
    return kernel in _UNARY_KERNELS and bool((np.diff(children[0]) == 1).all())


def _table_kind(kind) -> int:
    """A row's kind as the table's last number: a layer's number of neurons, -1 for a run, else 0."""
    if kind is None:
        return 0
    return -1 if kind[0] == "run" else kind[1]


def tape_rows(np, groups):
    """The groups as rows ``(rule, start, count, n_inputs, idx_offset, kind)`` (see
    program_source) and ``idx``: every group's input positions, node by node, in one int32
    array; a layer's are its three blocks of weight, input and bias positions instead, each as a
    pattern where it follows one (see f_layer), and a run's just where its inputs start."""
    rows, blocks, offset = [], [], 0
    for group in groups:
        count = group.end - group.start
        if hasattr(group, "weights"):  # backends/numpy.py's _MatmulGroup: weights (m, U), inputs (m, V)
            (m, U), V = group.weights.shape, group.inputs.shape[1]
            patterns, listed = [], []  # as f_layer reads them
            for positions in (group.weights, group.inputs, group.bias.reshape(V, U)):
                pattern = _pattern(np, positions)
                patterns += pattern or (-1, 0, 0)
                if pattern is None:
                    listed.append(positions.ravel())
            blocks += [np.array(patterns), *listed]
            rows.append((group.rule, group.start, count, m, offset, ("layer", U, V, m)))
            offset += len(patterns) + sum(map(len, listed))
        elif _in_a_run(np, group):
            from_ = int(group.children[0, 0])
            blocks.append(np.array([from_]))
            rows.append((group.rule, group.start, count, 1, offset, ("run", from_)))
            offset += 1
        else:
            n = group.children.shape[0]
            blocks.append(group.children.ravel(order="F"))  # node after node
            rows.append((group.rule, group.start, count, n, offset, None))
            offset += n * count
    return rows, np.concatenate(blocks).astype(np.int32) if blocks else np.zeros(1, dtype=np.int32)

