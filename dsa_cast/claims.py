"""Checkable arithmetic claims in model text, and a small exact evaluator for them.

Three kinds of claim are found (:func:`find_claims`):

* ``"calc"`` - ``CALC: expr = result`` (the DSA Evidence convention), one per line;
* ``"annotation"`` - GSM8K calculator annotations ``<<expr=result>>``;
* ``"chain"`` - plain ``a op b = c`` in running text ("He pays 3 * 4 = 12 dollars",
  "12 + 8 = 20 = 4 * 5"), one claim per adjacent pair of sides.

Both sides are evaluated by :func:`evaluate`, a tokenizer plus recursive-descent parser over
:class:`fractions.Fraction` (numbers, ``+ - * / x × ÷ · ^ **``, unary minus, parentheses,
postfix percent). Model text is never given to ``eval``, ``exec``, ``ast`` or a computer
algebra system. All work is bounded by :class:`Limits`, checked *before* the expensive step:
expression length before tokenizing, nesting depth before recursing, exponent and operand
size before raising to a power, and the number of claims before scanning further.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from itertools import pairwise
from types import MappingProxyType
from typing import Literal, TypeAlias

from dsa_cast.lexicon import (
    COMMA_INT,
    CURRENCY_SYMBOLS,
    currency_chars,
    currency_pattern,
    decimal_fraction,
    decimal_value,
    exponent_value,
)

__all__ = [
    "OPERATORS",
    "SPELLINGS",
    "UNARY_PRECEDENCE",
    "Limits",
    "DEFAULT_LIMITS",
    "EvalError",
    "EVAL_REASONS",
    "evaluate",
    "Claim",
    "Verdict",
    "find_claims",
    "check_claims",
]


@dataclass(frozen=True)
class Limits:
    """Bounds on the work spent on model-written arithmetic.

    Attributes:
        max_expr_chars: longest expression (one side of a claim) that is evaluated; longer
            ones raise ``EvalError("too_long")`` without being tokenized.
        max_literal_digits: most digits in one number literal (integer + fractional part).
        max_tokens: most tokens in one expression.
        max_depth: deepest nesting of parentheses/brackets (checked while tokenizing, so the
            recursive parser never recurses deeper than this).
        max_exponent: largest ``|k|`` for ``a ^ k`` and for ``e``-notation literals; the
            exponent must also be an integer.
        max_result_bits: largest bit length of the numerator or denominator of any
            intermediate result; ``a ^ k`` is refused beforehand when
            ``bits(a) * |k|`` would exceed it.
        max_claims: most claims returned by :func:`find_claims` per text (the earliest ones).
        max_chain_sides: most sides of plain-text chains (the parts between ``=`` signs)
            examined per text; hostile runs such as ``1=1=1=...`` stop costing work here.
    """

    max_expr_chars: int = 256
    max_literal_digits: int = 100
    max_tokens: int = 128
    max_depth: int = 32
    max_exponent: int = 64
    max_result_bits: int = 1024
    max_claims: int = 64
    max_chain_sides: int = 256

    @cached_property
    def fast_len(self) -> int:
        """Longest expression the integer fast path (:func:`_fast_value`) takes: no literal can be
        over max_literal_digits, no token count over max_tokens, and no intermediate result over
        max_result_bits (each character adds at most 7 bits: a digit 3.4, a '%' 6.7)."""
        fast = min(self.max_expr_chars, self.max_literal_digits, self.max_tokens, (self.max_result_bits - 16) // 7)
        return max(fast, 0)


DEFAULT_LIMITS = Limits()

#: ``EvalError.reason`` codes.
EVAL_REASONS = (
    "empty",
    "too_long",
    "bad_token",
    "too_many_tokens",
    "too_deep",
    "literal_too_long",
    "syntax",
    "division_by_zero",
    "non_integer_exponent",
    "exponent_too_large",
    "result_too_large",
)


class EvalError(ValueError):
    """An expression that cannot be evaluated safely; ``reason`` is one of :data:`EVAL_REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


# --------------------------------------------------------------------------------------
# Operators: the one table both the full parser and the fast path read.
# --------------------------------------------------------------------------------------

#: Every binary operator spelling: spelling -> ``(name, precedence, function)``. The names are
#: ``+ - * / ^``; a higher precedence binds tighter; ``^`` is right-associative and binds tighter
#: than a unary sign (:data:`UNARY_PRECEDENCE`: ``-2^2 == -(2^2)``), the others are
#: left-associative. The spellings of ``+`` and ``-`` are also the unary signs. ``function`` is
#: applied to two exact values only after the evaluator's checks (a zero divisor; the size of a
#: power, :class:`Limits`). The letters ``x``/``X`` mean ``*`` only between two operands.
OPERATORS: Mapping[str, tuple[str, int, Callable[[Fraction, Fraction], Fraction]]] = MappingProxyType(
    {
        "+": ("+", 1, operator.add),
        "-": ("-", 1, operator.sub),
        "\u2212": ("-", 1, operator.sub),  # MINUS SIGN
        "\u2013": ("-", 1, operator.sub),  # EN DASH (GSM8K writes "1 – 3/4")
        "*": ("*", 2, operator.mul),
        "x": ("*", 2, operator.mul),
        "X": ("*", 2, operator.mul),
        "×": ("*", 2, operator.mul),
        "·": ("*", 2, operator.mul),
        "⋅": ("*", 2, operator.mul),
        "∙": ("*", 2, operator.mul),
        "\\times": ("*", 2, operator.mul),
        "\\cdot": ("*", 2, operator.mul),
        "/": ("/", 2, operator.truediv),
        "÷": ("/", 2, operator.truediv),
        "\\div": ("/", 2, operator.truediv),
        "^": ("^", 4, operator.pow),
        "**": ("^", 4, operator.pow),
    }
)

#: Precedence of a unary sign: above ``*``/``/``, below ``^``.
UNARY_PRECEDENCE = 3

#: The spellings of each operator name, in :data:`OPERATORS` order.
SPELLINGS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {name: tuple(s for s, row in OPERATORS.items() if row[0] == name) for name, _, _ in OPERATORS.values()}
)

_NAME = {s: row[0] for s, row in OPERATORS.items()}  # spelling -> name
_FUNCTION = {row[0]: row[2] for row in OPERATORS.values()}  # name -> function
_CONTEXTUAL = ("x", "X")  # spellings that are an operator only between operands (_TIMES_X)


def _names_at(precedence: int) -> str:
    """The operator names of one precedence level, as one string (``"+-"``)."""
    return "".join(dict.fromkeys(row[0] for row in OPERATORS.values() if row[1] == precedence))


def _spelled(spellings: list[str]) -> str:
    """A regex alternation of operator spellings: the longer ones first, then one character class."""
    longer = sorted((s for s in spellings if len(s) > 1), key=len, reverse=True)
    chars = "".join(re.escape(s) for s in spellings if len(s) == 1)
    return "|".join([*(re.escape(s) for s in longer), "[" + chars + "]"])


_SUMS, _PRODUCTS, _POWERS = _names_at(1), _names_at(2), _names_at(4)
# Every plain (non-contextual) operator spelling, and those the fast path takes (no power).
_OP_SPELLED = _spelled([s for s in OPERATORS if s not in _CONTEXTUAL])
_FAST_OP_SPELLED = _spelled([s for s in OPERATORS if s not in _CONTEXTUAL and _NAME[s] not in _POWERS])

# --------------------------------------------------------------------------------------
# Tokenizer.
# --------------------------------------------------------------------------------------

# Currency signs and digit grouping come from dsa_cast.lexicon (shared with numbers; claims take
# no word-spelled sign such as "USD": the reason is stated there).
_CURRENCY = currency_pattern(words=False)
_NUMBER = COMMA_INT + r"(?:\.[0-9]++)?|\.[0-9]++"
# The letter x is a multiplication sign only between operands ("3 x 4", "3x4", "2 x (1+2)");
# in "4x + 21" or "x = 3" it is a variable, which makes the expression uncheckable.
_TIMES_X = r"(?<=[0-9)\]% \t])[xX](?=[ \t]*+[0-9(\[." + CURRENCY_SYMBOLS + r"\\])"
_NUM = r"(?P<num>(?:" + _CURRENCY + r"[ ]?)?(?P<mant>" + _NUMBER + r")(?:[eE](?P<exp>[-+]?[0-9]++))?)"
_TOKEN = re.compile(
    r"(?P<ws>\s++)"
    r"|" + _NUM + r"|(?P<op>" + _OP_SPELLED + r"|" + _TIMES_X + r")"
    r"|(?P<pct>%|\\%)"
    r"|(?P<open>[(\[])"
    r"|(?P<close>[)\]])"
)
_NUM_ONLY = re.compile(_NUM)
# A tight "a/b" (no blanks around the slash, between two numbers) is one fraction literal,
# as in GSM8K's "25 / 1/3 = 75" and "$2000 / 2/3 = $3000", unless a power or percent sign
# follows it or a power sign precedes it ("2^1/2" stays (2^1)/2).
_NO_FUSE_AFTER = re.compile(r"[ \t]*+(?:\^|\*\*|%|\\%)")
_CLOSER = {"(": ")", "[": "]"}

# Token kinds: ("num", Fraction) ("frac", (Fraction, Fraction)) ("op", "+-*/^") ("pct", None)
# ("open", ch) ("close", ch)
Token: TypeAlias = (
    tuple[Literal["num"], Fraction]
    | tuple[Literal["frac"], tuple[Fraction, Fraction]]
    | tuple[Literal["op", "open", "close"], str]
    | tuple[Literal["pct"], None]
)


def _number_value(m: re.Match[str], limits: Limits) -> Fraction:
    mant = m.group("mant").replace(",", "")
    whole, _, frac = mant.partition(".")
    if len(whole) + len(frac) > limits.max_literal_digits:
        raise EvalError("literal_too_long", f"literal {m.group('num')[:20]!r}... has too many digits")
    value = decimal_fraction(whole, frac)
    exp_s = m.group("exp")
    if exp_s is not None:
        k = exponent_value(exp_s, limits.max_exponent)
        if k is None:
            raise EvalError("exponent_too_large", f"e-notation exponent {exp_s!r} over {limits.max_exponent}")
        value *= Fraction(10) ** k
    return value


def _tokenize(expr: str, limits: Limits) -> list[Token]:
    if len(expr) > limits.max_expr_chars:
        raise EvalError("too_long", f"expression of {len(expr)} chars over {limits.max_expr_chars}")
    tokens: list[Token] = []
    depth = 0
    pos, n = 0, len(expr)
    while pos < n:
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise EvalError("bad_token", f"unexpected {expr[pos : pos + 10]!r} at {pos}")
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        if kind == "num":
            value = _number_value(m, limits)
            d = (
                _NUM_ONLY.match(expr, pos + 1)
                if pos < n and expr[pos] == "/" and not (tokens and tokens[-1] == ("op", "^"))
                else None
            )
            if d is not None and not _NO_FUSE_AFTER.match(expr, d.end()):
                tokens.append(("frac", (value, _number_value(d, limits))))
                pos = d.end()
            else:
                tokens.append(("num", value))
        elif kind == "op":
            tokens.append(("op", _NAME[m.group("op")]))
        elif kind == "pct":
            tokens.append(("pct", None))
        elif kind == "open":
            depth += 1
            if depth > limits.max_depth:
                raise EvalError("too_deep", f"nesting deeper than {limits.max_depth}")
            tokens.append(("open", m.group()))
        else:
            depth -= 1
            tokens.append(("close", m.group()))
        if len(tokens) > limits.max_tokens:
            raise EvalError("too_many_tokens", f"more than {limits.max_tokens} tokens")
    if not tokens:
        raise EvalError("empty", "empty expression")
    return tokens


# --------------------------------------------------------------------------------------
# Parser -> small tree; evaluator over the tree.
#   expr    := term (("+" | "-") term)*
#   term    := signed (("*" | "/") signed)*
#   signed  := ("+" | "-")* power                  -2^2 == -(2^2)
#   power   := postfix ("^" ("+" | "-")* postfix)*  right-associative: 2^3^2 == 2^9
#   postfix := primary "%"*                          50% == 50/100
#   primary := number | "(" expr ")" | "[" expr "]"
# Only brackets recurse, and their depth is capped by the tokenizer.
# --------------------------------------------------------------------------------------

Node: TypeAlias = (
    tuple[Literal["num"], Fraction] | tuple[Literal["neg", "pct"], "Node"] | tuple[Literal["bin"], str, "Node", "Node"]
)


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take_op(self, ops: str) -> str | None:
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] in ops:
            self.i += 1
            return tok[1]
        return None

    def parse(self) -> Node:
        node = self.expr()
        if self.i != len(self.tokens):
            raise EvalError("syntax", f"unexpected token {self.tokens[self.i]!r}")
        return node

    def expr(self) -> Node:
        node = self.term()
        while (op := self.take_op(_SUMS)) is not None:
            node = ("bin", op, node, self.term())
        return node

    def term(self) -> Node:
        node = self.signed()
        while (op := self.take_op(_PRODUCTS)) is not None:
            node = ("bin", op, node, self.signed())
        return node

    def signs(self) -> bool:
        negative = False
        while (op := self.take_op(_SUMS)) is not None:
            negative ^= op == "-"
        return negative

    def signed(self) -> Node:
        negative = self.signs()
        node = self.power()
        return ("neg", node) if negative else node

    def power(self) -> Node:
        operands = [(False, self.postfix())]
        while self.take_op(_POWERS) is not None:
            negative = self.signs()
            operands.append((negative, self.postfix()))
        node = operands[-1][1]
        if operands[-1][0]:
            node = ("neg", node)
        for negative, base in reversed(operands[:-1]):
            node = ("bin", "^", base, node)
            if negative:
                node = ("neg", node)
        return node

    def postfix(self) -> Node:
        node = self.primary()
        while (tok := self.peek()) is not None and tok[0] == "pct":
            self.i += 1
            node = ("pct", node)
        return node

    def primary(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise EvalError("syntax", "expression ends early")
        self.i += 1
        if tok[0] == "num":
            return ("num", tok[1])
        if tok[0] == "frac":  # a tight a/b binds like a number
            num, den = tok[1]
            return ("bin", "/", ("num", num), ("num", den))
        if tok[0] == "open":
            node = self.expr()
            close = self.peek()
            if close is None or close[0] != "close" or close[1] != _CLOSER[tok[1]]:
                raise EvalError("syntax", f"unbalanced {tok[1]!r}")
            self.i += 1
            return node
        raise EvalError("syntax", f"unexpected token {tok!r}")


def _parse(expr: str, limits: Limits) -> Node:
    return _Parser(_tokenize(expr, limits)).parse()


def _check_size(value: Fraction, limits: Limits) -> Fraction:
    if value.numerator.bit_length() > limits.max_result_bits or value.denominator.bit_length() > limits.max_result_bits:
        raise EvalError("result_too_large", f"intermediate result over {limits.max_result_bits} bits")
    return value


def _power(base: Fraction, exponent: Fraction, limits: Limits) -> Fraction:
    if exponent.denominator != 1:
        raise EvalError("non_integer_exponent", f"exponent {exponent} is not an integer")
    k = exponent.numerator
    if abs(k) > limits.max_exponent:
        raise EvalError("exponent_too_large", f"exponent {k} over {limits.max_exponent}")
    if base == 0 and k < 0:
        raise EvalError("division_by_zero", "zero to a negative power")
    bits = max(base.numerator.bit_length(), base.denominator.bit_length())
    if bits > 1 and bits * abs(k) > limits.max_result_bits:
        raise EvalError("result_too_large", f"power would exceed {limits.max_result_bits} bits")
    return base**k


def _eval(node: Node, limits: Limits) -> Fraction:
    if node[0] == "num":
        return node[1]
    if node[0] == "neg":
        return -_eval(node[1], limits)
    if node[0] == "pct":
        return _check_size(_eval(node[1], limits) / 100, limits)
    _, op, left_n, right_n = node
    left = _eval(left_n, limits)
    right = _eval(right_n, limits)
    if op == "^":
        result = _power(left, right, limits)
    else:
        if op == "/" and right == 0:
            raise EvalError("division_by_zero", "division by zero")
        result = _FUNCTION[op](left, right)
    return _check_size(result, limits)


def _has_operation(node: Node) -> bool:
    """True when the tree holds a binary operation or a percent (not just a signed number)."""
    while node[0] == "neg":
        node = node[1]
    return node[0] in ("bin", "pct")


# --------------------------------------------------------------------------------------
# Fast path: the common grammar (numbers, + - * /, unary signs, %, brackets; no powers, no
# e-notation) in one compiled fullmatch + one findall and a single operator-precedence loop over
# Python ints (a Fraction only once a division or decimal needs one). Anything else, any error
# and every limit case go to the full parser above, so results and error reasons are identical.
# --------------------------------------------------------------------------------------

_FAST_TOK = (
    r"(?:" + _CURRENCY + r"[ ]?)?" + COMMA_INT + r"(?:\.[0-9]++)?"
    r"|(?:" + _CURRENCY + r"[ ]?)?\.[0-9]++"
    r"|" + _FAST_OP_SPELLED + r"|[()\[\]%]|\\%|" + _TIMES_X
)
_FAST_FULL = re.compile(r"(?:\s*+(?:" + _FAST_TOK + r"))*+\s*+")
_FAST_TOKENS = re.compile(_FAST_TOK)
# A tight "a/b" fuses into one literal; that changes the value only after another division
# ("25 / 1/3"), so such expressions take the full path.
_TIGHT_SLASH = re.compile(r"[0-9]/(?:[0-9." + CURRENCY_SYMBOLS + r"\\]|US)")
# Two plain ASCII integers around one ASCII operator: the same value as the token loop below.
_FAST_PAIR = re.compile(r"([0-9]++)[ ]*+([" + re.escape(_SUMS + _PRODUCTS) + r"])[ ]*+([0-9]++)")
# The fast path's tables, read from OPERATORS: no power; "n" is a pending negation, "(" / "[" an
# open bracket (level 0: never reduced by an operator).
_FAST_BINARY = {s: name for s, name in _NAME.items() if name not in _POWERS}
_FAST_PREC = {
    **{row[0]: row[1] for row in OPERATORS.values() if row[0] not in _POWERS},
    "n": UNARY_PRECEDENCE,
    "(": 0,
    "[": 0,
}
_FAST_SIGNS = {s: _NAME[s] == "-" for s in SPELLINGS["+"] + SPELLINGS["-"]}  # unary sign -> negates
_DIGITS = frozenset("0123456789")
_CURRENCY_CHARS = currency_chars(words=False) + " "  # a sign and the blank after it


def _fast_literal(tok: str) -> int | Fraction:
    if tok.isdigit():
        return int(tok)
    return decimal_value(tok.lstrip(_CURRENCY_CHARS))


def _apply(vals: list[int | Fraction], op: str) -> bool:
    """Reduce the top of ``vals`` by ``op`` ("+", "-", "*", "/", "n" negate); False on a
    division by zero."""
    if op == "n":
        vals[-1] = -vals[-1]
        return True
    b = vals.pop()
    a = vals[-1]
    if op == "+":
        vals[-1] = a + b
    elif op == "-":
        vals[-1] = a - b
    elif op == "*":
        vals[-1] = a * b
    else:
        if not b:
            return False
        if type(a) is int and type(b) is int and not a % b:
            vals[-1] = a // b
        else:
            vals[-1] = Fraction(a) / b
    return True


def _fast_value(expr: str, limits: Limits) -> tuple[int | Fraction, bool] | None:
    """``(value, has_operation)`` of a plain expression, or None: use the full parser."""
    if len(expr) > limits.fast_len:
        return None
    if expr.isdigit() and expr.isascii():  # a bare integer (most stated results): one token
        return int(expr), False
    m = _FAST_PAIR.fullmatch(expr)
    if m is not None:  # "a op b" of two plain integers (most CALC sides): no token loop
        a, op, b = int(m[1]), m[2], int(m[3])
        if op == "*":
            return a * b, True
        if op == "+":
            return a + b, True
        if op == "-":
            return a - b, True
        if b:  # "/"; a zero divisor goes to the full parser (its error reason)
            return (a // b if not a % b else Fraction(a) / b), True
        return None
    if _FAST_FULL.fullmatch(expr) is None:
        return None
    # SPELLINGS["/"] counted inline (0.16 us; sum(map(expr.count, ...)) takes 0.39 us); a test
    # pins the two together.
    if expr.count("/") + expr.count("÷") + expr.count("\\div") > 1 and _TIGHT_SLASH.search(expr):
        return None
    return _fast_reduce(_FAST_TOKENS.findall(expr), limits)


def _fast_reduce(tokens: list[str], limits: Limits) -> tuple[int | Fraction, bool] | None:
    """The operator-precedence loop of :func:`_fast_value` over the tokens of a plain expression
    (precedences and spellings from :data:`OPERATORS`); None where the full parser must decide."""
    vals: list[int | Fraction] = []
    ops: list[str] = []  # pending "+" "-" "*" "/", "n" (negate), "(" / "[" (open brackets)
    expect = True
    has_op = False
    depth = 0
    binary, prec = _FAST_BINARY, _FAST_PREC
    for t in tokens:
        if expect:
            if t[-1] in _DIGITS:  # every number token ends with a digit, no other token does
                vals.append(_fast_literal(t))
                expect = False
            elif t == "(" or t == "[":
                depth += 1
                if depth > limits.max_depth:
                    return None
                ops.append(t)
            elif t in _FAST_SIGNS:
                if _FAST_SIGNS[t]:
                    ops.append("n")
            else:
                return None
        elif t == "%" or t == "\\%":
            v = vals[-1]
            vals[-1] = v // 100 if type(v) is int and not v % 100 else Fraction(v, 100)
            has_op = True
        elif t == ")" or t == "]":
            opener = "(" if t == ")" else "["
            while ops and ops[-1] != "(" and ops[-1] != "[":
                if not _apply(vals, ops.pop()):
                    return None
            if not ops or ops.pop() != opener:
                return None
            depth -= 1
        else:
            op = binary.get(t)
            if op is None:
                return None
            level = prec[op]
            while ops and prec[ops[-1]] >= level:  # left-associative; brackets have level 0
                if not _apply(vals, ops.pop()):
                    return None
            ops.append(op)
            has_op = True
            expect = True
    if expect:
        return None
    while ops:
        op = ops.pop()
        if op == "(" or op == "[" or not _apply(vals, op):
            return None
    return vals[0], has_op


def evaluate(expr: str, limits: Limits = DEFAULT_LIMITS) -> Fraction:
    """Exact value of an arithmetic expression; :class:`EvalError` for anything else.

    Grammar: numbers (``1,234``, ``2.5``, ``.5``, ``1.5e3``, optional currency sign), binary
    ``+ - * / x × ÷ · ^ **`` (``^``/``**`` right-associative and binding tighter than unary
    minus: ``-2^2 == -4``), unary ``+``/``-``/``−``, postfix ``%`` (``/100``), ``( )`` and
    ``[ ]``. Never raises anything but :class:`EvalError` for a ``str`` argument.
    """
    if not isinstance(expr, str):
        raise TypeError(f"expr must be str, got {type(expr).__name__}")
    fast = _fast_value(expr, limits)
    if fast is not None:
        return Fraction(fast[0])
    return _eval(_parse(expr, limits), limits)


# One expression's analysis: (parses, has an operation, value or None, EvalError reason or None).
Analysis = tuple[bool, bool, "int | Fraction | None", "str | None"]


def _analyze(expr: str, limits: Limits, memo: dict[str, Analysis]) -> Analysis:
    """Parse and evaluate ``expr`` once (memoised per text): every claim side is needed both to
    find chains (does it parse, does it hold an operation) and to check claims (its value)."""
    found = memo.get(expr)
    if found is not None:
        return found
    fast = _fast_value(expr, limits)
    if fast is not None:
        found = (True, fast[1], fast[0], None)
    else:
        try:
            tree = _parse(expr, limits)
        except EvalError as err:
            found = (False, False, None, err.reason)
        else:
            has_op = _has_operation(tree)
            try:
                found = (True, has_op, _eval(tree, limits), None)
            except EvalError as err:
                found = (True, has_op, None, err.reason)
    memo[expr] = found
    return found


# --------------------------------------------------------------------------------------
# Claims.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One checkable statement ``expr = stated`` found in a text.

    ``kind`` is ``"calc"``, ``"annotation"`` or ``"chain"``; ``start``/``end`` span the claim
    in the text given to :func:`find_claims` (for ``calc`` the first pair starts at ``CALC``).
    """

    kind: str
    expr: str
    stated: str
    start: int
    end: int


@dataclass(frozen=True)
class Verdict:
    """The check of one claim.

    ``ok`` is ``True`` (the stated value is right, exactly or as a correct rounding),
    ``False`` (wrong) or ``None`` (not checkable: a side failed to evaluate, the claim holds
    no operation at all, or there is no stated result). ``reason``: ``None`` when exactly
    right, ``"rounded"``, ``"mismatch"``, ``"no_operation"``, or an :data:`EVAL_REASONS` code.
    """

    claim: Claim
    ok: bool | None
    value: Fraction | None
    stated_value: Fraction | None
    reason: str | None


# Claims and checks on the hot path are plain tuples (no dataclass per claim; not NamedTuples
# either: a tuple subclass costs about 1 % of dsa-cast grading here, valgrind instruction counts).
ClaimRow: TypeAlias = tuple[str, str, str, int, int]
"""A claim as the hot path carries it: ``(kind, expr, stated, start, end)``, the fields of :class:`Claim`."""

VerdictRow: TypeAlias = tuple[ClaimRow, bool | None, int | Fraction | None, int | Fraction | None, str | None]
"""A check as the hot path carries it: ``(claim, ok, value, stated_value, reason)``, the fields of
:class:`Verdict`, with values kept as ``int`` where exact (a Verdict holds them as Fractions:
equal, same hash)."""

_SPAN = operator.itemgetter(3, 4)

_RUN_TOKEN = (
    r"(?:" + _CURRENCY + r"[ ]?)?(?:" + _NUMBER + r")(?:[eE][-+]?[0-9]++)?"
    r"|" + _OP_SPELLED + r"|[=%()\[\]]|\\%"
    r"|" + _TIMES_X
)
# A maximal run of arithmetic tokens on one line (spaces/tabs between tokens).
_RUN = re.compile(r"(?:" + _RUN_TOKEN + r")(?:[ \t]*+(?:" + _RUN_TOKEN + r"))*+")
# The first tokens of a run (same tokens, at most _RUN_PROBE_TOKENS of them), and "another
# token follows" (the probe stopped at its bound, not at the run's end).
_RUN_PROBE_TOKENS = 4096
_RUN_PROBE = re.compile(r"(?:" + _RUN_TOKEN + r")(?:[ \t]*+(?:" + _RUN_TOKEN + rf")){{0,{_RUN_PROBE_TOKENS - 1}}}+")
_RUN_MORE = re.compile(r"[ \t]*+(?:" + _RUN_TOKEN + r")")
_EXPLICIT = re.compile(
    r"(?P<calc>(?<![A-Za-z_])(?i:calc)[ \t]*+:(?P<cbody>[^\n]*+))"
    r"|(?P<ann><<(?P<abody>[^<>=\n]*+=[^<>\n]*+)>>)"
)
_EQUALS = re.compile(r"=+")
_TRAIL = re.compile(r"[\s.,;:]+\Z")


def _segments(body: str, offset: int, max_sides: int | None = None) -> list[tuple[str, int, int]]:
    """Split ``body`` at ``=`` into stripped sides with absolute spans (at most ``max_sides``)."""
    bounds = []
    pos = 0
    for m in _EQUALS.finditer(body):
        bounds.append((pos, m.start()))
        pos = m.end()
        if max_sides is not None and len(bounds) >= max_sides:
            break
    else:
        bounds.append((pos, len(body)))
    segs = []
    for s, e in bounds:
        raw = body[s:e]
        lead = len(raw) - len(raw.lstrip())
        text = raw.strip()
        segs.append((text, offset + s + lead, offset + s + lead + len(text)))
    return segs


def _trim_result(text: str, start: int) -> tuple[str, int, int]:
    """The leading arithmetic run of a stated result ("12 dollars." -> "12")."""
    m = _RUN.match(text)
    if m is None:
        return text, start, start + len(text)
    run = _TRAIL.sub("", m.group())
    return run, start, start + len(run)


def _balance(text: str, start: int) -> tuple[str, int, int]:
    """Drop unmatched leading '(' / trailing ')' left by prose such as "(48/2=24)"."""
    opens = text.count("(") + text.count("[")
    closes = text.count(")") + text.count("]")
    i, j = 0, len(text)
    while opens > closes and i < j and text[i] in "([":
        i += 1
        opens -= 1
        while i < j and text[i].isspace():
            i += 1
    while closes > opens and j > i and text[j - 1] in ")]":
        j -= 1
        closes -= 1
        while j > i and text[j - 1].isspace():
            j -= 1
    return text[i:j], start + i, start + j


def _syntax_ok(text: str, limits: Limits, memo: dict[str, Analysis]) -> Analysis | None:
    """The analysis of a side that parses (None when it does not, or is empty / too long)."""
    if not text or len(text) > limits.max_expr_chars:
        return None
    found = _analyze(text, limits, memo)
    return found if found[0] else None


def _oriented(kind: str, a: str, b: str, start: int, end: int, limits: Limits, memo: dict[str, Analysis]) -> ClaimRow:
    """``expr`` is the side with the operation: "20 = 4 * 5" states that 4 * 5 is 20."""
    left, right = _syntax_ok(a, limits, memo), _syntax_ok(b, limits, memo)
    if left is not None and right is not None and not left[1] and right[1]:
        return (kind, b, a, start, end)
    return (kind, a, b, start, end)


def _explicit_claims(
    kind: str,
    body: str,
    offset: int,
    claim_start: int,
    claim_end: int,
    limits: Limits,
    memo: dict[str, Analysis],
) -> list[ClaimRow]:
    """Claims of one ``CALC:`` line or ``<<...>>`` annotation, one per adjacent pair of sides."""
    fits = len(body) <= limits.max_expr_chars * (limits.max_claims + 1)
    if fits and body.count("=") == 1:  # the common "expr = result": no split loop
        k = body.find("=")
        left_raw, right_raw = body[:k], body[k + 1 :]
        a, b = left_raw.strip(), right_raw.strip()
        b_s = offset + k + 1 + len(right_raw) - len(right_raw.lstrip())
        if not (b.isdigit() and b.isascii()):  # a bare integer result is its own leading run
            b, b_s, _ = _trim_result(b, b_s)
        end = claim_end if kind == "annotation" else b_s + len(b)
        # _oriented, inlined: "20 = 4 * 5" states that 4 * 5 is 20.
        most = limits.max_expr_chars
        if a and b and len(a) <= most and len(b) <= most:
            left = memo.get(a) or _analyze(a, limits, memo)
            if left[0] and not left[1]:
                right = memo.get(b) or _analyze(b, limits, memo)
                if right[0] and right[1]:
                    return [(kind, b, a, claim_start, end)]
        return [(kind, a, b, claim_start, end)]
    segs = _segments(body, offset) if fits else []
    if len(segs) < 2:
        text = body.strip()
        return [(kind, text, "", claim_start, claim_end)]
    last_text, last_s, _ = segs[-1]
    segs[-1] = _trim_result(last_text, last_s)
    claims = []
    for k in range(len(segs) - 1):
        (a, a_s, _), (b, _, b_e) = segs[k], segs[k + 1]
        last = k == len(segs) - 2
        claims.append(
            _oriented(
                kind,
                a,
                b,
                claim_start if k == 0 else a_s,
                claim_end if last and kind == "annotation" else b_e,
                limits,
                memo,
            )
        )
        if len(claims) >= limits.max_claims:
            break
    return claims


_BULLET = re.compile(r"[-*+\u2212\u2013][ \t]++")
_LOOKBACK = 64  # characters examined before a run to classify what precedes it
_OPERATOR_START = frozenset([s[0] for s in OPERATORS] + ["="])


def _unbalanced(text: str, opener: bool) -> bool:
    """True when ``text`` has an unmatched opening (or, with ``opener=False``, closing) bracket."""
    depth = 0
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0 and not opener:
                return True
    return opener and depth > 0


def _chain_claims(
    text: str, m: re.Match[str], limits: Limits, max_sides: int, memo: dict[str, Analysis], cut: bool = False
) -> tuple[list[ClaimRow], int]:
    """Claims of one arithmetic run holding ``=``, and the number of sides examined.

    A run is cut out of prose, so its outer sides may be fragments of a longer expression
    ("S + 143 = 200 - 16", "10% of 150 = 75 + 15", "5A/5", "(1 and 1/3) = 28"). The first
    side is dropped when it is glued to a preceding word or number, starts with an operator
    after a word, has an unmatched closing bracket, or is a bare number following a word; the
    last side is dropped when a word is glued to its end or it has an unmatched opening bracket.
    """
    run, rs, re_ = m.group(), m.start(), m.end()
    before = text[max(0, rs - _LOOKBACK) : rs]
    line_before = before.rsplit("\n", 1)[-1]
    at_line_start = not line_before.strip() and (len(before) < _LOOKBACK or "\n" in before or rs < _LOOKBACK)
    if at_line_start and (bullet := _BULLET.match(run)) is not None:
        run, rs = run[bullet.end() :], rs + bullet.end()  # "- 3 * 4 = 12" is a list item, not a negation
    prev = line_before.rstrip()[-1:] if line_before.strip() else ""
    # glued to a word, or part of a clock time such as "6:00" / "6:48"
    glued_left = rs > 0 and (
        text[rs - 1].isalnum() or text[rs - 1] in "_.," or (text[rs - 1] == ":" and text[rs - 2 : rs - 1].isdigit())
    )
    # ``cut``: m is the start of a longer run holding at least max_sides sides, so its last
    # examined side is not the run's last and nothing is glued to it.
    glued_right = (
        not cut
        and re_ < len(text)
        and (text[re_].isalnum() or text[re_] == "_" or (text[re_] == ":" and text[re_ + 1 : re_ + 2].isdigit()))
    )
    segs = _segments(run, rs, max_sides)
    used = len(segs)
    first_raw, last_raw = segs[0][0], segs[-1][0]
    drop_first = (
        glued_left
        or _unbalanced(first_raw, opener=False)
        or (first_raw[:1] in _OPERATOR_START and prev != "" and (prev.isalnum() or prev in ")]"))
    )
    drop_last = (glued_right and len(segs) > 1) or _unbalanced(last_raw, opener=True) and len(segs) > 1
    segs = [_balance(t, s) if len(t) <= limits.max_expr_chars else (t, s, e) for t, s, e in segs]
    segs[-1] = _trim_result(*segs[-1][:2])
    trees = [_syntax_ok(t, limits, memo) for t, _, _ in segs]
    if not drop_first and trees[0] is not None and not trees[0][1] and prev != "" and (prev.isalnum() or prev == "."):
        drop_first = True  # "of 150 = 75 + 15": the bare number ends a phrase, not a sum
    if drop_first:
        trees[0] = None
    if drop_last:
        trees[-1] = None
    claims = []
    for k in range(len(segs) - 1):
        left, right = trees[k], trees[k + 1]
        if left is None or right is None:
            continue
        (a, a_s, _), (b, _, b_e) = segs[k], segs[k + 1]
        if left[1]:
            claims.append(("chain", a, b, a_s, b_e))
        elif right[1]:
            claims.append(("chain", b, a, a_s, b_e))  # "20 = 4 * 5": the result is 20
        if len(claims) >= limits.max_claims:
            break
    return claims, used


def find_claims(text: str, limits: Limits = DEFAULT_LIMITS) -> tuple[Claim, ...]:
    """The first ``limits.max_claims`` checkable claims in ``text``, in order of position.

    ``CALC:`` lines and ``<<...>>`` annotations are taken as written (even when a side does
    not parse: :func:`check_claims` then reports them as not checkable). Plain-text chains are
    taken only where both sides parse and at least one holds an operation, and never inside a
    ``CALC`` line or an annotation; at most ``limits.max_chain_sides`` chain sides are examined.
    Linear in ``len(text)``; never raises for a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    return tuple([Claim(*c) for c in _find(text, limits, {})])


def _find(text: str, limits: Limits, memo: dict[str, Analysis]) -> list[ClaimRow]:
    """:func:`find_claims`, recording each side's analysis in ``memo`` for the check."""
    cap = limits.max_claims
    if cap <= 0:
        return []
    explicit: list[ClaimRow] = []
    spans: list[tuple[int, int]] = []
    # str.find is much faster than a regex scan: start where an explicit claim could begin.
    firsts = [i for i in (text.find("<<"), text.lower().find("calc")) if i >= 0]
    for x in _EXPLICIT.finditer(text, min(firsts) if firsts else len(text)):
        if x.group("calc") is not None:
            body, kind = x.group("cbody"), "calc"
            end = x.start("cbody") + len(body.rstrip())
        else:
            body, kind, end = x.group("abody"), "annotation", x.end()
        found = _explicit_claims(kind, body, x.start(kind[0] + "body"), x.start(), end, limits, memo)
        explicit.extend(found)
        spans.append((x.start(), x.end()))
        if len(explicit) >= cap:
            break
    # Anything starting after the cap-th explicit claim would be cut anyway.
    cutoff = explicit[cap - 1][3] if len(explicit) >= cap else len(text)
    gaps = (
        [(0, len(text))]
        if not spans
        else ([(0, spans[0][0])] + [(a[1], b[0]) for a, b in pairwise(spans)] + [(spans[-1][1], len(text))])
    )
    merged = sorted(explicit + _chains(text, gaps, cutoff, limits, memo), key=_SPAN)
    return merged[:cap]


def _chains(
    text: str, gaps: list[tuple[int, int]], cutoff: int, limits: Limits, memo: dict[str, Analysis]
) -> list[ClaimRow]:
    """The plain-text chain claims of :func:`_find` in ``gaps`` (the text outside CALC lines and
    annotations), up to ``cutoff``: at most ``max_claims`` claims and ``max_chain_sides`` sides."""
    cap = limits.max_claims
    chains: list[ClaimRow] = []
    sides_left = limits.max_chain_sides
    for gap_start, gap_end in gaps:
        end = min(gap_end, cutoff + 1)
        # A run never crosses a line and must hold "=": only lines with an "=" are scanned.
        k = text.find("=", gap_start, end)
        while k >= 0 and len(chains) < cap and sides_left >= 2:
            line_end = text.find("\n", k, end)
            if line_end < 0:
                line_end = end
            line_start = max(text.rfind("\n", gap_start, k) + 1, gap_start)
            pos = line_start
            while len(chains) < cap and sides_left >= 2:
                # A run is read _RUN_PROBE_TOKENS tokens at a time: a longer run that already
                # holds every side left to examine is not read to its end (a hostile 200 KB run).
                m = _RUN_PROBE.search(text, pos, line_end)
                if m is None:
                    break
                cut = False
                if m.end() < line_end and _RUN_MORE.match(text, m.end(), line_end) is not None:
                    if len(_EQUALS.findall(m.group())) >= sides_left:
                        cut = True
                    else:
                        whole = _RUN.match(text, m.start(), line_end)  # the whole run
                        assert whole is not None  # it starts with the probe's match
                        m = whole
                pos = m.end()
                if "=" not in m.group():
                    continue
                found, used = _chain_claims(text, m, limits, sides_left, memo, cut)
                chains.extend(found)
                sides_left -= used
            k = text.find("=", line_end, end)
    return chains


_ROUNDED = re.compile(r"[-\u2212]?[ ]?(?:" + _CURRENCY + r"[ ]?)?[0-9,]*\.(?P<frac>[0-9]++)[ ]?(?P<pct>%|\\%)?")


def _rounding_tolerance(stated: str) -> Fraction | None:
    """Half a unit in the last written decimal place of a plain decimal literal, else None."""
    m = _ROUNDED.fullmatch(stated.strip())
    if m is None:
        return None
    tol = Fraction(1, 2 * 10 ** len(m.group("frac")))
    return tol / 100 if m.group("pct") else tol


def _check(claim: ClaimRow, limits: Limits, memo: dict[str, Analysis]) -> VerdictRow:
    """One claim's check."""
    stated = claim[2]  # (kind, expr, stated, start, end)
    _, expr_op, value, reason = memo.get(claim[1]) or _analyze(claim[1], limits, memo)
    if value is None:
        return claim, None, None, None, reason
    if not stated:
        return claim, None, value, None, "empty"
    _, stated_op, stated_value, reason = memo.get(stated) or _analyze(stated, limits, memo)
    if stated_value is None:
        return claim, None, value, None, reason
    if not expr_op and not stated_op:
        return claim, None, value, stated_value, "no_operation"
    if value == stated_value:
        return claim, True, value, stated_value, None
    tol = _rounding_tolerance(stated)
    if tol is not None and -tol <= value - stated_value <= tol:
        return claim, True, value, stated_value, "rounded"
    return claim, False, value, stated_value, "mismatch"


def _frac(value: int | Fraction | None) -> Fraction | None:
    return None if value is None else Fraction(value)


def verdict_from_row(row: VerdictRow) -> Verdict:
    """The public :class:`Verdict` of an internal row."""
    claim, ok, value, stated_value, reason = row
    return Verdict(Claim(*claim), ok, _frac(value), _frac(stated_value), reason)


def check_claim_rows(text: str, limits: Limits = DEFAULT_LIMITS) -> list[VerdictRow]:
    """:func:`check_claims` as plain rows (the rubrics' path: no dataclass per claim)."""
    memo: dict[str, Analysis] = {}
    return [_check(c, limits, memo) for c in _find(text, limits, memo)]


def check_claims(text: str, limits: Limits = DEFAULT_LIMITS) -> tuple[Verdict, ...]:
    """Evaluate every claim of :func:`find_claims` exactly; one :class:`Verdict` each.

    A stated result written as a decimal with ``d >= 1`` fractional digits also counts as
    right when it is within half a unit of its last digit of the exact value
    (``10/3 = 3.33`` and ``2/3 = 0.67`` hold, ``2/3 = 0.66`` does not); integers and
    fractions must be exact.

    >>> [(v.claim.expr, v.claim.stated, v.ok, v.reason) for v in check_claims("CALC: 6*7 = 42\\nCALC: 2 + 2 = 5")]
    [('6*7', '42', True, None), ('2 + 2', '5', False, 'mismatch')]
    >>> check_claims("CALC: 10/3 = 3.33")[0].reason
    'rounded'
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    return tuple([verdict_from_row(row) for row in check_claim_rows(text, limits)])
