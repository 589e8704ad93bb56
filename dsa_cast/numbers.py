"""Exact number normalisation for answers and references.

Every value is a :class:`fractions.Fraction`; binary floats never reach the comparison
path (a ``float`` reference is read through its shortest decimal ``repr``). All scanning is
done with regular expressions whose repetitions are possessive, so the work is linear in the
input, and every literal is size-checked (:class:`NumberLimits`) *before* an ``int`` is built
from it: a 200,000-digit answer is reported as ``"oversize"`` without converting it.

Public API (see ``docs/answers_and_claims.md`` for the exact accepted forms):

* :func:`parse_number` - the whole string is one number (strict).
* :func:`extract_answer` - the single final value in an answer-block body (lenient about
  wrappers and words, strict about there being exactly one value).
* :func:`extract_reference` - the same normalisation for references (GSM8K ``#### 1,234``,
  ``int``, ``float``, ``Fraction``, ``Decimal``, strings).
* :func:`answers_match` - exact comparison with an explicit percent policy.
* :func:`format_value` - canonical text (``"42"``, ``"-3.5"``, ``"1/3"``).
* :func:`numbers_in` / :func:`scan_literals` - every number literal in a text, with spans.
"""

from __future__ import annotations

import enum
import math
import numbers as _abc
import operator
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Final

from dsa_cast.lexicon import (
    CURRENCY_SYMBOLS,
    SEPARATOR,
    currency_pattern,
    decimal_fraction,
    exponent_value,
    grouped_int,
)

__all__ = [
    "NumberLimits",
    "DEFAULT_NUMBER_LIMITS",
    "Literal",
    "Extraction",
    "ISSUES",
    "PERCENT_POLICIES",
    "parse_number",
    "extract_answer",
    "extract_reference",
    "answers_match",
    "format_value",
    "numbers_in",
    "scan_literals",
]


@dataclass(frozen=True)
class NumberLimits:
    """Bounds on the work spent per number literal.

    Attributes:
        max_digits: most decimal digits (integer + fractional part, separators not counted)
            in one literal; longer literals are ``oversize`` and never converted to ``int``.
        max_exponent: largest ``|k|`` accepted in scientific notation (``1.5e3``,
            ``1.5 × 10^3``); larger exponents make the literal ``oversize``.
        max_format_decimals: :func:`format_value` writes a terminating value as a decimal
            when it needs at most this many fractional digits, otherwise as ``a/b``.
        max_answer_chars: an answer body (or a string given to :func:`parse_number`) longer
            than this, once stripped, is ``oversize``: an answer block holds one value, and the
            bound keeps extraction in the microsecond range on hostile input.
        max_numbers: :func:`numbers_in` stops after this many literals (a padded monologue
            cannot make later mentions count; the bound keeps the scan cheap).
    """

    max_digits: int = 100
    max_exponent: int = 1000
    max_format_decimals: int = 20
    max_answer_chars: int = 1000
    max_numbers: int = 2048

    @property
    def max_value_bits(self) -> int:
        """Bit length of ``10 ** (max_digits + max_exponent)``: no literal the parser accepts
        has a numerator or denominator longer, and :func:`extract_reference` holds a reference
        of any type (int, Fraction, Decimal) to the same bound."""
        return math.ceil((self.max_digits + self.max_exponent) * math.log2(10))


DEFAULT_NUMBER_LIMITS = NumberLimits()

#: Issue codes an :class:`Extraction` may carry (``None`` means a clean single value).
ISSUES = ("empty_answer", "multiple_candidates", "no_number", "oversize", "expression")

#: Accepted values of ``answers_match(..., percent=...)``.
PERCENT_POLICIES = ("either", "number", "fraction")

# --------------------------------------------------------------------------------------
# The literal grammar. Signs: ASCII hyphen-minus and U+2212 MINUS SIGN (and "+").
# Thousands separators: "," "{,}" "\," or one space-like char (space, U+00A0, U+2009,
# U+202F), the same separator throughout, groups of exactly three digits after a first
# group of one to three digits. Anything else ("1,2", "12,34", "1,2345") is not grouped.
# Currency signs, separators and grouping come from dsa_cast.lexicon (shared with claims).
# --------------------------------------------------------------------------------------

_CURRENCY = currency_pattern(words=True)
_INT = grouped_int(SEPARATOR, "sep")
_EXP = (
    r"(?:[eE](?P<e1>[-+\u2212]?[0-9]++)"
    r"|[ \t]*+(?:[x×*·]|\\times|\\cdot)[ \t]*+10[ \t]*+\^[ \t]*+"
    r"(?:\{[ \t]*+(?P<e2>[-+\u2212]?[0-9]++)[ \t]*+\}|(?P<e3>[-+\u2212]?[0-9]++)))"
)
_DEC = (
    r"(?:(?<![0-9])(?P<int>" + _INT + r")(?:\.(?P<frac>[0-9]++))?"
    r"|(?<![0-9])\.(?P<frac0>[0-9]++))"
    r"(?:" + _EXP + r")?"
)
_BRACE_NUM = r"(?:[0-9]++(?:\.[0-9]++)?)"
_TEX_WS = r"[ \t]{0,16}+"  # bounded, so the text before a literal's first digit is short
_TEX_FRAC = (
    r"(?:(?<![0-9])(?P<lw>[0-9]++)" + _TEX_WS + r")?"
    r"\\[dt]?frac"
    + _TEX_WS
    + r"(?:\{"
    + _TEX_WS
    + r"(?P<fns>[-\u2212])?(?P<fn>"
    + _BRACE_NUM
    + r")"
    + _TEX_WS
    + r"\}|(?P<fn1>[0-9]))"
    + _TEX_WS
    + r"(?:\{"
    + _TEX_WS
    + r"(?P<fds>[-\u2212])?(?P<fd>"
    + _BRACE_NUM
    + r")"
    + _TEX_WS
    + r"\}|(?P<fd1>[0-9]))"
)
_MIXED = (
    r"(?<![0-9])(?P<mw>[0-9]++)[ \u00a0\u2009\u202f]++(?P<mn>[0-9]++)[ \t]*+/[ \t]*+"
    r"(?P<md>[0-9]++)(?!\.[0-9])"
)
_FRAC = r"(?<![0-9])(?P<fa>[0-9]++)[ \t]*+/[ \t]*+(?P<fb>[0-9]++)(?!\.[0-9])"
_PREFIX = (
    r"(?:(?<![0-9A-Za-z)\]}])(?P<s1>[-+\u2212]))?"
    r"(?:(?P<cur>" + _CURRENCY + r")[ \u00a0]?(?P<s2>[-\u2212])?)?"
)
_PCT = r"(?P<pct>[ \u00a0]?(?:%|\\%)|[ \u00a0](?:percent|per[ ]?cent)\b)?"

_LIT_WITH_MIXED = re.compile(_PREFIX + r"(?:" + _TEX_FRAC + r"|" + _MIXED + r"|" + _FRAC + r"|" + _DEC + r")" + _PCT)
_LIT_NO_MIXED = re.compile(_PREFIX + r"(?:" + _TEX_FRAC + r"|" + _FRAC + r"|" + _DEC + r")" + _PCT)
_DIGIT_RUN = re.compile(r"[0-9]")
# Longest text a literal can have before its first digit: sign, "US$", space, sign,
# "\\dfrac", bounded blanks, "{", bounded blanks, sign (47 chars), rounded up.
_MAX_PREFIX = 64


@dataclass(frozen=True)
class Literal:
    """One number literal found in a text.

    ``value`` is the exact value with any percent sign applied (``"50%"`` -> 1/2); it is
    ``None`` when the literal is ``oversize`` or invalid (a zero denominator such as ``1/0``).
    """

    value: Fraction | None
    start: int
    end: int
    text: str
    percent: bool
    oversize: bool


class _Oversize(enum.Enum):
    """The type of the ``_OVERSIZE`` marker (an enum member, so ``x is _OVERSIZE`` narrows a type)."""

    OVERSIZE = "oversize"


_OVERSIZE: Final = _Oversize.OVERSIZE


def _digits(s: str) -> str:
    return "".join(_DIGIT_RUN.findall(s))


# Named groups read from a literal match, fetched in one C call per match (itemgetter).
_PARTS = (
    "s1",
    "s2",
    "pct",
    "lw",
    "fn",
    "fn1",
    "fns",
    "fd",
    "fd1",
    "fds",
    "mw",
    "mn",
    "md",
    "fa",
    "fb",
    "int",
    "frac",
    "frac0",
    "e1",
    "e2",
    "e3",
)
_GETTERS = {
    p: operator.itemgetter(*(p.groupindex.get(name, 0) for name in _PARTS)) for p in (_LIT_WITH_MIXED, _LIT_NO_MIXED)
}


def _parts(m: re.Match[str]) -> tuple[str | None, ...]:
    parts: tuple[str | None, ...] = _GETTERS[m.re]((None,) + m.groups())  # index 0 (a missing group) reads None
    return parts


def _exp_value(raw: str | None, limits: NumberLimits) -> int | _Oversize:
    if raw is None:
        return 0
    k = exponent_value(raw, limits.max_exponent)
    return _OVERSIZE if k is None else k


_dec_value = decimal_fraction  # the digits of a decimal literal, exactly (dsa_cast.lexicon)


def _literal_value(parts: tuple[str | None, ...], limits: NumberLimits) -> Fraction | None | _Oversize:
    """Value of a matched literal (sign and percent not applied); ``_OVERSIZE`` or ``None``."""
    (_, _, _, lw, fn, fn1, fns, fd, fd1, fds, mw, mn, md, fa, fb, intpart, frac, frac0, e1, e2, e3) = parts
    if intpart is not None or frac0 is not None:  # decimal, the common case
        intpart = intpart or ""
        frac = frac or frac0 or ""
        # A group of three digits takes at most three separator chars ("{,}"), so a long
        # match is oversize before the separators are even removed.
        if len(intpart) + len(frac) > 2 * limits.max_digits:
            return _OVERSIZE
        int_digits = intpart if intpart.isdigit() else _digits(intpart)
        if len(int_digits) + len(frac) > limits.max_digits:
            return _OVERSIZE
        exp = _exp_value(e1 or e2 or e3, limits)
        if exp is _OVERSIZE:
            return _OVERSIZE
        val = _dec_value(int_digits, frac)
        return val * Fraction(10) ** exp if exp else val
    if fn is not None or fn1 is not None:  # \frac{a}{b}
        num_s = fn or fn1 or ""
        den_s = fd or fd1 or ""
        whole_s = lw or ""
        if len(_digits(num_s)) + len(_digits(den_s)) + len(whole_s) > limits.max_digits:
            return _OVERSIZE
        num = _dec_value(*(num_s.split(".") + [""])[:2])
        den = _dec_value(*(den_s.split(".") + [""])[:2])
        if fns:
            num = -num
        if fds:
            den = -den
        if den == 0:
            return None
        val = num / den
        if whole_s:
            if num < 0 or den < 0 or val >= 1:
                return None  # "2\frac{5}{3}" or "2\frac{-1}{2}" is not a mixed number
            val += int(whole_s)
        return val
    if mw is not None and mn is not None and md is not None:  # W N/D (proper: checked by caller)
        if len(mw) + len(mn) + len(md) > limits.max_digits:
            return _OVERSIZE
        return Fraction(int(mw)) + Fraction(int(mn), int(md))
    if fa is not None and fb is not None:  # a/b
        if len(fa) + len(fb) > limits.max_digits:
            return _OVERSIZE
        if int(fb) == 0:
            return None
        return Fraction(int(fa), int(fb))
    return None  # unreachable: every literal alternative sets one of the groups above


def _mixed_is_proper(mn: str, md: str, limits: NumberLimits) -> bool:
    if len(mn) + len(md) > limits.max_digits:
        return True  # let the oversize check report it
    return 0 < int(mn) < int(md)


def _literal_at(
    text: str, pos: int, endpos: int, limits: NumberLimits, anchored: bool = False
) -> tuple[re.Match[str], Literal] | None:
    """The first literal starting at or after ``pos`` (exactly at ``pos`` when anchored).

    Every literal holds a digit at most ``_MAX_PREFIX`` characters after its start, so the
    regex search starts just before the next digit: digit-free stretches are skipped at C
    speed and each position is examined by the regex at most once over a whole scan.
    """
    if anchored:
        m = _LIT_WITH_MIXED.match(text, pos, endpos)
    else:
        d = _DIGIT_RUN.search(text, pos, endpos)
        if d is None:
            return None
        m = _LIT_WITH_MIXED.search(text, max(pos, d.start() - _MAX_PREFIX), endpos)
    if m is None:
        return None
    parts = _parts(m)
    mn, md = parts[11], parts[12]
    if parts[10] is not None and mn is not None and md is not None and not _mixed_is_proper(mn, md, limits):
        m = _LIT_NO_MIXED.match(text, m.start(), endpos)
        assert m is not None  # the whole-number part alone always matches
        parts = _parts(m)
    raw = _literal_value(parts, limits)
    s1, s2, pct = parts[0], parts[1], parts[2]
    percent = pct is not None
    start, end, literal_text = m.start(), m.end(), m.group()
    if raw is _OVERSIZE:
        return m, Literal(None, start, end, literal_text, percent, True)
    if raw is None:
        return m, Literal(None, start, end, literal_text, percent, False)
    val = raw
    if (s1 is not None and s1 != "+") ^ (s2 is not None):
        val = -val
    if percent:
        val = val / 100
    return m, Literal(val, start, end, literal_text, percent, False)


def scan_literals(
    text: str, start: int = 0, end: int | None = None, limits: NumberLimits = DEFAULT_NUMBER_LIMITS
) -> Iterator[Literal]:
    """Yield every number literal in ``text[start:end]`` in order (linear time)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    endpos = len(text) if end is None else end
    pos = start
    while pos < endpos:
        found = _literal_at(text, pos, endpos, limits)
        if found is None:
            return
        m, lit = found
        yield lit
        pos = m.end() if m.end() > pos else pos + 1


def numbers_in(text: str, limits: NumberLimits = DEFAULT_NUMBER_LIMITS) -> Iterator[tuple[Fraction, int, int]]:
    """Every number mentioned in ``text`` as ``(value, start, end)``, in order.

    Percent literals yield their fraction value (``"25%"`` -> 1/4), matching
    :attr:`Extraction.value`. Oversize and invalid literals (``1/0``) are skipped; the scan
    stops after ``limits.max_numbers`` literals.
    """
    for count, lit in enumerate(scan_literals(text, 0, None, limits)):
        if count >= limits.max_numbers:
            return
        if lit.value is not None:
            yield lit.value, lit.start, lit.end


# --------------------------------------------------------------------------------------
# Strict parsing of one number.
# --------------------------------------------------------------------------------------

_WRAPPERS = (
    re.compile(r"\\boxed[ \t]*+\{(.*)\}", re.S),
    re.compile(r"\$\$(.*)\$\$", re.S),
    re.compile(r"\$(.*)\$", re.S),
    re.compile(r"\\\((.*)\\\)", re.S),
    re.compile(r"\\\[(.*)\\\]", re.S),
    re.compile(r"<([A-Za-z_][\w-]*)>(.*)</\1>", re.S),
)
# Unit words allowed after a number: letters, spaces and a few unit symbols, optionally in
# \text{...}/\mathrm{...}; no digits, no arithmetic operators.
_TEX_UNIT_CMD = re.compile(r"\\(?:text|mathrm|textrm|mbox|textbf|mathbf|operatorname)[ \t]*+\{|\\[,;:! ]|[{}~]")
_UNIT_TAIL = re.compile(
    r"[^\W\d_][^\W\d_\s°'’\"/.\-²³" + CURRENCY_SYMBOLS + r"]*+"
    r"(?:[\s°'’\"/.\-²³" + CURRENCY_SYMBOLS + r"]++[^\W\d_]*+)*+"
    r"|[°" + CURRENCY_SYMBOLS + r"][^\d]*+"
)


def _unwrap(s: str) -> str:
    for _ in range(8):  # nested wrappers, bounded
        s = s.strip()
        for w in _WRAPPERS:
            m = w.fullmatch(s)
            if m is not None:
                s = m.group(m.lastindex or 1)
                break
        else:
            return s
    return s.strip()


def _is_unit_tail(tail: str) -> bool:
    tail = _TEX_UNIT_CMD.sub(" ", tail).strip()
    if not tail:
        return True
    return _UNIT_TAIL.fullmatch(tail) is not None


def parse_number(text: str, limits: NumberLimits = DEFAULT_NUMBER_LIMITS) -> Fraction | None:
    """The exact value when the whole (stripped) string is one number, else ``None``.

    Accepts every literal style of :func:`scan_literals` (grouping, currency, percent as
    ``/100``, ``a/b``, mixed numbers, ``\\frac``, scientific notation, Unicode minus), wrapped
    in ``\\boxed{}``, ``$...$``, ``\\(...\\)`` or one ``<tag>...</tag>``, followed by unit words
    (``"42 apples"``, ``"$18 per hour"``, ``42\\text{ cm}``) and/or one trailing period.
    Prefix words ("The answer is 42") are :func:`extract_answer`'s job.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    if len(text) > limits.max_answer_chars and len(text.strip()) > limits.max_answer_chars:
        return None
    s = _unwrap(text)
    if s.endswith("."):
        s = s[:-1].rstrip()
    if not s:
        return None
    found = _literal_at(s, 0, len(s), limits, anchored=True)
    if found is None:
        return None
    m, lit = found
    if lit.value is None:
        return None
    if not _is_unit_tail(s[m.end() :]):
        return None
    return lit.value


# --------------------------------------------------------------------------------------
# Answer extraction.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Extraction:
    """The single final value of an answer-block body.

    Attributes:
        value: exact value (percent applied: ``"50%"`` -> 1/2); ``None`` when there is no
            single final answer.
        text: the raw literal text that gave ``value`` (``None`` when nothing matched).
        percent: the answer was written with a percent sign (or the word "percent").
        issue: ``None`` for a clean single value, else one of :data:`ISSUES`.
    """

    value: Fraction | None
    text: str | None
    percent: bool
    issue: str | None


_BOX_TOKENS = re.compile(r"\\(?:boxed|fbox)[ \t]*+\{|\{|\}")
_ANSWER_MARKER = re.compile(r"(?i)(?:\bfinal[ \t]++answer|\banswer)\b(?:[ \t]*+(?:is\b|:|=))?|####")
_GAP_OPERATOR = re.compile(r"[-+*/×÷^·\u2212]|\\(?:times|cdot|div)\b")
_BEFORE_EXPR = re.compile(
    r"(?:√|\\sqrt|sqrt|±|\\pm|\^|\\log|\blog|\bln)[ \t]*+[{(\[]?[ \t]*+\Z"
    r"|[-\u2212][ \t]++\Z"  # a detached minus ("- 5"): sign or subtraction, ambiguous
)
_AFTER_EXPR = re.compile(r"[ \t]*+[})\]]?[ \t]*+(?:\^|π|\\pi\b|√|\\sqrt)|[})\]]?!(?!=)")
_UNIT_POWER = re.compile(r"[^\W\d_][ \t]*+\^[ \t]*+\{?[ \t]*+\Z")  # "m^2", "cm^{3}"
_CONTEXT = 12  # characters inspected around a literal for the markers above
# A body that is one plain ASCII decimal and nothing else (the most common answer): no marker,
# box, sign, unit or context can apply, so extract_answer reads it without the general scan.
_PLAIN_ANSWER = re.compile(r"(0|[1-9][0-9]*+)(?:\.([0-9]++))?+", re.ASCII)


def _boxed_regions(body: str) -> list[tuple[int, int]]:
    """Contents of the outermost closed ``\\boxed{...}``s, in one linear pass."""
    stack: list[int] = []  # content start for boxes, -1 for plain braces
    boxes_open = 0
    regions: list[tuple[int, int]] = []
    for m in _BOX_TOKENS.finditer(body):
        tok = m.group()
        if tok == "}":
            if not stack:
                continue
            start = stack.pop()
            if start >= 0:
                boxes_open -= 1
                if boxes_open == 0:
                    regions.append((start, m.start()))
        elif tok == "{":
            stack.append(-1)
        else:
            stack.append(m.end())
            boxes_open += 1
    return regions


def _answer_regions(body: str, limits: NumberLimits) -> list[tuple[int, int]]:
    """Where the final value is looked for: boxes, else after the last answer marker."""
    boxes = _boxed_regions(body)
    if boxes:
        return boxes
    last = None
    for m in _ANSWER_MARKER.finditer(body):
        last = m
    if last is not None:
        after = (last.end(), len(body))
        if next(scan_literals(body, after[0], after[1], limits), None) is not None:
            return [after]
    return [(0, len(body))]


def _is_expression_context(body: str, lit: Literal) -> bool:
    before = body[max(0, lit.start - _CONTEXT) : lit.start]
    after = body[lit.end : lit.end + _CONTEXT]
    return _BEFORE_EXPR.search(before) is not None or _AFTER_EXPR.match(after) is not None


def extract_answer(body: str, limits: NumberLimits = DEFAULT_NUMBER_LIMITS) -> Extraction:
    """Exactly one final value from an answer-block body.

    The value is looked for inside the outermost ``\\boxed{}``s when there are any, else after
    the last ``####``/"answer is"/"answer:" marker when a number follows it, else in the whole
    body. Inside that region every literal must have the same value, with no arithmetic
    operator between two of them and no function/power around one (``√4``, ``2^3``, ``5!``);
    words, units, tags and ``=`` are ignored. Issues: ``empty_answer`` (blank body),
    ``no_number``, ``multiple_candidates`` (two different values, or an operator between
    repeats), ``expression`` (one literal under a function or power), ``oversize`` (a literal
    over ``limits.max_digits``/``max_exponent``, or a body over ``limits.max_answer_chars``).

    >>> extract_answer("The answer is $1,234.50")
    Extraction(value=Fraction(2469, 2), text='$1,234.50', percent=False, issue=None)
    >>> extract_answer("\\\\boxed{3/4}").value
    Fraction(3, 4)
    >>> extract_answer("12 or 13").issue
    'multiple_candidates'
    """
    if not isinstance(body, str):
        raise TypeError(f"body must be str, got {type(body).__name__}")
    stripped = body.strip()
    if not stripped:
        return Extraction(None, None, False, "empty_answer")
    if len(stripped) > limits.max_answer_chars:
        return Extraction(None, None, False, "oversize")
    plain = _PLAIN_ANSWER.fullmatch(stripped)
    if plain is not None:  # just "42" or "12.50": the one literal, read as below, in one step
        whole, frac = plain.group(1), plain.group(2) or ""
        if len(whole) + len(frac) <= limits.max_digits:
            return Extraction(_dec_value(whole, frac), stripped, False, None)
    first: Literal | None = None
    for rs, re_ in _answer_regions(body, limits):
        prev: Literal | None = None
        for lit in scan_literals(body, rs, re_, limits):
            if _UNIT_POWER.search(body, max(0, lit.start - _CONTEXT), lit.start):
                continue  # the power of a unit ("42 m^2"), not a candidate
            if lit.oversize:
                return Extraction(None, lit.text, lit.percent, "oversize")
            if first is None:
                first = lit
            elif lit.value != first.value or first.value is None:
                return Extraction(None, first.text, first.percent, "multiple_candidates")
            if prev is not None and _GAP_OPERATOR.search(body, prev.end, lit.start):
                return Extraction(None, first.text, first.percent, "multiple_candidates")
            if _is_expression_context(body, lit):
                return Extraction(None, lit.text, lit.percent, "expression")
            prev = lit
    if first is None or first.value is None:
        return Extraction(None, None if first is None else first.text, False, "no_number")
    return Extraction(first.value, first.text, first.percent, None)


# --------------------------------------------------------------------------------------
# References, comparison, formatting.
# --------------------------------------------------------------------------------------


def extract_reference(ref: object, limits: NumberLimits = DEFAULT_NUMBER_LIMITS) -> Fraction | None:
    """Normalise a reference answer to an exact value, the same way as predictions.

    ``Fraction``/``int``/any ``numbers.Rational`` -> itself; ``float`` -> ``Fraction(repr(x))``
    (so ``0.1`` is exactly 1/10), ``None`` when not finite; ``Decimal`` -> exact;
    ``str`` -> the text after the last ``####`` when present (GSM8K), read with
    :func:`parse_number`, else with :func:`extract_answer` (a clean single value only);
    ``None`` -> ``None``. ``bool`` and other types raise ``TypeError``.

    Every type is bounded alike: a value whose numerator or denominator is longer than
    ``limits.max_value_bits`` (about ``10 ** (max_digits + max_exponent)``, the largest a
    string reference can spell) is ``None``, decided before any costly conversion
    (``Decimal("1e100000000")`` is refused in microseconds).
    """
    if ref is None:
        return None
    if isinstance(ref, bool):
        raise TypeError("reference must be a number or str, got bool")
    if isinstance(ref, _abc.Rational):
        num, den = int(ref.numerator), int(ref.denominator)
        if max(num.bit_length(), den.bit_length()) > limits.max_value_bits:
            return None
        return ref if isinstance(ref, Fraction) else Fraction(num, den)
    if isinstance(ref, Decimal):
        if not ref.is_finite():
            return None
        _, digits, exp = ref.as_tuple()
        span = limits.max_digits + limits.max_exponent  # as for Rational: 10 ** span at most
        if len(digits) + max(int(exp), 0) > span or -int(exp) > span:
            return None
        return Fraction(ref)
    if isinstance(ref, _abc.Real):
        x = float(ref)
        if x != x or x in (float("inf"), float("-inf")):
            return None
        return Fraction(repr(x))
    if isinstance(ref, str):
        s = ref
        cut = s.rfind("####")
        if cut >= 0:
            s = s[cut + 4 :]
        value = parse_number(s, limits)
        if value is not None:
            return value
        ex = extract_answer(s, limits)
        return ex.value if ex.issue is None else None
    raise TypeError(f"reference must be a number or str, got {type(ref).__name__}")


def answers_match(pred: Extraction, ref: Fraction | None, *, percent: str = "either") -> bool:
    """True when the extracted answer equals the reference exactly.

    ``percent`` applies only when the prediction was written with a percent sign
    (its ``value`` is already divided by 100): ``"fraction"`` compares ``value`` (``50%`` ==
    0.5), ``"number"`` compares ``value * 100`` (``50%`` == 50), ``"either"`` accepts both.
    A prediction with an issue, or a ``None`` reference, never matches.
    """
    if percent not in PERCENT_POLICIES:
        raise ValueError(f"percent must be one of {PERCENT_POLICIES}, got {percent!r}")
    if not isinstance(pred, Extraction):
        raise TypeError(f"pred must be an Extraction, got {type(pred).__name__}")
    if ref is None or pred.issue is not None or pred.value is None:
        return False
    if not isinstance(ref, Fraction):
        if isinstance(ref, bool) or not isinstance(ref, _abc.Rational):
            raise TypeError(f"ref must be a Fraction (see extract_reference), got {type(ref).__name__}")
        ref = Fraction(int(ref.numerator), int(ref.denominator))
    if not pred.percent:
        return pred.value == ref
    as_fraction = pred.value == ref
    as_number = pred.value * 100 == ref
    if percent == "fraction":
        return as_fraction
    if percent == "number":
        return as_number
    return as_fraction or as_number


def _decimal_places(den: int, cap: int) -> int | None:
    """Fractional digits needed to write 1/den exactly, or None (not terminating / > cap)."""
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    places = max(twos, fives)
    return places if den == 1 and places <= cap else None


def format_value(v: Fraction, limits: NumberLimits = DEFAULT_NUMBER_LIMITS) -> str:
    """Canonical text: ``"42"``, ``"-3.5"`` for short terminating decimals, else ``"1/3"``.

    ``parse_number(format_value(v)) == v`` for every ``v`` whose digits fit
    ``limits.max_digits``.

    >>> format_value(Fraction(2469, 2)), format_value(Fraction(84, 2)), format_value(Fraction(1, 3))
    ('1234.5', '42', '1/3')
    """
    if isinstance(v, bool) or not isinstance(v, _abc.Rational):
        raise TypeError(f"v must be a Fraction or int, got {type(v).__name__}")
    v = Fraction(int(v.numerator), int(v.denominator))
    if v.denominator == 1:
        return str(v.numerator)
    places = _decimal_places(v.denominator, limits.max_format_decimals)
    if places is None:
        return f"{v.numerator}/{v.denominator}"
    sign = "-" if v < 0 else ""
    scaled = abs(v.numerator) * 10**places // v.denominator
    whole, frac = divmod(scaled, 10**places)
    return f"{sign}{whole}.{str(frac).rjust(places, '0').rstrip('0')}"
