"""The small expression language of ``chainrule grad``: parse it safely, build the graph.

An expression is one or more statements separated by ``;``. A statement is a formula or an
assignment ``name = formula``; assignments let a value be used twice, which is the point of
the lecture's reuse example::

    d = a * b; e = a + b; f = d * e

A formula has numbers, names, ``+ - * / **``, unary minus (and plus), parentheses, and calls
of ``exp log tanh sigmoid relu`` with one argument. The *inputs* are the names used before
any assignment gives them a value; each becomes a leaf Value labelled with its name. The
result is the last statement's value.

Safety: the text is parsed by Python's ``ast`` module, which only builds a syntax tree and
runs nothing. Every node of the tree is then checked against a short whitelist before any
Value is made, and the graph is built by walking the tree here: ``eval``, ``exec`` and
``compile`` are never used. So ``__import__('os').system('...')`` is refused as a call of
something that is not one of the five functions, without running anything.

Every problem raises ``ExpressionError`` (a ``ValueError``) whose message starts with the
1-based column where it is, e.g. ``col 5: unknown function 'open'``.

>>> result = evaluate("d = a * b; e = a + b; f = d * e", {"a": 2, "b": -3})
>>> result.name, result.output.data
('f', 6.0)
>>> result.output.backward()
>>> result.inputs["a"].grad, result.inputs["b"].grad     # df/da = 2ab + b^2, df/db = a^2 + 2ab
(-3.0, -8.0)
"""

from __future__ import annotations

import ast
import io
import keyword
import math
import numbers
import operator
import re
import tokenize
import unicodedata
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from . import ops
from .engine import Value

__all__ = ["FUNCTIONS", "Evaluation", "Expression", "ExpressionError", "evaluate", "parse", "parse_values"]

# The functions a formula can call: the ops whose records in ops.py give them a name here
# (each is also the Value method that applies the op).
FUNCTIONS = tuple(name for op in ops.BUILT_IN for name in op.names)

BINARY_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
UNARY_OPERATORS: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}

# Names for the operators and nodes that are refused, so an error can say what it saw.
OPERATOR_SYMBOLS = {
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.MatMult: "@",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.Invert: "~",
    ast.Not: "not",
}
NODE_DESCRIPTIONS = {
    ast.Attribute: "attribute access ('.')",
    ast.Subscript: "indexing ('[...]')",
    ast.Lambda: "a lambda",
    ast.Compare: "a comparison",
    ast.BoolOp: "'and'/'or'",
    ast.IfExp: "'if ... else'",
    ast.JoinedStr: "an f-string",
    ast.NamedExpr: "':='",
    ast.Starred: "'*' unpacking",
    ast.List: "a list",
    ast.Tuple: "a tuple",
    ast.Set: "a set",
    ast.Dict: "a dict",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator expression",
    ast.AugAssign: "an augmented assignment like '+='",
    ast.AnnAssign: "an annotation",
    ast.Import: "import",
    ast.ImportFrom: "import",
}


class ExpressionError(ValueError):
    """A problem with an expression or its input values; the message says where and what."""

    def __init__(self, message: str, column: int | None = None, line: int | None = None) -> None:
        where = ""
        if column is not None:
            where = f"col {column}: " if line in (None, 1) else f"line {line}, col {column}: "
        super().__init__(where + message)
        self.reason = message
        self.column = column  # 1-based, in characters
        self.line = line


# ---------------------------------------------------------------------------------------------
# Parsing and checking: nothing is computed here.


@dataclass(frozen=True)
class Expression:
    """A parsed, checked expression: ready to be evaluated for any values of its inputs."""

    source: str
    statements: tuple[ast.Expr | ast.Assign, ...]  # the checker lets no other statement through
    inputs: tuple[str, ...]  # in the order of their first use
    name: str | None  # the name the last statement assigns, or None for a bare formula
    first_use: dict[str, tuple[int, int]]  # input name -> (line, column) of its first use
    positions: _Positions = field(repr=False, compare=False)


class _Positions:
    """Turns the ``ast`` module's positions (0-based UTF-8 byte offsets) into 1-based characters."""

    def __init__(self, source: str, indent: int) -> None:
        self.lines = re.split(r"\r\n|\r|\n", source)
        self.indent = indent  # spaces removed from the start of line 1 before parsing

    def of(self, node: ast.expr | ast.stmt) -> tuple[int, int]:
        line = node.lineno
        text = self.lines[line - 1][self.indent :] if line == 1 else self.lines[line - 1]
        column = len(text.encode("utf-8")[: node.col_offset].decode("utf-8", errors="replace")) + 1
        return line, column + (self.indent if line == 1 else 0)

    def error(self, node: ast.expr | ast.stmt, message: str) -> ExpressionError:
        line, column = self.of(node)
        return ExpressionError(message, column, line)


def _syntax_tree(source: str) -> tuple[ast.Module, int]:
    """``ast.parse`` of the source, with leading blanks allowed; errors become ExpressionError."""
    if not isinstance(source, str):
        raise TypeError(f"an expression must be a string, not {type(source).__name__}")
    stripped = source.lstrip(" \t")
    indent = len(source) - len(stripped)
    try:
        tree = _python_parse(stripped)
    except SyntaxError as error:
        column = error.offset + (indent if error.lineno == 1 else 0) if error.offset else None
        raise ExpressionError(error.msg, column, error.lineno) from None
    except ValueError as error:  # e.g. a null character
        raise ExpressionError(str(error)) from None
    except (RecursionError, MemoryError):
        tree = _parse_long_chains(stripped)  # a + a + ... + a is too deep for ast.parse
    if not tree.body:
        raise ExpressionError("the expression is empty")
    return tree, indent


TOO_DEEP = "the expression is too long or too deeply nested for Python's parser; split it with assignments"


def _python_parse(source: str) -> ast.Module:
    with warnings.catch_warnings():
        # Newer Pythons warn about e.g. invalid escapes in strings while parsing; strings
        # are refused anyway, and a warning printed to stderr would only add noise.
        warnings.simplefilter("ignore")
        return ast.parse(source, mode="exec")


# ---------------------------------------------------------------------------------------------
# Long chains. Python parses a + b + c as (a + b) + c, one level deeper for every term, and
# ast.parse gives up after a few thousand levels. But the chain is flat in the text: each
# statement's outermost operators (its + and -, or, if it has none, its * and /) are replaced
# by commas, which makes the chain a flat tuple of terms that ast.parse reads easily; the
# chain is then rebuilt from the terms, left to right. The replacements keep every character
# in its place, so every position stays right.

CHAIN_OPERATORS = {"+": ast.Add, "-": ast.Sub, "*": ast.Mult, "/": ast.Div}
_OPERAND_ENDS = {tokenize.NAME, tokenize.NUMBER, tokenize.STRING}


def _parse_long_chains(source: str) -> ast.Module:
    """``ast.parse(source)``, for a source whose chains of operators are too long for it.

    >>> chain = _parse_long_chains("a - b" + " + a" * 50_000).body[0].value   # ((a - b) + a) + ... + a
    >>> ast.dump(chain.op), ast.dump(chain.right)
    ('Add()', "Name(id='a', ctx=Load())")
    """
    lines = io.StringIO(source).readlines()  # the lines tokenize numbers, so rows match
    try:
        operators = _outermost_operators(lines)
        masked = [list(line) for line in lines]
        for (row, column), _ in operators:
            masked[row - 1][column] = ","
        tree = _python_parse("".join("".join(line) for line in masked))
    except (SyntaxError, ValueError, RecursionError, MemoryError, tokenize.TokenError):
        raise ExpressionError(TOO_DEEP) from None
    # Each statement whose value is now a tuple holding replaced operators gets its chain back.
    # Positions are compared in ast's units: UTF-8 bytes.
    positions = [(row, _byte_column(lines[row - 1], column)) for (row, column), _ in operators]
    next_op = 0
    for statement in tree.body:
        terms = getattr(statement, "value", None)
        if not isinstance(terms, ast.Tuple):
            continue
        while next_op < len(positions) and positions[next_op] < (terms.lineno, terms.col_offset):
            next_op += 1  # in a statement of another kind, which will be refused anyway
        first = next_op
        while next_op < len(positions) and positions[next_op] < (terms.end_lineno, terms.end_col_offset):
            next_op += 1
        if next_op > first:
            if next_op - first != len(terms.elts) - 1:
                raise ExpressionError(TOO_DEEP)  # not a plain chain after all
            statement.value = _rebuild_chain(terms, [op for _, op in operators[first:next_op]])  # type: ignore[attr-defined]
    return tree


def _byte_column(line: str, column: int) -> int:
    """The UTF-8 byte offset of character ``column`` of ``line`` (ast counts bytes, tokenize characters)."""
    return column if line.isascii() else len(line[:column].encode("utf-8"))


def _outermost_operators(lines: list[str]) -> list[tuple[tuple[int, int], type]]:
    """The position (row, column) and ast class of each statement's outermost binary operators."""
    found: list[tuple[tuple[int, int], type]] = []
    sums: list[tuple[tuple[int, int], type]]
    products: list[tuple[tuple[int, int], type]]
    sums, products, has_comma = [], [], False  # the current statement's outermost operators
    depth = 0
    previous = None
    for token in tokenize.generate_tokens(iter(lines).__next__):
        if token.type in (tokenize.NL, tokenize.COMMENT):
            continue
        text = token.string
        if token.type == tokenize.OP and text in "([{":
            depth += 1
        elif token.type == tokenize.OP and text in ")]}":
            depth -= 1
        elif depth == 0 and (text == ";" or token.type in (tokenize.NEWLINE, tokenize.ENDMARKER)):
            if not has_comma:  # a tuple of the user's own is refused later, left as it is
                found += sums or products
            sums, products, has_comma = [], [], False
        elif depth == 0 and text == ",":
            has_comma = True
        elif depth == 0 and text in CHAIN_OPERATORS and _ends_an_operand(previous):
            (sums if text in "+-" else products).append((token.start, CHAIN_OPERATORS[text]))
        previous = token
    return found


def _ends_an_operand(token: tokenize.TokenInfo | None) -> bool:
    """Whether an operator after ``token`` is binary (``a - b``) rather than unary (``a * -b``)."""
    if token is None:
        return False
    if token.type == tokenize.NAME:
        return not keyword.iskeyword(token.string) or token.string in ("True", "False", "None")
    return token.type in _OPERAND_ENDS or token.string in (")", "]", "}")


def _rebuild_chain(terms: ast.Tuple, ops: list[type]) -> ast.expr:
    """``t0 op0 t1 op1 t2 ...`` as Python builds it: ``((t0 op0 t1) op1 t2) ...``."""
    chain: ast.expr = terms.elts[0]
    for op, term in zip(ops, terms.elts[1:], strict=True):
        # Like Python's, every node of the chain starts where the chain starts.
        chain = ast.BinOp(
            left=chain,
            op=op(),
            right=term,
            lineno=terms.lineno,
            col_offset=terms.col_offset,
            end_lineno=term.end_lineno,
            end_col_offset=term.end_col_offset,
        )
    return chain


class _Checker:
    """Walks the syntax tree once, refusing anything off the whitelist and sorting out the names."""

    def __init__(self, positions: _Positions) -> None:
        self.positions = positions
        self.inputs: dict[str, tuple[int, int]] = {}  # name -> position of its first use
        self.assigned: set[str] = set()

    def statement(self, node: ast.stmt, last: bool) -> str | None:
        """Check one statement; return the name it assigns, if any."""
        if isinstance(node, ast.Expr):
            if not last:
                raise self.positions.error(
                    node, "only the last statement may be a bare formula; assign this one to a name"
                )
            self.formula(node.value)
            return None
        if isinstance(node, ast.Assign):
            if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
                raise self.positions.error(node, "assign to one name at a time, as in 'd = a * b'")
            self.formula(node.value)  # the right side first: 'a = a + 1' uses 'a' before assigning it
            target = node.targets[0]
            self._check_assignment(target)
            self.assigned.add(target.id)
            return target.id
        raise self.positions.error(node, f"{_describe_syntax(node)} is not allowed")

    def _check_assignment(self, target: ast.Name) -> None:
        name = target.id
        if name in FUNCTIONS:
            raise self.positions.error(target, f"'{name}' is a function and cannot be assigned")
        if name in self.assigned:
            raise self.positions.error(target, f"'{name}' is assigned twice; give each value its own name")
        if name in self.inputs:
            line, column = self.inputs[name]
            raise self.positions.error(
                target, f"'{name}' is assigned after its use at col {column}, which makes it an input"
            )

    def formula(self, root: ast.expr) -> None:
        # A stack of nodes still to check, not recursion: a chain of 50,000 additions is a tree
        # 50,000 deep. Popping the left operand first checks the nodes in reading order.
        pending = [root]
        while pending:
            node = pending.pop()
            if isinstance(node, ast.BinOp):
                if type(node.op) not in BINARY_OPERATORS:
                    raise self.positions.error(node, f"operator '{_symbol(node.op)}' is not allowed")
                pending += [node.right, node.left]
            elif isinstance(node, ast.UnaryOp):
                if type(node.op) not in UNARY_OPERATORS:
                    raise self.positions.error(node, f"operator '{_symbol(node.op)}' is not allowed")
                pending.append(node.operand)
            elif isinstance(node, ast.Constant):
                _number(node, self.positions)
            elif isinstance(node, ast.Name):
                self._name(node)
            elif isinstance(node, ast.Call):
                pending.append(self._call(node))
            else:
                raise self.positions.error(node, f"{_describe_syntax(node)} is not allowed")

    def _name(self, node: ast.Name) -> None:
        if node.id in FUNCTIONS:
            raise self.positions.error(node, f"'{node.id}' is a function; call it, as in {node.id}(x)")
        if node.id not in self.assigned and node.id not in self.inputs:
            self.inputs[node.id] = self.positions.of(node)

    def _call(self, node: ast.Call) -> ast.expr:
        """Check a call's function and arity; return its argument, which is checked next."""
        if not isinstance(node.func, ast.Name):
            raise self.positions.error(
                node, f"only the functions {', '.join(FUNCTIONS)} can be called, by name"
            )
        name = node.func.id
        if name not in FUNCTIONS:
            raise self.positions.error(node, f"unknown function '{name}' (known: {', '.join(FUNCTIONS)})")
        if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            raise self.positions.error(node, f"{name} takes exactly one argument, as in {name}(x)")
        return node.args[0]


def _symbol(op: ast.AST) -> str:
    return OPERATOR_SYMBOLS.get(type(op), type(op).__name__)


def _describe_syntax(node: ast.AST) -> str:
    """What a piece of a formula is, for an error: 'float constant 1.5', 'attribute access ('.')'."""
    if isinstance(node, ast.Constant):
        return f"{type(node.value).__name__} constant {node.value!r}"
    return NODE_DESCRIPTIONS.get(type(node), f"Python's {type(node).__name__!r}")


def _number(node: ast.Constant, positions: _Positions) -> float:
    """The float value of a numeric literal, refusing other constants (strings, True, 1j...)."""
    value = node.value
    if type(value) not in (int, float):  # type(), not isinstance: True is an int to Python
        raise positions.error(node, f"{_describe_syntax(node)} is not allowed; only numbers are")
    try:
        number = float(value)  # type: ignore[arg-type]  # (an int or a float: checked above)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise positions.error(node, "the number is too large for a float")
    return number


def parse(source: str) -> Expression:
    """Parse and check ``source``; raise ``ExpressionError`` for anything outside the language.

    >>> expression = parse("b = a + a")
    >>> expression.inputs, expression.name
    (('a',), 'b')
    >>> parse("x.real")
    Traceback (most recent call last):
    ...
    chainrule.expression.ExpressionError: col 1: attribute access ('.') is not allowed
    """
    tree, indent = _syntax_tree(source)
    positions = _Positions(source, indent)
    checker = _Checker(positions)
    name = None
    for i, node in enumerate(tree.body):
        name = checker.statement(node, last=i == len(tree.body) - 1)
    return Expression(
        source=source,
        statements=tuple(cast("list[ast.Expr | ast.Assign]", tree.body)),
        inputs=tuple(checker.inputs),
        name=name,
        first_use=dict(checker.inputs),
        positions=positions,
    )


# ---------------------------------------------------------------------------------------------
# Evaluating: build Values by walking the checked tree.


@dataclass
class Evaluation:
    """The graph an expression built: its output and the named Values in it."""

    output: Value
    name: str | None  # the name of the output, if the last statement assigned one
    inputs: dict[str, Value]  # the leaf Value of each input, in the order of first use
    names: dict[str, Value]  # every named Value: the inputs and the assigned names


def _literal_exponent(node: ast.expr) -> float | None:
    """The number in ``x ** 2`` or ``x ** -1``, else None.

    A literal exponent stays a plain number, so the graph gets the ``**`` node with a
    constant exponent (as ``x ** 2`` typed in Python would) rather than ``pow`` of two Values.
    """
    sign = 1.0
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY_OPERATORS:
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return sign * float(node.value)  # type: ignore[arg-type]  # (an int or a float)
    return None


def _operands(node: ast.expr) -> list[ast.expr]:
    """The sub-formulas whose Values ``node`` is computed from (a literal exponent stays a number)."""
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Pow) and _literal_exponent(node.right) is not None:
            return [node.left]
        return [node.left, node.right]
    if isinstance(node, ast.UnaryOp):
        return [node.operand]
    return [cast(ast.Call, node).args[0]]  # a call of one of FUNCTIONS: the checker let nothing else through


class _Builder:
    def __init__(self, positions: _Positions, names: dict[str, Value]) -> None:
        self.positions = positions
        self.names = names

    def formula(self, root: ast.expr) -> Value:
        """The Value of ``root``, built bottom-up.

        Like the checker, this uses a stack rather than recursion, so a tree 50,000 deep is
        fine: each node is pushed once to get its operands computed first (in reading order),
        and once more to be computed from them.
        """
        results: list[Value] = []  # the Values of the finished sub-formulas, in reading order
        pending: list[tuple[ast.expr, bool]] = [(root, False)]
        while pending:
            node, operands_ready = pending.pop()
            if operands_ready:
                results.append(self._apply(node, results))
            elif isinstance(node, ast.Constant):
                results.append(Value(_number(node, self.positions)))
            elif isinstance(node, ast.Name):
                results.append(self.names[node.id])
            else:
                pending.append((node, True))
                pending += [(operand, False) for operand in reversed(_operands(node))]
        return results.pop()

    def _apply(self, node: ast.expr, results: list[Value]) -> Value:
        """Compute ``node`` from its operands' Values, the last ones in ``results`` (taken off)."""
        try:
            if isinstance(node, ast.BinOp):
                exponent = _literal_exponent(node.right) if isinstance(node.op, ast.Pow) else None
                right = exponent if exponent is not None else results.pop()
                left = results.pop()
                return BINARY_OPERATORS[type(node.op)](left, right)
            if isinstance(node, ast.UnaryOp):
                return UNARY_OPERATORS[type(node.op)](results.pop())
            function = cast(ast.Name, cast(ast.Call, node).func)  # one of FUNCTIONS: the checker made sure
            return getattr(results.pop(), function.id)()
        except (ValueError, ZeroDivisionError, OverflowError) as error:
            raise self.positions.error(node, str(error)) from None


def _check_values(expression: Expression, values: Mapping[str, float]) -> dict[str, float]:
    """The input values as floats; every input needs one and every value needs an input."""
    for name in expression.inputs:
        if name not in values:
            line, column = expression.first_use[name]
            raise ExpressionError(f"missing value for '{name}' (give it as {name}=VALUE)", column, line)
    for name in values:
        if name not in expression.inputs:
            role = "assigned in the expression" if _is_assigned(expression, name) else "not used"
            raise ExpressionError(
                f"name '{name}' given but {role}; the inputs are {_list(expression.inputs)}"
            )
    checked = {}
    for name in expression.inputs:
        checked[name] = _finite(name, values[name])
    return checked


def _is_assigned(expression: Expression, name: str) -> bool:
    return any(
        isinstance(s, ast.Assign) and isinstance(s.targets[0], ast.Name) and s.targets[0].id == name
        for s in expression.statements
    )


def _list(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ExpressionError(f"the value of '{name}' must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ExpressionError(f"the value of '{name}' must be a finite number, got {value!r}")
    return number


def evaluate(expression: str | Expression, values: Mapping[str, float]) -> Evaluation:
    """Build the graph of ``expression`` with the given input values; return its output and names.

    Call ``backward()`` on the output to get every input's gradient. Each input is a leaf
    labelled with its name, and each assigned Value is labelled with its name too, so a
    drawing of the graph reads like the expression.

    >>> result = evaluate("b = a + a", {"a": 3})
    >>> result.output
    Value(data=6.0, grad=0.0, label='b')
    >>> result.output.backward()
    >>> result.inputs["a"].grad
    2.0
    >>> evaluate("b = 1 / a", {"a": 0})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chainrule.expression.ExpressionError: col 5: / of Value(data=1.0), Value(data=0.0, label='a'): ...
    """
    if not isinstance(expression, Expression):
        expression = parse(expression)
    checked = _check_values(expression, values)
    inputs = {name: Value(checked[name], label=name) for name in expression.inputs}
    names = dict(inputs)
    builder = _Builder(expression.positions, names)
    output = None
    for statement in expression.statements:
        output = builder.formula(statement.value)
        if isinstance(statement, ast.Assign):
            name = cast(ast.Name, statement.targets[0]).id
            if not output.label:  # 'b = a' names a's Value 'b' too; it keeps the label 'a'
                output.label = name
            names[name] = output
    assert output is not None  # parse refuses an expression without a statement
    return Evaluation(output=output, name=expression.name, inputs=inputs, names=names)


# ---------------------------------------------------------------------------------------------
# Input values from the command line.


def parse_values(arguments: Sequence[str]) -> dict[str, float]:
    """``["a=3", "b=-1.5"]`` as ``{"a": 3.0, "b": -1.5}``, refusing anything else clearly.

    >>> parse_values(["a=3", "b=-1.5e-3"])
    {'a': 3.0, 'b': -0.0015}
    >>> parse_values(["a=three"])
    Traceback (most recent call last):
    ...
    chainrule.expression.ExpressionError: bad value in 'a=three': 'three' is not a number
    """
    values: dict[str, float] = {}
    for argument in arguments:
        name, equals, text = argument.partition("=")
        # Python reads names in NFKC form (e.g. the ligature 'ﬁ' as 'fi'), so compare them so too.
        name = unicodedata.normalize("NFKC", name.strip())
        if not equals or not name.isidentifier():
            raise ExpressionError(f"expected NAME=VALUE, such as a=3, got {argument!r}")
        try:
            number = float(text.strip())
        except ValueError:
            raise ExpressionError(f"bad value in {argument!r}: {text.strip()!r} is not a number") from None
        if not math.isfinite(number):
            raise ExpressionError(f"bad value in {argument!r}: the value must be a finite number")
        if name in values:
            raise ExpressionError(f"the value of '{name}' is given twice")
        values[name] = number
    return values
