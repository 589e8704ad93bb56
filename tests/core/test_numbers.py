"""Answer/reference normalisation: example table plus hypothesis round-trip properties."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dsa_cast.numbers import (
    DEFAULT_NUMBER_LIMITS,
    ISSUES,
    Extraction,
    NumberLimits,
    answers_match,
    extract_answer,
    extract_reference,
    format_value,
    numbers_in,
    parse_number,
    scan_literals,
)

F = Fraction
GSM8K = Path(__file__).resolve().parents[2] / "dsa_cast_train" / "assets" / "gsm8k"

# ---------------------------------------------------------------------------------------
# Example tables.
# ---------------------------------------------------------------------------------------

PARSE_EXAMPLES = [
    ("42", F(42)),
    ("  42  ", F(42)),
    ("1,234", F(1234)),
    ("1 234", F(1234)),
    ("1\u2009234", F(1234)),
    ("1\u202f234", F(1234)),
    ("1\u00a0234", F(1234)),
    ("1{,}234", F(1234)),
    ("1,234,567.89", F(123456789, 100)),
    ("$1,234.50", F(246900, 200)),
    ("$5.00", F(5)),
    ("\\$42", F(42)),
    ("€5", F(5)),
    ("£12.5", F(25, 2)),
    ("¥100", F(100)),
    ("₹20", F(20)),
    ("USD 42", F(42)),
    ("42 USD", F(42)),
    ("42 apples", F(42)),
    ("$18 per hour", F(18)),
    ("42\\text{ apples}", F(42)),
    ("30°C", F(30)),
    ("12 km/h", F(12)),
    ("42.", F(42)),
    ("72.0", F(72)),
    (".5", F(1, 2)),
    ("-5", F(-5)),
    ("+5", F(5)),
    ("\u22125", F(-5)),
    ("\u2212$5", F(-5)),
    ("$-5", F(-5)),
    ("50%", F(1, 2)),
    ("50 %", F(1, 2)),
    ("12.5\\%", F(1, 8)),
    ("50 percent", F(1, 2)),
    ("3/4", F(3, 4)),
    ("-3/4", F(-3, 4)),
    ("1 1/2", F(3, 2)),
    ("-2 3/4", F(-11, 4)),
    ("\\frac{3}{4}", F(3, 4)),
    ("\\dfrac{3}{4}", F(3, 4)),
    ("\\tfrac12", F(1, 2)),
    ("-\\frac{1}{2}", F(-1, 2)),
    ("\\frac{-1}{2}", F(-1, 2)),
    ("2\\frac{1}{2}", F(5, 2)),
    ("\\boxed{42}", F(42)),
    ("\\boxed{\\frac{1}{2}}", F(1, 2)),
    ("$42$", F(42)),
    ("$\\boxed{7}$", F(7)),
    ("\\(42\\)", F(42)),
    ("<answer>42</answer>", F(42)),
    ("1.5e3", F(1500)),
    ("2E-2", F(1, 50)),
    ("1.5 × 10^3", F(1500)),
    ("1.5 \\times 10^{3}", F(1500)),
    ("3 x 10^-2", F(3, 100)),
    # not one number
    ("", None),
    ("   ", None),
    ("1,2", None),
    ("12,34", None),
    ("1,2345", None),
    ("1.2.3", None),
    ("42 + 1", None),
    ("17 or 18", None),
    ("1/0", None),
    ("2 5/3", None),
    ("The answer is 42", None),
    ("forty-two", None),
    ("1e5000", None),
    ("9" * 101, None),
]


@pytest.mark.parametrize("text,expected", PARSE_EXAMPLES)
def test_parse_number_examples(text: str, expected: Fraction | None) -> None:
    assert parse_number(text) == expected


EXTRACT_EXAMPLES = [
    # (body, value, issue, percent)
    ("42", F(42), None, False),
    ("\n  42\n", F(42), None, False),
    ("The answer is 42.", F(42), None, False),
    ("The final answer is $\\boxed{18}$ dollars", F(18), None, False),
    ("#### 1,234", F(1234), None, False),
    ("answer:42", F(42), None, False),
    ("Answer: $18.00", F(18), None, False),
    ("<answer>42</answer>", F(42), None, False),
    ("x = -3", F(-3), None, False),
    ("42 (forty-two)", F(42), None, False),
    ("42 = 42", F(42), None, False),
    ("$1,234.50", F(2469, 2), None, False),
    ("1 1/2 cups", F(3, 2), None, False),
    ("3/4", F(3, 4), None, False),
    ("25%", F(1, 4), None, True),
    ("42 m^2", F(42), None, False),
    ("I computed 6*7 = 42 first. The answer is 42.", F(42), None, False),
    ("17 \\boxed{18}", F(18), None, False),
    ("\\boxed{\\boxed{5}}", F(5), None, False),
    ("", None, "empty_answer", False),
    ("  \n ", None, "empty_answer", False),
    ("no idea", None, "no_number", False),
    ("\\boxed{}", None, "no_number", False),
    ("1/0", None, "no_number", False),
    ("17, 18 or 19", None, "multiple_candidates", False),
    ("17 or 18", None, "multiple_candidates", False),
    ("x=3, y=4", None, "multiple_candidates", False),
    ("3 hours 20 minutes", None, "multiple_candidates", False),
    ("\\boxed{17} \\boxed{18}", None, "multiple_candidates", False),
    ("2+2", None, "multiple_candidates", False),
    ("4 - 4", None, "multiple_candidates", False),
    ("12,34", None, "multiple_candidates", False),
    ("1.2.3", None, "multiple_candidates", False),
    ("The answer is 42, not 41", None, "multiple_candidates", False),
    ("\\sqrt{4}", None, "expression", False),
    ("√4", None, "expression", False),
    ("5!", None, "expression", False),
    ("2^10", None, "expression", False),
    ("- 5", None, "expression", False),
    ("9" * 200_000, None, "oversize", False),
    ("1e5000", None, "oversize", False),
    ("42 " + "x" * 2000, None, "oversize", False),
]


@pytest.mark.parametrize("body,value,issue,percent", EXTRACT_EXAMPLES)
def test_extract_answer_examples(body: str, value: Fraction | None, issue: str | None, percent: bool) -> None:
    ex = extract_answer(body)
    assert (ex.value, ex.issue) == (value, issue)
    assert ex.issue is None or ex.issue in ISSUES
    if issue is None:
        assert ex.percent is percent
        assert ex.text is not None and parse_number(ex.text) == value


REFERENCE_EXAMPLES = [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", F(72)),
    ("... so the total is $1,234.\n#### 1,234", F(1234)),
    ("#### -5", F(-5)),
    ("1,234", F(1234)),
    ("  18 ", F(18)),
    ("The answer is 18", F(18)),
    (72, F(72)),
    (72.0, F(72)),
    (0.1, F(1, 10)),
    (2.5, F(5, 2)),
    (F(1, 3), F(1, 3)),
    (Decimal("1.25"), F(5, 4)),
    (None, None),
    (float("nan"), None),
    (float("inf"), None),
    ("no number here", None),
    ("17 or 18", None),
]


@pytest.mark.parametrize("ref,expected", REFERENCE_EXAMPLES)
def test_extract_reference_examples(ref: object, expected: Fraction | None) -> None:
    assert extract_reference(ref) == expected


@pytest.mark.parametrize("bad", [True, b"42", [42], object()])
def test_extract_reference_rejects_other_types(bad: object) -> None:
    with pytest.raises(TypeError, match="reference"):
        extract_reference(bad)


@pytest.mark.parametrize("fn", [parse_number, extract_answer])
def test_non_str_is_type_error(fn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match="int"):
        fn(42)


def test_percent_policy() -> None:
    pct = extract_answer("50%")
    plain = extract_answer("50")
    assert pct.percent and pct.value == F(1, 2)
    assert answers_match(pct, F(50)) and answers_match(pct, F(1, 2))
    assert answers_match(pct, F(50), percent="number") and not answers_match(pct, F(1, 2), percent="number")
    assert answers_match(pct, F(1, 2), percent="fraction") and not answers_match(pct, F(50), percent="fraction")
    # the policy only concerns answers written with a percent sign
    assert answers_match(plain, F(50), percent="fraction") and not answers_match(plain, F(1, 2))
    with pytest.raises(ValueError, match="percent"):
        answers_match(pct, F(50), percent="maybe")


def test_answers_match_never_pays_an_issue() -> None:
    assert not answers_match(extract_answer("17 or 18"), F(17))
    assert not answers_match(extract_answer(""), F(0))
    assert not answers_match(extract_answer("42"), None)
    assert answers_match(extract_answer("42"), 42)  # int reference accepted as a Rational


FORMAT_EXAMPLES = [
    (F(42), "42"),
    (F(0), "0"),
    (F(-7, 2), "-3.5"),
    (F(1, 8), "0.125"),
    (F(-1, 3), "-1/3"),
    (F(1, 1024), "0.0009765625"),
    (F(1, 2**70), f"1/{2**70}"),  # more than max_format_decimals places: written as a fraction
]


@pytest.mark.parametrize("value,text", FORMAT_EXAMPLES)
def test_format_value_examples(value: Fraction, text: str) -> None:
    assert format_value(value) == text
    assert parse_number(text) == value


def test_numbers_in_examples() -> None:
    text = "He pays 3 * 4 = 12 dollars, 25% off, \u22123.5 and 1,234 and \\frac{1}{2} or 1/0."
    found = list(numbers_in(text))
    assert [v for v, _, _ in found] == [F(3), F(4), F(12), F(1, 4), F(-7, 2), F(1234), F(1, 2)]
    assert [text[s:e] for _, s, e in found] == ["3", "4", "12", "25%", "\u22123.5", "1,234", "\\frac{1}{2}"]


def test_numbers_in_is_capped() -> None:
    limits = NumberLimits(max_numbers=10)
    assert len(list(numbers_in("1, " * 1000, limits))) == 10
    assert len(list(numbers_in("1, " * 5000))) == DEFAULT_NUMBER_LIMITS.max_numbers


def test_oversize_literal_is_flagged_not_built() -> None:
    lits = list(scan_literals("9" * 200_000))
    assert len(lits) == 1 and lits[0].oversize and lits[0].value is None
    assert list(numbers_in("a " + "9" * 200_000 + " b 7")) == [(F(7), 200_005, 200_006)]


ADVERSARIAL = {
    "digits": "9" * 200_000,
    "commas": "1," * 100_000,
    "spaces": "1 " * 100_000,
    "boxed": "\\boxed{" * 28_000,
    "minus": "-" * 200_000,
    "dollar": "$" * 200_000,
    "slashes": "1/" * 100_000,
    "mixed": "1 1/" * 50_000,
    "fracs": "\\frac{1}{" * 22_000,
    "dots": "1." * 100_000,
    "exponents": "1e" * 100_000,
    "answer_markers": "answer is " * 20_000,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_inputs_return(name: str) -> None:
    text = ADVERSARIAL[name]
    assert extract_answer(text).issue == "oversize"
    assert parse_number(text) is None
    assert len(list(numbers_in(text))) <= DEFAULT_NUMBER_LIMITS.max_numbers


def test_gsm8k_references_all_parse() -> None:
    lines = gzip.decompress((GSM8K / "test.jsonl.gz").read_bytes()).decode("utf-8").splitlines()
    values = [extract_reference(json.loads(line)["answer"]) for line in lines]
    assert len(values) == 1319
    assert all(v is not None for v in values)
    # the final value round-trips through the canonical text and through an answer block
    for v in values:
        assert v is not None
        assert parse_number(format_value(v)) == v
        assert extract_answer(f"The answer is {format_value(v)}.").value == v


# ---------------------------------------------------------------------------------------
# Properties.
# ---------------------------------------------------------------------------------------

SEPARATORS = [",", " ", "\u2009", "\u202f", "\u00a0", "{,}"]


def _group(digits: str, sep: str) -> str:
    head = len(digits) % 3 or 3
    return sep.join([digits[:head]] + [digits[i : i + 3] for i in range(head, len(digits), 3)])


def _decimal_parts(v: Fraction, places: int) -> tuple[str, str, str]:
    """(sign, integer digits, fractional digits) of a value with a terminating expansion."""
    scaled = abs(v) * 10**places
    assert scaled.denominator == 1
    whole, frac = divmod(scaled.numerator, 10**places)
    return ("-" if v < 0 else ""), str(whole), str(frac).rjust(places, "0") if places else ""


decimals = st.builds(lambda n, k: F(n, 10**k), st.integers(-(10**12), 10**12), st.integers(0, 4))
fractions_ = st.builds(F, st.integers(-(10**6), 10**6), st.integers(1, 10**4))
values = st.one_of(decimals, fractions_)


def _places(v: Fraction) -> int:
    k = 0
    while (v * 10**k).denominator != 1:
        k += 1
    return k


def _renderings(v: Fraction, draw) -> list[str]:  # type: ignore[no-untyped-def]
    """Every supported way of writing v (as exact strings) that fits v's shape."""
    out = [format_value(v)]
    canon = format_value(v)
    out += [
        f"\\boxed{{{canon}}}",
        f"${canon}$",
        f"<answer>{canon}</answer>",
        f"{canon} apples",
        f"{canon}.",
        f"{canon}\\text{{ units}}",
        canon.replace("-", "\u2212"),
    ]
    if (v * 10**6).denominator == 1:  # terminating decimal
        places = _places(v)
        sign, whole, frac = _decimal_parts(v, places)
        extra = draw(st.integers(0, 3))
        frac_z = frac + "0" * extra
        dot = f".{frac_z}" if frac_z else ""
        sep = draw(st.sampled_from(SEPARATORS))
        minus = draw(st.sampled_from(["-", "\u2212"]))
        s = minus if sign else ""
        out.append(f"{s}{_group(whole, sep)}{dot}")
        cur = draw(st.sampled_from(["$", "€", "£", "¥", "₹", "\\$", "USD "]))
        out.append(f"{s}{cur}{_group(whole, ',')}{dot}")
        out.append(f"{cur}{s}{whole}{dot}")
        # percent: v written as v*100 with a percent sign
        psign, pwhole, pfrac = _decimal_parts(v * 100, max(places - 2, 0))
        out.append(f"{'-' if psign else ''}{pwhole}{'.' + pfrac if pfrac else ''}%")
        # scientific notation: mantissa (integer digits) x 10^-places
        mant = f"{s}{whole}{frac}"
        out.append(f"{mant}e-{places}" if places else f"{mant}e0")
        out.append(f"{mant} \\times 10^{{{-places}}}")
        out.append(f"{mant} × 10^{-places}")
    if v.denominator != 1:
        s = "-" if v < 0 else ""
        out.append(f"{s}\\frac{{{abs(v.numerator)}}}{{{v.denominator}}}")
        out.append(f"\\dfrac{{{v.numerator}}}{{{v.denominator}}}")
        if abs(v) > 1:
            whole, rest = divmod(abs(v.numerator), v.denominator)
            out.append(f"{s}{whole} {rest}/{v.denominator}")
            out.append(f"{s}{whole}\\frac{{{rest}}}{{{v.denominator}}}")
    return out


@given(v=values, data=st.data())
def test_every_rendering_parses_back(v: Fraction, data: st.DataObject) -> None:
    for text in _renderings(v, data.draw):
        assert parse_number(text) == v, text
        ex = extract_answer(text)
        assert (ex.value, ex.issue) == (v, None), text
        assert extract_answer(f"The answer is {text}").value == v, text
        assert extract_answer(f"#### {text}").value == v, text


@given(values)
def test_format_value_idempotent(v: Fraction) -> None:
    text = format_value(v)
    assert parse_number(text) == v
    assert format_value(parse_number(text)) == text  # type: ignore[arg-type]
    assert extract_reference(text) == v


@given(st.integers(-(10**15), 10**15), st.integers(0, 6))
def test_float_reference_is_its_decimal_repr(n: int, k: int) -> None:
    text = format_value(F(n, 10**k))
    assert extract_reference(float(text)) == extract_reference(text) == F(n, 10**k)


JOINERS = [", ", " or ", " and ", "; ", "\n", " = ", " + ", ", maybe "]


@given(a=values, b=values, joiner=st.sampled_from(JOINERS), prefix=st.sampled_from(["", "The answer is ", "x = "]))
def test_two_distinct_values_are_never_one_answer(a: Fraction, b: Fraction, joiner: str, prefix: str) -> None:
    assume(a != b)
    ex = extract_answer(f"{prefix}{format_value(a)}{joiner}{format_value(b)}")
    assert ex.value is None and ex.issue == "multiple_candidates"


@given(v=values, n=st.integers(2, 5), joiner=st.sampled_from([", ", " = ", " or ", " (", "\n"]))
def test_same_value_repeated_without_operators_is_that_value(v: Fraction, n: int, joiner: str) -> None:
    ex = extract_answer(joiner.join([format_value(v)] * n))
    assert (ex.value, ex.issue) == (v, None)


@given(a=values, b=values, op=st.sampled_from([" + ", " - ", " * ", " × ", " ^ "]))
def test_operator_between_numbers_is_not_an_answer(a: Fraction, b: Fraction, op: str) -> None:
    assert extract_answer(f"{format_value(a)}{op}{format_value(b)}").value is None


@given(st.lists(values, min_size=0, max_size=8), st.sampled_from([" then ", "; ", " and "]))
def test_numbers_in_finds_each_value_with_its_span(vals: list[Fraction], joiner: str) -> None:
    text = "We see " + joiner.join(format_value(v) for v in vals) + " here."
    found = list(numbers_in(text))
    assert [v for v, _, _ in found] == vals
    for v, s, e in found:
        assert parse_number(text[s:e]) == v


NUMBERISH = st.lists(
    st.sampled_from(
        list("0123456789,. -+/%$€\\{}^x×eE\u2212\u2009\u00a0") + ["\\frac{", "\\boxed{", "####", "answer is"]
    ),
    max_size=60,
).map("".join)


@given(st.one_of(st.text(max_size=200), NUMBERISH))
def test_never_raises_on_arbitrary_text(text: str) -> None:
    value = parse_number(text)
    assert value is None or isinstance(value, Fraction)
    ex = extract_answer(text)
    assert isinstance(ex, Extraction)
    assert (ex.value is None) == (ex.issue is not None)
    assert ex.issue is None or ex.issue in ISSUES
    extract_reference(text)
    last = -1
    for v, s, e in numbers_in(text):
        assert isinstance(v, Fraction) and last <= s < e <= len(text)
        last = e


@given(st.integers(101, 400))
def test_literals_over_the_digit_cap_are_oversize(n: int) -> None:
    assert extract_answer("7" * n).issue == "oversize"
    assert extract_answer("0." + "3" * n).issue == "oversize"
    assert parse_number("7" * n) is None


@given(values)
def test_percent_either_is_number_or_fraction(v: Fraction) -> None:
    pct = Extraction(v, "x%", True, None)
    for ref in (v, v * 100, v + 1):
        assert answers_match(pct, ref) == (
            answers_match(pct, ref, percent="number") or answers_match(pct, ref, percent="fraction")
        )


# ----------------------------------------------------------------------------- reference bounds
def test_every_reference_type_is_bounded_like_strings():
    from decimal import Decimal

    from dsa_cast.numbers import DEFAULT_NUMBER_LIMITS as L
    from dsa_cast.score import grade

    largest = "9" * L.max_digits + f"e{L.max_exponent}"  # the largest value a string may spell
    v = extract_reference(largest)
    assert v is not None and v.denominator == 1
    assert extract_reference(v.numerator) == v == extract_reference(Decimal(largest)) == extract_reference(v)
    smallest = extract_reference(f"1e-{L.max_exponent}")
    assert extract_reference(Decimal(f"1e-{L.max_exponent}")) == smallest == extract_reference(smallest)
    too_big = [
        10 ** (L.max_digits + L.max_exponent + 1),
        -(10**5000),
        Fraction(1, 10**5000),
        Fraction(10**5000, 7),
        Decimal("1e100000000"),
        Decimal("-1e-100000000"),
        Decimal("9" * 5000 + "e-2"),
        Decimal(f"1e{L.max_digits + L.max_exponent + 1}"),
    ]
    for ref in too_big:  # refused before any conversion (Decimal("1e100000000") used to hang)
        assert extract_reference(ref) is None
        with pytest.raises(ValueError, match="not a finite number of at most"):
            grade("<answer>1</answer>", ref)
