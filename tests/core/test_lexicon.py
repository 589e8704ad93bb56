"""dsa_cast.lexicon: the shared number-lexing rules, and that numbers/claims/rubrics use them."""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsa_cast import claims, numbers, rubrics
from dsa_cast.lexicon import (
    COMMA_INT,
    CURRENCY_SIGNS,
    CURRENCY_SYMBOLS,
    CURRENCY_WORDS,
    MINUS_CHARS,
    OPERAND,
    SEPARATOR,
    currency_chars,
    currency_pattern,
    decimal_fraction,
    decimal_value,
    exponent_value,
    grouped_int,
)

F = Fraction

# ---------------------------------------------------------------------------------------
# Currency table.
# ---------------------------------------------------------------------------------------


def test_currency_table():
    assert CURRENCY_SIGNS == ("\\$", "US$", "$", "€", "£", "¥", "₹")
    assert CURRENCY_WORDS == ("USD",)
    assert set(CURRENCY_SYMBOLS) <= set("".join(CURRENCY_SIGNS))
    # longest first: a sign is never a prefix of a later one (the alternation takes the first)
    for i, a in enumerate(CURRENCY_SIGNS):
        for b in CURRENCY_SIGNS[i + 1 :]:
            assert not b.startswith(a), (a, b)


@pytest.mark.parametrize("words", [False, True])
def test_currency_pattern_matches_exactly_the_table(words):
    pat = re.compile(currency_pattern(words))
    for sign in CURRENCY_SIGNS:
        assert pat.fullmatch(sign), sign
    for word in CURRENCY_WORDS:
        assert bool(pat.fullmatch(word)) is words
        assert pat.match(word + "A") is None  # never glued to a letter
    for other in ["US", "D", "USDA", "\\", "€€", "S$"]:
        assert pat.fullmatch(other) is None, other


def test_currency_chars_cover_every_sign():
    for words in (False, True):
        chars = currency_chars(words)
        assert len(chars) == len(set(chars))
        spellings = CURRENCY_SIGNS + (CURRENCY_WORDS if words else ())
        assert set(chars) == set("".join(spellings))
        for sign in spellings:
            assert (sign + "12").lstrip(chars) == "12"


def test_the_readers_use_the_table():
    """numbers takes the word USD, claims does not; both take every symbol sign."""
    assert currency_pattern(words=True) == numbers._CURRENCY
    assert currency_pattern(words=False) == claims._CURRENCY
    assert numbers.parse_number("USD 42") == 42
    assert numbers.parse_number("US$ 42") == 42
    with pytest.raises(claims.EvalError) as err:
        claims.evaluate("USD 5 + 3")
    assert err.value.reason == "bad_token"
    for sign in CURRENCY_SIGNS:
        assert numbers.parse_number(f"{sign}12") == 12, sign
        assert claims.evaluate(f"{sign}12 + 1") == 13, sign
        assert claims.evaluate(f"{sign}12.50 * 2") == 25, sign


def test_minus_chars():
    assert MINUS_CHARS == "-\u2212"
    assert numbers.parse_number("\u22125") == -5


# ---------------------------------------------------------------------------------------
# Digit groups.
# ---------------------------------------------------------------------------------------

GROUPED = re.compile(grouped_int(SEPARATOR, "sep"))
COMMA = re.compile(COMMA_INT)
OP = re.compile(OPERAND)


@pytest.mark.parametrize(
    ("text", "grouped", "comma", "operand"),
    [
        ("1,234", "1,234", "1,234", "1,234"),
        ("1 234", "1 234", "1", "1"),
        ("1{,}234", "1{,}234", "1", "1"),
        ("1,234 567", "1,234", "1,234", "1,234"),  # the same separator throughout
        ("1,2345", "1", "1", "1"),
        ("12,34", "12", "12", "12"),
        ("1234,567", "1234", "1234", "1234,567"),  # grounding operands allow a long first group
        ("1,234,5678", "1", "1", "1,234"),
        ("1,234.5", "1,234", "1,234", "1,234.5"),
    ],
)
def test_digit_groups(text, grouped, comma, operand):
    assert GROUPED.match(text).group() == grouped
    assert COMMA.match(text).group() == comma
    assert OP.match(text).group() == operand


def test_grouped_int_names_its_separator():
    m = re.fullmatch(grouped_int(SEPARATOR, "s"), "1\u202f234\u202f567")
    assert m is not None and m.group("s") == "\u202f"


# ---------------------------------------------------------------------------------------
# Values.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("whole", "frac", "value"),
    [("42", "", F(42)), ("", "5", F(1, 2)), ("", "", F(0)), ("12", "50", F(25, 2)), ("0", "001", F(1, 1000))],
)
def test_decimal_fraction(whole, frac, value):
    got = decimal_fraction(whole, frac)
    assert type(got) is Fraction and got == value


@pytest.mark.parametrize(
    ("text", "value", "kind"),
    [
        ("42", 42, int),
        ("1,234", 1234, int),
        ("12.50", F(25, 2), Fraction),
        ("12.000", 12, int),
        (".5", F(1, 2), Fraction),
        ("1,234.5", F(2469, 2), Fraction),
        ("0.0", 0, int),
    ],
)
def test_decimal_value(text, value, kind):
    got = decimal_value(text)
    assert type(got) is kind and got == value


@pytest.mark.parametrize(
    ("raw", "value"),
    [("3", 3), ("+3", 3), ("-3", -3), ("\u22123", -3), ("0", 0), ("-0", 0), ("007", 7), ("1000", 1000), ("1001", None)],
)
def test_exponent_value(raw, value):
    assert exponent_value(raw, 1000) == value


def test_exponent_value_refuses_long_exponents_by_length():
    assert exponent_value("9" * 10_000, 1000) is None
    assert exponent_value("0" * 10_000 + "12", 64) == 12


decimals = st.decimals(allow_nan=False, allow_infinity=False, min_value=0, max_value=Decimal(10) ** 30, places=8)


@given(decimals)
def test_decimal_round_trip(d):
    """The digits of a plain decimal read back as its exact value, both ways, and agree with the
    three readers."""
    text = f"{d:f}"
    whole, _, frac = text.partition(".")
    assert decimal_fraction(whole, frac) == Fraction(d)
    assert decimal_value(text) == Fraction(d)
    assert decimal_value(f"{d:,f}") == Fraction(d)
    assert numbers.parse_number(text) == Fraction(d)
    if len(whole) + len(frac) <= claims.DEFAULT_LIMITS.max_literal_digits:
        assert claims.evaluate(text) == Fraction(d)
    assert rubrics._operand_value(text) == Fraction(d)


@given(st.integers(-(10**6), 10**6), st.sampled_from(["", "+", "-", "\u2212"]), st.integers(0, 3))
def test_exponent_round_trip(k, sign, zeros):
    raw = ("-" if k < 0 else sign) + "0" * zeros + str(abs(k))
    expected = (-abs(k) if raw[0] in MINUS_CHARS else abs(k)) if abs(k) <= 1000 else None
    assert exponent_value(raw, 1000) == expected


@given(st.integers(0, 10**30))
def test_grouped_integers_read_the_same_everywhere(n):
    text = f"{n:,}"
    assert GROUPED.fullmatch(text) and COMMA.fullmatch(text) and OP.fullmatch(text)
    assert decimal_value(text) == n
    assert numbers.parse_number(text) == n
    assert claims.evaluate(text) == n
