/* The C helpers of the ops' kernels: what ops.py's C pieces call beyond <math.h>, each the C
   twin of a helper in ops.py (see its C records). Included by ops_kernels.h, so by both C
   programs that run op rules: the compiler's kernels (compiler/kernels.c) and _graph.c. */
#ifndef CHAINRULE_OPS_MATH_H
#define CHAINRULE_OPS_MATH_H

#include <math.h>

/* ops._sigmoid: exp never overflows, exp(-|x|) is at most 1 */
static inline double sigmoid(double x) {
    double e = exp(-fabs(x));
    return x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

/* ops._pow_base_grad: d/dx x**y, 0 at y == 0 even for a nan g */
static inline double pow_base_grad(double g, double x, double y) {
    return y == 0.0 ? 0.0 : g * (y * pow(x, y - 1.0));
}

/* ops._pow_exponent_grad: d/dy x**y */
static inline double pow_exponent_grad(double g, double out, double x) {
    if (isnan(out)) return g * out; /* a nan in x or y passes on */
    if (x < 0.0) return NAN;        /* not a real number: numpy's replay raises */
    return x == 0.0 ? 0.0 * g : g * (out * log(x));
}

/* ops._pow: nan for a negative base to a non-integer power (inf is none), so that the numpy
   replay raises eager's error */
static inline double real_pow(double x, double y) {
    return x < 0.0 && (y != floor(y) || isinf(y)) ? NAN : pow(x, y);
}

/* ops.take_index: the row `index` picks among `rows`, or -1 when it is not a whole number in
   range (then numpy's replay raises eager's error) */
static inline long take_row(double index, long rows) {
    if (!(index == floor(index)) || index < -rows || index >= rows) return -1;
    return index < 0.0 ? (long)index + rows : (long)index;
}

#endif
