"""Exact arithmetic for the model, without evaluating arbitrary code.

The expression is parsed with ``ast`` and only numbers, + - * / // % **,
unary signs, parentheses and a few functions (sqrt, abs, round, min, max,
gcd, lcm, factorial) are evaluated, on ``Fraction`` so 1/3 + 1/6 is 1/2
exactly.  Sizes are bounded (exponents, factorials, digits) so a call cannot
eat the gateway's CPU.
"""

from __future__ import annotations

import ast
import math
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

MAX_EXPONENT = 4096
MAX_FACTORIAL = 500
MAX_DIGITS = 2000
MAX_NODES = 200
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


class CalculatorError(ValueError):
    """The expression is not something the calculator evaluates."""


def _num(text: str) -> Fraction:
    try:
        return Fraction(Decimal(text.replace("_", "")))
    except (InvalidOperation, ValueError):
        raise CalculatorError(f"not a number: {text!r}") from None


def _check(x: Fraction) -> Fraction:
    if max(len(str(abs(x.numerator))), len(str(x.denominator))) > MAX_DIGITS:
        raise CalculatorError(f"the result has more than {MAX_DIGITS} digits")
    return x


def _int(x: Fraction, what: str) -> int:
    if x.denominator != 1:
        raise CalculatorError(f"{what} needs whole numbers")
    return x.numerator


def _sqrt(x: Fraction) -> Fraction:
    if x < 0:
        raise CalculatorError("sqrt of a negative number")
    if x.denominator == 1 and math.isqrt(x.numerator) ** 2 == x.numerator:
        return Fraction(math.isqrt(x.numerator))
    return Fraction(Decimal(x.numerator / x.denominator).sqrt()) if x < 10 ** 300 else Fraction(math.sqrt(float(x)))


_FUNCS = {
    "sqrt": (1, _sqrt),
    "abs": (1, abs),
    "round": (None, lambda x, nd=Fraction(0): Fraction(round(x, _int(nd, "round")))),
    "min": (None, min),
    "max": (None, max),
    "gcd": (None, lambda *xs: Fraction(math.gcd(*(_int(x, "gcd") for x in xs)))),
    "lcm": (None, lambda *xs: Fraction(math.lcm(*(_int(x, "lcm") for x in xs)))),
    "factorial": (1, lambda x: Fraction(math.factorial(_bounded_factorial(x)))),
}


def _bounded_factorial(x: Fraction) -> int:
    n = _int(x, "factorial")
    if not 0 <= n <= MAX_FACTORIAL:
        raise CalculatorError(f"factorial takes 0..{MAX_FACTORIAL}")
    return n


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return _num(repr(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        v = _eval(node.operand)
        return v if isinstance(node.op, ast.UAdd) else -v
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left), _eval(node.right)
        op = node.op
        if isinstance(op, ast.Add):
            return _check(a + b)
        if isinstance(op, ast.Sub):
            return _check(a - b)
        if isinstance(op, ast.Mult):
            return _check(a * b)
        if isinstance(op, (ast.Div, ast.FloorDiv, ast.Mod)):
            if b == 0:
                raise CalculatorError("division by zero")
            if isinstance(op, ast.Div):
                return _check(a / b)
            return _check(Fraction(a // b) if isinstance(op, ast.FloorDiv) else a % b)
        if isinstance(op, ast.Pow):
            e = _int(b, "an exponent") if b.denominator == 1 else None
            if e is None:
                if a < 0:
                    raise CalculatorError("a fractional power of a negative number")
                return _check(Fraction(float(a) ** float(b)))
            if abs(e) > MAX_EXPONENT:
                raise CalculatorError(f"exponents are limited to +-{MAX_EXPONENT}")
            if a == 0 and e < 0:
                raise CalculatorError("division by zero")
            return _check(a ** e)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        spec = _FUNCS.get(node.func.id)
        if spec is None:
            raise CalculatorError(f"unknown function {node.func.id!r}; known: {', '.join(sorted(_FUNCS))}")
        arity, fn = spec
        if arity is not None and len(node.args) != arity or not node.args:
            raise CalculatorError(f"{node.func.id} takes {arity or 'one or more'} argument(s)")
        return _check(Fraction(fn(*(_eval(a) for a in node.args))))
    raise CalculatorError(f"not arithmetic: {ast.unparse(node)[:60]!r} (numbers, operators and {', '.join(sorted(_FUNCS))})")


def format_number(x: Fraction) -> str:
    """An integer as digits; a fraction exactly, and its decimal value."""
    if x.denominator == 1:
        return str(x.numerator)
    dec = Decimal(x.numerator) / Decimal(x.denominator)
    if x.denominator > 10 ** 6:  # an irrational result (sqrt, fractional power): its decimal value says more
        return f"{dec:.15g}"
    return f"{x.numerator}/{x.denominator} (= {dec:.12g})"


def calculate(expression: str) -> str:
    expr = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    expr = _THOUSANDS.sub("", expr)  # 1,234,567 -> 1234567 (gcd(12, 18) keeps its comma)
    if not expr:
        raise CalculatorError("empty expression")
    if len(expr) > 500:
        raise CalculatorError("expressions are limited to 500 characters")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise CalculatorError(f"cannot parse {expression!r}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculatorError("the expression is too long")
    return format_number(_eval(tree))
