"""`calculator`: a safe arithmetic tool, so a model can stop doing long arithmetic in its head.

Expressions are evaluated by simpleeval (never `eval`), and only after the parsed tree has
passed a whitelist: numbers, the names `pi`, `e` and `tau`, calls to the functions in
`FUNCTIONS` by name, `+ - * / // % **`, unary signs and comparisons. Strings, attributes,
subscripts, lambdas, keyword arguments and everything else are refused before anything
runs, so `__import__('os')` or `().__class__` are errors, not executions.

The tool runs in a worker thread that cannot be killed, so it must refuse runaway work
itself rather than lean on the tool's timeout. It does so before the work starts: an
exponent above simpleeval's `MAX_POWER`, any power, factorial, `comb` or `perm` whose
result would exceed `MAX_INT_DIGITS` digits, a factorial of more than `MAX_FACTORIAL`.
Every intermediate integer is held to `MAX_INT_DIGITS` digits, and the answer shown to
the model to `MAX_RESULT_DIGITS`. (simpleeval's own `safe_power` also caps the *base* at
`MAX_POWER`, which would refuse `12345678 ** 2`; the size estimate here makes that cap
unnecessary, so only its exponent cap is kept.)
"""

from __future__ import annotations

import ast
import math
import operator as op
from collections.abc import Callable
from typing import Any

import simpleeval

from envs.tools.tool import DEFAULT_MAX_OUTPUT_CHARS, Tool, ToolError

MAX_EXPRESSION_CHARS = 500
MAX_DEPTH = 100  # nesting of the parsed expression
MAX_INT_DIGITS = 10_000  # any integer along the way
MAX_RESULT_DIGITS = 1000  # the integer given back
MAX_FACTORIAL = 1000
MAX_EXPONENT = simpleeval.MAX_POWER
MAX_ROUND_DIGITS = 1000  # |ndigits| for round()

_LOG2_10 = math.log2(10)
_MAX_INT_BITS = int(MAX_INT_DIGITS * _LOG2_10) + 1
_EXACT_FLOAT_INTS = 2**53  # below this every integer has an exact float

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _show(n: Any) -> str:
    """A number for an error message (a long integer by its size: str() of one may even fail)."""
    if isinstance(n, int) and n.bit_length() > 200:
        return f"<a {_digits(n)}-digit number>"
    return repr(n)


def _digits(n: int) -> int:
    """The number of decimal digits of |n| (approximate, within one, above 4000 bits)."""
    if n.bit_length() <= 4000:
        return len(str(abs(n)))
    return int(n.bit_length() / _LOG2_10) + 1


def _too_big(what: str, bits: float) -> ToolError:
    digits = int(bits / _LOG2_10) + 1
    return ToolError(f"{what} would have about {digits} digits; the calculator stops at {MAX_INT_DIGITS}")


def _check_int_size(value: Any, what: str = "an intermediate result") -> None:
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise _too_big(what, value.bit_length())


def _power(base: Any, exponent: Any) -> Any:
    """`base ** exponent`, refused before it starts if the exponent or the result is too large."""
    if isinstance(exponent, int | float) and abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"exponent {_show(exponent)} is too large (at most {MAX_EXPONENT})")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        bits = exponent * math.log2(abs(base))
        if bits > _MAX_INT_BITS:
            raise _too_big(f"{_show(base)} ** {exponent}", bits)
    return base**exponent


def _pow(base: Any, exponent: Any, modulus: Any = None) -> Any:
    """`pow(a, b)` like `a ** b`; `pow(a, b, m)` is modular and fast for any exponent size."""
    if modulus is None:
        return _power(base, exponent)
    return pow(base, exponent, modulus)


def _factorial(n: Any) -> int:
    if isinstance(n, int) and n > MAX_FACTORIAL:
        raise ToolError(f"factorial({_show(n)}) is too large (the argument may be at most {MAX_FACTORIAL})")
    return math.factorial(n)


def _comb(n: Any, k: Any) -> int:
    if isinstance(n, int) and isinstance(k, int) and 0 <= k <= n:
        bits = min(k, n - k) * max(n.bit_length(), 1)
        if bits > _MAX_INT_BITS and math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) > (
            _MAX_INT_BITS * math.log(2)
        ):
            raise _too_big(f"comb({_show(n)}, {_show(k)})", bits)
    return math.comb(n, k)


def _perm(n: Any, k: Any = None) -> int:
    if k is None:
        return _factorial(n)
    if isinstance(n, int) and isinstance(k, int) and 0 <= k <= n:
        bits = k * max(n.bit_length(), 1)
        if bits > _MAX_INT_BITS and math.lgamma(n + 1) - math.lgamma(n - k + 1) > _MAX_INT_BITS * math.log(2):
            raise _too_big(f"perm({_show(n)}, {_show(k)})", bits)
    return math.perm(n, k)


def _round(number: Any, ndigits: Any = None) -> Any:
    if ndigits is None:
        return round(number)
    if isinstance(ndigits, int) and abs(ndigits) > MAX_ROUND_DIGITS:
        raise ToolError(f"round() takes at most {MAX_ROUND_DIGITS} digits, got {_show(ndigits)}")
    return round(number, ndigits)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "isqrt": math.isqrt,
    "cbrt": math.cbrt,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "hypot": math.hypot,
    "degrees": math.degrees,
    "radians": math.radians,
    "floor": math.floor,
    "ceil": math.ceil,
    "trunc": math.trunc,
    "factorial": _factorial,
    "gcd": math.gcd,
    "lcm": math.lcm,
    "comb": _comb,
    "perm": _perm,
    "pow": _pow,
    "abs": abs,
    "round": _round,
    "min": min,
    "max": max,
    "int": int,
    "float": float,
}

OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: op.add,
    ast.Sub: op.sub,
    ast.Mult: op.mul,
    ast.Div: op.truediv,
    ast.FloorDiv: op.floordiv,
    ast.Mod: op.mod,
    ast.Pow: _power,
    ast.USub: op.neg,
    ast.UAdd: op.pos,
    ast.Eq: op.eq,
    ast.NotEq: op.ne,
    ast.Lt: op.lt,
    ast.LtE: op.le,
    ast.Gt: op.gt,
    ast.GtE: op.ge,
}

_SYMBOLS = {
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^ (use ** for powers)",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.Invert: "~",
    ast.Not: "not",
    ast.MatMult: "@",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
}
_CONSTANT_KINDS = {str: "strings", bytes: "bytes", bool: "True/False", complex: "complex numbers"}
_OPERATOR_NODES = (ast.operator, ast.unaryop, ast.cmpop)
_REFUSED_NODES: dict[type, str] = {
    ast.Attribute: "attribute access (a.b)",
    ast.Subscript: "indexing (a[b])",
    ast.Lambda: "lambda",
    ast.BoolOp: "and/or",
    ast.IfExp: "conditional expressions",
    ast.JoinedStr: "strings",
    ast.Tuple: "tuples",
    ast.List: "lists",
    ast.Set: "sets",
    ast.Dict: "dicts",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.NamedExpr: "assignment (:=)",
    ast.Starred: "*arguments",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


def _check_tree(tree: ast.Expression) -> None:
    """Refuse anything outside plain arithmetic before a single node is evaluated."""
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ToolError(f"the expression is nested too deeply (more than {MAX_DEPTH} levels)")
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                kind = _CONSTANT_KINDS.get(type(node.value), type(node.value).__name__)
                raise ToolError(f"only real numbers are allowed, not {kind} ({ast.unparse(node)})")
        elif isinstance(node, ast.Name):
            if node.id not in CONSTANTS:
                if node.id in FUNCTIONS:
                    raise ToolError(f"{node.id} is a function: call it, e.g. {node.id}(2)")
                raise ToolError(f"unknown name {node.id!r}; the known constants are {', '.join(CONSTANTS)}")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                called = ast.unparse(node.func)
                raise ToolError(f"only the calculator's functions can be called, not {called}")
            if node.func.id not in FUNCTIONS:
                raise ToolError(
                    f"unknown function {node.func.id!r}; available: {', '.join(sorted(FUNCTIONS))}"
                )
            if node.keywords:
                raise ToolError(f"keyword arguments are not supported ({node.func.id})")
            stack.extend((arg, depth + 1) for arg in node.args)
        elif isinstance(node, ast.BinOp | ast.UnaryOp | ast.Compare):
            ops = node.ops if isinstance(node, ast.Compare) else [node.op]
            for operator in ops:
                if type(operator) not in OPERATORS:
                    symbol = _SYMBOLS.get(type(operator), type(operator).__name__)
                    raise ToolError(f"the operator {symbol} is not supported")
            children = ast.iter_child_nodes(node)
            stack.extend((child, depth + 1) for child in children if not isinstance(child, _OPERATOR_NODES))
        else:
            what = _REFUSED_NODES.get(type(node), type(node).__name__)
            raise ToolError(f"not allowed in a calculator expression: {what}")


class _Evaluator(simpleeval.SimpleEval):
    """simpleeval with our operators, functions and names, holding every value to a number."""

    def __init__(self) -> None:
        super().__init__(operators=dict(OPERATORS), functions=dict(FUNCTIONS), names=dict(CONSTANTS))
        allowed = (ast.Name, ast.UnaryOp, ast.BinOp, ast.Compare, ast.Call, ast.Constant)
        self.nodes = {node: handler for node, handler in self.nodes.items() if node in allowed}

    def _eval(self, node: ast.AST) -> Any:
        value = super()._eval(node)
        if isinstance(value, complex):
            raise ToolError(f"{ast.unparse(node)} has a complex result")
        if isinstance(value, int | float):  # bool is an int
            _check_int_size(value)
            return value
        raise ToolError(f"{ast.unparse(node)} is not a number")


def evaluate(expression: str) -> int | float | bool:
    """The value of an arithmetic expression; `ToolError` says why one is refused."""
    text = expression.strip()
    if not text:
        raise ToolError("empty expression: give an arithmetic expression such as (3 + 4) * 2")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression too long ({len(text)} characters; at most {MAX_EXPRESSION_CHARS})")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise ToolError(f"could not parse {text!r}: {getattr(exc, 'msg', exc)}") from None
    _check_tree(tree)
    try:
        return _Evaluator().eval(text, previously_parsed=tree.body)
    except ToolError:
        raise
    except ZeroDivisionError:
        raise ToolError(f"division by zero in {text!r}") from None
    except OverflowError as exc:
        raise ToolError(f"result too large for a floating-point number ({exc})") from None
    except simpleeval.NumberTooHigh as exc:
        raise ToolError(f"number too large: {exc}") from None
    except simpleeval.InvalidExpression as exc:
        raise ToolError(f"cannot evaluate {text!r}: {exc}") from None
    except RecursionError:
        raise ToolError("the expression is nested too deeply") from None
    except ValueError as exc:
        if str(exc) == "math domain error":
            hint = "e.g. sqrt or log of a negative number"
            raise ToolError(f"math domain error in {text!r} ({hint})") from None
        raise ToolError(f"invalid value in {text!r}: {exc}") from None
    except TypeError as exc:
        raise ToolError(f"wrong argument types in {text!r}: {exc}") from None


def format_result(value: int | float | bool) -> str:
    """Integers exactly; floats with `repr` precision, `4.0` as `4` below 2**53; booleans as True/False."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        digits = _digits(value)
        if digits > MAX_RESULT_DIGITS:
            limit = MAX_RESULT_DIGITS
            raise ToolError(f"the result has {digits} digits; the calculator shows at most {limit}")
        return str(value)
    if not math.isfinite(value):
        raise ToolError(f"the result is not a finite number ({value}); a value overflowed or was undefined")
    if value == 0:
        return "0"  # not "-0.0"
    if value.is_integer() and abs(value) < _EXACT_FLOAT_INTS:  # a float that is exactly this integer
        return str(int(value))
    return repr(value)


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly (integers of any size) or in floating point.

    Supports + - * / // % ** with parentheses, unary minus and comparisons; the constants
    pi, e, tau; and the functions sqrt, isqrt, cbrt, exp, log (natural, or log(x, base)),
    log10, log2, sin, cos, tan, asin, acos, atan, atan2, sinh, cosh, tanh, hypot, degrees,
    radians, floor, ceil, trunc, factorial, gcd, lcm, comb, perm, pow (pow(a, b, m) is
    modular), abs, round, min, max, int, float. Angles are in radians.

    Args:
        expression: An arithmetic expression, e.g. `(3 + 4) * 2 ** 10 / 7` or `sqrt(2) * pi`
    """
    return format_result(evaluate(expression))


def calculator_tool(*, timeout_s: float = 2.0, max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS) -> Tool:
    """The `calculator` tool (one parameter, `expression`)."""
    return Tool(calculate, name="calculator", timeout_s=timeout_s, max_output_chars=max_output_chars)
