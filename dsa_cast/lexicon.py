"""Number lexing rules shared by :mod:`dsa_cast.numbers`, :mod:`dsa_cast.claims` and
:mod:`dsa_cast.rubrics`: one copy of each rule.

What is here:

* the currency signs (:data:`CURRENCY_SIGNS`, :data:`CURRENCY_SYMBOLS`,
  :data:`CURRENCY_WORDS`) and the regex pieces built from them (:func:`currency_pattern`);
* the minus signs (:data:`MINUS_CHARS`);
* the integer patterns with thousands groups (:func:`grouped_int`, :data:`COMMA_INT`,
  :data:`OPERAND`);
* the conversion of a decimal literal's digits to an exact value (:func:`decimal_fraction`,
  :func:`decimal_value`) and the reading of a scientific-notation exponent
  (:func:`exponent_value`).

The three readers deliberately differ in a few places; each difference is stated here, next to
the rule it changes, so that one table still holds them all:

* **``USD``.** The answer reader (:mod:`~dsa_cast.numbers`) accepts the word ``USD`` (not
  followed by a letter) as a currency sign, the claim evaluator (:mod:`~dsa_cast.claims`) does
  not. In the claim grammar a letter is what separates arithmetic from prose: a side holding a
  letter (other than the ``x`` between two operands) does not parse, and a plain-text chain run
  glued to a word loses that side. A word-spelled sign would let an arithmetic run begin inside
  prose ("paid in USD 5 + 3 = 8") and need its own not-followed-by-a-letter guard in every run
  pattern, while an answer block holds one value, where ``USD 42`` can only be a currency.
  ``US$`` is a sign in both: its ``$`` marks it as one.
* **Separators.** An answer may group thousands with ``,``, ``{,}``, ``\\,`` or one space-like
  character (:data:`SEPARATOR`); the claim evaluator only with ``,`` (:data:`COMMA_INT`): a blank
  there separates tokens (``3 000`` is two numbers).
* **Grounding operands** (:data:`OPERAND`: the numbers the rubric's grounding check reads from a
  claim's expression and from the question or the grounding sections) accept a first group of
  any length (``1234,567`` is one operand); a stray digit after a group ends the operand there
  instead of undoing the grouping.

>>> decimal_fraction("12", "50"), decimal_value("1,234.50"), exponent_value("-03", 1000)
(Fraction(25, 2), Fraction(2469, 2), -3)
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Final

__all__ = [
    "CURRENCY_SYMBOLS",
    "CURRENCY_SIGNS",
    "CURRENCY_WORDS",
    "currency_pattern",
    "currency_chars",
    "MINUS_CHARS",
    "SEPARATOR",
    "grouped_int",
    "COMMA_INT",
    "OPERAND",
    "decimal_fraction",
    "decimal_value",
    "exponent_value",
]

# --------------------------------------------------------------------------------------
# Currency.
# --------------------------------------------------------------------------------------

#: The one-character currency symbols (also used as character-class members: a ``x`` before one
#: is a multiplication sign, a unit tail may hold one).
CURRENCY_SYMBOLS: Final = "$€£¥₹"

#: Every currency sign both readers accept, longest spelling first (the regex alternation tries
#: them in this order): the TeX-escaped dollar, ``US$``, then the symbols.
CURRENCY_SIGNS: Final[tuple[str, ...]] = ("\\$", "US$", *CURRENCY_SYMBOLS)

#: Word spellings of a currency, accepted by the answer reader only (see the module docstring),
#: each when not followed by a letter.
CURRENCY_WORDS: Final[tuple[str, ...]] = ("USD",)


def currency_pattern(words: bool) -> str:
    """A non-capturing regex for one currency sign; with ``words`` also the :data:`CURRENCY_WORDS`.

    >>> currency_pattern(False)
    '(?:\\\\\\\\\\\\$|US\\\\$|\\\\$|€|£|¥|₹)'
    """
    spellings = [re.escape(s) for s in CURRENCY_SIGNS]
    if words:
        spellings += [re.escape(w) + r"(?![A-Za-z])" for w in CURRENCY_WORDS]
    return "(?:" + "|".join(spellings) + ")"


def currency_chars(words: bool) -> str:
    """Every character of the currency signs (with ``words`` also of :data:`CURRENCY_WORDS`),
    each once, in first-seen order: an ``str.lstrip`` set that removes a leading sign."""
    spellings = CURRENCY_SIGNS + (CURRENCY_WORDS if words else ())
    return "".join(dict.fromkeys("".join(spellings)))


#: Signs read as a minus (besides ``+``): ASCII hyphen-minus and U+2212 MINUS SIGN.
MINUS_CHARS: Final = "-\u2212"

# --------------------------------------------------------------------------------------
# Integers with thousands groups.
# --------------------------------------------------------------------------------------

#: One thousands separator of an answer: ``,`` ``{,}`` ``\,`` or one space-like character
#: (space, U+00A0, U+2009, U+202F).
SEPARATOR: Final = r"(?:,|\{,\}|\\,|[ \u00a0\u2009\u202f])"


def grouped_int(sep: str, name: str) -> str:
    """An integer: a first group of one to three digits, then groups of exactly three digits,
    all with the same separator (``sep``, captured as group ``name`` and repeated by
    backreference), not followed by a digit; else a plain digit run. Possessive: linear."""
    return (
        r"(?:[0-9]{1,3}(?P<" + name + r">" + sep + r")[0-9]{3}(?:(?P=" + name + r")[0-9]{3})*+(?![0-9])"
        r"|[0-9]++)"
    )


#: The claim evaluator's integer: ``,`` groups of exactly three digits after a first group of one
#: to three, not followed by a digit; else a plain digit run.
COMMA_INT: Final = r"(?:[0-9]{1,3}(?:,[0-9]{3})++(?![0-9])|[0-9]++)"

#: The rubric's grounding operand (unsigned decimal literal): a digit run, then ``,`` groups of three digits each not
#: followed by a digit, then optional decimals (unsigned; see the module docstring).
OPERAND: Final = r"[0-9]++(?:,[0-9]{3}+(?![0-9]))*+(?:\.[0-9]++)?+"

# --------------------------------------------------------------------------------------
# Values.
# --------------------------------------------------------------------------------------


def decimal_fraction(whole: str, frac: str) -> Fraction:
    """The exact value of the ASCII digits ``whole`` ``.`` ``frac`` (either may be empty).

    The caller bounds the digit count first: this builds an ``int`` of ``len(whole + frac)`` digits.
    """
    return Fraction(int(whole + frac or "0"), 10 ** len(frac))


def decimal_value(s: str) -> int | Fraction:
    """The exact value of an unsigned decimal literal of ASCII digits with optional ``,``
    separators and optional ``.digits``, as an ``int`` when whole (cheaper, same hash and ``==``).

    The caller bounds the length first (see :func:`decimal_fraction`).
    """
    s = s.replace(",", "")
    whole, _, frac = s.partition(".")
    frac = frac.rstrip("0")
    if not frac:
        return int(whole or "0")
    return Fraction(int(whole + frac), 10 ** len(frac))


def exponent_value(raw: str, max_exponent: int) -> int | None:
    """The exponent written ``raw`` (ASCII digits after an optional ``+``, ``-`` or U+2212), or
    ``None`` when ``|k| > max_exponent`` (decided from the digit count before building an ``int``)."""
    digits = raw.lstrip("+-\u2212").lstrip("0") or "0"
    if len(digits) > len(str(max_exponent)):
        return None
    k = int(digits)
    if k > max_exponent:
        return None
    return -k if raw[0] in MINUS_CHARS else k
