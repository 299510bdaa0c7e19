"""Writes `code_basic.jsonl`, the bundled programming set (run once; the output is committed).

30 small original problems, each a whole program that reads stdin and writes stdout, with
3 to 5 hand-written tests and a reference solution. `tests/test_code_env.py` runs every
reference solution against its tests in the sandbox, so a wrong expected output is caught.

    python envs/data/make_code_basic.py
"""

from __future__ import annotations

import json
from pathlib import Path

Tests = list[tuple[str, str]]


def problem(pid: str, prompt: str, solution: str, tests: Tests) -> dict[str, object]:
    return {
        "id": f"code-basic/{pid}",
        "prompt": prompt.strip(),
        "tests": [{"input": given, "output": expected} for given, expected in tests],
        "language": "python",
        "solution": solution.strip() + "\n",
    }


PROBLEMS = [
    problem(
        "sum-two",
        """
Read two integers a and b, given on one line separated by a space, and print their sum.

Example input:
2 3
Example output:
5
""",
        """
a, b = map(int, input().split())
print(a + b)
""",
        [("2 3\n", "5\n"), ("-4 10\n", "6\n"), ("0 0\n", "0\n"), ("123456789 987654321\n", "1111111110\n")],
    ),
    problem(
        "sum-list",
        """
The first line holds a number n. The second line holds n integers separated by spaces.
Print the sum of the n integers.

Example input:
3
1 2 3
Example output:
6
""",
        """
n = int(input())
numbers = list(map(int, input().split()))
print(sum(numbers[:n]))
""",
        [
            ("3\n1 2 3\n", "6\n"),
            ("1\n-7\n", "-7\n"),
            ("5\n10 -10 20 -20 5\n", "5\n"),
            ("4\n0 0 0 1\n", "1\n"),
        ],
    ),
    problem(
        "max-of-list",
        """
The first line holds a number n (n >= 1). The second line holds n integers separated by
spaces. Print the largest of them.

Example input:
4
3 9 -2 7
Example output:
9
""",
        """
n = int(input())
print(max(map(int, input().split())))
""",
        [("4\n3 9 -2 7\n", "9\n"), ("1\n-5\n", "-5\n"), ("3\n-3 -1 -2\n", "-1\n"), ("5\n4 4 4 4 4\n", "4\n")],
    ),
    problem(
        "reverse-words",
        """
Read one line of words separated by spaces. Print the words in reverse order, separated
by single spaces.

Example input:
the quick brown fox
Example output:
fox brown quick the
""",
        """
print(" ".join(reversed(input().split())))
""",
        [
            ("the quick brown fox\n", "fox brown quick the\n"),
            ("hello\n", "hello\n"),
            ("a  b   c\n", "c b a\n"),
            ("one two\n", "two one\n"),
        ],
    ),
    problem(
        "reverse-string",
        """
Read one line of text and print it reversed.

Example input:
hello
Example output:
olleh
""",
        """
print(input()[::-1])
""",
        [("hello\n", "olleh\n"), ("racecar\n", "racecar\n"), ("ab cd\n", "dc ba\n"), ("12345\n", "54321\n")],
    ),
    problem(
        "count-vowels",
        """
Read one line of text. Print how many vowels it contains. The vowels are a, e, i, o and u,
in upper or lower case.

Example input:
Hello World
Example output:
3
""",
        """
print(sum(1 for c in input().lower() if c in "aeiou"))
""",
        [
            ("Hello World\n", "3\n"),
            ("rhythm\n", "0\n"),
            ("AEIOU aeiou\n", "10\n"),
            ("Programming is fun\n", "5\n"),
        ],
    ),
    problem(
        "fizzbuzz",
        """
Read a number n. For each number i from 1 to n, print one line: "FizzBuzz" if i is
divisible by both 3 and 5, "Fizz" if it is divisible by 3 only, "Buzz" if it is divisible
by 5 only, and i itself otherwise.

Example input:
5
Example output:
1
2
Fizz
4
Buzz
""",
        """
n = int(input())
for i in range(1, n + 1):
    if i % 15 == 0:
        print("FizzBuzz")
    elif i % 3 == 0:
        print("Fizz")
    elif i % 5 == 0:
        print("Buzz")
    else:
        print(i)
""",
        [
            ("5\n", "1\n2\nFizz\n4\nBuzz\n"),
            ("1\n", "1\n"),
            ("15\n", "1\n2\nFizz\n4\nBuzz\nFizz\n7\n8\nFizz\nBuzz\n11\nFizz\n13\n14\nFizzBuzz\n"),
        ],
    ),
    problem(
        "foo-bar",
        """
Read three numbers a, b and n on one line. For each number i from 1 to n, print one line:
"FooBar" if i is divisible by both a and b, "Foo" if it is divisible by a only, "Bar" if
it is divisible by b only, and i itself otherwise.

Example input:
2 3 6
Example output:
1
Foo
Bar
Foo
5
FooBar
""",
        """
a, b, n = map(int, input().split())
for i in range(1, n + 1):
    word = ("Foo" if i % a == 0 else "") + ("Bar" if i % b == 0 else "")
    print(word or i)
""",
        [
            ("2 3 6\n", "1\nFoo\nBar\nFoo\n5\nFooBar\n"),
            ("4 4 5\n", "1\n2\n3\nFooBar\n5\n"),
            ("7 2 3\n", "1\nBar\n3\n"),
            ("1 5 5\n", "Foo\nFoo\nFoo\nFoo\nFooBar\n"),
        ],
    ),
    problem(
        "gcd",
        """
Read two positive integers on one line and print their greatest common divisor.

Example input:
12 18
Example output:
6
""",
        """
a, b = map(int, input().split())
while b:
    a, b = b, a % b
print(a)
""",
        [("12 18\n", "6\n"), ("7 13\n", "1\n"), ("100 10\n", "10\n"), ("270 192\n", "6\n"), ("5 5\n", "5\n")],
    ),
    problem(
        "lcm",
        """
Read two positive integers on one line and print their least common multiple.

Example input:
4 6
Example output:
12
""",
        """
import math

a, b = map(int, input().split())
print(a * b // math.gcd(a, b))
""",
        [("4 6\n", "12\n"), ("3 5\n", "15\n"), ("10 10\n", "10\n"), ("21 6\n", "42\n"), ("1 9\n", "9\n")],
    ),
    problem(
        "primes-up-to",
        """
Read a number n and print all prime numbers less than or equal to n, in increasing order,
on one line separated by spaces. If there are none, print an empty line.

Example input:
10
Example output:
2 3 5 7
""",
        """
n = int(input())
primes = [p for p in range(2, n + 1) if all(p % d for d in range(2, int(p**0.5) + 1))]
print(" ".join(map(str, primes)))
""",
        [
            ("10\n", "2 3 5 7\n"),
            ("2\n", "2\n"),
            ("1\n", "\n"),
            ("30\n", "2 3 5 7 11 13 17 19 23 29\n"),
        ],
    ),
    problem(
        "is-prime",
        """
Read a positive integer n. Print YES if n is a prime number and NO otherwise.

Example input:
7
Example output:
YES
""",
        """
n = int(input())
print("YES" if n > 1 and all(n % d for d in range(2, int(n**0.5) + 1)) else "NO")
""",
        [("7\n", "YES\n"), ("1\n", "NO\n"), ("91\n", "NO\n"), ("97\n", "YES\n"), ("1000003\n", "YES\n")],
    ),
    problem(
        "factorial",
        """
Read a number n (0 <= n <= 25) and print n! (the product 1 * 2 * ... * n; 0! is 1).

Example input:
5
Example output:
120
""",
        """
import math

print(math.factorial(int(input())))
""",
        [
            ("5\n", "120\n"),
            ("0\n", "1\n"),
            ("1\n", "1\n"),
            ("10\n", "3628800\n"),
            ("25\n", "15511210043330985984000000\n"),
        ],
    ),
    problem(
        "fibonacci",
        """
The Fibonacci numbers are F(0) = 0, F(1) = 1 and F(n) = F(n-1) + F(n-2). Read n
(0 <= n <= 90) and print F(n).

Example input:
10
Example output:
55
""",
        """
n = int(input())
a, b = 0, 1
for _ in range(n):
    a, b = b, a + b
print(a)
""",
        [("10\n", "55\n"), ("0\n", "0\n"), ("1\n", "1\n"), ("2\n", "1\n"), ("90\n", "2880067194370816120\n")],
    ),
    problem(
        "palindrome",
        """
Read one line of text. Print YES if it reads the same forwards and backwards when only
its letters and digits are kept and upper and lower case are treated alike; print NO
otherwise.

Example input:
A man, a plan, a canal: Panama
Example output:
YES
""",
        """
kept = [c.lower() for c in input() if c.isalnum()]
print("YES" if kept == kept[::-1] else "NO")
""",
        [
            ("A man, a plan, a canal: Panama\n", "YES\n"),
            ("hello\n", "NO\n"),
            ("No lemon, no melon\n", "YES\n"),
            ("ab\n", "NO\n"),
            ("12 21\n", "YES\n"),
        ],
    ),
    problem(
        "digit-sum",
        """
Read an integer (it may be negative) and print the sum of its decimal digits.

Example input:
-123
Example output:
6
""",
        """
print(sum(int(c) for c in input().strip().lstrip("-")))
""",
        [("-123\n", "6\n"), ("0\n", "0\n"), ("9999\n", "36\n"), ("1000001\n", "2\n")],
    ),
    problem(
        "count-words",
        """
Read one line of text and print how many words it has. Words are separated by one or
more spaces.

Example input:
the cat   sat
Example output:
3
""",
        """
print(len(input().split()))
""",
        [
            ("the cat   sat\n", "3\n"),
            ("word\n", "1\n"),
            ("  leading and trailing  \n", "3\n"),
            ("a b c d e f\n", "6\n"),
        ],
    ),
    problem(
        "letter-counts",
        """
Read one word of lowercase letters. For each distinct letter, in alphabetical order,
print a line with the letter, a space, and how many times it occurs.

Example input:
banana
Example output:
a 3
b 1
n 2
""",
        """
from collections import Counter

for letter, count in sorted(Counter(input().strip()).items()):
    print(letter, count)
""",
        [
            ("banana\n", "a 3\nb 1\nn 2\n"),
            ("z\n", "z 1\n"),
            ("mississippi\n", "i 4\nm 1\np 2\ns 4\n"),
            ("abcabc\n", "a 2\nb 2\nc 2\n"),
        ],
    ),
    problem(
        "second-largest",
        """
The first line holds n, the second line n integers. Print the second largest distinct
value among them, or NONE if there are fewer than two distinct values.

Example input:
5
4 1 4 3 2
Example output:
3
""",
        """
input()
values = sorted(set(map(int, input().split())))
print(values[-2] if len(values) >= 2 else "NONE")
""",
        [("5\n4 1 4 3 2\n", "3\n"), ("3\n7 7 7\n", "NONE\n"), ("2\n-1 -5\n", "-5\n"), ("1\n42\n", "NONE\n")],
    ),
    problem(
        "sort-numbers",
        """
The first line holds n, the second line n integers. Print them in increasing order on one
line, separated by spaces.

Example input:
4
3 -1 2 2
Example output:
-1 2 2 3
""",
        """
input()
print(" ".join(map(str, sorted(map(int, input().split())))))
""",
        [("4\n3 -1 2 2\n", "-1 2 2 3\n"), ("1\n5\n", "5\n"), ("6\n10 9 8 7 6 5\n", "5 6 7 8 9 10\n")],
    ),
    problem(
        "to-binary",
        """
Read a non-negative integer and print it in binary, without leading zeros (0 is printed
as 0).

Example input:
10
Example output:
1010
""",
        """
print(bin(int(input()))[2:])
""",
        [
            ("10\n", "1010\n"),
            ("0\n", "0\n"),
            ("1\n", "1\n"),
            ("255\n", "11111111\n"),
            ("1024\n", "10000000000\n"),
        ],
    ),
    problem(
        "anagrams",
        """
Read two words on one line, separated by a space. Print YES if one is an anagram of the
other (the same letters, each used the same number of times), and NO otherwise.

Example input:
listen silent
Example output:
YES
""",
        """
a, b = input().split()
print("YES" if sorted(a) == sorted(b) else "NO")
""",
        [
            ("listen silent\n", "YES\n"),
            ("apple paple\n", "YES\n"),
            ("abc abd\n", "NO\n"),
            ("aab abb\n", "NO\n"),
        ],
    ),
    problem(
        "caesar",
        """
The first line holds a shift k (0 <= k <= 25), the second a line of text. Shift every
letter k places forward in the alphabet, wrapping from z to a, keeping its case. Other
characters stay as they are. Print the result.

Example input:
3
Hello, World!
Example output:
Khoor, Zruog!
""",
        """
k = int(input())
out = []
for c in input():
    if c.isalpha() and c.isascii():
        base = ord("A") if c.isupper() else ord("a")
        out.append(chr((ord(c) - base + k) % 26 + base))
    else:
        out.append(c)
print("".join(out))
""",
        [
            ("3\nHello, World!\n", "Khoor, Zruog!\n"),
            ("1\nxyz\n", "yza\n"),
            ("0\nSame 123\n", "Same 123\n"),
            ("13\nUryyb\n", "Hello\n"),
        ],
    ),
    problem(
        "run-length",
        """
Read a string of lowercase letters. Replace each run of equal letters by the letter
followed by the length of the run, and print the result.

Example input:
aaabccdddd
Example output:
a3b1c2d4
""",
        """
from itertools import groupby

print("".join(f"{letter}{len(list(run))}" for letter, run in groupby(input().strip())))
""",
        [("aaabccdddd\n", "a3b1c2d4\n"), ("a\n", "a1\n"), ("abc\n", "a1b1c1\n"), ("zzzzzzzzzzzz\n", "z12\n")],
    ),
    problem(
        "transpose",
        """
The first line holds two numbers r and c. Then come r lines of c integers each: a matrix.
Print its transpose: c lines of r integers each, separated by spaces.

Example input:
2 3
1 2 3
4 5 6
Example output:
1 4
2 5
3 6
""",
        """
r, c = map(int, input().split())
rows = [input().split() for _ in range(r)]
for j in range(c):
    print(" ".join(rows[i][j] for i in range(r)))
""",
        [
            ("2 3\n1 2 3\n4 5 6\n", "1 4\n2 5\n3 6\n"),
            ("1 1\n7\n", "7\n"),
            ("3 1\n1\n2\n3\n", "1 2 3\n"),
            ("2 2\n1 2\n3 4\n", "1 3\n2 4\n"),
        ],
    ),
    problem(
        "triangle",
        """
Read three positive integers, the side lengths of a triangle. Print "invalid" if they
cannot form a triangle (one side is at least as long as the other two together),
otherwise "equilateral" (all sides equal), "isosceles" (exactly two equal) or "scalene".

Example input:
3 4 5
Example output:
scalene
""",
        """
a, b, c = sorted(map(int, input().split()))
if a + b <= c:
    print("invalid")
elif a == c:
    print("equilateral")
elif a == b or b == c:
    print("isosceles")
else:
    print("scalene")
""",
        [
            ("3 4 5\n", "scalene\n"),
            ("2 2 2\n", "equilateral\n"),
            ("5 5 8\n", "isosceles\n"),
            ("1 2 3\n", "invalid\n"),
            ("10 1 1\n", "invalid\n"),
        ],
    ),
    problem(
        "leap-year",
        """
Read a year and print YES if it is a leap year in the Gregorian calendar and NO
otherwise. A year is a leap year if it is divisible by 4, except years divisible by 100,
which are leap years only if they are also divisible by 400.

Example input:
2024
Example output:
YES
""",
        """
y = int(input())
print("YES" if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else "NO")
""",
        [("2024\n", "YES\n"), ("1900\n", "NO\n"), ("2000\n", "YES\n"), ("2023\n", "NO\n")],
    ),
    problem(
        "collatz",
        """
Read a positive integer n. While n is not 1, replace it by n / 2 if it is even and by
3n + 1 if it is odd. Print how many replacements it takes to reach 1.

Example input:
6
Example output:
8
""",
        """
n = int(input())
steps = 0
while n != 1:
    n = n // 2 if n % 2 == 0 else 3 * n + 1
    steps += 1
print(steps)
""",
        [("6\n", "8\n"), ("1\n", "0\n"), ("27\n", "111\n"), ("16\n", "4\n")],
    ),
    problem(
        "brackets",
        """
Read a line made of the characters ( ) [ ] { }. Print YES if the brackets are balanced
(every opening bracket is closed by the matching bracket, in the right order) and NO
otherwise.

Example input:
([]{})
Example output:
YES
""",
        """
pairs = {")": "(", "]": "[", "}": "{"}
stack = []
ok = True
for c in input().strip():
    if c in "([{":
        stack.append(c)
    elif not stack or stack.pop() != pairs[c]:
        ok = False
        break
print("YES" if ok and not stack else "NO")
""",
        [
            ("([]{})\n", "YES\n"),
            ("(]\n", "NO\n"),
            ("((\n", "NO\n"),
            ("{[()()]}\n", "YES\n"),
            ("())(\n", "NO\n"),
        ],
    ),
    problem(
        "dedupe",
        """
The first line holds n, the second line n integers. Print the integers with repeats
removed, keeping the first occurrence of each and the original order, separated by
spaces.

Example input:
6
3 1 3 2 1 4
Example output:
3 1 2 4
""",
        """
input()
seen = []
for x in input().split():
    if x not in seen:
        seen.append(x)
print(" ".join(seen))
""",
        [("6\n3 1 3 2 1 4\n", "3 1 2 4\n"), ("3\n5 5 5\n", "5\n"), ("4\n1 2 3 4\n", "1 2 3 4\n")],
    ),
]


def main() -> None:
    ids = [p["id"] for p in PROBLEMS]
    assert len(ids) == len(set(ids)) == 30, "30 problems with distinct ids"
    out = Path(__file__).with_name("code_basic.jsonl")
    with out.open("w", encoding="utf-8") as f:
        for p in PROBLEMS:
            f.write(json.dumps(p) + "\n")
    print(f"wrote {len(PROBLEMS)} problems to {out}")


if __name__ == "__main__":
    main()
