"""The table of primitive operations: every op chainrule knows, one entry each.

An entry holds two functions side by side:

- ``forward(*xs)`` computes the op's value from its inputs' float data, and raises
  ``ValueError`` or ``ZeroDivisionError`` with a short message when an input is outside
  the op's domain;
- ``backward(g, out, *xs)`` is the vector-Jacobian product: given the gradient ``g`` of the
  final result with respect to this op's output ``out``, it returns one gradient per input
  (``None`` for an input that is a constant by construction).

For ``chainrule.compile``, which replays a traced graph over numpy arrays, an entry also has
vectorized forms that act on a whole group of nodes with the same op at once:

- ``vforward(np, X)`` takes the inputs as a matrix ``X`` (one row per input, one column per
  node, so ``X[0]`` is every node's first input) and returns a vector of outputs. numpy is
  passed in as ``np``, so the core never imports it. A domain error comes out as nan/inf;
  the compiler then re-runs ``forward`` on those nodes to raise eager's error;
- ``vbackward(np, g, out, X)`` returns the input gradients, one row per input, like ``X``.
  When it is omitted, the scalar ``backward`` rule is run on the rows of ``X``: plain arithmetic works on
  arrays as it does on floats.

Backward rules use only arithmetic (``+ - * / **``) and the helpers below, never ``math``
directly. Called with floats they are the fast first-order path; called with Values they
build a graph of the gradient itself, which is how higher-order derivatives come out of the
same rules.

An entry also carries what the rest of chainrule shows or builds of the op, so that no other
file keeps a table of ops:

- ``hint``: the rule in words, shown by the explorer (``chainrule explore``) beside the node;
- ``names``: the op's names in the expression language (``chainrule grad "tanh(x)"``), for an
  op a user calls as a function there; the Value method of that name applies it;
- ``c``: its C kernel, as a few C expressions (:class:`C`). ``chainrule/c_kernels.py`` writes
  them into ``chainrule/ops_kernels.h``, which both C programs include: the compiler's group
  kernels (``compiler/kernels.c``, built into ``compiler/_tables``) and the backward loop of
  ``_graph.c``. So every derivative is written twice, once here in Python (the reference)
  and once in C, and tests compare the two bit for bit.

Adding an op is one ``defop(...)`` record here (with a method or function that applies it)
plus one test: ``tests/test_op_table.py`` walks this table and checks that every path has
every op; after adding one, write the header afresh as its first lines say.
"""

from __future__ import annotations

import functools
import math
import numbers
import sys
from operator import add, mul
from typing import Any


class C:
    """An op's kernel in C: small pieces of C, from which c_kernels.py writes ops_kernels.h.

    ``kernel`` names the C functions (``op_tanh_value``, ``op_tanh_grad``, the compiler's
    ``f_tanh`` and ``b_tanh``). ``shape`` says what the pieces are:

    - ``"unary"``: ``value`` is an expression of ``x``; ``grads`` one expression of ``g``,
      ``out`` and ``x``, the gradient passed to ``x``;
    - ``"binary"``: ``value`` of ``x`` and ``y``; ``grads`` two, of ``g``, ``out``, ``x``, ``y``;
    - ``"each"`` (n inputs, all alike): ``value`` is a function body (a tuple of lines) that
      returns the number from ``IN(k)``, input k of ``n``; ``grads`` one expression of ``g``,
      ``out`` and ``x``, the gradient of each input ``x``;
    - ``"pairs"`` (inputs ``w_1..w_m, x_1..x_m, b``): ``value`` as for ``"each"``; ``grads``
      three: of each ``w`` and each ``x`` (of ``g``, ``out``, ``w``, ``x``), and of ``b``;
    - ``"nodes"``: ``value`` is a function body (lines) that writes ``*out`` and returns 0, or 1
      when an input is out of the op's domain in a way the arithmetic would not show; ``grads`` one
      body of statements adding into ``GRAD(k)``, input k's gradient, from ``g`` and ``out``.

    ``forward_of`` names another kernel whose forward this op shares (``value`` is then None).
    The helpers the pieces call (``sigmoid``, ``real_pow``, ...) are in ``ops_math.h``.
    """

    __slots__ = ("kernel", "shape", "value", "grads", "forward_of")

    def __init__(self, kernel, shape, value, grads, forward_of=None):
        self.kernel, self.shape, self.value = kernel, shape, value
        self.grads, self.forward_of = tuple(grads), forward_of

    @property
    def forward_kernel(self) -> str:
        """The kernel that computes this op's number: its own, or the one it shares."""
        return self.forward_of or self.kernel


class Op:
    """A primitive operation: its name, its forward function and its backward rule, and what
    the rest of chainrule shows or builds of it (see the module's doc)."""

    __slots__ = ("name", "forward", "backward", "vforward", "vbackward", "hint", "names", "c")

    def __init__(
        self, name, forward, backward, vforward=None, vbackward=None, *, hint=None, names=(), c=None
    ):
        self.name = name
        self.forward = forward
        self.backward = backward
        self.vforward = vforward
        self.vbackward = vbackward or (lambda np, g, out, X: backward(g, out, *X))
        self.hint = hint
        self.names = tuple(names)
        self.c = c

    def __repr__(self):
        return f"Op({self.name!r})"

    def __reduce__(self):
        # An op holds lambdas, which pickle cannot store; a registered op is stored by its name
        # and comes back as the same object from the table (so copy and deepcopy return it too).
        if OPS.get(self.name) is not self:
            raise TypeError(f"cannot pickle or copy {self!r}: only the ops in chainrule.ops.OPS can be")
        return _registered_op, (self.name,)


OPS: dict[str, Op] = {}


def _registered_op(name: str) -> Op:
    """The op registered under ``name``: how a pickled op is restored."""
    return OPS[name]


def defop(name, forward, backward, vforward=None, vbackward=None, *, hint=None, names=(), c=None):
    """Register an op under ``name`` and return it."""
    op = Op(name, forward, backward, vforward, vbackward, hint=hint, names=names, c=c)
    OPS[name] = op
    return op


# ---------------------------------------------------------------------------------------------
# Helpers that work on floats and on Values alike, so that backward rules can use them.


def _data(x):
    """The float inside ``x``: ``x`` itself for a float, ``x.data`` for a Value."""
    return x if type(x) is float else x.data


def _log(x):
    return math.log(x) if type(x) is float else x.log()


def _exp_of(x):
    return _exp(x) if type(x) is float else x.exp()


def _sigmoid_of(x):
    return _sigmoid(x) if type(x) is float else x.sigmoid()


def _zero_like(g):
    """A gradient that is exactly 0 whatever ``g`` is, even nan or inf: PyTorch's ``where(mask,
    0, ...)`` in a rule, where ``0 * g`` would pass a nan on. When ``g`` is a Value
    (create_graph) it is None, the rules' word for "nothing passes back": the same exact 0,
    whose slope in ``g`` is 0 too."""
    return 0.0 if type(g) is float else None


# ---------------------------------------------------------------------------------------------
# Forward functions that need more than one expression.


def _div(x, y):
    if y == 0.0:
        raise ZeroDivisionError(f"division by zero ({x!r} / {y!r})")
    return x / y


def _pow(x, y):
    if x < 0.0 and not y.is_integer() and not math.isnan(y):  # a nan exponent passes nan on
        raise ValueError(f"a negative base ({x!r}) to a non-integer power ({y!r}) is not a real number")
    if x == 0.0 and y < 0.0:
        raise ZeroDivisionError(f"0.0 cannot be raised to a negative power ({y!r})")
    try:
        return x**y
    except OverflowError:  # IEEE floats overflow to infinity; Python's ** raises instead
        negative = x < 0.0 and y % 2.0 == 1.0
        return -math.inf if negative else math.inf


def _exp(x):
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _log_forward(x):
    if x <= 0.0:
        raise ValueError(f"log is defined only for positive numbers, got {x!r}")
    return math.log(x)


def _sigmoid(x):
    # Two branches so that exp never overflows: exp(-|x|) is at most 1.
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _add_up_left_to_right(numbers):
    return functools.reduce(add, numbers, 0)


# A sum of floats added left to right, one rounding per term, as the C kernels add them.
# Python's sum() does so up to 3.11; from 3.12 it compensates the roundings, which can change
# the last bit, so there the same loop runs through reduce.
add_up = sum if sys.version_info < (3, 12) else _add_up_left_to_right


def _softplus(x):
    # log(1 + e^x) = max(x, 0) + log(1 + e^-|x|): the exp never overflows.
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _logsumexp(*xs):
    # log(sum e^x) = m + log(sum e^(x - m)) with m the largest x: every exp is at most 1.
    m = max(xs)
    if math.isinf(m):  # max() skips a nan after an inf, which must still come out
        return math.nan if any(map(math.isnan, xs)) else m
    return m + math.log(add_up(math.exp(x - m) for x in xs))


def _vlogsumexp(np, X):
    m = X.max(axis=0)
    finite_m = np.where(np.isinf(m), 0.0, m)
    return np.where(np.isinf(m), m, finite_m + np.log(np.exp(X - finite_m).sum(axis=0)))


def _dot(*xs):
    # Inputs are w_1..w_n, x_1..x_n, b: one node for a neuron's w.x + b.
    n = len(xs) // 2
    return add_up(map(mul, xs[:n], xs[n : 2 * n])) + xs[-1]


def _dot_backward(g, out, *xs):
    n = len(xs) // 2
    return (*[g * x for x in xs[n : 2 * n]], *[g * w for w in xs[:n]], g)


def _pow_base_grad(g, x, y):
    # d/dx x**y = y * x**(y-1), multiplied as PyTorch does, g * (y * x**(y-1)), so that an
    # overflow or an inf * 0 lands alike. At y == 0 it is 0, even at x == 0 and for a nan g.
    # A Value exponent (create_graph) builds the graph even there, since the slope in y of this
    # gradient, g / x, need not vanish; but only where that slope is finite: elsewhere the
    # graph's number would be nan (0 * inf), not the 0.
    if type(y) is float:
        if y == 0.0:
            return _zero_like(g)
        if type(x) is float:
            return g * (y * _pow(x, y - 1.0))  # overflows to inf, as the forward pass does
    elif _data(y) == 0.0 and not _finite_ratio(g, x):
        return _zero_like(g)
    return g * (y * x ** (y - 1.0))


def _finite_ratio(g: Any, x: Any) -> bool:  # (floats, or Values when a gradient's graph is built)
    """Whether g / x is a finite number (1 / x of a subnormal x overflows)."""
    g, x = _data(g), _data(x)
    return x != 0.0 and math.isfinite(g) and math.isfinite(1.0 / x)


def _pow_exponent_grad(g, out, x):
    # d/dy x**y = x**y * log(x), defined for x > 0 and, as a limit, for x == 0 (PyTorch:
    # g * 0 there). A nan in x or y (then out is nan) passes on as nan, as in every op,
    # instead of a domain error.
    if _data(x) > 0.0 or math.isnan(_data(x)):
        return g * (out * _log(x))
    if math.isnan(_data(out)):
        return g * out
    if _data(x) == 0.0:
        return 0.0 * g
    raise ValueError(f"the derivative of x ** y with respect to y needs x > 0, got x = {_data(x)!r}")


def _pow_backward(g, out, x, y):
    return _pow_base_grad(g, x, y), _pow_exponent_grad(g, out, x)


def _pow_constant_backward(g, out, x, c):
    # The exponent is a constant: use its float, so a graph of this gradient stays a power of x.
    return _pow_base_grad(g, x, _data(c)), None


def _rpow_backward(g, out, c, y):
    # The base is a constant: only the exponent gets a gradient.
    return None, _pow_exponent_grad(g, out, c)


def take_index(index: float, n: int) -> int:
    """``index`` as a position in ``n`` rows, checked as list indexing checks it (negatives count
    from the end), with the error ``chainrule.take`` raises eagerly and on a compiled replay."""
    if isinstance(index, bool) or not isinstance(index, numbers.Real) or not _is_whole(index):
        raise TypeError(f"take: index must be an integer, got {index!r}")
    if not -n <= index < n:
        raise IndexError(f"take: index {int(index)} is out of range for {n} rows")
    return int(index) % n


def _is_whole(x: float) -> bool:
    try:
        return x == int(x)
    except (ValueError, OverflowError):  # nan, inf
        return False


def _take_backward(g, out, index, *rows):
    # Only the picked row gets a gradient; the index picks, it has no slope.
    picked = take_index(_data(index), len(rows))
    return (None, *[g if i == picked else None for i in range(len(rows))])


# ---------------------------------------------------------------------------------------------
# Vectorized forms that differ from the scalar ones (numpy arrives as ``np``; see the module doc).


def _vsigmoid(np, X):
    x = X[0]
    e = np.exp(-np.abs(x))  # never overflows, as in _sigmoid
    return np.where(x >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


def _vpow(np, X):
    # A negative base to a power that is not an integer (inf is not one either) comes out nan,
    # even where numpy finds a number ((-0.7) ** inf is 0): the compiler then re-runs _pow there,
    # which raises eager's error.
    x, y = X[0], X[1]
    return np.where((x < 0.0) & ((y != np.floor(y)) | np.isinf(y)), np.nan, x**y)


def _vpow_base_grad(np, g, x, y):
    return np.where(y == 0.0, 0.0, g * (y * x ** (y - 1.0)))


def _vpow_exponent_grad(np, g, out, x):
    at_zero = (x == 0.0) & ~np.isnan(out)
    dy = np.where(at_zero, 0.0 * g, g * (out * np.log(np.where(x < 0.0, 1.0, x))))
    # x < 0 with a finite result: the compiler re-runs the scalar rule there, which raises.
    return np.where((x < 0.0) & ~np.isnan(out), np.nan, dy)


def _vdot(np, X):
    n = len(X) // 2
    return np.einsum("ij,ij->j", X[:n], X[n : 2 * n]) + X[-1]


def _vdot_backward(np, g, out, X):
    n = len(X) // 2
    return np.concatenate([g * X[n : 2 * n], g * X[:n], g[None]])


def _vtake_positions(np, X):
    """The row each take node picks (a row of X after the index), checked like ``take_index``."""
    index, n = X[0], len(X) - 1
    valid = (index == np.floor(index)) & (index >= -n) & (index < n)  # nan fails every test
    if not valid.all():
        take_index(float(index[np.argmin(valid)]), n)  # raises eager's error for the first bad one
    return 1 + index.astype(np.intp) % n, np.arange(X.shape[1])


def _vtake(np, X):
    picked, nodes = _vtake_positions(np, X)
    return X[picked, nodes]


def _vtake_backward(np, g, out, X):
    picked, nodes = _vtake_positions(np, X)
    grads = np.zeros(X.shape)
    grads[picked, nodes] = g  # one picked row per node, so no two writes meet
    return grads


# ---------------------------------------------------------------------------------------------
# The table: one entry per op.
#   defop(name, forward(*xs), backward(g, out, *xs), vforward(np, X)[, vbackward(np, g, out, X)],
#         hint=..., names=(...), c=C(...))


def _rows(f):
    """A vectorized forward that runs the scalar arithmetic ``f`` on the rows of X."""
    return lambda np, X: f(*X)


ADD = defop(
    "+",
    lambda x, y: x + y,
    lambda g, out, x, y: (g, g),
    _rows(lambda x, y: x + y),
    hint="d(x + y)/dx = 1 and d(x + y)/dy = 1",
    c=C("add", "binary", "x + y", ("g", "g")),
)
SUB = defop(
    "-",
    lambda x, y: x - y,
    lambda g, out, x, y: (g, -g),
    _rows(lambda x, y: x - y),
    hint="d(x - y)/dx = 1 and d(x - y)/dy = -1",
    c=C("sub", "binary", "x - y", ("g", "-g")),
)
MUL = defop(
    "*",
    lambda x, y: x * y,
    lambda g, out, x, y: (g * y, g * x),
    _rows(lambda x, y: x * y),
    hint="d(x * y)/dx = y and d(x * y)/dy = x: each factor's derivative is the other factor",
    c=C("mul", "binary", "x * y", ("g * y", "g * x")),
)
DIV = defop(
    "/",
    _div,
    lambda g, out, x, y: (g / y, -g * (out / y)),
    _rows(lambda x, y: x / y),
    hint="d(x / y)/dx = 1/y and d(x / y)/dy = -x/y²",
    c=C("div", "binary", "x / y", ("g / y", "-g * (out / y)")),  # y == 0: a nan or inf, so numpy redoes it
)
NEG = defop(
    "neg",
    lambda x: -x,
    lambda g, out, x: (-g,),
    _rows(lambda x: -x),
    hint="d(-x)/dx = -1",
    c=C("neg", "unary", "-x", ("-g",)),
)
POW = defop(  # Value ** Value
    "pow",
    _pow,
    _pow_backward,
    _vpow,
    lambda np, g, out, X: (_vpow_base_grad(np, g, X[0], X[1]), _vpow_exponent_grad(np, g, out, X[0])),
    hint="d(x ** y)/dx = y * x ** (y - 1) and d(x ** y)/dy = x ** y * log(x)",
    c=C("pow", "binary", "real_pow(x, y)", ("pow_base_grad(g, x, y)", "pow_exponent_grad(g, out, x)")),
)
RPOW = defop(  # number ** Value
    "rpow",
    _pow,
    _rpow_backward,
    _vpow,
    lambda np, g, out, X: (0.0 * g, _vpow_exponent_grad(np, g, out, X[0])),
    hint="d(c ** y)/dy = c ** y * log(c)",
    c=C("rpow", "binary", None, ("0.0 * g", "pow_exponent_grad(g, out, x)"), forward_of="pow"),
)
POW_CONSTANT = defop(  # Value ** number
    "**",
    _pow,
    _pow_constant_backward,
    _vpow,
    lambda np, g, out, X: (_vpow_base_grad(np, g, X[0], X[1]), 0.0 * g),
    hint="d(x ** n)/dx = n * x ** (n - 1); the constant n gets no gradient",
    c=C("pow_constant", "binary", None, ("pow_base_grad(g, x, y)", "0.0 * g"), forward_of="pow"),
)
EXP = defop(
    "exp",
    _exp,
    lambda g, out, x: (g * out,),
    lambda np, X: np.exp(X[0]),
    hint="d exp(x)/dx = exp(x), the output itself",
    names=("exp",),
    c=C("exp", "unary", "exp(x)", ("g * out",)),
)
LOG = defop(
    "log",
    _log_forward,
    lambda g, out, x: (g / x,),
    lambda np, X: np.log(X[0]),
    hint="d log(x)/dx = 1/x",
    names=("log",),
    c=C("log", "unary", "log(x)", ("g / x",)),
)
TANH = defop(
    "tanh",
    math.tanh,
    lambda g, out, x: (g * (1.0 - out * out),),
    lambda np, X: np.tanh(X[0]),
    hint="d tanh(x)/dx = 1 - tanh(x)²",
    names=("tanh",),
    c=C("tanh", "unary", "tanh(x)", ("g * (1.0 - out * out)",)),
)
SIGMOID = defop(
    "sigmoid",
    _sigmoid,
    lambda g, out, x: (g * out * (1.0 - out),),
    _vsigmoid,
    hint="d sigmoid(x)/dx = sigmoid(x) * (1 - sigmoid(x))",
    names=("sigmoid",),
    c=C("sigmoid", "unary", "sigmoid(x)", ("g * out * (1.0 - out)",)),
)
RELU = defop(
    "relu",
    # As PyTorch: a nan passes through (x > 0.0 would turn it into 0.0), and so does -0.0;
    # the gradient is selected, not multiplied: 0 for x <= 0 even if g is nan, g otherwise.
    lambda x: 0.0 if x < 0.0 else x,
    lambda g, out, x: (_zero_like(g) if _data(x) <= 0.0 else g,),
    lambda np, X: np.where(X[0] < 0.0, 0.0, X[0]),
    lambda np, g, out, X: (np.where(X[0] <= 0.0, 0.0, g),),
    hint="d relu(x)/dx = 1 where x > 0, else 0",
    names=("relu",),
    c=C("relu", "unary", "x < 0.0 ? 0.0 : x", ("x <= 0.0 ? 0.0 : g",)),
)
SUM = defop(
    "sum",
    lambda *xs: add_up(xs),
    lambda g, out, *xs: (g,) * len(xs),
    lambda np, X: X.sum(axis=0),
    lambda np, g, out, X: np.broadcast_to(g, X.shape),
    hint="d(x1 + ... + xn)/dxi = 1",
    c=C("sum", "each", ("double s = 0.0;", "for (long k = 0; k < n; k++) s += IN(k);", "return s;"), ("g",)),
)
SOFTPLUS = defop(
    "softplus",
    _softplus,
    lambda g, out, x: (g * _sigmoid_of(x),),
    lambda np, X: np.maximum(X[0], 0.0) + np.log1p(np.exp(-np.abs(X[0]))),
    lambda np, g, out, X: (g * _vsigmoid(np, X),),
    hint="d softplus(x)/dx = sigmoid(x)",
    c=C("softplus", "unary", "(x <= 0.0 ? 0.0 : x) + log1p(exp(-fabs(x)))", ("g * sigmoid(x)",)),
)
LOGSUMEXP = defop(  # n-ary; its gradient is the softmax
    "logsumexp",
    _logsumexp,
    lambda g, out, *xs: tuple(g * _exp_of(x - out) for x in xs),
    _vlogsumexp,
    lambda np, g, out, X: g * np.exp(X - out),
    hint="d logsumexp(x)/dxi = softmax(x)i",
    c=C(
        "logsumexp",
        "each",
        # m + log(sum e^(x - m)), m the largest x (a nan or inf m passes on as the number)
        (
            "double m = IN(0), s = 0.0;",
            "for (long k = 1; k < n; k++) if (IN(k) > m || isnan(IN(k))) m = IN(k);",
            "if (isnan(m) || isinf(m)) return m;",
            "for (long k = 0; k < n; k++) s += exp(IN(k) - m);",
            "return m + log(s);",
        ),
        ("g * exp(x - out)",),
    ),
)
DOT = defop(
    "dot",
    _dot,
    _dot_backward,
    _vdot,
    _vdot_backward,
    hint="d(w·x + b)/dwi = xi, d/dxi = wi, d/db = 1",
    c=C(
        "dot",
        "pairs",
        (
            "long m = (n - 1) / 2;",
            "double s = 0.0;",
            "for (long k = 0; k < m; k++) s += IN(k) * IN(m + k);",
            "return s + IN(n - 1);",
        ),
        ("g * x", "g * w", "g"),
    ),
)
TAKE = defop(  # rows[index], recorded by chainrule.take while compile traces; inputs: index, *rows
    "take",
    lambda index, *rows: rows[take_index(index, len(rows))],
    _take_backward,
    _vtake,
    _vtake_backward,
    hint="d take(i, rows)/d rows[i] = 1; the other rows and the index get no gradient",
    c=C(
        "take",
        "nodes",
        ("long p = take_row(IN(0), n - 1);", "if (p < 0) return 1;", "*out = IN(1 + p);", "return 0;"),
        ("GRAD(1 + take_row(IN(0), n - 1)) += g;",),
    ),
)
STOP_GRADIENT = defop(  # what detach() and no_grad() make while chainrule.compile traces
    "stop_gradient",
    lambda x: x,
    lambda g, out, x: (None,),  # no gradient reaches the input: it counts as a constant
    lambda np, X: X[0],
    lambda np, g, out, X: (np.zeros_like(g),),
    hint="no gradient passes through stop_gradient(x) (what detach() makes): x counts as a constant",
    c=C(
        "stop_gradient",
        "nodes",
        ("*out = IN(0);", "return 0;"),
        ("(void)gr, (void)d, (void)c, (void)n, (void)out, (void)g;",),
    ),
)
BUILT_IN = tuple(OPS.values())  # the ops above, each with its C kernel (an op of a user's own has none)
