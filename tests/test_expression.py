"""The expression language of ``chainrule grad``: what it computes, what it refuses, and where."""

import ast
import builtins
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainrule import Value
from chainrule.expression import FUNCTIONS, ExpressionError, evaluate, parse, parse_values

# ---------------------------------------------------------------------------------------------
# Values and gradients, derived by hand.


def test_reuse_of_a_name_adds_up_both_paths():
    # b = a + a = 2a, so db/da = 2
    result = evaluate("b = a + a", {"a": 3})
    result.output.backward()
    assert result.output.data == 6.0
    assert result.inputs["a"].grad == 2.0


def test_the_lecture_example_with_assignments():
    # d = a*b, e = a + b, f = d*e = a^2 b + a b^2.
    # df/da = 2ab + b^2 = 2*2*(-3) + 9 = -3;  df/db = a^2 + 2ab = 4 - 12 = -8;  f = (-6)(-1) = 6
    result = evaluate("d = a*b; e = a + b; f = d*e", {"a": 2, "b": -3})
    result.output.backward()
    assert result.name == "f"
    assert result.output.data == 6.0
    assert result.inputs["a"].grad == -3.0
    assert result.inputs["b"].grad == -8.0
    # Intermediate gradients: df/dd = e = -1, df/de = d = -6
    assert result.names["d"].grad == -1.0
    assert result.names["e"].grad == -6.0


def test_labels_name_the_inputs_and_the_assigned_values():
    result = evaluate("d = a*b; f = d + 1", {"a": 1, "b": 2})
    assert [result.names[n].label for n in ("a", "b", "d", "f")] == ["a", "b", "d", "f"]


def test_an_alias_keeps_the_original_label():
    result = evaluate("c = a; d = c * 2", {"a": 5})
    assert result.names["c"] is result.inputs["a"]
    assert result.inputs["a"].label == "a"
    result.output.backward()
    assert result.inputs["a"].grad == 2.0  # d = 2a


def test_functions_and_a_literal_exponent():
    # y = exp(x) * x**2 at x = 1: y = e; dy/dx = exp(x) x^2 + 2x exp(x) = 3e
    result = evaluate("exp(x) * x ** 2", {"x": 1.0})
    result.output.backward()
    assert result.output.data == pytest.approx(math.e, rel=1e-15)
    assert result.inputs["x"].grad == pytest.approx(3 * math.e, rel=1e-15)
    power = result.output.children[1]
    assert power.op == "**"  # a literal exponent stays a number: the '**' node of Value ** number


def test_a_name_in_the_exponent_makes_a_pow_of_two_values():
    # d/da a^b = b a^(b-1) = 3 * 4 = 12;  d/db a^b = a^b ln a = 8 ln 2
    result = evaluate("a ** b", {"a": 2, "b": 3})
    result.output.backward()
    assert result.output.op == "pow"
    assert result.inputs["a"].grad == pytest.approx(12.0)
    assert result.inputs["b"].grad == pytest.approx(8 * math.log(2))


def test_unary_minus_and_plus_and_negative_literal_exponent():
    # y = -x + (+x) ** -1 at x = 2: y = -2 + 0.5;  dy/dx = -1 - x^-2 = -1.25
    result = evaluate("-x + (+x) ** -1", {"x": 2})
    result.output.backward()
    assert result.output.data == -1.5
    assert result.inputs["x"].grad == -1.25


def test_inputs_are_in_the_order_of_first_use():
    assert parse("z * y + x * z").inputs == ("z", "y", "x")
    assert parse("t = q * 2; r = t + p").inputs == ("q", "p")


def test_constant_expression_has_no_inputs():
    result = evaluate("2 * 3 + 1", {})
    assert result.inputs == {}
    assert result.output.data == 7.0


def test_leading_blanks_and_trailing_semicolon_are_fine():
    assert evaluate("  b = a * 2;", {"a": 1}).output.data == 2.0


# ---------------------------------------------------------------------------------------------
# Property: an expression builds exactly the graph one would build by hand.

NAMES = ("a", "b", "c")
LITERALS = (0, 1, 2, 3, 0.5, 1.5, 2.25)


class Node:
    """A random formula: its source text, a function building the same Values directly, its names."""

    def __init__(self, source, build, names, literal=None, signed_literal=None):
        self.source = source
        self.build = build
        self.names = names
        self.literal = literal  # the number, if this node is a bare numeric literal
        self.signed_literal = signed_literal  # the number, if literal or -literal / +literal


def _name(name):
    return Node(name, lambda env: env[name], {name})


def _literal(number):
    return Node(repr(number), lambda env: Value(float(number)), set(), number, float(number))


def _binary(args):
    symbol, left, right = args
    if symbol == "**" and right.signed_literal is not None:
        # The language keeps a literal exponent a plain number (Value ** float).
        exponent = right.signed_literal
        return Node(f"({left.source} ** {right.source})", lambda env: left.build(env) ** exponent, left.names)
    operations = {
        "+": lambda x, y: x + y,
        "-": lambda x, y: x - y,
        "*": lambda x, y: x * y,
        "/": lambda x, y: x / y,
        "**": lambda x, y: x**y,
    }
    op = operations[symbol]
    return Node(
        f"({left.source} {symbol} {right.source})",
        lambda env: op(left.build(env), right.build(env)),
        left.names | right.names,
    )


def _unary(args):
    symbol, child = args
    signed = None
    if child.literal is not None:
        signed = -float(child.literal) if symbol == "-" else float(child.literal)
    build = (lambda env: -child.build(env)) if symbol == "-" else child.build
    return Node(f"({symbol}{child.source})", build, child.names, signed_literal=signed)


def _call(args):
    function, child = args
    return Node(f"{function}({child.source})", lambda env: getattr(child.build(env), function)(), child.names)


def _extend(children):
    return st.one_of(
        st.tuples(st.sampled_from(["+", "-", "*", "/", "**"]), children, children).map(_binary),
        st.tuples(st.sampled_from(["-", "+"]), children).map(_unary),
        st.tuples(st.sampled_from(FUNCTIONS), children).map(_call),
    )


def formulas(names=NAMES):
    leaves = st.sampled_from(names).map(_name) | st.sampled_from(LITERALS).map(_literal)
    return st.recursive(leaves, _extend, max_leaves=8)


def _same(x, y):
    return x == y or (math.isnan(x) and math.isnan(y))


NUMERIC_ERRORS = (ValueError, ZeroDivisionError, OverflowError)


def _outcome(action):
    """What ``action()`` gives: ``("ok", result)`` or ``("error", None)`` for a numeric error."""
    try:
        return "ok", action()
    except NUMERIC_ERRORS:
        return "error", None


def _check_against_direct_build(source, build, names, values):
    used = {n: values[n] for n in names}
    assert set(parse(source).inputs) == set(names)

    env = {name: Value(x, label=name) for name, x in values.items()}
    status, expected = _outcome(lambda: build(env))
    if status == "error":  # building by hand fails on these numbers, so the expression must too
        with pytest.raises(ExpressionError):
            evaluate(source, used)
        return
    result = evaluate(source, used)
    assert _same(result.output.data, expected.data)

    # backward may fail on extreme numbers (an overflow in a derivative); then it must fail alike
    assert _outcome(result.output.backward)[0] == _outcome(expected.backward)[0]
    for name in names:
        assert _same(result.inputs[name].grad, env[name].grad), name


input_values = st.fixed_dictionaries({n: st.floats(-3, 3, allow_nan=False) for n in NAMES})


@settings(max_examples=150, deadline=None)
@given(formula=formulas(), values=input_values)
def test_formula_matches_values_built_by_hand(formula, values):
    _check_against_direct_build(formula.source, formula.build, formula.names, values)


@settings(max_examples=100, deadline=None)
@given(first=formulas(), second=formulas(NAMES + ("t",)), values=input_values)
def test_assignment_reuse_matches_values_built_by_hand(first, second, values):
    source = f"t = {first.source}; out = {second.source}"

    def build(env):
        env = dict(env)
        env["t"] = first.build(env)
        return second.build(env)

    names = first.names | (second.names - {"t"})
    if not names:  # a constant expression: compare its value only
        names = set()
    _check_against_direct_build(source, build, names, values)


# ---------------------------------------------------------------------------------------------
# Refusals, each with its position. Columns are 1-based characters.


@pytest.mark.parametrize(
    "source, message",
    [
        ("a + open(b)", "col 5: unknown function 'open'"),
        (
            "__import__('os').system('ls')",
            "col 1: only the functions exp, log, tanh, sigmoid, relu can be called",
        ),
        ("__import__('os')", "col 1: unknown function '__import__'"),
        ("a.__class__", "col 1: attribute access"),
        ("x = a[0]", "col 5: indexing"),
        ("(lambda: 1)()", "col 1: only the functions"),
        ("lambda: 1", "col 1: a lambda is not allowed"),
        ("a < b", "col 1: a comparison is not allowed"),
        ("a and b", "col 1: 'and'/'or' is not allowed"),
        ("'text'", "col 1: str constant 'text' is not allowed"),
        ("a * True", "col 5: bool constant True is not allowed"),
        ("2j * a", "col 1: complex constant 2j is not allowed"),
        ("a // b", "col 1: operator '//' is not allowed"),
        ("a % b", "col 1: operator '%' is not allowed"),
        ("~a", "col 1: operator '~' is not allowed"),
        ("exp(a, b)", "col 1: exp takes exactly one argument"),
        ("exp(x=a)", "col 1: exp takes exactly one argument"),
        ("exp(*a)", "col 1: exp takes exactly one argument"),
        ("exp + 1", "col 1: 'exp' is a function"),
        ("exp = 1", "col 1: 'exp' is a function and cannot be assigned"),
        ("b = 1; b = 2", "col 8: 'b' is assigned twice"),
        ("f = d * 2; d = a", "col 12: 'd' is assigned after its use at col 5"),
        ("a = b = 1", "col 1: assign to one name at a time"),
        ("a, b = 1, 2", "col 1: assign to one name at a time"),
        ("a += 1", "col 1: an augmented assignment like '+=' is not allowed"),
        ("import os", "col 1: import is not allowed"),
        ("a * b; c", "col 1: only the last statement may be a bare formula"),
        ("1e999 * a", "col 1: the number is too large"),
        ("é + x.y", "col 5: attribute access"),  # columns count characters, not UTF-8 bytes
        ("a +* b", "col 4: invalid syntax"),
        ("  a +* b", "col 6: invalid syntax"),  # leading blanks are allowed and counted
        ("(a + b", "col 1: '(' was never closed"),
        ("", "the expression is empty"),
        ("x = a\ny = b.c", "line 2, col 5: attribute access"),
    ],
)
def test_refused_with_position(source, message):
    with pytest.raises(ExpressionError) as caught:
        parse(source)
    assert str(caught.value).startswith(message)


def test_error_is_a_value_error_with_column():
    with pytest.raises(ValueError) as caught:
        parse("a + open(b)")
    assert caught.value.column == 5
    assert caught.value.reason.startswith("unknown function")


# ---------------------------------------------------------------------------------------------
# Long expressions: Python builds a + a + ... + a one level deeper per term, and its own parser
# stops after a few thousand levels.


@pytest.mark.parametrize("terms", [5000, 50000])
def test_a_sum_of_thousands_of_terms(terms):
    # a + a + ... + a = terms * a, and its derivative is terms
    result = evaluate("+".join(["a"] * terms), {"a": 1.5})
    assert result.output.data == 1.5 * terms  # exact: every partial sum is a multiple of 0.5
    result.output.backward()
    assert result.inputs["a"].grad == terms


def test_a_product_of_thousands_of_factors():
    # x^5000 at x = 1 is 1 with derivative 5000; and (x/x) chains divide back to 1 with derivative 0
    product = evaluate("*".join(["x"] * 5000), {"x": 1.0})
    product.output.backward()
    assert (product.output.data, product.inputs["x"].grad) == (1.0, 5000.0)
    quotients = evaluate("x" + "/x*x" * 3000, {"x": 2.0})
    quotients.output.backward()
    assert (quotients.output.data, quotients.inputs["x"].grad) == (2.0, 1.0)


def test_a_long_mixed_chain_matches_values_built_by_hand():
    # Terms of every kind, joined by + and -, in a chain long enough to need the long-chain parser.
    terms = ["a*b", "-c", "exp(a)/2", "(b - c)**2", "tanh(a*c)", "3", "a**b", "-(a + -b)", "log(b)"]
    signs = ["+", "-", "-", "+", "+", "-", "+"]
    chosen = [terms[i % len(terms)] for i in range(4000)]
    operators = [signs[i % len(signs)] for i in range(len(chosen) - 1)]
    source = "s = " + chosen[0] + "".join(f" {op} {term}" for op, term in zip(operators, chosen[1:]))
    source += "; out = s * c - s"

    env = {"a": Value(0.3, label="a"), "b": Value(1.7, label="b"), "c": Value(-0.4, label="c")}
    a, b, c = env["a"], env["b"], env["c"]
    by_hand = {
        "a*b": lambda: a * b,
        "-c": lambda: -c,
        "exp(a)/2": lambda: a.exp() / 2,
        "(b - c)**2": lambda: (b - c) ** 2,
        "tanh(a*c)": lambda: (a * c).tanh(),
        "3": lambda: Value(3.0),
        "a**b": lambda: a**b,
        "-(a + -b)": lambda: -(a + -b),
        "log(b)": lambda: b.log(),
    }
    s = by_hand[chosen[0]]()
    for op, term in zip(operators, chosen[1:]):
        s = s + by_hand[term]() if op == "+" else s - by_hand[term]()
    expected = s * c - s
    expected.backward()

    result = evaluate(source, {name: value.data for name, value in env.items()})
    result.output.backward()
    assert result.output.data == expected.data
    assert {n: v.grad for n, v in result.inputs.items()} == {n: v.grad for n, v in env.items()}


def test_an_error_deep_in_a_long_chain_has_its_position():
    source = "a + " * 3000 + "open(a) + a"
    with pytest.raises(ExpressionError, match=r"^col 12001: unknown function 'open'"):
        parse(source)
    # "c = b + " is 8 characters and each "a + " 4, so a/0 starts at column 8 + 4 * 3000 + 1.
    with pytest.raises(ExpressionError, match=r"^line 2, col 12009: / of "):
        evaluate("b = 1\nc = b + " + "a + " * 3000 + "a/0", {"a": 1})


def test_a_long_chain_with_something_refused_is_refused():
    with pytest.raises(ExpressionError, match="col 1: a lambda is not allowed"):
        parse("lambda: " + "+".join(["a"] * 5000))
    # A tuple, too long: Python 3.11's parser gives up on it, 3.10's and 3.13's read it.
    with pytest.raises(ExpressionError, match="too long or too deeply nested|col 1: a tuple is not allowed"):
        parse("a, " + "+".join(["a"] * 5000))


@pytest.mark.parametrize(
    "source",
    ["(" * 5000 + "a" + ")" * 5000, "exp(" + "+".join(["a"] * 5000) + ")", "**".join(["a"] * 5000)],
    ids=["parentheses", "a chain inside a call", "a chain of powers"],
)
def test_what_is_still_too_deep_is_refused_cleanly(source):
    # Refused with a clear error where this Python's parser gives up (how deep it goes depends on
    # the version: 3.10's and 3.13's read a 5,000-term chain in a call); otherwise it evaluates.
    try:
        parse(source)
    except ExpressionError as error:
        assert re.search("too long or too deeply nested|too many nested parentheses", str(error))
        return
    result = evaluate("y = " + source, {"a": 1.0})
    result.output.backward()
    assert not math.isnan(result.output.data)  # exp(5000 * a) is inf; the others 1.0


def _chain(data, names):
    """A random chain: terms (random formulas) joined by operators, e.g. ``-(a * b) + 2 ** c - b``."""
    terms = data.draw(st.lists(formulas(names), min_size=1, max_size=6))
    operators = data.draw(st.lists(st.sampled_from(["+", "-", "*", "/", "**"]), min_size=len(terms) - 1,
                                   max_size=len(terms) - 1))  # fmt: skip
    sign = data.draw(st.sampled_from(["", "-", "+"]))
    return sign + terms[0].source + "".join(f" {op} {term.source}" for op, term in zip(operators, terms[1:]))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), separator=st.sampled_from(["; ", "\n", ";\n"]))
def test_the_long_chain_parser_builds_the_tree_python_builds(data, separator):
    # The oracle is Python's own parser, on expressions small enough for it: the same nodes,
    # the same operators, and every node at the same position.
    from chainrule.expression import _parse_long_chains

    source = f"t = {_chain(data, NAMES)}{separator}{_chain(data, NAMES + ('t',))}"
    expected, got = ast.parse(source), _parse_long_chains(source)
    assert ast.dump(got) == ast.dump(expected)
    starts = [(n.lineno, n.col_offset) for n in ast.walk(got) if hasattr(n, "col_offset")]
    assert starts == [(n.lineno, n.col_offset) for n in ast.walk(expected) if hasattr(n, "col_offset")]


def test_injection_runs_nothing(tmp_path):
    target = tmp_path / "pwned"
    for source in (
        f"__import__('os').system('touch {target}')",
        f"open('{target}', 'w')",
        f"a = 1; exec(\"open('{target}', 'w')\")",
        f"[open('{target}', 'w') for x in (1,)]",
    ):
        with pytest.raises(ExpressionError):
            evaluate(source, {})
        assert not target.exists()


def test_no_eval_exec_or_code_compilation(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("eval/exec must not be called")

    real_compile = builtins.compile

    def parse_only(source, filename, mode, flags=0, *args, **kwargs):
        # ast.parse calls compile() with PyCF_ONLY_AST, which only builds the syntax tree.
        assert flags & ast.PyCF_ONLY_AST, "compile() used for more than parsing"
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    monkeypatch.setattr(builtins, "compile", parse_only)
    result = evaluate("d = a*b; e = a + b; f = d*e", {"a": 2, "b": -3})
    assert result.output.data == 6.0


# ---------------------------------------------------------------------------------------------
# Input values


def test_missing_value_names_the_input_and_its_position():
    with pytest.raises(ExpressionError, match=r"^col 5: missing value for 'b'"):
        evaluate("a + b", {"a": 1})


def test_value_for_a_name_that_is_not_used():
    with pytest.raises(ExpressionError, match="name 'x' given but not used; the inputs are a"):
        evaluate("a * 2", {"a": 1, "x": 2})


def test_value_for_an_assigned_name():
    with pytest.raises(ExpressionError, match="name 'd' given but assigned in the expression"):
        evaluate("d = a * 2; d + 1", {"a": 1, "d": 2})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "3", None, True])
def test_values_must_be_finite_numbers(bad):
    with pytest.raises(ExpressionError, match="the value of 'a' must be"):
        evaluate("a", {"a": bad})


def test_domain_error_gives_the_position_of_the_failing_op():
    with pytest.raises(ExpressionError, match=r"^col 5: log of Value\(data=0.0, label='a'\)"):
        evaluate("b = log(a)", {"a": 0})


def test_parse_values():
    assert parse_values(["a=3", " b = -1.5e-3 ", "c=1_000"]) == {"a": 3.0, "b": -0.0015, "c": 1000.0}
    assert parse_values(["ﬁ=1"]) == {"fi": 1.0}  # names compare in NFKC form, as Python reads them


@pytest.mark.parametrize(
    "argument, message",
    [
        ("a", "expected NAME=VALUE"),
        ("=3", "expected NAME=VALUE"),
        ("1a=3", "expected NAME=VALUE"),
        ("a=x", "bad value in 'a=x': 'x' is not a number"),
        ("a=", "bad value in 'a=': '' is not a number"),
        ("a=nan", "must be a finite number"),
        ("a=-inf", "must be a finite number"),
    ],
)
def test_parse_values_refuses(argument, message):
    with pytest.raises(ExpressionError, match=message):
        parse_values([argument])


def test_parse_values_refuses_a_name_given_twice():
    with pytest.raises(ExpressionError, match="given twice"):
        parse_values(["a=1", "a=2"])
