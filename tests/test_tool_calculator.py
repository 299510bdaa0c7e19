"""The calculator tool: exact results, refusals with clear messages, and attacks that stay inert."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from envs.tools.calculator import MAX_RESULT_DIGITS, calculator_tool
from envs.tools.tool import ToolResult

CALCULATOR = calculator_tool()


def calc(expression: str) -> ToolResult:
    return asyncio.run(CALCULATOR({"expression": expression}))


def value(expression: str) -> str:
    result = calc(expression)
    assert result.error is None, result.content
    return result.content


def test_schema() -> None:
    schema = CALCULATOR.schema
    assert schema["type"] == "function"
    function = schema["function"]
    assert function["name"] == "calculator" and CALCULATOR.name == "calculator"
    assert function["parameters"]["required"] == ["expression"] == CALCULATOR.required
    assert function["parameters"]["properties"]["expression"]["type"] == "string"
    assert "sqrt(2) * pi" in function["parameters"]["properties"]["expression"]["description"]
    assert "sqrt" in function["description"] and "factorial" in function["description"]
    assert calculator_tool(timeout_s=0.5).timeout_s == 0.5


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("(3 + 4) * 2 ** 10 / 7", "1024"),  # a float that is exactly an integer reads as one
        ("7/2", "3.5"),
        ("2**100", str(2**100)),
        ("-2**3", "-8"),
        ("123456789 * 987654321", str(123456789 * 987654321)),
        ("12345678 ** 2", str(12345678**2)),  # simpleeval's base cap would refuse this
        ("2**5000 % 1000", str(2**5000 % 1000)),  # big intermediates are fine
        ("pow(3, 10**100, 1000)", str(pow(3, 10**100, 1000))),
        ("17 // 5", "3"),
        ("-17 % 5", "3"),
        ("0.1 + 0.2", repr(0.1 + 0.2)),
        ("1e20", "1e+20"),
        ("2**53 + 1.0", "9007199254740992.0"),  # above 2**53 a float is not shown as an exact int
        ("sqrt(2) * pi", repr(math.sqrt(2) * math.pi)),
        ("sqrt(16)", "4"),
        ("log(e)", "1"),
        ("log(8, 2)", "3"),
        ("log10(1000)", "3"),
        ("log2(1024)", "10"),
        ("exp(1)", repr(math.exp(1))),
        ("sin(pi / 2)", "1"),
        ("cos(0)", "1"),
        ("tan(pi / 4)", repr(math.tan(math.pi / 4))),
        ("asin(1)", repr(math.asin(1))),
        ("acos(1)", "0"),
        ("atan(1) * 4", repr(math.atan(1) * 4)),
        ("tau / 2 == pi", "True"),
        ("3 < 4 <= 4", "True"),
        ("2 != 2", "False"),
        ("floor(-2.5)", "-3"),
        ("ceil(2.1)", "3"),
        ("factorial(25)", str(math.factorial(25))),
        ("factorial(1000) // factorial(998)", "999000"),
        ("gcd(2**64, 6**20)", str(math.gcd(2**64, 6**20))),
        ("lcm(12, 18, 30)", "180"),
        ("comb(50, 25)", str(math.comb(50, 25))),
        ("perm(10, 3)", "720"),
        ("abs(-7)", "7"),
        ("round(2.675, 2)", repr(round(2.675, 2))),
        ("round(1234, -2)", "1200"),
        ("min(3, 1, 2) + max(4, 9)", "10"),
        ("int(7.9)", "7"),
        ("float(3)", "3"),
        ("-0.0", "0"),
        ("  1 + 1  ", "2"),
    ],
)
def test_results(expression: str, expected: str) -> None:
    assert value(expression) == expected


def test_integers_up_to_the_digit_cap_are_exact() -> None:
    biggest = 10**MAX_RESULT_DIGITS - 1
    assert value(f"10**{MAX_RESULT_DIGITS} - 1") == str(biggest)
    result = calc(f"10**{MAX_RESULT_DIGITS}")
    assert result.error == "raised" and f"{MAX_RESULT_DIGITS + 1} digits" in result.content


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("1 + " * 130 + "1", "expression too long"),
        ("1 +", "could not parse"),
        ("(1 + 2", "could not parse"),
        ("1; 2", "could not parse"),
        ("x = 1", "could not parse"),
        ("import os", "could not parse"),
        ("x + 1", "unknown name 'x'"),
        ("foo(2)", "unknown function 'foo'"),
        ("sqrt", "sqrt is a function"),
        ("1 / 0", "division by zero"),
        ("5 // 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("log(0)", "math domain error"),
        ("sqrt(-1)", "math domain error"),
        ("(-8) ** (1/3)", "complex result"),
        ("9 ** 9 ** 9", "exponent 387420489 is too large"),
        ("3999999 ** 3999999", "would have about"),
        ("2 ** 40000", "would have about"),
        ("(10**3000) ** 4", "would have about"),
        ("factorial(1001)", "factorial(1001) is too large"),
        ("factorial(100000000)", "is too large"),
        ("factorial(1000)", "2568 digits"),
        ("factorial(2.5)", "wrong argument types"),
        ("comb(10**9, 5*10**8)", "would have about"),
        ("perm(10**6, 5000)", "would have about"),
        ("round(5, -10**9)", "round() takes at most"),
        ("10**9000 * 10**9000", "would have about"),  # intermediate integers are capped too
        ("1e308 * 10", "not a finite number"),
        ("exp(1000)", "too large for a floating-point number"),
        ("float(10**400)", "too large for a floating-point number"),
        ("2**10000 / 3", "too large for a floating-point number"),
        ("1 ^ 2", "operator ^"),
        ("1 << 3", "operator <<"),
        ("~1", "operator ~"),
        ("not 1", "operator not"),
        ("1 and 2", "and/or"),
        ("1 if 1 else 2", "conditional"),
        ("1j", "complex numbers"),
        ("True + 1", "True/False"),
        ("'a' * 10", "strings"),
        ("b'a'", "bytes"),
        ("f'{1}'", "strings"),
        ("[1, 2]", "lists"),
        ("max(key=abs)", "keyword arguments"),
        ("-" * 200 + "1", "nested too deeply"),
    ],
)
def test_refusals_name_the_problem(expression: str, message: str) -> None:
    started = time.monotonic()
    result = calc(expression)
    assert result.error == "raised", result.content
    assert result.content.startswith("Error: ")
    assert message in result.content
    assert time.monotonic() - started < 1.0  # refused before any big work starts


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ("__import__('os').system('touch MARKER')", "only the calculator's functions can be called"),
        ("open('MARKER', 'w').write('x')", "only the calculator's functions can be called"),
        ("__import__('os')", "unknown function '__import__'"),
        ("().__class__", "attribute access"),
        ("().__class__.__bases__[0].__subclasses__()", "only the calculator's functions can be called"),
        ("(1).__class__", "attribute access"),
        ("pi.__class__", "attribute access"),
        ("sqrt.__globals__", "attribute access"),
        ("(lambda: 1)()", "only the calculator's functions can be called"),
        ("(lambda: __import__('os'))()", "only the calculator's functions can be called"),
        ("open('/etc/passwd')", "unknown function 'open'"),
        ("eval('1 + 1')", "unknown function 'eval'"),
        ("exec('x = 1')", "unknown function 'exec'"),
        ("getattr(1, 'real')", "unknown function 'getattr'"),
        ("globals()", "unknown function 'globals'"),
        ("__builtins__", "unknown name '__builtins__'"),
        ("[c for c in ().__class__.__mro__]", "comprehensions"),
        ("(x := 5)", "assignment"),
        ("int.__subclasses__()", "only the calculator's functions can be called"),
        ("max(*[1])", "*arguments"),
        ("int('5')", "strings"),
    ],
)
def test_attacks_are_refused_not_run(attack: str, message: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = calc(attack.replace("MARKER", str(marker)))
    assert result.error == "raised", result.content
    assert message in result.content
    assert not marker.exists()


def test_bad_arguments_are_caught_by_the_schema() -> None:
    result = asyncio.run(CALCULATOR({"expr": "1 + 1"}))
    assert result.error == "bad_arguments"
    result = asyncio.run(CALCULATOR({"expression": 5}))
    assert result.error == "bad_arguments"
