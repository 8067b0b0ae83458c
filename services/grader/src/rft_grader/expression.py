"""`calculate_output` of multi graders: a small arithmetic language, parsed by hand.

Grammar (usual precedence; `^` is power and binds right: 2^3^2 = 2^9; unary minus
binds looser than `^`: -2^2 = -4):

    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/") unary)*
    unary  := ("-" | "+") unary | power
    power  := atom ("^" unary)?
    atom   := NUMBER | NAME | FUNC "(" expr ("," expr)* ")" | "(" expr ")"

Functions: min, max (one or more arguments), abs, floor, ceil, exp, sqrt, log (natural,
one argument). Names are the multi grader's sub-grader names. Nothing is ever handed
to eval(); evaluation works on floats only, so `9^9^9` overflows to an error instead of
building a huge integer. Errors (division by zero, log of 0, overflow, NaN) raise
ExpressionError and become a per-sample INVALID_SCORE.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

from rft_grader.limits import EXCERPT_CHARS, clip

MAX_LENGTH = 4096
MAX_DEPTH = 64
# Bounds evaluation recursion too: a chain of N operators nests N closures.
MAX_TOKENS = 512

_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(.))")


def _checked(fn: Callable[..., float], name: str) -> Callable[..., float]:
    def call(*args: float) -> float:
        try:
            return float(fn(*args))
        except (ValueError, OverflowError, ZeroDivisionError) as exc:
            raise ExpressionError(f"{name}({', '.join(map(repr, args))}): {exc}") from None

    return call


# name -> (function, min args, max args or None)
FUNCTIONS: dict[str, tuple[Callable[..., float], int, int | None]] = {
    "min": (_checked(lambda *a: min(a), "min"), 1, None),
    "max": (_checked(lambda *a: max(a), "max"), 1, None),
    "abs": (_checked(abs, "abs"), 1, 1),
    "floor": (_checked(math.floor, "floor"), 1, 1),
    "ceil": (_checked(math.ceil, "ceil"), 1, 1),
    "exp": (_checked(math.exp, "exp"), 1, 1),
    "sqrt": (_checked(math.sqrt, "sqrt"), 1, 1),
    "log": (_checked(math.log, "log"), 1, 1),
}


class ExpressionSyntaxError(ValueError):
    """The expression cannot be parsed; the message says where and what was expected."""


class ExpressionError(ArithmeticError):
    """The expression has no finite value for these inputs."""


# A compiled node is a function of the variables -> float.
Node = Callable[[Mapping[str, float]], float]


def _binary(op: str, left: Node, right: Node) -> Node:
    def add(v: Mapping[str, float]) -> float:
        return left(v) + right(v)

    def sub(v: Mapping[str, float]) -> float:
        return left(v) - right(v)

    def mul(v: Mapping[str, float]) -> float:
        return left(v) * right(v)

    def div(v: Mapping[str, float]) -> float:
        denominator = right(v)
        if denominator == 0:
            raise ExpressionError("division by zero")
        return left(v) / denominator

    def power(v: Mapping[str, float]) -> float:
        base, exponent = left(v), right(v)
        try:
            result = base**exponent
        except (OverflowError, ZeroDivisionError) as exc:
            raise ExpressionError(f"{base!r} ^ {exponent!r}: {exc}") from None
        if isinstance(result, complex):
            raise ExpressionError(f"{base!r} ^ {exponent!r} is not a real number")
        return result

    return {"+": add, "-": sub, "*": mul, "/": div, "^": power}[op]


class _Parser:
    def __init__(self, text: str, names: frozenset[str]) -> None:
        self.tokens: list[tuple[str, str, int]] = []  # (kind, text, position)
        for match in _TOKEN.finditer(text):
            number, name, other = match.groups()
            position = match.start(match.lastindex or 0)
            if number is not None:
                self.tokens.append(("number", number, position))
            elif name is not None:
                self.tokens.append(("name", name, position))
            elif other is not None and not other.isspace():
                if other not in "+-*/^(),":
                    raise ExpressionSyntaxError(f"unexpected character {other!r} at position {position}")
                self.tokens.append(("op", other, position))
        if len(self.tokens) > MAX_TOKENS:
            raise ExpressionSyntaxError(f"expression has more than {MAX_TOKENS} tokens")
        self.tokens.append(("end", "", len(text)))
        self.index = 0
        self.depth = 0
        self.names = names
        self.used: set[str] = set()

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.index]

    def take(self) -> tuple[str, str, int]:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def expect(self, text: str) -> None:
        kind, value, position = self.take()
        if value != text or kind != "op":
            found = "end of expression" if kind == "end" else repr(value)
            raise ExpressionSyntaxError(f"expected {text!r} at position {position}, found {found}")

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionSyntaxError(f"expression nests deeper than {MAX_DEPTH} levels")

    def expr(self) -> Node:
        node = self.term()
        while self.peek()[1] in ("+", "-") and self.peek()[0] == "op":
            op = self.take()[1]
            node = _binary(op, node, self.term())
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.peek()[1] in ("*", "/") and self.peek()[0] == "op":
            op = self.take()[1]
            node = _binary(op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.peek()[0] == "op" and self.peek()[1] in ("-", "+"):
            op = self.take()[1]
            self.nest()
            operand = self.unary()
            self.depth -= 1
            return (lambda v: -operand(v)) if op == "-" else operand
        return self.power()

    def power(self) -> Node:
        base = self.atom()
        if self.peek()[1] == "^" and self.peek()[0] == "op":
            self.take()
            self.nest()
            exponent = self.unary()
            self.depth -= 1
            return _binary("^", base, exponent)
        return base

    def atom(self) -> Node:
        kind, value, position = self.take()
        if kind == "number":
            constant = float(value)
            if not math.isfinite(constant):
                raise ExpressionSyntaxError(f"number {value!r} at position {position} is too large")
            return lambda v: constant
        if kind == "name":
            if self.peek()[1] == "(" and self.peek()[0] == "op":
                return self.call(value, position)
            if value not in self.names:
                hint = f"; known: {clip(', '.join(sorted(self.names)), EXCERPT_CHARS)}" if self.names else ""
                if value in FUNCTIONS:
                    raise ExpressionSyntaxError(f"function {value!r} at position {position} needs arguments in ( )")
                raise ExpressionSyntaxError(f"unknown name {value!r} at position {position}{hint}")
            self.used.add(value)
            return lambda v: v[value]
        if kind == "op" and value == "(":
            self.nest()
            node = self.expr()
            self.depth -= 1
            self.expect(")")
            return node
        found = "end of expression" if kind == "end" else repr(value)
        raise ExpressionSyntaxError(f"expected a number, a name or '(' at position {position}, found {found}")

    def call(self, name: str, position: int) -> Node:
        if name not in FUNCTIONS:
            raise ExpressionSyntaxError(
                f"unknown function {name!r} at position {position}; known: {', '.join(sorted(FUNCTIONS))}"
            )
        fn, low, high = FUNCTIONS[name]
        self.expect("(")
        self.nest()
        args = [self.expr()]
        while self.peek()[1] == "," and self.peek()[0] == "op":
            self.take()
            args.append(self.expr())
        self.depth -= 1
        self.expect(")")
        if len(args) < low or (high is not None and len(args) > high):
            wanted = f"{low}" if high == low else f"at least {low}"
            raise ExpressionSyntaxError(f"{name}() at position {position} takes {wanted} argument(s), got {len(args)}")
        return lambda v: fn(*(arg(v) for arg in args))


class Expression:
    """A parsed `calculate_output`; call `evaluate(scores)` with every sub-grader's score."""

    def __init__(self, text: str, names: frozenset[str] | set[str]) -> None:
        if len(text) > MAX_LENGTH:
            raise ExpressionSyntaxError(f"expression is longer than {MAX_LENGTH} characters")
        if not text.strip():
            raise ExpressionSyntaxError("expression is empty")
        parser = _Parser(text, frozenset(names))
        self._root = parser.expr()
        kind, value, position = parser.peek()
        if kind != "end":
            raise ExpressionSyntaxError(f"unexpected {value!r} at position {position}")
        self.text = text
        self.names_used = frozenset(parser.used)

    def evaluate(self, variables: Mapping[str, float]) -> float:
        try:
            result = self._root(variables)
        except OverflowError as exc:
            raise ExpressionError(f"overflow: {exc}") from None
        if not math.isfinite(result):
            raise ExpressionError(f"calculate_output gave {result!r}, not a finite number")
        return result
