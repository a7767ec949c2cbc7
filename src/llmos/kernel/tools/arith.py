"""The calculator's evaluator: arithmetic on numbers, never `eval`.

Python's own parser (`ast.parse`, mode "eval") reads the expression; the tree is
walked here with a whitelist — number literals, + - * / // % **, unary + and -,
calls of the functions in FUNCTIONS and the names in CONSTANTS. Anything else
(names, attributes, strings, comparisons, subscripts, lambdas…) is refused before
any of it is evaluated. Guards: the expression's length and the tree's depth, the
size of every integer made along the way (so 9**9**9 is refused, not computed), and
finite real results only."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from llmos.params import CALC_MAX_CHARS, CALC_MAX_DEPTH, CALC_MAX_INT_BITS

Number = int | float


class CalcError(ValueError):
    """The expression is not one the calculator takes, or has no finite real value."""


def _log(x: Number, base: Number | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


def _round(x: Number, ndigits: Number | None = None) -> Number:
    if ndigits is None:
        return round(x)
    if not isinstance(ndigits, int):
        raise CalcError("round's second argument must be an integer")
    return round(x, ndigits)


# name -> (function, least arguments, most arguments; None: any number)
FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int | None]] = {
    "sqrt": (math.sqrt, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "exp": (math.exp, 1, 1),
    "log": (_log, 1, 2),
    "log10": (math.log10, 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "min": (min, 2, None),
    "max": (max, 2, None),
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _power(base: Number, exponent: Number) -> Number:
    """`base ** exponent`, refused when an integer result would be too large."""
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and (abs(base).bit_length() - 1) * exponent > CALC_MAX_INT_BITS
    ):
        raise CalcError(f"the result would exceed {CALC_MAX_INT_BITS} bits")
    return _checked(operator.pow(base, exponent))


BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}
UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def evaluate(expression: str) -> Number:
    """The value of `expression`; CalcError saying what is wrong otherwise."""
    if len(expression) > CALC_MAX_CHARS:
        raise CalcError(f"the expression is longer than {CALC_MAX_CHARS} characters")
    if not expression.strip():
        raise CalcError("the expression is empty")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalcError(f"not an arithmetic expression: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise CalcError("not an arithmetic expression") from None
    return _checked(_eval(tree.body, 0))


def _eval(node: ast.expr, depth: int) -> Number:
    if depth > CALC_MAX_DEPTH:
        raise CalcError(f"the expression is nested more than {CALC_MAX_DEPTH} deep")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalcError(f"{node.value!r} is not a number")
        return _checked(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        # A left-leaning chain (1 + 2 + 3 + …) is folded in a loop: long sums are
        # long, not deep.
        chain: list[ast.BinOp] = []
        while isinstance(node, ast.BinOp) and type(node.op) in BINARY:
            chain.append(node)
            node = node.left
        value = _eval(node, depth + 1)
        for step in reversed(chain):
            right = _eval(step.right, depth + 1)
            value = _checked(_apply(BINARY[type(step.op)], value, right))
        return value
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return _checked(_apply(UNARY[type(node.op)], _eval(node.operand, depth + 1)))
    if isinstance(node, ast.Name):
        if node.id not in CONSTANTS:
            raise CalcError(f"unknown name {node.id!r}; constants: {', '.join(CONSTANTS)}")
        return CONSTANTS[node.id]
    if isinstance(node, ast.Call):
        return _checked(_call(node, depth))
    raise CalcError(f"{type(node).__name__} is not allowed: only numbers, + - * / // % ** and ()")


def _call(node: ast.Call, depth: int) -> Number:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        raise CalcError(f"unknown function; functions: {', '.join(FUNCTIONS)}")
    name = node.func.id
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        raise CalcError(f"{name} takes plain positional arguments")
    fn, least, most = FUNCTIONS[name]
    if len(node.args) < least or (most is not None and len(node.args) > most):
        if most is None:
            raise CalcError(f"{name} takes {least} or more arguments")
        raise CalcError(
            f"{name} takes {least if least == most else f'{least} or {most}'} argument(s)"
        )
    args = [_eval(a, depth + 1) for a in node.args]
    return _checked(_apply(fn, *args))


def _apply(fn: Callable[..., Any], *args: Number) -> Any:
    try:
        return fn(*args)
    except CalcError:
        raise
    except ZeroDivisionError:
        raise CalcError("division by zero") from None
    except OverflowError:
        raise CalcError("the result is too large") from None
    except (ValueError, TypeError) as exc:
        raise CalcError(f"math error: {exc}") from None


def _checked(value: Any) -> Number:
    """Only finite real numbers, and integers of a bounded size, leave a step."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CalcError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > CALC_MAX_INT_BITS:
        raise CalcError(f"the result exceeds {CALC_MAX_INT_BITS} bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalcError("the result is not a finite number")
    return value
