"""Safe evaluator and claim checking: examples, caps, and hypothesis properties."""

from __future__ import annotations

import operator
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dsa_cast.claims import (
    DEFAULT_LIMITS,
    EVAL_REASONS,
    Claim,
    EvalError,
    Limits,
    Verdict,
    check_claims,
    evaluate,
    find_claims,
)
from dsa_cast.numbers import format_value

F = Fraction

# ---------------------------------------------------------------------------------------
# Evaluator examples.
# ---------------------------------------------------------------------------------------

EVAL_EXAMPLES = [
    ("2+3*4", F(14)),
    ("(2+3)*4", F(20)),
    ("[2+3]*4", F(20)),
    ("10-4-3", F(3)),
    ("48/2/3", F(8)),
    ("-2^2", F(-4)),
    ("(-2)^2", F(4)),
    ("2^3^2", F(512)),
    ("2**3**2", F(512)),
    ("2^-1", F(1, 2)),
    ("2^-2^2", F(1, 16)),
    ("--3", F(3)),
    ("+3", F(3)),
    ("\u22125 + 2", F(-3)),
    ("3 x 4", F(12)),
    ("3 X 4", F(12)),
    ("3 × 4 ÷ 6", F(2)),
    ("3 · 4", F(12)),
    ("3 \\times 4 \\div 6", F(2)),
    ("3 \\cdot 4", F(12)),
    ("50%", F(1, 2)),
    ("20% * 50", F(10)),
    ("12.5\\%", F(1, 8)),
    ("1,234 + 1", F(1235)),
    ("$3 * 4", F(12)),
    ("€2.50 * 4", F(10)),
    ("0.1 + 0.2", F(3, 10)),
    (".5 * 4", F(2)),
    ("1.5e3", F(1500)),
    ("2.5E-1", F(1, 4)),
    ("10/3", F(10, 3)),
    ("2^64", F(2**64)),
    ("(2^10)^10", F(2**100)),
    ("0^0", F(1)),
    ("3x4", F(12)),
    ("2 x (1+2)", F(6)),
    ("1 \u2013 3/4", F(1, 4)),  # en dash as minus (GSM8K writes "1 – 3/4")
    ("25 / 1/3", F(75)),  # a tight a/b is one fraction literal
    ("$2000 / 2/3", F(3000)),
    ("48/2/3", F(8)),
    ("2^1/2", F(1)),  # ... but not after a power sign
    ("12/4^2", F(3, 4)),  # ... nor before one
]


@pytest.mark.parametrize("expr,value", EVAL_EXAMPLES)
def test_evaluate_examples(expr: str, value: Fraction) -> None:
    assert evaluate(expr) == value


EVAL_ERRORS = [
    ("", "empty"),
    ("   ", "empty"),
    ("abc", "bad_token"),
    ("3 apples", "bad_token"),
    ("2 +", "syntax"),
    ("2(3)", "syntax"),
    ("(1", "syntax"),
    ("(1]", "syntax"),
    ("1)", "syntax"),
    ("1,2", "bad_token"),
    ("4x+21", "bad_token"),  # x next to a sign is a variable, not a product
    ("x * 3", "bad_token"),
    ("1/0 + 2", "division_by_zero"),
    ("1/0", "division_by_zero"),
    ("1/(2-2)", "division_by_zero"),
    ("0^-1", "division_by_zero"),
    ("2^0.5", "non_integer_exponent"),
    ("2^65", "exponent_too_large"),
    ("1^100", "exponent_too_large"),
    ("9^9^9^9^9", "exponent_too_large"),
    ("100000^64", "result_too_large"),
    ("(2^60)^20", "result_too_large"),
    ("1e65", "exponent_too_large"),
    ("1" * 101, "literal_too_long"),
    ("(" * 33 + "1" + ")" * 33, "too_deep"),
    ("1" + "+1" * 64, "too_many_tokens"),
    ("1+" * 200 + "1", "too_long"),
    ("(" * 100_000, "too_long"),
    ("2^1000 * 2^1000", "result_too_large"),
]


@pytest.mark.parametrize("expr,reason", EVAL_ERRORS)
def test_evaluate_refusals(expr: str, reason: str) -> None:
    with pytest.raises(EvalError) as info:
        evaluate(expr, Limits(max_exponent=1000) if expr.startswith("2^1000") else DEFAULT_LIMITS)
    assert info.value.reason == reason
    assert reason in EVAL_REASONS
    assert isinstance(info.value, ValueError)


def test_evaluate_rejects_non_str() -> None:
    with pytest.raises(TypeError, match="expr must be str"):
        evaluate(12)  # type: ignore[arg-type]


def test_deep_nesting_is_refused_before_recursing() -> None:
    limits = Limits(max_expr_chars=10**6, max_tokens=10**6)
    with pytest.raises(EvalError) as info:
        evaluate("(" * 100_000 + "1" + ")" * 100_000, limits)
    assert info.value.reason == "too_deep"


# ---------------------------------------------------------------------------------------
# Claim finding and checking examples.
# ---------------------------------------------------------------------------------------

EVIDENCE = """Plan: add things.
Evidence:
CALC: 2+3 = 5
CALC: 10/3 = 3.33
CALC: 2/3 = 0.66
CALC: 4 = 4
CALC: 3 apples = 3
- CALC: 6 * 7 = 42 dollars.
He pays 3 * 4 = 12 dollars, and 12 + 8 = 20 = 4 * 5. Let x = 3, y = 4.
Natalia sold 48/2 = <<48/2=24>>24 clips (48/2=24). 5 = 5. 7-2=6
"""


def _summary(text: str) -> list[tuple]:
    return [
        (v.claim.kind, v.claim.expr, v.claim.stated, text[v.claim.start : v.claim.end], v.ok, v.reason)
        for v in check_claims(text)
    ]


def test_claim_examples() -> None:
    assert _summary(EVIDENCE) == [
        ("calc", "2+3", "5", "CALC: 2+3 = 5", True, None),
        ("calc", "10/3", "3.33", "CALC: 10/3 = 3.33", True, "rounded"),
        ("calc", "2/3", "0.66", "CALC: 2/3 = 0.66", False, "mismatch"),
        ("calc", "4", "4", "CALC: 4 = 4", None, "no_operation"),
        ("calc", "3 apples", "3", "CALC: 3 apples = 3", None, "bad_token"),
        ("calc", "6 * 7", "42", "CALC: 6 * 7 = 42", True, None),
        ("chain", "3 * 4", "12", "3 * 4 = 12", True, None),
        ("chain", "12 + 8", "20", "12 + 8 = 20", True, None),
        ("chain", "4 * 5", "20", "20 = 4 * 5", True, None),
        ("annotation", "48/2", "24", "<<48/2=24>>", True, None),
        ("chain", "48/2", "24", "48/2=24", True, None),
        ("chain", "7-2", "6", "7-2=6", False, "mismatch"),
    ]


ROUNDING = [
    ("CALC: 10/3 = 3.33", True, "rounded"),
    ("CALC: 10/3 = 3.3", True, "rounded"),
    ("CALC: 10/3 = 3.34", False, "mismatch"),
    ("CALC: 10/3 = 3", False, "mismatch"),  # integers are exact
    ("CALC: 10/3 = 10/3", True, None),
    ("CALC: 2/3 = 0.67", True, "rounded"),
    ("CALC: 1/8 = 0.13", True, "rounded"),  # a tie may round either way
    ("CALC: 1/8 = 0.12", True, "rounded"),
    ("CALC: 14/2 = 7.00", True, None),
    ("CALC: 5/2 = 2.4", False, "mismatch"),
    ("CALC: 1/3 = 33.3%", True, "rounded"),
    ("CALC: 1/3 = 33%", False, "mismatch"),
    ("CALC: 10/3 = $3.33", True, "rounded"),
    ("CALC: 2+2 == 4", True, None),
    ("CALC: 2+2", None, "empty"),
    ("CALC: 1/0 = 1", None, "division_by_zero"),
    ("CALC: 9^9^9^9^9 = 1", None, "exponent_too_large"),
]


@pytest.mark.parametrize("line,ok,reason", ROUNDING)
def test_rounding_and_calc_rules(line: str, ok: bool | None, reason: str | None) -> None:
    (verdict,) = check_claims(line)
    assert (verdict.ok, verdict.reason) == (ok, reason)


def test_calc_line_with_several_equals_gives_one_claim_per_pair() -> None:
    verdicts = check_claims("CALC: 12 + 8 = 20 = 4 * 5 = 21")
    assert [(v.claim.expr, v.claim.stated, v.ok) for v in verdicts] == [
        ("12 + 8", "20", True),
        ("4 * 5", "20", True),
        ("4 * 5", "21", False),
    ]


CHAIN_CONTEXT = [
    # (text, [(expr, stated)]): the outer sides of a run cut out of prose
    ("so S + 143 = 200 - 16 = 184.", [("200 - 16", "184")]),  # "+ 143" follows a variable
    ("paid 75 + 10% of 150 = 75 + 15 = 90", [("75 + 15", "90")]),  # "150" ends a phrase
    ("Remaining 10 = 62,300/10 = $6230", [("62,300/10", "$6230")]),
    ("100/5 = 5A/5 or 20 = A", []),  # "5A" glues a variable to the last side
    ("the chickens: 150 =10+4c.", []),
    ("s+55-20=90", []),  # glued to a variable on the left
    ("at 6:00+48=6:48 PM", []),  # clock times
    ("21 x (1 and 1/3) = 28", []),  # unmatched bracket: a fragment
    ("- 3 * 4 = 12", [("3 * 4", "12")]),  # a list item, not a negation
    ("-3 * 4 = -12", [("-3 * 4", "-12")]),
    ("Total: 150 = 75 + 75", [("75 + 75", "150")]),
    ("\n(48/2=24) and 4x+21 = 45", [("48/2", "24")]),
]


@pytest.mark.parametrize("text,pairs", CHAIN_CONTEXT)
def test_chain_sides_cut_from_prose_are_dropped(text: str, pairs: list[tuple[str, str]]) -> None:
    claims = find_claims(text)
    assert [(c.expr, c.stated) for c in claims] == pairs
    assert all(v.ok is True for v in check_claims(text))


def test_prose_without_arithmetic_has_no_claims() -> None:
    assert find_claims("Let x = 3 and y = 4; 5 = 5. The well-known 2-step plan = good.") == ()


def test_claim_spans_and_order() -> None:
    text = "a 1+1=2 b <<2*3=6>> c CALC: 3-1 = 2\nd 4/2 = 2"
    claims = find_claims(text)
    assert [c.kind for c in claims] == ["chain", "annotation", "calc", "chain"]
    assert [c.start for c in claims] == sorted(c.start for c in claims)
    assert [text[c.start : c.end] for c in claims] == ["1+1=2", "<<2*3=6>>", "CALC: 3-1 = 2", "4/2 = 2"]


def test_find_claims_rejects_non_str() -> None:
    with pytest.raises(TypeError, match="text must be str"):
        find_claims(None)  # type: ignore[arg-type]


def test_claims_are_capped_to_the_first_ones() -> None:
    text = "CALC: 2+2 = 4\n" * 16_000
    claims = find_claims(text)
    assert len(claims) == DEFAULT_LIMITS.max_claims
    assert [c.start for c in claims] == [14 * i for i in range(DEFAULT_LIMITS.max_claims)]
    assert len(check_claims("so 2+2 = 4.\n" * 16_000, Limits(max_claims=5))) == 5
    assert find_claims(text, Limits(max_claims=0)) == ()


ADVERSARIAL = {
    "tower": "CALC: 9^9^9^9^9 = 1",
    "long_tower": "CALC: " + "9^" * 100_000 + "9 = 1",
    "expr_100kb": "CALC: " + "1+" * 50_000 + "1 = 50001",
    "chain_100kb": "1+" * 50_000 + "1 = 50001",
    "calc_16000": "CALC: 2+2 = 4\n" * 16_000,
    "chains_16000": "so 2+2 = 4 and\n" * 16_000,
    "annotations_16000": "<<2+2=4>>" * 16_000,
    "parens_100k": "(" * 100_000,
    "parens_calc": "CALC: " + "(" * 100_000 + "1 = 1",
    "equals": "=" * 200_000,
    "one_equals_one": "1=" * 100_000,
    "sums": "1+1=2 " * 33_000,
    "openers": "<<" * 100_000,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_inputs_return(name: str) -> None:
    verdicts = check_claims(ADVERSARIAL[name])
    assert len(verdicts) <= DEFAULT_LIMITS.max_claims


# ---------------------------------------------------------------------------------------
# Properties: the evaluator agrees with Fraction arithmetic.
# ---------------------------------------------------------------------------------------

MUL = ["*", "x", "×", "·", "\\times", "\\cdot"]
DIV = ["/", "÷", "\\div"]
POW = ["^", "**"]
PY_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}

leaves = st.one_of(
    st.integers(0, 10**6).map(F),
    st.builds(lambda n, k: F(n, 10**k), st.integers(0, 10**6), st.integers(1, 3)),
)


def _leaf_text(v: Fraction) -> str:
    text = format_value(v)
    assert "/" not in text
    return text


def _trees(max_leaves: int = 12):  # type: ignore[no-untyped-def]
    return st.recursive(
        leaves.map(lambda v: ("num", v)),
        lambda kids: st.one_of(
            st.tuples(st.just("bin"), st.sampled_from("+-*/"), kids, kids),
            st.tuples(st.just("neg"), kids),
            st.tuples(st.just("pow"), kids, st.integers(-3, 3)),
        ),
        max_leaves=max_leaves,
    )


class _DivZero(Exception):
    pass


def _value(tree) -> Fraction:  # type: ignore[no-untyped-def]
    kind = tree[0]
    if kind == "num":
        return tree[1]
    if kind == "neg":
        return -_value(tree[1])
    if kind == "pow":
        base = _value(tree[1])
        if base == 0 and tree[2] < 0:
            raise _DivZero
        return base ** tree[2]
    left, right = _value(tree[2]), _value(tree[3])
    if tree[1] == "/" and right == 0:
        raise _DivZero
    return PY_OPS[tree[1]](left, right)


def _render(tree, draw) -> str:  # type: ignore[no-untyped-def]
    """Fully parenthesised text with randomly chosen operator spellings and spacing."""
    sp = draw(st.sampled_from(["", " "]))
    kind = tree[0]
    if kind == "num":
        return _leaf_text(tree[1])
    if kind == "neg":
        return f"-({_render(tree[1], draw)})"
    if kind == "pow":
        return f"({_render(tree[1], draw)}){sp}{draw(st.sampled_from(POW))}{sp}({tree[2]})"
    op = tree[1]
    spelled = draw(st.sampled_from(MUL)) if op == "*" else draw(st.sampled_from(DIV)) if op == "/" else op
    if spelled.startswith("\\") or spelled == "x":
        sp = " "
    return f"({_render(tree[2], draw)}){sp}{spelled}{sp}({_render(tree[3], draw)})"


BIG = Limits(max_expr_chars=4096, max_tokens=4096, max_depth=256, max_result_bits=1 << 16)


@given(tree=_trees(), data=st.data())
def test_evaluator_agrees_with_fraction_arithmetic(tree, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    text = _render(tree, data.draw)
    try:
        expected = _value(tree)
    except _DivZero:
        with pytest.raises(EvalError) as info:
            evaluate(text, BIG)
        assert info.value.reason == "division_by_zero"
        return
    try:
        got = evaluate(text, BIG)
    except EvalError as err:  # only a size cap may refuse a valid expression
        assert err.reason == "result_too_large"
        return
    assert got == expected


@given(
    st.lists(leaves, min_size=1, max_size=8).flatmap(
        lambda xs: st.tuples(st.just(xs), st.lists(st.sampled_from("+-*/"), min_size=len(xs) - 1, max_size=len(xs) - 1))
    )
)
def test_precedence_and_left_associativity(case) -> None:  # type: ignore[no-untyped-def]
    nums, ops = case
    # reference: fold * and / first, left to right, then + and -
    terms, signs = [nums[0]], []
    for op, n in zip(ops, nums[1:], strict=True):
        if op in "*/":
            if op == "/" and n == 0:
                terms = None  # type: ignore[assignment]
                break
            terms[-1] = terms[-1] * n if op == "*" else terms[-1] / n
        else:
            terms.append(n)
            signs.append(op)
    text = _leaf_text(nums[0]) + "".join(f" {op} {_leaf_text(n)}" for op, n in zip(ops, nums[1:], strict=True))
    if terms is None:
        with pytest.raises(EvalError):
            evaluate(text, BIG)
        return
    expected = terms[0]
    for sign, t in zip(signs, terms[1:], strict=True):
        expected = expected + t if sign == "+" else expected - t
    assert evaluate(text, BIG) == expected


@given(st.lists(st.integers(2, 12), min_size=2, max_size=6))
def test_power_towers_are_refused_or_small(bases: list[int]) -> None:
    text = "^".join(map(str, bases))
    try:
        value = evaluate(text)
    except EvalError as err:
        assert err.reason in ("exponent_too_large", "result_too_large")
    else:
        assert value.numerator.bit_length() <= DEFAULT_LIMITS.max_result_bits


@given(st.integers(DEFAULT_LIMITS.max_expr_chars + 1, 5000))
def test_oversize_expressions_are_refused(n: int) -> None:
    with pytest.raises(EvalError) as info:
        evaluate(("1+" * n)[: n - 1] + "1")
    assert info.value.reason == "too_long"


EXPRISH = st.lists(
    st.sampled_from(list("0123456789.,+-*/^()[]%x× \u2212$e") + ["**", "\\times", "\\div"]), max_size=80
).map("".join)


@given(st.one_of(st.text(max_size=120), EXPRISH))
def test_evaluate_raises_only_eval_error(text: str) -> None:
    try:
        value = evaluate(text)
    except EvalError as err:
        assert err.reason in EVAL_REASONS
    else:
        assert isinstance(value, Fraction)


CLAIMISH = st.lists(
    st.sampled_from(list("0123456789.+-*/^()=<> \n%x") + ["CALC:", "<<", ">>", "==", " = ", "\\times"]), max_size=120
).map("".join)


@given(st.one_of(st.text(max_size=300), CLAIMISH), st.integers(0, 8))
def test_find_and_check_never_raise_and_are_capped(text: str, cap: int) -> None:
    limits = Limits(max_claims=cap)
    claims = find_claims(text, limits)
    assert len(claims) <= cap
    assert all(isinstance(c, Claim) and 0 <= c.start <= c.end <= len(text) for c in claims)
    assert [c.start for c in claims] == sorted(c.start for c in claims)
    assert all(c.kind in ("calc", "annotation", "chain") for c in claims)
    verdicts = check_claims(text, limits)
    assert [v.claim for v in verdicts] == list(claims)
    for v in verdicts:
        assert isinstance(v, Verdict)
        assert v.ok in (True, False, None)
        assert (v.ok is None) == (v.reason not in (None, "rounded", "mismatch"))


def _has_binary(tree) -> bool:  # type: ignore[no-untyped-def]
    return tree[0] in ("bin", "pow") or (tree[0] == "neg" and _has_binary(tree[1]))


@given(
    tree=_trees(max_leaves=6),
    data=st.data(),
    template=st.sampled_from(
        ["CALC: {e} = {s}", "<<{e}={s}>>", "{e} = {s} apples.", "So, {e} = {s} apples.", "Check: {s} = {e}, done"]
    ),
    delta=st.sampled_from([F(1), F(-1), F(1, 2), F(7)]),
)
def test_true_claims_hold_and_perturbed_ones_fail(tree, data, template: str, delta: Fraction) -> None:  # type: ignore[no-untyped-def]
    assume(_has_binary(tree))
    try:
        value = _value(tree)
    except _DivZero:
        return
    expr = _render(tree, data.draw)
    assume(len(expr) <= DEFAULT_LIMITS.max_expr_chars)
    bits = max(value.numerator.bit_length(), value.denominator.bit_length())
    assume(bits <= 256)
    try:
        evaluate(expr)
    except EvalError:
        assume(False)  # over a size cap: not a checkable claim
    prefix = "Evidence:\n"
    true_text = prefix + template.format(e=expr, s=format_value(value))
    (verdict,) = check_claims(true_text)
    assert verdict.ok is True and verdict.value == value
    false_text = prefix + template.format(e=expr, s=format_value(value + delta))
    (verdict,) = check_claims(false_text)
    assert verdict.ok is False and verdict.reason == "mismatch"


# ---------------------------------------------------------------------------------------
# The integer fast path agrees with the full parser (value, has-operation, refusal) on token
# soups of the common grammar, precedence and tight fractions included.
# ---------------------------------------------------------------------------------------

SOUP_TOKENS = [
    "1",
    "2",
    "3",
    "12",
    "0",
    "2.5",
    "0.50",
    "$4",
    "1,200",
    ".5",
    "+",
    "-",
    "−",
    "–",
    "*",
    "x",
    "×",
    "·",
    "/",
    "÷",
    "\\div",
    "%",
    "(",
    ")",
    "[",
    "]",
    "^",
    "**",
    " ",
    "1e2",
]


@given(
    parts=st.lists(st.sampled_from(SOUP_TOKENS), min_size=1, max_size=14),
    spaces=st.lists(st.sampled_from(["", " "]), min_size=14, max_size=14),
)
def test_fast_path_agrees_with_full_parser(parts: list[str], spaces: list[str]) -> None:
    from dsa_cast.claims import _analyze, _eval, _has_operation, _parse

    expr = "".join(p + s for p, s in zip(parts, spaces, strict=False))
    try:
        tree = _parse(expr, DEFAULT_LIMITS)
    except EvalError as err:
        expected = (False, False, None, err.reason)
    else:
        try:
            expected = (True, _has_operation(tree), _eval(tree, DEFAULT_LIMITS), None)
        except EvalError as err:
            expected = (True, _has_operation(tree), None, err.reason)
    assert _analyze(expr, DEFAULT_LIMITS, {}) == expected
    if expected[2] is not None:
        assert evaluate(expr) == expected[2] and isinstance(evaluate(expr), Fraction)


# ---------------------------------------------------------------------------------------
# The operator table (claims.OPERATORS) drives both the full parser and the fast path.
# ---------------------------------------------------------------------------------------


def test_operator_table_spellings_and_names():
    from dsa_cast.claims import OPERATORS, SPELLINGS, UNARY_PRECEDENCE

    assert set(SPELLINGS) == {"+", "-", "*", "/", "^"}
    assert {s for names in SPELLINGS.values() for s in names} == set(OPERATORS)
    levels = {name: OPERATORS[name][1] for name in SPELLINGS}
    assert levels["+"] == levels["-"] < levels["*"] == levels["/"] < UNARY_PRECEDENCE < levels["^"]
    for name, spellings in SPELLINGS.items():
        for s in spellings:
            assert OPERATORS[s][0] == name
            sep = "" if s[0].isalpha() else " "  # "6x3" / "6 x 3": x is only "*" between operands
            assert evaluate(f"6{sep}{s}{sep}3") == OPERATORS[s][2](F(6), F(3)), s


def test_fast_path_division_count_matches_the_table():
    """_fast_value counts the spellings of "/" inline (speed); they must be the table's."""
    import inspect

    from dsa_cast.claims import SPELLINGS, _fast_value

    source = inspect.getsource(_fast_value)
    assert " + ".join(f"expr.count({s!r})" for s in SPELLINGS["/"]) in source.replace('"', "'")


@pytest.mark.parametrize("s", ["+", "-", "\u2212", "\u2013"])
def test_unary_signs_are_the_additive_spellings(s):
    from dsa_cast.claims import OPERATORS

    assert evaluate(f"{s}4 * 2") == (-8 if OPERATORS[s][0] == "-" else 8)
    assert evaluate(f"{s}2^2") == (-4 if OPERATORS[s][0] == "-" else 4)  # a sign binds looser than ^
