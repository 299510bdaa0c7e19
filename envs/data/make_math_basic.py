"""Writes `math_basic.jsonl`, the bundled math set (run once; the output is committed).

200 problems in four levels, so that small models get a reward signal and larger ones
still find headroom: 1 = one operation, 2 = two operations, 3 = short word problems,
4 = fractions, percentages and linear equations. Answers are computed exactly.

    python envs/data/make_math_basic.py
"""

from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path

NAMES = [
    "Ana",
    "Ben",
    "Chen",
    "Dara",
    "Eli",
    "Fatima",
    "Goran",
    "Hana",
    "Ivan",
    "Jun",
    "Kofi",
    "Lena",
]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "cards", "shells"]


def latex(value: Fraction) -> str:
    """Integers as integers, terminating decimals (money, percentages) as decimals, else a fraction."""
    if value.denominator == 1:
        return str(value.numerator)
    if 100 % value.denominator == 0:
        return f"{float(value):g}"
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def level1(rng: random.Random) -> tuple[str, Fraction]:
    a, b = rng.randint(2, 50), rng.randint(2, 50)
    op = rng.choice("+-*")
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    symbol = {"+": "+", "-": "-", "*": "\\times"}[op]
    return f"What is ${a} {symbol} {b}$?", Fraction(value)


def level2(rng: random.Random) -> tuple[str, Fraction]:
    a, b, c = rng.randint(2, 30), rng.randint(2, 12), rng.randint(2, 40)
    form = rng.randrange(3)
    if form == 0:
        return f"What is ${a} \\times {b} + {c}$?", Fraction(a * b + c)
    if form == 1:
        return f"What is ${a} \\times {b} - {c}$?", Fraction(a * b - c)
    return f"What is $({a} + {c}) \\times {b}$?", Fraction((a + c) * b)


def level3(rng: random.Random) -> tuple[str, Fraction]:
    name, other = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    form = rng.randrange(5)
    if form == 0:
        a, b = rng.randint(5, 40), rng.randint(5, 40)
        return (
            f"{name} has {a} {item}. {other} gives {name} {b} more. How many {item} does {name} have now?",
            Fraction(a + b),
        )
    if form == 1:
        a = rng.randint(20, 90)
        b = rng.randint(2, a - 5)
        return (
            f"{name} had {a} {item} and gave {b} of them to {other}. How many {item} does {name} have left?",
            Fraction(a - b),
        )
    if form == 2:
        boxes, per = rng.randint(3, 12), rng.randint(4, 15)
        return (
            f"{name} buys {boxes} boxes of {item}. Each box holds {per} {item}. How many {item} does {name} buy in total?",
            Fraction(boxes * per),
        )
    if form == 3:
        people, per = rng.randint(2, 9), rng.randint(3, 12)
        total = people * per
        return (
            f"{name} shares {total} {item} equally among {people} friends. How many {item} does each friend get?",
            Fraction(per),
        )
    speed, hours = rng.randint(20, 90), rng.randint(2, 7)
    return (
        f"A train travels at {speed} km per hour for {hours} hours. How many kilometres does it travel?",
        Fraction(speed * hours),
    )


def level4(rng: random.Random) -> tuple[str, Fraction]:
    form = rng.randrange(4)
    if form == 0:
        a, b = (
            Fraction(rng.randint(1, 9), rng.randint(2, 9)),
            Fraction(rng.randint(1, 9), rng.randint(2, 9)),
        )
        return (
            f"Compute $\\frac{{{a.numerator}}}{{{a.denominator}}} + \\frac{{{b.numerator}}}{{{b.denominator}}}$.",
            a + b,
        )
    if form == 1:
        pct, base = rng.choice([10, 15, 20, 25, 30, 40, 50, 75]), rng.randrange(20, 400, 4)
        return (f"What is {pct}% of {base}?", Fraction(pct * base, 100))
    if form == 2:
        x, a, b = rng.randint(-9, 12), rng.randint(2, 9), rng.randint(-20, 20)
        c = a * x + b
        sign = "+" if b >= 0 else "-"
        return (f"Solve for $x$: ${a}x {sign} {abs(b)} = {c}$.", Fraction(x))
    price, pct = rng.randrange(20, 200, 5), rng.choice([10, 20, 25, 50])
    return (
        f"A jacket costs {price} dollars. It is on sale for {pct}% off. What is the sale price in dollars?",
        Fraction(price * (100 - pct), 100),
    )


def main() -> None:
    rng = random.Random(20261121)
    rows = []
    for level, make, count in [(1, level1, 40), (2, level2, 40), (3, level3, 60), (4, level4, 60)]:
        seen = set()
        while len([r for r in rows if r["level"] == level]) < count:
            prompt, answer = make(rng)
            if prompt in seen:
                continue
            seen.add(prompt)
            n = len([r for r in rows if r["level"] == level])
            rows.append(
                {
                    "id": f"math_basic-L{level}-{n:03d}",
                    "prompt": prompt,
                    "answer": latex(answer),
                    "level": level,
                }
            )
    out = Path(__file__).with_name("math_basic.jsonl")
    out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    print(f"wrote {len(rows)} problems to {out}")


if __name__ == "__main__":
    main()
